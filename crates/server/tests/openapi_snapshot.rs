//! The OpenAPI document is part of the API's contract: any change to it shows up in review
//! as a change to tests/data/openapi.json. To accept a change on purpose:
//! `UPDATE_SNAPSHOTS=1 cargo test -p bulkhead-server --test openapi_snapshot`.

#[test]
fn openapi_document_matches_the_snapshot() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/openapi.json");
    let mut doc = bulkhead_server::openapi::build();
    // The version changes with every release; the contract does not.
    doc["info"]["version"] = serde_json::Value::from("(version)");
    let rendered = serde_json::to_string_pretty(&sorted(doc)).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .expect("tests/data/openapi.json (UPDATE_SNAPSHOTS=1 writes it)");
    assert_eq!(
        rendered, expected,
        "the OpenAPI document changed; review and update the snapshot"
    );
}

/// Keys in sorted order whatever serde_json's map type is (feature unification can switch
/// it to insertion order in some builds), so the snapshot is the same in every build.
fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(sorted).collect())
        }
        other => other,
    }
}
