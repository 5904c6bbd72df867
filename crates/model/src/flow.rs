use std::net::IpAddr;

use crate::{Labels, VerdictKind};

/// The width of a summary's time bucket.
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
pub enum Bucket {
    Minute,
    Hour,
}

impl Bucket {
    pub fn millis(self) -> i64 {
        match self {
            Bucket::Minute => 60_000,
            Bucket::Hour => 3_600_000,
        }
    }

    /// The start of the bucket containing `t_ms`.
    pub fn start_of(self, t_ms: i64) -> i64 {
        t_ms - t_ms.rem_euclid(self.millis())
    }
}

/// A verdict as stored with a summary: what it was and which rules decided
/// (empty when the default decided).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct SummaryVerdict {
    pub verdict: VerdictKind,
    pub rules: Vec<String>,
}

/// What identifies a summary: one consumer → provider conversation on one provider
/// port in one time bucket.
#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct SummaryKey {
    pub bucket: Bucket,
    /// Unix milliseconds, aligned to the bucket.
    pub bucket_start_ms: i64,
    /// The consumer (the side that opened the connection).
    #[schema(value_type = String)]
    pub src: IpAddr,
    /// The provider (the side that listens).
    #[schema(value_type = String)]
    pub dst: IpAddr,
    pub proto: u8,
    /// The provider's port (ICMP: the message type).
    pub port: u16,
    /// The provider's process, when the source of the flow knows it.
    pub process: Option<String>,
}

/// Aggregated traffic for one [`SummaryKey`], enriched with inventory and verdicts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FlowSummary {
    #[serde(flatten)]
    pub key: SummaryKey,
    pub packets: u64,
    pub bytes: u64,
    /// Flow records (or connections, from agents) folded into this summary.
    pub connections: u64,
    /// Unix milliseconds.
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The exporter or agent that reported it (the first one seen).
    pub reporter: Option<String>,
    pub src_workload: Option<String>,
    pub dst_workload: Option<String>,
    pub src_labels: Labels,
    pub dst_labels: Labels,
    /// Against the provisioned policy version, when there is one.
    pub provisioned: Option<SummaryVerdict>,
    /// Against the current draft, when there is one.
    pub draft: Option<SummaryVerdict>,
}

impl FlowSummary {
    /// Folds another summary of the same key into this one. Counters add up; the time
    /// span widens; enrichment and verdicts take the newer value (they were computed
    /// against a newer inventory or policy).
    pub fn merge(&mut self, other: &FlowSummary) {
        debug_assert_eq!(self.key, other.key);
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.connections = self.connections.saturating_add(other.connections);
        self.first_seen_ms = self.first_seen_ms.min(other.first_seen_ms);
        self.last_seen_ms = self.last_seen_ms.max(other.last_seen_ms);
        if self.reporter.is_none() {
            self.reporter.clone_from(&other.reporter);
        }
        self.src_workload.clone_from(&other.src_workload);
        self.dst_workload.clone_from(&other.dst_workload);
        self.src_labels.clone_from(&other.src_labels);
        self.dst_labels.clone_from(&other.dst_labels);
        self.provisioned.clone_from(&other.provisioned);
        self.draft.clone_from(&other.draft);
    }
}
