//! The control plane: one source of truth for inventory, labels and policy, with a REST
//! API under `/api/v1`, token auth with label-scoped roles, an append-only audit log,
//! draft → provisioned versions, collectors that verdict live traffic, and alerts.

mod admin_api;
pub mod agent_api;
mod alerts;
mod auth;
pub mod bodies;
mod breach;
mod console;
pub mod control;
pub mod demo;
pub mod enforcement;
mod error;
mod exporters_api;
pub mod flow_writer;
mod flows_api;
pub mod guard;
mod inventory_api;
pub mod listener;
pub mod openapi;
mod policy_api;
mod quarantine;
mod recommend_api;
pub mod rollout;
mod state;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::routing::get;
use bulkhead_collector::{Collector, CollectorConfig};
use bulkhead_store::control::{AuditContext, ControlStore};
use bulkhead_store::{FlowLocation, Retention, SqliteFlowStore};
use utoipa_axum::{router::OpenApiRouter, routes};

pub use admin_api::TokenRequest;
pub use auth::{Role, token_hash};
pub use error::ApiError;
pub use state::{AgentSettings, AppState, Notifier, now_ms};

/// Requests larger than this are refused before they are read.
pub const MAX_BODY_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data: PathBuf,
    pub listen: SocketAddr,
    /// Flow collectors inside the server; empty for none.
    pub collect: Vec<SocketAddr>,
    pub collector_workers: usize,
}

/// How long one request may take before it is answered 408 (its blocking work, if any,
/// finishes in the background and is not half-applied: stores write in transactions).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The REST API's routes with their OpenAPI operations: each handler carries its
/// `#[utoipa::path]`, so the document is made from the routes and cannot forget one.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(inventory_api::list))
        .routes(routes!(inventory_api::import))
        .routes(routes!(
            inventory_api::get_label_rules,
            inventory_api::put_label_rules
        ))
        .routes(routes!(inventory_api::preview_label_rules))
        .routes(routes!(
            inventory_api::get,
            inventory_api::put,
            inventory_api::delete
        ))
        .routes(routes!(policy_api::list_objects))
        .routes(routes!(
            policy_api::get_object,
            policy_api::put_object,
            policy_api::delete_object
        ))
        .routes(routes!(policy_api::pull_draft, policy_api::push_draft))
        .routes(routes!(policy_api::draft_diff))
        .routes(routes!(policy_api::provision))
        .routes(routes!(policy_api::provision_impact))
        .routes(routes!(policy_api::versions))
        .routes(routes!(policy_api::version))
        .routes(routes!(policy_api::version_diff))
        .routes(routes!(policy_api::revert))
        .routes(routes!(policy_api::explain_flow))
        .routes(routes!(recommend_api::create))
        .routes(routes!(recommend_api::get))
        .routes(routes!(flows_api::query))
        .routes(routes!(flows_api::groups))
        .routes(routes!(exporters_api::list))
        .routes(routes!(flows_api::sprawl_report))
        .routes(routes!(alerts::acknowledge))
        .routes(routes!(alerts::resolve))
        .routes(routes!(admin_api::audit))
        .routes(routes!(admin_api::create_token, admin_api::list_tokens))
        .routes(routes!(admin_api::revoke_token))
        .routes(routes!(openapi::document))
        .routes(routes!(console::whoami))
        .routes(routes!(quarantine::quarantine))
        .routes(routes!(quarantine::release))
        .routes(routes!(enforcement::enforcement))
        .routes(routes!(enforcement::set_mode))
        .routes(routes!(rollout::list, rollout::create))
        .routes(routes!(rollout::get))
        .routes(routes!(rollout::rollback))
        .routes(routes!(
            agent_api::pairing::list_pairing_profiles,
            agent_api::pairing::create_pairing_profile
        ))
        .routes(routes!(agent_api::pairing::revoke_pairing_profile))
        .routes(routes!(agent_api::agents::list_agents))
        .routes(routes!(agent_api::agents::delete_agent))
        .routes(routes!(agent_api::agents::approve_agent))
        .routes(routes!(alerts::list))
}

/// The agent protocol's routes (served on the agent listener only), documented alike.
pub fn agent_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(agent_api::enroll::enroll))
        .routes(routes!(agent_api::calls::heartbeat))
        .routes(routes!(agent_api::calls::policy))
        .routes(routes!(agent_api::calls::events))
        .routes(routes!(agent_api::calls::flows))
}

/// The API listener: the REST API for people and tools, the console, health and
/// metrics. Agent routes are not served here (they are on the agent listener), so an
/// agent credential or a pairing key is never accepted where the admin API is.
pub fn router(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let app = api
        .route(
            "/api/v1/agent/{*rest}",
            axum::routing::any(agent_route_elsewhere),
        )
        .route("/healthz", get(admin_api::healthz))
        .route("/readyz", get(admin_api::readyz))
        .route("/metrics", get(admin_api::metrics))
        .fallback(console::serve);
    with_limits(app, state)
}

/// The agent listener: enrollment and the enrolled agents' calls, and health; nothing
/// of the admin API or the console.
pub fn agent_router(state: AppState) -> Router {
    let (agent, _) = agent_routes().split_for_parts();
    let app = agent
        .route("/healthz", get(admin_api::healthz))
        .fallback(not_on_agent_listener);
    with_limits(app, state)
}

async fn agent_route_elsewhere() -> ApiError {
    ApiError::NotFound(
        "agent routes on this listener (agents talk to the agent listener, --agent-listen)".into(),
    )
}

async fn not_on_agent_listener() -> ApiError {
    ApiError::NotFound(
        "this route on the agent listener (it serves only /api/v1/agent/* and /healthz)".into(),
    )
}

/// What both listeners share: body limits, the request timeout, JSON errors and the
/// refusal guard (outermost, so a locked-out address costs nothing more).
fn with_limits(app: Router<AppState>, state: AppState) -> Router {
    app.layer(tower_http::limit::RequestBodyLimitLayer::new(
        MAX_BODY_BYTES,
    ))
    .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        REQUEST_TIMEOUT,
    ))
    .layer(axum::middleware::from_fn(error::json_errors))
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        guard::refusals,
    ))
    .with_state(state)
}

/// Opens (or creates) both stores under `data` and compiles the current policy.
pub fn open(data: &std::path::Path) -> anyhow::Result<AppState> {
    open_with(data, None, None)
}

/// As [`open`], with the control-plane state in the PostgreSQL database at `database`
/// (a `postgres://` URL) when given, and flow summaries where `flows` says (by default
/// `data/flows.sqlite`). Call it outside the runtime or from a blocking task: both
/// clients block.
pub fn open_with(
    data: &std::path::Path,
    database: Option<&str>,
    flows: Option<&FlowLocation>,
) -> anyhow::Result<AppState> {
    private_data_dir(data)?;
    let control = match database {
        None => ControlStore::open(data.join("control.sqlite"))?,
        Some(url) => ControlStore::connect_postgres(url)?,
    };
    let flows = match flows {
        None => Box::new(SqliteFlowStore::open(data.join("flows.sqlite"))?),
        Some(location) => location.open()?,
    };
    let state = AppState {
        control: Arc::new(Mutex::new(control)),
        flows: Arc::from(flows),
        enricher: Arc::new(RwLock::new(Arc::new(Default::default()))),
        collector: Arc::new(Mutex::new(None)),
        dispatcher: Arc::new(Mutex::new(None)),
        started_ms: now_ms(),
        hosts: Default::default(),
        agent_settings: Default::default(),
        notifier: Default::default(),
        flow_batches: Default::default(),
        rollouts: Default::default(),
        guard: Default::default(),
        connections: Default::default(),
        writes: Default::default(),
        flow_writes: Default::default(),
        agent_times: Default::default(),
        leading: Default::default(),
    };
    state
        .recompile()
        .map_err(|e| anyhow::anyhow!("compiling the stored policy: {e}"))?;
    Ok(state)
}

/// Entries Bulkhead itself keeps in a data directory (`lost+found` when it is a mount).
const DATA_ENTRIES: &[&str] = &["control.sqlite", "flows.sqlite", "tls", "lost+found"];

/// Creates the data directory readable by its owner only (0700): it holds the token
/// hashes, the audit log and the agents' CA key. An existing one open to group or others
/// is tightened, with a warning, if it holds nothing but Bulkhead's files; a directory
/// shared with other things (`--data /var/lib`, a sticky `/tmp`) is only warned about,
/// since changing its mode would break whatever else lives there.
fn private_data_dir(data: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data)
        .with_context(|| format!("creating the data directory {}", data.display()))?;
    let mode = std::fs::metadata(data)
        .with_context(|| format!("reading the data directory {}", data.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let ours = |name: &std::ffi::OsStr| {
        let name = name.to_string_lossy();
        DATA_ENTRIES.iter().any(|known| {
            name.strip_prefix(known)
                .is_some_and(|rest| ["", "-wal", "-shm", "-journal"].contains(&rest))
        })
    };
    let only_ours = std::fs::read_dir(data)
        .with_context(|| format!("reading the data directory {}", data.display()))?
        .map(|e| e.map(|e| ours(&e.file_name())))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .all(|ours| ours);
    if only_ours && mode & 0o1000 == 0 {
        let private = mode & 0o700;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(private)).with_context(
            || {
                format!(
                    "the data directory {} is open to group or others (mode {mode:o}) \
                     and its mode cannot be changed; make it {private:o}",
                    data.display()
                )
            },
        )?;
        tracing::warn!(
            "the data directory {} was open to group or others (mode {mode:o}); \
             changed to {private:o}",
            data.display()
        );
    } else {
        tracing::warn!(
            "the data directory {} is open to group or others (mode {mode:o}) and holds \
             files that are not Bulkhead's, so its mode is left alone; give Bulkhead a \
             directory of its own",
            data.display()
        );
    }
    Ok(())
}

/// On first start, creates an admin token and returns it (to be shown once).
pub fn bootstrap_admin(state: &AppState) -> anyhow::Result<Option<String>> {
    let mut c = state.control.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    if !c.tokens()?.is_empty() {
        return Ok(None);
    }
    let audit = AuditContext {
        actor: "bulkhead (first start)".into(),
        source: "local".into(),
        at_ms: now_ms(),
        action: "token.create".into(),
    };
    let req = TokenRequest {
        name: "initial admin".into(),
        role: "admin".into(),
        scope: None,
        expires_in_days: Some(365),
    };
    let (token, _) =
        admin_api::issue_token(&mut c, &req, &audit).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(token))
}

/// Stops the collectors (flushing every open summary into the store).
pub fn stop_collectors(state: &AppState) {
    if let Some(c) = state.collector.lock().ok().and_then(|mut c| c.take()) {
        c.stop();
    }
}

/// Where alerts go besides the API: webhooks and syslog.
#[derive(Debug, Clone, Default)]
pub struct AlertSinks {
    pub webhooks: Vec<String>,
    pub webhook_secret: Option<String>,
    /// Extra CA certificates (PEM) https webhooks may chain to.
    pub webhook_ca: Option<Vec<u8>>,
    pub syslog: Vec<String>,
    pub syslog_tcp: bool,
    pub syslog_cef: bool,
}

/// Builds the alert dispatcher; must run inside a tokio runtime.
pub fn start_alert_sinks(state: &AppState, sinks: &AlertSinks) -> anyhow::Result<()> {
    use bulkhead_alerts::{Dispatcher, Sink, SyslogFormat, SyslogSink, Transport, WebhookSink};
    let mut all: Vec<Arc<dyn Sink>> = Vec::new();
    for url in &sinks.webhooks {
        let secret = sinks.webhook_secret.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "a webhook needs a signing secret (--webhook-secret or BULKHEAD_WEBHOOK_SECRET)"
            )
        })?;
        let sink = WebhookSink::new(url, secret.into_bytes())
            .and_then(|w| match &sinks.webhook_ca {
                Some(pem) => w.with_root_certificates(pem),
                None => Ok(w),
            })
            .map_err(|e| anyhow::anyhow!("webhook: {e}"))?;
        all.push(Arc::new(sink));
    }
    for addr in &sinks.syslog {
        let transport = if sinks.syslog_tcp {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let format = if sinks.syslog_cef {
            SyslogFormat::Cef
        } else {
            SyslogFormat::Rfc5424
        };
        all.push(Arc::new(SyslogSink::new(addr.clone(), transport, format)));
    }
    if !all.is_empty() {
        let d = Arc::new(Dispatcher::new(all, 10_000));
        *state
            .dispatcher
            .lock()
            .map_err(|_| anyhow::anyhow!("dispatcher lock"))? = Some(d);
    }
    Ok(())
}

/// Starts the collectors feeding the flow store and the alerts, with the default
/// settings (record times held to [`bulkhead_enrich::TimeBounds::LIVE`]).
pub fn start_collectors(
    state: &AppState,
    listen: Vec<SocketAddr>,
    workers: usize,
) -> anyhow::Result<()> {
    start_collectors_with(
        state,
        CollectorConfig {
            listen,
            workers: workers.max(1),
            ..CollectorConfig::default()
        },
    )
}

/// Starts the collectors feeding the flow store and the alerts.
pub fn start_collectors_with(state: &AppState, config: CollectorConfig) -> anyhow::Result<()> {
    if config.listen.is_empty() {
        return Ok(());
    }
    let (flows, alerting) = (state.flows.clone(), state.clone());
    let counters = state.flow_writes.clone();
    let mut backlog = flow_writer::FlowBacklog::default();
    let collector = Collector::start(&config, state.enricher.clone(), move |batch| {
        // Alerts first: they go to the control store, whatever the flow store does.
        if !batch.is_empty() {
            alerts_from_summaries(&alerting, &batch);
        }
        // Summaries the store refuses are held (bounded, counted) and written with the
        // next batch: nothing vanishes silently.
        backlog.write(&*flows, batch, &counters);
    })?;
    *state
        .collector
        .lock()
        .map_err(|_| anyhow::anyhow!("collector lock"))? = Some(collector);
    let watched = state.clone();
    std::thread::Builder::new()
        .name("exporter-watch".into())
        .spawn(move || watch_exporters(&watched, EXPORTER_WATCH_EVERY))?;
    Ok(())
}

/// How often the collectors' exporters are checked for loss and a full table.
pub const EXPORTER_WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Raises the alerts of [`alerts::exporter_observations`] until the collectors stop.
fn watch_exporters(state: &AppState, every: std::time::Duration) {
    let mut watch = alerts::ExporterWatch::default();
    let mut first_round = true;
    loop {
        let seen = state.collector.lock().ok().and_then(|c| {
            c.as_ref()
                .map(|c| (c.exporters(), c.metrics().exporter_table_full))
        });
        let Some((exporters, table_full)) = seen else {
            return;
        };
        let observations = alerts::exporter_observations(
            &mut watch,
            first_round,
            &exporters,
            table_full,
            now_ms(),
        );
        first_round = false;
        if !observations.is_empty() {
            let recorded = state
                .control
                .lock()
                .map_err(|_| "control store lock poisoned".to_string())
                .and_then(|mut c| c.record_alerts(observations).map_err(|e| e.to_string()));
            match recorded {
                Ok(records) => {
                    if let Some(d) = state.dispatcher.lock().ok().and_then(|d| d.clone()) {
                        for (a, how) in &records {
                            if *how != bulkhead_store::control::AlertRecorded::Repeated {
                                d.send(alerts::event_of(a));
                            }
                        }
                    }
                }
                Err(e) => tracing::error!("recording exporter alerts: {e}"),
            }
        }
        std::thread::sleep(every);
    }
}

/// How often [`watch_retention`] expires old flows.
pub const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Expires flows past the retention once a minute, on the one process (server or
/// collector) that holds the retention lock among all sharing the control store, so
/// several replicas do not each drop the same partitions. Runs until the process ends.
pub async fn watch_retention(state: AppState, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = state.clone();
        let round = tokio::task::spawn_blocking(move || -> Result<Option<u64>, String> {
            let elected = s
                .control
                .lock()
                .map_err(|_| "control store lock poisoned".to_string())?
                .lead_retention()
                .map_err(|e| e.to_string())?;
            if !elected {
                return Ok(None);
            }
            let now = now_ms();
            let cutoff = Retention::DEFAULT.cutoff(now);
            // Agents' flow streams silent for long enough that nothing re-sent of them
            // could be stored any more (see FLOW_STREAM_MEMORY_MS).
            let forgotten = s
                .flows
                .forget_batches(now - agent_api::calls::FLOW_STREAM_MEMORY_MS)
                .map_err(|e| e.to_string())?;
            if forgotten > 0 {
                tracing::info!("retention: forgot {forgotten} silent agent flow streams");
            }
            s.flows.expire(cutoff).map(Some).map_err(|e| e.to_string())
        })
        .await;
        match round {
            Ok(Ok(Some(n))) if n > 0 => tracing::info!("retention: expired {n} old summaries"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("retention: {e}"),
            Err(e) => tracing::error!("retention task: {e}"),
        }
    }
}

/// Records the alerts a batch of flow summaries raises (blocked and potentially blocked
/// traffic) and announces the new ones to the alert sinks, as the collectors do.
pub fn alerts_from_summaries(state: &AppState, batch: &[bulkhead_model::FlowSummary]) {
    let announced = match state.control.lock() {
        Ok(mut c) => alerts::record_from_summaries(&mut c, batch).unwrap_or_else(|e| {
            tracing::error!("recording alerts: {e}");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    };
    if let Some(d) = state.dispatcher.lock().ok().and_then(|d| d.clone()) {
        for a in &announced {
            d.send(alerts::event_of(a));
        }
    }
}

/// The addresses the collectors are bound to.
pub fn collector_addrs(state: &AppState) -> Vec<SocketAddr> {
    state
        .collector
        .lock()
        .ok()
        .and_then(|c| c.as_ref().map(|c| c.local_addrs().to_vec()))
        .unwrap_or_default()
}

/// Serves the API listener until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stats = state.connections.clone();
    let app = router(state);
    listener::serve(
        app,
        listener,
        None,
        listener::Limits::default(),
        stats,
        shutdown,
    )
    .await
}

/// Serves the agent listener (TLS) until `shutdown` resolves.
pub async fn serve_agents(
    state: AppState,
    listener: tokio::net::TcpListener,
    identity: tls::TlsIdentity,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stats = state.connections.clone();
    let app = agent_router(state);
    tls::serve_tls(
        app,
        listener,
        identity,
        listener::Limits::default(),
        stats,
        shutdown,
    )
    .await
}

/// Whether the audit entries after `seen` include a change of state. Refused requests
/// are audited too, and anyone who can reach the API can cause them: they must not make
/// every replica recompile every second.
fn changes_state(s: &AppState, seen: u64) -> Result<bool, error::ApiError> {
    const LOOK: usize = 256;
    let entries = state::lock(&s.control)?.audit(seen, LOOK)?;
    Ok(entries.len() == LOOK || entries.iter().any(|e| e.action != guard::REFUSED_ACTION))
}

/// Follows changes other writers make to the control store (other server replicas,
/// `bulkhead collector` processes, the CLI): every `every`, reads the head of the audit
/// log, which every change appends to, and recompiles when it moved. Polling the
/// append-only head is one indexed read and cannot miss a change, where a notification
/// channel loses what is sent while its connection is down.
pub async fn watch_changes(s: AppState, every: std::time::Duration) {
    let head = |s: &AppState| -> Result<u64, error::ApiError> {
        Ok(state::lock(&s.control)?.audit_head()?)
    };
    let s2 = s.clone();
    let mut seen = state::blocking(move || head(&s2)).await.unwrap_or(0);
    loop {
        tokio::time::sleep(every).await;
        let s2 = s.clone();
        let result = state::blocking(move || {
            let now = head(&s2)?;
            if now != seen && changes_state(&s2, seen)? {
                s2.recompile()?;
            }
            Ok(now)
        })
        .await;
        match result {
            Ok(now) => seen = now,
            Err(e) => tracing::warn!("following changes to the control store: {e}"),
        }
    }
}
