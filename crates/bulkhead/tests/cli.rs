//! The `bulkhead` binary as a user runs it: exit codes, messages, and files left alone
//! when the input is bad.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn estate(p: &str) -> String {
    root().join("examples/estate").join(p).display().to_string()
}

fn bulkhead(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn estate_args() -> Vec<String> {
    vec![
        "--inventory".into(),
        estate("inventory.csv"),
        "--label-rules".into(),
        estate("label-rules.yaml"),
        "--policy".into(),
        estate("policy"),
    ]
}

#[test]
fn check_accepts_the_example_policy() {
    let out = bulkhead(&["policy", "check", &estate("policy")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: 3 tiers, 9 rulesets"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_lists_every_error_with_position_and_exits_2() {
    let broken = root().join("crates/policy/tests/data/broken/bad-values.yaml");
    let out = bulkhead(&["policy", "check", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad-values.yaml:6:5: include[1]: \"10.300.0.0/16\""),
        "{err}"
    );
    assert!(
        err.contains("bad-values.yaml:21:13: rules[0].action"),
        "{err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn missing_path_is_an_input_error() {
    let out = bulkhead(&["policy", "check", "/nonexistent/policy.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/policy.yaml"));
}

#[test]
fn fmt_rewrites_and_check_reports() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.yaml");
    std::fs::write(
        &f,
        "bulkhead: v1\nkind: service\nname: web\nports: [tcp/443, tcp/80]\n",
    )
    .unwrap();
    let out = bulkhead(&["policy", "fmt", "--check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("would reformat"));
    let out = bulkhead(&["policy", "fmt", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "bulkhead: v1\nkind: service\nname: web\nports:\n  - tcp/80\n  - tcp/443\n"
    );
    let out = bulkhead(&["policy", "fmt", "--check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn fmt_changes_nothing_when_any_file_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("a.yaml");
    let bad = dir.path().join("b.yaml");
    let good_text = "bulkhead: v1\nkind: service\nname: web\nports: [tcp/443, tcp/80]\n";
    let bad_text = "bulkhead: v1\nkind: service\nname: web2\nports: [tcp/99999]\n";
    std::fs::write(&good, good_text).unwrap();
    std::fs::write(&bad, bad_text).unwrap();
    let out = bulkhead(&["policy", "fmt", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("b.yaml:4:"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&good).unwrap(), good_text);
    assert_eq!(std::fs::read_to_string(&bad).unwrap(), bad_text);
}

#[test]
fn explain_names_the_rule_tier_and_why() {
    let mut args: Vec<String> = vec!["policy".into(), "explain".into()];
    args.extend(estate_args());
    args.extend(
        [
            "--from",
            "cam-dock",
            "--to",
            "pay-db-p1",
            "--port",
            "tcp/5432",
        ]
        .map(String::from),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bulkhead(&refs);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("verdict     potentially_blocked"), "{s}");
    assert!(s.contains("deny deny-ot-to-it [guardrails]"), "{s}");
    assert!(s.contains("tier application (not consulted)"), "{s}");

    let mut json_args = refs.clone();
    json_args.push("--json");
    let out = bulkhead(&json_args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "potentially_blocked");
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["decided_by"]["rules"]["rule_ids"][0], "deny-ot-to-it");
    assert_eq!(v["source"]["workload"], "cam-dock");
    assert_eq!(v["destination"]["mode"], "monitor");
}

#[test]
fn explain_rejects_unknown_endpoints_and_bad_ports() {
    for (from, port) in [
        ("no-such-host", "tcp/5432"),
        ("shop-web-p1", "tcp/1-2"),
        ("shop-web-p1", "http"),
    ] {
        let mut args: Vec<String> = vec!["policy".into(), "explain".into()];
        args.extend(estate_args());
        args.extend(["--from", from, "--to", "shop-db-p1", "--port", port].map(String::from));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bulkhead(&refs);
        assert_eq!(out.status.code(), Some(2), "{from} {port}");
        assert!(!text(&out.stderr).is_empty());
    }
}

#[test]
fn analyze_summarises_the_example_flows() {
    let mut args: Vec<String> = vec!["policy".into(), "analyze".into()];
    args.extend(estate_args());
    args.extend(["--flows".into(), estate("flows.csv"), "--json".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bulkhead(&refs);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let flows = std::fs::read_to_string(estate("flows.csv")).unwrap();
    let expected_rows = flows
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(rows.len(), expected_rows);
    let blocked = rows.iter().filter(|r| r["verdict"] == "blocked").count();
    let first = &rows[0];
    assert_eq!(first["src"], "shop-web-p1");
    assert_eq!(first["verdict"], "allowed");
    assert!(blocked >= 3);
}

#[test]
fn inventory_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("inv.csv");
    std::fs::write(
        &f,
        "name,kind,managed,addresses\na,vm,true,10.0.0.1\nb,vm,true,10.0.0.1\n",
    )
    .unwrap();
    let out = bulkhead(&["inventory", "check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("inv.csv:3: addresses: address 10.0.0.1 of \"b\" already belongs to \"a\""),
        "{err}"
    );

    let out = bulkhead(&[
        "inventory",
        "check",
        "--label-rules",
        &estate("label-rules.yaml"),
        &estate("inventory.csv"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("app=shop,env=prod,loc=dc1,role=web"));
}

/// `policy render nft` is the agent's renderer offline: its output for the example
/// estate's database is kept as a golden file (`UPDATE_SNAPSHOTS=1` rewrites it after a
/// deliberate change), and the kernel's own parser accepts it (`nft -c`, which changes
/// nothing).
#[test]
fn render_nft_matches_the_golden_file_and_nft_accepts_it() {
    let mut args = vec!["policy".to_string(), "render".into(), "nft".into()];
    args.extend(estate_args());
    args.extend(["--workload".into(), "pay-db-p1".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bulkhead(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rendered = text(&out.stdout);
    let golden = root().join("crates/bulkhead/tests/data/render-pay-db-p1.nft");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&golden, &rendered).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        rendered, want,
        "rendering changed; UPDATE_SNAPSHOTS=1 if intended"
    );
    assert!(rendered.contains("payments-prod-app-to-db"));

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &rendered).unwrap();
    let check = Command::new("nft")
        .args(["-c", "-f"])
        .arg(file.path())
        .output()
        .expect("nft is installed by scripts/setup");
    assert!(
        check.status.success(),
        "nft -c refused it: {}",
        text(&check.stderr)
    );
}

#[test]
fn render_refuses_unknown_and_unmanaged_workloads() {
    for (workload, why) in [("no-such-host", "no workload"), ("cam-lobby", "unmanaged")] {
        let mut args = vec!["policy".to_string(), "render".into(), "nft".into()];
        args.extend(estate_args());
        args.extend(["--workload".into(), workload.into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bulkhead(&args);
        assert_eq!(out.status.code(), Some(2), "{workload}");
        assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
    }
}
