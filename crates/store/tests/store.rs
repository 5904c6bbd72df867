//! What only the SQLite flow store has: a file that is reopened, migrated, refused or
//! corrupted. What both backends do is in tests/flows.rs.
mod common;

use std::sync::{Arc, mpsc};
use std::time::Duration;

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
        let store = SqliteFlowStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), 2);
        store.upsert(&model).unwrap();
        let mark = bulkhead_store::BatchMark {
            source: "agent 1",
            stream: "s",
            seq: 7,
        };
        store.upsert_batch(mark, T0, &[]).unwrap();
    }
    let store = SqliteFlowStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 2);
    // The batches a stream has written survive the restart.
    assert_eq!(store.batch_mark("agent 1", "s").unwrap(), Some(7));
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
                supported: 2
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
    let store = SqliteFlowStore::open(path).unwrap();
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
    let store = SqliteFlowStore::open(&path).unwrap();
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
    let store = SqliteFlowStore::in_memory().unwrap();
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

/// Reads take a connection of their own from the pool: a query answers while a write
/// transaction holds the writer, and sees the last commit, not the write in progress.
/// With one connection behind one lock, as before the pool, the read would wait for the
/// write, which waits for the read's answer: the test would fail at the guard below.
#[test]
fn reads_go_on_while_a_write_holds_the_writer() {
    let store = Arc::new(SqliteFlowStore::in_memory().unwrap());
    let model = estate();
    let (first, second) = model.split_at(model.len() / 2);
    store.upsert(first).unwrap();
    let committed = everything(&store);
    assert!(!committed.is_empty());

    let (held, is_held) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let writer = {
        let (store, second) = (store.clone(), second.to_vec());
        std::thread::spawn(move || {
            store.upsert_pausing(&second, || {
                held.send(()).unwrap();
                released.recv().unwrap();
            })
        })
    };
    is_held.recv().unwrap();
    // Read on a thread of its own, so that a read stuck behind the writer fails the test
    // (after a generous wait, only a guard against hanging) instead of hanging it.
    let (answer, answered) = mpsc::channel();
    {
        let store = store.clone();
        std::thread::spawn(move || answer.send(everything(&store)));
    }
    let during = answered.recv_timeout(Duration::from_secs(120));
    release.send(()).unwrap();
    writer.join().unwrap().unwrap();
    let during = during.expect("the read waited for the write transaction");
    assert_eq!(during, committed, "a read sees the last commit only");

    let reference = SqliteFlowStore::in_memory().unwrap();
    reference.upsert(first).unwrap();
    reference.upsert(second).unwrap();
    let after = everything(&store);
    assert_ne!(after, committed);
    assert_eq!(after, everything(&reference));
}

/// The server shares one store between request handlers and writers without a lock.
#[test]
fn the_store_is_shared_between_threads() {
    fn shared<T: Send + Sync + 'static>(_: &T) {}
    let store: bulkhead_store::SharedFlowStore = Arc::new(SqliteFlowStore::in_memory().unwrap());
    shared(&store);
    let model = estate();
    std::thread::scope(|s| {
        for chunk in model.chunks(model.len().div_ceil(4)) {
            let store = &store;
            s.spawn(move || store.upsert(chunk).unwrap());
            s.spawn(move || store.stats().unwrap());
        }
    });
    let reference = SqliteFlowStore::in_memory().unwrap();
    reference.upsert(&model).unwrap();
    assert_eq!(store.stats().unwrap(), reference.stats().unwrap());
}

#[test]
fn a_version_1_file_gains_batch_marks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.db");
    let model = estate();
    {
        let store = SqliteFlowStore::open(&path).unwrap();
        store.upsert(&model).unwrap();
    }
    // What version 1 looked like.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("DROP TABLE batch_mark; UPDATE schema_version SET version = 1")
        .unwrap();
    drop(raw);
    let store = SqliteFlowStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 2);
    assert_eq!(
        store.query(&all_minutes()).unwrap().len(),
        expected(&model, &all_minutes()).len()
    );
    let mark = bulkhead_store::BatchMark {
        source: "agent 1",
        stream: "s",
        seq: 1,
    };
    assert_eq!(
        store.upsert_batch(mark, T0, &[]).unwrap(),
        bulkhead_store::BatchWrite::Stored
    );
}
