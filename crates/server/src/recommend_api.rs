//! Rule recommendation into the draft, and coverage of the draft or a version, over the
//! flow store's hour summaries as the store folds them: one row per conversation.

use axum::Json;
use axum::extract::{Query, State};
use bulkhead_model::{Bucket, Labels};
use bulkhead_policy::{CompiledPolicy, Object, format::format_object};
use bulkhead_recommend::{
    CoverageOptions, Granularity, Options, Traffic, coverage_of_traffic, recommend_traffic,
};
use bulkhead_store::GroupQuery;
use bulkhead_store::control::Change;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, lock, now_ms, policy_of};

/// Default window: the last seven days.
const DEFAULT_WINDOW_MS: i64 = 7 * 24 * 3_600_000;

fn window(from_ms: Option<i64>, to_ms: Option<i64>) -> ApiResult<(i64, i64)> {
    let to = to_ms.unwrap_or_else(|| Bucket::Hour.start_of(now_ms()) + Bucket::Hour.millis());
    let from = from_ms.unwrap_or(to.saturating_sub(DEFAULT_WINDOW_MS));
    if from > to {
        return Err(ApiError::invalid("from_ms", "after to_ms"));
    }
    Ok((from, to))
}

/// Conversations one recommendation or coverage folds at most (about 400 bytes each):
/// past this, the most recently seen are used and the answer says older ones were left
/// out.
pub const MAX_CONVERSATIONS: usize = 500_000;

/// The window's hour summaries the caller may see, folded by the flow store into one
/// row per conversation and process, and whether the limit left older ones out.
pub(crate) fn traffic(
    s: &AppState,
    p: &Principal,
    from: i64,
    to: i64,
) -> ApiResult<(Vec<Traffic>, bool)> {
    let page = s.flows.conversations(&GroupQuery {
        bucket: Bucket::Hour,
        from_ms: from,
        to_ms: to,
        limit: MAX_CONVERSATIONS,
    })?;
    let rows = page
        .items
        .into_iter()
        .filter(|c| p.sees(&c.src_labels, &c.dst_labels))
        .map(|c| Traffic {
            src: c.src,
            dst: c.dst,
            proto: c.proto,
            port: c.port,
            process: c.process,
            connections: c.observations,
            bytes: c.bytes,
            summaries: c.summaries,
        })
        .collect();
    Ok((rows, page.more))
}

pub(crate) fn left_out_note() -> String {
    format!(
        "the window holds more than {MAX_CONVERSATIONS} conversations: the most recently \
         seen {MAX_CONVERSATIONS} were used and older ones were left out; narrow the window \
         or the scope"
    )
}

fn labels(field: &str, s: &str) -> ApiResult<Labels> {
    let l = Labels::parse_list(s).map_err(|e| ApiError::invalid(field, e.to_string()))?;
    if l.is_empty() {
        return Err(ApiError::invalid(field, "no labels"));
    }
    Ok(l)
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// Window, unix milliseconds; default the last seven days.
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    /// Only conversations with an end carrying these labels (`app=payments`).
    scope: Option<String>,
    /// app, role (default) or workload.
    granularity: Option<String>,
    min_observations: Option<u64>,
    /// Label selectors whose conversations are left out.
    #[serde(default)]
    exclude: Vec<String>,
    /// Write the proposal into the draft (default); `false` only returns it.
    apply: Option<bool>,
    /// Other application scopes a shared service needs (default 3).
    shared_min_apps: Option<usize>,
    /// Distinct public addresses on one edge that become `iplist:internet` (default 32).
    internet_min_addresses: Option<usize>,
}

/// One proposed policy object, in canonical YAML.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProposedObject {
    pub kind: String,
    pub name: String,
    pub yaml: String,
}

/// What the recommender proposes, and whether it went into the draft.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Proposal {
    pub from_ms: i64,
    pub to_ms: i64,
    pub applied: bool,
    pub objects: Vec<ProposedObject>,
    pub files: Vec<crate::policy_api::PolicyFile>,
    /// Every place the proposal allows more than was observed.
    pub widenings: Vec<bulkhead_recommend::Widening>,
    pub stats: bulkhead_recommend::Stats,
    pub notes: Vec<String>,
    /// The window held more conversations than one request folds: the most recently
    /// seen were used and older ones left out (a note says so too).
    pub more: bool,
}

/// `POST /api/v1/recommendations`: proposes rules for what the flow store saw and the
/// draft does not yet allow; writes them into the draft (audited, checked as a whole)
/// unless `"apply": false`.
#[utoipa::path(
    post,
    path = "/api/v1/recommendations",
    tag = "policy",
    summary = "Propose rules from observed flows; written into the draft unless apply is false",
    request_body = RecommendRequest,
    responses((status = 200, description = "the proposal, with what it widens", body = Proposal))
)]
pub async fn create(
    State(s): State<AppState>,
    p: Principal,
    Json(req): Json<RecommendRequest>,
) -> ApiResult<Json<Proposal>> {
    let apply = req.apply.unwrap_or(true);
    if apply {
        p.require(
            &[Role::Admin, Role::Secops, Role::AppOwner],
            "write recommendations into the draft",
        )?;
    }
    let (from, to) = window(req.from_ms, req.to_ms)?;
    let mut opts = Options {
        from_ms: Some(from),
        to_ms: Some(to),
        ..Options::default()
    };
    if let Some(g) = &req.granularity {
        opts.granularity = g
            .parse::<Granularity>()
            .map_err(|e| ApiError::invalid("granularity", e))?;
    }
    if let Some(n) = req.min_observations {
        opts.min_observations = n;
    }
    if let Some(n) = req.shared_min_apps {
        opts.shared_min_apps = n;
    }
    if let Some(n) = req.internet_min_addresses {
        opts.internet_min_addresses = n;
    }
    for (i, x) in req.exclude.iter().enumerate() {
        opts.exclude.push(labels(&format!("exclude[{i}]"), x)?);
    }
    let mut scope = match &req.scope {
        Some(sc) => Some(labels("scope", sc)?),
        None => None,
    };
    // App owners recommend only for their own workloads.
    if p.role == Role::AppOwner {
        let mut l = scope.take().unwrap_or_default();
        for (k, v) in p.scope.iter() {
            if l.get(k).is_some_and(|mine| mine != v) {
                return Err(ApiError::Forbidden(format!(
                    "scope {k}={} is outside your scope {}",
                    l.get(k).unwrap_or_default(),
                    p.scope
                )));
            }
            l.set(bulkhead_model::Label {
                key: k.to_string(),
                value: v.to_string(),
            });
        }
        scope = Some(l);
    }
    opts.scope = scope;
    let inventory = s.current().inventory.clone();
    blocking(move || {
        let (rows, more) = traffic(&s, &p, from, to)?;
        let draft = lock(&s.control)?.draft_objects()?;
        let current = policy_of(&draft)?;
        let mut r = recommend_traffic(&rows, &inventory, Some(&current), &opts);
        if more {
            r.notes.push(left_out_note());
        }
        let objects: Vec<&Object> = r.objects().collect();
        let views = objects
            .iter()
            .map(|o| ProposedObject {
                kind: o.kind().to_string(),
                name: o.name().to_string(),
                yaml: format_object(o),
            })
            .collect();
        let files = r
            .rendered_files()
            .into_iter()
            .map(|(name, content)| crate::policy_api::PolicyFile { name, content })
            .collect();
        let mut applied = false;
        if apply && !objects.is_empty() {
            let changes: Vec<Change> = objects
                .iter()
                .map(|o| Change::PutObject {
                    kind: o.kind().to_string(),
                    name: o.name().to_string(),
                    yaml: format_object(o),
                })
                .collect();
            // Proposed names were free in the draft the proposal was made against; if
            // someone took one since, writing would replace their object: refused.
            crate::control::commit(
                &s,
                &p,
                &p.audit("recommendation.apply"),
                crate::control::Mutation::Draft {
                    changes,
                    create_only: true,
                },
            )?;
            applied = true;
        }
        Ok(Json(Proposal {
            from_ms: from,
            to_ms: to,
            applied,
            objects: views,
            files,
            widenings: r.widenings,
            stats: r.stats,
            notes: r.notes,
            more,
        }))
    })
    .await
}

#[derive(Deserialize)]
pub struct CoverageParams {
    /// `draft` (default) or a version number.
    version: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    /// How blocked traffic is grouped: app, role (default) or workload.
    granularity: Option<String>,
    /// Blocked groups to return, largest first (default 100, 0 for all).
    limit: Option<usize>,
}

/// Coverage of a policy over a window.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CoverageView {
    #[serde(flatten)]
    pub coverage: bulkhead_recommend::Coverage,
    /// `draft`, or the version number.
    pub version: Value,
    pub from_ms: i64,
    pub to_ms: i64,
    /// The window held more conversations than one request folds: the most recently
    /// seen were measured and older ones left out.
    pub more: bool,
}

/// `GET /api/v1/coverage`: how much of the observed traffic the draft (or a version)
/// allows, what it would block, and the rules nothing used.
#[utoipa::path(
    get,
    path = "/api/v1/coverage",
    tag = "policy",
    summary = "Coverage of the draft or a version over observed flows",
    params(("version" = Option<String>, Query), ("from_ms" = Option<i64>, Query), ("to_ms" = Option<i64>, Query), ("granularity" = Option<String>, Query), ("limit" = Option<i64>, Query)),
    responses((status = 200, description = "the allowed share, what would be blocked, unused rules", body = CoverageView))
)]
pub async fn get(
    State(s): State<AppState>,
    p: Principal,
    Query(q): Query<CoverageParams>,
) -> ApiResult<Json<CoverageView>> {
    let (from, to) = window(q.from_ms, q.to_ms)?;
    let granularity = match &q.granularity {
        Some(g) => g
            .parse::<Granularity>()
            .map_err(|e| ApiError::invalid("granularity", e))?,
        None => Granularity::Role,
    };
    let version: Option<u64> = match q.version.as_deref() {
        None | Some("draft") => None,
        Some(v) => Some(v.parse().map_err(|_| {
            ApiError::invalid("version", format!("{v:?} is not draft or a version number"))
        })?),
    };
    let inventory = s.current().inventory.clone();
    blocking(move || {
        let objects = {
            let c = lock(&s.control)?;
            match version {
                None => c.draft_objects()?,
                Some(id) => {
                    c.version(id)?
                        .ok_or_else(|| ApiError::NotFound(format!("version {id}")))?
                        .objects
                }
            }
        };
        let policy = policy_of(&objects)?;
        let compiled = CompiledPolicy::compile(&inventory, &policy);
        let (rows, more) = traffic(&s, &p, from, to)?;
        let mut c = coverage_of_traffic(
            &compiled,
            &policy,
            &inventory,
            &rows,
            &CoverageOptions {
                from_ms: Some(from),
                to_ms: Some(to),
                granularity,
                limit: q.limit.unwrap_or(100),
            },
        );
        // App owners see their traffic only, so only their rulesets' hits mean anything.
        if p.role == Role::AppOwner {
            let mine = |ruleset: &str| {
                policy
                    .rulesets
                    .iter()
                    .any(|rs| rs.name == ruleset && rs.scope.includes(&p.scope))
            };
            c.rules.retain(|r| mine(&r.ruleset));
            c.unused_rules
                .retain(|r| r.split_once('/').is_some_and(|(rs, _)| mine(rs)));
            c.over_broad
                .retain(|o| o.rule.split_once('/').is_some_and(|(rs, _)| mine(rs)));
        }
        Ok(Json(CoverageView {
            coverage: c,
            version: match version {
                None => json!("draft"),
                Some(id) => json!(id),
            },
            from_ms: from,
            to_ms: to,
            more,
        }))
    })
    .await
}
