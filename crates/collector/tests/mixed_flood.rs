//! The collector survives a mixed flood (garbage, truncated templates, template storms
//! past every cap, data sets whose template never comes) with its memory bounded by its
//! own limits, and valid exporters in the middle of it get every record through.
//!
//! Memory is checked through the decoder's accounting, not RSS or timing, so a loaded
//! machine cannot make this flaky: the collector's exporter table, templates per scope,
//! scopes per exporter and held sets per exporter (public stats), and, for the byte
//! budgets that the collector does not publish, a reference decoder with the collector's
//! configuration and one with tight limits, fed the same datagrams, checked after every
//! one. bench/flood.sh measures the RSS.

mod flood;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bulkhead_collector::{Collector, CollectorConfig};
use bulkhead_enrich::Enricher;
use bulkhead_flow::{Decoder, DecoderConfig};
use flood::{Flood, FloodConfig, KINDS, Kind, Source, VALID};

/// The collector's workers decode with this (crates/collector/src/lib.rs).
fn collector_decoder() -> DecoderConfig {
    DecoderConfig {
        capture_extra: false,
        ..DecoderConfig::default()
    }
}

fn tight() -> DecoderConfig {
    DecoderConfig {
        capture_extra: false,
        max_exporters: 256,
        max_templates_per_scope: 64,
        max_scopes_per_exporter: 4,
        max_pending_sets: 8,
        max_pending_bytes: 4096,
        max_pending_bytes_total: 128 * 1024,
        ..DecoderConfig::default()
    }
}

/// Every bound the decoder promises, from its public stats.
fn check_bounds(d: &Decoder, peak_pending: &mut u64) {
    let cfg = d.config();
    let c = d.counters();
    let t = d.exporter_table();
    assert!(t.exporters <= cfg.max_exporters, "{t:?}");
    assert!(
        c.pending_bytes <= cfg.max_pending_bytes_total as u64,
        "{c:?}"
    );
    *peak_pending = (*peak_pending).max(c.pending_bytes);
}

fn check_exporters(d: &Decoder) {
    let cfg = d.config();
    for e in d.exporters() {
        assert!(e.pending_sets <= cfg.max_pending_sets, "{e:?}");
        assert!(e.scopes.len() <= cfg.max_scopes_per_exporter, "{e:?}");
        assert!(
            e.scopes
                .iter()
                .all(|s| s.templates <= cfg.max_templates_per_scope),
            "{e:?}"
        );
    }
}

struct Sender {
    to: SocketAddr,
    steady: HashMap<Ipv4Addr, UdpSocket>,
}

impl Sender {
    /// Returns the source address used.
    fn send(&mut self, from: Source, bytes: &[u8]) -> SocketAddr {
        let fresh;
        let s = match from {
            Source::Steady(ip) => self
                .steady
                .entry(ip)
                .or_insert_with(|| UdpSocket::bind((ip, 0)).unwrap()),
            Source::Fresh(ip) => {
                fresh = UdpSocket::bind((ip, 0)).unwrap();
                &fresh
            }
        };
        s.send_to(bytes, self.to).unwrap();
        s.local_addr().unwrap()
    }
}

/// Waits until the collector has taken `sent` datagrams off its sockets (the receive
/// buffer is small, so the flood goes in steps).
fn drain(collector: &Collector, sent: u64) {
    let started = Instant::now();
    while collector.metrics().datagrams < sent {
        let m = collector.metrics();
        assert!(
            m.dropped == 0 && started.elapsed() < Duration::from_secs(120),
            "the collector took {} of {sent} datagrams: {m:?}",
            m.datagrams
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_mixed_flood_leaves_memory_bounded_and_valid_exporters_whole() {
    const DATAGRAMS: usize = 12_000;
    let config = CollectorConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 2,
        flush_every: Duration::from_millis(20),
        ..CollectorConfig::default()
    };
    let collector = Collector::start(
        &config,
        Arc::new(RwLock::new(Arc::new(Enricher::default()))),
        |_| {},
    )
    .unwrap();
    let mut sender = Sender {
        to: collector.local_addrs()[0],
        steady: HashMap::new(),
    };

    let mut reference = Decoder::with_config(collector_decoder());
    let mut small = Decoder::with_config(tight());
    let mut valid_only = Decoder::with_config(collector_decoder());
    let (mut peak_ref, mut peak_small) = (0u64, 0u64);
    let mut sent_by_kind: HashMap<Kind, u64> = HashMap::new();
    let mut flood_records = 0usize;
    let mut valid_records: HashMap<IpAddr, u64> = HashMap::new();
    let mut out = Vec::new();
    let mut sent = 0u64;
    for (i, p) in Flood::new(FloodConfig::default())
        .take(DATAGRAMS)
        .enumerate()
    {
        let from = sender.send(p.from, &p.bytes);
        sent += 1;
        *sent_by_kind.entry(p.kind).or_default() += 1;
        let now = 1_000_000 + i as u64;
        out.clear();
        let _ = reference.decode_at(from, &p.bytes, now, &mut out);
        if p.kind == Kind::Valid {
            let n = valid_only
                .decode_at(from, &p.bytes, now, &mut Vec::new())
                .ok();
            *valid_records.entry(from.ip()).or_default() += n.unwrap_or(0) as u64;
            assert_eq!(n, Some(out.len()), "valid datagram {i} decoded alike");
        } else {
            flood_records += out.len();
        }
        let _ = small.decode_at(from, &p.bytes, now, &mut Vec::new());
        check_bounds(&reference, &mut peak_ref);
        check_bounds(&small, &mut peak_small);
        if i % 500 == 0 {
            check_exporters(&reference);
            check_exporters(&small);
        }
        if sent.is_multiple_of(64) {
            drain(&collector, sent);
        }
    }
    drain(&collector, sent);
    for kind in KINDS {
        assert!(
            sent_by_kind.get(&kind).copied().unwrap_or(0) > 100,
            "{kind:?}"
        );
    }
    assert_eq!(flood_records, 0, "the flood itself decodes to nothing");

    // The reference decoder saw every cap bind: templates and scopes at their limits
    // for the storm hosts, held sets at theirs, errors counted.
    check_exporters(&reference);
    let c = reference.counters();
    let storm = reference
        .exporters()
        .into_iter()
        .filter(|e| e.address.to_string().starts_with("127.12."))
        .collect::<Vec<_>>();
    let cfg = collector_decoder();
    assert!(
        storm
            .iter()
            .any(|e| e.scopes.len() == cfg.max_scopes_per_exporter
                && e.scopes
                    .iter()
                    .any(|s| s.templates == cfg.max_templates_per_scope)),
        "the storm reached the caps: {storm:?}"
    );
    assert!(
        c.malformed > 0 && c.no_template > 0 && c.pending_sets > 0,
        "{c:?}"
    );
    // Under tight limits every budget binds and holds.
    let s = small.counters();
    let st = small.exporter_table();
    assert!(st.exporters == st.max_exporters && st.evicted > 0, "{st:?}");
    assert!(
        peak_small > tight().max_pending_bytes_total as u64 * 3 / 4,
        "held bytes reached near their total budget: {peak_small} {s:?}"
    );
    check_exporters(&small);

    // The collector: its table and every exporter within bounds, the storm at the caps.
    std::thread::sleep(Duration::from_millis(100));
    let m = collector.metrics();
    let table = collector.exporter_tables();
    let exporters = collector.exporters();
    assert!(table.exporters <= table.max_exporters, "{table:?}");
    for e in &exporters {
        assert!(e.pending_sets <= cfg.max_pending_sets, "{e:?}");
        assert!(e.scopes.len() <= cfg.max_scopes_per_exporter, "{e:?}");
        assert!(
            e.scopes
                .iter()
                .all(|s| s.templates <= cfg.max_templates_per_scope),
            "{e:?}"
        );
    }
    assert!(
        exporters
            .iter()
            .any(|e| e.scopes.len() == cfg.max_scopes_per_exporter),
        "a storm host filled its scopes"
    );
    assert_eq!(m.dropped, 0, "{m:?}");
    assert_eq!(m.datagrams, sent);
    assert!(m.malformed > 0, "{m:?}");

    // Every valid record counted, per exporter, and nothing else decoded.
    let expected: u64 = valid_records.values().sum();
    assert!(expected > 0);
    assert_eq!(m.records, expected, "{m:?}");
    for ip in VALID {
        let got: u64 = exporters
            .iter()
            .filter(|e| e.address == ip)
            .map(|e| e.counters.records)
            .sum();
        let want = valid_records[&IpAddr::V4(ip)];
        assert!(want > 0);
        assert_eq!(got, want, "records of valid exporter {ip}");
    }

    // Still alive: valid traffic after the flood gets through, and it stops cleanly.
    let before = m.records;
    for p in Flood::new(FloodConfig {
        mix: [100, 0, 0, 0, 0],
        ..FloodConfig::default()
    })
    .take(30)
    {
        // The first datagram of each is a template or a whole v5/v9 export.
        sender.send(p.from, &p.bytes);
        sent += 1;
    }
    drain(&collector, sent);
    assert!(collector.metrics().records > before);
    collector.stop();
}
