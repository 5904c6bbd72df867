//! Every fixture datagram decoded by this crate and by tshark (Wireshark's
//! cflow dissector, an independent implementation), compared record by
//! record: addresses, ports, protocol, packets, bytes (and reverse counters
//! where tshark shows them).
//!
//! tshark is a hard requirement (Debian package `tshark`): without it this
//! test fails rather than skipping.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

use bulkhead_flow::{DecodeError, Decoder, FlowRecord};
use common::{Datagram, EXPORT_PORT, load_fixtures, write_pcap};
use serde_json::Value;

/// Where this crate and tshark are known to disagree, and why. Each entry
/// must be hit by the run, so the list cannot rot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// We reject the datagram (counted as malformed); tshark shows whatever
    /// it can salvage.
    WeReject,
    /// tshark gives up part way through the datagram; the records it does
    /// show must match ours, in order.
    TsharkStopsEarly,
    /// tshark subtracts 32-bit uptimes without handling the wrap; its time
    /// is exactly 2^32 ms (49.7 days) away from ours.
    TsharkUptimeWrap,
}

const KNOWN: &[(&str, Known, &str)] = &[
    (
        "netflow5_test_invalid01.dat",
        Known::WeReject,
        "header count 55582 exceeds the v5 maximum of 30 and the 1440 bytes of records; \
         tshark decodes the six records that happen to fit, which would be guessing",
    ),
    (
        "netflow5_test_invalid02.dat",
        Known::WeReject,
        "header count 163 exceeds the v5 maximum of 30; tshark decodes the records that fit",
    ),
    (
        "netflow9_test_invalid01.dat",
        Known::WeReject,
        "header count 2 is below the 6 flowsets present (RFC 3954 counts records, some \
         exporters count flowsets; both give at least 6). tshark stops after two flowsets, \
         which are templates, so it shows no records either",
    ),
    (
        "netflow5.dat",
        Known::TsharkUptimeWrap,
        "softflowd had been up 3.381 s and reports a flow first seen 1 ms before its uptime \
         zero (first = 0xffffffff). We take the signed 32-bit difference (start 3.382 s before \
         export); tshark's unsigned one puts the start 49.7 days after the flow ended",
    ),
    (
        "netflow9_test_h3c_data3281.dat",
        Known::TsharkStopsEarly,
        "H3C template 3281 uses field 43 with length 2; tshark insists on Cisco's \
         IPV4_ROUTER_SC (an IPv4 address, 4 bytes), flags the packet malformed after the \
         first record and drops the other 15 flowsets. Field lengths come from the \
         template (RFC 3954 section 5.2), so the remaining records are well formed: we \
         report field 43 as opaque and decode all 16",
    ),
];

struct TsFlow {
    /// v5/v9 only: first/last switched, exporter uptime milliseconds.
    uptime_start: Option<i64>,
    uptime_end: Option<i64>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: Vec<u16>,
    dport: Vec<u16>,
    protocol: Option<u8>,
    packets: Vec<u64>,
    bytes: Vec<u64>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn first(o: &serde_json::Map<String, Value>, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .map(|k| strings(o.get(*k)))
        .find(|v| !v.is_empty())
        .unwrap_or_default()
}

fn parse_all<T: std::str::FromStr>(v: Vec<String>) -> Vec<T> {
    v.iter()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("tshark value {s:?} does not parse"))
        })
        .collect()
}

fn flow_from(o: &serde_json::Map<String, Value>) -> TsFlow {
    let addr = |keys: &[&str]| {
        first(o, keys)
            .first()
            .map(|s| s.parse::<IpAddr>().expect("tshark address"))
    };
    let tree = o.get("cflow.timedelta_tree").and_then(Value::as_object);
    let uptime = |k: &str| {
        let v = strings(tree?.get(k));
        if v.len() == 1 {
            seconds_to_ms(&v[0])
        } else {
            None
        }
    };
    TsFlow {
        uptime_start: uptime("cflow.timestart"),
        uptime_end: uptime("cflow.timeend"),
        src: addr(&["cflow.srcaddr", "cflow.srcaddrv6"]),
        dst: addr(&["cflow.dstaddr", "cflow.dstaddrv6"]),
        sport: parse_all(first(o, &["cflow.srcport"])),
        dport: parse_all(first(o, &["cflow.dstport"])),
        protocol: parse_all(first(o, &["cflow.protocol"])).first().copied(),
        packets: parse_all(first(
            o,
            &[
                "cflow.packets",
                "cflow.permanent_packets",
                "cflow.initiator_packets",
            ],
        )),
        bytes: parse_all(first(
            o,
            &[
                "cflow.octets",
                "cflow.permanent_octets",
                "cflow.initiator_octets",
            ],
        )),
    }
}

/// tshark prints seconds with nine decimals; milliseconds without floats.
fn seconds_to_ms(s: &str) -> Option<i64> {
    let (secs, frac) = s.split_once('.')?;
    let ms: i64 = frac.get(..3)?.parse().ok()?;
    Some(secs.parse::<i64>().ok()? * 1000 + ms)
}

/// v5/v9 header: (export time, exporter uptime), both in milliseconds.
struct TsHeader {
    export_ms: i64,
    uptime_ms: i64,
}

fn header(c: &Value) -> Option<TsHeader> {
    let c = match c {
        Value::Array(a) => a.first()?,
        v => v,
    };
    let uptime_ms = seconds_to_ms(c.get("cflow.sysuptime")?.as_str()?)?;
    let tree = c.get("cflow.timestamp_tree")?;
    let secs: i64 = tree.get("cflow.unix_secs")?.as_str()?.parse().ok()?;
    let nsecs: i64 = tree
        .get("cflow.unix_nsecs")
        .and_then(Value::as_str)
        .map_or(Some(0), |s| s.parse().ok())?;
    Some(TsHeader {
        export_ms: secs * 1000 + nsecs / 1_000_000,
        uptime_ms,
    })
}

fn collect_flows(v: &Value, out: &mut Vec<TsFlow>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                let is_flow = k.starts_with("Flow ") || k.starts_with("pdu ");
                match child {
                    Value::Object(c) if is_flow => out.push(flow_from(c)),
                    Value::Array(items) if is_flow => {
                        for c in items.iter().filter_map(Value::as_object) {
                            out.push(flow_from(c));
                        }
                    }
                    _ => collect_flows(child, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_flows(x, out)),
        _ => {}
    }
}

fn run_tshark(datagrams: &[Datagram]) -> Vec<(Option<TsHeader>, Vec<TsFlow>)> {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bulkhead-flow-oracle-{}.pcap", std::process::id()));
    std::fs::write(&path, write_pcap(datagrams)).expect("write pcap");
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(&path)
        .arg("-d")
        .arg(format!("udp.port=={EXPORT_PORT},cflow"))
        .args(["-T", "json", "--no-duplicate-keys"])
        .output()
        .unwrap_or_else(|e| {
            panic!("tshark is required for this test (Debian package `tshark`): {e}")
        });
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("tshark json");
    let frames = json.as_array().expect("tshark json array");
    assert_eq!(frames.len(), datagrams.len(), "one frame per datagram");
    frames
        .iter()
        .map(|f| {
            let mut flows = Vec::new();
            let mut hdr = None;
            if let Some(c) = f.pointer("/_source/layers/cflow") {
                collect_flows(c, &mut flows);
                hdr = header(c);
            }
            // Options data (sampling, interface tables) has no addresses and
            // is not a flow: we do not emit it either.
            flows.retain(|t| t.src.is_some() || t.dst.is_some());
            (hdr, flows)
        })
        .collect()
}

const UPTIME_WRAP: &str = "uptime wrap:";

fn compare(ours: &FlowRecord, ts: &TsFlow, hdr: Option<&TsHeader>) -> Vec<String> {
    let mut diffs = Vec::new();
    // tshark shows v5/v9 first/last as uptime offsets; the absolute time is
    // the export time minus how long before export the uptime was.
    if let Some(h) = hdr.filter(|_| ours.version != 10) {
        for (what, uptime, abs) in [
            ("start", ts.uptime_start, ours.start_ms),
            ("end", ts.uptime_end, ours.end_ms),
        ] {
            if let Some(u) = uptime {
                let want = h.export_ms - (h.uptime_ms - u);
                let ours = abs.and_then(|a| i64::try_from(a).ok());
                if ours.is_some_and(|o| want - o == 1 << 32) {
                    diffs.push(format!(
                        "{UPTIME_WRAP} {what}_ms: ours {abs:?}, from tshark {want}"
                    ));
                } else if ours != Some(want) {
                    diffs.push(format!("{what}_ms: ours {abs:?}, from tshark {want}"));
                }
            }
        }
    }
    let mut check = |what: &str, ok: bool, ours: String, theirs: String| {
        if !ok {
            diffs.push(format!("{what}: ours {ours}, tshark {theirs}"));
        }
    };
    if let Some(src) = ts.src {
        check(
            "src",
            ours.src_addr == src,
            ours.src_addr.to_string(),
            src.to_string(),
        );
    }
    if let Some(dst) = ts.dst {
        check(
            "dst",
            ours.dst_addr == dst,
            ours.dst_addr.to_string(),
            dst.to_string(),
        );
    }
    // Some templates carry both the generic port elements (7/11) and the
    // TCP/UDP-specific ones (180-183), which tshark shows under one name;
    // ours must be one of them.
    let port_ok = |v: &Vec<u16>, ours: u16| v.is_empty() && ours == 0 || v.contains(&ours);
    check(
        "src_port",
        port_ok(&ts.sport, ours.src_port),
        ours.src_port.to_string(),
        format!("{:?}", ts.sport),
    );
    check(
        "dst_port",
        port_ok(&ts.dport, ours.dst_port),
        ours.dst_port.to_string(),
        format!("{:?}", ts.dport),
    );
    check(
        "protocol",
        ts.protocol.unwrap_or(0) == ours.protocol,
        ours.protocol.to_string(),
        format!("{:?}", ts.protocol),
    );
    // tshark shows counters as exported; the sampling interval is ours to apply.
    check(
        "packets",
        ts.packets.first().copied().unwrap_or(0) == ours.raw_packets,
        ours.raw_packets.to_string(),
        format!("{:?}", ts.packets),
    );
    check(
        "bytes",
        ts.bytes.first().copied().unwrap_or(0) == ours.raw_bytes,
        ours.raw_bytes.to_string(),
        format!("{:?}", ts.bytes),
    );
    // RFC 5103 reverse elements share the forward element's name in
    // tshark's output: the second value is the reverse direction.
    if let Some(rev) = ts.bytes.get(1) {
        let scale = u64::from(ours.sampling_interval);
        check(
            "reverse_bytes",
            ours.reverse_bytes == Some(rev * scale),
            format!("{:?}", ours.reverse_bytes),
            rev.to_string(),
        );
    }
    if let Some(rev) = ts.packets.get(1) {
        let scale = u64::from(ours.sampling_interval);
        check(
            "reverse_packets",
            ours.reverse_packets == Some(rev * scale),
            format!("{:?}", ours.reverse_packets),
            rev.to_string(),
        );
    }
    diffs
}

#[test]
fn fixtures_match_tshark() {
    let datagrams = load_fixtures();
    let theirs = run_tshark(&datagrams);

    let mut decoder = Decoder::new();
    let mut failures = Vec::new();
    let mut used: BTreeMap<&str, usize> = BTreeMap::new();
    let mut compared = 0usize;
    let mut times_checked = 0usize;
    let mut wraps = 0usize;
    for (d, (hdr, ts)) in datagrams.iter().zip(&theirs) {
        let known = KNOWN.iter().find(|k| k.0 == d.file);
        if let Some(k) = known {
            *used.entry(k.0).or_default() += 1;
        }
        let label = format!("{} #{}", d.file, d.part);
        let ours: Result<Vec<FlowRecord>, DecodeError> = decoder.decode(d.exporter, &d.bytes);
        let ours = match (ours, known.map(|k| k.1)) {
            (Err(_), Some(Known::WeReject)) => continue,
            (Ok(r), Some(Known::WeReject)) => {
                failures.push(format!(
                    "{label}: expected a rejection, decoded {} records",
                    r.len()
                ));
                continue;
            }
            (Err(e), _) => {
                failures.push(format!("{label}: unexpected error: {e}"));
                continue;
            }
            (Ok(r), _) => r,
        };
        let stops_early = known.map(|k| k.1) == Some(Known::TsharkStopsEarly);
        let count_ok = if stops_early {
            ts.len() < ours.len()
        } else {
            ts.len() == ours.len()
        };
        if !count_ok {
            failures.push(format!(
                "{label}: {} records, tshark {}",
                ours.len(),
                ts.len()
            ));
            continue;
        }
        for (i, (o, t)) in ours.iter().zip(ts).enumerate() {
            compared += 1;
            if hdr.is_some() && o.version != 10 && t.uptime_start.is_some() {
                times_checked += 1;
            }
            for diff in compare(o, t, hdr.as_ref()) {
                if diff.starts_with(UPTIME_WRAP)
                    && known.map(|k| k.1) == Some(Known::TsharkUptimeWrap)
                {
                    wraps += 1;
                    continue;
                }
                failures.push(format!("{label} record {i}: {diff}"));
            }
        }
    }
    for (file, _, why) in KNOWN {
        assert!(
            used.contains_key(file),
            "allow-list entry for {file} was not used ({why})"
        );
    }
    assert!(
        failures.is_empty(),
        "{} disagreements with tshark:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared >= 380, "only {compared} records compared");
    assert!(
        times_checked >= 150,
        "only {times_checked} timestamps checked"
    );
    assert_eq!(
        wraps, 2,
        "the two netflow5.dat records with first = 0xffffffff"
    );
    let expired = decoder.expire_pending();
    let c = decoder.counters();
    eprintln!(
        "compared {compared} records ({times_checked} with uptime timestamps) with tshark; \
         counters {c:?}; expired {expired}"
    );
    // The three `*invalid*` files, and nothing else.
    assert_eq!(c.malformed, 3, "{c:?}");
    // Netscaler's data datagram carries a set for template 280, which its
    // template datagram never defined (tshark: "no template found").
    assert_eq!(expired, 1, "{c:?}");
    assert_eq!(c.no_template, 1, "{c:?}");
    assert_eq!(c.pending_sets, 0, "{c:?}");
}
