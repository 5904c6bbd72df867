//! The agent's life: restore the last policy, enroll once, then heartbeat, enforce,
//! guard the table and report, whatever the server's availability.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bulkhead_api::{
    AgentEvent, AgentEvents, AgentStatus, EnrollRequest, EnrollResponse, Heartbeat,
    HeartbeatResponse, HostFlow, HostInfo, LoggedPacket, WirePolicy,
};
use reqwest::Method;

use crate::client::{Client, ClientError};
use crate::enforcer::{EnforceError, Enforcer, Tamper};
use crate::flows::{SharedSpooler, Spooler};
use crate::state::{Enrollment, StateDir};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `https://HOST:PORT` of the server's agent listener. Needed to enroll; afterwards
    /// the enrolled one is used unless this overrides it.
    pub server: Option<String>,
    /// `KEY` or `KEY:CA_FINGERPRINT`, as the server printed it.
    pub pairing_key: Option<String>,
    /// The CA to pin, when not given with the key.
    pub ca_fingerprint: Option<String>,
    pub state_dir: PathBuf,
    /// The workload name to enroll as, instead of the host name (hosts that share a
    /// name, or a CMDB naming scheme).
    pub name: Option<String>,
    pub heartbeat: Duration,
    pub tamper_check: Duration,
    /// How often the host inventory (interfaces, listening sockets) is re-read.
    pub host_refresh: Duration,
    /// Flows kept in memory until they are spooled (normally for at most
    /// `spool_every`; longer only while the spool cannot be written); past it new flows
    /// are counted and dropped.
    pub flow_buffer: usize,
    /// Flows per delivered batch.
    pub flow_batch: usize,
    /// The bound of the disk spool (`STATE_DIR/spool`) of batches not yet acknowledged;
    /// when full, the oldest batches are dropped, counted and reported.
    pub spool_max_bytes: u64,
    /// How often observed flows are written to the spool: what a `kill -9` can lose.
    pub spool_every: Duration,
    /// Logged packets kept while the server is unreachable.
    pub log_buffer: usize,
    pub table: String,
    /// Read NFLOG (logged packets) and conntrack (flows). Off only for tests of the
    /// enforcement path alone.
    pub observe: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            server: None,
            pairing_key: None,
            ca_fingerprint: None,
            state_dir: PathBuf::from("/var/lib/bulkhead-agent"),
            name: None,
            heartbeat: Duration::from_secs(5),
            tamper_check: Duration::from_secs(2),
            host_refresh: Duration::from_secs(60),
            flow_buffer: 100_000,
            flow_batch: 5_000,
            spool_max_bytes: crate::spool::DEFAULT_MAX_BYTES,
            spool_every: Duration::from_secs(1),
            log_buffer: 10_000,
            table: "bulkhead".into(),
            observe: true,
        }
    }
}

/// What waits for delivery, shared by the observers and the reporting loop. Flows
/// wait here only until the spool takes them (`flows.rs`).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    events: Vec<AgentEvent>,
    logged: Vec<LoggedPacket>,
    pub(crate) flows: VecDeque<HostFlow>,
    pub(crate) status: AgentStatus,
}

impl Outbox {
    fn push_flow(&mut self, f: HostFlow, cap: usize) {
        if self.flows.len() >= cap {
            self.status.flows_dropped += 1;
        } else {
            self.flows.push_back(f);
        }
    }
    /// Events waiting for an unreachable server, at most this many (the newest kept).
    const MAX_EVENTS: usize = 1_000;

    fn push_event(&mut self, e: AgentEvent) {
        if self.events.len() >= Self::MAX_EVENTS {
            self.events.remove(0);
            self.status.events_dropped += 1;
        }
        self.events.push(e);
    }

    fn push_logged(&mut self, p: LoggedPacket, cap: usize) {
        self.status.logged_packets += 1;
        if self.logged.len() < cap {
            self.logged.push(p);
        }
    }
}

fn split_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once(':') {
        Some((k, fp)) => (k, Some(fp)),
        None => (key, None),
    }
}

async fn host_info(name: Option<&str>) -> anyhow::Result<HostInfo> {
    let mut info = tokio::task::spawn_blocking(bulkhead_host::host_info)
        .await?
        .context("reading the host's inventory")?;
    if let Some(n) = name {
        info.hostname = n.to_string();
    }
    Ok(info)
}

async fn enroll(cfg: &AgentConfig, state: &StateDir) -> anyhow::Result<Enrollment> {
    let server = cfg
        .server
        .clone()
        .context("not enrolled yet: give --server URL and --pairing-key KEY")?;
    let key = cfg
        .pairing_key
        .as_deref()
        .context("not enrolled yet: give --pairing-key KEY (as the server printed it)")?;
    let (secret, fp_in_key) = split_key(key);
    let fingerprint = cfg
        .ca_fingerprint
        .as_deref()
        .or(fp_in_key)
        .context("no CA fingerprint to pin: use the pairing key with its ':FINGERPRINT' part, or --ca-fingerprint")?
        .to_string();
    let client = Client::new(&server, &fingerprint)?;
    let mut delay = Duration::from_secs(1);
    loop {
        let host = host_info(cfg.name.as_deref()).await?;
        let req = EnrollRequest {
            pairing_key: secret.to_string(),
            host,
        };
        match client
            .json::<EnrollResponse>(Method::POST, "/api/v1/agent/enroll", Some(&req))
            .await
        {
            Ok(r) => {
                let e = Enrollment {
                    server: server.clone(),
                    ca_fingerprint: fingerprint.clone(),
                    agent_id: r.agent_id,
                    workload: r.workload,
                    credential: r.credential,
                };
                state.save_enrollment(&e)?;
                match &r.pending {
                    // The credential works once an admin approves; until then the
                    // heartbeats are refused and the last policy (if any) stays.
                    Some(why) => tracing::warn!(
                        "enrolled as agent {} for workload {}, waiting for an admin's approval: {why}",
                        e.agent_id,
                        e.workload
                    ),
                    None => tracing::info!(
                        "enrolled as agent {} for workload {}",
                        e.agent_id,
                        e.workload
                    ),
                }
                return Ok(e);
            }
            // A refused key will not become valid by asking again.
            Err(e) if e.is_refusal() => return Err(e).context("enrollment refused"),
            Err(e) => {
                tracing::warn!("enrollment: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Runs until `shutdown` resolves. The table stays in the kernel when the agent stops:
/// stopping the agent must not open the host.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let state = StateDir::open(&cfg.state_dir)?;
    let enforcer = Arc::new(Mutex::new(Enforcer::new(
        bulkhead_nft::Nft::new(),
        &cfg.table,
    )));
    let enrolled = state.enrollment()?;
    if let Some(server) = cfg
        .server
        .clone()
        .or_else(|| enrolled.as_ref().map(|e| e.server.clone()))
    {
        let endpoints = control_plane(&server).await;
        lock(&enforcer).set_control_plane(endpoints);
    }

    // Fail closed from the first second: the last policy is back in force (in one
    // transaction that replaces whatever table is there) before the server is asked
    // anything, so a reboot or an agent restart with the server down opens nothing.
    if let Some(p) = state.policy()? {
        let e = enforcer.clone();
        let rev = p.revision.clone();
        match tokio::task::spawn_blocking(move || lock(&e).apply(&p)).await? {
            Ok(()) => tracing::info!("restored policy {rev} from the state directory"),
            Err(err) => {
                tracing::error!("restoring policy {rev}: {err}; the kernel keeps what it has")
            }
        }
    }

    let enrollment = match enrolled {
        Some(e) => e,
        None => enroll(&cfg, &state).await?,
    };
    let server = cfg.server.clone().unwrap_or(enrollment.server.clone());
    let client =
        Client::new(&server, &enrollment.ca_fingerprint)?.with_credential(&enrollment.credential);
    tracing::info!(
        "agent {} for workload {} reporting to {}",
        enrollment.agent_id,
        enrollment.workload,
        client.authority()
    );

    let outbox = Arc::new(Mutex::new(Outbox::default()));
    // Batches spooled before a restart (or a kill -9) are sent first, oldest first.
    let spooler = Spooler::new(state.path().join("spool"), cfg.spool_max_bytes);
    if cfg.observe {
        start_observers(&cfg, &enforcer, &outbox)?;
    }
    let spooling = tokio::spawn(crate::flows::spool_loop(
        spooler.clone(),
        outbox.clone(),
        cfg.spool_every,
        cfg.flow_batch,
    ));

    let stop_guard = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guard_outbox = outbox.clone();
    spawn_guard(
        enforcer.clone(),
        GuardMode::Watch,
        cfg.tamper_check,
        stop_guard.clone(),
        move |checked| report_check(&guard_outbox, checked),
    )?;
    let reporting = report_loop(
        cfg.clone(),
        server,
        client,
        state,
        enforcer,
        outbox.clone(),
        spooler.clone(),
    );
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        r = reporting => r?,
    }
    stop_guard.store(true, std::sync::atomic::Ordering::Relaxed);
    spooling.abort();
    // What the observers buffered goes to disk, to be sent after the restart.
    let batch = cfg.flow_batch;
    let _ =
        tokio::task::spawn_blocking(move || crate::flows::spool_buffered(&spooler, &outbox, batch))
            .await;
    tracing::info!("agent stopping; the table stays in force");
    Ok(())
}

/// The addresses the servers' URLs (a comma-separated list) resolve to, which every
/// table keeps reachable. A name that does not resolve now (DNS down at boot) gives
/// none: the restored table then holds what the policy says, and the next policy from
/// the server adds them.
/// How often the server's name is resolved again for the table's control-plane rule.
const RESOLVE_EVERY: Duration = Duration::from_secs(300);

async fn control_plane(servers: &str) -> Vec<std::net::SocketAddr> {
    let mut all = Vec::new();
    for server in crate::client::server_urls(servers) {
        all.extend(server_addresses(server).await);
    }
    all.sort();
    all.dedup();
    all
}

async fn server_addresses(server: &str) -> Vec<std::net::SocketAddr> {
    let Ok(url) = reqwest::Url::parse(server) else {
        return Vec::new();
    };
    let Some(host) = url.host_str() else {
        return Vec::new();
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(addrs) => {
            let mut v: Vec<_> = addrs.collect();
            v.sort();
            v.dedup();
            v
        }
        Err(e) => {
            tracing::warn!("resolving the server {host}: {e}; its address is not pinned open");
            Vec::new()
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another thread must not take enforcement down with it: the data is
    // still consistent (every update is a single assignment).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn start_observers(
    cfg: &AgentConfig,
    enforcer: &Arc<Mutex<Enforcer>>,
    outbox: &Arc<Mutex<Outbox>>,
) -> anyhow::Result<()> {
    let group = lock(enforcer)
        .applied_policy()
        .map(|p| p.log_group)
        .unwrap_or(100);
    let mut nflog = bulkhead_host::NflogReader::open(group)
        .with_context(|| format!("listening to NFLOG group {group}"))?;
    let (ob, cap) = (outbox.clone(), cfg.log_buffer);
    std::thread::Builder::new()
        .name("nflog".into())
        .spawn(move || {
            let mut attempts = crate::attempts::Attempts::default();
            loop {
                match nflog.recv(Duration::from_millis(500)) {
                    Ok(packets) => {
                        let mut o = lock(&ob);
                        for p in packets {
                            if attempts.first(&p) {
                                o.push_logged(p, cap);
                            } else {
                                o.status.logged_repeats += 1;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!("NFLOG: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })?;
    let mut conntrack =
        bulkhead_host::ConntrackMonitor::open().context("subscribing to conntrack events")?;
    let (ob, cap) = (outbox.clone(), cfg.flow_buffer);
    std::thread::Builder::new()
        .name("conntrack".into())
        .spawn(move || {
            loop {
                match conntrack.recv(Duration::from_millis(500)) {
                    Ok(flows) => {
                        let mut o = lock(&ob);
                        for f in flows {
                            o.push_flow(f, cap);
                        }
                    }
                    Err(e) => {
                        tracing::error!("conntrack: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })?;
    Ok(())
}

/// How the guard learns that the table may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// Woken by every nftables change in this namespace as it is committed (netlink, as
    /// `nft monitor` is), and at least every interval.
    Watch,
    /// Every interval only (the fallback; and the peer bench/tamper.sh measures).
    Poll,
}

/// Guards the table from a thread of its own: on every wake-up it compares the kernel
/// with what was applied, repairs a difference at once and hands the result to
/// `report`. At least every `every` (services come and go without nftables changes).
/// Where the watch cannot be had (nft acting on another namespace, or netlink refused),
/// it polls. Stops within `every` of `stop` being set.
pub fn spawn_guard(
    enforcer: Arc<Mutex<Enforcer>>,
    mode: GuardMode,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
    mut report: impl FnMut(Result<Option<Tamper>, EnforceError>) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let mut watch = if mode == GuardMode::Watch && lock(&enforcer).in_own_namespace() {
        bulkhead_host::NftablesWatch::open()
            .inspect_err(|e| tracing::warn!("{e}; the table is checked every {every:?} instead"))
            .ok()
    } else {
        None
    };
    std::thread::Builder::new()
        .name("guard".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match watch.as_mut().map(|w| w.wait(every)) {
                    None => std::thread::sleep(every),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!("{e}; the table is checked every {every:?} instead");
                        watch = None;
                    }
                }
                let checked = lock(&enforcer).check();
                report(checked);
            }
        })
}

/// A check's result into the log, the status and the events for the server.
fn report_check(outbox: &Mutex<Outbox>, checked: Result<Option<Tamper>, EnforceError>) {
    let mut o = lock(outbox);
    match checked {
        Ok(None) => {}
        Ok(Some(t)) => {
            tracing::warn!(
                "tamper: the table was changed outside Bulkhead; restored. {}",
                t.difference
            );
            o.status.tamper_events += 1;
            o.push_event(AgentEvent::Tamper {
                at_ms: now_ms(),
                difference: t.difference,
            });
        }
        Err(err) => {
            tracing::error!("checking the table: {err}");
            o.status.last_error = Some(err.to_string());
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn report_loop(
    cfg: AgentConfig,
    server: String,
    client: Client,
    state: StateDir,
    enforcer: Arc<Mutex<Enforcer>>,
    outbox: Arc<Mutex<Outbox>>,
    spooler: SharedSpooler,
) -> anyhow::Result<()> {
    let mut last_host: Option<(Instant, HostInfo)> = None;
    let mut rejected: Option<String> = None;
    let mut reachable = true;
    let mut resolved = Instant::now();
    let mut tick = tokio::time::interval(cfg.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The server's address may move (DNS, failover): what the table keeps open to
        // it follows. A name that does not resolve now keeps the endpoints it had.
        if resolved.elapsed() >= RESOLVE_EVERY {
            resolved = Instant::now();
            let endpoints = control_plane(&server).await;
            if !endpoints.is_empty() {
                let e = enforcer.clone();
                match tokio::task::spawn_blocking(move || lock(&e).follow_control_plane(endpoints))
                    .await?
                {
                    Ok(true) => tracing::info!("the server's address changed; table applied again"),
                    Ok(false) => {}
                    Err(err) => tracing::error!("following the server's new address: {err}"),
                }
            }
        }
        // Host inventory: sent when it changed, and at least every refresh period.
        let host = match &last_host {
            Some((at, _)) if at.elapsed() < cfg.host_refresh => None,
            _ => match host_info(cfg.name.as_deref()).await {
                Ok(h) => {
                    let changed = last_host.as_ref().is_none_or(|(_, old)| *old != h);
                    last_host = Some((Instant::now(), h.clone()));
                    changed.then_some(h)
                }
                Err(e) => {
                    tracing::warn!("{e:#}");
                    None
                }
            },
        };
        // One short lock: a guard taken inside the struct below would live until the end
        // of the statement.
        let (applied_revision, (applied_at_ms, checked_at_ms)) = {
            let e = lock(&enforcer);
            (e.applied_revision().map(String::from), e.times())
        };
        let hb = Heartbeat {
            host: host.clone(),
            applied_revision,
            status: {
                let spool = lock(&spooler).stats();
                let o = lock(&outbox);
                let mut s = o.status.clone();
                s.flows_buffered = o.flows.len() as u64 + spool.flows;
                s.spool_flows = spool.flows;
                s.spool_bytes = spool.bytes;
                s.spool_batches_dropped = spool.batches_dropped;
                s.spool_flows_dropped = spool.flows_dropped;
                s.spool_corrupt = spool.corrupt;
                (s.applied_at_ms, s.checked_at_ms) = (applied_at_ms, checked_at_ms);
                s
            },
        };
        let resp: HeartbeatResponse = match client
            .json(Method::POST, "/api/v1/agent/heartbeat", Some(&hb))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if reachable {
                    tracing::warn!(
                        "server unreachable ({e}); enforcing policy {} until it is back",
                        lock(&enforcer).applied_revision().unwrap_or("(none)")
                    );
                }
                reachable = false;
                // The host inventory was not delivered: send it again next time.
                if host.is_some() {
                    last_host = None;
                }
                continue;
            }
        };
        if !reachable {
            tracing::info!("server reachable again");
            reachable = true;
        }
        let applied = lock(&enforcer).applied_revision().map(String::from);
        if applied.as_deref() != Some(resp.revision.as_str())
            && rejected.as_deref() != Some(resp.revision.as_str())
        {
            update_policy(&client, &state, &enforcer, &outbox, &mut rejected).await;
        }
        if let Err(e) = deliver_events(&client, &outbox).await {
            tracing::warn!("delivering events: {e}");
        }
        if let Err(e) = crate::flows::deliver(&client, &spooler, &outbox).await {
            tracing::warn!("delivering flows: {e}");
        }
    }
}

async fn update_policy(
    client: &Client,
    state: &StateDir,
    enforcer: &Arc<Mutex<Enforcer>>,
    outbox: &Arc<Mutex<Outbox>>,
    rejected: &mut Option<String>,
) {
    let policy: WirePolicy = match client
        .json(Method::GET, "/api/v1/agent/policy", None::<&()>)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("fetching policy: {e}");
            return;
        }
    };
    let e = enforcer.clone();
    let p = policy.clone();
    let result = tokio::task::spawn_blocking(move || lock(&e).apply(&p)).await;
    let mut o = lock(outbox);
    match result {
        Ok(Ok(())) => {
            if policy.quarantined {
                tracing::info!(
                    "applied policy {}: quarantined (failsafe ports and the control plane only)",
                    policy.revision
                );
            } else {
                tracing::info!(
                    "applied policy {} ({} mode, {} inbound and {} outbound rules)",
                    policy.revision,
                    policy.mode,
                    policy.inbound.len(),
                    policy.outbound.len()
                );
            }
            *rejected = None;
            o.status.last_error = None;
            if let Err(err) = state.save_policy(&policy) {
                tracing::error!("saving the applied policy: {err}");
                o.status.last_error = Some(err.to_string());
            }
        }
        Ok(Err(err)) => {
            tracing::error!("{err}; the previous table stays in force");
            *rejected = Some(policy.revision.clone());
            o.status.last_error = Some(err.to_string());
            o.push_event(AgentEvent::PolicyRejected {
                at_ms: now_ms(),
                revision: policy.revision,
                error: err.to_string(),
            });
        }
        Err(join) => tracing::error!("applying policy panicked: {join}"),
    }
}

async fn deliver_events(client: &Client, outbox: &Arc<Mutex<Outbox>>) -> Result<(), ClientError> {
    let events = {
        let mut o = lock(outbox);
        let mut events = std::mem::take(&mut o.events);
        if !o.logged.is_empty() {
            events.push(AgentEvent::Logged {
                packets: std::mem::take(&mut o.logged),
            });
        }
        events
    };
    if events.is_empty() {
        return Ok(());
    }
    let body = AgentEvents { events };
    match client
        .json::<serde_json::Value>(Method::POST, "/api/v1/agent/events", Some(&body))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            // Put them back in front: nothing is lost while the server is away (the
            // buffers are bounded where they are filled).
            let mut o = lock(outbox);
            let mut back = body.events;
            for ev in back.drain(..) {
                match ev {
                    AgentEvent::Logged { packets } => {
                        let mut p = packets;
                        p.append(&mut o.logged);
                        o.logged = p;
                    }
                    other => o.push_event(other),
                }
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_keys_carry_an_optional_fingerprint() {
        assert_eq!(split_key("bh_pair_ab:cd"), ("bh_pair_ab", Some("cd")));
        assert_eq!(split_key("bh_pair_ab"), ("bh_pair_ab", None));
    }

    #[test]
    fn full_buffers_count_what_they_drop() {
        let mut o = Outbox::default();
        let f = HostFlow {
            protocol: 6,
            src: "10.0.0.1".parse().unwrap(),
            src_port: 40000,
            dst: "10.0.0.2".parse().unwrap(),
            dst_port: 80,
            direction: bulkhead_api::HostDirection::Outbound,
            packets: 1,
            bytes: 60,
            reverse_packets: 0,
            reverse_bytes: 0,
            start_ms: 0,
            end_ms: 0,
            process: None,
        };
        for _ in 0..5 {
            o.push_flow(f.clone(), 3);
        }
        assert_eq!(o.flows.len(), 3);
        assert_eq!(o.status.flows_dropped, 2);
    }
}
