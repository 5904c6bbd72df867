//! Behaviour of the template machinery on datagrams built byte by byte.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bulkhead_flow::{DecodeError, Decoder, DecoderConfig};
use common::build::*;

const T0: u32 = 1_700_000_000;

fn exporter(n: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(192, 0, 2, n), 4739))
}

fn basic_record(i: u32) -> Vec<u8> {
    rec(&[
        (0x0a00_0001 + u64::from(i), 4),
        (0x0a00_0101, 4),
        (40000 + u64::from(i), 2),
        (443, 2),
        (6, 1),
        (10, 4),
        (1500, 4),
    ])
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[test]
fn ipfix_template_then_data() {
    let mut d = Decoder::new();
    let mut fs = basic_fields();
    fs.extend([f(152, 8), f(153, 8), f(6, 2), f(10, 4), f(14, 4), f(5, 1)]);
    let t = ipfix(7, T0, &[set(2, &tpl(256, &fs))]);
    assert!(d.decode(exporter(1), &t).unwrap().is_empty());
    let mut r = basic_record(0);
    r.extend(rec(&[
        (1_699_999_990_000, 8),
        (1_699_999_999_500, 8),
        (0x12, 2),
        (3, 4),
        (4, 4),
        (0x2e, 1),
    ]));
    let out = d
        .decode(exporter(1), &ipfix(7, T0, &[set(256, &r)]))
        .unwrap();
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(r.version, 10);
    assert_eq!(r.observation_domain, 7);
    assert_eq!(r.src_addr, v4(10, 0, 0, 1));
    assert_eq!(r.dst_addr, v4(10, 0, 1, 1));
    assert_eq!((r.src_port, r.dst_port, r.protocol), (40000, 443, 6));
    assert_eq!((r.packets, r.bytes), (10, 1500));
    assert_eq!(
        (r.raw_packets, r.raw_bytes, r.sampling_interval),
        (10, 1500, 1)
    );
    assert_eq!(r.start_ms, Some(1_699_999_990_000));
    assert_eq!(r.end_ms, Some(1_699_999_999_500));
    assert_eq!(r.tcp_flags, Some(0x12));
    assert_eq!((r.input_interface, r.output_interface), (Some(3), Some(4)));
    assert_eq!(r.extra, vec![("ipClassOfService".into(), "46".to_string())]);
    let c = d.counters();
    assert_eq!(
        (c.datagrams, c.records, c.templates, c.malformed),
        (2, 1, 1, 0)
    );
}

#[test]
fn data_before_template_is_held_then_decoded() {
    let mut d = Decoder::new();
    let data = ipfix(
        1,
        T0,
        &[set(256, &[basic_record(0), basic_record(1)].concat())],
    );
    assert!(d.decode(exporter(1), &data).unwrap().is_empty());
    assert_eq!(d.counters().pending_sets, 1);
    // The template from another exporter must not release it.
    d.decode(
        exporter(2),
        &ipfix(1, T0, &[set(2, &tpl(256, &basic_fields()))]),
    )
    .unwrap();
    assert_eq!(d.counters().pending_sets, 1);
    let out = d
        .decode(
            exporter(1),
            &ipfix(1, T0, &[set(2, &tpl(256, &basic_fields()))]),
        )
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].src_port, 40001);
    let c = d.counters();
    assert_eq!((c.pending_sets, c.no_template, c.records), (0, 0, 2));
}

#[test]
fn held_sets_are_bounded_and_evictions_counted() {
    let cfg = DecoderConfig {
        max_pending_sets: 2,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::with_config(cfg);
    for id in [300u16, 301, 302] {
        let data = ipfix(1, T0, &[set(id, &basic_record(0))]);
        assert!(d.decode(exporter(1), &data).unwrap().is_empty());
    }
    let c = d.counters();
    assert_eq!((c.pending_sets, c.no_template), (2, 1));
    // The oldest (300) was evicted: its template arriving releases nothing.
    let out = d
        .decode(
            exporter(1),
            &ipfix(1, T0, &[set(2, &tpl(300, &basic_fields()))]),
        )
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(d.expire_pending(), 2);
    let c = d.counters();
    assert_eq!((c.pending_sets, c.no_template), (0, 3));
}

#[test]
fn templates_are_scoped_per_exporter_and_domain() {
    let mut d = Decoder::new();
    let narrow = vec![f(8, 4), f(12, 4), f(4, 1), f(2, 1), f(1, 1)];
    d.decode(
        exporter(1),
        &ipfix(1, T0, &[set(2, &tpl(256, &basic_fields()))]),
    )
    .unwrap();
    d.decode(exporter(1), &ipfix(2, T0, &[set(2, &tpl(256, &narrow))]))
        .unwrap();
    d.decode(exporter(2), &ipfix(1, T0, &[set(2, &tpl(256, &narrow))]))
        .unwrap();
    let wide = d
        .decode(exporter(1), &ipfix(1, T0, &[set(256, &basic_record(0))]))
        .unwrap();
    assert_eq!(
        (wide.len(), wide[0].bytes, wide[0].src_port),
        (1, 1500, 40000)
    );
    let small = rec(&[(0x0a000001, 4), (0x0a000002, 4), (17, 1), (3, 1), (200, 1)]);
    for (e, dom) in [(1, 2), (2, 1)] {
        let out = d
            .decode(exporter(e), &ipfix(dom, T0, &[set(256, &small)]))
            .unwrap();
        assert_eq!((out.len(), out[0].bytes, out[0].protocol), (1, 200, 17));
        assert_eq!(out[0].observation_domain, dom);
    }
    assert_eq!(d.exporter_count(), 2);
    assert_eq!(d.template_count(&exporter(1)), 2);
}

#[test]
fn ipfix_withdrawal_and_refresh() {
    let mut d = Decoder::new();
    let e = exporter(1);
    d.decode(
        e,
        &ipfix(
            1,
            T0,
            &[set(
                2,
                &[tpl(256, &basic_fields()), tpl(257, &basic_fields())].concat(),
            )],
        ),
    )
    .unwrap();
    assert_eq!(d.template_count(&e), 2);
    // Withdraw 256 (field count 0).
    d.decode(e, &ipfix(1, T0, &[set(2, &[1, 0, 0, 0])]))
        .unwrap();
    assert_eq!(d.template_count(&e), 1);
    assert_eq!(d.counters().templates_withdrawn, 1);
    let out = d
        .decode(e, &ipfix(1, T0, &[set(256, &basic_record(0))]))
        .unwrap();
    assert!(out.is_empty(), "withdrawn template must not decode");
    assert_eq!(d.counters().pending_sets, 1);
    // Withdraw all data templates (template id 2).
    d.decode(e, &ipfix(1, T0, &[set(2, &[0, 2, 0, 0])]))
        .unwrap();
    assert_eq!(d.template_count(&e), 0);
    assert_eq!(d.expire_pending(), 1);
    assert_eq!(d.counters().no_template, 1);
    // Re-announcing an id with a different layout replaces the old one.
    let narrow = vec![f(8, 4), f(12, 4), f(4, 1)];
    d.decode(e, &ipfix(1, T0, &[set(2, &tpl(256, &narrow))]))
        .unwrap();
    let out = d
        .decode(
            e,
            &ipfix(1, T0, &[set(256, &rec(&[(1, 4), (2, 4), (17, 1)]))]),
        )
        .unwrap();
    assert_eq!((out.len(), out[0].protocol, out[0].bytes), (1, 17, 0));
}

#[test]
fn variable_length_and_enterprise_fields() {
    let mut d = Decoder::new();
    let e = exporter(1);
    let fs = vec![
        f(8, 4),
        fe(100, 0xffff, 9), // Cisco-private, variable length: skipped
        f(12, 4),
        f(82, 0xffff),      // interfaceName, variable length
        fe(12235, 4, 6876), // VMware-private: skipped
        f(2, 4),
        f(1, 4),
    ];
    d.decode(e, &ipfix(1, T0, &[set(2, &tpl(400, &fs))]))
        .unwrap();
    let long_name = "x".repeat(300);
    let mut r = be(0x0a000001, 4);
    r.extend([3, b'a', b'b', b'c']);
    r.extend(be(0x0a000002, 4));
    r.push(255);
    r.extend(be(300, 2));
    r.extend(long_name.as_bytes());
    r.extend(be(0xdead_beef, 4));
    r.extend(rec(&[(5, 4), (700, 4)]));
    let mut r2 = be(0x0a000003, 4);
    r2.push(0);
    r2.extend(be(0x0a000004, 4));
    r2.extend([4, b'e', b't', b'h', b'0']);
    r2.extend(be(0, 4));
    r2.extend(rec(&[(6, 4), (800, 4)]));
    let out = d
        .decode(e, &ipfix(1, T0, &[set(400, &[r, r2].concat())]))
        .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].dst_addr, v4(10, 0, 0, 2));
    assert_eq!((out[0].packets, out[0].bytes), (5, 700));
    assert_eq!(out[0].extra, vec![("interfaceName".into(), long_name)]);
    assert_eq!(
        out[1].extra,
        vec![("interfaceName".into(), "eth0".to_string())]
    );
    assert_eq!((out[1].packets, out[1].bytes), (6, 800));
}

#[test]
fn varlen_running_past_the_set_is_an_error() {
    let mut d = Decoder::new();
    let e = exporter(1);
    d.decode(
        e,
        &ipfix(1, T0, &[set(2, &tpl(400, &[f(8, 4), f(82, 0xffff)]))]),
    )
    .unwrap();
    let mut r = be(0x0a000001, 4);
    r.extend([200, b'a']);
    let err = d.decode(e, &ipfix(1, T0, &[set(400, &r)])).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Data {
                template_id: 400,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(d.counters().malformed, 1);
}

#[test]
fn rfc5103_reverse_counters() {
    let mut d = Decoder::new();
    let e = exporter(1);
    let mut fs = basic_fields();
    fs.extend([fe(2, 4, 29305), fe(1, 8, 29305), fe(7, 2, 29305)]);
    d.decode(e, &ipfix(1, T0, &[set(2, &tpl(256, &fs))]))
        .unwrap();
    let mut r = basic_record(0);
    r.extend(rec(&[(8, 4), (9000, 8), (1, 2)]));
    let out = d.decode(e, &ipfix(1, T0, &[set(256, &r)])).unwrap();
    assert_eq!(out[0].reverse_packets, Some(8));
    assert_eq!(out[0].reverse_bytes, Some(9000));
    assert_eq!((out[0].packets, out[0].bytes), (10, 1500));
    assert!(out[0].extra.is_empty());
}

#[test]
fn ipfix_sampling_from_options_data() {
    let mut d = Decoder::new();
    let e = exporter(1);
    // Scope observationDomainId; systematic count-based: 1 selected, 99 skipped.
    let ot = opt_tpl(500, 1, &[f(149, 4), f(305, 4), f(306, 4)]);
    let od = rec(&[(1, 4), (1, 4), (99, 4)]);
    d.decode(
        e,
        &ipfix(
            1,
            T0,
            &[
                set(3, &ot),
                set(2, &tpl(256, &basic_fields())),
                set(500, &od),
            ],
        ),
    )
    .unwrap();
    let out = d
        .decode(e, &ipfix(1, T0, &[set(256, &basic_record(0))]))
        .unwrap();
    assert_eq!(out[0].sampling_interval, 100);
    assert_eq!((out[0].packets, out[0].bytes), (1000, 150_000));
    assert_eq!((out[0].raw_packets, out[0].raw_bytes), (10, 1500));
    assert_eq!(d.counters().options_records, 1);
    // Another domain of the same exporter is unsampled.
    d.decode(e, &ipfix(2, T0, &[set(2, &tpl(256, &basic_fields()))]))
        .unwrap();
    let out = d
        .decode(e, &ipfix(2, T0, &[set(256, &basic_record(0))]))
        .unwrap();
    assert_eq!((out[0].sampling_interval, out[0].packets), (1, 10));
}

#[test]
fn v9_sampler_options_apply_per_sampler_id() {
    let mut d = Decoder::new();
    let e = exporter(1);
    // Scope: system (type 1); options: FLOW_SAMPLER_ID (48), FLOW_SAMPLER_RANDOM_INTERVAL (50).
    let ot = v9_opt_tpl(300, &[(1, 4)], &[(48, 1), (50, 4)]);
    let od = [
        rec(&[(0, 4), (1, 1), (64, 4)]),
        rec(&[(0, 4), (2, 1), (1000, 4)]),
    ]
    .concat();
    let mut fs = basic_fields();
    fs.push(f(48, 1));
    let m = v9(
        0,
        5000,
        T0,
        4,
        &[set(1, &ot), set(0, &tpl(256, &fs)), set(300, &od)],
    );
    assert!(d.decode(e, &m).unwrap().is_empty());
    let mut r1 = basic_record(0);
    r1.push(1);
    let mut r2 = basic_record(1);
    r2.push(2);
    let out = d
        .decode(e, &v9(0, 6000, T0, 2, &[set(256, &[r1, r2].concat())]))
        .unwrap();
    assert_eq!((out[0].sampling_interval, out[0].packets), (64, 640));
    assert_eq!((out[1].sampling_interval, out[1].bytes), (1000, 1_500_000));
    // v9 scope field type 1 (system) is not IE 1 (octets): no confusion.
    assert_eq!(d.counters().options_records, 2);
}

#[test]
fn v9_uptime_timestamps_including_wrap() {
    let mut d = Decoder::new();
    let e = exporter(1);
    let mut fs = basic_fields();
    fs.extend([f(22, 4), f(21, 4)]);
    let mk = |uptime: u32, first: u32, last: u32| {
        let mut r = basic_record(0);
        r.extend(rec(&[(u64::from(first), 4), (u64::from(last), 4)]));
        v9(0, uptime, T0, 2, &[set(0, &tpl(256, &fs)), set(256, &r)])
    };
    let export_ms = u64::from(T0) * 1000;
    let out = d.decode(e, &mk(10_000, 4_000, 9_000)).unwrap();
    assert_eq!(out[0].start_ms, Some(export_ms - 6_000));
    assert_eq!(out[0].end_ms, Some(export_ms - 1_000));
    // Uptime wrapped after the flow started.
    let out = d.decode(e, &mk(1_000, u32::MAX - 999, 500)).unwrap();
    assert_eq!(out[0].start_ms, Some(export_ms - 2_000));
    assert_eq!(out[0].end_ms, Some(export_ms - 500));
}

#[test]
fn ipfix_sysuptime_needs_system_init_time() {
    let mut d = Decoder::new();
    let e = exporter(1);
    let mut fs = basic_fields();
    fs.extend([f(22, 4), f(21, 4)]);
    let mut r = basic_record(0);
    r.extend(rec(&[(1_000, 4), (3_000, 4)]));
    d.decode(e, &ipfix(1, T0, &[set(2, &tpl(256, &fs))]))
        .unwrap();
    let out = d.decode(e, &ipfix(1, T0, &[set(256, &r)])).unwrap();
    assert_eq!(
        (out[0].start_ms, out[0].end_ms),
        (None, None),
        "never guess"
    );
    let ot = opt_tpl(501, 1, &[f(149, 4), f(160, 8)]);
    let init = 1_699_000_000_000u64;
    d.decode(
        e,
        &ipfix(1, T0, &[set(3, &ot), set(501, &rec(&[(1, 4), (init, 8)]))]),
    )
    .unwrap();
    let out = d.decode(e, &ipfix(1, T0, &[set(256, &r)])).unwrap();
    assert_eq!(out[0].start_ms, Some(init + 1_000));
    assert_eq!(out[0].end_ms, Some(init + 3_000));
}

#[test]
fn ipfix_seconds_and_ntp_timestamps() {
    let mut d = Decoder::new();
    let e = exporter(1);
    let mut fs = basic_fields();
    fs.extend([f(150, 4), f(157, 8)]);
    let ntp = ((u64::from(T0) + 2_208_988_800) << 32) | 0x4000_0000;
    let mut r = basic_record(0);
    r.extend(rec(&[(u64::from(T0) - 5, 4), (ntp, 8)]));
    let out = d
        .decode(e, &ipfix(1, T0, &[set(2, &tpl(256, &fs)), set(256, &r)]))
        .unwrap();
    assert_eq!(out[0].start_ms, Some((u64::from(T0) - 5) * 1000));
    assert_eq!(out[0].end_ms, Some(u64::from(T0) * 1000 + 250));
}

#[test]
fn ipv6_and_icmp() {
    let mut d = Decoder::new();
    let e = exporter(1);
    let fs = vec![f(27, 16), f(28, 16), f(4, 1), f(139, 2), f(2, 4), f(1, 4)];
    let src: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
    let mut r = src.octets().to_vec();
    r.extend(dst.octets());
    r.extend(rec(&[(58, 1), (0x8000, 2), (1, 4), (64, 4)]));
    let out = d
        .decode(e, &ipfix(1, T0, &[set(2, &tpl(256, &fs)), set(256, &r)]))
        .unwrap();
    assert_eq!(out[0].src_addr, IpAddr::V6(src));
    assert_eq!(out[0].dst_addr, IpAddr::V6(dst));
    assert_eq!((out[0].icmp_type, out[0].icmp_code), (Some(128), Some(0)));
}

#[test]
fn v5_header_sampling_and_times() {
    let mut m = Vec::new();
    m.extend(rec(&[
        (5, 2),
        (1, 2),
        (100_000, 4),
        (u64::from(T0), 4),
        (250_000_000, 4),
        (1, 4),
    ]));
    m.extend(rec(&[(1, 1), (2, 1), (0x4000 | 10, 2)]));
    m.extend(rec(&[
        (0x0a000001, 4),
        (0x0a000002, 4),
        (0, 4),
        (1, 2),
        (2, 2),
    ]));
    m.extend(rec(&[(3, 4), (300, 4), (90_000, 4), (99_000, 4)]));
    m.extend(rec(&[
        (1234, 2),
        (0x0303, 2),
        (0, 1),
        (0, 1),
        (1, 1),
        (0, 1),
    ]));
    m.extend(rec(&[(0, 2), (0, 2), (24, 1), (24, 1), (0, 2)]));
    let out = Decoder::new().decode(exporter(1), &m).unwrap();
    let r = &out[0];
    assert_eq!(r.observation_domain, 0x0102);
    assert_eq!((r.sampling_interval, r.packets, r.bytes), (10, 30, 3000));
    assert_eq!((r.icmp_type, r.icmp_code), (Some(3), Some(3)));
    let export_ms = u64::from(T0) * 1000 + 250;
    assert_eq!(r.start_ms, Some(export_ms - 10_000));
    assert_eq!(r.end_ms, Some(export_ms - 1_000));
}

#[test]
fn malformed_datagrams_are_counted_errors() {
    let mut d = Decoder::new();
    let e = exporter(1);
    let bad: Vec<Vec<u8>> = vec![
        vec![],
        vec![0, 7, 0, 0],
        vec![0, 5, 0, 1, 0, 0],
        // IPFIX length larger than the datagram.
        {
            let mut m = ipfix(1, T0, &[]);
            m[3] = 40;
            m
        },
        // Set length running past the message.
        {
            let mut m = ipfix(1, T0, &[set(2, &tpl(256, &basic_fields()))]);
            let n = m.len();
            m[18] = 0xff;
            m.truncate(n);
            m
        },
        // Template whose records would be zero bytes long.
        v9(0, 0, T0, 1, &[set(0, &tpl(256, &[f(8, 0), f(12, 0)]))]),
        // Template id below 256.
        ipfix(1, T0, &[set(2, &tpl(12, &basic_fields()))]),
        // Options template with scope count 0.
        ipfix(1, T0, &[set(3, &opt_tpl(300, 0, &basic_fields()))]),
        // Template record cut short.
        ipfix(1, T0, &[set(2, &tpl(256, &basic_fields())[..9])]),
    ];
    for (i, m) in bad.iter().enumerate() {
        assert!(d.decode(e, m).is_err(), "case {i} accepted");
    }
    assert_eq!(d.counters().malformed, bad.len() as u64);
    assert_eq!(d.counters().datagrams, bad.len() as u64);
}

#[test]
fn exporter_state_is_bounded() {
    let cfg = DecoderConfig {
        max_exporters: 2,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::with_config(cfg);
    let t = ipfix(1, T0, &[set(2, &tpl(256, &basic_fields()))]);
    assert!(d.decode(exporter(1), &t).is_ok());
    assert!(d.decode(exporter(2), &t).is_ok());
    // A full table makes room (the least recently seen newcomer goes)
    // instead of refusing the new exporter.
    assert!(d.decode(exporter(3), &t).is_ok());
    assert_eq!(d.exporter_count(), 2);
    assert_eq!(d.template_count(&exporter(1)), 0);
    assert_eq!(d.template_count(&exporter(3)), 1);
    d.forget_exporter(&exporter(3));
    assert_eq!(d.exporter_count(), 1);
    let table = d.exporter_table();
    assert_eq!((table.table_full, table.evicted), (1, 1));
    assert_eq!(d.counters().exporters_evicted, 1);
    assert_eq!(d.counters().malformed, 0);
}

#[test]
fn extra_capture_can_be_turned_off() {
    let cfg = DecoderConfig {
        capture_extra: false,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::with_config(cfg);
    let mut fs = basic_fields();
    fs.push(f(5, 1));
    let mut r = basic_record(0);
    r.push(0x2e);
    let out = d
        .decode(
            exporter(1),
            &ipfix(1, T0, &[set(2, &tpl(256, &fs)), set(256, &r)]),
        )
        .unwrap();
    assert!(out[0].extra.is_empty());
}

#[test]
fn records_serialize_to_json() {
    let mut d = Decoder::new();
    let out = d
        .decode(
            exporter(1),
            &ipfix(
                1,
                T0,
                &[
                    set(2, &tpl(256, &basic_fields())),
                    set(256, &basic_record(0)),
                ],
            ),
        )
        .unwrap();
    let v = serde_json::to_value(&out[0]).unwrap();
    assert_eq!(v["src_addr"], "10.0.0.1");
    assert_eq!(v["exporter"], "192.0.2.1:4739");
    assert_eq!(v["bytes"], 1500);
}

#[test]
fn v9_framing_rules() {
    let e = exporter(1);
    let body = [
        set(0, &tpl(256, &basic_fields())),
        set(256, &basic_record(0)),
    ];
    // Zero padding after the last flowset (Cisco ACI does this) is accepted.
    let mut padded = v9(0, 1, T0, 2, &body);
    padded.extend([0; 64]);
    assert_eq!(Decoder::new().decode(e, &padded).unwrap().len(), 1);
    // Anything else after it is not.
    let mut junk = v9(0, 1, T0, 2, &body);
    junk.extend([0, 0, 0, 0, 1, 2, 3, 4]);
    assert!(Decoder::new().decode(e, &junk).is_err());
    // A header count below the number of flowsets contradicts both readings
    // of the field (records or flowsets).
    let err = Decoder::new()
        .decode(e, &v9(0, 1, T0, 1, &body))
        .unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::V9Count {
                count: 1,
                flowsets: 2
            }
        ),
        "{err}"
    );
    // Counting flowsets instead of records is common and accepted.
    let many = [
        set(0, &tpl(256, &basic_fields())),
        set(256, &[basic_record(0), basic_record(1)].concat()),
    ];
    assert_eq!(
        Decoder::new()
            .decode(e, &v9(0, 1, T0, 2, &many))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn decoder_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Decoder>();
    assert_send_sync::<bulkhead_flow::FlowRecord>();
}
