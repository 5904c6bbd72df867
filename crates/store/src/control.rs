//! The control-plane store: draft policy objects, workloads, provisioned versions, API
//! tokens, agents, the audit log and alerts, in one SQLite file or in a PostgreSQL
//! database.
//!
//! The logic is written once against the small SQL interface in `sql.rs`; `conn.rs`
//! holds the two connections and `schema.rs` the two schemas.
//!
//! The store keeps policy objects and workloads as opaque text: the server checks them
//! with the policy engine before storing them. What the store guarantees is durability
//! (SQLite: WAL with `synchronous=FULL`; PostgreSQL: `synchronous_commit = on` and
//! `fsync = on` are required: an acknowledged write survives `kill -9` and power loss), atomicity (one transaction per mutating call, all or nothing), immutable
//! numbered versions, and an append-only audit log written in the same transaction as
//! the change it records.
//!
//! The API is synchronous, with `&mut self` for writes: the server holds one
//! [`ControlStore`] behind a mutex and calls it from blocking tasks.

mod agents;
mod alerts;
mod conn;
mod copy;
mod diff;
mod label_rules;
mod rollouts;
mod schema;
mod sql;
mod tokens;

use std::fmt;
use std::path::Path;

use rusqlite::Connection;

use conn::{Backend, PgConn};
pub use copy::CopyReport;
use sql::{Db, Row, RowError, Val, all, args, exec, int, one};

use crate::StoreError;
pub use agents::{AgentRecord, EnrollRefusal, NewAgent, NewPairingProfile, PairingProfile};
pub use alerts::{AlertFilter, AlertObservation, AlertRecord, AlertRecorded, AlertState};
pub use diff::{DiffChange, ObjectDiff, WorkloadDiff, diff, diff_workloads};
pub use label_rules::StoredLabelRules;
pub use rollouts::StoredRollout;
pub use schema::CONTROL_SCHEMA_VERSION;
pub use tokens::{NewToken, TokenMeta};

/// The kinds of policy object the draft holds.
pub const OBJECT_KINDS: [&str; 5] = ["label_group", "ip_list", "service", "tier", "ruleset"];

/// How often, at most, [`ControlStore::touch_token`] writes a token's `last_used_ms`.
pub const TOKEN_TOUCH_GRANULARITY_MS: i64 = 60_000;

/// A policy object of the draft or of a version: its canonical YAML and who last
/// changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub kind: String,
    pub name: String,
    pub yaml: String,
    pub updated_ms: i64,
    pub updated_by: String,
}

/// A workload of the inventory, as opaque JSON, and who last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWorkload {
    pub name: String,
    pub json: String,
    pub updated_ms: i64,
    pub updated_by: String,
}

/// A policy object to store, as in [`Change::ReplaceDraft`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftObject {
    pub kind: String,
    pub name: String,
    pub yaml: String,
}

/// One change to the draft or the inventory; see [`ControlStore::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Creates or replaces one draft object.
    PutObject {
        kind: String,
        name: String,
        yaml: String,
    },
    /// Deletes one draft object; it must exist.
    DeleteObject { kind: String, name: String },
    /// Creates or replaces one workload.
    PutWorkload { name: String, json: String },
    /// Deletes one workload; it must exist.
    DeleteWorkload { name: String },
    /// Makes the draft exactly `objects` (`policy push`).
    ReplaceDraft { objects: Vec<DraftObject> },
}

/// Who does what, from where, when: stamped on every audit entry a call writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditContext {
    pub actor: String,
    /// The client's address.
    pub source: String,
    pub at_ms: i64,
    /// What was asked, e.g. `ruleset.update`.
    pub action: String,
}

/// One row of the append-only audit log. `target` names what changed
/// (`ruleset/payments`, `workload/db-1`, `version/3`, `token/7`, `alert/12`, `draft`);
/// `before` and `after` are its text around the change, when it has one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: u64,
    pub at_ms: i64,
    pub actor: String,
    pub source: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// A provisioned version, without its contents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct VersionMeta {
    /// 1, 2, 3… in provisioning order.
    pub id: u64,
    pub comment: String,
    pub author: String,
    pub created_ms: i64,
    pub objects: usize,
    pub workloads: usize,
}

/// A provisioned version: the draft objects and the workloads as they were, sorted by
/// (kind, name) and by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub meta: VersionMeta,
    pub objects: Vec<StoredObject>,
    pub workloads: Vec<StoredWorkload>,
}

/// The control-plane state: in one SQLite database (a file, or memory for tests), or
/// in a PostgreSQL database.
pub struct ControlStore {
    db: Backend,
    /// Set inside [`ControlStore::fenced`]: writes check the leadership first.
    fence: Option<Lease>,
}

/// The leadership of several servers on one database, as [`ControlStore::lead`] took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    session: u64,
}

impl fmt::Debug for ControlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlStore")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

const OBJECT_COLUMNS: &str = "kind, name, yaml, updated_ms, updated_by";
const WORKLOAD_COLUMNS: &str = "name, json, updated_ms, updated_by";
const VERSION_COLUMNS: &str = "id, comment, author, created_ms, objects, workloads";
const AUDIT_COLUMNS: &str = "id, at_ms, actor, source, action, target, before, after";

impl ControlStore {
    /// Opens (creating if needed) the store in the SQLite file at `path`, migrating its
    /// schema. WAL mode with `synchronous=FULL`: a call that returned `Ok` is on disk.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        crate::sqlite::open_wal(path.as_ref(), Self::setup_sqlite)
    }

    /// A SQLite store that lives as long as this value; for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()
            .map_err(StoreError::backend("opening an in-memory control store"))?;
        Self::setup_sqlite(conn)
    }

    /// Connects to a PostgreSQL database (`postgres://user@host/db`, or libpq-style
    /// `host=… dbname=…`; no TLS) and migrates its schema. The server must run with
    /// `fsync = on`; the session sets `synchronous_commit = on`, so a call that returned
    /// `Ok` is on the database server's disk.
    ///
    /// The client is blocking: call this and every method from a thread that is not
    /// running asynchronous tasks (the server uses blocking tasks).
    pub fn connect_postgres(url: &str) -> Result<Self, StoreError> {
        let pg = PgConn::connect(url)?;
        Self::migrated(Backend::Postgres(Box::new(std::sync::Mutex::new(pg))))
    }

    fn setup_sqlite(conn: Connection) -> Result<Self, StoreError> {
        // FULL: in WAL mode, NORMAL may lose the last commits on power loss; this state
        // (who may do what, which policy is in force) cannot.
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(StoreError::backend("configuring the control store"))?;
        let synchronous: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .map_err(StoreError::backend("configuring the control store"))?;
        if synchronous != 2 {
            return Err(StoreError::Backend {
                context: "configuring the control store",
                source: format!("synchronous is {synchronous}, not FULL (2)").into(),
            });
        }
        conn.set_prepared_statement_cache_capacity(64);
        Self::migrated(Backend::Sqlite(conn))
    }

    fn migrated(mut db: Backend) -> Result<Self, StoreError> {
        // In a write transaction: two processes opening a new database at once must not
        // both migrate it.
        db.write("migrating the control schema", schema::migrate)?;
        Ok(Self { db, fence: None })
    }

    /// Which database this is: `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.db.dialect() {
            sql::Dialect::Sqlite => "sqlite",
            sql::Dialect::Postgres => "postgres",
        }
    }

    /// The control schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let ctx = "reading the control schema version";
        self.db.query(ctx, |db| {
            int(db, ctx, "SELECT version FROM control_schema_version", &[])
        })
    }

    /// Runs `f` in one transaction, committed if it returns `Ok`, rolled back
    /// otherwise; writers never interleave.
    fn write<T>(
        &mut self,
        context: &'static str,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.fence {
            Some(lease) => self.db.write_fenced(context, lease.session, f),
            None => self.db.write(context, f),
        }
    }

    /// Takes the leadership among the servers sharing this database, or confirms it is
    /// still held; `None` when another server holds it. Singletons (the rollout
    /// scheduler, the agent-offline watch) run only on the leader, and write through
    /// [`ControlStore::fenced`]. On PostgreSQL it is a session-level advisory lock, given
    /// up when the session ends; a SQLite database belongs to one server, always leader.
    pub fn lead(&mut self) -> Result<Option<Lease>, StoreError> {
        Ok(self
            .db
            .lead(conn::Singleton::Leader)?
            .map(|session| Lease { session }))
    }

    /// Whether this process is the one that expires old flows among every server and
    /// collector sharing this database (taken or kept here, as [`ControlStore::lead`]
    /// does for the servers' singletons). Always true on SQLite.
    pub fn lead_retention(&mut self) -> Result<bool, StoreError> {
        Ok(self.db.lead(conn::Singleton::Retention)?.is_some())
    }

    /// Runs `f` with every write it makes fenced by `lease`: a write after the
    /// leadership was lost (the session that took it ended, so another server may have
    /// taken it) fails with [`StoreError::Fenced`] and writes nothing.
    pub fn fenced<T>(
        &mut self,
        lease: Lease,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let outer = self.fence.replace(lease);
        let out = f(self);
        self.fence = outer;
        out
    }

    /// Runs reads that must see one snapshot.
    fn read<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.db.read(context, f)
    }

    /// Runs one read statement.
    fn query<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&mut dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.db.query(context, f)
    }

    // ---------------------------------------------------------------- draft, inventory

    /// Every draft object, sorted by (kind, name).
    pub fn draft_objects(&self) -> Result<Vec<StoredObject>, StoreError> {
        self.query("reading draft objects", read_draft)
    }

    /// One draft object.
    pub fn draft_object(&self, kind: &str, name: &str) -> Result<Option<StoredObject>, StoreError> {
        self.query("reading a draft object", |db| get_object(db, kind, name))
    }

    /// Every workload, sorted by name.
    pub fn workloads(&self) -> Result<Vec<StoredWorkload>, StoreError> {
        self.query("reading workloads", read_workloads)
    }

    /// One workload.
    pub fn workload(&self, name: &str) -> Result<Option<StoredWorkload>, StoreError> {
        self.query("reading a workload", |db| get_workload(db, name))
    }

    /// Applies `changes` in order, in one transaction: all or nothing. Returns the audit
    /// entries written, in order:
    ///
    /// - `PutObject`/`PutWorkload`: one entry (`kind/name`, `workload/name`) with the
    ///   text before (`None` if new) and after. A put of the stored text changes
    ///   nothing, not even `updated_ms`, but is still recorded.
    /// - `DeleteObject`/`DeleteWorkload`: one entry with the text before; deleting
    ///   what does not exist is [`StoreError::NotFound`].
    /// - `ReplaceDraft`: one entry per object added, changed or removed, sorted by
    ///   (kind, name); objects whose text is unchanged keep their `updated_ms` and
    ///   `updated_by`. If nothing differs, a single entry targets `draft`.
    ///
    /// Unknown kinds, empty names and a (kind, name) given twice in one `ReplaceDraft`
    /// are [`StoreError::Invalid`].
    pub fn apply(
        &mut self,
        changes: &[Change],
        audit: &AuditContext,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.write("applying draft changes", |db| {
            let mut out = Vec::new();
            for change in changes {
                apply_change(db, change, audit, &mut out)?;
            }
            Ok(out)
        })
    }

    // ---------------------------------------------------------------- versions

    /// Snapshots the whole draft and every workload into a new immutable version,
    /// numbered one past the latest, and audits it (`version/N`, after: the version's
    /// metadata as JSON; before: the previous version's, if any).
    pub fn provision(
        &mut self,
        comment: &str,
        audit: &AuditContext,
    ) -> Result<VersionMeta, StoreError> {
        self.write("provisioning a version", |db| {
            let previous = latest_meta(db)?;
            let id = previous.as_ref().map_or(1, |m| m.id + 1);
            let objects = read_draft(db)?;
            let workloads = read_workloads(db)?;
            let meta = VersionMeta {
                id,
                comment: comment.to_string(),
                author: audit.actor.clone(),
                created_ms: audit.at_ms,
                objects: objects.len(),
                workloads: workloads.len(),
            };
            let ctx = "writing a version";
            exec(
                db,
                ctx,
                "INSERT INTO version (id, comment, author, created_ms, objects, workloads)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![
                    to_i64(id),
                    &meta.comment,
                    &meta.author,
                    meta.created_ms,
                    to_i64(meta.objects as u64),
                    to_i64(meta.workloads as u64)
                ],
            )?;
            // Rows go in batches: one statement per few hundred rows rather than per
            // row, which on PostgreSQL is a round trip each (10,000 workloads were
            // ≈ 20,000 round trips per provision).
            let object_contents = intern_many(db, objects.iter().map(|o| o.yaml.as_str()))?;
            let rows: Vec<Vec<Val>> = objects
                .iter()
                .zip(object_contents)
                .map(|(o, content)| {
                    vec![
                        Val::from(to_i64(id)),
                        Val::from(&o.kind),
                        Val::from(&o.name),
                        Val::from(content),
                        Val::from(o.updated_ms),
                        Val::from(&o.updated_by),
                    ]
                })
                .collect();
            insert_rows(
                db,
                ctx,
                "INSERT INTO version_object (version, kind, name, content, updated_ms, updated_by) VALUES",
                &rows,
            )?;
            let workload_contents =
                intern_many(db, workloads.iter().map(|w| w.json.as_str()))?;
            let rows: Vec<Vec<Val>> = workloads
                .iter()
                .zip(workload_contents)
                .map(|(w, content)| {
                    vec![
                        Val::from(to_i64(id)),
                        Val::from(&w.name),
                        Val::from(content),
                        Val::from(w.updated_ms),
                        Val::from(&w.updated_by),
                    ]
                })
                .collect();
            insert_rows(
                db,
                ctx,
                "INSERT INTO version_workload (version, name, content, updated_ms, updated_by) VALUES",
                &rows,
            )?;
            let before = previous.as_ref().map(meta_json);
            insert_audit(
                db,
                audit,
                &format!("version/{id}"),
                before.as_deref(),
                Some(&meta_json(&meta)),
            )?;
            Ok(meta)
        })
    }

    /// Every version's metadata, oldest first.
    pub fn versions(&self) -> Result<Vec<VersionMeta>, StoreError> {
        let ctx = "reading versions";
        self.query(ctx, |db| {
            all(
                db,
                ctx,
                &format!("SELECT {VERSION_COLUMNS} FROM version ORDER BY id"),
                &[],
                version_row,
            )
        })
    }

    /// One version with its contents.
    pub fn version(&self, id: u64) -> Result<Option<Version>, StoreError> {
        self.read("reading a version", |db| read_version(db, id))
    }

    /// The latest version with its contents, if anything was ever provisioned.
    pub fn latest_version(&self) -> Result<Option<Version>, StoreError> {
        self.read("reading the latest version", |db| match latest_meta(db)? {
            Some(meta) => read_version(db, meta.id),
            None => Ok(None),
        })
    }

    /// Makes the draft objects those of version `id` (workloads are untouched). Writes
    /// an entry for `version/id` (after: its metadata as JSON), then one per draft
    /// object that changed, as `ReplaceDraft` does; returns them. A version that does
    /// not exist is [`StoreError::NotFound`].
    pub fn revert_draft_to(
        &mut self,
        id: u64,
        audit: &AuditContext,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.write("reverting the draft", |db| {
            let Some(version) = read_version(db, id)? else {
                return Err(StoreError::NotFound {
                    what: format!("version {id}"),
                });
            };
            let mut out = vec![insert_audit(
                db,
                audit,
                &format!("version/{id}"),
                None,
                Some(&meta_json(&version.meta)),
            )?];
            let objects: Vec<DraftObject> = version
                .objects
                .into_iter()
                .map(|o| DraftObject {
                    kind: o.kind,
                    name: o.name,
                    yaml: o.yaml,
                })
                .collect();
            replace_draft(db, &objects, audit, &mut out, false)?;
            Ok(out)
        })
    }

    // ---------------------------------------------------------------- audit

    /// Up to `limit` audit entries with ids above `after_id`, oldest first. Pass the
    /// last id seen to page or tail; 0 starts from the beginning.
    pub fn audit(&self, after_id: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let ctx = "reading the audit log";
        self.query(ctx, |db| {
            all(
                db,
                ctx,
                &format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2"),
                args![to_i64(after_id), to_i64(limit as u64)],
                audit_row,
            )
        })
    }

    /// The id of the newest audit entry (0 when there is none). Every change to the
    /// store writes one, so a server that sees the head move knows another writer (a
    /// replica, a collector's alerts, a CLI) changed something.
    pub fn audit_head(&self) -> Result<u64, StoreError> {
        let ctx = "reading the head of the audit log";
        self.query(ctx, |db| {
            sql::int(db, ctx, "SELECT coalesce(max(id), 0) FROM audit", args![])
        })
        .map(|id| u64::try_from(id).unwrap_or(0))
    }

    /// Appends an entry for an action that changes nothing else (a failed sign-in, an
    /// explain query…).
    pub fn append_audit(
        &mut self,
        ctx: &AuditContext,
        target: &str,
        before: Option<&str>,
        after: Option<&str>,
    ) -> Result<AuditEntry, StoreError> {
        self.write("appending to the audit log", |db| {
            insert_audit(db, ctx, target, before, after)
        })
    }
}

// -------------------------------------------------------------------- writes

pub(super) fn apply_change(
    db: &mut dyn Db,
    change: &Change,
    audit: &AuditContext,
    out: &mut Vec<AuditEntry>,
) -> Result<(), StoreError> {
    match change {
        Change::PutObject { kind, name, yaml } => {
            check_object_key(kind, name)?;
            let before = get_object(db, kind, name)?.map(|o| o.yaml);
            if before.as_deref() != Some(yaml.as_str()) {
                put_object_row(db, kind, name, yaml, audit)?;
            }
            out.push(insert_audit(
                db,
                audit,
                &format!("{kind}/{name}"),
                before.as_deref(),
                Some(yaml),
            )?);
        }
        Change::DeleteObject { kind, name } => {
            check_object_key(kind, name)?;
            let Some(before) = get_object(db, kind, name)? else {
                return Err(StoreError::NotFound {
                    what: format!("draft object {kind}/{name}"),
                });
            };
            delete_object_row(db, kind, name)?;
            out.push(insert_audit(
                db,
                audit,
                &format!("{kind}/{name}"),
                Some(&before.yaml),
                None,
            )?);
        }
        Change::PutWorkload { name, json } => {
            check_name("workload", name)?;
            let before = get_workload(db, name)?.map(|w| w.json);
            if before.as_deref() != Some(json.as_str()) {
                exec(
                    db,
                    "writing a workload",
                    "INSERT INTO workload (name, json, updated_ms, updated_by)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET json = excluded.json,
                        updated_ms = excluded.updated_ms, updated_by = excluded.updated_by",
                    args![name, json, audit.at_ms, &audit.actor],
                )?;
            }
            out.push(insert_audit(
                db,
                audit,
                &format!("workload/{name}"),
                before.as_deref(),
                Some(json),
            )?);
        }
        Change::DeleteWorkload { name } => {
            check_name("workload", name)?;
            let Some(before) = get_workload(db, name)? else {
                return Err(StoreError::NotFound {
                    what: format!("workload {name}"),
                });
            };
            exec(
                db,
                "deleting a workload",
                "DELETE FROM workload WHERE name = ?1",
                args![name],
            )?;
            out.push(insert_audit(
                db,
                audit,
                &format!("workload/{name}"),
                Some(&before.json),
                None,
            )?);
        }
        Change::ReplaceDraft { objects } => replace_draft(db, objects, audit, out, true)?,
    }
    Ok(())
}

/// Makes the draft exactly `objects`, auditing each difference. With `note_no_change`,
/// writes an entry for `draft` when nothing differs.
fn replace_draft(
    db: &mut dyn Db,
    objects: &[DraftObject],
    audit: &AuditContext,
    out: &mut Vec<AuditEntry>,
    note_no_change: bool,
) -> Result<(), StoreError> {
    let mut seen = std::collections::BTreeSet::new();
    let wanted: Vec<StoredObject> = objects
        .iter()
        .map(|o| {
            check_object_key(&o.kind, &o.name)?;
            if !seen.insert((o.kind.as_str(), o.name.as_str())) {
                return Err(StoreError::Invalid {
                    what: format!("{}/{} is given twice", o.kind, o.name),
                });
            }
            Ok(StoredObject {
                kind: o.kind.clone(),
                name: o.name.clone(),
                yaml: o.yaml.clone(),
                updated_ms: audit.at_ms,
                updated_by: audit.actor.clone(),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let current = read_draft(db)?;
    let changes = diff(&current, &wanted);
    if changes.is_empty() && note_no_change {
        out.push(insert_audit(db, audit, "draft", None, None)?);
    }
    for d in changes {
        match &d.after {
            Some(yaml) => put_object_row(db, &d.kind, &d.name, yaml, audit)?,
            None => delete_object_row(db, &d.kind, &d.name)?,
        }
        out.push(insert_audit(
            db,
            audit,
            &format!("{}/{}", d.kind, d.name),
            d.before.as_deref(),
            d.after.as_deref(),
        )?);
    }
    Ok(())
}

fn put_object_row(
    db: &mut dyn Db,
    kind: &str,
    name: &str,
    yaml: &str,
    audit: &AuditContext,
) -> Result<(), StoreError> {
    exec(
        db,
        "writing a draft object",
        "INSERT INTO draft_object (kind, name, yaml, updated_ms, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (kind, name) DO UPDATE SET yaml = excluded.yaml,
            updated_ms = excluded.updated_ms, updated_by = excluded.updated_by",
        args![kind, name, yaml, audit.at_ms, &audit.actor],
    )?;
    Ok(())
}

fn delete_object_row(db: &mut dyn Db, kind: &str, name: &str) -> Result<(), StoreError> {
    exec(
        db,
        "deleting a draft object",
        "DELETE FROM draft_object WHERE kind = ?1 AND name = ?2",
        args![kind, name],
    )?;
    Ok(())
}

fn check_object_key(kind: &str, name: &str) -> Result<(), StoreError> {
    if !OBJECT_KINDS.contains(&kind) {
        return Err(StoreError::Invalid {
            what: format!(
                "object kind {kind:?} is not one of {}",
                OBJECT_KINDS.join(", ")
            ),
        });
    }
    check_name(kind, name)
}

fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::Invalid {
            what: format!("a {what} needs a name"),
        });
    }
    Ok(())
}

fn insert_audit(
    db: &mut dyn Db,
    ctx: &AuditContext,
    target: &str,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<AuditEntry, StoreError> {
    let id = int(
        db,
        "writing the audit log",
        "INSERT INTO audit (at_ms, actor, source, action, target, before, after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        args![
            ctx.at_ms,
            &ctx.actor,
            &ctx.source,
            &ctx.action,
            target,
            before,
            after
        ],
    )?;
    Ok(AuditEntry {
        id: id.cast_unsigned(),
        at_ms: ctx.at_ms,
        actor: ctx.actor.clone(),
        source: ctx.source.clone(),
        action: ctx.action.clone(),
        target: target.to_string(),
        before: before.map(str::to_string),
        after: after.map(str::to_string),
    })
}

/// Rows per multi-row statement: well under both backends' limits on parameters
/// (SQLite 32,766, PostgreSQL 65,535) at six columns.
const BATCH_ROWS: usize = 400;

/// `insert` (an `INSERT … VALUES` prefix) for every row, a batch per statement.
fn insert_rows(
    db: &mut dyn Db,
    ctx: &'static str,
    insert: &str,
    rows: &[Vec<Val>],
) -> Result<(), StoreError> {
    for batch in rows.chunks(BATCH_ROWS) {
        let (sql, args) = values_statement(insert, batch, "");
        exec(db, ctx, &sql, &args)?;
    }
    Ok(())
}

/// `prefix (?1, ?2), (?3, ?4) suffix` with the rows' values in order.
fn values_statement(prefix: &str, rows: &[Vec<Val>], suffix: &str) -> (String, Vec<Val>) {
    let mut sql = String::from(prefix);
    let mut args = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        sql.push_str(if i == 0 { " (" } else { ", (" });
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                sql.push_str(", ");
            }
            args.push(v.clone());
            sql.push_str(&format!("?{}", args.len()));
        }
        sql.push(')');
    }
    sql.push_str(suffix);
    (sql, args)
}

/// The content id of each text, in order, storing the texts not stored yet (each
/// distinct text is stored once, whatever the versions that hold it): a few statements
/// per few hundred texts.
fn intern_many<'a>(
    db: &mut dyn Db,
    texts: impl Iterator<Item = &'a str>,
) -> Result<Vec<i64>, StoreError> {
    let ctx = "interning version contents";
    let texts: Vec<&str> = texts.collect();
    let mut ids: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut distinct: Vec<&str> = texts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    for batch in distinct.chunks(BATCH_ROWS) {
        let in_batch: std::collections::HashSet<&str> = batch.iter().copied().collect();
        let args: Vec<Val> = batch.iter().map(|t| Val::from(content_hash(t))).collect();
        let placeholders: Vec<String> = (1..=args.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "SELECT id, text FROM content WHERE hash IN ({})",
            placeholders.join(", ")
        );
        // The hash narrows, the text decides (a collision is only a comparison).
        for (id, text) in all(db, ctx, &sql, &args, |r| Ok((r.int(0)?, r.text(1)?)))? {
            if let Some(t) = in_batch.get(text.as_str()) {
                ids.insert(t, id);
            }
        }
        let missing: Vec<Vec<Val>> = batch
            .iter()
            .filter(|t| !ids.contains_key(**t))
            .map(|t| vec![Val::from(content_hash(t)), Val::from(*t)])
            .collect();
        if missing.is_empty() {
            continue;
        }
        let (sql, args) = values_statement(
            "INSERT INTO content (hash, text) VALUES",
            &missing,
            " RETURNING id, text",
        );
        for (id, text) in all(db, ctx, &sql, &args, |r| Ok((r.int(0)?, r.text(1)?)))? {
            if let Some(t) = in_batch.get(text.as_str()) {
                ids.insert(t, id);
            }
        }
    }
    texts
        .iter()
        .map(|t| {
            ids.get(t).copied().ok_or_else(|| StoreError::Backend {
                context: ctx,
                source: "a content row is missing after interning".into(),
            })
        })
        .collect()
}

/// FNV-1a, 64 bits: stable across builds (it is stored), and the text is compared in
/// full anyway, so collisions only cost a comparison.
fn content_hash(text: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.cast_signed()
}

// -------------------------------------------------------------------- reads

fn read_draft(db: &mut dyn Db) -> Result<Vec<StoredObject>, StoreError> {
    all(
        db,
        "reading the draft",
        &format!("SELECT {OBJECT_COLUMNS} FROM draft_object ORDER BY kind, name"),
        &[],
        object_row,
    )
}

fn read_workloads(db: &mut dyn Db) -> Result<Vec<StoredWorkload>, StoreError> {
    all(
        db,
        "reading workloads",
        &format!("SELECT {WORKLOAD_COLUMNS} FROM workload ORDER BY name"),
        &[],
        workload_row,
    )
}

fn get_object(db: &mut dyn Db, kind: &str, name: &str) -> Result<Option<StoredObject>, StoreError> {
    one(
        db,
        "reading a draft object",
        &format!("SELECT {OBJECT_COLUMNS} FROM draft_object WHERE kind = ?1 AND name = ?2"),
        args![kind, name],
        object_row,
    )
}

fn get_workload(db: &mut dyn Db, name: &str) -> Result<Option<StoredWorkload>, StoreError> {
    one(
        db,
        "reading a workload",
        &format!("SELECT {WORKLOAD_COLUMNS} FROM workload WHERE name = ?1"),
        args![name],
        workload_row,
    )
}

fn latest_meta(db: &mut dyn Db) -> Result<Option<VersionMeta>, StoreError> {
    one(
        db,
        "reading the latest version",
        &format!("SELECT {VERSION_COLUMNS} FROM version ORDER BY id DESC LIMIT 1"),
        &[],
        version_row,
    )
}

fn read_version(db: &mut dyn Db, id: u64) -> Result<Option<Version>, StoreError> {
    let Some(meta) = one(
        db,
        "reading a version",
        &format!("SELECT {VERSION_COLUMNS} FROM version WHERE id = ?1"),
        args![to_i64(id)],
        version_row,
    )?
    else {
        return Ok(None);
    };
    let objects = all(
        db,
        "reading a version's objects",
        "SELECT v.kind, v.name, c.text, v.updated_ms, v.updated_by
         FROM version_object v JOIN content c ON c.id = v.content
         WHERE v.version = ?1 ORDER BY v.kind, v.name",
        args![to_i64(id)],
        object_row,
    )?;
    let workloads = all(
        db,
        "reading a version's workloads",
        "SELECT v.name, c.text, v.updated_ms, v.updated_by
         FROM version_workload v JOIN content c ON c.id = v.content
         WHERE v.version = ?1 ORDER BY v.name",
        args![to_i64(id)],
        workload_row,
    )?;
    Ok(Some(Version {
        meta,
        objects,
        workloads,
    }))
}

fn object_row(r: &Row) -> Result<StoredObject, RowError> {
    Ok(StoredObject {
        kind: r.text(0)?,
        name: r.text(1)?,
        yaml: r.text(2)?,
        updated_ms: r.int(3)?,
        updated_by: r.text(4)?,
    })
}

fn workload_row(r: &Row) -> Result<StoredWorkload, RowError> {
    Ok(StoredWorkload {
        name: r.text(0)?,
        json: r.text(1)?,
        updated_ms: r.int(2)?,
        updated_by: r.text(3)?,
    })
}

fn version_row(r: &Row) -> Result<VersionMeta, RowError> {
    Ok(VersionMeta {
        id: r.unsigned(0)?,
        comment: r.text(1)?,
        author: r.text(2)?,
        created_ms: r.int(3)?,
        objects: r.unsigned(4)?.try_into().unwrap_or(usize::MAX),
        workloads: r.unsigned(5)?.try_into().unwrap_or(usize::MAX),
    })
}

fn audit_row(r: &Row) -> Result<AuditEntry, RowError> {
    Ok(AuditEntry {
        id: r.unsigned(0)?,
        at_ms: r.int(1)?,
        actor: r.text(2)?,
        source: r.text(3)?,
        action: r.text(4)?,
        target: r.text(5)?,
        before: r.opt_text(6)?,
        after: r.opt_text(7)?,
    })
}

fn meta_json(m: &VersionMeta) -> String {
    serde_json::json!({
        "id": m.id,
        "comment": m.comment,
        "author": m.author,
        "created_ms": m.created_ms,
        "objects": m.objects,
        "workloads": m.workloads,
    })
    .to_string()
}

/// Ids and counts are stored as 64-bit signed integers; past `i64::MAX` they saturate
/// (no real id or count gets there).
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
