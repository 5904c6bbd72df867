//! The host agent: enrolls with the server over pinned TLS, enforces its workload's
//! policy in one owned nftables table, restores the table when it is tampered with, and
//! reports the host's inventory, logged packets and conntrack flows. It keeps enforcing
//! its last policy when the server is unreachable or the agent restarts.

pub mod agent;
mod attempts;
pub mod client;
pub mod enforcer;
mod flows;
pub mod spool;
pub mod state;

pub use agent::{AgentConfig, GuardMode, run, spawn_guard};
