//! A real UDP collector on loopback, fed real exporters' datagrams: everything sent is
//! counted, decoded like the offline decoder does it, and reaches the sink aggregated.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bulkhead_collector::{Collector, CollectorConfig};
use bulkhead_enrich::Enricher;
use bulkhead_flow::Decoder;
use bulkhead_model::{Bucket, FlowSummary};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/netflow")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn loopback_datagrams_are_decoded_counted_and_aggregated() {
    let config = CollectorConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 2,
        flush_every: Duration::from_millis(50),
        // The captures' times are history, not live traffic.
        time_bounds: None,
        ..CollectorConfig::default()
    };
    let received: Arc<Mutex<Vec<FlowSummary>>> = Arc::default();
    let sink = received.clone();
    let enricher = Arc::new(RwLock::new(Arc::new(Enricher::default())));
    let collector = Collector::start(&config, enricher, move |batch| {
        sink.lock().unwrap().extend(batch)
    })
    .unwrap();
    let target = collector.local_addrs()[0];

    let datagrams = [
        fixture("netflow5.dat"),
        fixture("ipfix_test_openbsd_pflow_tpl.dat"),
        fixture("ipfix_test_openbsd_pflow_data.dat"),
        fixture("netflow5_test_invalid01.dat"),
        vec![0, 10, 0, 4],
    ];
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in &datagrams {
        sender.send_to(d, target).unwrap();
    }
    // The oracle: the same datagrams through an offline decoder, as one exporter.
    let mut offline = Decoder::new();
    let from = sender.local_addr().unwrap();
    let expected: Vec<_> = datagrams
        .iter()
        .flat_map(|d| offline.decode(from, d).unwrap_or_default())
        .collect();
    assert!(expected.len() > 10);

    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.metrics().datagrams < datagrams.len() as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = collector.metrics();
    assert_eq!(m.datagrams, datagrams.len() as u64);
    assert_eq!(m.records, expected.len() as u64);
    assert_eq!(m.malformed, offline.counters().malformed);
    assert!(
        m.malformed >= 2,
        "the invalid fixture and the truncated IPFIX header"
    );
    assert_eq!(m.dropped, 0);
    collector.stop();

    let summaries = received.lock().unwrap();
    let expected_packets: u64 = expected
        .iter()
        .map(|r| r.packets + r.reverse_packets.unwrap_or(0))
        .sum();
    for bucket in [Bucket::Minute, Bucket::Hour] {
        let packets: u64 = summaries
            .iter()
            .filter(|s| s.key.bucket == bucket)
            .map(|s| s.packets)
            .sum();
        assert_eq!(packets, expected_packets, "{bucket:?}");
    }
}

#[test]
fn a_port_in_use_fails_before_anything_runs() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = CollectorConfig {
        listen: vec![taken.local_addr().unwrap()],
        workers: 1,
        ..CollectorConfig::default()
    };
    let enricher = Arc::new(RwLock::new(Arc::new(Enricher::default())));
    assert!(Collector::start(&config, enricher, |_| {}).is_err());
}
