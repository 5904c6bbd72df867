//! `bulkhead recommend` and `bulkhead policy coverage`: reading flows (flow logs,
//! captures or the flow store) into summaries, and printing what bulkhead-recommend says.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bulkhead_enrich::{Aggregator, Enricher, Observation};
use bulkhead_flow::{Decoder, import};
use bulkhead_model::{Bucket, FlowSummary, Inventory, Labels};
use bulkhead_policy::{CompiledPolicy, Policy};
use bulkhead_recommend::{CoverageOptions, Granularity, Options, coverage, recommend};
use bulkhead_store::{FlowQuery, FlowStore};
use clap::{Args, ValueEnum};

use crate::pcap;
use crate::policy_cmd::{load_inventory, load_policy};
use crate::{EXIT_INVALID, Reported};

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FlowFormat {
    /// By file name: .pcap/.pcapng captures of NetFlow/IPFIX/sFlow, .csv, .jsonl.
    Auto,
    /// A pcap/pcapng capture of NetFlow v5/v9, IPFIX or sFlow export datagrams.
    Capture,
    /// CSV with a header: start,end,src,dst,src_port,dst_port,proto,packets,bytes[,process,reporter].
    Csv,
    /// One JSON object per line, same fields as csv.
    Jsonl,
    /// AWS VPC flow logs.
    Aws,
    /// Azure NSG flow logs v2 (JSON).
    Azure,
}

/// Where the observed traffic comes from.
#[derive(Args, Debug)]
pub struct FlowInput {
    /// Flow files (captures, CSV, JSON Lines, cloud flow logs); may be repeated.
    #[arg(long = "flows", num_args = 1..)]
    pub flows: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub format: FlowFormat,
    /// A data directory whose flow store (DIR/flows.sqlite) to read instead (hour summaries).
    #[arg(long, conflicts_with = "flows")]
    pub data: Option<PathBuf>,
    /// Window start, RFC 3339 (summaries whose bucket starts at or after it).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub from: Option<SystemTime>,
    /// Window end (exclusive), RFC 3339.
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub to: Option<SystemTime>,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn invalid(msg: String) -> anyhow::Error {
    eprintln!("error: {msg}");
    Reported(EXIT_INVALID).into()
}

fn format_of(p: &Path, f: FlowFormat) -> anyhow::Result<FlowFormat> {
    if f != FlowFormat::Auto {
        return Ok(f);
    }
    let name = p.to_string_lossy().to_ascii_lowercase();
    Ok(if name.ends_with(".pcap") || name.ends_with(".pcapng") {
        FlowFormat::Capture
    } else if name.ends_with(".csv") {
        FlowFormat::Csv
    } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        FlowFormat::Jsonl
    } else {
        return Err(invalid(format!(
            "{}: cannot tell the format from the name; pass --format",
            p.display()
        )));
    })
}

impl FlowInput {
    fn window(&self) -> (Option<i64>, Option<i64>) {
        (self.from.map(ms), self.to.map(ms))
    }

    /// The summaries to judge: from the files, aggregated the way `flows import` does
    /// (minute buckets), or from the flow store (hour buckets).
    pub fn summaries(&self, inventory: &Inventory) -> anyhow::Result<Vec<FlowSummary>> {
        if let Some(data) = &self.data {
            return read_store(data, self.window());
        }
        if self.flows.is_empty() {
            return Err(invalid("give --flows FILE... or --data DIR".into()));
        }
        let mut observations: Vec<Observation> = Vec::new();
        let mut errors = 0;
        for f in &self.flows {
            let format = format_of(f, self.format)?;
            if format == FlowFormat::Capture {
                let bytes =
                    std::fs::read(f).map_err(|e| invalid(format!("{}: {e}", f.display())))?;
                let datagrams = pcap::udp_datagrams(&bytes)
                    .map_err(|e| invalid(format!("{}: {e}", f.display())))?;
                let mut decoder = Decoder::new();
                let mut records = Vec::new();
                for d in &datagrams {
                    records.clear();
                    if let Err(e) = decoder.decode_into(d.from, &d.payload, &mut records) {
                        eprintln!("{}: datagram from {}: {e}", f.display(), d.from);
                        errors += 1;
                    }
                    observations.extend(records.iter().map(Observation::from));
                }
                continue;
            }
            let text =
                std::fs::read_to_string(f).map_err(|e| invalid(format!("{}: {e}", f.display())))?;
            let reporter = format!("file {}", f.display());
            let got = match format {
                FlowFormat::Aws => import::aws_vpc(&text),
                FlowFormat::Azure => import::azure_nsg(&text),
                FlowFormat::Jsonl => import::jsonl(&text, &reporter),
                _ => import::csv(&text, &reporter),
            };
            for e in &got.errors {
                eprintln!("{}:{}: {}: {}", f.display(), e.line, e.field, e.message);
            }
            errors += got.errors.len();
            observations.extend(got.observations);
        }
        if errors > 0 {
            eprintln!("{errors} error(s) in the flows; nothing was judged");
            return Err(Reported(EXIT_INVALID).into());
        }
        let enricher = Arc::new(Enricher::new(Arc::new(inventory.clone())));
        let mut agg = Aggregator::new(enricher);
        let now = ms(SystemTime::now());
        for o in &observations {
            agg.add(o, now);
        }
        Ok(agg
            .flush_all()
            .into_iter()
            .filter(|s| s.key.bucket == Bucket::Minute)
            .collect())
    }
}

/// Every hour summary of the window, page by page.
fn read_store(
    data: &Path,
    (from, to): (Option<i64>, Option<i64>),
) -> anyhow::Result<Vec<FlowSummary>> {
    let path = data.join("flows.sqlite");
    if !path.exists() {
        return Err(invalid(format!("{}: no flow store here", path.display())));
    }
    let store = bulkhead_store::SqliteFlowStore::open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    let mut q = FlowQuery::new(
        Bucket::Hour,
        from.unwrap_or(i64::MIN),
        to.unwrap_or(i64::MAX),
    );
    q.limit = 100_000;
    loop {
        let page = store.query(&q)?;
        let n = page.len();
        out.extend(page);
        if n < q.limit {
            return Ok(out);
        }
        q.offset += n;
    }
}

fn parse_labels(what: &str, s: &str) -> anyhow::Result<Labels> {
    // Selectors are written like policy selectors: `app=hr env=dev` (commas accepted too).
    let l = Labels::parse_list(s).map_err(|e| invalid(format!("{what} {s:?}: {e}")))?;
    if l.is_empty() {
        return Err(invalid(format!("{what} {s:?}: no labels")));
    }
    Ok(l)
}

#[derive(Args, Debug)]
pub struct RecommendArgs {
    #[command(flatten)]
    pub input: FlowInput,
    /// Inventory file(s) (CSV, JSON or YAML).
    #[arg(long, required = true)]
    pub inventory: Vec<PathBuf>,
    #[arg(long)]
    pub label_rules: Option<PathBuf>,
    /// The current policy (files or directories): what it already decides gets no rule,
    /// and names, ids and tiers are chosen to fit beside it.
    #[arg(long)]
    pub policy: Vec<PathBuf>,
    /// Only conversations with an end carrying these labels, e.g. app=payments.
    #[arg(long)]
    pub scope: Option<String>,
    #[arg(long, value_enum, default_value = "role")]
    pub granularity: GranularityArg,
    /// Connections a conversation needs over the window to get a rule.
    #[arg(long, default_value_t = 1)]
    pub min_observations: u64,
    /// Leave out conversations with an end carrying these labels; repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// A provider (or consumer) on one port used by this many other application scopes is
    /// a shared service, written once.
    #[arg(long, default_value_t = 3)]
    pub shared_min_apps: usize,
    /// This many distinct public addresses on one edge become `iplist:internet`.
    #[arg(long, default_value_t = 32)]
    pub internet_min_addresses: usize,
    /// Write the proposed policy files here (default: print them).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the proposal, report and statistics as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GranularityArg {
    App,
    Role,
    Workload,
}

impl From<GranularityArg> for Granularity {
    fn from(g: GranularityArg) -> Self {
        match g {
            GranularityArg::App => Granularity::App,
            GranularityArg::Role => Granularity::Role,
            GranularityArg::Workload => Granularity::Workload,
        }
    }
}

pub fn run(a: RecommendArgs) -> anyhow::Result<()> {
    let inventory = load_inventory(&a.inventory, a.label_rules.as_deref())?;
    let current = if a.policy.is_empty() {
        None
    } else {
        Some((
            load_policy(&a.policy)?,
            crate::files::read_policy_sources(&a.policy)?,
        ))
    };
    let mut opts = Options {
        granularity: a.granularity.into(),
        min_observations: a.min_observations,
        shared_min_apps: a.shared_min_apps,
        internet_min_addresses: a.internet_min_addresses,
        ..Options::default()
    };
    if let Some(s) = &a.scope {
        opts.scope = Some(parse_labels("--scope", s)?);
    }
    for x in &a.exclude {
        opts.exclude.push(parse_labels("--exclude", x)?);
    }
    (opts.from_ms, opts.to_ms) = a.input.window();
    let summaries = a.input.summaries(&inventory)?;
    let r = recommend(
        &summaries,
        &inventory,
        current.as_ref().map(|c| &c.0),
        &opts,
    );
    let files = r.rendered_files();

    // The proposal must check, beside the current policy if there is one; anything
    // else is a bug here, and nothing is written.
    let mut all = files.clone();
    if let Some((_, sources)) = &current {
        all.extend(sources.iter().cloned());
    }
    if !files.is_empty()
        && let Err(e) = Policy::from_sources(&all)
    {
        anyhow::bail!("the proposal does not check (a bug; nothing was written):\n{e}");
    }

    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for (name, text) in &files {
            std::fs::write(out.join(name), text)
                .with_context(|| format!("writing {}", out.join(name).display()))?;
        }
    }
    if a.json {
        let files_json: Vec<serde_json::Value> = files
            .iter()
            .map(|(n, t)| serde_json::json!({ "name": n, "content": t }))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "files": files_json,
                "widenings": r.widenings,
                "stats": r.stats,
                "notes": r.notes,
            }))?
        );
        return Ok(());
    }
    if a.out.is_none() {
        for (i, (name, text)) in files.iter().enumerate() {
            if i > 0 {
                outln!("---");
            }
            outln!("# file: {name}");
            out!("{text}");
        }
    }
    // With the files on stdout the report goes to stderr, so the YAML stays clean.
    let report = report_text(&r, a.out.as_deref(), files.len());
    if a.out.is_some() {
        out!("{report}");
    } else {
        eprint!("{report}");
    }
    Ok(())
}

fn report_text(r: &bulkhead_recommend::Recommendation, out: Option<&Path>, files: usize) -> String {
    use std::fmt::Write;
    let s = &r.stats;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{} summaries, {} conversations: {} allowed by the proposal ({} connections, {} bytes); \
         {} below the minimum observations, {} excluded, {} out of scope, {} outside the window, \
         {} already allowed, {} denied by existing rules",
        s.summaries,
        s.conversations,
        s.recommended,
        s.recommended_connections,
        s.recommended_bytes,
        s.below_min_observations,
        s.excluded,
        s.out_of_scope,
        s.outside_window,
        s.already_allowed,
        s.denied_by_rule
    );
    let _ = writeln!(
        t,
        "proposed: {} rulesets, {} rules, {} label groups, {} ip lists, {} services in {files} files{}",
        s.rulesets,
        s.rules,
        s.label_groups,
        s.ip_lists,
        s.services,
        out.map(|o| format!(" written to {}", o.display()))
            .unwrap_or_default()
    );
    for n in &r.notes {
        let _ = writeln!(t, "note: {n}");
    }
    if r.widenings.is_empty() {
        let _ = writeln!(
            t,
            "widenings: none; nothing allowed beyond what was observed"
        );
    } else {
        let _ = writeln!(
            t,
            "widenings ({}): allowed beyond what was observed",
            r.widenings.len()
        );
        for w in &r.widenings {
            let _ = writeln!(t, "  {w}");
        }
    }
    t
}

#[derive(Args, Debug)]
pub struct CoverageArgs {
    /// The policy to measure (files or directories).
    #[arg(long, required = true)]
    pub policy: Vec<PathBuf>,
    #[arg(long, required = true)]
    pub inventory: Vec<PathBuf>,
    #[arg(long)]
    pub label_rules: Option<PathBuf>,
    #[command(flatten)]
    pub input: FlowInput,
    /// How blocked traffic is grouped.
    #[arg(long, value_enum, default_value = "role")]
    pub granularity: GranularityArg,
    /// Blocked groups to list, largest first (0: all).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn coverage_cmd(a: CoverageArgs) -> anyhow::Result<()> {
    let inventory = load_inventory(&a.inventory, a.label_rules.as_deref())?;
    let policy = load_policy(&a.policy)?;
    let summaries = a.input.summaries(&inventory)?;
    let compiled = CompiledPolicy::compile(&inventory, &policy);
    let (from_ms, to_ms) = a.input.window();
    let c = coverage(
        &compiled,
        &policy,
        &inventory,
        &summaries,
        &CoverageOptions {
            from_ms,
            to_ms,
            granularity: a.granularity.into(),
            limit: a.limit,
        },
    );
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    outln!(
        "allowed: {} of {} connections ({:.1}%), {} of {} bytes ({:.1}%) in {} summaries",
        c.connections_allowed,
        c.connections,
        c.connection_share * 100.0,
        c.bytes_allowed,
        c.bytes,
        c.byte_share * 100.0,
        c.summaries - c.outside_window
    );
    if c.would_block.is_empty() {
        outln!("would block: nothing");
    } else {
        outln!(
            "would block ({} groups{}):",
            c.blocked_groups_total,
            if c.would_block.len() < c.blocked_groups_total {
                format!(", largest {}", c.would_block.len())
            } else {
                String::new()
            }
        );
        outln!(
            "  {:<36} {:<36} {:<12} {:>8} {:>10}  decided by",
            "from",
            "to",
            "service",
            "conns",
            "bytes"
        );
        for g in &c.would_block {
            let by = if g.denied_by.is_empty() {
                "default".to_string()
            } else {
                g.denied_by.join(", ")
            };
            outln!(
                "  {:<36} {:<36} {:<12} {:>8} {:>10}  {by}",
                g.source,
                g.destination,
                g.service,
                g.connections,
                g.bytes
            );
        }
    }
    if c.unused_rules.is_empty() {
        outln!("rules without hits: none");
    } else {
        outln!(
            "rules without hits ({}): dead, shadowed or broader than the traffic",
            c.unused_rules.len()
        );
        for r in &c.unused_rules {
            outln!("  {r}");
        }
    }
    if c.over_broad.is_empty() {
        outln!("over-broad rules: none");
    } else {
        outln!(
            "over-broad rules ({}): allow at least {}x the ports their traffic used",
            c.over_broad.len(),
            bulkhead_recommend::OVER_BROAD_FACTOR
        );
        for o in &c.over_broad {
            outln!(
                "  {}: allows {} port(s) ({}), used {}: {}",
                o.rule,
                o.allowed_ports,
                o.services.join(", "),
                o.used_ports,
                o.used.join(", ")
            );
        }
    }
    Ok(())
}
