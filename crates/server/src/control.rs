//! The control service: the one write path for everything policy is computed from (the
//! inventory, the label rules, the draft, the provisioned versions, and the workloads
//! agents become).
//!
//! [`commit`] authorizes on the data, validates the whole result, writes it in one
//! transaction with its audit entries, recompiles, and publishes: the collectors swap
//! to the new compiled policy at once, agents see their new revision at their next
//! heartbeat. Validation (parsing and checking the whole draft or inventory) runs on a
//! snapshot *outside* the store's lock, so no request waits behind another's slow work;
//! the write then checks under the lock that nothing was committed since the snapshot
//! (a write generation), and starts over if something was.
//!
//! Writes that are decided under the lock in one short step (enrollment, approval)
//! use [`write`]; no handler recompiles by hand.

use std::sync::atomic::Ordering;

use bulkhead_policy::{Object, Policy, parse_file};
use bulkhead_store::control::{
    AuditContext, Change, ControlStore, DraftObject, StoredObject, StoredWorkload, VersionMeta,
};

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, lock, policy_of};

/// A change to what policy is computed from.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Workloads put or deleted. A quarantine is carried over unless `release`.
    Inventory { changes: Vec<Change>, release: bool },
    /// Draft objects put or deleted (`PutObject`, `DeleteObject`). With
    /// `create_only`, refused if any of the objects exists (a proposal made against an
    /// older draft must not replace someone's object).
    Draft {
        changes: Vec<Change>,
        create_only: bool,
    },
    /// The whole draft, already checked as a policy.
    ReplaceDraft(Vec<DraftObject>),
    /// The label rules document, already checked.
    LabelRules(String),
    /// The draft as a new version; `confirm` is needed for one that allows nothing.
    Provision { comment: String, confirm: bool },
    /// The draft back to a version's objects.
    Revert(u64),
}

/// What a commit did.
#[derive(Debug)]
pub enum Committed {
    Done,
    Version(VersionMeta),
    /// Label rules: whether the text differed from the stored one.
    LabelRules {
        changed: bool,
    },
}

/// What the roles may do, before the data is looked at.
fn authorize_role(p: &Principal, m: &Mutation) -> ApiResult<()> {
    match m {
        Mutation::Inventory { .. } => {
            p.require(&[Role::Admin, Role::Secops], "change the inventory")
        }
        Mutation::Draft { .. } => p.require(
            &[Role::Admin, Role::Secops, Role::AppOwner],
            "change policy",
        ),
        Mutation::ReplaceDraft(_) => {
            p.require(&[Role::Admin, Role::Secops], "replace the whole draft")
        }
        Mutation::LabelRules(_) => {
            p.require(&[Role::Admin, Role::Secops], "change the label rules")
        }
        Mutation::Provision { .. } => p.require(&[Role::Admin, Role::Secops], "provision policy"),
        Mutation::Revert(_) => p.require(&[Role::Admin, Role::Secops], "revert the draft"),
    }
}

/// What the validation step reads.
enum Snapshot {
    None,
    Workloads(Vec<StoredWorkload>),
    Draft(Vec<StoredObject>),
    DraftAndLatest(Vec<StoredObject>, Option<Vec<StoredObject>>),
}

fn snapshot(c: &ControlStore, m: &Mutation) -> ApiResult<Snapshot> {
    Ok(match m {
        Mutation::Inventory { .. } => Snapshot::Workloads(c.workloads()?),
        Mutation::Draft { .. } => Snapshot::Draft(c.draft_objects()?),
        Mutation::Provision { .. } => {
            Snapshot::DraftAndLatest(c.draft_objects()?, c.latest_version()?.map(|v| v.objects))
        }
        Mutation::ReplaceDraft(_) | Mutation::LabelRules(_) | Mutation::Revert(_) => Snapshot::None,
    })
}

fn parse_stored(o: &StoredObject) -> ApiResult<Object> {
    let (mut objs, errs) = parse_file(&format!("{}/{}", o.kind, o.name), &o.yaml);
    if !errs.is_empty() {
        return Err(ApiError::Internal(format!(
            "stored object {}/{} no longer parses",
            o.kind, o.name
        )));
    }
    objs.pop()
        .ok_or_else(|| ApiError::Internal("empty stored object".into()))
}

/// Authorizes on the data and validates the whole result; returns the changes to
/// write (for inventory writes, with quarantines carried over).
fn validate(p: &Principal, m: &Mutation, snap: Snapshot) -> ApiResult<Vec<Change>> {
    match (m, snap) {
        (Mutation::Inventory { changes, release }, Snapshot::Workloads(stored)) => {
            crate::inventory_api::checked_changes(&stored, changes.clone(), !release)
        }
        (
            Mutation::Draft {
                changes,
                create_only,
            },
            Snapshot::Draft(before),
        ) => {
            let before_policy = (p.role == Role::AppOwner)
                .then(|| policy_of(&before))
                .transpose()?;
            let mut after = before.clone();
            for change in changes {
                let (kind, name) = match change {
                    Change::PutObject { kind, name, .. } | Change::DeleteObject { kind, name } => {
                        (kind, name)
                    }
                    _ => return Err(ApiError::Internal("not a draft object change".into())),
                };
                let old = before.iter().find(|o| o.kind == *kind && o.name == *name);
                if *create_only && let Some(taken) = old {
                    return Err(ApiError::Conflict(format!(
                        "the draft changed meanwhile ({}/{} now exists); recommend again",
                        taken.kind, taken.name
                    )));
                }
                if let Some(old) = old {
                    p.may_write_object(&parse_stored(old)?)?;
                }
                after.retain(|o| !(o.kind == *kind && o.name == *name));
                if let Change::PutObject { yaml, .. } = change {
                    let new = StoredObject {
                        kind: kind.clone(),
                        name: name.clone(),
                        yaml: yaml.clone(),
                        updated_ms: 0,
                        updated_by: String::new(),
                    };
                    p.may_write_object(&parse_stored(&new)?)?;
                    after.push(new);
                }
            }
            // The whole draft must stay valid: a reference to a deleted group is
            // refused here.
            let after_policy = policy_of(&after)?;
            for change in changes {
                if let Change::PutObject { kind, name, .. } | Change::DeleteObject { kind, name } =
                    change
                    && kind == "ruleset"
                {
                    if let Some(before_policy) = &before_policy {
                        p.may_write_rules(before_policy, name)?;
                    }
                    p.may_write_rules(&after_policy, name)?;
                }
            }
            Ok(changes.clone())
        }
        (Mutation::Provision { confirm, .. }, Snapshot::DraftAndLatest(draft, latest)) => {
            let draft = policy_of(&draft)?;
            let provisioned = latest.map(|o| policy_of(&o)).transpose()?;
            if let Some(why) = impact(provisioned.as_ref(), &draft).confirm_required
                && !confirm
            {
                return Err(ApiError::invalid(
                    "confirm",
                    format!("{why}; send \"confirm\": true to provision it anyway"),
                ));
            }
            Ok(Vec::new())
        }
        (Mutation::ReplaceDraft(_) | Mutation::LabelRules(_) | Mutation::Revert(_), _) => {
            Ok(Vec::new())
        }
        _ => Err(ApiError::Internal(
            "snapshot does not fit the change".into(),
        )),
    }
}

fn apply(
    c: &mut ControlStore,
    audit: &AuditContext,
    m: &Mutation,
    changes: Vec<Change>,
) -> ApiResult<Committed> {
    Ok(match m {
        Mutation::Inventory { .. } | Mutation::Draft { .. } => {
            c.apply(&changes, audit)?;
            Committed::Done
        }
        Mutation::ReplaceDraft(objects) => {
            c.apply(
                &[Change::ReplaceDraft {
                    objects: objects.clone(),
                }],
                audit,
            )?;
            Committed::Done
        }
        Mutation::LabelRules(yaml) => Committed::LabelRules {
            changed: c.set_label_rules(yaml, audit)?,
        },
        Mutation::Provision { comment, .. } => Committed::Version(c.provision(comment, audit)?),
        Mutation::Revert(id) => {
            c.version(*id)?
                .ok_or_else(|| ApiError::NotFound(format!("version {id}")))?;
            c.revert_draft_to(*id, audit)?;
            Committed::Done
        }
    })
}

/// How many times validation on a snapshot is tried before it is done under the lock
/// (only when other writes keep landing in between).
const OPTIMISTIC_TRIES: usize = 3;

/// The one write path; see the module documentation. `p` is who is authorized (the
/// server itself for its own writes: rollouts, quarantine), `audit` how the audit log
/// names the change. Blocking: call it from [`crate::state::blocking`].
pub fn commit(
    s: &AppState,
    p: &Principal,
    audit: &AuditContext,
    m: Mutation,
) -> ApiResult<Committed> {
    authorize_role(p, &m)?;
    for _ in 0..OPTIMISTIC_TRIES {
        let (generation, snap) = {
            let c = lock(&s.control)?;
            (s.writes.load(Ordering::SeqCst), snapshot(&c, &m)?)
        };
        let changes = validate(p, &m, snap)?;
        let done = write_if(s, |c| {
            if s.writes.load(Ordering::SeqCst) != generation {
                return Ok(None);
            }
            apply(c, audit, &m, changes).map(Some)
        })?;
        if let Some(done) = done {
            return Ok(done);
        }
    }
    write(s, |c| {
        let changes = validate(p, &m, snapshot(c, &m)?)?;
        apply(c, audit, &m, changes)
    })
}

/// Runs `f` with the store under its lock as one step of the write path: then bumps
/// the write generation (snapshots taken before are stale), and recompiles and
/// publishes outside the lock. For writes decided in one short step under the lock.
pub fn write<T>(s: &AppState, f: impl FnOnce(&mut ControlStore) -> ApiResult<T>) -> ApiResult<T> {
    write_if(s, |c| f(c).map(Some))?
        .ok_or_else(|| ApiError::Internal("a write wrote nothing".into()))
}

/// As [`write`], for `f` that may decide not to write (`None`): then nothing is bumped
/// or recompiled, and concurrent writers are not sent back to validate again.
fn write_if<T>(
    s: &AppState,
    f: impl FnOnce(&mut ControlStore) -> ApiResult<Option<T>>,
) -> ApiResult<Option<T>> {
    let out = {
        let mut c = lock(&s.control)?;
        let out = f(&mut c)?;
        if out.is_some() {
            s.writes.fetch_add(1, Ordering::SeqCst);
        }
        out
    };
    if out.is_some() {
        s.recompile()?;
    }
    Ok(out)
}

/// What provisioning a draft would change, in rules.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Impact {
    pub rules_before: usize,
    pub rules_after: usize,
    pub allow_rules_before: usize,
    pub allow_rules_after: usize,
    /// The draft allows nothing at all (empty, or deny rules only).
    pub allows_nothing: bool,
    /// Provisioning needs `confirm: true`, and why.
    pub confirm_required: Option<String>,
}

fn rule_counts(p: &Policy) -> (usize, usize) {
    let rules = p.rulesets.iter().flat_map(|rs| rs.rules.iter());
    let allows = rules
        .clone()
        .filter(|r| r.action == bulkhead_model::Action::Allow)
        .count();
    (rules.count(), allows)
}

pub fn impact(provisioned: Option<&Policy>, draft: &Policy) -> Impact {
    let (rules_before, allow_rules_before) = provisioned.map(rule_counts).unwrap_or_default();
    let (rules_after, allow_rules_after) = rule_counts(draft);
    let allows_nothing = allow_rules_after == 0;
    let confirm_required = allows_nothing.then(|| {
        if allow_rules_before > 0 {
            format!(
                "the draft drops every allow rule ({allow_rules_before} in the provisioned version): enforced workloads would drop every connection but the failsafe ports"
            )
        } else {
            "the draft allows nothing: enforced workloads would drop every connection but the failsafe ports".to_string()
        }
    });
    Impact {
        rules_before,
        rules_after,
        allow_rules_before,
        allow_rules_after,
        allows_nothing,
        confirm_required,
    }
}
