//! Tokens, the audit log, health, readiness and Prometheus metrics.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bulkhead_model::Labels;
use bulkhead_store::control::{AuditContext, NewToken};
use serde::Deserialize;

use crate::auth::{Principal, Role, new_token, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, lock, now_ms};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub name: String,
    pub role: String,
    /// For app owners: the labels of their workloads, `app=payments` or `app=payments,env=prod`.
    pub scope: Option<String>,
    /// Lifetime in days (default 90).
    pub expires_in_days: Option<u32>,
}

/// A new token, shown this once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TokenCreated {
    pub token: String,
    pub meta: bulkhead_store::control::TokenMeta,
    pub note: String,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TokenList {
    pub items: Vec<bulkhead_store::control::TokenMeta>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub items: Vec<bulkhead_store::control::AuditEntry>,
}

/// Creates a token and returns it once; only its hash is kept.
pub fn issue_token(
    store: &mut bulkhead_store::control::ControlStore,
    req: &TokenRequest,
    audit: &AuditContext,
) -> ApiResult<(String, bulkhead_store::control::TokenMeta)> {
    if req.name.trim().is_empty() || req.name.len() > 128 {
        return Err(ApiError::invalid("name", "1 to 128 characters"));
    }
    let role: Role = req
        .role
        .parse()
        .map_err(|e: String| ApiError::invalid("role", e))?;
    let scope = match (&req.scope, role) {
        (Some(s), Role::AppOwner) => {
            let l = Labels::parse_list(s).map_err(|e| ApiError::invalid("scope", e.to_string()))?;
            if l.is_empty() {
                return Err(ApiError::invalid(
                    "scope",
                    "an app owner needs a non-empty label scope",
                ));
            }
            Some(l.to_string())
        }
        (None, Role::AppOwner) => {
            return Err(ApiError::invalid(
                "scope",
                "required for app_owner, e.g. app=payments",
            ));
        }
        (Some(_), _) => {
            return Err(ApiError::invalid(
                "scope",
                "only app_owner tokens have a scope",
            ));
        }
        (None, _) => None,
    };
    let days = req.expires_in_days.unwrap_or(90);
    if !(1..=3650).contains(&days) {
        return Err(ApiError::invalid("expires_in_days", "from 1 to 3650"));
    }
    let token = new_token()?;
    let meta = store.create_token(
        NewToken {
            name: req.name.trim().to_string(),
            role: role.as_str().to_string(),
            scope,
            hash: token_hash(&token),
            expires_ms: Some(now_ms() + i64::from(days) * 86_400_000),
        },
        audit,
    )?;
    Ok((token, meta))
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "admin",
    summary = "Create an API token (shown once)",
    request_body = TokenRequest,
    responses((status = 201, description = "the token, shown once", body = TokenCreated))
)]
pub async fn create_token(
    State(s): State<AppState>,
    p: Principal,
    Json(req): Json<TokenRequest>,
) -> ApiResult<impl IntoResponse> {
    p.require(&[Role::Admin], "create tokens")?;
    let (token, meta) = blocking(move || {
        let mut c = lock(&s.control)?;
        issue_token(&mut c, &req, &p.audit("token.create"))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token,
            meta,
            note: "shown once; store it now".into(),
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "admin",
    summary = "List API tokens (never the tokens themselves)",
    responses((status = 200, description = "every token, never the secret", body = TokenList))
)]
pub async fn list_tokens(State(s): State<AppState>, p: Principal) -> ApiResult<Json<TokenList>> {
    p.require(&[Role::Admin], "list tokens")?;
    let items = blocking(move || Ok(lock(&s.control)?.tokens()?)).await?;
    Ok(Json(TokenList { items }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "admin",
    summary = "Revoke an API token",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the token is revoked", body = crate::bodies::RevokedId))
)]
pub async fn revoke_token(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<crate::bodies::RevokedId>> {
    p.require(&[Role::Admin], "revoke tokens")?;
    let done =
        blocking(move || Ok(lock(&s.control)?.revoke_token(id, &p.audit("token.revoke"))?)).await?;
    if !done {
        return Err(ApiError::NotFound(format!("token {id}")));
    }
    Ok(Json(crate::bodies::RevokedId { revoked: id }))
}

#[derive(Deserialize)]
pub struct AuditParams {
    after_id: Option<u64>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "admin",
    summary = "The audit log (after_id, limit)",
    params(("after_id" = Option<i64>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, description = "audit entries after after_id", body = AuditPage))
)]
pub async fn audit(
    State(s): State<AppState>,
    p: Principal,
    Query(q): Query<AuditParams>,
) -> ApiResult<Json<AuditPage>> {
    p.require(&[Role::Admin, Role::Secops], "read the audit log")?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    let items =
        blocking(move || Ok(lock(&s.control)?.audit(q.after_id.unwrap_or(0), limit)?)).await?;
    Ok(Json(AuditPage { items }))
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when both stores answer.
pub async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let ok = blocking(move || {
        lock(&s.control)?.versions()?;
        s.flows.stats()?;
        Ok(())
    })
    .await;
    match ok {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

/// Prometheus text, for a token that may read the whole estate (scrapers use a netops
/// token): the counts describe the estate and its defences, which is neither for
/// anonymous eyes nor for an app owner, who sees only its own workloads.
pub async fn metrics(State(s): State<AppState>, p: Principal) -> ApiResult<impl IntoResponse> {
    p.require(
        &[Role::Admin, Role::Secops, Role::Netops],
        "read the estate-wide metrics",
    )?;
    let m = s
        .collector
        .lock()
        .ok()
        .and_then(|c| c.as_ref().map(|c| c.metrics()))
        .unwrap_or_default();
    let e = s.current();
    let s2 = s.clone();
    let (stats, open_alerts, agents) = blocking(move || {
        let stats = s2.flows.stats()?;
        let (open, agents) = {
            let c = lock(&s2.control)?;
            let open = c
                .alerts(&bulkhead_store::control::AlertFilter {
                    state: Some(bulkhead_store::control::AlertState::Open),
                    limit: usize::MAX,
                    ..Default::default()
                })?
                .len();
            (open, c.agents()?)
        };
        let now = now_ms();
        let (mut online, mut offline, mut out_of_sync, mut pending) = (0, 0, 0, 0);
        let mut spools = AgentSpools::default();
        for a in &agents {
            spools.add(a);
            if a.pending.is_some() {
                pending += 1;
                continue;
            }
            if a.offline_since_ms.is_none()
                && now - a.last_seen_ms <= s2.agent_settings.offline_after_ms
            {
                online += 1;
            } else {
                offline += 1;
            }
            let desired = crate::agent_api::wire_policy(&s2, &a.workload)
                .ok()
                .map(|p| p.revision.clone());
            if desired.is_none() || desired != a.applied_revision {
                out_of_sync += 1;
            }
        }
        Ok((stats, open, (online, offline, out_of_sync, pending, spools)))
    })
    .await?;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "bulkhead_ingest_datagrams_total",
        "counter",
        "Export datagrams received.",
        m.datagrams.to_string(),
    );
    metric(
        "bulkhead_ingest_records_total",
        "counter",
        "Flow records decoded.",
        m.records.to_string(),
    );
    metric(
        "bulkhead_ingest_malformed_total",
        "counter",
        "Datagrams rejected as malformed.",
        m.malformed.to_string(),
    );
    metric(
        "bulkhead_ingest_no_template_total",
        "counter",
        "Data sets dropped for want of a template.",
        m.no_template.to_string(),
    );
    metric(
        "bulkhead_ingest_dropped_total",
        "counter",
        "Datagrams the kernel dropped on the collector sockets.",
        m.dropped.to_string(),
    );
    for (name, help, value) in [
        (
            "bulkhead_ingest_sets_truncated_total",
            "Data sets cut short, so they yielded no record.",
            m.sets_truncated,
        ),
        (
            "bulkhead_ingest_sets_unsupported_total",
            "Data sets of a set id the decoder does not read.",
            m.sets_unsupported,
        ),
        (
            "bulkhead_ingest_sequence_gaps_total",
            "Records the exporters' sequence numbers say were sent and never arrived.",
            m.sequence_gaps,
        ),
        (
            "bulkhead_ingest_exporter_table_full_total",
            "New exporters that found the exporter table full (an idle one was evicted).",
            m.exporter_table_full,
        ),
        (
            "bulkhead_ingest_exporters_evicted_total",
            "Exporters evicted from a full table.",
            m.exporters_evicted,
        ),
        (
            "bulkhead_ingest_time_clamped_future_total",
            "Exporter records that ended ahead of the clock beyond the allowed skew (filed at receipt).",
            m.time_clamped_future,
        ),
        (
            "bulkhead_ingest_time_clamped_past_total",
            "Exporter records that ended further back than the allowed age (filed at receipt).",
            m.time_clamped_past,
        ),
        (
            "bulkhead_agent_time_clamped_future_total",
            "Agent flow records that ended ahead of the server's clock beyond the allowed skew.",
            s.agent_times
                .future
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "bulkhead_agent_time_clamped_past_total",
            "Agent flow records that ended further back than the allowed age.",
            s.agent_times
                .past
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    ] {
        metric(name, "counter", help, value.to_string());
    }
    metric(
        "bulkhead_ingest_template_bytes",
        "gauge",
        "Memory the collector's NetFlow v9 and IPFIX templates hold (bounded per exporter).",
        m.template_bytes.to_string(),
    );
    metric(
        "bulkhead_summaries_total",
        "counter",
        "Flow summaries produced.",
        m.summaries.to_string(),
    );
    metric(
        "bulkhead_flow_store_rows",
        "gauge",
        "Minute summaries stored.",
        stats.minute.rows.to_string(),
    );
    metric(
        "bulkhead_leader",
        "gauge",
        "1 when this server runs the singletons (rollout scheduler, offline watch).",
        u8::from(s.leading.load(std::sync::atomic::Ordering::Relaxed)).to_string(),
    );
    let w = &s.flow_writes;
    metric(
        "bulkhead_flow_store_held_summaries",
        "gauge",
        "Summaries waiting for the flow store, which refused them (bounded).",
        w.held
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    );
    metric(
        "bulkhead_flow_store_dropped_summaries_total",
        "counter",
        "Summaries dropped because the flow store refused writes past the bound.",
        w.dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    );
    metric(
        "bulkhead_flow_store_write_failures_total",
        "counter",
        "Writes the flow store refused.",
        w.failures
            .load(std::sync::atomic::Ordering::Relaxed)
            .to_string(),
    );
    metric(
        "bulkhead_alerts_open",
        "gauge",
        "Alerts in state open.",
        open_alerts.to_string(),
    );
    metric(
        "bulkhead_workloads",
        "gauge",
        "Workloads in the inventory.",
        e.inventory.len().to_string(),
    );
    metric(
        "bulkhead_agents_out_of_sync",
        "gauge",
        "Agents whose applied policy is not the one the server wants them to run.",
        agents.2.to_string(),
    );
    let spools = &agents.4;
    for (name, help, value) in [
        (
            "bulkhead_agent_flows_spooled",
            "Flows waiting in agents' disk spools for the server, as they last reported.",
            spools.flows,
        ),
        (
            "bulkhead_agent_spool_bytes",
            "Bytes of agents' disk spools, as they last reported.",
            spools.bytes,
        ),
        (
            "bulkhead_agent_flows_dropped",
            "Flows agents dropped undelivered (full memory buffer, or the oldest batches of a full spool), summed over their reported counters.",
            spools.dropped,
        ),
        (
            "bulkhead_agent_spool_corrupt",
            "Agent spool files that did not check out and were moved aside, summed over their reported counters.",
            spools.corrupt,
        ),
    ] {
        metric(name, "gauge", help, value.to_string());
    }
    metric(
        "bulkhead_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        ((now_ms() - s.started_ms) / 1000).to_string(),
    );
    let sinks = s
        .dispatcher
        .lock()
        .ok()
        .and_then(|d| d.as_ref().map(|d| d.metrics()))
        .unwrap_or_default();
    for (name, kind, help, value) in [
        (
            "bulkhead_alert_sink_delivered_total",
            "counter",
            "Alert events a sink accepted.",
            (|m: &bulkhead_alerts::SinkMetrics| m.delivered) as fn(&_) -> u64,
        ),
        (
            "bulkhead_alert_sink_retried_total",
            "counter",
            "Delivery attempts beyond the first.",
            |m| m.retried,
        ),
        (
            "bulkhead_alert_sink_dead_lettered_total",
            "counter",
            "Alert events given up on (attempts exhausted or refused for good).",
            |m| m.dead_lettered,
        ),
        (
            "bulkhead_alert_sink_dropped_total",
            "counter",
            "Alert events never queued (queue full).",
            |m| m.dropped,
        ),
        (
            "bulkhead_alert_sink_queued",
            "gauge",
            "Alert events waiting in a sink's queue.",
            |m| m.queued,
        ),
    ] {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for m in &sinks {
            let sink = m.sink.replace(['\\', '"', '\n'], "_");
            out.push_str(&format!("{name}{{sink=\"{sink}\"}} {}\n", value(m)));
        }
    }
    out.push_str(&format!(
        "# HELP bulkhead_agents Enrolled host agents, by state.\n# TYPE bulkhead_agents gauge\n\
         bulkhead_agents{{state=\"online\"}} {}\nbulkhead_agents{{state=\"offline\"}} {}\n\
         bulkhead_agents{{state=\"pending\"}} {}\n",
        agents.0, agents.1, agents.3
    ));
    let (refused, not_audited) = s.guard.snapshot();
    out.push_str(
        "# HELP bulkhead_refused_requests_total Requests refused (401, 403, 429), by listener.\n\
         # TYPE bulkhead_refused_requests_total counter\n",
    );
    for (listener, status, n) in refused {
        out.push_str(&format!(
            "bulkhead_refused_requests_total{{listener=\"{listener}\",status=\"{status}\"}} {n}\n"
        ));
    }
    let c = &s.connections;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    for (name, help, value) in [
        (
            "bulkhead_refused_not_audited_total",
            "Refused requests counted but not audited one by one (audit budget spent).",
            not_audited,
        ),
        (
            "bulkhead_connections_refused_per_address_total",
            "Connections closed at once: the address had its cap of open connections.",
            load(&c.refused_per_address),
        ),
        (
            "bulkhead_connections_refused_total",
            "Connections closed at once: the server had its cap of open connections.",
            load(&c.refused_total),
        ),
        (
            "bulkhead_accept_errors_total",
            "Failed accepts (such as running out of file descriptors).",
            load(&c.accept_errors),
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    ))
}

/// Agents' spools summed from the status each last reported.
#[derive(Debug, Default)]
struct AgentSpools {
    flows: u64,
    bytes: u64,
    dropped: u64,
    corrupt: u64,
}

impl AgentSpools {
    fn add(&mut self, a: &bulkhead_store::control::AgentRecord) {
        let Some(status) = a
            .status_json
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        else {
            return;
        };
        let n = |k: &str| status["status"][k].as_u64().unwrap_or(0);
        self.flows = self.flows.saturating_add(n("spool_flows"));
        self.bytes = self.bytes.saturating_add(n("spool_bytes"));
        self.dropped = self
            .dropped
            .saturating_add(n("flows_dropped"))
            .saturating_add(n("spool_flows_dropped"));
        self.corrupt = self.corrupt.saturating_add(n("spool_corrupt"));
    }
}
