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

/// Which rules decided, or the default deny.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The rule ids of the deciding action in the deciding tier, sorted.
    Rules {
        tier: String,
        rule_ids: Vec<String>,
    },
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
pub struct Verdict {
    pub verdict: VerdictKind,
    pub decision: Decision,
    pub decided_by: DecidedBy,
}
