//! Flow queries and the sprawl report over the embedded flow store.

use axum::Json;
use axum::extract::{Query, State};
use bulkhead_enrich::sprawl::{SeenHost, sprawl};
use bulkhead_model::{Bucket, Labels, ServicePort, VerdictKind};
use bulkhead_store::FlowQuery;
use serde::Deserialize;

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, blocking, now_ms};

#[derive(Deserialize)]
pub struct FlowParams {
    bucket: Option<String>,
    /// Window start and end, unix milliseconds; default the last hour.
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    workload: Option<String>,
    labels: Option<String>,
    address: Option<String>,
    port: Option<String>,
    verdict: Option<String>,
    /// `oldest` (the default) or `newest` bucket first.
    order: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// The bucket width and `[from, to)` window of a flow request: minute buckets and the
/// last hour unless it says otherwise.
fn window(
    bucket: Option<&str>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> ApiResult<(Bucket, i64, i64)> {
    let bucket = match bucket {
        None | Some("minute") => Bucket::Minute,
        Some("hour") => Bucket::Hour,
        Some(other) => {
            return Err(ApiError::invalid(
                "bucket",
                format!("{other:?} is not minute or hour"),
            ));
        }
    };
    let to = to_ms.unwrap_or_else(now_ms);
    let from = from_ms.unwrap_or(to.saturating_sub(3_600_000));
    if from > to {
        return Err(ApiError::invalid("from_ms", "after to_ms"));
    }
    Ok((bucket, from, to))
}

#[utoipa::path(
    get,
    path = "/api/v1/flows",
    tag = "flows",
    summary = "Query flow summaries",
    params(("bucket" = Option<String>, Query), ("from_ms" = Option<i64>, Query), ("to_ms" = Option<i64>, Query), ("workload" = Option<String>, Query), ("labels" = Option<String>, Query), ("address" = Option<String>, Query), ("port" = Option<String>, Query), ("verdict" = Option<String>, Query), ("order" = Option<String>, Query, description = "oldest (default) or newest bucket first: with newest, a limit keeps the newest part of the window"), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, description = "flow summaries in bucket order; `more` says whether the limit left any out", body = FlowPage))
)]
pub async fn query(
    State(s): State<AppState>,
    p: Principal,
    Query(f): Query<FlowParams>,
) -> ApiResult<Json<FlowPage>> {
    let (bucket, from, to) = window(f.bucket.as_deref(), f.from_ms, f.to_ms)?;
    let mut q = FlowQuery::new(bucket, from, to);
    q.workload = f.workload;
    q.limit = f.limit.unwrap_or(100);
    if q.limit > 10_000 {
        return Err(ApiError::invalid("limit", "at most 10000"));
    }
    q.offset = f.offset.unwrap_or(0);
    q.newest_first = match f.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "order",
                format!("{other:?} is not oldest or newest"),
            ));
        }
    };
    if let Some(l) = f.labels {
        q.labels =
            Some(Labels::parse_list(&l).map_err(|e| ApiError::invalid("labels", e.to_string()))?);
    }
    if let Some(a) = f.address {
        q.address =
            Some(a.parse().map_err(|_| {
                ApiError::invalid("address", format!("{a:?} is not an IP address"))
            })?);
    }
    if let Some(port) = f.port {
        let (proto, port) =
            ServicePort::parse_single(&port).map_err(|e| ApiError::invalid("port", e))?;
        q.proto = Some(proto);
        q.port = Some(port);
    }
    if let Some(v) = f.verdict {
        q.verdict = Some(
            v.parse::<VerdictKind>()
                .map_err(|e| ApiError::invalid("verdict", e))?,
        );
    }
    // App owners see only traffic touching their workloads: the filter is part of the
    // query, so pages stay full.
    if p.role == Role::AppOwner {
        q.labels = Some(match q.labels.take() {
            None => p.scope.clone(),
            Some(mut l) => {
                for (k, v) in p.scope.iter() {
                    l.set(
                        bulkhead_model::Label::new(k, v)
                            .map_err(|e| ApiError::Internal(e.to_string()))?,
                    );
                }
                l
            }
        });
    }
    // One row past the page says whether the limit left anything out.
    let limit = q.limit;
    q.limit = limit.saturating_add(1);
    let mut rows = blocking(move || Ok(s.flows.query(&q)?)).await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| p.sees(&r.src_labels, &r.dst_labels))
        .collect();
    Ok(Json(FlowPage {
        from_ms: from,
        to_ms: to,
        items: rows,
        more,
    }))
}

/// Flow summaries of a window.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FlowPage {
    pub from_ms: i64,
    pub to_ms: i64,
    pub items: Vec<bulkhead_model::FlowSummary>,
    /// Summaries matching the query lie past this page (at `offset + limit`): a
    /// limit left them out.
    pub more: bool,
}

#[derive(Deserialize)]
pub struct GroupParams {
    bucket: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    limit: Option<usize>,
}

/// At most this many groups per answer.
const MAX_GROUPS: usize = 100_000;

#[utoipa::path(
    get,
    path = "/api/v1/flows/groups",
    tag = "flows",
    summary = "Flow summaries of a window folded by ends, service and verdicts (what the map draws)",
    params(("bucket" = Option<String>, Query), ("from_ms" = Option<i64>, Query), ("to_ms" = Option<i64>, Query), ("limit" = Option<i64>, Query, description = "at most this many groups, the most recently seen first (default and maximum 100000)")),
    responses((status = 200, description = "the groups, newest first; `more` says the limit left some out", body = GroupPage))
)]
pub async fn groups(
    State(s): State<AppState>,
    p: Principal,
    Query(f): Query<GroupParams>,
) -> ApiResult<Json<GroupPage>> {
    let (bucket, from, to) = window(f.bucket.as_deref(), f.from_ms, f.to_ms)?;
    let limit = f.limit.unwrap_or(MAX_GROUPS);
    if limit > MAX_GROUPS {
        return Err(ApiError::invalid("limit", format!("at most {MAX_GROUPS}")));
    }
    let q = bulkhead_store::GroupQuery {
        bucket,
        from_ms: from,
        to_ms: to,
        limit,
    };
    let page = blocking(move || Ok(s.flows.groups(&q)?)).await?;
    // App owners see the groups touching their scope, as they see flows.
    let items = page
        .items
        .into_iter()
        .filter(|g| p.sees(&g.src_labels, &g.dst_labels))
        .collect();
    Ok(Json(GroupPage {
        from_ms: from,
        to_ms: to,
        items,
        more: page.more,
    }))
}

/// Flow groups of a window.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct GroupPage {
    pub from_ms: i64,
    pub to_ms: i64,
    pub items: Vec<bulkhead_store::FlowGroup>,
    /// Groups seen less recently were left out by the limit.
    pub more: bool,
}

#[derive(Deserialize)]
pub struct SprawlParams {
    /// Window in hours back from now; default 168 (7 days).
    hours: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/reports/sprawl",
    tag = "flows",
    summary = "The sprawl report",
    params(("hours" = Option<i64>, Query)),
    responses((status = 200, description = "the sprawl report", body = bulkhead_enrich::sprawl::SprawlReport))
)]
pub async fn sprawl_report(
    State(s): State<AppState>,
    p: Principal,
    Query(q): Query<SprawlParams>,
) -> ApiResult<Json<bulkhead_enrich::sprawl::SprawlReport>> {
    p.require(
        &[Role::Admin, Role::Secops, Role::Netops],
        "read the estate-wide sprawl report",
    )?;
    let hours = q.hours.unwrap_or(168);
    if !(1..=24 * 366).contains(&hours) {
        return Err(ApiError::invalid("hours", "from 1 to 8784"));
    }
    let end = Bucket::Hour.start_of(now_ms()) + Bucket::Hour.millis();
    let start = end.saturating_sub(hours * 3_600_000);
    let enricher = s.current();
    let seen = blocking(move || Ok(s.flows.seen_addresses(Bucket::Hour, start, end)?)).await?;
    let hosts: Vec<SeenHost> = seen
        .into_iter()
        .map(|a| SeenHost {
            address: a.address,
            first_seen_ms: a.first_seen_ms,
            last_seen_ms: a.last_seen_ms,
            bytes: a.bytes,
            connections: a.connections,
            peers: a.peers,
            served: a.served.iter().map(|x| (x.proto, x.port)).collect(),
            reporters: a.reporters,
        })
        .collect();
    Ok(Json(sprawl(&enricher.inventory, &hosts, start, end)))
}
