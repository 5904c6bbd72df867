//! `bulkhead demo`: the server with an embedded store on a synthetic estate, its
//! traffic streamed to its own collector over loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bulkhead_server::demo::{self, DemoOptions};
use clap::Args;

use crate::server_cmd::{SinkArgs, ctrl_c, runtime, workers};

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[arg(long, env = "BULKHEAD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the demo's collector listens (loopback).
    #[arg(long, default_value = "127.0.0.1:4739")]
    pub collect: SocketAddr,
    /// The agent listener (TLS, loopback): agents enroll and report here, never on
    /// the API port.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub agent_listen: SocketAddr,
    /// Failed authentications one address may make per minute before it gets 429.
    #[arg(long, default_value_t = bulkhead_server::guard::AUTH_FAILURES_PER_MINUTE)]
    pub auth_failures_per_minute: u32,
    /// Data directory (default: a new temporary one, removed at exit).
    #[arg(long, env = "BULKHEAD_DATA")]
    pub data: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub apps: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub sinks: SinkArgs,
}

pub fn demo(mut a: DemoArgs) -> anyhow::Result<()> {
    a.sinks.settle(None, None)?;
    if !a.collect.ip().is_loopback() {
        anyhow::bail!(
            "--collect {}: the demo sends its traffic only to loopback",
            a.collect
        );
    }
    let temp = match &a.data {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let data = a.data.clone().unwrap_or_else(|| {
        temp.as_ref()
            .map(|t| t.path().to_path_buf())
            .unwrap_or_default()
    });
    if !a.agent_listen.ip().is_loopback() {
        anyhow::bail!(
            "--agent-listen {}: the demo listens only on loopback",
            a.agent_listen
        );
    }
    let mut state = bulkhead_server::open(&data)?;
    let identity = bulkhead_server::tls::load_or_create(
        &data.join("tls"),
        &bulkhead_server::tls::default_names(a.agent_listen, &[]),
    )?;
    state.agent_settings = Arc::new(bulkhead_server::AgentSettings {
        ca_fingerprint: Some(identity.ca_fingerprint.clone()),
        ..Default::default()
    });
    state.guard = Arc::new(bulkhead_server::guard::Guard::new(
        a.auth_failures_per_minute,
        bulkhead_server::guard::AUDITED_REFUSALS_PER_MINUTE,
    ));
    let opts = DemoOptions {
        listen: a.listen,
        collect: a.collect,
        data: data.clone(),
        apps: a.apps,
        seed: a.seed,
    };
    if demo::load(&state, &opts)? {
        eprintln!("loaded the synthetic estate and provisioned its starter policy (monitor mode)");
    }
    let token = bulkhead_server::bootstrap_admin(&state)?;
    let rt = runtime()?;
    {
        let _guard = rt.enter();
        bulkhead_server::start_alert_sinks(&state, &a.sinks.sinks())?;
    }
    bulkhead_server::start_collectors(&state, vec![a.collect], workers(None))?;
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let (stop, opts) = (stop.clone(), opts.clone());
        std::thread::spawn(move || demo::stream(&opts, stop))
    };
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen).await?;
        let url = format!("http://{}", listener.local_addr()?);
        outln!("Bulkhead demo is running at {url}");
        match &token {
            Some(t) => outln!("admin token: {t}"),
            None => outln!(
                "admin token: the one printed when {} was first used",
                data.display()
            ),
        }
        let agents = tokio::net::TcpListener::bind(a.agent_listen).await?;
        outln!(
            "agents enroll at https://{} (CA {})",
            agents.local_addr()?,
            data.join("tls/ca.pem").display()
        );
        tokio::spawn(bulkhead_server::serve_agents(
            state.clone(),
            agents,
            identity,
            std::future::pending(),
        ));
        outln!("try: curl -H 'Authorization: Bearer <token>' {url}/api/v1/alerts");
        outln!("Ctrl-C to stop");
        tokio::spawn(bulkhead_server::agent_api::watch_offline(state.clone()));
        tokio::spawn(bulkhead_server::rollout::scheduler(
            state.clone(),
            std::time::Duration::from_secs(30),
        ));
        tokio::spawn(bulkhead_server::watch_retention(
            state.clone(),
            bulkhead_server::RETENTION_EVERY,
        ));
        bulkhead_server::serve(state.clone(), listener, ctrl_c(stop.clone())).await
    });
    stop.store(true, Ordering::SeqCst);
    let _ = streamer.join();
    bulkhead_server::stop_collectors(&state);
    result
}
