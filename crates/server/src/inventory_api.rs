//! Workloads: list (filtered by labels, paginated), get, put, delete, bulk import; and
//! the label rules that assign labels from workload attributes.

use axum::Json;
use axum::extract::{Path, Query, State};
use bulkhead_model::Labels;
use bulkhead_store::control::Change;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, lock};

#[derive(Deserialize)]
pub struct ListQuery {
    /// `k=v,k=v`: workloads carrying all these labels.
    labels: Option<String>,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

fn default_limit() -> usize {
    100
}

/// One page of workloads.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WorkloadPage {
    /// Workloads matching the filter, on every page.
    pub total: usize,
    pub offset: usize,
    pub items: Vec<bulkhead_model::Workload>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Imported {
    pub imported: usize,
}

#[utoipa::path(
    get,
    path = "/api/v1/workloads",
    tag = "inventory",
    summary = "List workloads (filter by labels=k=v,…; limit, offset)",
    params(("labels" = Option<String>, Query), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, description = "one page of workloads", body = WorkloadPage))
)]
pub async fn list(
    State(s): State<AppState>,
    p: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<WorkloadPage>> {
    let filter = match &q.labels {
        Some(l) => Labels::parse_list(l).map_err(|e| ApiError::invalid("labels", e.to_string()))?,
        None => Labels::new(),
    };
    if q.limit > 10_000 {
        return Err(ApiError::invalid("limit", "at most 10000"));
    }
    let e = s.current();
    let mut items: Vec<&bulkhead_model::Workload> = e
        .inventory
        .workloads()
        .iter()
        .filter(|w| {
            w.labels.includes(&filter) && (p.role != Role::AppOwner || w.labels.includes(&p.scope))
        })
        .collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let total = items.len();
    let page = items
        .into_iter()
        .skip(q.offset)
        .take(q.limit)
        .cloned()
        .collect();
    Ok(Json(WorkloadPage {
        total,
        offset: q.offset,
        items: page,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/workloads/{name}",
    tag = "inventory",
    summary = "Get a workload",
    params(("name" = String, Path)),
    responses((status = 200, description = "the workload", body = bulkhead_model::Workload))
)]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<bulkhead_model::Workload>> {
    let e = s.current();
    // Outside an app owner's scope a workload is as absent as in the list.
    let w = e
        .inventory
        .by_name(&name)
        .filter(|w| p.role != Role::AppOwner || w.labels.includes(&p.scope))
        .ok_or_else(|| ApiError::NotFound(format!("workload {name}")))?;
    Ok(Json(w.clone()))
}

/// Checks workload JSON objects with the inventory parser, so the API accepts exactly
/// what inventory files accept and reports the same field names.
fn check(items: &[Value]) -> ApiResult<Vec<(String, String)>> {
    // One small document per workload: no parse grows with the size of the import.
    let texts: Vec<String> = items
        .iter()
        .map(|i| serde_json::to_string(i).map_err(|e| ApiError::Internal(e.to_string())))
        .collect::<ApiResult<_>>()?;
    let named: Vec<String> = (0..items.len()).map(|i| format!("(body)[{i}]")).collect();
    let located = crate::state::parse_workloads(
        named
            .iter()
            .map(String::as_str)
            .zip(texts.iter().map(String::as_str)),
    )
    .map_err(|e| {
        let details: Vec<crate::error::FieldError> =
            e.0.iter()
                .map(|e| crate::error::FieldError {
                    field: e.field.clone(),
                    message: e.message.clone(),
                    line: None,
                    column: None,
                })
                .collect();
        ApiError::Invalid {
            message: details
                .first()
                .map(|d| format!("{}: {}", d.field, d.message))
                .unwrap_or_default(),
            details,
        }
    })?;
    located
        .into_iter()
        .zip(items)
        .map(|(l, raw)| {
            Ok((
                l.workload.name,
                serde_json::to_string(raw).map_err(|e| ApiError::Internal(e.to_string()))?,
            ))
        })
        .collect()
}

fn apply(s: &AppState, p: &Principal, changes: Vec<Change>, action: &str) -> ApiResult<()> {
    crate::control::commit(
        s,
        p,
        &p.audit(action),
        crate::control::Mutation::Inventory {
            changes,
            release: false,
        },
    )
    .map(|_| ())
}

/// `changes` with the stored quarantine attribute carried into every workload written
/// without one.
fn keep_quarantines(
    stored: &[bulkhead_store::control::StoredWorkload],
    changes: Vec<Change>,
) -> ApiResult<Vec<Change>> {
    let attr = crate::quarantine::ATTRIBUTE;
    let quarantined: std::collections::HashMap<&str, Value> = stored
        .iter()
        .filter(|w| w.json.contains(attr))
        .filter_map(|w| {
            let v: Value = serde_json::from_str(&w.json).ok()?;
            let reason = v["attributes"].get(attr)?.clone();
            Some((w.name.as_str(), reason))
        })
        .collect();
    if quarantined.is_empty() {
        return Ok(changes);
    }
    changes
        .into_iter()
        .map(|ch| match ch {
            Change::PutWorkload { name, json } => match quarantined.get(name.as_str()) {
                Some(reason) => {
                    let mut w: Value = serde_json::from_str(&json)
                        .map_err(|e| ApiError::Internal(format!("workload {name}: {e}")))?;
                    let attrs = w
                        .as_object_mut()
                        .ok_or_else(|| ApiError::Internal("workload is not an object".into()))?
                        .entry("attributes")
                        .or_insert_with(|| serde_json::json!({}));
                    if let Some(a) = attrs.as_object_mut() {
                        a.entry(attr).or_insert_with(|| reason.clone());
                    }
                    let json =
                        serde_json::to_string(&w).map_err(|e| ApiError::Internal(e.to_string()))?;
                    Ok(Change::PutWorkload { name, json })
                }
                None => Ok(Change::PutWorkload { name, json }),
            },
            other => Ok(other),
        })
        .collect()
}

/// `changes` as they are to be written (quarantines carried when `keep_quarantine`),
/// once the whole inventory they lead to is known to load (unique names and
/// addresses). Nothing is written.
pub(crate) fn checked_changes(
    stored: &[bulkhead_store::control::StoredWorkload],
    changes: Vec<Change>,
    keep_quarantine: bool,
) -> ApiResult<Vec<Change>> {
    let mut all = stored.to_vec();
    let changes = if keep_quarantine {
        keep_quarantines(&all, changes)?
    } else {
        changes
    };
    // What the change brings is checked on its own first: its errors are the caller's
    // (400), while an error in what was stored before is the server's.
    crate::state::parse_workloads(changes.iter().filter_map(|ch| match ch {
        Change::PutWorkload { name, json } => Some((name.as_str(), json.as_str())),
        _ => None,
    }))
    .map_err(|e| {
        let first = e.0.first();
        ApiError::invalid(
            first
                .map(|x| format!("{}: {}", x.file, x.field))
                .unwrap_or_else(|| "workload".into()),
            first.map(|x| x.message.clone()).unwrap_or_default(),
        )
    })?;
    for ch in &changes {
        match ch {
            Change::PutWorkload { name, json } => {
                all.retain(|w| w.name != *name);
                all.push(bulkhead_store::control::StoredWorkload {
                    name: name.clone(),
                    json: json.clone(),
                    updated_ms: 0,
                    updated_by: String::new(),
                });
            }
            Change::DeleteWorkload { name } => all.retain(|w| w.name != *name),
            _ => {}
        }
    }
    let located =
        crate::state::parse_workloads(all.iter().map(|w| (w.name.as_str(), w.json.as_str())))
            .map_err(|e| ApiError::Internal(format!("stored inventory no longer loads: {e}")))?;
    bulkhead_inventory::load_located(located, None).map_err(|e| {
        ApiError::invalid(
            e.0.first()
                .map(|x| x.field.clone())
                .unwrap_or_else(|| "workloads".into()),
            e.0.first().map(|x| x.message.clone()).unwrap_or_default(),
        )
    })?;
    Ok(changes)
}

#[utoipa::path(
    put,
    path = "/api/v1/workloads/{name}",
    tag = "inventory",
    summary = "Create or replace a workload",
    params(("name" = String, Path)),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "the workload as stored", body = bulkhead_model::Workload))
)]
pub async fn put(
    State(s): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
    Json(mut body): Json<Value>,
) -> ApiResult<Json<bulkhead_model::Workload>> {
    p.require(&[Role::Admin, Role::Secops], "change the inventory")?;
    let map = body
        .as_object_mut()
        .ok_or_else(|| ApiError::invalid("(body)", "expected a JSON object"))?;
    match map.get("name") {
        None => {
            map.insert("name".into(), Value::from(name.clone()));
        }
        Some(Value::String(n)) if *n == name => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "name",
                format!("{other} does not match the URL ({name:?})"),
            ));
        }
    }
    let checked = check(std::slice::from_ref(&body))?;
    let (n, json) = checked
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("no workload".into()))?;
    let s2 = s.clone();
    blocking(move || {
        apply(
            &s2,
            &p,
            vec![Change::PutWorkload { name: n, json }],
            "workload.put",
        )
    })
    .await?;
    get(State(s), Principal::system(), Path(name)).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/workloads/{name}",
    tag = "inventory",
    summary = "Delete a workload",
    params(("name" = String, Path)),
    responses((status = 200, description = "the workload is deleted", body = crate::bodies::DeletedName))
)]
pub async fn delete(
    State(s): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<crate::bodies::DeletedName>> {
    p.require(&[Role::Admin, Role::Secops], "change the inventory")?;
    if s.current().inventory.by_name(&name).is_none() {
        return Err(ApiError::NotFound(format!("workload {name}")));
    }
    let n = name.clone();
    blocking(move || {
        apply(
            &s,
            &p,
            vec![Change::DeleteWorkload { name: n }],
            "workload.delete",
        )
    })
    .await?;
    Ok(Json(crate::bodies::DeletedName { deleted: name }))
}

/// Bulk import: a JSON list of workloads (the inventory file format), all or nothing.
#[utoipa::path(
    post,
    path = "/api/v1/workloads/import",
    tag = "inventory",
    summary = "Import workloads (a list, all or nothing)",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "how many were imported", body = Imported))
)]
pub async fn import(
    State(s): State<AppState>,
    p: Principal,
    Json(body): Json<Value>,
) -> ApiResult<Json<Imported>> {
    p.require(&[Role::Admin, Role::Secops], "change the inventory")?;
    let items = match body {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("workloads") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(ApiError::invalid(
                    "workloads",
                    "expected a list of workloads",
                ));
            }
        },
        _ => return Err(ApiError::invalid("(body)", "expected a list of workloads")),
    };
    let checked = check(&items)?;
    let count = checked.len();
    let changes = checked
        .into_iter()
        .map(|(name, json)| Change::PutWorkload { name, json })
        .collect();
    blocking(move || apply(&s, &p, changes, "workload.import")).await?;
    Ok(Json(Imported { imported: count }))
}

// ---------------------------------------------------------------- label rules

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRulesBody {
    /// A `kind: label_rules` YAML document; empty for none.
    yaml: String,
}

/// Parses a label rules document, or a 400 naming the line and field of each problem.
fn parse_rules(yaml: &str) -> ApiResult<Option<bulkhead_inventory::LabelRules>> {
    if yaml.trim().is_empty() {
        return Ok(None);
    }
    bulkhead_inventory::parse_label_rules("yaml", yaml)
        .map(Some)
        .map_err(|e| {
            let details: Vec<crate::error::FieldError> =
                e.0.iter()
                    .map(|e| crate::error::FieldError {
                        field: format!("yaml.{}", e.field),
                        message: e.message.clone(),
                        line: Some(e.line),
                        column: None,
                    })
                    .collect();
            ApiError::Invalid {
                message: details
                    .first()
                    .map(|d| {
                        format!(
                            "yaml line {}: {}: {}",
                            d.line.unwrap_or(0),
                            d.field,
                            d.message
                        )
                    })
                    .unwrap_or_else(|| "yaml: not a label rules document".into()),
                details,
            }
        })
}

/// Labels rules add to one workload (keys it has of its own are never overridden).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Assigned {
    pub workload: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The stored label rules and what they assign now.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LabelRulesView {
    pub yaml: String,
    /// The rules' names, in order.
    pub rules: Vec<String>,
    pub updated_at_ms: Option<i64>,
    pub updated_by: Option<String>,
    pub assigned: Vec<Assigned>,
}

/// Label rules saved, or previewed.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LabelRulesApplied {
    /// Whether the stored text changed (absent in a preview).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// How many rules the document holds.
    pub rules: usize,
    pub assigned: Vec<Assigned>,
}

/// What `rules` would add to each workload: only keys it does not have from its own
/// stored labels (people's labels win), by workload name.
fn derived(
    s: &AppState,
    rules: Option<&bulkhead_inventory::LabelRules>,
) -> ApiResult<Vec<Assigned>> {
    let workloads = lock(&s.control)?.workloads()?;
    let plain = crate::state::inventory_of(&workloads, None)?;
    let mut out = Vec::new();
    let Some(rules) = rules else {
        return Ok(out);
    };
    for w in plain.workloads() {
        let mut with = w.clone();
        rules.apply(&mut with);
        let added: std::collections::BTreeMap<String, String> = with
            .labels
            .iter()
            .filter(|(k, _)| !w.labels.contains_key(k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !added.is_empty() {
            out.push(Assigned {
                workload: w.name.clone(),
                labels: added,
            });
        }
    }
    Ok(out)
}

/// The label rules, their rules by name, and the labels they add to each workload now.
#[utoipa::path(
    get,
    path = "/api/v1/label-rules",
    tag = "inventory",
    summary = "The label rules (YAML) and the labels they assign now",
    responses((status = 200, description = "the label rules and what they assign", body = LabelRulesView))
)]
pub async fn get_label_rules(
    State(s): State<AppState>,
    p: Principal,
) -> ApiResult<Json<LabelRulesView>> {
    blocking(move || {
        let stored = lock(&s.control)?.label_rules()?;
        let yaml = stored.as_ref().map(|r| r.yaml.clone()).unwrap_or_default();
        let rules = parse_rules(&yaml)
            .map_err(|_| ApiError::Internal("stored label rules no longer load".into()))?;
        let mut assigned = derived(&s, rules.as_ref())?;
        if p.role == Role::AppOwner {
            let e = s.current();
            assigned.retain(|a| {
                e.inventory
                    .by_name(&a.workload)
                    .is_some_and(|w| w.labels.includes(&p.scope))
            });
        }
        Ok(Json(LabelRulesView {
            yaml,
            rules: rules
                .map(|r| r.0.iter().map(|r| r.name.clone()).collect())
                .unwrap_or_default(),
            updated_at_ms: stored.as_ref().map(|r| r.updated_at_ms),
            updated_by: stored.as_ref().map(|r| r.updated_by.clone()),
            assigned,
        }))
    })
    .await
}

/// Replaces the label rules after checking them; the inventory's labels follow at once.
#[utoipa::path(
    put,
    path = "/api/v1/label-rules",
    tag = "inventory",
    summary = "Replace the label rules ({yaml}); labels follow at once",
    request_body = LabelRulesBody,
    responses((status = 200, description = "what the rules assign", body = LabelRulesApplied))
)]
pub async fn put_label_rules(
    State(s): State<AppState>,
    p: Principal,
    Json(body): Json<Value>,
) -> ApiResult<Json<LabelRulesApplied>> {
    p.require(&[Role::Admin, Role::Secops], "change the label rules")?;
    let body: LabelRulesBody =
        serde_json::from_value(body).map_err(|e| ApiError::invalid("yaml", e.to_string()))?;
    let rules = parse_rules(&body.yaml)?;
    blocking(move || {
        let changed = match crate::control::commit(
            &s,
            &p,
            &p.audit("label_rules.set"),
            crate::control::Mutation::LabelRules(body.yaml.clone()),
        )? {
            crate::control::Committed::LabelRules { changed } => changed,
            _ => true,
        };
        let assigned = derived(&s, rules.as_ref())?;
        Ok(Json(LabelRulesApplied {
            changed: Some(changed),
            rules: rules.map(|r| r.0.len()).unwrap_or(0),
            assigned,
        }))
    })
    .await
}

/// What a label rules document would assign, without storing it.
#[utoipa::path(
    post,
    path = "/api/v1/label-rules/preview",
    tag = "inventory",
    summary = "What a label rules document would assign, without storing it",
    request_body = LabelRulesBody,
    responses((status = 200, description = "what the rules assign", body = LabelRulesApplied))
)]
pub async fn preview_label_rules(
    State(s): State<AppState>,
    p: Principal,
    Json(body): Json<Value>,
) -> ApiResult<Json<LabelRulesApplied>> {
    p.require(
        &[Role::Admin, Role::Secops, Role::Netops],
        "preview label rules",
    )?;
    let body: LabelRulesBody =
        serde_json::from_value(body).map_err(|e| ApiError::invalid("yaml", e.to_string()))?;
    let rules = parse_rules(&body.yaml)?;
    blocking(move || {
        Ok(Json(LabelRulesApplied {
            changed: None,
            rules: rules.as_ref().map(|r| r.0.len()).unwrap_or(0),
            assigned: derived(&s, rules.as_ref())?,
        }))
    })
    .await
}
