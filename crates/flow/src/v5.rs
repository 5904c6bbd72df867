//! NetFlow v5: fixed 24-byte header and 48-byte records.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::DecodeError;
use crate::bytes::{be_u16, be_u32};
use crate::record::FlowRecord;

const HEADER: usize = 24;
const RECORD: usize = 48;
const MAX_COUNT: u16 = 30;

pub(crate) fn decode(
    exporter: SocketAddr,
    d: &[u8],
    extra: bool,
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    if d.len() < HEADER {
        return Err(DecodeError::Truncated {
            what: "netflow v5 header",
            need: HEADER,
            have: d.len(),
        });
    }
    let count = be_u16(d, 2);
    if count == 0 || count > MAX_COUNT {
        return Err(DecodeError::V5Count(count));
    }
    let need = HEADER + usize::from(count) * RECORD;
    if d.len() < need {
        return Err(DecodeError::Truncated {
            what: "netflow v5 records",
            need,
            have: d.len(),
        });
    }
    if d.len() > need {
        // Bytes after the announced records mean the count is wrong (or
        // several datagrams were glued together): either way, not ours to guess.
        return Err(DecodeError::TrailingBytes(d.len() - need));
    }
    let sys_uptime = be_u32(d, 4);
    let unix_secs = be_u32(d, 8);
    let unix_nsecs = be_u32(d, 12);
    let engine = u32::from(be_u16(d, 20));
    // Top two bits are the sampling mode, the rest the interval; 0 means
    // unsampled.
    let interval = u32::from(be_u16(d, 22) & 0x3fff).max(1);
    let export_ms = u64::from(unix_secs) * 1000 + u64::from(unix_nsecs / 1_000_000);
    let abs = |uptime: u32| {
        let back = i64::from(sys_uptime.wrapping_sub(uptime) as i32);
        u64::try_from(i128::from(export_ms) - i128::from(back)).ok()
    };

    out.reserve(usize::from(count));
    for r in d[HEADER..need].chunks_exact(RECORD) {
        let ip = |at: usize| Ipv4Addr::from(be_u32(r, at));
        let raw_packets = u64::from(be_u32(r, 16));
        let raw_bytes = u64::from(be_u32(r, 20));
        let protocol = r[38];
        let dst_port = be_u16(r, 34);
        let icmp = (protocol == 1).then_some(((dst_port >> 8) as u8, (dst_port & 0xff) as u8));
        let mut rec = FlowRecord {
            exporter,
            version: 5,
            observation_domain: engine,
            src_addr: IpAddr::V4(ip(0)),
            dst_addr: IpAddr::V4(ip(4)),
            src_port: be_u16(r, 32),
            dst_port,
            protocol,
            packets: raw_packets.saturating_mul(u64::from(interval)),
            bytes: raw_bytes.saturating_mul(u64::from(interval)),
            raw_packets,
            raw_bytes,
            start_ms: abs(be_u32(r, 24)),
            end_ms: abs(be_u32(r, 28)),
            tcp_flags: Some(u16::from(r[37])),
            input_interface: Some(u32::from(be_u16(r, 12))),
            output_interface: Some(u32::from(be_u16(r, 14))),
            icmp_type: icmp.map(|i| i.0),
            icmp_code: icmp.map(|i| i.1),
            sampling_interval: interval,
            reverse_packets: None,
            reverse_bytes: None,
            extra: Vec::new(),
        };
        if extra {
            rec.extra = vec![
                (Cow::Borrowed("ipNextHopIPv4Address"), ip(8).to_string()),
                (Cow::Borrowed("ipClassOfService"), r[39].to_string()),
                (
                    Cow::Borrowed("bgpSourceAsNumber"),
                    be_u16(r, 40).to_string(),
                ),
                (
                    Cow::Borrowed("bgpDestinationAsNumber"),
                    be_u16(r, 42).to_string(),
                ),
                (Cow::Borrowed("sourceIPv4PrefixLength"), r[44].to_string()),
                (
                    Cow::Borrowed("destinationIPv4PrefixLength"),
                    r[45].to_string(),
                ),
            ];
        }
        out.push(rec);
    }
    Ok(())
}
