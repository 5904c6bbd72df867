//! Host agents: pairing profiles, enrollment, heartbeats, per-host policy, events and
//! flows (the server side of `bulkhead_api::agent`), and the offline watch.
//!
//! Agents authenticate with their own credential (`bh_agent_…`, hashed at rest like API
//! tokens), which carries no role: it can only read its own workload's policy and report
//! about its own host. Users manage pairing profiles and agents with ordinary tokens.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bulkhead_api::{
    AgentEvent, AgentEvents, EnrollRequest, EnrollResponse, FlowBatch, FlowBatchAck, Heartbeat,
    HeartbeatResponse, HostFlow, LoggedPacket, WirePolicy,
};
use bulkhead_model::{Bucket, EnforcementMode, Labels, SummaryKey, SummaryVerdict, VerdictKind};
use bulkhead_store::FlowStore as _;
use bulkhead_store::control::{
    AgentRecord, AlertObservation, AlertRecord, AlertRecorded, AuditContext, Change, NewAgent,
    NewPairingProfile,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Principal, Role, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, lock, now_ms};

pub use crate::state::AgentSettings;

fn random_secret(prefix: &str) -> ApiResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: Value) -> ApiResult<T> {
    serde_json::from_value(body).map_err(|e| {
        // serde names the field in its message ("missing field `name`", "unknown field …").
        let msg = e.to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .unwrap_or("(body)")
            .to_string();
        ApiError::invalid(field, msg)
    })
}

// ---------------------------------------------------------------- pairing profiles

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairingRequest {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// idle, monitor or enforced [default: monitor].
    pub mode: Option<String>,
    /// How many agents may enroll with the key [default: unlimited].
    pub max_uses: Option<u32>,
    /// [default: 7].
    pub expires_in_days: Option<u32>,
}

fn checked_profile(req: &PairingRequest, now: i64) -> ApiResult<NewPairingProfile> {
    bulkhead_model::validate_name(&req.name).map_err(|e| ApiError::invalid("name", e))?;
    let mut labels = Labels::new();
    for (k, v) in &req.labels {
        let label = bulkhead_model::Label::new(k, v)
            .map_err(|e| ApiError::invalid(format!("labels.{k}"), e.to_string()))?;
        labels
            .insert(label)
            .map_err(|e| ApiError::invalid(format!("labels.{k}"), e.to_string()))?;
    }
    let mode = match &req.mode {
        None => EnforcementMode::Monitor,
        Some(m) => m
            .parse()
            .map_err(|e: String| ApiError::invalid("mode", e))?,
    };
    if req.max_uses == Some(0) {
        return Err(ApiError::invalid("max_uses", "must be at least 1"));
    }
    let days = req.expires_in_days.unwrap_or(7);
    if !(1..=3650).contains(&days) {
        return Err(ApiError::invalid("expires_in_days", "must be 1 to 3650"));
    }
    Ok(NewPairingProfile {
        name: req.name.clone(),
        labels,
        mode,
        max_uses: req.max_uses,
        expires_at_ms: Some(now + i64::from(days) * 86_400_000),
    })
}

pub async fn create_pairing_profile(
    State(s): State<AppState>,
    p: Principal,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    p.require(&[Role::Admin, Role::Secops], "create pairing profiles")?;
    let req: PairingRequest = parse_body(body)?;
    let profile = checked_profile(&req, now_ms())?;
    let key = random_secret("bh_pair_")?;
    let hash = token_hash(&key);
    let audit = p.audit("pairing_profile.create");
    let created =
        blocking(move || Ok(lock(&s.control)?.create_pairing_profile(&profile, &hash, &audit)?))
            .await?;
    // The key travels with the CA fingerprint, so one string is all an agent needs to
    // enroll and to pin the server (shown once, like API tokens).
    let fingerprint = s.agent_settings.ca_fingerprint.clone();
    let pairing_key = match &fingerprint {
        Some(f) => format!("{key}:{f}"),
        None => key,
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "profile": created,
            "pairing_key": pairing_key,
            "ca_fingerprint": fingerprint,
        })),
    ))
}

pub async fn list_pairing_profiles(
    State(s): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Value>> {
    p.require(
        &[Role::Admin, Role::Secops, Role::Netops],
        "read pairing profiles",
    )?;
    let items = blocking(move || Ok(lock(&s.control)?.pairing_profiles()?)).await?;
    Ok(Json(json!({ "items": items })))
}

pub async fn revoke_pairing_profile(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<Value>> {
    p.require(&[Role::Admin, Role::Secops], "revoke pairing profiles")?;
    let audit = p.audit("pairing_profile.revoke");
    let done = blocking(move || Ok(lock(&s.control)?.revoke_pairing_profile(id, &audit)?)).await?;
    if !done {
        return Err(ApiError::NotFound(format!("pairing profile {id}")));
    }
    Ok(Json(json!({ "revoked": id })))
}

// ---------------------------------------------------------------- enrollment

/// Why a host may not become the existing workload of its name, if it may not. A
/// pairing key lets a new host in; it must not let anyone take over a workload that is
/// already someone's: one with an enrolled agent (remove that agent first to re-enroll),
/// or one whose inventory addresses the host does not have (a CMDB row is adopted only
/// by the machine it describes).
fn adoption_refusal(
    name: &str,
    existing: Option<&Value>,
    has_agent: bool,
    host_addresses: &[IpAddr],
) -> Option<String> {
    if has_agent {
        return Some(format!(
            "workload {name} already has an enrolled agent; remove it (DELETE /api/v1/agents/ID) to enroll this host in its place"
        ));
    }
    let recorded: Vec<IpAddr> = existing?["addresses"]
        .as_array()?
        .iter()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect();
    if !recorded.is_empty() && !recorded.iter().any(|a| host_addresses.contains(a)) {
        return Some(format!(
            "workload {name} exists with addresses {recorded:?}, none of which this host has"
        ));
    }
    None
}

/// The workload an enrolling host becomes: its name and addresses from the host. A new
/// workload gets the pairing profile's labels and mode; an existing one (an imported
/// inventory row, adopted) keeps its labels, the profile's only filling keys it lacks,
/// and its mode unless the profile's is stricter: enrolling never loosens enforcement.
fn workload_json(
    req: &EnrollRequest,
    existing: Option<&Value>,
    profile_labels: &Labels,
    mode: EnforcementMode,
) -> ApiResult<Value> {
    let addresses: Vec<String> = req
        .host
        .workload_addresses()
        .iter()
        .map(IpAddr::to_string)
        .collect();
    if addresses.is_empty() {
        return Err(ApiError::invalid(
            "host.interfaces",
            "the host reports no address other than loopback or link-local",
        ));
    }
    let mut labels: BTreeMap<String, String> = existing
        .and_then(|w| serde_json::from_value(w["labels"].clone()).ok())
        .unwrap_or_default();
    for (k, v) in profile_labels.iter() {
        labels.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    let mode = match existing
        .and_then(|w| w["mode"].as_str())
        .and_then(|m| m.parse::<EnforcementMode>().ok())
    {
        Some(current) => strictest(current, mode),
        None => mode,
    };
    let mut w = existing
        .cloned()
        .unwrap_or_else(|| json!({ "kind": "host" }));
    w["name"] = json!(req.host.hostname);
    w["managed"] = json!(true);
    w["addresses"] = json!(addresses);
    w["hostname"] = json!(req.host.hostname);
    w["os"] = json!(req.host.os_name);
    w["os_version"] = json!(req.host.os_version);
    w["labels"] = json!(labels);
    w["mode"] = json!(mode.to_string());
    Ok(w)
}

fn strictest(a: EnforcementMode, b: EnforcementMode) -> EnforcementMode {
    let rank = |m| match m {
        EnforcementMode::Idle => 0,
        EnforcementMode::Monitor => 1,
        EnforcementMode::Enforced => 2,
    };
    if rank(a) >= rank(b) { a } else { b }
}

pub async fn enroll(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, Json<EnrollResponse>)> {
    let req: EnrollRequest = parse_body(body)?;
    bulkhead_model::validate_name(&req.host.hostname)
        .map_err(|e| ApiError::invalid("host.hostname", e))?;
    // The key may carry the CA fingerprint after a colon; only the key part is secret.
    let key = req.pairing_key.split(':').next().unwrap_or_default().trim();
    if key.is_empty() {
        return Err(ApiError::invalid("pairing_key", "must not be empty"));
    }
    let key_hash = token_hash(key);
    let credential = random_secret("bh_agent_")?;
    let credential_hash = token_hash(&credential);
    let host_json =
        serde_json::to_string(&req.host).map_err(|e| ApiError::Internal(e.to_string()))?;
    let name = req.host.hostname.clone();
    let s2 = s.clone();
    let agent = blocking(move || {
        let mut c = lock(&s2.control)?;
        let audit = |action: &str| AuditContext {
            actor: format!("agent {name} (pairing key)"),
            source: peer.ip().to_string(),
            at_ms: now_ms(),
            action: action.to_string(),
        };
        // Only a valid key learns anything about the inventory.
        let profile = match c.pairing_profile_by_key(&key_hash, now_ms())? {
            Ok(p) => p,
            Err(refusal) => {
                tracing::warn!("enrollment of {name} from {peer} refused: {refusal}");
                return Err(ApiError::Forbidden(format!(
                    "enrollment refused: {refusal}"
                )));
            }
        };
        let existing: Option<Value> = c
            .workload(&name)?
            .and_then(|w| serde_json::from_str(&w.json).ok());
        let has_agent = c.agents()?.iter().any(|a| a.workload == name);
        if let Some(why) = adoption_refusal(
            &name,
            existing.as_ref(),
            has_agent,
            &req.host.workload_addresses(),
        ) {
            tracing::warn!("enrollment of {name} from {peer} refused: {why}");
            return Err(ApiError::Conflict(format!("enrollment refused: {why}")));
        }
        // Checked before the key's use is counted: a host that cannot become a workload
        // does not use up the key.
        let w = workload_json(&req, existing.as_ref(), &profile.labels, profile.mode)?;
        let enrolled = c.enroll_agent(
            &key_hash,
            &NewAgent {
                workload: name.clone(),
                credential_hash,
                host_json,
            },
            now_ms(),
            &audit("agent.enroll"),
        )?;
        let (agent, _) = enrolled.map_err(|refusal| {
            tracing::warn!("enrollment of {name} from {peer} refused: {refusal}");
            ApiError::Forbidden(format!("enrollment refused: {refusal}"))
        })?;
        drop(c);
        let json = serde_json::to_string(&w).map_err(|e| ApiError::Internal(e.to_string()))?;
        crate::inventory_api::apply_as(
            &s2,
            vec![Change::PutWorkload {
                name: name.clone(),
                json,
            }],
            &audit("workload.enroll"),
        )?;
        Ok(agent)
    })
    .await?;
    tracing::info!(
        "agent {} enrolled for workload {}",
        agent.id,
        agent.workload
    );
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            agent_id: agent.id,
            workload: agent.workload,
            credential,
        }),
    ))
}

// ---------------------------------------------------------------- agent calls

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
    let empty;
    let policy = match &hosts.policy {
        Some(p) => p.as_ref(),
        None => {
            empty = bulkhead_policy::Policy::from_sources::<&str, &str>(&[])
                .map_err(|e| ApiError::Internal(format!("empty policy: {e}")))?;
            &empty
        }
    };
    let hp = bulkhead_policy::host::host_policy(policy, &hosts.inventory, workload)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let quarantined = hosts
        .inventory
        .by_name(workload)
        .is_some_and(crate::quarantine::is_quarantined);
    let settings = &s.agent_settings;
    let wire = Arc::new(WirePolicy::new(
        &hp,
        &settings.failsafe_ports,
        settings.log_group,
        quarantined,
    ));
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
    let s3 = s.clone();
    let workload = a.agent.workload.clone();
    let policy = blocking(move || wire_policy(&s3, &workload)).await?;
    Ok(Json(HeartbeatResponse {
        revision: policy.revision.clone(),
        flow_batch_acked: acked,
    }))
}

pub async fn policy(State(s): State<AppState>, a: AgentCaller) -> ApiResult<Json<WirePolicy>> {
    let workload = a.agent.workload.clone();
    let p = blocking(move || wire_policy(&s, &workload)).await?;
    Ok(Json((*p).clone()))
}

fn flow_acked(a: &AgentRecord) -> u64 {
    a.status_json
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v["flow_batch_acked"].as_u64())
        .unwrap_or(0)
}

/// Records one alert and returns it when it is new or reopened (to announce).
fn record(
    c: &mut bulkhead_store::control::ControlStore,
    obs: AlertObservation,
) -> ApiResult<Option<AlertRecord>> {
    let (record, recorded) = c.record_alert(obs)?;
    Ok((recorded != AlertRecorded::Repeated).then_some(record))
}

fn announce(s: &AppState, alerts: &[AlertRecord]) {
    if let Some(d) = s.dispatcher.lock().ok().and_then(|d| d.clone()) {
        for a in alerts {
            d.send(crate::alerts::event_of(a));
        }
    }
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
        rules: vec![meaning.rule.unwrap_or_else(|| "default".into())],
    });
    Some(summary)
}

pub async fn events(
    State(s): State<AppState>,
    a: AgentCaller,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    let batch: AgentEvents = parse_body(body)?;
    let count = batch.events.len();
    let s2 = s.clone();
    let announced = blocking(move || {
        let agent = &a.agent;
        let mut summaries = Vec::new();
        let mut announced = Vec::new();
        let mut c = lock(&s2.control)?;
        for ev in batch.events {
            match ev {
                AgentEvent::Logged { packets } => {
                    let own = OwnTraffic::of(&s2, agent);
                    summaries.extend(
                        packets
                            .iter()
                            .filter(|p| own.logged(p))
                            .filter_map(|p| logged_summary(&s2, agent, p)),
                    );
                }
                AgentEvent::Tamper { at_ms, difference } => {
                    tracing::warn!("tamper on {}: {difference}", agent.workload);
                    announced.extend(record(
                        &mut c,
                        AlertObservation {
                            key: format!("tamper|{}", agent.workload),
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
            lock(&s2.flows)?.upsert(&summaries)?;
        }
        Ok(announced)
    })
    .await?;
    announce(&s, &announced);
    Ok(Json(json!({ "accepted": count })))
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

pub async fn flows(
    State(s): State<AppState>,
    a: AgentCaller,
    Json(body): Json<Value>,
) -> ApiResult<Json<FlowBatchAck>> {
    let batch: FlowBatch = parse_body(body)?;
    let s2 = s.clone();
    let acked = blocking(move || {
        // Exactly once: the check, the store and the acknowledgement happen under one
        // lock, so a retry that overtakes a slow first attempt waits for it and is then
        // seen as a repeat. A batch at or below the last one stored is a retry whose
        // answer was lost; a gap means batches were lost on the way, which the agent
        // never does.
        let _batches = lock(&s2.flow_batches)?;
        let acked = lock(&s2.control)?
            .agent(a.agent.id)?
            .as_ref()
            .map_or(0, flow_acked);
        if batch.batch <= acked {
            return Ok(acked);
        }
        let reporter: Arc<str> = format!("agent {}", a.agent.workload).into();
        let enricher = s2.current();
        // A connection between two hosts with agents is seen by both. The provider's
        // report (inbound) is the one kept: it knows the serving process.
        let agent_hosts: std::collections::HashSet<String> = lock(&s2.control)?
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
        let own = OwnTraffic::of(&s2, &a.agent);
        for f in batch
            .flows
            .iter()
            .filter(|f| own.flow(f) && !reported_by_peer(f))
        {
            aggregator.add(&observation(&reporter, f), now);
        }
        let summaries = aggregator.flush_all();
        if !summaries.is_empty() {
            lock(&s2.flows)?.upsert(&summaries)?;
        }
        // No alerts from these: every connection the agent's table does not allow was
        // logged by the kernel when it opened, and alerted from that event already.
        let mut c = lock(&s2.control)?;
        // The acknowledgement is stored after the flows, so a crash in between repeats
        // the batch rather than losing it.
        let mut status: Value = c
            .agent(a.agent.id)?
            .and_then(|r| r.status_json)
            .and_then(|t| serde_json::from_str(&t).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        status["flow_batch_acked"] = json!(batch.batch);
        c.agent_heartbeat(a.agent.id, now, None, None, Some(&status.to_string()))?;
        Ok(batch.batch)
    })
    .await?;
    Ok(Json(FlowBatchAck { acked }))
}

// ---------------------------------------------------------------- agents, for users

fn agent_view(s: &AppState, a: &AgentRecord, now: i64) -> Value {
    let desired = wire_policy(s, &a.workload).ok().map(|p| p.revision.clone());
    let host: Value = serde_json::from_str(&a.host_json).unwrap_or_default();
    let status: Value = a
        .status_json
        .as_deref()
        .and_then(|x| serde_json::from_str(x).ok())
        .unwrap_or_default();
    let online =
        a.offline_since_ms.is_none() && now - a.last_seen_ms <= s.agent_settings.offline_after_ms;
    json!({
        "id": a.id,
        "workload": a.workload,
        "online": online,
        "enrolled_at_ms": a.enrolled_at_ms,
        "last_seen_ms": a.last_seen_ms,
        "offline_since_ms": a.offline_since_ms,
        "applied_revision": a.applied_revision,
        "desired_revision": desired,
        "in_sync": desired.is_some() && desired == a.applied_revision,
        "host": host,
        "status": status["status"],
    })
}

pub async fn list_agents(State(s): State<AppState>, p: Principal) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({ "items": items })))
}

pub async fn delete_agent(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<Value>> {
    p.require(&[Role::Admin, Role::Secops], "remove agents")?;
    let audit = p.audit("agent.delete");
    let done = blocking(move || Ok(lock(&s.control)?.delete_agent(id, &audit)?)).await?;
    if !done {
        return Err(ApiError::NotFound(format!("agent {id}")));
    }
    Ok(Json(json!({ "deleted": id })))
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
            let now = now_ms();
            let mut announced = Vec::new();
            for a in c.agents()? {
                if a.offline_since_ms.is_some()
                    || now - a.last_seen_ms <= s2.agent_settings.offline_after_ms
                {
                    continue;
                }
                if c.mark_agent_offline(a.id, a.last_seen_ms)? {
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
