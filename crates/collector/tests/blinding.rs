//! One host cannot blind the collector: a flood of template-only datagrams from many
//! source ports and from thousands of one-shot addresses (all of 127.0.0.0/8 is local)
//! fills the exporter table past its bound, and afterwards a busy exporter and a new
//! one still get every record through, with the flood visible in the counters.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bulkhead_collector::{Collector, CollectorConfig};
use bulkhead_enrich::Enricher;
use bulkhead_flow::Decoder;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/netflow")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Sends from a fresh socket on `ip`, so each call is a new source port.
fn send_from(ip: Ipv4Addr, datagram: &[u8], to: SocketAddr) {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.send_to(datagram, to).unwrap();
}

/// Waits until the collector has taken `sent` datagrams off its socket: the kernel's
/// receive buffer is small (net.core.rmem_max), so a flood is sent in steps.
fn drain(collector: &Collector, sent: u64) {
    let started = Instant::now();
    while collector.metrics().datagrams < sent {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the collector took {} of {sent} datagrams",
            collector.metrics().datagrams
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_flood_of_one_shot_exporters_does_not_blind_the_collector() {
    let template = fixture("ipfix_test_openbsd_pflow_tpl.dat");
    let data = fixture("ipfix_test_openbsd_pflow_data.dat");
    let (per_data, template_bytes_each) = {
        let mut d = Decoder::new();
        let from: SocketAddr = "127.0.0.9:4739".parse().unwrap();
        d.decode(from, &template).unwrap();
        let records = d.decode(from, &data).unwrap().len() as u64;
        (records, d.counters().template_bytes)
    };
    assert!(per_data > 0);

    let config = CollectorConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 1,
        flush_every: Duration::from_millis(20),
        ..CollectorConfig::default()
    };
    let collector = Collector::start(
        &config,
        Arc::new(RwLock::new(Arc::new(Enricher::default()))),
        |_| {},
    )
    .unwrap();
    let to = collector.local_addrs()[0];
    let busy = Ipv4Addr::new(127, 0, 0, 2);
    let mut sent = 0u64;

    // The busy exporter proves itself before the flood: records in two datagrams.
    for d in [&template, &data, &data] {
        send_from(busy, d, to);
        sent += 1;
    }
    drain(&collector, sent);

    // The flood: 3,000 source ports of one host, then 12,000 one-shot addresses (more
    // than the 10,000 exporters the table holds), every datagram template-only.
    for i in 0..15_000u32 {
        let ip = if i < 3_000 {
            Ipv4Addr::new(127, 0, 0, 3)
        } else {
            let n = i - 3_000;
            Ipv4Addr::new(127, 1 + (n / 250) as u8, (n % 250) as u8, 1)
        };
        send_from(ip, &template, to);
        sent += 1;
        if sent.is_multiple_of(200) {
            drain(&collector, sent);
        }
    }
    drain(&collector, sent);

    // The busy exporter's templates survived: data alone decodes. A new exporter
    // arriving after the flood gets in too.
    send_from(busy, &data, to);
    let newcomer = Ipv4Addr::new(127, 0, 0, 4);
    send_from(newcomer, &template, to);
    send_from(newcomer, &data, to);
    sent += 3;
    drain(&collector, sent);
    // The exporter snapshot is taken at the worker's flush, just after the counters.
    std::thread::sleep(Duration::from_millis(200));

    let m = collector.metrics();
    let tables = collector.exporter_tables();
    let exporters = collector.exporters();
    collector.stop();
    assert_eq!(m.records, 4 * per_data, "every real record decoded");
    assert_eq!((m.malformed, m.no_template), (0, 0));
    assert!(
        tables.exporters <= tables.max_exporters,
        "the table stays bounded: {tables:?}"
    );
    assert!(
        m.exporter_table_full > 0 && m.exporters_evicted > 0,
        "{m:?}"
    );
    // Every exporter in the table holds the one template it sent, and no more: the
    // evicted ones gave their template memory back.
    assert!(template_bytes_each > 0);
    assert_eq!(
        m.template_bytes,
        tables.exporters as u64 * template_bytes_each,
        "{tables:?}"
    );
    let records_of = |ip: Ipv4Addr| {
        exporters
            .iter()
            .filter(|e| e.address == ip)
            .map(|e| e.counters.records)
            .sum::<u64>()
    };
    assert_eq!(records_of(busy), 3 * per_data);
    assert_eq!(records_of(newcomer), per_data);
    // Many source ports of one host are one exporter, not 3,000.
    let one_host = exporters
        .iter()
        .filter(|e| e.address == Ipv4Addr::new(127, 0, 0, 3))
        .count();
    assert!(one_host <= 1, "{one_host} entries for one host");
}
