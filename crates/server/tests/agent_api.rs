//! The agent API through the real router and stores: pairing keys and their refusals,
//! agent credentials, the per-host policy, events becoming alerts, and numbered flow
//! batches stored exactly once.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bulkhead_api::{
    AgentEvent, AgentEvents, FlowBatch, HostDirection, HostFlow, HostInfo, LoggedPacket, WirePolicy,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;
use common::Api;

impl Api {
    async fn pairing_key(&self, name: &str, max_uses: u32) -> String {
        let v = self
            .admin_ok(Method::POST,
                "/api/v1/pairing-profiles",
                Some(json!({"name": name, "labels": {"app": "shop", "role": "db"}, "mode": "monitor", "max_uses": max_uses})),
            )
            .await;
        v["pairing_key"].as_str().unwrap().to_string()
    }

    /// A pairing key bound to one workload (`{"workload": …}`) or a scope (`{"scope": …}`).
    async fn bound_key(&self, name: &str, binding: Value) -> String {
        let mut body = json!({"name": name, "labels": {"app": "pay", "role": "db"}, "max_uses": 5});
        for (k, v) in binding.as_object().unwrap() {
            body[k] = v.clone();
        }
        let v = self
            .admin_ok(Method::POST, "/api/v1/pairing-profiles", Some(body))
            .await;
        v["pairing_key"].as_str().unwrap().to_string()
    }

    async fn enroll(&self, key: &str, hostname: &str) -> (StatusCode, Value) {
        self.enroll_host(key, host(hostname)).await
    }

    /// Allowed web → db tcp/5432 connections in the flow store.
    async fn stored_connections(&self) -> u64 {
        let v = self
            .admin_ok(
                Method::GET,
                "/api/v1/flows?address=10.0.0.13&limit=1000",
                None,
            )
            .await;
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["port"] == json!(5432))
            .map(|f| f["connections"].as_u64().unwrap())
            .sum()
    }
}

/// The host every test agent runs on: 10.0.0.13, the address the harness calls from.
fn host(hostname: &str) -> HostInfo {
    common::host(hostname, &["10.0.0.13/24"])
}

fn flow(now: i64, src_port: u16) -> HostFlow {
    HostFlow {
        protocol: 6,
        src: "10.0.0.11".parse().unwrap(),
        src_port,
        dst: "10.0.0.13".parse().unwrap(),
        dst_port: 5432,
        direction: HostDirection::Inbound,
        packets: 10,
        bytes: 1000,
        reverse_packets: 8,
        reverse_bytes: 5000,
        start_ms: now - 2_000,
        end_ms: now - 1_000,
        process: None,
    }
}

const POLICY: &str = "bulkhead: v1\nkind: tier\nname: application\norder: 10\n---\nbulkhead: v1\nkind: ruleset\nname: shop\ntier: application\nscope:\n  app: shop\nrules:\n  - id: web-to-db\n    action: allow\n    from: [role=web]\n    to: [role=db]\n    services: [tcp/5432]\n";

#[tokio::test]
async fn agents_enroll_once_get_their_policy_and_report_exactly_once() {
    let api = Api::new();
    api.admin_ok(Method::POST,
        "/api/v1/workloads/import",
        Some(json!([{"name": "web", "kind": "vm", "managed": true, "addresses": ["10.0.0.11"], "labels": {"app": "shop", "role": "web"}, "mode": "monitor"}])),
    )
    .await;
    api.admin_ok(
        Method::PUT,
        "/api/v1/draft/files",
        Some(json!({"files": [{"name": "shop.yaml", "content": POLICY}]})),
    )
    .await;
    api.admin_ok(
        Method::POST,
        "/api/v1/provision",
        Some(json!({"comment": "shop"})),
    )
    .await;

    // Enrollment: the key works once; the host becomes a managed workload with the
    // profile's labels and its own address.
    let key = api.pairing_key("shop-db", 1).await;
    let (s, enrolled) = api.enroll(&key, "db").await;
    assert_eq!(s, StatusCode::CREATED, "{enrolled}");
    let credential = enrolled["credential"].as_str().unwrap().to_string();
    assert!(credential.starts_with("bh_agent_"), "{enrolled}");
    let w = api
        .admin_ok(Method::GET, "/api/v1/workloads/db", None)
        .await;
    assert_eq!(w["labels"], json!({"app": "shop", "role": "db"}), "{w}");
    assert_eq!(w["addresses"], json!(["10.0.0.13"]), "{w}");
    let (s, v) = api.enroll(&key, "db2").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v.to_string().contains("no uses left"), "{v}");
    let (s, _) = api.enroll("bh_pair_nope", "db3").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The admin's token is not an agent credential, nor the other way round.
    let (s, _) = api
        .call(Some(&api.admin), Method::GET, "/api/v1/agent/policy", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api
        .call(Some(&credential), Method::GET, "/api/v1/workloads", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The policy: the host's inbound rule with web's address, checked by its hash.
    let (s, p) = api
        .call(Some(&credential), Method::GET, "/api/v1/agent/policy", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let policy: WirePolicy = serde_json::from_value(p.clone()).unwrap();
    let (hp, failsafe) = policy
        .to_host_policy()
        .expect("the hash matches the content");
    assert_eq!(hp.inbound.len(), 1, "{p}");
    assert_eq!(hp.inbound[0].rule_id, "web-to-db");
    assert!(p.to_string().contains("10.0.0.11"), "{p}");
    assert_eq!(failsafe.len(), 1, "tcp/22 by default");
    let (s, hb) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/heartbeat",
            Some(json!({"applied_revision": policy.revision})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{hb}");
    assert_eq!(hb["revision"], json!(policy.revision));
    let agents = api.admin_ok(Method::GET, "/api/v1/agents", None).await;
    assert_eq!(agents["items"][0]["in_sync"], json!(true), "{agents}");
    assert_eq!(agents["items"][0]["online"], json!(true), "{agents}");

    // Flow batches of an agent before the spool (no stream): a retried batch (its
    // answer lost) is not stored twice.
    let now = bulkhead_server::now_ms();
    let batch1 = FlowBatch {
        batch: 1,
        stream: None,
        flows: vec![flow(now, 40001), flow(now, 40002)],
    };
    for _ in 0..2 {
        let (s, ack) = api
            .call(
                Some(&credential),
                Method::POST,
                "/api/v1/agent/flows",
                Some(serde_json::to_value(&batch1).unwrap()),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{ack}");
        assert_eq!(ack["acked"], json!(1));
    }
    assert_eq!(api.stored_connections().await, 2);
    let batch2 = FlowBatch {
        batch: 2,
        stream: None,
        flows: vec![flow(now, 40003)],
    };
    api.call(
        Some(&credential),
        Method::POST,
        "/api/v1/agent/flows",
        Some(serde_json::to_value(&batch2).unwrap()),
    )
    .await;
    assert_eq!(api.stored_connections().await, 3);
    // A restarted agent learns where to continue from its heartbeat.
    let (_, hb) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/heartbeat",
            Some(json!({})),
        )
        .await;
    assert_eq!(hb["flow_batch_acked"], json!(2), "{hb}");

    // Events: a logged-and-accepted packet (monitor) is an alert, not a flow (conntrack
    // reports the connection); a dropped one is both; tamper is a critical alert.
    let logged = |prefix: &str, src_port| LoggedPacket {
        at_ms: now,
        prefix: prefix.into(),
        protocol: 6,
        src: "10.0.0.66".parse().unwrap(),
        dst: "10.0.0.13".parse().unwrap(),
        src_port,
        dst_port: 5432,
    };
    let events = AgentEvents {
        events: vec![
            AgentEvent::Logged {
                packets: vec![logged("bulkhead would-default-deny ", 50001)],
            },
            AgentEvent::Tamper {
                at_ms: now,
                difference: "chain input: 1 rule missing".into(),
            },
            AgentEvent::Tamper {
                at_ms: now + 1,
                difference: "chain input: 1 unexpected rule".into(),
            },
        ],
    };
    let (s, v) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/events",
            Some(serde_json::to_value(&events).unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let alerts = api.admin_ok(Method::GET, "/api/v1/alerts", None).await;
    let kinds: Vec<&str> = alerts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"potentially_blocked"), "{alerts}");
    // Each tamper is its own alert and its own audit entry, with its difference.
    assert_eq!(
        kinds.iter().filter(|k| **k == "tamper").count(),
        2,
        "{alerts}"
    );
    let audit = api
        .admin_ok(Method::GET, "/api/v1/audit?limit=1000", None)
        .await;
    let tampers: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == json!("agent.tamper"))
        .collect();
    assert_eq!(tampers.len(), 2, "{audit}");
    assert!(
        tampers.iter().any(|e| e["after"]
            .as_str()
            .is_some_and(|a| a.contains("1 unexpected rule"))),
        "{audit}"
    );
    let flows = api
        .admin_ok(Method::GET, "/api/v1/flows?address=10.0.0.66", None)
        .await;
    assert_eq!(
        flows["items"],
        json!([]),
        "accepted attempts come from conntrack"
    );
    let dropped = AgentEvents {
        events: vec![AgentEvent::Logged {
            packets: vec![logged("bulkhead default-deny ", 50002)],
        }],
    };
    api.call(
        Some(&credential),
        Method::POST,
        "/api/v1/agent/events",
        Some(serde_json::to_value(&dropped).unwrap()),
    )
    .await;
    let flows = api
        .admin_ok(Method::GET, "/api/v1/flows?address=10.0.0.66", None)
        .await;
    assert_eq!(flows["items"].as_array().unwrap().len(), 1, "{flows}");
    assert_eq!(
        flows["items"][0]["provisioned"]["verdict"],
        json!("blocked"),
        "the kernel's verdict: {flows}"
    );

    // Bad input is a 400 naming the field; nothing is stored.
    let (s, v) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/flows",
            Some(json!({"batch": "three", "flows": []})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // A removed agent's credential stops working.
    let id = agents["items"][0]["id"].as_u64().unwrap();
    api.admin_ok(Method::DELETE, &format!("/api/v1/agents/{id}"), None)
        .await;
    let (s, _) = api
        .call(Some(&credential), Method::GET, "/api/v1/agent/policy", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Posts a flow batch as the agent; the acknowledged number and whether it was a repeat.
async fn send(api: &Api, credential: &str, b: &FlowBatch) -> (u64, bool) {
    let (s, ack) = api
        .call(
            Some(credential),
            Method::POST,
            "/api/v1/agent/flows",
            Some(serde_json::to_value(b).unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    (
        ack["acked"].as_u64().unwrap(),
        ack["repeated"] == json!(true),
    )
}

/// A shop estate (web, the policy) with the agent of db enrolled; its credential.
async fn shop_with_db_agent(api: &Api) -> String {
    api.admin_ok(Method::POST,
        "/api/v1/workloads/import",
        Some(json!([{"name": "web", "kind": "vm", "managed": true, "addresses": ["10.0.0.11"], "labels": {"app": "shop", "role": "web"}, "mode": "monitor"}])),
    )
    .await;
    api.admin_ok(
        Method::PUT,
        "/api/v1/draft/files",
        Some(json!({"files": [{"name": "shop.yaml", "content": POLICY}]})),
    )
    .await;
    api.admin_ok(
        Method::POST,
        "/api/v1/provision",
        Some(json!({"comment": "shop"})),
    )
    .await;
    let key = api.pairing_key("shop-db", 1).await;
    let (s, enrolled) = api.enroll(&key, "db").await;
    assert_eq!(s, StatusCode::CREATED, "{enrolled}");
    enrolled["credential"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn batches_of_a_stream_are_stored_once_across_a_server_restart() {
    let mut api = Api::new();
    let credential = shop_with_db_agent(&api).await;
    let now = bulkhead_server::now_ms();
    let batch = |stream: &str, n: u64, ports: &[u16]| FlowBatch {
        batch: n,
        stream: Some(stream.into()),
        flows: ports.iter().map(|&p| flow(now, p)).collect(),
    };
    let s1 = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        send(&api, &credential, &batch(s1, 1, &[40001, 40002])).await,
        (1, false)
    );
    // Its answer lost, the agent sends it again: acknowledged, not stored again.
    assert_eq!(
        send(&api, &credential, &batch(s1, 1, &[40001, 40002])).await,
        (1, true)
    );
    assert_eq!(api.stored_connections().await, 2);

    // The server restarts (the agent's last answer lost with it): the stream's mark
    // is in the flow store, so the repeat is still recognised.
    api = api.restart();
    assert_eq!(
        send(&api, &credential, &batch(s1, 1, &[40001, 40002])).await,
        (1, true)
    );
    assert_eq!(api.stored_connections().await, 2);
    // Batches dropped from a full spool leave gaps; later ones are stored.
    assert_eq!(
        send(&api, &credential, &batch(s1, 4, &[40003])).await,
        (4, false)
    );
    assert_eq!(
        send(&api, &credential, &batch(s1, 2, &[40009])).await,
        (4, true)
    );
    assert_eq!(api.stored_connections().await, 3);
    // Another stream (a spool made anew) starts over.
    assert_eq!(
        send(
            &api,
            &credential,
            &batch("fedcba9876543210fedcba9876543210", 1, &[40004])
        )
        .await,
        (1, false)
    );
    assert_eq!(api.stored_connections().await, 4);

    // Stream names and numbers that do not check out are refused, naming the field.
    for (body, field) in [
        (json!({"batch": 1, "stream": "a b", "flows": []}), "stream"),
        (json!({"batch": 1, "stream": "", "flows": []}), "stream"),
        (
            json!({"batch": 1, "stream": "x".repeat(65), "flows": []}),
            "stream",
        ),
        (json!({"batch": 0, "stream": "s", "flows": []}), "batch"),
        (
            json!({"batch": u64::MAX, "stream": "s", "flows": []}),
            "batch",
        ),
    ] {
        let (s, v) = api
            .call(
                Some(&credential),
                Method::POST,
                "/api/v1/agent/flows",
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["field"], json!(field), "{v}");
    }
    assert_eq!(api.stored_connections().await, 4);
}

#[tokio::test]
async fn agents_spool_counters_show_in_the_api_and_metrics() {
    let api = Api::new();
    let credential = shop_with_db_agent(&api).await;
    let status = json!({
        "spool_flows": 120, "spool_bytes": 40960, "spool_batches_dropped": 2,
        "spool_flows_dropped": 700, "flows_dropped": 5, "spool_corrupt": 1,
        "flow_batches_repeated": 3,
    });
    let (s, v) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/heartbeat",
            Some(json!({ "status": status })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let agents = api.admin_ok(Method::GET, "/api/v1/agents", None).await;
    let reported = &agents["items"][0]["status"];
    for (k, want) in status.as_object().unwrap() {
        assert_eq!(&reported[k], want, "{k}: {agents}");
    }
    let router = bulkhead_server::router(api.state.clone());
    let resp = router
        .oneshot(
            Request::get("/metrics")
                .header("authorization", format!("Bearer {}", api.admin))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    for line in [
        "bulkhead_agent_flows_spooled 120\n",
        "bulkhead_agent_spool_bytes 40960\n",
        "bulkhead_agent_flows_dropped 705\n",
        "bulkhead_agent_spool_corrupt 1\n",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
}

#[tokio::test]
async fn metrics_count_agents_by_state_and_sync() {
    let api = Api::new();
    let key = api.pairing_key("shop-db", 2).await;
    let (s, enrolled) = api.enroll(&key, "db").await;
    assert_eq!(s, StatusCode::CREATED, "{enrolled}");
    let metrics = |api: &Api| {
        let router = bulkhead_server::router(api.state.clone());
        let auth = format!("Bearer {}", api.admin);
        async move {
            let resp = router
                .oneshot(
                    Request::get("/metrics")
                        .header("authorization", auth)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        }
    };
    let text = metrics(&api).await;
    assert!(
        text.contains("bulkhead_agents{state=\"online\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("bulkhead_agents{state=\"offline\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("bulkhead_agents_out_of_sync 1\n"),
        "nothing applied yet: {text}"
    );
    let credential = enrolled["credential"].as_str().unwrap();
    let (_, p) = api
        .call(Some(credential), Method::GET, "/api/v1/agent/policy", None)
        .await;
    api.call(
        Some(credential),
        Method::POST,
        "/api/v1/agent/heartbeat",
        Some(json!({"applied_revision": p["revision"]})),
    )
    .await;
    let text = metrics(&api).await;
    assert!(text.contains("bulkhead_agents_out_of_sync 0\n"), "{text}");
}

#[tokio::test]
async fn a_pairing_key_cannot_take_over_a_workload_and_agents_report_only_their_own_traffic() {
    let api = Api::new();
    // An enforced database imported from the CMDB, and one at another address.
    api.admin_ok(Method::POST,
        "/api/v1/workloads/import",
        Some(json!([
            {"name": "db", "kind": "vm", "managed": true, "addresses": ["10.0.0.13"], "labels": {"app": "pay", "role": "db"}, "mode": "enforced"},
            {"name": "pay-db", "kind": "vm", "managed": true, "addresses": ["10.9.9.9"], "labels": {"app": "pay", "role": "db"}, "mode": "enforced"}
        ])),
    )
    .await;
    let key = api.pairing_key("shop", 3).await;

    // A key for new workloads cannot make a host an existing workload: the agent waits
    // for an admin, its credential is refused, and the workload is untouched.
    let (s, v) = api.enroll(&key, "pay-db").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert!(
        v["pending"]
            .as_str()
            .unwrap()
            .contains("only create new workloads"),
        "{v}"
    );
    let pending = v["credential"].as_str().unwrap().to_string();
    let (s, _) = api
        .call(Some(&pending), Method::GET, "/api/v1/agent/policy", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let w = api
        .admin_ok(Method::GET, "/api/v1/workloads/pay-db", None)
        .await;
    assert_eq!(w["addresses"], json!(["10.9.9.9"]), "{w}");

    // A key bound to another workload is refused outright, and uses nothing up.
    let bound = api.bound_key("db-only", json!({"workload": "db"})).await;
    let (s, v) = api.enroll(&bound, "pay-db").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v.to_string().contains("enrolls only workload db"), "{v}");

    // The key bound to the workload adopts it on the machine the row describes: its
    // addresses, labels and stricter mode stay.
    let (s, v) = api.enroll(&bound, "db").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let credential = v["credential"].as_str().unwrap().to_string();
    let w = api
        .admin_ok(Method::GET, "/api/v1/workloads/db", None)
        .await;
    assert_eq!(w["mode"], json!("enforced"), "enrolling never loosens: {w}");
    assert_eq!(w["labels"], json!({"app": "pay", "role": "db"}), "{w}");
    assert_eq!(w["addresses"], json!(["10.0.0.13"]), "{w}");

    // A second host with the same name cannot replace the enrolled agent.
    let (s, v) = api.enroll(&bound, "db").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(v.to_string().contains("already has an agent"), "{v}");
    let profiles = api
        .admin_ok(Method::GET, "/api/v1/pairing-profiles", None)
        .await;
    let uses = |name: &str| {
        profiles["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == json!(name))
            .map(|p| p["uses"].clone())
    };
    assert_eq!(uses("db-only"), Some(json!(1)), "{profiles}");

    // The waiting agent is listed with what its host reports beside what the
    // workload has, for the admin to decide on.
    let agents = api.admin_ok(Method::GET, "/api/v1/agents", None).await;
    let waiting = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["workload"] == json!("pay-db"))
        .unwrap()
        .clone();
    assert!(waiting["pending"].is_string(), "{waiting}");
    assert_eq!(
        waiting["address_drift"]["reported_not_recorded"],
        json!(["10.0.0.13"]),
        "{waiting}"
    );
    // Flows and logged packets that are not the agent's own, or far in the future,
    // are not stored nor alerted.
    let now = bulkhead_server::now_ms();
    let mut foreign = flow(now, 40001);
    foreign.dst = "10.9.9.9".parse().unwrap();
    let mut future = flow(now, 40002);
    future.start_ms = now + 86_400_000;
    future.end_ms = now + 86_400_001;
    let batch = FlowBatch {
        batch: 1,
        stream: Some("s".into()),
        flows: vec![foreign, future, flow(now, 40003)],
    };
    let (s, _) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/flows",
            Some(serde_json::to_value(&batch).unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        api.stored_connections().await,
        1,
        "only the agent's own flow"
    );
    let pay = api
        .admin_ok(Method::GET, "/api/v1/flows?address=10.9.9.9", None)
        .await;
    assert_eq!(pay["items"], json!([]), "{pay}");
    let invented = AgentEvents {
        events: vec![AgentEvent::Logged {
            packets: vec![
                LoggedPacket {
                    at_ms: now,
                    prefix: "bulkhead default-deny ".into(),
                    protocol: 6,
                    src: "10.0.0.66".parse().unwrap(),
                    dst: "10.9.9.9".parse().unwrap(),
                    src_port: 1,
                    dst_port: 5432,
                },
                LoggedPacket {
                    at_ms: i64::MIN,
                    prefix: "bulkhead default-deny ".into(),
                    protocol: 6,
                    src: "10.0.0.66".parse().unwrap(),
                    dst: "10.0.0.13".parse().unwrap(),
                    src_port: 2,
                    dst_port: 5432,
                },
            ],
        }],
    };
    let (s, _) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/events",
            Some(serde_json::to_value(&invented).unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let alerts = api.admin_ok(Method::GET, "/api/v1/alerts", None).await;
    assert_eq!(alerts["items"], json!([]), "{alerts}");
}

#[tokio::test]
async fn a_quarantine_survives_edits_and_imports_until_released() {
    let api = Api::new();
    api.admin_ok(Method::POST,
        "/api/v1/workloads/import",
        Some(json!([{"name": "db", "kind": "vm", "managed": true, "addresses": ["10.0.0.13"], "labels": {"app": "pay"}, "mode": "monitor"}])),
    )
    .await;
    api.admin_ok(
        Method::POST,
        "/api/v1/workloads/db/quarantine",
        Some(json!({"reason": "incident 7"})),
    )
    .await;
    let quarantined = |w: &Value| w["attributes"]["bulkhead.quarantine"] == json!("incident 7");
    // A label edit and a CMDB re-import that do not mention the quarantine keep it.
    api.admin_ok(Method::PUT,
        "/api/v1/workloads/db",
        Some(json!({"name": "db", "kind": "vm", "managed": true, "addresses": ["10.0.0.13"], "labels": {"app": "pay", "role": "db"}, "mode": "monitor"})),
    )
    .await;
    let w = api
        .admin_ok(Method::GET, "/api/v1/workloads/db", None)
        .await;
    assert!(quarantined(&w), "{w}");
    assert_eq!(
        w["labels"]["role"],
        json!("db"),
        "the edit itself is kept: {w}"
    );
    api.admin_ok(Method::POST,
        "/api/v1/workloads/import",
        Some(json!([{"name": "db", "kind": "vm", "managed": true, "addresses": ["10.0.0.13"], "labels": {"app": "pay"}, "mode": "monitor"}])),
    )
    .await;
    let w = api
        .admin_ok(Method::GET, "/api/v1/workloads/db", None)
        .await;
    assert!(quarantined(&w), "{w}");
    // Only the release lifts it.
    api.admin_ok(Method::POST, "/api/v1/workloads/db/release", None)
        .await;
    let w = api
        .admin_ok(Method::GET, "/api/v1/workloads/db", None)
        .await;
    assert!(!quarantined(&w), "{w}");
}

/// Asking for a quarantine is not enforcing it: the answer, the enforcement view and the
/// verdicts say "pending" / potentially blocked until the agent reports the quarantined
/// revision, then "applied" / blocked, with the quarantine named as the cause. The
/// failsafe port stays exempt.
#[tokio::test]
async fn a_quarantine_counts_as_enforced_only_once_its_agent_reports_it() {
    let api = Api::new();
    let credential = shop_with_db_agent(&api).await;
    let explain = |port: &'static str| {
        let api = &api;
        async move {
            api.admin_ok(
                Method::POST,
                "/api/v1/explain",
                Some(json!({"from": "web", "to": "db", "port": port, "against": "provisioned"})),
            )
            .await
        }
    };
    let before = explain("tcp/5432").await;
    assert_eq!(before["verdict"], json!("allowed"), "{before}");

    let asked = api
        .admin_ok(
            Method::POST,
            "/api/v1/workloads/db/quarantine",
            Some(json!({"reason": "incident 8"})),
        )
        .await;
    assert_eq!(asked["enforcement"], json!("pending"), "{asked}");
    let view = api
        .admin_ok(Method::GET, "/api/v1/workloads/db/enforcement", None)
        .await;
    assert_eq!(view["quarantine"]["state"], json!("pending"), "{view}");
    assert_ne!(view["desired_revision"], view["applied_revision"], "{view}");
    let pending = explain("tcp/5432").await;
    assert_eq!(
        pending["verdict"],
        json!("potentially_blocked"),
        "{pending}"
    );
    assert_eq!(
        pending["decided_by"],
        json!({"quarantine": {"workload": "db", "applied": false}}),
        "{pending}"
    );

    // The agent fetches the quarantined policy and reports it in its kernel.
    let (s, p) = api
        .call(Some(&credential), Method::GET, "/api/v1/agent/policy", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["quarantined"], json!(true), "{p}");
    let (s, hb) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/heartbeat",
            Some(json!({"applied_revision": p["revision"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{hb}");
    let view = api
        .admin_ok(Method::GET, "/api/v1/workloads/db/enforcement", None)
        .await;
    assert_eq!(view["quarantine"]["state"], json!("applied"), "{view}");
    assert_eq!(view["state"], json!("applied"), "{view}");
    let applied = explain("tcp/5432").await;
    assert_eq!(applied["verdict"], json!("blocked"), "{applied}");
    assert_eq!(
        applied["decided_by"],
        json!({"quarantine": {"workload": "db", "applied": true}}),
        "{applied}"
    );
    assert!(
        applied["summary"]
            .as_str()
            .is_some_and(|s| s.contains("db is quarantined")),
        "{applied}"
    );
    // Management access stays open, and is explained as such.
    let ssh = explain("tcp/22").await;
    assert_eq!(ssh["exempt"], json!("failsafe"), "{ssh}");
    assert_eq!(ssh["verdict"], json!("potentially_blocked"), "{ssh}");

    // Released: the rules decide again.
    api.admin_ok(Method::POST, "/api/v1/workloads/db/release", None)
        .await;
    let released = explain("tcp/5432").await;
    assert_eq!(released["verdict"], json!("allowed"), "{released}");
}

/// A connection an enforcing end should have dropped, seen established by an agent's
/// conntrack after that end's table was in force, is an enforcement breach; the same
/// connection opened before the table was applied, one that never got an answer, and
/// one the policy allows are not.
#[tokio::test]
async fn an_established_connection_the_enforced_policy_blocks_is_a_breach() {
    let api = Api::new();
    let credential = shop_with_db_agent(&api).await;
    let mut db = api
        .admin_ok(Method::GET, "/api/v1/workloads/db", None)
        .await;
    db["mode"] = json!("enforced");
    api.admin_ok(Method::PUT, "/api/v1/workloads/db", Some(db))
        .await;
    let now = bulkhead_server::now_ms();
    let applied_at = now - 60_000;
    let (_, p) = api
        .call(Some(&credential), Method::GET, "/api/v1/agent/policy", None)
        .await;
    let (s, hb) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/heartbeat",
            Some(
                json!({"applied_revision": p["revision"], "status": {"applied_at_ms": applied_at}}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{hb}");

    let attacker = |src_port: u16, start_ms: i64, reverse_packets: u64| HostFlow {
        src: "10.0.0.66".parse().unwrap(),
        src_port,
        reverse_packets,
        start_ms,
        end_ms: start_ms + 1_000,
        ..flow(now, src_port)
    };
    let batch = FlowBatch {
        batch: 1,
        stream: Some("00000000000000000000000000000001".into()),
        flows: vec![
            // Opened while the enforced table was in force, and answered: a breach.
            attacker(41000, now - 10_000, 8),
            // Opened before the table was applied: not held against it.
            attacker(41001, applied_at - 30_000, 8),
            // Never answered (the SYN was dropped): nothing to report.
            attacker(41002, now - 10_000, 0),
            // Allowed by the policy.
            flow(now, 41003),
        ],
    };
    assert_eq!(send(&api, &credential, &batch).await, (1, false));
    let alerts = api
        .admin_ok(Method::GET, "/api/v1/alerts?kind=enforcement_breach", None)
        .await;
    let items = alerts["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{alerts}");
    let a = &items[0];
    assert_eq!(a["severity"], json!("critical"), "{a}");
    assert_eq!(a["details"]["enforced_by"], json!(["db"]), "{a}");
    assert_eq!(a["details"]["src"], json!("10.0.0.66"), "{a}");
    assert_eq!(a["details"]["service"], json!("tcp/5432"), "{a}");
    assert_eq!(a["details"]["decided_by"], json!("the default deny"), "{a}");
    assert_eq!(a["details"]["evidence"]["reverse_packets"], json!(8), "{a}");

    // Without a report of when the table went in, nothing is held against it.
    let (s, _) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/heartbeat",
            Some(json!({"applied_revision": "0000000000000000"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let again = FlowBatch {
        batch: 2,
        stream: Some("00000000000000000000000000000001".into()),
        flows: vec![attacker(41004, now - 5_000, 8)],
    };
    assert_eq!(send(&api, &credential, &again).await, (2, false));
    let alerts = api
        .admin_ok(Method::GET, "/api/v1/alerts?kind=enforcement_breach", None)
        .await;
    assert_eq!(alerts["items"][0]["count"], json!(1), "{alerts}");
}
