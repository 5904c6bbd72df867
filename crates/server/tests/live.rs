//! The server with its collectors running: a synthetic estate's IPFIX over loopback is
//! stored, verdicted against the provisioned policy, and its violations become alerts
//! that reach a real webhook (signature checked) and a real syslog listener.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bulkhead_server::demo::{self, DemoOptions};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const SECRET: &str = "test-secret";

/// A minimal HTTP/1.1 receiver that checks each request's signature.
async fn webhook_receiver(received: Arc<Mutex<Vec<Value>>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let received = received.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head_end, content_length) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + content_length {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            (k.eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                let body = &buf[head_end..head_end + content_length];
                let ok = bulkhead_alerts::verify_signature(
                    SECRET.as_bytes(),
                    &header("x-bulkhead-timestamp"),
                    body,
                    &header("x-bulkhead-signature"),
                );
                let status = if ok { "200 OK" } else { "401 Unauthorized" };
                if ok {
                    received
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(body).unwrap());
                }
                let _ = sock
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    addr
}

async fn get(state: &bulkhead_server::AppState, token: &str, path: &str) -> (StatusCode, Value) {
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
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traffic_becomes_flows_and_alerts_that_reach_the_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let state = bulkhead_server::open(dir.path()).unwrap();
    let token = bulkhead_server::bootstrap_admin(&state).unwrap().unwrap();

    let hooks: Arc<Mutex<Vec<Value>>> = Arc::default();
    let hook_addr = webhook_receiver(hooks.clone()).await;
    let syslog = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    bulkhead_server::start_alert_sinks(
        &state,
        &bulkhead_server::AlertSinks {
            webhooks: vec![format!("http://{hook_addr}/hook")],
            webhook_secret: Some(SECRET.into()),
            webhook_ca: None,
            syslog: vec![syslog.local_addr().unwrap().to_string()],
            syslog_tcp: false,
            syslog_cef: false,
        },
    )
    .unwrap();

    let opts = DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        collect: "127.0.0.1:0".parse().unwrap(),
        data: dir.path().to_path_buf(),
        apps: 2,
        seed: 5,
    };
    assert!(demo::load(&state, &opts).unwrap());
    assert!(
        !demo::load(&state, &opts).unwrap(),
        "a second load keeps the state"
    );
    bulkhead_server::start_collectors(&state, vec!["127.0.0.1:0".parse().unwrap()], 1).unwrap();
    let collect = bulkhead_server::collector_addrs(&state)[0];
    let opts = DemoOptions { collect, ..opts };
    // With stop already set, stream sends the hour of history and returns.
    tokio::task::spawn_blocking(move || demo::stream(&opts, Arc::new(AtomicBool::new(true))))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s2 = state.clone();
    tokio::task::spawn_blocking(move || bulkhead_server::stop_collectors(&s2))
        .await
        .unwrap();

    let (s, flows) = get(&state, &token, "/api/v1/flows?verdict=allowed&limit=10").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(flows["items"].as_array().unwrap().len(), 10, "{flows}");

    let (_, alerts) = get(&state, &token, "/api/v1/alerts?limit=1000").await;
    let items = alerts["items"].as_array().unwrap();
    assert!(
        items.iter().any(|a| a["kind"] == "potentially_blocked"
            && a["details"]["src_group"]
                .as_str()
                .unwrap()
                .contains("env=dev")
            && a["details"]["dst_group"]
                .as_str()
                .unwrap()
                .contains("env=prod")
            && a["details"]["rules"][0] == "deny-dev-to-prod"),
        "the attacker's lateral movement is alerted"
    );
    assert!(items.iter().all(|a| a["state"] == "open"));

    // The sinks got them.
    let mut buf = [0u8; 4096];
    let (n, _) = syslog.recv_from(&mut buf).expect("a syslog message");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.starts_with('<') && msg.contains(">1 "), "{msg}");
    assert!(msg.contains("bulkhead@32473"), "{msg}");
    for _ in 0..100 {
        if !hooks.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = {
        let hooks = hooks.lock().unwrap();
        assert!(!hooks.is_empty(), "signed webhooks arrive");
        assert!(
            hooks
                .iter()
                .all(|e| e["kind"] == "potentially_blocked" || e["kind"] == "blocked")
        );
        hooks.len()
    };

    // /metrics counts each sink's deliveries.
    let resp = bulkhead_server::router(state.clone())
        .oneshot(
            Request::get("/metrics")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("bulkhead_alert_sink_delivered_total{sink=\"webhook"))
        .unwrap_or_else(|| panic!("{text}"));
    let count: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= delivered, "{line} (received {delivered})");
    assert!(
        text.contains("bulkhead_alert_sink_dead_lettered_total{sink=\"webhook"),
        "{text}"
    );
}
