//! What every request handler shares: the control-plane store, the flow store, and the
//! compiled policy (provisioned and draft) the collectors verdict with.

use std::sync::{Arc, Mutex, RwLock};

use bulkhead_enrich::Enricher;
use bulkhead_model::Inventory;
use bulkhead_policy::{CompiledPolicy, Policy, PolicyErrors};
use bulkhead_store::SharedFlowStore;
use bulkhead_store::control::{ControlStore, StoredObject, StoredWorkload};

use crate::error::{ApiError, FieldError};

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Clone)]
pub struct AppState {
    pub control: Arc<Mutex<ControlStore>>,
    /// Shared without a lock: the store runs reads side by side and orders its writes
    /// itself (`FlowStore`), so a query never waits for the collectors' writes.
    pub flows: SharedFlowStore,
    pub enricher: Arc<RwLock<Arc<Enricher>>>,
    /// The collectors running inside the server, if any.
    pub collector: Arc<Mutex<Option<bulkhead_collector::Collector>>>,
    /// Alert sinks (webhooks, syslog), if configured.
    pub dispatcher: Arc<Mutex<Option<Arc<bulkhead_alerts::Dispatcher>>>>,
    pub started_ms: i64,
    /// What per-host policies are computed from, and the ones computed so far.
    pub hosts: Arc<RwLock<HostInputs>>,
    pub agent_settings: Arc<AgentSettings>,
    /// Rollout notices: the SMTP relay and the secret owners' webhooks are signed with.
    pub notifier: Arc<Notifier>,
    /// Held while an agent's flow batch is checked, stored and acknowledged, so that each
    /// batch is stored once even when a retry overtakes a slow first attempt.
    pub flow_batches: Arc<Mutex<()>>,
    /// Held while rollouts are advanced or rolled back: one step at a time.
    pub rollouts: Arc<tokio::sync::Mutex<()>>,
    /// Refused requests: counts, audit budget, addresses locked out.
    pub guard: Arc<crate::guard::Guard>,
    /// Connections the listeners turned away.
    pub connections: Arc<crate::listener::ConnectionStats>,
    /// Bumped by every write through the control service (under the store's lock): a
    /// validation made on an older snapshot is stale.
    pub writes: Arc<std::sync::atomic::AtomicU64>,
    /// What the collectors' writer to the flow store did (stored, held, dropped).
    pub flow_writes: Arc<crate::flow_writer::FlowWriteCounters>,
    /// Whether this server led at its singletons' last round (several servers on one
    /// PostgreSQL elect one; see `ControlStore::lead`).
    pub leading: Arc<std::sync::atomic::AtomicBool>,
    /// Agents' flow records whose times could not be true (see `TimeBounds`).
    pub agent_times: Arc<ClampedTimes>,
}

/// Records filed at the time they were received because the times they carried lay
/// ahead of the clock beyond the skew, or further back than any live source reports.
#[derive(Debug, Default)]
pub struct ClampedTimes {
    pub future: std::sync::atomic::AtomicU64,
    pub past: std::sync::atomic::AtomicU64,
}

/// The provisioned policy and the inventory it applies to, as of the last recompile, and
/// a cache of per-workload wire policies computed from them (cleared on every recompile).
#[derive(Debug, Default)]
pub struct HostInputs {
    pub policy: Option<Arc<Policy>>,
    pub inventory: Arc<Inventory>,
    pub cache: std::collections::HashMap<String, Arc<bulkhead_api::WirePolicy>>,
    /// Bumped by every recompile: a policy computed from older inputs is not cached.
    pub generation: u64,
}

/// The provisioned policy, or the empty one before anything was provisioned (every
/// connection then falls to the default deny).
pub(crate) fn policy_or_empty(policy: &Option<Arc<Policy>>) -> Result<Arc<Policy>, ApiError> {
    match policy {
        Some(p) => Ok(p.clone()),
        None => Policy::from_sources::<&str, &str>(&[])
            .map(Arc::new)
            .map_err(|e| ApiError::Internal(format!("empty policy: {e}"))),
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppState")
    }
}

/// Runs blocking store work off the async executor.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

pub fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, ApiError> {
    m.lock()
        .map_err(|_| ApiError::Internal("a store lock was poisoned".into()))
}

pub fn policy_errors(e: PolicyErrors) -> ApiError {
    let details: Vec<FieldError> =
        e.0.iter()
            .map(|e| FieldError {
                field: if e.origin.file.is_empty() {
                    e.field.clone()
                } else {
                    format!("{}: {}", e.origin.file, e.field)
                },
                message: e.message.clone(),
                line: Some(e.origin.line).filter(|l| *l > 0),
                column: Some(e.origin.column).filter(|c| *c > 0),
            })
            .collect();
    ApiError::Invalid {
        message: details
            .first()
            .map(|d| format!("{}: {}", d.field, d.message))
            .unwrap_or_else(|| "invalid policy".into()),
        details,
    }
}

/// Stored objects are canonical YAML; the name a stored object is known by in messages
/// is `kind/name`.
pub fn policy_of(objects: &[StoredObject]) -> Result<Policy, ApiError> {
    let sources: Vec<(String, String)> = objects
        .iter()
        .map(|o| (format!("{}/{}", o.kind, o.name), o.yaml.clone()))
        .collect();
    Policy::from_sources(&sources).map_err(policy_errors)
}

/// The stored inventory, each workload parsed on its own: one document per workload keeps
/// every parse small whatever the size of the estate.
pub fn inventory_of(
    workloads: &[StoredWorkload],
    rules: Option<&bulkhead_inventory::LabelRules>,
) -> Result<Inventory, ApiError> {
    let located = parse_workloads(workloads.iter().map(|w| (w.name.as_str(), w.json.as_str())))
        .map_err(|e| ApiError::Internal(format!("stored inventory no longer loads: {e}")))?;
    bulkhead_inventory::load_located(located, rules)
        .map_err(|e| ApiError::Internal(format!("stored inventory no longer loads: {e}")))
}

/// Parses workload JSON documents one by one.
pub fn parse_workloads<'a>(
    items: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<bulkhead_inventory::Located>, bulkhead_inventory::InventoryErrors> {
    let mut located = Vec::new();
    let mut errors = Vec::new();
    for (name, json) in items {
        match bulkhead_inventory::parse_structured(name, &format!("[{json}]")) {
            Ok(l) => located.extend(l),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(located)
    } else {
        Err(bulkhead_inventory::InventoryErrors(errors))
    }
}

impl AppState {
    /// Recompiles the provisioned version and the draft against the current inventory and
    /// publishes them to the collectors. Called at start and after every change.
    pub fn recompile(&self) -> Result<(), ApiError> {
        let (latest, draft, workloads, rules) = {
            let c = lock(&self.control)?;
            (
                c.latest_version()?,
                c.draft_objects()?,
                c.workloads()?,
                c.label_rules()?,
            )
        };
        // Stored rules were checked before they were stored: failing to parse them now is
        // corruption, and the server keeps what it compiled last rather than drop labels
        // (a deny that selects a label would stop matching).
        let rules = match rules.filter(|r| !r.yaml.trim().is_empty()) {
            Some(r) => Some(
                bulkhead_inventory::parse_label_rules("label-rules", &r.yaml).map_err(|e| {
                    ApiError::Internal(format!("stored label rules no longer load: {e}"))
                })?,
            ),
            None => None,
        };
        let inventory = Arc::new(inventory_of(&workloads, rules.as_ref())?);
        let provisioned_policy = match latest {
            Some(v) => Some(Arc::new(policy_of(&v.objects)?)),
            None => None,
        };
        // Agents pick up the change at their next heartbeat (revisions are content hashes,
        // so an unchanged host keeps its table).
        if let Ok(mut h) = self.hosts.write() {
            *h = HostInputs {
                policy: provisioned_policy.clone(),
                inventory: inventory.clone(),
                cache: Default::default(),
                generation: h.generation + 1,
            };
        }
        let hosts = self
            .agent_settings
            .host_context(crate::enforcement::quarantines_applied(self, &inventory)?);
        let provisioned = provisioned_policy
            .as_ref()
            .map(|p| Arc::new(CompiledPolicy::compile_with(&inventory, p, &hosts)));
        // A draft with errors cannot be saved, so this only fails on corruption.
        let draft = Some(Arc::new(CompiledPolicy::compile_with(
            &inventory,
            &policy_of(&draft)?,
            &hosts,
        )));
        let enricher = Enricher {
            inventory,
            provisioned,
            draft,
            listening: Default::default(),
            hosts,
        };
        *self
            .enricher
            .write()
            .map_err(|_| ApiError::Internal("enricher lock".into()))? = Arc::new(enricher);
        Ok(())
    }

    pub fn current(&self) -> Arc<Enricher> {
        self.enricher.read().map(|e| e.clone()).unwrap_or_default()
    }
}

/// How the server treats agents; set from the server's configuration.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Inbound ports every agent keeps open whatever the policy says (management access).
    pub failsafe_ports: Vec<bulkhead_model::ServicePort>,
    /// Outbound ports every agent keeps open, quarantine included (`--failsafe-out`).
    pub failsafe_outbound: Vec<bulkhead_model::ServicePort>,
    /// The NFLOG group agents log denied connections to.
    pub log_group: u16,
    /// An agent silent for longer is marked offline and alerted.
    pub offline_after_ms: i64,
    /// The CA fingerprint agents pin, when the TLS listener is on.
    pub ca_fingerprint: Option<String>,
    /// The agent listener's address when it is a specific one: every agent's table
    /// lets its host reach it, and verdicts say so (a wildcard listen address names
    /// no endpoint, so verdicts then cannot).
    pub control_plane: Vec<std::net::SocketAddr>,
}

impl AgentSettings {
    /// What every agent's table adds to policy, for verdicts that say what the kernel
    /// does; `quarantine_applied` comes from the agents' reports.
    pub fn host_context(
        &self,
        quarantine_applied: std::collections::BTreeSet<String>,
    ) -> bulkhead_policy::HostContext {
        bulkhead_policy::HostContext {
            failsafe_ports: self.failsafe_ports.clone(),
            failsafe_outbound: self.failsafe_outbound.clone(),
            control_plane: self.control_plane.clone(),
            quarantine_applied,
        }
    }
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            failsafe_ports: vec![bulkhead_model::ServicePort::tcp(22)],
            failsafe_outbound: Vec::new(),
            log_group: 100,
            offline_after_ms: 60_000,
            ca_fingerprint: None,
            control_plane: Vec::new(),
        }
    }
}

/// Where rollout notices go besides the alert sinks.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    pub mailer: Option<bulkhead_alerts::Mailer>,
    /// Signs owners' webhooks (the server's webhook secret).
    pub webhook_secret: Option<Vec<u8>>,
    /// Extra CA certificates (PEM) https webhooks may chain to.
    pub webhook_ca: Option<Vec<u8>>,
}
