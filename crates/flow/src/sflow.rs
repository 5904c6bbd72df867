//! sFlow version 5 (sflow.org, "sFlow Version 5", July 2004): flow samples
//! become one [`FlowRecord`] each, from the sampled packet header (Ethernet,
//! IPv4, IPv6) or from the sampled IPv4/IPv6 flow records.
//!
//! sFlow reports single sampled packets, so `packets` is the sampling rate
//! and `bytes` the packet's IP length times the rate. IP length (not frame
//! length) keeps the unit equal to NetFlow/IPFIX octet counters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::DecodeError;
use crate::bytes::Reader;
use crate::decoder::Counters;
use crate::record::FlowRecord;

pub use crate::sflow_counters::InterfaceCounters;

/// [`FlowRecord::version`] of records decoded from sFlow v5, kept apart
/// from NetFlow v5.
pub const SFLOW_V5: u16 = 5000;

const FLOW_SAMPLE: u32 = 1;
const FLOW_SAMPLE_EXPANDED: u32 = 3;
const COUNTERS_SAMPLE: u32 = 2;
const COUNTERS_SAMPLE_EXPANDED: u32 = 4;
const RAW_PACKET_HEADER: u32 = 1;
const SAMPLED_IPV4: u32 = 3;
const SAMPLED_IPV6: u32 = 4;
const PROTO_ETHERNET: u32 = 1;
const PROTO_IPV4: u32 = 11;
const PROTO_IPV6: u32 = 12;

fn bad(what: &'static str) -> DecodeError {
    DecodeError::Sflow(what)
}

/// What the datagram header says about its sender.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub sub_agent: u32,
    pub sequence: u32,
}

/// Appends flow records to `out` and, when `interfaces` is given, interface
/// counter records to it (otherwise they are only counted).
pub(crate) fn decode(
    exporter: SocketAddr,
    d: &[u8],
    counters: &mut Counters,
    out: &mut Vec<FlowRecord>,
    mut interfaces: Option<&mut Vec<InterfaceCounters>>,
) -> Result<Header, DecodeError> {
    let mut r = Reader::new(d, "sflow datagram");
    let _version = r.u32()?;
    let agent = match r.u32()? {
        1 => {
            let a: [u8; 4] = r.take(4)?.try_into().map_err(|_| bad("ipv4"))?;
            IpAddr::V4(Ipv4Addr::from(a))
        }
        2 => {
            let a: [u8; 16] = r.take(16)?.try_into().map_err(|_| bad("ipv6"))?;
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Err(bad("unknown agent address type")),
    };
    let sub_agent = r.u32()?;
    let sequence = r.u32()?;
    let _uptime = r.u32()?;
    let samples = r.u32()?;
    for _ in 0..samples {
        let format = r.u32()?;
        let len = r.u32()? as usize;
        let body = r.take(len)?;
        // Enterprise 0 only; the low 12 bits are the format.
        match format {
            FLOW_SAMPLE => flow_sample(exporter, body, false, counters, out)?,
            FLOW_SAMPLE_EXPANDED => flow_sample(exporter, body, true, counters, out)?,
            COUNTERS_SAMPLE | COUNTERS_SAMPLE_EXPANDED => {
                let head = crate::sflow_counters::SampleHead {
                    exporter,
                    agent,
                    sub_agent,
                };
                let expanded = format == COUNTERS_SAMPLE_EXPANDED;
                let found = crate::sflow_counters::counters_sample(
                    &head,
                    body,
                    expanded,
                    interfaces.as_deref_mut(),
                )?;
                if found == 0 {
                    counters.sflow_skipped += 1;
                }
                counters.sflow_interface_counters += found;
            }
            _ => counters.sflow_skipped += 1,
        }
    }
    if r.rest().is_empty() {
        Ok(Header {
            sub_agent,
            sequence,
        })
    } else {
        Err(bad("bytes after the last sample"))
    }
}

/// Interface fields carry a format in the top two bits; only format 0 is an
/// ifIndex.
fn if_index(v: u32) -> Option<u32> {
    (v >> 30 == 0).then_some(v & 0x3fff_ffff)
}

fn flow_sample(
    exporter: SocketAddr,
    body: &[u8],
    expanded: bool,
    counters: &mut Counters,
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(body, "sflow flow sample");
    let _seq = r.u32()?;
    let source = if expanded {
        let _type = r.u32()?;
        r.u32()?
    } else {
        r.u32()?
    };
    let rate = r.u32()?.max(1);
    let _pool = r.u32()?;
    let _drops = r.u32()?;
    let (input, output) = if expanded {
        let in_fmt = r.u32()?;
        let in_val = r.u32()?;
        let out_fmt = r.u32()?;
        let out_val = r.u32()?;
        (
            (in_fmt == 0).then_some(in_val),
            (out_fmt == 0).then_some(out_val),
        )
    } else {
        (if_index(r.u32()?), if_index(r.u32()?))
    };
    let n = r.u32()?;
    let mut found: Option<Packet> = None;
    for _ in 0..n {
        let format = r.u32()?;
        let len = r.u32()? as usize;
        let rec = r.take(len)?;
        if found.is_some() {
            continue;
        }
        found = match format {
            RAW_PACKET_HEADER => raw_header(rec)?,
            SAMPLED_IPV4 => sampled_ip(rec, false)?,
            SAMPLED_IPV6 => sampled_ip(rec, true)?,
            _ => None,
        };
    }
    let Some(p) = found else {
        counters.sflow_skipped += 1;
        return Ok(());
    };
    out.push(FlowRecord {
        exporter,
        version: SFLOW_V5,
        observation_domain: source,
        src_addr: p.src,
        dst_addr: p.dst,
        src_port: p.src_port,
        dst_port: p.dst_port,
        protocol: p.protocol,
        packets: u64::from(rate),
        bytes: p.ip_len.saturating_mul(u64::from(rate)),
        raw_packets: 1,
        raw_bytes: p.ip_len,
        start_ms: None,
        end_ms: None,
        tcp_flags: p.tcp_flags,
        input_interface: input,
        output_interface: output,
        icmp_type: p.icmp.map(|i| i.0),
        icmp_code: p.icmp.map(|i| i.1),
        sampling_interval: rate,
        reverse_packets: None,
        reverse_bytes: None,
        extra: Vec::new(),
    });
    Ok(())
}

#[derive(Debug)]
struct Packet {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: Option<u16>,
    icmp: Option<(u8, u8)>,
    ip_len: u64,
}

fn raw_header(rec: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut r = Reader::new(rec, "sflow raw packet header");
    let proto = r.u32()?;
    let _frame_len = r.u32()?;
    let _stripped = r.u32()?;
    let hlen = r.u32()? as usize;
    let header = r.take(hlen)?;
    Ok(match proto {
        PROTO_ETHERNET => ethernet(header),
        PROTO_IPV4 => ipv4(header),
        PROTO_IPV6 => ipv6(header),
        _ => None,
    })
}

fn sampled_ip(rec: &[u8], v6: bool) -> Result<Option<Packet>, DecodeError> {
    let mut r = Reader::new(rec, "sflow sampled ip");
    let len = r.u32()?;
    let protocol = r.u32()? as u8;
    let (src, dst) = if v6 {
        let s: [u8; 16] = r.take(16)?.try_into().map_err(|_| bad("ipv6"))?;
        let d: [u8; 16] = r.take(16)?.try_into().map_err(|_| bad("ipv6"))?;
        (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
    } else {
        (
            IpAddr::V4(Ipv4Addr::from(r.u32()?)),
            IpAddr::V4(Ipv4Addr::from(r.u32()?)),
        )
    };
    let src_port = r.u32()?;
    let dst_port = r.u32()?;
    let flags = r.u32()?;
    let _tos = r.u32()?;
    Ok(Some(Packet {
        src,
        dst,
        protocol,
        src_port: src_port as u16,
        dst_port: dst_port as u16,
        tcp_flags: (protocol == 6).then_some(flags as u16),
        // The spec defines the port fields for TCP and UDP only.
        icmp: None,
        ip_len: u64::from(len),
    }))
}

fn ethernet(h: &[u8]) -> Option<Packet> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*h.get(at)?, *h.get(at + 1)?]);
    // Up to two VLAN tags (802.1Q, 802.1ad).
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            at += 4;
            ethertype = u16::from_be_bytes([*h.get(at)?, *h.get(at + 1)?]);
        }
    }
    let ip = h.get(at + 2..)?;
    match ethertype {
        0x0800 => ipv4(ip),
        0x86dd => ipv6(ip),
        _ => None,
    }
}

fn ipv4(h: &[u8]) -> Option<Packet> {
    if h.len() < 20 || h[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = u16::from_be_bytes([h[2], h[3]]);
    let frag_offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
    let protocol = h[9];
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    // Later fragments carry no transport header.
    let l4 = if frag_offset == 0 { h.get(ihl..) } else { None };
    Some(transport(
        IpAddr::V4(src),
        IpAddr::V4(dst),
        protocol,
        l4,
        u64::from(total),
    ))
}

fn ipv6(h: &[u8]) -> Option<Packet> {
    if h.len() < 40 || h[0] >> 4 != 6 {
        return None;
    }
    let payload = u16::from_be_bytes([h[4], h[5]]);
    let mut next = h[6];
    let src: [u8; 16] = h[8..24].try_into().ok()?;
    let dst: [u8; 16] = h[24..40].try_into().ok()?;
    let mut at = 40;
    let mut l4_ok = true;
    // Walk the common extension headers to the transport header.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let n = *h.get(at)?;
                let len = (usize::from(*h.get(at + 1)?) + 1) * 8;
                next = n;
                at += len;
            }
            44 => {
                let n = *h.get(at)?;
                let off = u16::from_be_bytes([*h.get(at + 2)?, *h.get(at + 3)?]) >> 3;
                l4_ok = off == 0;
                next = n;
                at += 8;
            }
            _ => break,
        }
    }
    let l4 = if l4_ok { h.get(at..) } else { None };
    Some(transport(
        IpAddr::V6(Ipv6Addr::from(src)),
        IpAddr::V6(Ipv6Addr::from(dst)),
        next,
        l4,
        u64::from(payload) + 40,
    ))
}

fn transport(src: IpAddr, dst: IpAddr, protocol: u8, l4: Option<&[u8]>, ip_len: u64) -> Packet {
    let mut p = Packet {
        src,
        dst,
        protocol,
        src_port: 0,
        dst_port: 0,
        tcp_flags: None,
        icmp: None,
        ip_len,
    };
    let Some(l4) = l4 else { return p };
    match protocol {
        6 | 17 | 132 if l4.len() >= 4 => {
            p.src_port = u16::from_be_bytes([l4[0], l4[1]]);
            p.dst_port = u16::from_be_bytes([l4[2], l4[3]]);
            if protocol == 6 && l4.len() >= 14 {
                p.tcp_flags = Some(u16::from(l4[13]) | (u16::from(l4[12] & 1) << 8));
            }
        }
        1 | 58 if l4.len() >= 2 => p.icmp = Some((l4[0], l4[1])),
        _ => {}
    }
    p
}
