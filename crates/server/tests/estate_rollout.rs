//! Issue 6, part 6: from traffic to enforcement on the synthetic estate.
//!
//! Two simulated days of traffic go into the server's flow store; the server recommends
//! policy from them into the draft, which is provisioned with every workload in monitor
//! mode. A third day, with an attacker (a compromised dev web server that port-scans a
//! prod subnet and then moves laterally), is replayed as IPFIX through the server's own
//! collector on 127.0.0.1: the only traffic verdicted and alerted as potentially blocked
//! is the attacker's. The attacker and its targets are then switched to enforced, and on
//! a fourth day the attacker's flows are verdicted and alerted as blocked while normal
//! traffic stays allowed. (Dropping packets is the host agent's job; here the verdicts
//! and alerts are what the server computes.)

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bulkhead_enrich::{Aggregator, Observation};
use bulkhead_model::{Bucket, FlowSummary, VerdictKind};
use bulkhead_server::AppState;
use bulkhead_sim::{Estate, FlowKind, IpfixEncoder, SCAN_PORTS, SimConfig, SimFlow};
use bulkhead_store::FlowQuery;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const DAY_MS: i64 = 86_400_000;
const MINUTES: i64 = 20;

struct Server {
    state: AppState,
    _dir: tempfile::TempDir,
    admin: String,
}

impl Server {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.admin));
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string()))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = bulkhead_server::router(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn config(day: u64, start_ms: i64, attacker: bool) -> SimConfig {
    SimConfig {
        day,
        start_ms,
        duration_ms: MINUTES * 60_000,
        attacker,
        ..SimConfig::default()
    }
}

fn workload_json(w: &bulkhead_sim::SimWorkload, mode: &str) -> Value {
    let mut v = json!({
        "name": w.name,
        "kind": w.kind.to_string(),
        "managed": w.managed,
        "addresses": w.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "hostname": w.hostname,
        "os": w.os,
        "os_version": w.os_version,
        "labels": w.labels,
        "owner": w.owner,
    });
    if w.managed {
        v["mode"] = json!(mode);
    }
    v
}

fn observation(f: &SimFlow) -> Observation {
    Observation {
        reporter: Arc::from("sim"),
        src: f.src,
        dst: f.dst,
        src_port: f.src_port,
        dst_port: f.dst_port,
        proto: f.proto,
        packets: f.packets,
        bytes: f.bytes,
        start_ms: Some(f.start_ms),
        end_ms: Some(f.end_ms),
        process: None,
        reverse_packets: 0,
        reverse_bytes: 0,
        icmp_type: None,
        connections: 1,
    }
}

/// A training day straight through the enrich pipeline the collectors use.
fn ingest(state: &AppState, flows: &[SimFlow]) {
    let mut agg = Aggregator::new(state.current());
    let now = bulkhead_server::now_ms();
    for f in flows {
        agg.add(&observation(f), now);
    }
    let summaries = agg.flush_all();
    state.flows.upsert(&summaries).unwrap();
}

/// A day as IPFIX over UDP to the server's collector on 127.0.0.1, paced so the socket
/// keeps up; waits until every datagram was read, then stops the collector (which
/// flushes every open summary into the store and the alerts).
fn replay(state: &AppState, flows: &[SimFlow]) {
    // The simulated days lie in the past: their record times are history, kept as
    // they come (a live collector would file records older than a day at receipt).
    let config = bulkhead_collector::CollectorConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 1,
        time_bounds: None,
        ..Default::default()
    };
    bulkhead_server::start_collectors_with(state, config).unwrap();
    let to: SocketAddr = bulkhead_server::collector_addrs(state)[0];
    assert!(to.ip().is_loopback());
    let datagrams = IpfixEncoder::new(1).encode(flows);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, d) in datagrams.iter().enumerate() {
        sock.send_to(d, to).unwrap();
        if i % 16 == 15 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = state
            .collector
            .lock()
            .unwrap()
            .as_ref()
            .map(|c| c.metrics())
            .unwrap();
        assert_eq!(m.dropped, 0, "the kernel dropped datagrams: {m:?}");
        if m.datagrams == datagrams.len() as u64 {
            assert_eq!(m.records, flows.len() as u64, "{m:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "collector read {m:?} of {}",
            datagrams.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    bulkhead_server::stop_collectors(state);
}

fn minute_summaries(state: &AppState, from: i64, to: i64) -> Vec<FlowSummary> {
    let mut q = FlowQuery::new(Bucket::Minute, from, to);
    q.limit = 1_000_000;
    state.flows.query(&q).unwrap()
}

type Key = (IpAddr, IpAddr, u8, u16);

fn key(s: &FlowSummary) -> Key {
    (s.key.src, s.key.dst, s.key.proto, s.key.port)
}

/// Splits a day's summaries into the attacker's and the rest, checking the verdicts.
fn verdicts(summaries: &[FlowSummary], attack: &HashSet<Key>) -> (Vec<VerdictKind>, usize) {
    let mut attacker = Vec::new();
    let mut normal = 0;
    for s in summaries {
        let v = s
            .provisioned
            .as_ref()
            .expect("a provisioned verdict")
            .verdict;
        if attack.contains(&key(s)) {
            attacker.push(v);
        } else {
            assert_eq!(v, VerdictKind::Allowed, "normal traffic not allowed: {s:?}");
            normal += 1;
        }
    }
    (attacker, normal)
}

async fn alerts(server: &Server, kind: &str) -> Vec<Value> {
    let (s, v) = server
        .call(
            Method::GET,
            &format!("/api/v1/alerts?kind={kind}&limit=10000"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_monitor_then_enforce_on_the_synthetic_estate() {
    let dir = tempfile::tempdir().unwrap();
    let state = bulkhead_server::open(dir.path()).unwrap();
    let admin = bulkhead_server::bootstrap_admin(&state).unwrap().unwrap();
    let server = Server {
        state: state.clone(),
        _dir: dir,
        admin,
    };
    // Recent days, so the flow store's retention keeps them.
    let day1 = Bucket::Hour.start_of(bulkhead_server::now_ms()) - 4 * DAY_MS;
    let start = |d: i64| day1 + (d - 1) * DAY_MS;

    // The inventory, every managed workload in monitor mode.
    let estate = Estate::generate(&config(1, start(1), false));
    let workloads: Vec<Value> = estate
        .workloads()
        .iter()
        .map(|w| workload_json(w, "monitor"))
        .collect();
    let (s, v) = server
        .call(
            Method::POST,
            "/api/v1/workloads/import",
            Some(Value::from(workloads)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Two days of normal traffic (no attacker), each with its own draws.
    let days: Vec<Vec<SimFlow>> = (1..=2)
        .map(|d| {
            Estate::generate(&config(d as u64, start(d), false))
                .flows()
                .collect()
        })
        .collect();
    assert_ne!(
        days[0].iter().map(|f| (f.src, f.dst)).collect::<Vec<_>>(),
        days[1].iter().map(|f| (f.src, f.dst)).collect::<Vec<_>>(),
        "the two days must differ"
    );
    for d in &days {
        ingest(&state, d);
    }

    // Recommend from those two days into the draft, and provision it.
    let (s, rec) = server
        .call(
            Method::POST,
            "/api/v1/recommendations",
            Some(json!({"from_ms": start(1), "to_ms": start(3)})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rec}");
    assert_eq!(rec["applied"], true, "{rec}");
    assert!(rec["stats"]["rules"].as_u64().unwrap() >= 10, "{rec}");
    let widenings = rec["widenings"].as_array().unwrap();
    assert!(
        widenings.iter().any(|w| w["kind"] == "internet"),
        "internet clients are many public addresses: {rec}"
    );
    let (s, v) = server
        .call(
            Method::POST,
            "/api/v1/provision",
            Some(json!({"comment": "recommended from two days"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Day 3, with the attacker, through the collector: only the attacker is flagged.
    let estate3 = Estate::generate(&config(3, start(3), true));
    let attacker = estate3.attacker().unwrap().clone();
    let day3: Vec<SimFlow> = estate3.flows().collect();
    let attack: HashSet<Key> = day3
        .iter()
        .filter(|f| f.kind == FlowKind::Attacker)
        .map(|f| (f.src, f.dst, f.proto, f.dst_port))
        .collect();
    replay(&state, &day3);
    let summaries = minute_summaries(&state, start(3), start(4));
    let (att, normal) = verdicts(&summaries, &attack);
    assert!(normal > 500, "{normal} normal summaries");
    assert!(!att.is_empty());
    assert!(
        att.iter().all(|v| *v == VerdictKind::PotentiallyBlocked),
        "monitor mode only reports: {att:?}"
    );
    let scanned: HashSet<u16> = summaries
        .iter()
        .filter(|s| attack.contains(&key(s)))
        .map(|s| s.key.port)
        .collect();
    assert!(
        SCAN_PORTS.iter().all(|p| scanned.contains(p)),
        "{scanned:?}"
    );
    for lateral in [22u16, 445] {
        assert!(
            summaries.iter().any(|s| attack.contains(&key(s))
                && s.key.port == lateral
                && attacker.targets.contains(&s.key.dst)),
            "lateral movement on {lateral} not seen"
        );
    }
    let flagged = alerts(&server, "potentially_blocked").await;
    assert!(!flagged.is_empty());
    for a in &flagged {
        assert_eq!(
            a["details"]["src"],
            json!(attacker.addr.to_string()),
            "an alert for something other than the attacker: {a}"
        );
    }
    assert!(alerts(&server, "blocked").await.is_empty());

    // Enforce the attacker's source and everything it reached.
    let involved: HashSet<IpAddr> = attack.iter().flat_map(|(s, d, _, _)| [*s, *d]).collect();
    let mut enforced = 0;
    for w in estate3.workloads() {
        if w.managed && w.addresses.iter().any(|a| involved.contains(a)) {
            let (s, v) = server
                .call(
                    Method::PUT,
                    &format!("/api/v1/workloads/{}", w.name),
                    Some(workload_json(w, "enforced")),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            enforced += 1;
        }
    }
    assert!(enforced >= 2, "{enforced}");

    // Day 4: the attacker's flows are blocked and alerted; normal traffic is allowed.
    let estate4 = Estate::generate(&config(4, start(4), true));
    let day4: Vec<SimFlow> = estate4.flows().collect();
    let attack4: HashSet<Key> = day4
        .iter()
        .filter(|f| f.kind == FlowKind::Attacker)
        .map(|f| (f.src, f.dst, f.proto, f.dst_port))
        .collect();
    replay(&state, &day4);
    let summaries = minute_summaries(&state, start(4), start(5));
    let (att, normal) = verdicts(&summaries, &attack4);
    assert!(normal > 500);
    assert!(!att.is_empty());
    assert!(
        att.iter().all(|v| *v == VerdictKind::Blocked),
        "enforced ends drop the attacker: {att:?}"
    );
    let blocked = alerts(&server, "blocked").await;
    assert!(!blocked.is_empty());
    for a in &blocked {
        assert_eq!(a["details"]["src"], json!(attacker.addr.to_string()), "{a}");
    }
}
