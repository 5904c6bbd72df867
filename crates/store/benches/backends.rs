//! SQLite and ClickHouse side by side, in one run, on the same generated estate: ingest
//! rate, then flow-query and aggregation latency (p50/p99) while a second writer keeps
//! ingesting. Run by bench/flowstore.sh; sizes from the environment:
//! `BENCH_WORKLOADS` (1000), `BENCH_DAYS` of hour summaries (30), `BENCH_QUERIES` per
//! kind (200). The ClickHouse server is a throwaway one on loopback (the test kit's),
//! unless `BENCH_CLICKHOUSE_URL` names one; `BENCH_ONLY=sqlite|clickhouse` runs one.
//!
//! Then the server's situation: `BENCH_READERS` (4) threads query one shared store while
//! a writer ingests through the same handle, first behind one lock around the store (how
//! the server held it before the SQLite store had a pool of readers), then without.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_store::{
    Bucket, ClickHouseFlowStore, ClickHouseOptions, FlowQuery, FlowStore, FlowSummary, Labels,
    SqliteFlowStore, SummaryKey, SummaryVerdict, VerdictKind,
};

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;
/// 2024-01-01T00:00:00Z.
const T0: i64 = 1_704_067_200_000;
/// Hour summaries per workload per hour, and minute summaries per minute.
const PEERS_PER_HOUR: u64 = 4;
const PER_MINUTE: u64 = 500;
const BATCH: usize = 10_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32
}

fn addr(w: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        (w >> 16) as u8,
        (w >> 8) as u8,
        (w & 0xff) as u8,
    ))
}

struct Estate {
    workloads: u64,
    labels: Vec<Labels>,
}

impl Estate {
    fn new(workloads: u64) -> Self {
        let roles = ["web", "app", "db", "cache"];
        let labels = (0..workloads)
            .map(|w| {
                Labels::parse_list(&format!(
                    "app=app{},env=prod,role={}",
                    w / 10,
                    roles[(mix(w) % 4) as usize]
                ))
                .unwrap()
            })
            .collect();
        Self { workloads, labels }
    }

    /// Summary `n` of the bucket at `start`: the same `n` is the same pair, service and
    /// verdict in every bucket (estates talk to the same peers all day), with counters
    /// that vary.
    fn summary(&self, bucket: Bucket, start: i64, n: u64) -> FlowSummary {
        let pair = mix(n);
        let r = mix(n ^ start.cast_unsigned());
        let src = pair % self.workloads;
        let dst = (src + 1 + mix(pair) % (self.workloads - 1)) % self.workloads;
        let verdict = match pair % 10 {
            0 => VerdictKind::PotentiallyBlocked,
            1 => VerdictKind::Blocked,
            _ => VerdictKind::Allowed,
        };
        FlowSummary {
            key: SummaryKey {
                bucket,
                bucket_start_ms: start,
                src: addr(src),
                dst: addr(dst),
                proto: 6,
                port: [443, 8080, 5432, 6379][(dst % 4) as usize],
                process: None,
            },
            packets: 1 + r % 1_000,
            bytes: 60 + r % 1_000_000,
            connections: 1 + r % 7,
            first_seen_ms: start + (r % 1_000) as i64,
            last_seen_ms: start + 30_000,
            reporter: Some(format!("ipfix 192.0.2.{}", r % 4)),
            src_workload: Some(format!("wl-{src:05}")),
            dst_workload: Some(format!("wl-{dst:05}")),
            src_labels: self.labels[src as usize].clone(),
            dst_labels: self.labels[dst as usize].clone(),
            provisioned: Some(SummaryVerdict {
                verdict,
                rules: if verdict == VerdictKind::Allowed {
                    vec![format!("app{}/r{}", dst / 10, pair % 5)]
                } else {
                    Vec::new()
                },
            }),
            draft: None,
        }
    }

    /// Every summary of the estate, in write order: hours of `days` days, then the
    /// minutes of the last day.
    fn all(&self, days: i64) -> Vec<FlowSummary> {
        let mut out = Vec::new();
        for h in 0..days * 24 {
            for n in 0..self.workloads * PEERS_PER_HOUR {
                out.push(self.summary(Bucket::Hour, T0 + h * HOUR, n));
            }
        }
        let last_day = T0 + (days - 1) * 24 * HOUR;
        for m in 0..24 * 60 {
            for n in 0..PER_MINUTE {
                out.push(self.summary(Bucket::Minute, last_day + m * MINUTE, n));
            }
        }
        out
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Builds the `i`th query of one kind.
type QueryMaker = Box<dyn Fn(u64) -> FlowQuery>;

struct Backend {
    name: &'static str,
    open: Box<dyn Fn() -> Box<dyn FlowStore> + Send + Sync>,
}

fn run(backend: &Backend, estate: &Arc<Estate>, data: &[FlowSummary], days: i64, queries: u64) {
    let store = (backend.open)();
    let started = Instant::now();
    for chunk in data.chunks(BATCH) {
        store.upsert(chunk).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<10} ingest: {} summaries in {:.1} s = {:.0} summaries/s",
        backend.name,
        data.len(),
        secs,
        data.len() as f64 / secs
    );

    // A second writer keeps ingesting new minutes while the queries run.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, estate) = (stop.clone(), written.clone(), estate.clone());
        let other = (backend.open)();
        std::thread::spawn(move || {
            let mut minute = T0 + days * 24 * HOUR;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<FlowSummary> = (0..PER_MINUTE)
                    .map(|n| estate.summary(Bucket::Minute, minute, n))
                    .collect();
                other.upsert(&batch).unwrap();
                written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                minute += MINUTE;
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let end = T0 + days * 24 * HOUR;
    let kinds: Vec<(&str, QueryMaker)> = vec![
        (
            "workload, 24 h of hours",
            Box::new(move |i| {
                let mut q = FlowQuery::new(Bucket::Hour, end - 24 * HOUR, end);
                q.workload = Some(format!("wl-{:05}", mix(i) % estate_size(i)));
                q.limit = 100;
                q
            }),
        ),
        (
            "workload, 30 d of hours",
            Box::new(move |i| {
                let mut q = FlowQuery::new(Bucket::Hour, T0, end);
                q.workload = Some(format!("wl-{:05}", mix(i) % estate_size(i)));
                q.limit = 100;
                q
            }),
        ),
        (
            "verdict, last hour of minutes",
            Box::new(move |_| {
                let mut q = FlowQuery::new(Bucket::Minute, end - HOUR, end);
                q.verdict = Some(VerdictKind::PotentiallyBlocked);
                q.limit = 100;
                q
            }),
        ),
        (
            "labels app=…, 7 d of hours",
            Box::new(move |i| {
                let mut q = FlowQuery::new(Bucket::Hour, end - 7 * 24 * HOUR, end);
                q.labels = Some(
                    Labels::parse_list(&format!("app=app{}", mix(i) % (estate_size(i) / 10)))
                        .unwrap(),
                );
                q.limit = 100;
                q
            }),
        ),
    ];
    for (name, make) in &kinds {
        let mut times: Vec<Duration> = (0..queries)
            .map(|i| {
                let q = make(i);
                let t = Instant::now();
                std::hint::black_box(store.query(&q).unwrap());
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "{:<10} query {name:<30} p50 {:>7.1} ms  p99 {:>7.1} ms",
            backend.name,
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    for (name, bucket, span) in [
        ("map groups, last hour of minutes", Bucket::Minute, HOUR),
        ("map groups, 24 h of hours", Bucket::Hour, 24 * HOUR),
    ] {
        let mut groups = 0;
        let mut times: Vec<Duration> = (0..queries)
            .map(|_| {
                let t = Instant::now();
                let page = store
                    .groups(&bulkhead_store::GroupQuery {
                        bucket,
                        from_ms: end - span,
                        to_ms: end,
                        limit: 100_000,
                    })
                    .unwrap();
                groups = page.items.len();
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "{:<10} {name:<36} p50 {:>7.1} ms  p99 {:>7.1} ms  ({groups} groups)",
            backend.name,
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    let mut times: Vec<Duration> = (0..queries.min(20))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(
                store
                    .seen_addresses(Bucket::Hour, end - 24 * HOUR, end)
                    .unwrap(),
            );
            t.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "{:<10} aggregate seen addresses, 24 h   p50 {:>7.1} ms  p99 {:>7.1} ms",
        backend.name,
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    println!(
        "{:<10} concurrent writer stored {} summaries meanwhile",
        backend.name,
        written.load(Ordering::Relaxed)
    );
}

/// Readers and a writer sharing one store, behind one lock (`locked`) or not; prints
/// each reader kind's latency and the queries answered per second.
fn shared(backend: &Backend, estate: &Arc<Estate>, days: i64, queries: u64) {
    let store: Arc<dyn FlowStore> = Arc::from((backend.open)());
    let readers = env("BENCH_READERS", 4);
    let end = T0 + days * 24 * HOUR;
    // Later minutes than `run`'s writer wrote, so that every write adds rows.
    let first_minute = T0 + days * 24 * HOUR + 24 * HOUR;
    for locked in [true, false] {
        let lock = Mutex::new(());
        let guard = || locked.then(|| lock.lock().unwrap());
        let stop = AtomicBool::new(false);
        let written = AtomicU64::new(0);
        let started = Instant::now();
        let mut by_kind: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let mut minute = first_minute + if locked { 0 } else { 24 * HOUR };
                while !stop.load(Ordering::Relaxed) {
                    let batch: Vec<FlowSummary> = (0..PER_MINUTE)
                        .map(|n| estate.summary(Bucket::Minute, minute, n))
                        .collect();
                    {
                        let _g = guard();
                        store.upsert(&batch).unwrap();
                    }
                    written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    minute += MINUTE;
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let threads: Vec<_> = (0..readers)
                .map(|r| {
                    let (store, guard) = (&store, &guard);
                    s.spawn(move || {
                        let kind = (r % 2) as usize;
                        let times: Vec<Duration> = (0..queries.div_ceil(readers))
                            .map(|i| {
                                let t = Instant::now();
                                let _g = guard();
                                if kind == 0 {
                                    let mut q = FlowQuery::new(Bucket::Hour, end - 24 * HOUR, end);
                                    q.workload = Some(format!(
                                        "wl-{:05}",
                                        mix(i + r * 7919) % estate.workloads
                                    ));
                                    q.limit = 100;
                                    std::hint::black_box(store.query(&q).unwrap());
                                } else {
                                    std::hint::black_box(
                                        store
                                            .groups(&bulkhead_store::GroupQuery {
                                                bucket: Bucket::Minute,
                                                from_ms: end - HOUR,
                                                to_ms: end,
                                                limit: 100_000,
                                            })
                                            .unwrap(),
                                    );
                                }
                                t.elapsed()
                            })
                            .collect();
                        (kind, times)
                    })
                })
                .collect();
            for t in threads {
                let (kind, times) = t.join().unwrap();
                by_kind[kind].extend(times);
            }
            stop.store(true, Ordering::Relaxed);
            writer.join().unwrap();
        });
        let secs = started.elapsed().as_secs_f64();
        let answered: usize = by_kind.iter().map(Vec::len).sum();
        let how = if locked { "one lock" } else { "no lock " };
        for (kind, name) in ["workload, 24 h of hours", "map groups, last hour"]
            .iter()
            .enumerate()
        {
            let times = &mut by_kind[kind];
            times.sort();
            println!(
                "{:<10} shared, {how}, {readers} readers: {name:<24} p50 {:>7.1} ms  p99 {:>7.1} ms",
                backend.name,
                percentile(times, 0.5),
                percentile(times, 0.99)
            );
        }
        println!(
            "{:<10} shared, {how}: {:.0} queries/s; the writer stored {} summaries meanwhile",
            backend.name,
            answered as f64 / secs,
            written.load(Ordering::Relaxed)
        );
    }
}

/// The estate size, read again inside the query closures (which must be `'static`).
fn estate_size(_: u64) -> u64 {
    env("BENCH_WORKLOADS", 1_000)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // Only `cargo bench` (which passes --bench) runs it; `cargo test --benches`
        // only checks that it builds and starts.
        return;
    }
    let workloads = env("BENCH_WORKLOADS", 1_000);
    let days = env("BENCH_DAYS", 30) as i64;
    let queries = env("BENCH_QUERIES", 200);
    let estate = Arc::new(Estate::new(workloads));
    let data = estate.all(days);
    println!(
        "estate: {workloads} workloads, {days} days of hour summaries and one day of \
         minutes = {} summaries",
        data.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.sqlite");
    // BENCH_CLICKHOUSE_URL measures a server of your own instead of a throwaway one.
    let own = std::env::var("BENCH_CLICKHOUSE_URL").ok();
    let clickhouse = own
        .is_none()
        .then(bulkhead_testkit::clickhouse::ClickHouse::start);
    let url = own.unwrap_or_else(|| clickhouse.as_ref().expect("started").fresh_url());
    let only = std::env::var("BENCH_ONLY").ok();
    let backends = [
        Backend {
            name: "sqlite",
            open: Box::new(move || Box::new(SqliteFlowStore::open(&path).unwrap())),
        },
        Backend {
            name: "clickhouse",
            open: Box::new(move || {
                Box::new(
                    ClickHouseFlowStore::connect_with(
                        &url,
                        ClickHouseOptions { hour_rollup: false },
                    )
                    .unwrap(),
                )
            }),
        },
    ];
    for b in backends
        .iter()
        .filter(|b| only.as_deref().is_none_or(|o| o == b.name))
    {
        run(b, &estate, &data, days, queries);
        shared(b, &estate, days, queries);
    }
}
