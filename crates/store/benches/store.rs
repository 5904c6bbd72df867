//! Upsert throughput and query latency of the SQLite flow store.
//!
//! The query benchmarks run on one file-backed store of 1,000,000 minute summaries over
//! 1,000 workloads (700 per minute, about 24 hours), built once; the build time and the
//! on-disk size are printed to stderr. Set `BULKHEAD_STORE_BENCH_DB=path` to keep that
//! file for inspection (it is reused if it exists).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulkhead_store::{
    Bucket, FlowQuery, FlowStore, FlowSummary, Labels, SqliteFlowStore, SummaryKey, SummaryVerdict,
    VerdictKind,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const WORKLOADS: u64 = 1_000;
const PER_MINUTE: u64 = 700;
const TOTAL: u64 = 1_000_000;
const BATCH: u64 = 10_000;
const T0: i64 = 1_704_067_200_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

const ROLES: [(&str, u16, &str); 4] = [
    ("web", 443, "nginx"),
    ("app", 8080, "java"),
    ("db", 5432, "postgres"),
    ("cache", 6379, "redis-server"),
];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];

fn addr(w: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 1 + (w / 250) as u8, (w % 250) as u8, 10))
}

/// Mixed rather than `w % 4`, which the src/dst pattern below would correlate with.
fn role(w: u64) -> usize {
    (mix(w + 1_000_003) % 4) as usize
}

fn workload_labels(w: u64) -> Labels {
    Labels::parse_list(&format!(
        "app=app{},env={},role={}",
        w / 10,
        ENVS[(w % 3) as usize],
        ROLES[role(w)].0
    ))
    .unwrap()
}

/// A cheap, fixed mix so that runs are comparable.
fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32
}

/// Summary number `i`: minute `i / PER_MINUTE`; within a minute, 7 and 13 are units mod
/// 1,000 so every (src, dst) pair is distinct and never a self-loop.
fn summary(i: u64, labels: &[Labels]) -> FlowSummary {
    let (minute, j) = (i / PER_MINUTE, i % PER_MINUTE);
    let src = (7 * j + minute) % WORKLOADS;
    let dst = (13 * j + 3 * minute + 1) % WORKLOADS;
    let (_, port, process) = ROLES[role(dst)];
    let start = T0 + minute as i64 * MINUTE;
    let r = mix(i);
    let verdict = match r % 10 {
        0 => VerdictKind::PotentiallyBlocked,
        1 => VerdictKind::Blocked,
        _ => VerdictKind::Allowed,
    };
    FlowSummary {
        key: SummaryKey {
            bucket: Bucket::Minute,
            bucket_start_ms: start,
            src: addr(src),
            dst: addr(dst),
            proto: 6,
            port,
            process: Some(process.to_string()),
        },
        packets: 1 + r % 1_000,
        bytes: 60 + r % 1_000_000,
        connections: 1 + r % 7,
        first_seen_ms: start + (r % 30_000) as i64,
        last_seen_ms: start + 30_000 + (r % 30_000) as i64,
        reporter: Some(format!("ipfix 192.0.2.{}", r % 4)),
        src_workload: Some(format!("wl-{src:04}")),
        dst_workload: Some(format!("wl-{dst:04}")),
        src_labels: labels[src as usize].clone(),
        dst_labels: labels[dst as usize].clone(),
        provisioned: Some(SummaryVerdict {
            verdict,
            rules: if verdict == VerdictKind::Allowed {
                vec![format!("app{}/r{}", dst / 10, r % 5)]
            } else {
                Vec::new()
            },
        }),
        draft: None,
    }
}

fn batch(first: u64, labels: &[Labels]) -> Vec<FlowSummary> {
    (first..first + BATCH).map(|i| summary(i, labels)).collect()
}

fn all_labels() -> Vec<Labels> {
    (0..WORKLOADS).map(workload_labels).collect()
}

fn file_size(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    [path.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn build_big(path: &Path, labels: &[Labels]) -> SqliteFlowStore {
    let store = SqliteFlowStore::open(path).unwrap();
    if store.stats().unwrap().minute.rows >= TOTAL {
        return store;
    }
    let started = Instant::now();
    for first in (0..TOTAL).step_by(BATCH as usize) {
        store.upsert(&batch(first, labels)).unwrap();
    }
    let took = started.elapsed();
    // Reopen so the WAL is checkpointed into the main file before measuring it.
    drop(store);
    let store = SqliteFlowStore::open(path).unwrap();
    let bytes = store.size_bytes().unwrap();
    eprintln!(
        "built {TOTAL} minute summaries in {:.1} s ({:.0} summaries/s); \
         {:.1} MiB in pages, {:.1} MiB of files, {:.0} bytes per summary",
        took.as_secs_f64(),
        TOTAL as f64 / took.as_secs_f64(),
        bytes as f64 / 1048576.0,
        file_size(path) as f64 / 1048576.0,
        bytes as f64 / TOTAL as f64,
    );
    store
}

fn upserts(c: &mut Criterion) {
    let labels = all_labels();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("upsert");
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));

    // New keys every batch, into a file that keeps growing as it would in service.
    let fresh = SqliteFlowStore::open(dir.path().join("fresh.db")).unwrap();
    let mut next = 0u64;
    g.bench_function("fresh_10k", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let summaries = batch(next, &labels);
                next += BATCH;
                let t = Instant::now();
                fresh.upsert(black_box(&summaries)).unwrap();
                spent += t.elapsed();
            }
            spent
        });
    });

    // The same 10k keys again and again: every row is a merge.
    let merging = SqliteFlowStore::open(dir.path().join("merge.db")).unwrap();
    let same = batch(0, &labels);
    merging.upsert(&same).unwrap();
    g.bench_function("merge_10k", |b| {
        b.iter(|| merging.upsert(black_box(&same)).unwrap());
    });
    g.finish();
}

fn queries(c: &mut Criterion) {
    let labels = all_labels();
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("BULKHEAD_STORE_BENCH_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("big.db"));
    let store = build_big(&path, &labels);

    // An hour in the middle of the day.
    let from = T0 + 10 * HOUR;
    let hour = |f: &dyn Fn(&mut FlowQuery)| {
        let mut q = FlowQuery::new(Bucket::Minute, from, from + HOUR);
        f(&mut q);
        q
    };
    let cases: Vec<(&str, FlowQuery)> = vec![
        ("hour_first_page", hour(&|_| {})),
        ("hour_all_rows", hour(&|q| q.limit = usize::MAX)),
        (
            "hour_workload",
            hour(&|q| q.workload = Some("wl-0421".into())),
        ),
        (
            "hour_labels_either",
            hour(&|q| q.labels = Some(Labels::parse_list("app=app42").unwrap())),
        ),
        (
            "hour_src_dst_labels",
            hour(&|q| {
                q.src_labels = Some(Labels::parse_list("role=web,env=prod").unwrap());
                q.dst_labels = Some(Labels::parse_list("role=db").unwrap());
            }),
        ),
        ("hour_address", hour(&|q| q.address = Some(addr(421)))),
        (
            "hour_port_verdict",
            hour(&|q| {
                q.port = Some(5432);
                q.verdict = Some(VerdictKind::Blocked);
            }),
        ),
        ("day_workload", {
            let mut q = FlowQuery::new(Bucket::Minute, T0, T0 + 24 * HOUR);
            q.workload = Some("wl-0421".into());
            q.limit = usize::MAX;
            q
        }),
    ];
    let mut g = c.benchmark_group("query_1m");
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    for (name, q) in &cases {
        let rows = store.query(q).unwrap().len();
        eprintln!("{name}: {rows} rows");
        g.bench_function(*name, |b| b.iter(|| store.query(black_box(q)).unwrap()));
    }
    g.bench_function("seen_addresses_hour", |b| {
        b.iter(|| {
            store
                .seen_addresses(Bucket::Minute, black_box(from), from + HOUR)
                .unwrap()
        })
    });
    g.bench_function("stats", |b| b.iter(|| store.stats().unwrap()));
    g.finish();
}

criterion_group!(benches, upserts, queries);
criterion_main!(benches);
