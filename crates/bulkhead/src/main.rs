//! The `bulkhead` command: argument parsing, file IO and printing. Logic lives in the
//! library crates.

/// Writes a line to stdout; a closed pipe (`bulkhead … | head`) ends the program quietly
/// instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($t)*) {
            crate::stdout_failed(e)
        }
    }};
}

macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($t)*) {
            crate::stdout_failed(e)
        }
    }};
}

pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(1);
}

mod agent_cmd;
mod collector_cmd;
mod demo_cmd;
mod enforce_cmd;
mod estate;
mod files;
mod flows_cmd;
mod migrate_cmd;
mod pcap;
mod policy_cmd;
mod recommend_cmd;
mod report_cmd;
mod rollout_cmd;
mod server_cmd;
mod simulate_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for input the user must fix (invalid policy, inventory, arguments).
pub const EXIT_INVALID: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "bulkhead",
    version,
    about = "Label-based microsegmentation: policy as code, verdicts, enforcement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check, format, explain and analyze policy-as-code.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Decode, import, collect and query flows.
    #[command(subcommand)]
    Flows(flows_cmd::FlowsCommand),
    /// Reports over the flow store (sprawl).
    #[command(subcommand)]
    Report(report_cmd::ReportCommand),
    /// Run the control plane: REST API, stores, collectors, alerts.
    Server(server_cmd::ServerArgs),
    /// Move a SQLite deployment onto PostgreSQL (control) and ClickHouse (flows).
    Migrate(migrate_cmd::MigrateArgs),
    /// Flow collectors as a process of their own, beside the servers: policy from the
    /// control store, summaries to the flow store (docs/scale.md).
    Collector(collector_cmd::CollectorArgs),
    /// The server on 127.0.0.1 with a synthetic estate streaming into it, until Ctrl-C.
    Demo(demo_cmd::DemoArgs),
    /// Generate a synthetic estate: inventory, policy and its IPFIX traffic.
    Simulate(simulate_cmd::SimulateArgs),
    /// Propose label-based policy from observed flows, with a report of every widening.
    Recommend(recommend_cmd::RecommendArgs),
    /// Schedule, inspect and roll back monitor → enforce rollouts on a server.
    #[command(subcommand)]
    Rollout(rollout_cmd::RolloutCommand),
    /// Isolate a workload: only failsafe access stays, whatever the rules say.
    Quarantine(rollout_cmd::QuarantineArgs),
    /// Release a quarantined workload.
    Release(rollout_cmd::ReleaseArgs),
    /// Set the enforcement mode of a workload or of every workload matching labels,
    /// showing first which recent connections would change verdict.
    Enforce(enforce_cmd::EnforceArgs),
    /// What a workload's host runs: desired against applied revision, mode, quarantine.
    Enforcement(enforce_cmd::EnforcementArgs),
    /// Run the host agent: enroll, enforce this host's policy with nftables, report.
    Agent(agent_cmd::AgentArgs),
    /// Check inventory files and show what label rules assign.
    #[command(subcommand)]
    Inventory(policy_cmd::InventoryCommand),
}

/// `url` with the password of its `user:password@` part replaced by `***`, for messages
/// (database, server and webhook URLs end up in terminals and logs). Everything between
/// the first `:` after the scheme and the last `@` goes, so a password holding a raw
/// `/`, `?` or `@` is hidden too; at worst a URL with an `@` in its path loses more.
pub fn redact_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let rest = &url[scheme_end..];
    match (rest.find(':'), rest.rfind('@')) {
        (Some(colon), Some(at)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        )
        .into(),
        _ => url.into(),
    }
}

/// An error that has already been reported to the user, with the exit code to use.
#[derive(Debug)]
pub struct Reported(pub u8);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Reported {}

/// Logs go to stderr: `BULKHEAD_LOG` sets the filter (default `info`),
/// `BULKHEAD_LOG_FORMAT=json` makes them one JSON object per line for log shippers.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BULKHEAD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("BULKHEAD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Server(_) | Command::Demo(_) | Command::Agent(_) | Command::Collector(_)
    ) {
        init_logging();
    }
    let result = match cli.command {
        Command::Policy(c) => policy_cmd::run_policy(c),
        Command::Inventory(c) => policy_cmd::run_inventory(c),
        Command::Flows(c) => flows_cmd::run(c),
        Command::Report(c) => report_cmd::run(c),
        Command::Simulate(a) => simulate_cmd::run(a),
        Command::Recommend(a) => recommend_cmd::run(a),
        Command::Server(a) => server_cmd::server(a),
        Command::Demo(a) => demo_cmd::demo(a),
        Command::Collector(a) => collector_cmd::run(a),
        Command::Migrate(a) => migrate_cmd::run(a),
        Command::Agent(a) => agent_cmd::run(a),
        Command::Rollout(c) => rollout_cmd::run(c),
        Command::Quarantine(a) => rollout_cmd::quarantine(a),
        Command::Release(a) => rollout_cmd::release(a),
        Command::Enforce(a) => enforce_cmd::enforce(a),
        Command::Enforcement(a) => enforce_cmd::enforcement(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Reported>() {
            Some(Reported(code)) => ExitCode::from(*code),
            None => {
                // Errors from the libraries may quote a URL whole; its password stays here.
                eprintln!("error: {}", redact_urls(&format!("{e:#}")));
                ExitCode::from(1)
            }
        },
    }
}

/// `text` with [`redact_url`] applied to every word that holds a URL.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.push_str(&redact_url(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_hidden() {
        for (url, shown) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:p/w?x@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p@w@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h:5432/db", "postgres://u@h:5432/db"),
            ("http://127.0.0.1:8080/api", "http://127.0.0.1:8080/api"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
        assert_eq!(
            redact_urls("webhook http://u:pw@127.0.0.1/h:  refused\n(\"http://a:b@c/\")"),
            "webhook http://u:***@127.0.0.1/h:  refused\n(\"http://a:***@c/\")"
        );
    }
}
