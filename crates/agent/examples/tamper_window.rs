//! How long a tampered table stays tampered: the window between someone's `nft` change
//! being committed and the agent's repair being committed, measured by the kernel's
//! nftables generation (each committed transaction moves it by one). Run inside a
//! throwaway network namespace (bench/tamper.sh does):
//!
//! ```text
//! tamper_window watch|poll ROUNDS
//! ```
//!
//! `watch` is the agent's guard as it runs (woken by netlink on every change); `poll`
//! the same guard reading the generation every 2 s only, as the agent did before: the
//! peer in the same run. Prints one line: mode, rounds, then median, p90 and max in ms
//! measured from the tamper command's return (a lower bound), then the same from its
//! start (an upper bound: nft's own start-up included).

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_agent::enforcer::Enforcer;
use bulkhead_agent::{GuardMode, spawn_guard};
use bulkhead_api::WirePolicy;
use bulkhead_model::{Action, EnforcementMode, ServicePort};
use bulkhead_nft::Nft;
use bulkhead_policy::host::{HostPolicy, HostRule, Peers};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some("watch") => GuardMode::Watch,
        Some("poll") => GuardMode::Poll,
        _ => {
            eprintln!("usage: tamper_window watch|poll ROUNDS");
            std::process::exit(2);
        }
    };
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(20);

    let local: IpAddr = "192.168.99.1".parse().unwrap();
    let hp = HostPolicy {
        workload: "bench".into(),
        mode: EnforcementMode::Enforced,
        addresses: vec![local],
        inbound: vec![HostRule {
            tier: "application".into(),
            tier_index: 0,
            rule_id: "allow-web".into(),
            action: Action::Allow,
            local: vec![local],
            peers: Peers::Nets(vec!["192.168.99.0/24".parse().unwrap()]),
            services: vec![(ServicePort::tcp(443), None)],
        }],
        outbound: Vec::new(),
        quarantined: false,
    };
    let policy = WirePolicy::new(&hp, &[ServicePort::tcp(22)], 100, false);
    let mut enforcer = Enforcer::new(Nft::new(), "bulkhead");
    enforcer.apply(&policy).expect("applying the bench policy");
    let enforcer = Arc::new(Mutex::new(enforcer));
    let repaired = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = repaired.clone();
    spawn_guard(
        enforcer,
        mode,
        Duration::from_secs(2),
        stop.clone(),
        move |checked| {
            if let Ok(Some(_)) = checked {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        },
    )
    .expect("starting the guard");
    std::thread::sleep(Duration::from_millis(300));

    let generation = || bulkhead_host::nftables_generation().expect("reading the generation");
    let mut windows = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let before = generation();
        let spawned = Instant::now();
        let tampered = Command::new("nft")
            .args([
                "insert", "rule", "inet", "bulkhead", "input", "tcp", "dport", "9999", "accept",
            ])
            .status()
            .expect("running nft");
        assert!(tampered.success(), "the tamper itself failed");
        let committed = Instant::now();
        // The tamper is generation before+1; the repair before+2.
        while generation().wrapping_sub(before) < 2 {
            std::hint::spin_loop();
        }
        // From the tamper command's return (it committed a little earlier: a lower
        // bound) and from its start (nft's own start-up included: an upper bound).
        windows.push((committed.elapsed(), spawned.elapsed()));
        while repaired.load(Ordering::SeqCst) < round as u64 + 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut low: Vec<f64> = windows.iter().map(|w| ms(w.0)).collect();
    let mut high: Vec<f64> = windows.iter().map(|w| ms(w.1)).collect();
    low.sort_by(f64::total_cmp);
    high.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "{} {} {:.1} {:.1} {:.1} {:.1} {:.1} {:.1}",
        if mode == GuardMode::Watch {
            "watch"
        } else {
            "poll"
        },
        rounds,
        at(&low, 0.5),
        at(&low, 0.9),
        at(&low, 1.0),
        at(&high, 0.5),
        at(&high, 0.9),
        at(&high, 1.0)
    );
}
