//! The REST API through the real router and stores: drafts, provisioning, versions,
//! explain, inventory, audit, errors, and the RBAC matrix including the denied cases.

use axum::http::{Method, StatusCode};
use bulkhead_server::TokenRequest;
use serde_json::{Value, json};

mod common;
use common::Api;

impl Api {
    async fn token(&self, name: &str, role: &str, scope: Option<&str>) -> String {
        let req = TokenRequest {
            name: name.into(),
            role: role.into(),
            scope: scope.map(String::from),
            expires_in_days: None,
        };
        let body = json!({"name": req.name, "role": req.role, "scope": req.scope});
        let (s, v) = self
            .call(
                Some(&self.admin),
                Method::POST,
                "/api/v1/tokens",
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    async fn seed(&self) {
        let a = Some(self.admin.as_str());
        let workloads = json!([
            {"name": "pay-web", "kind": "vm", "managed": true, "addresses": ["10.0.1.1"], "labels": {"app": "payments", "role": "web", "env": "prod"}, "mode": "monitor"},
            {"name": "pay-db", "kind": "vm", "managed": true, "addresses": ["10.0.1.2"], "labels": {"app": "payments", "role": "db", "env": "prod"}, "mode": "enforced"},
            {"name": "shop-web", "kind": "vm", "managed": true, "addresses": ["10.0.2.1"], "labels": {"app": "shop", "role": "web", "env": "prod"}, "mode": "monitor"}
        ]);
        let (s, v) = self
            .call(a, Method::POST, "/api/v1/workloads/import", Some(workloads))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let files = json!({"files": [{"name": "p.yaml", "content":
            "bulkhead: v1\nkind: tier\nname: guardrails\norder: 10\n---\nbulkhead: v1\nkind: tier\nname: application\norder: 20\n---\nbulkhead: v1\nkind: ruleset\nname: payments\ntier: application\nscope: {app: payments}\nrules:\n  - {id: pay-web-db, action: allow, from: [role=web], to: [role=db], services: [tcp/5432]}\n"}]});
        let (s, v) = self
            .call(a, Method::PUT, "/api/v1/draft/files", Some(files))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

#[tokio::test]
async fn draft_provision_versions_diff_revert_and_explain() {
    let api = Api::new();
    api.seed().await;
    let a = Some(api.admin.as_str());
    let (s, v) = api
        .call(
            a,
            Method::POST,
            "/api/v1/provision",
            Some(json!({"comment": "first"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], 1);

    // Add a rule through the object API; the draft now differs from version 1.
    let rs = json!({"tier": "application", "scope": {"app": "payments"}, "rules": [
        {"id": "pay-web-db", "action": "allow", "from": ["role=web"], "to": ["role=db"], "services": ["tcp/5432"]},
        {"id": "pay-web-db-tls", "action": "allow", "from": ["role=web"], "to": ["role=db"], "services": ["tcp/5433"]}]});
    let (s, v) = api
        .call(
            a,
            Method::PUT,
            "/api/v1/draft/objects/ruleset/payments",
            Some(rs),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["yaml"].as_str().unwrap().contains("pay-web-db-tls"));
    let (_, d) = api.call(a, Method::GET, "/api/v1/draft/diff", None).await;
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");

    let explain = json!({"from": "pay-web", "to": "pay-db", "port": "tcp/5433"});
    let (_, e) = api
        .call(a, Method::POST, "/api/v1/explain", Some(explain.clone()))
        .await;
    assert_eq!(e["verdict"], "allowed", "{e}");
    let mut against_v1 = explain.clone();
    against_v1["against"] = json!(1);
    let (_, e) = api
        .call(a, Method::POST, "/api/v1/explain", Some(against_v1))
        .await;
    assert_eq!(
        e["verdict"], "blocked",
        "pay-db enforces and version 1 has no tcp/5433 rule: {e}"
    );

    let (s, v) = api
        .call(
            a,
            Method::POST,
            "/api/v1/provision",
            Some(json!({"comment": "tls"})),
        )
        .await;
    assert_eq!((s, v["id"].clone()), (StatusCode::OK, json!(2)));
    let (_, vs) = api.call(a, Method::GET, "/api/v1/versions", None).await;
    assert_eq!(vs.as_array().unwrap().len(), 2);
    let (_, vd) = api
        .call(a, Method::GET, "/api/v1/versions/2/diff", None)
        .await;
    assert_eq!(vd.as_array().unwrap().len(), 1);

    let (s, _) = api
        .call(a, Method::POST, "/api/v1/versions/1/revert", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, rs) = api
        .call(
            a,
            Method::GET,
            "/api/v1/draft/objects/ruleset/payments",
            None,
        )
        .await;
    assert!(!rs["yaml"].as_str().unwrap().contains("pay-web-db-tls"));

    // The draft exported as files is accepted by the policy checker.
    let (_, files) = api.call(a, Method::GET, "/api/v1/draft/files", None).await;
    let sources: Vec<(String, String)> = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    bulkhead_policy::Policy::from_sources(&sources).unwrap();

    // Every change is in the audit log, with before and after.
    let (_, audit) = api
        .call(a, Method::GET, "/api/v1/audit?limit=1000", None)
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "workload.import",
        "draft.replace",
        "provision",
        "ruleset.put",
        "draft.revert",
        "token.create",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let put = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "ruleset.put")
        .unwrap();
    assert!(put["before"].as_str().unwrap().contains("pay-web-db"));
    assert!(put["after"].as_str().unwrap().contains("pay-web-db-tls"));
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field_and_changes_nothing() {
    let api = Api::new();
    api.seed().await;
    let a = Some(api.admin.as_str());
    let (_, before) = api.call(a, Method::GET, "/api/v1/draft/files", None).await;

    let bad_rule = json!({"tier": "application", "rules": [{"id": "x", "action": "permit", "from": ["any"], "to": ["any"], "services": ["any"]}]});
    let (s, v) = api
        .call(
            a,
            Method::PUT,
            "/api/v1/draft/objects/ruleset/bad",
            Some(bad_rule),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["field"]
            .as_str()
            .unwrap()
            .contains("rules[0].action"),
        "{v}"
    );

    let dangling = json!({"tier": "application", "rules": [{"id": "y", "action": "allow", "from": ["group:nope"], "to": ["any"], "services": ["any"]}]});
    let (s, v) = api
        .call(
            a,
            Method::PUT,
            "/api/v1/draft/objects/ruleset/dangling",
            Some(dangling),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown label group"),
        "{v}"
    );

    let (s, v) = api
        .call(
            a,
            Method::DELETE,
            "/api/v1/draft/objects/tier/application",
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a ruleset still uses the tier: {v}"
    );

    let (s, v) = api
        .call(
            a,
            Method::PUT,
            "/api/v1/workloads/w1",
            Some(json!({"kind": "vm", "addresses": ["10.0.1.1"]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "address already used: {v}");
    let (s, v) = api
        .call(
            a,
            Method::PUT,
            "/api/v1/workloads/w1",
            Some(json!({"kind": "toaster", "addresses": ["10.9.9.9"]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("kind"))
    );
    let (s, v) = api
        .call(
            a,
            Method::POST,
            "/api/v1/provision",
            Some(json!({"comment": " "})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("comment"))
    );
    let (s, _) = api.call(a, Method::GET, "/api/v1/versions/99", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (_, after) = api.call(a, Method::GET, "/api/v1/draft/files", None).await;
    assert_eq!(before, after);

    let huge = "x".repeat(bulkhead_server::MAX_BODY_BYTES + 1);
    let (s, _) = api
        .call(
            a,
            Method::PUT,
            "/api/v1/draft/files",
            Some(json!({"files": [{"name": "a.yaml", "content": huge}]})),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
}

/// (what, token, method, path, body, expected status)
type Case<'a> = (&'a str, &'a str, Method, String, Option<Value>, StatusCode);

#[tokio::test]
async fn rbac_matrix() {
    let api = Api::new();
    api.seed().await;
    let secops = api.token("sec", "secops", None).await;
    let netops = api.token("net", "netops", None).await;
    let owner = api
        .token("payments team", "app_owner", Some("app=payments"))
        .await;
    let shop_owner = api.token("shop team", "app_owner", Some("app=shop")).await;

    let ruleset = |app: &str, tier: &str| {
        json!({"tier": tier, "scope": {"app": app}, "rules": [
        {"id": format!("{app}-{tier}-web-db"), "action": "allow", "from": ["role=web"], "to": ["role=db"], "services": ["tcp/5432"]}]})
    };
    let label_group = json!({"labels": {"env": ["prod"]}});
    let cases: Vec<Case> = vec![
        // no token / bad token
        (
            "nobody",
            "",
            Method::GET,
            "/api/v1/workloads".into(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "bad token",
            "bh_nope",
            Method::GET,
            "/api/v1/workloads".into(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        // reads
        (
            "netops reads policy",
            &netops,
            Method::GET,
            "/api/v1/draft/objects".into(),
            None,
            StatusCode::OK,
        ),
        (
            "netops reads sprawl",
            &netops,
            Method::GET,
            "/api/v1/reports/sprawl".into(),
            None,
            StatusCode::OK,
        ),
        (
            "app owner no sprawl",
            &owner,
            Method::GET,
            "/api/v1/reports/sprawl".into(),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "netops no audit",
            &netops,
            Method::GET,
            "/api/v1/audit".into(),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "secops audit",
            &secops,
            Method::GET,
            "/api/v1/audit".into(),
            None,
            StatusCode::OK,
        ),
        (
            "owner no audit",
            &owner,
            Method::GET,
            "/api/v1/audit".into(),
            None,
            StatusCode::FORBIDDEN,
        ),
        // policy writes
        (
            "netops no write",
            &netops,
            Method::PUT,
            "/api/v1/draft/objects/ruleset/n".into(),
            Some(ruleset("payments", "application")),
            StatusCode::FORBIDDEN,
        ),
        (
            "owner own app",
            &owner,
            Method::PUT,
            "/api/v1/draft/objects/ruleset/p2".into(),
            Some(ruleset("payments", "application")),
            StatusCode::OK,
        ),
        (
            "owner other app",
            &owner,
            Method::PUT,
            "/api/v1/draft/objects/ruleset/s2".into(),
            Some(ruleset("shop", "application")),
            StatusCode::FORBIDDEN,
        ),
        (
            "owner other tier",
            &owner,
            Method::PUT,
            "/api/v1/draft/objects/ruleset/g2".into(),
            Some(ruleset("payments", "guardrails")),
            StatusCode::FORBIDDEN,
        ),
        (
            "owner no groups",
            &owner,
            Method::PUT,
            "/api/v1/draft/objects/label_group/prod".into(),
            Some(label_group.clone()),
            StatusCode::FORBIDDEN,
        ),
        (
            "shop owner cannot delete payments",
            &shop_owner,
            Method::DELETE,
            "/api/v1/draft/objects/ruleset/payments".into(),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "secops guardrails",
            &secops,
            Method::PUT,
            "/api/v1/draft/objects/ruleset/g3".into(),
            Some(ruleset("payments", "guardrails")),
            StatusCode::OK,
        ),
        (
            "secops groups",
            &secops,
            Method::PUT,
            "/api/v1/draft/objects/label_group/prod".into(),
            Some(label_group),
            StatusCode::OK,
        ),
        // provisioning, inventory, tokens
        (
            "owner no provision",
            &owner,
            Method::POST,
            "/api/v1/provision".into(),
            Some(json!({"comment": "x"})),
            StatusCode::FORBIDDEN,
        ),
        (
            "netops no provision",
            &netops,
            Method::POST,
            "/api/v1/provision".into(),
            Some(json!({"comment": "x"})),
            StatusCode::FORBIDDEN,
        ),
        (
            "secops provision",
            &secops,
            Method::POST,
            "/api/v1/provision".into(),
            Some(json!({"comment": "x"})),
            StatusCode::OK,
        ),
        (
            "netops no inventory write",
            &netops,
            Method::DELETE,
            "/api/v1/workloads/pay-web".into(),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "owner no inventory write",
            &owner,
            Method::DELETE,
            "/api/v1/workloads/pay-web".into(),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "secops no tokens",
            &secops,
            Method::GET,
            "/api/v1/tokens".into(),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            "owner cannot push draft",
            &owner,
            Method::PUT,
            "/api/v1/draft/files".into(),
            Some(json!({"files": []})),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, token, method, path, body, want) in cases {
        let t = if token.is_empty() { None } else { Some(token) };
        let (got, v) = api.call(t, method, &path, body).await;
        assert_eq!(got, want, "{what}: {v}");
        if got.is_client_error() {
            assert!(v["error"]["code"].is_string(), "{what}: error body {v}");
        }
    }

    // App owners see only their workloads.
    let (_, w) = api
        .call(Some(&owner), Method::GET, "/api/v1/workloads", None)
        .await;
    let names: Vec<&str> = w["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pay-db", "pay-web"]);

    // A revoked token stops working at once.
    let (_, list) = api
        .call(Some(&api.admin), Method::GET, "/api/v1/tokens", None)
        .await;
    let net_id = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "net")
        .unwrap()["id"]
        .clone();
    let (s, _) = api
        .call(
            Some(&api.admin),
            Method::DELETE,
            &format!("/api/v1/tokens/{net_id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .call(Some(&netops), Method::GET, "/api/v1/workloads", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn openapi_lists_every_route_and_health_endpoints_answer() {
    let api = Api::new();
    let (s, doc) = api
        .call(None, Method::GET, "/api/v1/openapi.json", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 18);
    // Before the routes below are called: they revoke token 1, the admin's.
    let (s, _) = api.call(None, Method::GET, "/metrics", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "metrics need a token");
    let (s, m) = api
        .call(Some(&api.admin), Method::GET, "/metrics", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        m.as_str()
            .unwrap()
            .contains("bulkhead_ingest_records_total 0")
    );

    // Every documented route is routed (not the fallback 404).
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{kind}", "ruleset")
                .replace("{name}", "x")
                .replace("{id}", "1");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (st, v) = api.call(Some(&api.admin), m, &concrete, None).await;
            assert!(
                !(st == StatusCode::NOT_FOUND && v["error"]["message"] == "route not found"),
                "{method} {path} is not routed"
            );
            assert_ne!(st, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    let (s, _) = api.call(None, Method::GET, "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.call(None, Method::GET, "/readyz", None).await;
    assert_eq!(s, StatusCode::OK);
}

/// Regression: the inventory was parsed as one YAML document and a parser budget refused
/// estates past ~7,500 workloads.
#[tokio::test]
async fn ten_thousand_workloads_import_and_provision() {
    let api = Api::new();
    api.seed().await;
    let a = Some(api.admin.as_str());
    let workloads: Vec<Value> = (0..10_000u32)
        .map(|i| {
            json!({"name": format!("w{i}"), "kind": "vm", "managed": true,
                   "addresses": [format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)],
                   "labels": {"app": format!("app{}", i % 100), "role": "web", "env": "prod"}, "mode": "monitor"})
        })
        .collect();
    let (s, v) = api
        .call(
            a,
            Method::POST,
            "/api/v1/workloads/import",
            Some(Value::from(workloads)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["imported"], 10_000);
    let (_, list) = api
        .call(a, Method::GET, "/api/v1/workloads?limit=1", None)
        .await;
    assert_eq!(list["total"], 10_003);
    let (s, v) = api
        .call(
            a,
            Method::POST,
            "/api/v1/provision",
            Some(json!({"comment": "big"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["workloads"], 10_003);
}

#[tokio::test]
async fn label_rules_assign_labels_people_did_not_and_are_checked_and_audited() {
    let api = Api::new();
    api.seed().await;
    let a = Some(api.admin.as_str());
    // A workload with no labels of its own, in a subnet the rules know.
    let (s, v) = api
        .call(
            a,
            Method::PUT,
            "/api/v1/workloads/dev-box",
            Some(json!({"name": "dev-box", "kind": "vm", "managed": true, "addresses": ["10.20.0.5"], "labels": {"env": "test"}, "mode": "monitor"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rules = "bulkhead: v1\nkind: label_rules\nrules:\n  - name: dev-subnet\n    match: { subnet: 10.20.0.0/16 }\n    set: { env: dev, loc: dc1 }\n";

    // A preview stores nothing.
    let (s, v) = api
        .call(
            a,
            Method::POST,
            "/api/v1/label-rules/preview",
            Some(json!({"yaml": rules})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["assigned"],
        json!([{"workload": "dev-box", "labels": {"loc": "dc1"}}]),
        "only keys the workload does not have: people's env=test wins"
    );
    let (_, w) = api
        .call(a, Method::GET, "/api/v1/workloads/dev-box", None)
        .await;
    assert!(w["labels"].get("loc").is_none(), "{w}");

    let (s, v) = api
        .call(
            a,
            Method::PUT,
            "/api/v1/label-rules",
            Some(json!({"yaml": rules})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["changed"].clone(), v["rules"].clone()),
        (json!(true), json!(1))
    );
    let (_, w) = api
        .call(a, Method::GET, "/api/v1/workloads/dev-box", None)
        .await;
    assert_eq!(w["labels"]["loc"], json!("dc1"), "{w}");
    assert_eq!(w["labels"]["env"], json!("test"), "{w}");
    let (_, list) = api
        .call(a, Method::GET, "/api/v1/workloads?labels=loc=dc1", None)
        .await;
    assert_eq!(
        list["total"],
        json!(1),
        "label selectors see derived labels: {list}"
    );
    let (_, got) = api.call(a, Method::GET, "/api/v1/label-rules", None).await;
    assert_eq!(got["yaml"], json!(rules));
    assert_eq!(got["rules"], json!(["dev-subnet"]));

    // A broken document is refused naming the line and field; nothing changes.
    let broken = "bulkhead: v1\nkind: label_rules\nrules:\n  - name: bad\n    match: { subnet: 10.20.0.0/99 }\n    set: { env: dev }\n";
    let (s, v) = api
        .call(
            a,
            Method::PUT,
            "/api/v1/label-rules",
            Some(json!({"yaml": broken})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let detail = &v["error"]["details"][0];
    assert!(
        detail["field"].as_str().unwrap().starts_with("yaml."),
        "{v}"
    );
    assert_eq!(detail["line"], json!(4), "the line of the rule: {v}");
    let (_, got) = api.call(a, Method::GET, "/api/v1/label-rules", None).await;
    assert_eq!(got["yaml"], json!(rules));

    // Only admin and secops change them; every change is in the audit log.
    let netops = api.token("n", "netops", None).await;
    let (s, _) = api
        .call(
            Some(&netops),
            Method::PUT,
            "/api/v1/label-rules",
            Some(json!({"yaml": ""})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, audit) = api
        .call(a, Method::GET, "/api/v1/audit?limit=1000", None)
        .await;
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == json!("label_rules.set"))
        .expect("audited");
    assert_eq!(entry["after"], json!(rules), "{entry}");

    // Removing them removes what they assigned.
    let (s, _) = api
        .call(
            a,
            Method::PUT,
            "/api/v1/label-rules",
            Some(json!({"yaml": ""})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, w) = api
        .call(a, Method::GET, "/api/v1/workloads/dev-box", None)
        .await;
    assert!(w["labels"].get("loc").is_none(), "{w}");
}

/// A version that allows nothing locks every enforced workload down to its failsafe
/// ports: it is provisioned only when asked for explicitly, after its impact is shown.
#[tokio::test]
async fn provisioning_a_draft_that_allows_nothing_needs_confirm() {
    let api = Api::new();
    api.seed().await;
    let a = Some(api.admin.as_str());
    let (s, v) = api
        .call(
            a,
            Method::POST,
            "/api/v1/provision",
            Some(json!({"comment": "first"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = api
        .call(
            a,
            Method::DELETE,
            "/api/v1/draft/objects/ruleset/payments",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, impact) = api
        .call(a, Method::GET, "/api/v1/provision/impact", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            impact["allow_rules_before"].clone(),
            impact["allow_rules_after"].clone()
        ),
        (json!(1), json!(0)),
        "{impact}"
    );
    assert!(
        impact["confirm_required"]
            .as_str()
            .unwrap()
            .contains("drops every allow rule")
    );
    let (s, v) = api
        .call(
            a,
            Method::POST,
            "/api/v1/provision",
            Some(json!({"comment": "oops"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], json!("confirm"), "{v}");
    let (_, versions) = api.call(a, Method::GET, "/api/v1/versions", None).await;
    assert_eq!(versions.as_array().unwrap().len(), 1, "nothing provisioned");
    let (s, v) = api
        .call(
            a,
            Method::POST,
            "/api/v1/provision",
            Some(json!({"comment": "lock down on purpose", "confirm": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Validation runs outside the store's lock on a snapshot; a write that landed in
/// between makes the snapshot stale, and the change is validated again. Ten workloads
/// racing for one address: exactly one gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_are_validated_against_each_other() {
    let api = std::sync::Arc::new(Api::new());
    let mut tasks = Vec::new();
    for i in 0..10 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!([{"name": format!("racer-{i}"), "kind": "vm", "managed": true,
                "addresses": ["10.7.7.7"], "labels": {"app": "race"}, "mode": "monitor"}]);
            let admin = api.admin.clone();
            api.call(
                Some(&admin),
                Method::POST,
                "/api/v1/workloads/import",
                Some(body),
            )
            .await
            .0
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    let (_, list) = api
        .call(
            Some(&api.admin),
            Method::GET,
            "/api/v1/workloads?labels=app=race",
            None,
        )
        .await;
    assert_eq!(list["total"], json!(1), "{list}");
}
