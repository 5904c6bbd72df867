//! What an agent observes on its host.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The host's identity and what it exposes, refreshed periodically by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostInfo {
    pub hostname: String,
    /// `ID` and `VERSION_ID` of /etc/os-release, e.g. "debian" and "12".
    pub os_name: String,
    pub os_version: String,
    /// The running kernel's release (`uname -r`).
    pub kernel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub listening: Vec<ListeningSocket>,
}

impl HostInfo {
    /// The addresses a workload is reached at: every interface address but loopback
    /// and link-local ones, sorted and without duplicates.
    pub fn workload_addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .interfaces
            .iter()
            .flat_map(|i| i.addresses.iter().map(|n| n.addr()))
            .filter(|a| !a.is_loopback() && !a.is_unspecified() && !is_link_local(a))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn is_link_local(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Addresses with their prefix length.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub addresses: Vec<IpNet>,
}

/// A listening TCP socket or bound UDP socket, with its owner when it could be found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ListeningSocket {
    /// "tcp" or "udp".
    pub protocol: String,
    #[schema(value_type = String)]
    pub address: IpAddr,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProcessInfo {
    pub pid: u32,
    /// The command name (`/proc/PID/comm`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The systemd unit the process runs in, e.g. "postgresql@15-main.service".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
    /// The cgroup v2 path, e.g. "/system.slice/nginx.service".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// Which way a connection was opened, seen from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostDirection {
    /// A peer opened it to this host.
    Inbound,
    /// This host opened it.
    Outbound,
}

/// One finished (or long-running, reported so far) connection from conntrack, with
/// counters for both directions and the local process when it could be attributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostFlow {
    pub protocol: u8,
    /// The side that opened the connection.
    #[schema(value_type = String)]
    pub src: IpAddr,
    pub src_port: u16,
    #[schema(value_type = String)]
    pub dst: IpAddr,
    pub dst_port: u16,
    pub direction: HostDirection,
    /// Packets and bytes from `src` to `dst`.
    pub packets: u64,
    pub bytes: u64,
    /// Packets and bytes from `dst` back to `src`.
    pub reverse_packets: u64,
    pub reverse_bytes: u64,
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
}

/// A packet the owned table logged to NFLOG: a connection no rule allows (monitor:
/// accepted, enforced: dropped) or one a deny rule matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoggedPacket {
    pub at_ms: i64,
    /// The rule's log prefix, e.g. "bulkhead would-default-deny".
    pub prefix: String,
    pub protocol: u8,
    #[schema(value_type = String)]
    pub src: IpAddr,
    #[schema(value_type = String)]
    pub dst: IpAddr,
    /// Zero for protocols without ports.
    pub src_port: u16,
    pub dst_port: u16,
}

/// What a logged packet's prefix says happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMeaning {
    /// Dropped (enforced) rather than only reported (monitor).
    pub dropped: bool,
    /// The deny rule that matched, or `None` for the default deny and quarantine.
    pub rule: Option<String>,
    /// Dropped because the host is quarantined, whatever the rules say.
    pub quarantine: bool,
}

impl LoggedPacket {
    /// Reads the prefix the renderer writes (`bulkhead [would-]default-deny` or
    /// `bulkhead [would-]deny RULE`); `None` for anything else.
    pub fn meaning(&self) -> Option<LogMeaning> {
        let rest = self.prefix.trim().strip_prefix("bulkhead ")?;
        let (dropped, rest) = match rest.strip_prefix("would-") {
            Some(r) => (false, r),
            None => (true, rest),
        };
        if rest == "default-deny" || (dropped && rest == "quarantine") {
            return Some(LogMeaning {
                dropped,
                rule: None,
                quarantine: rest == "quarantine",
            });
        }
        let rule = rest.strip_prefix("deny ")?.trim();
        (!rule.is_empty()).then(|| LogMeaning {
            dropped,
            rule: Some(rule.to_string()),
            quarantine: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(prefix: &str) -> LoggedPacket {
        LoggedPacket {
            at_ms: 0,
            prefix: prefix.into(),
            protocol: 6,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            src_port: 40000,
            dst_port: 5432,
        }
    }

    #[test]
    fn log_prefixes_are_read_back() {
        let m = logged("bulkhead would-default-deny ").meaning().unwrap();
        assert_eq!((m.dropped, m.rule), (false, None));
        let m = logged("bulkhead default-deny ").meaning().unwrap();
        assert_eq!((m.dropped, m.rule), (true, None));
        let m = logged("bulkhead deny block-ssh ").meaning().unwrap();
        assert_eq!((m.dropped, m.rule.as_deref()), (true, Some("block-ssh")));
        let m = logged("bulkhead would-deny block-ssh").meaning().unwrap();
        assert_eq!((m.dropped, m.rule.as_deref()), (false, Some("block-ssh")));
        let m = logged("bulkhead quarantine ").meaning().unwrap();
        assert_eq!((m.dropped, m.rule, m.quarantine), (true, None, true));
        assert!(
            !logged("bulkhead default-deny ")
                .meaning()
                .unwrap()
                .quarantine
        );
        assert!(logged("bulkhead would-quarantine ").meaning().is_none());
        assert!(logged("other prefix").meaning().is_none());
        assert!(logged("bulkhead deny ").meaning().is_none());
    }

    #[test]
    fn workload_addresses_skip_loopback_and_link_local() {
        let h = HostInfo {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: None,
                addresses: vec![
                    "127.0.0.1/8".parse().unwrap(),
                    "10.1.0.2/24".parse().unwrap(),
                    "fe80::1/64".parse().unwrap(),
                    "fd00::2/64".parse().unwrap(),
                    "10.1.0.2/24".parse().unwrap(),
                ],
            }],
            ..HostInfo::default()
        };
        let want: Vec<IpAddr> = vec!["10.1.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        assert_eq!(h.workload_addresses(), want);
    }
}
