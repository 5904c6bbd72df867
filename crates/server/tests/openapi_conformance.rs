//! The OpenAPI document and the responses agree: on an estate with workloads, policy,
//! versions, flows, an agent, a rollout and alerts, each read endpoint's real answer is
//! validated against the schema the document gives for it (JSON Schema 2020-12, as
//! OpenAPI 3.1 uses). The API fuzzer checks the same on the demo, for what it reaches.

use axum::http::{Method, StatusCode};
use bulkhead_model::{Bucket, FlowSummary, Labels, SummaryKey, SummaryVerdict, VerdictKind};
use serde_json::{Value, json};

mod common;
use common::Api;

/// The schema of `method path`'s `status` answer, with the document's components so
/// that its `$ref`s resolve.
fn schema_for(doc: &Value, method: &str, path: &str, status: u16) -> Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not in the document");
    let content = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        content.is_object(),
        "{method} {path} documents no {status} body"
    );
    let mut schema = content.clone();
    schema["components"] = doc["components"].clone();
    schema
}

fn check(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let schema = schema_for(doc, method, path, status);
    let validator = jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("{method} {path}: the schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path}: the answer does not match its schema:\n{}\n{body}",
        errors.join("\n")
    );
}

fn labels(text: &str) -> Labels {
    Labels::parse_list(text).unwrap()
}

#[tokio::test]
async fn every_read_answers_what_the_document_says() {
    let api = Api::new();
    let admin = api.admin.clone();
    let a = Some(admin.as_str());
    let ok = |(s, v): (StatusCode, Value)| {
        assert!(s.is_success(), "{s} {v}");
        v
    };
    ok(api
        .call(
            a,
            Method::POST,
            "/api/v1/workloads/import",
            Some(json!([
                {"name": "pay-web", "kind": "vm", "managed": true, "addresses": ["10.0.1.1"],
                 "labels": {"app": "payments", "role": "web"}, "mode": "monitor", "hostname": "pay-web"},
                {"name": "pay-db", "kind": "vm", "managed": true, "addresses": ["10.0.1.2"],
                 "labels": {"app": "payments", "role": "db"}, "mode": "enforced"}
            ])),
        )
        .await);
    let files = json!({"files": [{"name": "p.yaml", "content":
        "bulkhead: v1\nkind: tier\nname: application\norder: 20\n---\nbulkhead: v1\nkind: ruleset\nname: payments\ntier: application\nscope: {app: payments}\nrules:\n  - {id: pay-web-db, action: allow, from: [role=web], to: [role=db], services: [tcp/5432]}\n"}]});
    ok(api
        .call(a, Method::PUT, "/api/v1/draft/files", Some(files))
        .await);
    ok(api
        .call(
            a,
            Method::POST,
            "/api/v1/provision",
            Some(json!({"comment": "first"})),
        )
        .await);
    ok(api
        .call(
            a,
            Method::PUT,
            "/api/v1/label-rules",
            Some(json!({"yaml": "bulkhead: v1\nkind: label_rules\nrules:\n  - name: web\n    match: { hostname: '^pay-web$' }\n    set: { zone: dmz }\n"})),
        )
        .await);
    ok(api
        .call(
            a,
            Method::POST,
            "/api/v1/rollouts",
            Some(json!({"name": "pay", "selector": "app=payments",
                        "owners": [{"name": "pay team", "email": "pay@example.com"}]})),
        )
        .await);
    let profile = ok(api
        .call(
            a,
            Method::POST,
            "/api/v1/pairing-profiles",
            Some(json!({"name": "new-hosts", "labels": {"app": "x"}})),
        )
        .await);
    let enroll = json!({"pairing_key": profile["pairing_key"], "host": {
        "hostname": "new-host", "os_name": "debian", "os_version": "12", "kernel": "6.1",
        "interfaces": [{"name": "eth0", "addresses": ["10.0.9.9/24"]}]}});
    let enrolled = ok(api
        .call(None, Method::POST, "/api/v1/agent/enroll", Some(enroll))
        .await);
    let credential = enrolled["credential"].as_str().unwrap().to_string();
    // A flow the provisioned policy would block, and its alert.
    let now = bulkhead_server::now_ms();
    let summary = FlowSummary {
        key: SummaryKey {
            bucket: Bucket::Minute,
            bucket_start_ms: Bucket::Minute.start_of(now),
            src: "10.0.9.9".parse().unwrap(),
            dst: "10.0.1.2".parse().unwrap(),
            proto: 6,
            port: 5432,
            process: Some("postgres".into()),
        },
        packets: 3,
        bytes: 180,
        connections: 1,
        first_seen_ms: now,
        last_seen_ms: now,
        reporter: Some("test".into()),
        src_workload: Some("new-host".into()),
        dst_workload: Some("pay-db".into()),
        src_labels: labels("app=x"),
        dst_labels: labels("app=payments,role=db"),
        provisioned: Some(SummaryVerdict {
            verdict: VerdictKind::Blocked,
            rules: vec!["default".into()],
        }),
        draft: None,
    };
    api.state
        .flows
        .upsert(std::slice::from_ref(&summary))
        .unwrap();
    let mut hour = summary.clone();
    hour.key.bucket = Bucket::Hour;
    hour.key.bucket_start_ms = Bucket::Hour.start_of(now);
    api.state.flows.upsert(&[hour]).unwrap();
    bulkhead_server::alerts_from_summaries(&api.state, &[summary]);
    // An exporter, so the collector's exporter list has a row to check.
    bulkhead_server::start_collectors(&api.state, vec!["127.0.0.1:0".parse().unwrap()], 1).unwrap();
    let collector = bulkhead_server::collector_addrs(&api.state)[0];
    let netflow5 = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/netflow/netflow5.dat"),
    )
    .unwrap();
    // The file holds several v5 datagrams back to back; the header's count says
    // where the first one ends.
    let first_len = 24 + 48 * usize::from(u16::from_be_bytes([netflow5[2], netflow5[3]]));
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&netflow5[..first_len], collector)
        .unwrap();
    let asked = std::time::Instant::now();
    let exporters = loop {
        let (_, body) = api
            .call(a, Method::GET, "/api/v1/collector/exporters", None)
            .await;
        if body["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break body;
        }
        assert!(
            asked.elapsed() < std::time::Duration::from_secs(120),
            "the exporter never showed: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(exporters["items"][0]["address"], "127.0.0.1");
    assert!(exporters["items"][0]["records"].as_u64().unwrap() > 0);

    let doc = ok(api
        .call(None, Method::GET, "/api/v1/openapi.json", None)
        .await);
    for (path, concrete) in [
        ("/api/v1/workloads", "/api/v1/workloads".to_string()),
        (
            "/api/v1/workloads/{name}",
            "/api/v1/workloads/pay-db".into(),
        ),
        ("/api/v1/label-rules", "/api/v1/label-rules".into()),
        ("/api/v1/draft/objects", "/api/v1/draft/objects".into()),
        (
            "/api/v1/draft/objects/{kind}/{name}",
            "/api/v1/draft/objects/ruleset/payments".into(),
        ),
        ("/api/v1/draft/files", "/api/v1/draft/files".into()),
        ("/api/v1/draft/diff", "/api/v1/draft/diff".into()),
        (
            "/api/v1/provision/impact",
            "/api/v1/provision/impact".into(),
        ),
        ("/api/v1/versions", "/api/v1/versions".into()),
        ("/api/v1/versions/{id}", "/api/v1/versions/1".into()),
        (
            "/api/v1/versions/{id}/diff",
            "/api/v1/versions/1/diff".into(),
        ),
        ("/api/v1/flows", "/api/v1/flows".into()),
        ("/api/v1/reports/sprawl", "/api/v1/reports/sprawl".into()),
        ("/api/v1/coverage", "/api/v1/coverage".into()),
        ("/api/v1/alerts", "/api/v1/alerts".into()),
        ("/api/v1/audit", "/api/v1/audit".into()),
        ("/api/v1/tokens", "/api/v1/tokens".into()),
        ("/api/v1/rollouts", "/api/v1/rollouts".into()),
        ("/api/v1/rollouts/{id}", "/api/v1/rollouts/1".into()),
        (
            "/api/v1/pairing-profiles",
            "/api/v1/pairing-profiles".into(),
        ),
        ("/api/v1/agents", "/api/v1/agents".into()),
        ("/api/v1/whoami", "/api/v1/whoami".into()),
        (
            "/api/v1/collector/exporters",
            "/api/v1/collector/exporters".into(),
        ),
    ] {
        let (s, body) = api.call(a, Method::GET, &concrete, None).await;
        assert_eq!(s, StatusCode::OK, "{concrete}: {body}");
        check(&doc, "get", path, 200, &body);
    }
    let (s, body) = api
        .call(
            a,
            Method::POST,
            "/api/v1/explain",
            Some(json!({"from": "new-host", "to": "pay-db", "port": "tcp/5432"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    check(&doc, "post", "/api/v1/explain", 200, &body);
    let (s, body) = api
        .call(
            a,
            Method::POST,
            "/api/v1/recommendations",
            Some(json!({"apply": false, "min_observations": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(!body["objects"].as_array().unwrap().is_empty(), "{body}");
    check(&doc, "post", "/api/v1/recommendations", 200, &body);
    check(&doc, "post", "/api/v1/agent/enroll", 201, &enrolled);
    let (s, body) = api
        .call(Some(&credential), Method::GET, "/api/v1/agent/policy", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    check(&doc, "get", "/api/v1/agent/policy", 200, &body);
    let (s, body) = api
        .call(
            Some(&credential),
            Method::POST,
            "/api/v1/agent/heartbeat",
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    check(&doc, "post", "/api/v1/agent/heartbeat", 200, &body);
    // The schemas are not vacuous: a page without its items, or a workload whose
    // mode is not a mode, is refused.
    for (path, wrong) in [
        ("/api/v1/workloads", json!({"total": 1, "offset": 0})),
        (
            "/api/v1/workloads/{name}",
            json!({"name": "w", "kind": "vm", "managed": true, "addresses": [], "labels": {},
                   "mode": "sometimes", "attributes": {}}),
        ),
    ] {
        let schema = schema_for(&doc, "get", path, 200);
        assert!(
            !jsonschema::draft202012::new(&schema)
                .unwrap()
                .is_valid(&wrong),
            "{path} accepts {wrong}"
        );
    }
    // And an error body, as every 4xx carries.
    let (s, body) = api
        .call(a, Method::GET, "/api/v1/workloads/nope", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let mut schema = json!({"$ref": "#/components/schemas/Error"});
    schema["components"] = doc["components"].clone();
    assert!(
        jsonschema::draft202012::new(&schema)
            .unwrap()
            .is_valid(&body)
    );
}
