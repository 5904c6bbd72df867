//! The agent ↔ server protocol (JSON over HTTPS, under `/api/v1/agent`).
//!
//! - `POST enroll` with a pairing key → the agent's own credential (shown once).
//! - `POST heartbeat` (credential as bearer token) → the policy revision it should run.
//! - `GET policy` → that revision's [`WirePolicy`].
//! - `POST events` → tamper events, rejected policies, logged packets.
//! - `POST flows` → conntrack flows in numbered batches of a stream, so a batch re-sent
//!   (after a lost answer, an agent restart or a `kill -9`) is stored once.

use std::net::IpAddr;

use bulkhead_model::{Action, EnforcementMode, ServicePort};
use bulkhead_policy::host::{HostPolicy, HostRule, Peers};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::host::{HostFlow, HostInfo, LoggedPacket};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollRequest {
    pub pairing_key: String,
    pub host: HostInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollResponse {
    pub agent_id: u64,
    /// The workload this agent enforces for.
    pub workload: String,
    /// The agent's bearer credential; the server keeps only its hash.
    pub credential: String,
    /// Set when the pairing key alone could not make this host the workload (it exists
    /// and the key is not bound to it): the credential is refused until an admin
    /// approves the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    /// Sent at start and whenever it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostInfo>,
    /// The revision whose table is in the kernel now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<String>,
    #[serde(default)]
    pub status: AgentStatus,
}

/// Counters and the last problem, shown on the server beside the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default)]
    pub tamper_events: u64,
    #[serde(default)]
    pub logged_packets: u64,
    /// Logged packets that repeated an attempt already logged (a retransmitted SYN):
    /// counted here, not reported as connections.
    #[serde(default)]
    pub logged_repeats: u64,
    /// When the revision in the kernel was applied (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at_ms: Option<i64>,
    /// When the agent last compared the kernel's table with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at_ms: Option<i64>,
    /// Flows waiting for delivery: in memory until spooled, and in the disk spool.
    #[serde(default)]
    pub flows_buffered: u64,
    /// Flows dropped because the buffer was full: delivered nowhere, so counted.
    #[serde(default)]
    pub flows_dropped: u64,
    /// Tamper and rejected-policy events dropped (the oldest first) because too many
    /// waited for an unreachable server.
    #[serde(default)]
    pub events_dropped: u64,
    /// Flows in batches on the agent's disk spool, not yet acknowledged by the server.
    #[serde(default)]
    pub spool_flows: u64,
    /// Bytes the spool's batches take on disk.
    #[serde(default)]
    pub spool_bytes: u64,
    /// Batches dropped from the spool, the oldest first, because it was full: their
    /// flows are delivered nowhere. Counted since the spool was created (kept across
    /// agent restarts).
    #[serde(default)]
    pub spool_batches_dropped: u64,
    /// The flows those batches held.
    #[serde(default)]
    pub spool_flows_dropped: u64,
    /// Spool files that did not check out (unreadable, or content not matching its
    /// checksum): moved aside to `spool/corrupt/`, not delivered.
    #[serde(default)]
    pub spool_corrupt: u64,
    /// Batches the server answered were already stored: re-sent after a lost answer or
    /// a restart, and not stored twice.
    #[serde(default)]
    pub flow_batches_repeated: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatResponse {
    /// The revision the agent should have applied; fetch `policy` when it differs.
    pub revision: String,
    /// The last flow batch the server has stored, so a restarted agent resumes after it.
    pub flow_batch_acked: u64,
}

/// One workload's policy as the agent receives it: the per-host IR with every selector
/// already resolved to addresses, plus what the renderer needs besides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WirePolicy {
    /// Content hash of everything below: equal revisions render identical tables.
    pub revision: String,
    pub workload: String,
    pub mode: EnforcementMode,
    #[schema(value_type = Vec<String>)]
    pub addresses: Vec<IpAddr>,
    pub inbound: Vec<WireRule>,
    pub outbound: Vec<WireRule>,
    /// "tcp/22" style; always accepted inbound.
    pub failsafe_ports: Vec<String>,
    /// Always accepted outbound. Left out when empty, so revisions from before it
    /// existed stay the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failsafe_outbound: Vec<String>,
    pub log_group: u16,
    /// Quarantined: only the failsafe ports, whatever the rules say.
    #[serde(default)]
    pub quarantined: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireRule {
    pub tier: String,
    pub tier_index: usize,
    pub rule_id: String,
    pub action: WireAction,
    #[schema(value_type = Vec<String>)]
    pub local: Vec<IpAddr>,
    /// `None`: any address.
    #[schema(value_type = Option<Vec<String>>)]
    pub peers: Option<Vec<IpNet>>,
    pub services: Vec<WireService>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WireAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WireService {
    /// "tcp/8080", "udp/53", "tcp/1000-2000", "icmp"…
    pub port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: String, message: impl Into<String>) -> WireError {
    WireError::Invalid {
        field,
        message: message.into(),
    }
}

impl WireRule {
    fn from_rule(r: &HostRule) -> WireRule {
        WireRule {
            tier: r.tier.clone(),
            tier_index: r.tier_index,
            rule_id: r.rule_id.clone(),
            action: match r.action {
                Action::Allow => WireAction::Allow,
                Action::Deny => WireAction::Deny,
            },
            local: r.local.clone(),
            peers: match &r.peers {
                Peers::Any => None,
                Peers::Nets(n) => Some(n.clone()),
            },
            services: r
                .services
                .iter()
                .map(|(sp, process)| WireService {
                    port: sp.to_string(),
                    process: process.clone(),
                })
                .collect(),
        }
    }

    fn to_rule(&self, field: &str) -> Result<HostRule, WireError> {
        let services = self
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.port
                    .parse::<ServicePort>()
                    .map(|sp| (sp, s.process.clone()))
                    .map_err(|e| invalid(format!("{field}.services[{i}].port"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostRule {
            tier: self.tier.clone(),
            tier_index: self.tier_index,
            rule_id: self.rule_id.clone(),
            action: match self.action {
                WireAction::Allow => Action::Allow,
                WireAction::Deny => Action::Deny,
            },
            local: self.local.clone(),
            peers: match &self.peers {
                None => Peers::Any,
                Some(n) => Peers::Nets(n.clone()),
            },
            services,
        })
    }
}

impl WirePolicy {
    /// Builds the wire form and its revision (a hash of the content, so the agent
    /// re-renders only when something it enforces changed).
    pub fn new(
        hp: &HostPolicy,
        failsafe_ports: &[ServicePort],
        log_group: u16,
        quarantined: bool,
    ) -> WirePolicy {
        let mut p = WirePolicy {
            revision: String::new(),
            workload: hp.workload.clone(),
            mode: hp.mode,
            addresses: hp.addresses.clone(),
            inbound: hp.inbound.iter().map(WireRule::from_rule).collect(),
            outbound: hp.outbound.iter().map(WireRule::from_rule).collect(),
            failsafe_ports: failsafe_ports.iter().map(|p| p.to_string()).collect(),
            failsafe_outbound: Vec::new(),
            log_group,
            quarantined,
        };
        p.revision = p.content_hash();
        p
    }

    /// With these outbound failsafe ports (the revision follows).
    pub fn with_failsafe_outbound(mut self, ports: &[ServicePort]) -> WirePolicy {
        self.failsafe_outbound = ports.iter().map(|p| p.to_string()).collect();
        self.revision = self.content_hash();
        self
    }

    /// The outbound failsafe ports, checked.
    pub fn failsafe_outbound(&self) -> Result<Vec<ServicePort>, WireError> {
        self.failsafe_outbound
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse::<ServicePort>()
                    .map_err(|e| invalid(format!("failsafe_outbound[{i}]"), e.to_string()))
            })
            .collect()
    }

    /// FNV-1a over the canonical JSON of everything but the revision: stable across
    /// processes and versions of Rust, which `DefaultHasher` does not promise.
    pub fn content_hash(&self) -> String {
        let mut copy = self.clone();
        copy.revision.clear();
        let json = serde_json::to_vec(&copy).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// Checks and converts to the renderer's input. Quarantine drops every rule, so
    /// only the failsafe ports and the control plane stay open; connections already
    /// established are cut.
    pub fn to_host_policy(&self) -> Result<(HostPolicy, Vec<ServicePort>), WireError> {
        if self.content_hash() != self.revision {
            return Err(invalid(
                "revision".into(),
                "does not match the content (corrupted or tampered policy)",
            ));
        }
        bulkhead_model::validate_name(&self.workload).map_err(|e| invalid("workload".into(), e))?;
        let rules = |rules: &[WireRule], side: &str| -> Result<Vec<HostRule>, WireError> {
            if self.quarantined {
                return Ok(Vec::new());
            }
            rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    bulkhead_model::validate_name(&r.rule_id)
                        .map_err(|e| invalid(format!("{side}[{i}].rule_id"), e))?;
                    r.to_rule(&format!("{side}[{i}]"))
                })
                .collect()
        };
        let failsafe = self
            .failsafe_ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse::<ServicePort>()
                    .map_err(|e| invalid(format!("failsafe_ports[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mode = if self.quarantined {
            EnforcementMode::Enforced
        } else {
            self.mode
        };
        Ok((
            HostPolicy {
                workload: self.workload.clone(),
                mode,
                addresses: self.addresses.clone(),
                inbound: rules(&self.inbound, "inbound")?,
                outbound: rules(&self.outbound, "outbound")?,
                quarantined: self.quarantined,
            },
            failsafe,
        ))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The owned table differed from what the agent applied; it was restored.
    Tamper { at_ms: i64, difference: String },
    /// A policy the agent could not apply; the previous table stays.
    PolicyRejected {
        at_ms: i64,
        revision: String,
        error: String,
    },
    /// Packets the table logged (would-be-blocked in monitor, blocked in enforced).
    Logged { packets: Vec<LoggedPacket> },
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentEvents {
    pub events: Vec<AgentEvent>,
}

/// Flows in a numbered batch of a stream. The server stores each batch of a stream once:
/// a batch whose number is at or below the highest it stored for that stream is a
/// repeat, answered as acknowledged and not stored again. So the sender delivers a
/// stream's batches one at a time in increasing order (gaps are allowed: batches the
/// agent dropped from a full spool), and never numbers two batches alike.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowBatch {
    /// The batch's number in its stream, from 1 (at most 2^63 - 1).
    pub batch: u64,
    /// The stream: 1 to 64 characters of `[0-9A-Za-z_-]`, chosen by the agent (a random
    /// 128-bit id, in hex, made with its spool). The server remembers the highest batch
    /// of each stream of each agent in the flow store, in the same transaction as the
    /// flows (SQLite), for eight days after the stream's last batch. Absent (agents
    /// before the spool): one stream per agent whose highest batch is kept beside the
    /// agent in the control store, written after the flows, so a server crash between
    /// the two can store a re-sent batch twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    pub flows: Vec<HostFlow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowBatchAck {
    /// The highest batch of the stream stored so far: at least the one sent, which is
    /// stored (now or before) and may be removed from the sender's spool.
    pub acked: u64,
    /// The batch had been stored before (a repeat) and was not stored again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_policy() -> HostPolicy {
        HostPolicy {
            workload: "db-1".into(),
            mode: EnforcementMode::Monitor,
            addresses: vec!["10.0.0.3".parse().unwrap()],
            inbound: vec![HostRule {
                tier: "application".into(),
                tier_index: 1,
                rule_id: "app-to-db".into(),
                action: Action::Allow,
                local: vec!["10.0.0.3".parse().unwrap()],
                peers: Peers::Nets(vec!["10.0.0.2/32".parse().unwrap()]),
                services: vec![("tcp/5432".parse().unwrap(), None)],
            }],
            outbound: vec![],
            quarantined: false,
        }
    }

    #[test]
    fn wire_policy_round_trips() {
        let hp = host_policy();
        let w = WirePolicy::new(&hp, &[ServicePort::tcp(22)], 100, false);
        let json = serde_json::to_string(&w).unwrap();
        let back: WirePolicy = serde_json::from_str(&json).unwrap();
        let (hp2, failsafe) = back.to_host_policy().unwrap();
        assert_eq!(hp2, hp);
        assert_eq!(failsafe, vec![ServicePort::tcp(22)]);
    }

    #[test]
    fn a_changed_policy_gets_a_new_revision_and_a_forged_one_is_refused() {
        let hp = host_policy();
        let a = WirePolicy::new(&hp, &[ServicePort::tcp(22)], 100, false);
        let mut hp_b = hp.clone();
        hp_b.mode = EnforcementMode::Enforced;
        let b = WirePolicy::new(&hp_b, &[ServicePort::tcp(22)], 100, false);
        assert_ne!(a.revision, b.revision);
        let mut forged = a.clone();
        forged.inbound[0].peers = None;
        assert!(forged.to_host_policy().is_err());
    }

    #[test]
    fn bad_ports_are_named() {
        let hp = host_policy();
        let mut w = WirePolicy::new(&hp, &[], 100, false);
        w.inbound[0].services[0].port = "tcp/99999".into();
        w.revision = w.content_hash();
        let e = w.to_host_policy().unwrap_err().to_string();
        assert!(e.starts_with("inbound[0].services[0].port"), "{e}");
    }

    #[test]
    fn quarantine_keeps_only_failsafe() {
        let hp = host_policy();
        let w = WirePolicy::new(&hp, &[ServicePort::tcp(22)], 100, true);
        let (q, failsafe) = w.to_host_policy().unwrap();
        assert!(q.inbound.is_empty() && q.outbound.is_empty());
        assert!(
            q.quarantined,
            "the renderer must know, to cut established connections"
        );
        assert_eq!(q.mode, EnforcementMode::Enforced);
        assert_eq!(failsafe.len(), 1);
    }
}
