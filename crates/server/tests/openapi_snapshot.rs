//! The OpenAPI document is part of the API's contract: any change to it shows up in review
//! as a change to tests/data/openapi.json. To accept a change on purpose:
//! `UPDATE_SNAPSHOTS=1 cargo test -p bulkhead-server --test openapi_snapshot`.

#[test]
fn openapi_document_matches_the_snapshot() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/openapi.json");
    let mut doc = bulkhead_server::openapi::build();
    // The version changes with every release; the contract does not.
    doc["info"]["version"] = serde_json::Value::from("(version)");
    let rendered = serde_json::to_string_pretty(&doc).unwrap() + "\n";
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
