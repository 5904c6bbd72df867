//! What the agent observes on its host, as a library: identity, interfaces and listening
//! sockets with their processes ([`host_info`]), packets the owned nftables table logged
//! ([`NflogReader`]) and finished connections from conntrack with their local process
//! ([`ConntrackMonitor`]).
//!
//! Everything here reads the *current network namespace*: run inside `ip netns exec NS`
//! it reports that namespace's interfaces, sockets, log group and connection table.
//! Needs root (CAP_NET_ADMIN for NFLOG and conntrack, and to read other users' /proc/PID/fd).

mod conntrack;
mod diag;
mod info;
mod netlink;
mod nflog;
mod nftgen;
mod process;

use std::io;
use std::path::PathBuf;

pub use bulkhead_api::host::{
    HostDirection, HostFlow, HostInfo, Interface, ListeningSocket, LoggedPacket, ProcessInfo,
};
pub use conntrack::{
    ConntrackEvent, ConntrackEventKind, ConntrackMonitor, ConntrackStats, decode_conntrack,
    enable_conntrack_accounting, flush_conntrack,
};
pub use info::{host_info, listening_sockets, local_addresses, service_cgroups};
pub use nflog::{NflogReader, NflogStats, PacketHeaders, parse_packet};
pub use nftgen::{NftablesWatch, nftables_generation};
pub use process::process_info;

/// Errors of the host observers, each naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{what}: {source}")]
    Netlink {
        what: &'static str,
        source: io::Error,
    },
    #[error("{what}: the kernel refused: {source}")]
    Refused {
        what: &'static str,
        source: io::Error,
    },
    #[error("{what}: {message}")]
    Decode { what: &'static str, message: String },
    #[error("{what}: no answer from the kernel within {seconds} s")]
    Timeout { what: &'static str, seconds: u64 },
    #[error("listing interfaces: {0}")]
    Interfaces(#[source] nix::Error),
}

/// Milliseconds since the Unix epoch, the unit of every timestamp in the wire types.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
