//! Random estates, policies and connections shared by the property tests that hold the
//! compiled evaluator and the host rule IR to the oracle.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bulkhead_model::{
    Action, Connection, EnforcementMode, Inventory, Label, Labels, ServicePort, Workload,
    WorkloadKind,
};
use bulkhead_policy::{
    IpList, LabelGroup, Object, Origin, Policy, Rule, Ruleset, Selector, Service, ServiceRef, Tier,
};
use ipnet::IpNet;
use proptest::prelude::*;

pub const KEYS: &[&str] = &["app", "env", "role"];
pub const VALUES: &[&str] = &["a", "b", "c"];
pub const PROCESSES: &[&str] = &["nginx", "postgres"];

pub fn addr_pool() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = (0..24u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, i / 8, i)))
        .collect();
    v.extend((0..6u16).map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i))));
    v
}

pub fn labels() -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map(0..KEYS.len(), 0..VALUES.len(), 0..=3).prop_map(|m| {
        let mut l = Labels::new();
        for (k, v) in m {
            l.insert(Label::new(KEYS[k], VALUES[v]).unwrap()).unwrap();
        }
        l
    })
}

pub fn inventory() -> impl Strategy<Value = Inventory> {
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

pub fn net() -> impl Strategy<Value = IpNet> {
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

pub fn service_port() -> impl Strategy<Value = ServicePort> {
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
pub struct Shape {
    pub groups: Vec<BTreeMap<usize, BTreeSet<usize>>>,
    pub lists: Vec<(Vec<IpNet>, Vec<IpNet>)>,
    pub services: Vec<(Vec<ServicePort>, Option<usize>)>,
    pub tiers: usize,
    pub rulesets: Vec<(Labels, usize, Vec<RawRule>)>,
}

#[derive(Debug, Clone)]
pub struct RawRule {
    pub deny: bool,
    pub from: Vec<(u8, Labels, usize)>,
    pub to: Vec<(u8, Labels, usize)>,
    pub services: Vec<(bool, ServicePort, usize)>,
}

pub fn selector() -> impl Strategy<Value = (u8, Labels, usize)> {
    (0u8..10, labels(), 0usize..3)
}

pub fn shape() -> impl Strategy<Value = Shape> {
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

pub fn build_policy(s: &Shape) -> Policy {
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

pub fn connection() -> impl Strategy<Value = Connection> {
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

/// The hosts' side at random: some managed workloads quarantined (requested or
/// applied), a few failsafe ports, a control-plane endpoint that may be a workload's
/// own address. Returns the inventory with the quarantine marks and the context.
pub fn with_hosts(
    inv: &Inventory,
    marks: &[u8],
    failsafe: &[ServicePort],
    failsafe_out: &[ServicePort],
    control: Option<(usize, u16)>,
) -> (Inventory, bulkhead_policy::HostContext) {
    let mut applied = BTreeSet::new();
    let workloads: Vec<Workload> = inv
        .workloads()
        .iter()
        .zip(marks.iter().chain(std::iter::repeat(&0)))
        .map(|(w, mark)| {
            let mut w = w.clone();
            if *mark > 0 {
                w.attributes
                    .insert(bulkhead_model::QUARANTINE_ATTRIBUTE.into(), "test".into());
                if *mark == 2 {
                    applied.insert(w.name.clone());
                }
            }
            w
        })
        .collect();
    let pool = addr_pool();
    let hosts = bulkhead_policy::HostContext {
        failsafe_ports: failsafe.to_vec(),
        failsafe_outbound: failsafe_out.to_vec(),
        control_plane: control
            .map(|(i, port)| std::net::SocketAddr::new(pool[i % pool.len()], port))
            .into_iter()
            .collect(),
        quarantine_applied: applied,
    };
    (Inventory::new(workloads).unwrap(), hosts)
}
