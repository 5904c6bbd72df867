//! Bulkhead's policy engine: policy-as-code in, verdicts out. Pure: no IO, no clock.
//!
//! - [`Policy::from_sources`] parses and checks YAML documents (file:line:column errors).
//! - [`format::format_file`] rewrites a file canonically.
//! - [`CompiledPolicy::compile`] turns inventory + policy into identity classes and
//!   per-destination lookup tables; [`CompiledPolicy::evaluate`] is the fast path.
//! - [`oracle::evaluate`] is the slow, obviously-correct reference the fast path is
//!   tested against; [`explain::explain`] builds on it to say why.

mod compile;
pub mod context;
mod document;
mod error;
pub mod explain;
pub mod format;
pub mod host;
pub mod oracle;
mod policy;
pub mod scope;

pub use compile::{CompiledPolicy, ConnKey, Outcome, QUARANTINE};
pub use context::HostContext;
pub use document::{
    FORMAT_VERSION, IpList, LabelGroup, Object, Rule, Ruleset, Selector, Service, ServiceRef, Tier,
    parse_file,
};
pub use error::{Origin, PolicyError, PolicyErrors};
pub use policy::Policy;

/// Reads YAML (or JSON) into a JSON value, for APIs that show policy objects as JSON.
pub fn yaml_to_json(text: &str) -> Result<serde_json::Value, String> {
    serde_saphyr::from_str(text).map_err(|e| e.without_snippet().to_string())
}
