//! Alerts: flows that would be blocked (monitor) or were blocked (enforced), deduplicated
//! per (source group, destination group, protocol/port); lifecycle open → acknowledged →
//! resolved.

use axum::Json;
use axum::extract::{Path, Query, State};
use bulkhead_model::{FlowSummary, Labels, VerdictKind, protocol_name};
use bulkhead_store::control::{AlertFilter, AlertObservation, AlertState, ControlStore};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, lock};

/// The group an end belongs to for deduplication: its app/env/role labels; for an
/// address the inventory does not know, whether it is internal or external (one alert
/// per scanned port, not one per scanned address; the details keep the address).
fn group(labels: &Labels, addr: std::net::IpAddr, known: bool) -> String {
    let parts: Vec<String> = ["app", "env", "role"]
        .iter()
        .filter_map(|k| labels.get(k).map(|v| format!("{k}={v}")))
        .collect();
    match (known, parts.is_empty()) {
        (true, false) => parts.join(","),
        (true, true) => "unlabelled workloads".to_string(),
        (false, _) if bulkhead_enrich::sprawl::is_internal(addr) => "unknown internal".to_string(),
        (false, _) => "external".to_string(),
    }
}

/// The event the sinks receive for an alert record.
pub fn event_of(a: &bulkhead_store::control::AlertRecord) -> bulkhead_alerts::AlertEvent {
    let details: Value = serde_json::from_str(&a.details_json).unwrap_or_default();
    let service = details["service"].as_str().unwrap_or("");
    let (proto, port) = match service.split_once('/') {
        Some((p, n)) => (bulkhead_model::protocol_number(p), n.parse().ok()),
        None => (None, None),
    };
    bulkhead_alerts::AlertEvent {
        id: a.id,
        kind: a.kind.clone(),
        severity: match a.severity.as_str() {
            "critical" => bulkhead_alerts::Severity::Critical,
            "warning" => bulkhead_alerts::Severity::Warning,
            _ => bulkhead_alerts::Severity::Info,
        },
        title: a.title.clone(),
        key: a.key.clone(),
        src_group: details["src_group"].as_str().map(String::from),
        dst_group: details["dst_group"].as_str().map(String::from),
        proto,
        port,
        count: a.count,
        first_seen_ms: a.first_seen_ms,
        last_seen_ms: a.last_seen_ms,
        state: a.state.as_str().to_string(),
        details,
    }
}

/// Records an alert for every summary whose provisioned verdict is not `allowed`, and
/// returns the alerts that are new or reopened (the ones to announce).
pub fn record_from_summaries(
    store: &mut ControlStore,
    summaries: &[FlowSummary],
) -> Result<Vec<bulkhead_store::control::AlertRecord>, bulkhead_store::StoreError> {
    let mut observations = Vec::new();
    for s in summaries
        .iter()
        .filter(|s| s.key.bucket == bulkhead_model::Bucket::Minute)
    {
        let Some(v) = &s.provisioned else { continue };
        let (kind, severity) = match v.verdict {
            VerdictKind::Allowed => continue,
            VerdictKind::PotentiallyBlocked => ("potentially_blocked", "warning"),
            VerdictKind::Blocked => ("blocked", "critical"),
        };
        let src = group(&s.src_labels, s.key.src, s.src_workload.is_some());
        let dst = group(&s.dst_labels, s.key.dst, s.dst_workload.is_some());
        let service = match protocol_name(s.key.proto) {
            Some(p) => format!("{p}/{}", s.key.port),
            None => format!("proto/{}", s.key.proto),
        };
        let key = format!("{kind}|{src}|{dst}|{service}");
        let title = format!(
            "{} {src} → {dst} on {service}",
            if kind == "blocked" {
                "blocked:"
            } else {
                "would be blocked:"
            }
        );
        let details = serde_json::json!({
            "src_group": src, "dst_group": dst, "service": service,
            "src": s.key.src, "dst": s.key.dst,
            "src_workload": s.src_workload, "dst_workload": s.dst_workload,
            "src_labels": s.src_labels, "dst_labels": s.dst_labels,
            "rules": v.rules,
        });
        observations.push(AlertObservation {
            key,
            kind: kind.to_string(),
            severity: severity.to_string(),
            title,
            details_json: details.to_string(),
            count: s.connections,
            first_seen_ms: s.first_seen_ms,
            last_seen_ms: s.last_seen_ms,
        });
    }
    // One transaction for the whole batch: the control store's lock (which every API
    // write waits for) is held for one commit, not one per alert.
    Ok(store
        .record_alerts(observations)?
        .into_iter()
        .filter(|(_, recorded)| *recorded != bulkhead_store::control::AlertRecorded::Repeated)
        .map(|(record, _)| record)
        .collect())
}

/// An alert with its details as JSON.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AlertView {
    #[serde(flatten)]
    pub alert: bulkhead_store::control::AlertRecord,
    pub details: Value,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AlertList {
    pub items: Vec<AlertView>,
}

#[derive(Deserialize)]
pub struct AlertParams {
    state: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

fn visible(p: &Principal, details: &str) -> bool {
    if p.role != Role::AppOwner {
        return true;
    }
    let d: Value = serde_json::from_str(details).unwrap_or_default();
    let labels = |k: &str| -> Labels { serde_json::from_value(d[k].clone()).unwrap_or_default() };
    p.sees(&labels("src_labels"), &labels("dst_labels"))
}

#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "alerts",
    summary = "List alerts (state, kind; limit, offset)",
    params(("state" = Option<String>, Query), ("kind" = Option<String>, Query), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, description = "alerts, last seen first", body = AlertList))
)]
pub async fn list(
    State(s): State<AppState>,
    p: Principal,
    Query(q): Query<AlertParams>,
) -> ApiResult<Json<AlertList>> {
    let state = match q.state.as_deref() {
        None => None,
        Some(x) => Some(
            x.parse::<AlertState>()
                .map_err(|e| ApiError::invalid("state", e.to_string()))?,
        ),
    };
    let filter = AlertFilter {
        state,
        kind: q.kind,
        limit: q.limit.unwrap_or(100).min(10_000),
        offset: q.offset.unwrap_or(0),
        ..AlertFilter::default()
    };
    let alerts = blocking(move || Ok(lock(&s.control)?.alerts(&filter)?)).await?;
    let items = alerts
        .into_iter()
        .filter(|a| visible(&p, &a.details_json))
        .map(|alert| AlertView {
            details: serde_json::from_str(&alert.details_json).unwrap_or_default(),
            alert,
        })
        .collect();
    Ok(Json(AlertList { items }))
}

async fn transition(
    s: AppState,
    p: Principal,
    id: u64,
    to: AlertState,
) -> ApiResult<Json<bulkhead_store::control::AlertRecord>> {
    p.require(
        &[Role::Admin, Role::Secops, Role::AppOwner],
        "change alerts",
    )?;
    blocking(move || {
        let mut c = lock(&s.control)?;
        let a = c
            .alert(id)?
            .ok_or_else(|| ApiError::NotFound(format!("alert {id}")))?;
        if !visible(&p, &a.details_json) {
            return Err(ApiError::NotFound(format!("alert {id}")));
        }
        let ctx = p.audit(&format!("alert.{}", to.as_str()));
        let updated = c
            .set_alert_state(id, to, &ctx)?
            .ok_or_else(|| ApiError::NotFound(format!("alert {id}")))?;
        Ok(Json(updated))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/acknowledge",
    tag = "alerts",
    summary = "Acknowledge an alert",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the alert in its new state", body = bulkhead_store::control::AlertRecord))
)]
pub async fn acknowledge(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<bulkhead_store::control::AlertRecord>> {
    transition(s, p, id, AlertState::Acknowledged).await
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/resolve",
    tag = "alerts",
    summary = "Resolve an alert",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the alert in its new state", body = bulkhead_store::control::AlertRecord))
)]
pub async fn resolve(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<bulkhead_store::control::AlertRecord>> {
    transition(s, p, id, AlertState::Resolved).await
}

/// What [`exporter_observations`] remembers between rounds.
#[derive(Debug, Default)]
pub struct ExporterWatch {
    gaps: std::collections::HashMap<String, u64>,
    table_full: u64,
}

/// Alerts for exporters whose sequence numbers show loss since the last round (a
/// lossy path or an overloaded collector hides flows), and for a collector whose
/// exporter table filled (a flood of newcomers; idle exporters were evicted). The first
/// round only learns the counters: what was lost before a server started is not news.
pub fn exporter_observations(
    watch: &mut ExporterWatch,
    first_round: bool,
    exporters: &[bulkhead_flow::ExporterStats],
    table_full: u64,
    now_ms: i64,
) -> Vec<AlertObservation> {
    let mut out = Vec::new();
    let mut gaps: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for e in exporters {
        *gaps.entry(e.address.to_string()).or_default() += e.counters.sequence_gaps;
    }
    for (address, total) in &gaps {
        let before = watch.gaps.get(address).copied().unwrap_or(0);
        if !first_round && *total > before {
            let lost = total - before;
            out.push(AlertObservation {
                key: format!("exporter_loss|{address}"),
                kind: "exporter_loss".into(),
                severity: "warning".into(),
                title: format!(
                    "exporter {address}: {lost} records it sent never arrived (sequence gaps)"
                ),
                details_json:
                    serde_json::json!({"exporter": address, "lost": lost, "total": total})
                        .to_string(),
                count: lost,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
            });
        }
    }
    if !first_round && table_full > watch.table_full {
        let n = table_full - watch.table_full;
        out.push(AlertObservation {
            key: "exporter_table_full".into(),
            kind: "exporter_table_full".into(),
            severity: "critical".into(),
            title: format!(
                "the collector's exporter table was full for {n} new exporters: idle ones were \
                 evicted (a flood of senders, or more exporters than the table holds)"
            ),
            details_json: serde_json::json!({"new_exporters_while_full": n}).to_string(),
            count: n,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
        });
    }
    watch.gaps = gaps;
    watch.table_full = table_full;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exporter(address: &str, sequence_gaps: u64) -> bulkhead_flow::ExporterStats {
        bulkhead_flow::ExporterStats {
            address: address.parse().unwrap(),
            last_port: 2055,
            scopes: Vec::new(),
            first_seen_ms: 0,
            last_seen_ms: 0,
            protected: true,
            counters: bulkhead_flow::ExporterCounters {
                sequence_gaps,
                ..Default::default()
            },
            templates: 0,
            pending_sets: 0,
        }
    }

    #[test]
    fn loss_and_a_full_table_are_alerted_once_each_time_they_grow() {
        let mut w = ExporterWatch::default();
        // What happened before the first look is learned, not alerted.
        let first = [exporter("10.0.0.1", 5)];
        assert!(exporter_observations(&mut w, true, &first, 3, 1).is_empty());
        assert!(exporter_observations(&mut w, false, &first, 3, 2).is_empty());
        // The same exporter from two workers adds up.
        let later = [
            exporter("10.0.0.1", 7),
            exporter("10.0.0.1", 1),
            exporter("10.0.0.2", 0),
        ];
        let a = exporter_observations(&mut w, false, &later, 4, 3);
        let kinds: Vec<(&str, u64)> = a.iter().map(|o| (o.kind.as_str(), o.count)).collect();
        assert_eq!(kinds, [("exporter_loss", 3), ("exporter_table_full", 1)]);
        assert_eq!(a[0].key, "exporter_loss|10.0.0.1");
        assert!(exporter_observations(&mut w, false, &later, 4, 4).is_empty());
    }
}
