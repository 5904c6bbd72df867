//! The control-plane schema and its migrations, for SQLite and for PostgreSQL. The
//! crate README explains the choices.

use super::sql::{self, Db, Dialect, args};
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
    // Version 3: rollouts. The server owns a rollout's shape and calendar; the store
    // keeps it as JSON under a unique name, and audits every change.
    "CREATE TABLE rollout (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE CHECK (name <> ''),
        json TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );",
    // Version 4: the estate's label rules, one YAML document (a single row).
    "CREATE TABLE label_rules (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        yaml TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        updated_by TEXT NOT NULL
    );",
    // Version 5: enrollment binds identity. A pairing profile may be bound to one
    // workload name or to a label scope (what its key may become); an agent may be
    // pending: it holds a credential that is refused until an admin approves it.
    "ALTER TABLE pairing_profile ADD COLUMN bind_workload TEXT;
    ALTER TABLE pairing_profile ADD COLUMN bind_scope_json TEXT;
    ALTER TABLE agent ADD COLUMN pending_reason TEXT;",
];

/// The same steps for PostgreSQL: `POSTGRES_MIGRATIONS[i]` reaches the same version as
/// `MIGRATIONS[i]`, with the same tables, columns and constraints. The differences:
/// BIGINT for every integer (SQLite's are 64-bit), BYTEA for blobs, identity columns
/// for AUTOINCREMENT (never reused either), `COLLATE "C"` on the texts the store sorts
/// by so that the order is byte order as in SQLite and Rust, whatever the database's
/// locale, and one PL/pgSQL function behind the triggers that refuse UPDATE, DELETE
/// and TRUNCATE on the append-only tables (PostgreSQL has no INSERT OR REPLACE to
/// guard against, and identity columns GENERATED ALWAYS refuse a chosen id).
const POSTGRES_MIGRATIONS: &[&str] = &[
    // Version 1.
    r#"CREATE TABLE draft_object (
        kind TEXT COLLATE "C" NOT NULL
            CHECK (kind IN ('label_group', 'ip_list', 'service', 'tier', 'ruleset')),
        name TEXT COLLATE "C" NOT NULL CHECK (name <> ''),
        yaml TEXT NOT NULL,
        updated_ms BIGINT NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (kind, name)
    );
    CREATE TABLE workload (
        name TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (name <> ''),
        json TEXT NOT NULL,
        updated_ms BIGINT NOT NULL,
        updated_by TEXT NOT NULL
    );

    CREATE TABLE content (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        hash BIGINT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX content_hash ON content (hash);
    CREATE TABLE version (
        id BIGINT PRIMARY KEY CHECK (id > 0),
        comment TEXT NOT NULL,
        author TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        objects BIGINT NOT NULL,
        workloads BIGINT NOT NULL
    );
    CREATE TABLE version_object (
        version BIGINT NOT NULL REFERENCES version (id),
        kind TEXT COLLATE "C" NOT NULL,
        name TEXT COLLATE "C" NOT NULL,
        content BIGINT NOT NULL REFERENCES content (id),
        updated_ms BIGINT NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (version, kind, name)
    );
    CREATE TABLE version_workload (
        version BIGINT NOT NULL REFERENCES version (id),
        name TEXT COLLATE "C" NOT NULL,
        content BIGINT NOT NULL REFERENCES content (id),
        updated_ms BIGINT NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY (version, name)
    );

    CREATE TABLE token (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        scope TEXT,
        hash BYTEA NOT NULL UNIQUE CHECK (length(hash) = 32),
        created_ms BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        expires_ms BIGINT,
        revoked_ms BIGINT,
        revoked_by TEXT,
        last_used_ms BIGINT
    );

    CREATE TABLE audit (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        actor TEXT NOT NULL,
        source TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before TEXT,
        after TEXT
    );

    CREATE TABLE alert (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        title TEXT NOT NULL,
        details_json TEXT NOT NULL,
        count BIGINT NOT NULL CHECK (count >= 0),
        first_seen_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
        acknowledged_by TEXT,
        acknowledged_ms BIGINT,
        resolved_by TEXT,
        resolved_ms BIGINT
    );
    CREATE INDEX alert_last_seen ON alert (last_seen_ms);
    CREATE INDEX alert_state_last_seen ON alert (state, last_seen_ms);

    CREATE FUNCTION bulkhead_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$;
    CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION bulkhead_refuse('the audit log is append-only');
    CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
        FOR EACH STATEMENT EXECUTE FUNCTION bulkhead_refuse('the audit log is append-only');
    CREATE TRIGGER content_immutable BEFORE UPDATE OR DELETE ON content
        FOR EACH ROW EXECUTE FUNCTION bulkhead_refuse('provisioned versions are immutable');
    CREATE TRIGGER content_no_truncate BEFORE TRUNCATE ON content
        FOR EACH STATEMENT EXECUTE FUNCTION bulkhead_refuse('provisioned versions are immutable');
    CREATE TRIGGER version_immutable BEFORE UPDATE OR DELETE ON version
        FOR EACH ROW EXECUTE FUNCTION bulkhead_refuse('provisioned versions are immutable');
    CREATE TRIGGER version_no_truncate BEFORE TRUNCATE ON version
        FOR EACH STATEMENT EXECUTE FUNCTION bulkhead_refuse('provisioned versions are immutable');
    CREATE TRIGGER version_object_immutable BEFORE UPDATE OR DELETE ON version_object
        FOR EACH ROW EXECUTE FUNCTION bulkhead_refuse('provisioned versions are immutable');
    CREATE TRIGGER version_object_no_truncate BEFORE TRUNCATE ON version_object
        FOR EACH STATEMENT EXECUTE FUNCTION bulkhead_refuse('provisioned versions are immutable');
    CREATE TRIGGER version_workload_immutable BEFORE UPDATE OR DELETE ON version_workload
        FOR EACH ROW EXECUTE FUNCTION bulkhead_refuse('provisioned versions are immutable');
    CREATE TRIGGER version_workload_no_truncate BEFORE TRUNCATE ON version_workload
        FOR EACH STATEMENT EXECUTE FUNCTION bulkhead_refuse('provisioned versions are immutable');"#,
    // Version 2: host agents and pairing profiles (see MIGRATIONS).
    r#"CREATE TABLE pairing_profile (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE CHECK (name <> ''),
        labels_json TEXT NOT NULL,
        mode TEXT NOT NULL CHECK (mode IN ('idle', 'monitor', 'enforced')),
        max_uses BIGINT CHECK (max_uses >= 0),
        uses BIGINT NOT NULL CHECK (uses >= 0),
        expires_at_ms BIGINT,
        key_hash BYTEA NOT NULL UNIQUE CHECK (length(key_hash) = 32),
        created_at_ms BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        revoked BIGINT NOT NULL CHECK (revoked IN (0, 1))
    );
    CREATE TABLE agent (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        workload TEXT NOT NULL UNIQUE CHECK (workload <> ''),
        credential_hash BYTEA NOT NULL UNIQUE CHECK (length(credential_hash) = 32),
        pairing_profile_id BIGINT REFERENCES pairing_profile (id),
        enrolled_at_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        host_json TEXT NOT NULL,
        applied_revision TEXT,
        status_json TEXT,
        offline_since_ms BIGINT
    );"#,
    // Version 3: rollouts (see MIGRATIONS).
    r#"CREATE TABLE rollout (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE CHECK (name <> ''),
        json TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );"#,
    // Version 4: label rules (see MIGRATIONS).
    r#"CREATE TABLE label_rules (
        id BIGINT PRIMARY KEY CHECK (id = 1),
        yaml TEXT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        updated_by TEXT NOT NULL
    );"#,
    // Version 5: enrollment bindings and pending agents (see MIGRATIONS).
    r#"ALTER TABLE pairing_profile ADD COLUMN bind_workload TEXT;
    ALTER TABLE pairing_profile ADD COLUMN bind_scope_json TEXT;
    ALTER TABLE agent ADD COLUMN pending_reason TEXT;"#,
];

/// The control-plane schema version this build writes.
pub const CONTROL_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const _: () = assert!(MIGRATIONS.len() == POSTGRES_MIGRATIONS.len());

/// Brings the schema to [`CONTROL_SCHEMA_VERSION`]. Runs inside the caller's write
/// transaction, which keeps a second process from migrating at the same time; a step
/// that fails rolls everything back (both databases have transactional DDL).
pub(super) fn migrate(db: &mut dyn Db) -> Result<(), StoreError> {
    let steps = match db.dialect() {
        Dialect::Sqlite => MIGRATIONS,
        Dialect::Postgres => POSTGRES_MIGRATIONS,
    };
    let ctx = "reading the control schema version";
    db.batch("CREATE TABLE IF NOT EXISTS control_schema_version (version BIGINT NOT NULL)")
        .map_err(|source| StoreError::Backend {
            context: ctx,
            source,
        })?;
    let found = sql::int(
        db,
        ctx,
        "SELECT coalesce(max(version), 0) FROM control_schema_version",
        &[],
    )?;
    if found > CONTROL_SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: CONTROL_SCHEMA_VERSION,
        });
    }
    for version in found + 1..=CONTROL_SCHEMA_VERSION {
        let step = steps[usize::try_from(version - 1).unwrap_or_default()];
        let migrate_err = |source| StoreError::Migrate { version, source };
        db.batch(step).map_err(migrate_err)?;
        db.exec("DELETE FROM control_schema_version", &[])
            .map_err(migrate_err)?;
        db.exec(
            "INSERT INTO control_schema_version (version) VALUES (?1)",
            args![version],
        )
        .map_err(migrate_err)?;
    }
    Ok(())
}
