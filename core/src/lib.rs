//! vic's engine, the "port layer" of a virtual container host.
//!
//! This crate holds everything that Docker clients see as behaviour, written once for
//! every backend: the domain model ([`model`]), the provider traits that a backend
//! implements ([`provider`]: [`Compute`], [`Storage`], [`Network`]), the one error type
//! that maps onto Docker error responses ([`Error`]) and the [`Engine`] that the
//! endpoint calls. It names no backend and keeps no durable state of its own: what must
//! survive a restart lives on the backend (VM extraConfig, datastore files).
#![warn(missing_docs)]

pub mod archive;
pub mod containers;
pub mod digest;
pub mod dspath;
pub mod engine;
pub mod error;
pub mod events;
pub mod ids;
pub mod image_ops;
pub mod images;
pub mod lifecycle;
pub mod model;
pub mod provider;
pub mod pull;
pub mod reference;
pub mod vmdk;

pub use dspath::DsPath;
pub use engine::{Engine, EngineConfig};
pub use error::{Error, Result};
pub use provider::{Backend, Compute, MoRef, Network, Storage};
