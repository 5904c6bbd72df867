//! Builders shared by the integration tests.
#![allow(dead_code)]

pub mod backends;
pub mod pg;

use std::net::IpAddr;

use bulkhead_store::{
    Bucket, FlowQuery, FlowSummary, Labels, SummaryKey, SummaryVerdict, VerdictKind,
};

pub const MINUTE: i64 = 60_000;
pub const HOUR: i64 = 3_600_000;
/// 2024-01-01T00:00:00Z, so that bucket starts look like real times.
pub const T0: i64 = 1_704_067_200_000;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn labels(s: &str) -> Labels {
    Labels::parse_list(s).unwrap()
}

/// A bare minute summary with distinct counters so that a merge shows.
pub fn summary(minute: i64, src: &str, dst: &str, proto: u8, port: u16) -> FlowSummary {
    let start = T0 + minute * MINUTE;
    FlowSummary {
        key: SummaryKey {
            bucket: Bucket::Minute,
            bucket_start_ms: start,
            src: ip(src),
            dst: ip(dst),
            proto,
            port,
            process: None,
        },
        packets: 10,
        bytes: 1_000,
        connections: 1,
        first_seen_ms: start + 5_000,
        last_seen_ms: start + 6_000,
        reporter: None,
        src_workload: None,
        dst_workload: None,
        src_labels: Labels::new(),
        dst_labels: Labels::new(),
        provisioned: None,
        draft: None,
    }
}

pub fn verdict(kind: VerdictKind, rules: &[&str]) -> Option<SummaryVerdict> {
    Some(SummaryVerdict {
        verdict: kind,
        rules: rules.iter().map(|r| r.to_string()).collect(),
    })
}

/// Everything in minute buckets, no page limit.
pub fn all_minutes() -> FlowQuery {
    let mut q = FlowQuery::new(Bucket::Minute, i64::MIN, i64::MAX);
    q.limit = usize::MAX;
    q
}

/// What a correct store returns: the model's summaries that match, in key order, paged.
pub fn expected(model: &[FlowSummary], q: &FlowQuery) -> Vec<FlowSummary> {
    let mut out: Vec<FlowSummary> = model.iter().filter(|s| q.matches(s)).cloned().collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.into_iter().skip(q.offset).take(q.limit).collect()
}
