//! The reference evaluator: DESIGN.md §2 written out as directly as possible, with no
//! precomputation. It is slow on purpose; the compiled evaluator is tested against it.

use std::net::IpAddr;

use bulkhead_model::{
    Action, Connection, DecidedBy, Decision, Inventory, Labels, Verdict, Workload,
};

use crate::context::HostContext;

use crate::document::{Rule, Ruleset, Selector, ServiceRef};
use crate::policy::Policy;

/// Does `sel`, written in ruleset `rs`, select this address?
pub fn selector_matches(
    policy: &Policy,
    rs: &Ruleset,
    sel: &Selector,
    addr: IpAddr,
    w: Option<&Workload>,
) -> bool {
    // Scope labels fill in the keys a label or group selector leaves open.
    let scope_ok = |labels: &Labels, mentions: &dyn Fn(&str) -> bool| {
        rs.scope
            .iter()
            .all(|(k, v)| mentions(k) || labels.get(k) == Some(v))
    };
    match sel {
        Selector::Any => true,
        Selector::Labels(l) => {
            w.is_some_and(|w| w.labels.includes(l) && scope_ok(&w.labels, &|k| l.contains_key(k)))
        }
        Selector::Group(g) => {
            let group = &policy.label_groups[g];
            w.is_some_and(|w| {
                group.matches(&w.labels) && scope_ok(&w.labels, &|k| group.labels.contains_key(k))
            })
        }
        Selector::IpList(name) => policy.ip_lists[name].contains(addr),
    }
}

/// A provider-process constraint fails closed: an unknown process never satisfies an
/// allow, and never escapes a deny.
pub fn process_matches(required: Option<&str>, action: Action, actual: Option<&str>) -> bool {
    match (required, actual) {
        (None, _) => true,
        (Some(r), Some(a)) => r == a,
        (Some(_), None) => action == Action::Deny,
    }
}

pub fn service_matches(policy: &Policy, s: &ServiceRef, action: Action, c: &Connection) -> bool {
    match s {
        ServiceRef::Port(p) => p.matches(c.proto, c.port),
        ServiceRef::Named(n) => {
            let svc = &policy.services[n];
            svc.ports.iter().any(|p| p.matches(c.proto, c.port))
                && process_matches(svc.process.as_deref(), action, c.process.as_deref())
        }
    }
}

pub fn rule_matches(
    policy: &Policy,
    inv: &Inventory,
    rs: &Ruleset,
    rule: &Rule,
    c: &Connection,
) -> bool {
    let src = inv.by_address(c.src);
    let dst = inv.by_address(c.dst);
    rule.from
        .iter()
        .any(|s| selector_matches(policy, rs, s, c.src, src))
        && rule
            .to
            .iter()
            .any(|s| selector_matches(policy, rs, s, c.dst, dst))
        && rule
            .services
            .iter()
            .any(|s| service_matches(policy, s, rule.action, c))
}

/// DESIGN.md §2 through the hosts' tables, with no failsafe port, control plane or
/// applied quarantine (policy alone; [`evaluate_with`] takes them).
pub fn evaluate(policy: &Policy, inv: &Inventory, c: &Connection) -> Verdict {
    evaluate_with(policy, inv, &HostContext::default(), c)
}

/// What the rules decide: tiers in order; in the first tier with a matching rule, deny
/// beats allow; no match anywhere is the default deny.
pub fn decide(policy: &Policy, inv: &Inventory, c: &Connection) -> (Decision, DecidedBy) {
    let mut decision = Decision::Deny;
    let mut decided_by = DecidedBy::Default;
    for tier in &policy.tiers {
        let mut allows = Vec::new();
        let mut denies = Vec::new();
        for rs in policy.rulesets.iter().filter(|rs| rs.tier == tier.name) {
            for rule in &rs.rules {
                if rule_matches(policy, inv, rs, rule, c) {
                    match rule.action {
                        Action::Allow => allows.push(rule.id.clone()),
                        Action::Deny => denies.push(rule.id.clone()),
                    }
                }
            }
        }
        let (d, mut ids) = if !denies.is_empty() {
            (Decision::Deny, denies)
        } else if !allows.is_empty() {
            (Decision::Allow, allows)
        } else {
            continue;
        };
        ids.sort();
        decision = d;
        decided_by = DecidedBy::Rules {
            tier: tier.name.clone(),
            rule_ids: ids,
        };
        break;
    }
    (decision, decided_by)
}

/// The rules' decision, then each end's table: failsafe ports, the control plane and
/// quarantine (docs/policy.md, "What the hosts add").
pub fn evaluate_with(
    policy: &Policy,
    inv: &Inventory,
    hosts: &HostContext,
    c: &Connection,
) -> Verdict {
    let (decision, mut decided_by) = decide(policy, inv, c);
    let (at, exempt, quarantined) = hosts.at_hosts(inv, decision, c.src, c.dst, c.proto, c.port);
    if let Some(workload) = quarantined {
        decided_by = DecidedBy::Quarantine {
            applied: hosts.quarantine_applied.contains(&workload),
            workload,
        };
    }
    Verdict {
        verdict: at.verdict,
        decision: at.decision,
        decided_by,
        exempt,
    }
}
