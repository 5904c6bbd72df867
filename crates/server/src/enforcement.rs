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
    /// When the agent applied the revision it reports, and last compared the kernel
    /// with it (tamper check), as it said at its last heartbeat.
    pub applied_at_ms: Option<i64>,
    pub last_check_ms: Option<i64>,
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
            applied_at_ms: None,
            last_check_ms: None,
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
    let status: serde_json::Value = agent
        .and_then(|a| a.status_json.as_deref())
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let reported = |field: &str| status["status"][field].as_i64();
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
        applied_at_ms: reported("applied_at_ms"),
        last_check_ms: reported("checked_at_ms"),
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

/// Days of traffic an impact preview looks at, unless asked otherwise.
const DEFAULT_IMPACT_DAYS: u32 = 7;
/// Groups an impact lists at most (the most connections first); the rest are counted.
const MAX_IMPACT_GROUPS: usize = 200;

/// Set the mode of one workload or of every managed workload matching labels: with
/// `apply: false` (the default) only the preview.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeRequest {
    /// One workload by name…
    pub workload: Option<String>,
    /// …or every managed workload carrying these labels (`app=shop,env=prod`).
    pub labels: Option<String>,
    pub mode: EnforcementMode,
    /// Write the change (admin, secops); without it, only the preview.
    #[serde(default)]
    pub apply: bool,
    /// How many days of traffic the preview replays (default 7, at most 90).
    pub days: Option<u32>,
}

/// Connections of one kind whose verdict the change turns into another.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ImpactGroup {
    /// The consumer's and provider's `app` label, else its workload, else its address.
    pub consumer: String,
    pub provider: String,
    /// `tcp/5432`.
    pub service: String,
    pub from: bulkhead_model::VerdictKind,
    pub to: bulkhead_model::VerdictKind,
    pub conversations: u64,
    pub connections: u64,
}

/// What the change would do to the traffic of the window: the stored conversations
/// replayed against the provisioned policy, before and after.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ModeImpact {
    pub from_ms: i64,
    pub to_ms: i64,
    /// Conversations of the window that touch the selected workloads.
    pub conversations: u64,
    pub changed_conversations: u64,
    pub changed_connections: u64,
    /// Of those that change, the ones that start being blocked.
    pub newly_blocked_connections: u64,
    pub groups: Vec<ImpactGroup>,
    pub groups_left_out: usize,
    /// Set when the window held more conversations than one preview replays.
    pub note: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ModeChange {
    /// The managed workloads selected.
    pub workloads: Vec<String>,
    pub mode: EnforcementMode,
    /// Those whose mode this changes (the others already have it).
    pub changing: Vec<String>,
    /// Whether the change was written (it then reaches the agents at their next
    /// heartbeat: `GET …/enforcement` says when it is applied).
    pub applied: bool,
    pub impact: ModeImpact,
    pub summary: String,
}

fn selection(s: &AppState, p: &Principal, r: &ModeRequest) -> ApiResult<Vec<Workload>> {
    let inventory = s.current().inventory.clone();
    let chosen: Vec<Workload> = match (&r.workload, &r.labels) {
        (Some(name), None) => {
            let w = visible_workload(s, p, name)?;
            if !w.managed {
                return Err(ApiError::invalid(
                    "workload",
                    format!("{name} is unmanaged: no agent runs on it to enforce a mode"),
                ));
            }
            vec![w]
        }
        (None, Some(labels)) => {
            let selector = bulkhead_model::Labels::parse_list(labels)
                .map_err(|e| ApiError::invalid("labels", e.to_string()))?;
            if selector.is_empty() {
                return Err(ApiError::invalid("labels", "no labels"));
            }
            inventory
                .workloads()
                .iter()
                .filter(|w| w.managed && w.labels.includes(&selector))
                .filter(|w| p.sees(&w.labels, &w.labels))
                .cloned()
                .collect()
        }
        _ => {
            return Err(ApiError::invalid(
                "workload",
                "give either workload or labels, not both",
            ));
        }
    };
    if chosen.is_empty() {
        return Err(ApiError::invalid(
            "labels",
            "no managed workload carries these labels",
        ));
    }
    Ok(chosen)
}

/// The end as the impact names it: its app, else its workload, else its address.
fn party(inv: &Inventory, a: std::net::IpAddr) -> String {
    match inv.by_address(a) {
        Some(w) => w
            .labels
            .get("app")
            .map(|app| format!("app={app}"))
            .unwrap_or_else(|| w.name.clone()),
        None => a.to_string(),
    }
}

fn impact(
    s: &AppState,
    p: &Principal,
    chosen: &[Workload],
    mode: EnforcementMode,
    days: u32,
) -> ApiResult<ModeImpact> {
    let enricher = s.current();
    let inv = &enricher.inventory;
    let names: BTreeSet<&str> = chosen.iter().map(|w| w.name.as_str()).collect();
    let after_inv = Inventory::new(
        inv.workloads()
            .iter()
            .map(|w| {
                let mut w = w.clone();
                if names.contains(w.name.as_str()) {
                    w.mode = mode;
                }
                w
            })
            .collect(),
    )
    .map_err(|e| ApiError::Internal(format!("the inventory with the new modes: {e}")))?;
    let policy = crate::state::policy_or_empty(
        &s.hosts
            .read()
            .map_err(|_| ApiError::Internal("hosts lock".into()))?
            .policy,
    )?;
    let policy = policy.as_ref();
    let before = bulkhead_policy::CompiledPolicy::compile_with(inv, policy, &enricher.hosts);
    let after = bulkhead_policy::CompiledPolicy::compile_with(&after_inv, policy, &enricher.hosts);
    let addresses: BTreeSet<std::net::IpAddr> = chosen
        .iter()
        .flat_map(|w| w.addresses.iter().copied())
        .collect();
    let to = now_ms();
    let from = to - i64::from(days) * 86_400_000;
    let (rows, more) = crate::recommend_api::traffic(s, p, from, to)?;
    type GroupKey = (
        String,
        String,
        String,
        bulkhead_model::VerdictKind,
        bulkhead_model::VerdictKind,
    );
    let mut groups: std::collections::BTreeMap<GroupKey, (u64, u64)> = Default::default();
    let mut out = ModeImpact {
        from_ms: from,
        to_ms: to,
        conversations: 0,
        changed_conversations: 0,
        changed_connections: 0,
        newly_blocked_connections: 0,
        groups: Vec::new(),
        groups_left_out: 0,
        note: more.then(crate::recommend_api::left_out_note),
    };
    for t in rows
        .iter()
        .filter(|t| addresses.contains(&t.src) || addresses.contains(&t.dst))
    {
        out.conversations += 1;
        let key = bulkhead_policy::ConnKey {
            src: t.src,
            dst: t.dst,
            proto: t.proto,
            port: t.port,
        };
        let was = before.evaluate(&key, t.process.as_deref()).verdict;
        let will = after.evaluate(&key, t.process.as_deref()).verdict;
        if was == will {
            continue;
        }
        out.changed_conversations += 1;
        out.changed_connections += t.connections;
        if will == bulkhead_model::VerdictKind::Blocked {
            out.newly_blocked_connections += t.connections;
        }
        let service = match bulkhead_model::protocol_name(t.proto) {
            Some(name) => format!("{name}/{}", t.port),
            None => format!("proto/{}", t.proto),
        };
        let g = groups
            .entry((party(inv, t.src), party(inv, t.dst), service, was, will))
            .or_default();
        g.0 += 1;
        g.1 += t.connections;
    }
    let mut list: Vec<ImpactGroup> = groups
        .into_iter()
        .map(
            |((consumer, provider, service, was, will), (conversations, connections))| {
                ImpactGroup {
                    consumer,
                    provider,
                    service,
                    from: was,
                    to: will,
                    conversations,
                    connections,
                }
            },
        )
        .collect();
    list.sort_by_key(|g| std::cmp::Reverse(g.connections));
    out.groups_left_out = list.len().saturating_sub(MAX_IMPACT_GROUPS);
    list.truncate(MAX_IMPACT_GROUPS);
    out.groups = list;
    Ok(out)
}

#[utoipa::path(
    post,
    path = "/api/v1/enforcement/mode",
    tag = "response",
    summary = "Set the mode of a workload or of every workload matching labels, with the impact on the last days' traffic first",
    request_body = ModeRequest,
    responses((status = 200, description = "the selection, the impact, and whether it was written", body = ModeChange))
)]
pub async fn set_mode(
    State(s): State<AppState>,
    p: Principal,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<Json<ModeChange>> {
    let r: ModeRequest = crate::error::parse_json(body)?;
    let days = r.days.unwrap_or(DEFAULT_IMPACT_DAYS);
    if !(1..=90).contains(&days) {
        return Err(ApiError::invalid("days", "between 1 and 90"));
    }
    if r.apply {
        p.require(
            &[crate::auth::Role::Admin, crate::auth::Role::Secops],
            "set enforcement modes",
        )?;
    }
    let change = blocking(move || {
        let chosen = selection(&s, &p, &r)?;
        let impact = impact(&s, &p, &chosen, r.mode, days)?;
        let changing: Vec<String> = chosen
            .iter()
            .filter(|w| w.mode != r.mode)
            .map(|w| w.name.clone())
            .collect();
        if r.apply && !changing.is_empty() {
            crate::rollout::set_modes(&s, &p, &changing, r.mode, &p.audit("workload.mode"))?;
        }
        let verb = if r.apply { "switched" } else { "would switch" };
        let summary = format!(
            "{verb} {} of {} selected workload(s) to {} mode; over the last {days} day(s), {} connection(s) in {} conversation(s) change verdict, {} of them to blocked",
            changing.len(),
            chosen.len(),
            r.mode,
            impact.changed_connections,
            impact.changed_conversations,
            impact.newly_blocked_connections,
        );
        Ok(ModeChange {
            workloads: chosen.iter().map(|w| w.name.clone()).collect(),
            mode: r.mode,
            changing,
            applied: r.apply,
            impact,
            summary,
        })
    })
    .await?;
    Ok(Json(change))
}
