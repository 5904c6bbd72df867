//! Copying a whole control store into an empty one (`bulkhead migrate`: a SQLite
//! deployment moving to PostgreSQL): every table, ids and all, in one transaction on the
//! target, so that the copy is all there or not there.

use super::ControlStore;
use super::sql::{Db, Dialect, Row, Val, int};
use crate::StoreError;

/// Every table of the schema, in an order that satisfies their references.
const TABLES: &[&str] = &[
    "draft_object",
    "workload",
    "content",
    "version",
    "version_object",
    "version_workload",
    "token",
    "audit",
    "alert",
    "pairing_profile",
    "agent",
    "rollout",
    "label_rules",
];

/// Tables whose `id` PostgreSQL generates (identity columns): copied ids need
/// `OVERRIDING SYSTEM VALUE`, and the generator must then continue after them.
const IDENTITY: &[&str] = &[
    "content",
    "token",
    "audit",
    "alert",
    "pairing_profile",
    "agent",
    "rollout",
];

/// Rows copied, per table, in copy order.
pub type CopyReport = Vec<(&'static str, u64)>;

fn columns(db: &mut dyn Db, table: &str) -> Result<Vec<String>, StoreError> {
    let ctx = "listing the columns of a table to copy";
    let sql = match db.dialect() {
        Dialect::Sqlite => format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"),
        Dialect::Postgres => format!(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = '{table}'
             ORDER BY ordinal_position"
        ),
    };
    let rows = db.query(&sql, &[]).map_err(|source| StoreError::Backend {
        context: ctx,
        source,
    })?;
    rows.iter()
        .map(|r| {
            r.text(0).map_err(|e| StoreError::Backend {
                context: ctx,
                source: e.0.into(),
            })
        })
        .collect()
}

impl ControlStore {
    /// Copies everything this store holds into `target`, which must be empty and at
    /// the same schema version (opening both migrates them to this build's). Nothing is
    /// written to `target` unless all of it is.
    pub fn copy_into(&self, target: &mut ControlStore) -> Result<CopyReport, StoreError> {
        let ctx = "reading the control store to copy";
        let mut tables: Vec<(&'static str, Vec<String>, Vec<Row>)> = Vec::new();
        self.read(ctx, |db| {
            for &table in TABLES {
                let cols = columns(db, table)?;
                let rows = db
                    .query(&format!("SELECT {} FROM {table}", cols.join(", ")), &[])
                    .map_err(|source| StoreError::Backend {
                        context: ctx,
                        source,
                    })?;
                tables.push((table, cols, rows));
            }
            Ok(())
        })?;
        let postgres = target.db.dialect() == Dialect::Postgres;
        let ctx = "copying the control store";
        target.write(ctx, |db| {
            for &table in TABLES {
                if int(db, ctx, &format!("SELECT count(*) FROM {table}"), &[])? > 0 {
                    return Err(StoreError::Conflict {
                        what: format!(
                            "the target already holds rows in {table}; migrate only into an \
                             empty database"
                        ),
                    });
                }
            }
            let mut report = CopyReport::new();
            for (table, source_cols, rows) in &tables {
                let target_cols = columns(db, table)?;
                if &target_cols != source_cols {
                    return Err(StoreError::Invalid {
                        what: format!(
                            "{table} has columns {source_cols:?} in the source and \
                             {target_cols:?} in the target"
                        ),
                    });
                }
                let overriding = if postgres && IDENTITY.contains(table) {
                    " OVERRIDING SYSTEM VALUE"
                } else {
                    ""
                };
                let placeholders: Vec<String> =
                    (1..=source_cols.len()).map(|i| format!("?{i}")).collect();
                let sql = format!(
                    "INSERT INTO {table} ({}){overriding} VALUES ({})",
                    source_cols.join(", "),
                    placeholders.join(", ")
                );
                for row in rows {
                    db.exec(&sql, &row.0)
                        .map_err(|source| StoreError::Backend {
                            context: ctx,
                            source,
                        })?;
                }
                if overriding.is_empty() || rows.is_empty() {
                    report.push((table, rows.len() as u64));
                    continue;
                }
                db.query(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                         (SELECT max(id) FROM {table}))"
                    ),
                    &[] as &[Val],
                )
                .map_err(|source| StoreError::Backend {
                    context: ctx,
                    source,
                })?;
                report.push((table, rows.len() as u64));
            }
            Ok(report)
        })
    }
}
