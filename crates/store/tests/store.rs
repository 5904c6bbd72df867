//! What only the SQLite flow store has: a file that is reopened, migrated, refused or
//! corrupted. What both backends do is in tests/flows.rs.
mod common;

use bulkhead_store::{Bucket, FlowStore, FlowSummary, SqliteFlowStore, StoreError};
use common::*;

fn everything(store: &SqliteFlowStore) -> Vec<FlowSummary> {
    let mut all = store.query(&all_minutes()).unwrap();
    let mut hours = all_minutes();
    hours.bucket = Bucket::Hour;
    all.extend(store.query(&hours).unwrap());
    all
}

#[test]
fn reopening_a_file_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.db");
    let model = estate();
    {
        let mut store = SqliteFlowStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 1);
        store.upsert(&model).unwrap();
    }
    let mut store = SqliteFlowStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 1);
    let mut want = expected(&model, &all_minutes());
    let mut hours = all_minutes();
    hours.bucket = Bucket::Hour;
    want.extend(expected(&model, &hours));
    assert_eq!(everything(&store), want);

    // Interned names from the first session are reused, not duplicated.
    store.upsert(&model).unwrap();
    let again = everything(&store);
    assert_eq!(again.len(), want.len());
    assert_eq!(again[0].packets, 2 * want[0].packets);
    assert_eq!(again[0].src_workload, want[0].src_workload);

    // A second connection reads beside the first (WAL).
    let reader = SqliteFlowStore::open(&path).unwrap();
    assert_eq!(everything(&reader), again);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.db");
    drop(SqliteFlowStore::open(&path).unwrap());
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("UPDATE schema_version SET version = 99", [])
        .unwrap();
    drop(raw);
    let err = SqliteFlowStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: 1
            }
        ),
        "{err}"
    );
}

#[test]
fn opening_something_that_is_not_a_database_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.db");
    std::fs::write(
        &path,
        b"this is not an sqlite file, just some text to refuse",
    )
    .unwrap();
    let err = SqliteFlowStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("flows.db"), "{err}");
}

fn corrupted(sql: &str) -> StoreError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.db");
    store_into(&path);
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(sql).unwrap();
    drop(raw);
    let store = SqliteFlowStore::open(&path).unwrap();
    store.query(&all_minutes()).unwrap_err()
}

fn store_into(path: &std::path::Path) {
    let mut store = SqliteFlowStore::open(path).unwrap();
    store.upsert(&estate()).unwrap();
}

#[test]
fn bad_rows_are_errors_that_name_the_row() {
    let cases = [
        (
            "UPDATE summary SET src = x'0501' WHERE packets = 2",
            "src is not an address",
        ),
        (
            "UPDATE summary SET packets = -1 WHERE packets = 2",
            "packets is -1",
        ),
        (
            "UPDATE summary SET port = 70000 WHERE packets = 2",
            "port is 70000",
        ),
        (
            "UPDATE summary SET proto = 'tcp' WHERE packets = 2",
            "proto is \"tcp\"",
        ),
        (
            "UPDATE summary SET prov_verdict = 9 WHERE packets = 2",
            "verdict code 9",
        ),
        (
            "UPDATE summary SET prov_rules = NULL WHERE packets = 2",
            "both be set",
        ),
        (
            "UPDATE summary SET dst_workload = 12345 WHERE packets = 2",
            "12345 does not exist",
        ),
        (
            "UPDATE summary SET dst_labels = 999 WHERE packets = 2",
            "label set 999",
        ),
        (
            "UPDATE labelset SET canon = 'App=x' WHERE id = (SELECT dst_labels FROM summary WHERE packets = 2)",
            "label key",
        ),
        (
            "UPDATE dict SET text = 'not json' WHERE id = (SELECT prov_rules FROM summary WHERE packets = 1)",
            "rule list",
        ),
    ];
    for (sql, what) in cases {
        let err = corrupted(sql);
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{sql}: {msg}");
        assert!(msg.contains(what), "{sql}: {msg}");
        assert!(
            msg.contains("bucket_start"),
            "{sql}: the row is named: {msg}"
        );
    }
    // The bad address itself is shown.
    assert!(
        corrupted("UPDATE summary SET src = x'0501' WHERE packets = 2")
            .to_string()
            .contains("x'0501'")
    );
}

#[test]
fn a_failed_batch_leaves_nothing_and_forgets_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.db");
    let mut store = SqliteFlowStore::open(&path).unwrap();
    store.upsert(&estate()).unwrap();
    // A trigger makes the next write fail after it has interned new names.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON summary WHEN NEW.port = 666
         BEGIN SELECT RAISE(ABORT, 'refused'); END;",
    )
    .unwrap();
    let mut fresh = summary(9, "10.1.1.1", "10.1.1.2", 6, 80);
    fresh.src_workload = Some("brand-new".into());
    fresh.src_labels = labels("app=new");
    let bad = summary(9, "10.1.1.1", "10.1.1.2", 6, 666);
    let err = store.upsert(&[fresh.clone(), bad]).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(
        store.query(&all_minutes()).unwrap(),
        expected(&estate(), &all_minutes())
    );
    // Had the rolled-back ids been kept, this would point at rows that do not exist.
    store.upsert(&[fresh.clone()]).unwrap();
    let mut q = all_minutes();
    q.workload = Some("brand-new".into());
    assert_eq!(store.query(&q).unwrap(), vec![fresh]);
}

#[test]
fn queries_by_workload_and_address_seek_by_hour() {
    let mut model = Vec::new();
    for hour in 0..48 {
        let mut s = summary(hour * 60, "10.0.0.1", "10.0.0.2", 6, 80);
        s.src_workload = Some("web".into());
        s.dst_workload = Some("db".into());
        model.push(s);
    }
    let mut store = SqliteFlowStore::in_memory().unwrap();
    store.upsert(&model).unwrap();
    let mut q = all_minutes();
    q.from_ms = T0 + 10 * HOUR;
    q.to_ms = T0 + 20 * HOUR;
    q.workload = Some("db".into());
    let plan = store.query_plan(&q).unwrap().join("\n");
    assert!(plan.contains("MULTI-INDEX OR"), "{plan}");
    for index in [
        "summary_src_workload (hour=? AND src_workload=?",
        "summary_dst_workload (hour=? AND dst_workload=?",
    ] {
        assert!(plan.contains(index), "no seek on {index}:\n{plan}");
    }
    assert!(!plan.contains("SCAN s"), "{plan}");
    assert_eq!(store.query(&q).unwrap(), expected(&model, &q));

    q.workload = None;
    q.address = Some(ip("10.0.0.2"));
    let plan = store.query_plan(&q).unwrap().join("\n");
    for index in [
        "summary_src (hour=? AND src=?",
        "summary_dst (hour=? AND dst=?",
    ] {
        assert!(plan.contains(index), "no seek on {index}:\n{plan}");
    }
    assert!(!plan.contains("SCAN s"), "{plan}");
    assert_eq!(store.query(&q).unwrap(), expected(&model, &q));
}
