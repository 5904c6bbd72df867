//! Host agents and the pairing profiles they enroll with.
//!
//! A pairing profile is a reusable enrollment key (stored as its SHA-256) with the
//! labels and enforcement mode its agents' workloads get, an optional use limit and
//! expiry. Enrolling checks the profile, counts the use and stores the agent with its
//! credential hash in one transaction, so two agents racing for the last use of a
//! profile cannot both get in.

use std::fmt;

use bulkhead_model::{EnforcementMode, Labels};
use rusqlite::{Connection, Row, params};

use super::{AuditContext, ControlStore, insert_audit, query_all, query_one, to_i64, unsigned};
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
}

/// A stored pairing profile, without its key hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
}

const PROFILE_COLUMNS: &str = "id, name, labels_json, mode, max_uses, uses, expires_at_ms, \
    created_at_ms, created_by, revoked";
const AGENT_COLUMNS: &str = "id, workload, pairing_profile_id, enrolled_at_ms, last_seen_ms, \
    host_json, applied_revision, status_json, offline_since_ms";

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
        let labels_json = serde_json::to_string(&p.labels).map_err(|e| StoreError::Backend {
            context: "encoding a pairing profile's labels",
            source: Box::new(e),
        })?;
        self.write("creating a pairing profile", |tx| {
            let ctx = "creating a pairing profile";
            let (name_taken, key_taken): (bool, bool) = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM pairing_profile WHERE name = ?1),
                            EXISTS (SELECT 1 FROM pairing_profile WHERE key_hash = ?2)",
                    params![p.name, &key_hash[..]],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(StoreError::backend(ctx))?;
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
            tx.execute(
                "INSERT INTO pairing_profile (name, labels_json, mode, max_uses, uses,
                    expires_at_ms, key_hash, created_at_ms, created_by, revoked)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, 0)",
                params![
                    p.name,
                    labels_json,
                    p.mode.to_string(),
                    p.max_uses,
                    p.expires_at_ms,
                    &key_hash[..],
                    audit.at_ms,
                    audit.actor
                ],
            )
            .map_err(StoreError::backend(ctx))?;
            let id = tx.last_insert_rowid();
            let profile = get_profile(tx, "id = ?1", id)?.ok_or_else(|| StoreError::Backend {
                context: ctx,
                source: "the new pairing profile is not there".into(),
            })?;
            insert_audit(
                tx,
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
        query_all(
            &self.conn,
            &format!("SELECT {PROFILE_COLUMNS} FROM pairing_profile ORDER BY id"),
            [],
            profile_row,
            "reading pairing profiles",
        )
    }

    /// One pairing profile by id.
    pub fn pairing_profile(&self, id: u64) -> Result<Option<PairingProfile>, StoreError> {
        get_profile(&self.conn, "id = ?1", to_i64(id))
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
        self.write("revoking a pairing profile", |tx| {
            let Some(before) = get_profile(tx, "id = ?1", to_i64(id))? else {
                return Ok(false);
            };
            if before.revoked {
                return Ok(true);
            }
            tx.execute(
                "UPDATE pairing_profile SET revoked = 1 WHERE id = ?1",
                [to_i64(id)],
            )
            .map_err(StoreError::backend("revoking a pairing profile"))?;
            let after = PairingProfile {
                revoked: true,
                ..before.clone()
            };
            insert_audit(
                tx,
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
    /// counts the use and stores the agent, replacing any agent of the same workload
    /// (re-enrollment: the old credential stops working). Audited as `agent/ID` with
    /// the replaced agent before (if any) and the new one after, never the hashes.
    /// A credential hash already held by another workload's agent is
    /// [`StoreError::Conflict`].
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
        self.write("enrolling an agent", |tx| {
            let ctx = "enrolling an agent";
            let Some(profile) = get_profile(tx, "key_hash = ?1", &key_hash[..])? else {
                return Ok(Err(EnrollRefusal::UnknownKey));
            };
            if let Some(refusal) = refusal(&profile, now_ms) {
                return Ok(Err(refusal));
            }
            let credential_owner: Option<String> = query_one(
                tx,
                "SELECT workload FROM agent WHERE credential_hash = ?1",
                [&agent.credential_hash[..]],
                |r| r.get(0),
                ctx,
            )?;
            if credential_owner.is_some_and(|w| w != agent.workload) {
                return Err(StoreError::Conflict {
                    what: "another agent holds this credential hash".into(),
                });
            }
            tx.execute(
                "UPDATE pairing_profile SET uses = uses + 1 WHERE id = ?1",
                [to_i64(profile.id)],
            )
            .map_err(StoreError::backend(ctx))?;
            let replaced = get_agent(tx, "workload = ?1", &agent.workload)?;
            if let Some(old) = &replaced {
                tx.execute("DELETE FROM agent WHERE id = ?1", [to_i64(old.id)])
                    .map_err(StoreError::backend(ctx))?;
            }
            tx.execute(
                "INSERT INTO agent (workload, credential_hash, pairing_profile_id,
                    enrolled_at_ms, last_seen_ms, host_json)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                params![
                    agent.workload,
                    &agent.credential_hash[..],
                    to_i64(profile.id),
                    now_ms,
                    agent.host_json
                ],
            )
            .map_err(StoreError::backend(ctx))?;
            let id = tx.last_insert_rowid();
            let record = get_agent(tx, "id = ?1", id)?.ok_or_else(|| StoreError::Backend {
                context: ctx,
                source: "the new agent is not there".into(),
            })?;
            insert_audit(
                tx,
                audit,
                &format!("agent/{}", record.id),
                replaced.as_ref().map(agent_json).as_deref(),
                Some(&agent_json(&record)),
            )?;
            let profile = PairingProfile {
                uses: profile.uses.saturating_add(1),
                ..profile
            };
            Ok(Ok((record, profile)))
        })
    }

    /// The agent whose credential hashes to `credential_hash`.
    pub fn agent_by_credential(
        &self,
        credential_hash: &[u8; 32],
    ) -> Result<Option<AgentRecord>, StoreError> {
        get_agent(&self.conn, "credential_hash = ?1", &credential_hash[..])
    }

    /// Every agent, by id.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        query_all(
            &self.conn,
            &format!("SELECT {AGENT_COLUMNS} FROM agent ORDER BY id"),
            [],
            agent_row,
            "reading agents",
        )
    }

    /// One agent by id.
    pub fn agent(&self, id: u64) -> Result<Option<AgentRecord>, StoreError> {
        get_agent(&self.conn, "id = ?1", to_i64(id))
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
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE agent SET last_seen_ms = ?2,
                    host_json = coalesce(?3, host_json),
                    applied_revision = coalesce(?4, applied_revision),
                    status_json = coalesce(?5, status_json),
                    offline_since_ms = NULL
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    to_i64(id),
                    now_ms,
                    host_json,
                    applied_revision,
                    status_json
                ])
            })
            .map_err(StoreError::backend("recording an agent heartbeat"))?;
        Ok(changed == 1)
    }

    /// Marks an agent offline since `since_ms`. Returns `true` only when this call
    /// took it from online to offline, so that the caller raises one alert per
    /// outage; an agent already offline (or unknown) gives `false`.
    pub fn mark_agent_offline(&mut self, id: u64, since_ms: i64) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE agent SET offline_since_ms = ?2
                 WHERE id = ?1 AND offline_since_ms IS NULL",
            )
            .and_then(|mut s| s.execute(params![to_i64(id), since_ms]))
            .map_err(StoreError::backend("marking an agent offline"))?;
        Ok(changed == 1)
    }

    /// Removes an agent (its credential stops working); audited as `agent/ID` with the
    /// agent before. `Ok(false)` if there is no such agent.
    pub fn delete_agent(&mut self, id: u64, audit: &AuditContext) -> Result<bool, StoreError> {
        self.write("removing an agent", |tx| {
            let Some(before) = get_agent(tx, "id = ?1", to_i64(id))? else {
                return Ok(false);
            };
            tx.execute("DELETE FROM agent WHERE id = ?1", [to_i64(id)])
                .map_err(StoreError::backend("removing an agent"))?;
            insert_audit(
                tx,
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
    conn: &Connection,
    condition: &str,
    arg: impl rusqlite::ToSql,
) -> Result<Option<PairingProfile>, StoreError> {
    query_one(
        conn,
        &format!("SELECT {PROFILE_COLUMNS} FROM pairing_profile WHERE {condition}"),
        [arg],
        profile_row,
        "reading a pairing profile",
    )
}

fn get_agent(
    conn: &Connection,
    condition: &str,
    arg: impl rusqlite::ToSql,
) -> Result<Option<AgentRecord>, StoreError> {
    query_one(
        conn,
        &format!("SELECT {AGENT_COLUMNS} FROM agent WHERE {condition}"),
        [arg],
        agent_row,
        "reading an agent",
    )
}

fn conversion(idx: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
}

fn profile_row(r: &Row<'_>) -> rusqlite::Result<PairingProfile> {
    let labels: String = r.get(2)?;
    let mode: String = r.get(3)?;
    let count = |idx: usize| -> rusqlite::Result<u32> {
        u32::try_from(unsigned(r, idx)?).map_err(|e| conversion(idx, e))
    };
    let max_uses = match r.get::<_, Option<i64>>(4)? {
        None => None,
        Some(_) => Some(count(4)?),
    };
    Ok(PairingProfile {
        id: unsigned(r, 0)?,
        name: r.get(1)?,
        labels: serde_json::from_str(&labels).map_err(|e| conversion(2, e))?,
        mode: mode
            .parse()
            .map_err(|e: String| conversion(3, std::io::Error::other(e)))?,
        max_uses,
        uses: count(5)?,
        expires_at_ms: r.get(6)?,
        created_at_ms: r.get(7)?,
        created_by: r.get(8)?,
        revoked: r.get(9)?,
    })
}

fn agent_row(r: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    Ok(AgentRecord {
        id: unsigned(r, 0)?,
        workload: r.get(1)?,
        pairing_profile_id: match r.get::<_, Option<i64>>(2)? {
            None => None,
            Some(_) => Some(unsigned(r, 2)?),
        },
        enrolled_at_ms: r.get(3)?,
        last_seen_ms: r.get(4)?,
        host_json: r.get(5)?,
        applied_revision: r.get(6)?,
        status_json: r.get(7)?,
        offline_since_ms: r.get(8)?,
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
        "host": serde_json::from_str::<serde_json::Value>(&a.host_json)
            .unwrap_or_else(|_| serde_json::Value::String(a.host_json.clone())),
    })
    .to_string()
}
