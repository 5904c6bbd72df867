//! Quarantine: one action isolates a workload (only the failsafe ports stay open, and
//! connections already established), whatever the rules say; one action releases it.
//!
//! The mark is a workload attribute, so it lives with the inventory, is audited like any
//! inventory change, survives restarts, and reaches the agent through its policy
//! revision at the next heartbeat.

use axum::Json;
use axum::extract::{Path, State};
use bulkhead_model::Workload;
use bulkhead_store::control::{AlertObservation, Change};
use serde_json::{Value, json};

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, lock, now_ms};

/// The workload attribute that marks quarantine; its value is the reason.
pub const ATTRIBUTE: &str = bulkhead_model::QUARANTINE_ATTRIBUTE;

pub fn is_quarantined(w: &Workload) -> bool {
    w.quarantined()
}

async fn set(
    s: AppState,
    p: Principal,
    name: String,
    reason: Option<String>,
) -> ApiResult<Json<QuarantineState>> {
    p.require(&[Role::Admin, Role::Secops], "quarantine workloads")?;
    let quarantine = reason.is_some();
    let s2 = s.clone();
    let n = name.clone();
    let changed = blocking(move || {
        let stored = lock(&s2.control)?
            .workload(&n)?
            .ok_or_else(|| ApiError::NotFound(format!("workload {n}")))?;
        let mut w: Value = serde_json::from_str(&stored.json)
            .map_err(|e| ApiError::Internal(format!("stored workload {n}: {e}")))?;
        if w["managed"] != json!(true) {
            return Err(ApiError::invalid(
                "name",
                format!("workload {n} is unmanaged: no agent runs on it to isolate it"),
            ));
        }
        let attrs = w
            .as_object_mut()
            .ok_or_else(|| ApiError::Internal("workload is not an object".into()))?
            .entry("attributes")
            .or_insert_with(|| json!({}));
        let was = attrs.get(ATTRIBUTE).is_some();
        match &reason {
            Some(r) => attrs[ATTRIBUTE] = json!(r),
            None => {
                if let Some(o) = attrs.as_object_mut() {
                    o.remove(ATTRIBUTE);
                }
            }
        }
        if was == quarantine && !quarantine {
            return Ok(false);
        }
        let action = if quarantine {
            "workload.quarantine"
        } else {
            "workload.release"
        };
        crate::control::commit(
            &s2,
            &p,
            &p.audit(action),
            crate::control::Mutation::Inventory {
                changes: vec![Change::PutWorkload {
                    name: n.clone(),
                    json: w.to_string(),
                }],
                release: true,
            },
        )?;
        let now = now_ms();
        let title = if quarantine {
            format!(
                "{n} quarantined by {}: {}",
                p.name,
                reason.as_deref().unwrap_or("")
            )
        } else {
            format!("{n} released from quarantine by {}", p.name)
        };
        let (record, _) = lock(&s2.control)?.record_alert(AlertObservation {
            key: format!(
                "{}|{n}|{now}",
                if quarantine { "quarantine" } else { "release" }
            ),
            kind: if quarantine {
                "quarantine"
            } else {
                "quarantine_released"
            }
            .into(),
            severity: if quarantine { "critical" } else { "info" }.into(),
            title,
            details_json: json!({ "workload": n, "by": p.actor(), "reason": reason }).to_string(),
            count: 1,
            first_seen_ms: now,
            last_seen_ms: now,
        })?;
        if let Some(d) = s2.dispatcher.lock().ok().and_then(|d| d.clone()) {
            d.send(crate::alerts::event_of(&record));
        }
        Ok(true)
    })
    .await?;
    let (s2, n) = (s.clone(), name.clone());
    let view = blocking(move || {
        let w = s2
            .current()
            .inventory
            .by_name(&n)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("workload {n}")))?;
        crate::enforcement::view(&s2, &w)
    })
    .await?;
    Ok(Json(QuarantineState {
        workload: name,
        quarantined: quarantine,
        changed,
        enforcement: view.state,
        summary: view.summary,
    }))
}

/// Where a workload stands after a quarantine or a release.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct QuarantineState {
    pub workload: String,
    /// What was asked: quarantined or released.
    pub quarantined: bool,
    /// False when it already was in that state (nothing written).
    pub changed: bool,
    /// Whether the host's kernel runs it yet: `pending` until its agent reports the
    /// new table, `no_agent` when nothing can (GET `…/enforcement` follows it).
    pub enforcement: crate::enforcement::Applied,
    pub summary: String,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRequest {
    pub reason: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/workloads/{name}/quarantine",
    tag = "response",
    summary = "Quarantine a workload ({reason}): only failsafe access stays, enforced",
    params(("name" = String, Path)),
    request_body = QuarantineRequest,
    responses((status = 200, description = "where the workload stands", body = QuarantineState))
)]
pub async fn quarantine(
    State(s): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Json<QuarantineState>> {
    let req: QuarantineRequest =
        serde_json::from_value(body).map_err(|e| ApiError::invalid("reason", e.to_string()))?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::invalid("reason", "must not be empty"));
    }
    set(s, p, name, Some(req.reason)).await
}

#[utoipa::path(
    post,
    path = "/api/v1/workloads/{name}/release",
    tag = "response",
    summary = "Release a quarantined workload",
    params(("name" = String, Path)),
    responses((status = 200, description = "where the workload stands", body = QuarantineState))
)]
pub async fn release(
    State(s): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<QuarantineState>> {
    set(s, p, name, None).await
}
