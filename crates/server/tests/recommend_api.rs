//! `POST /api/v1/recommendations` and `GET /api/v1/coverage` through the real router
//! and stores: proposals beside the draft, writing them (audited), coverage before and
//! after, and the roles.

use axum::http::{Method, StatusCode};
use bulkhead_model::{Bucket, FlowSummary, Labels, SummaryKey};
use serde_json::json;

mod common;
use common::Api;

/// 2024-03-04T09:00:00Z and the window around it.
const T0: i64 = 1_709_542_800_000;
const WINDOW: &str = "from_ms=1709539200000&to_ms=1709553600000";

impl Api {
    async fn token(&self, role: &str, scope: Option<&str>) -> String {
        let (s, v) = self
            .call(
                Some(&self.admin),
                Method::POST,
                "/api/v1/tokens",
                Some(json!({"name": role, "role": role, "scope": scope})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    async fn seed(&self) {
        let a = Some(self.admin.as_str());
        let w = |name: &str, addr: &str, app: &str, role: &str| {
            json!({"name": name, "kind": "vm", "managed": true, "addresses": [addr],
                   "labels": {"app": app, "role": role, "env": "prod"}, "mode": "monitor"})
        };
        let workloads = json!([
            w("pay-web", "10.0.1.1", "payments", "web"),
            w("pay-app", "10.0.1.2", "payments", "app"),
            w("pay-db", "10.0.1.3", "payments", "db"),
            w("shop-web", "10.0.2.1", "shop", "web"),
            w("shop-app", "10.0.2.2", "shop", "app"),
        ]);
        let (s, v) = self
            .call(a, Method::POST, "/api/v1/workloads/import", Some(workloads))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let files = json!({"files": [{"name": "p.yaml", "content":
            "bulkhead: v1\nkind: tier\nname: guardrails\norder: 10\n---\nbulkhead: v1\nkind: tier\nname: application\norder: 20\n---\nbulkhead: v1\nkind: ruleset\nname: payments\ntier: application\nscope: {app: payments}\nrules:\n  - {id: pay-app-db, action: allow, from: [role=app], to: [role=db], services: [tcp/5432]}\n  - {id: pay-never, action: allow, from: [role=db], to: [role=web], services: [tcp/9]}\n"}]});
        let (s, v) = self
            .call(a, Method::PUT, "/api/v1/draft/files", Some(files))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");

        let labels = |app: &str, role: &str| {
            Labels::parse_list(&format!("app={app},env=prod,role={role}")).unwrap()
        };
        let sum = |src: &str, dst: &str, port: u16, sl: Labels, dl: Labels| FlowSummary {
            key: SummaryKey {
                bucket: Bucket::Hour,
                bucket_start_ms: T0,
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                proto: 6,
                port,
                process: None,
            },
            packets: 40,
            bytes: 4000,
            connections: 10,
            first_seen_ms: T0,
            last_seen_ms: T0 + 60_000,
            reporter: None,
            src_workload: None,
            dst_workload: None,
            src_labels: sl,
            dst_labels: dl,
            provisioned: None,
            draft: None,
        };
        let rows = vec![
            sum(
                "10.0.1.1",
                "10.0.1.2",
                8080,
                labels("payments", "web"),
                labels("payments", "app"),
            ),
            sum(
                "10.0.1.2",
                "10.0.1.3",
                5432,
                labels("payments", "app"),
                labels("payments", "db"),
            ),
            sum(
                "10.0.2.2",
                "10.0.1.2",
                8443,
                labels("shop", "app"),
                labels("payments", "app"),
            ),
            sum(
                "10.0.2.1",
                "10.0.2.2",
                8080,
                labels("shop", "web"),
                labels("shop", "app"),
            ),
        ];
        self.state.flows.upsert(&rows).unwrap();
    }
}

#[tokio::test]
async fn recommendations_fill_the_gaps_of_the_draft_and_coverage_shows_it() {
    let api = Api::new();
    api.seed().await;
    let a = Some(api.admin.as_str());

    // Before: only the app → db conversation is allowed.
    let (s, c) = api
        .call(a, Method::GET, &format!("/api/v1/coverage?{WINDOW}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["connections"], 40);
    assert_eq!(c["connections_allowed"], 10);
    assert_eq!(c["version"], "draft");
    let blocked = c["would_block"].as_array().unwrap();
    assert_eq!(blocked.len(), 3, "{c}");
    assert!(
        blocked
            .iter()
            .any(|g| g["source"] == "app=shop env=prod role=app"
                && g["destination"] == "app=payments env=prod role=app"
                && g["service"] == "tcp/8443"
                && g["denied_by"] == json!([]))
    );
    assert_eq!(c["unused_rules"], json!(["payments/pay-never"]));
    assert_eq!(c["over_broad"], json!([]));

    // A preview changes nothing.
    let netops = api.token("netops", None).await;
    let (s, v) = api
        .call(
            Some(&netops),
            Method::POST,
            "/api/v1/recommendations",
            Some(json!({"from_ms": T0 - 3_600_000, "to_ms": T0 + 3_600_000, "apply": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], false);
    assert_eq!(v["stats"]["already_allowed"], 1);
    assert_eq!(v["stats"]["recommended"], 3);
    let yaml: String = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["yaml"].as_str().unwrap().to_string())
        .collect();
    assert!(yaml.contains("app=shop role=app"), "{yaml}");
    let (_, draft) = api
        .call(a, Method::GET, "/api/v1/draft/objects?kind=ruleset", None)
        .await;
    assert_eq!(draft.as_array().unwrap().len(), 1);

    // netops may not write the draft.
    let (s, v) = api
        .call(
            Some(&netops),
            Method::POST,
            "/api/v1/recommendations",
            Some(json!({"from_ms": T0 - 3_600_000, "to_ms": T0 + 3_600_000})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // secops writes it; every object is audited.
    let secops = api.token("secops", None).await;
    let (s, v) = api
        .call(
            Some(&secops),
            Method::POST,
            "/api/v1/recommendations",
            Some(json!({"from_ms": T0 - 3_600_000, "to_ms": T0 + 3_600_000})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["applied"], true);
    let written = v["objects"].as_array().unwrap().len();
    assert!(written >= 2, "{v}");
    let (_, audit) = api
        .call(a, Method::GET, "/api/v1/audit?limit=1000", None)
        .await;
    let entries = audit["items"]
        .as_array()
        .or(audit.as_array())
        .unwrap()
        .clone();
    let applied = entries
        .iter()
        .filter(|e| e["action"] == "recommendation.apply")
        .count();
    assert_eq!(applied, written, "{audit}");

    let (s, c) = api
        .call(a, Method::GET, &format!("/api/v1/coverage?{WINDOW}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["connections_allowed"], 40, "{c}");
    assert_eq!(c["connection_share"], 1.0);
    assert_eq!(c["would_block"], json!([]));

    // Asking again proposes nothing: the draft allows everything seen.
    let (s, v) = api
        .call(
            Some(&secops),
            Method::POST,
            "/api/v1/recommendations",
            Some(json!({"from_ms": T0 - 3_600_000, "to_ms": T0 + 3_600_000})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["objects"], json!([]));
    assert_eq!(v["stats"]["already_allowed"], 4);

    // A provisioned version has its own coverage; unknown versions are 404.
    let (s, _) = api
        .call(
            a,
            Method::POST,
            "/api/v1/provision",
            Some(json!({"comment": "rec"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, c) = api
        .call(
            a,
            Method::GET,
            &format!("/api/v1/coverage?version=1&{WINDOW}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["version"], 1);
    assert_eq!(c["connection_share"], 1.0);
    let (s, _) = api
        .call(a, Method::GET, "/api/v1/coverage?version=9", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn roles_and_bad_requests() {
    let api = Api::new();
    api.seed().await;
    let owner = api.token("app_owner", Some("app=shop")).await;
    let window = json!({"from_ms": T0 - 3_600_000, "to_ms": T0 + 3_600_000, "apply": false});

    // An app owner previews only their own traffic, never someone else's scope.
    let (s, v) = api
        .call(
            Some(&owner),
            Method::POST,
            "/api/v1/recommendations",
            Some(window.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["stats"]["out_of_scope"], 0, "{v}");
    assert_eq!(v["stats"]["recommended"], 2, "{v}");
    let mut other = window.clone();
    other["scope"] = json!("app=payments");
    let (s, v) = api
        .call(
            Some(&owner),
            Method::POST,
            "/api/v1/recommendations",
            Some(other),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // Writing a proposal that touches another app's ruleset is refused, and nothing is written.
    let mut write = window.clone();
    write["apply"] = json!(true);
    let (s, v) = api
        .call(
            Some(&owner),
            Method::POST,
            "/api/v1/recommendations",
            Some(write),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (_, draft) = api
        .call(
            Some(&api.admin),
            Method::GET,
            "/api/v1/draft/objects?kind=ruleset",
            None,
        )
        .await;
    assert_eq!(draft.as_array().unwrap().len(), 1);

    // Coverage for an app owner: their traffic, their rulesets.
    let (s, c) = api
        .call(
            Some(&owner),
            Method::GET,
            &format!("/api/v1/coverage?{WINDOW}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["connections"], 20, "{c}");
    assert_eq!(c["rules"], json!([]));

    let a = Some(api.admin.as_str());
    for body in [
        json!({"granularity": "rack"}),
        json!({"scope": ""}),
        json!({"exclude": ["not-a-label"]}),
        json!({"from_ms": 10, "to_ms": 5}),
        json!({"unknown": 1}),
    ] {
        let (s, v) = api
            .call(
                a,
                Method::POST,
                "/api/v1/recommendations",
                Some(body.clone()),
            )
            .await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {s} {v}"
        );
    }
    let (s, _) = api
        .call(a, Method::GET, "/api/v1/coverage?version=abc", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.call(None, Method::GET, "/api/v1/coverage", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api
        .call(
            None,
            Method::POST,
            "/api/v1/recommendations",
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
