//! Evaluation on a large estate: 10,000 workloads, 1,200 label combinations, 2,000+
//! rules. The compiled evaluator is measured beside the oracle, a linear scan over
//! every rule, on the same connections.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use bulkhead_model::{
    Connection, EnforcementMode, Inventory, Label, Labels, Workload, WorkloadKind,
};
use bulkhead_policy::{CompiledPolicy, ConnKey, Policy, oracle};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const APPS: usize = 100;
const ENVS: [&str; 2] = ["prod", "dev"];
const ROLES: [&str; 6] = ["lb", "web", "app", "db", "cache", "queue"];
const WORKLOADS: usize = 10_000;

/// A deterministic pseudo-random sequence (no dependency, same estate every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn estate() -> (Inventory, Policy) {
    let mut workloads = Vec::with_capacity(WORKLOADS);
    for i in 0..WORKLOADS {
        let combo = i % (APPS * ENVS.len() * ROLES.len());
        let (app, env, role) = (combo / 12, (combo / 6) % 2, combo % 6);
        let mut labels = Labels::new();
        for (k, v) in [
            ("app", format!("app{app}")),
            ("env", ENVS[env].to_string()),
            ("role", ROLES[role].to_string()),
        ] {
            labels.insert(Label::new(k, v).unwrap()).unwrap();
        }
        workloads.push(Workload {
            name: format!("w{i}"),
            kind: WorkloadKind::Vm,
            managed: true,
            addresses: vec![IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))],
            hostname: None,
            os: None,
            os_version: None,
            labels,
            mode: if i % 3 == 0 {
                EnforcementMode::Enforced
            } else {
                EnforcementMode::Monitor
            },
            owner: None,
            attributes: BTreeMap::new(),
        });
    }
    let mut docs = String::from(
        "bulkhead: v1\nkind: tier\nname: guardrails\norder: 10\n---\nbulkhead: v1\nkind: tier\nname: application\norder: 20\n---\n\
         bulkhead: v1\nkind: ip_list\nname: internet\ninclude: [0.0.0.0/0]\nexclude: [10.0.0.0/8, 192.168.0.0/16]\n---\n\
         bulkhead: v1\nkind: ip_list\nname: partners\ninclude: [192.168.10.0/24, 192.168.20.0/24, 192.168.30.0/28]\n---\n\
         bulkhead: v1\nkind: ruleset\nname: guardrails\ntier: guardrails\nrules:\n\
         - {id: deny-dev-to-prod, action: deny, from: [env=dev], to: [env=prod], services: [any]}\n\
         - {id: deny-telnet, action: deny, from: [any], to: [workloads], services: [tcp/23]}\n",
    );
    let mut rng = Lcg(7);
    for app in 0..APPS {
        for env in ENVS {
            docs.push_str(&format!(
                "---\nbulkhead: v1\nkind: ruleset\nname: app{app}-{env}\ntier: application\nscope: {{app: app{app}, env: {env}}}\nrules:\n\
                 - {{id: a{app}-{env}-lb-web, action: allow, from: [role=lb], to: [role=web], services: [tcp/443, tcp/80]}}\n\
                 - {{id: a{app}-{env}-web-app, action: allow, from: [role=web], to: [role=app], services: [tcp/8080-8089]}}\n\
                 - {{id: a{app}-{env}-app-db, action: allow, from: [role=app], to: [role=db], services: [tcp/5432]}}\n\
                 - {{id: a{app}-{env}-app-cache, action: allow, from: [role=app], to: [role=cache], services: [tcp/6379]}}\n\
                 - {{id: a{app}-{env}-app-queue, action: allow, from: [role=app], to: [role=queue], services: [tcp/5672, tcp/15672]}}\n\
                 - {{id: a{app}-{env}-inet-lb, action: allow, from: [iplist:internet], to: [role=lb], services: [tcp/443]}}\n\
                 - {{id: a{app}-{env}-partners, action: allow, from: [iplist:partners], to: [role=web], services: [tcp/8443]}}\n\
                 - {{id: a{app}-{env}-db-deny-web, action: deny, from: [role=web], to: [role=db], services: [any]}}\n\
                 - {{id: a{app}-{env}-call-app{o1}, action: allow, from: [role=app], to: [app=app{o1} role=app], services: [tcp/8443]}}\n\
                 - {{id: a{app}-{env}-queue-app{o2}, action: allow, from: [role=app], to: [app=app{o2} role=queue], services: [tcp/5672]}}\n\
                 - {{id: a{app}-{env}-icmp, action: allow, from: [workloads], to: [workloads], services: [icmp/8]}}\n",
                o1 = rng.below(APPS),
                o2 = rng.below(APPS),
            ));
        }
    }
    let policy = Policy::from_sources(&[("bench.yaml", docs)]).unwrap();
    (Inventory::new(workloads).unwrap(), policy)
}

fn connections(n: usize) -> Vec<Connection> {
    let mut rng = Lcg(42);
    let ports = [443u16, 80, 8080, 8085, 5432, 6379, 5672, 8443, 22, 23, 3389];
    (0..n)
        .map(|_| {
            let pick = |rng: &mut Lcg| -> IpAddr {
                match rng.below(10) {
                    0 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, rng.below(255) as u8)),
                    1 => IpAddr::V4(Ipv4Addr::new(192, 168, 10, rng.below(255) as u8)),
                    _ => IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + rng.below(WORKLOADS) as u32)),
                }
            };
            // Half the connections stay inside one application, where most rules are.
            let src = pick(&mut rng);
            let dst = if rng.below(2) == 0 {
                if let IpAddr::V4(s) = src {
                    let base = u32::from(s).wrapping_sub(0x0a00_0000) as usize;
                    let app_base = base - base % 12;
                    IpAddr::V4(Ipv4Addr::from(
                        0x0a00_0000 + ((app_base + rng.below(12)) % WORKLOADS) as u32,
                    ))
                } else {
                    pick(&mut rng)
                }
            } else {
                pick(&mut rng)
            };
            Connection {
                src,
                dst,
                proto: if rng.below(20) == 0 { 1 } else { 6 },
                port: ports[rng.below(ports.len())],
                process: None,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (inv, policy) = estate();
    let compiled = CompiledPolicy::compile(&inv, &policy);
    eprintln!(
        "estate: {} workloads, {} rules, {} identity classes, {} destination tables",
        inv.len(),
        policy.rule_count(),
        compiled.class_count(),
        compiled.table_count()
    );
    let conns = connections(4096);
    let keys: Vec<ConnKey> = conns
        .iter()
        .map(|c| ConnKey {
            src: c.src,
            dst: c.dst,
            proto: c.proto,
            port: c.port,
        })
        .collect();
    // Both evaluators must agree on what is being timed.
    for (c, k) in conns.iter().take(256).zip(&keys) {
        assert_eq!(
            compiled.verdict(k, None),
            oracle::evaluate(&policy, &inv, c)
        );
    }

    let mut g = c.benchmark_group("evaluate");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("compiled_verdict", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(compiled.evaluate(black_box(k), None));
            }
        })
    });
    g.bench_function("compiled_verdict_with_rule_ids", |b| {
        b.iter(|| {
            for k in &keys {
                let o = compiled.evaluate(black_box(k), None);
                black_box(compiled.deciding_rules(&o));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("evaluate_linear_scan");
    g.sample_size(10);
    let few = &conns[..64];
    g.throughput(Throughput::Elements(few.len() as u64));
    g.bench_function("oracle", |b| {
        b.iter(|| {
            for c in few {
                black_box(oracle::evaluate(&policy, &inv, black_box(c)));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("10k_workloads_2k_rules", |b| {
        b.iter(|| black_box(CompiledPolicy::compile(&inv, &policy)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
