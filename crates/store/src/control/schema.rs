//! The control-plane schema and its migrations. The crate README explains the choices.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`. Append, never edit: a
/// file written by an older build must reach the same schema as a new one.
///
/// The tables are named so that they never collide with the flow store's, and the
/// version lives in `control_schema_version`: the server keeps the two stores in
/// separate files, but nothing breaks if someone points both at one.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    //
    // The draft (policy objects, workloads) is plain rows, updated in place. A version
    // copies the draft into `version_object`/`version_workload`, whose texts live in
    // `content`, interned by an FNV-1a hash of the text (and compared in full), so that
    // a thousand provisions of a mostly unchanged estate store each text once.
    //
    // Append-only tables (`audit`, and everything a version is made of) refuse UPDATE
    // and DELETE with triggers, and refuse an INSERT that would replace an existing row
    // (`INSERT OR REPLACE` deletes without firing delete triggers unless
    // recursive_triggers is on). This protects against bugs and stray SQL, not against
    // someone who can write the file: they can drop the triggers.
    "CREATE TABLE draft_object (
        kind TEXT NOT NULL
            CHECK (kind IN ('label_group', 'ip_list', 'service', 'tier', 'ruleset')),
        name TEXT NOT NULL CHECK (name <> ''),
        yaml TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    ) WITHOUT ROWID;
    CREATE TABLE workload (
        name TEXT NOT NULL PRIMARY KEY CHECK (name <> ''),
        json TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        updated_by TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE content (
        id INTEGER PRIMARY KEY,
        hash INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX content_hash ON content (hash);
    CREATE TABLE version (
        id INTEGER PRIMARY KEY CHECK (id > 0),
        comment TEXT NOT NULL,
        author TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        objects INTEGER NOT NULL,
        workloads INTEGER NOT NULL
    );
    CREATE TABLE version_object (
        version INTEGER NOT NULL REFERENCES version (id),
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        content INTEGER NOT NULL REFERENCES content (id),
        updated_ms INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (version, kind, name)
    ) WITHOUT ROWID;
    CREATE TABLE version_workload (
        version INTEGER NOT NULL REFERENCES version (id),
        name TEXT NOT NULL,
        content INTEGER NOT NULL REFERENCES content (id),
        updated_ms INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (version, name)
    ) WITHOUT ROWID;

    CREATE TABLE token (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        scope TEXT,
        hash BLOB NOT NULL UNIQUE CHECK (typeof(hash) = 'blob' AND length(hash) = 32),
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        expires_ms INTEGER,
        revoked_ms INTEGER,
        revoked_by TEXT,
        last_used_ms INTEGER
    );

    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        source TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before TEXT,
        after TEXT
    );

    CREATE TABLE alert (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        title TEXT NOT NULL,
        details_json TEXT NOT NULL,
        count INTEGER NOT NULL CHECK (count >= 0),
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
        acknowledged_by TEXT,
        acknowledged_ms INTEGER,
        resolved_by TEXT,
        resolved_ms INTEGER
    );
    CREATE INDEX alert_last_seen ON alert (last_seen_ms);
    CREATE INDEX alert_state_last_seen ON alert (state, last_seen_ms);

    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_replace BEFORE INSERT ON audit
        WHEN EXISTS (SELECT 1 FROM audit WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

    CREATE TRIGGER content_no_update BEFORE UPDATE ON content
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER content_no_delete BEFORE DELETE ON content
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER content_no_replace BEFORE INSERT ON content
        WHEN EXISTS (SELECT 1 FROM content WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER version_no_update BEFORE UPDATE ON version
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER version_no_delete BEFORE DELETE ON version
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER version_no_replace BEFORE INSERT ON version
        WHEN EXISTS (SELECT 1 FROM version WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER version_object_no_update BEFORE UPDATE ON version_object
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER version_object_no_delete BEFORE DELETE ON version_object
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER version_object_no_replace BEFORE INSERT ON version_object
        WHEN EXISTS (SELECT 1 FROM version_object
            WHERE version = NEW.version AND kind = NEW.kind AND name = NEW.name)
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER version_workload_no_update BEFORE UPDATE ON version_workload
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER version_workload_no_delete BEFORE DELETE ON version_workload
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;
    CREATE TRIGGER version_workload_no_replace BEFORE INSERT ON version_workload
        WHEN EXISTS (SELECT 1 FROM version_workload
            WHERE version = NEW.version AND name = NEW.name)
        BEGIN SELECT RAISE(ABORT, 'provisioned versions are immutable'); END;",
    // Version 2: host agents and the pairing profiles they enroll with.
    //
    // Keys and credentials are stored as SHA-256 hashes only (the server shows a
    // pairing key once). One agent per workload: re-enrolling replaces the row, so
    // the old credential stops working. Profiles are revoked, never deleted, so that
    // an agent's `pairing_profile_id` keeps pointing at something.
    "CREATE TABLE pairing_profile (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE CHECK (name <> ''),
        labels_json TEXT NOT NULL,
        mode TEXT NOT NULL CHECK (mode IN ('idle', 'monitor', 'enforced')),
        max_uses INTEGER CHECK (max_uses >= 0),
        uses INTEGER NOT NULL CHECK (uses >= 0),
        expires_at_ms INTEGER,
        key_hash BLOB NOT NULL UNIQUE
            CHECK (typeof(key_hash) = 'blob' AND length(key_hash) = 32),
        created_at_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        revoked INTEGER NOT NULL CHECK (revoked IN (0, 1))
    );
    CREATE TABLE agent (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workload TEXT NOT NULL UNIQUE CHECK (workload <> ''),
        credential_hash BLOB NOT NULL UNIQUE
            CHECK (typeof(credential_hash) = 'blob' AND length(credential_hash) = 32),
        pairing_profile_id INTEGER REFERENCES pairing_profile (id),
        enrolled_at_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        host_json TEXT NOT NULL,
        applied_revision TEXT,
        status_json TEXT,
        offline_since_ms INTEGER
    );",
];

/// The control-plane schema version this build writes.
pub const CONTROL_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // Immediate: two processes opening a new file at once must not both migrate it.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::backend(
            "locking the control store to check its schema",
        ))?;
    let found: i64 = tx
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS control_schema_version (version INTEGER NOT NULL)",
        )
        .and_then(|()| {
            tx.query_row(
                "SELECT coalesce(max(version), 0) FROM control_schema_version",
                [],
                |r| r.get(0),
            )
        })
        .map_err(StoreError::backend("reading the control schema version"))?;
    if found > CONTROL_SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: CONTROL_SCHEMA_VERSION,
        });
    }
    for version in found + 1..=CONTROL_SCHEMA_VERSION {
        let step = MIGRATIONS[usize::try_from(version - 1).unwrap_or_default()];
        tx.execute_batch(step)
            .and_then(|()| tx.execute("DELETE FROM control_schema_version", []))
            .and_then(|_| {
                tx.execute(
                    "INSERT INTO control_schema_version (version) VALUES (?1)",
                    [version],
                )
            })
            .map_err(|e| StoreError::Migrate {
                version,
                source: Box::new(e),
            })?;
    }
    tx.commit().map_err(StoreError::backend(
        "committing the control schema migration",
    ))
}
