//! Wire types of the agent protocol, shared by the server and the agent.
//!
//! Plain serde data and lossless conversions, no logic: what crosses the wire is checked
//! on arrival by converting it into the core's validated types (`TryFrom`), so a
//! malformed policy can never reach the renderer.

pub mod agent;
pub mod host;

pub use agent::*;
pub use host::*;
