use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;

/// Settings come from flags, then environment variables (BULKHEAD_*), then the config
/// file (--config), then defaults.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// A YAML config file with any of: data, database, flows, listen, collect,
    /// collector_workers, webhook, webhook_secret, webhook_secret_file, syslog, syslog_tcp,
    /// syslog_cef.
    #[arg(long, env = "BULKHEAD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: control.sqlite (inventory, policy, versions, tokens, audit, alerts)
    /// and flows.sqlite (flow summaries).
    #[arg(long, env = "BULKHEAD_DATA")]
    pub data: Option<PathBuf>,
    /// Keep the control-plane state (everything but flow summaries) in PostgreSQL
    /// instead of data/control.sqlite: postgres://user[:password]@host[:port]/dbname
    /// (a Unix socket directory as host: postgresql://user@%2Frun%2Fpostgresql/db).
    #[arg(long, env = "BULKHEAD_DATABASE")]
    pub database: Option<String>,
    /// Where flow summaries live: `sqlite` (data/flows.sqlite, the default) or a
    /// ClickHouse database, clickhouse://[user[:password]@]host[:port]/database (HTTP,
    /// port 8123 by default; created when missing). See docs/scale.md.
    #[arg(long, env = "BULKHEAD_FLOWS")]
    pub flows: Option<String>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "BULKHEAD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Flow collector listen addresses (NetFlow/IPFIX/sFlow), repeatable.
    #[arg(long, env = "BULKHEAD_COLLECT", value_delimiter = ',')]
    pub collect: Vec<SocketAddr>,
    /// Collector worker threads per address (default: one per core).
    #[arg(long, env = "BULKHEAD_COLLECTOR_WORKERS")]
    pub collector_workers: Option<usize>,
    #[command(flatten)]
    pub record_times: crate::collector_cmd::RecordTimeArgs,
    /// Seconds between rounds of the rollout calendar (on the leader only, when several
    /// servers share a database).
    #[arg(long, env = "BULKHEAD_ROLLOUT_EVERY", default_value_t = 30)]
    pub rollout_every: u64,
    /// Failed authentications one address may make per minute before it gets 429.
    #[arg(long, env = "BULKHEAD_AUTH_FAILURES_PER_MINUTE", default_value_t = bulkhead_server::guard::AUTH_FAILURES_PER_MINUTE)]
    pub auth_failures_per_minute: u32,
    #[command(flatten)]
    pub sinks: SinkArgs,
    #[command(flatten)]
    pub agents: AgentListenArgs,
}

/// Where agents connect (TLS, with the server's own CA) and how they are treated.
#[derive(Args, Debug, Default)]
pub struct AgentListenArgs {
    /// TLS listen address for agents (and the API over TLS), e.g. 0.0.0.0:8443. Off
    /// when not given.
    #[arg(long, env = "BULKHEAD_AGENT_LISTEN")]
    pub agent_listen: Option<SocketAddr>,
    /// Extra names or addresses for the server certificate (agents check the name they
    /// connect to), repeatable.
    #[arg(long, env = "BULKHEAD_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Seconds of silence after which an agent is offline (and alerted) [default: 60].
    #[arg(long, env = "BULKHEAD_AGENT_OFFLINE_AFTER")]
    pub agent_offline_after: Option<u64>,
    /// Inbound ports agents never block (management access), repeatable [default: tcp/22].
    #[arg(long = "failsafe", env = "BULKHEAD_FAILSAFE", value_delimiter = ',')]
    pub failsafe: Vec<String>,
    /// Outbound ports agents never block, even in quarantine (DNS, NTP, a management
    /// network), repeatable [default: none].
    #[arg(
        long = "failsafe-out",
        env = "BULKHEAD_FAILSAFE_OUT",
        value_delimiter = ','
    )]
    pub failsafe_out: Vec<String>,
}

/// The config file: the same settings as the flags.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data: Option<PathBuf>,
    database: Option<String>,
    flows: Option<String>,
    listen: Option<SocketAddr>,
    #[serde(default)]
    collect: Vec<SocketAddr>,
    collector_workers: Option<usize>,
    #[serde(default)]
    webhook: Vec<String>,
    webhook_secret: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    #[serde(default)]
    syslog: Vec<String>,
    #[serde(default)]
    syslog_tcp: bool,
    #[serde(default)]
    syslog_cef: bool,
    smtp_relay: Option<String>,
    smtp_from: Option<String>,
    agent_listen: Option<SocketAddr>,
    #[serde(default)]
    tls_san: Vec<String>,
    agent_offline_after: Option<u64>,
    #[serde(default)]
    failsafe: Vec<String>,
    #[serde(default)]
    failsafe_out: Vec<String>,
}

impl ServerArgs {
    /// Fills what flags and environment left unset from the config file, then defaults.
    fn resolve(mut self) -> anyhow::Result<ServerArgs> {
        let file = match &self.config {
            None => ConfigFile::default(),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    eprintln!("error: {}: {e}", p.display());
                    crate::Reported(crate::EXIT_INVALID)
                })?;
                serde_saphyr::from_str(&text).map_err(|e| {
                    let line = e.location().map(|l| l.line()).unwrap_or(0);
                    eprintln!("error: {}:{line}: {}", p.display(), e.without_snippet());
                    crate::Reported(crate::EXIT_INVALID)
                })?
            }
        };
        self.data = self.data.or(file.data);
        if self.data.is_none() {
            eprintln!(
                "error: no data directory: give --data, BULKHEAD_DATA or `data:` in the config file"
            );
            return Err(crate::Reported(crate::EXIT_INVALID).into());
        }
        self.database = self.database.or(file.database);
        if let Some(url) = &self.database {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                eprintln!(
                    "error: --database must be a postgres:// or postgresql:// URL \
                     (without it, the control store is data/control.sqlite)"
                );
                return Err(crate::Reported(crate::EXIT_INVALID).into());
            }
            if typed("--database") && crate::redact_url(url) != url.as_str() {
                eprintln!(
                    "warning: the password in --database is visible to every user of this \
                     host in the process list; give the URL in BULKHEAD_DATABASE or as \
                     `database:` in the config file instead"
                );
            }
        }
        self.flows = self.flows.or(file.flows);
        if let Some(url) = &self.flows
            && typed("--flows")
            && crate::redact_url(url) != url.as_str()
        {
            eprintln!(
                "warning: the password in --flows is visible to every user of this host in \
                 the process list; give the URL in BULKHEAD_FLOWS or as `flows:` in the \
                 config file instead"
            );
        }
        self.listen = Some(
            self.listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid")),
        );
        if self.collect.is_empty() {
            self.collect = file.collect;
        }
        self.collector_workers = self.collector_workers.or(file.collector_workers);
        if self.sinks.webhook.is_empty() {
            self.sinks.webhook = file.webhook;
        }
        self.sinks
            .settle(file.webhook_secret, file.webhook_secret_file)?;
        if self.sinks.syslog.is_empty() {
            self.sinks.syslog = file.syslog;
        }
        self.sinks.syslog_tcp |= file.syslog_tcp;
        self.sinks.syslog_cef |= file.syslog_cef;
        self.sinks.smtp_relay = self.sinks.smtp_relay.or(file.smtp_relay);
        if let Some(from) = file.smtp_from
            && self.sinks.smtp_from == "bulkhead@localhost"
        {
            self.sinks.smtp_from = from;
        }
        self.agents.agent_listen = self.agents.agent_listen.or(file.agent_listen);
        if self.agents.tls_san.is_empty() {
            self.agents.tls_san = file.tls_san;
        }
        self.agents.agent_offline_after =
            self.agents.agent_offline_after.or(file.agent_offline_after);
        if self.agents.failsafe_out.is_empty() {
            self.agents.failsafe_out = file.failsafe_out;
        }
        if self.agents.failsafe.is_empty() {
            self.agents.failsafe = file.failsafe;
        }
        Ok(self)
    }
}

/// Where alerts are sent besides the API.
#[derive(Args, Debug, Default)]
pub struct SinkArgs {
    /// Webhook URL (http://…), repeatable; each POST is signed with HMAC-SHA256.
    #[arg(long, env = "BULKHEAD_WEBHOOK", value_delimiter = ',')]
    pub webhook: Vec<String>,
    /// The webhook signing secret. On the command line it is visible to every user of
    /// the host (`ps`): prefer --webhook-secret-file or the environment variable.
    #[arg(long, env = "BULKHEAD_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// A file holding the webhook signing secret (a trailing newline is not part of it).
    #[arg(long, env = "BULKHEAD_WEBHOOK_SECRET_FILE", value_name = "PATH")]
    pub webhook_secret_file: Option<PathBuf>,
    /// CA certificates (PEM) that https webhooks may also chain to, besides the
    /// system's trust store (a receiver behind a private CA).
    #[arg(long, env = "BULKHEAD_WEBHOOK_CA_FILE", value_name = "PATH")]
    pub webhook_ca_file: Option<PathBuf>,
    #[arg(skip)]
    webhook_ca: Option<Vec<u8>>,
    /// Syslog collector host:port, repeatable.
    #[arg(long, env = "BULKHEAD_SYSLOG", value_delimiter = ',')]
    pub syslog: Vec<String>,
    /// Send syslog over TCP (octet counting) instead of UDP.
    #[arg(long)]
    pub syslog_tcp: bool,
    /// Carry CEF in the syslog messages.
    #[arg(long)]
    pub syslog_cef: bool,
    /// SMTP relay (HOST:PORT) for e-mail to rollout owners.
    #[arg(long, env = "BULKHEAD_SMTP_RELAY")]
    pub smtp_relay: Option<String>,
    /// The sender of those e-mails.
    #[arg(long, env = "BULKHEAD_SMTP_FROM", default_value = "bulkhead@localhost")]
    pub smtp_from: String,
}

impl SinkArgs {
    /// Settles the webhook secret and checks the webhook URLs, before anything starts.
    /// The secret comes from a file (--webhook-secret-file or its variable) or is given
    /// itself (--webhook-secret or BULKHEAD_WEBHOOK_SECRET), not both; failing those, from
    /// the config file. A bad URL is reported here, without the password it may hold.
    pub(crate) fn settle(
        &mut self,
        config_secret: Option<String>,
        config_file: Option<PathBuf>,
    ) -> anyhow::Result<()> {
        if self.webhook_secret.is_some() && self.webhook_secret_file.is_some() {
            return Err(invalid(
                "give the webhook secret once: a file (--webhook-secret-file, \
                 BULKHEAD_WEBHOOK_SECRET_FILE) or the secret (--webhook-secret, \
                 BULKHEAD_WEBHOOK_SECRET)"
                    .into(),
            ));
        }
        if typed("--webhook-secret") {
            eprintln!(
                "warning: --webhook-secret is visible to every user of this host in the \
                 process list; use --webhook-secret-file or BULKHEAD_WEBHOOK_SECRET instead"
            );
        }
        let (secret, file) = if self.webhook_secret.is_some() || self.webhook_secret_file.is_some()
        {
            (self.webhook_secret.take(), self.webhook_secret_file.clone())
        } else if config_secret.is_some() && config_file.is_some() {
            return Err(invalid(
                "the config file gives both webhook_secret and webhook_secret_file; keep one"
                    .into(),
            ));
        } else {
            (config_secret, config_file)
        };
        self.webhook_secret = match file {
            Some(path) => Some(read_secret(&path)?),
            None => secret,
        };
        if let Some(path) = &self.webhook_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| invalid(format!("--webhook-ca-file {}: {e}", path.display())))?;
            self.webhook_ca = Some(pem);
        }
        for url in &self.webhook {
            let checked = bulkhead_alerts::WebhookSink::new(url, Vec::new()).and_then(|w| {
                match &self.webhook_ca {
                    Some(pem) => w.with_root_certificates(pem),
                    None => Ok(w),
                }
            });
            if let Err(e) = checked {
                return Err(invalid(format!("--webhook: {e}")));
            }
        }
        Ok(())
    }

    fn notifier(&self) -> anyhow::Result<bulkhead_server::Notifier> {
        let mailer = match &self.smtp_relay {
            Some(relay) => Some(
                bulkhead_alerts::Mailer::new(relay, &self.smtp_from)
                    .map_err(|e| anyhow::anyhow!("--smtp-relay/--smtp-from: {e}"))?,
            ),
            None => None,
        };
        Ok(bulkhead_server::Notifier {
            mailer,
            webhook_secret: self.webhook_secret.clone().map(String::into_bytes),
            webhook_ca: self.webhook_ca.clone(),
        })
    }

    pub(crate) fn sinks(&self) -> bulkhead_server::AlertSinks {
        bulkhead_server::AlertSinks {
            webhooks: self.webhook.clone(),
            webhook_secret: self.webhook_secret.clone(),
            webhook_ca: self.webhook_ca.clone(),
            syslog: self.syslog.clone(),
            syslog_tcp: self.syslog_tcp,
            syslog_cef: self.syslog_cef,
        }
    }
}

fn invalid(msg: String) -> anyhow::Error {
    eprintln!("error: {msg}");
    crate::Reported(crate::EXIT_INVALID).into()
}

/// The secret in the file at `path`, without the newline an editor or `echo` ends it with.
fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("webhook secret file {}: {e}", path.display())))?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return Err(invalid(format!(
            "webhook secret file {} is empty",
            path.display()
        )));
    }
    Ok(secret.to_owned())
}

/// Whether `flag` was typed on the command line (rather than its value coming from the
/// environment or the config file): only then is the value in every user's `ps`.
pub(crate) fn typed(flag: &str) -> bool {
    std::env::args_os().skip(1).any(|arg| {
        let arg = arg.to_string_lossy();
        arg.strip_prefix(flag)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
    })
}

pub(crate) fn workers(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on Ctrl-C or SIGTERM (what service managers and `kill` send), so both stop
/// the server cleanly: collectors flush their open summaries.
pub async fn ctrl_c(stop: Arc<AtomicBool>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
    stop.store(true, Ordering::SeqCst);
}

pub fn server(a: ServerArgs) -> anyhow::Result<()> {
    let a = a.resolve()?;
    let data = a.data.clone().expect("resolved");
    let listen = a.listen.expect("resolved");
    let flows = bulkhead_store::FlowLocation::parse(a.flows.as_deref(), &data).map_err(|e| {
        eprintln!("error: --flows: {e}");
        crate::Reported(crate::EXIT_INVALID)
    })?;
    let mut state = bulkhead_server::open_with(&data, a.database.as_deref(), Some(&flows))?;
    if let Some(token) = bulkhead_server::bootstrap_admin(&state)? {
        outln!("first start: admin token (shown once, store it now): {token}");
    }
    let mut settings = bulkhead_server::AgentSettings::default();
    // `any` would make every table, quarantine included, accept everything.
    let failsafe_port = |flag: &str, f: &str| -> anyhow::Result<bulkhead_model::ServicePort> {
        let port: bulkhead_model::ServicePort = f.parse().map_err(|e| {
            eprintln!("error: {flag} {f}: {e}");
            crate::Reported(crate::EXIT_INVALID)
        })?;
        if port.proto == bulkhead_model::ProtoMatch::Any {
            eprintln!(
                "error: {flag} {f}: a failsafe port must name a protocol (any would open everything)"
            );
            return Err(crate::Reported(crate::EXIT_INVALID).into());
        }
        Ok(port)
    };
    for f in &a.agents.failsafe_out {
        settings
            .failsafe_outbound
            .push(failsafe_port("--failsafe-out", f)?);
    }
    if !a.agents.failsafe.is_empty() {
        settings.failsafe_ports = Vec::new();
        for f in &a.agents.failsafe {
            settings
                .failsafe_ports
                .push(failsafe_port("--failsafe", f)?);
        }
    }
    if let Some(secs) = a.agents.agent_offline_after {
        settings.offline_after_ms = (secs.max(1) * 1000) as i64;
    }
    let tls = match a.agents.agent_listen {
        Some(addr) => {
            let names = bulkhead_server::tls::default_names(addr, &a.agents.tls_san);
            let identity = bulkhead_server::tls::load_or_create(&data.join("tls"), &names)?;
            settings.ca_fingerprint = Some(identity.ca_fingerprint.clone());
            if !addr.ip().is_unspecified() {
                settings.control_plane = vec![addr];
            }
            Some((addr, identity))
        }
        None => None,
    };
    state.agent_settings = Arc::new(settings);
    // Verdicts take the failsafe ports and the control plane into account.
    state
        .recompile()
        .map_err(|e| anyhow::anyhow!("compiling policy: {e}"))?;
    state.guard = Arc::new(bulkhead_server::guard::Guard::new(
        a.auth_failures_per_minute,
        bulkhead_server::guard::AUDITED_REFUSALS_PER_MINUTE,
    ));
    state.notifier = Arc::new(a.sinks.notifier()?);
    let rt = runtime()?;
    {
        let _guard = rt.enter();
        bulkhead_server::start_alert_sinks(&state, &a.sinks.sinks())?;
    }
    bulkhead_server::start_collectors_with(
        &state,
        a.record_times
            .collector_config(a.collect.clone(), workers(a.collector_workers)),
    )?;
    for addr in bulkhead_server::collector_addrs(&state) {
        eprintln!("collecting flows on udp {addr}");
    }
    let st = state.clone();
    let rollout_every = a.rollout_every;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!(
            "bulkhead server on http://{} (data in {})",
            listener.local_addr()?,
            data.display()
        );
        if let Some((addr, identity)) = tls {
            let agents = tokio::net::TcpListener::bind(addr).await?;
            eprintln!(
                "agents: https://{} (CA fingerprint {})",
                agents.local_addr()?,
                identity.ca_fingerprint
            );
            tokio::spawn(bulkhead_server::serve_agents(
                st.clone(),
                agents,
                identity,
                std::future::pending(),
            ));
        }
        tokio::spawn(bulkhead_server::agent_api::watch_offline(st.clone()));
        tokio::spawn(bulkhead_server::rollout::scheduler(
            st.clone(),
            std::time::Duration::from_secs(rollout_every.max(1)),
        ));
        tokio::spawn(bulkhead_server::watch_changes(
            st.clone(),
            std::time::Duration::from_secs(1),
        ));
        tokio::spawn(bulkhead_server::watch_retention(
            st.clone(),
            bulkhead_server::RETENTION_EVERY,
        ));
        let stop = Arc::new(AtomicBool::new(false));
        bulkhead_server::serve(st, listener, ctrl_c(stop)).await
    })?;
    bulkhead_server::stop_collectors(&state);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_loses_its_final_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        for (text, secret) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            (" s3cret \n\n", " s3cret \n"),
        ] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(read_secret(&path).unwrap(), secret, "{text:?}");
        }
        std::fs::write(&path, "\r\n").unwrap();
        assert!(read_secret(&path).is_err());
    }
}
