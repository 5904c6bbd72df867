//! `bulkhead recommend` and `bulkhead policy coverage` as a user runs them on a simulated
//! estate: exit codes, files that `policy check` and `policy fmt --check` accept, and
//! coverage figures.

use std::path::Path;
use std::process::{Command, Output};

fn bulkhead(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn simulate(dir: &Path, attacker: bool) {
    simulate_day(dir, attacker, "0", "2024-03-04T09:00:00Z");
}

fn simulate_day(dir: &Path, attacker: bool, day: &str, start: &str) {
    let out = dir.display().to_string();
    let mut args = vec![
        "simulate",
        "--out",
        &out,
        "--start",
        start,
        "--minutes",
        "6",
        "--day",
        day,
    ];
    if attacker {
        args.push("--attacker");
    }
    let o = bulkhead(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[test]
fn recommend_writes_policy_that_checks_and_covers_what_it_saw() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, false);
    let pcap = sim.join("export.pcap").display().to_string();
    let inv = sim.join("inventory.csv").display().to_string();
    let rec = tmp.path().join("rec").display().to_string();

    let o = bulkhead(&[
        "recommend",
        "--flows",
        &pcap,
        "--inventory",
        &inv,
        "--out",
        &rec,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let report = text(&o.stdout);
    assert!(report.contains("proposed: "), "{report}");
    assert!(report.contains("widenings ("), "{report}");
    assert!(report.contains("iplist:internet"), "{report}");
    assert!(Path::new(&rec).join("20-shared-services.yaml").exists());

    let o = bulkhead(&["policy", "check", &rec]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Knobs: no shared services and no internet list when the thresholds are out of reach.
    let strict = tmp.path().join("strict").display().to_string();
    let o = bulkhead(&[
        "recommend",
        "--flows",
        &pcap,
        "--inventory",
        &inv,
        "--shared-min-apps",
        "100",
        "--internet-min-addresses",
        "100000",
        "--out",
        &strict,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!Path::new(&strict).join("20-shared-services.yaml").exists());
    assert!(!text(&o.stdout).contains("iplist:internet"));
    let o = bulkhead(&["policy", "check", &strict]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = bulkhead(&["policy", "fmt", "--check", &rec]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));

    let o = bulkhead(&[
        "policy",
        "coverage",
        "--policy",
        &rec,
        "--inventory",
        &inv,
        "--flows",
        &pcap,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("(100.0%)"), "{out}");
    assert!(out.contains("would block: nothing"), "{out}");
    assert!(out.contains("rules without hits: none"), "{out}");
    assert!(out.contains("over-broad rules: none"), "{out}");

    // The sim's own hand-written policy over the same traffic: the unknown devices'
    // traffic is what it would block, grouped.
    let own = sim.join("policy").display().to_string();
    let o = bulkhead(&[
        "policy",
        "coverage",
        "--policy",
        &own,
        "--inventory",
        &inv,
        "--flows",
        &pcap,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["connection_share"].as_f64().unwrap() < 1.0, "{v}");
    let groups = v["would_block"].as_array().unwrap();
    assert!(
        groups.iter().any(|g| g["source"]
            .as_str()
            .unwrap()
            .starts_with("unmanaged 10.99.")),
        "{v}"
    );
}

#[test]
fn coverage_shows_what_the_proposal_would_block_on_a_later_day() {
    let tmp = tempfile::tempdir().unwrap();
    let day1 = tmp.path().join("day1");
    let day2 = tmp.path().join("day2");
    simulate_day(&day1, false, "1", "2024-03-04T09:00:00Z");
    // Another day of the same estate: other clients, times and sizes, and the attacker.
    simulate_day(&day2, true, "2", "2024-03-05T09:00:00Z");
    let inv = day1.join("inventory.csv").display().to_string();
    let rec = tmp.path().join("rec").display().to_string();
    let o = bulkhead(&[
        "recommend",
        "--flows",
        &day1.join("export.pcap").display().to_string(),
        "--inventory",
        &inv,
        "--out",
        &rec,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["files"].as_array().unwrap().len() > 3, "{v}");
    assert!(v["stats"]["rules"].as_u64().unwrap() > 5, "{v}");

    let o = bulkhead(&[
        "policy",
        "coverage",
        "--policy",
        &rec,
        "--inventory",
        &inv,
        "--flows",
        &day2.join("export.pcap").display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    // The attacker is a dev web server: its scan and lateral movement are what is left.
    assert!(out.contains("would block ("), "{out}");
    assert!(out.contains("app=shop env=dev role=web"), "{out}");
    assert!(out.contains("tcp/445"), "{out}");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    simulate(&sim, false);
    let pcap = sim.join("export.pcap").display().to_string();
    let inv = sim.join("inventory.csv").display().to_string();
    let rec = tmp.path().join("rec");
    let recs = rec.display().to_string();

    for args in [
        vec![
            "recommend",
            "--flows",
            &pcap,
            "--inventory",
            &inv,
            "--scope",
            "not a label",
            "--out",
            &recs,
        ],
        vec![
            "recommend",
            "--flows",
            &pcap,
            "--inventory",
            "/nonexistent.csv",
            "--out",
            &recs,
        ],
        vec![
            "recommend",
            "--flows",
            "/tmp/flows.unknown-ext",
            "--inventory",
            &inv,
            "--out",
            &recs,
        ],
        vec![
            "recommend",
            "--flows",
            &pcap,
            "--inventory",
            &inv,
            "--granularity",
            "rack",
            "--out",
            &recs,
        ],
        vec!["recommend", "--inventory", &inv, "--out", &recs],
    ] {
        let o = bulkhead(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(!rec.exists(), "{args:?} wrote {}", rec.display());
    }
    let o = bulkhead(&[
        "policy",
        "coverage",
        "--policy",
        "/nonexistent",
        "--inventory",
        &inv,
        "--flows",
        &pcap,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn recommend_from_the_flow_store_beside_the_current_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/estate");
    let inv = root.join("inventory.csv").display().to_string();
    let rules = root.join("label-rules.yaml").display().to_string();
    let policy = root.join("policy").display().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("flows.csv");
    std::fs::write(
        &csv,
        "start,end,src,dst,src_port,dst_port,proto,packets,bytes\n\
         2024-03-04T09:00:00Z,2024-03-04T09:00:01Z,10.10.1.11,10.10.1.21,40000,8080,tcp,10,1000\n\
         2024-03-04T09:00:00Z,2024-03-04T09:00:01Z,10.10.3.11,10.10.3.21,40001,9443,tcp,10,1000\n\
         2024-03-04T09:00:00Z,2024-03-04T09:00:01Z,10.20.1.11,10.10.2.31,40002,5432,tcp,10,1000\n",
    )
    .unwrap();
    let data = tmp.path().join("data").display().to_string();
    let o = bulkhead(&[
        "flows",
        "import",
        "--format",
        "csv",
        "--data",
        &data,
        "--inventory",
        &inv,
        "--label-rules",
        &rules,
        &csv.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    let rec = tmp.path().join("rec").display().to_string();
    let o = bulkhead(&[
        "recommend",
        "--data",
        &data,
        "--inventory",
        &inv,
        "--label-rules",
        &rules,
        "--policy",
        &policy,
        "--out",
        &rec,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("3 conversations: 1 allowed by the proposal"),
        "{out}"
    );
    assert!(
        out.contains("1 already allowed, 1 denied by existing rules"),
        "{out}"
    );
    assert!(out.contains("deny-dev-to-prod"), "{out}");
    let proposed = std::fs::read_to_string(Path::new(&rec).join("40-hr-prod-2.yaml")).unwrap();
    assert!(proposed.contains("tcp/9443"), "{proposed}");
    // The proposal checks together with the policy it was made beside.
    let o = bulkhead(&["policy", "check", &policy, &rec]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}
