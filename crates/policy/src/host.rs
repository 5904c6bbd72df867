//! The per-host rule IR: what one managed workload must enforce, as an ordered list of
//! address-and-port rules that a packet filter can evaluate top to bottom.
//!
//! Policy talks about labels; a kernel talks about addresses. This module resolves every
//! selector against the inventory once, so the agent's renderer (bulkhead-nft) needs
//! neither labels nor the inventory. The list is ordered by (tier order, deny before allow,
//! rule id), which turns the oracle's "first tier with a match decides, deny beats allow
//! inside a tier" into "first matching rule wins" — the only semantics nftables has. The
//! property test in `tests/host.rs` checks exactly that equivalence against the oracle.

use std::collections::BTreeSet;
use std::net::IpAddr;

use bulkhead_model::{Action, EnforcementMode, Inventory, ServicePort};
use ipnet::IpNet;

use crate::document::{Rule, Ruleset, Selector, ServiceRef};
use crate::oracle::selector_matches;
use crate::policy::Policy;

/// The other end of a connection a host rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// Every address, in the inventory or not.
    Any,
    /// These networks only: sorted, merged (no overlaps, adjacent ranges joined), IPv4
    /// first. Empty when the selectors select nothing; such a rule matches nothing.
    Nets(Vec<IpNet>),
}

impl Peers {
    pub fn contains(&self, addr: IpAddr) -> bool {
        match self {
            Peers::Any => true,
            Peers::Nets(nets) => nets.iter().any(|n| n.contains(&addr)),
        }
    }
}

/// One rule as the host sees it, in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    pub tier: String,
    /// Position of the tier in evaluation order.
    pub tier_index: usize,
    pub rule_id: String,
    pub action: Action,
    /// The workload's own addresses this rule is about (those its host side selects).
    /// Usually all of them; a subset only when an IP list covers some of them.
    pub local: Vec<IpAddr>,
    pub peers: Peers,
    /// Protocol and ports, each with the provider process the service requires, sorted.
    pub services: Vec<(ServicePort, Option<String>)>,
}

impl HostRule {
    /// Does this rule match a connection between `local` (one of the host's addresses)
    /// and `peer`? `process` is the provider's process, when known; it follows the
    /// oracle's fail-closed rule.
    pub fn matches(
        &self,
        local: IpAddr,
        peer: IpAddr,
        proto: u8,
        port: u16,
        process: Option<&str>,
    ) -> bool {
        self.local.contains(&local)
            && self.peers.contains(peer)
            && self.services.iter().any(|(sp, required)| {
                sp.matches(proto, port)
                    && crate::oracle::process_matches(required.as_deref(), self.action, process)
            })
    }
}

/// Everything one managed workload enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    pub workload: String,
    pub mode: EnforcementMode,
    /// The workload's addresses, sorted.
    pub addresses: Vec<IpAddr>,
    /// Connections to this workload, first match wins; no match is the default deny.
    pub inbound: Vec<HostRule>,
    /// Connections from this workload, first match wins; no match is the default deny.
    pub outbound: Vec<HostRule>,
    /// Isolated whatever the rules and the mode say: only the failsafe ports and the
    /// control plane pass, connections already established included (docs/policy.md,
    /// "Quarantine").
    pub quarantined: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("no workload named {0:?} in the inventory")]
    UnknownWorkload(String),
    #[error("workload {0:?} is unmanaged: nothing runs on it to enforce policy")]
    Unmanaged(String),
}

/// Resolves `policy` for one managed workload of `inventory`.
pub fn host_policy(
    policy: &Policy,
    inventory: &Inventory,
    workload: &str,
) -> Result<HostPolicy, HostError> {
    let w = inventory
        .by_name(workload)
        .ok_or_else(|| HostError::UnknownWorkload(workload.to_string()))?;
    if !w.managed {
        return Err(HostError::Unmanaged(workload.to_string()));
    }
    let mut addresses = w.addresses.clone();
    addresses.sort();
    addresses.dedup();

    let mut inbound = Vec::new();
    let mut outbound = Vec::new();
    for (rs, rule) in policy.rules() {
        // Validated policies only name known tiers; a ruleset in no tier is never
        // consulted by the oracle either.
        let Some(tier_index) = policy.tier_index(&rs.tier) else {
            continue;
        };
        let selected_local = |side: &[Selector]| -> Vec<IpAddr> {
            addresses
                .iter()
                .copied()
                .filter(|a| {
                    side.iter()
                        .any(|s| selector_matches(policy, rs, s, *a, Some(w)))
                })
                .collect()
        };
        let to_me = selected_local(&rule.to);
        if !to_me.is_empty() {
            inbound.push(host_rule(
                policy, inventory, rs, rule, tier_index, to_me, &rule.from,
            ));
        }
        let from_me = selected_local(&rule.from);
        if !from_me.is_empty() {
            outbound.push(host_rule(
                policy, inventory, rs, rule, tier_index, from_me, &rule.to,
            ));
        }
    }
    let order = |a: &HostRule, b: &HostRule| {
        // Deny sorts before allow so that, inside a tier, the first match is a deny
        // whenever any deny matches.
        let deny_first = |r: &HostRule| r.action != Action::Deny;
        (a.tier_index, deny_first(a), &a.rule_id).cmp(&(b.tier_index, deny_first(b), &b.rule_id))
    };
    inbound.sort_by(order);
    outbound.sort_by(order);
    Ok(HostPolicy {
        workload: w.name.clone(),
        mode: w.mode,
        addresses,
        inbound,
        outbound,
        quarantined: w.quarantined(),
    })
}

fn host_rule(
    policy: &Policy,
    inventory: &Inventory,
    rs: &Ruleset,
    rule: &Rule,
    tier_index: usize,
    local: Vec<IpAddr>,
    peer_side: &[Selector],
) -> HostRule {
    let mut services = BTreeSet::new();
    for s in &rule.services {
        match s {
            ServiceRef::Port(p) => {
                services.insert((*p, None));
            }
            ServiceRef::Named(n) => {
                let svc = &policy.services[n];
                for p in &svc.ports {
                    services.insert((*p, svc.process.clone()));
                }
            }
        }
    }
    HostRule {
        tier: rs.tier.clone(),
        tier_index,
        rule_id: rule.id.clone(),
        action: rule.action,
        local,
        peers: resolve_peers(policy, inventory, rs, peer_side),
        services: services.into_iter().collect(),
    }
}

/// The addresses a list of selectors means. Label and group selectors only ever yield
/// inventory addresses (host routes); IP lists yield their ranges, exclusions cut out.
fn resolve_peers(policy: &Policy, inventory: &Inventory, rs: &Ruleset, side: &[Selector]) -> Peers {
    let mut nets = Vec::new();
    for sel in side {
        match sel {
            Selector::Any => return Peers::Any,
            Selector::IpList(name) => {
                let list = &policy.ip_lists[name];
                for inc in &list.include {
                    nets.extend(subtract_all(*inc, &list.exclude));
                }
            }
            Selector::Labels(_) | Selector::Group(_) => {
                for w in inventory.workloads() {
                    for a in &w.addresses {
                        if selector_matches(policy, rs, sel, *a, Some(w)) {
                            nets.push(IpNet::from(*a));
                        }
                    }
                }
            }
        }
    }
    Peers::Nets(IpNet::aggregate(&nets))
}

/// `net` minus every network in `excludes`, as plain CIDRs.
pub fn subtract_all(net: IpNet, excludes: &[IpNet]) -> Vec<IpNet> {
    let mut parts = vec![net];
    for ex in excludes {
        parts = parts.into_iter().flat_map(|p| subtract(p, *ex)).collect();
    }
    parts
}

/// `net` minus `ex`. CIDRs either nest or are disjoint, so there are three cases; when
/// `ex` lies inside `net`, split `net` in halves and keep the half without `ex` whole,
/// down to `ex`'s prefix length: at most 128 pieces.
fn subtract(net: IpNet, ex: IpNet) -> Vec<IpNet> {
    if ex.contains(&net) {
        return Vec::new();
    }
    if !net.contains(&ex) {
        return vec![net];
    }
    let mut out = Vec::new();
    let mut cur = net;
    while cur.prefix_len() < ex.prefix_len() {
        let halves: Vec<IpNet> = cur
            .subnets(cur.prefix_len() + 1)
            .expect("a longer prefix exists below ex's")
            .collect();
        let (inside, outside) = if halves[0].contains(&ex) {
            (halves[0], halves[1])
        } else {
            (halves[1], halves[0])
        };
        out.push(outside);
        cur = inside;
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn subtracting_cidrs() {
        assert_eq!(
            subtract(n("10.0.0.0/8"), n("11.0.0.0/8")),
            vec![n("10.0.0.0/8")]
        );
        assert!(subtract(n("10.1.0.0/16"), n("10.0.0.0/8")).is_empty());
        assert_eq!(
            subtract(n("10.0.0.0/30"), n("10.0.0.1/32")),
            vec![n("10.0.0.0/32"), n("10.0.0.2/31")]
        );
        let internet = subtract_all(
            n("0.0.0.0/0"),
            &[n("10.0.0.0/8"), n("172.16.0.0/12"), n("192.168.0.0/16")],
        );
        for a in ["10.1.2.3", "172.20.0.1", "192.168.1.1"] {
            assert!(
                !internet
                    .iter()
                    .any(|x| x.contains(&a.parse::<IpAddr>().unwrap()))
            );
        }
        for a in ["203.0.113.50", "172.32.0.1", "9.255.255.255", "11.0.0.0"] {
            assert!(
                internet
                    .iter()
                    .any(|x| x.contains(&a.parse::<IpAddr>().unwrap()))
            );
        }
        assert_eq!(
            subtract_all(n("::/0"), &[n("fc00::/7")]).len(),
            7,
            "one piece per prefix bit above /7"
        );
    }
}
