//! The flow pipeline end to end, as a user runs it: a synthetic estate exports IPFIX over
//! loopback to `bulkhead flows collect`, which enriches, verdicts and stores it; then
//! `flows query` and `report sprawl` read it back.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};

fn bulkhead() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
}

fn run(args: &[&str]) -> String {
    let out = bulkhead().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn simulated_export_is_collected_verdicted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let sim = [
        "simulate",
        "--out",
        &d("sim"),
        "--seed",
        "7",
        "--attacker",
        "--unknown-devices",
        "4",
        "--idle",
        "2",
    ];
    let wrote = run(&sim);
    let flows: u64 = wrote
        .split_whitespace()
        .skip_while(|w| *w != "files,")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();

    // The same export, offline: every flow decodes.
    let out = bulkhead()
        .args(["flows", "decode", &d("sim/export.pcap")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count() as u64,
        flows
    );

    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut collector = bulkhead()
        .args([
            "flows",
            "collect",
            "--data",
            &d("data"),
            "--listen",
            &listen,
            "--workers",
            "2",
            "--duration",
            "6s",
        ])
        .args([
            "--inventory",
            &d("sim/inventory.csv"),
            "--policy",
            &d("sim/policy"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(collector.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("collecting on"), "{line}");

    let mut send = sim.to_vec();
    send.extend(["--send", &listen]);
    run(&send);
    let out = collector.wait_with_output().unwrap();
    assert!(out.status.success());
    let metrics: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(metrics["records"].as_u64(), Some(flows), "{metrics}");
    assert_eq!(metrics["malformed"], 0);
    assert_eq!(metrics["dropped"], 0);

    // The attacker (a compromised dev web server) is potentially blocked by the guardrail.
    let rows: Vec<serde_json::Value> = run(&[
        "flows",
        "query",
        "--data",
        &d("data"),
        "--verdict",
        "potentially_blocked",
        "--limit",
        "100000",
        "--json",
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert!(
        rows.iter()
            .any(|r| r["provisioned"]["rules"][0] == "deny-dev-to-prod"
                && r["src_labels"]["env"] == "dev"),
        "no lateral movement flagged"
    );
    assert!(
        rows.iter()
            .all(|r| r["provisioned"]["verdict"] == "potentially_blocked")
    );
    let allowed = run(&[
        "flows",
        "query",
        "--data",
        &d("data"),
        "--verdict",
        "allowed",
        "--limit",
        "5",
        "--json",
    ]);
    assert_eq!(allowed.lines().count(), 5);

    let report: serde_json::Value = serde_json::from_str(&run(&[
        "report",
        "sprawl",
        "--data",
        &d("data"),
        "--inventory",
        &d("sim/inventory.csv"),
        "--json",
    ]))
    .unwrap();
    let unknown = report["unknown"].as_array().unwrap();
    assert_eq!(unknown.len(), 4, "{unknown:?}");
    assert!(
        unknown
            .iter()
            .all(|u| u["address"].as_str().unwrap().starts_with("10.99."))
    );
    assert_eq!(report["quiet"].as_array().unwrap().len(), 2);
    assert!(
        report["probed_only"].as_array().unwrap().len() > 10,
        "the scan's targets"
    );
    assert_eq!(
        report["believed"].as_u64().unwrap(),
        report["seen"].as_u64().unwrap() + 2
    );
}
