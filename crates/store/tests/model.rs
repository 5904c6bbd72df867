//! Random upserts and queries against a model built with `FlowSummary::merge` and
//! filtered with `FlowQuery::matches`.
mod common;

use std::collections::HashMap;

use bulkhead_store::{
    Bucket, ClickHouseFlowStore, ClickHouseOptions, FlowQuery, FlowStore, FlowSummary, Labels,
    SqliteFlowStore, SummaryKey, VerdictKind,
};
use common::*;
use proptest::prelude::*;

const ADDRS: &[&str] = &["10.0.0.1", "10.0.0.2", "10.0.1.1", "2001:db8::1", "::1"];
const NAMES: &[&str] = &["web-1", "db-1", "sshd", "agent a"];
const LABELS: &[&str] = &[
    "",
    "app=a",
    "app=a,env=prod",
    "app=b,env=prod,role=db",
    "env=dev",
];

fn label_set() -> impl Strategy<Value = Labels> {
    prop::sample::select(LABELS).prop_map(labels)
}

fn name() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(NAMES).prop_map(str::to_string))
}

fn verdict_kind() -> impl Strategy<Value = VerdictKind> {
    prop::sample::select(vec![
        VerdictKind::Allowed,
        VerdictKind::PotentiallyBlocked,
        VerdictKind::Blocked,
    ])
}

fn summary_verdict() -> impl Strategy<Value = Option<bulkhead_store::SummaryVerdict>> {
    prop::option::of(
        (
            verdict_kind(),
            prop::collection::vec(prop::sample::select(vec!["r1", "r2", "t/r3"]), 0..3),
        )
            .prop_map(|(verdict, rules)| bulkhead_store::SummaryVerdict {
                verdict,
                rules: rules.into_iter().map(str::to_string).collect(),
            }),
    )
}

fn key() -> impl Strategy<Value = SummaryKey> {
    (
        prop::bool::ANY,
        0i64..4,
        prop::sample::select(ADDRS),
        prop::sample::select(ADDRS),
        prop::sample::select(vec![6u8, 17]),
        prop::sample::select(vec![22u16, 443, 5432]),
        name(),
    )
        .prop_map(|(hour, n, src, dst, proto, port, process)| {
            let bucket = if hour { Bucket::Hour } else { Bucket::Minute };
            SummaryKey {
                bucket,
                bucket_start_ms: T0 + n * bucket.millis(),
                src: ip(src),
                dst: ip(dst),
                proto,
                port,
                process,
            }
        })
}

fn flow_summary() -> impl Strategy<Value = FlowSummary> {
    (
        key(),
        (0u64..1 << 40, 0u64..1 << 50, 0u64..1 << 20),
        (0i64..60_000, 0i64..60_000),
        (name(), name(), name()),
        (label_set(), label_set()),
        (summary_verdict(), summary_verdict()),
    )
        .prop_map(
            |(key, (packets, bytes, connections), (a, b), (reporter, sw, dw), (sl, dl), (p, d))| {
                let start = key.bucket_start_ms;
                FlowSummary {
                    key,
                    packets,
                    bytes,
                    connections,
                    first_seen_ms: start + a.min(b),
                    last_seen_ms: start + a.max(b),
                    reporter,
                    src_workload: sw,
                    dst_workload: dw,
                    src_labels: sl,
                    dst_labels: dl,
                    provisioned: p,
                    draft: d,
                }
            },
        )
}

fn flow_query() -> impl Strategy<Value = FlowQuery> {
    (
        (prop::bool::ANY, -1i64..5, 0i64..6),
        (
            name(),
            prop::option::of(label_set()),
            prop::option::of(label_set()),
        ),
        (
            prop::option::of(label_set()),
            prop::option::of(prop::sample::select(ADDRS).prop_map(ip)),
        ),
        (
            prop::option::of(prop::sample::select(vec![6u8, 17, 1])),
            prop::option::of(prop::sample::select(vec![22u16, 443, 80])),
            prop::option::of(verdict_kind()),
        ),
        (0usize..40, 0usize..10, prop::bool::ANY),
    )
        .prop_map(
            |(
                (hour, from, len),
                (workload, labels, src_labels),
                (dst_labels, address),
                (proto, port, verdict),
                (limit, offset, newest_first),
            )| {
                let bucket = if hour { Bucket::Hour } else { Bucket::Minute };
                let from_ms = T0 + from * bucket.millis();
                FlowQuery {
                    bucket,
                    from_ms,
                    to_ms: from_ms + len * bucket.millis(),
                    workload,
                    labels,
                    src_labels,
                    dst_labels,
                    address,
                    proto,
                    port,
                    verdict,
                    newest_first,
                    limit,
                    offset,
                }
            },
        )
}

/// Writes `batches`, then holds every query's answer to the merge model's.
fn agrees_with_merge_model(
    store: &mut dyn FlowStore,
    batches: &[Vec<FlowSummary>],
    queries: &[FlowQuery],
) -> Result<(), TestCaseError> {
    let mut model: HashMap<SummaryKey, FlowSummary> = HashMap::new();
    for batch in batches {
        store.upsert(batch).unwrap();
        for s in batch {
            model
                .entry(s.key.clone())
                .and_modify(|m| m.merge(s))
                .or_insert_with(|| s.clone());
        }
    }
    let model: Vec<FlowSummary> = model.into_values().collect();
    for bucket in [Bucket::Minute, Bucket::Hour] {
        let mut all = all_minutes();
        all.bucket = bucket;
        prop_assert_eq!(store.query(&all).unwrap(), expected(&model, &all));
    }
    for q in queries {
        prop_assert_eq!(store.query(q).unwrap(), expected(&model, q), "{:?}", q);
    }
    for bucket in [Bucket::Minute, Bucket::Hour] {
        let q = bulkhead_store::GroupQuery {
            bucket,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            limit: usize::MAX,
        };
        let page = store.groups(&q).unwrap();
        prop_assert!(!page.more);
        prop_assert_eq!(
            canonical(page.items),
            expected_groups(&model, bucket, i64::MIN, i64::MAX)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn sqlite_agrees_with_merge_model(
        batches in prop::collection::vec(prop::collection::vec(flow_summary(), 0..30), 1..4),
        queries in prop::collection::vec(flow_query(), 1..8),
    ) {
        let mut store = SqliteFlowStore::in_memory().unwrap();
        agrees_with_merge_model(&mut store, &batches, &queries)?;
    }
}

proptest! {
    // Fewer: each case is a new database on the server.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn clickhouse_agrees_with_merge_model(
        batches in prop::collection::vec(prop::collection::vec(flow_summary(), 0..30), 1..4),
        queries in prop::collection::vec(flow_query(), 1..8),
    ) {
        let url = bulkhead_testkit::clickhouse::clickhouse().fresh_url();
        let mut store = ClickHouseFlowStore::connect_with(
            &url,
            ClickHouseOptions { hour_rollup: false },
        )
        .unwrap();
        agrees_with_merge_model(&mut store, &batches, &queries)?;
    }
}
