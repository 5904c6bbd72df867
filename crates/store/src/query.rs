use std::net::IpAddr;

use bulkhead_model::{Bucket, FlowSummary, Labels, VerdictKind};

/// Which summaries [`crate::FlowStore::query`] returns. Filters left `None` match
/// everything; filters that are set must all match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowQuery {
    pub bucket: Bucket,
    /// Bucket starts in `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Either side's workload has this name.
    pub workload: Option<String>,
    /// Either side carries all of these labels (and maybe more).
    pub labels: Option<Labels>,
    /// The consumer carries all of these labels.
    pub src_labels: Option<Labels>,
    /// The provider carries all of these labels.
    pub dst_labels: Option<Labels>,
    /// Either side has this address.
    pub address: Option<IpAddr>,
    pub proto: Option<u8>,
    /// The provider port.
    pub port: Option<u16>,
    /// The verdict against the provisioned policy; summaries without one never match.
    pub verdict: Option<VerdictKind>,
    /// Newest bucket first (the rest of the order unchanged), so that a page that
    /// cannot hold the whole window holds its newest part.
    pub newest_first: bool,
    pub limit: usize,
    pub offset: usize,
}

impl FlowQuery {
    /// What [`FlowQuery::new`] limits a page to, so that an unfiltered query over a busy
    /// estate does not load millions of rows by accident.
    pub const DEFAULT_LIMIT: usize = 1_000;

    /// Everything of `bucket` width starting in `[from_ms, to_ms)`, first page.
    pub fn new(bucket: Bucket, from_ms: i64, to_ms: i64) -> Self {
        Self {
            bucket,
            from_ms,
            to_ms,
            workload: None,
            labels: None,
            src_labels: None,
            dst_labels: None,
            address: None,
            proto: None,
            port: None,
            verdict: None,
            newest_first: false,
            limit: Self::DEFAULT_LIMIT,
            offset: 0,
        }
    }

    /// The meaning of the filters, written plainly (ignores `limit` and `offset`). Backends
    /// must agree with it; the tests hold them to it.
    pub fn matches(&self, s: &FlowSummary) -> bool {
        let k = &s.key;
        k.bucket == self.bucket
            && k.bucket_start_ms >= self.from_ms
            && k.bucket_start_ms < self.to_ms
            && self.workload.as_ref().is_none_or(|w| {
                s.src_workload.as_ref() == Some(w) || s.dst_workload.as_ref() == Some(w)
            })
            && self
                .labels
                .as_ref()
                .is_none_or(|l| s.src_labels.includes(l) || s.dst_labels.includes(l))
            && self
                .src_labels
                .as_ref()
                .is_none_or(|l| s.src_labels.includes(l))
            && self
                .dst_labels
                .as_ref()
                .is_none_or(|l| s.dst_labels.includes(l))
            && self.address.is_none_or(|a| k.src == a || k.dst == a)
            && self.proto.is_none_or(|p| k.proto == p)
            && self.port.is_none_or(|p| k.port == p)
            && self
                .verdict
                .is_none_or(|v| s.provisioned.as_ref().is_some_and(|p| p.verdict == v))
    }
}
