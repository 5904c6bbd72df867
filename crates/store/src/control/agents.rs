//! Host agents and the pairing profiles they enroll with.
//!
//! A pairing profile is a reusable enrollment key (stored as its SHA-256) with the
//! labels and enforcement mode its agents' workloads get, what its key may become (any
//! new workload, one named workload, or workloads inside a label scope), an optional use
//! limit and expiry. Enrolling checks the profile, counts the use, stores the agent with
//! its credential hash and writes the workload it becomes in one transaction, so two
//! agents racing for the last use of a profile cannot both get in, and a refusal leaves
//! nothing behind. An agent the server could not let in on the key alone is stored
//! *pending*: its credential is refused until an admin approves it.

use std::fmt;

use bulkhead_model::{EnforcementMode, Labels};

use super::sql::{Db, Row, RowError, Val, all, args, exec, int, one};
use super::{AuditContext, ControlStore, insert_audit, to_i64};
use crate::StoreError;

/// A pairing profile to create; the server generates the key and hands over its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPairingProfile {
    pub name: String,
    pub labels: Labels,
    pub mode: EnforcementMode,
    /// `None`: unlimited.
    pub max_uses: Option<u32>,
    /// `None`: never expires.
    pub expires_at_ms: Option<i64>,
    /// The only workload the key may enroll as (created or adopted).
    pub workload: Option<String>,
    /// Existing workloads carrying these labels may be adopted with the key.
    pub scope: Option<Labels>,
}

/// A stored pairing profile, without its key hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PairingProfile {
    pub id: u64,
    pub name: String,
    pub labels: Labels,
    pub mode: EnforcementMode,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub created_by: String,
    pub revoked: bool,
    pub workload: Option<String>,
    pub scope: Option<Labels>,
}

/// Why [`ControlStore::enroll_agent`] turned an agent away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnrollRefusal {
    /// No profile has this key.
    UnknownKey,
    Revoked,
    /// `expires_at_ms` is at or before the enrollment time.
    Expired,
    /// `uses` reached `max_uses`.
    UsedUp,
}

impl fmt::Display for EnrollRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnrollRefusal::UnknownKey => "the pairing key is not known",
            EnrollRefusal::Revoked => "the pairing profile was revoked",
            EnrollRefusal::Expired => "the pairing profile has expired",
            EnrollRefusal::UsedUp => "the pairing profile has no uses left",
        })
    }
}

/// An agent to enroll; the server generates its credential and hands over the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    /// The workload the agent enforces for; one agent per workload.
    pub workload: String,
    pub credential_hash: [u8; 32],
    /// The host inventory the agent reported, as JSON (opaque to the store).
    pub host_json: String,
    /// Why the agent waits for an admin's approval; `None` lets it in now.
    pub pending: Option<String>,
    /// Inventory changes (the workload the agent becomes) written in the same
    /// transaction; for a pending agent they are left to the approval.
    pub changes: Vec<super::Change>,
}

/// A stored agent, without its credential hash. `host_json` and `status_json` are
/// opaque JSON text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentRecord {
    pub id: u64,
    pub workload: String,
    pub pairing_profile_id: Option<u64>,
    pub enrolled_at_ms: i64,
    pub last_seen_ms: i64,
    pub host_json: String,
    pub applied_revision: Option<String>,
    pub status_json: Option<String>,
    /// Set by [`ControlStore::mark_agent_offline`], cleared by a heartbeat.
    pub offline_since_ms: Option<i64>,
    /// Why the agent waits for approval; its credential is refused meanwhile.
    pub pending: Option<String>,
}

const PROFILE_COLUMNS: &str = "id, name, labels_json, mode, max_uses, uses, expires_at_ms, \
    created_at_ms, created_by, revoked, bind_workload, bind_scope_json";
const AGENT_COLUMNS: &str = "id, workload, pairing_profile_id, enrolled_at_ms, last_seen_ms, \
    host_json, applied_revision, status_json, offline_since_ms, pending_reason";

impl ControlStore {
    /// Stores a pairing profile and audits it (`pairing_profile/ID`, after: the profile
    /// as JSON, never the key hash). A name or key hash already in use is
    /// [`StoreError::Conflict`].
    pub fn create_pairing_profile(
        &mut self,
        p: &NewPairingProfile,
        key_hash: &[u8; 32],
        audit: &AuditContext,
    ) -> Result<PairingProfile, StoreError> {
        if p.name.is_empty() {
            return Err(StoreError::Invalid {
                what: "a pairing profile needs a name".into(),
            });
        }
        let encode = |labels: &Labels| {
            serde_json::to_string(labels).map_err(|e| StoreError::Backend {
                context: "encoding a pairing profile's labels",
                source: Box::new(e),
            })
        };
        let labels_json = encode(&p.labels)?;
        let scope_json = p.scope.as_ref().map(encode).transpose()?;
        self.write("creating a pairing profile", |db| {
            let ctx = "creating a pairing profile";
            let (name_taken, key_taken) = one(
                db,
                ctx,
                "SELECT EXISTS (SELECT 1 FROM pairing_profile WHERE name = ?1),
                        EXISTS (SELECT 1 FROM pairing_profile WHERE key_hash = ?2)",
                args![&p.name, &key_hash[..]],
                |r| Ok((r.bool(0)?, r.bool(1)?)),
            )?
            .unwrap_or_default();
            if name_taken {
                return Err(StoreError::Conflict {
                    what: format!("a pairing profile named {:?} already exists", p.name),
                });
            }
            if key_taken {
                return Err(StoreError::Conflict {
                    what: "a pairing profile with this key hash already exists".into(),
                });
            }
            let id = int(
                db,
                ctx,
                "INSERT INTO pairing_profile (name, labels_json, mode, max_uses, uses,
                    expires_at_ms, key_hash, created_at_ms, created_by, revoked,
                    bind_workload, bind_scope_json)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, 0, ?9, ?10) RETURNING id",
                args![
                    &p.name,
                    labels_json.as_str(),
                    p.mode.to_string(),
                    p.max_uses,
                    p.expires_at_ms,
                    &key_hash[..],
                    audit.at_ms,
                    &audit.actor,
                    p.workload.as_deref(),
                    scope_json.as_deref()
                ],
            )?;
            let profile =
                get_profile(db, "id = ?1", id.into())?.ok_or_else(|| StoreError::Backend {
                    context: ctx,
                    source: "the new pairing profile is not there".into(),
                })?;
            insert_audit(
                db,
                audit,
                &format!("pairing_profile/{}", profile.id),
                None,
                Some(&profile_json(&profile)),
            )?;
            Ok(profile)
        })
    }

    /// Every pairing profile, revoked ones included, by id.
    pub fn pairing_profiles(&self) -> Result<Vec<PairingProfile>, StoreError> {
        let ctx = "reading pairing profiles";
        self.query(ctx, |db| {
            all(
                db,
                ctx,
                &format!("SELECT {PROFILE_COLUMNS} FROM pairing_profile ORDER BY id"),
                &[],
                profile_row,
            )
        })
    }

    /// One pairing profile by id.
    pub fn pairing_profile(&self, id: u64) -> Result<Option<PairingProfile>, StoreError> {
        self.query("reading a pairing profile", |db| {
            get_profile(db, "id = ?1", to_i64(id).into())
        })
    }

    /// The profile whose key hashes to `key_hash`, and why it would refuse an
    /// enrollment at `now_ms` (if it would); nothing is written or counted.
    pub fn pairing_profile_by_key(
        &self,
        key_hash: &[u8; 32],
        now_ms: i64,
    ) -> Result<Result<PairingProfile, EnrollRefusal>, StoreError> {
        let profile = self.query("reading a pairing profile", |db| {
            get_profile(db, "key_hash = ?1", Val::from(&key_hash[..]))
        })?;
        Ok(match profile {
            None => Err(EnrollRefusal::UnknownKey),
            Some(p) => match refusal(&p, now_ms) {
                Some(r) => Err(r),
                None => Ok(p),
            },
        })
    }

    /// Revokes a pairing profile so that its key enrolls no more agents (agents already
    /// enrolled keep working). `Ok(false)` if there is no such profile; revoking a
    /// revoked profile is `Ok(true)` and writes nothing (the first revocation stands);
    /// otherwise audited (`pairing_profile/ID`, before and after).
    pub fn revoke_pairing_profile(
        &mut self,
        id: u64,
        audit: &AuditContext,
    ) -> Result<bool, StoreError> {
        self.write("revoking a pairing profile", |db| {
            let Some(before) = get_profile(db, "id = ?1", to_i64(id).into())? else {
                return Ok(false);
            };
            if before.revoked {
                return Ok(true);
            }
            exec(
                db,
                "revoking a pairing profile",
                "UPDATE pairing_profile SET revoked = 1 WHERE id = ?1",
                args![to_i64(id)],
            )?;
            let after = PairingProfile {
                revoked: true,
                ..before.clone()
            };
            insert_audit(
                db,
                audit,
                &format!("pairing_profile/{id}"),
                Some(&profile_json(&before)),
                Some(&profile_json(&after)),
            )?;
            Ok(true)
        })
    }

    /// Enrolls an agent with the profile whose key hashes to `key_hash`, in one
    /// transaction: refuses (`Ok(Err(_))`, nothing written) if there is no such profile
    /// or it is revoked, expired (`expires_at_ms <= now_ms`) or used up; otherwise
    /// counts the use, stores the agent (pending when `agent.pending` says why) and
    /// applies `agent.changes`, replacing any agent of the same workload
    /// (re-enrollment: the old credential stops working). Audited as `agent/ID` with
    /// the replaced agent before (if any) and the new one after, never the hashes,
    /// then the changes' own entries. A credential hash already held by another
    /// workload's agent is [`StoreError::Conflict`]; any error writes nothing.
    pub fn enroll_agent(
        &mut self,
        key_hash: &[u8; 32],
        agent: &NewAgent,
        now_ms: i64,
        audit: &AuditContext,
    ) -> Result<Result<(AgentRecord, PairingProfile), EnrollRefusal>, StoreError> {
        if agent.workload.is_empty() {
            return Err(StoreError::Invalid {
                what: "an agent needs a workload name".into(),
            });
        }
        self.write("enrolling an agent", |db| {
            let ctx = "enrolling an agent";
            let Some(profile) = get_profile(db, "key_hash = ?1", Val::from(&key_hash[..]))? else {
                return Ok(Err(EnrollRefusal::UnknownKey));
            };
            if let Some(refusal) = refusal(&profile, now_ms) {
                return Ok(Err(refusal));
            }
            let credential_owner = one(
                db,
                ctx,
                "SELECT workload FROM agent WHERE credential_hash = ?1",
                args![&agent.credential_hash[..]],
                |r| r.text(0),
            )?;
            if credential_owner.is_some_and(|w| w != agent.workload) {
                return Err(StoreError::Conflict {
                    what: "another agent holds this credential hash".into(),
                });
            }
            exec(
                db,
                ctx,
                "UPDATE pairing_profile SET uses = uses + 1 WHERE id = ?1",
                args![to_i64(profile.id)],
            )?;
            let replaced = get_agent(db, "workload = ?1", Val::from(&agent.workload))?;
            if let Some(old) = &replaced {
                exec(
                    db,
                    ctx,
                    "DELETE FROM agent WHERE id = ?1",
                    args![to_i64(old.id)],
                )?;
            }
            let id = int(
                db,
                ctx,
                "INSERT INTO agent (workload, credential_hash, pairing_profile_id,
                    enrolled_at_ms, last_seen_ms, host_json, pending_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
                args![
                    &agent.workload,
                    &agent.credential_hash[..],
                    to_i64(profile.id),
                    now_ms,
                    now_ms,
                    &agent.host_json,
                    agent.pending.as_deref()
                ],
            )?;
            let record =
                get_agent(db, "id = ?1", id.into())?.ok_or_else(|| StoreError::Backend {
                    context: ctx,
                    source: "the new agent is not there".into(),
                })?;
            insert_audit(
                db,
                audit,
                &format!("agent/{}", record.id),
                replaced.as_ref().map(agent_json).as_deref(),
                Some(&agent_json(&record)),
            )?;
            if agent.pending.is_none() {
                let mut entries = Vec::new();
                for change in &agent.changes {
                    super::apply_change(db, change, audit, &mut entries)?;
                }
            }
            let profile = PairingProfile {
                uses: profile.uses.saturating_add(1),
                ..profile
            };
            Ok(Ok((record, profile)))
        })
    }

    /// Lets a pending agent in: clears its pending reason and applies `changes` (the
    /// workload it becomes) in one transaction, audited as `agent/ID` (before and
    /// after) and the changes' own entries. `Ok(false)` if there is no such agent or it
    /// is not pending (nothing written).
    pub fn approve_agent(
        &mut self,
        id: u64,
        changes: &[super::Change],
        audit: &AuditContext,
    ) -> Result<bool, StoreError> {
        let ctx = "approving an agent";
        self.write(ctx, |db| {
            let Some(before) = get_agent(db, "id = ?1", to_i64(id).into())? else {
                return Ok(false);
            };
            if before.pending.is_none() {
                return Ok(false);
            }
            exec(
                db,
                ctx,
                "UPDATE agent SET pending_reason = NULL WHERE id = ?1",
                args![to_i64(id)],
            )?;
            let after = AgentRecord {
                pending: None,
                ..before.clone()
            };
            insert_audit(
                db,
                audit,
                &format!("agent/{id}"),
                Some(&agent_json(&before)),
                Some(&agent_json(&after)),
            )?;
            let mut entries = Vec::new();
            for change in changes {
                super::apply_change(db, change, audit, &mut entries)?;
            }
            Ok(true)
        })
    }

    /// The agent whose credential hashes to `credential_hash`.
    pub fn agent_by_credential(
        &self,
        credential_hash: &[u8; 32],
    ) -> Result<Option<AgentRecord>, StoreError> {
        self.query("reading an agent", |db| {
            get_agent(db, "credential_hash = ?1", Val::from(&credential_hash[..]))
        })
    }

    /// Every agent, by id.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let ctx = "reading agents";
        self.query(ctx, |db| {
            all(
                db,
                ctx,
                &format!("SELECT {AGENT_COLUMNS} FROM agent ORDER BY id"),
                &[],
                agent_row,
            )
        })
    }

    /// One agent by id.
    pub fn agent(&self, id: u64) -> Result<Option<AgentRecord>, StoreError> {
        self.query("reading an agent", |db| {
            get_agent(db, "id = ?1", to_i64(id).into())
        })
    }

    /// Records a heartbeat: `last_seen_ms`, and the host inventory, applied revision
    /// and status when given (`None` keeps the stored value); clears
    /// `offline_since_ms`. Not audited: agents call this every few seconds. Returns
    /// whether the agent exists.
    pub fn agent_heartbeat(
        &mut self,
        id: u64,
        now_ms: i64,
        host_json: Option<&str>,
        applied_revision: Option<&str>,
        status_json: Option<&str>,
    ) -> Result<bool, StoreError> {
        let ctx = "recording an agent heartbeat";
        let changed = self.write(ctx, |db| {
            exec(
                db,
                ctx,
                "UPDATE agent SET last_seen_ms = ?2,
                    host_json = coalesce(?3, host_json),
                    applied_revision = coalesce(?4, applied_revision),
                    status_json = coalesce(?5, status_json),
                    offline_since_ms = NULL
                 WHERE id = ?1",
                args![to_i64(id), now_ms, host_json, applied_revision, status_json],
            )
        })?;
        Ok(changed == 1)
    }

    /// Marks an agent offline since `since_ms`. Returns `true` only when this call
    /// took it from online to offline, so that the caller raises one alert per
    /// outage; an agent already offline (or unknown) gives `false`.
    pub fn mark_agent_offline(&mut self, id: u64, since_ms: i64) -> Result<bool, StoreError> {
        let ctx = "marking an agent offline";
        let changed = self.write(ctx, |db| {
            exec(
                db,
                ctx,
                "UPDATE agent SET offline_since_ms = ?2
                 WHERE id = ?1 AND offline_since_ms IS NULL",
                args![to_i64(id), since_ms],
            )
        })?;
        Ok(changed == 1)
    }

    /// Removes an agent (its credential stops working); audited as `agent/ID` with the
    /// agent before. `Ok(false)` if there is no such agent.
    pub fn delete_agent(&mut self, id: u64, audit: &AuditContext) -> Result<bool, StoreError> {
        self.write("removing an agent", |db| {
            let Some(before) = get_agent(db, "id = ?1", to_i64(id).into())? else {
                return Ok(false);
            };
            exec(
                db,
                "removing an agent",
                "DELETE FROM agent WHERE id = ?1",
                args![to_i64(id)],
            )?;
            insert_audit(
                db,
                audit,
                &format!("agent/{id}"),
                Some(&agent_json(&before)),
                None,
            )?;
            Ok(true)
        })
    }
}

/// Why `profile` cannot enroll at `now_ms`, if it cannot; checked in this order.
fn refusal(profile: &PairingProfile, now_ms: i64) -> Option<EnrollRefusal> {
    if profile.revoked {
        Some(EnrollRefusal::Revoked)
    } else if profile.expires_at_ms.is_some_and(|t| t <= now_ms) {
        Some(EnrollRefusal::Expired)
    } else if profile.max_uses.is_some_and(|m| profile.uses >= m) {
        Some(EnrollRefusal::UsedUp)
    } else {
        None
    }
}

fn get_profile(
    db: &mut dyn Db,
    condition: &str,
    arg: Val,
) -> Result<Option<PairingProfile>, StoreError> {
    one(
        db,
        "reading a pairing profile",
        &format!("SELECT {PROFILE_COLUMNS} FROM pairing_profile WHERE {condition}"),
        &[arg],
        profile_row,
    )
}

fn get_agent(
    db: &mut dyn Db,
    condition: &str,
    arg: Val,
) -> Result<Option<AgentRecord>, StoreError> {
    one(
        db,
        "reading an agent",
        &format!("SELECT {AGENT_COLUMNS} FROM agent WHERE {condition}"),
        &[arg],
        agent_row,
    )
}

fn profile_row(r: &Row) -> Result<PairingProfile, RowError> {
    let count = |idx: usize, v: u64| {
        u32::try_from(v).map_err(|_| RowError(format!("column {idx} ({v}) exceeds a u32")))
    };
    let max_uses = r.opt_unsigned(4)?.map(|v| count(4, v)).transpose()?;
    Ok(PairingProfile {
        id: r.unsigned(0)?,
        name: r.text(1)?,
        labels: serde_json::from_str(&r.text(2)?)
            .map_err(|e| RowError(format!("labels_json: {e}")))?,
        mode: r.text(3)?.parse().map_err(RowError)?,
        max_uses,
        uses: count(5, r.unsigned(5)?)?,
        expires_at_ms: r.opt_int(6)?,
        created_at_ms: r.int(7)?,
        created_by: r.text(8)?,
        revoked: r.bool(9)?,
        workload: r.opt_text(10)?,
        scope: r
            .opt_text(11)?
            .map(|j| {
                serde_json::from_str(&j).map_err(|e| RowError(format!("bind_scope_json: {e}")))
            })
            .transpose()?,
    })
}

fn agent_row(r: &Row) -> Result<AgentRecord, RowError> {
    Ok(AgentRecord {
        id: r.unsigned(0)?,
        workload: r.text(1)?,
        pairing_profile_id: r.opt_unsigned(2)?,
        enrolled_at_ms: r.int(3)?,
        last_seen_ms: r.int(4)?,
        host_json: r.text(5)?,
        applied_revision: r.opt_text(6)?,
        status_json: r.opt_text(7)?,
        offline_since_ms: r.opt_int(8)?,
        pending: r.opt_text(9)?,
    })
}

/// What the audit log keeps of a profile: everything but the key hash.
fn profile_json(p: &PairingProfile) -> String {
    serde_json::to_string(p).unwrap_or_default()
}

/// What the audit log keeps of an agent: who and where, not its heartbeat state nor
/// the credential hash.
fn agent_json(a: &AgentRecord) -> String {
    serde_json::json!({
        "id": a.id,
        "workload": a.workload,
        "pairing_profile_id": a.pairing_profile_id,
        "enrolled_at_ms": a.enrolled_at_ms,
        "pending": a.pending,
        "host": serde_json::from_str::<serde_json::Value>(&a.host_json)
            .unwrap_or_else(|_| serde_json::Value::String(a.host_json.clone())),
    })
    .to_string()
}
