//! One module per Docker API resource: each parses requests into engine calls and
//! renders the engine's answers as Docker's JSON.

pub mod attach;
pub mod containers;
pub mod events;
pub mod filters;
pub mod images;
pub mod pull;
pub mod system;
