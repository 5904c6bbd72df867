//! The SQLite backend. The schema is in `schema.rs`; the README explains its
//! choices.

mod decode;
mod file;
mod groups;
mod pool;
mod query;
mod schema;
mod write;

use rustc_hash::FxHashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bulkhead_model::{Bucket, FlowSummary, Labels};
use rusqlite::Connection;

use crate::{FlowQuery, FlowStore, SeenAddress, StoreError, StoreStats};

pub(crate) use file::open_wal;

/// Flow summaries in one SQLite database file.
///
/// One writer connection, behind a mutex, takes every write; reads take a connection
/// of their own from a pool of read-only ones, so they run side by side and never wait
/// for a write: in WAL mode a read sees the last commit while a write transaction is
/// open. Several stores (processes) may open the same file; writes from different
/// stores serialise on SQLite's lock, waiting up to five seconds.
pub struct SqliteFlowStore {
    writer: Mutex<Writer>,
    readers: pool::Readers,
    path: PathBuf,
    /// The directory of a store made by [`Self::in_memory`], removed with the store.
    _scratch: Option<tempfile::TempDir>,
}

/// The writer connection and the ids it interned.
struct Writer {
    conn: Connection,
    // Ids interned by this connection, to skip a lookup per string per summary.
    // Interned rows are never deleted, so an id stays valid once committed; an id from
    // a rolled-back transaction is not, hence `forget_ids` on every failed write.
    names: FxHashMap<String, i64>,
    rule_lists: FxHashMap<Vec<String>, i64>,
    label_sets: FxHashMap<Labels, i64>,
}

impl fmt::Debug for SqliteFlowStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.readers.state();
        f.debug_struct("SqliteFlowStore")
            .field("path", &self.path)
            .field("read_connections", &state.connections)
            .field("idle_read_connections", &state.idle_connections)
            .finish_non_exhaustive()
    }
}

impl SqliteFlowStore {
    /// Opens (creating if needed) the store in the file at `path`, migrating its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let writer = file::open_wal(path, Writer::setup)?;
        Self::with_writer(writer, path, None)
    }

    /// A store that lives as long as this value; for tests and one-shot analyses. It is
    /// a file in a private temporary directory, removed when the store is dropped,
    /// rather than SQLite's memory database: several connections can share a memory
    /// database only through its shared cache, where a read waits for a write's table
    /// lock, which is what the pool of readers is there to avoid.
    pub fn in_memory() -> Result<Self, StoreError> {
        let scratch = tempfile::Builder::new()
            .prefix("bulkhead-flows-")
            .tempdir()
            .map_err(StoreError::backend("making a temporary flow store"))?;
        let path = scratch.path().join("flows.sqlite");
        let writer = file::open_wal(&path, Writer::setup)?;
        Self::with_writer(writer, &path, Some(scratch))
    }

    fn with_writer(
        writer: Writer,
        path: &Path,
        scratch: Option<tempfile::TempDir>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            readers: pool::open(path)?,
            writer: Mutex::new(writer),
            path: path.to_path_buf(),
            _scratch: scratch,
        })
    }

    /// The writer, for one write. A write that panicked rolled back as it unwound (the
    /// transaction's drop), so the connection is sound; its interned ids may not be.
    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|poisoned| {
            let mut w = poisoned.into_inner();
            w.forget_ids();
            w
        })
    }

    /// Writes `summaries` as [`FlowStore::upsert`] does, and calls `before_commit` once
    /// they are written, before the transaction commits, holding the writer: how a test
    /// keeps a write open to show that reads go on meanwhile.
    #[doc(hidden)]
    pub fn upsert_pausing(
        &self,
        summaries: &[FlowSummary],
        before_commit: impl FnOnce(),
    ) -> Result<(), StoreError> {
        self.writer().upsert(summaries, before_commit)
    }

    /// A read connection of the pool, for one read.
    fn reader(&self) -> Result<pool::Reader, StoreError> {
        pool::get(&self.readers)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.reader()?
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .map_err(StoreError::backend("reading the schema version"))
    }

    /// Bytes the database occupies (pages in use, including ones still in the WAL).
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 = self
            .reader()?
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )
            .map_err(StoreError::backend("measuring the flow store"))?;
        Ok(bytes.max(0).cast_unsigned())
    }
}

impl Writer {
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
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn,
            names: FxHashMap::default(),
            rule_lists: FxHashMap::default(),
            label_sets: FxHashMap::default(),
        })
    }
}

impl FlowStore for SqliteFlowStore {
    fn upsert(&self, summaries: &[FlowSummary]) -> Result<(), StoreError> {
        self.writer().upsert(summaries, || {})
    }

    fn upsert_batch(
        &self,
        mark: crate::BatchMark<'_>,
        at_ms: i64,
        summaries: &[FlowSummary],
    ) -> Result<crate::BatchWrite, StoreError> {
        self.writer()
            .upsert_marked(Some((mark, at_ms)), summaries, || {})
    }

    fn forget_batches(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        self.writer().forget_batches(older_than_ms)
    }

    fn batch_mark(&self, source: &str, stream: &str) -> Result<Option<u64>, StoreError> {
        let reader = self.reader()?;
        write::batch_mark_in(&reader, source, stream)
    }

    fn query(&self, q: &FlowQuery) -> Result<Vec<FlowSummary>, StoreError> {
        self.query_in(q)
    }

    fn expire(&self, older_than_ms: i64) -> Result<u64, StoreError> {
        self.writer().expire(older_than_ms)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.stats_in()
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
