//! One control-store database of either backend, with a raw connection beside it for
//! what only a test does (stray SQL, hand edits), so that one test body can run
//! against SQLite and PostgreSQL alike.

use bulkhead_store::ControlStore;

use super::pg;

pub enum TestDb {
    Sqlite {
        dir: tempfile::TempDir,
        path: std::path::PathBuf,
    },
    Postgres {
        conninfo: String,
    },
}

impl TestDb {
    /// A new SQLite file in a temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sqlite");
        TestDb::Sqlite { dir, path }
    }

    /// A new database on the test cluster.
    pub fn postgres() -> TestDb {
        TestDb::Postgres {
            conninfo: pg::cluster().fresh_database(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }

    /// Opens the store on this database (again).
    pub fn open(&self) -> ControlStore {
        self.try_open().unwrap()
    }

    pub fn try_open(&self) -> Result<ControlStore, bulkhead_store::StoreError> {
        match self {
            TestDb::Sqlite { path, .. } => ControlStore::open(path),
            TestDb::Postgres { conninfo } => ControlStore::connect_postgres(conninfo),
        }
    }

    /// Runs statements outside the store; the database's error text on failure.
    pub fn exec(&self, sql: &str) -> Result<(), String> {
        match self {
            TestDb::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .and_then(|c| c.execute_batch(sql))
                .map_err(|e| e.to_string()),
            TestDb::Postgres { conninfo } => pg::cluster()
                .raw(conninfo)
                .batch_execute(sql)
                .map_err(|e| format!("{e}: {:?}", e.as_db_error().map(|d| d.message()))),
        }
    }

    /// One integer, read outside the store.
    pub fn query_i64(&self, sql: &str) -> i64 {
        match self {
            TestDb::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            TestDb::Postgres { conninfo } => pg::cluster()
                .raw(conninfo)
                .query_one(sql, &[])
                .unwrap()
                .get(0),
        }
    }

    /// The directory holding an SQLite database.
    pub fn sqlite_dir(&self) -> Option<&std::path::Path> {
        match self {
            TestDb::Sqlite { dir, .. } => Some(dir.path()),
            TestDb::Postgres { .. } => None,
        }
    }
}
