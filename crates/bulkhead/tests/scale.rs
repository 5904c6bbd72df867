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
