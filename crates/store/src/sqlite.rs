//! The SQLite backend. The schema is in [`MIGRATIONS`]; the README explains its choices.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use bulkhead_model::{Bucket, FlowSummary, Labels, SummaryKey, SummaryVerdict, VerdictKind};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};

use crate::{BucketStats, FlowQuery, FlowStore, SeenAddress, ServedPort, StoreError, StoreStats};

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Append, never edit: a
/// file written by an older build must reach the same schema as a new one.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    //
    // Strings that repeat across many summaries (processes, reporters, workload names,
    // rule lists) are interned in `dict`, and label sets in `labelset`: a summary row
    // then holds small integers, which keeps rows short and the label filter a lookup in
    // `labelset_label` rather than a string match on every row. `process` uses 0 for
    // "none" so that no key column is NULL (NULLs are never equal in a UNIQUE key).
    // Addresses are a family byte (4 or 6) followed by the address bytes, so that
    // byte order sorts like `IpAddr`. The table is clustered on the key, which starts
    // with the time, so a time window is one contiguous range and expiry deletes from
    // the front of the b-tree.
    //
    // The secondary indexes lead with the hour of the bucket. Indexes led by address or
    // workload took each new row to a random page of a tree as large as the retention,
    // which made ingest 4x slower on a 1M-row store and slower still as the store grew;
    // led by the hour, new rows land in the newest, cached part of each index. Queries
    // by address or workload then seek once per hour of their window (`hours` in
    // `query`), which is cheap for the windows retention allows.
    //
    // The planner statistics are written by hand, shaped like a 1,000-workload estate,
    // so that plans do not depend on whether (or when) ANALYZE last ran: without them
    // SQLite scans the time range instead of using the indexes, ten times slower.
    "CREATE TABLE dict (
        id INTEGER PRIMARY KEY,
        text TEXT NOT NULL UNIQUE
    );
    CREATE TABLE labelset (
        id INTEGER PRIMARY KEY,
        canon TEXT NOT NULL UNIQUE
    );
    CREATE TABLE labelset_label (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        set_id INTEGER NOT NULL,
        PRIMARY KEY (key, value, set_id)
    ) WITHOUT ROWID;
    CREATE TABLE summary (
        bucket INTEGER NOT NULL,
        bucket_start INTEGER NOT NULL,
        src BLOB NOT NULL,
        dst BLOB NOT NULL,
        proto INTEGER NOT NULL,
        port INTEGER NOT NULL,
        process INTEGER NOT NULL,
        packets INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        connections INTEGER NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        reporter INTEGER,
        src_workload INTEGER,
        dst_workload INTEGER,
        src_labels INTEGER NOT NULL,
        dst_labels INTEGER NOT NULL,
        prov_verdict INTEGER,
        prov_rules INTEGER,
        draft_verdict INTEGER,
        draft_rules INTEGER,
        hour INTEGER GENERATED ALWAYS AS (bucket_start / 3600000) VIRTUAL,
        PRIMARY KEY (bucket, bucket_start, src, dst, proto, port, process)
    ) WITHOUT ROWID;
    CREATE INDEX summary_src ON summary (hour, src);
    CREATE INDEX summary_dst ON summary (hour, dst);
    CREATE INDEX summary_src_workload ON summary (hour, src_workload);
    CREATE INDEX summary_dst_workload ON summary (hour, dst_workload);
    ANALYZE;
    DELETE FROM sqlite_stat1 WHERE tbl = 'summary';
    INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
        ('summary', 'summary', '1000000 1000000 700 1 1 1 1 1'),
        ('summary', 'summary_src', '1000000 41667 42'),
        ('summary', 'summary_dst', '1000000 41667 42'),
        ('summary', 'summary_src_workload', '1000000 41667 42'),
        ('summary', 'summary_dst_workload', '1000000 41667 42');",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The hour index column's width, as in the schema.
const HOUR_MS: i64 = 3_600_000;

/// Past this many hours, a query by address or workload scans the time range rather
/// than seeking once per hour.
const MAX_HOUR_SEEKS: i64 = 24 * 400;

/// Caches of interned ids are dropped past this size, so that a flood of distinct
/// process names cannot grow memory without bound.
const MAX_CACHED_IDS: usize = 100_000;

const UPSERT: &str = "INSERT INTO summary (
        bucket, bucket_start, src, dst, proto, port, process,
        packets, bytes, connections, first_seen, last_seen, reporter,
        src_workload, dst_workload, src_labels, dst_labels,
        prov_verdict, prov_rules, draft_verdict, draft_rules)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
        ?18, ?19, ?20, ?21)
    ON CONFLICT (bucket, bucket_start, src, dst, proto, port, process) DO UPDATE SET
        packets = CASE WHEN excluded.packets > 9223372036854775807 - packets
            THEN 9223372036854775807 ELSE packets + excluded.packets END,
        bytes = CASE WHEN excluded.bytes > 9223372036854775807 - bytes
            THEN 9223372036854775807 ELSE bytes + excluded.bytes END,
        connections = CASE WHEN excluded.connections > 9223372036854775807 - connections
            THEN 9223372036854775807 ELSE connections + excluded.connections END,
        first_seen = min(first_seen, excluded.first_seen),
        last_seen = max(last_seen, excluded.last_seen),
        reporter = coalesce(reporter, excluded.reporter),
        src_workload = excluded.src_workload,
        dst_workload = excluded.dst_workload,
        src_labels = excluded.src_labels,
        dst_labels = excluded.dst_labels,
        prov_verdict = excluded.prov_verdict,
        prov_rules = excluded.prov_rules,
        draft_verdict = excluded.draft_verdict,
        draft_rules = excluded.draft_rules";

const SELECT_SUMMARY: &str = "SELECT s.bucket, s.bucket_start, s.src, s.dst, s.proto, s.port,
        s.process, s.packets, s.bytes, s.connections, s.first_seen, s.last_seen, s.reporter,
        s.src_workload, s.dst_workload, s.src_labels, s.dst_labels,
        s.prov_verdict, s.prov_rules, s.draft_verdict, s.draft_rules
    FROM summary s LEFT JOIN dict p ON p.id = s.process";

/// Flow summaries in one SQLite database (a file, or memory for tests).
///
/// Holds one connection. Several stores may open the same file (WAL mode lets readers
/// run beside the writer); writes from different connections serialise on SQLite's lock,
/// waiting up to five seconds.
pub struct SqliteFlowStore {
    conn: Connection,
    // Ids interned by this connection, to skip a lookup per string per summary.
    // Interned rows are never deleted, so an id stays valid once committed; an id from
    // a rolled-back transaction is not, hence `forget_ids` on every failed write.
    names: HashMap<String, i64>,
    rule_lists: HashMap<Vec<String>, i64>,
    label_sets: HashMap<Labels, i64>,
}

impl fmt::Debug for SqliteFlowStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteFlowStore")
            .field("path", &self.conn.path())
            .field("cached_names", &self.names.len())
            .field("cached_label_sets", &self.label_sets.len())
            .finish_non_exhaustive()
    }
}

/// Opens a SQLite file in WAL mode and hands the connection to `setup` (pragmas and
/// migrations); failures name the file. Both stores open their files this way, private
/// to their owner (see [`make_private`]).
pub(crate) fn open_wal<T>(
    path: &Path,
    setup: impl FnOnce(Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    make_private(path).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let conn = Connection::open(path).map_err(open_err)?;
    // journal_mode answers with a row, so it cannot go through execute_batch.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path: path.to_path_buf(),
            source: format!("the file refused WAL mode (journal mode is {mode})").into(),
        });
    }
    setup(conn).map_err(|e| match e {
        StoreError::Backend { source, .. } => StoreError::Open {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Makes the database file at `path` and its WAL side files readable by their owner
/// only: the files hold token hashes, the audit log and who talks to whom, and SQLite
/// would create them 0644 (less the umask). A new file is created 0600 before SQLite
/// sees it, and SQLite gives the `-wal` and `-shm` files it creates the mode of the
/// database file; files left by an older build lose their group and other bits.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::fs::{OpenOptions, Permissions};
    use std::io::ErrorKind;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let side = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    for file in [path.to_path_buf(), side("-wal"), side("-shm")] {
        let mode = match std::fs::metadata(&file) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, Permissions::from_mode(mode & 0o700)).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{} is readable by group or others and cannot be made private: {e}",
                        file.display()
                    ),
                )
            })?;
        }
    }
    Ok(())
}

impl SqliteFlowStore {
    /// Opens (creating if needed) the store in the file at `path`, migrating its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        crate::sqlite::open_wal(path.as_ref(), Self::setup)
    }

    /// A store that lives as long as this value; for tests and one-shot analyses.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()
            .map_err(StoreError::backend("opening an in-memory flow store"))?;
        Self::setup(conn)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        // NORMAL is durable against application crashes in WAL mode and loses at most
        // the last transactions on power loss, which summaries can afford.
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -65536;
             PRAGMA temp_store = MEMORY;",
        )
        .map_err(StoreError::backend("configuring the flow store"))?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        Ok(Self {
            conn,
            names: HashMap::new(),
            rule_lists: HashMap::new(),
            label_sets: HashMap::new(),
        })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .map_err(StoreError::backend("reading the schema version"))
    }

    /// Bytes the database occupies (pages in use, including ones still in the WAL).
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 = self
            .conn
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )
            .map_err(StoreError::backend("measuring the flow store"))?;
        Ok(bytes.max(0).cast_unsigned())
    }

    fn forget_ids(&mut self) {
        self.names.clear();
        self.rule_lists.clear();
        self.label_sets.clear();
    }

    fn upsert_in_transaction(&mut self, summaries: &[FlowSummary]) -> Result<(), StoreError> {
        if self.names.len() + self.rule_lists.len() + self.label_sets.len() > MAX_CACHED_IDS {
            self.forget_ids();
        }
        let Self {
            conn,
            names,
            rule_lists,
            label_sets,
        } = self;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::backend("starting a flow summary write"))?;
        {
            let mut ids = Interner {
                conn: &tx,
                names,
                rule_lists,
                label_sets,
            };
            let mut stmt = tx
                .prepare_cached(UPSERT)
                .map_err(StoreError::backend("preparing the summary upsert"))?;
            for s in summaries {
                let k = &s.key;
                let process = match &k.process {
                    Some(p) => ids.name(p)?,
                    None => 0,
                };
                let reporter = s.reporter.as_deref().map(|r| ids.name(r)).transpose()?;
                let src_workload = s.src_workload.as_deref().map(|w| ids.name(w)).transpose()?;
                let dst_workload = s.dst_workload.as_deref().map(|w| ids.name(w)).transpose()?;
                let src_labels = ids.label_set(&s.src_labels)?;
                let dst_labels = ids.label_set(&s.dst_labels)?;
                let (prov_verdict, prov_rules) = ids.verdict(s.provisioned.as_ref())?;
                let (draft_verdict, draft_rules) = ids.verdict(s.draft.as_ref())?;
                let src = AddrBytes::new(k.src);
                let dst = AddrBytes::new(k.dst);
                stmt.execute(params![
                    bucket_code(k.bucket),
                    k.bucket_start_ms,
                    src.as_slice(),
                    dst.as_slice(),
                    k.proto,
                    k.port,
                    process,
                    counter(s.packets),
                    counter(s.bytes),
                    counter(s.connections),
                    s.first_seen_ms,
                    s.last_seen_ms,
                    reporter,
                    src_workload,
                    dst_workload,
                    src_labels,
                    dst_labels,
                    prov_verdict,
                    prov_rules,
                    draft_verdict,
                    draft_rules,
                ])
                .map_err(StoreError::backend("writing a flow summary"))?;
            }
        }
        tx.commit()
            .map_err(StoreError::backend("committing flow summaries"))
    }

    /// The first and last values of the `hour` column among rows of `q`'s window, or
    /// `None` when the window holds no rows. Clamped to the data so that an open-ended
    /// window does not enumerate hours nobody wrote.
    fn hours_with_data(&self, q: &FlowQuery) -> Result<Option<(i64, i64)>, StoreError> {
        let (min, max): (Option<i64>, Option<i64>) = self
            .conn
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
    fn query_sql(&self, q: &FlowQuery) -> Result<Option<(String, Vec<Value>)>, StoreError> {
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
            let Some((first, last)) = self.hours_with_data(q)? else {
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
            let Some(id) = self.name_id(w)? else {
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

    /// SQLite's plan for `q`, one line per step (`EXPLAIN QUERY PLAN`): how the tests
    /// check that queries seek by hour and workload rather than scan.
    pub fn query_plan(&self, q: &FlowQuery) -> Result<Vec<String>, StoreError> {
        let Some((sql, args)) = self.query_sql(q)? else {
            return Ok(Vec::new());
        };
        let err = || StoreError::backend("explaining a flow query");
        let mut stmt = self
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .map_err(err())?;
        let rows = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .map_err(err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err())
    }

    fn name_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
        if let Some(&id) = self.names.get(name) {
            return Ok(Some(id));
        }
        self.conn
            .prepare_cached("SELECT id FROM dict WHERE text = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
            .map_err(StoreError::backend("looking up a name"))
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // Immediate: two processes opening a new file at once must not both migrate it.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::backend(
            "locking the flow store to check its schema",
        ))?;
    let found: i64 = tx
        .execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .and_then(|()| {
            tx.query_row(
                "SELECT coalesce(max(version), 0) FROM schema_version",
                [],
                |r| r.get(0),
            )
        })
        .map_err(StoreError::backend("reading the schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for version in found + 1..=SCHEMA_VERSION {
        let step = MIGRATIONS[usize::try_from(version - 1).unwrap_or_default()];
        tx.execute_batch(step)
            .and_then(|()| tx.execute("DELETE FROM schema_version", []))
            .and_then(|_| {
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [version],
                )
            })
            .map_err(|e| StoreError::Migrate {
                version,
                source: Box::new(e),
            })?;
    }
    tx.commit()
        .map_err(StoreError::backend("committing the schema migration"))?;
    // Statistics are read when the schema is loaded; this reloads the ones just written.
    conn.execute_batch("ANALYZE sqlite_schema")
        .map_err(StoreError::backend("loading planner statistics"))
}

/// Interns strings and label sets inside the write transaction.
struct Interner<'a> {
    conn: &'a Connection,
    names: &'a mut HashMap<String, i64>,
    rule_lists: &'a mut HashMap<Vec<String>, i64>,
    label_sets: &'a mut HashMap<Labels, i64>,
}

impl Interner<'_> {
    fn name(&mut self, text: &str) -> Result<i64, StoreError> {
        if let Some(&id) = self.names.get(text) {
            return Ok(id);
        }
        let id = intern_text(self.conn, text)?;
        self.names.insert(text.to_string(), id);
        Ok(id)
    }

    fn verdict(
        &mut self,
        v: Option<&SummaryVerdict>,
    ) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let Some(v) = v else {
            return Ok((None, None));
        };
        let rules = match self.rule_lists.get(v.rules.as_slice()) {
            Some(&id) => id,
            None => {
                // JSON, because rule ids are free text and order matters.
                let text = serde_json::to_string(&v.rules).map_err(|e| StoreError::Backend {
                    context: "encoding a rule list",
                    source: Box::new(e),
                })?;
                let id = intern_text(self.conn, &text)?;
                self.rule_lists.insert(v.rules.clone(), id);
                id
            }
        };
        Ok((Some(verdict_code(v.verdict)), Some(rules)))
    }

    fn label_set(&mut self, labels: &Labels) -> Result<i64, StoreError> {
        if let Some(&id) = self.label_sets.get(labels) {
            return Ok(id);
        }
        // `Labels` displays sorted `k=v,k=v`, and keys and values cannot hold ',' or
        // '=', so the text is canonical and parses back.
        let canon = labels.to_string();
        let err = StoreError::backend("interning a label set");
        let existing: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM labelset WHERE canon = ?1")
            .and_then(|mut s| s.query_row([&canon], |r| r.get(0)).optional())
            .map_err(StoreError::backend("looking up a label set"))?;
        let id = match existing {
            Some(id) => id,
            None => {
                let insert = || -> rusqlite::Result<i64> {
                    self.conn
                        .prepare_cached("INSERT INTO labelset (canon) VALUES (?1)")?
                        .execute([&canon])?;
                    let id = self.conn.last_insert_rowid();
                    let mut member = self.conn.prepare_cached(
                        "INSERT INTO labelset_label (key, value, set_id) VALUES (?1, ?2, ?3)",
                    )?;
                    for (k, v) in labels.iter() {
                        member.execute(params![k, v, id])?;
                    }
                    Ok(id)
                };
                insert().map_err(err)?
            }
        };
        self.label_sets.insert(labels.clone(), id);
        Ok(id)
    }
}

fn intern_text(conn: &Connection, text: &str) -> Result<i64, StoreError> {
    let existing: Option<i64> = conn
        .prepare_cached("SELECT id FROM dict WHERE text = ?1")
        .and_then(|mut s| s.query_row([text], |r| r.get(0)).optional())
        .map_err(StoreError::backend("looking up a name"))?;
    if let Some(id) = existing {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO dict (text) VALUES (?1)")
        .and_then(|mut s| s.execute([text]))
        .map_err(StoreError::backend("interning a name"))?;
    Ok(conn.last_insert_rowid())
}

impl FlowStore for SqliteFlowStore {
    fn upsert(&mut self, summaries: &[FlowSummary]) -> Result<(), StoreError> {
        let result = self.upsert_in_transaction(summaries);
        if result.is_err() {
            self.forget_ids();
        }
        result
    }

    fn query(&self, q: &FlowQuery) -> Result<Vec<FlowSummary>, StoreError> {
        let Some((sql, args)) = self.query_sql(q)? else {
            return Ok(Vec::new());
        };
        let read_err = StoreError::backend("reading flow summaries");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(read_err)?;
        let mut rows = stmt
            .query(params_from_iter(args))
            .map_err(StoreError::backend("reading flow summaries"))?;
        let mut resolver = Resolver::new(&self.conn);
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

    fn expire(&mut self, older_than_ms: i64) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::backend("starting expiry"))?;
        let mut deleted = 0u64;
        for bucket in [Bucket::Minute, Bucket::Hour] {
            // A bucket ends at start + width (exclusive), so it is wholly past when
            // start + width <= older_than.
            let last_start = older_than_ms.saturating_sub(bucket.millis());
            let n = tx
                .prepare_cached("DELETE FROM summary WHERE bucket = ?1 AND bucket_start <= ?2")
                .and_then(|mut s| s.execute(params![bucket_code(bucket), last_start]))
                .map_err(StoreError::backend("deleting expired flow summaries"))?;
            deleted += n as u64;
        }
        tx.commit()
            .map_err(StoreError::backend("committing expiry"))?;
        Ok(deleted)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut stats = StoreStats::default();
        let mut stmt = self
            .conn
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

    fn groups(&self, q: &crate::GroupQuery) -> Result<crate::GroupPage, StoreError> {
        self.groups_in(q)
    }

    fn seen_addresses(
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
        let mut stmt = self.conn.prepare_cached(SQL).map_err(read_err())?;
        let mut rows = stmt
            .query(params![bucket_code(bucket), from_ms, to_ms])
            .map_err(read_err())?;
        let mut resolver = Resolver::new(&self.conn);
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

impl SqliteFlowStore {
    fn groups_in(&self, q: &crate::GroupQuery) -> Result<crate::GroupPage, StoreError> {
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
        let mut stmt = self.conn.prepare_cached(SQL).map_err(err())?;
        let fetch = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query(params![bucket_code(q.bucket), q.from_ms, q.to_ms, fetch])
            .map_err(err())?;
        let mut resolver = Resolver::new(&self.conn);
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

/// Turns interned ids back into values, remembering them for the rest of one read.
struct Resolver<'c> {
    conn: &'c Connection,
    names: HashMap<i64, String>,
    rule_lists: HashMap<i64, Vec<String>>,
    label_sets: HashMap<i64, Labels>,
}

impl<'c> Resolver<'c> {
    fn new(conn: &'c Connection) -> Self {
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

    fn name(&mut self, id: i64, column: &str) -> Result<String, String> {
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

    fn rules(&mut self, id: i64, column: &str) -> Result<Vec<String>, String> {
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

    fn labels(&mut self, id: i64, column: &str) -> Result<Labels, String> {
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

fn decode_summary(row: &Row<'_>, r: &mut Resolver<'_>) -> Result<FlowSummary, String> {
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

fn int(row: &Row<'_>, i: usize, col: &str) -> Result<i64, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Integer(n)) => Ok(n),
        Ok(other) => Err(format!(
            "{col} is {}, not an integer",
            show_value(Some(other))
        )),
        Err(e) => Err(format!("{col}: {e}")),
    }
}

fn opt_int(row: &Row<'_>, i: usize, col: &str) -> Result<Option<i64>, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Null) => Ok(None),
        _ => int(row, i, col).map(Some),
    }
}

fn ranged<T: TryFrom<i64>>(row: &Row<'_>, i: usize, col: &str) -> Result<T, String> {
    let n = int(row, i, col)?;
    T::try_from(n).map_err(|_| format!("{col} is {n}, out of range"))
}

fn text(row: &Row<'_>, i: usize, col: &str) -> Result<String, String> {
    match row.get_ref(i) {
        Ok(ValueRef::Text(t)) => {
            String::from_utf8(t.to_vec()).map_err(|_| format!("{col} is not UTF-8"))
        }
        Ok(other) => Err(format!("{col} is {}, not text", show_value(Some(other)))),
        Err(e) => Err(format!("{col}: {e}")),
    }
}

fn addr(row: &Row<'_>, i: usize, col: &str) -> Result<IpAddr, String> {
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
fn describe_row(row: &Row<'_>) -> String {
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

fn show_value(v: Option<ValueRef<'_>>) -> String {
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An address as stored: family byte, then the address bytes. Inline, because two are
/// encoded per summary written.
struct AddrBytes {
    buf: [u8; 17],
    len: usize,
}

impl AddrBytes {
    fn new(a: IpAddr) -> Self {
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

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn decode(b: &[u8]) -> Option<IpAddr> {
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
fn counter(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn bucket_code(b: Bucket) -> i64 {
    match b {
        Bucket::Minute => 0,
        Bucket::Hour => 1,
    }
}

fn bucket_from_code(code: i64) -> Result<Bucket, String> {
    match code {
        0 => Ok(Bucket::Minute),
        1 => Ok(Bucket::Hour),
        _ => Err(format!("bucket code {code} is unknown")),
    }
}

fn verdict_code(v: VerdictKind) -> i64 {
    match v {
        VerdictKind::Allowed => 0,
        VerdictKind::PotentiallyBlocked => 1,
        VerdictKind::Blocked => 2,
    }
}

fn verdict_from_code(code: i64) -> Result<VerdictKind, String> {
    match code {
        0 => Ok(VerdictKind::Allowed),
        1 => Ok(VerdictKind::PotentiallyBlocked),
        2 => Ok(VerdictKind::Blocked),
        _ => Err(format!("verdict code {code} is unknown")),
    }
}
