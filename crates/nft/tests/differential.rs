//! The engine equals the kernel: random policies, modes and quarantines over two hosts,
//! rendered and applied with real nftables in two namespaces this test creates, then
//! real connections both ways on every port; what got through must be exactly what the
//! engine (`CompiledPolicy::compile_with`, with the failsafe ports in and out and the
//! quarantine as the agent applies them) does not call blocked. Every disagreement is a failing case,
//! shrunk by proptest.
//!
//! ```text
//!   a 10.203.0.1 (role=a, always managed)  ←veth→  b 10.203.0.2 (role=b, managed or not)
//! ```
//!
//! Needs root, iproute2, nftables and python3 (scripts/setup). The namespaces have no
//! route out; they and every process in them are removed when the test ends.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use bulkhead_model::{Inventory, VerdictKind};
use bulkhead_nft::{Nft, RenderOptions, render};
use bulkhead_policy::host::host_policy;
use bulkhead_policy::{CompiledPolicy, ConnKey, HostContext, Policy};
use bulkhead_testkit::netns::Pair;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// 22 is the failsafe port inbound, 82 outbound; 80 and 81 are ordinary services.
const PORTS: [u16; 4] = [22, 80, 81, 82];
const SERVICES: [&str; 5] = ["tcp/80", "tcp/81", "tcp/22", "tcp/80-81", "tcp/82"];
const SELECTORS: [&str; 4] = ["role=a", "role=b", "any", "workloads"];

#[derive(Debug, Clone)]
struct Rule {
    deny: bool,
    tier: usize,
    from: usize,
    to: usize,
    services: Vec<usize>,
}

#[derive(Debug, Clone)]
struct Case {
    /// Modes: 0 monitor, 1 enforced; b: 2 unmanaged.
    a_mode: u8,
    b_mode: u8,
    a_quarantined: bool,
    rules: Vec<Rule>,
}

fn case() -> impl Strategy<Value = Case> {
    let rule = (
        any::<bool>(),
        0usize..2,
        0usize..SELECTORS.len(),
        0usize..SELECTORS.len(),
        proptest::collection::vec(0usize..SERVICES.len(), 1..3),
    )
        .prop_map(|(deny, tier, from, to, services)| Rule {
            deny,
            tier,
            from,
            to,
            services,
        });
    (
        0u8..2,
        0u8..3,
        proptest::bool::weighted(0.25),
        proptest::collection::vec(rule, 0..5),
    )
        .prop_map(|(a_mode, b_mode, a_quarantined, rules)| Case {
            a_mode,
            b_mode,
            a_quarantined,
            rules,
        })
}

fn policy_text(c: &Case) -> String {
    let mut text = String::from(
        "bulkhead: v1\nkind: tier\nname: t0\norder: 10\n---\nbulkhead: v1\nkind: tier\nname: t1\norder: 20\n",
    );
    for tier in 0..2 {
        let rules: Vec<(usize, &Rule)> = c
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.tier == tier)
            .collect();
        if rules.is_empty() {
            continue;
        }
        text.push_str(&format!(
            "---\nbulkhead: v1\nkind: ruleset\nname: rs{tier}\ntier: t{tier}\nrules:\n"
        ));
        for (i, r) in rules {
            let services: Vec<&str> = r.services.iter().map(|s| SERVICES[*s]).collect();
            text.push_str(&format!(
                "  - id: r{i}\n    action: {}\n    from: [{}]\n    to: [{}]\n    services: [{}]\n",
                if r.deny { "deny" } else { "allow" },
                SELECTORS[r.from],
                SELECTORS[r.to],
                services.join(", ")
            ));
        }
    }
    text
}

fn inventory(c: &Case, pair: &Pair) -> Inventory {
    let mode = |m: u8| if m == 1 { "enforced" } else { "monitor" };
    let quarantine = if c.a_quarantined {
        r#", "attributes": {"bulkhead.quarantine": "differential test"}"#
    } else {
        ""
    };
    let b = if c.b_mode == 2 {
        format!(
            r#"{{"name": "b", "kind": "vm", "managed": false, "addresses": ["{}"], "labels": {{"role": "b"}}}}"#,
            pair.b_ip
        )
    } else {
        format!(
            r#"{{"name": "b", "kind": "vm", "managed": true, "addresses": ["{}"], "labels": {{"role": "b"}}, "mode": "{}"}}"#,
            pair.b_ip,
            mode(c.b_mode)
        )
    };
    let json = format!(
        r#"[{{"name": "a", "kind": "vm", "managed": true, "addresses": ["{}"], "labels": {{"role": "a"}}, "mode": "{}"{quarantine}}}, {b}]"#,
        pair.a_ip,
        mode(c.a_mode)
    );
    bulkhead_inventory::load(&[("lab.json", json)], None).expect("a valid inventory")
}

/// Listeners that accept and close, on every port, in one namespace.
fn listen(ns: &str, ip: &str) -> Child {
    const SCRIPT: &str = bulkhead_testkit::sessions::ACCEPT_AND_CLOSE;
    let ports: Vec<String> = PORTS.iter().map(u16::to_string).collect();
    let mut args = vec!["netns", "exec", ns, "python3", "-c", SCRIPT, ip];
    args.extend(ports.iter().map(String::as_str));
    let mut child = Command::new("ip")
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting a listener");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

/// Connects from `ns` to every port of `to` at once; the ports that connected. A
/// dropped SYN is a timeout (3 s: only how long we wait for nothing to happen).
fn reachable(ns: &str, to: &str) -> BTreeSet<u16> {
    const SCRIPT: &str = r#"
import socket, sys, threading
lock = threading.Lock()
def attempt(port):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((sys.argv[1], port))
        with lock:
            sys.stdout.write("%d\n" % port)
            sys.stdout.flush()
    except OSError:
        pass
threads = [threading.Thread(target=attempt, args=(int(p),)) for p in sys.argv[2:]]
for t in threads: t.start()
for t in threads: t.join()
"#;
    let ports: Vec<String> = PORTS.iter().map(u16::to_string).collect();
    let mut args = vec!["ip", "netns", "exec", ns, "python3", "-c", SCRIPT, to];
    args.extend(ports.iter().map(String::as_str));
    bulkhead_testkit::command::ok(&args)
        .lines()
        .map(|l| l.trim().parse().expect("a port"))
        .collect()
}

#[test]
fn what_the_kernel_lets_through_is_what_the_engine_does_not_block() {
    let pair = Pair::new("diff", "10.203.0");
    let mut listeners = [listen(&pair.a.0, &pair.a_ip), listen(&pair.b.0, &pair.b_ip)];
    let opts = RenderOptions {
        failsafe_outbound: vec![bulkhead_model::ServicePort::tcp(82)],
        ..RenderOptions::default()
    };
    let (nft_a, nft_b) = (Nft::in_netns(&pair.a.0), Nft::in_netns(&pair.b.0));
    let mut runner = TestRunner::new(Config {
        cases: 12,
        max_shrink_iters: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |c| {
        let inv = inventory(&c, &pair);
        let policy = Policy::from_sources(&[("lab.yaml", policy_text(&c))])
            .map_err(|e| TestCaseError::fail(format!("generated policy: {e}")))?;
        // The agents: a's table, and b's when it is managed (its table gone otherwise).
        nft_a
            .apply(&render(&host_policy(&policy, &inv, "a").unwrap(), &opts))
            .unwrap();
        match host_policy(&policy, &inv, "b") {
            Ok(hp) => nft_b.apply(&render(&hp, &opts)).unwrap(),
            Err(_) => nft_b
                .apply("table inet bulkhead {}\ndelete table inet bulkhead\n")
                .unwrap(),
        }
        let hosts = HostContext {
            failsafe_ports: opts.failsafe_ports.clone(),
            failsafe_outbound: opts.failsafe_outbound.clone(),
            control_plane: Vec::new(),
            quarantine_applied: if c.a_quarantined {
                BTreeSet::from(["a".to_string()])
            } else {
                BTreeSet::new()
            },
        };
        let engine = CompiledPolicy::compile_with(&inv, &policy, &hosts);
        for (from, from_ip, to_ip) in [
            (&pair.b.0, &pair.b_ip, &pair.a_ip),
            (&pair.a.0, &pair.a_ip, &pair.b_ip),
        ] {
            let got = reachable(from, to_ip);
            for port in PORTS {
                let v = engine.verdict(
                    &ConnKey {
                        src: from_ip.parse().unwrap(),
                        dst: to_ip.parse().unwrap(),
                        proto: 6,
                        port,
                    },
                    None,
                );
                let expected = v.verdict != VerdictKind::Blocked;
                prop_assert_eq!(
                    got.contains(&port),
                    expected,
                    "{} -> {} tcp/{}: the engine says {:?}\npolicy:\n{}",
                    from_ip,
                    to_ip,
                    port,
                    v,
                    policy_text(&c)
                );
            }
        }
        Ok(())
    });
    for l in &mut listeners {
        let _ = l.kill();
        let _ = l.wait();
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}
