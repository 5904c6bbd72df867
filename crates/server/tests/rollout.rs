//! Rollouts through the real router and stores, with the calendar driven by chosen
//! times: announcement, the day-before notice, postponement while alerts are open,
//! enforcement, completion, rollback — and the e-mails and owner webhooks they send,
//! received by real listeners on loopback.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bulkhead_server::AppState;
use bulkhead_server::rollout::{DAY_MS, run_once};
use bulkhead_store::control::{AlertFilter, AlertObservation, AlertState, AuditContext};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tower::ServiceExt;

async fn call(
    s: &AppState,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(match body {
            Some(b) => Body::from(b.to_string()),
            None => Body::empty(),
        })
        .unwrap();
    let resp = bulkhead_server::router(s.clone())
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

/// An SMTP relay that records each message's subject line.
async fn smtp_sink() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 sink\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    if upper == "DATA" {
                        w.write_all(b"354 go\r\n").await.unwrap();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            if let Some(subject) = l.strip_prefix("Subject: ") {
                                sink.lock().unwrap().push(subject.to_string());
                            }
                        }
                        w.write_all(b"250 queued\r\n").await.unwrap();
                    } else if upper == "QUIT" {
                        w.write_all(b"221 bye\r\n").await.unwrap();
                        break;
                    } else if upper.starts_with("EHLO") {
                        w.write_all(b"250-sink\r\n250 8BITMIME\r\n").await.unwrap();
                    } else {
                        w.write_all(b"250 ok\r\n").await.unwrap();
                    }
                }
            });
        }
    });
    (addr, got)
}

/// An HTTP endpoint that records the JSON bodies POSTed to it (an owner's webhook).
async fn webhook_sink() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            sink.lock()
                                .unwrap()
                                .push(serde_json::from_str(body).unwrap_or(Value::Null));
                            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, got)
}

struct Lab {
    state: AppState,
    admin: String,
    mails: Arc<Mutex<Vec<String>>>,
    hooks: Arc<Mutex<Vec<Value>>>,
    hook_url: String,
    _dir: tempfile::TempDir,
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let mut state = bulkhead_server::open(dir.path()).unwrap();
    let admin = bulkhead_server::bootstrap_admin(&state).unwrap().unwrap();
    let (relay, mails) = smtp_sink().await;
    let (hook_url, hooks) = webhook_sink().await;
    state.notifier = Arc::new(bulkhead_server::Notifier {
        mailer: Some(bulkhead_alerts::Mailer::new(&relay, "bulkhead@example.com").unwrap()),
        webhook_secret: Some(b"owner-secret".to_vec()),
        webhook_ca: None,
    });
    let workloads = json!([
        {"name": "pay-web", "kind": "vm", "managed": true, "addresses": ["10.0.1.1"], "labels": {"app": "payments", "role": "web"}, "mode": "idle"},
        {"name": "pay-db", "kind": "vm", "managed": true, "addresses": ["10.0.1.2"], "labels": {"app": "payments", "role": "db"}, "mode": "monitor"},
        {"name": "shop-web", "kind": "vm", "managed": true, "addresses": ["10.0.2.1"], "labels": {"app": "shop", "role": "web"}, "mode": "monitor"}
    ]);
    let (s, v) = call(
        &state,
        &admin,
        Method::POST,
        "/api/v1/workloads/import",
        Some(workloads),
    )
    .await;
    assert!(s.is_success(), "{v}");
    Lab {
        state,
        admin,
        mails,
        hooks,
        hook_url,
        _dir: dir,
    }
}

impl Lab {
    async fn mode(&self, name: &str) -> String {
        let (_, w) = call(
            &self.state,
            &self.admin,
            Method::GET,
            &format!("/api/v1/workloads/{name}"),
            None,
        )
        .await;
        w["mode"].as_str().unwrap_or_default().to_string()
    }

    fn alert_on_payments(&self, kind: &str, at_ms: i64) -> u64 {
        let mut c = self.state.control.lock().unwrap();
        let (a, _) = c
            .record_alert(AlertObservation {
                key: format!("{kind}|x|app=payments|tcp/5432|{at_ms}"),
                kind: kind.into(),
                severity: "warning".into(),
                title: "would be blocked".into(),
                details_json: json!({"src_labels": {}, "dst_labels": {"app": "payments", "role": "db"}, "service": "tcp/5432"}).to_string(),
                count: 1,
                first_seen_ms: at_ms,
                last_seen_ms: at_ms,
            })
            .unwrap();
        a.id
    }

    fn resolve(&self, id: u64) {
        let audit = AuditContext {
            actor: "test".into(),
            source: "local".into(),
            at_ms: 0,
            action: "alert.resolve".into(),
        };
        self.state
            .control
            .lock()
            .unwrap()
            .set_alert_state(id, AlertState::Resolved, &audit)
            .unwrap();
    }

    async fn settle(&self, n: usize) {
        for _ in 0..100 {
            if self.mails.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_rollout_announces_postpones_enforces_completes_and_rolls_back() {
    let lab = lab().await;
    let t0 = bulkhead_server::now_ms();
    let (s, r) = call(
        &lab.state,
        &lab.admin,
        Method::POST,
        "/api/v1/rollouts",
        Some(json!({
            "name": "payments",
            "selector": "app=payments",
            "owners": [{"name": "Pay team", "email": "pay-team@example.com", "webhook": lab.hook_url}],
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let id = r["id"].as_u64().unwrap();
    let enforce_at = r["enforce_at_ms"].as_i64().unwrap();
    assert!(
        (enforce_at - (t0 + 14 * DAY_MS)).abs() < 60_000,
        "default: 14 days after the announcement"
    );
    // Idle workloads in scope start in monitor mode; others are untouched.
    assert_eq!(lab.mode("pay-web").await, "monitor");
    assert_eq!(lab.mode("shop-web").await, "monitor");
    lab.settle(1).await;
    assert_eq!(
        lab.mails.lock().unwrap().len(),
        1,
        "the announcement is mailed at once"
    );
    assert!(
        lab.mails.lock().unwrap()[0].contains("enforcement scheduled"),
        "{:?}",
        lab.mails
    );
    assert_eq!(
        lab.hooks.lock().unwrap().len(),
        1,
        "and posted to the owner's webhook"
    );

    // Nothing more until the day before.
    assert!(
        run_once(&lab.state, t0 + 5 * DAY_MS)
            .await
            .unwrap()
            .is_empty()
    );
    let done = run_once(&lab.state, enforce_at - DAY_MS + 1).await.unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    lab.settle(2).await;
    assert!(lab.mails.lock().unwrap()[1].contains("tomorrow"));

    // At the date an open potentially-blocked alert postpones it, saying why.
    let alert = lab.alert_on_payments("potentially_blocked", enforce_at - DAY_MS);
    let done = run_once(&lab.state, enforce_at).await.unwrap();
    assert!(done[0].contains("postponed"), "{done:?}");
    assert_eq!(lab.mode("pay-db").await, "monitor");
    let (_, r) = call(
        &lab.state,
        &lab.admin,
        Method::GET,
        &format!("/api/v1/rollouts/{id}"),
        None,
    )
    .await;
    assert_eq!(r["postponements"].as_array().unwrap().len(), 1, "{r}");
    assert!(
        r["postponements"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("1 unresolved")
    );
    let new_date = r["enforce_at_ms"].as_i64().unwrap();
    assert_eq!(new_date, enforce_at + DAY_MS);

    // Resolved: enforced at the new date, audited as the scheduler.
    lab.resolve(alert);
    let done = run_once(&lab.state, new_date).await.unwrap();
    assert!(
        done.iter().any(|d| d.contains("enforced 2 workload")),
        "{done:?}"
    );
    assert_eq!(lab.mode("pay-web").await, "enforced");
    assert_eq!(lab.mode("pay-db").await, "enforced");
    assert_eq!(
        lab.mode("shop-web").await,
        "monitor",
        "outside the selector"
    );
    let (_, audit) = call(
        &lab.state,
        &lab.admin,
        Method::GET,
        "/api/v1/audit?limit=1000",
        None,
    )
    .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == json!("rollout.enforce")
                && e["actor"].as_str().unwrap().contains("scheduler")),
        "{audit}"
    );

    // Complete after the watch with no blocked flow.
    assert!(
        run_once(&lab.state, new_date + 13 * DAY_MS)
            .await
            .unwrap()
            .is_empty()
    );
    let done = run_once(&lab.state, new_date + 14 * DAY_MS).await.unwrap();
    assert!(done.iter().any(|d| d.contains("completed")), "{done:?}");
    lab.settle(5).await;
    let subjects = lab.mails.lock().unwrap().clone();
    for want in [
        "scheduled",
        "tomorrow",
        "postponed",
        "now enforced",
        "complete",
    ] {
        assert!(
            subjects.iter().any(|s| s.contains(want)),
            "no {want:?} mail in {subjects:?}"
        );
    }

    // One action puts every workload back where it was.
    let (s, r) = call(
        &lab.state,
        &lab.admin,
        Method::POST,
        &format!("/api/v1/rollouts/{id}/rollback"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["state"], json!("rolled_back"));
    assert_eq!(lab.mode("pay-web").await, "monitor");
    assert_eq!(lab.mode("pay-db").await, "monitor");
    let alerts = lab
        .state
        .control
        .lock()
        .unwrap()
        .alerts(&AlertFilter {
            limit: 1000,
            ..AlertFilter::default()
        })
        .unwrap();
    assert!(
        alerts.iter().filter(|a| a.kind == "rollout").count() >= 6,
        "every notice is an alert too"
    );
}

#[tokio::test]
async fn bad_rollouts_are_refused_naming_the_field() {
    let lab = lab().await;
    for (body, field) in [
        (json!({"name": "x", "selector": ""}), "selector"),
        (
            json!({"name": "bad name!", "selector": "app=payments"}),
            "name",
        ),
        (
            json!({"name": "x", "selector": "app=payments", "owners": [{"name": "a", "email": "not-an-address"}]}),
            "owners[0].email",
        ),
        (
            json!({"name": "x", "selector": "app=payments", "enforce_at_ms": 1}),
            "enforce_at_ms",
        ),
    ] {
        let (s, v) = call(
            &lab.state,
            &lab.admin,
            Method::POST,
            "/api/v1/rollouts",
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], json!(field), "{v}");
    }
    let (s, _) = call(
        &lab.state,
        &lab.admin,
        Method::POST,
        "/api/v1/rollouts/99/rollback",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
