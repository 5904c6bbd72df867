//! The IPFIX encoder checked three ways: its framing read back by hand (RFC 7011
//! header, sets, sequence numbers, template refresh, packing), every record decoded by
//! the project's decoder, and every datagram dissected by tshark (Wireshark's cflow
//! dissector, an independent implementation).
//!
//! tshark is a hard requirement (Debian package `tshark`, installed by scripts/setup):
//! without it the tshark test fails rather than skipping.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;

use bulkhead_flow::Decoder;
use bulkhead_sim::{
    Estate, FlowKind, IpfixEncoder, MIN_DATAGRAM, RECORD_LEN_V4, RECORD_LEN_V6, SimConfig, SimFlow,
    TEMPLATE_V4, TEMPLATE_V6,
};

const COLLECTOR_PORT: u16 = 4739;

fn exporter() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50_000)
}

/// Normal, unknown and attacker traffic, IPv4 and IPv6 interleaved.
fn sample_flows() -> Vec<SimFlow> {
    let estate = Estate::generate(&SimConfig {
        attacker: true,
        duration_ms: 3 * 60_000,
        ..SimConfig::default()
    });
    let flows: Vec<SimFlow> = estate.flows().collect();
    assert!(
        flows.iter().any(|f| f.dst.is_ipv6()),
        "sample has no IPv6 flow"
    );
    assert!(flows.iter().any(|f| f.kind == FlowKind::Attacker));
    flows
}

fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(d[at..at + 4].try_into().unwrap())
}

/// What one datagram holds, read from the wire format directly.
#[derive(Debug)]
struct Framing {
    export_secs: u32,
    sequence: u32,
    domain: u32,
    has_templates: bool,
    records: usize,
}

fn frame(d: &[u8]) -> Framing {
    assert_eq!(be16(d, 0), 10, "version");
    assert_eq!(usize::from(be16(d, 2)), d.len(), "message length");
    let mut at = 16;
    let mut has_templates = false;
    let mut records = 0;
    while at < d.len() {
        let (id, len) = (be16(d, at), usize::from(be16(d, at + 2)));
        assert!(len >= 4 && at + len <= d.len(), "set length {len} at {at}");
        let body = len - 4;
        match id {
            2 => {
                assert!(!has_templates, "two template sets");
                has_templates = true;
                // Two templates of ten fields each.
                assert_eq!(be16(d, at + 4), TEMPLATE_V4);
                assert_eq!(be16(d, at + 6), 10);
                assert_eq!(be16(d, at + 48), TEMPLATE_V6);
                assert_eq!(be16(d, at + 50), 10);
            }
            TEMPLATE_V4 => {
                assert_eq!(body % RECORD_LEN_V4, 0, "padding in an IPv4 set");
                records += body / RECORD_LEN_V4;
            }
            TEMPLATE_V6 => {
                assert_eq!(body % RECORD_LEN_V6, 0, "padding in an IPv6 set");
                records += body / RECORD_LEN_V6;
            }
            other => panic!("unexpected set id {other}"),
        }
        at += len;
    }
    Framing {
        export_secs: be32(d, 4),
        sequence: be32(d, 8),
        domain: be32(d, 12),
        has_templates,
        records,
    }
}

fn record_len(f: &SimFlow) -> usize {
    if f.src.is_ipv6() || f.dst.is_ipv6() {
        RECORD_LEN_V6
    } else {
        RECORD_LEN_V4
    }
}

#[test]
fn framing_sequence_templates_and_packing() {
    let flows = sample_flows();
    for (max, refresh) in [(1400, 32), (MIN_DATAGRAM, 1), (9000, 5)] {
        let mut enc = IpfixEncoder::new(77)
            .with_max_datagram(max)
            .with_template_refresh(refresh);
        let datagrams = enc.encode(&flows);
        let mut sent = 0usize;
        let mut last_export = 0;
        for (i, d) in datagrams.iter().enumerate() {
            assert!(
                d.len() <= max,
                "datagram {i} is {} bytes, max {max}",
                d.len()
            );
            let f = frame(d);
            assert_eq!(f.domain, 77);
            assert_eq!(f.sequence as usize, sent, "datagram {i}: sequence");
            assert_eq!(
                f.has_templates,
                (i as u64).is_multiple_of(refresh),
                "datagram {i}: templates"
            );
            assert!(f.records > 0, "datagram {i} carries no record");
            let mine = &flows[sent..sent + f.records];
            let last_end = mine.iter().map(|f| f.end_ms).max().unwrap();
            assert!(
                i64::from(f.export_secs) * 1000 >= last_end,
                "exported before its flows end"
            );
            assert!(f.export_secs >= last_export, "export time goes back");
            last_export = f.export_secs;
            sent += f.records;
            // Full: the next record would not have fitted (with a set header if its
            // family differs from the last one's).
            if let Some(next) = flows.get(sent) {
                let same = record_len(next) == record_len(&flows[sent - 1]);
                let need = record_len(next) + if same { 0 } else { 4 };
                assert!(
                    d.len() + need > max,
                    "datagram {i} had room for another record"
                );
            }
        }
        assert_eq!(sent, flows.len());
        assert_eq!(enc.sequence() as usize, flows.len());
        assert_eq!(enc.datagrams() as usize, datagrams.len());
    }
}

#[test]
fn successive_calls_continue_one_stream() {
    let flows = sample_flows();
    let (a, b) = flows.split_at(flows.len() / 3);
    let mut whole = IpfixEncoder::new(5);
    let expected = whole.encode(&flows);
    let mut parts = IpfixEncoder::new(5);
    let mut got = parts.encode(a);
    let first = got.len();
    got.extend(parts.encode(b));
    // The split may leave a partly filled datagram, so compare framing, not bytes.
    let mut sent = 0usize;
    for (i, d) in got.iter().enumerate() {
        let f = frame(d);
        assert_eq!(f.sequence as usize, sent);
        assert_eq!(f.has_templates, i.is_multiple_of(32));
        sent += f.records;
        if i + 1 == first {
            assert_eq!(sent, a.len());
        }
    }
    assert_eq!(sent, flows.len());
    assert!(got.len() >= expected.len());
}

#[test]
fn empty_input_produces_nothing_and_keeps_templates_due() {
    let mut enc = IpfixEncoder::new(1);
    assert!(enc.encode(&[]).is_empty());
    let flows = sample_flows();
    let d = enc.encode(&flows[..1]);
    assert!(frame(&d[0]).has_templates);
}

#[test]
fn project_decoder_reads_back_every_record() {
    let flows = sample_flows();
    let datagrams = IpfixEncoder::new(9).encode(&flows);
    let mut decoder = Decoder::new();
    let mut records = Vec::new();
    for d in &datagrams {
        records.extend(decoder.decode(exporter(), d).expect("decode"));
    }
    assert_eq!(records.len(), flows.len());
    for (r, f) in records.iter().zip(&flows) {
        let ctx = format!("{f:?} vs {r:?}");
        assert_eq!(r.version, 10, "{ctx}");
        assert_eq!(r.observation_domain, 9, "{ctx}");
        assert_eq!((r.src_addr, r.dst_addr), (f.src, f.dst), "{ctx}");
        assert_eq!((r.src_port, r.dst_port), (f.src_port, f.dst_port), "{ctx}");
        assert_eq!(r.protocol, f.proto, "{ctx}");
        assert_eq!((r.packets, r.bytes), (f.packets, f.bytes), "{ctx}");
        assert_eq!(r.start_ms, Some(f.start_ms as u64), "{ctx}");
        assert_eq!(r.end_ms, Some(f.end_ms as u64), "{ctx}");
        assert_eq!(r.tcp_flags, Some(u16::from(f.tcp_flags)), "{ctx}");
    }
    let c = decoder.counters();
    assert_eq!(c.malformed, 0);
    assert_eq!(c.records as usize, flows.len());
}

/// A pcap (LINKTYPE_ETHERNET) of the datagrams sent from the exporter to a collector
/// on port 4739; addresses are from the documentation range and nothing is sent.
fn pcap(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes()); // microsecond timestamps
    p.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    p.extend_from_slice(&4u16.to_le_bytes());
    p.extend_from_slice(&[0; 8]); // thiszone, sigfigs
    p.extend_from_slice(&65_535u32.to_le_bytes()); // snaplen
    p.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (i, d) in datagrams.iter().enumerate() {
        let udp_len = 8 + d.len();
        let ip_len = 20 + udp_len;
        let mut ip = Vec::with_capacity(ip_len);
        ip.extend_from_slice(&[0x45, 0]);
        ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
        ip.extend_from_slice(&(i as u16).to_be_bytes());
        ip.extend_from_slice(&[0x40, 0, 64, 17, 0, 0]); // DF, TTL 64, UDP, checksum later
        ip.extend_from_slice(&[192, 0, 2, 1]);
        ip.extend_from_slice(&[192, 0, 2, 2]);
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend_from_slice(&50_000u16.to_be_bytes());
        ip.extend_from_slice(&COLLECTOR_PORT.to_be_bytes());
        ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
        ip.extend_from_slice(d);
        let frame_len = 14 + ip.len();
        p.extend_from_slice(&(1_709_542_800u32 + i as u32).to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&(frame_len as u32).to_le_bytes());
        p.extend_from_slice(&(frame_len as u32).to_le_bytes());
        p.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        p.extend_from_slice(&ip);
    }
    p
}

const TSHARK_FIELDS: &[&str] = &[
    "cflow.version",
    "cflow.od_id",
    "cflow.sequence",
    "cflow.srcaddr",
    "cflow.dstaddr",
    "cflow.srcaddrv6",
    "cflow.dstaddrv6",
    "cflow.srcport",
    "cflow.dstport",
    "cflow.protocol",
    "cflow.packets",
    "cflow.octets",
    "cflow.tcpflags",
    "cflow.abstimestart",
    "cflow.abstimeend",
    "cflow.exporttime",
    "cflow.sequence_analysis.expected_sn",
];

/// One line per frame, one column per field, occurrences joined by `|`.
fn run_tshark(datagrams: &[Vec<u8>]) -> Vec<Vec<Vec<String>>> {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bulkhead-sim-ipfix-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap(datagrams)).expect("write pcap");
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"])
        .arg(&path)
        .args(["-d", &format!("udp.port=={COLLECTOR_PORT},cflow")])
        .args(["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|"])
        .args(["-t", "ud"]);
    for f in TSHARK_FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("tshark is required for this test (Debian package `tshark`, scripts/setup): {e}")
    });
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("tshark output is UTF-8")
        .lines()
        .map(|line| {
            line.split('\t')
                .map(|col| {
                    if col.is_empty() {
                        Vec::new()
                    } else {
                        col.split('|').map(str::to_string).collect()
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn tshark_dissects_the_same_records() {
    let flows = sample_flows();
    let datagrams = IpfixEncoder::new(3).with_template_refresh(4).encode(&flows);
    let frames = run_tshark(&datagrams);
    assert_eq!(frames.len(), datagrams.len(), "one frame per datagram");
    let col = |name: &str| TSHARK_FIELDS.iter().position(|f| *f == name).unwrap();
    let mut sent = 0usize;
    for (i, (cols, d)) in frames.iter().zip(&datagrams).enumerate() {
        let mine = &flows[sent..sent + frame(d).records];
        let ctx = |what: &str| format!("datagram {i}: {what}");
        assert_eq!(cols[col("cflow.version")], ["10"], "{}", ctx("version"));
        assert_eq!(cols[col("cflow.od_id")], ["3"], "{}", ctx("domain"));
        assert_eq!(
            cols[col("cflow.sequence")],
            [sent.to_string()],
            "{}",
            ctx("sequence")
        );
        let all = |f: fn(&SimFlow) -> String| mine.iter().map(f).collect::<Vec<_>>();
        let v4 = |f: fn(&SimFlow) -> IpAddr| {
            mine.iter()
                .filter(|x| x.src.is_ipv4() && x.dst.is_ipv4())
                .map(|x| f(x).to_string())
                .collect::<Vec<_>>()
        };
        let v6 = |f: fn(&SimFlow) -> IpAddr| {
            mine.iter()
                .filter(|x| x.src.is_ipv6() || x.dst.is_ipv6())
                .map(|x| f(x).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cols[col("cflow.srcaddr")],
            v4(|f| f.src),
            "{}",
            ctx("srcaddr")
        );
        assert_eq!(
            cols[col("cflow.dstaddr")],
            v4(|f| f.dst),
            "{}",
            ctx("dstaddr")
        );
        assert_eq!(
            cols[col("cflow.srcaddrv6")],
            v6(|f| f.src),
            "{}",
            ctx("srcaddrv6")
        );
        assert_eq!(
            cols[col("cflow.dstaddrv6")],
            v6(|f| f.dst),
            "{}",
            ctx("dstaddrv6")
        );
        assert_eq!(
            cols[col("cflow.srcport")],
            all(|f| f.src_port.to_string()),
            "{}",
            ctx("srcport")
        );
        assert_eq!(
            cols[col("cflow.dstport")],
            all(|f| f.dst_port.to_string()),
            "{}",
            ctx("dstport")
        );
        assert_eq!(
            cols[col("cflow.protocol")],
            all(|f| f.proto.to_string()),
            "{}",
            ctx("protocol")
        );
        assert_eq!(
            cols[col("cflow.packets")],
            all(|f| f.packets.to_string()),
            "{}",
            ctx("packets")
        );
        assert_eq!(
            cols[col("cflow.octets")],
            all(|f| f.bytes.to_string()),
            "{}",
            ctx("octets")
        );
        let flags: Vec<u16> = cols[col("cflow.tcpflags")]
            .iter()
            .map(|s| u16::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex flags"))
            .collect();
        let want: Vec<u16> = mine.iter().map(|f| u16::from(f.tcp_flags)).collect();
        assert_eq!(flags, want, "{}", ctx("tcp flags"));
        let times =
            |name: &str| -> Vec<i64> { cols[col(name)].iter().map(|s| parse_utc_ms(s)).collect() };
        assert_eq!(
            times("cflow.abstimestart"),
            all_i64(mine, |f| f.start_ms),
            "{}",
            ctx("start")
        );
        assert_eq!(
            times("cflow.abstimeend"),
            all_i64(mine, |f| f.end_ms),
            "{}",
            ctx("end")
        );
        assert_eq!(
            cols[col("cflow.exporttime")],
            [frame(d).export_secs.to_string()],
            "{}",
            ctx("export time")
        );
        // tshark's own sequence analysis names the number it expected when ours is off.
        assert!(
            cols[col("cflow.sequence_analysis.expected_sn")].is_empty(),
            "{}",
            ctx("tshark expected another sequence number")
        );
        sent += mine.len();
    }
    assert_eq!(sent, flows.len());
}

#[test]
fn utc_parser_matches_known_instants() {
    assert_eq!(parse_utc_ms("Jan  1, 1970 00:00:00.000000000 UTC"), 0);
    assert_eq!(
        parse_utc_ms("Mar  4, 2024 09:00:00.026000000 UTC"),
        1_709_542_800_026
    );
    assert_eq!(
        parse_utc_ms("Feb 29, 2024 23:59:59.999000000 UTC"),
        1_709_251_199_999
    );
}

fn all_i64(flows: &[SimFlow], f: fn(&SimFlow) -> i64) -> Vec<i64> {
    flows.iter().map(f).collect()
}

/// tshark prints absolute times as e.g. `Mar  4, 2024 09:00:00.123000000 UTC`.
fn parse_utc_ms(s: &str) -> i64 {
    let bad = || -> ! { panic!("unexpected tshark time {s:?}") };
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [month, day, year, clock, "UTC"] = parts[..] else {
        bad()
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)
    .unwrap_or_else(|| bad()) as i64
        + 1;
    let day: i64 = day.trim_end_matches(',').parse().unwrap_or_else(|_| bad());
    let year: i64 = year.parse().unwrap_or_else(|_| bad());
    let (hms, frac) = clock.split_once('.').unwrap_or_else(|| bad());
    let hms: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().unwrap_or_else(|_| bad()))
        .collect();
    let nanos: i64 = frac.parse().unwrap_or_else(|_| bad());
    assert_eq!(frac.len(), 9, "{s}");
    // Days since 1970-01-01 in the proleptic Gregorian calendar, counting years from
    // March so that the leap day is the last day of the year.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]) * 1000 + nanos / 1_000_000
}
