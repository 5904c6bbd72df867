//! The attacker's suite: each test takes the lowest credential an attacker may hold (a
//! pairing key, an app owner's token, an agent credential, no token at all, one
//! address on loopback) and checks that the boundary holds. Each failed on the code
//! before docs/security.md's boundaries were built. Network traffic stays on
//! 127.0.0.0/8; every loop is bounded.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

mod common;
use common::{Api, host};

impl Api {
    async fn key(&self, body: Value) -> String {
        let v = self
            .admin_ok(Method::POST, "/api/v1/pairing-profiles", Some(body))
            .await;
        v["pairing_key"].as_str().unwrap().to_string()
    }

    async fn token(&self, role: &str, scope: Option<&str>) -> String {
        let mut body = json!({"name": format!("{role} token"), "role": role});
        if let Some(s) = scope {
            body["scope"] = json!(s);
        }
        let v = self
            .admin_ok(Method::POST, "/api/v1/tokens", Some(body))
            .await;
        v["token"].as_str().unwrap().to_string()
    }

    /// The audit entries whose action is `action`, waiting up to 10 s for those
    /// written in the background.
    async fn audited(&self, action: &str, at_least: usize) -> Vec<Value> {
        for _ in 0..100 {
            let v = self
                .admin_ok(Method::GET, "/api/v1/audit?limit=1000", None)
                .await;
            let found: Vec<Value> = v["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] == json!(action))
                .cloned()
                .collect();
            if found.len() >= at_least {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fewer than {at_least} audit entries {action}");
    }

    async fn import_estate(&self) {
        self.admin_ok(
            Method::POST,
            "/api/v1/workloads/import",
            Some(json!([
                {"name": "pay-db", "kind": "vm", "managed": true, "addresses": ["10.0.0.5"],
                 "labels": {"app": "payments", "role": "db"}, "mode": "enforced"},
                {"name": "pay-app", "kind": "vm", "managed": true, "addresses": ["10.0.0.6"],
                 "labels": {"app": "payments", "role": "app"}, "mode": "enforced"},
                {"name": "shop-db", "kind": "vm", "managed": true, "addresses": ["10.0.1.5"],
                 "labels": {"app": "shop", "role": "db"}, "mode": "enforced"}
            ])),
        )
        .await;
    }
}

#[tokio::test]
async fn a_pairing_key_cannot_take_over_an_existing_workload() {
    let api = Api::new();
    api.import_estate().await;
    let key = api
        .key(json!({"name": "fleet", "labels": {"app": "x"}}))
        .await;
    // The attacker reports the database's address plus one of its own.
    let (s, v) = api
        .enroll_host(&key, host("pay-db", &["10.0.0.5/24", "10.66.0.1/24"]))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let credential = v["credential"].as_str().unwrap();
    // It is handed nothing: not the workload's policy, not a heartbeat.
    for (m, path) in [
        (Method::GET, "/api/v1/agent/policy"),
        (Method::POST, "/api/v1/agent/heartbeat"),
    ] {
        let body = (m == Method::POST).then(|| json!({}));
        let (s, _) = api.call(Some(credential), m, path, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    // And the workload is as it was: addresses, labels, mode.
    let w = api
        .admin_ok(Method::GET, "/api/v1/workloads/pay-db", None)
        .await;
    assert_eq!(w["addresses"], json!(["10.0.0.5"]), "{w}");
    assert_eq!(w["labels"], json!({"app": "payments", "role": "db"}));
    assert_eq!(w["mode"], json!("enforced"));
    api.audited("agent.enroll.pending", 1).await;

    // An admin who approves it is the one who decides; then it is let in.
    let agents = api.admin_ok(Method::GET, "/api/v1/agents", None).await;
    let id = agents["items"][0]["id"].as_u64().unwrap();
    api.admin_ok(Method::POST, &format!("/api/v1/agents/{id}/approve"), None)
        .await;
    let (s, _) = api
        .call(Some(credential), Method::GET, "/api/v1/agent/policy", None)
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_refused_enrollment_uses_nothing_and_writes_only_its_audit_entry() {
    let api = Api::new();
    api.import_estate().await;
    let key = api
        .key(json!({"name": "one", "labels": {"app": "x"}, "max_uses": 1}))
        .await;
    let before = api
        .admin_ok(Method::GET, "/api/v1/audit?limit=1000", None)
        .await["items"]
        .as_array()
        .unwrap()
        .len();
    // A new name with an address another workload has: the inventory would break.
    let (s, v) = api
        .enroll_host(&key, host("new-host", &["10.0.0.5/24"]))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let profiles = api
        .admin_ok(Method::GET, "/api/v1/pairing-profiles", None)
        .await;
    assert_eq!(profiles["items"][0]["uses"], json!(0), "{profiles}");
    let agents = api.admin_ok(Method::GET, "/api/v1/agents", None).await;
    assert_eq!(agents["items"], json!([]));
    let refused = api.audited("request.refused", 1).await;
    let entries = api
        .admin_ok(Method::GET, "/api/v1/audit?limit=1000", None)
        .await["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(entries, before + 1, "only the refusal: {refused:?}");
    // The key still works for a host that fits.
    let (s, v) = api
        .enroll_host(&key, host("new-host", &["10.0.2.9/24"]))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn an_app_owner_cannot_write_rules_into_other_teams_workloads() {
    let api = Api::new();
    api.import_estate().await;
    let admin = api.admin.clone();
    for (kind, name, body) in [
        ("tier", "application", json!({"order": 100})),
        ("ip_list", "partners", json!({"include": ["10.0.1.0/24"]})),
        (
            "label_group",
            "shop-dbs",
            json!({"labels": {"app": ["shop"], "role": ["db"]}}),
        ),
    ] {
        api.ok(
            &admin,
            Method::PUT,
            &format!("/api/v1/draft/objects/{kind}/{name}"),
            Some(body),
        )
        .await;
    }
    let owner = api.token("app_owner", Some("app=payments")).await;
    let ruleset = |to: Value, from: Value, id: &str| {
        json!({"tier": "application", "scope": {"app": "payments"},
               "rules": [{"id": id, "action": "allow", "from": from, "to": to, "services": ["tcp/5432"]}]})
    };
    for (to, why) in [
        (json!(["app=shop role=db"]), "without app=payments"),
        (json!(["any"]), "`any`"),
        (json!(["iplist:partners"]), "iplist:partners"),
        (json!(["group:shop-dbs"]), "group:shop-dbs"),
    ] {
        let (s, v) = api
            .call(
                Some(&owner),
                Method::PUT,
                "/api/v1/draft/objects/ruleset/pay-rules",
                Some(ruleset(to.clone(), json!(["role=app"]), "r1")),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{to}: {v}");
        assert!(v.to_string().contains(why), "{to}: {v}");
    }
    // Into its own workloads, from anyone (extra-scope consumers), it may.
    let (s, v) = api
        .call(
            Some(&owner),
            Method::PUT,
            "/api/v1/draft/objects/ruleset/pay-rules",
            Some(ruleset(
                json!(["role=db"]),
                json!(["app=shop", "any"]),
                "r1",
            )),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A ruleset in its scope that someone else wrote with a provider outside it
    // cannot be deleted or edited by the app owner either.
    api.ok(
        &admin,
        Method::PUT,
        "/api/v1/draft/objects/ruleset/pay-exports",
        Some(ruleset(
            json!(["app=shop role=db"]),
            json!(["role=app"]),
            "r2",
        )),
    )
    .await;
    let (s, v) = api
        .call(
            Some(&owner),
            Method::DELETE,
            "/api/v1/draft/objects/ruleset/pay-exports",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
}

#[tokio::test]
async fn an_app_owner_reads_only_inside_its_scope() {
    let api = Api::new();
    api.import_estate().await;
    let owner = api.token("app_owner", Some("app=payments")).await;
    let (s, _) = api
        .call(Some(&owner), Method::GET, "/api/v1/workloads/shop-db", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .call(Some(&owner), Method::GET, "/api/v1/workloads/pay-db", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .call(
            Some(&owner),
            Method::POST,
            "/api/v1/explain",
            Some(json!({"from": "10.0.1.99", "to": "shop-db", "port": "tcp/5432"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // Rollouts: another team's is invisible; owners' webhooks are hidden.
    api.admin_ok(
        Method::POST,
        "/api/v1/rollouts",
        Some(json!({"name": "shop", "selector": "app=shop",
                    "owners": [{"name": "shop team", "webhook": "http://127.0.0.1:9/secret-path"}]})),
    )
    .await;
    let mine = api
        .admin_ok(
            Method::POST,
            "/api/v1/rollouts",
            Some(json!({"name": "pay", "selector": "app=payments",
                        "owners": [{"name": "pay team", "webhook": "http://127.0.0.1:9/pay-secret"}]})),
        )
        .await;
    let list = api.ok(&owner, Method::GET, "/api/v1/rollouts", None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pay"]);
    assert!(!list.to_string().contains("secret"), "{list}");
    let others = mine["id"].as_u64().unwrap() - 1;
    let (s, _) = api
        .call(
            Some(&owner),
            Method::GET,
            &format!("/api/v1/rollouts/{others}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn each_listener_serves_only_its_purpose() {
    use tower::ServiceExt as _;
    let api = Api::new();
    let call = |router: axum::Router, path: &str, token: Option<String>| {
        let mut req = axum::http::Request::get(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(axum::body::Body::empty()).unwrap();
        async move {
            router
                .layer(axum::extract::connect_info::MockConnectInfo(
                    "127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(),
                ))
                .oneshot(req)
                .await
                .unwrap()
                .status()
        }
    };
    let admin = Some(api.admin.clone());
    let agents = || bulkhead_server::agent_router(api.state.clone());
    let people = || bulkhead_server::router(api.state.clone());
    // The admin API, the console and metrics are not on the agent listener.
    for path in ["/api/v1/workloads", "/", "/metrics", "/api/v1/tokens"] {
        assert_eq!(
            call(agents(), path, admin.clone()).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(call(agents(), "/healthz", None).await, StatusCode::OK);
    // Agent routes are not on the API listener.
    for path in ["/api/v1/agent/policy", "/api/v1/agent/enroll"] {
        assert_eq!(
            call(people(), path, None).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // Metrics need a token that may read the whole estate.
    assert_eq!(
        call(people(), "/metrics", None).await,
        StatusCode::UNAUTHORIZED
    );
    let owner = api.token("app_owner", Some("app=payments")).await;
    assert_eq!(
        call(people(), "/metrics", Some(owner)).await,
        StatusCode::FORBIDDEN
    );
    let netops = api.token("netops", None).await;
    assert_eq!(
        call(people(), "/metrics", Some(netops)).await,
        StatusCode::OK
    );
    assert_eq!(call(people(), "/metrics", admin).await, StatusCode::OK);
}

#[tokio::test]
async fn refused_requests_are_audited_counted_and_throttled() {
    // A quota that refills one failure every 12 s: however slow a busy machine makes
    // the requests below, none is refilled before the lockout is checked.
    const QUOTA: u32 = 5;
    let mut api = Api::new();
    api.state.guard = std::sync::Arc::new(bulkhead_server::guard::Guard::new(
        QUOTA,
        bulkhead_server::guard::AUDITED_REFUSALS_PER_MINUTE,
    ));
    let mut statuses = Vec::new();
    for i in 0..(QUOTA + 2) {
        let (s, _) = api
            .call(
                Some(&format!("bh_{i:064}")),
                Method::GET,
                "/api/v1/workloads",
                None,
            )
            .await;
        statuses.push(s);
    }
    assert!(statuses[..5].iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
    // Even a good token waits from a locked-out address: guessing is not rewarded.
    let (s, v) = api
        .call(
            Some(&api.admin.clone()),
            Method::GET,
            "/api/v1/workloads",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], json!("too_many_requests"));
    // Health checks still answer: a locked-out address cannot make the server look down.
    let (s, _) = api.call(None, Method::GET, "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    // Its audit entries name what was asked and from where (read on the state, as the
    // address is locked out).
    let control = api.state.control.clone();
    let mut found = Vec::new();
    for _ in 0..100 {
        found = control
            .lock()
            .unwrap()
            .audit(0, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "request.refused")
            .collect();
        if found.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found.len() >= 5, "{found:?}");
    assert_eq!(found[0].source, "10.0.0.13");
    assert_eq!(found[0].target, "GET /api/v1/workloads");
    let (counts, _) = api.state.guard.snapshot();
    let quota = u64::from(QUOTA);
    // The quota, then the failure that went past it, then 429s.
    assert_eq!(
        counts,
        vec![("api", 401, quota + 1), ("api", 429, 2)],
        "per listener and status"
    );
}

#[tokio::test]
async fn body_parse_errors_are_json_naming_the_field() {
    let api = Api::new();
    let admin = api.admin.clone();
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], json!("name"), "{v}");
}

#[tokio::test]
async fn one_address_cannot_exhaust_the_listener() {
    use bulkhead_server::listener::{ConnectionStats, Limits};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let api = Api::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        per_address: 20,
        // Long enough that no connection times out while the 40 are still being opened
        // on a busy machine (that would free slots and refuse fewer than 20).
        header_read_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let stats = std::sync::Arc::new(ConnectionStats::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bulkhead_server::listener::serve(
        bulkhead_server::router(api.state.clone()),
        listener,
        None,
        limits,
        stats.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    // 40 idle connections from 127.0.0.1: half are closed at once.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..100 {
        if stats
            .refused_per_address
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 20
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stats
            .refused_per_address
            .load(std::sync::atomic::Ordering::Relaxed),
        20
    );
    // Another address is served meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind("127.0.0.2:0".parse().unwrap())
        .expect("bind 127.0.0.2");
    let mut other = socket.connect(addr).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), other.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The idle ones are closed by the server once the header-read timeout passes.
    for mut c in idle {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(60), c.read(&mut buf))
            .await
            .expect("closed by the server")
            .unwrap_or(0);
        assert!(
            n == 0 || buf.starts_with(b"HTTP/1.1 408"),
            "closed, not answered"
        );
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Found by the API fuzzer: a quarantine reason the inventory parser cannot read was a
/// 500 ("stored inventory no longer loads") instead of the caller's error.
#[tokio::test]
async fn a_change_the_inventory_cannot_read_is_the_callers_error() {
    let api = Api::new();
    api.import_estate().await;
    let (s, v) = api
        .call(
            Some(&api.admin.clone()),
            Method::POST,
            "/api/v1/workloads/pay-db/quarantine",
            Some(json!({"reason": "\u{97}\u{1b}"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let w = api
        .admin_ok(Method::GET, "/api/v1/workloads/pay-db", None)
        .await;
    assert!(
        w["attributes"].as_object().is_none_or(|a| a.is_empty()),
        "{w}"
    );
}
