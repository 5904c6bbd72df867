//! Two `bulkhead server` processes on one PostgreSQL (control) and one ClickHouse (flows),
//! and a `bulkhead collector` process beside them: a change made through one server
//! reaches the other's compiled state, the collector verdicts with the inventory the
//! servers wrote, and its flows are read back through either server.

mod common;
#[path = "../../store/tests/common/pg.rs"]
mod pg;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_sim::{FlowKind, IpfixEncoder, SimFlow};
use common::{Server, curl, start_with};

/// Polls `check` until it holds, for at most a minute (a loaded machine is slow, never
/// wrong); returns how long it took.
fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: not within a minute"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

fn get(server: &Server, token: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}{path}", server.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

struct Collector(std::process::Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_servers_and_a_collector_share_postgres_and_clickhouse() {
    let cluster = pg::Cluster::start();
    let database = cluster.url("postgres");
    let flows = bulkhead_testkit::clickhouse::clickhouse().fresh_url();
    let env = [
        ("BULKHEAD_DATABASE", database.as_str()),
        ("BULKHEAD_FLOWS", flows.as_str()),
    ];
    let (data_a, data_b, data_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (a, token) = start_with(data_a.path(), true, &env);
    let token = token.expect("the first server makes the admin token");
    let (b, none) = start_with(data_b.path(), false, &env);
    assert!(none.is_none());

    // The collector starts before the workloads exist: it must follow the change.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["collector", "--data", data_c.path().to_str().unwrap()])
        .args(["--collect", &listen, "--collector-workers", "1"])
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // Warnings (a data directory tightened, say) may come first.
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
        if line.starts_with("collecting flows on udp") {
            break;
        }
        seen.push_str(&line);
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let collector = Collector(child);

    for (name, address, role) in [("web-1", "10.77.0.1", "web"), ("db-1", "10.77.0.2", "db")] {
        curl(
            &a,
            &token,
            "PUT",
            &format!("/api/v1/workloads/{name}"),
            &format!(
                r#"{{"name":"{name}","kind":"vm","addresses":["{address}"],"labels":{{"app":"shop","role":"{role}"}}}}"#
            ),
        );
    }
    // Server B compiles what A wrote.
    let took = eventually("server B sees db-1", || {
        get(&b, &token, "/api/v1/workloads/db-1").0 == 200
    });
    eprintln!("a change through A reached B's compiled state in {took:?}");

    // The collector enriches with the same inventory once it has followed the change.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let flow = SimFlow {
        // Minutes ago: a bucket already closed is flushed within a second.
        start_ms: now_ms - 180_000,
        end_ms: now_ms - 170_000,
        src: "10.77.0.1".parse().unwrap(),
        dst: "10.77.0.2".parse().unwrap(),
        src_port: 40_000,
        dst_port: 5432,
        proto: 6,
        packets: 10,
        bytes: 1_000,
        tcp_flags: 0x1b,
        kind: FlowKind::Normal,
    };
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut encoder = IpfixEncoder::new(7);
    let found = |server: &Server| {
        let (code, body) = get(
            server,
            &token,
            &format!(
                "/api/v1/flows?workload=db-1&from_ms={}&to_ms={}",
                now_ms - 3_600_000,
                now_ms + 3_600_000
            ),
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["src_workload"] == "web-1" && s["port"] == 5432)
    };
    // Datagrams sent before the collector follows the change are enriched without the
    // workloads; keep sending until one is stored with them (each send is a new minute
    // of the same key at worst, never a wrong answer).
    eventually(
        "the collector's summary of web-1 → db-1 in ClickHouse",
        || {
            for d in encoder.encode(std::slice::from_ref(&flow)) {
                sender.send_to(&d, &listen).unwrap();
            }
            std::thread::sleep(Duration::from_millis(500));
            found(&b)
        },
    );
    assert!(found(&a), "both servers read the same flow store");
    drop(collector);
}

/// `bulkhead_leader` from a server's /metrics (None when it does not answer).
fn leads(server: &Server, token: &str) -> Option<bool> {
    let (code, body) = get(server, token, "/metrics");
    (code == 200).then(|| body.lines().any(|l| l == "bulkhead_leader 1"))
}

fn kill_9(server: &mut Server) {
    let _ = server.child.kill();
    let _ = server.child.wait();
}

fn post(server: &Server, token: &str, path: &str, body: &str) -> (u16, String) {
    post_to(&server.url, token, path, body)
}

/// As [`post`], to a server known by its URL (from another thread).
fn post_to(base: &str, token: &str, path: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-m",
            "60",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("{base}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.rsplit_once('\n') {
        Some((body, code)) => (code.parse().unwrap_or(0), body.to_string()),
        None => (0, text),
    }
}

/// Two replicas with a fast rollout calendar and offline watch, so that leadership and
/// its hand-over show within seconds.
fn replicas(database: &str, flows: &str) -> (Server, Server, String, Vec<tempfile::TempDir>) {
    let env = [
        ("BULKHEAD_DATABASE", database),
        ("BULKHEAD_FLOWS", flows),
        ("BULKHEAD_ROLLOUT_EVERY", "1"),
        ("BULKHEAD_AGENT_OFFLINE_AFTER", "2"),
    ];
    let dirs = vec![tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (a, token) = start_with(dirs[0].path(), true, &env);
    let (b, _) = start_with(dirs[1].path(), false, &env);
    (a, b, token.unwrap(), dirs)
}

#[test]
fn killing_a_replica_loses_no_acknowledged_provision_and_hands_over_the_singletons() {
    let cluster = pg::Cluster::start();
    let database = cluster.url("postgres");
    let flows = bulkhead_testkit::clickhouse::clickhouse().fresh_url();
    let (mut a, b, token, _dirs) = replicas(&database, &flows);
    curl(
        &a,
        &token,
        "PUT",
        "/api/v1/workloads/web-1",
        r#"{"name":"web-1","kind":"vm","addresses":["10.78.0.1"],"labels":{"app":"shop"}}"#,
    );

    // Exactly one leader, whichever asked first.
    eventually("one replica leads", || {
        leads(&a, &token) == Some(true) || leads(&b, &token) == Some(true)
    });
    assert!(
        !(leads(&a, &token) == Some(true) && leads(&b, &token) == Some(true)),
        "two leaders"
    );

    // Provisions through A, one after the other, while A is killed: every one A
    // acknowledged is a whole version B serves afterwards.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let writer = {
        let (url, token, acked) = (a.url.clone(), token.clone(), acknowledged.clone());
        std::thread::spawn(move || {
            for i in 0..200 {
                let (code, body) = post_to(
                    &url,
                    &token,
                    "/api/v1/provision",
                    &format!(r#"{{"comment":"round {i}","confirm":true}}"#),
                );
                if code != 200 {
                    break;
                }
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                acked.lock().unwrap().push(v["id"].as_u64().unwrap());
            }
        })
    };
    eventually("a few provisions acknowledged", || {
        acknowledged.lock().unwrap().len() >= 3
    });
    kill_9(&mut a);
    writer.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let (code, body) = get(&b, &token, "/api/v1/versions");
    assert_eq!(code, 200, "{body}");
    let versions: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stored: Vec<u64> = versions
        .as_array()
        .or(versions["items"].as_array())
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged version {id} lost");
        let (code, body) = get(&b, &token, &format!("/api/v1/versions/{id}"));
        assert_eq!(code, 200, "version {id} is not whole: {body}");
    }
    eprintln!(
        "{} provisions acknowledged before the kill, {} versions stored",
        acknowledged.len(),
        stored.len()
    );

    // The survivor leads within seconds of the kill (the lock went with A's session).
    let took = eventually("B leads after A's kill", || leads(&b, &token) == Some(true));
    eprintln!("B took over the singletons {took:?} after A was killed");
}

#[test]
fn a_rollout_step_runs_once_across_replicas_and_survives_the_leaders_death() {
    let cluster = pg::Cluster::start();
    let database = cluster.url("postgres");
    let flows = bulkhead_testkit::clickhouse::clickhouse().fresh_url();
    let (mut a, mut b, token, _dirs) = replicas(&database, &flows);
    for (name, address) in [("pay-1", "10.79.0.1"), ("pay-2", "10.79.0.2")] {
        curl(
            &a,
            &token,
            "PUT",
            &format!("/api/v1/workloads/{name}"),
            &format!(
                r#"{{"name":"{name}","kind":"vm","managed":true,"mode":"monitor","addresses":["{address}"],"labels":{{"app":"pay"}}}}"#
            ),
        );
    }
    eventually("one replica leads", || {
        leads(&a, &token) == Some(true) || leads(&b, &token) == Some(true)
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Created through the replica that does not lead: the leader announces it.
    let (leader, follower) = if leads(&a, &token) == Some(true) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let (code, body) = post(
        follower,
        &token,
        "/api/v1/rollouts",
        &format!(
            r#"{{"name":"pay-enforce","selector":"app=pay","enforce_at_ms":{},"readiness_days":1,"watch_days":1}}"#,
            now + 6_000
        ),
    );
    assert_eq!(code, 201, "{body}");
    let announced = |s: &Server| {
        let (_, body) = get(s, &token, "/api/v1/alerts?kind=rollout&limit=100");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["title"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    eventually("the announcement", || !announced(follower).is_empty());
    // The leader dies before the enforcement date; the other replica takes over.
    kill_9(leader);
    let survivor = follower;
    eventually("the survivor leads", || {
        leads(survivor, &token) == Some(true)
    });
    eventually("both workloads enforced", || {
        ["pay-1", "pay-2"].iter().all(|w| {
            let (_, body) = get(survivor, &token, &format!("/api/v1/workloads/{w}"));
            body.contains(r#""mode":"enforced""#)
        })
    });
    // Rounds keep running every second; no notice may come twice.
    std::thread::sleep(Duration::from_secs(3));
    let titles = announced(survivor);
    let mut unique = titles.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        titles.len(),
        "a notice went out twice: {titles:?}"
    );
    assert!(
        titles.iter().any(|t| t.contains("enforce")),
        "no enforcement notice: {titles:?}"
    );
}

#[test]
fn a_sqlite_deployment_migrates_to_postgres_and_clickhouse() {
    use bulkhead_store::{Bucket, FlowQuery, FlowStore, SqliteFlowStore};

    let data = tempfile::tempdir().unwrap();
    let (old, token) = start_with(data.path(), true, &[]);
    let token = token.unwrap();
    let policy =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/estate/policy");
    let push = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(["policy", "push", policy.to_str().unwrap()])
        .env("BULKHEAD_SERVER", &old.url)
        .env("BULKHEAD_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let (code, body) = post(
        &old,
        &token,
        "/api/v1/provision",
        r#"{"comment":"before the move"}"#,
    );
    assert_eq!(code, 200, "{body}");
    curl(
        &old,
        &token,
        "PUT",
        "/api/v1/workloads/web-1",
        r#"{"name":"web-1","kind":"vm","addresses":["10.80.0.1"],"labels":{"app":"shop"}}"#,
    );
    let (_, audit_before) = get(&old, &token, "/api/v1/audit?limit=1000");
    drop(old);

    // Flow summaries of two recent days, both widths: the new server's retention must keep them.
    let day = 86_400_000i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = (now / day - 1) * day;
    let mut summaries = Vec::new();
    for (i, start) in [t0, t0 + 60_000, t0 + day].into_iter().enumerate() {
        for bucket in [Bucket::Minute, Bucket::Hour] {
            summaries.push(bulkhead_store::FlowSummary {
                key: bulkhead_store::SummaryKey {
                    bucket,
                    bucket_start_ms: bucket.start_of(start),
                    src: "10.80.0.1".parse().unwrap(),
                    dst: "10.80.0.2".parse().unwrap(),
                    proto: 6,
                    port: 443,
                    process: None,
                },
                packets: 3,
                bytes: 300 + i as u64,
                connections: 1,
                first_seen_ms: start,
                last_seen_ms: start + 1,
                reporter: Some("ipfix 192.0.2.1/0".into()),
                src_workload: Some("web-1".into()),
                dst_workload: None,
                src_labels: bulkhead_store::Labels::parse_list("app=shop").unwrap(),
                dst_labels: Default::default(),
                provisioned: None,
                draft: None,
            });
        }
    }
    let flows = SqliteFlowStore::open(data.path().join("flows.sqlite")).unwrap();
    flows.upsert(&summaries).unwrap();
    let everything = |store: &dyn FlowStore| {
        let mut all = Vec::new();
        for bucket in [Bucket::Minute, Bucket::Hour] {
            let mut q = FlowQuery::new(bucket, i64::MIN, i64::MAX);
            q.limit = usize::MAX;
            all.extend(store.query(&q).unwrap());
        }
        all
    };
    let want = everything(&flows);
    drop(flows);

    let cluster = pg::Cluster::start();
    let database = cluster.url("postgres");
    let flows_url = bulkhead_testkit::clickhouse::clickhouse().fresh_url();
    let migrate = || {
        Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(["migrate", "--data", data.path().to_str().unwrap()])
            .args(["--database", &database, "--flows", &flows_url])
            .output()
            .unwrap()
    };
    let out = migrate();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("control store: copied"), "{stdout}");
    assert!(
        stdout.contains("flow store: copied 5 summaries"),
        "{stdout}"
    );
    // A second run finds the targets full and writes nothing.
    let again = migrate();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty database"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A server on the new stores: the same token, versions, workloads, audit and flows.
    let fresh = tempfile::tempdir().unwrap();
    let env = [
        ("BULKHEAD_DATABASE", database.as_str()),
        ("BULKHEAD_FLOWS", flows_url.as_str()),
    ];
    let (new, none) = start_with(fresh.path(), false, &env);
    assert!(none.is_none(), "the admin token came along, so no new one");
    let (code, body) = get(&new, &token, "/api/v1/workloads/web-1");
    assert_eq!(code, 200, "{body}");
    let (_, versions) = get(&new, &token, "/api/v1/versions");
    assert!(versions.contains("before the move"), "{versions}");
    let (_, audit_after) = get(&new, &token, "/api/v1/audit?limit=1000");
    let entries = |text: &str| {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        v.as_array().or(v["items"].as_array()).unwrap().len()
    };
    assert!(entries(&audit_after) >= entries(&audit_before));
    let store = bulkhead_store::ClickHouseFlowStore::connect_with(
        &flows_url,
        bulkhead_store::ClickHouseOptions { hour_rollup: false },
    )
    .unwrap();
    assert_eq!(everything(&store), want);
    // New writes after the move get ids after the copied ones.
    curl(
        &new,
        &token,
        "PUT",
        "/api/v1/workloads/web-2",
        r#"{"name":"web-2","kind":"vm","addresses":["10.80.0.3"],"labels":{"app":"shop"}}"#,
    );
}
