//! Crafted datagrams for the decoding cases vendor fixtures do not cover,
//! each decoded by this crate and by tshark (an independent
//! implementation), which must agree on the values.
//!
//! tshark is a hard requirement (Debian package `tshark`): without it
//! these tests fail rather than skip.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use bulkhead_flow::{Decoder, DecoderConfig, FlowRecord, InterfaceCounters};
use common::build::*;
use common::{Datagram, EXPORT_PORT, write_pcap};
use serde_json::{Map, Value};

const T0: u32 = 1_700_000_000;

fn exporter() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], EXPORT_PORT))
}

/// tshark's `proto` layer of every frame, decoding UDP port 2055 as `proto`.
fn tshark(datagrams: &[Vec<u8>], proto: &str) -> Vec<Value> {
    let ds: Vec<Datagram> = datagrams
        .iter()
        .enumerate()
        .map(|(part, bytes)| Datagram {
            file: "crafted".into(),
            part,
            exporter: exporter(),
            bytes: bytes.clone(),
        })
        .collect();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "bulkhead-flow-crafted-{}-{proto}-{}.pcap",
        std::process::id(),
        datagrams.iter().map(Vec::len).sum::<usize>()
    ));
    std::fs::write(&path, write_pcap(&ds)).expect("write pcap");
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&path)
        .arg("-d")
        .arg(format!("udp.port=={EXPORT_PORT},{proto}"))
        .args(["-T", "json", "--no-duplicate-keys"])
        .output()
        .unwrap_or_else(|e| panic!("tshark is required (Debian package `tshark`): {e}"));
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("tshark json");
    let frames = json.as_array().expect("frames");
    assert_eq!(frames.len(), datagrams.len());
    frames
        .iter()
        .map(|f| {
            f.pointer(&format!("/_source/layers/{proto}"))
                .unwrap_or_else(|| panic!("tshark shows no {proto} layer: {f}"))
                .clone()
        })
        .collect()
}

/// Every object under a key starting with `prefix` (tshark's "Flow 1", …),
/// in document order.
fn nodes<'a>(v: &'a Value, prefix: &str, out: &mut Vec<&'a Map<String, Value>>) {
    match v {
        Value::Object(o) => {
            for (k, c) in o {
                match c {
                    Value::Object(m) if k.starts_with(prefix) => out.push(m),
                    Value::Array(a) if k.starts_with(prefix) => {
                        out.extend(a.iter().filter_map(Value::as_object))
                    }
                    _ => nodes(c, prefix, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| nodes(x, prefix, out)),
        _ => {}
    }
}

fn flows(frames: &[Value]) -> Vec<Map<String, Value>> {
    let mut out = Vec::new();
    for f in frames {
        nodes(f, "Flow ", &mut out);
    }
    out.into_iter().cloned().collect()
}

fn text(o: &Map<String, Value>, k: &str) -> String {
    o.get(k)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("tshark shows no {k} in {o:?}"))
        .to_string()
}

fn texts(o: &Map<String, Value>, k: &str) -> Vec<String> {
    match o.get(k) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => panic!("tshark shows no {k} in {o:?}"),
    }
}

/// tshark's colon-separated hex.
fn hex_bytes(s: &str) -> Vec<u8> {
    s.split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

fn decode_all(d: &mut Decoder, datagrams: &[Vec<u8>]) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    for m in datagrams {
        d.decode_into(exporter(), m, &mut out).expect("decodes");
    }
    out
}

fn extra<'a>(r: &'a FlowRecord, name: &str) -> Option<&'a str> {
    r.extra
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// tshark shows both families' fields; the record's address is the one
/// that is not all zero.
fn nonzero(o: &Map<String, Value>, v4: &str, v6: &str) -> IpAddr {
    let a: IpAddr = text(o, v4).parse().unwrap();
    let b: IpAddr = text(o, v6).parse().unwrap();
    if a.is_unspecified() { b } else { a }
}

#[test]
fn records_with_both_address_families_use_the_nonzero_one() {
    let fs = [f(8, 4), f(12, 4), f(27, 16), f(28, 16), f(4, 1)];
    let v6 = |last: u64| rec(&[(0x2001_0db8_0000_0000, 8), (last, 8)]);
    let only6 = [rec(&[(0, 4), (0, 4)]), v6(1), v6(2), rec(&[(6, 1)])].concat();
    let only4 = [
        rec(&[(0x0a00_0001, 4), (0x0a00_0002, 4)]),
        vec![0; 32],
        rec(&[(17, 1)]),
    ]
    .concat();
    let body = [only6, only4].concat();
    let datagrams = vec![
        v9(0, 1000, T0, 1, &[set(0, &tpl(256, &fs))]),
        v9(0, 1000, T0, 1, &[set(256, &body)]),
        ipfix(1, T0, &[set(2, &tpl(256, &fs))]),
        ipfix(1, T0, &[set(256, &body)]),
    ];
    let ours = decode_all(&mut Decoder::new(), &datagrams);
    let theirs = flows(&tshark(&datagrams, "cflow"));
    assert_eq!((ours.len(), theirs.len()), (4, 4));
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o.src_addr, nonzero(t, "cflow.srcaddr", "cflow.srcaddrv6"));
        assert_eq!(o.dst_addr, nonzero(t, "cflow.dstaddr", "cflow.dstaddrv6"));
        assert_eq!(o.protocol.to_string(), text(t, "cflow.protocol"));
    }
    assert_eq!(ours[0].src_addr, "2001:db8::1".parse::<IpAddr>().unwrap());
    assert_eq!(ours[1].dst_addr, "10.0.0.2".parse::<IpAddr>().unwrap());
}

#[test]
fn v9_variable_length_fields_decode() {
    let fs = [f(8, 4), f(12, 4), f(96, 0xffff), f(4, 1)];
    let short = [
        rec(&[(0x0a00_0001, 4), (0x0a00_0002, 4), (5, 1)]),
        b"hello".to_vec(),
        vec![6],
    ]
    .concat();
    // The three-byte length form: 255, then a 16-bit length.
    let long = [
        rec(&[(0x0a00_0003, 4), (0x0a00_0004, 4), (255, 1), (3, 2)]),
        b"dns".to_vec(),
        vec![17],
    ]
    .concat();
    let datagrams = vec![
        v9(0, 1000, T0, 1, &[set(0, &tpl(256, &fs))]),
        v9(0, 1000, T0, 1, &[set(256, &[short, long].concat())]),
    ];
    let mut d = Decoder::new();
    let ours = decode_all(&mut d, &datagrams);
    let theirs = flows(&tshark(&datagrams, "cflow"));
    assert_eq!((ours.len(), theirs.len()), (2, 2));
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(o.src_addr.to_string(), text(t, "cflow.srcaddr"));
        assert_eq!(o.dst_addr.to_string(), text(t, "cflow.dstaddr"));
        assert_eq!(o.protocol.to_string(), text(t, "cflow.protocol"));
        assert_eq!(
            extra(o, "applicationName"),
            Some(text(t, "cflow.appl_name").as_str())
        );
    }
    assert_eq!(extra(&ours[1], "applicationName"), Some("dns"));
    assert_eq!(d.counters().sets_truncated, 0);
}

#[test]
fn data_sets_without_records_are_counted_by_reason() {
    let flow = [f(8, 4), f(12, 4), f(4, 1), f(2, 4), f(1, 4)];
    let non_ip = [f(4, 1), f(1, 4)];
    let one = rec(&[(0x0a00_0001, 4), (0x0a00_0002, 4), (6, 1), (1, 4), (40, 4)]);
    let datagrams = vec![
        ipfix(
            1,
            T0,
            &[set(2, &[tpl(256, &flow), tpl(257, &non_ip)].concat())],
        ),
        ipfix(
            1,
            T0,
            &[
                // Ten bytes of a 17-byte record.
                set(256, &one[..10]),
                // Records without addresses.
                set(
                    257,
                    &[rec(&[(17, 1), (99, 4)]), rec(&[(6, 1), (98, 4)])].concat(),
                ),
                // No template 300 ever arrives.
                set(300, &one),
                // A reserved set id.
                set(100, &[1, 2, 3, 4]),
                // A good record with zero padding: nothing to count.
                set(256, &[one.clone(), vec![0; 3]].concat()),
            ],
        ),
    ];
    let mut d = Decoder::new();
    let ours = decode_all(&mut d, &datagrams);
    d.expire_pending();
    let theirs = flows(&tshark(&datagrams, "cflow"));
    let with_addr: Vec<_> = theirs
        .iter()
        .filter(|t| t.contains_key("cflow.srcaddr"))
        .collect();
    assert_eq!((ours.len(), with_addr.len()), (1, 1));
    assert_eq!(
        ours[0].raw_bytes.to_string(),
        text(with_addr[0], "cflow.octets")
    );
    // tshark shows the non-IP records as flows without addresses.
    let c = d.counters();
    assert_eq!(c.non_ip_records, 2);
    assert_eq!(theirs.len() - with_addr.len(), 2);
    assert_eq!(
        (
            c.sets_truncated,
            c.sets_non_ip,
            c.sets_unsupported,
            c.no_template
        ),
        (1, 1, 1, 1),
        "{c:?}"
    );
    assert_eq!(c.malformed, 0);
}

fn w(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn generic_counters(if_index: u32, speed: u64, in_octets: u64, out_octets: u64) -> Vec<u8> {
    let mut g = Vec::new();
    g.extend(w(if_index));
    g.extend(w(6)); // ethernetCsmacd
    g.extend(speed.to_be_bytes());
    g.extend(w(1)); // full duplex
    g.extend(w(3)); // admin and oper up
    g.extend(in_octets.to_be_bytes());
    for v in [1000, 20, 30, 4, 5, 6] {
        g.extend(w(v));
    }
    g.extend(out_octets.to_be_bytes());
    for v in [2000, 40, 50, 7, 8, 1] {
        g.extend(w(v));
    }
    g
}

fn with_len(format: u32, body: &[u8]) -> Vec<u8> {
    [
        w(format).to_vec(),
        w(body.len() as u32).to_vec(),
        body.to_vec(),
    ]
    .concat()
}

#[test]
fn sflow_interface_counters_are_kept() {
    let g1 = with_len(
        1,
        &generic_counters(7, 10_000_000_000, 123_456_789_012, 98_765_432_109),
    );
    let g2 = with_len(1, &generic_counters(9, 1_000_000_000, 5, 6));
    // An Ethernet counters record (format 2) we do not report.
    let eth = with_len(2, &[0; 52]);
    let sample = [w(99).to_vec(), w(7).to_vec(), w(2).to_vec(), eth, g1].concat();
    let expanded = [
        w(100).to_vec(),
        w(0).to_vec(),
        w(9).to_vec(),
        w(1).to_vec(),
        g2,
    ]
    .concat();
    let mut d = Vec::new();
    for v in [5, 1, 0xc000_020a, 3, 42, 123_456, 2] {
        d.extend(w(v));
    }
    d.extend(with_len(2, &sample));
    d.extend(with_len(4, &expanded));

    let mut dec = Decoder::new();
    let (mut records, mut ifs) = (Vec::new(), Vec::<InterfaceCounters>::new());
    dec.decode_full(exporter(), &d, 0, &mut records, &mut ifs)
        .unwrap();
    assert!(records.is_empty());
    let theirs = tshark(std::slice::from_ref(&d), "sflow");
    let mut ts = Vec::new();
    nodes(&theirs[0], "Generic interface counters", &mut ts);
    assert_eq!((ifs.len(), ts.len()), (2, 2));
    for (o, t) in ifs.iter().zip(&ts) {
        let fields: [(&str, String); 20] = [
            ("ifindex", o.if_index.to_string()),
            ("iftype", o.if_type.to_string()),
            ("ifspeed", o.if_speed.to_string()),
            ("ifdirection", o.if_direction.to_string()),
            ("ifadmin_status", (o.if_status & 1).to_string()),
            ("ifoper_status", (o.if_status >> 1 & 1).to_string()),
            ("ifinoct", o.in_octets.to_string()),
            ("ifinpkt", o.in_unicast_packets.to_string()),
            ("ifinmcast", o.in_multicast_packets.to_string()),
            ("ifinbcast", o.in_broadcast_packets.to_string()),
            ("ifindisc", o.in_discards.to_string()),
            ("ifinerr", o.in_errors.to_string()),
            ("ifinunk", o.in_unknown_protos.to_string()),
            ("ifoutoct", o.out_octets.to_string()),
            ("ifoutpkt", o.out_unicast_packets.to_string()),
            ("ifoutmcast", o.out_multicast_packets.to_string()),
            ("ifoutbcast", o.out_broadcast_packets.to_string()),
            ("ifoutdisc", o.out_discards.to_string()),
            ("ifouterr", o.out_errors.to_string()),
            ("ifpromisc", o.promiscuous_mode.to_string()),
        ];
        for (k, ours) in fields {
            assert_eq!(ours, text(t, &format!("sflow_245.{k}")), "{k}");
        }
    }
    let mut heads = Vec::new();
    nodes(&theirs[0], "Counters sample", &mut heads);
    nodes(&theirs[0], "Expanded counters sample", &mut heads);
    for (o, t) in ifs.iter().zip(&heads) {
        assert_eq!(
            o.sequence.to_string(),
            text(t, "sflow.counters_sample.sequence_number")
        );
        assert_eq!(
            o.source_type.to_string(),
            text(t, "sflow.counters_sample.source_id_type")
        );
        assert_eq!(
            o.source_index.to_string(),
            text(t, "sflow.counters_sample.source_id_index")
        );
    }
    assert_eq!((ifs[0].in_octets, ifs[1].if_index), (123_456_789_012, 9));
    assert_eq!(
        (ifs[0].sub_agent, ifs[0].agent.to_string().as_str()),
        (3, "192.0.2.10")
    );
    let c = dec.counters();
    assert_eq!((c.sflow_interface_counters, c.sflow_skipped), (2, 0));
    // Plain decode counts them without keeping them.
    let mut plain = Decoder::new();
    assert!(plain.decode(exporter(), &d).unwrap().is_empty());
    assert_eq!(plain.counters().sflow_interface_counters, 2);
}

#[test]
fn vendor_policy_fields_are_named_extras() {
    const VMWARE: u32 = 6876;
    let nsx = [
        f(8, 4),
        f(12, 4),
        f(233, 1),
        fe(950, 4, VMWARE),
        fe(954, 1, VMWARE),
    ];
    let nsx_rec = rec(&[
        (0x0a00_0001, 4),
        (0x0a00_0002, 4),
        (3, 1),
        (1017, 4),
        (1, 1),
    ]);
    let pan = [f(8, 4), f(12, 4), f(346, 4), f(56701, 32), f(56702, 64)];
    let mut app = b"web-browsing".to_vec();
    app.resize(32, 0);
    let mut user = b"corp\\alice".to_vec();
    user.resize(64, 0);
    let pan_rec = [
        rec(&[(0x0a00_0003, 4), (0x0a00_0004, 4), (25461, 4)]),
        app,
        user,
    ]
    .concat();
    let datagrams = vec![
        ipfix(1, T0, &[set(2, &tpl(256, &nsx))]),
        ipfix(1, T0, &[set(256, &nsx_rec)]),
        v9(0, 1000, T0, 1, &[set(0, &tpl(256, &pan))]),
        v9(0, 1000, T0, 1, &[set(256, &pan_rec)]),
    ];
    let ours = decode_all(&mut Decoder::new(), &datagrams);
    let theirs = flows(&tshark(&datagrams, "cflow"));
    assert_eq!((ours.len(), theirs.len()), (2, 2));

    // tshark 4.0 has no names for VMware's elements; it shows their bytes.
    let (o, t) = (&ours[0], &theirs[0]);
    let raw = texts(t, "cflow.enterprise_private_entry");
    let rule = hex_bytes(&raw[0]);
    let rule = u32::from_be_bytes(rule.try_into().expect("4 bytes"));
    assert_eq!(extra(o, "vmware.ruleId"), Some(rule.to_string().as_str()));
    assert_eq!(
        extra(o, "vmware.flowDirection"),
        Some(hex_bytes(&raw[1])[0].to_string().as_str())
    );
    assert_eq!(
        extra(o, "firewallEvent"),
        Some(text(t, "cflow.firewall_event").as_str())
    );
    assert_eq!(extra(o, "vmware.ruleId"), Some("1017"));

    // Nor for Palo Alto's v9 field types: the NUL-padded strings' bytes.
    let (o, t) = (&ours[1], &theirs[1]);
    let raw = texts(t, "cflow.unknown_field_type");
    let string = |h: &str| {
        let b = hex_bytes(h);
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8(b[..end].to_vec()).unwrap()
    };
    assert_eq!(extra(o, "paloalto.appId"), Some(string(&raw[0]).as_str()));
    assert_eq!(extra(o, "paloalto.userId"), Some(string(&raw[1]).as_str()));
    assert_eq!(extra(o, "paloalto.appId"), Some("web-browsing"));
    assert_eq!(
        extra(o, "privateEnterpriseNumber"),
        Some(text(t, "cflow.private_enterprise_number").as_str())
    );

    // With extras off the records are the same, without the allocations.
    let cfg = DecoderConfig {
        capture_extra: false,
        ..DecoderConfig::default()
    };
    let lean = decode_all(&mut Decoder::with_config(cfg), &datagrams);
    assert!(lean.iter().all(|r| r.extra.is_empty()));
    assert_eq!(lean[1].src_addr, ours[1].src_addr);
}

/// Sum of (got - expected) over tshark's "unexpected sequence" analyses.
fn tshark_gaps(frames: &[Value]) -> u64 {
    frames
        .iter()
        .filter_map(|f| {
            let expected: u64 = f
                .get("cflow.sequence_analysis.expected_sn")?
                .as_str()?
                .parse()
                .ok()?;
            let got: u64 = f.get("cflow.sequence")?.as_str()?.parse().ok()?;
            Some(got.saturating_sub(expected))
        })
        .sum()
}

fn with_seq(mut m: Vec<u8>, at: usize, seq: u32) -> Vec<u8> {
    m[at..at + 4].copy_from_slice(&seq.to_be_bytes());
    m
}

#[test]
fn sequence_gaps_agree_with_tshark_sequence_analysis() {
    let fs = [f(8, 4), f(12, 4)];
    let data = |n: u64| {
        set(
            256,
            &(0..n)
                .flat_map(|i| rec(&[(0x0a00_0001 + i, 4), (0x0a00_0002, 4)]))
                .collect::<Vec<u8>>(),
        )
    };
    // IPFIX counts data records: 3 at 100, then 103..=107 missing, then 2.
    let ipfix_stream = vec![
        with_seq(ipfix(1, T0, &[set(2, &tpl(256, &fs))]), 8, 100),
        with_seq(ipfix(1, T0, &[data(3)]), 8, 100),
        with_seq(ipfix(1, T0, &[data(2)]), 8, 108),
        with_seq(ipfix(1, T0, &[data(1)]), 8, 110),
        with_seq(ipfix(1, T0, &[data(4)]), 8, 120),
    ];
    // v9 counts export packets: 12..=14 missing, then 17.
    let v9_stream = vec![
        with_seq(v9(0, 1000, T0, 1, &[set(0, &tpl(256, &fs))]), 12, 10),
        with_seq(v9(0, 1000, T0, 1, &[data(5)]), 12, 11),
        with_seq(v9(0, 1000, T0, 1, &[data(5)]), 12, 15),
        with_seq(v9(0, 1000, T0, 1, &[data(1)]), 12, 17),
    ];
    for (stream, want) in [(ipfix_stream, 14), (v9_stream, 4)] {
        let mut d = Decoder::new();
        decode_all(&mut d, &stream);
        let theirs = tshark_gaps(&tshark(&stream, "cflow"));
        assert_eq!(theirs, want, "tshark's reading of the crafted stream");
        assert_eq!(d.counters().sequence_gaps, theirs);
    }
}
