//! sFlow v5 counter samples (counters_sample, format 2, and its expanded
//! form, format 4) and their generic interface counters record (format 1),
//! as laid out in the sFlow Version 5 specification, section 5.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::DecodeError;
use crate::bytes::Reader;

const GENERIC_INTERFACE: u32 = 1;

/// One interface's counters (sFlow `if_counters`, the IF-MIB's ifTable and
/// ifXTable), as an agent exports them periodically. Counters are the
/// agent's running totals, not deltas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceCounters {
    /// The address the datagram came from, as given by the caller.
    pub exporter: SocketAddr,
    /// The agent address in the datagram header.
    pub agent: IpAddr,
    pub sub_agent: u32,
    /// The counter sample's own sequence number.
    pub sequence: u32,
    /// Data source: type (0 = ifIndex, 1 = VLAN, 2 = physical entity) and
    /// index.
    pub source_type: u32,
    pub source_index: u32,
    pub if_index: u32,
    pub if_type: u32,
    /// Bits per second.
    pub if_speed: u64,
    /// 0 unknown, 1 full duplex, 2 half duplex, 3 in, 4 out.
    pub if_direction: u32,
    /// Bit 0 admin up, bit 1 operationally up.
    pub if_status: u32,
    pub in_octets: u64,
    pub in_unicast_packets: u32,
    pub in_multicast_packets: u32,
    pub in_broadcast_packets: u32,
    pub in_discards: u32,
    pub in_errors: u32,
    pub in_unknown_protos: u32,
    pub out_octets: u64,
    pub out_unicast_packets: u32,
    pub out_multicast_packets: u32,
    pub out_broadcast_packets: u32,
    pub out_discards: u32,
    pub out_errors: u32,
    pub promiscuous_mode: u32,
}

pub(crate) struct SampleHead {
    pub exporter: SocketAddr,
    pub agent: IpAddr,
    pub sub_agent: u32,
}

fn u64(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    Ok((u64::from(r.u32()?) << 32) | u64::from(r.u32()?))
}

/// Walks one counters sample; returns how many generic interface records
/// it held, appending them to `out` when given.
pub(crate) fn counters_sample(
    head: &SampleHead,
    body: &[u8],
    expanded: bool,
    mut out: Option<&mut Vec<InterfaceCounters>>,
) -> Result<u64, DecodeError> {
    let mut r = Reader::new(body, "sflow counters sample");
    let sequence = r.u32()?;
    let (source_type, source_index) = if expanded {
        (r.u32()?, r.u32()?)
    } else {
        let s = r.u32()?;
        (s >> 24, s & 0x00ff_ffff)
    };
    let n = r.u32()?;
    let mut found = 0;
    for _ in 0..n {
        let format = r.u32()?;
        let len = r.u32()? as usize;
        let rec = r.take(len)?;
        // Enterprise 0 only; other records (Ethernet, processor, …) carry
        // nothing we report.
        if format != GENERIC_INTERFACE {
            continue;
        }
        let c = generic(head, sequence, source_type, source_index, rec)?;
        found += 1;
        if let Some(v) = out.as_deref_mut() {
            v.push(c);
        }
    }
    if !r.rest().is_empty() {
        return Err(DecodeError::Sflow("bytes after the last counter record"));
    }
    Ok(found)
}

fn generic(
    head: &SampleHead,
    sequence: u32,
    source_type: u32,
    source_index: u32,
    rec: &[u8],
) -> Result<InterfaceCounters, DecodeError> {
    let mut r = Reader::new(rec, "sflow generic interface counters");
    Ok(InterfaceCounters {
        exporter: head.exporter,
        agent: head.agent,
        sub_agent: head.sub_agent,
        sequence,
        source_type,
        source_index,
        if_index: r.u32()?,
        if_type: r.u32()?,
        if_speed: u64(&mut r)?,
        if_direction: r.u32()?,
        if_status: r.u32()?,
        in_octets: u64(&mut r)?,
        in_unicast_packets: r.u32()?,
        in_multicast_packets: r.u32()?,
        in_broadcast_packets: r.u32()?,
        in_discards: r.u32()?,
        in_errors: r.u32()?,
        in_unknown_protos: r.u32()?,
        out_octets: u64(&mut r)?,
        out_unicast_packets: r.u32()?,
        out_multicast_packets: r.u32()?,
        out_broadcast_packets: r.u32()?,
        out_discards: r.u32()?,
        out_errors: r.u32()?,
        promiscuous_mode: r.u32()?,
    })
}
