//! UDP payloads out of pcap and pcapng captures, with the sender of each.

use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};

pub struct Datagram {
    pub from: SocketAddr,
    pub payload: Vec<u8>,
}

pub fn is_capture(bytes: &[u8]) -> bool {
    matches!(
        bytes.get(..4),
        Some(
            [0xd4, 0xc3, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0xc3, 0xd4]
                | [0x4d, 0x3c, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0x3c, 0x4d]
                | [0x0a, 0x0d, 0x0d, 0x0a]
        )
    )
}

fn udp(link: DataLink, data: &[u8]) -> Option<Datagram> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data).ok()?,
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        _ => return None,
    };
    let src: IpAddr = match sliced.net? {
        NetSlice::Ipv4(v4) => v4.header().source_addr().into(),
        NetSlice::Ipv6(v6) => v6.header().source_addr().into(),
        _ => return None,
    };
    match sliced.transport? {
        TransportSlice::Udp(u) => Some(Datagram {
            from: SocketAddr::new(src, u.source_port()),
            payload: u.payload().to_vec(),
        }),
        _ => None,
    }
}

/// Every UDP datagram in the capture, in order. Non-UDP packets are skipped: captures of
/// export traffic often carry other packets too.
pub fn udp_datagrams(bytes: &[u8]) -> Result<Vec<Datagram>, String> {
    let mut out = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut reader = PcapNgReader::new(bytes).map_err(|e| format!("not a pcapng file: {e}"))?;
        let mut links = Vec::new();
        while let Some(block) = reader.next_block() {
            match block.map_err(|e| format!("bad pcapng block: {e}"))? {
                Block::InterfaceDescription(i) => links.push(i.linktype),
                Block::EnhancedPacket(p) => {
                    let link = links
                        .get(p.interface_id as usize)
                        .copied()
                        .unwrap_or(DataLink::ETHERNET);
                    out.extend(udp(link, &p.data));
                }
                Block::SimplePacket(p) => out.extend(udp(
                    links.first().copied().unwrap_or(DataLink::ETHERNET),
                    &p.data,
                )),
                _ => {}
            }
        }
    } else {
        let mut reader = PcapReader::new(bytes).map_err(|e| format!("not a pcap file: {e}"))?;
        let link = reader.header().datalink;
        while let Some(pkt) = reader.next_packet() {
            let pkt = pkt.map_err(|e| format!("bad pcap packet: {e}"))?;
            out.extend(udp(link, &pkt.data));
        }
    }
    Ok(out)
}
