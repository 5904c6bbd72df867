//! Applies a policy with the agent's enforcer in the current network namespace, for the
//! tests (`ip netns exec NS enforce-probe [watch SECONDS] < policy.json`): a test thread
//! cannot enter a namespace without unsafe `setns`. Reads one `WirePolicy` as JSON on
//! stdin and applies it in one transaction to the owned table `bulkhead`. Without
//! arguments it prints the table as the kernel lists it and exits; with `watch SECONDS`
//! it prints "applied", then runs the tamper check every 200 ms for that long, printing
//! "tamper: DIFFERENCE" (one line) for each tamper it repaired.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bulkhead_agent::enforcer::Enforcer;
use bulkhead_api::WirePolicy;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enforce-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let policy: WirePolicy =
        serde_json::from_str(&text).map_err(|e| format!("not a WirePolicy: {e}"))?;
    let mut enforcer = Enforcer::new(bulkhead_nft::Nft::new(), "bulkhead");
    enforcer.apply(&policy).map_err(|e| e.to_string())?;
    match args.first().map(String::as_str) {
        None => {
            let out = std::process::Command::new("nft")
                .args(["list", "table", "inet", "bulkhead"])
                .output()
                .map_err(|e| format!("nft list: {e}"))?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            Ok(())
        }
        Some("watch") => {
            let secs: u64 = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .ok_or("watch SECONDS")?;
            let mut out = std::io::stdout();
            let say = |out: &mut std::io::Stdout, line: &str| {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            };
            say(&mut out, "applied");
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                std::thread::sleep(Duration::from_millis(200));
                match enforcer.check() {
                    Ok(Some(t)) => say(
                        &mut out,
                        &format!("tamper: {}", t.difference.replace('\n', " | ")),
                    ),
                    Ok(None) => {}
                    Err(e) => say(&mut out, &format!("error: {e}")),
                }
            }
            Ok(())
        }
        Some(other) => Err(format!("unknown mode {other:?}")),
    }
}
