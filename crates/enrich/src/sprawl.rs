//! The sprawl report: what the traffic shows against what the inventory believes.

use std::net::IpAddr;

use bulkhead_model::{Inventory, protocol_name};
use serde::Serialize;

/// One address as the traffic shows it (the flow store computes these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenHost {
    pub address: IpAddr,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub bytes: u64,
    pub connections: u64,
    pub peers: u64,
    /// (protocol, port) it answered on as the provider.
    pub served: Vec<(u8, u16)>,
    pub reporters: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UnknownHost {
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// Inside private, shared or link-local ranges: part of the estate nobody listed.
    /// Otherwise an external peer (internet client, partner, SaaS).
    pub internal: bool,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub bytes: u64,
    pub connections: u64,
    pub peers: u64,
    pub serves: Vec<String>,
    pub guessed_role: String,
    pub reporters: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuietWorkload {
    pub name: String,
    #[schema(value_type = Vec<String>)]
    pub addresses: Vec<IpAddr>,
    pub managed: bool,
    pub labels: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SprawlReport {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// Workloads in the inventory.
    pub believed: usize,
    /// Inventory workloads with traffic in the window.
    pub seen: usize,
    /// `seen / believed`: how much of the inventory the traffic confirms.
    pub seen_ratio: f64,
    /// Internal addresses in traffic that no inventory workload has, most bytes first:
    /// the sprawl.
    pub unknown: Vec<UnknownHost>,
    /// External addresses in traffic, most bytes first.
    pub external: Vec<UnknownHost>,
    /// Internal addresses that only ever received connection attempts without payload
    /// (a scan's targets, or hosts that are gone): not sprawl, but worth knowing.
    pub probed_only: Vec<UnknownHost>,
    /// Inventory workloads with no traffic in the window: idle, stale, or not exported.
    pub quiet: Vec<QuietWorkload>,
}

/// A role from the ports a host answers on; a guess, and said to be one.
pub fn guess_role(served: &[(u8, u16)]) -> String {
    let has = |ports: &[u16]| served.iter().any(|(_, p)| ports.contains(p));
    let role = if has(&[502, 102, 20000, 44818, 47808]) {
        "ot controller (modbus/s7/dnp3/bacnet)"
    } else if has(&[554, 8554]) {
        "camera (rtsp)"
    } else if has(&[3306, 5432, 1433, 1521, 27017, 6379, 9042]) {
        "database"
    } else if has(&[389, 636, 88, 3268]) {
        "directory"
    } else if has(&[53]) {
        "dns server"
    } else if has(&[123]) {
        "ntp server"
    } else if has(&[445, 139, 2049]) {
        "file server"
    } else if has(&[3389, 5985]) {
        "windows host"
    } else if has(&[25, 587, 993]) {
        "mail server"
    } else if has(&[9100, 631, 515]) {
        "printer or exporter"
    } else if has(&[80, 443, 8080, 8443, 8000]) {
        "web server"
    } else if has(&[22]) {
        "ssh host"
    } else if served.is_empty() {
        "client (serves nothing)"
    } else {
        "unknown service"
    };
    role.to_string()
}

fn port_name(proto: u8, port: u16) -> String {
    match protocol_name(proto) {
        Some(p) => format!("{p}/{port}"),
        None => format!("proto/{proto}"),
    }
}

const PROBE_BYTES: u64 = 80;

pub fn sprawl(
    inventory: &Inventory,
    seen: &[SeenHost],
    window_start_ms: i64,
    window_end_ms: i64,
) -> SprawlReport {
    let mut unknown: Vec<UnknownHost> = seen
        .iter()
        .filter(|h| inventory.by_address(h.address).is_none())
        .map(|h| UnknownHost {
            address: h.address,
            internal: is_internal(h.address),
            first_seen_ms: h.first_seen_ms,
            last_seen_ms: h.last_seen_ms,
            bytes: h.bytes,
            connections: h.connections,
            peers: h.peers,
            serves: h
                .served
                .iter()
                .map(|(p, port)| port_name(*p, *port))
                .collect(),
            guessed_role: guess_role(&h.served),
            reporters: h.reporters.clone(),
        })
        .collect();
    unknown.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.address.cmp(&b.address)));
    let (unknown, external): (Vec<_>, Vec<_>) = unknown.into_iter().partition(|u| u.internal);
    // Addresses that only appear as the target of payload-less connections: a SYN or a
    // probe datagram is at most ~80 bytes, while a host that answered carries more. A
    // client sending small queries is not one of them: it serves nothing.
    let (probed_only, unknown): (Vec<_>, Vec<_>) = unknown
        .into_iter()
        .partition(|u| !u.serves.is_empty() && u.bytes <= u.connections.max(1) * PROBE_BYTES);
    let seen_addrs: std::collections::HashSet<IpAddr> = seen.iter().map(|h| h.address).collect();
    let mut quiet = Vec::new();
    let mut seen_count = 0;
    for w in inventory.workloads() {
        if w.addresses.iter().any(|a| seen_addrs.contains(a)) {
            seen_count += 1;
        } else {
            quiet.push(QuietWorkload {
                name: w.name.clone(),
                addresses: w.addresses.clone(),
                managed: w.managed,
                labels: w.labels.to_string(),
            });
        }
    }
    let believed = inventory.len();
    SprawlReport {
        window_start_ms,
        window_end_ms,
        believed,
        seen: seen_count,
        seen_ratio: if believed == 0 {
            0.0
        } else {
            seen_count as f64 / believed as f64
        },
        unknown,
        external,
        probed_only,
        quiet,
    }
}

/// Addresses that belong to some organisation's own network rather than the internet.
pub fn is_internal(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v) => {
            let s = v.segments()[0];
            v.is_loopback() || (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_guessed_from_served_ports() {
        assert_eq!(guess_role(&[(6, 5432)]), "database");
        assert_eq!(guess_role(&[(6, 554), (6, 80)]), "camera (rtsp)");
        assert_eq!(guess_role(&[]), "client (serves nothing)");
        assert_eq!(guess_role(&[(6, 31337)]), "unknown service");
    }

    #[test]
    fn internal_ranges() {
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "198.51.100.1", "2001:db8::1", "172.32.0.1"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }
}
