//! The exporters this server's collectors hold state for, with what each sent, what
//! failed to decode and what its sequence numbers say never arrived: how an operator
//! sees a lossy switch or a flood before the flows it hides are missed.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use crate::auth::{Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// One exporter (an address; its source ports do not matter) as the decoder sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExporterView {
    pub address: String,
    /// Source port of its latest datagram.
    pub last_port: u16,
    /// Proven by data records; a flood of newcomers cannot evict it.
    pub protected: bool,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub datagrams: u64,
    pub records: u64,
    pub templates_received: u64,
    pub malformed: u64,
    pub no_template: u64,
    /// Records (or datagrams, as the protocol counts) its sequence numbers say were
    /// sent and never arrived.
    pub sequence_gaps: u64,
    pub sequence_resets: u64,
    /// Templates held now.
    pub templates: usize,
    pub pending_sets: usize,
}

/// The exporter tables of every collector worker, added up.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExporterTableView {
    pub exporters: usize,
    pub max_exporters: usize,
    pub protected: usize,
    /// New exporters that found a table full (each evicted an idle one).
    pub table_full: u64,
    pub evicted: u64,
    pub expired: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExporterList {
    pub table: ExporterTableView,
    /// Busiest (most records) first.
    pub items: Vec<ExporterView>,
    /// Exporters past the limit were left out.
    pub more: bool,
}

#[derive(Deserialize)]
pub struct ExporterParams {
    limit: Option<usize>,
}

const MAX_EXPORTERS: usize = 100_000;

#[utoipa::path(
    get,
    path = "/api/v1/collector/exporters",
    tag = "flows",
    summary = "Flow exporters seen by this server's collectors, with loss and decode counters",
    params(("limit" = Option<i64>, Query, description = "at most this many, busiest first (default 1000, maximum 100000)")),
    responses((status = 200, description = "the exporters; `more` says the limit left some out", body = ExporterList))
)]
pub async fn list(
    State(s): State<AppState>,
    p: Principal,
    Query(q): Query<ExporterParams>,
) -> ApiResult<Json<ExporterList>> {
    p.require(
        &[Role::Admin, Role::Secops, Role::Netops],
        "read the flow exporters",
    )?;
    let limit = q.limit.unwrap_or(1000);
    if limit > MAX_EXPORTERS {
        return Err(ApiError::invalid(
            "limit",
            format!("at most {MAX_EXPORTERS}"),
        ));
    }
    let (all, table) = s
        .collector
        .lock()
        .ok()
        .and_then(|c| c.as_ref().map(|c| (c.exporters(), c.exporter_tables())))
        .unwrap_or_default();
    let more = all.len() > limit;
    let items = all
        .into_iter()
        .take(limit)
        .map(|e| ExporterView {
            address: e.address.to_string(),
            last_port: e.last_port,
            protected: e.protected,
            first_seen_ms: e.first_seen_ms,
            last_seen_ms: e.last_seen_ms,
            datagrams: e.counters.datagrams,
            records: e.counters.records,
            templates_received: e.counters.templates,
            malformed: e.counters.malformed,
            no_template: e.counters.no_template,
            sequence_gaps: e.counters.sequence_gaps,
            sequence_resets: e.counters.sequence_resets,
            templates: e.templates,
            pending_sets: e.pending_sets,
        })
        .collect();
    Ok(Json(ExporterList {
        table: ExporterTableView {
            exporters: table.exporters,
            max_exporters: table.max_exporters,
            protected: table.protected,
            table_full: table.table_full,
            evicted: table.evicted,
            expired: table.expired,
        },
        items,
        more,
    }))
}
