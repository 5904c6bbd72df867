//! Inputs the fuzz targets (crates/flow/fuzz) found, kept as plain tests.

mod common;

use std::net::SocketAddr;

use bulkhead_flow::{Decoder, DecoderConfig};
use common::build::{f, ipfix, rec, set, tpl, v9};

const T0: u32 = 1_700_000_000;

fn exporter() -> SocketAddr {
    "192.0.2.1:4739".parse().unwrap()
}

fn fields() -> Vec<common::build::F> {
    vec![f(8, 4), f(12, 4), f(4, 1), f(2, 4), f(1, 4)]
}

fn record() -> Vec<u8> {
    rec(&[
        (0x0a00_0001, 4),
        (0x0a00_0002, 4),
        (6, 1),
        (3, 4),
        (1500, 4),
    ])
}

/// `stateful` target: an empty data set (a set header and nothing else) for a template
/// not yet known was held as a zero-byte set. It took a hold slot (evicting real held
/// data when the queue was full), escaped the byte budget, left the IPFIX sequence
/// unknown, and was later counted in `no_template` though it carried no record. An
/// empty set is now skipped, as it is when its template is known.
#[test]
fn an_empty_data_set_for_an_unknown_template_is_not_held() {
    let cfg = DecoderConfig {
        max_pending_sets: 2,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::with_config(cfg);
    // Real data held before its template.
    let held = ipfix(1, T0, &[set(300, &record())]);
    assert!(d.decode(exporter(), &held).unwrap().is_empty());
    // Empty sets for unknown templates, more than the hold queue has room for.
    for id in [400u16, 401, 402] {
        let empty = ipfix(1, T0, &[set(id, &[])]);
        assert!(d.decode(exporter(), &empty).unwrap().is_empty());
        let v9_empty = v9(1, 1000, T0, 1, &[set(id, &[])]);
        assert!(d.decode(exporter(), &v9_empty).unwrap().is_empty());
    }
    let c = d.counters();
    assert_eq!((c.pending_sets, c.no_template, c.malformed), (1, 0, 0));
    assert_eq!(c.pending_bytes, record().len() as u64);
    // The held record survived them and is released by its template.
    let out = d
        .decode(exporter(), &ipfix(1, T0, &[set(2, &tpl(300, &fields()))]))
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(d.expire_pending(), 0);
    assert_eq!(d.counters().no_template, 0);
}
