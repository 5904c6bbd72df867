//! Why a connection gets its verdict, in data and in words. Built on the oracle so that
//! the explanation is the semantics itself, not a second implementation of it.

use std::fmt::Write;
use std::net::IpAddr;

use bulkhead_model::{
    Action, Connection, DecidedBy, Decision, Exemption, Inventory, Quarantine, Verdict,
    VerdictKind, protocol_name,
};
use serde::Serialize;

use crate::context::HostContext;
use crate::oracle::{self, selector_matches, service_matches};
use crate::policy::Policy;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// None when the address is not in the inventory.
    pub workload: Option<String>,
    pub kind: Option<String>,
    pub managed: bool,
    pub mode: Option<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub ip_lists: Vec<String>,
    /// Whether this end drops what policy denies (managed and enforced).
    pub enforces: bool,
    /// "requested" or "applied" (by its agent) when the workload is quarantined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleMatch {
    pub rule_id: String,
    pub ruleset: String,
    pub action: Action,
    /// The first selector/service of each part that matched.
    pub from: String,
    pub to: String,
    pub service: String,
    pub origin: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TierTrace {
    pub tier: String,
    pub matched: Vec<RuleMatch>,
    /// True for the tier that decided; later tiers are listed but not consulted.
    pub decided: bool,
}

/// A rule that fails on exactly one part: usually the one the user expected to match.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NearMiss {
    pub rule_id: String,
    pub ruleset: String,
    pub tier: String,
    pub action: Action,
    pub failed: &'static str,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub connection: Connection,
    pub source: Endpoint,
    pub destination: Endpoint,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub tiers: Vec<TierTrace>,
    pub near_misses: Vec<NearMiss>,
    pub summary: String,
}

fn endpoint(policy: &Policy, inv: &Inventory, hosts: &HostContext, a: IpAddr) -> Endpoint {
    let w = inv.by_address(a);
    Endpoint {
        address: a,
        workload: w.map(|w| w.name.clone()),
        kind: w.map(|w| w.kind.to_string()),
        managed: w.is_some_and(|w| w.managed),
        mode: w.filter(|w| w.managed).map(|w| w.mode.to_string()),
        labels: w
            .map(|w| {
                w.labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        ip_lists: policy
            .ip_lists
            .values()
            .filter(|l| l.contains(a))
            .map(|l| l.name.clone())
            .collect(),
        enforces: w.is_some_and(|w| w.enforces()),
        quarantine: w.and_then(|w| match hosts.quarantine_of(w) {
            Quarantine::None => None,
            Quarantine::Requested => Some("requested".to_string()),
            Quarantine::Applied => Some("applied".to_string()),
        }),
    }
}

const NEAR_MISS_LIMIT: usize = 10;

/// Policy alone (see [`oracle::evaluate`]).
pub fn explain(policy: &Policy, inv: &Inventory, c: &Connection) -> Explanation {
    explain_with(policy, inv, &HostContext::default(), c)
}

/// With what the hosts' tables add: the trace shows what the rules decide, the verdict
/// and the sentence what the kernel does (a quarantine or a failsafe port can overrule
/// the rules).
pub fn explain_with(
    policy: &Policy,
    inv: &Inventory,
    hosts: &HostContext,
    c: &Connection,
) -> Explanation {
    let verdict = oracle::evaluate_with(policy, inv, hosts, c);
    let (rules_decision, rules_decided_by) = oracle::decide(policy, inv, c);
    let src_w = inv.by_address(c.src);
    let dst_w = inv.by_address(c.dst);
    let decided_tier = match &rules_decided_by {
        DecidedBy::Rules { tier, .. } => Some(tier.clone()),
        DecidedBy::Default | DecidedBy::Quarantine { .. } => None,
    };
    let mut tiers = Vec::new();
    let mut near_misses = Vec::new();
    for tier in &policy.tiers {
        let mut matched = Vec::new();
        for rs in policy.rulesets.iter().filter(|rs| rs.tier == tier.name) {
            for rule in &rs.rules {
                let from = rule
                    .from
                    .iter()
                    .find(|s| selector_matches(policy, rs, s, c.src, src_w));
                let to = rule
                    .to
                    .iter()
                    .find(|s| selector_matches(policy, rs, s, c.dst, dst_w));
                let svc = rule
                    .services
                    .iter()
                    .find(|s| service_matches(policy, s, rule.action, c));
                match (from, to, svc) {
                    (Some(f), Some(t), Some(s)) => matched.push(RuleMatch {
                        rule_id: rule.id.clone(),
                        ruleset: rs.name.clone(),
                        action: rule.action,
                        from: f.to_string(),
                        to: t.to_string(),
                        service: s.to_string(),
                        origin: rule.origin.to_string(),
                    }),
                    (f, t, s) => {
                        let failed: Vec<&'static str> = [
                            (f.is_none(), "from"),
                            (t.is_none(), "to"),
                            (s.is_none(), "services"),
                        ]
                        .into_iter()
                        .filter(|(missed, _)| *missed)
                        .map(|(_, n)| n)
                        .collect();
                        if failed.len() == 1 && near_misses.len() < NEAR_MISS_LIMIT {
                            near_misses.push(NearMiss {
                                rule_id: rule.id.clone(),
                                ruleset: rs.name.clone(),
                                tier: tier.name.clone(),
                                action: rule.action,
                                failed: failed[0],
                            });
                        }
                    }
                }
            }
        }
        matched.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
        tiers.push(TierTrace {
            decided: decided_tier.as_deref() == Some(tier.name.as_str()),
            tier: tier.name.clone(),
            matched,
        });
    }
    let source = endpoint(policy, inv, hosts, c.src);
    let destination = endpoint(policy, inv, hosts, c.dst);
    let summary = summarize(
        &verdict,
        (rules_decision, &rules_decided_by),
        &source,
        &destination,
        c,
    );
    Explanation {
        connection: c.clone(),
        source,
        destination,
        verdict,
        tiers,
        near_misses,
        summary,
    }
}

fn name(e: &Endpoint) -> String {
    match &e.workload {
        Some(w) => format!("{w} ({})", e.address),
        None => format!("{} (not in the inventory)", e.address),
    }
}

fn rules_sentence(decision: Decision, decided_by: &DecidedBy) -> String {
    match decided_by {
        DecidedBy::Rules { tier, rule_ids } => {
            let what = if decision == Decision::Allow {
                "allowed"
            } else {
                "denied"
            };
            format!("{what} by rule {} in tier {tier}", rule_ids.join(", "))
        }
        DecidedBy::Default | DecidedBy::Quarantine { .. } => {
            "denied by default: no rule in any tier matches".to_string()
        }
    }
}

fn summarize(
    v: &Verdict,
    (rules_decision, rules_decided_by): (Decision, &DecidedBy),
    src: &Endpoint,
    dst: &Endpoint,
    c: &Connection,
) -> String {
    let rules = rules_sentence(rules_decision, rules_decided_by);
    let why = match &v.decided_by {
        DecidedBy::Quarantine { workload, applied } => {
            let state = if *applied {
                "its agent has applied the quarantine"
            } else {
                "its agent has not applied the quarantine (none enrolled, offline, or not synced yet)"
            };
            format!("{workload} is quarantined and {state}; the rules alone: {rules}")
        }
        _ => rules,
    };
    let service = format!(
        "{}/{}",
        protocol_name(c.proto)
            .map(str::to_string)
            .unwrap_or_else(|| c.proto.to_string()),
        c.port
    );
    let exempt = match v.exempt {
        Some(Exemption::Failsafe) => format!(
            "; {service} is a failsafe port, which {} accepts whatever policy says",
            name(dst)
        ),
        Some(Exemption::ControlPlane) => format!(
            "; {} is the control plane, which {} always reaches",
            c.dst,
            name(src)
        ),
        Some(Exemption::FailsafeOutbound) => format!(
            "; {service} is an outbound failsafe port, which {} may always reach",
            name(src)
        ),
        None => String::new(),
    };
    let consequence = match v.verdict {
        VerdictKind::Allowed => "the connection is allowed".to_string(),
        VerdictKind::Blocked => {
            let dropping = |e: &Endpoint, exempt: bool| {
                !exempt
                    && (e.quarantine.as_deref() == Some("applied")
                        || (e.enforces && v.decision == Decision::Deny))
            };
            let ends: Vec<String> = [
                (
                    src,
                    matches!(
                        v.exempt,
                        Some(Exemption::ControlPlane | Exemption::FailsafeOutbound)
                    ),
                ),
                (dst, v.exempt == Some(Exemption::Failsafe)),
            ]
            .iter()
            .filter(|(e, exempt)| dropping(e, *exempt))
            .map(|(e, _)| name(e))
            .collect();
            format!(
                "{} {} it, so the connection is blocked",
                ends.join(" and "),
                if ends.len() > 1 { "drop" } else { "drops" }
            )
        }
        VerdictKind::PotentiallyBlocked if matches!(v.decided_by, DecidedBy::Quarantine { .. }) => {
            "nothing drops it yet, so the connection passes and is reported as potentially blocked".to_string()
        }
        VerdictKind::PotentiallyBlocked if v.exempt.is_some() => {
            "so the connection passes and is reported as potentially blocked".to_string()
        }
        VerdictKind::PotentiallyBlocked => {
            "no managed end enforces (monitor, idle or unmanaged), so the connection passes and is reported as potentially blocked".to_string()
        }
    };
    let sep = if exempt.is_empty() { "; " } else { ": " };
    format!("{why}{exempt}{sep}{consequence}")
}

fn endpoint_text(out: &mut String, role: &str, e: &Endpoint) {
    let _ = write!(out, "{role:<12}{}", name(e));
    if e.workload.is_some() {
        let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(
            out,
            "  [{}] {}, {}",
            labels.join(" "),
            e.kind.as_deref().unwrap_or("?"),
            if e.managed {
                let quarantine = e
                    .quarantine
                    .as_deref()
                    .map(|q| format!(", quarantined ({q})"))
                    .unwrap_or_default();
                format!("managed, {}{quarantine}", e.mode.as_deref().unwrap_or("?"))
            } else {
                "unmanaged".to_string()
            }
        );
    }
    if !e.ip_lists.is_empty() {
        let _ = write!(out, "  ip lists: {}", e.ip_lists.join(", "));
    }
    out.push('\n');
}

impl Explanation {
    /// The explanation in words, for people.
    pub fn to_text(&self) -> String {
        let c = &self.connection;
        let proto = protocol_name(c.proto)
            .map(str::to_string)
            .unwrap_or_else(|| format!("proto {}", c.proto));
        let mut out = String::new();
        let _ = writeln!(out, "verdict     {}", self.verdict.verdict);
        let _ = writeln!(
            out,
            "connection  {} -> {} {proto}/{}{}",
            c.src,
            c.dst,
            c.port,
            c.process
                .as_ref()
                .map(|p| format!(" process {p}"))
                .unwrap_or_default()
        );
        endpoint_text(&mut out, "source", &self.source);
        endpoint_text(&mut out, "destination", &self.destination);
        let mut reached = true;
        for t in &self.tiers {
            let overruled = matches!(self.verdict.decided_by, DecidedBy::Quarantine { .. });
            let status = if t.decided && overruled {
                "decides the rules; the quarantine overrules them"
            } else if t.decided {
                "decides"
            } else if reached {
                "no match"
            } else {
                "not consulted"
            };
            let _ = writeln!(out, "tier {} ({status})", t.tier);
            for m in &t.matched {
                let _ = writeln!(
                    out,
                    "  {} {} [{}]: from {} to {} on {}  ({})",
                    m.action, m.rule_id, m.ruleset, m.from, m.to, m.service, m.origin
                );
            }
            if t.decided {
                reached = false;
            }
        }
        if !self.near_misses.is_empty() && self.verdict.verdict != VerdictKind::Allowed {
            let _ = writeln!(out, "near misses (rules that fail on one part only):");
            for n in &self.near_misses {
                let _ = writeln!(
                    out,
                    "  {} {} [{} / {}]: {} does not match",
                    n.action, n.rule_id, n.ruleset, n.tier, n.failed
                );
            }
        }
        let _ = writeln!(out, "why         {}", self.summary);
        out
    }
}
