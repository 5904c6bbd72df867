use std::sync::Arc;

use bulkhead_model::{FlowSummary, Inventory, SummaryKey, SummaryVerdict};
use bulkhead_policy::{CompiledPolicy, ConnKey};

use crate::direction::ListeningPorts;

/// What enrichment knows: the inventory, the compiled provisioned policy and draft, and
/// the listening ports agents reported. Immutable; the server swaps in a new one when
/// any of them changes.
#[derive(Debug, Default)]
pub struct Enricher {
    pub inventory: Arc<Inventory>,
    pub provisioned: Option<Arc<CompiledPolicy>>,
    pub draft: Option<Arc<CompiledPolicy>>,
    pub listening: ListeningPorts,
    /// What the hosts' tables add that the verdicts above took into account (the
    /// server's failsafe ports, control plane and applied quarantines), for the
    /// explanations that must agree with them.
    pub hosts: bulkhead_policy::HostContext,
}

fn verdict_of(policy: &CompiledPolicy, key: &SummaryKey) -> SummaryVerdict {
    let o = policy.evaluate(
        &ConnKey {
            src: key.src,
            dst: key.dst,
            proto: key.proto,
            port: key.port,
        },
        key.process.as_deref(),
    );
    SummaryVerdict {
        verdict: o.verdict,
        rules: policy
            .deciding_rules(&o)
            .into_iter()
            .map(str::to_string)
            .collect(),
    }
}

impl Enricher {
    pub fn new(inventory: Arc<Inventory>) -> Self {
        Self {
            inventory,
            ..Self::default()
        }
    }

    /// A summary for `key` with enrichment and verdicts filled in and zero counters.
    pub fn summary(&self, key: SummaryKey, reporter: Option<String>) -> FlowSummary {
        let src = self.inventory.by_address(key.src);
        let dst = self.inventory.by_address(key.dst);
        let labels =
            |w: Option<&bulkhead_model::Workload>| w.map(|w| w.labels.clone()).unwrap_or_default();
        FlowSummary {
            provisioned: self.provisioned.as_deref().map(|p| verdict_of(p, &key)),
            draft: self.draft.as_deref().map(|p| verdict_of(p, &key)),
            src_workload: src.map(|w| w.name.clone()),
            dst_workload: dst.map(|w| w.name.clone()),
            src_labels: labels(src),
            dst_labels: labels(dst),
            key,
            packets: 0,
            bytes: 0,
            connections: 0,
            first_seen_ms: i64::MAX,
            last_seen_ms: i64::MIN,
            reporter,
        }
    }
}
