//! Rollouts: the server's monitor → enforce calendars, one row each.
//!
//! The store keeps a rollout as opaque JSON (the server owns its shape and its
//! calendar) under a unique name. Every change is audited with the JSON before and
//! after; writing the same JSON again is not a change and leaves no audit entry, so a
//! scheduler that saves what it looked at on every tick does not flood the log.

use super::sql::{Row, RowError, all, args, exec, int, one};
use super::{AuditContext, ControlStore, insert_audit, to_i64};
use crate::StoreError;

/// A stored rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRollout {
    pub id: u64,
    pub name: String,
    pub json: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const COLUMNS: &str = "id, name, json, created_at_ms, updated_at_ms";

impl ControlStore {
    /// Stores a new rollout and audits it (`rollout/ID`). A name already in use is
    /// [`StoreError::Conflict`].
    pub fn create_rollout(
        &mut self,
        name: &str,
        json: &str,
        audit: &AuditContext,
    ) -> Result<u64, StoreError> {
        if name.is_empty() {
            return Err(StoreError::Invalid {
                what: "a rollout needs a name".into(),
            });
        }
        let ctx = "creating a rollout";
        self.write(ctx, |db| {
            let taken = one(
                db,
                ctx,
                "SELECT 1 FROM rollout WHERE name = ?1",
                args![name],
                |r| r.int(0),
            )?;
            if taken.is_some() {
                return Err(StoreError::Conflict {
                    what: format!("a rollout named {name:?} already exists"),
                });
            }
            let id = int(
                db,
                ctx,
                "INSERT INTO rollout (name, json, created_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?3) RETURNING id",
                args![name, json, audit.at_ms],
            )?;
            insert_audit(db, audit, &format!("rollout/{id}"), None, Some(json))?;
            u64::try_from(id).map_err(|_| StoreError::Backend {
                context: ctx,
                source: format!("negative rollout id {id}").into(),
            })
        })
    }

    /// Replaces a rollout's JSON. `Ok(false)` if there is no such rollout; the same
    /// JSON as stored writes nothing; otherwise audited (`rollout/ID`, before and
    /// after).
    pub fn update_rollout(
        &mut self,
        id: u64,
        json: &str,
        audit: &AuditContext,
    ) -> Result<bool, StoreError> {
        let ctx = "updating a rollout";
        self.write(ctx, |db| {
            let Some(before) = one(
                db,
                ctx,
                &format!("SELECT {COLUMNS} FROM rollout WHERE id = ?1"),
                args![to_i64(id)],
                rollout_row,
            )?
            else {
                return Ok(false);
            };
            if before.json == json {
                return Ok(true);
            }
            exec(
                db,
                ctx,
                "UPDATE rollout SET json = ?2, updated_at_ms = ?3 WHERE id = ?1",
                args![to_i64(id), json, audit.at_ms],
            )?;
            insert_audit(
                db,
                audit,
                &format!("rollout/{id}"),
                Some(&before.json),
                Some(json),
            )?;
            Ok(true)
        })
    }

    /// Every rollout, by id.
    pub fn rollouts(&self) -> Result<Vec<StoredRollout>, StoreError> {
        let ctx = "reading rollouts";
        self.query(ctx, |db| {
            all(
                db,
                ctx,
                &format!("SELECT {COLUMNS} FROM rollout ORDER BY id"),
                &[],
                rollout_row,
            )
        })
    }

    /// One rollout by id.
    pub fn rollout(&self, id: u64) -> Result<Option<StoredRollout>, StoreError> {
        let ctx = "reading a rollout";
        self.query(ctx, |db| {
            one(
                db,
                ctx,
                &format!("SELECT {COLUMNS} FROM rollout WHERE id = ?1"),
                args![to_i64(id)],
                rollout_row,
            )
        })
    }
}

fn rollout_row(r: &Row) -> Result<StoredRollout, RowError> {
    Ok(StoredRollout {
        id: r.unsigned(0)?,
        name: r.text(1)?,
        json: r.text(2)?,
        created_at_ms: r.int(3)?,
        updated_at_ms: r.int(4)?,
    })
}
