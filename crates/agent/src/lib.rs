//! The host agent (work in progress: client, state and enforcer first).

pub mod client;
pub mod enforcer;
pub mod state;
