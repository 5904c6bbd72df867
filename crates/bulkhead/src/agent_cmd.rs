//! `bulkhead agent`: the host agent, run by the service manager on every managed host.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The server's agent listener, https://HOST:PORT (its --agent-listen), or a
    /// comma-separated list of replicas sharing one CA (a call that cannot reach one
    /// goes to the next). Needed to enroll; afterwards the enrolled servers are used
    /// unless this is given.
    #[arg(long, env = "BULKHEAD_SERVER")]
    pub server: Option<String>,
    /// The pairing key as the server printed it (`KEY:CA_FINGERPRINT`). Used once, to
    /// enroll.
    #[arg(long, env = "BULKHEAD_PAIRING_KEY", hide_env_values = true)]
    pub pairing_key: Option<String>,
    /// SHA-256 fingerprint of the server's CA, when the pairing key does not carry it.
    #[arg(long, env = "BULKHEAD_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<String>,
    /// Where the agent keeps its credential and last policy.
    #[arg(
        long,
        env = "BULKHEAD_STATE_DIR",
        default_value = "/var/lib/bulkhead-agent"
    )]
    pub state_dir: PathBuf,
    /// The workload name to enroll as [default: the host name].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// How often the owned table is read back and compared.
    #[arg(long, default_value_t = 2)]
    pub tamper_check_secs: u64,
    /// Flows kept in memory until they are written to the spool (normally a second;
    /// longer only while the spool cannot be written). Past it, flows are counted and
    /// dropped.
    #[arg(long, default_value_t = 100_000)]
    pub flow_buffer: usize,
    /// Bound of the disk spool (STATE_DIR/spool) holding flow batches until the server
    /// acknowledges them, in MiB. When full, the oldest batches are dropped, counted and
    /// reported to the server.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub spool_max_mib: u64,
}

pub fn run(a: AgentArgs) -> anyhow::Result<()> {
    let cfg = bulkhead_agent::AgentConfig {
        server: a.server,
        pairing_key: a.pairing_key,
        ca_fingerprint: a.ca_fingerprint,
        state_dir: a.state_dir,
        name: a.name,
        heartbeat: Duration::from_secs(a.heartbeat_secs.max(1)),
        tamper_check: Duration::from_secs(a.tamper_check_secs.max(1)),
        flow_buffer: a.flow_buffer,
        spool_max_bytes: a.spool_max_mib << 20,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bulkhead_agent::run(
        cfg,
        crate::server_cmd::ctrl_c(Arc::new(AtomicBool::new(false))),
    ))
}
