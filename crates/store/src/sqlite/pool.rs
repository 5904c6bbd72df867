//! The read side of the SQLite store: a pool of read-only connections to its file, so
//! that queries run side by side and never wait for the writer (WAL mode gives each
//! read a snapshot of the last commit while a write transaction is open).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

/// A read connection checked out of the pool; back in the pool when dropped.
pub(super) type Reader = r2d2::PooledConnection<ReadOnly>;

pub(super) type Readers = r2d2::Pool<ReadOnly>;

/// Opens read-only connections to one database file.
#[derive(Debug)]
pub(super) struct ReadOnly {
    path: PathBuf,
}

impl r2d2::ManageConnection for ReadOnly {
    type Connection = Connection;
    type Error = rusqlite::Error;

    fn connect(&self) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // busy_timeout: a reader can meet a lock only while the WAL is being recovered
        // or reset; it should wait for that, as the writer waits for other writers.
        conn.execute_batch(
            "PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -32768;
             PRAGMA temp_store = MEMORY;",
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), rusqlite::Error> {
        conn.execute_batch("")
    }

    fn has_broken(&self, _: &mut Connection) -> bool {
        false
    }
}

/// How many reads run at once: one per core, at least two so that one slow query (a
/// 30-day aggregation) does not hold up every other on a small machine.
fn pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(cores.clamp(2, 8)).unwrap_or(2)
}

/// One helper thread for every store's pool: connections are opened when the pool is
/// built and kept (a local file does not go stale), so it has almost nothing to do, and
/// a thread per store would add up in tests that open hundreds.
fn helper() -> Arc<scheduled_thread_pool::ScheduledThreadPool> {
    static HELPER: OnceLock<Arc<scheduled_thread_pool::ScheduledThreadPool>> = OnceLock::new();
    HELPER
        .get_or_init(|| {
            Arc::new(
                scheduled_thread_pool::ScheduledThreadPool::builder()
                    .num_threads(1)
                    .thread_name_pattern("flow-store-pool-{}")
                    .build(),
            )
        })
        .clone()
}

/// Opens the pool on the file at `path`, which the writer has created and migrated.
pub(super) fn open(path: &Path) -> Result<Readers, StoreError> {
    let size = pool_size();
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(size))
        .max_lifetime(None)
        .idle_timeout(None)
        // A checkout waits for a free connection, not for a lock: reads that queue
        // this long mean the machine is overloaded, which deserves an error.
        .connection_timeout(Duration::from_secs(60))
        .test_on_check_out(false)
        .thread_pool(helper())
        .build(ReadOnly {
            path: path.to_path_buf(),
        })
        .map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            source: format!("opening read connections: {e}").into(),
        })
}

/// A connection for one read. The error says the pool timed out, which only a machine
/// that cannot keep up produces.
pub(super) fn get(readers: &Readers) -> Result<Reader, StoreError> {
    readers
        .get()
        .map_err(StoreError::backend("waiting for a read connection"))
}
