//! Applies a policy with the agent's enforcer in the current network namespace, for the
//! tests (`ip netns exec NS enforce-probe < policy.json`): a test thread cannot enter a
//! namespace without unsafe `setns`. Reads one `WirePolicy` as JSON on stdin, applies it
//! in one transaction to the owned table `bulkhead`, and prints the table as the kernel
//! lists it.

use std::io::Read;
use std::process::ExitCode;

use bulkhead_agent::enforcer::Enforcer;
use bulkhead_api::WirePolicy;

fn main() -> ExitCode {
    let mut text = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut text) {
        eprintln!("enforce-probe: reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    let policy: WirePolicy = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("enforce-probe: not a WirePolicy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut enforcer = Enforcer::new(bulkhead_nft::Nft::new(), "bulkhead");
    if let Err(e) = enforcer.apply(&policy) {
        eprintln!("enforce-probe: {e}");
        return ExitCode::FAILURE;
    }
    match std::process::Command::new("nft")
        .args(["list", "table", "inet", "bulkhead"])
        .output()
    {
        Ok(out) => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("enforce-probe: nft list: {e}");
            ExitCode::FAILURE
        }
    }
}
