//! `bulkhead demo`: the server on 127.0.0.1 with an embedded store, a synthetic estate
//! loaded and provisioned in monitor mode, and its IPFIX streaming into the server's own
//! collector until Ctrl-C.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bulkhead_model::EnforcementMode;
use bulkhead_policy::Policy;
use bulkhead_sim::{Estate, IpfixEncoder, SimConfig};
use bulkhead_store::control::{AuditContext, Change};

use crate::state::now_ms;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub collect: SocketAddr,
    pub data: PathBuf,
    pub apps: usize,
    pub seed: u64,
}

fn estate(o: &DemoOptions, start_ms: i64, duration_ms: i64, flows_per_minute: usize) -> Estate {
    Estate::generate(&SimConfig {
        seed: o.seed,
        apps: o.apps,
        attacker: true,
        unknown_devices: 6,
        prod_mode: EnforcementMode::Monitor,
        dev_mode: EnforcementMode::Monitor,
        start_ms,
        duration_ms,
        flows_per_minute,
        ..SimConfig::default()
    })
}

/// Loads the estate's inventory and policy and provisions it, unless the data directory
/// already holds a provisioned version (a restarted demo keeps its state).
pub fn load(state: &crate::AppState, o: &DemoOptions) -> anyhow::Result<bool> {
    let mut c = state.control.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    if c.latest_version()?.is_some() {
        return Ok(false);
    }
    let e = estate(o, now_ms() - 3_600_000, 3_600_000, 300);
    let located = bulkhead_inventory::parse_csv("demo inventory", &e.inventory_csv())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut changes = Vec::new();
    for l in located {
        let w = &l.workload;
        let json = serde_json::json!({
            "name": w.name, "kind": w.kind, "managed": w.managed, "addresses": w.addresses,
            "hostname": w.hostname, "os": w.os, "os_version": w.os_version, "labels": w.labels,
            "mode": w.mode, "owner": w.owner, "attributes": w.attributes,
        });
        changes.push(Change::PutWorkload {
            name: w.name.clone(),
            json: json.to_string(),
        });
    }
    let policy = Policy::from_sources(&e.policy_files()).map_err(|e| anyhow::anyhow!("{e}"))?;
    changes.push(Change::ReplaceDraft {
        objects: crate::policy_api::objects_of(&policy),
    });
    let audit = |action: &str| AuditContext {
        actor: "bulkhead demo".into(),
        source: "local".into(),
        at_ms: now_ms(),
        action: action.into(),
    };
    c.apply(&changes, &audit("demo.load"))?;
    c.provision(
        "starter policy from the synthetic estate, monitor mode",
        &audit("provision"),
    )?;
    drop(c);
    state.recompile().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(true)
}

/// Sends the last hour of traffic, then the current traffic every 20 s, until `stop`.
pub fn stream(o: &DemoOptions, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let mut encoder = IpfixEncoder::new(1);
    let send =
        |flows: &[bulkhead_sim::SimFlow], encoder: &mut IpfixEncoder| -> anyhow::Result<()> {
            for (i, d) in encoder.encode(flows).iter().enumerate() {
                sock.send_to(d, o.collect)?;
                // Pace the history so the collector's socket buffer never overflows.
                if i % 200 == 199 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Ok(())
        };
    let history = estate(o, now_ms() - 3_600_000, 3_600_000, 300);
    let flows: Vec<_> = history.flows().collect();
    send(&flows, &mut encoder)?;
    let step = 20_000;
    let mut from = now_ms();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let now = now_ms();
        if now - from < step {
            continue;
        }
        let e = estate(o, from, now - from, 300);
        let flows: Vec<_> = e.flows().collect();
        send(&flows, &mut encoder)?;
        from = now;
    }
    Ok(())
}
