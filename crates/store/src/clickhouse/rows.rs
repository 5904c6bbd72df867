//! Rows as they cross the wire (RowBinary), and their encoding of a [`FlowSummary`].
//!
//! ClickHouse aggregate functions skip NULLs, which would turn "the latest value, even
//! when it is none" into "the latest value that is set", so optional values are never
//! NULL: an optional name is `""` for none and `"+name"` for a name (which also sorts
//! none before any name, as the SQLite store orders processes), and a verdict is 0 for
//! none and its code plus one.

use std::net::IpAddr;

use bulkhead_model::{Bucket, FlowSummary, Labels, SummaryKey, SummaryVerdict, VerdictKind};
use serde::{Deserialize, Serialize};

#[derive(clickhouse::Row, Serialize)]
pub struct InRow<'a> {
    pub bucket: u8,
    pub bucket_start: i64,
    pub src: &'a [u8],
    pub dst: &'a [u8],
    pub proto: u8,
    pub port: u16,
    pub process: String,
    pub packets: u64,
    pub bytes: u64,
    pub connections: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub reporter: String,
    pub src_workload: String,
    pub dst_workload: String,
    pub src_labels: String,
    pub dst_labels: String,
    pub prov_verdict: u8,
    pub prov_rules: String,
    pub draft_verdict: u8,
    pub draft_rules: String,
    pub seq: u64,
    pub hour_start: i64,
    pub derive_hour: u8,
}

/// A row of `batch_mark`.
#[derive(clickhouse::Row, Serialize)]
pub struct MarkRow {
    pub source: String,
    pub stream: String,
    pub seq: u64,
    pub written_ms: i64,
}

#[derive(clickhouse::Row, Deserialize)]
pub struct OutRow {
    pub bucket: u8,
    pub bucket_start: i64,
    pub src: Vec<u8>,
    pub dst: Vec<u8>,
    pub proto: u8,
    pub port: u16,
    pub process: String,
    pub packets: u64,
    pub bytes: u64,
    pub connections: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub reporter: String,
    pub src_workload: String,
    pub dst_workload: String,
    pub src_labels: String,
    pub dst_labels: String,
    pub prov_verdict: u8,
    pub prov_rules: String,
    pub draft_verdict: u8,
    pub draft_rules: String,
}

#[derive(clickhouse::Row, Deserialize)]
pub struct SeenRow {
    pub addr: Vec<u8>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub bytes: u64,
    pub connections: u64,
    pub peers: u64,
    pub served: Vec<i32>,
    pub reporters: Vec<String>,
    pub workloads: Vec<String>,
}

#[derive(clickhouse::Row, Deserialize)]
pub struct StatsRow {
    pub bucket: u8,
    pub rows: u64,
    pub oldest: i64,
    pub newest: i64,
}

pub fn bucket_code(b: Bucket) -> u8 {
    match b {
        Bucket::Minute => 0,
        Bucket::Hour => 1,
    }
}

pub fn bucket_from_code(code: u8) -> Result<Bucket, String> {
    match code {
        0 => Ok(Bucket::Minute),
        1 => Ok(Bucket::Hour),
        _ => Err(format!("bucket code {code} is unknown")),
    }
}

pub fn verdict_code(v: VerdictKind) -> u8 {
    match v {
        VerdictKind::Allowed => 1,
        VerdictKind::PotentiallyBlocked => 2,
        VerdictKind::Blocked => 3,
    }
}

fn verdict_from_code(code: u8) -> Result<Option<VerdictKind>, String> {
    match code {
        0 => Ok(None),
        1 => Ok(Some(VerdictKind::Allowed)),
        2 => Ok(Some(VerdictKind::PotentiallyBlocked)),
        3 => Ok(Some(VerdictKind::Blocked)),
        _ => Err(format!("verdict code {code} is unknown")),
    }
}

pub fn opt_name(name: Option<&str>) -> String {
    match name {
        None => String::new(),
        Some(n) => format!("+{n}"),
    }
}

fn name_from(text: &str, column: &str) -> Result<Option<String>, String> {
    match text.strip_prefix('+') {
        Some(name) => Ok(Some(name.to_string())),
        None if text.is_empty() => Ok(None),
        None => Err(format!("{column} {text:?} is neither empty nor +name")),
    }
}

fn encode_verdict(v: Option<&SummaryVerdict>) -> (u8, String) {
    match v {
        None => (0, String::new()),
        // JSON, because rule ids are free text and order matters; a Vec<String> always
        // encodes.
        Some(v) => (
            verdict_code(v.verdict),
            serde_json::to_string(&v.rules).unwrap_or_default(),
        ),
    }
}

fn decode_verdict(code: u8, rules: &str, column: &str) -> Result<Option<SummaryVerdict>, String> {
    let Some(verdict) = verdict_from_code(code).map_err(|e| format!("{column}: {e}"))? else {
        return Ok(None);
    };
    let rules: Vec<String> =
        serde_json::from_str(rules).map_err(|e| format!("{column}: rules {rules:?}: {e}"))?;
    Ok(Some(SummaryVerdict { verdict, rules }))
}

fn labels_from(text: &str, column: &str) -> Result<Labels, String> {
    Labels::parse_list(text).map_err(|e| format!("{column} {text:?}: {e}"))
}

/// An address as stored: family byte, then the address bytes, so that byte order sorts
/// like `IpAddr` (as in the SQLite store).
pub fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v4) => std::iter::once(4).chain(v4.octets()).collect(),
        IpAddr::V6(v6) => std::iter::once(6).chain(v6.octets()).collect(),
    }
}

pub fn addr_from(b: &[u8], column: &str) -> Result<IpAddr, String> {
    match b {
        [4, rest @ ..] => <[u8; 4]>::try_from(rest).ok().map(IpAddr::from),
        [6, rest @ ..] => <[u8; 16]>::try_from(rest).ok().map(IpAddr::from),
        _ => None,
    }
    .ok_or_else(|| format!("{column} is not an address: {}", hex(b)))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A counter as stored: the widest value every backend keeps is `i64::MAX`.
fn counter(n: u64) -> u64 {
    n.min(i64::MAX.cast_unsigned())
}

/// The row written for `s`; `src` and `dst` are its encoded addresses.
pub fn in_row<'a>(
    s: &FlowSummary,
    src: &'a [u8],
    dst: &'a [u8],
    seq: u64,
    derive_hour: bool,
) -> InRow<'a> {
    let k = &s.key;
    let (prov_verdict, prov_rules) = encode_verdict(s.provisioned.as_ref());
    let (draft_verdict, draft_rules) = encode_verdict(s.draft.as_ref());
    InRow {
        bucket: bucket_code(k.bucket),
        bucket_start: k.bucket_start_ms,
        src,
        dst,
        proto: k.proto,
        port: k.port,
        process: opt_name(k.process.as_deref()),
        packets: counter(s.packets),
        bytes: counter(s.bytes),
        connections: counter(s.connections),
        first_seen: s.first_seen_ms,
        last_seen: s.last_seen_ms,
        reporter: opt_name(s.reporter.as_deref()),
        src_workload: opt_name(s.src_workload.as_deref()),
        dst_workload: opt_name(s.dst_workload.as_deref()),
        // `Labels` displays sorted `k=v,k=v`, and keys and values cannot hold ',' or
        // '=', so the text is canonical and parses back.
        src_labels: s.src_labels.to_string(),
        dst_labels: s.dst_labels.to_string(),
        prov_verdict,
        prov_rules,
        draft_verdict,
        draft_rules,
        seq,
        hour_start: Bucket::Hour.start_of(k.bucket_start_ms),
        derive_hour: u8::from(derive_hour && k.bucket == Bucket::Minute),
    }
}

impl OutRow {
    pub fn describe(&self) -> String {
        format!(
            "(bucket {}, bucket_start {}, src {}, dst {}, proto {}, port {}, process {:?})",
            self.bucket,
            self.bucket_start,
            hex(&self.src),
            hex(&self.dst),
            self.proto,
            self.port,
            self.process
        )
    }

    pub fn decode(self) -> Result<FlowSummary, String> {
        Ok(FlowSummary {
            key: SummaryKey {
                bucket: bucket_from_code(self.bucket)?,
                bucket_start_ms: self.bucket_start,
                src: addr_from(&self.src, "src")?,
                dst: addr_from(&self.dst, "dst")?,
                proto: self.proto,
                port: self.port,
                process: name_from(&self.process, "process")?,
            },
            packets: self.packets,
            bytes: self.bytes,
            connections: self.connections,
            first_seen_ms: self.first_seen,
            last_seen_ms: self.last_seen,
            reporter: name_from(&self.reporter, "reporter")?,
            src_workload: name_from(&self.src_workload, "src_workload")?,
            dst_workload: name_from(&self.dst_workload, "dst_workload")?,
            src_labels: labels_from(&self.src_labels, "src_labels")?,
            dst_labels: labels_from(&self.dst_labels, "dst_labels")?,
            provisioned: decode_verdict(self.prov_verdict, &self.prov_rules, "prov_verdict")?,
            draft: decode_verdict(self.draft_verdict, &self.draft_rules, "draft_verdict")?,
        })
    }
}

impl SeenRow {
    pub fn decode(self) -> Result<crate::SeenAddress, String> {
        let mut served = self
            .served
            .iter()
            .map(|&code| {
                let bad = || format!("served: {code} is not a protocol and port");
                let proto = u8::try_from(code >> 16).map_err(|_| bad())?;
                let port = u16::try_from(code & 0xffff).map_err(|_| bad())?;
                Ok(crate::ServedPort { proto, port })
            })
            .collect::<Result<Vec<_>, String>>()?;
        served.sort_unstable();
        let names = |texts: &[String], column: &str| -> Result<Vec<String>, String> {
            let mut out = Vec::new();
            for t in texts {
                out.extend(name_from(t, column)?);
            }
            out.sort_unstable();
            out.dedup();
            Ok(out)
        };
        Ok(crate::SeenAddress {
            address: addr_from(&self.addr, "address")?,
            first_seen_ms: self.first_seen,
            last_seen_ms: self.last_seen,
            bytes: self.bytes,
            connections: self.connections,
            peers: self.peers,
            served,
            reporters: names(&self.reporters, "reporter")?,
            workloads: names(&self.workloads, "workload")?,
        })
    }
}

#[derive(clickhouse::Row, Deserialize)]
pub struct GroupRow {
    pub src_end: Vec<u8>,
    pub dst_end: Vec<u8>,
    pub src_workload: String,
    pub dst_workload: String,
    pub src_labels: String,
    pub dst_labels: String,
    pub proto: u8,
    pub port: u16,
    pub prov_verdict: u8,
    pub draft_verdict: u8,
    pub packets_total: u64,
    pub bytes_total: u64,
    pub connections_total: u64,
    pub summaries: u64,
    pub first: i64,
    pub last: i64,
}

impl GroupRow {
    pub fn decode(self) -> Result<crate::FlowGroup, String> {
        let end = |b: &[u8], column: &str| -> Result<Option<IpAddr>, String> {
            if b.is_empty() {
                Ok(None)
            } else {
                addr_from(b, column).map(Some)
            }
        };
        Ok(crate::FlowGroup {
            src: end(&self.src_end, "src")?,
            dst: end(&self.dst_end, "dst")?,
            src_workload: name_from(&self.src_workload, "src_workload")?,
            dst_workload: name_from(&self.dst_workload, "dst_workload")?,
            src_labels: labels_from(&self.src_labels, "src_labels")?,
            dst_labels: labels_from(&self.dst_labels, "dst_labels")?,
            proto: self.proto,
            port: self.port,
            provisioned: verdict_from_code(self.prov_verdict)?,
            draft: verdict_from_code(self.draft_verdict)?,
            packets: self.packets_total,
            bytes: self.bytes_total,
            connections: self.connections_total,
            summaries: self.summaries,
            first_seen_ms: self.first,
            last_seen_ms: self.last,
        })
    }
}

#[derive(clickhouse::Row, Deserialize)]
pub struct ConversationRow {
    pub src: Vec<u8>,
    pub dst: Vec<u8>,
    pub proto: u8,
    pub port: u16,
    pub process: String,
    pub src_workload: String,
    pub dst_workload: String,
    pub src_labels: String,
    pub dst_labels: String,
    pub packets_total: u64,
    pub bytes_total: u64,
    pub connections_total: u64,
    pub observations_total: u64,
    pub summaries: u64,
    pub first: i64,
    pub last: i64,
}

impl ConversationRow {
    pub fn decode(self) -> Result<crate::Conversation, String> {
        Ok(crate::Conversation {
            src: addr_from(&self.src, "src")?,
            dst: addr_from(&self.dst, "dst")?,
            proto: self.proto,
            port: self.port,
            process: name_from(&self.process, "process")?,
            src_workload: name_from(&self.src_workload, "src_workload")?,
            dst_workload: name_from(&self.dst_workload, "dst_workload")?,
            src_labels: labels_from(&self.src_labels, "src_labels")?,
            dst_labels: labels_from(&self.dst_labels, "dst_labels")?,
            packets: self.packets_total,
            bytes: self.bytes_total,
            connections: self.connections_total,
            observations: self.observations_total,
            summaries: self.summaries,
            first_seen_ms: self.first,
            last_seen_ms: self.last,
        })
    }
}
