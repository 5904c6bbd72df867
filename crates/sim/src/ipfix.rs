//! IPFIX export (RFC 7011) of simulated flows: what a hypervisor or router exporter
//! would send to a collector.

use std::net::IpAddr;

use crate::traffic::SimFlow;

pub const IPFIX_VERSION: u16 = 10;
/// Template id of IPv4 records.
pub const TEMPLATE_V4: u16 = 256;
/// Template id of IPv6 records.
pub const TEMPLATE_V6: u16 = 257;

const HEADER_LEN: usize = 16;
const SET_HEADER_LEN: usize = 4;
const TEMPLATE_SET_ID: u16 = 2;

/// (information element id, length). tcpControlBits is unsigned16 since RFC 7125.
const FIELDS_V4: [(u16, u16); 10] = [
    (8, 4),   // sourceIPv4Address
    (12, 4),  // destinationIPv4Address
    (7, 2),   // sourceTransportPort
    (11, 2),  // destinationTransportPort
    (4, 1),   // protocolIdentifier
    (2, 8),   // packetDeltaCount
    (1, 8),   // octetDeltaCount
    (152, 8), // flowStartMilliseconds
    (153, 8), // flowEndMilliseconds
    (6, 2),   // tcpControlBits
];

const FIELDS_V6: [(u16, u16); 10] = [
    (27, 16), // sourceIPv6Address
    (28, 16), // destinationIPv6Address
    (7, 2),
    (11, 2),
    (4, 1),
    (2, 8),
    (1, 8),
    (152, 8),
    (153, 8),
    (6, 2),
];

const fn record_len(fields: &[(u16, u16); 10]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < fields.len() {
        n += fields[i].1 as usize;
        i += 1;
    }
    n
}

/// Bytes of one IPv4 data record.
pub const RECORD_LEN_V4: usize = record_len(&FIELDS_V4);
/// Bytes of one IPv6 data record.
pub const RECORD_LEN_V6: usize = record_len(&FIELDS_V6);
const TEMPLATE_SET_LEN: usize = SET_HEADER_LEN + 2 * (4 + 4 * FIELDS_V4.len());

/// The smallest datagram that can carry both templates and one record.
pub const MIN_DATAGRAM: usize = HEADER_LEN + TEMPLATE_SET_LEN + SET_HEADER_LEN + RECORD_LEN_V6;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
pub const DEFAULT_MAX_DATAGRAM: usize = 1400;
pub const DEFAULT_TEMPLATE_REFRESH: u64 = 32;

/// Turns flows into IPFIX messages for one observation domain. Keeps the state an
/// exporter keeps: the sequence number (data records sent so far) and when the
/// templates are next due, so successive `encode` calls continue one stream.
#[derive(Debug, Clone)]
pub struct IpfixEncoder {
    domain: u32,
    max_datagram: usize,
    template_refresh: u64,
    sequence: u32,
    datagrams: u64,
    export_secs: u32,
    buf: Vec<u8>,
}

fn template_set(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
    buf.extend_from_slice(&(TEMPLATE_SET_LEN as u16).to_be_bytes());
    for (id, fields) in [(TEMPLATE_V4, &FIELDS_V4), (TEMPLATE_V6, &FIELDS_V6)] {
        buf.extend_from_slice(&id.to_be_bytes());
        buf.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for (ie, len) in fields {
            buf.extend_from_slice(&ie.to_be_bytes());
            buf.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Negative times cannot be exported; they clamp to the epoch.
fn millis(t: i64) -> [u8; 8] {
    (t.max(0) as u64).to_be_bytes()
}

/// The fields after the addresses, identical in both templates.
#[inline]
fn tail(rec: &mut [u8], f: &SimFlow) {
    rec[0..2].copy_from_slice(&f.src_port.to_be_bytes());
    rec[2..4].copy_from_slice(&f.dst_port.to_be_bytes());
    rec[4] = f.proto;
    rec[5..13].copy_from_slice(&f.packets.to_be_bytes());
    rec[13..21].copy_from_slice(&f.bytes.to_be_bytes());
    rec[21..29].copy_from_slice(&millis(f.start_ms));
    rec[29..37].copy_from_slice(&millis(f.end_ms));
    rec[37..39].copy_from_slice(&u16::from(f.tcp_flags).to_be_bytes());
}

/// A flow with one IPv6 end goes in an IPv6 record, the IPv4 end v4-mapped.
#[inline]
fn is_v6(f: &SimFlow) -> bool {
    f.src.is_ipv6() || f.dst.is_ipv6()
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn v4_octets(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!("IPv6 flows use the IPv6 template"),
    }
}

impl IpfixEncoder {
    pub fn new(observation_domain: u32) -> Self {
        IpfixEncoder {
            domain: observation_domain,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            template_refresh: DEFAULT_TEMPLATE_REFRESH,
            sequence: 0,
            datagrams: 0,
            export_secs: 0,
            buf: Vec::new(),
        }
    }

    /// Largest datagram (IPFIX message) to produce, in bytes.
    ///
    /// # Panics
    /// Outside [`MIN_DATAGRAM`]`..=`[`MAX_DATAGRAM`].
    pub fn with_max_datagram(mut self, bytes: usize) -> Self {
        assert!(
            (MIN_DATAGRAM..=MAX_DATAGRAM).contains(&bytes),
            "max datagram size {bytes} is outside {MIN_DATAGRAM}..={MAX_DATAGRAM}"
        );
        self.max_datagram = bytes;
        self
    }

    /// Send the templates in the first datagram and then every `datagrams` datagrams,
    /// as UDP exporters must (RFC 7011 §8.4: a collector may start at any time).
    ///
    /// # Panics
    /// When `datagrams` is 0.
    pub fn with_template_refresh(mut self, datagrams: u64) -> Self {
        assert!(
            datagrams > 0,
            "template refresh interval must be at least 1"
        );
        self.template_refresh = datagrams;
        self
    }

    pub fn observation_domain(&self) -> u32 {
        self.domain
    }

    /// The sequence number the next datagram will carry.
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// Datagrams produced so far.
    pub fn datagrams(&self) -> u64 {
        self.datagrams
    }

    /// Encodes `flows` in order into datagrams.
    pub fn encode(&mut self, flows: &[SimFlow]) -> Vec<Vec<u8>> {
        let per = (self.max_datagram - HEADER_LEN - SET_HEADER_LEN) / RECORD_LEN_V4;
        let mut out = Vec::with_capacity(flows.len() / per.max(1) + 1);
        self.encode_each(flows, |d| out.push(d.to_vec()));
        out
    }

    /// Like [`encode`](Self::encode), handing each datagram to `sink` from one reused
    /// buffer: no allocation per datagram or record.
    pub fn encode_each(&mut self, flows: &[SimFlow], mut sink: impl FnMut(&[u8])) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.reserve(self.max_datagram);
        let mut i = 0;
        while i < flows.len() {
            buf.clear();
            buf.resize(HEADER_LEN, 0);
            if self.datagrams.is_multiple_of(self.template_refresh) {
                template_set(&mut buf);
            }
            let mut records = 0u32;
            let mut last_end = i64::MIN;
            // Start of the open data set and whether it holds IPv6 records.
            let mut open: Option<(usize, bool)> = None;
            while let Some(f) = flows.get(i) {
                let v6 = is_v6(f);
                let len = if v6 { RECORD_LEN_V6 } else { RECORD_LEN_V4 };
                let same_set = open.is_some_and(|(_, o)| o == v6);
                let need = len + if same_set { 0 } else { SET_HEADER_LEN };
                if buf.len() + need > self.max_datagram {
                    break;
                }
                if !same_set {
                    if let Some((at, _)) = open {
                        close_set(&mut buf, at);
                    }
                    open = Some((buf.len(), v6));
                    let id = if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 };
                    buf.extend_from_slice(&id.to_be_bytes());
                    buf.extend_from_slice(&[0, 0]);
                }
                if v6 {
                    let mut rec = [0u8; RECORD_LEN_V6];
                    rec[0..16].copy_from_slice(&v6_octets(f.src));
                    rec[16..32].copy_from_slice(&v6_octets(f.dst));
                    tail(&mut rec[32..], f);
                    buf.extend_from_slice(&rec);
                } else {
                    let mut rec = [0u8; RECORD_LEN_V4];
                    rec[0..4].copy_from_slice(&v4_octets(f.src));
                    rec[4..8].copy_from_slice(&v4_octets(f.dst));
                    tail(&mut rec[8..], f);
                    buf.extend_from_slice(&rec);
                }
                last_end = last_end.max(f.end_ms);
                records += 1;
                i += 1;
            }
            if let Some((at, _)) = open {
                close_set(&mut buf, at);
            }
            // Exported once the last flow in it has ended (rounded up to a second),
            // and never earlier than the previous datagram.
            let secs = u32::try_from((last_end.max(0) as u64).div_ceil(1000)).unwrap_or(u32::MAX);
            self.export_secs = self.export_secs.max(secs);
            let len = buf.len() as u16;
            buf[0..2].copy_from_slice(&IPFIX_VERSION.to_be_bytes());
            buf[2..4].copy_from_slice(&len.to_be_bytes());
            buf[4..8].copy_from_slice(&self.export_secs.to_be_bytes());
            buf[8..12].copy_from_slice(&self.sequence.to_be_bytes());
            buf[12..16].copy_from_slice(&self.domain.to_be_bytes());
            self.sequence = self.sequence.wrapping_add(records);
            self.datagrams += 1;
            sink(&buf);
        }
        self.buf = buf;
    }
}

fn close_set(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
}
