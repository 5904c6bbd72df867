//! Direct enforcement control through the real router and stores: the impact preview
//! replays the stored traffic against the provisioned policy before and after, nothing
//! is written without `apply`, the write is the same audited inventory change a rollout
//! makes, and only admins and secops may apply.

use axum::http::{Method, StatusCode};
use bulkhead_model::{Bucket, FlowSummary, Labels, SummaryKey};
use serde_json::{Value, json};

mod common;
use common::Api;

const POLICY: &str = "bulkhead: v1\nkind: tier\nname: application\norder: 10\n---\nbulkhead: v1\nkind: ruleset\nname: shop\ntier: application\nscope:\n  app: shop\nrules:\n  - id: web-to-db\n    action: allow\n    from: [role=web]\n    to: [role=db]\n    services: [tcp/5432]\n";

/// web and db (monitor) under a policy that lets web reach db on tcp/5432, and an hour
/// of traffic: web → db tcp/5432 (allowed), an outsider → db tcp/5432 and tcp/22 (the
/// failsafe port) that the policy denies.
async fn estate(api: &Api) {
    let w = |name: &str, addr: &str, role: &str| {
        json!({"name": name, "kind": "vm", "managed": true, "addresses": [addr],
               "labels": {"app": "shop", "role": role}, "mode": "monitor"})
    };
    api.admin_ok(
        Method::POST,
        "/api/v1/workloads/import",
        Some(json!([
            w("web", "10.0.0.11", "web"),
            w("db", "10.0.0.13", "db")
        ])),
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
    let now = bulkhead_server::now_ms();
    let hour = Bucket::Hour.start_of(now);
    let labels = |role: &str| Labels::parse_list(&format!("app=shop,role={role}")).unwrap();
    let sum = |src: &str, port: u16, connections: u64, sl: Labels| FlowSummary {
        key: SummaryKey {
            bucket: Bucket::Hour,
            bucket_start_ms: hour,
            src: src.parse().unwrap(),
            dst: "10.0.0.13".parse().unwrap(),
            proto: 6,
            port,
            process: None,
        },
        packets: connections * 4,
        bytes: connections * 400,
        connections,
        first_seen_ms: hour,
        last_seen_ms: hour + 60_000,
        reporter: None,
        src_workload: None,
        dst_workload: None,
        src_labels: sl,
        dst_labels: labels("db"),
        provisioned: None,
        draft: None,
    };
    api.state
        .flows
        .upsert(&[
            sum("10.0.0.11", 5432, 10, labels("web")),
            sum("10.0.0.66", 5432, 3, Labels::new()),
            sum("10.0.0.66", 22, 2, Labels::new()),
        ])
        .unwrap();
}

async fn mode_of(api: &Api, name: &str) -> Value {
    api.admin_ok(Method::GET, &format!("/api/v1/workloads/{name}"), None)
        .await["mode"]
        .clone()
}

#[tokio::test]
async fn a_mode_change_is_previewed_on_real_traffic_then_applied_and_audited() {
    let api = Api::new();
    estate(&api).await;

    let preview = api
        .admin_ok(
            Method::POST,
            "/api/v1/enforcement/mode",
            Some(json!({"workload": "db", "mode": "enforced"})),
        )
        .await;
    assert_eq!(preview["applied"], json!(false), "{preview}");
    assert_eq!(preview["changing"], json!(["db"]), "{preview}");
    let impact = &preview["impact"];
    // Only the outsider's tcp/5432 changes: web's is allowed either way, and tcp/22 is
    // the failsafe port, which the enforced db still accepts.
    assert_eq!(impact["conversations"], json!(3), "{preview}");
    assert_eq!(impact["changed_conversations"], json!(1), "{preview}");
    assert_eq!(impact["changed_connections"], json!(3), "{preview}");
    assert_eq!(impact["newly_blocked_connections"], json!(3), "{preview}");
    assert_eq!(
        impact["groups"],
        json!([{"consumer": "10.0.0.66", "provider": "app=shop", "service": "tcp/5432",
                "from": "potentially_blocked", "to": "blocked", "conversations": 1, "connections": 3}]),
        "{preview}"
    );
    assert_eq!(
        mode_of(&api, "db").await,
        json!("monitor"),
        "a preview writes nothing"
    );

    let applied = api
        .admin_ok(
            Method::POST,
            "/api/v1/enforcement/mode",
            Some(json!({"labels": "app=shop,role=db", "mode": "enforced", "apply": true})),
        )
        .await;
    assert_eq!(applied["applied"], json!(true), "{applied}");
    assert_eq!(mode_of(&api, "db").await, json!("enforced"));
    assert_eq!(
        mode_of(&api, "web").await,
        json!("monitor"),
        "only the selection"
    );
    let audit = api
        .admin_ok(Method::GET, "/api/v1/audit?limit=1000", None)
        .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == json!("workload.mode") && e["target"] == json!("workload/db")),
        "{audit}"
    );
    // The desired revision moved: nothing enforces it until an agent reports it.
    let view = api
        .admin_ok(Method::GET, "/api/v1/workloads/db/enforcement", None)
        .await;
    assert_eq!(view["mode"], json!("enforced"), "{view}");
    assert_eq!(view["state"], json!("no_agent"), "{view}");

    // Applying the same mode again changes nothing.
    let again = api
        .admin_ok(
            Method::POST,
            "/api/v1/enforcement/mode",
            Some(json!({"workload": "db", "mode": "enforced", "apply": true})),
        )
        .await;
    assert_eq!(again["changing"], json!([]), "{again}");
    assert_eq!(
        again["impact"]["changed_conversations"],
        json!(0),
        "{again}"
    );
}

#[tokio::test]
async fn bad_requests_name_their_field_and_only_writers_apply() {
    let api = Api::new();
    estate(&api).await;
    for (body, field) in [
        (json!({"mode": "enforced"}), "workload"),
        (
            json!({"workload": "db", "labels": "app=shop", "mode": "enforced"}),
            "workload",
        ),
        (json!({"workload": "db", "mode": "strict"}), "mode"),
        (
            json!({"workload": "db", "mode": "enforced", "days": 0}),
            "days",
        ),
        (
            json!({"labels": "app=nothing", "mode": "enforced"}),
            "labels",
        ),
        (
            json!({"workload": "db", "mode": "enforced", "force": true}),
            "force",
        ),
    ] {
        let (s, v) = api
            .call(
                Some(&api.admin),
                Method::POST,
                "/api/v1/enforcement/mode",
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v.to_string().contains(field),
            "{body} should name {field}: {v}"
        );
    }
    let (s, v) = api
        .call(
            Some(&api.admin),
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "ops", "role": "netops"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let netops = v["token"].as_str().unwrap().to_string();
    let preview = api
        .ok(
            &netops,
            Method::POST,
            "/api/v1/enforcement/mode",
            Some(json!({"workload": "db", "mode": "enforced"})),
        )
        .await;
    assert_eq!(
        preview["applied"],
        json!(false),
        "netops may preview: {preview}"
    );
    let (s, v) = api
        .call(
            Some(&netops),
            Method::POST,
            "/api/v1/enforcement/mode",
            Some(json!({"workload": "db", "mode": "enforced", "apply": true})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(mode_of(&api, "db").await, json!("monitor"));
}
