//! The generated inventory and policy through the project's real parsers, and every
//! generated connection through the reference oracle and the compiled evaluator.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use bulkhead_model::{Connection, Inventory, VerdictKind};
use bulkhead_policy::{CompiledPolicy, ConnKey, Policy, format::format_file, oracle};
use bulkhead_sim::{AttackerOrigin, Env, Estate, FlowKind, SCAN_PORTS, SimConfig, SimFlow};

fn load(estate: &Estate) -> (Inventory, Policy) {
    let inv = bulkhead_inventory::load(&[("inventory.csv", estate.inventory_csv())], None)
        .unwrap_or_else(|e| panic!("generated inventory does not load:\n{e}"));
    let files = estate.policy_files();
    let policy = Policy::from_sources(&files)
        .unwrap_or_else(|e| panic!("generated policy is invalid:\n{e}"));
    (inv, policy)
}

/// Distinct connections per kind, so that each is evaluated once.
fn connections(flows: &[SimFlow], kind: FlowKind) -> HashSet<ConnKey> {
    flows
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| ConnKey {
            src: f.src,
            dst: f.dst,
            proto: f.proto,
            port: f.dst_port,
        })
        .collect()
}

/// Evaluates with the oracle and the compiled policy; they must agree.
fn verdicts(
    inv: &Inventory,
    policy: &Policy,
    keys: &HashSet<ConnKey>,
) -> Vec<(ConnKey, VerdictKind)> {
    let compiled = CompiledPolicy::compile(inv, policy);
    keys.iter()
        .map(|k| {
            let c = Connection {
                src: k.src,
                dst: k.dst,
                proto: k.proto,
                port: k.port,
                process: None,
            };
            let slow = oracle::evaluate(policy, inv, &c);
            let fast = compiled.verdict(k, None);
            assert_eq!(slow, fast, "oracle and compiled policy disagree on {k:?}");
            (*k, slow.verdict)
        })
        .collect()
}

fn check(config: &SimConfig) -> Vec<SimFlow> {
    let estate = Estate::generate(config);
    let (inv, policy) = load(&estate);
    assert_eq!(inv.len(), estate.workloads().len());
    for w in estate.workloads() {
        let loaded = inv.by_name(&w.name).expect("workload loaded");
        let labels: Vec<(String, String)> = loaded
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let want: Vec<(String, String)> = w.labels.clone().into_iter().collect();
        assert_eq!(labels, want, "{}", w.name);
        assert_eq!(loaded.addresses, w.addresses, "{}", w.name);
        assert_eq!(loaded.mode, w.mode, "{}", w.name);
    }
    let flows: Vec<SimFlow> = estate.flows().collect();

    for (k, v) in verdicts(&inv, &policy, &connections(&flows, FlowKind::Normal)) {
        assert_eq!(
            v,
            VerdictKind::Allowed,
            "normal connection {k:?} is not allowed"
        );
    }
    for kind in [FlowKind::Attacker, FlowKind::Unknown] {
        for (k, v) in verdicts(&inv, &policy, &connections(&flows, kind)) {
            assert_ne!(
                v,
                VerdictKind::Allowed,
                "{kind:?} connection {k:?} is allowed"
            );
        }
    }
    flows
}

#[test]
fn default_estate_loads_and_policy_allows_exactly_the_normal_traffic() {
    let flows = check(&SimConfig {
        attacker: true,
        ..SimConfig::default()
    });
    for kind in [FlowKind::Normal, FlowKind::Unknown, FlowKind::Attacker] {
        assert!(flows.iter().any(|f| f.kind == kind), "no {kind:?} flows");
    }
}

#[test]
fn unknown_laptop_attacker_is_not_allowed_either() {
    let flows = check(&SimConfig {
        seed: 9,
        attacker: true,
        attacker_origin: AttackerOrigin::UnknownLaptop,
        ..SimConfig::default()
    });
    let laptop = IpAddr::V4(bulkhead_sim::LAPTOP);
    assert!(
        flows
            .iter()
            .filter(|f| f.kind == FlowKind::Attacker)
            .all(|f| f.src == laptop)
    );
}

#[test]
fn larger_estate_with_generated_app_names_and_prod_only() {
    check(&SimConfig {
        seed: 3,
        apps: 14,
        web: 3,
        app: 2,
        db: 2,
        unknown_devices: 20,
        idle_workloads: 40,
        attacker: true,
        attacker_origin: AttackerOrigin::UnknownLaptop,
        envs: vec![Env::Prod],
        ..SimConfig::default()
    });
}

#[test]
fn policy_files_are_in_canonical_form() {
    let estate = Estate::generate(&SimConfig::default());
    for (name, text) in estate.policy_files() {
        let formatted = format_file(&name, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(formatted, text, "{name} is not in canonical form");
    }
}

#[test]
fn sprawl_idle_workloads_are_silent_and_unknown_devices_talk() {
    let estate = Estate::generate(&SimConfig {
        unknown_devices: 7,
        idle_workloads: 5,
        flows_per_minute: 50,
        ..SimConfig::default()
    });
    let flows: Vec<SimFlow> = estate.flows().collect();
    let seen: HashSet<IpAddr> = flows.iter().flat_map(|f| [f.src, f.dst]).collect();
    let idle: Vec<_> = estate.workloads().iter().filter(|w| w.idle).collect();
    assert_eq!(idle.len(), 5);
    for w in estate.workloads() {
        let talks = w.addresses.iter().any(|a| seen.contains(a));
        assert_eq!(
            talks, !w.idle,
            "{}: idle={} but in traffic={talks}",
            w.name, w.idle
        );
    }
    assert_eq!(estate.unknown_devices().len(), 7);
    for d in estate.unknown_devices() {
        assert!(seen.contains(d), "unknown device {d} never appears");
    }
    // Every address in traffic that is not in the inventory is an unknown device or
    // outside the estate's private range.
    let inv: HashSet<IpAddr> = estate
        .workloads()
        .iter()
        .flat_map(|w| w.addresses.iter().copied())
        .collect();
    let unknown: HashSet<IpAddr> = estate.unknown_devices().iter().copied().collect();
    for a in &seen {
        let private = match a {
            IpAddr::V4(v) => v.octets()[0] == 10,
            IpAddr::V6(v) => (v.segments()[0] & 0xfe00) == 0xfc00,
        };
        assert!(
            inv.contains(a) || unknown.contains(a) || !private,
            "stray address {a}"
        );
    }
}

#[test]
fn flows_are_ordered_in_the_window_and_at_the_asked_rate() {
    let cfg = SimConfig {
        flows_per_minute: 2000,
        duration_ms: 5 * 60_000 + 30_000,
        ..SimConfig::default()
    };
    let estate = Estate::generate(&cfg);
    let flows: Vec<SimFlow> = estate.flows().collect();
    assert_eq!(flows.len(), 2000 * 5 + 1000);
    assert!(flows.windows(2).all(|w| w[0].start_ms <= w[1].start_ms));
    let end = cfg.start_ms + cfg.duration_ms;
    for f in &flows {
        assert!(f.start_ms >= cfg.start_ms && f.start_ms < end, "{f:?}");
        assert!(f.end_ms >= f.start_ms && f.packets >= 1 && f.bytes >= 40 * f.packets);
        assert!(f.src_port >= 1024, "{f:?} has no ephemeral source port");
    }
}

#[test]
fn every_conversation_appears_even_at_a_low_rate() {
    let estate = Estate::generate(&SimConfig {
        flows_per_minute: 1,
        ..SimConfig::default()
    });
    let n = estate.flows().count();
    assert!(n >= estate.conversation_count(), "{n} flows");
}

#[test]
fn same_seed_same_estate_other_seed_other_traffic() {
    let a = Estate::generate(&SimConfig::default());
    let b = Estate::generate(&SimConfig::default());
    let c = Estate::generate(&SimConfig {
        seed: 2,
        ..SimConfig::default()
    });
    assert_eq!(a.inventory_csv(), b.inventory_csv());
    assert_eq!(a.policy_files(), b.policy_files());
    assert!(a.flows().eq(b.flows()));
    assert!(!a.flows().eq(c.flows()));
    // A replay from the same estate is the same traffic.
    assert!(a.flows().eq(a.flows()));
}

#[test]
fn attacker_scans_one_prod_subnet_then_moves_laterally() {
    let estate = Estate::generate(&SimConfig {
        attacker: true,
        ..SimConfig::default()
    });
    let a = estate.attacker().expect("attacker configured");
    let attacker = estate
        .workloads()
        .iter()
        .find(|w| w.addresses.contains(&a.addr))
        .expect("DevWeb attacker is an inventory workload");
    assert_eq!(attacker.env, Some(Env::Dev));
    let flows: Vec<SimFlow> = estate
        .flows()
        .filter(|f| f.kind == FlowKind::Attacker)
        .collect();
    let scan: Vec<_> = flows.iter().filter(|f| f.packets == 1).collect();
    assert_eq!(scan.len(), 254 * SCAN_PORTS.len());
    let ports: BTreeSet<u16> = scan.iter().map(|f| f.dst_port).collect();
    assert_eq!(ports.len(), SCAN_PORTS.len());
    let (net, _) = a.scanned_subnet;
    for f in &scan {
        let IpAddr::V4(d) = f.dst else {
            panic!("v6 scan")
        };
        assert_eq!(d.octets()[..3], net.octets()[..3]);
        assert_eq!(f.tcp_flags, bulkhead_sim::tcp_flags::SYN);
    }
    let lateral: BTreeSet<u16> = flows
        .iter()
        .filter(|f| f.packets > 1)
        .map(|f| f.dst_port)
        .collect();
    assert_eq!(lateral, BTreeSet::from([22, 445, 5432]));
    let last_scan = scan.iter().map(|f| f.start_ms).max().unwrap();
    assert!(
        flows
            .iter()
            .filter(|f| f.packets > 1)
            .all(|f| f.start_ms > last_scan)
    );
    let prod: HashSet<IpAddr> = estate
        .workloads()
        .iter()
        .filter(|w| w.env == Some(Env::Prod))
        .map(|w| w.ipv4())
        .collect();
    assert!(a.targets.iter().all(|t| prod.contains(t)));
}

#[test]
fn invalid_configs_are_refused() {
    for cfg in [
        SimConfig {
            web: 241,
            ..SimConfig::default()
        },
        SimConfig {
            attacker: true,
            envs: vec![Env::Prod],
            ..SimConfig::default()
        },
        SimConfig {
            duration_ms: -1,
            ..SimConfig::default()
        },
    ] {
        assert!(Estate::try_generate(&cfg).is_err(), "{cfg:?}");
    }
}

#[test]
fn no_flow_ends_after_the_window_it_was_generated_for() {
    // The demo streams windows that end now: a flow ending later would show in the
    // console as a connection seen in the future.
    let cfg = SimConfig {
        attacker: true,
        duration_ms: 120_000,
        ..SimConfig::default()
    };
    let estate = Estate::generate(&cfg);
    let flows: Vec<SimFlow> = estate.flows().collect();
    let end = cfg.start_ms + cfg.duration_ms;
    assert!(!flows.is_empty());
    assert!(
        flows
            .iter()
            .all(|f| f.start_ms <= f.end_ms && f.end_ms <= end),
        "a flow ends after the window"
    );
    // Some long-lived flows (backups last minutes) were cut at the window's end.
    assert!(flows.iter().any(|f| f.end_ms == end));
}
