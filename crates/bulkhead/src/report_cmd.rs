use std::path::PathBuf;
use std::time::Duration;

use bulkhead_enrich::sprawl::{SeenHost, sprawl};
use bulkhead_model::Bucket;
use bulkhead_store::FlowStore;
use clap::Subcommand;

use crate::estate::EnrichArgs;
use crate::flows_cmd::open_store;

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// Addresses in traffic that the inventory does not know, inventory workloads with no
    /// traffic, and the share of the inventory the traffic confirms.
    Sprawl {
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        estate: EnrichArgs,
        /// How far back from the newest data to look (e.g. 24h, 7d).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "7d")]
        window: Duration,
        #[arg(long)]
        json: bool,
    },
}

fn time(ms: i64) -> String {
    if ms < 0 {
        return ms.to_string();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
        .to_string()
}

pub fn run(cmd: ReportCommand) -> anyhow::Result<()> {
    match cmd {
        ReportCommand::Sprawl {
            data,
            estate,
            window,
            json,
        } => {
            let inventory = estate.inventory()?;
            let store = open_store(&data)?;
            let end = store
                .stats()?
                .get(Bucket::Hour)
                .newest_start_ms
                .map(|s| s + Bucket::Hour.millis())
                .unwrap_or(0);
            let start = end - window.as_millis() as i64;
            let seen: Vec<SeenHost> = store
                .seen_addresses(Bucket::Hour, start, end)?
                .into_iter()
                .map(|s| SeenHost {
                    address: s.address,
                    first_seen_ms: s.first_seen_ms,
                    last_seen_ms: s.last_seen_ms,
                    bytes: s.bytes,
                    connections: s.connections,
                    peers: s.peers,
                    served: s.served.iter().map(|p| (p.proto, p.port)).collect(),
                    reporters: s.reporters,
                })
                .collect();
            let r = sprawl(&inventory, &seen, start, end);
            if json {
                outln!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            outln!(
                "window      {} .. {}",
                time(r.window_start_ms),
                time(r.window_end_ms)
            );
            outln!(
                "inventory   {} workloads believed, {} seen in traffic ({:.0}%), {} quiet",
                r.believed,
                r.seen,
                r.seen_ratio * 100.0,
                r.quiet.len()
            );
            outln!(
                "unknown     {} internal addresses in traffic are not in the inventory; {} external peers",
                r.unknown.len(),
                r.external.len()
            );
            let table =
                |title: &str, hosts: &[bulkhead_enrich::sprawl::UnknownHost], limit: usize| {
                    if hosts.is_empty() {
                        return;
                    }
                    outln!();
                    outln!(
                        "{:<40} {:>12} {:>6} {:>6}  {:<28} serves / seen by",
                        title,
                        "bytes",
                        "conns",
                        "peers",
                        "guessed role"
                    );
                    for u in hosts.iter().take(limit) {
                        outln!(
                            "{:<40} {:>12} {:>6} {:>6}  {:<28} {} / {}",
                            u.address,
                            u.bytes,
                            u.connections,
                            u.peers,
                            u.guessed_role,
                            if u.serves.is_empty() {
                                "-".to_string()
                            } else {
                                u.serves.join(" ")
                            },
                            u.reporters.join(", ")
                        );
                    }
                    if hosts.len() > limit {
                        outln!("… and {} more (--json lists all)", hosts.len() - limit);
                    }
                };
            table("unknown internal address", &r.unknown, usize::MAX);
            if !r.probed_only.is_empty() {
                outln!();
                outln!(
                    "{} internal addresses only received connection attempts without payload (a scan's targets, or hosts that are gone); --json lists them",
                    r.probed_only.len()
                );
            }
            table("top external peers", &r.external, 10);
            if !r.quiet.is_empty() {
                outln!();
                outln!(
                    "quiet workloads (no traffic in the window): idle, stale, or not covered by any exporter"
                );
                for q in &r.quiet {
                    let addrs: Vec<String> = q.addresses.iter().map(|a| a.to_string()).collect();
                    outln!("  {:<24} {:<32} {}", q.name, addrs.join(" "), q.labels);
                }
            }
            Ok(())
        }
    }
}
