//! Golden files: the example estate (examples/estate) rendered for a few workloads in
//! each mode. Regenerate after an intended change with
//! `BLESS=1 cargo test -p bulkhead-nft --test render` and review the diff.

use std::path::{Path, PathBuf};

use bulkhead_model::Inventory;
use bulkhead_nft::{RenderOptions, render};
use bulkhead_policy::Policy;
use bulkhead_policy::host::{HostError, host_policy};

/// (workload, mode it has in the estate): every mode, both address families, IP lists
/// with exclusions, a process-constrained service, guard-rail denies.
pub const GOLDEN: &[(&str, &str)] = &[
    ("shop-web-p2", "enforced"),
    ("shop-db-p1", "enforced"),
    ("jump-1", "enforced"),
    ("pay-db-p1", "monitor"),
    ("dns-1", "monitor"),
    ("hr-db-p1", "idle"),
];

fn estate() -> (Inventory, Policy) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/estate");
    let read = |p: &Path| (p.display().to_string(), std::fs::read_to_string(p).unwrap());
    let (rn, rt) = read(&root.join("label-rules.yaml"));
    let rules = bulkhead_inventory::parse_label_rules(&rn, &rt).unwrap();
    let inv = bulkhead_inventory::load(&[read(&root.join("inventory.csv"))], Some(&rules)).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("policy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let sources: Vec<_> = files.iter().map(|p| read(p)).collect();
    (inv, Policy::from_sources(&sources).unwrap())
}

fn golden_path(workload: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(format!("{workload}.nft"))
}

#[test]
fn example_estate_renders_as_the_golden_files() {
    let (inv, policy) = estate();
    let bless = std::env::var_os("BLESS").is_some();
    let mut stale = Vec::new();
    for (workload, mode) in GOLDEN {
        let hp = host_policy(&policy, &inv, workload).unwrap();
        assert_eq!(hp.mode.to_string(), *mode, "{workload}");
        let text = render(&hp, &RenderOptions::default());
        assert_eq!(
            text,
            render(&hp, &RenderOptions::default()),
            "deterministic"
        );
        let path = golden_path(workload);
        if bless {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(format!("--- {} (rendered now):\n{text}", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "golden files differ; rerun with BLESS=1 if the change is intended\n{}",
        stale.join("\n")
    );
}

#[test]
fn modes_decide_the_verdicts() {
    let (inv, policy) = estate();
    let opts = RenderOptions::default();

    let enforced = render(&host_policy(&policy, &inv, "shop-db-p1").unwrap(), &opts);
    assert!(enforced.contains("log group 100 prefix \"bulkhead default-deny \" drop"));
    assert!(enforced.contains("log group 100 prefix \"bulkhead deny deny-dev-to-prod \" drop"));
    assert!(enforced.contains("tcp dport 22 accept comment \"bulkhead failsafe\""));

    // Monitor mode never drops, explicit denies included.
    let monitor = render(&host_policy(&policy, &inv, "pay-db-p1").unwrap(), &opts);
    assert!(!monitor.contains("drop"), "{monitor}");
    assert!(monitor.contains("prefix \"bulkhead would-deny deny-dev-to-prod \" accept"));
    assert!(monitor.contains("prefix \"bulkhead would-default-deny \" accept"));
    // The backup allow needs process bacula-fd, which the kernel cannot see.
    assert!(!monitor.contains("9102"), "{monitor}");

    let idle = render(&host_policy(&policy, &inv, "hr-db-p1").unwrap(), &opts);
    let commands: Vec<&str> = idle.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        commands,
        ["table inet bulkhead {}", "delete table inet bulkhead"]
    );
}

#[test]
fn options_are_honoured() {
    let (inv, policy) = estate();
    let opts = RenderOptions {
        failsafe_ports: vec!["tcp/2222".parse().unwrap(), "udp/68".parse().unwrap()],
        failsafe_outbound: vec!["udp/53".parse().unwrap(), "udp/123".parse().unwrap()],
        log_group: 7,
        table: "bh_test".into(),
        control_plane: vec![
            "10.0.0.1:8443".parse().unwrap(),
            "[fd00::1]:443".parse().unwrap(),
        ],
        process_cgroups: [(
            "bacula-fd".to_string(),
            vec!["system.slice/bacula-fd.service".to_string()],
        )]
        .into(),
    };
    let text = render(&host_policy(&policy, &inv, "shop-db-p1").unwrap(), &opts);
    assert!(
        text.contains("table inet bh_test {}\ndelete table inet bh_test\ntable inet bh_test {")
    );
    assert!(text.contains("tcp dport 2222 accept comment \"bulkhead failsafe\""));
    assert!(
        text.contains("ip daddr 10.0.0.1 tcp dport 8443 accept comment \"bulkhead control plane\"")
    );
    assert!(
        text.contains("ip6 daddr fd00::1 tcp dport 443 accept comment \"bulkhead control plane\"")
    );
    // The backup rule names its provider process, which runs as a service here.
    assert!(
        text.contains("socket cgroupv2 level 2 \"system.slice/bacula-fd.service\" accept comment \"allow-backup\""),
        "{text}"
    );
    assert!(!text.contains("# allow-backup"), "{text}");
    assert!(text.contains("udp dport 68 accept comment \"bulkhead failsafe\""));
    assert!(!text.contains("dport 22 accept comment \"bulkhead failsafe\""));
    assert!(
        text.contains("udp dport { 53, 123 } accept comment \"bulkhead failsafe out\""),
        "{text}"
    );
    assert!(text.contains("log group 7 prefix"));
    assert!(!text.contains("group 100"));
}

#[test]
fn only_managed_workloads_have_host_policy() {
    let (inv, policy) = estate();
    assert_eq!(
        host_policy(&policy, &inv, "cam-dock"),
        Err(HostError::Unmanaged("cam-dock".into()))
    );
    assert_eq!(
        host_policy(&policy, &inv, "nope"),
        Err(HostError::UnknownWorkload("nope".into()))
    );
}
