//! The flow store's schema, and the migrations that reach it.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

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
    // Version 2.
    //
    // The highest batch written of each sender's stream (`FlowStore::upsert_batch`),
    // checked and moved in the transaction that writes the batch's summaries, so a
    // re-sent batch is stored once. One row per stream, not per batch.
    "CREATE TABLE batch_mark (
        source TEXT NOT NULL,
        stream TEXT NOT NULL,
        seq INTEGER NOT NULL,
        written_ms INTEGER NOT NULL,
        PRIMARY KEY (source, stream)
    ) WITHOUT ROWID;",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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
