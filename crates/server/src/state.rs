//! What every request handler shares: the control-plane store, the flow store, and the
//! compiled policy (provisioned and draft) the collectors verdict with.

use std::sync::{Arc, Mutex, RwLock};

use bulkhead_enrich::Enricher;
use bulkhead_model::Inventory;
use bulkhead_policy::{CompiledPolicy, Policy, PolicyErrors};
use bulkhead_store::SqliteFlowStore;
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
    pub flows: Arc<Mutex<SqliteFlowStore>>,
    pub enricher: Arc<RwLock<Arc<Enricher>>>,
    /// The collectors running inside the server, if any.
    pub collector: Arc<Mutex<Option<bulkhead_collector::Collector>>>,
    /// Alert sinks (webhooks, syslog), if configured.
    pub dispatcher: Arc<Mutex<Option<Arc<bulkhead_alerts::Dispatcher>>>>,
    pub started_ms: i64,
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
pub fn inventory_of(workloads: &[StoredWorkload]) -> Result<Inventory, ApiError> {
    let located = parse_workloads(workloads.iter().map(|w| (w.name.as_str(), w.json.as_str())))
        .map_err(|e| ApiError::Internal(format!("stored inventory no longer loads: {e}")))?;
    bulkhead_inventory::load_located(located, None)
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
        let (latest, draft, workloads) = {
            let c = lock(&self.control)?;
            (c.latest_version()?, c.draft_objects()?, c.workloads()?)
        };
        let inventory = inventory_of(&workloads)?;
        let provisioned = match latest {
            Some(v) => Some(Arc::new(CompiledPolicy::compile(
                &inventory,
                &policy_of(&v.objects)?,
            ))),
            None => None,
        };
        // A draft with errors cannot be saved, so this only fails on corruption.
        let draft = Some(Arc::new(CompiledPolicy::compile(
            &inventory,
            &policy_of(&draft)?,
        )));
        let enricher = Enricher {
            inventory: Arc::new(inventory),
            provisioned,
            draft,
            listening: Default::default(),
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
