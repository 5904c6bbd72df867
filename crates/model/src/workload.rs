use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::Labels;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    Vm,
    Host,
    Container,
    Device,
    External,
}

impl std::str::FromStr for WorkloadKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "vm" => Self::Vm,
            "host" => Self::Host,
            "container" => Self::Container,
            "device" => Self::Device,
            "external" => Self::External,
            _ => {
                return Err(format!(
                    "unknown workload kind {s:?} (expected vm, host, container, device or external)"
                ));
            }
        })
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Vm => "vm",
            Self::Host => "host",
            Self::Container => "container",
            Self::Device => "device",
            Self::External => "external",
        })
    }
}

/// What the agent programs on a managed workload.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementMode {
    /// Nothing programmed.
    #[default]
    Idle,
    /// Default PASS; flows no rule allows are reported.
    Monitor,
    /// Default DROP; flows no rule allows are dropped and reported.
    Enforced,
}

impl std::str::FromStr for EnforcementMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "idle" => Self::Idle,
            "monitor" => Self::Monitor,
            "enforced" => Self::Enforced,
            _ => {
                return Err(format!(
                    "unknown enforcement mode {s:?} (expected idle, monitor or enforced)"
                ));
            }
        })
    }
}

impl fmt::Display for EnforcementMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Idle => "idle",
            Self::Monitor => "monitor",
            Self::Enforced => "enforced",
        })
    }
}

/// Anything with addresses that policy talks about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Workload {
    pub name: String,
    pub kind: WorkloadKind,
    /// Runs the agent and so can enforce; unmanaged workloads are referenced by address only.
    pub managed: bool,
    #[schema(value_type = Vec<String>)]
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub labels: Labels,
    pub mode: EnforcementMode,
    pub owner: Option<String>,
    /// Free-form attributes (cloud tags, CMDB fields) that label rules can read.
    pub attributes: BTreeMap<String, String>,
}

/// The workload attribute that marks quarantine; its value is the reason.
pub const QUARANTINE_ATTRIBUTE: &str = "bulkhead.quarantine";

impl Workload {
    /// Quarantine asked for: only a managed workload's agent can isolate it.
    pub fn quarantined(&self) -> bool {
        self.managed && self.attributes.contains_key(QUARANTINE_ATTRIBUTE)
    }

    /// Whether this workload drops what policy denies. Unmanaged workloads never do:
    /// nothing of ours runs on them.
    pub fn enforces(&self) -> bool {
        self.managed && self.mode == EnforcementMode::Enforced
    }
}
