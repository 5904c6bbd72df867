use std::fmt;
use std::net::IpAddr;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// One connection attempt as policy sees it: the consumer opens it to the provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
pub struct Connection {
    #[schema(value_type = String)]
    pub src: IpAddr,
    #[schema(value_type = String)]
    pub dst: IpAddr,
    pub proto: u8,
    /// Destination port for TCP/UDP/SCTP, message type for ICMP, ignored otherwise.
    pub port: u16,
    /// The provider's process, when the source of the flow knows it.
    pub process: Option<String>,
}

/// What policy says of a connection, the same at both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

/// What happens to the connection once enforcement modes are taken into account.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Allowed,
    PotentiallyBlocked,
    Blocked,
}

impl fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerdictKind::Allowed => "allowed",
            VerdictKind::PotentiallyBlocked => "potentially_blocked",
            VerdictKind::Blocked => "blocked",
        })
    }
}

impl std::str::FromStr for VerdictKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allowed" => Ok(VerdictKind::Allowed),
            "potentially_blocked" => Ok(VerdictKind::PotentiallyBlocked),
            "blocked" => Ok(VerdictKind::Blocked),
            _ => Err(format!(
                "unknown verdict {s:?} (expected allowed, potentially_blocked or blocked)"
            )),
        }
    }
}

impl VerdictKind {
    /// DESIGN.md §2: allow is allowed everywhere; a denied connection is dropped only
    /// where a managed end enforces, and merely reported otherwise.
    pub fn from_decision(decision: Decision, src_enforces: bool, dst_enforces: bool) -> Self {
        match decision {
            Decision::Allow => VerdictKind::Allowed,
            Decision::Deny if src_enforces || dst_enforces => VerdictKind::Blocked,
            Decision::Deny => VerdictKind::PotentiallyBlocked,
        }
    }
}

/// Which rules decided, or the default deny, or a quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The rule ids of the deciding action in the deciding tier, sorted.
    Rules {
        tier: String,
        rule_ids: Vec<String>,
    },
    Default,
    /// An end is quarantined: whatever the rules say, its table drops the connection
    /// (once its agent has applied the quarantine, `applied`).
    Quarantine {
        workload: String,
        applied: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
pub struct Verdict {
    pub verdict: VerdictKind,
    pub decision: Decision,
    pub decided_by: DecidedBy,
    /// Set when a host's table passes the connection whatever the decision: it is
    /// then never blocked by that end (docs/policy.md, "What the hosts add").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exempt: Option<Exemption>,
}

/// Why an end's table lets a connection through whatever policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Exemption {
    /// Inbound to a failsafe port of a managed host (management access).
    Failsafe,
    /// Outbound from a managed host to the control plane (its agent's channel).
    ControlPlane,
    /// Outbound from a managed host to a port of the server's `--failsafe-out` list.
    FailsafeOutbound,
}

/// Where a workload's quarantine stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Quarantine {
    #[default]
    None,
    /// Asked for; its agent has not confirmed applying it (or there is none).
    Requested,
    /// Its agent reported the quarantined table in the kernel.
    Applied,
}

/// One end of a connection as its host's table treats it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostEnd {
    /// Managed and enforced: drops what policy denies.
    pub enforces: bool,
    pub quarantine: Quarantine,
    /// This end's table passes this connection whatever the decision, and why.
    pub exempt: Option<Exemption>,
}

/// The verdict once the hosts' tables are taken into account, and which end's
/// quarantine (if any) decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtHosts {
    pub verdict: VerdictKind,
    pub decision: Decision,
    pub quarantined: Option<End>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
}

impl HostEnd {
    /// Whether this end's table drops the connection, given what the rules decide (not
    /// the quarantine of the other end, which this table knows nothing of).
    pub fn drops(self, rules: Decision) -> bool {
        self.exempt.is_none()
            && (self.quarantine == Quarantine::Applied
                || (self.enforces && rules == Decision::Deny))
    }
}

impl AtHosts {
    /// docs/policy.md, "What the hosts add": each end's table drops the connection
    /// unless it is exempt there, when that end's quarantine is applied, or when it
    /// enforces and policy denies. Another end's quarantine changes nothing in this
    /// end's table. A quarantine that is not exempt decides (the destination's first);
    /// one still waiting for its agent leaves the connection potentially blocked.
    pub fn of(decision: Decision, src: HostEnd, dst: HostEnd) -> AtHosts {
        let blocks = |e: HostEnd| e.drops(decision);
        let isolating = |e: HostEnd| e.exempt.is_none() && e.quarantine != Quarantine::None;
        let quarantined = if isolating(dst) {
            Some(End::Dst)
        } else if isolating(src) {
            Some(End::Src)
        } else {
            None
        };
        let decision = if quarantined.is_some() {
            Decision::Deny
        } else {
            decision
        };
        let verdict = if blocks(src) || blocks(dst) {
            VerdictKind::Blocked
        } else if decision == Decision::Deny {
            VerdictKind::PotentiallyBlocked
        } else {
            VerdictKind::Allowed
        };
        AtHosts {
            verdict,
            decision,
            quarantined,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNMANAGED: HostEnd = HostEnd {
        enforces: false,
        quarantine: Quarantine::None,
        exempt: None,
    };
    const MONITOR: HostEnd = UNMANAGED;
    const ENFORCED: HostEnd = HostEnd {
        enforces: true,
        ..UNMANAGED
    };

    fn q(end: HostEnd, quarantine: Quarantine) -> HostEnd {
        HostEnd { quarantine, ..end }
    }

    fn exempt(end: HostEnd) -> HostEnd {
        HostEnd {
            exempt: Some(Exemption::Failsafe),
            ..end
        }
    }

    #[test]
    fn without_hosts_it_is_the_policy_verdict() {
        for (d, s, t) in [
            (Decision::Allow, true, true),
            (Decision::Deny, false, false),
            (Decision::Deny, true, false),
            (Decision::Deny, false, true),
        ] {
            let end = |e| HostEnd {
                enforces: e,
                ..UNMANAGED
            };
            let at = AtHosts::of(d, end(s), end(t));
            assert_eq!(at.verdict, VerdictKind::from_decision(d, s, t));
            assert_eq!((at.decision, at.quarantined), (d, None));
        }
    }

    #[test]
    fn an_applied_quarantine_blocks_whatever_the_rules_and_mode() {
        let at = AtHosts::of(Decision::Allow, UNMANAGED, q(MONITOR, Quarantine::Applied));
        assert_eq!(
            (at.verdict, at.decision, at.quarantined),
            (VerdictKind::Blocked, Decision::Deny, Some(End::Dst))
        );
        let at = AtHosts::of(Decision::Allow, q(MONITOR, Quarantine::Applied), UNMANAGED);
        assert_eq!(
            (at.verdict, at.quarantined),
            (VerdictKind::Blocked, Some(End::Src))
        );
    }

    #[test]
    fn a_requested_quarantine_is_only_potentially_blocked() {
        let at = AtHosts::of(
            Decision::Allow,
            UNMANAGED,
            q(MONITOR, Quarantine::Requested),
        );
        assert_eq!(
            (at.verdict, at.decision, at.quarantined),
            (
                VerdictKind::PotentiallyBlocked,
                Decision::Deny,
                Some(End::Dst)
            )
        );
        // The other end's table knows nothing of it: an allowed connection from an
        // enforced client still leaves that client.
        let at = AtHosts::of(Decision::Allow, ENFORCED, q(MONITOR, Quarantine::Requested));
        assert_eq!(at.verdict, VerdictKind::PotentiallyBlocked);
    }

    #[test]
    fn exempt_ends_pass_what_they_would_drop() {
        // Failsafe port on an enforced destination: denied, and passes.
        let at = AtHosts::of(Decision::Deny, UNMANAGED, exempt(ENFORCED));
        assert_eq!(at.verdict, VerdictKind::PotentiallyBlocked);
        // Even quarantined: management access stays.
        let at = AtHosts::of(
            Decision::Deny,
            UNMANAGED,
            exempt(q(ENFORCED, Quarantine::Applied)),
        );
        assert_eq!(
            (at.verdict, at.quarantined),
            (VerdictKind::PotentiallyBlocked, None)
        );
        // The other end still drops what it enforces.
        let at = AtHosts::of(Decision::Deny, ENFORCED, exempt(ENFORCED));
        assert_eq!(at.verdict, VerdictKind::Blocked);
        // A quarantined agent still reaches its control plane.
        let at = AtHosts::of(
            Decision::Allow,
            exempt(q(ENFORCED, Quarantine::Applied)),
            UNMANAGED,
        );
        assert_eq!(at.verdict, VerdictKind::Allowed);
    }
}
