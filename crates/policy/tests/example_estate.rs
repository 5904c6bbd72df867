//! The example estate under examples/estate: the verdicts the docs promise, checked with
//! both evaluators.

use std::net::IpAddr;
use std::path::Path;

use bulkhead_model::{Connection, DecidedBy, Inventory, ProtoMatch, ServicePort};
use bulkhead_policy::{CompiledPolicy, ConnKey, Policy, oracle};

fn estate() -> (Inventory, Policy) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/estate");
    let read = |p: &Path| (p.display().to_string(), std::fs::read_to_string(p).unwrap());
    let (rn, rt) = read(&root.join("label-rules.yaml"));
    let rules = bulkhead_inventory::parse_label_rules(&rn, &rt).unwrap();
    let inv = bulkhead_inventory::load(&[read(&root.join("inventory.csv"))], Some(&rules)).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(root.join("policy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let sources: Vec<_> = files.iter().map(|p| read(p)).collect();
    (inv, Policy::from_sources(&sources).unwrap())
}

fn addr(inv: &Inventory, s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| {
        inv.by_name(s)
            .unwrap_or_else(|| panic!("no workload {s}"))
            .addresses[0]
    })
}

#[test]
fn example_verdicts_match_the_documented_ones() {
    let (inv, policy) = estate();
    let compiled = CompiledPolicy::compile(&inv, &policy);
    let table = include_str!("data/example-verdicts.csv");
    let mut checked = 0;
    for (n, line) in table
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split(',').collect();
        let sp: ServicePort = f[2].parse().unwrap();
        let ProtoMatch::Proto(proto) = sp.proto else {
            panic!()
        };
        let c = Connection {
            src: addr(&inv, f[0]),
            dst: addr(&inv, f[1]),
            proto,
            port: sp.ports.start,
            process: Some(f[3]).filter(|p| !p.is_empty()).map(str::to_string),
        };
        let v = oracle::evaluate(&policy, &inv, &c);
        let rules = match &v.decided_by {
            DecidedBy::Default => "default".to_string(),
            DecidedBy::Rules { rule_ids, .. } => rule_ids.join(" "),
            DecidedBy::Quarantine { workload, .. } => format!("quarantine {workload}"),
        };
        assert_eq!(
            (v.verdict.to_string(), rules),
            (f[4].to_string(), f[5].to_string()),
            "line {}: {line}",
            n + 1
        );
        let k = ConnKey {
            src: c.src,
            dst: c.dst,
            proto: c.proto,
            port: c.port,
        };
        assert_eq!(
            compiled.verdict(&k, c.process.as_deref()),
            v,
            "line {}: {line}",
            n + 1
        );
        checked += 1;
    }
    assert!(checked > 30);
}

#[test]
fn example_policy_is_canonical() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/estate/policy");
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let formatted =
            bulkhead_policy::format::format_file(&p.display().to_string(), &text).unwrap();
        assert_eq!(formatted, text, "{} is not in canonical form", p.display());
    }
}
