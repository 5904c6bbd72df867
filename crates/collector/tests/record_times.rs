//! An exporter whose clock is wrong: its records are filed at the time they were
//! received, counted, and never shown as ending ahead of the collector's clock.

use std::net::UdpSocket;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulkhead_collector::{Collector, CollectorConfig};
use bulkhead_enrich::Enricher;
use bulkhead_model::{Bucket, FlowSummary};

/// A NetFlow v5 datagram with one record, its times `first`/`last` milliseconds of
/// uptime, exported at `unix_secs` when the exporter had been up `uptime` ms.
fn v5(unix_secs: u32, uptime: u32, first: u32, last: u32, src_port: u16) -> Vec<u8> {
    let mut d = Vec::with_capacity(72);
    d.extend_from_slice(&5u16.to_be_bytes());
    d.extend_from_slice(&1u16.to_be_bytes());
    d.extend_from_slice(&uptime.to_be_bytes());
    d.extend_from_slice(&unix_secs.to_be_bytes());
    d.extend_from_slice(&0u32.to_be_bytes()); // nsecs
    d.extend_from_slice(&0u32.to_be_bytes()); // sequence
    d.extend_from_slice(&[0, 0, 0, 0]); // engine type, id, sampling
    d.extend_from_slice(&[10, 0, 0, 1]); // src
    d.extend_from_slice(&[10, 0, 0, 2]); // dst
    d.extend_from_slice(&[0, 0, 0, 0]); // next hop
    d.extend_from_slice(&[0, 1, 0, 2]); // input, output
    d.extend_from_slice(&3u32.to_be_bytes()); // packets
    d.extend_from_slice(&300u32.to_be_bytes()); // bytes
    d.extend_from_slice(&first.to_be_bytes());
    d.extend_from_slice(&last.to_be_bytes());
    d.extend_from_slice(&src_port.to_be_bytes());
    d.extend_from_slice(&443u16.to_be_bytes());
    d.extend_from_slice(&[0, 0x18, 6, 0]); // pad, flags, tcp, tos
    d.extend_from_slice(&[0; 8]); // AS numbers, masks, pad
    assert_eq!(d.len(), 72);
    d
}

#[test]
fn records_from_a_wrong_clock_are_filed_at_receipt_and_counted() {
    let config = CollectorConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        workers: 1,
        flush_every: Duration::from_millis(20),
        ..CollectorConfig::default()
    };
    let received: Arc<Mutex<Vec<FlowSummary>>> = Arc::default();
    let sink = received.clone();
    let collector = Collector::start(
        &config,
        Arc::new(RwLock::new(Arc::new(Enricher::default()))),
        move |b| sink.lock().unwrap().extend(b),
    )
    .unwrap();
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let uptime = 50_000_000;
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = collector.local_addrs()[0];
    // Ten minutes ahead, one second ahead (jitter), a minute back (true), and 1970.
    for d in [
        v5(now_s, uptime, uptime + 599_000, uptime + 600_000, 40001),
        v5(now_s, uptime, uptime, uptime + 1_000, 40002),
        v5(now_s, uptime, uptime - 61_000, uptime - 60_000, 40003),
        v5(1, uptime, uptime - 1_000, uptime, 40004),
    ] {
        sender.send_to(&d, to).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while collector.metrics().records < 4 {
        assert!(Instant::now() < deadline, "{:?}", collector.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = collector.metrics();
    // The counters are published at the worker's next flush.
    let deadline = Instant::now() + Duration::from_secs(120);
    while collector.metrics().time_clamped_past == 0 {
        assert!(Instant::now() < deadline, "{m:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let m = collector.metrics();
    collector.stop();
    assert_eq!(
        (m.time_clamped_future, m.time_clamped_past),
        (1, 1),
        "{m:?}"
    );
    let summaries = received.lock().unwrap();
    let minutes: Vec<_> = summaries
        .iter()
        .filter(|s| s.key.bucket == Bucket::Minute)
        .collect();
    assert_eq!(
        minutes.iter().map(|s| s.packets).sum::<u64>(),
        12,
        "nothing is lost"
    );
    for s in &minutes {
        assert!(s.last_seen_ms <= stopped_at, "ends in the future: {s:?}");
        assert!(
            s.first_seen_ms >= stopped_at - 3_600_000,
            "filed in 1970: {s:?}"
        );
    }
}
