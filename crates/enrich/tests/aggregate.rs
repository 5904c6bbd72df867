//! Aggregation on the example estate: directions fold together, enrichment and both
//! verdicts are attached, buckets close on time, and no packet or byte is lost.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use bulkhead_enrich::{Aggregator, Enricher, Observation, TimeBounds};
use bulkhead_model::{Bucket, Inventory, VerdictKind};
use bulkhead_policy::{CompiledPolicy, Policy};
use proptest::prelude::*;

fn estate() -> (Inventory, Policy) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/estate");
    let read = |p: &Path| (p.display().to_string(), std::fs::read_to_string(p).unwrap());
    let (rn, rt) = read(&root.join("label-rules.yaml"));
    let rules = bulkhead_inventory::parse_label_rules(&rn, &rt).unwrap();
    let inv = bulkhead_inventory::load(&[read(&root.join("inventory.csv"))], Some(&rules)).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(root.join("policy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let sources: Vec<_> = files.iter().map(|p| read(p)).collect();
    (inv, Policy::from_sources(&sources).unwrap())
}

fn enricher(with_draft: Option<&Policy>) -> Arc<Enricher> {
    let (inv, policy) = estate();
    let provisioned = Arc::new(CompiledPolicy::compile(&inv, &policy));
    let draft = with_draft.map(|d| Arc::new(CompiledPolicy::compile(&inv, d)));
    Arc::new(Enricher {
        inventory: Arc::new(inv),
        provisioned: Some(provisioned),
        draft,
        listening: Default::default(),
        hosts: Default::default(),
    })
}

fn obs(src: &str, sp: u16, dst: &str, dp: u16, t: i64, packets: u64) -> Observation {
    Observation {
        reporter: "exporter 192.0.2.1:2055".into(),
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port: sp,
        dst_port: dp,
        proto: 6,
        packets,
        bytes: packets * 100,
        start_ms: Some(t),
        end_ms: Some(t + 500),
        process: None,
        reverse_packets: 0,
        reverse_bytes: 0,
        icmp_type: None,
        connections: 1,
    }
}

const T0: i64 = 1_700_000_040_000; // 40 s into a minute

#[test]
fn request_and_reply_fold_into_one_enriched_summary() {
    let mut agg = Aggregator::new(enricher(None));
    // shop-app-p1 -> shop-db-p1 and the reply.
    agg.add(&obs("10.10.1.21", 51000, "10.10.1.31", 5432, T0, 10), 0);
    agg.add(
        &obs("10.10.1.31", 5432, "10.10.1.21", 51000, T0 + 100, 8),
        0,
    );
    // shop-web-p1 -> shop-db-p1: no rule allows it; both ends enforce.
    agg.add(
        &obs("10.10.1.11", 40000, "10.10.1.31", 5432, T0 + 200, 3),
        0,
    );
    let out = agg.flush_all();
    let minute: Vec<_> = out
        .iter()
        .filter(|s| s.key.bucket == Bucket::Minute)
        .collect();
    assert_eq!(minute.len(), 2);
    let app_db = minute
        .iter()
        .find(|s| s.key.src == "10.10.1.21".parse::<IpAddr>().unwrap())
        .unwrap();
    assert_eq!(
        (app_db.packets, app_db.bytes, app_db.connections),
        (18, 1800, 1)
    );
    assert_eq!(app_db.key.port, 5432);
    assert_eq!(app_db.src_workload.as_deref(), Some("shop-app-p1"));
    assert_eq!(app_db.dst_labels.get("role"), Some("db"));
    let v = app_db.provisioned.as_ref().unwrap();
    assert_eq!(
        (v.verdict, v.rules.clone()),
        (
            VerdictKind::Allowed,
            vec!["shop-prod-app-to-db".to_string()]
        )
    );
    assert_eq!(app_db.first_seen_ms, T0);
    assert_eq!(app_db.last_seen_ms, T0 + 600);
    let web_db = minute
        .iter()
        .find(|s| s.key.src == "10.10.1.11".parse::<IpAddr>().unwrap())
        .unwrap();
    let v = web_db.provisioned.as_ref().unwrap();
    assert_eq!(
        (v.verdict, v.rules.is_empty()),
        (VerdictKind::Blocked, true)
    );
    assert!(web_db.draft.is_none());
}

#[test]
fn draft_verdict_is_computed_beside_the_provisioned_one() {
    let (_, policy) = estate();
    let mut draft = policy.clone();
    // The draft drops every application rule: app -> db becomes blocked there.
    draft.rulesets.retain(|r| r.tier != "application");
    let mut agg = Aggregator::new(enricher(Some(&draft)));
    agg.add(&obs("10.10.1.21", 51000, "10.10.1.31", 5432, T0, 1), 0);
    let s = agg
        .flush_all()
        .into_iter()
        .find(|s| s.key.bucket == Bucket::Minute)
        .unwrap();
    assert_eq!(s.provisioned.unwrap().verdict, VerdictKind::Allowed);
    assert_eq!(s.draft.unwrap().verdict, VerdictKind::Blocked);
}

#[test]
fn buckets_close_only_after_their_end_plus_grace() {
    let mut agg = Aggregator::new(enricher(None));
    agg.add(&obs("10.10.1.21", 51000, "10.10.1.31", 5432, T0, 1), 0);
    let minute_end = Bucket::Minute.start_of(T0) + 60_000;
    assert!(agg.flush(minute_end + 4_999, 5_000).is_empty());
    let out = agg.flush(minute_end + 5_000, 5_000);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key.bucket, Bucket::Minute);
    assert_eq!(agg.open_len(), 1, "the hour bucket is still open");
    let hour_end = Bucket::Hour.start_of(T0) + 3_600_000;
    assert_eq!(agg.flush(hour_end + 5_000, 5_000).len(), 1);
}

proptest! {
    #[test]
    fn nothing_is_lost(records in proptest::collection::vec((0u8..6, 0u8..6, prop::sample::select(vec![22u16, 53, 5432, 8080, 40000, 51000]), prop::sample::select(vec![22u16, 53, 5432, 8080, 40000, 51000]), 0i64..7_200_000, 1u64..1000), 1..200)) {
        let hosts = ["10.10.1.11", "10.10.1.21", "10.10.1.31", "10.0.0.53", "10.99.0.1", "fd00::1"];
        let mut agg = Aggregator::new(enricher(None));
        let mut packets = 0;
        for (s, d, sp, dp, t, p) in &records {
            agg.add(&obs(hosts[*s as usize], *sp, hosts[*d as usize], *dp, T0 + t, *p), 0);
            packets += p;
        }
        let out = agg.flush_all();
        for bucket in [Bucket::Minute, Bucket::Hour] {
            let sum: u64 = out.iter().filter(|s| s.key.bucket == bucket).map(|s| s.packets).sum();
            prop_assert_eq!(sum, packets);
            let bytes: u64 = out.iter().filter(|s| s.key.bucket == bucket).map(|s| s.bytes).sum();
            prop_assert_eq!(bytes, packets * 100);
            prop_assert!(out.iter().filter(|s| s.key.bucket == bucket).all(|s| s.provisioned.is_some() && s.first_seen_ms <= s.last_seen_ms));
        }
    }
}

#[test]
fn a_live_source_never_files_a_flow_ahead_of_the_clock_or_decades_back() {
    let now = T0 + 120_000;
    let mut agg = Aggregator::live(enricher(None), TimeBounds::LIVE);
    // Ends 2 s ahead: jitter, pulled back to the clock but not counted.
    agg.add(
        &obs("10.10.1.21", 51000, "10.10.1.31", 5432, now + 1_500, 1),
        now,
    );
    // Ends ten minutes ahead (the exporter's clock is wrong): clamped, counted.
    agg.add(
        &obs("10.10.1.21", 51001, "10.10.1.31", 5432, now + 600_000, 1),
        now,
    );
    // Ends in 1970 (a wrapped v5 uptime): received now, counted.
    agg.add(&obs("10.10.1.21", 51002, "10.10.1.31", 5432, 0, 1), now);
    // Inside the bounds: untouched.
    agg.add(
        &obs("10.10.1.21", 51003, "10.10.1.31", 5432, now - 90_000, 1),
        now,
    );
    let stats = agg.stats();
    assert_eq!((stats.clamped_future, stats.clamped_past), (1, 1));
    let out = agg.flush_all();
    assert!(out.iter().all(|s| s.last_seen_ms <= now), "{out:#?}");
    assert!(out.iter().all(|s| s.first_seen_ms >= now - 86_400_000));
    let minutes: Vec<_> = out
        .iter()
        .filter(|s| s.key.bucket == Bucket::Minute)
        .collect();
    assert_eq!(
        minutes.iter().map(|s| s.packets).sum::<u64>(),
        4,
        "nothing is dropped"
    );
    assert!(
        minutes
            .iter()
            .any(|s| s.key.bucket_start_ms == Bucket::Minute.start_of(now - 90_000))
    );

    // A file's records are history: the same record keeps its times.
    let mut replay = Aggregator::new(enricher(None));
    replay.add(
        &obs("10.10.1.21", 51001, "10.10.1.31", 5432, now + 600_000, 1),
        now,
    );
    assert_eq!(replay.stats().clamped_future, 0);
    assert!(replay.flush_all().iter().all(|s| s.last_seen_ms > now));
}

#[test]
fn families_and_processes_stay_apart_in_the_key() {
    let mut agg = Aggregator::new(enricher(None));
    // The same 32 bits as IPv4 and as an IPv4-mapped IPv6 address are two peers.
    agg.add(&obs("10.10.1.21", 51000, "10.10.1.31", 5432, T0, 1), 0);
    agg.add(
        &obs("::ffff:10.10.1.21", 51000, "10.10.1.31", 5432, T0, 2),
        0,
    );
    agg.add(&obs("2001:db8::7", 51000, "2001:db8::9", 5432, T0, 4), 0);
    let mut with_process = obs("10.10.1.21", 51000, "10.10.1.31", 5432, T0, 8);
    with_process.process = Some("postgres".into());
    agg.add(&with_process, 0);
    let mut minutes: Vec<_> = agg
        .flush_all()
        .into_iter()
        .filter(|s| s.key.bucket == Bucket::Minute)
        .map(|s| {
            (
                s.key.src.to_string(),
                s.key.dst.to_string(),
                s.key.process,
                s.packets,
            )
        })
        .collect();
    minutes.sort();
    let expected = |src: &str, dst: &str, process: Option<&str>, packets| {
        (
            src.to_string(),
            dst.to_string(),
            process.map(str::to_string),
            packets,
        )
    };
    assert_eq!(
        minutes,
        vec![
            expected("10.10.1.21", "10.10.1.31", None, 1),
            expected("10.10.1.21", "10.10.1.31", Some("postgres"), 8),
            expected("2001:db8::7", "2001:db8::9", None, 4),
            expected("::ffff:10.10.1.21", "10.10.1.31", None, 2),
        ]
    );
}
