//! Policy objects in the draft, provisioning, versions, diffs, revert, explain.

use axum::Json;
use axum::extract::{Path, Query, State};
use bulkhead_model::{Connection, ServicePort};
use bulkhead_policy::{Object, Policy, explain, format::format_object, parse_file};
use bulkhead_store::control::{Change, DraftObject, StoredObject, VersionMeta, diff};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, lock, policy_errors, policy_of};

pub const KINDS: &[&str] = &["label_group", "ip_list", "service", "tier", "ruleset"];

#[derive(Serialize, utoipa::ToSchema)]
pub struct ObjectView {
    pub kind: String,
    pub name: String,
    pub updated_ms: i64,
    pub updated_by: String,
    pub object: Value,
    pub yaml: String,
}

fn view(o: &StoredObject) -> ApiResult<ObjectView> {
    let object: Value = serde_saphyr_json(&o.yaml)?;
    Ok(ObjectView {
        kind: o.kind.clone(),
        name: o.name.clone(),
        updated_ms: o.updated_ms,
        updated_by: o.updated_by.clone(),
        object,
        yaml: o.yaml.clone(),
    })
}

fn serde_saphyr_json(yaml: &str) -> ApiResult<Value> {
    bulkhead_policy::yaml_to_json(yaml)
        .map_err(|e| ApiError::Internal(format!("stored object does not read back: {e}")))
}

/// Parses one object from a request body (JSON is YAML's flow style, so the policy
/// parser reads it directly and reports the same field paths as for files).
fn object_from_body(kind: &str, name: &str, mut body: Value) -> ApiResult<Object> {
    let map = body
        .as_object_mut()
        .ok_or_else(|| ApiError::invalid("(body)", "expected a JSON object"))?;
    for (field, want) in [("kind", kind), ("name", name)] {
        match map.get(field) {
            None => {
                map.insert(field.into(), Value::from(want));
            }
            Some(Value::String(s)) if s == want => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    field,
                    format!("{other} does not match the URL ({want:?})"),
                ));
            }
        }
    }
    map.entry("bulkhead")
        .or_insert_with(|| Value::from(bulkhead_policy::FORMAT_VERSION));
    let text = serde_json::to_string(&body).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (mut objects, errors) = parse_file("(body)", &text);
    if !errors.is_empty() {
        return Err(policy_errors(bulkhead_policy::PolicyErrors(errors)));
    }
    objects
        .pop()
        .ok_or_else(|| ApiError::invalid("(body)", "no object"))
}

fn check_kind(kind: &str) -> ApiResult<()> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "kind",
            format!("unknown kind {kind:?}; one of {}", KINDS.join(", ")),
        ))
    }
}

#[derive(Deserialize)]
pub struct KindFilter {
    kind: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/draft/objects",
    tag = "policy",
    summary = "List draft policy objects (kind=…)",
    params(("kind" = Option<String>, Query)),
    responses((status = 200, description = "draft objects", body = Vec<ObjectView>))
)]
pub async fn list_objects(
    State(s): State<AppState>,
    _p: Principal,
    Query(f): Query<KindFilter>,
) -> ApiResult<Json<Vec<ObjectView>>> {
    let objects =
        blocking(move || lock(&s.control)?.draft_objects().map_err(ApiError::from)).await?;
    objects
        .iter()
        .filter(|o| f.kind.as_deref().is_none_or(|k| k == o.kind))
        .map(view)
        .collect::<ApiResult<Vec<_>>>()
        .map(Json)
}

#[utoipa::path(
    get,
    path = "/api/v1/draft/objects/{kind}/{name}",
    tag = "policy",
    summary = "Get a draft policy object",
    params(("kind" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "the object", body = ObjectView))
)]
pub async fn get_object(
    State(s): State<AppState>,
    _p: Principal,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Json<ObjectView>> {
    check_kind(&kind)?;
    let (k, n) = (kind.clone(), name.clone());
    let o = blocking(move || {
        lock(&s.control)?
            .draft_object(&k, &n)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(view(&o.ok_or_else(|| {
        ApiError::NotFound(format!("{kind}/{name}"))
    })?)?))
}

/// Stores one draft change through the control service (authorized on the data, the
/// whole resulting draft checked).
fn change_draft(s: &AppState, p: &Principal, change: Change, action: &str) -> ApiResult<()> {
    crate::control::commit(
        s,
        p,
        &p.audit(action),
        crate::control::Mutation::Draft {
            changes: vec![change],
            create_only: false,
        },
    )
    .map(|_| ())
}

#[utoipa::path(
    put,
    path = "/api/v1/draft/objects/{kind}/{name}",
    tag = "policy",
    summary = "Create or replace a draft policy object",
    params(("kind" = String, Path), ("name" = String, Path)),
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "the object", body = ObjectView))
)]
pub async fn put_object(
    State(s): State<AppState>,
    p: Principal,
    Path((kind, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<ObjectView>> {
    check_kind(&kind)?;
    let object = object_from_body(&kind, &name, body)?;
    p.may_write_object(&object)?;
    let yaml = format_object(&object);
    // The canonical text must read back as the same object, or storing it would corrupt
    // the draft; refuse rather than store something that cannot be served again.
    let (back, errors) = parse_file("(canonical)", &yaml);
    if !errors.is_empty() || back.first().map(format_object).as_deref() != Some(yaml.as_str()) {
        return Err(ApiError::invalid(
            "(body)",
            "a value cannot be written back canonically",
        ));
    }
    let (k, n) = (kind.clone(), name.clone());
    blocking(move || {
        change_draft(
            &s,
            &p,
            Change::PutObject {
                kind: k.clone(),
                name: n.clone(),
                yaml,
            },
            &format!("{k}.put"),
        )?;
        let stored = lock(&s.control)?
            .draft_object(&k, &n)?
            .ok_or_else(|| ApiError::Internal("object vanished".into()))?;
        Ok(Json(view(&stored)?))
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/draft/objects/{kind}/{name}",
    tag = "policy",
    summary = "Delete a draft policy object",
    params(("kind" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "the object is deleted", body = crate::bodies::DeletedName))
)]
pub async fn delete_object(
    State(s): State<AppState>,
    p: Principal,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Json<crate::bodies::DeletedName>> {
    check_kind(&kind)?;
    let (k, n) = (kind.clone(), name.clone());
    blocking(move || {
        lock(&s.control)?
            .draft_object(&k, &n)?
            .ok_or_else(|| ApiError::NotFound(format!("{k}/{n}")))?;
        change_draft(
            &s,
            &p,
            Change::DeleteObject {
                kind: k.clone(),
                name: n,
            },
            &format!("{k}.delete"),
        )
    })
    .await?;
    Ok(Json(crate::bodies::DeletedName {
        deleted: format!("{kind}/{name}"),
    }))
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PolicyFile {
    pub name: String,
    pub content: String,
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
pub struct PolicyFiles {
    pub files: Vec<PolicyFile>,
}

/// `policy push`: the files replace the whole draft, all or nothing.
#[utoipa::path(
    put,
    path = "/api/v1/draft/files",
    tag = "policy",
    summary = "Replace the draft with policy-as-code files (policy push)",
    request_body = PolicyFiles,
    responses((status = 200, description = "the draft is replaced", body = crate::bodies::DraftReplaced))
)]
pub async fn push_draft(
    State(s): State<AppState>,
    p: Principal,
    Json(body): Json<PolicyFiles>,
) -> ApiResult<Json<crate::bodies::DraftReplaced>> {
    p.require(&[Role::Admin, Role::Secops], "replace the whole draft")?;
    let sources: Vec<(String, String)> = body
        .files
        .iter()
        .map(|f| (f.name.clone(), f.content.clone()))
        .collect();
    let policy = Policy::from_sources(&sources).map_err(policy_errors)?;
    let objects = objects_of(&policy);
    let count = objects.len();
    blocking(move || {
        crate::control::commit(
            &s,
            &p,
            &p.audit("draft.replace"),
            crate::control::Mutation::ReplaceDraft(objects),
        )
    })
    .await?;
    Ok(Json(crate::bodies::DraftReplaced { objects: count }))
}

pub fn objects_of(policy: &Policy) -> Vec<DraftObject> {
    let mut out = Vec::new();
    let mut push = |o: Object| {
        out.push(DraftObject {
            kind: o.kind().to_string(),
            name: o.name().to_string(),
            yaml: format_object(&o),
        })
    };
    policy
        .tiers
        .iter()
        .cloned()
        .for_each(|t| push(Object::Tier(t)));
    policy
        .label_groups
        .values()
        .cloned()
        .for_each(|g| push(Object::LabelGroup(g)));
    policy
        .ip_lists
        .values()
        .cloned()
        .for_each(|l| push(Object::IpList(l)));
    policy
        .services
        .values()
        .cloned()
        .for_each(|x| push(Object::Service(x)));
    policy
        .rulesets
        .iter()
        .cloned()
        .for_each(|r| push(Object::Ruleset(r)));
    out
}

/// Objects as files that `bulkhead policy check` accepts: one file per kind.
fn files_of(objects: &[StoredObject]) -> PolicyFiles {
    let mut files = Vec::new();
    for (i, kind) in ["tier", "label_group", "ip_list", "service", "ruleset"]
        .iter()
        .enumerate()
    {
        let docs: Vec<&str> = objects
            .iter()
            .filter(|o| o.kind == *kind)
            .map(|o| o.yaml.as_str())
            .collect();
        if !docs.is_empty() {
            files.push(PolicyFile {
                name: format!("{}0-{}s.yaml", i, kind.replace('_', "-")),
                content: docs.join("---\n"),
            });
        }
    }
    PolicyFiles { files }
}

#[utoipa::path(
    get,
    path = "/api/v1/draft/files",
    tag = "policy",
    summary = "The draft as policy-as-code files (policy pull)",
    responses((status = 200, description = "the draft as policy files", body = PolicyFiles))
)]
pub async fn pull_draft(State(s): State<AppState>, _p: Principal) -> ApiResult<Json<PolicyFiles>> {
    let objects =
        blocking(move || lock(&s.control)?.draft_objects().map_err(ApiError::from)).await?;
    Ok(Json(files_of(&objects)))
}

#[utoipa::path(
    get,
    path = "/api/v1/draft/diff",
    tag = "policy",
    summary = "Diff of the draft against the provisioned version",
    responses((status = 200, description = "objects the draft changes against the provisioned version", body = Vec<bulkhead_store::control::ObjectDiff>))
)]
pub async fn draft_diff(
    State(s): State<AppState>,
    _p: Principal,
) -> ApiResult<Json<Vec<bulkhead_store::control::ObjectDiff>>> {
    blocking(move || {
        let c = lock(&s.control)?;
        let base = c.latest_version()?.map(|v| v.objects).unwrap_or_default();
        let draft = c.draft_objects()?;
        Ok(Json(diff(&base, &draft)))
    })
    .await
}

/// A provisioned version with its policy as files.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VersionFiles {
    pub version: VersionMeta,
    pub files: Vec<PolicyFile>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ProvisionRequest {
    pub comment: String,
    /// Required when the draft allows nothing (see [`Impact`]): such a version,
    /// enforced, drops every connection but the failsafe ports.
    #[serde(default)]
    pub confirm: bool,
}

/// `GET /api/v1/provision/impact`: what provisioning the draft now would change.
#[utoipa::path(
    get,
    path = "/api/v1/provision/impact",
    tag = "policy",
    summary = "What provisioning the draft would change (rule counts; whether it needs confirm)",
    responses((status = 200, description = "what provisioning would change", body = crate::control::Impact))
)]
pub async fn provision_impact(
    State(s): State<AppState>,
    _p: Principal,
) -> ApiResult<Json<crate::control::Impact>> {
    blocking(move || {
        let (draft, latest) = {
            let c = lock(&s.control)?;
            (c.draft_objects()?, c.latest_version()?)
        };
        let draft = policy_of(&draft)?;
        let provisioned = latest.map(|v| policy_of(&v.objects)).transpose()?;
        Ok(Json(crate::control::impact(provisioned.as_ref(), &draft)))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/provision",
    tag = "policy",
    summary = "Provision the draft as a new immutable version",
    request_body = ProvisionRequest,
    responses((status = 200, description = "the new version", body = bulkhead_store::control::VersionMeta))
)]
pub async fn provision(
    State(s): State<AppState>,
    p: Principal,
    Json(r): Json<ProvisionRequest>,
) -> ApiResult<Json<VersionMeta>> {
    p.require(&[Role::Admin, Role::Secops], "provision policy")?;
    if r.comment.trim().is_empty() {
        return Err(ApiError::invalid(
            "comment",
            "a provision needs a comment saying why",
        ));
    }
    blocking(move || {
        match crate::control::commit(
            &s,
            &p,
            &p.audit("provision"),
            crate::control::Mutation::Provision {
                comment: r.comment.trim().to_string(),
                confirm: r.confirm,
            },
        )? {
            crate::control::Committed::Version(meta) => Ok(Json(meta)),
            other => Err(ApiError::Internal(format!("provision committed {other:?}"))),
        }
    })
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/versions",
    tag = "policy",
    summary = "List provisioned versions",
    responses((status = 200, description = "every version, oldest first", body = Vec<bulkhead_store::control::VersionMeta>))
)]
pub async fn versions(
    State(s): State<AppState>,
    _p: Principal,
) -> ApiResult<Json<Vec<VersionMeta>>> {
    blocking(move || Ok(Json(lock(&s.control)?.versions()?))).await
}

#[utoipa::path(
    get,
    path = "/api/v1/versions/{id}",
    tag = "policy",
    summary = "A version as files",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the version and its policy files", body = VersionFiles))
)]
pub async fn version(
    State(s): State<AppState>,
    _p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<VersionFiles>> {
    blocking(move || {
        let v = lock(&s.control)?
            .version(id)?
            .ok_or_else(|| ApiError::NotFound(format!("version {id}")))?;
        Ok(Json(VersionFiles {
            version: v.meta,
            files: files_of(&v.objects).files,
        }))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/versions/{id}/diff",
    tag = "policy",
    summary = "Diff of a version against the one before",
    params(("id" = u64, Path)),
    responses((status = 200, description = "objects the version changed", body = Vec<bulkhead_store::control::ObjectDiff>))
)]
pub async fn version_diff(
    State(s): State<AppState>,
    _p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<Vec<bulkhead_store::control::ObjectDiff>>> {
    blocking(move || {
        let c = lock(&s.control)?;
        let v = c
            .version(id)?
            .ok_or_else(|| ApiError::NotFound(format!("version {id}")))?;
        let prev = if id > 1 {
            c.version(id - 1)?.map(|v| v.objects).unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(Json(diff(&prev, &v.objects)))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/versions/{id}/revert",
    tag = "policy",
    summary = "Make the draft equal to a version",
    params(("id" = u64, Path)),
    responses((status = 200, description = "the draft equals the version", body = crate::bodies::Reverted))
)]
pub async fn revert(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<u64>,
) -> ApiResult<Json<crate::bodies::Reverted>> {
    p.require(&[Role::Admin, Role::Secops], "revert the draft")?;
    blocking(move || {
        crate::control::commit(
            &s,
            &p,
            &p.audit("draft.revert"),
            crate::control::Mutation::Revert(id),
        )?;
        Ok(Json(crate::bodies::Reverted {
            draft_reverted_to: id,
        }))
    })
    .await
}

/// Why a connection gets its verdict, and the same as text.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ExplainView {
    #[serde(flatten)]
    pub explanation: explain::Explanation,
    pub text: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ExplainRequest {
    pub from: String,
    pub to: String,
    /// `tcp/5432`
    pub port: String,
    pub process: Option<String>,
    /// `draft` (default), `provisioned`, or a version number.
    pub against: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/api/v1/explain",
    tag = "policy",
    summary = "Verdict of a connection against the draft, the provisioned policy or a version",
    request_body = ExplainRequest,
    responses((status = 200, description = "the verdict, the rules that decided, near misses", body = ExplainView))
)]
pub async fn explain_flow(
    State(s): State<AppState>,
    p: Principal,
    Json(r): Json<ExplainRequest>,
) -> ApiResult<Json<ExplainView>> {
    let (proto, port) =
        ServicePort::parse_single(&r.port).map_err(|e| ApiError::invalid("port", e))?;
    blocking(move || {
        let c = lock(&s.control)?;
        let objects = match &r.against {
            None => c.draft_objects()?,
            Some(Value::String(x)) if x == "draft" => c.draft_objects()?,
            Some(Value::String(x)) if x == "provisioned" => {
                c.latest_version()?
                    .ok_or_else(|| ApiError::NotFound("a provisioned version".into()))?
                    .objects
            }
            Some(Value::Number(n)) => {
                let id = n
                    .as_u64()
                    .ok_or_else(|| ApiError::invalid("against", "a version number"))?;
                c.version(id)?
                    .ok_or_else(|| ApiError::NotFound(format!("version {id}")))?
                    .objects
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "against",
                    "draft, provisioned or a version number",
                ));
            }
        };
        drop(c);
        let policy = policy_of(&objects)?;
        let enricher = s.current();
        let inv = &enricher.inventory;
        let resolve = |field: &str, v: &str| -> ApiResult<std::net::IpAddr> {
            if let Ok(a) = v.parse() {
                return Ok(a);
            }
            inv.by_name(v)
                .and_then(|w| w.addresses.first().copied())
                .ok_or_else(|| {
                    ApiError::invalid(field, format!("{v:?} is neither an address nor a workload"))
                })
        };
        let conn = Connection {
            src: resolve("from", &r.from)?,
            dst: resolve("to", &r.to)?,
            proto,
            port,
            process: r.process.clone(),
        };
        // App owners explain only connections that touch their workloads, as they see
        // only such flows.
        let labels_of = |a| {
            inv.by_address(a)
                .map(|w| w.labels.clone())
                .unwrap_or_default()
        };
        if !p.sees(&labels_of(conn.src), &labels_of(conn.dst)) {
            return Err(ApiError::Forbidden(format!(
                "app owners explain only connections to or from their own workloads ({})",
                p.scope
            )));
        }
        // With the hosts' side the enrichment uses (failsafe ports, control plane,
        // quarantines as the agents applied them), so `explain` and the flows' verdicts
        // say the same.
        let explanation = explain::explain_with(&policy, inv, &enricher.hosts, &conn);
        Ok(Json(ExplainView {
            text: explanation.to_text(),
            explanation,
        }))
    })
    .await
}
