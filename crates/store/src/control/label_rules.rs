//! The estate's label rules: one YAML document (`kind: label_rules`) that assigns labels
//! from workload attributes. The store keeps its text as written (the server validates
//! it before storing) and audits every change with the text before and after.

use super::sql::{args, exec, one};
use super::{AuditContext, ControlStore, insert_audit};
use crate::StoreError;

/// The stored label rules document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLabelRules {
    pub yaml: String,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

impl ControlStore {
    /// The label rules, if any were ever set.
    pub fn label_rules(&self) -> Result<Option<StoredLabelRules>, StoreError> {
        let ctx = "reading the label rules";
        self.query(ctx, |db| {
            one(
                db,
                ctx,
                "SELECT yaml, updated_at_ms, updated_by FROM label_rules WHERE id = 1",
                &[],
                |r| {
                    Ok(StoredLabelRules {
                        yaml: r.text(0)?,
                        updated_at_ms: r.int(1)?,
                        updated_by: r.text(2)?,
                    })
                },
            )
        })
    }

    /// Replaces the label rules (empty text: none) and audits the change
    /// (`label_rules`, the text before and after). The same text again writes nothing
    /// and returns `false`.
    pub fn set_label_rules(
        &mut self,
        yaml: &str,
        audit: &AuditContext,
    ) -> Result<bool, StoreError> {
        let ctx = "storing the label rules";
        self.write(ctx, |db| {
            let before = one(
                db,
                ctx,
                "SELECT yaml FROM label_rules WHERE id = 1",
                &[],
                |r| r.text(0),
            )?;
            if before.as_deref() == Some(yaml) || (before.is_none() && yaml.is_empty()) {
                return Ok(false);
            }
            if before.is_some() {
                exec(
                    db,
                    ctx,
                    "UPDATE label_rules SET yaml = ?1, updated_at_ms = ?2, updated_by = ?3
                     WHERE id = 1",
                    args![yaml, audit.at_ms, &audit.actor],
                )?;
            } else {
                exec(
                    db,
                    ctx,
                    "INSERT INTO label_rules (id, yaml, updated_at_ms, updated_by)
                     VALUES (1, ?1, ?2, ?3)",
                    args![yaml, audit.at_ms, &audit.actor],
                )?;
            }
            insert_audit(db, audit, "label_rules", before.as_deref(), Some(yaml))?;
            Ok(true)
        })
    }
}
