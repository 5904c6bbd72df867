//! A synthetic enterprise estate for demos, tests and benchmarks: inventory, label-based
//! policy, traffic (normal, sprawl, an attacker) and its IPFIX export.
//!
//! Everything is a pure function of a [`SimConfig`]: the same seed gives the same bytes
//! on every machine. Nothing here opens a file or a socket; callers write the text and
//! send the datagrams.
//!
//! ```
//! use bulkhead_sim::{Estate, IpfixEncoder, SimConfig};
//!
//! let estate = Estate::generate(&SimConfig::default());
//! let csv = estate.inventory_csv();
//! let policy = estate.policy_files();
//! let flows: Vec<_> = estate.flows().collect();
//! let datagrams = IpfixEncoder::new(1).encode(&flows);
//! assert!(csv.starts_with("name,kind,"));
//! assert!(!policy.is_empty() && !datagrams.is_empty());
//! ```

#![forbid(unsafe_code)]

mod config;
mod estate;
mod ipfix;
mod policy;
mod rng;
mod traffic;

pub use config::{AttackerOrigin, ConfigError, Env, SharedServices, SimConfig};
pub use estate::{Attacker, Estate, LAPTOP, Role, SimWorkload};
pub use ipfix::{
    DEFAULT_MAX_DATAGRAM, DEFAULT_TEMPLATE_REFRESH, IPFIX_VERSION, IpfixEncoder, MAX_DATAGRAM,
    MIN_DATAGRAM, RECORD_LEN_V4, RECORD_LEN_V6, TEMPLATE_V4, TEMPLATE_V6,
};
pub use policy::PARTNER_APIS;
pub use traffic::{FlowKind, Flows, SCAN_PORTS, SimFlow, TCP, UDP, tcp_flags};
