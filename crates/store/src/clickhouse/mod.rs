//! The ClickHouse backend of [`FlowStore`], for estates that outgrow one SQLite file.
//! The schema and why it is shaped so are in [`schema`].
//!
//! The trait is synchronous and the `clickhouse` crate is not, so the store owns a small
//! runtime of its own and waits on it; called from inside another runtime (a blocking
//! task of the server), it waits on a scoped thread so that runtimes never nest.

mod aggregate;
mod rows;
mod schema;

use std::future::Future;
use std::time::Duration;

use bulkhead_model::{Bucket, FlowSummary};

use crate::{BucketStats, FlowQuery, FlowStore, SeenAddress, StoreError, StoreStats};
use rows::{OutRow, StatsRow, addr_bytes, bucket_code, hex, in_row, opt_name};

pub use schema::SCHEMA_VERSION as CLICKHOUSE_SCHEMA_VERSION;

/// Past this, a statement is abandoned and reported as failed.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

/// How the store treats hour summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickHouseOptions {
    /// ClickHouse derives hour summaries from the minute ones it receives, and the hour
    /// summaries writers send are ignored (they would count the traffic twice). Off,
    /// both widths are stored as written, like the SQLite store.
    pub hour_rollup: bool,
}

impl Default for ClickHouseOptions {
    fn default() -> Self {
        Self { hour_rollup: true }
    }
}

/// Where a ClickHouse flow store lives, parsed from
/// `clickhouse://[user[:password]@]host[:port]/database` (HTTP; port 8123 by default).
#[derive(Clone, PartialEq, Eq)]
pub struct ClickHouseUrl {
    pub http_url: String,
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for ClickHouseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.target())
    }
}

impl ClickHouseUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("{e}"))?;
        if url.scheme() != "clickhouse" {
            return Err(format!(
                "the scheme is {:?}; a ClickHouse flow store is clickhouse://host:port/database",
                url.scheme()
            ));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("the URL names no host")?;
        let port = url.port().unwrap_or(8123);
        let database = url.path().trim_start_matches('/').to_string();
        if database.is_empty()
            || !database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "the database {database:?} must be a name of letters, digits and '_' \
                 (clickhouse://host:port/database)"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("the URL takes no query or fragment".into());
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "the user or password is not UTF-8 once decoded".to_string())
        };
        let user = Some(url.username())
            .filter(|u| !u.is_empty())
            .map(decode)
            .transpose()?;
        let password = url.password().map(decode).transpose()?;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Ok(Self {
            http_url: format!("http://{host}:{port}"),
            database,
            user,
            password,
        })
    }

    /// The URL without credentials, for messages.
    pub fn target(&self) -> String {
        format!(
            "{}/{}",
            self.http_url.replacen("http://", "clickhouse://", 1),
            self.database
        )
    }
}

/// Flow summaries in a ClickHouse database.
pub struct ClickHouseFlowStore {
    client: clickhouse::Client,
    runtime: OwnRuntime,
    url: ClickHouseUrl,
    options: ClickHouseOptions,
    /// The last sequence number given to a written row: later rows win "latest" columns.
    last_seq: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for ClickHouseFlowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseFlowStore")
            .field("url", &self.url)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn backend<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> StoreError {
    StoreError::backend(context)
}

impl ClickHouseFlowStore {
    /// Connects to the database at `url` (creating it and its tables when missing), with
    /// hours rolled up in ClickHouse.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, ClickHouseOptions::default())
    }

    pub fn connect_with(url: &str, options: ClickHouseOptions) -> Result<Self, StoreError> {
        let parsed = ClickHouseUrl::parse(url).map_err(|what| StoreError::Connect {
            store: "flow store",
            target: "ClickHouse".into(),
            source: format!("{what} (in --flows)").into(),
        })?;
        Self::connect_parsed(parsed, options)
    }

    /// As [`Self::connect`], with the URL already parsed.
    pub fn connect_url(url: ClickHouseUrl) -> Result<Self, StoreError> {
        Self::connect_parsed(url, ClickHouseOptions::default())
    }

    fn connect_parsed(
        parsed: ClickHouseUrl,
        options: ClickHouseOptions,
    ) -> Result<Self, StoreError> {
        let connect_err = |source: crate::error::BackendError| StoreError::Connect {
            store: "flow store",
            target: parsed.target(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| connect_err(Box::new(e)))?;
        let mut server = clickhouse::Client::default()
            .with_url(&parsed.http_url)
            // The crate checks rows against DESCRIBE output with settings that 18.16
            // does not know; our rows are checked by the store's own tests instead.
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        if let Some(u) = &parsed.user {
            server = server.with_user(u);
        }
        if let Some(p) = &parsed.password {
            server = server.with_password(p);
        }
        let client = server.clone().with_database(&parsed.database);
        let store = Self {
            client,
            runtime: OwnRuntime(Some(runtime)),
            url: parsed.clone(),
            options,
            last_seq: std::sync::atomic::AtomicU64::new(0),
        };
        let database = parsed.database.clone();
        store
            .run(async move {
                server
                    .query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
                    .execute()
                    .await
            })
            .map_err(|e| connect_err(e.into()))?;
        store.migrate().map_err(|e| match e {
            StoreError::Backend { source, .. } => connect_err(source),
            other => other,
        })?;
        Ok(store)
    }

    /// Where the store is, without credentials.
    pub fn target(&self) -> String {
        self.url.target()
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let client = self.client.clone();
        let found: Vec<i64> = self
            .run(async move {
                client
                    .query("CREATE TABLE IF NOT EXISTS schema_version (version Int64) ENGINE = TinyLog")
                    .execute()
                    .await?;
                client.query("SELECT version FROM schema_version").fetch_all::<i64>().await
            })
            .map_err(backend("reading the schema version"))?;
        let found = found.into_iter().max().unwrap_or(0);
        if found > schema::SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: schema::SCHEMA_VERSION,
            });
        }
        let client = self.client.clone();
        self.run(async move {
            for sql in schema::create_statements() {
                client.query(&sql).execute().await?;
            }
            if found < schema::SCHEMA_VERSION {
                client
                    .query("INSERT INTO schema_version (version) VALUES (?)")
                    .bind(schema::SCHEMA_VERSION)
                    .execute()
                    .await?;
            }
            Ok::<_, clickhouse::error::Error>(())
        })
        .map_err(|e| StoreError::Migrate {
            version: schema::SCHEMA_VERSION,
            source: Box::new(e),
        })
    }

    /// Runs `f` to completion on the store's runtime, with the statement timeout.
    fn run<T: Send>(
        &self,
        f: impl Future<Output = Result<T, clickhouse::error::Error>> + Send,
    ) -> Result<T, clickhouse::error::Error> {
        let bounded = async {
            tokio::time::timeout(STATEMENT_TIMEOUT, f)
                .await
                .unwrap_or_else(|_| {
                    Err(clickhouse::error::Error::Custom(format!(
                        "no answer in {} s",
                        STATEMENT_TIMEOUT.as_secs()
                    )))
                })
        };
        let runtime = self.runtime.get();
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| runtime.block_on(bounded))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            runtime.block_on(bounded)
        }
    }

    /// Sequence numbers for `n` rows, after every number given before: the wall clock in
    /// nanoseconds, so that rows of several writers order by when they were written.
    fn next_seqs(&self, n: usize) -> u64 {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut first = 0;
        // Concurrent writers each take a range after every range given before.
        let _ = self
            .last_seq
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                first = now.max(last.saturating_add(1));
                Some(first.saturating_add(n as u64))
            });
        first
    }

    fn fetch<R>(&self, sql: String, binds: Vec<Bind>) -> Result<Vec<R>, clickhouse::error::Error>
    where
        R: clickhouse::RowOwned + clickhouse::RowRead + Send,
    {
        let client = self.client.clone();
        self.run(async move {
            let mut q = client.query(&sql);
            for b in binds {
                q = match b {
                    Bind::Text(t) => q.bind(t),
                    Bind::Texts(t) => q.bind(t),
                };
            }
            q.fetch_all::<R>().await
        })
    }

    fn execute(&self, sql: String) -> Result<(), clickhouse::error::Error> {
        let client = self.client.clone();
        self.run(async move { client.query(&sql).execute().await })
    }

    /// Waits until no mutation of `summary` is pending.
    fn wait_for_mutations(&self) -> Result<(), StoreError> {
        self.wait_for_mutations_of("'summary', 'summary_terms'")
    }

    /// Waits until no mutation of `tables` (a quoted, comma-separated list) is pending.
    fn wait_for_mutations_of(&self, tables: &str) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + STATEMENT_TIMEOUT;
        loop {
            let pending: Vec<u64> = self
                .fetch(
                    format!(
                        "SELECT count() FROM system.mutations
                         WHERE database = ? AND table IN ({tables}) AND is_done = 0"
                    ),
                    vec![Bind::Text(self.url.database.clone())],
                )
                .map_err(backend("waiting for a deletion to finish"))?;
            if pending.first().copied().unwrap_or(0) == 0 {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(StoreError::Backend {
                    context: "waiting for a deletion to finish",
                    source: format!(
                        "the deletion is still running after {} s",
                        STATEMENT_TIMEOUT.as_secs()
                    )
                    .into(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The store's runtime, shut down without waiting when the store is dropped: the store
/// may be dropped inside another runtime, where waiting would panic.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct PartitionRow {
    table: String,
    partition: String,
}

/// A value bound to a `?` of a statement (the crate escapes it).
enum Bind {
    Text(String),
    Texts(Vec<String>),
}

fn corrupt(row: String) -> impl FnOnce(String) -> StoreError {
    move |what| StoreError::Corrupt { row, what }
}

impl FlowStore for ClickHouseFlowStore {
    fn upsert(&self, summaries: &[FlowSummary]) -> Result<(), StoreError> {
        let rollup = self.options.hour_rollup;
        let kept: Vec<&FlowSummary> = summaries
            .iter()
            .filter(|s| !(rollup && s.key.bucket == Bucket::Hour))
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        let first_seq = self.next_seqs(kept.len());
        let addresses: Vec<(Vec<u8>, Vec<u8>)> = kept
            .iter()
            .map(|s| (addr_bytes(s.key.src), addr_bytes(s.key.dst)))
            .collect();
        let rows: Vec<rows::InRow<'_>> = kept
            .iter()
            .zip(&addresses)
            .zip(first_seq..)
            .map(|((s, (src, dst)), seq)| in_row(s, src, dst, seq, rollup))
            .collect();
        let client = self.client.clone();
        self.run(async move {
            let mut insert = client.insert::<rows::InRow<'_>>("summary_in").await?;
            for row in &rows {
                insert.write(row).await?;
            }
            insert.end().await
        })
        .map_err(backend("writing flow summaries to ClickHouse"))
    }

    fn upsert_batch(
        &self,
        mark: crate::BatchMark<'_>,
        at_ms: i64,
        summaries: &[FlowSummary],
    ) -> Result<crate::BatchWrite, StoreError> {
        // No transaction: check, insert, record. A failure between the insert and the
        // record leaves the batch stored and unrecorded, so its re-sending stores it
        // again: at least once rather than lost (see the trait).
        if let Some(highest) = self
            .batch_mark(mark.source, mark.stream)?
            .filter(|&h| h >= mark.seq)
        {
            return Ok(crate::BatchWrite::Repeated { highest });
        }
        if mark.seq > i64::MAX as u64 {
            return Err(StoreError::Backend {
                context: "recording a batch number",
                source: format!("batch {} is past 2^63 - 1", mark.seq).into(),
            });
        }
        self.upsert(summaries)?;
        let row = rows::MarkRow {
            source: mark.source.to_string(),
            stream: mark.stream.to_string(),
            seq: mark.seq,
            written_ms: at_ms,
        };
        let client = self.client.clone();
        self.run(async move {
            let mut insert = client.insert::<rows::MarkRow>("batch_mark").await?;
            insert.write(&row).await?;
            insert.end().await
        })
        .map_err(backend("recording a batch number in ClickHouse"))?;
        Ok(crate::BatchWrite::Stored)
    }

    fn forget_batches(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        // Streams whose newest row is older: a stream still written keeps its mark.
        let stale = format!(
            "(source, stream) IN (SELECT source, stream FROM batch_mark
                GROUP BY source, stream HAVING max(written_ms) < {older_than_ms})"
        );
        let counted: Vec<u64> = self
            .fetch(
                format!(
                    "SELECT count() FROM (SELECT 1 FROM batch_mark WHERE {stale} \
                     GROUP BY source, stream)"
                ),
                Vec::new(),
            )
            .map_err(backend("counting old batch marks"))?;
        let n = counted.first().copied().unwrap_or(0);
        if n > 0 {
            self.execute(format!(
                "ALTER TABLE batch_mark DELETE WHERE written_ms < {older_than_ms}"
            ))
            .map_err(backend("forgetting old batch marks"))?;
            self.wait_for_mutations_of("'batch_mark'")?;
        }
        Ok(n)
    }

    fn batch_mark(&self, source: &str, stream: &str) -> Result<Option<u64>, StoreError> {
        let found: Vec<(u64, u64)> = self
            .fetch(
                "SELECT count(), max(seq) FROM batch_mark WHERE source = ? AND stream = ?".into(),
                vec![Bind::Text(source.into()), Bind::Text(stream.into())],
            )
            .map_err(backend("reading a batch mark from ClickHouse"))?;
        Ok(found.first().filter(|(n, _)| *n > 0).map(|(_, seq)| *seq))
    }

    fn query(&self, q: &FlowQuery) -> Result<Vec<FlowSummary>, StoreError> {
        if q.limit == 0 || q.from_ms >= q.to_ms {
            return Ok(Vec::new());
        }
        let mut binds = Vec::new();
        let mut filter = format!(
            "WHERE bucket = {} AND bucket_start >= {} AND bucket_start < {}",
            bucket_code(q.bucket),
            q.from_ms,
            q.to_ms
        );
        if let Some(a) = q.address {
            let a = hex(&addr_bytes(a));
            filter += &format!(" AND (src = unhex('{a}') OR dst = unhex('{a}'))");
        }
        if let Some(p) = q.proto {
            filter += &format!(" AND proto = {p}");
        }
        if let Some(p) = q.port {
            filter += &format!(" AND port = {p}");
        }
        // The most selective term of the filters, if any, narrows the keys to merge.
        let first_label = |l: &Option<bulkhead_model::Labels>| {
            l.as_ref()
                .and_then(|l| l.iter().next().map(|(k, v)| format!("{k}={v}")))
        };
        let terms: Vec<String> = if let Some(w) = &q.workload {
            vec![format!("w:{}", opt_name(Some(w)))]
        } else if let Some(l) = first_label(&q.src_labels) {
            vec![format!("s:{l}")]
        } else if let Some(l) = first_label(&q.dst_labels) {
            vec![format!("d:{l}")]
        } else if let Some(l) = first_label(&q.labels) {
            vec![format!("s:{l}"), format!("d:{l}")]
        } else {
            Vec::new()
        };
        if !terms.is_empty() {
            let placeholders = vec!["?"; terms.len()].join(", ");
            filter += &format!(
                " AND (bucket_start, src, dst, proto, port, process) IN (
                    SELECT bucket_start, src, dst, proto, port, process FROM summary_terms
                    WHERE term IN ({placeholders}) AND bucket = {}
                        AND bucket_start >= {} AND bucket_start < {})",
                bucket_code(q.bucket),
                q.from_ms,
                q.to_ms
            );
            binds.extend(terms.into_iter().map(Bind::Text));
        }
        let mut having = Vec::new();
        if let Some(w) = &q.workload {
            having.push("(src_workload = ? OR dst_workload = ?)".to_string());
            binds.push(Bind::Text(opt_name(Some(w))));
            binds.push(Bind::Text(opt_name(Some(w))));
        }
        let label_list = |l: &bulkhead_model::Labels| -> Vec<String> {
            l.iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        if let Some(l) = q.labels.as_ref().filter(|l| !l.is_empty()) {
            having.push(
                "(hasAll(splitByChar(',', src_labels), ?) \
                  OR hasAll(splitByChar(',', dst_labels), ?))"
                    .into(),
            );
            binds.push(Bind::Texts(label_list(l)));
            binds.push(Bind::Texts(label_list(l)));
        }
        if let Some(l) = q.src_labels.as_ref().filter(|l| !l.is_empty()) {
            having.push("hasAll(splitByChar(',', src_labels), ?)".into());
            binds.push(Bind::Texts(label_list(l)));
        }
        if let Some(l) = q.dst_labels.as_ref().filter(|l| !l.is_empty()) {
            having.push("hasAll(splitByChar(',', dst_labels), ?)".into());
            binds.push(Bind::Texts(label_list(l)));
        }
        if let Some(v) = q.verdict {
            having.push(format!("prov_verdict = {}", rows::verdict_code(v)));
        }
        let having = if having.is_empty() {
            String::new()
        } else {
            format!("HAVING {}", having.join(" AND "))
        };
        // ClickHouse adds offset and limit in 64 bits; a page no reader could hold is as
        // good as no limit.
        let limit = q.limit.min(1 << 40);
        let sql = format!(
            "{} ORDER BY bucket_start {}, src, dst, proto, port, process LIMIT {}, {limit}",
            schema::merged(&filter, &having),
            if q.newest_first { "DESC" } else { "ASC" },
            q.offset.min(1 << 40),
        );
        let rows: Vec<OutRow> = self
            .fetch(sql, binds)
            .map_err(backend("reading flow summaries from ClickHouse"))?;
        rows.into_iter()
            .map(|r| {
                let row = r.describe();
                r.decode().map_err(corrupt(row))
            })
            .collect()
    }

    fn expire(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        // A bucket ends at start + width (exclusive), so it is wholly past when
        // start + width <= older_than.
        let expired = format!(
            "(bucket = 0 AND bucket_start <= {}) OR (bucket = 1 AND bucket_start <= {})",
            older_than_ms.saturating_sub(Bucket::Minute.millis()),
            older_than_ms.saturating_sub(Bucket::Hour.millis()),
        );
        let counted: Vec<u64> = self
            .fetch(
                format!(
                    "SELECT count() FROM (SELECT 1 FROM summary WHERE {expired} \
                     GROUP BY {})",
                    schema::KEY
                ),
                Vec::new(),
            )
            .map_err(backend("counting expired flow summaries"))?;
        let deleted = counted.first().copied().unwrap_or(0);
        if deleted == 0 {
            return Ok(0);
        }
        // Whole days first: dropping a partition costs nothing, and the rest is at most
        // the boundary day.
        let partitions: Vec<PartitionRow> = self
            .fetch(
                "SELECT DISTINCT table, partition FROM system.parts
                 WHERE database = ? AND table IN ('summary', 'summary_terms') AND active"
                    .into(),
                vec![Bind::Text(self.url.database.clone())],
            )
            .map_err(backend("listing flow summary partitions"))?;
        for PartitionRow { table, partition } in partitions {
            let Ok(day) = partition.trim().parse::<i64>() else {
                continue;
            };
            // `intDiv` truncates toward zero: day 0 holds (-1 day, +1 day), a negative
            // day d holds ((d - 1) days, d days].
            let last_start = if day >= 0 {
                (day + 1).saturating_mul(schema::PARTITION_MS) - 1
            } else {
                day.saturating_mul(schema::PARTITION_MS)
            };
            if last_start.saturating_add(Bucket::Hour.millis()) <= older_than_ms {
                self.execute(format!("ALTER TABLE {table} DROP PARTITION {day}"))
                    .map_err(backend("dropping an expired day of flow summaries"))?;
            }
        }
        for table in ["summary", "summary_terms"] {
            let left: Vec<u64> = self
                .fetch(
                    format!("SELECT count() FROM {table} WHERE {expired}"),
                    Vec::new(),
                )
                .map_err(backend("counting expired flow summaries"))?;
            if left.first().copied().unwrap_or(0) > 0 {
                self.execute(format!("ALTER TABLE {table} DELETE WHERE {expired}"))
                    .map_err(backend("deleting expired flow summaries"))?;
            }
        }
        self.wait_for_mutations()?;
        Ok(deleted)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let rows: Vec<StatsRow> = self
            .fetch(
                format!(
                    "SELECT bucket, count() AS rows, min(bucket_start) AS oldest,
                        max(bucket_start) AS newest
                     FROM (SELECT bucket, bucket_start FROM summary GROUP BY {})
                     GROUP BY bucket ORDER BY bucket",
                    schema::KEY
                ),
                Vec::new(),
            )
            .map_err(backend("counting flow summaries"))?;
        let mut stats = StoreStats::default();
        for r in rows {
            let bucket = rows::bucket_from_code(r.bucket)
                .map_err(corrupt(format!("group of bucket {}", r.bucket)))?;
            let s = BucketStats {
                rows: r.rows,
                oldest_start_ms: Some(r.oldest),
                newest_start_ms: Some(r.newest),
            };
            match bucket {
                Bucket::Minute => stats.minute = s,
                Bucket::Hour => stats.hour = s,
            }
        }
        Ok(stats)
    }

    fn groups(&self, q: &crate::GroupQuery) -> Result<crate::GroupPage, StoreError> {
        self.groups_in(q)
    }

    fn conversations(&self, q: &crate::GroupQuery) -> Result<crate::ConversationPage, StoreError> {
        self.conversations_in(q)
    }

    fn seen_addresses(
        &self,
        bucket: Bucket,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SeenAddress>, StoreError> {
        self.seen_addresses_in(bucket, from_ms, to_ms)
    }
}
