//! Agents as users see them: list, approve, remove, and the offline watch.

use super::*;

/// The addresses a host reports that are not its workload's, and the workload's it
/// does not report: shown beside the agent and alerted, never written by themselves.
pub(crate) fn address_drift(
    recorded: &[IpAddr],
    host: &bulkhead_api::HostInfo,
) -> Option<(Vec<IpAddr>, Vec<IpAddr>)> {
    let reported = host.workload_addresses();
    let unrecorded: Vec<IpAddr> = reported
        .iter()
        .filter(|a| !recorded.contains(a))
        .copied()
        .collect();
    let unreported: Vec<IpAddr> = recorded
        .iter()
        .filter(|a| !reported.contains(a))
        .copied()
        .collect();
    (!unrecorded.is_empty() || !unreported.is_empty()).then_some((unrecorded, unreported))
}

/// An agent as users see it: health, policy sync, its host and what it reports.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AgentView {
    pub id: u64,
    pub workload: String,
    /// Why it waits for approval; absent once let in.
    pub pending: Option<String>,
    pub online: bool,
    pub enrolled_at_ms: i64,
    pub last_seen_ms: i64,
    pub offline_since_ms: Option<i64>,
    pub applied_revision: Option<String>,
    pub desired_revision: Option<String>,
    pub in_sync: bool,
    #[schema(value_type = Vec<String>)]
    pub workload_addresses: Vec<IpAddr>,
    /// What the host reports against what its workload has; shown, never applied.
    pub address_drift: Option<AddressDrift>,
    /// The host's inventory as it last reported it.
    pub host: Value,
    /// Its counters and last problem.
    pub status: Value,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AddressDrift {
    #[schema(value_type = Vec<String>)]
    pub reported_not_recorded: Vec<IpAddr>,
    #[schema(value_type = Vec<String>)]
    pub recorded_not_reported: Vec<IpAddr>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AgentList {
    pub items: Vec<AgentView>,
}

fn agent_view(s: &AppState, a: &AgentRecord, now: i64) -> AgentView {
    let desired = a
        .pending
        .is_none()
        .then(|| wire_policy(s, &a.workload).ok().map(|p| p.revision.clone()))
        .flatten();
    let host: Value = serde_json::from_str(&a.host_json).unwrap_or_default();
    let status: Value = a
        .status_json
        .as_deref()
        .and_then(|x| serde_json::from_str(x).ok())
        .unwrap_or_default();
    let online = a.pending.is_none()
        && a.offline_since_ms.is_none()
        && now - a.last_seen_ms <= s.agent_settings.offline_after_ms;
    let recorded = s
        .current()
        .inventory
        .by_name(&a.workload)
        .map(|w| w.addresses.clone())
        .unwrap_or_default();
    let address_drift = serde_json::from_str::<bulkhead_api::HostInfo>(&a.host_json)
        .ok()
        .and_then(|h| address_drift(&recorded, &h))
        .map(
            |(reported_not_recorded, recorded_not_reported)| AddressDrift {
                reported_not_recorded,
                recorded_not_reported,
            },
        );
    AgentView {
        id: a.id,
        workload: a.workload.clone(),
        pending: a.pending.clone(),
        online,
        enrolled_at_ms: a.enrolled_at_ms,
        last_seen_ms: a.last_seen_ms,
        offline_since_ms: a.offline_since_ms,
        in_sync: desired.is_some() && desired == a.applied_revision,
        applied_revision: a.applied_revision.clone(),
        desired_revision: desired,
        workload_addresses: recorded,
        address_drift,
        host,
        status: status["status"].clone(),
    }
}

/// Lets a pending agent in: the host becomes its workload as reported (an existing
/// workload keeps its labels and its mode is never loosened; its addresses become the
/// host's, which is what the admin is approving). Admins and secops only.
#[utoipa::path(
    post,
    path = "/api/v1/agents/{id}/approve",
    tag = "agents",
    summary = "Approve a pending agent (it becomes its workload as its host reports it)",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the agent is let in", body = crate::bodies::Approved))
)]
pub async fn approve_agent(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<crate::bodies::Approved>> {
    p.require(&[Role::Admin, Role::Secops], "approve agents")?;
    let audit = p.audit("agent.approve");
    let s2 = s.clone();
    let agent = blocking(move || {
        crate::control::write(&s2, |c| {
            let agent = c
                .agent(id)?
                .ok_or_else(|| ApiError::NotFound(format!("agent {id}")))?;
            if agent.pending.is_none() {
                return Err(ApiError::Conflict(format!(
                    "agent {id} is not waiting for approval"
                )));
            }
            let host: bulkhead_api::HostInfo = serde_json::from_str(&agent.host_json)
                .map_err(|e| ApiError::Internal(format!("agent {id}'s host: {e}")))?;
            let profile = agent
                .pairing_profile_id
                .map(|pid| c.pairing_profile(pid))
                .transpose()?
                .flatten();
            let (labels, mode) = profile.map_or((Labels::new(), EnforcementMode::Monitor), |p| {
                (p.labels, p.mode)
            });
            let existing: Option<Value> = c
                .workload(&agent.workload)?
                .and_then(|w| serde_json::from_str(&w.json).ok());
            let w = match &existing {
                Some(e) => super::enroll::adopted_json(e, mode, Some(&host.workload_addresses())),
                None => super::enroll::new_workload_json(&host, &labels, mode)?,
            };
            let changes = vec![Change::PutWorkload {
                name: agent.workload.clone(),
                json: serde_json::to_string(&w).map_err(|e| ApiError::Internal(e.to_string()))?,
            }];
            let changes = crate::inventory_api::checked_changes(&c.workloads()?, changes, true)?;
            if !c.approve_agent(id, &changes, &audit)? {
                return Err(ApiError::Conflict(format!(
                    "agent {id} is not waiting for approval"
                )));
            }
            Ok(agent)
        })
    })
    .await?;
    Ok(Json(crate::bodies::Approved {
        approved: id,
        workload: agent.workload,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "agents",
    summary = "List agents with their health and policy sync",
    responses((status = 200, description = "agents, pending ones too", body = AgentList))
)]
pub async fn list_agents(State(s): State<AppState>, p: Principal) -> ApiResult<Json<AgentList>> {
    let items = blocking(move || {
        let agents = lock(&s.control)?.agents()?;
        let now = now_ms();
        let inventory = s.current().inventory.clone();
        Ok(agents
            .iter()
            .filter(|a| {
                p.role != Role::AppOwner
                    || inventory
                        .by_name(&a.workload)
                        .is_some_and(|w| p.sees(&w.labels, &w.labels))
            })
            .map(|a| agent_view(&s, a, now))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(AgentList { items }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/agents/{id}",
    tag = "agents",
    summary = "Remove an agent (its credential stops working)",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the agent is removed", body = crate::bodies::DeletedId))
)]
pub async fn delete_agent(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<crate::bodies::DeletedId>> {
    p.require(&[Role::Admin, Role::Secops], "remove agents")?;
    let audit = p.audit("agent.delete");
    let done = blocking(move || Ok(lock(&s.control)?.delete_agent(id, &audit)?)).await?;
    if !done {
        return Err(ApiError::NotFound(format!("agent {id}")));
    }
    Ok(Json(crate::bodies::DeletedId { deleted: id }))
}

/// Beyond the offline time, how long after a server start an agent last seen before it
/// may take to come back (its heartbeat may have been backing off while the server was
/// down).
const RESTART_GRACE_MS: i64 = 30_000;

/// Whether an agent last seen at `last_seen` is offline at `now`. While this server was
/// down no heartbeat could arrive: an agent last seen before it started gets the offline
/// time plus a grace from the start to come back, so a restart does not alert every
/// agent at once.
fn silent_too_long(now: i64, last_seen: i64, started: i64, offline_after: i64) -> bool {
    if last_seen < started {
        now - started > offline_after + RESTART_GRACE_MS
    } else {
        now - last_seen > offline_after
    }
}

/// Marks agents silent for longer than the configured time offline, once each, with an
/// alert. Runs until the runtime stops.
pub async fn watch_offline(s: AppState) {
    let every = std::time::Duration::from_millis(
        (s.agent_settings.offline_after_ms / 4).clamp(250, 15_000) as u64,
    );
    loop {
        tokio::time::sleep(every).await;
        let s2 = s.clone();
        let result = blocking(move || {
            let mut c = lock(&s2.control)?;
            // With several servers on one database, only the leader watches, and marks
            // an agent offline only while it still leads.
            let lease = c.lead()?;
            s2.leading
                .store(lease.is_some(), std::sync::atomic::Ordering::Relaxed);
            let Some(lease) = lease else {
                return Ok(Vec::new());
            };
            let now = now_ms();
            let mut announced = Vec::new();
            for a in c.agents()? {
                if a.offline_since_ms.is_some()
                    || !silent_too_long(
                        now,
                        a.last_seen_ms,
                        s2.started_ms,
                        s2.agent_settings.offline_after_ms,
                    )
                {
                    continue;
                }
                if c.fenced(lease, |c| c.mark_agent_offline(a.id, a.last_seen_ms))? {
                    tracing::warn!("agent {} ({}) is offline", a.id, a.workload);
                    announced.extend(record(
                        &mut c,
                        AlertObservation {
                            key: format!("agent_offline|{}", a.workload),
                            kind: "agent_offline".into(),
                            severity: "warning".into(),
                            title: format!(
                                "agent of {} silent since {} s; its last policy stays enforced",
                                a.workload,
                                (now - a.last_seen_ms) / 1000
                            ),
                            details_json: json!({ "workload": a.workload, "agent": a.id, "last_seen_ms": a.last_seen_ms })
                                .to_string(),
                            count: 1,
                            first_seen_ms: now,
                            last_seen_ms: now,
                        },
                    )?);
                }
            }
            Ok(announced)
        })
        .await;
        match result {
            Ok(announced) => announce(&s, &announced),
            Err(e) => tracing::error!("offline watch: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_restart_gives_agents_time_to_come_back() {
        let (offline_after, started) = (60_000, 1_000_000);
        // Seen after the start: the ordinary rule.
        assert!(!silent_too_long(
            started + 70_000,
            started + 20_000,
            started,
            offline_after
        ));
        assert!(silent_too_long(
            started + 90_000,
            started + 20_000,
            started,
            offline_after
        ));
        // Seen before the start (long ago, while the server was down): not right after
        // the start, only once the offline time and the grace have passed.
        let before = started - 3_600_000;
        assert!(!silent_too_long(
            started + 1_000,
            before,
            started,
            offline_after
        ));
        assert!(!silent_too_long(
            started + offline_after + RESTART_GRACE_MS,
            before,
            started,
            offline_after
        ));
        assert!(silent_too_long(
            started + offline_after + RESTART_GRACE_MS + 1,
            before,
            started,
            offline_after
        ));
    }
}
