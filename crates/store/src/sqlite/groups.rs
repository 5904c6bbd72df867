//! Aggregations computed in SQL: the map's groups and the per-address activity.

use bulkhead_model::{Bucket, VerdictKind};
use rusqlite::types::ValueRef;
use rusqlite::{Row, params};

use super::SqliteFlowStore;
use super::decode::{
    Resolver, addr, bucket_code, describe_row, int, opt_int, ranged, show_value, text,
    verdict_from_code,
};
use crate::{SeenAddress, ServedPort, StoreError};

impl SqliteFlowStore {
    pub(super) fn groups_in(&self, q: &crate::GroupQuery) -> Result<crate::GroupPage, StoreError> {
        if q.limit == 0 || q.from_ms >= q.to_ms {
            return Ok(crate::GroupPage {
                items: Vec::new(),
                more: false,
            });
        }
        // Sums split in 32-bit halves, as in `seen_addresses`: SQLite's sum() fails on
        // 64-bit overflow.
        const SQL: &str = "SELECT
                CASE WHEN src_workload IS NULL THEN src END,
                CASE WHEN dst_workload IS NULL THEN dst END,
                src_workload, dst_workload, src_labels, dst_labels, proto, port,
                prov_verdict, draft_verdict,
                sum(packets >> 32), sum(packets & 4294967295),
                sum(bytes >> 32), sum(bytes & 4294967295),
                sum(connections >> 32), sum(connections & 4294967295),
                count(*), min(first_seen), max(last_seen)
            FROM summary WHERE bucket = ?1 AND bucket_start >= ?2 AND bucket_start < ?3
            GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
            ORDER BY max(last_seen) DESC LIMIT ?4";
        let err = || StoreError::backend("grouping flow summaries");
        let reader = self.reader()?;
        let mut stmt = reader.prepare_cached(SQL).map_err(err())?;
        let fetch = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query(params![bucket_code(q.bucket), q.from_ms, q.to_ms, fetch])
            .map_err(err())?;
        let mut resolver = Resolver::new(&reader);
        let mut items = Vec::new();
        while let Some(row) = rows.next().map_err(err())? {
            let group = decode_group(row, &mut resolver).map_err(|what| StoreError::Corrupt {
                row: format!("group {}", describe_row(row)),
                what,
            })?;
            items.push(group);
        }
        let more = items.len() > q.limit;
        items.truncate(q.limit);
        Ok(crate::GroupPage { items, more })
    }

    pub(super) fn conversations_in(
        &self,
        q: &crate::GroupQuery,
    ) -> Result<crate::ConversationPage, StoreError> {
        if q.limit == 0 || q.from_ms >= q.to_ms {
            return Ok(crate::ConversationPage {
                items: Vec::new(),
                more: false,
            });
        }
        // Sums split in 32-bit halves, as in `seen_addresses`.
        const SQL: &str = "SELECT src, dst, proto, port, process,
                src_workload, dst_workload, src_labels, dst_labels,
                sum(packets >> 32), sum(packets & 4294967295),
                sum(bytes >> 32), sum(bytes & 4294967295),
                sum(connections >> 32), sum(connections & 4294967295),
                sum(max(connections, 1) >> 32), sum(max(connections, 1) & 4294967295),
                count(*), min(first_seen), max(last_seen)
            FROM summary WHERE bucket = ?1 AND bucket_start >= ?2 AND bucket_start < ?3
            GROUP BY src, dst, proto, port, process,
                src_workload, dst_workload, src_labels, dst_labels
            ORDER BY max(last_seen) DESC LIMIT ?4";
        let err = || StoreError::backend("folding flow summaries into conversations");
        let reader = self.reader()?;
        let mut stmt = reader.prepare_cached(SQL).map_err(err())?;
        let fetch = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query(params![bucket_code(q.bucket), q.from_ms, q.to_ms, fetch])
            .map_err(err())?;
        let mut resolver = Resolver::new(&reader);
        let mut items = Vec::new();
        while let Some(row) = rows.next().map_err(err())? {
            let c =
                decode_conversation(row, &mut resolver).map_err(|what| StoreError::Corrupt {
                    row: format!(
                        "conversation {} → {} port {}",
                        show_value(row.get_ref(0).ok()),
                        show_value(row.get_ref(1).ok()),
                        show_value(row.get_ref(3).ok())
                    ),
                    what,
                })?;
            items.push(c);
        }
        let more = items.len() > q.limit;
        items.truncate(q.limit);
        Ok(crate::ConversationPage { items, more })
    }

    pub(super) fn seen_addresses_in(
        &self,
        bucket: Bucket,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeenAddress>, StoreError> {
        // Each summary counts once for each of its two ends; the provider end also
        // records the port it served. Sums are split in 32-bit halves because SQLite's
        // sum() fails on 64-bit overflow, and the halves cannot overflow.
        const SQL: &str = "WITH w AS (
                SELECT src, dst, proto, port, bytes, connections, first_seen, last_seen,
                       reporter, src_workload, dst_workload
                FROM summary WHERE bucket = ?1 AND bucket_start >= ?2 AND bucket_start < ?3
            ), ends (addr, peer, served, workload, bytes, connections, first_seen,
                     last_seen, reporter) AS (
                SELECT src, dst, NULL, src_workload, bytes, connections, first_seen,
                       last_seen, reporter FROM w
                UNION ALL
                SELECT dst, src, proto * 65536 + port, dst_workload, bytes, connections,
                       first_seen, last_seen, reporter FROM w
            )
            SELECT addr, min(first_seen), max(last_seen),
                   sum(bytes >> 32), sum(bytes & 4294967295),
                   sum(connections >> 32), sum(connections & 4294967295),
                   count(DISTINCT peer),
                   json_group_array(DISTINCT served),
                   json_group_array(DISTINCT reporter),
                   json_group_array(DISTINCT workload)
            FROM ends GROUP BY addr ORDER BY addr";
        let read_err = || StoreError::backend("aggregating addresses");
        let reader = self.reader()?;
        let mut stmt = reader.prepare_cached(SQL).map_err(read_err())?;
        let mut rows = stmt
            .query(params![bucket_code(bucket), from_ms, to_ms])
            .map_err(read_err())?;
        let mut resolver = Resolver::new(&reader);
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(read_err())? {
            let seen = decode_seen(row, &mut resolver).map_err(|what| StoreError::Corrupt {
                row: format!("address {}", show_value(row.get_ref(0).ok())),
                what,
            })?;
            out.push(seen);
        }
        Ok(out)
    }
}

fn decode_group(row: &Row<'_>, r: &mut Resolver<'_>) -> Result<crate::FlowGroup, String> {
    let opt_addr = |i: usize, col: &str| match row.get_ref(i) {
        Ok(ValueRef::Null) => Ok(None),
        _ => addr(row, i, col).map(Some),
    };
    let joined = |hi: usize, lo: usize, col: &str| -> Result<u64, String> {
        let hi = u128::from(ranged::<u64>(row, hi, col)?);
        let lo = u128::from(ranged::<u64>(row, lo, col)?);
        Ok(u64::try_from((hi << 32) + lo).unwrap_or(u64::MAX))
    };
    let opt_name = |r: &mut Resolver<'_>, i: usize, col: &str| -> Result<Option<String>, String> {
        opt_int(row, i, col)?.map(|id| r.name(id, col)).transpose()
    };
    let verdict = |i: usize, col: &str| -> Result<Option<VerdictKind>, String> {
        opt_int(row, i, col)?.map(verdict_from_code).transpose()
    };
    Ok(crate::FlowGroup {
        src: opt_addr(0, "src")?,
        dst: opt_addr(1, "dst")?,
        src_workload: opt_name(r, 2, "src_workload")?,
        dst_workload: opt_name(r, 3, "dst_workload")?,
        src_labels: r.labels(int(row, 4, "src_labels")?, "src_labels")?,
        dst_labels: r.labels(int(row, 5, "dst_labels")?, "dst_labels")?,
        proto: ranged(row, 6, "proto")?,
        port: ranged(row, 7, "port")?,
        provisioned: verdict(8, "prov_verdict")?,
        draft: verdict(9, "draft_verdict")?,
        packets: joined(10, 11, "packets")?,
        bytes: joined(12, 13, "bytes")?,
        connections: joined(14, 15, "connections")?,
        summaries: ranged(row, 16, "count")?,
        first_seen_ms: int(row, 17, "first_seen")?,
        last_seen_ms: int(row, 18, "last_seen")?,
    })
}

fn joined(row: &Row<'_>, hi: usize, lo: usize, col: &str) -> Result<u64, String> {
    let hi = u128::from(ranged::<u64>(row, hi, col)?);
    let lo = u128::from(ranged::<u64>(row, lo, col)?);
    Ok(u64::try_from((hi << 32) + lo).unwrap_or(u64::MAX))
}

fn decode_conversation(row: &Row<'_>, r: &mut Resolver<'_>) -> Result<crate::Conversation, String> {
    let opt_name = |r: &mut Resolver<'_>, i: usize, col: &str| -> Result<Option<String>, String> {
        opt_int(row, i, col)?.map(|id| r.name(id, col)).transpose()
    };
    let process = match int(row, 4, "process")? {
        0 => None,
        id => Some(r.name(id, "process")?),
    };
    Ok(crate::Conversation {
        src: addr(row, 0, "src")?,
        dst: addr(row, 1, "dst")?,
        proto: ranged(row, 2, "proto")?,
        port: ranged(row, 3, "port")?,
        process,
        src_workload: opt_name(r, 5, "src_workload")?,
        dst_workload: opt_name(r, 6, "dst_workload")?,
        src_labels: r.labels(int(row, 7, "src_labels")?, "src_labels")?,
        dst_labels: r.labels(int(row, 8, "dst_labels")?, "dst_labels")?,
        packets: joined(row, 9, 10, "packets")?,
        bytes: joined(row, 11, 12, "bytes")?,
        connections: joined(row, 13, 14, "connections")?,
        observations: joined(row, 15, 16, "observations")?,
        summaries: ranged(row, 17, "count")?,
        first_seen_ms: int(row, 18, "first_seen")?,
        last_seen_ms: int(row, 19, "last_seen")?,
    })
}

fn decode_seen(row: &Row<'_>, r: &mut Resolver<'_>) -> Result<SeenAddress, String> {
    let joined = |hi: usize, lo: usize, col: &str| -> Result<u64, String> {
        let hi = u128::from(ranged::<u64>(row, hi, col)?);
        let lo = u128::from(ranged::<u64>(row, lo, col)?);
        Ok(u64::try_from((hi << 32) + lo).unwrap_or(u64::MAX))
    };
    let ids = |i: usize, col: &str| -> Result<Vec<i64>, String> {
        let text = text(row, i, col)?;
        let ids: Vec<Option<i64>> =
            serde_json::from_str(&text).map_err(|e| format!("{col}: {e} in {text:?}"))?;
        Ok(ids.into_iter().flatten().collect())
    };
    let mut served = ids(8, "served")?
        .into_iter()
        .map(|code| {
            let bad = || format!("served: {code} is not a protocol and port");
            let proto = u8::try_from(code >> 16).map_err(|_| bad())?;
            let port = u16::try_from(code & 0xffff).map_err(|_| bad())?;
            Ok(ServedPort { proto, port })
        })
        .collect::<Result<Vec<_>, String>>()?;
    served.sort_unstable();
    let mut reporters = ids(9, "reporter")?
        .into_iter()
        .map(|id| r.name(id, "reporter"))
        .collect::<Result<Vec<_>, _>>()?;
    reporters.sort_unstable();
    let mut workloads = ids(10, "workload")?
        .into_iter()
        .map(|id| r.name(id, "workload"))
        .collect::<Result<Vec<_>, _>>()?;
    workloads.sort_unstable();
    workloads.dedup();
    Ok(SeenAddress {
        address: addr(row, 0, "address")?,
        first_seen_ms: int(row, 1, "first_seen")?,
        last_seen_ms: int(row, 2, "last_seen")?,
        bytes: joined(3, 4, "bytes")?,
        connections: joined(5, 6, "connections")?,
        peers: ranged(row, 7, "peers")?,
        served,
        reporters,
        workloads,
    })
}
