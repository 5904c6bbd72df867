//! The control-plane store: every method, atomicity, append-only SQL, crash safety, on
//! SQLite and on PostgreSQL (a throwaway cluster, see common/pg.rs).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use bulkhead_store::control::{CONTROL_SCHEMA_VERSION, OBJECT_KINDS, TOKEN_TOUCH_GRANULARITY_MS};
use bulkhead_store::{
    AlertFilter, AlertObservation, AlertRecorded, AlertState, AuditContext, Change, ControlStore,
    DiffChange, DraftObject, FlowStore, NewToken, SqliteFlowStore, StoreError, StoredObject,
    StoredWorkload, control,
};
use common::backends::TestDb;
use common::pg;
use proptest::prelude::*;

/// The suite on SQLite: in memory where a test does not reopen, a file where it does.
mod sqlite {
    use super::*;

    const PROPTEST_CASES: u32 = 256;

    fn open() -> ControlStore {
        ControlStore::in_memory().unwrap()
    }

    fn fresh() -> TestDb {
        TestDb::sqlite()
    }

    include!("suite/control.rs");
}

/// The same suite on PostgreSQL: a database of its own per test.
mod postgres {
    use super::*;

    /// Fewer cases than on SQLite: each is a handful of round trips to a server, and
    /// what the property checks (the diff logic) is shared with SQLite's 256.
    const PROPTEST_CASES: u32 = 64;

    fn open() -> ControlStore {
        fresh().open()
    }

    fn fresh() -> TestDb {
        TestDb::postgres()
    }

    include!("suite/control.rs");
}

const T0: i64 = 1_704_067_200_000;

fn ctx(actor: &str, at_ms: i64, action: &str) -> AuditContext {
    AuditContext {
        actor: actor.into(),
        source: "192.0.2.10:53211".into(),
        at_ms,
        action: action.into(),
    }
}

fn alice() -> AuditContext {
    ctx("alice", T0, "ruleset.update")
}

fn put(kind: &str, name: &str, yaml: &str) -> Change {
    Change::PutObject {
        kind: kind.into(),
        name: name.into(),
        yaml: yaml.into(),
    }
}

fn put_workload(name: &str, json: &str) -> Change {
    Change::PutWorkload {
        name: name.into(),
        json: json.into(),
    }
}

fn draft(objects: &[(&str, &str, &str)]) -> Change {
    Change::ReplaceDraft {
        objects: objects
            .iter()
            .map(|(kind, name, yaml)| DraftObject {
                kind: kind.to_string(),
                name: name.to_string(),
                yaml: yaml.to_string(),
            })
            .collect(),
    }
}

fn texts(objects: &[StoredObject]) -> Vec<(String, String, String)> {
    objects
        .iter()
        .map(|o| (o.kind.clone(), o.name.clone(), o.yaml.clone()))
        .collect()
}

fn everything_in(store: &ControlStore) -> (Vec<StoredObject>, Vec<StoredWorkload>, usize) {
    (
        store.draft_objects().unwrap(),
        store.workloads().unwrap(),
        store.audit(0, usize::MAX).unwrap().len(),
    )
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

// ------------------------------------------------------------------ draft objects

// ------------------------------------------------------------------ workloads

// ------------------------------------------------------------------ replace draft

// ------------------------------------------------------------------ versions

// ------------------------------------------------------------------ diff

fn obj(kind: &str, name: &str, yaml: &str) -> StoredObject {
    StoredObject {
        kind: kind.into(),
        name: name.into(),
        yaml: yaml.into(),
        updated_ms: 0,
        updated_by: String::new(),
    }
}

#[test]
fn diff_lists_added_removed_changed_sorted() {
    let a = [
        obj("tier", "t", "1"),
        obj("ruleset", "b", "1"),
        obj("ruleset", "a", "1"),
    ];
    let mut b = vec![
        obj("ruleset", "a", "1"),
        obj("ruleset", "b", "2"),
        obj("ip_list", "c", "1"),
    ];
    b[0].updated_ms = 99; // only the text counts
    let d = control::diff(&a, &b);
    let got: Vec<_> = d
        .iter()
        .map(|d| {
            (
                d.kind.as_str(),
                d.name.as_str(),
                d.change,
                d.before.as_deref(),
                d.after.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("ip_list", "c", DiffChange::Added, None, Some("1")),
            ("ruleset", "b", DiffChange::Changed, Some("1"), Some("2")),
            ("tier", "t", DiffChange::Removed, Some("1"), None),
        ]
    );
    assert!(control::diff(&a, &a).is_empty());
    assert_eq!(DiffChange::Changed.as_str(), "changed");
}

#[test]
fn diff_of_versions_workloads() {
    let w = |name: &str, json: &str| StoredWorkload {
        name: name.into(),
        json: json.into(),
        updated_ms: 0,
        updated_by: String::new(),
    };
    let d = control::diff_workloads(&[w("a", "1"), w("b", "1")], &[w("b", "2"), w("c", "1")]);
    let got: Vec<_> = d.iter().map(|d| (d.name.as_str(), d.change)).collect();
    assert_eq!(
        got,
        [
            ("a", DiffChange::Removed),
            ("b", DiffChange::Changed),
            ("c", DiffChange::Added)
        ]
    );
}

fn objects_strategy() -> impl Strategy<Value = Vec<StoredObject>> {
    let kind = prop::sample::select(vec!["ruleset", "tier", "ip_list"]);
    let name = prop::sample::select(vec!["a", "b", "c", "d", "e"]);
    let yaml = prop::sample::select(vec!["1", "2", "3", ""]);
    prop::collection::btree_map((kind, name), yaml, 0..12).prop_map(|m| {
        m.into_iter()
            .map(|((kind, name), yaml)| obj(kind, name, yaml))
            .collect()
    })
}

type TextMap = BTreeMap<(String, String), String>;

fn as_map(objects: &[StoredObject]) -> TextMap {
    objects
        .iter()
        .map(|o| ((o.kind.clone(), o.name.clone()), o.yaml.clone()))
        .collect()
}

proptest! {
    #[test]
    fn applying_a_diff_gives_the_target(a in objects_strategy(), b in objects_strategy()) {
        let d = control::diff(&a, &b);
        let mut m = as_map(&a);
        for e in &d {
            let key = (e.kind.clone(), e.name.clone());
            prop_assert_eq!(m.get(&key), e.before.as_ref());
            match e.change {
                DiffChange::Added => prop_assert!(e.before.is_none() && e.after.is_some()),
                DiffChange::Removed => prop_assert!(e.before.is_some() && e.after.is_none()),
                DiffChange::Changed => prop_assert!(e.before.is_some() && e.before != e.after),
            }
            match &e.after {
                Some(text) => m.insert(key, text.clone()),
                None => m.remove(&key),
            };
        }
        prop_assert_eq!(m, as_map(&b));
        // Sorted, one entry per key.
        let keys: Vec<_> = d.iter().map(|e| (&e.kind, &e.name)).collect();
        prop_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // The reverse diff undoes it.
        let back = control::diff(&b, &a);
        prop_assert_eq!(back.len(), d.len());
    }
}

// ------------------------------------------------------------------ tokens

fn token(name: &str, hash_byte: u8) -> NewToken {
    NewToken {
        name: name.into(),
        role: "operator".into(),
        scope: Some("app=shop".into()),
        hash: [hash_byte; 32],
        expires_ms: Some(T0 + 86_400_000),
    }
}

// ------------------------------------------------------------------ audit

// ------------------------------------------------------------------ alerts

fn sighting(key: &str, count: u64, first: i64, last: i64) -> AlertObservation {
    AlertObservation {
        key: key.into(),
        kind: "potentially_blocked".into(),
        severity: "medium".into(),
        title: format!("flows for {key}"),
        details_json: format!("{{\"count\":{count}}}"),
        count,
        first_seen_ms: first,
        last_seen_ms: last,
    }
}

const KEY: &str = "potentially_blocked|app=shop,role=web|app=shop,role=db|tcp/5432";

// ------------------------------------------------------------------ files, schema

#[test]
fn a_non_database_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sqlite");
    std::fs::write(
        &path,
        b"this is not an sqlite file, just some text to refuse",
    )
    .unwrap();
    let err = ControlStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("control.sqlite"), "{err}");
}

#[test]
fn the_flow_store_and_the_control_store_can_share_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("both.sqlite");
    let flows = SqliteFlowStore::open(&path).unwrap();
    let mut control = ControlStore::open(&path).unwrap();
    control
        .apply(&[put("ruleset", "a", "1")], &alice())
        .unwrap();
    flows.upsert(&[]).unwrap();
    drop((flows, control));
    let flows = SqliteFlowStore::open(&path).unwrap();
    let control = ControlStore::open(&path).unwrap();
    assert_eq!(flows.schema_version().unwrap(), 2);
    assert_eq!(control.schema_version().unwrap(), CONTROL_SCHEMA_VERSION);
    assert_eq!(control.draft_objects().unwrap().len(), 1);
}

// ------------------------------------------------------------------ crash safety

/// Set in the child process of the kill -9 tests to the store's SQLite path.
const CRASH_CHILD: &str = "BULKHEAD_CONTROL_CRASH_CHILD";
/// Set in the child process of the kill -9 tests to the store's PostgreSQL settings.
const CRASH_CHILD_PG: &str = "BULKHEAD_CONTROL_CRASH_CHILD_PG";
const ACKS_BEFORE_KILL: usize = 150;

/// Does nothing in a normal test run. In the child process started by
/// [`crash_and_check`], writes until killed, printing `ack N` after each write returned
/// and `version V` after each provision returned.
#[test]
fn crash_child_writer() {
    let mut store = if let Some(path) = std::env::var_os(CRASH_CHILD) {
        ControlStore::open(path).unwrap()
    } else if let Ok(conninfo) = std::env::var(CRASH_CHILD_PG) {
        ControlStore::connect_postgres(&conninfo).unwrap()
    } else {
        return;
    };
    let mut out = std::io::stdout().lock();
    // The test harness has printed "test crash_child_writer ... " without a newline.
    writeln!(out).unwrap();
    for i in 0_i64.. {
        let who = ctx("writer", T0 + i, "workload.update");
        store
            .apply(
                &[
                    put_workload(&format!("w{i:06}"), &format!("{{\"i\":{i}}}")),
                    put("ruleset", "counter", &format!("value: {i}")),
                ],
                &who,
            )
            .unwrap();
        writeln!(out, "ack {i}").unwrap();
        if i % 10 == 9 {
            let v = store.provision(&format!("after {i}"), &who).unwrap();
            writeln!(out, "version {}", v.id).unwrap();
        }
        out.flush().unwrap();
    }
}

/// Runs [`crash_child_writer`] with `env` set, kills it with SIGKILL after
/// [`ACKS_BEFORE_KILL`] acknowledged writes, then calls `after_kill` (which may crash
/// the database server too) and checks that `reopen` finds every acknowledged write.
fn crash_and_check(
    env: (&str, &std::ffi::OsStr),
    scratch: &Path,
    after_kill: impl FnOnce(),
    reopen: impl FnOnce() -> ControlStore,
) {
    use std::os::unix::process::ExitStatusExt;

    let stderr_path = scratch.join("child.stderr");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env.0, env.1)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked: Vec<i64> = Vec::new();
    let mut versions: Vec<u64> = Vec::new();
    let mut killed = false;
    // Keep reading after the kill: lines already in the pipe were acknowledged too.
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(i) = line.strip_prefix("ack ") {
            acked.push(i.parse().unwrap());
        } else if let Some(v) = line.strip_prefix("version ") {
            versions.push(v.parse().unwrap());
        }
        if !killed && acked.len() >= ACKS_BEFORE_KILL {
            let status = Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        killed,
        "the child stopped after {} acks: {status:?}\n{stderr}",
        acked.len()
    );
    assert_eq!(status.signal(), Some(9), "{stderr}");
    after_kill();

    let store = reopen();
    let last = *acked.last().unwrap();
    assert_eq!(acked, (0..=last).collect::<Vec<_>>());
    let workloads: BTreeMap<String, String> = store
        .workloads()
        .unwrap()
        .into_iter()
        .map(|w| (w.name, w.json))
        .collect();
    for i in &acked {
        assert_eq!(
            workloads.get(&format!("w{i:06}")).map(String::as_str),
            Some(format!("{{\"i\":{i}}}").as_str()),
            "acknowledged write {i} is lost"
        );
    }
    // At most the one write in flight at the kill went further than the last ack.
    assert!(workloads.len() as i64 <= last + 2);
    let counter = store.draft_object("ruleset", "counter").unwrap().unwrap();
    let value: i64 = counter
        .yaml
        .strip_prefix("value: ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(value == last || value == last + 1, "{value} vs {last}");
    // Each write carried its audit entries (two per apply, one per provision).
    let audit = store.audit(0, usize::MAX).unwrap();
    assert!(audit.len() >= acked.len() * 2 + versions.len());
    assert!(audit.windows(2).all(|w| w[0].id < w[1].id));
    let stored: Vec<u64> = store.versions().unwrap().iter().map(|v| v.id).collect();
    assert!(stored.len() >= versions.len());
    assert_eq!(&stored[..versions.len()], &versions[..]);
    for v in &versions {
        let version = store.version(*v).unwrap().unwrap();
        assert_eq!(version.meta.workloads as u64, v * 10);
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.sqlite");
    crash_and_check(
        (CRASH_CHILD, path.as_os_str()),
        dir.path(),
        || {},
        || {
            let store = ControlStore::open(&path).unwrap();
            let ok: String = raw(&path)
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ok, "ok");
            store
        },
    );
}

/// On PostgreSQL: the writer is killed with SIGKILL, then the database server crashes
/// too (`pg_ctl stop -m immediate`: every server process quits at once, no checkpoint,
/// so what survives is what the WAL had on disk) and restarts with crash recovery. A
/// cluster of its own, since the others' tests must not see it go down.
#[test]
fn acknowledged_writes_survive_kill_9_and_a_database_crash_on_postgres() {
    let cluster = pg::Cluster::start();
    let conninfo = cluster.fresh_database();
    let scratch = tempfile::tempdir().unwrap();
    crash_and_check(
        (CRASH_CHILD_PG, std::ffi::OsStr::new(&conninfo)),
        scratch.path(),
        || cluster.crash_and_restart(),
        || {
            let log = cluster.server_log();
            assert!(
                log.contains("database system was interrupted")
                    || log.contains("not properly shut down"),
                "the server did not go through crash recovery:\n{log}"
            );
            ControlStore::connect_postgres(&conninfo).unwrap()
        },
    );
}

/// A server keeps its store across a restart of the database: the session is opened
/// again on the next call (the call that saw it fail, if any, reports an error).
#[test]
fn a_postgres_store_reconnects_after_the_database_restarts() {
    let cluster = pg::Cluster::start();
    let conninfo = cluster.fresh_database();
    let mut store = ControlStore::connect_postgres(&conninfo).unwrap();
    assert_eq!(store.backend_name(), "postgres");
    store.apply(&[put("ruleset", "a", "1")], &alice()).unwrap();
    cluster.crash_and_restart();
    // At most one call fails (the one that finds the old session broken).
    let first = store.apply(&[put("ruleset", "b", "1")], &alice());
    if let Err(e) = &first {
        assert!(matches!(e, StoreError::Backend { .. }), "{e:?}");
        store.apply(&[put("ruleset", "b", "1")], &alice()).unwrap();
    }
    let names: Vec<String> = store
        .draft_objects()
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn one_server_leads_and_a_deposed_leader_writes_nothing() {
    let conninfo = pg::cluster().fresh_database();
    let mut a = ControlStore::connect_postgres(&conninfo).unwrap();
    let mut b = ControlStore::connect_postgres(&conninfo).unwrap();
    let lease = a.lead().unwrap().expect("the first to ask leads");
    assert_eq!(a.lead().unwrap(), Some(lease), "asking again keeps it");
    assert_eq!(b.lead().unwrap(), None, "one leader at a time");
    a.fenced(lease, |c| {
        c.apply(&[put("ruleset", "by-leader", "1")], &alice())
    })
    .unwrap();

    // A's session ends (a network cut, a paused process whose connection timed out):
    // PostgreSQL releases the lock and B takes over.
    pg::cluster()
        .raw(&conninfo)
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND objid::bigint = 1751474533 AND classid::bigint = 1651862635",
        )
        .unwrap();
    // The backend ends shortly after it is told to.
    let started = std::time::Instant::now();
    while b.lead().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the lock never went with A's session"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A wakes up and acts on its old lease: refused, whether or not the failing call
    // that finds its session gone comes first.
    let mut refused = 0;
    for _ in 0..2 {
        match a.fenced(lease, |c| {
            c.apply(&[put("ruleset", "by-old-leader", "1")], &alice())
        }) {
            Err(StoreError::Fenced) => refused += 1,
            Err(StoreError::Backend { .. }) => {}
            other => panic!("a deposed leader wrote: {other:?}"),
        }
    }
    assert!(refused >= 1);
    assert_eq!(a.lead().unwrap(), None, "B leads now");
    // Unfenced writes (API calls) still work on A.
    a.apply(&[put("ruleset", "by-api", "1")], &alice()).unwrap();
    let names: Vec<String> = b
        .draft_objects()
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["by-api", "by-leader"]);
}

#[test]
fn one_process_expires_flows_and_it_need_not_be_the_leader() {
    let conninfo = pg::cluster().fresh_database();
    let mut server = ControlStore::connect_postgres(&conninfo).unwrap();
    let mut collector = ControlStore::connect_postgres(&conninfo).unwrap();
    assert!(
        collector.lead_retention().unwrap(),
        "the first to ask expires"
    );
    assert!(collector.lead_retention().unwrap(), "asking again keeps it");
    assert!(!server.lead_retention().unwrap(), "one at a time");
    // The two elections are apart: a collector holding retention does not stop a
    // server from leading the rollout calendar.
    assert!(server.lead().unwrap().is_some());
    assert!(collector.lead().unwrap().is_none());
    drop(collector);
    let started = std::time::Instant::now();
    while !server.lead_retention().unwrap() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "retention never moved on when its holder went away"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_postgres_url_that_cannot_connect_names_the_database_not_the_password() {
    let err = ControlStore::connect_postgres(
        "postgresql://bulkhead:s3cret@%2Fnonexistent-bulkhead-dir/control",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(
        text.contains("bulkhead@/nonexistent-bulkhead-dir") && text.contains("/control"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    let err = ControlStore::connect_postgres("postgres://[").unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
}

#[test]
fn the_store_can_live_behind_a_mutex_shared_by_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<std::sync::Mutex<ControlStore>>();
}
