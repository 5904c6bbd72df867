//! What a workload's host really enforces: the revision the server wants it to run,
//! the one its agent reports in the kernel, and what that means for its mode and its
//! quarantine. Nothing here is taken on trust from the request that asked for it: a
//! quarantine is "enforced" only once the agent has reported the quarantined table.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use bulkhead_model::{EnforcementMode, Inventory, Workload};
use bulkhead_store::control::AgentRecord;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, lock, now_ms};

/// Where the kernel stands against what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// The agent reported the desired revision in its kernel.
    Applied,
    /// An agent is enrolled and has not reported the desired revision yet (it may be
    /// offline, or reject the policy: see its status).
    Pending,
    /// No agent is enrolled (or approved) for this workload: nothing enforces anything.
    NoAgent,
    /// Unmanaged workloads have no agent by definition.
    Unmanaged,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AgentBrief {
    pub id: u64,
    pub online: bool,
    pub last_seen_ms: i64,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct QuarantineView {
    pub reason: String,
    /// `applied` only once the agent reported the quarantined table.
    pub state: Applied,
}

/// One workload's enforcement, desired against applied.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EnforcementView {
    pub workload: String,
    pub managed: bool,
    /// The mode asked for.
    pub mode: EnforcementMode,
    /// Whether the host runs what is asked (the mode, the rules, the quarantine).
    pub state: Applied,
    pub agent: Option<AgentBrief>,
    pub desired_revision: Option<String>,
    pub applied_revision: Option<String>,
    pub quarantine: Option<QuarantineView>,
    /// The same in one sentence, for people.
    pub summary: String,
}

/// The workload's agent that counts: approved, and the most recently heard of.
fn agent_of<'a>(agents: &'a [AgentRecord], workload: &str) -> Option<&'a AgentRecord> {
    agents
        .iter()
        .filter(|a| a.workload == workload && a.pending.is_none())
        .max_by_key(|a| a.last_seen_ms)
}

/// The quarantined workloads whose agent runs the quarantined revision: the verdicts
/// call their connections blocked, the others' only potentially blocked. Reads the
/// agents only when something is quarantined.
pub(crate) fn quarantines_applied(s: &AppState, inv: &Inventory) -> ApiResult<BTreeSet<String>> {
    let quarantined: Vec<&Workload> = inv.workloads().iter().filter(|w| w.quarantined()).collect();
    if quarantined.is_empty() {
        return Ok(BTreeSet::new());
    }
    let agents = lock(&s.control)?.agents()?;
    let mut applied = BTreeSet::new();
    for w in quarantined {
        let Some(agent) = agent_of(&agents, &w.name) else {
            continue;
        };
        let desired = crate::agent_api::wire_policy(s, &w.name)?;
        if desired.quarantined && agent.applied_revision.as_deref() == Some(&desired.revision) {
            applied.insert(w.name.clone());
        }
    }
    Ok(applied)
}

pub(crate) fn view(s: &AppState, w: &Workload) -> ApiResult<EnforcementView> {
    let quarantine_reason = w
        .quarantined()
        .then(|| {
            w.attributes
                .get(bulkhead_model::QUARANTINE_ATTRIBUTE)
                .cloned()
        })
        .flatten();
    if !w.managed {
        return Ok(EnforcementView {
            workload: w.name.clone(),
            managed: false,
            mode: w.mode,
            state: Applied::Unmanaged,
            agent: None,
            desired_revision: None,
            applied_revision: None,
            quarantine: None,
            summary: format!(
                "{} is unmanaged: nothing runs on it to enforce policy; managed peers enforce their side",
                w.name
            ),
        });
    }
    let agents = lock(&s.control)?.agents()?;
    let agent = agent_of(&agents, &w.name);
    let desired = crate::agent_api::wire_policy(s, &w.name)?;
    let state = match agent {
        None => Applied::NoAgent,
        Some(a) if a.applied_revision.as_deref() == Some(&desired.revision) => Applied::Applied,
        Some(_) => Applied::Pending,
    };
    let now = now_ms();
    let brief = agent.map(|a| AgentBrief {
        id: a.id,
        online: a.offline_since_ms.is_none()
            && now - a.last_seen_ms <= s.agent_settings.offline_after_ms,
        last_seen_ms: a.last_seen_ms,
    });
    let subject = match &quarantine_reason {
        Some(_) => "the quarantine".to_string(),
        None => format!("{} mode", w.mode),
    };
    let summary = match (state, &brief) {
        (Applied::Applied, _) => format!("{}: its agent runs {subject}", w.name),
        (Applied::NoAgent, _) => format!(
            "{}: {subject} is not enforced: no agent is enrolled for it",
            w.name
        ),
        (_, Some(b)) if !b.online => format!(
            "{}: {subject} is not applied yet: its agent is offline (its last policy stays in its kernel)",
            w.name
        ),
        _ => format!(
            "{}: {subject} is not applied yet: its agent has not reported the new revision",
            w.name
        ),
    };
    Ok(EnforcementView {
        workload: w.name.clone(),
        managed: true,
        mode: w.mode,
        state,
        agent: brief,
        desired_revision: Some(desired.revision.clone()),
        applied_revision: agent.and_then(|a| a.applied_revision.clone()),
        quarantine: quarantine_reason.map(|reason| QuarantineView { reason, state }),
        summary,
    })
}

/// A workload by name, if the caller may see it (an app owner only within their scope;
/// outside it, the workload does not exist for them).
pub(crate) fn visible_workload(s: &AppState, p: &Principal, name: &str) -> ApiResult<Workload> {
    s.current()
        .inventory
        .by_name(name)
        .filter(|w| p.sees(&w.labels, &w.labels))
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("workload {name}")))
}

#[utoipa::path(
    get,
    path = "/api/v1/workloads/{name}/enforcement",
    tag = "response",
    summary = "What the workload's host enforces: desired against applied revision, mode, quarantine",
    params(("name" = String, Path)),
    responses((status = 200, description = "desired against applied", body = EnforcementView))
)]
pub async fn enforcement(
    State(s): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<EnforcementView>> {
    let view = blocking(move || {
        let w = visible_workload(&s, &p, &name)?;
        view(&s, &w)
    })
    .await?;
    Ok(Json(view))
}
