//! Runs the library in the current network namespace and prints JSON, one value per line;
//! the tests start it with `ip netns exec NS host-probe ...`.
//!
//! ```text
//! host-probe info                                 HostInfo
//! host-probe nflog GROUP COUNT SECONDS            LoggedPackets until COUNT or SECONDS
//! host-probe conntrack COUNT SECONDS [REAP_MS]    HostFlows until COUNT or SECONDS
//! host-probe conntrack-dump                       HostFlows of the current table
//! host-probe conntrack-flush                      deletes every entry (quarantine)
//! host-probe nft-generation                       the nftables ruleset generation
//! ```
//!
//! The long-running modes print "ready" once subscribed, so a test knows when to start
//! traffic, and stats as a last line.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bulkhead_host::{ConntrackMonitor, NflogReader, host_info};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("host-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn number<T: std::str::FromStr>(args: &[String], i: usize) -> Result<T, String> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("argument {i}: expected a number"))
}

fn line(value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

fn ready() -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("info") => line(&host_info().map_err(|e| e.to_string())?),
        Some("conntrack-flush") => bulkhead_host::flush_conntrack().map_err(|e| e.to_string()),
        Some("nft-generation") => line(
            &bulkhead_host::nftables_generation().map_err(|e| e.to_string())?,
        ),
        Some("nflog") => {
            let group: u16 = number(args, 1)?;
            let count: usize = number(args, 2)?;
            let deadline = Instant::now() + Duration::from_secs(number(args, 3)?);
            let mut reader = NflogReader::open(group).map_err(|e| e.to_string())?;
            ready()?;
            let mut seen = 0;
            while seen < count && Instant::now() < deadline {
                for p in reader
                    .recv(Duration::from_millis(200))
                    .map_err(|e| e.to_string())?
                {
                    line(&p)?;
                    seen += 1;
                }
            }
            eprintln!("host-probe: nflog {:?}", reader.stats());
            Ok(())
        }
        Some("conntrack") => {
            let count: usize = number(args, 1)?;
            let deadline = Instant::now() + Duration::from_secs(number(args, 2)?);
            let mut monitor = ConntrackMonitor::open().map_err(|e| e.to_string())?;
            if args.len() > 3 {
                let ms: u64 = number(args, 3)?;
                monitor.set_reap_interval(Some(Duration::from_millis(ms)));
            }
            ready()?;
            let mut seen = 0;
            while seen < count && Instant::now() < deadline {
                for f in monitor
                    .recv(Duration::from_millis(200))
                    .map_err(|e| e.to_string())?
                {
                    line(&f)?;
                    seen += 1;
                }
            }
            eprintln!("host-probe: conntrack {:?}", monitor.stats());
            Ok(())
        }
        Some("conntrack-dump") => {
            let mut monitor = ConntrackMonitor::open().map_err(|e| e.to_string())?;
            for f in monitor.dump().map_err(|e| e.to_string())? {
                line(&f)?;
            }
            Ok(())
        }
        _ => Err(
            "usage: host-probe info | nflog GROUP COUNT SECONDS | conntrack COUNT SECONDS [REAP_MS] | conntrack-dump".into(),
        ),
    }
}
