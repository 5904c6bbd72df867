//! How much of the observed traffic a policy allows, what it would block, and which
//! rules nothing used. Verdicts come from the compiled evaluator, never re-implemented.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bulkhead_model::{Decision, FlowSummary, Inventory, ServicePort, VerdictKind};
use bulkhead_policy::{CompiledPolicy, ConnKey, Policy};
use ipnet::IpNet;
use rustc_hash::FxHashMap;

use crate::recommend::{Granularity, KEY_APP, KEY_ENV, KEY_ROLE};
use crate::traffic::Traffic;

/// The window and how blocked traffic is grouped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoverageOptions {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Label keys that name a group in the blocked list (role by default).
    pub granularity: Granularity,
    /// At most this many blocked groups, largest first (0: all).
    pub limit: usize,
}

/// Traffic that the policy denies, grouped by source group, destination group and port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BlockedGroup {
    pub source: String,
    pub destination: String,
    pub service: String,
    pub connections: u64,
    pub bytes: u64,
    pub summaries: u64,
    /// Of these summaries, how many are dropped today (an end enforces) and how many only
    /// reported (no end enforces).
    pub blocked_now: u64,
    pub potentially_blocked_now: u64,
    /// The deciding deny rules, or empty for the default deny.
    pub denied_by: Vec<String>,
}

/// Hits of one rule: the traffic it decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RuleHits {
    pub ruleset: String,
    pub rule: String,
    pub tier: String,
    pub action: String,
    pub connections: u64,
    pub bytes: u64,
    pub summaries: u64,
}

/// An allow rule whose hits use a small part of the ports it allows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct OverBroad {
    /// `ruleset/rule`.
    pub rule: String,
    /// Ports (or ICMP types) its services allow, over all protocols; `any` counts as
    /// 2^24.
    pub allowed_ports: u64,
    /// Distinct (protocol, port) its hits used.
    pub used_ports: u64,
    pub services: Vec<String>,
    /// Some of the used ports, for the reader.
    pub used: Vec<String>,
}

/// A rule is reported as over-broad when it allows at least this many times the ports
/// it was seen using (and more than this many ports).
pub const OVER_BROAD_FACTOR: u64 = 16;

/// The coverage report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Coverage {
    pub summaries: u64,
    pub outside_window: u64,
    pub connections: u64,
    pub connections_allowed: u64,
    pub bytes: u64,
    pub bytes_allowed: u64,
    /// Allowed share of connections and bytes, 0..=1 (1 when there is no traffic).
    pub connection_share: f64,
    pub byte_share: f64,
    /// Largest first.
    pub would_block: Vec<BlockedGroup>,
    pub blocked_groups_total: usize,
    /// Every rule, with its hits, in policy order.
    pub rules: Vec<RuleHits>,
    /// `ruleset/rule` of the rules that decided nothing: dead, shadowed, or broader than
    /// the traffic needs.
    pub unused_rules: Vec<String>,
    /// Allow rules with hits that use a small part of the ports they allow.
    pub over_broad: Vec<OverBroad>,
}

fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        1.0
    } else {
        part as f64 / total as f64
    }
}

fn group_name(inv: &Inventory, a: IpAddr, g: Granularity) -> String {
    match inv.by_address(a) {
        Some(w) => {
            let keys: &[&str] = match g {
                Granularity::App => &[KEY_APP, KEY_ENV],
                Granularity::Role => &[KEY_APP, KEY_ENV, KEY_ROLE],
                Granularity::Workload => return w.name.clone(),
            };
            let parts: Vec<String> = w
                .labels
                .iter()
                .filter(|(k, _)| keys.contains(k))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if parts.is_empty() {
                w.name.clone()
            } else {
                parts.join(" ")
            }
        }
        None => {
            let len = if a.is_ipv4() { 24 } else { 64 };
            let net = IpNet::new(a, len)
                .map(|n| n.trunc())
                .unwrap_or(IpNet::from(a));
            format!("unmanaged {net}")
        }
    }
}

fn service_name(proto: u8, port: u16) -> String {
    match bulkhead_model::protocol_name(proto) {
        Some(_) if matches!(proto, 6 | 17 | 132 | 1 | 58) => ServicePort {
            proto: bulkhead_model::ProtoMatch::Proto(proto),
            ports: bulkhead_model::PortRange::single(port),
        }
        .to_string(),
        _ => format!("proto/{proto}"),
    }
}

/// Computes the coverage of `policy` (compiled against `inventory` as `compiled`) over
/// the summaries in the window.
pub fn coverage(
    compiled: &CompiledPolicy,
    policy: &Policy,
    inventory: &Inventory,
    summaries: &[FlowSummary],
    opts: &CoverageOptions,
) -> Coverage {
    let (traffic, outside) = crate::traffic::fold(summaries, opts.from_ms, opts.to_ms);
    let mut c = coverage_of_traffic(compiled, policy, inventory, &traffic, opts);
    c.summaries += outside;
    c.outside_window = outside;
    c
}

/// As [`coverage`], for traffic already folded over the window (by the flow store):
/// `opts`' window is not applied again.
pub fn coverage_of_traffic(
    compiled: &CompiledPolicy,
    policy: &Policy,
    inventory: &Inventory,
    traffic: &[Traffic],
    opts: &CoverageOptions,
) -> Coverage {
    let mut c = Coverage {
        summaries: 0,
        outside_window: 0,
        connections: 0,
        connections_allowed: 0,
        bytes: 0,
        bytes_allowed: 0,
        connection_share: 1.0,
        byte_share: 1.0,
        would_block: Vec::new(),
        blocked_groups_total: 0,
        rules: Vec::new(),
        unused_rules: Vec::new(),
        over_broad: Vec::new(),
    };
    // Distinct ports each rule's hits used, capped: only "few" versus "many" matters.
    const PORTS_CAP: usize = 4096;
    let mut used: FxHashMap<&str, rustc_hash::FxHashSet<(u8, u16)>> = FxHashMap::default();
    // Keyed by the compiled policy's own strings: no allocation per summary.
    let mut hits: FxHashMap<&str, (u64, u64, u64)> = FxHashMap::default();
    let mut blocked: BTreeMap<(String, String, String, Vec<String>), BlockedGroup> =
        BTreeMap::new();
    for s in traffic {
        c.summaries += s.summaries;
        let conns = s.connections;
        c.connections += conns;
        c.bytes += s.bytes;
        let k = ConnKey {
            src: s.src,
            dst: s.dst,
            proto: s.proto,
            port: s.port,
        };
        let o = compiled.evaluate(&k, s.process.as_deref());
        let deciding = compiled.deciding_rules(&o);
        for r in &deciding {
            let h = hits.entry(*r).or_default();
            h.0 += conns;
            h.1 += s.bytes;
            h.2 += s.summaries;
            if o.decision == Decision::Allow {
                let u = used.entry(*r).or_default();
                if u.len() < PORTS_CAP {
                    u.insert((k.proto, k.port));
                }
            }
        }
        if o.decision == Decision::Allow {
            c.connections_allowed += conns;
            c.bytes_allowed += s.bytes;
            continue;
        }
        let src = group_name(inventory, k.src, opts.granularity);
        let dst = group_name(inventory, k.dst, opts.granularity);
        let svc = service_name(k.proto, k.port);
        let denied_by: Vec<String> = deciding.iter().map(|r| r.to_string()).collect();
        let g = blocked
            .entry((src.clone(), dst.clone(), svc.clone(), denied_by.clone()))
            .or_insert_with(|| BlockedGroup {
                source: src,
                destination: dst,
                service: svc,
                connections: 0,
                bytes: 0,
                summaries: 0,
                blocked_now: 0,
                potentially_blocked_now: 0,
                denied_by,
            });
        g.connections += conns;
        g.bytes += s.bytes;
        g.summaries += s.summaries;
        match o.verdict {
            VerdictKind::Blocked => g.blocked_now += s.summaries,
            VerdictKind::PotentiallyBlocked => g.potentially_blocked_now += s.summaries,
            VerdictKind::Allowed => {}
        }
    }
    c.connection_share = share(c.connections_allowed, c.connections);
    c.byte_share = share(c.bytes_allowed, c.bytes);
    let mut groups: Vec<BlockedGroup> = blocked.into_values().collect();
    groups.sort_by(|a, b| {
        b.connections
            .cmp(&a.connections)
            .then_with(|| b.bytes.cmp(&a.bytes))
            .then_with(|| {
                (&a.source, &a.destination, &a.service).cmp(&(
                    &b.source,
                    &b.destination,
                    &b.service,
                ))
            })
    });
    c.blocked_groups_total = groups.len();
    if opts.limit > 0 {
        groups.truncate(opts.limit);
    }
    c.would_block = groups;
    for t in &policy.tiers {
        for rs in policy.rulesets.iter().filter(|rs| rs.tier == t.name) {
            for r in &rs.rules {
                let (connections, bytes, summaries) =
                    hits.get(r.id.as_str()).copied().unwrap_or_default();
                if summaries == 0 {
                    c.unused_rules.push(format!("{}/{}", rs.name, r.id));
                }
                if let Some(u) = used.get(r.id.as_str()) {
                    let ports = service_ports(policy, r);
                    let allowed: u64 = ports.iter().map(port_count).sum();
                    let n = u.len() as u64;
                    if allowed > OVER_BROAD_FACTOR && allowed >= OVER_BROAD_FACTOR * n {
                        let mut shown: Vec<(u8, u16)> = u.iter().copied().collect();
                        shown.sort_unstable();
                        c.over_broad.push(OverBroad {
                            rule: format!("{}/{}", rs.name, r.id),
                            allowed_ports: allowed,
                            used_ports: n,
                            services: ports.iter().map(|p| p.to_string()).collect(),
                            used: shown
                                .iter()
                                .take(10)
                                .map(|(p, port)| service_name(*p, *port))
                                .collect(),
                        });
                    }
                }
                c.rules.push(RuleHits {
                    ruleset: rs.name.clone(),
                    rule: r.id.clone(),
                    tier: t.name.clone(),
                    action: r.action.to_string(),
                    connections,
                    bytes,
                    summaries,
                });
            }
        }
    }
    c
}

/// The ports a rule's services allow, named services resolved.
fn service_ports(policy: &Policy, r: &bulkhead_policy::Rule) -> Vec<ServicePort> {
    let mut out = Vec::new();
    for s in &r.services {
        match s {
            bulkhead_policy::ServiceRef::Port(p) => out.push(*p),
            bulkhead_policy::ServiceRef::Named(n) => {
                if let Some(svc) = policy.services.get(n) {
                    out.extend(svc.ports.iter().copied());
                }
            }
        }
    }
    out
}

fn port_count(p: &ServicePort) -> u64 {
    match p.proto {
        bulkhead_model::ProtoMatch::Any => 1 << 24,
        bulkhead_model::ProtoMatch::Proto(_) => u64::from(p.ports.end - p.ports.start) + 1,
    }
}
