//! The vocabulary every other Bulkhead crate speaks.
//!
//! Plain immutable data with validating constructors: once a value of these types
//! exists it is well-formed, so the policy engine never re-checks it. No IO here.

mod flow;
mod inventory;
mod labels;
mod service;
mod verdict;
mod workload;

pub use flow::{Bucket, FlowSummary, SummaryKey, SummaryVerdict};
pub use inventory::{Inventory, InventoryError};
pub use labels::{Label, LabelError, Labels, validate_key, validate_value};
pub use service::{
    PortRange, ProtoMatch, ServiceError, ServicePort, protocol_name, protocol_number,
};
pub use verdict::{
    Action, AtHosts, Connection, DecidedBy, Decision, End, Exemption, HostEnd, Quarantine, Verdict,
    VerdictKind,
};
pub use workload::{EnforcementMode, QUARANTINE_ATTRIBUTE, Workload, WorkloadKind};

/// Checks an object name (workload, group, list, service, tier, ruleset, rule id).
///
/// Names end up in CLI output, nftables comments and URLs, so they are kept to a
/// conservative alphabet instead of being escaped everywhere.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 128 {
        return Err("must be at most 128 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "character {c:?} is not allowed (use letters, digits, '-', '_' and '.')"
        ));
    }
    Ok(())
}
