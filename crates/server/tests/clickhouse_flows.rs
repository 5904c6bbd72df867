//! The server on a ClickHouse flow store answers as it does on SQLite. The demo's hour
//! of traffic goes through the real collector into SQLite; its minute summaries are then
//! written to ClickHouse, which rolls the hours up itself. Hours, flow pages and the
//! sprawl report must agree: the roll-up in ClickHouse is checked against the
//! collector's own aggregation on the same traffic.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bulkhead_server::demo::{self, DemoOptions};
use bulkhead_store::{Bucket, FlowLocation, FlowQuery, FlowSummary};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

async fn get(state: &bulkhead_server::AppState, token: &str, path: &str) -> Value {
    let req = Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = bulkhead_server::router(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {v}");
    v
}

async fn post(state: &bulkhead_server::AppState, token: &str, path: &str, body: Value) -> Value {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = bulkhead_server::router(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {v}");
    v
}

/// The recommendation and the coverage of the draft as the server computed them before
/// the store folded conversations: the recommender over every hour summary of the
/// window. In the shape of the API's answers.
fn over_every_summary(state: &bulkhead_server::AppState, from: i64, to: i64) -> (Value, Value) {
    let mut q = FlowQuery::new(Bucket::Hour, from, to);
    q.limit = usize::MAX;
    let rows = state.flows.query(&q).unwrap();
    let draft = state.control.lock().unwrap().draft_objects().unwrap();
    let sources: Vec<(String, String)> = draft
        .iter()
        .map(|o| (format!("{}/{}", o.kind, o.name), o.yaml.clone()))
        .collect();
    let policy = bulkhead_policy::Policy::from_sources(&sources).unwrap();
    let inventory = state.current().inventory.clone();
    let opts = bulkhead_recommend::Options {
        from_ms: Some(from),
        to_ms: Some(to),
        ..Default::default()
    };
    let r = bulkhead_recommend::recommend(&rows, &inventory, Some(&policy), &opts);
    let proposal = serde_json::json!({
        "objects": r.objects().map(bulkhead_policy::format::format_object).collect::<Vec<_>>(),
        "widenings": r.widenings,
        "stats": r.stats,
        "notes": r.notes,
    });
    let compiled = bulkhead_policy::CompiledPolicy::compile(&inventory, &policy);
    let coverage = bulkhead_recommend::coverage(
        &compiled,
        &policy,
        &inventory,
        &rows,
        &bulkhead_recommend::CoverageOptions {
            from_ms: Some(from),
            to_ms: Some(to),
            granularity: bulkhead_recommend::Granularity::Role,
            limit: 100,
        },
    );
    (proposal, serde_json::to_value(coverage).unwrap())
}

/// Recommendation and coverage read the conversations the store folds; their answers
/// are the recommender's over every hour summary, on either backend.
async fn recommends_as_over_every_summary(
    state: &bulkhead_server::AppState,
    token: &str,
    (from, to): (i64, i64),
) -> (Value, Value) {
    let s = state.clone();
    let (old_proposal, old_coverage) =
        tokio::task::spawn_blocking(move || over_every_summary(&s, from, to))
            .await
            .unwrap();
    assert!(old_proposal["stats"]["conversations"].as_u64().unwrap() > 10);
    let body = serde_json::json!({"apply": false, "from_ms": from, "to_ms": to});
    let proposal = post(state, token, "/api/v1/recommendations", body).await;
    assert_eq!(proposal["more"], false);
    let objects: Vec<Value> = proposal["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["yaml"].clone())
        .collect();
    let new_proposal = serde_json::json!({
        "objects": objects,
        "widenings": proposal["widenings"],
        "stats": proposal["stats"],
        "notes": proposal["notes"],
    });
    assert_eq!(new_proposal, old_proposal);
    let mut coverage = get(
        state,
        token,
        &format!("/api/v1/coverage?from_ms={from}&to_ms={to}"),
    )
    .await;
    assert_eq!(coverage["more"], false);
    for field in ["more", "version", "from_ms", "to_ms"] {
        coverage.as_object_mut().unwrap().remove(field);
    }
    assert_eq!(coverage, old_coverage);
    (new_proposal, coverage)
}

fn everything(state: &bulkhead_server::AppState, bucket: Bucket) -> Vec<FlowSummary> {
    let mut q = FlowQuery::new(bucket, i64::MIN, i64::MAX);
    q.limit = usize::MAX;
    state.flows.query(&q).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_rolls_up_and_answers_like_sqlite() {
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = bulkhead_server::open(sqlite_dir.path()).unwrap();
    let sqlite_token = bulkhead_server::bootstrap_admin(&sqlite).unwrap().unwrap();
    let opts = DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        collect: "127.0.0.1:0".parse().unwrap(),
        data: sqlite_dir.path().to_path_buf(),
        apps: 2,
        seed: 11,
    };
    assert!(demo::load(&sqlite, &opts).unwrap());
    bulkhead_server::start_collectors(&sqlite, vec!["127.0.0.1:0".parse().unwrap()], 1).unwrap();
    let collect = bulkhead_server::collector_addrs(&sqlite)[0];
    let stream_opts = DemoOptions {
        collect,
        ..opts.clone()
    };
    tokio::task::spawn_blocking(move || {
        demo::stream(&stream_opts, Arc::new(AtomicBool::new(true)))
    })
    .await
    .unwrap()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s2 = sqlite.clone();
    // Stopping flushes every open bucket, hours included.
    tokio::task::spawn_blocking(move || bulkhead_server::stop_collectors(&s2))
        .await
        .unwrap();
    let minutes = everything(&sqlite, Bucket::Minute);
    let hours = everything(&sqlite, Bucket::Hour);
    assert!(
        minutes.len() > 100,
        "the demo hour made {} minutes",
        minutes.len()
    );
    assert!(!hours.is_empty());

    // The same control state and minutes on ClickHouse (writers' hours are ignored).
    let ch_dir = tempfile::tempdir().unwrap();
    let url = bulkhead_testkit::clickhouse::clickhouse().fresh_url();
    let location = FlowLocation::parse(Some(&url), ch_dir.path()).unwrap();
    let ch_path = ch_dir.path().to_path_buf();
    let (clickhouse, ch_token) = tokio::task::spawn_blocking(move || {
        let state = bulkhead_server::open_with(&ch_path, None, Some(&location)).unwrap();
        let token = bulkhead_server::bootstrap_admin(&state).unwrap().unwrap();
        (state, token)
    })
    .await
    .unwrap();
    let newest_start = minutes.iter().map(|m| m.key.bucket_start_ms).max().unwrap();
    let hour_window = (
        hours.iter().map(|h| h.key.bucket_start_ms).min().unwrap(),
        hours.iter().map(|h| h.key.bucket_start_ms).max().unwrap() + 3_600_000,
    );
    let minute_count = minutes.len();
    let opts_ch = opts.clone();
    let ch = clickhouse.clone();
    tokio::task::spawn_blocking(move || {
        demo::load(&ch, &opts_ch).unwrap();
        let mut all = minutes.clone();
        all.extend(hours.clone());
        ch.flows.upsert(&all).unwrap();
        assert_eq!(everything(&ch, Bucket::Minute), minutes);
        assert_eq!(
            everything(&ch, Bucket::Hour),
            hours,
            "ClickHouse's hours differ from the collector's"
        );
    })
    .await
    .unwrap();

    let window = format!("from_ms={}&to_ms={}", i64::MIN + 1, i64::MAX);
    for query in [
        "bucket=minute&limit=10000".to_string(),
        "bucket=hour&limit=10000".to_string(),
        "bucket=minute&verdict=potentially_blocked&limit=50&offset=5".to_string(),
        "bucket=hour&labels=role%3Ddb&limit=10000".to_string(),
    ] {
        let path = format!("/api/v1/flows?{query}&{window}");
        let a = get(&sqlite, &sqlite_token, &path).await;
        let b = get(&clickhouse, &ch_token, &path).await;
        assert!(!a["items"].as_array().unwrap().is_empty(), "{path}");
        assert_eq!(a["items"], b["items"], "{path}");
    }
    // With a limit, the newest bucket comes first and the page says what it left out.
    let path = format!("/api/v1/flows?bucket=minute&order=newest&limit=10&{window}");
    let newest = get(&sqlite, &sqlite_token, &path).await;
    assert_eq!(newest["items"][0]["bucket_start_ms"], newest_start);
    assert_eq!(newest["more"], true);
    assert_eq!(newest, get(&clickhouse, &ch_token, &path).await);
    let last = format!(
        "/api/v1/flows?bucket=minute&offset={}&limit=1&{window}",
        minute_count - 1
    );
    let page = get(&sqlite, &sqlite_token, &last).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["more"], false, "nothing lies past the last summary");

    // The map's groups, folded by each store: the same set (the order among groups
    // last seen at the same millisecond is free).
    for bucket in ["minute", "hour"] {
        let path = format!("/api/v1/flows/groups?bucket={bucket}&{window}");
        let sorted = |v: Value| {
            let mut items: Vec<String> = v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g.to_string())
                .collect();
            items.sort();
            items
        };
        let a = get(&sqlite, &sqlite_token, &path).await;
        let b = get(&clickhouse, &ch_token, &path).await;
        assert_eq!(a["more"], false);
        assert!(!a["items"].as_array().unwrap().is_empty());
        assert!(
            a["items"].as_array().unwrap().len() < minute_count,
            "groups fold summaries"
        );
        assert_eq!(sorted(a), sorted(b), "{path}");
    }

    let a = get(&sqlite, &sqlite_token, "/api/v1/reports/sprawl?hours=48").await;
    let b = get(&clickhouse, &ch_token, "/api/v1/reports/sprawl?hours=48").await;
    assert_eq!(a, b);

    let a = recommends_as_over_every_summary(&sqlite, &sqlite_token, hour_window).await;
    let b = recommends_as_over_every_summary(&clickhouse, &ch_token, hour_window).await;
    assert_eq!(a, b);
}

fn minute(n: i64) -> FlowSummary {
    let start = 1_704_067_200_000 + n * 60_000;
    FlowSummary {
        key: bulkhead_store::SummaryKey {
            bucket: Bucket::Minute,
            bucket_start_ms: start,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            proto: 6,
            port: 443,
            process: None,
        },
        packets: 1,
        bytes: 100,
        connections: 1,
        first_seen_ms: start,
        last_seen_ms: start + 1,
        reporter: None,
        src_workload: None,
        dst_workload: None,
        src_labels: Default::default(),
        dst_labels: Default::default(),
        provisioned: None,
        draft: None,
    }
}

#[test]
fn summaries_wait_for_a_refusing_clickhouse_bounded_and_counted() {
    use bulkhead_server::flow_writer::{FlowBacklog, FlowWriteCounters};
    use std::sync::atomic::Ordering::Relaxed;

    let server = bulkhead_testkit::clickhouse::clickhouse();
    let url = server.fresh_url();
    let database = url.rsplit('/').next().unwrap().to_string();
    let store = bulkhead_store::ClickHouseFlowStore::connect(&url).unwrap();
    let counters = FlowWriteCounters::default();
    let mut backlog = FlowBacklog::with_limit(3);

    assert!(backlog.write(&store, vec![minute(0)], &counters));
    // The server refuses writes: the table they go to is gone for a while.
    server
        .query(&format!("DETACH TABLE {database}.summary_in"))
        .unwrap();
    assert!(!backlog.write(&store, vec![minute(1)], &counters));
    assert!(!backlog.write(&store, vec![minute(2), minute(3)], &counters));
    assert_eq!(backlog.held(), 3);
    assert_eq!(counters.held.load(Relaxed), 3);
    // Past the bound the oldest batch goes, counted.
    assert!(!backlog.write(&store, vec![minute(4)], &counters));
    assert_eq!(counters.dropped.load(Relaxed), 1);
    assert_eq!(backlog.held(), 3);
    assert!(counters.failures.load(Relaxed) >= 3);

    server
        .query(&format!("ATTACH TABLE {database}.summary_in"))
        .unwrap();
    assert!(backlog.write(&store, Vec::new(), &counters));
    assert_eq!(backlog.held(), 0);
    assert_eq!(counters.held.load(Relaxed), 0);
    assert_eq!(counters.stored.load(Relaxed), 4);
    let mut q = FlowQuery::new(Bucket::Minute, i64::MIN, i64::MAX);
    q.limit = 100;
    let starts: Vec<i64> = bulkhead_store::FlowStore::query(&store, &q)
        .unwrap()
        .iter()
        .map(|s| (s.key.bucket_start_ms - 1_704_067_200_000) / 60_000)
        .collect();
    assert_eq!(
        starts,
        vec![0, 2, 3, 4],
        "the held ones in order, minus the dropped one"
    );
}
