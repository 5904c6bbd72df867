//! The control store's two connections, SQLite and PostgreSQL, behind [`Db`]: how each
//! opens, runs statements, and brackets a write (one transaction, writers serialized)
//! or a read.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use postgres::types::{ToSql, Type};
use postgres::{GenericClient, IsolationLevel, NoTls, Statement};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use super::sql::{Db, Dialect, Row, Val, postgres_placeholders};
use crate::StoreError;
use crate::error::BackendError;

/// Where the control store lives.
pub(crate) enum Backend {
    Sqlite(Connection),
    /// Behind a mutex because the client needs `&mut` even to read, while the store's
    /// reads take `&self`.
    Postgres(Box<Mutex<PgConn>>),
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Sqlite(conn) => write!(f, "sqlite {:?}", conn.path()),
            Backend::Postgres(pg) => match pg.lock() {
                Ok(pg) => write!(f, "postgres {}", pg.target),
                Err(_) => f.write_str("postgres (poisoned)"),
            },
        }
    }
}

/// The advisory lock every PostgreSQL write takes first, so that writers (several
/// servers on one database, or a migration) run one after the other as SQLite's
/// `BEGIN IMMEDIATE` makes them: checks such as "this name is free" then hold until
/// commit. Any fixed number works; this one spells "bulkhead" in ASCII.
const WRITE_LOCK: i64 = 0x6275_6c6b_6865_6164;

/// The session-level advisory lock the leader of several servers holds: whoever holds
/// it runs the singletons (rollout scheduler, agent-offline watch). PostgreSQL releases
/// it when the session ends, so a leader that dies or loses its connection is replaced.
const LEADER_LOCK: i64 = WRITE_LOCK + 1;

/// The session-level advisory lock of the process that expires old flows. Apart from
/// [`LEADER_LOCK`] because collectors, which never lead the servers' singletons, take
/// part in this election too.
const RETENTION_LOCK: i64 = WRITE_LOCK + 2;

/// The singletons elected through [`Backend::lead`], one lock each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Singleton {
    /// Rollout calendar and agent-offline watch: servers only; writes fenced.
    Leader,
    /// Flow retention: any server or collector; idempotent, so not fenced.
    Retention,
}

impl Singleton {
    fn lock(self) -> i64 {
        match self {
            Singleton::Leader => LEADER_LOCK,
            Singleton::Retention => RETENTION_LOCK,
        }
    }
}

/// Whether this session holds [`LEADER_LOCK`] (a bigint advisory key is stored as
/// classid = high 32 bits, objid = low 32 bits).
const HOLDS_LEADER_LOCK: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
      AND ((classid::bigint << 32) | objid::bigint) = $1)";

impl Backend {
    pub fn dialect(&self) -> Dialect {
        match self {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs `f` in one transaction that no other writer interleaves with, committed if
    /// it returns `Ok`, rolled back otherwise.
    pub fn write<T>(
        &mut self,
        context: &'static str,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let fail = |source: BackendError| StoreError::Backend { context, source };
        match self {
            Backend::Sqlite(conn) => {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| fail(Box::new(e)))?;
                let out = f(&mut SqliteDb(&tx))?;
                tx.commit().map_err(|e| fail(Box::new(e)))?;
                Ok(out)
            }
            Backend::Postgres(pg) => {
                let pg = pg.get_mut().map_err(|_| fail(POISONED.into()))?;
                pg.reconnect_if_closed().map_err(fail)?;
                let PgConn { client, stmts, .. } = pg;
                let mut tx = client
                    .get()
                    .map_err(fail)?
                    .transaction()
                    .map_err(|e| fail(pg_err(e)))?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                    .map_err(|e| fail(pg_err(e)))?;
                let out = f(&mut PgDb { c: &mut tx, stmts })?;
                // The commit returns once the commit record is flushed
                // (synchronous_commit is on for this session, see PgConn::connect).
                tx.commit().map_err(|e| fail(pg_err(e)))?;
                Ok(out)
            }
        }
    }

    /// Takes or keeps the leadership; returns the session it is held on (always `Some`
    /// on SQLite, whose file belongs to one server).
    pub fn lead(&mut self, singleton: Singleton) -> Result<Option<u64>, StoreError> {
        let fail = |source: BackendError| StoreError::Backend {
            context: "taking the leadership",
            source,
        };
        match self {
            Backend::Sqlite(_) => Ok(Some(0)),
            Backend::Postgres(pg) => {
                let pg = pg.get_mut().map_err(|_| fail(POISONED.into()))?;
                pg.reconnect_if_closed().map_err(fail)?;
                let session = pg.session_no;
                let client = pg.client.get().map_err(fail)?;
                let held: bool = client
                    .query_one(HOLDS_LEADER_LOCK, &[&singleton.lock()])
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| fail(pg_err(e)))?;
                if held {
                    return Ok(Some(session));
                }
                let taken: bool = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&singleton.lock()])
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| fail(pg_err(e)))?;
                Ok(taken.then_some(session))
            }
        }
    }

    /// As [`Backend::write`], only while the leadership taken on session `lease` is
    /// still held: checked inside the transaction, so that a leader that lost its lock
    /// (its session ended, another server took over) writes nothing.
    pub fn write_fenced<T>(
        &mut self,
        context: &'static str,
        lease: u64,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Backend::Postgres(pg) = self else {
            return self.write(context, f);
        };
        {
            let pg = pg.get_mut().map_err(|_| StoreError::Backend {
                context,
                source: POISONED.into(),
            })?;
            pg.reconnect_if_closed()
                .map_err(|source| StoreError::Backend { context, source })?;
            if pg.session_no != lease {
                return Err(StoreError::Fenced);
            }
        }
        self.write(context, |db| {
            let held = super::sql::int(
                db,
                context,
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks
                    WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
                      AND ((classid::bigint << 32) | objid::bigint) = ?1)
                 THEN 1 ELSE 0 END",
                &[Val::Int(LEADER_LOCK)],
            )?;
            if held != 1 {
                return Err(StoreError::Fenced);
            }
            f(db)
        })
    }

    /// Runs reads that see one snapshot.
    pub fn read<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let fail = |source: BackendError| StoreError::Backend { context, source };
        match self {
            Backend::Sqlite(conn) => {
                let tx = conn
                    .unchecked_transaction()
                    .map_err(|e| fail(Box::new(e)))?;
                let out = f(&mut SqliteDb(&tx))?;
                tx.finish().map_err(|e| fail(Box::new(e)))?;
                Ok(out)
            }
            Backend::Postgres(pg) => {
                let mut pg = pg.lock().map_err(|_| fail(POISONED.into()))?;
                pg.reconnect_if_closed().map_err(fail)?;
                let PgConn { client, stmts, .. } = &mut *pg;
                let mut tx = client
                    .get()
                    .map_err(fail)?
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .map_err(|e| fail(pg_err(e)))?;
                let out = f(&mut PgDb { c: &mut tx, stmts })?;
                tx.commit().map_err(|e| fail(pg_err(e)))?;
                Ok(out)
            }
        }
    }

    /// Runs a single read statement's worth of work, without a transaction around it.
    pub fn query<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self {
            Backend::Sqlite(conn) => f(&mut SqliteDb(conn)),
            Backend::Postgres(pg) => {
                let fail = |source: BackendError| StoreError::Backend { context, source };
                let mut pg = pg.lock().map_err(|_| fail(POISONED.into()))?;
                pg.reconnect_if_closed().map_err(fail)?;
                let PgConn { client, stmts, .. } = &mut *pg;
                f(&mut PgDb {
                    c: client.get().map_err(fail)?,
                    stmts,
                })
            }
        }
    }
}

const POISONED: &str = "a thread panicked while using the PostgreSQL connection";

// ------------------------------------------------------------------------- SQLite

struct SqliteDb<'a>(&'a Connection);

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Int(v) => ValueRef::Integer(*v),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
            Val::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl Db for SqliteDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64, BackendError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt.execute(rusqlite::params_from_iter(args))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>, BackendError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(columns);
            for i in 0..columns {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(v) => Val::Int(v),
                    ValueRef::Text(t) => Val::Text(String::from_utf8(t.to_vec())?),
                    ValueRef::Blob(b) => Val::Blob(b.to_vec()),
                    ValueRef::Real(v) => {
                        return Err(format!("column {i} holds a real ({v})").into());
                    }
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), BackendError> {
        Ok(self.0.execute_batch(sql)?)
    }
}

// ------------------------------------------------------------------------- PostgreSQL

/// The blocking client, which owns a small tokio runtime of its own. Dropping a
/// runtime from inside an asynchronous task panics, and the server's last reference to
/// the store may well go away in one (at shutdown), so the client is dropped on a
/// thread of its own.
struct Session(Option<postgres::Client>);

impl Session {
    fn get(&mut self) -> Result<&mut postgres::Client, BackendError> {
        self.0
            .as_mut()
            .ok_or_else(|| "the PostgreSQL session is gone".into())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            // Joined, so that the connection is closed when the store is gone; a panic
            // in there has nowhere to go, hence ignored.
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

/// One PostgreSQL session with its prepared statements.
pub(crate) struct PgConn {
    config: postgres::Config,
    client: Session,
    /// Prepared statements by their `?N` text; prepared once per session.
    stmts: HashMap<String, Statement>,
    /// Which session this is: bumped by every reconnection, so that a leadership taken
    /// on an earlier session is known to be gone.
    session_no: u64,
    /// What to call the database in messages: hosts and database name, no password.
    pub target: String,
}

impl PgConn {
    /// Connects to `url` (a `postgres://` URL or `key=value` settings, as libpq takes
    /// them; no TLS: use a Unix socket or a trusted network).
    ///
    /// Connecting and dropping are safe anywhere; every other call blocks on the
    /// client's own runtime, so it must not run inside an asynchronous task (the server
    /// calls the store from blocking tasks and plain threads).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let config = postgres::Config::from_str(url).map_err(|e| StoreError::Connect {
            store: "control store",
            target: "the given PostgreSQL URL".into(),
            source: pg_err(e),
        })?;
        let target = describe(&config);
        // On a thread of its own for the same reason as `Session`: connecting starts the
        // client's runtime, which panics inside an asynchronous task.
        let client = std::thread::scope(|scope| {
            scope
                .spawn(|| Self::session(&config))
                .join()
                .unwrap_or_else(|_| Err("connecting panicked".into()))
        })
        .map_err(|source| StoreError::Connect {
            store: "control store",
            target: target.clone(),
            source,
        })?;
        Ok(Self {
            config,
            client,
            stmts: HashMap::new(),
            session_no: 0,
            target,
        })
    }

    fn session(config: &postgres::Config) -> Result<Session, BackendError> {
        let mut client = config.connect(NoTls).map_err(pg_err)?;
        // An acknowledged change must survive a crash of the database server too: a
        // commit waits for its WAL record to be flushed. `fsync = off` makes that a
        // lie, so such a server is refused rather than trusted.
        client
            .batch_execute("SET synchronous_commit = on")
            .map_err(pg_err)?;
        let fsync: String = client
            .query_one("SHOW fsync", &[])
            .and_then(|r| r.try_get(0))
            .map_err(pg_err)?;
        if fsync != "on" {
            return Err(format!(
                "the server runs with fsync = {fsync}: acknowledged changes would not survive \
                 a crash; turn fsync on"
            )
            .into());
        }
        Ok(Session(Some(client)))
    }

    /// After the server restarted or the connection dropped, the next call opens a new
    /// session (the call that saw the connection fail has already returned its error).
    fn reconnect_if_closed(&mut self) -> Result<(), BackendError> {
        if self.client.get()?.is_closed() {
            self.client = Self::session(&self.config)?;
            self.stmts.clear();
            self.session_no += 1;
        }
        Ok(())
    }
}

/// `user@host:port/dbname` without the password, for messages.
fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "{}@{}:{}/{}",
        config.get_user().unwrap_or("(default user)"),
        hosts.join(","),
        ports.join(","),
        config.get_dbname().unwrap_or("(default database)")
    )
}

struct PgDb<'a, C: GenericClient> {
    c: &'a mut C,
    stmts: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> PgDb<'_, C> {
    fn prepare(&mut self, sql: &str) -> Result<Statement, BackendError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let stmt = self
            .c
            .prepare(&postgres_placeholders(sql))
            .map_err(pg_err)?;
        self.stmts.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }
}

/// `v` as a Rust value of the parameter's type, as the server inferred it.
fn typed(v: &Val, ty: &Type) -> Result<Box<dyn ToSql + Sync>, BackendError> {
    Ok(match (v, ty) {
        (Val::Null, &Type::INT8) => Box::new(None::<i64>),
        (Val::Null, &Type::INT4) => Box::new(None::<i32>),
        (Val::Null, &Type::INT2) => Box::new(None::<i16>),
        (Val::Null, &Type::BOOL) => Box::new(None::<bool>),
        (Val::Null, &Type::BYTEA) => Box::new(None::<Vec<u8>>),
        (Val::Null, _) => Box::new(None::<String>),
        (Val::Int(v), &Type::INT8) => Box::new(*v),
        (Val::Int(v), &Type::INT4) => Box::new(i32::try_from(*v)?),
        (Val::Int(v), &Type::INT2) => Box::new(i16::try_from(*v)?),
        (Val::Int(v), &Type::BOOL) => Box::new(*v != 0),
        (Val::Text(s), _) => Box::new(s.clone()),
        (Val::Blob(b), _) => Box::new(b.clone()),
        (Val::Int(_), other) => {
            return Err(format!("an integer parameter where {other} is expected").into());
        }
    })
}

fn params(stmt: &Statement, args: &[Val]) -> Result<Vec<Box<dyn ToSql + Sync>>, BackendError> {
    if stmt.params().len() != args.len() {
        return Err(format!(
            "the statement takes {} parameters, {} given",
            stmt.params().len(),
            args.len()
        )
        .into());
    }
    args.iter()
        .zip(stmt.params())
        .map(|(v, ty)| typed(v, ty))
        .collect()
}

fn column(row: &postgres::Row, i: usize) -> Result<Val, BackendError> {
    let ty = row.columns()[i].type_();
    let int = |v: Option<i64>| v.map_or(Val::Null, Val::Int);
    Ok(match *ty {
        Type::INT8 => int(row.try_get::<_, Option<i64>>(i).map_err(pg_err)?),
        Type::INT4 => int(row
            .try_get::<_, Option<i32>>(i)
            .map_err(pg_err)?
            .map(i64::from)),
        Type::INT2 => int(row
            .try_get::<_, Option<i16>>(i)
            .map_err(pg_err)?
            .map(i64::from)),
        Type::BOOL => int(row
            .try_get::<_, Option<bool>>(i)
            .map_err(pg_err)?
            .map(i64::from)),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(pg_err)?
            .map_or(Val::Null, Val::Blob),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
            .try_get::<_, Option<String>>(i)
            .map_err(pg_err)?
            .map_or(Val::Null, Val::Text),
        ref other => return Err(format!("column {i} has type {other}, not handled").into()),
    })
}

impl<C: GenericClient> Db for PgDb<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64, BackendError> {
        let stmt = self.prepare(sql)?;
        let owned = params(&stmt, args)?;
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| &**b).collect();
        self.c.execute(&stmt, &refs).map_err(pg_err)
    }

    fn query(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>, BackendError> {
        let stmt = self.prepare(sql)?;
        let owned = params(&stmt, args)?;
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| &**b).collect();
        self.c
            .query(&stmt, &refs)
            .map_err(pg_err)?
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| column(r, i))
                    .collect::<Result<_, _>>()
                    .map(Row)
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), BackendError> {
        self.c.batch_execute(sql).map_err(pg_err)
    }
}

/// The client's error with the server's message in it: its own `Display` says only
/// "db error" and keeps the message (the part worth reading) in its source.
fn pg_err(e: postgres::Error) -> BackendError {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            text.into()
        }
        None => match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}").into(),
            None => Box::new(e),
        },
    }
}
