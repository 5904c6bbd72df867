//! Fixture loading shared by the integration tests.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub const EXPORT_PORT: u16 = 2055;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/netflow")
}

/// One UDP payload, in the order it must reach the decoder.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub file: String,
    /// Index of this datagram inside its file (files may hold several).
    pub part: usize,
    pub exporter: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Datagram {
    pub fn exporter_ip(&self) -> Ipv4Addr {
        match self.exporter.ip() {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(_) => unreachable!("fixtures use IPv4 exporters"),
        }
    }
}

/// The exporter a file belongs to: its name up to the token that says what
/// the file holds (`tpl…`, `opttpl…`, `data…`, `dpi`). Files without such a
/// token are an exporter of their own.
pub fn exporter_prefix(name: &str) -> String {
    let stem = name.trim_end_matches(".dat");
    let tokens: Vec<&str> = stem.split('_').collect();
    let markers = ["tpl", "opttpl", "tpls", "data", "dpi"];
    for (i, t) in tokens.iter().enumerate().skip(1) {
        if markers.iter().any(|m| t.starts_with(m)) {
            return tokens[..i].join("_");
        }
    }
    stem.to_string()
}

/// A few fixture files hold several datagrams back to back (netflow5.dat has
/// twelve v5 datagrams, ipfix.dat two IPFIX messages). v5 and IPFIX headers
/// say how long a datagram is, so those are split; v9 has no length and is
/// kept whole.
pub fn split_datagrams(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let version = if rest.len() >= 4 {
            u16::from_be_bytes([rest[0], rest[1]])
        } else {
            0
        };
        let field = if rest.len() >= 4 {
            usize::from(u16::from_be_bytes([rest[2], rest[3]]))
        } else {
            0
        };
        let len = match version {
            5 if (1..=30).contains(&field) && 24 + field * 48 <= rest.len() => 24 + field * 48,
            10 if field >= 16 && field <= rest.len() => field,
            _ => rest.len(),
        };
        out.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    out
}

/// Every fixture datagram, exporters in name order, and inside one exporter
/// the template-carrying files first, as they would arrive on the wire.
pub fn load_fixtures() -> Vec<Datagram> {
    let dir = fixture_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fixture dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .filter(|n| n.ends_with(".dat"))
        .collect();
    names.sort();
    assert!(
        names.len() > 50,
        "expected the netflow fixtures in {}",
        dir.display()
    );

    let mut prefixes: Vec<String> = names.iter().map(|n| exporter_prefix(n)).collect();
    prefixes.sort();
    prefixes.dedup();

    let mut out = Vec::new();
    for (i, prefix) in prefixes.iter().enumerate() {
        let exporter = SocketAddr::from((Ipv4Addr::new(192, 0, 2, (i + 1) as u8), EXPORT_PORT));
        let mut files: Vec<&String> = names
            .iter()
            .filter(|n| &exporter_prefix(n) == prefix)
            .collect();
        files.sort_by_key(|n| (!n.contains("tpl"), n.to_string()));
        for f in files {
            let bytes = std::fs::read(dir.join(f)).expect("read fixture");
            for (part, d) in split_datagrams(&bytes).into_iter().enumerate() {
                out.push(Datagram {
                    file: f.clone(),
                    part,
                    exporter,
                    bytes: d,
                });
            }
        }
    }
    out
}

/// A classic pcap (microsecond, Ethernet) with one IPv4/UDP packet per
/// datagram, sent from the datagram's exporter address. Checksums are zero,
/// which tshark accepts as "not computed".
pub fn write_pcap(datagrams: &[Datagram]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&4u16.to_le_bytes());
    p.extend_from_slice(&0i32.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&65535u32.to_le_bytes());
    p.extend_from_slice(&1u32.to_le_bytes());
    for (i, d) in datagrams.iter().enumerate() {
        let udp_len = 8 + d.bytes.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x08, 0x00]);
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(ip_len as u16).to_be_bytes());
        frame.extend_from_slice(&(i as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&d.exporter_ip().octets());
        frame.extend_from_slice(&[192, 0, 2, 254]);
        frame.extend_from_slice(&EXPORT_PORT.to_be_bytes());
        frame.extend_from_slice(&EXPORT_PORT.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&d.bytes);
        p.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        p.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        p.extend_from_slice(&frame);
    }
    p
}

pub mod build;
