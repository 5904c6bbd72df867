use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bulkhead_inventory::{LabelRules, parse_label_rules};
use bulkhead_model::{Connection, DecidedBy, Inventory, ServicePort, VerdictKind};
use bulkhead_policy::{CompiledPolicy, ConnKey, Policy, explain, format};
use clap::{Args, Subcommand};

use crate::files::{read, read_policy_sources};
use crate::{EXIT_INVALID, Reported};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenderTarget {
    /// One `nft -f` transaction replacing the `inet bulkhead` table.
    Nft,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Check policy files; exit 2 listing every error (file:line:column: field: why).
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Rewrite policy files in canonical form (comments are not kept).
    Fmt {
        /// Change nothing; exit 1 if a file is not canonical.
        #[arg(long)]
        check: bool,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Explain the verdict of one connection: which rules in which tiers matched, and why.
    Explain {
        #[command(flatten)]
        estate: Estate,
        /// Consumer: an address or a workload name.
        #[arg(long)]
        from: String,
        /// Provider: an address or a workload name.
        #[arg(long)]
        to: String,
        /// Protocol and port: tcp/5432, udp/53, icmp/8.
        #[arg(long)]
        port: String,
        /// The provider's process, if known.
        #[arg(long)]
        process: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Render what one managed workload enforces, as its agent would (review, golden
    /// tests): `bulkhead policy render nft --inventory … --policy … --workload NAME`.
    Render {
        #[arg(value_enum)]
        target: RenderTarget,
        #[command(flatten)]
        estate: Estate,
        #[arg(long)]
        workload: String,
        /// Inbound ports never blocked (management access); repeatable.
        #[arg(long = "failsafe", default_value = "tcp/22")]
        failsafe: Vec<String>,
        /// NFLOG group for logged connections.
        #[arg(long, default_value_t = 100)]
        log_group: u16,
    },
    /// Replace the server's draft with these policy files (checked here first).
    Push {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Write the server's draft (or a provisioned version) as policy files into a directory.
    Pull {
        /// Output directory (created if missing; files in it with the same names are replaced).
        #[arg(long)]
        out: PathBuf,
        /// A provisioned version instead of the draft.
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// How much observed traffic a policy allows, what it would block, and rules nothing used.
    Coverage(crate::recommend_cmd::CoverageArgs),
    /// Verdicts for a list of connections (CSV: src,dst,service[,process]) and a summary.
    Analyze {
        #[command(flatten)]
        estate: Estate,
        /// CSV of connections; src and dst are addresses or workload names.
        #[arg(long)]
        flows: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum InventoryCommand {
    /// Check inventory files (CSV, JSON, YAML) and print the labelled workloads.
    Check {
        #[arg(long)]
        label_rules: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct Remote {
    /// The server, e.g. https://bulkhead.example.com or http://127.0.0.1:8080
    #[arg(long, env = "BULKHEAD_SERVER")]
    server: String,
    /// An API token. On the command line it shows in the process list: prefer
    /// --token-file or BULKHEAD_TOKEN.
    #[arg(long, env = "BULKHEAD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the API token (a trailing newline is not part of it).
    #[arg(
        long,
        env = "BULKHEAD_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "token"
    )]
    token_file: Option<PathBuf>,
}

impl Remote {
    fn token(&self) -> anyhow::Result<String> {
        if crate::server_cmd::typed("--token") {
            eprintln!(
                "warning: --token is visible to every user of this host in the process list; \
                 use --token-file or BULKHEAD_TOKEN instead"
            );
        }
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(t.trim().to_string()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    eprintln!("error: --token-file {}: {e}", path.display());
                    Reported(EXIT_INVALID)
                })?;
                let token = text.trim_end_matches(['\n', '\r']).to_string();
                if token.is_empty() {
                    eprintln!("error: --token-file {} is empty", path.display());
                    return Err(Reported(EXIT_INVALID).into());
                }
                Ok(token)
            }
            (None, None) => {
                eprintln!("error: give an API token: --token-file, BULKHEAD_TOKEN or --token");
                Err(Reported(EXIT_INVALID).into())
            }
        }
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        // rustls needs one process-wide crypto provider; Bulkhead uses ring everywhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(|e| anyhow::anyhow!("an HTTP client: {e}"))?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| anyhow::anyhow!("method {method}: {e}"))?;
        let mut req = client.request(method, &url).bearer_auth(self.token()?);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .map_err(|e| anyhow::anyhow!("{}: {}", crate::redact_url(&url), e.without_url()))?;
        let status = resp.status().as_u16();
        let value: serde_json::Value = resp.json().unwrap_or_default();
        if status >= 400 {
            eprintln!(
                "error: {}: HTTP {status}: {}",
                crate::redact_url(&url),
                value["error"]["message"].as_str().unwrap_or("(no message)")
            );
            if let Some(details) = value["error"]["details"].as_array() {
                for d in details.iter().skip(1) {
                    eprintln!(
                        "  {}: {}",
                        d["field"].as_str().unwrap_or(""),
                        d["message"].as_str().unwrap_or("")
                    );
                }
            }
            return Err(Reported(if status < 500 { EXIT_INVALID } else { 1 }).into());
        }
        Ok(value)
    }
}

#[derive(Args, Debug)]
pub struct Estate {
    /// Inventory file (CSV, JSON or YAML); may be repeated.
    #[arg(long, required = true)]
    inventory: Vec<PathBuf>,
    /// Label rules applied to the inventory.
    #[arg(long)]
    label_rules: Option<PathBuf>,
    /// Policy files or directories; may be repeated.
    #[arg(long, required = true)]
    policy: Vec<PathBuf>,
}

pub(crate) fn load_policy(paths: &[PathBuf]) -> anyhow::Result<Policy> {
    let sources = read_policy_sources(paths)?;
    Policy::from_sources(&sources).map_err(|errors| {
        eprint!("{errors}");
        eprintln!("{} error(s); nothing was applied", errors.0.len());
        Reported(EXIT_INVALID).into()
    })
}

pub(crate) fn load_inventory(files: &[PathBuf], rules: Option<&Path>) -> anyhow::Result<Inventory> {
    let rules: Option<LabelRules> = match rules {
        None => None,
        Some(p) => {
            let (name, text) = read(p)?;
            Some(parse_label_rules(&name, &text).map_err(|e| {
                eprint!("{e}");
                Reported(EXIT_INVALID)
            })?)
        }
    };
    let sources = files
        .iter()
        .map(|f| read(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    bulkhead_inventory::load(&sources, rules.as_ref()).map_err(|e| {
        eprint!("{e}");
        eprintln!("{} error(s) in the inventory", e.0.len());
        Reported(EXIT_INVALID).into()
    })
}

impl Estate {
    fn load(&self) -> anyhow::Result<(Inventory, Policy)> {
        let inv = load_inventory(&self.inventory, self.label_rules.as_deref())?;
        let policy = load_policy(&self.policy)?;
        Ok((inv, policy))
    }
}

fn invalid(msg: String) -> anyhow::Error {
    eprintln!("error: {msg}");
    Reported(EXIT_INVALID).into()
}

/// An address as written, or the first address of the named workload (IPv4 first).
fn resolve_endpoint(inv: &Inventory, s: &str) -> anyhow::Result<IpAddr> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(a);
    }
    let w = inv.by_name(s).ok_or_else(|| {
        invalid(format!(
            "{s:?} is neither an address nor a workload in the inventory"
        ))
    })?;
    let mut addrs = w.addresses.clone();
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs
        .first()
        .copied()
        .ok_or_else(|| invalid(format!("workload {s} has no address")))
}

/// `tcp/5432` → (6, 5432); a single port or ICMP type, not a range.
fn parse_port(s: &str) -> anyhow::Result<(u8, u16)> {
    ServicePort::parse_single(s).map_err(|e| invalid(format!("--port: {e}")))
}

pub fn run_policy(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Check { paths } => {
            let p = load_policy(&paths)?;
            outln!(
                "ok: {} tiers, {} rulesets, {} rules, {} label groups, {} ip lists, {} services",
                p.tiers.len(),
                p.rulesets.len(),
                p.rule_count(),
                p.label_groups.len(),
                p.ip_lists.len(),
                p.services.len()
            );
            Ok(())
        }
        PolicyCommand::Fmt { check, paths } => {
            let sources = read_policy_sources(&paths)?;
            let mut formatted = Vec::new();
            let mut errors = 0;
            for (name, text) in &sources {
                match format::format_file(name, text) {
                    Ok(f) => formatted.push((name, text, f)),
                    Err(e) => {
                        eprint!("{e}");
                        errors += e.0.len();
                    }
                }
            }
            // All or nothing: no file is rewritten while any file has errors.
            if errors > 0 {
                eprintln!("{errors} error(s); no file was changed");
                return Err(Reported(EXIT_INVALID).into());
            }
            let mut differing = 0;
            for (name, text, f) in formatted {
                if *text != f {
                    differing += 1;
                    if check {
                        outln!("would reformat {name}");
                    } else {
                        std::fs::write(name, &f).with_context(|| format!("writing {name}"))?;
                        outln!("formatted {name}");
                    }
                }
            }
            if check && differing > 0 {
                return Err(Reported(1).into());
            }
            Ok(())
        }
        PolicyCommand::Explain {
            estate,
            from,
            to,
            port,
            process,
            json,
        } => {
            let (inv, policy) = estate.load()?;
            let (proto, port) = parse_port(&port)?;
            let c = Connection {
                src: resolve_endpoint(&inv, &from)?,
                dst: resolve_endpoint(&inv, &to)?,
                proto,
                port,
                process,
            };
            let e = explain::explain(&policy, &inv, &c);
            if json {
                outln!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                out!("{}", e.to_text());
            }
            Ok(())
        }
        PolicyCommand::Analyze {
            estate,
            flows,
            json,
        } => analyze(&estate, &flows, json),
        PolicyCommand::Coverage(a) => crate::recommend_cmd::coverage_cmd(a),
        PolicyCommand::Render {
            target: RenderTarget::Nft,
            estate,
            workload,
            failsafe,
            log_group,
        } => {
            let (inv, policy) = estate.load()?;
            let mut failsafe_ports = Vec::new();
            for f in &failsafe {
                failsafe_ports.push(f.parse::<ServicePort>().map_err(|e| {
                    eprintln!("error: --failsafe {f}: {e}");
                    Reported(EXIT_INVALID)
                })?);
            }
            let hp = bulkhead_policy::host::host_policy(&policy, &inv, &workload).map_err(|e| {
                eprintln!("error: --workload {workload}: {e}");
                Reported(EXIT_INVALID)
            })?;
            let opts = bulkhead_nft::RenderOptions {
                failsafe_ports,
                log_group,
                ..Default::default()
            };
            out!("{}", bulkhead_nft::render(&hp, &opts));
            Ok(())
        }
        PolicyCommand::Push { paths, remote } => {
            // Checked here first, so a broken file never leaves the machine.
            let policy = load_policy(&paths)?;
            let sources = read_policy_sources(&paths)?;
            let files: Vec<serde_json::Value> = sources
                .iter()
                .map(|(name, content)| serde_json::json!({ "name": name, "content": content }))
                .collect();
            let r = remote.call(
                "PUT",
                "/api/v1/draft/files",
                Some(serde_json::json!({ "files": files })),
            )?;
            outln!(
                "pushed {} objects ({} rules) into the draft of {}",
                r["objects"],
                policy.rule_count(),
                remote.server
            );
            Ok(())
        }
        PolicyCommand::Pull {
            out,
            version,
            remote,
        } => {
            let r = match version {
                None => remote.call("GET", "/api/v1/draft/files", None)?,
                Some(v) => remote.call("GET", &format!("/api/v1/versions/{v}"), None)?,
            };
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let files = r["files"].as_array().cloned().unwrap_or_default();
            for f in &files {
                let name = f["name"].as_str().unwrap_or_default();
                // Names come from the server: keep them inside the output directory.
                if name.is_empty() || name.contains('/') || name.contains("..") {
                    anyhow::bail!("the server sent an unsafe file name {name:?}");
                }
                std::fs::write(out.join(name), f["content"].as_str().unwrap_or_default())
                    .with_context(|| format!("writing {name}"))?;
            }
            outln!("wrote {} files to {}", files.len(), out.display());
            Ok(())
        }
    }
}

#[derive(serde::Serialize)]
struct AnalyzedFlow {
    line: u64,
    src: String,
    dst: String,
    service: String,
    process: Option<String>,
    verdict: VerdictKind,
    decided_by: DecidedBy,
}

fn analyze(estate: &Estate, flows: &Path, json: bool) -> anyhow::Result<()> {
    let (inv, policy) = estate.load()?;
    let started = std::time::Instant::now();
    let compiled = CompiledPolicy::compile(&inv, &policy);
    let compile_time = started.elapsed();
    let (name, text) = read(flows)?;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .flexible(true)
        .has_headers(false)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| invalid(format!("{name}: {e}")))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let field = |i: usize| rec.get(i).unwrap_or("").to_string();
        let at = |e: anyhow::Error| invalid(format!("{name}:{line}: {e}"));
        let (src_s, dst_s, svc) = (field(0), field(1), field(2));
        let src = resolve_endpoint(&inv, &src_s).map_err(at)?;
        let dst = resolve_endpoint(&inv, &dst_s).map_err(at)?;
        let (proto, port) = parse_port(&svc).map_err(at)?;
        let process = Some(field(3)).filter(|p| !p.is_empty());
        let v = compiled.verdict(
            &ConnKey {
                src,
                dst,
                proto,
                port,
            },
            process.as_deref(),
        );
        rows.push(AnalyzedFlow {
            line,
            src: src_s,
            dst: dst_s,
            service: svc,
            process,
            verdict: v.verdict,
            decided_by: v.decided_by,
        });
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    outln!(
        "estate: {} workloads ({} managed), {} identity classes; policy: {} tiers, {} rulesets, {} rules; compiled in {:.1} ms",
        inv.len(),
        inv.workloads().iter().filter(|w| w.managed).count(),
        compiled.class_count(),
        policy.tiers.len(),
        policy.rulesets.len(),
        policy.rule_count(),
        compile_time.as_secs_f64() * 1e3
    );
    outln!();
    outln!(
        "{:<22} {:<22} {:<12} {:<20} decided by",
        "from",
        "to",
        "service",
        "verdict"
    );
    for r in &rows {
        let by = match &r.decided_by {
            DecidedBy::Rules { tier, rule_ids } => format!("{} ({tier})", rule_ids.join(", ")),
            DecidedBy::Default => "default".to_string(),
            DecidedBy::Quarantine { workload, .. } => format!("quarantine of {workload}"),
        };
        outln!(
            "{:<22} {:<22} {:<12} {:<20} {by}",
            r.src,
            r.dst,
            r.service,
            r.verdict.to_string()
        );
    }
    let count = |k: VerdictKind| rows.iter().filter(|r| r.verdict == k).count();
    outln!();
    outln!(
        "{} connections: {} allowed, {} potentially blocked, {} blocked",
        rows.len(),
        count(VerdictKind::Allowed),
        count(VerdictKind::PotentiallyBlocked),
        count(VerdictKind::Blocked)
    );
    Ok(())
}

pub fn run_inventory(cmd: InventoryCommand) -> anyhow::Result<()> {
    match cmd {
        InventoryCommand::Check {
            label_rules,
            files,
            json,
        } => {
            let inv = load_inventory(&files, label_rules.as_deref())?;
            if json {
                outln!("{}", serde_json::to_string_pretty(inv.workloads())?);
                return Ok(());
            }
            for w in inv.workloads() {
                let addrs: Vec<String> = w.addresses.iter().map(|a| a.to_string()).collect();
                outln!(
                    "{:<16} {:<9} {:<9} {:<8} {:<28} {}",
                    w.name,
                    w.kind.to_string(),
                    if w.managed { "managed" } else { "unmanaged" },
                    w.mode.to_string(),
                    addrs.join(" "),
                    w.labels
                );
            }
            outln!("ok: {} workloads", inv.len());
            Ok(())
        }
    }
}
