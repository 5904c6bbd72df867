//! Queries of summaries, their plans, and the store's statistics.

use bulkhead_model::{Bucket, FlowSummary};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::SqliteFlowStore;
use super::decode::{
    AddrBytes, Resolver, bucket_code, bucket_from_code, decode_summary, describe_row, int,
    show_value, verdict_code,
};
use crate::{BucketStats, FlowQuery, StoreError, StoreStats};

/// The hour index column's width, as in the schema.
const HOUR_MS: i64 = 3_600_000;

/// Past this many hours, a query by address or workload scans the time range rather
/// than seeking once per hour.
const MAX_HOUR_SEEKS: i64 = 24 * 400;

const SELECT_SUMMARY: &str = "SELECT s.bucket, s.bucket_start, s.src, s.dst, s.proto, s.port,
        s.process, s.packets, s.bytes, s.connections, s.first_seen, s.last_seen, s.reporter,
        s.src_workload, s.dst_workload, s.src_labels, s.dst_labels,
        s.prov_verdict, s.prov_rules, s.draft_verdict, s.draft_rules
    FROM summary s LEFT JOIN dict p ON p.id = s.process";

impl SqliteFlowStore {
    pub(super) fn query_in(&self, q: &FlowQuery) -> Result<Vec<FlowSummary>, StoreError> {
        let mut reader = self.reader()?;
        // One snapshot for the span of hours, the name lookup and the rows: a write
        // landing in between would otherwise add rows outside the listed hours.
        let tx = reader
            .transaction()
            .map_err(StoreError::backend("starting a flow summary read"))?;
        let Some((sql, args)) = query_sql(&tx, q)? else {
            return Ok(Vec::new());
        };
        let read_err = StoreError::backend("reading flow summaries");
        let mut stmt = tx.prepare_cached(&sql).map_err(read_err)?;
        let mut rows = stmt
            .query(params_from_iter(args))
            .map_err(StoreError::backend("reading flow summaries"))?;
        let mut resolver = Resolver::new(&tx);
        let mut out = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(StoreError::backend("reading flow summaries"))?
        {
            out.push(
                decode_summary(row, &mut resolver).map_err(|what| StoreError::Corrupt {
                    row: describe_row(row),
                    what,
                })?,
            );
        }
        Ok(out)
    }

    pub(super) fn stats_in(&self) -> Result<StoreStats, StoreError> {
        let mut stats = StoreStats::default();
        let reader = self.reader()?;
        let mut stmt = reader
            .prepare_cached(
                "SELECT bucket, count(*), min(bucket_start), max(bucket_start)
                 FROM summary GROUP BY bucket",
            )
            .map_err(StoreError::backend("counting flow summaries"))?;
        let mut rows = stmt
            .query([])
            .map_err(StoreError::backend("counting flow summaries"))?;
        while let Some(row) = rows
            .next()
            .map_err(StoreError::backend("counting flow summaries"))?
        {
            let decoded = (|| -> Result<(Bucket, BucketStats), String> {
                let bucket = bucket_from_code(int(row, 0, "bucket")?)?;
                Ok((
                    bucket,
                    BucketStats {
                        rows: int(row, 1, "count")?.max(0).cast_unsigned(),
                        oldest_start_ms: Some(int(row, 2, "bucket_start")?),
                        newest_start_ms: Some(int(row, 3, "bucket_start")?),
                    },
                ))
            })();
            let (bucket, s) = decoded.map_err(|what| StoreError::Corrupt {
                row: format!("group of bucket {}", show_value(row.get_ref(0).ok())),
                what,
            })?;
            match bucket {
                Bucket::Minute => stats.minute = s,
                Bucket::Hour => stats.hour = s,
            }
        }
        Ok(stats)
    }
}

/// The first and last values of the `hour` column among rows of `q`'s window, or `None`
/// when the window holds no rows. Clamped to the data so that an open-ended window does
/// not enumerate hours nobody wrote.
fn hours_with_data(conn: &Connection, q: &FlowQuery) -> Result<Option<(i64, i64)>, StoreError> {
    let (min, max): (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "SELECT (SELECT min(bucket_start) FROM summary WHERE bucket = ?1
                            AND bucket_start >= ?2 AND bucket_start < ?3),
                        (SELECT max(bucket_start) FROM summary WHERE bucket = ?1
                            AND bucket_start >= ?2 AND bucket_start < ?3)",
        )
        .and_then(|mut s| {
            s.query_row(params![bucket_code(q.bucket), q.from_ms, q.to_ms], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .map_err(StoreError::backend("finding the time span of a query"))?;
    // Integer division truncates toward zero in SQLite as in Rust, so these are the
    // same hours the generated column holds.
    Ok(min
        .zip(max)
        .map(|(min, max)| (min / HOUR_MS, max / HOUR_MS)))
}

/// The statement and arguments that answer `q`, or `None` when nothing can match.
fn query_sql(conn: &Connection, q: &FlowQuery) -> Result<Option<(String, Vec<Value>)>, StoreError> {
    if q.limit == 0 || q.from_ms >= q.to_ms {
        return Ok(None);
    }
    let mut b = SqlBuilder::default();
    let mut filters = format!(
        " WHERE s.bucket = {} AND s.bucket_start >= {} AND s.bucket_start < {}",
        b.arg(bucket_code(q.bucket)),
        b.arg(q.from_ms),
        b.arg(q.to_ms)
    );
    let mut ctes = Vec::new();
    if q.workload.is_some() || q.address.is_some() {
        let Some((first, last)) = hours_with_data(conn, q)? else {
            return Ok(None);
        };
        if last - first <= MAX_HOUR_SEEKS {
            // A literal list, not a recursive CTE or bound values: the planner
            // seeks an index once per listed hour only when it sees constants
            // (15 ms to 1 ms for a day's window over 30 days of data).
            let hours: Vec<String> = (first..=last).map(|h| h.to_string()).collect();
            filters += &format!(" AND s.hour IN ({})", hours.join(","));
        }
    }
    if let Some(w) = &q.workload {
        let Some(id) = name_id(conn, w)? else {
            return Ok(None);
        };
        let p = b.arg(id);
        filters += &format!(" AND (s.src_workload = {p} OR s.dst_workload = {p})");
    }
    for (labels, name, test) in [
        (
            &q.labels,
            "any_labels",
            "(s.src_labels IN any_labels OR s.dst_labels IN any_labels)",
        ),
        (&q.src_labels, "src_labels", "s.src_labels IN src_labels"),
        (&q.dst_labels, "dst_labels", "s.dst_labels IN dst_labels"),
    ] {
        // Every label set includes the empty set, so an empty filter is no filter.
        let Some(labels) = labels.as_ref().filter(|l| !l.is_empty()) else {
            continue;
        };
        let sets: Vec<String> = labels
            .iter()
            .map(|(k, v)| {
                format!(
                    "SELECT set_id FROM labelset_label WHERE key = {} AND value = {}",
                    b.arg(k.to_string()),
                    b.arg(v.to_string())
                )
            })
            .collect();
        ctes.push(format!("{name}(id) AS ({})", sets.join(" INTERSECT ")));
        filters += " AND ";
        filters += test;
    }
    if let Some(a) = q.address {
        let p = b.arg(AddrBytes::new(a).as_slice().to_vec());
        filters += &format!(" AND (s.src = {p} OR s.dst = {p})");
    }
    if let Some(proto) = q.proto {
        filters += &format!(" AND s.proto = {}", b.arg(i64::from(proto)));
    }
    if let Some(port) = q.port {
        filters += &format!(" AND s.port = {}", b.arg(i64::from(port)));
    }
    if let Some(v) = q.verdict {
        filters += &format!(" AND s.prov_verdict = {}", b.arg(verdict_code(v)));
    }
    let with = if ctes.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", ctes.join(", "))
    };
    let sql = format!(
        "{with}{SELECT_SUMMARY}{filters} \
             ORDER BY s.bucket_start {}, s.src, s.dst, s.proto, s.port, p.text \
             LIMIT {} OFFSET {}",
        if q.newest_first { "DESC" } else { "ASC" },
        b.arg(i64::try_from(q.limit).unwrap_or(i64::MAX)),
        b.arg(i64::try_from(q.offset).unwrap_or(i64::MAX)),
    );
    Ok(Some((sql, b.args)))
}

impl SqliteFlowStore {
    /// SQLite's plan for `q`, one line per step (`EXPLAIN QUERY PLAN`): how the tests
    /// check that queries seek by hour and workload rather than scan.
    pub fn query_plan(&self, q: &FlowQuery) -> Result<Vec<String>, StoreError> {
        let reader = self.reader()?;
        let Some((sql, args)) = query_sql(&reader, q)? else {
            return Ok(Vec::new());
        };
        let err = || StoreError::backend("explaining a flow query");
        let mut stmt = reader
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .map_err(err())?;
        let rows = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .map_err(err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err())
    }
}

fn name_id(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT id FROM dict WHERE text = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(StoreError::backend("looking up a name"))
}

#[derive(Default)]
struct SqlBuilder {
    args: Vec<Value>,
}

impl SqlBuilder {
    /// Binds `v` and returns its placeholder.
    fn arg(&mut self, v: impl Into<Value>) -> String {
        self.args.push(v.into());
        format!("?{}", self.args.len())
    }
}
