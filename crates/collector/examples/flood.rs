//! The two halves of bench/flood.sh.
//!
//! `flood collect --listen 127.0.0.1:PORT --stop-file PATH [--workers N] [--status PATH]`
//! runs the collector (decode, aggregate, enrich with an empty inventory; summaries are
//! counted and dropped) until PATH exists, writing a status line (metrics, exporter
//! table, this process's VmRSS/VmHWM) to `--status` every second; then prints a JSON
//! report: metrics, table, and per-exporter figures for the valid exporters and the
//! largest template and hold counts.
//!
//! `flood send --to ADDR [--datagrams N] [--rate R] [--seed S] [--storm-fields F]
//! [--storm-hosts H] [--valid-only]` sends the mixed flood of tests/flood/mod.rs from 127.0.0.0/8 source
//! addresses and prints what it sent (per kind, datagrams/s) and the records the valid
//! exporters' datagrams hold.

#[path = "../tests/flood/mod.rs"]
mod flood;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bulkhead_collector::{Collector, CollectorConfig, MetricsSnapshot};
use bulkhead_enrich::Enricher;
use bulkhead_flow::{Decoder, DecoderConfig, ExporterStats, ExporterTableStats};
use flood::{Flood, FloodConfig, Kind, Source, VALID};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A JSON object from (key, already-encoded value) pairs: no JSON dependency here.
fn obj(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

fn map<V: std::fmt::Display>(m: &BTreeMap<String, V>) -> String {
    let body: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

fn metrics(m: &MetricsSnapshot) -> String {
    obj(&[
        ("datagrams", m.datagrams.to_string()),
        ("records", m.records.to_string()),
        ("malformed", m.malformed.to_string()),
        ("no_template", m.no_template.to_string()),
        ("summaries", m.summaries.to_string()),
        ("dropped", m.dropped.to_string()),
        ("sets_truncated", m.sets_truncated.to_string()),
        ("sets_unsupported", m.sets_unsupported.to_string()),
        ("sequence_gaps", m.sequence_gaps.to_string()),
        ("exporter_table_full", m.exporter_table_full.to_string()),
        ("exporters_evicted", m.exporters_evicted.to_string()),
    ])
}

fn table(t: &ExporterTableStats) -> String {
    obj(&[
        ("exporters", t.exporters.to_string()),
        ("probation", t.probation.to_string()),
        ("protected", t.protected.to_string()),
        ("max_exporters", t.max_exporters.to_string()),
        ("evicted", t.evicted.to_string()),
    ])
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn collect(args: &[String]) {
    let listen: SocketAddr = arg(args, "--listen").expect("--listen").parse().unwrap();
    let stop_file = PathBuf::from(arg(args, "--stop-file").expect("--stop-file"));
    let status = arg(args, "--status").map(PathBuf::from);
    let mut config = CollectorConfig {
        listen: vec![listen],
        ..CollectorConfig::default()
    };
    if let Some(w) = arg(args, "--workers") {
        config.workers = w.parse().unwrap();
    }
    let summaries = Arc::new(AtomicU64::new(0));
    let s = summaries.clone();
    let collector = Collector::start(
        &config,
        Arc::new(RwLock::new(Arc::new(Enricher::default()))),
        move |batch| {
            s.fetch_add(batch.len() as u64, Ordering::Relaxed);
        },
    )
    .expect("bind");
    eprintln!("flood collect: listening on {}", collector.local_addrs()[0]);
    let started = Instant::now();
    while !stop_file.exists() {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(p) = &status
            && started.elapsed().as_millis() % 1000 < 100
        {
            let line = obj(&[
                ("seconds", format!("{:.1}", started.elapsed().as_secs_f64())),
                ("vm_rss_kb", status_kb("VmRSS:").to_string()),
                ("vm_hwm_kb", status_kb("VmHWM:").to_string()),
                ("metrics", metrics(&collector.metrics())),
                ("table", table(&collector.exporter_tables())),
            ]);
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap();
            writeln!(f, "{line}").unwrap();
        }
    }
    // The exporter snapshots are taken at each worker's flush (every second).
    std::thread::sleep(Duration::from_millis(1500));
    let m = collector.metrics();
    let t = collector.exporter_tables();
    let exporters = collector.exporters();
    let valid: BTreeMap<String, u64> = VALID
        .iter()
        .map(|ip| {
            let n = exporters
                .iter()
                .filter(|e| e.address == *ip)
                .map(|e| e.counters.records)
                .sum();
            (ip.to_string(), n)
        })
        .collect();
    let max = |f: fn(&ExporterStats) -> usize| exporters.iter().map(f).max().unwrap_or(0);
    let sum = |f: fn(&ExporterStats) -> usize| exporters.iter().map(f).sum::<usize>();
    let report = obj(&[
        ("vm_rss_kb", status_kb("VmRSS:").to_string()),
        ("vm_hwm_kb", status_kb("VmHWM:").to_string()),
        ("metrics", metrics(&m)),
        ("table", table(&t)),
        (
            "summaries_delivered",
            summaries.load(Ordering::Relaxed).to_string(),
        ),
        ("valid_records", map(&valid)),
        ("exporters", exporters.len().to_string()),
        ("templates_total", sum(|e| e.templates).to_string()),
        (
            "templates_max_per_exporter",
            max(|e| e.templates).to_string(),
        ),
        (
            "scopes_max_per_exporter",
            max(|e| e.scopes.len()).to_string(),
        ),
        ("pending_sets_total", sum(|e| e.pending_sets).to_string()),
        (
            "pending_sets_max_per_exporter",
            max(|e| e.pending_sets).to_string(),
        ),
    ]);
    collector.stop();
    println!("{report}");
}

fn send(args: &[String]) {
    let to: SocketAddr = arg(args, "--to").expect("--to").parse().unwrap();
    let n: usize = arg(args, "--datagrams").map_or(300_000, |v| v.parse().unwrap());
    let rate: f64 = arg(args, "--rate").map_or(0.0, |v| v.parse().unwrap());
    let mut cfg = FloodConfig::default();
    if let Some(s) = arg(args, "--seed") {
        cfg.seed = s.parse().unwrap();
    }
    if let Some(f) = arg(args, "--storm-fields") {
        cfg.storm_fields = f.parse().unwrap();
    }
    if let Some(h) = arg(args, "--storm-hosts") {
        cfg.storm_hosts = h.parse().unwrap();
    }
    if args.iter().any(|a| a == "--valid-only") {
        cfg.mix = [100, 0, 0, 0, 0];
    }
    // Generated up front so that the send loop measures sending only.
    let packets: Vec<flood::Packet> = Flood::new(cfg).take(n).collect();
    let mut valid = Decoder::with_config(DecoderConfig {
        capture_extra: false,
        ..DecoderConfig::default()
    });
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut steady: HashMap<Ipv4Addr, UdpSocket> = HashMap::new();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut bytes = 0u64;
    let started = Instant::now();
    for (i, p) in packets.iter().enumerate() {
        if rate > 0.0 && i % 64 == 0 {
            let due = Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let fresh;
        let s = match p.from {
            Source::Steady(ip) => steady
                .entry(ip)
                .or_insert_with(|| UdpSocket::bind((ip, 0)).unwrap()),
            Source::Fresh(ip) => {
                fresh = UdpSocket::bind((ip, 0)).unwrap();
                &fresh
            }
        };
        s.send_to(&p.bytes, to).unwrap();
        bytes += p.bytes.len() as u64;
        *by_kind.entry(format!("{:?}", p.kind)).or_default() += 1;
        if p.kind == Kind::Valid {
            let from = s.local_addr().unwrap();
            let got = valid.decode(from, &p.bytes).map_or(0, |r| r.len() as u64);
            *expected.entry(from.ip().to_string()).or_default() += got;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let report = obj(&[
        ("datagrams", n.to_string()),
        ("bytes", bytes.to_string()),
        ("seconds", format!("{secs:.3}")),
        ("datagrams_per_second", format!("{:.0}", n as f64 / secs)),
        ("by_kind", map(&by_kind)),
        ("valid_records", map(&expected)),
    ]);
    println!("{report}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("collect") => collect(&args),
        Some("send") => send(&args),
        _ => {
            eprintln!("usage: flood collect --listen ADDR --stop-file PATH | flood send --to ADDR");
            std::process::exit(2);
        }
    }
}
