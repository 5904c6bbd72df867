//! Packets the owned table logs (`log group N prefix "..."`), read from NFLOG.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use bulkhead_api::host::LoggedPacket;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::{
    NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    nflog::{ConfigCmd, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage, config_request},
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::{HostError, netlink, now_ms};

/// Bytes of each packet the kernel copies to us: an IPv6 header with a few extension
/// headers and the transport ports fit; the payload is none of our business.
const COPY_RANGE: u32 = 128;

/// How long the kernel may hold logged packets before sending a batch (it sends earlier
/// when its buffer fills). The kernel's default is one second.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(100);

/// What a reader has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NflogStats {
    /// Packets decoded and returned.
    pub packets: u64,
    /// Messages or packets that did not decode (no valid IP header, no prefix...), skipped.
    pub malformed: u64,
    /// Times the kernel reported dropping messages because we read too slowly (ENOBUFS).
    pub overruns: u64,
}

/// A reader bound to one NFLOG group of the current network namespace. Only one socket
/// per namespace can bind a group; binding a taken group fails (EBUSY).
#[derive(Debug)]
pub struct NflogReader {
    socket: Socket,
    group: u16,
    buf: Vec<u8>,
    stats: NflogStats,
}

impl NflogReader {
    /// Binds `group`, asking for the first 128 bytes of each packet.
    pub fn open(group: u16) -> Result<Self, HostError> {
        let socket = netlink::open(NETLINK_NETFILTER, "opening an nflog socket")?;
        let bind = config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(COPY_RANGE).into(),
                ConfigNla::Timeout(Timeout::new(
                    u32::try_from(FLUSH_TIMEOUT.as_millis() / 10).unwrap_or(100),
                )),
            ],
        );
        netlink::request(&socket, bind, "binding the nflog group")?;
        // Batches are larger than the default receive buffer under a burst; a bigger one
        // turns a scan's worth of logged packets into no loss instead of ENOBUFS.
        socket
            .set_rx_buf_sz(4 * 1024 * 1024)
            .map_err(|source| HostError::Netlink {
                what: "sizing the nflog receive buffer",
                source,
            })?;
        Ok(Self {
            socket,
            group,
            buf: vec![0; netlink::RECV_BUF],
            stats: NflogStats::default(),
        })
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    pub fn stats(&self) -> NflogStats {
        self.stats
    }

    /// Waits up to `timeout` for the next batch and returns its packets (empty on
    /// timeout). Meant for a dedicated thread calling it in a loop.
    pub fn recv(&mut self, timeout: Duration) -> Result<Vec<LoggedPacket>, HostError> {
        if !netlink::wait_readable(&self.socket, timeout, "waiting for nflog")? {
            return Ok(Vec::new());
        }
        let Some(n) = netlink::recv(&self.socket, &mut self.buf, "reading nflog")? else {
            self.stats.overruns += 1;
            return Ok(Vec::new());
        };
        let at_ms = now_ms();
        let mut out = Vec::new();
        for bytes in netlink::split(&self.buf[..n]) {
            match decode_message(bytes, at_ms) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => {}
                Err(()) => self.stats.malformed += 1,
            }
        }
        self.stats.packets += out.len() as u64;
        Ok(out)
    }
}

/// One netlink message → a logged packet; `Ok(None)` for messages that are not packets
/// (acks), `Err` for ones that should have been and did not decode.
fn decode_message(bytes: &[u8], at_ms: i64) -> Result<Option<LoggedPacket>, ()> {
    let message = NetlinkMessage::<NetfilterMessage>::deserialize(bytes).map_err(|_| ())?;
    let NetlinkPayload::InnerMessage(NetfilterMessage {
        inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
        ..
    }) = message.payload
    else {
        return Ok(None);
    };
    let mut prefix = String::new();
    let mut payload = None;
    for nla in nlas {
        match nla {
            PacketNla::Prefix(p) => prefix = p.to_string_lossy().into_owned(),
            PacketNla::Payload(p) => payload = Some(p),
            _ => {}
        }
    }
    let h = payload.as_deref().and_then(parse_packet).ok_or(())?;
    Ok(Some(LoggedPacket {
        at_ms,
        prefix,
        protocol: h.protocol,
        src: h.src,
        dst: h.dst,
        src_port: h.src_port,
        dst_port: h.dst_port,
    }))
}

/// The addresses, protocol and ports of a packet starting at its IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeaders {
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Zero for protocols without ports, for non-first fragments, and when the copy was
    /// cut before the ports.
    pub src_port: u16,
    pub dst_port: u16,
}

/// Reads an IPv4 or IPv6 packet's headers (IPv6 extension headers are walked to the
/// transport header). `None` when there is no valid IP header; never panics.
pub fn parse_packet(p: &[u8]) -> Option<PacketHeaders> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            if ihl < 20 || p.len() < ihl {
                return None;
            }
            let protocol = p[9];
            let src = IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&p[12..16]).ok()?));
            let dst = IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&p[16..20]).ok()?));
            // Only the first fragment carries the transport header.
            let fragment_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
            let (src_port, dst_port) = if fragment_offset == 0 {
                ports(protocol, &p[ihl..])
            } else {
                (0, 0)
            };
            Some(PacketHeaders {
                protocol,
                src,
                dst,
                src_port,
                dst_port,
            })
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let src = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?));
            let dst = IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?));
            let mut next = p[6];
            let mut at = 40usize;
            let mut first_fragment = true;
            // Bounded: each step advances at least 8 bytes through a 128-byte copy.
            for _ in 0..16 {
                let Some(h) = p.get(at..) else { break };
                let len = match next {
                    0 | 43 | 60 => h.get(1).map(|l| (usize::from(*l) + 1) * 8),
                    44 => {
                        let off = h.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]) >> 3);
                        first_fragment = off == Some(0);
                        Some(8)
                    }
                    51 => h.get(1).map(|l| (usize::from(*l) + 2) * 4),
                    _ => break,
                };
                let (Some(len), Some(n)) = (len, h.first()) else {
                    // The copy ends inside an extension header: protocol unknown.
                    return Some(PacketHeaders {
                        protocol: next,
                        src,
                        dst,
                        src_port: 0,
                        dst_port: 0,
                    });
                };
                next = *n;
                at = at.saturating_add(len);
            }
            let (src_port, dst_port) = match p.get(at..) {
                Some(rest) if first_fragment => ports(next, rest),
                _ => (0, 0),
            };
            Some(PacketHeaders {
                protocol: next,
                src,
                dst,
                src_port,
                dst_port,
            })
        }
        _ => None,
    }
}

/// Source and destination ports for protocols that start with them (TCP, UDP, DCCP, SCTP,
/// UDP-Lite); zeros for the rest (ICMP) and for a header cut short.
fn ports(protocol: u8, l4: &[u8]) -> (u16, u16) {
    match (protocol, l4.get(..4)) {
        (6 | 17 | 33 | 132 | 136, Some(b)) => (
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ipv4_tcp(sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    #[test]
    fn ipv4_tcp_ports_are_read() {
        let h = parse_packet(&ipv4_tcp(40000, 5432)).unwrap();
        assert_eq!(h.protocol, 6);
        assert_eq!(h.src, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((h.src_port, h.dst_port), (40000, 5432));
    }

    #[test]
    fn ipv4_non_first_fragment_has_no_ports() {
        let mut p = ipv4_tcp(1, 2);
        p[7] = 10; // fragment offset 10 * 8 bytes
        let h = parse_packet(&p).unwrap();
        assert_eq!((h.src_port, h.dst_port), (0, 0));
    }

    #[test]
    fn icmp_has_no_ports_and_short_headers_are_refused() {
        let mut p = ipv4_tcp(1, 2);
        p[9] = 1;
        assert_eq!(parse_packet(&p).unwrap().dst_port, 0);
        assert!(parse_packet(&p[..19]).is_none());
        assert!(parse_packet(&[]).is_none());
        assert!(parse_packet(&[0x55; 40]).is_none());
    }

    #[test]
    fn ipv6_udp_after_a_destination_options_header() {
        let mut p = vec![0x60, 0, 0, 0, 0, 24, 60, 64];
        p.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]); // dest options, 8 bytes, next UDP
        p.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
        let h = parse_packet(&p).unwrap();
        assert_eq!(h.protocol, 17);
        assert_eq!((h.src_port, h.dst_port), (40000, 53));
        assert_eq!(h.dst, "fd00::1".parse::<IpAddr>().unwrap());
    }

    proptest! {
        #[test]
        fn parse_packet_never_panics(p in proptest::collection::vec(any::<u8>(), 0..160)) {
            let _ = parse_packet(&p);
        }

        #[test]
        fn any_ipv4_tcp_header_round_trips(sport: u16, dport: u16) {
            let h = parse_packet(&ipv4_tcp(sport, dport)).unwrap();
            prop_assert_eq!((h.src_port, h.dst_port), (sport, dport));
        }

        #[test]
        fn decode_message_never_panics(p in proptest::collection::vec(any::<u8>(), 0..300)) {
            for m in netlink::split(&p) {
                let _ = decode_message(m, 0);
            }
        }
    }
}
