//! The per-host rule IR must decide like the oracle: for random estates, evaluating a
//! managed workload's inbound (outbound) host rules top to bottom, first match wins, no
//! match is the default deny, gives the oracle's decision for every connection to (from)
//! that workload — and the first matching rule is one of the oracle's deciding rules.
//!
//! The estate generators are copied from tests/oracle.rs so both suites explore the same
//! shapes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bulkhead_model::{
    Action, Connection, DecidedBy, Decision, EnforcementMode, Inventory, Label, Labels,
    ServicePort, Workload, WorkloadKind,
};
use bulkhead_policy::host::{HostError, HostRule, Peers, host_policy};
use bulkhead_policy::{
    IpList, LabelGroup, Object, Origin, Policy, Rule, Ruleset, Selector, Service, ServiceRef, Tier,
    oracle,
};
use ipnet::IpNet;
use proptest::prelude::*;

const KEYS: &[&str] = &["app", "env", "role"];
const VALUES: &[&str] = &["a", "b", "c"];
const PROCESSES: &[&str] = &["nginx", "postgres"];

fn addr_pool() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = (0..24u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, i / 8, i)))
        .collect();
    v.extend((0..6u16).map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i))));
    v
}

fn labels() -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map(0..KEYS.len(), 0..VALUES.len(), 0..=3).prop_map(|m| {
        let mut l = Labels::new();
        for (k, v) in m {
            l.insert(Label::new(KEYS[k], VALUES[v]).unwrap()).unwrap();
        }
        l
    })
}

fn inventory() -> impl Strategy<Value = Inventory> {
    let pool = addr_pool();
    let n = pool.len();
    (
        proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 0..n),
        proptest::collection::vec((labels(), any::<bool>(), 0..3u8, any::<bool>()), n),
    )
        .prop_map(move |(chosen, attrs)| {
            // Some workloads get two addresses: the next chosen one.
            let mut ws = Vec::new();
            let mut i = 0;
            while i < chosen.len() {
                let (labels, managed, mode, two) = attrs[i].clone();
                let mut addresses = vec![pool[chosen[i]]];
                if two && i + 1 < chosen.len() {
                    i += 1;
                    addresses.push(pool[chosen[i]]);
                }
                ws.push(Workload {
                    name: format!("w{}", ws.len()),
                    kind: WorkloadKind::Vm,
                    managed,
                    addresses,
                    hostname: None,
                    os: None,
                    os_version: None,
                    labels,
                    mode: if managed {
                        [
                            EnforcementMode::Idle,
                            EnforcementMode::Monitor,
                            EnforcementMode::Enforced,
                        ][mode as usize]
                    } else {
                        EnforcementMode::Idle
                    },
                    owner: None,
                    attributes: BTreeMap::new(),
                });
                i += 1;
            }
            Inventory::new(ws).unwrap()
        })
}

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (0u8..32, 20u8..=32).prop_map(|(i, len)| IpNet::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, i / 8, i * 3)),
            len
        )
        .unwrap()
        .trunc()),
        Just("0.0.0.0/0".parse().unwrap()),
        (0u16..8, 124u8..=128).prop_map(|(i, len)| IpNet::new(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i)),
            len
        )
        .unwrap()
        .trunc()),
    ]
}

fn service_port() -> impl Strategy<Value = ServicePort> {
    prop_oneof![
        Just("tcp/80"),
        Just("tcp/80-90"),
        Just("tcp/443"),
        Just("udp/53"),
        Just("tcp"),
        Just("icmp"),
        Just("icmp/8"),
        Just("any"),
        Just("proto/47"),
    ]
    .prop_map(|s| s.parse().unwrap())
}

#[derive(Debug, Clone)]
struct Shape {
    groups: Vec<BTreeMap<usize, BTreeSet<usize>>>,
    lists: Vec<(Vec<IpNet>, Vec<IpNet>)>,
    services: Vec<(Vec<ServicePort>, Option<usize>)>,
    tiers: usize,
    rulesets: Vec<(Labels, usize, Vec<RawRule>)>,
}

#[derive(Debug, Clone)]
struct RawRule {
    deny: bool,
    from: Vec<(u8, Labels, usize)>,
    to: Vec<(u8, Labels, usize)>,
    services: Vec<(bool, ServicePort, usize)>,
}

fn selector() -> impl Strategy<Value = (u8, Labels, usize)> {
    (0u8..10, labels(), 0usize..3)
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        proptest::collection::vec(
            proptest::collection::btree_map(
                0..KEYS.len(),
                proptest::collection::btree_set(0..VALUES.len(), 1..3),
                1..3,
            ),
            1..3,
        ),
        proptest::collection::vec(
            (
                proptest::collection::vec(net(), 1..3),
                proptest::collection::vec(net(), 0..2),
            ),
            1..3,
        ),
        proptest::collection::vec(
            (
                proptest::collection::vec(service_port(), 1..3),
                proptest::option::of(0..PROCESSES.len()),
            ),
            1..3,
        ),
        1usize..4,
        proptest::collection::vec(
            (
                labels(),
                0usize..3,
                proptest::collection::vec(
                    (
                        proptest::bool::weighted(0.3),
                        proptest::collection::vec(selector(), 1..3),
                        proptest::collection::vec(selector(), 1..3),
                        proptest::collection::vec((any::<bool>(), service_port(), 0usize..3), 1..3),
                    )
                        .prop_map(|(deny, from, to, services)| RawRule {
                            deny,
                            from,
                            to,
                            services,
                        }),
                    0..5,
                ),
            ),
            1..5,
        ),
    )
        .prop_map(|(groups, lists, services, tiers, rulesets)| Shape {
            groups,
            lists,
            services,
            tiers,
            rulesets,
        })
}

fn build_policy(s: &Shape) -> Policy {
    let o = Origin::default();
    let mut objects = Vec::new();
    for (i, g) in s.groups.iter().enumerate() {
        objects.push(Object::LabelGroup(LabelGroup {
            name: format!("g{i}"),
            description: None,
            labels: g
                .iter()
                .map(|(k, vs)| {
                    (
                        KEYS[*k].to_string(),
                        vs.iter().map(|v| VALUES[*v].to_string()).collect(),
                    )
                })
                .collect(),
            origin: o.clone(),
        }));
    }
    for (i, (inc, exc)) in s.lists.iter().enumerate() {
        objects.push(Object::IpList(IpList {
            name: format!("l{i}"),
            description: None,
            include: inc.clone(),
            exclude: exc.clone(),
            origin: o.clone(),
        }));
    }
    for (i, (ports, proc_)) in s.services.iter().enumerate() {
        objects.push(Object::Service(Service {
            name: format!("s{i}"),
            description: None,
            ports: ports.clone(),
            process: proc_.map(|p| PROCESSES[p].to_string()),
            origin: o.clone(),
        }));
    }
    for t in 0..s.tiers {
        objects.push(Object::Tier(Tier {
            name: format!("t{t}"),
            description: None,
            order: (t as i64) * 10,
            origin: o.clone(),
        }));
    }
    let mut rule_no = 0;
    for (ri, (scope, tier, rules)) in s.rulesets.iter().enumerate() {
        let sel = |(kind, labels, idx): &(u8, Labels, usize)| match kind {
            0 => Selector::Any,
            1 | 2 => Selector::Group(format!("g{}", idx % s.groups.len())),
            3 | 4 => Selector::IpList(format!("l{}", idx % s.lists.len())),
            _ => Selector::Labels(labels.clone()),
        };
        let rules = rules
            .iter()
            .map(|r| {
                rule_no += 1;
                Rule {
                    id: format!("r{rule_no}"),
                    description: None,
                    action: if r.deny { Action::Deny } else { Action::Allow },
                    from: r.from.iter().map(sel).collect(),
                    to: r.to.iter().map(sel).collect(),
                    services: r
                        .services
                        .iter()
                        .map(|(named, p, i)| {
                            if *named {
                                ServiceRef::Named(format!("s{}", i % s.services.len()))
                            } else {
                                ServiceRef::Port(*p)
                            }
                        })
                        .collect(),
                    origin: o.clone(),
                    item_origins: Default::default(),
                    path: String::new(),
                }
            })
            .collect();
        objects.push(Object::Ruleset(Ruleset {
            name: format!("rs{ri}"),
            description: None,
            scope: scope.clone(),
            tier: format!("t{}", tier % s.tiers),
            tier_origin: o.clone(),
            owner: None,
            rules,
            origin: o.clone(),
        }));
    }
    Policy::from_objects(objects).expect("generated policies are valid")
}

fn connection() -> impl Strategy<Value = Connection> {
    let mut pool = addr_pool();
    pool.extend(
        ["10.0.5.1", "192.0.2.1", "fd00::ff", "10.0.0.200"]
            .iter()
            .map(|s| s.parse::<IpAddr>().unwrap()),
    );
    (
        proptest::sample::select(pool.clone()),
        proptest::sample::select(pool),
        proptest::sample::select(vec![6u8, 17, 1, 47]),
        proptest::sample::select(vec![0u16, 8, 22, 53, 79, 80, 85, 90, 91, 443, 65535]),
        proptest::option::of(proptest::sample::select(vec!["nginx", "postgres", "sshd"])),
    )
        .prop_map(|(src, dst, proto, port, process)| Connection {
            src,
            dst,
            proto,
            port,
            process: process.map(str::to_string),
        })
}

/// Sequential evaluation, as the kernel does it: the first matching rule decides.
fn first_match<'a>(
    rules: &'a [HostRule],
    local: IpAddr,
    peer: IpAddr,
    c: &Connection,
) -> Option<&'a HostRule> {
    rules
        .iter()
        .find(|r| r.matches(local, peer, c.proto, c.port, c.process.as_deref()))
}

fn check(
    policy: &Policy,
    inv: &Inventory,
    c: &Connection,
    hit: Option<&HostRule>,
) -> Result<(), TestCaseError> {
    let expected = oracle::evaluate(policy, inv, c);
    match (hit, &expected.decided_by) {
        (None, DecidedBy::Default) => {}
        (Some(r), DecidedBy::Rules { tier, rule_ids }) => {
            let decision = match r.action {
                Action::Allow => Decision::Allow,
                Action::Deny => Decision::Deny,
            };
            prop_assert_eq!(
                decision,
                expected.decision,
                "connection {:?}, host rule {:?}",
                c,
                r
            );
            prop_assert_eq!(&r.tier, tier);
            prop_assert!(
                rule_ids.contains(&r.rule_id),
                "{} not in {:?}",
                r.rule_id,
                rule_ids
            );
        }
        (hit, decided) => prop_assert!(
            false,
            "connection {:?}: host rule {:?}, oracle {:?}",
            c,
            hit,
            decided
        ),
    }
    Ok(())
}

fn peers_are_sorted_and_disjoint(rules: &[HostRule]) -> Result<(), TestCaseError> {
    for r in rules {
        if let Peers::Nets(nets) = &r.peers {
            prop_assert_eq!(
                &IpNet::aggregate(nets),
                nets,
                "rule {} peers not merged",
                &r.rule_id
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn host_rules_decide_like_the_oracle(
        inv in inventory(),
        s in shape(),
        pick in any::<usize>(),
        conns in proptest::collection::vec(connection(), 40),
    ) {
        let policy = build_policy(&s);
        if inv.is_empty() {
            prop_assert_eq!(host_policy(&policy, &inv, "w0"), Err(HostError::UnknownWorkload("w0".into())));
            return Ok(());
        }
        let w = &inv.workloads()[pick % inv.len()];
        let hp = match host_policy(&policy, &inv, &w.name) {
            Err(HostError::Unmanaged(name)) => {
                prop_assert!(!w.managed);
                prop_assert_eq!(name, w.name.clone());
                return Ok(());
            }
            other => other.unwrap(),
        };
        prop_assert!(w.managed);
        prop_assert_eq!(hp.mode, w.mode);
        peers_are_sorted_and_disjoint(&hp.inbound)?;
        peers_are_sorted_and_disjoint(&hp.outbound)?;
        for (i, c) in conns.iter().enumerate() {
            // Point one end of each random connection at the host, alternating addresses.
            let me = w.addresses[i % w.addresses.len()];
            let inbound = Connection { dst: me, ..c.clone() };
            check(&policy, &inv, &inbound, first_match(&hp.inbound, me, inbound.src, &inbound))?;
            let outbound = Connection { src: me, ..c.clone() };
            check(&policy, &inv, &outbound, first_match(&hp.outbound, me, outbound.dst, &outbound))?;
        }
    }
}
