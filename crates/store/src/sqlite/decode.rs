//! Values as stored and back: addresses, codes, interned ids, rows.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bulkhead_model::{Bucket, FlowSummary, Labels, SummaryKey, SummaryVerdict, VerdictKind};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row};

/// Turns interned ids back into values, remembering them for the rest of one read.
pub(super) struct Resolver<'c> {
    conn: &'c Connection,
    names: HashMap<i64, String>,
    rule_lists: HashMap<i64, Vec<String>>,
    label_sets: HashMap<i64, Labels>,
}

impl<'c> Resolver<'c> {
    pub(super) fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            names: HashMap::new(),
            rule_lists: HashMap::new(),
            label_sets: HashMap::new(),
        }
    }

    fn lookup(&self, sql: &str, id: i64, what: &str) -> Result<String, String> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_row([id], |r| r.get::<_, String>(0)).optional())
            .map_err(|e| format!("cannot read {what} {id}: {e}"))?
            .ok_or_else(|| format!("{what} {id} does not exist"))
    }

    pub(super) fn name(&mut self, id: i64, column: &str) -> Result<String, String> {
        if let Some(n) = self.names.get(&id) {
            return Ok(n.clone());
        }
        let text = self.lookup(
            "SELECT text FROM dict WHERE id = ?1",
            id,
            &format!("{column}: name"),
        )?;
        self.names.insert(id, text.clone());
        Ok(text)
    }

    pub(super) fn rules(&mut self, id: i64, column: &str) -> Result<Vec<String>, String> {
        if let Some(r) = self.rule_lists.get(&id) {
            return Ok(r.clone());
        }
        let what = format!("{column}: rule list");
        let text = self.lookup("SELECT text FROM dict WHERE id = ?1", id, &what)?;
        let rules: Vec<String> =
            serde_json::from_str(&text).map_err(|e| format!("{what} {id} {text:?}: {e}"))?;
        self.rule_lists.insert(id, rules.clone());
        Ok(rules)
    }

    pub(super) fn labels(&mut self, id: i64, column: &str) -> Result<Labels, String> {
        if let Some(l) = self.label_sets.get(&id) {
            return Ok(l.clone());
        }
        let what = format!("{column}: label set");
        let canon = self.lookup("SELECT canon FROM labelset WHERE id = ?1", id, &what)?;
        let labels = Labels::parse_list(&canon).map_err(|e| format!("{what} {id}: {e}"))?;
        self.label_sets.insert(id, labels.clone());
        Ok(labels)
    }
}

pub(super) fn decode_summary(row: &Row<'_>, r: &mut Resolver<'_>) -> Result<FlowSummary, String> {
    let process = match int(row, 6, "process")? {
        0 => None,
        id => Some(r.name(id, "process")?),
    };
    let opt_name = |r: &mut Resolver<'_>, i: usize, col: &str| -> Result<Option<String>, String> {
        opt_int(row, i, col)?.map(|id| r.name(id, col)).transpose()
    };
    let verdict = |r: &mut Resolver<'_>, i: usize, col: &str| {
        let kind = opt_int(row, i, col)?;
        let rules = opt_int(row, i + 1, col)?;
        match (kind, rules) {
            (None, None) => Ok(None),
            (Some(kind), Some(rules)) => Ok(Some(SummaryVerdict {
                verdict: verdict_from_code(kind).map_err(|e| format!("{col}: {e}"))?,
                rules: r.rules(rules, col)?,
            })),
            _ => Err(format!(
                "{col}: verdict and rule list must both be set or both be empty"
            )),
        }
    };
    Ok(FlowSummary {
        key: SummaryKey {
            bucket: bucket_from_code(int(row, 0, "bucket")?)?,
            bucket_start_ms: int(row, 1, "bucket_start")?,
            src: addr(row, 2, "src")?,
            dst: addr(row, 3, "dst")?,
            proto: ranged(row, 4, "proto")?,
            port: ranged(row, 5, "port")?,
            process,
        },
        packets: ranged(row, 7, "packets")?,
        bytes: ranged(row, 8, "bytes")?,
        connections: ranged(row, 9, "connections")?,
        first_seen_ms: int(row, 10, "first_seen")?,
        last_seen_ms: int(row, 11, "last_seen")?,
        reporter: opt_name(r, 12, "reporter")?,
        src_workload: opt_name(r, 13, "src_workload")?,
        dst_workload: opt_name(r, 14, "dst_workload")?,
        src_labels: r.labels(int(row, 15, "src_labels")?, "src_labels")?,
        dst_labels: r.labels(int(row, 16, "dst_labels")?, "dst_labels")?,
        provisioned: verdict(r, 17, "prov_verdict")?,
        draft: verdict(r, 19, "draft_verdict")?,
    })
}

pub(super) fn int(row: &Row<'_>, i: usize, col: &str) -> Result<i64, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Integer(n)) => Ok(n),
        Ok(other) => Err(format!(
            "{col} is {}, not an integer",
            show_value(Some(other))
        )),
        Err(e) => Err(format!("{col}: {e}")),
    }
}

pub(super) fn opt_int(row: &Row<'_>, i: usize, col: &str) -> Result<Option<i64>, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Null) => Ok(None),
        _ => int(row, i, col).map(Some),
    }
}

pub(super) fn ranged<T: TryFrom<i64>>(row: &Row<'_>, i: usize, col: &str) -> Result<T, String> {
    let n = int(row, i, col)?;
    T::try_from(n).map_err(|_| format!("{col} is {n}, out of range"))
}

pub(super) fn text(row: &Row<'_>, i: usize, col: &str) -> Result<String, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Text(t)) => {
            String::from_utf8(t.to_vec()).map_err(|_| format!("{col} is not UTF-8"))
        }
        Ok(other) => Err(format!("{col} is {}, not text", show_value(Some(other)))),
        Err(e) => Err(format!("{col}: {e}")),
    }
}

pub(super) fn addr(row: &Row<'_>, i: usize, col: &str) -> Result<IpAddr, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Blob(b)) => {
            AddrBytes::decode(b).ok_or_else(|| format!("{col} is not an address: {}", hex(b)))
        }
        Ok(other) => Err(format!(
            "{col} is {}, not an address",
            show_value(Some(other))
        )),
        Err(e) => Err(format!("{col}: {e}")),
    }
}

/// Names a row by its key columns, read leniently since the row may be the bad part.
pub(super) fn describe_row(row: &Row<'_>) -> String {
    let v = |i| show_value(row.get_ref(i).ok());
    format!(
        "(bucket {}, bucket_start {}, src {}, dst {}, proto {}, port {}, process {})",
        v(0),
        v(1),
        v(2),
        v(3),
        v(4),
        v(5),
        v(6)
    )
}

pub(super) fn show_value(v: Option<ValueRef<'_>>) -> String {
    match v {
        None => "(unreadable)".to_string(),
        Some(ValueRef::Null) => "NULL".to_string(),
        Some(ValueRef::Integer(n)) => n.to_string(),
        Some(ValueRef::Real(x)) => format!("{x:?}"),
        Some(ValueRef::Text(t)) => format!("{:?}", String::from_utf8_lossy(t)),
        Some(ValueRef::Blob(b)) => match AddrBytes::decode(b) {
            Some(a) => a.to_string(),
            None => format!("x'{}'", hex(b)),
        },
    }
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An address as stored: family byte, then the address bytes. Inline, because two are
/// encoded per summary written.
pub(super) struct AddrBytes {
    buf: [u8; 17],
    len: usize,
}

impl AddrBytes {
    pub(super) fn new(a: IpAddr) -> Self {
        let mut buf = [0u8; 17];
        let len = match a {
            IpAddr::V4(v4) => {
                buf[0] = 4;
                buf[1..5].copy_from_slice(&v4.octets());
                5
            }
            IpAddr::V6(v6) => {
                buf[0] = 6;
                buf[1..17].copy_from_slice(&v6.octets());
                17
            }
        };
        Self { buf, len }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub(super) fn decode(b: &[u8]) -> Option<IpAddr> {
        match b {
            [4, rest @ ..] => <[u8; 4]>::try_from(rest)
                .ok()
                .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            [6, rest @ ..] => <[u8; 16]>::try_from(rest)
                .ok()
                .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
            _ => None,
        }
    }
}

/// SQLite integers are signed; a counter past `i64::MAX` is saturated, as merges are.
pub(super) fn counter(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn bucket_code(b: Bucket) -> i64 {
    match b {
        Bucket::Minute => 0,
        Bucket::Hour => 1,
    }
}

pub(super) fn bucket_from_code(code: i64) -> Result<Bucket, String> {
    match code {
        0 => Ok(Bucket::Minute),
        1 => Ok(Bucket::Hour),
        _ => Err(format!("bucket code {code} is unknown")),
    }
}

pub(super) fn verdict_code(v: VerdictKind) -> i64 {
    match v {
        VerdictKind::Allowed => 0,
        VerdictKind::PotentiallyBlocked => 1,
        VerdictKind::Blocked => 2,
    }
}

pub(super) fn verdict_from_code(code: i64) -> Result<VerdictKind, String> {
    match code {
        0 => Ok(VerdictKind::Allowed),
        1 => Ok(VerdictKind::PotentiallyBlocked),
        2 => Ok(VerdictKind::Blocked),
        _ => Err(format!("verdict code {code} is unknown")),
    }
}
