//! The Docker Engine API personality of a virtual container host.
//!
//! This crate only parses HTTP requests into engine calls and renders the engine's
//! answers as the Docker Engine API does (JSON bodies, `{"message": …}` errors, API
//! version negotiation); the behaviour lives in `vic-core`. The binary `vic-endpoint`
//! wires a backend in from `--target` and serves on the `-H` listeners.
#![warn(missing_docs)]
#![recursion_limit = "256"]

pub mod api;
pub mod config;
pub mod http;
pub mod router;
pub mod server;

pub use config::{Listener, Target};
pub use server::{AppState, serve};
