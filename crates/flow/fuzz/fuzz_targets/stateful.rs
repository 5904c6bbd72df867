#![no_main]
//! The decoder as a collector drives it: one input is a sequence of datagrams
//! of any version from several exporters, at a clock that moves, through
//! `decode_at`/`decode_full`, with idle expiry in between. The limits are
//! small so that eviction, the hold queue, template caps and TTL expiry are
//! reached by short inputs. After every step the decoder's own accounting is
//! checked against its limits.
//!
//! Input: chunks of `[control: u8][length: u16 BE][datagram]`.
//! control bits 0-2: the exporter (see `EXPORTERS`); bits 3-5: how far the
//! clock moves first (`STEPS`); bit 6: call `expire_idle` afterwards;
//! bit 7: decode with `decode_full` (sFlow interface counters kept).

use std::net::SocketAddr;

use bulkhead_flow::{Decoder, DecoderConfig};
use libfuzzer_sys::fuzz_target;

const EXPORTERS: [&str; 8] = [
    "192.0.2.1:2055",
    "192.0.2.1:40000", // same exporter, another source port
    "192.0.2.2:2055",
    "192.0.2.3:4739",
    "198.51.100.7:6343",
    "[2001:db8::1]:2055",
    "[2001:db8::2]:4739",
    "203.0.113.9:9995",
];
const STEPS: [u64; 8] = [0, 1, 10, 100, 999, 1_001, 60_000, 3_600_000];

fn config() -> DecoderConfig {
    DecoderConfig {
        capture_extra: true,
        max_exporters: 4,
        exporter_idle_ttl_ms: 1_000,
        promote_after: 2,
        max_templates_per_scope: 8,
        max_template_bytes_per_exporter: 2_048,
        max_template_bytes_total: 4_096,
        max_scopes_per_exporter: 3,
        max_pending_sets: 4,
        max_pending_bytes: 4_096,
        max_pending_bytes_total: 6_144,
    }
}

fn check(d: &Decoder) {
    let cfg = d.config();
    let c = d.counters();
    let table = d.exporter_table();
    assert!(table.exporters <= cfg.max_exporters, "{table:?}");
    assert_eq!(table.exporters, d.exporter_count());
    assert_eq!(
        table.probation + table.protected,
        table.exporters,
        "{table:?}"
    );
    assert!(table.protected <= table.max_protected, "{table:?}");
    assert!(
        c.pending_bytes <= cfg.max_pending_bytes_total as u64,
        "{c:?}"
    );
    assert!(
        c.template_bytes <= cfg.max_template_bytes_total as u64,
        "{c:?}"
    );
    let exporters = d.exporters();
    assert_eq!(exporters.len(), table.exporters);
    let templates: usize = exporters.iter().map(|e| e.templates).sum();
    assert_eq!(templates == 0, c.template_bytes == 0, "{c:?}");
    let mut pending = 0u64;
    for e in &exporters {
        assert!(e.pending_sets <= cfg.max_pending_sets, "{e:?}");
        assert!(e.scopes.len() <= cfg.max_scopes_per_exporter, "{e:?}");
        for s in &e.scopes {
            assert!(s.templates <= cfg.max_templates_per_scope, "{e:?}");
        }
        assert_eq!(
            e.templates,
            e.scopes.iter().map(|s| s.templates).sum::<usize>()
        );
        pending += e.pending_sets as u64;
    }
    assert_eq!(pending, c.pending_sets, "{c:?}");
    assert_eq!(c.pending_sets == 0, c.pending_bytes == 0, "{c:?}");
}

fuzz_target!(|data: &[u8]| {
    let exporters: Vec<SocketAddr> = EXPORTERS.iter().map(|a| a.parse().unwrap()).collect();
    let mut d = Decoder::with_config(config());
    let mut now = 1_000_000u64;
    let mut out = Vec::new();
    let mut interfaces = Vec::new();
    let mut rest = data;
    while rest.len() >= 3 {
        let control = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let datagram = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let from = exporters[usize::from(control & 7)];
        now += STEPS[usize::from((control >> 3) & 7)];

        let before = d.counters();
        out.clear();
        interfaces.clear();
        let res = if control & 0x80 != 0 {
            d.decode_full(from, datagram, now, &mut out, &mut interfaces)
        } else {
            d.decode_at(from, datagram, now, &mut out)
        };
        let after = d.counters();
        assert_eq!(after.datagrams, before.datagrams + 1);
        match res {
            Ok(n) => {
                assert_eq!(n, out.len());
                assert_eq!(after.records - before.records, n as u64);
                // Held sets that fail to decode once their template comes
                // count as malformed while the datagram itself is fine.
                assert!(after.malformed >= before.malformed);
                // Released held sets may have come from another port of
                // the same host, never from another host.
                assert!(out.iter().all(|r| r.exporter.ip() == from.ip()));
            }
            Err(_) => {
                assert!(out.is_empty() && interfaces.is_empty());
                assert_eq!(after.records, before.records);
                assert_eq!(after.malformed, before.malformed + 1);
            }
        }
        if control & 0x40 != 0 {
            d.expire_idle(now);
        }
        check(&d);
    }
    d.expire_pending();
    assert_eq!(
        (d.counters().pending_sets, d.counters().pending_bytes),
        (0, 0)
    );
    d.expire_idle(now + 3_600_000);
    assert_eq!(d.exporter_count(), 0);
    check(&d);
});
