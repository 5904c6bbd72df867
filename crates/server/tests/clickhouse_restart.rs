//! ClickHouse killed and started again under a running collector: the summaries closed
//! while it was down are held (counted), then delivered once it is back, without any
//! new traffic to prompt the retry.

use std::net::UdpSocket;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulkhead_model::Bucket;
use bulkhead_store::{FlowLocation, FlowQuery};
use bulkhead_testkit::clickhouse::ClickHouse;
use bulkhead_testkit::wait_for;

/// Bounds a broken run only; nothing here measures time.
const LIMIT: Duration = Duration::from_secs(120);

/// A NetFlow v5 datagram of one record per port, 10.9.0.1 → 10.9.0.2 over tcp, whose
/// flows ended five minutes ago: their minute is closed, so the collector hands them
/// to the store at its next flush instead of a minute later.
fn netflow_v5(ports: std::ops::Range<u16>) -> Vec<u8> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let uptime_ms: u32 = 10_000_000;
    let at = uptime_ms - 300_000;
    let count = ports.len() as u16;
    let mut d = Vec::new();
    d.extend_from_slice(&5u16.to_be_bytes());
    d.extend_from_slice(&count.to_be_bytes());
    d.extend_from_slice(&uptime_ms.to_be_bytes());
    d.extend_from_slice(&(now.as_secs() as u32).to_be_bytes());
    d.extend_from_slice(&0u32.to_be_bytes()); // nanoseconds
    d.extend_from_slice(&u32::from(ports.start).to_be_bytes()); // flow sequence
    d.extend_from_slice(&[0, 0, 0, 0]); // engine type and id, sampling
    for port in ports {
        d.extend_from_slice(&[10, 9, 0, 1, 10, 9, 0, 2, 0, 0, 0, 0]);
        d.extend_from_slice(&[0, 1, 0, 2]); // interfaces
        d.extend_from_slice(&3u32.to_be_bytes()); // packets
        d.extend_from_slice(&300u32.to_be_bytes()); // bytes
        d.extend_from_slice(&at.to_be_bytes());
        d.extend_from_slice(&(at + 10).to_be_bytes());
        d.extend_from_slice(&40_000u16.to_be_bytes());
        d.extend_from_slice(&port.to_be_bytes());
        d.extend_from_slice(&[0, 0x1b, 6, 0]); // pad, tcp flags, tcp, tos
        d.extend_from_slice(&[0; 8]); // AS numbers, masks, pad
    }
    d
}

fn stored_ports(state: &bulkhead_server::AppState) -> Vec<u16> {
    let mut q = FlowQuery::new(Bucket::Minute, i64::MIN, i64::MAX);
    q.limit = 1000;
    let store = &state.flows;
    let mut ports: Vec<u16> = store
        .query(&q)
        .unwrap()
        .iter()
        .map(|s| s.key.port)
        .collect();
    ports.sort_unstable();
    ports
}

#[test]
fn a_collector_holds_summaries_while_clickhouse_restarts_and_delivers_them_after() {
    // A server of this test's own: it is killed.
    let clickhouse = ClickHouse::start();
    let url = clickhouse.fresh_url();
    let dir = tempfile::tempdir().unwrap();
    let flows = FlowLocation::parse(Some(&url), dir.path()).unwrap();
    let state = bulkhead_server::open_with(dir.path(), None, Some(&flows)).unwrap();
    bulkhead_server::start_collectors(&state, vec!["127.0.0.1:0".parse().unwrap()], 1).unwrap();
    let collector = bulkhead_server::collector_addrs(&state)[0];
    let exporter = UdpSocket::bind("127.0.0.1:0").unwrap();

    exporter
        .send_to(&netflow_v5(1000..1010), collector)
        .unwrap();
    let before: Vec<u16> = (1000..1010).collect();
    wait_for("the first flows in ClickHouse", LIMIT, || {
        (stored_ports(&state) == before).then_some(())
    });

    clickhouse.kill();
    exporter
        .send_to(&netflow_v5(2000..2010), collector)
        .unwrap();
    let counters = state.flow_writes.clone();
    wait_for(
        "the collector to hold what ClickHouse cannot take",
        LIMIT,
        || (counters.held.load(Relaxed) >= 10).then_some(()),
    );
    assert!(counters.failures.load(Relaxed) >= 1);

    clickhouse.restart();
    // No traffic from here on: the collector retries by itself.
    wait_for("the held summaries to be delivered", LIMIT, || {
        (counters.held.load(Relaxed) == 0).then_some(())
    });
    let mut expected = before;
    expected.extend(2000..2010);
    assert_eq!(
        stored_ports(&state),
        expected,
        "nothing lost, nothing twice"
    );
    assert_eq!(counters.dropped.load(Relaxed), 0);
    bulkhead_server::stop_collectors(&state);
}
