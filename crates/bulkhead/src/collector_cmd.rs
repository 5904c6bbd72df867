//! `bulkhead collector`: flow collectors as a process of their own, beside one or more
//! servers. It reads the inventory and the provisioned policy from the control store
//! (following changes within a second), verdicts and enriches what it receives, writes
//! summaries to the flow store and records alerts in the control store. Several may run
//! at once on one flow store: ClickHouse folds their writes of the same key together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;

#[derive(Args, Debug)]
pub struct CollectorArgs {
    /// Data directory: control.sqlite and flows.sqlite unless --database and --flows
    /// name other stores.
    #[arg(long, env = "BULKHEAD_DATA")]
    pub data: PathBuf,
    /// The control store the servers use (postgres://…); data/control.sqlite otherwise.
    #[arg(long, env = "BULKHEAD_DATABASE")]
    pub database: Option<String>,
    /// The flow store: `sqlite` (data/flows.sqlite) or clickhouse://host:port/database.
    #[arg(long, env = "BULKHEAD_FLOWS")]
    pub flows: Option<String>,
    /// Listen addresses (NetFlow/IPFIX/sFlow over UDP), repeatable.
    #[arg(long, env = "BULKHEAD_COLLECT", value_delimiter = ',', required = true)]
    pub collect: Vec<SocketAddr>,
    /// Worker threads per address (default: one per core).
    #[arg(long, env = "BULKHEAD_COLLECTOR_WORKERS")]
    pub collector_workers: Option<usize>,
    #[command(flatten)]
    pub record_times: RecordTimeArgs,
}

/// Which record times a collector believes (docs/flows.md, "Record times").
#[derive(Args, Debug, Clone)]
pub struct RecordTimeArgs {
    /// How far a record may end ahead of this machine's clock (exporter clock skew)
    /// before it is counted and filed at the time it was received.
    #[arg(long, env = "BULKHEAD_MAX_CLOCK_SKEW", value_parser = humantime::parse_duration, default_value = "5s")]
    pub max_clock_skew: std::time::Duration,
    /// How long ago a record may have ended before it is counted and filed at the
    /// time it was received (a wrapped NetFlow v5 uptime says 1970).
    #[arg(long, env = "BULKHEAD_MAX_RECORD_AGE", value_parser = humantime::parse_duration, default_value = "24h")]
    pub max_record_age: std::time::Duration,
}

impl RecordTimeArgs {
    pub fn bounds(&self) -> bulkhead_enrich::TimeBounds {
        bulkhead_enrich::TimeBounds {
            max_ahead_ms: self.max_clock_skew.as_millis().min(i64::MAX as u128) as i64,
            max_behind_ms: self.max_record_age.as_millis().min(i64::MAX as u128) as i64,
        }
    }

    /// The collectors' settings for `listen` with these bounds.
    pub fn collector_config(
        &self,
        listen: Vec<SocketAddr>,
        workers: usize,
    ) -> bulkhead_collector::CollectorConfig {
        bulkhead_collector::CollectorConfig {
            listen,
            workers: workers.max(1),
            time_bounds: Some(self.bounds()),
            ..Default::default()
        }
    }
}

pub fn run(a: CollectorArgs) -> anyhow::Result<()> {
    if let Some(url) = &a.database
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        eprintln!("error: --database must be a postgres:// or postgresql:// URL");
        return Err(crate::Reported(crate::EXIT_INVALID).into());
    }
    let flows = bulkhead_store::FlowLocation::parse(a.flows.as_deref(), &a.data).map_err(|e| {
        eprintln!("error: --flows: {e}");
        crate::Reported(crate::EXIT_INVALID)
    })?;
    let state = bulkhead_server::open_with(&a.data, a.database.as_deref(), Some(&flows))?;
    let workers = a
        .collector_workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    bulkhead_server::start_collectors_with(
        &state,
        a.record_times.collector_config(a.collect.clone(), workers),
    )?;
    for addr in bulkhead_server::collector_addrs(&state) {
        eprintln!("collecting flows on udp {addr} into {}", flows.describe());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let st = state.clone();
    rt.block_on(async move {
        tokio::select! {
            () = bulkhead_server::watch_changes(st.clone(), std::time::Duration::from_secs(1)) => {}
            () = bulkhead_server::watch_retention(st, bulkhead_server::RETENTION_EVERY) => {}
            () = crate::server_cmd::ctrl_c(Arc::new(AtomicBool::new(false))) => {}
        }
    });
    bulkhead_server::stop_collectors(&state);
    let held = state
        .flow_writes
        .held
        .load(std::sync::atomic::Ordering::Relaxed);
    if held > 0 {
        eprintln!("stopped with {held} summaries the flow store had not accepted");
    }
    Ok(())
}
