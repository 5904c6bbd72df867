//! What an enrolled agent calls: heartbeat, its policy, events and flow batches.

use super::*;

/// An enrolled agent, established from its credential.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub agent: AgentRecord,
    pub source: String,
}

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with("bh_agent_"))
            .ok_or(ApiError::Unauthenticated)?;
        let hash = token_hash(token);
        let source = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        let control = state.control.clone();
        let agent = tokio::task::spawn_blocking(move || -> ApiResult<_> {
            Ok(lock(&control)?.agent_by_credential(&hash)?)
        })
        .await??
        .ok_or(ApiError::Unauthenticated)?;
        if let Some(slot) = parts.extensions.get::<crate::guard::CallerSlot>() {
            slot.set(format!("agent {} ({})", agent.id, agent.workload));
        }
        if let Some(why) = &agent.pending {
            return Err(ApiError::Forbidden(format!(
                "agent {} waits for an admin's approval: {why}",
                agent.id
            )));
        }
        Ok(AgentCaller { agent, source })
    }
}

/// The policy `workload` should enforce now: the provisioned version resolved for it
/// (an estate with no version yet gets the empty policy: default deny, so monitor mode
/// reports everything and enforced mode keeps only the failsafe ports).
pub fn wire_policy(s: &AppState, workload: &str) -> ApiResult<Arc<WirePolicy>> {
    let hosts = s
        .hosts
        .read()
        .map_err(|_| ApiError::Internal("hosts lock".into()))?;
    if let Some(p) = hosts.cache.get(workload) {
        return Ok(p.clone());
    }
    let policy = crate::state::policy_or_empty(&hosts.policy)?;
    let hp = bulkhead_policy::host::host_policy(&policy, &hosts.inventory, workload)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let quarantined = hosts
        .inventory
        .by_name(workload)
        .is_some_and(crate::quarantine::is_quarantined);
    let settings = &s.agent_settings;
    let wire = Arc::new(
        WirePolicy::new(
            &hp,
            &settings.failsafe_ports,
            settings.log_group,
            quarantined,
        )
        .with_failsafe_outbound(&settings.failsafe_outbound),
    );
    let computed_from = hosts.generation;
    drop(hosts);
    if let Ok(mut h) = s.hosts.write() {
        // A recompile in between (a quarantine, a new version) made this one stale: the
        // caller may use it this once, the next caller computes the current one.
        if h.generation == computed_from {
            h.cache.insert(workload.to_string(), wire.clone());
        }
    }
    Ok(wire)
}

#[utoipa::path(
    post,
    path = "/api/v1/agent/heartbeat",
    tag = "agent",
    summary = "Agent heartbeat (agent credential)",
    request_body = bulkhead_api::Heartbeat,
    responses((status = 200, description = "the revision to run and the last flow batch stored", body = bulkhead_api::HeartbeatResponse))
)]
pub async fn heartbeat(
    State(s): State<AppState>,
    a: AgentCaller,
    Json(body): Json<Value>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let hb: Heartbeat = parse_body(body)?;
    let host_json = match &hb.host {
        Some(h) => Some(serde_json::to_string(h).map_err(|e| ApiError::Internal(e.to_string()))?),
        None => None,
    };
    let id = a.agent.id;
    let (s2, applied) = (s.clone(), hb.applied_revision.clone());
    let was_offline = a.agent.offline_since_ms.is_some();
    let hb_status = hb.status;
    let acked = blocking(move || {
        // The acknowledged batch is read and written back under the control lock, the
        // one the flow handler writes it under: a heartbeat never puts back an older
        // number, and does not wait for a batch being stored.
        let mut c = lock(&s2.control)?;
        let acked = c.agent(id)?.as_ref().map_or(0, flow_acked);
        let status = json!({ "status": hb_status, "flow_batch_acked": acked }).to_string();
        c.agent_heartbeat(
            id,
            now_ms(),
            host_json.as_deref(),
            applied.as_deref(),
            Some(&status),
        )?;
        Ok(acked)
    })
    .await?;
    if was_offline {
        tracing::info!("agent {id} ({}) is back online", a.agent.workload);
    }
    // A quarantined host's agent reporting another revision: its quarantine may now be
    // in the kernel (or no longer), which turns its connections' verdicts from
    // potentially blocked to blocked (or back).
    let revision_moved =
        hb.applied_revision.is_some() && hb.applied_revision != a.agent.applied_revision;
    let quarantined = s
        .current()
        .inventory
        .by_name(&a.agent.workload)
        .is_some_and(bulkhead_model::Workload::quarantined);
    if revision_moved && quarantined {
        let s3 = s.clone();
        blocking(move || s3.recompile()).await?;
    }
    if let Some(host) = &hb.host {
        let recorded = s
            .current()
            .inventory
            .by_name(&a.agent.workload)
            .map(|w| w.addresses.clone())
            .unwrap_or_default();
        if let Some((unrecorded, unreported)) = super::agents::address_drift(&recorded, host) {
            let (s4, agent, source) = (s.clone(), a.agent.clone(), a.source.clone());
            let announced = blocking(move || {
                let mut c = lock(&s4.control)?;
                let now = now_ms();
                record(
                    &mut c,
                    AlertObservation {
                        key: format!(
                            "address_drift|{}|{unrecorded:?}|{unreported:?}",
                            agent.workload
                        ),
                        kind: "address_drift".into(),
                        severity: "warning".into(),
                        title: format!(
                            "the agent of {} reports addresses {unrecorded:?} the inventory does not give it{}; policy keeps using the recorded ones",
                            agent.workload,
                            if unreported.is_empty() {
                                String::new()
                            } else {
                                format!(" (and not {unreported:?})")
                            }
                        ),
                        details_json: json!({
                            "workload": agent.workload, "agent": agent.id,
                            "reported_not_recorded": unrecorded,
                            "recorded_not_reported": unreported,
                            "source": source,
                        })
                        .to_string(),
                        count: 1,
                        first_seen_ms: now,
                        last_seen_ms: now,
                    },
                )
            })
            .await?;
            announce(&s, announced.as_slice());
        }
    }
    let s3 = s.clone();
    let workload = a.agent.workload.clone();
    let policy = blocking(move || wire_policy(&s3, &workload)).await?;
    Ok(Json(HeartbeatResponse {
        revision: policy.revision.clone(),
        flow_batch_acked: acked,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/agent/policy",
    tag = "agent",
    summary = "The agent's compiled policy (agent credential)",
    responses((status = 200, description = "the workload's policy", body = bulkhead_api::WirePolicy))
)]
pub async fn policy(State(s): State<AppState>, a: AgentCaller) -> ApiResult<Json<WirePolicy>> {
    let workload = a.agent.workload.clone();
    let p = blocking(move || wire_policy(&s, &workload)).await?;
    Ok(Json((*p).clone()))
}

/// What an agent may report: traffic of its own workload (one end is one of its
/// addresses, the local end for flows) within a sane time window. A compromised host
/// must not be able to invent traffic between others, nor alerts dated in the future
/// that would hold a rollout back for ever.
struct OwnTraffic {
    addresses: Vec<IpAddr>,
    from_ms: i64,
    to_ms: i64,
}

impl OwnTraffic {
    /// How far back a report may go (a long server outage), and ahead (clock skew).
    const PAST_MS: i64 = 7 * 86_400_000;
    const FUTURE_MS: i64 = 5 * 60_000;

    fn of(s: &AppState, agent: &AgentRecord) -> OwnTraffic {
        let now = now_ms();
        OwnTraffic {
            addresses: s
                .current()
                .inventory
                .by_name(&agent.workload)
                .map(|w| w.addresses.clone())
                .unwrap_or_default(),
            from_ms: now - Self::PAST_MS,
            to_ms: now + Self::FUTURE_MS,
        }
    }

    fn in_window(&self, ms: i64) -> bool {
        (self.from_ms..=self.to_ms).contains(&ms)
    }

    fn logged(&self, p: &LoggedPacket) -> bool {
        self.in_window(p.at_ms)
            && (self.addresses.contains(&p.src) || self.addresses.contains(&p.dst))
    }

    fn flow(&self, f: &HostFlow) -> bool {
        let local = match f.direction {
            bulkhead_api::HostDirection::Inbound => f.dst,
            bulkhead_api::HostDirection::Outbound => f.src,
        };
        self.in_window(f.start_ms)
            && self.in_window(f.end_ms)
            && f.start_ms <= f.end_ms
            && self.addresses.contains(&local)
    }
}

/// A logged packet as a flow summary of one connection attempt, enriched like collector
/// flows, with the verdict the kernel applied (not a recomputed one): dropped is
/// blocked, logged-and-accepted is potentially blocked.
fn logged_summary(
    s: &AppState,
    agent: &AgentRecord,
    p: &LoggedPacket,
) -> Option<bulkhead_model::FlowSummary> {
    let meaning = p.meaning()?;
    let e = s.current();
    let key = SummaryKey {
        bucket: Bucket::Minute,
        bucket_start_ms: p.at_ms - p.at_ms.rem_euclid(60_000),
        src: p.src,
        dst: p.dst,
        proto: p.protocol,
        port: p.dst_port,
        process: None,
    };
    let mut summary = e.summary(key, Some(format!("agent {}", agent.workload)));
    summary.packets = 1;
    summary.connections = 1;
    summary.first_seen_ms = p.at_ms;
    summary.last_seen_ms = p.at_ms;
    summary.provisioned = Some(SummaryVerdict {
        verdict: if meaning.dropped {
            VerdictKind::Blocked
        } else {
            VerdictKind::PotentiallyBlocked
        },
        rules: vec![match (meaning.quarantine, meaning.rule) {
            (true, _) => "quarantine".into(),
            (false, Some(rule)) => rule,
            (false, None) => "default".into(),
        }],
    });
    Some(summary)
}

#[utoipa::path(
    post,
    path = "/api/v1/agent/events",
    tag = "agent",
    summary = "Agent events: logged packets, tamper, rejected policy (agent credential)",
    request_body = bulkhead_api::AgentEvents,
    responses((status = 200, description = "events taken", body = crate::bodies::Accepted))
)]
pub async fn events(
    State(s): State<AppState>,
    a: AgentCaller,
    Json(body): Json<Value>,
) -> ApiResult<Json<crate::bodies::Accepted>> {
    let batch: AgentEvents = parse_body(body)?;
    let count = batch.events.len();
    let s2 = s.clone();
    let announced = blocking(move || {
        let agent = &a.agent;
        let mut summaries = Vec::new();
        let mut announced = Vec::new();
        let mut c = lock(&s2.control)?;
        let own = OwnTraffic::of(&s2, agent);
        // A tamper or a rejected policy is alerted whatever the host's clock says, but
        // dated by the server when the host's date is outside the window: a date in
        // the future would keep the alert on top, one long past would hide it.
        let dated = |at_ms: i64| if own.in_window(at_ms) { at_ms } else { now_ms() };
        for ev in batch.events {
            match ev {
                AgentEvent::Logged { packets } => {
                    summaries.extend(
                        packets
                            .iter()
                            .filter(|p| own.logged(p))
                            .filter_map(|p| logged_summary(&s2, agent, p)),
                    );
                }
                AgentEvent::Tamper { at_ms, difference } => {
                    let at_ms = dated(at_ms);
                    tracing::warn!("tamper on {}: {difference}", agent.workload);
                    // Each tamper is its own event, kept with its difference: in the
                    // audit log (append-only, so the history stays) and as an alert of
                    // its own rather than a counter on the first one.
                    c.append_audit(
                        &AuditContext {
                            actor: format!("agent:{}", agent.id),
                            source: a.source.clone(),
                            at_ms,
                            action: "agent.tamper".into(),
                        },
                        &format!("workload/{}", agent.workload),
                        None,
                        Some(&json!({ "difference": difference }).to_string()),
                    )?;
                    announced.extend(record(
                        &mut c,
                        AlertObservation {
                            key: format!("tamper|{}|{at_ms}", agent.workload),
                            kind: "tamper".into(),
                            severity: "critical".into(),
                            title: format!(
                                "tamper: the firewall table of {} was changed outside Bulkhead and restored",
                                agent.workload
                            ),
                            details_json: json!({
                                "workload": agent.workload, "agent": agent.id,
                                "difference": difference, "source": a.source,
                            })
                            .to_string(),
                            count: 1,
                            first_seen_ms: at_ms,
                            last_seen_ms: at_ms,
                        },
                    )?);
                }
                AgentEvent::PolicyRejected {
                    at_ms,
                    revision,
                    error,
                } => {
                    let at_ms = dated(at_ms);
                    announced.extend(record(
                        &mut c,
                        AlertObservation {
                            key: format!("policy_rejected|{}|{revision}", agent.workload),
                            kind: "policy_rejected".into(),
                            severity: "critical".into(),
                            title: format!(
                                "{} could not apply policy {revision}; it keeps enforcing the previous one",
                                agent.workload
                            ),
                            details_json: json!({
                                "workload": agent.workload, "agent": agent.id,
                                "revision": revision, "error": error,
                            })
                            .to_string(),
                            count: 1,
                            first_seen_ms: at_ms,
                            last_seen_ms: at_ms,
                        },
                    )?);
                }
            }
        }
        // Every logged connection is alerted now, with the kernel's own verdict. Only
        // the dropped ones go to the flow store: conntrack never reports a connection
        // the firewall dropped, while one it let through (monitor mode) arrives with
        // its counters and process in a flow batch when it ends, and would otherwise be
        // counted twice.
        announced.extend(crate::alerts::record_from_summaries(&mut c, &summaries)?);
        drop(c);
        summaries.retain(|s| {
            s.provisioned
                .as_ref()
                .is_some_and(|v| v.verdict == VerdictKind::Blocked)
        });
        if !summaries.is_empty() {
            s2.flows.upsert(&summaries)?;
        }
        Ok(announced)
    })
    .await?;
    announce(&s, &announced);
    Ok(Json(crate::bodies::Accepted { accepted: count }))
}

fn observation(reporter: &Arc<str>, f: &HostFlow) -> bulkhead_flow::Observation {
    bulkhead_flow::Observation {
        reporter: reporter.clone(),
        src: f.src,
        dst: f.dst,
        src_port: f.src_port,
        dst_port: f.dst_port,
        proto: f.protocol,
        packets: f.packets,
        bytes: f.bytes,
        start_ms: Some(f.start_ms),
        end_ms: Some(f.end_ms),
        // The provider's process: known here only when the provider is this host.
        process: match f.direction {
            bulkhead_api::HostDirection::Inbound => f.process.as_ref().map(|p| p.name.clone()),
            bulkhead_api::HostDirection::Outbound => None,
        },
        reverse_packets: f.reverse_packets,
        reverse_bytes: f.reverse_bytes,
        icmp_type: None,
        connections: 1,
    }
}

/// How long the server remembers an agent's flow stream after its last batch: past it, a
/// batch of the stream re-sent would be stored again, but every flow in it is by then
/// older than a report may be ([`OwnTraffic::PAST_MS`], plus the clock skew allowed), so
/// nothing of it would be stored anyway. A day more, for margin.
pub const FLOW_STREAM_MEMORY_MS: i64 = OwnTraffic::PAST_MS + OwnTraffic::FUTURE_MS + 86_400_000;

/// A stream name as `FlowBatch::stream` allows it.
fn check_stream(batch: &FlowBatch) -> ApiResult<()> {
    if let Some(stream) = &batch.stream
        && (stream.is_empty()
            || stream.len() > 64
            || !stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(ApiError::invalid(
            "stream",
            "a stream is 1 to 64 characters of [0-9A-Za-z_-]",
        ));
    }
    if batch.stream.is_some() && !(1..=i64::MAX as u64).contains(&batch.batch) {
        return Err(ApiError::invalid(
            "batch",
            "a batch number is between 1 and 2^63 - 1",
        ));
    }
    Ok(())
}

/// The summaries a batch of an agent's flows makes, enriched like collector flows: only
/// traffic of its own workload, and for a connection between two hosts with agents only
/// the provider's report.
fn batch_summaries(
    s: &AppState,
    agent: &AgentRecord,
    flows: &[HostFlow],
) -> ApiResult<Vec<bulkhead_model::FlowSummary>> {
    let reporter: Arc<str> = format!("agent {}", agent.workload).into();
    let enricher = s.current();
    // A connection between two hosts with agents is seen by both. The provider's
    // report (inbound) is the one kept: it knows the serving process.
    let agent_hosts: std::collections::HashSet<String> = lock(&s.control)?
        .agents()?
        .into_iter()
        .map(|a| a.workload)
        .collect();
    let reported_by_peer = |f: &HostFlow| {
        f.direction == bulkhead_api::HostDirection::Outbound
            && enricher
                .inventory
                .by_address(f.dst)
                .is_some_and(|w| agent_hosts.contains(&w.name))
    };
    let mut aggregator = bulkhead_enrich::Aggregator::new(enricher.clone());
    let now = now_ms();
    let own = OwnTraffic::of(s, agent);
    for f in flows.iter().filter(|f| own.flow(f) && !reported_by_peer(f)) {
        aggregator.add(&observation(&reporter, f), now);
    }
    Ok(aggregator.flush_all())
}

#[utoipa::path(
    post,
    path = "/api/v1/agent/flows",
    tag = "agent",
    summary = "A numbered batch of the agent's flows, stored once (agent credential)",
    description = "A batch of a stream (`stream` given) is stored once: one numbered at or \
        below the highest the server stored for that stream of this agent is answered \
        `repeated` and not stored again. The highest number is kept in the flow store, in \
        the flows' own transaction on SQLite (exactly once across a server crash; on \
        ClickHouse a crash between the flows and the number can store a re-sent batch \
        twice). A batch without `stream` (agents before the spool) is numbered per agent, \
        its highest number kept in the control store after the flows are written. A \
        malformed stream name or number is refused with 400.",
    request_body = bulkhead_api::FlowBatch,
    responses((status = 200, description = "stored now or before; the highest batch of the stream stored", body = bulkhead_api::FlowBatchAck))
)]
pub async fn flows(
    State(s): State<AppState>,
    a: AgentCaller,
    Json(body): Json<Value>,
) -> ApiResult<Json<FlowBatchAck>> {
    let batch: FlowBatch = parse_body(body)?;
    check_stream(&batch)?;
    let s2 = s.clone();
    let (acked, repeated, announced) = blocking(move || {
        // One batch at a time per server: the check, the store and the record of the
        // number happen under this lock, so a retry that overtakes a slow first attempt
        // waits for it and is then seen as a repeat.
        let _batches = lock(&s2.flow_batches)?;
        match &batch.stream {
            Some(stream) => {
                let summaries = batch_summaries(&s2, &a.agent, &batch.flows)?;
                let source = format!("agent {}", a.agent.id);
                let mark = bulkhead_store::BatchMark {
                    source: &source,
                    stream,
                    seq: batch.batch,
                };
                // No alerts from these: every connection the agent's table does not
                // allow was logged by the kernel when it opened, and alerted from that
                // event already.
                match s2.flows.upsert_batch(mark, now_ms(), &summaries)? {
                    bulkhead_store::BatchWrite::Stored => {
                        // What the kernel let through that it should have dropped is
                        // alerted, from this independent evidence.
                        let own = OwnTraffic::of(&s2, &a.agent);
                        let mine: Vec<&HostFlow> =
                            batch.flows.iter().filter(|f| own.flow(f)).collect();
                        let agents = lock(&s2.control)?.agents()?;
                        let found = crate::breach::breaches(&s2, &agents, &a.agent, &mine);
                        let mut announced = Vec::new();
                        if !found.is_empty() {
                            let mut c = lock(&s2.control)?;
                            for obs in found {
                                announced.extend(record(&mut c, obs)?);
                            }
                        }
                        Ok((batch.batch, false, announced))
                    }
                    bulkhead_store::BatchWrite::Repeated { highest } => {
                        tracing::info!(
                            "agent {} ({}) re-sent batch {} of stream {stream}, stored before (up to {highest}); not stored again",
                            a.agent.id,
                            a.agent.workload,
                            batch.batch
                        );
                        Ok((highest, true, Vec::new()))
                    }
                }
            }
            None => legacy_batch(&s2, &a.agent, &batch).map(|(a, r)| (a, r, Vec::new())),
        }
    })
    .await?;
    announce(&s, &announced);
    Ok(Json(FlowBatchAck { acked, repeated }))
}

/// A batch without a stream, from an agent that predates the spool: numbered per agent,
/// the highest number kept beside the agent in the control store. A batch at or below it
/// is a retry whose answer was lost. The number is stored after the flows, so a crash in
/// between repeats the batch rather than losing it (at least once).
fn legacy_batch(s: &AppState, agent: &AgentRecord, batch: &FlowBatch) -> ApiResult<(u64, bool)> {
    let acked = lock(&s.control)?
        .agent(agent.id)?
        .as_ref()
        .map_or(0, flow_acked);
    if batch.batch <= acked {
        return Ok((acked, true));
    }
    let summaries = batch_summaries(s, agent, &batch.flows)?;
    if !summaries.is_empty() {
        s.flows.upsert(&summaries)?;
    }
    let mut c = lock(&s.control)?;
    let mut status: Value = c
        .agent(agent.id)?
        .and_then(|r| r.status_json)
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    status["flow_batch_acked"] = json!(batch.batch);
    c.agent_heartbeat(agent.id, now_ms(), None, None, Some(&status.to_string()))?;
    Ok((batch.batch, false))
}
