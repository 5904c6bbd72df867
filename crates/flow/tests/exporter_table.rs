//! The exporter table under attack and over time: floods of template-only
//! and one-shot senders, eviction, TTL, per-exporter counters and
//! sequence-gap accounting through the public API.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bulkhead_flow::{Decoder, DecoderConfig, ExporterStats, SFLOW_V5};
use common::build::*;

const T0: u32 = 1_700_000_000;

fn record(i: u32) -> Vec<u8> {
    rec(&[
        (0x0a00_0001 + u64::from(i), 4),
        (0x0a00_0101, 4),
        (40000 + u64::from(i % 1000), 2),
        (443, 2),
        (6, 1),
        (10, 4),
        (1500, 4),
    ])
}

/// An IPFIX message with its sequence number set.
fn ipfix_seq(domain: u32, seq: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let mut m = ipfix(domain, T0, sets);
    m[8..12].copy_from_slice(&seq.to_be_bytes());
    m
}

fn template() -> Vec<u8> {
    set(2, &tpl(256, &basic_fields()))
}

fn data(first: u32, n: u32) -> Vec<u8> {
    let body: Vec<u8> = (first..first + n).flat_map(record).collect();
    set(256, &body)
}

fn stats_of(d: &Decoder, ip: IpAddr) -> ExporterStats {
    d.exporters()
        .into_iter()
        .find(|e| e.address == ip)
        .unwrap_or_else(|| panic!("{ip} has no state"))
}

/// A real exporter keeps its own sequence numbers (data records sent).
struct Real {
    addr: SocketAddr,
    seq: u32,
    sent: u64,
    got: u64,
}

impl Real {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            seq: 0,
            sent: 0,
            got: 0,
        }
    }

    fn send(&mut self, d: &mut Decoder, now: u64, sets: &[Vec<u8>], records: u32) {
        let m = ipfix_seq(1, self.seq, sets);
        let mut out = Vec::new();
        let n = d
            .decode_at(self.addr, &m, now, &mut out)
            .expect("real exporter");
        assert!(out.iter().all(|r| r.exporter == self.addr));
        self.seq = self.seq.wrapping_add(records);
        self.sent += u64::from(records);
        self.got += n as u64;
    }
}

struct Flood {
    decoder: Decoder,
    busy: Real,
    late: Real,
}

/// ~28,500 template-only datagrams from one host (a new source port each
/// time) interleaved with ~28,500 one-shot senders, while a busy exporter
/// sends data (with a long silence, during which more newcomers arrive
/// than the table holds) and a new exporter starts late. Asserts after
/// every datagram that the table stays within its limits.
fn flood(cfg: &DecoderConfig) -> Flood {
    let max = cfg.max_exporters;
    let mut d = Decoder::with_config(cfg.clone());
    let mut busy = Real::new(SocketAddr::from(([198, 51, 100, 1], 4739)));
    let mut late = Real::new(SocketAddr::from(([198, 51, 100, 2], 4739)));
    let sprayer = Ipv4Addr::new(203, 0, 113, 66);
    let mut now = 0u64;
    busy.send(&mut d, now, &[template()], 0);
    let mut next = 0u32;
    let late_starts = 40_000u32;
    for i in 0..57_000u32 {
        now += 1;
        let from = if i % 2 == 0 {
            SocketAddr::from((sprayer, 1024 + (i / 2) as u16))
        } else {
            SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 4739))
        };
        let m = ipfix_seq(
            1,
            0,
            &[set(2, &tpl(256 + (i % 1000) as u16, &basic_fields()))],
        );
        d.decode_at(from, &m, now, &mut Vec::new())
            .expect("flood datagram");
        // Silent from 10,000 to 40,000: 15,000 newcomers in between.
        if i % 50 == 0 && !(10_000..40_000).contains(&i) {
            busy.send(&mut d, now, &[data(next, 3)], 3);
            next += 3;
        }
        if i == late_starts {
            late.send(&mut d, now, &[template()], 0);
        }
        // Its data comes 2,000 one-shot senders after its template.
        if i >= late_starts + 4_000 && i % 50 == 25 {
            late.send(&mut d, now, &[data(next, 2)], 2);
        }
        let table = d.exporter_table();
        assert!(table.exporters <= max, "{table:?}");
        assert!(table.protected <= table.max_protected, "{table:?}");
    }
    Flood {
        decoder: d,
        busy,
        late,
    }
}

#[test]
fn floods_do_not_blind_the_decoder() {
    let cfg = DecoderConfig::default();
    let max = cfg.max_exporters;
    let Flood {
        decoder: d,
        busy,
        late,
    } = flood(&cfg);
    assert_eq!((busy.got, busy.sent), (3 * 540, 3 * 540));
    assert!(late.sent > 500, "late exporter sent {}", late.sent);
    assert_eq!(late.got, late.sent);
    let c = d.counters();
    assert_eq!(c.malformed, 0, "{c:?}");
    assert_eq!(c.no_template, 0, "{c:?}");
    assert_eq!(c.pending_sets, 0, "{c:?}");
    assert_eq!(c.sequence_gaps, 0, "{c:?}");
    assert_eq!(c.records, busy.sent + late.sent);

    for real in [&busy, &late] {
        let s = stats_of(&d, real.addr.ip());
        assert!(s.protected, "{s:?}");
        assert_eq!(s.counters.records, real.sent, "{s:?}");
        assert_eq!(s.counters.sequence_gaps, 0, "{s:?}");
        assert_eq!(s.templates, 1, "{s:?}");
    }
    let table = d.exporter_table();
    assert_eq!(table.exporters, max);
    assert!(table.table_full >= 28_500 - max as u64, "{table:?}");
    assert_eq!(table.table_full, table.evicted + table.expired, "{table:?}");
    // The sprayer is one exporter, however many ports it used, and never
    // proves itself.
    let sprayer = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));
    let s = stats_of(&d, sprayer);
    assert_eq!(s.counters.datagrams, 28_500);
    assert!(s.templates <= cfg.max_templates_per_scope, "{s:?}");
    assert!(!s.protected);
    assert_eq!(d.exporters().len(), max);
}

/// The same flood against plain LRU (nobody is ever promoted): the busy
/// exporter's template is evicted during its silence. This is what the
/// protected segment prevents, and shows the test above can fail.
#[test]
fn plain_lru_would_be_blinded() {
    let cfg = DecoderConfig {
        promote_after: u32::MAX,
        ..DecoderConfig::default()
    };
    let Flood {
        decoder: mut d,
        busy,
        ..
    } = flood(&cfg);
    assert!(busy.got < busy.sent, "{} of {}", busy.got, busy.sent);
    d.expire_pending();
    assert!(d.counters().no_template > 0);
}

#[test]
fn template_only_senders_stay_on_probation() {
    let mut d = Decoder::new();
    let e = SocketAddr::from(([192, 0, 2, 1], 4739));
    for i in 0..5 {
        d.decode_at(e, &ipfix_seq(1, 0, &[template()]), i, &mut Vec::new())
            .unwrap();
    }
    assert!(!stats_of(&d, e.ip()).protected);
    d.decode_at(e, &ipfix_seq(1, 0, &[data(0, 1)]), 6, &mut Vec::new())
        .unwrap();
    assert!(!stats_of(&d, e.ip()).protected, "one datagram is not proof");
    d.decode_at(e, &ipfix_seq(1, 1, &[data(1, 1)]), 7, &mut Vec::new())
        .unwrap();
    let s = stats_of(&d, e.ip());
    assert!(s.protected);
    assert_eq!((s.first_seen_ms, s.last_seen_ms), (0, 7));
    assert_eq!(
        (
            s.counters.datagrams,
            s.counters.records,
            s.counters.templates
        ),
        (7, 2, 5)
    );
}

#[test]
fn silent_exporters_expire_after_the_ttl() {
    let cfg = DecoderConfig {
        exporter_idle_ttl_ms: 30 * 60 * 1000,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::with_config(cfg);
    let quiet = SocketAddr::from(([192, 0, 2, 1], 4739));
    let chatty = SocketAddr::from(([192, 0, 2, 2], 4739));
    d.decode_at(quiet, &ipfix_seq(1, 0, &[template()]), 0, &mut Vec::new())
        .unwrap();
    // A data set waiting for a template that never comes.
    d.decode_at(quiet, &ipfix_seq(2, 0, &[data(0, 1)]), 0, &mut Vec::new())
        .unwrap();
    d.decode_at(chatty, &ipfix_seq(1, 0, &[template()]), 0, &mut Vec::new())
        .unwrap();
    d.decode_at(
        chatty,
        &ipfix_seq(1, 0, &[template()]),
        29 * 60 * 1000,
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(d.expire_idle(30 * 60 * 1000), 0);
    assert_eq!(d.expire_idle(30 * 60 * 1000 + 1), 1);
    assert_eq!(d.exporter_count(), 1);
    assert_eq!(d.template_count(&quiet), 0);
    let c = d.counters();
    assert_eq!(
        (c.exporters_expired, c.no_template, c.pending_sets),
        (1, 1, 0)
    );
    assert_eq!(c.pending_bytes, 0);
}

#[test]
fn state_is_shared_across_source_ports() {
    let mut d = Decoder::new();
    let a = SocketAddr::from(([192, 0, 2, 1], 40001));
    let b = SocketAddr::from(([192, 0, 2, 1], 40002));
    d.decode(a, &ipfix_seq(1, 0, &[template()])).unwrap();
    let out = d.decode(b, &ipfix_seq(1, 0, &[data(0, 2)])).unwrap();
    assert_eq!(out.len(), 2);
    // Records still say which socket they came from.
    assert_eq!(out[0].exporter, b);
    assert_eq!(d.exporter_count(), 1);
    assert_eq!(stats_of(&d, a.ip()).last_port, 40002);
}

#[test]
fn ipfix_sequence_gaps_count_missing_records() {
    let mut d = Decoder::new();
    let e = SocketAddr::from(([192, 0, 2, 1], 4739));
    d.decode(e, &ipfix_seq(7, 100, &[template(), data(0, 3)]))
        .unwrap();
    // Records 103..=107 lost with their message.
    d.decode(e, &ipfix_seq(7, 108, &[data(0, 2)])).unwrap();
    d.decode(e, &ipfix_seq(7, 110, &[data(0, 1)])).unwrap();
    let s = stats_of(&d, e.ip());
    assert_eq!(s.counters.sequence_gaps, 5);
    assert_eq!(s.scopes.len(), 1);
    assert_eq!((s.scopes[0].version, s.scopes[0].domain), (10, 7));
    assert_eq!(s.scopes[0].sequence_gaps, 5);
    assert_eq!(d.counters().sequence_gaps, 5);
}

#[test]
fn ipfix_sequence_wraps_and_restarts() {
    let mut d = Decoder::new();
    let e = SocketAddr::from(([192, 0, 2, 1], 4739));
    d.decode(e, &ipfix_seq(1, u32::MAX - 1, &[template(), data(0, 3)]))
        .unwrap();
    // u32::MAX - 1 + 3 wraps to 1.
    d.decode(e, &ipfix_seq(1, 1, &[data(0, 1)])).unwrap();
    assert_eq!(d.counters().sequence_gaps, 0);
    d.decode(e, &ipfix_seq(1, 4, &[data(0, 1)])).unwrap();
    assert_eq!(d.counters().sequence_gaps, 2);
    // The exporter restarts after a long run: back to zero.
    d.decode(e, &ipfix_seq(1, 3_000_000_000, &[data(0, 1)]))
        .unwrap();
    d.decode(e, &ipfix_seq(1, 0, &[data(0, 1)])).unwrap();
    let c = d.counters();
    assert_eq!((c.sequence_gaps, c.sequence_resets), (2, 2));
}

fn v9_seq(source: u32, seq: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let mut m = v9(source, 1000, T0, sets.len() as u16, sets);
    m[12..16].copy_from_slice(&seq.to_be_bytes());
    m
}

#[test]
fn v9_sequence_counts_export_packets() {
    let mut d = Decoder::new();
    let e = SocketAddr::from(([192, 0, 2, 1], 2055));
    let t = set(0, &tpl(256, &basic_fields()));
    d.decode(e, &v9_seq(3, 10, &[t])).unwrap();
    // Each packet advances by one, whatever it carries.
    d.decode(e, &v9_seq(3, 11, &[data(0, 5)])).unwrap();
    d.decode(e, &v9_seq(3, 15, &[data(0, 5)])).unwrap();
    let s = stats_of(&d, e.ip());
    assert_eq!((s.counters.sequence_gaps, s.counters.records), (3, 10));
    assert_eq!((s.scopes[0].version, s.scopes[0].domain), (9, 3));
}

fn v5_seq(seq: u32, count: u16) -> Vec<u8> {
    let mut m = vec![0u8; 24];
    m[0..2].copy_from_slice(&5u16.to_be_bytes());
    m[2..4].copy_from_slice(&count.to_be_bytes());
    m[8..12].copy_from_slice(&T0.to_be_bytes());
    m[16..20].copy_from_slice(&seq.to_be_bytes());
    m[20] = 1; // engine type
    m[21] = 2; // engine id
    for i in 0..count {
        let mut r = vec![0u8; 48];
        r[0..4].copy_from_slice(&[10, 0, 0, 1]);
        r[4..8].copy_from_slice(&[10, 0, 0, u8::try_from(i).unwrap() + 2]);
        r[16..20].copy_from_slice(&1u32.to_be_bytes());
        r[20..24].copy_from_slice(&60u32.to_be_bytes());
        r[38] = 17;
        m.extend(r);
    }
    m
}

#[test]
fn v5_sequence_counts_flows() {
    let mut d = Decoder::new();
    let e = SocketAddr::from(([192, 0, 2, 1], 2055));
    d.decode(e, &v5_seq(0, 3)).unwrap();
    d.decode(e, &v5_seq(3, 2)).unwrap();
    // Flows 5..=9 never arrived.
    d.decode(e, &v5_seq(10, 1)).unwrap();
    let s = stats_of(&d, e.ip());
    assert_eq!((s.counters.sequence_gaps, s.counters.records), (5, 6));
    assert_eq!((s.scopes[0].version, s.scopes[0].domain), (5, 0x0102));
}

fn sflow_seq(sub_agent: u32, seq: u32) -> Vec<u8> {
    let mut d = Vec::new();
    for w in [5u32, 1, 0xc000_020a, sub_agent, seq, 1000, 0] {
        d.extend(w.to_be_bytes());
    }
    d
}

#[test]
fn sflow_sequence_counts_datagrams_per_sub_agent() {
    let mut d = Decoder::new();
    let e = SocketAddr::from(([192, 0, 2, 10], 6343));
    for (sub, seq) in [(0, 1), (1, 50), (0, 2), (0, 5), (1, 51), (1, 53)] {
        d.decode(e, &sflow_seq(sub, seq)).unwrap();
    }
    let s = stats_of(&d, e.ip());
    assert_eq!(s.counters.sequence_gaps, 3);
    let per: Vec<(u16, u32, u64)> = s
        .scopes
        .iter()
        .map(|x| (x.version, x.domain, x.sequence_gaps))
        .collect();
    assert_eq!(per, vec![(SFLOW_V5, 0, 2), (SFLOW_V5, 1, 1)]);
}

#[test]
fn malformed_and_unknown_template_sets_are_counted_per_exporter() {
    let mut d = Decoder::new();
    let e = SocketAddr::from(([192, 0, 2, 1], 4739));
    d.decode(e, &ipfix_seq(1, 0, &[template()])).unwrap();
    let mut broken = ipfix_seq(1, 0, &[data(0, 1)]);
    broken.truncate(broken.len() - 2);
    assert!(d.decode(e, &broken).is_err());
    d.decode(e, &ipfix_seq(9, 0, &[data(0, 1)])).unwrap();
    d.expire_pending();
    let s = stats_of(&d, e.ip());
    assert_eq!(
        (
            s.counters.datagrams,
            s.counters.malformed,
            s.counters.no_template
        ),
        (3, 1, 1)
    );
}

/// Template sets of 30-field templates with ids `first..first + n`, one per set.
fn wide_templates(first: u16, n: u16) -> Vec<Vec<u8>> {
    let fields: Vec<F> = (0..30).map(|i| f(100 + i, 4)).collect();
    (first..first + n)
        .map(|id| set(2, &tpl(id, &fields)))
        .collect()
}

#[test]
fn a_template_storm_fills_its_own_budget_and_no_one_elses() {
    let cfg = DecoderConfig {
        max_template_bytes_per_exporter: 64 * 1024,
        max_template_bytes_total: 96 * 1024,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::with_config(cfg.clone());
    let storm = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 66), 4739));
    // A real exporter, proven (records in two datagrams) before the storm.
    let mut real = Real::new(SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 4739)));
    real.send(&mut d, 0, &[template(), data(0, 5)], 5);
    real.send(&mut d, 0, &[template(), data(5, 5)], 5);
    let real_bytes = d.counters().template_bytes;
    assert!(real_bytes > 0);

    // Distinct templates across many domains, far past the per-exporter budget.
    let (mut learned, mut refused) = (0u32, 0u32);
    for domain in 0..60 {
        for s in wide_templates(256, 50) {
            match d.decode_at(storm, &ipfix(domain, T0, &[s]), 1, &mut Vec::new()) {
                Ok(_) => learned += 1,
                Err(e) => {
                    assert!(e.to_string().contains("template memory"), "{e}");
                    refused += 1;
                }
            }
        }
    }
    assert!(
        learned > 0 && refused > 0,
        "{learned} learned, {refused} refused"
    );
    let storm_bytes = d.counters().template_bytes - real_bytes;
    assert!(
        storm_bytes <= cfg.max_template_bytes_per_exporter as u64,
        "the storm holds {storm_bytes} bytes of templates"
    );
    assert!(
        real_bytes + storm_bytes + cfg.max_template_bytes_per_exporter as u64
            > cfg.max_template_bytes_total as u64,
        "the storm must leave less than a budget free for this test to mean anything"
    );

    // A new exporter arrives: the unproven storm makes room for its templates.
    let mut newcomer = Real::new(SocketAddr::from((Ipv4Addr::new(192, 0, 2, 2), 4739)));
    newcomer.send(&mut d, 2, &[template(), data(0, 5)], 5);
    newcomer.send(&mut d, 2, &[data(5, 5)], 5);
    assert_eq!(newcomer.got, 10);
    assert!(
        d.exporters().iter().all(|e| e.address != storm.ip()),
        "the storm was shed"
    );

    // A second storm now finds only proven exporters: it keeps to its own budget,
    // and the total holds.
    let second = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 67), 4739));
    let mut second_refused = 0;
    for s in wide_templates(256, 400) {
        if d.decode_at(second, &ipfix(1, T0, &[s]), 3, &mut Vec::new())
            .is_err()
        {
            second_refused += 1;
        }
    }
    assert!(second_refused > 0);
    assert!(d.counters().template_bytes <= cfg.max_template_bytes_total as u64);

    // The proven exporters keep decoding with the templates they had.
    real.send(&mut d, 4, &[data(10, 5)], 5);
    newcomer.send(&mut d, 4, &[data(10, 5)], 5);
    assert_eq!((real.got, newcomer.got), (15, 15));

    // Storms gone, their memory comes back.
    d.forget_exporter(&second);
    assert_eq!(d.counters().template_bytes, 2 * real_bytes);

    // Withdrawing templates gives their memory back too.
    let withdraw_all = set(2, &[0, 2, 0, 0]);
    real.send(&mut d, 5, &[withdraw_all], 0);
    assert_eq!(d.counters().template_bytes, real_bytes);
}
