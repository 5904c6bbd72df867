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
    if q.newest_first {
        // Stable: within a bucket start the key order stays.
        out.sort_by_key(|s| std::cmp::Reverse(s.key.bucket_start_ms));
    }
    out.into_iter().skip(q.offset).take(q.limit).collect()
}

/// A small estate where each summary is tagged by its `packets` so that tests can
/// name what a filter should return.
pub fn estate() -> Vec<FlowSummary> {
    let mut v = Vec::new();
    let web = labels("app=shop,env=prod,role=web");
    let db = labels("app=shop,env=prod,role=db");
    let dev_db = labels("app=shop,env=dev,role=db");

    let mut s = summary(0, "10.0.0.1", "10.0.0.2", 6, 5432);
    s.packets = 1;
    s.src_workload = Some("web-1".into());
    s.dst_workload = Some("db-1".into());
    s.src_labels = web.clone();
    s.dst_labels = db.clone();
    s.provisioned = verdict(VerdictKind::Allowed, &["web-db"]);
    v.push(s);

    let mut s = summary(0, "10.0.0.3", "10.0.0.1", 6, 443);
    s.packets = 2;
    s.dst_workload = Some("web-1".into());
    s.dst_labels = web.clone();
    s.provisioned = verdict(VerdictKind::PotentiallyBlocked, &[]);
    v.push(s);

    let mut s = summary(1, "10.0.0.2", "10.9.9.9", 17, 53);
    s.packets = 3;
    s.src_workload = Some("db-1".into());
    s.src_labels = db.clone();
    s.provisioned = verdict(VerdictKind::Blocked, &["no-dns"]);
    s.draft = verdict(VerdictKind::Allowed, &["dns"]);
    v.push(s);

    let mut s = summary(2, "2001:db8::5", "10.0.0.4", 6, 5432);
    s.packets = 4;
    s.dst_workload = Some("db-dev".into());
    s.dst_labels = dev_db;
    s.draft = verdict(VerdictKind::Blocked, &[]);
    v.push(s);

    let mut s = summary(3, "10.0.0.1", "2001:db8::5", 6, 22);
    s.packets = 5;
    s.key.process = Some("sshd".into());
    s.src_workload = Some("web-1".into());
    s.src_labels = web;
    s.provisioned = verdict(VerdictKind::Allowed, &["ssh"]);
    v.push(s);

    let mut s = summary(60, "10.0.0.1", "10.0.0.2", 6, 5432);
    s.packets = 6;
    s.key.bucket = Bucket::Hour;
    s.key.bucket_start_ms = T0;
    v.push(s);
    v
}

/// What a correct store's `groups` holds: the model's summaries of the window folded by
/// `FlowGroup`, in a canonical order (the store's order among equal last-seen times is
/// free, so tests compare after sorting).
pub fn expected_groups(
    model: &[FlowSummary],
    bucket: Bucket,
    from_ms: i64,
    to_ms: i64,
) -> Vec<bulkhead_store::FlowGroup> {
    let mut groups: Vec<bulkhead_store::FlowGroup> = Vec::new();
    for s in model {
        if s.key.bucket != bucket
            || s.key.bucket_start_ms < from_ms
            || s.key.bucket_start_ms >= to_ms
        {
            continue;
        }
        let one = group_of(s);
        match groups.iter_mut().find(|g| same_group(g, &one)) {
            Some(g) => fold(g, s),
            None => groups.push(one),
        }
    }
    canonical(groups)
}

pub fn canonical(mut groups: Vec<bulkhead_store::FlowGroup>) -> Vec<bulkhead_store::FlowGroup> {
    groups.sort_by_key(|g| format!("{g:?}"));
    groups
}

/// The group `s` falls in, holding only `s`: the reference the backends agree with.
fn group_of(s: &FlowSummary) -> bulkhead_store::FlowGroup {
    bulkhead_store::FlowGroup {
        src: s.src_workload.is_none().then_some(s.key.src),
        dst: s.dst_workload.is_none().then_some(s.key.dst),
        src_workload: s.src_workload.clone(),
        dst_workload: s.dst_workload.clone(),
        src_labels: s.src_labels.clone(),
        dst_labels: s.dst_labels.clone(),
        proto: s.key.proto,
        port: s.key.port,
        provisioned: s.provisioned.as_ref().map(|v| v.verdict),
        draft: s.draft.as_ref().map(|v| v.verdict),
        packets: s.packets,
        bytes: s.bytes,
        connections: s.connections,
        summaries: 1,
        first_seen_ms: s.first_seen_ms,
        last_seen_ms: s.last_seen_ms,
    }
}

/// Whether two groups have the same ends, service and verdicts.
fn same_group(a: &bulkhead_store::FlowGroup, b: &bulkhead_store::FlowGroup) -> bool {
    (
        &a.src,
        &a.dst,
        &a.src_workload,
        &a.dst_workload,
        &a.src_labels,
        &a.dst_labels,
        a.proto,
        a.port,
        a.provisioned,
        a.draft,
    ) == (
        &b.src,
        &b.dst,
        &b.src_workload,
        &b.dst_workload,
        &b.src_labels,
        &b.dst_labels,
        b.proto,
        b.port,
        b.provisioned,
        b.draft,
    )
}

/// Folds `s` (of this group) into `g`; counters saturate.
fn fold(g: &mut bulkhead_store::FlowGroup, s: &FlowSummary) {
    g.packets = g.packets.saturating_add(s.packets);
    g.bytes = g.bytes.saturating_add(s.bytes);
    g.connections = g.connections.saturating_add(s.connections);
    g.summaries += 1;
    g.first_seen_ms = g.first_seen_ms.min(s.first_seen_ms);
    g.last_seen_ms = g.last_seen_ms.max(s.last_seen_ms);
}

/// What a correct store's `conversations` holds: the model's summaries of the window
/// (distinct keys) folded by conversation, process and enrichment, in a canonical order.
pub fn expected_conversations(
    model: &[FlowSummary],
    bucket: Bucket,
    from_ms: i64,
    to_ms: i64,
) -> Vec<bulkhead_store::Conversation> {
    let mut out: Vec<bulkhead_store::Conversation> = Vec::new();
    for s in model {
        if s.key.bucket != bucket
            || s.key.bucket_start_ms < from_ms
            || s.key.bucket_start_ms >= to_ms
        {
            continue;
        }
        let k = &s.key;
        let same = |c: &bulkhead_store::Conversation| {
            (c.src, c.dst, c.proto, c.port, &c.process)
                == (k.src, k.dst, k.proto, k.port, &k.process)
                && (
                    &c.src_workload,
                    &c.dst_workload,
                    &c.src_labels,
                    &c.dst_labels,
                ) == (
                    &s.src_workload,
                    &s.dst_workload,
                    &s.src_labels,
                    &s.dst_labels,
                )
        };
        match out.iter_mut().find(|c| same(c)) {
            Some(c) => {
                c.packets = c.packets.saturating_add(s.packets);
                c.bytes = c.bytes.saturating_add(s.bytes);
                c.connections = c.connections.saturating_add(s.connections);
                c.observations = c.observations.saturating_add(s.connections.max(1));
                c.summaries += 1;
                c.first_seen_ms = c.first_seen_ms.min(s.first_seen_ms);
                c.last_seen_ms = c.last_seen_ms.max(s.last_seen_ms);
            }
            None => out.push(bulkhead_store::Conversation {
                src: k.src,
                dst: k.dst,
                proto: k.proto,
                port: k.port,
                process: k.process.clone(),
                src_workload: s.src_workload.clone(),
                dst_workload: s.dst_workload.clone(),
                src_labels: s.src_labels.clone(),
                dst_labels: s.dst_labels.clone(),
                packets: s.packets,
                bytes: s.bytes,
                connections: s.connections,
                observations: s.connections.max(1),
                summaries: 1,
                first_seen_ms: s.first_seen_ms,
                last_seen_ms: s.last_seen_ms,
            }),
        }
    }
    canonical_conversations(out)
}

pub fn canonical_conversations(
    mut items: Vec<bulkhead_store::Conversation>,
) -> Vec<bulkhead_store::Conversation> {
    items.sort_by_key(|c| format!("{c:?}"));
    items
}
