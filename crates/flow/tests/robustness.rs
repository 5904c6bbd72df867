//! Hostile input: random bytes and mutated real datagrams must yield records
//! or errors, never a panic or a hang.

mod common;

use std::sync::OnceLock;

use bulkhead_flow::Decoder;
use common::{Datagram, load_fixtures};
use proptest::prelude::*;

fn fixtures() -> &'static [Datagram] {
    static F: OnceLock<Vec<Datagram>> = OnceLock::new();
    F.get_or_init(load_fixtures)
}

/// A decoder that has seen every template of the fixtures, so that mutated
/// data datagrams reach the record decoding paths.
fn primed() -> Decoder {
    let mut d = Decoder::new();
    for f in fixtures() {
        let _ = d.decode(f.exporter, &f.bytes);
    }
    d
}

#[test]
fn invalid_fixtures_are_counted_errors() {
    let mut d = Decoder::new();
    let mut invalid = 0;
    for f in fixtures().iter().filter(|f| f.file.contains("invalid")) {
        invalid += 1;
        assert!(
            d.decode(f.exporter, &f.bytes).is_err(),
            "{} accepted",
            f.file
        );
    }
    assert_eq!(invalid, 3);
    assert_eq!(d.counters().malformed, 3);
    // ... and the decoder goes on.
    let ok = fixtures()
        .iter()
        .find(|f| f.file == "netflow5_test_microtik.dat")
        .unwrap();
    assert_eq!(d.decode(ok.exporter, &ok.bytes).unwrap().len(), 30);
}

#[test]
fn every_truncation_of_every_fixture_is_handled() {
    let mut d = primed();
    for f in fixtures() {
        for len in 0..f.bytes.len() {
            let res = d.decode(f.exporter, &f.bytes[..len]);
            // v5 and IPFIX headers fix the datagram length, so any cut is
            // detected; v9 has no length and a cut at a flowset boundary is
            // indistinguishable from a shorter datagram.
            if f.bytes[1] != 9 {
                assert!(res.is_err(), "{} cut to {len} accepted", f.file);
            }
        }
    }
}

fn version_prefixed() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(vec![0u8, 5]),
            Just(vec![0u8, 9]),
            Just(vec![0u8, 10]),
            Just(vec![0u8, 0, 0, 5]),
        ],
        proptest::collection::vec(any::<u8>(), 0..1600),
    )
        .prop_map(|(mut head, tail)| {
            head.extend(tail);
            // Make IPFIX lengths agree with the datagram often enough to get
            // past the header check.
            if head.len() >= 4 && head[1] == 10 {
                let n = (head.len() as u16).to_be_bytes();
                head[2] = n[0];
                head[3] = n[1];
            }
            head
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in version_prefixed()) {
        let mut d = Decoder::new();
        let e = "192.0.2.1:2055".parse().unwrap();
        let _ = d.decode(e, &bytes);
        // Feeding it twice exercises the held-set and template paths.
        let _ = d.decode(e, &bytes);
        prop_assert_eq!(d.counters().datagrams, 2);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        idx in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let f = idx.get(fixtures());
        let mut bytes = f.bytes.clone();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let mut d = primed();
        let before = d.counters().records;
        if let Ok(out) = d.decode(f.exporter, &bytes) {
            prop_assert_eq!(d.counters().records - before, out.len() as u64);
        }
    }
}
