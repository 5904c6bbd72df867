//! Enforcement breaches: a connection seen *established* by independent evidence — the
//! conntrack of an agent, which saw the other side answer — that an enforcing end's
//! table should have dropped, and that opened after that table was in force. Either the
//! kernel did not do what the policy says (rules circumvented, another path around the
//! table) or the engine is wrong; both are what a security team must hear about.

use bulkhead_api::HostFlow;
use bulkhead_model::{Decision, VerdictKind, Workload};
use bulkhead_policy::ConnKey;
use bulkhead_store::control::{AgentRecord, AlertObservation};
use serde_json::json;

use crate::state::AppState;

/// A connection that opened less than this after a table was reported applied is not
/// held against it (the report and the connection race).
const SETTLE_MS: i64 = 2_000;

/// When the table of `w`'s host has been in force since: its agent runs the revision the
/// server wants and said when it applied it.
fn in_force_since(s: &AppState, agents: &[AgentRecord], w: &Workload) -> Option<i64> {
    let agent = agents
        .iter()
        .filter(|a| a.workload == w.name && a.pending.is_none())
        .max_by_key(|a| a.last_seen_ms)?;
    let desired = crate::agent_api::wire_policy(s, &w.name).ok()?;
    if agent.applied_revision.as_deref() != Some(desired.revision.as_str()) {
        return None;
    }
    let status: serde_json::Value = serde_json::from_str(agent.status_json.as_deref()?).ok()?;
    status["status"]["applied_at_ms"].as_i64()
}

/// The breaches among an agent's flows (its own traffic, already checked as such).
pub(crate) fn breaches(
    s: &AppState,
    agents: &[AgentRecord],
    reporter: &AgentRecord,
    flows: &[&HostFlow],
) -> Vec<AlertObservation> {
    let enricher = s.current();
    let Some(policy) = enricher.provisioned.as_deref() else {
        return Vec::new();
    };
    let inv = &enricher.inventory;
    let hosts = &enricher.hosts;
    let mut out = Vec::new();
    for f in flows.iter().filter(|f| f.reverse_packets > 0) {
        let key = ConnKey {
            src: f.src,
            dst: f.dst,
            proto: f.protocol,
            port: f.dst_port,
        };
        let process = f.process.as_ref().map(|p| p.name.as_str());
        let outcome = policy.evaluate(&key, process);
        if outcome.verdict != VerdictKind::Blocked {
            continue;
        }
        let rules = policy.rules_decision(&outcome);
        let (sw, dw) = (inv.by_address(f.src), inv.by_address(f.dst));
        let src_end = hosts.end(sw, hosts.source_exemption(f.dst, f.protocol, f.dst_port));
        let dst_end = hosts.end(dw, hosts.destination_exemption(f.protocol, f.dst_port));
        // The ends whose table should have dropped it, and had been in force since
        // before it opened.
        let enforcers: Vec<&Workload> = [(sw, src_end), (dw, dst_end)]
            .into_iter()
            .filter_map(|(w, end)| w.filter(|_| end.drops(rules)))
            .filter(|w| {
                in_force_since(s, agents, w).is_some_and(|since| since + SETTLE_MS <= f.start_ms)
            })
            .collect();
        if enforcers.is_empty() {
            continue;
        }
        let service = match bulkhead_model::protocol_name(f.protocol) {
            Some(p) => format!("{p}/{}", f.dst_port),
            None => format!("proto/{}", f.protocol),
        };
        let name = |a: std::net::IpAddr, w: Option<&Workload>| {
            w.map_or_else(|| a.to_string(), |w| w.name.clone())
        };
        let (src, dst) = (name(f.src, sw), name(f.dst, dw));
        let by: Vec<&str> = enforcers.iter().map(|w| w.name.as_str()).collect();
        let decided = if rules == Decision::Deny {
            let ids = policy.deciding_rules(&outcome);
            if ids.is_empty() {
                "the default deny".to_string()
            } else {
                format!("rule {}", ids.join(", "))
            }
        } else {
            "the quarantine".to_string()
        };
        out.push(AlertObservation {
            key: format!("breach|{src}|{dst}|{service}|{}", by.join(",")),
            kind: "enforcement_breach".into(),
            severity: "critical".into(),
            title: format!(
                "enforcement breach: {src} → {dst} on {service} was established although {} enforces {decided}; seen by the agent of {}",
                by.join(" and "),
                reporter.workload
            ),
            details_json: json!({
                "src": f.src, "dst": f.dst, "src_workload": sw.map(|w| &w.name),
                "dst_workload": dw.map(|w| &w.name), "service": service,
                "enforced_by": by, "decided_by": decided,
                "evidence": {
                    "reporter": format!("agent {}", reporter.workload),
                    "packets": f.packets, "reverse_packets": f.reverse_packets,
                    "bytes": f.bytes, "reverse_bytes": f.reverse_bytes,
                    "start_ms": f.start_ms, "end_ms": f.end_ms,
                },
            })
            .to_string(),
            count: 1,
            first_seen_ms: f.start_ms,
            last_seen_ms: f.end_ms.max(f.start_ms),
        });
    }
    out
}
