//! Information elements (IANA IPFIX registry; NetFlow v9 shares ids 1..=127
//! and Cisco reuses the IPFIX numbers above). Each template field is mapped
//! to a [`Kind`] once, when the template arrives, so that decoding a record
//! is a jump per field and never a lookup by number.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::bytes::{be_uint, hex, mac};
use crate::record::Acc;

/// RFC 5103 reverse information elements use this private enterprise number.
pub(crate) const REVERSE_PEN: u32 = 29305;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Uint,
    Ipv4,
    Ipv6,
    Mac,
    Str,
    Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    SrcV4,
    DstV4,
    SrcV6,
    DstV6,
    SrcPort,
    DstPort,
    L4SrcPort,
    L4DstPort,
    Protocol,
    TcpFlags,
    InIf,
    OutIf,
    OctetDelta,
    PacketDelta,
    OctetTotal,
    PacketTotal,
    InitOctets,
    InitPackets,
    RevOctetDelta,
    RevPacketDelta,
    RevOctetTotal,
    RevPacketTotal,
    RespOctets,
    RespPackets,
    FirstUptime,
    LastUptime,
    StartSec,
    EndSec,
    StartMs,
    EndMs,
    StartNtp,
    EndNtp,
    StartDeltaUs,
    EndDeltaUs,
    SysInitMs,
    IcmpTypeCode,
    IcmpType,
    IcmpCode,
    SamplingInterval,
    SamplerId,
    PacketInterval,
    PacketSpace,
    /// A known element reported in `extra`: index into [`NAMED`].
    Named(u16),
    /// A vendor element reported in `extra`: index into [`VENDOR`].
    Vendor(u16),
    /// A standard element this crate has no name for: reported as hex.
    Unknown,
    /// Enterprise-specific: its length is honoured, its value ignored.
    Skip,
}

/// Elements reported in `extra` by name.
const NAMED: &[(u16, &str, Ty)] = &[
    (5, "ipClassOfService", Ty::Uint),
    (9, "sourceIPv4PrefixLength", Ty::Uint),
    (13, "destinationIPv4PrefixLength", Ty::Uint),
    (15, "ipNextHopIPv4Address", Ty::Ipv4),
    (16, "bgpSourceAsNumber", Ty::Uint),
    (17, "bgpDestinationAsNumber", Ty::Uint),
    (18, "bgpNextHopIPv4Address", Ty::Ipv4),
    (19, "postMCastPacketDeltaCount", Ty::Uint),
    (20, "postMCastOctetDeltaCount", Ty::Uint),
    (23, "postOctetDeltaCount", Ty::Uint),
    (24, "postPacketDeltaCount", Ty::Uint),
    (25, "minimumIpTotalLength", Ty::Uint),
    (26, "maximumIpTotalLength", Ty::Uint),
    (29, "sourceIPv6PrefixLength", Ty::Uint),
    (30, "destinationIPv6PrefixLength", Ty::Uint),
    (31, "flowLabelIPv6", Ty::Uint),
    (35, "samplingAlgorithm", Ty::Uint),
    (36, "flowActiveTimeout", Ty::Uint),
    (37, "flowIdleTimeout", Ty::Uint),
    (38, "engineType", Ty::Uint),
    (39, "engineId", Ty::Uint),
    (40, "exportedOctetTotalCount", Ty::Uint),
    (41, "exportedMessageTotalCount", Ty::Uint),
    (42, "exportedFlowRecordTotalCount", Ty::Uint),
    (49, "samplerMode", Ty::Uint),
    (52, "minimumTTL", Ty::Uint),
    (53, "maximumTTL", Ty::Uint),
    (54, "fragmentIdentification", Ty::Uint),
    (55, "postIpClassOfService", Ty::Uint),
    (56, "sourceMacAddress", Ty::Mac),
    (57, "postDestinationMacAddress", Ty::Mac),
    (58, "vlanId", Ty::Uint),
    (59, "postVlanId", Ty::Uint),
    (60, "ipVersion", Ty::Uint),
    (61, "flowDirection", Ty::Uint),
    (62, "ipNextHopIPv6Address", Ty::Ipv6),
    (63, "bgpNextHopIPv6Address", Ty::Ipv6),
    (64, "ipv6ExtensionHeaders", Ty::Uint),
    (70, "mplsTopLabelStackSection", Ty::Bytes),
    (80, "destinationMacAddress", Ty::Mac),
    (81, "postSourceMacAddress", Ty::Mac),
    (82, "interfaceName", Ty::Str),
    (83, "interfaceDescription", Ty::Str),
    (84, "samplerName", Ty::Str),
    (89, "forwardingStatus", Ty::Uint),
    (94, "applicationDescription", Ty::Str),
    (95, "applicationId", Ty::Bytes),
    (96, "applicationName", Ty::Str),
    (98, "postIpDiffServCodePoint", Ty::Uint),
    (130, "exporterIPv4Address", Ty::Ipv4),
    (131, "exporterIPv6Address", Ty::Ipv6),
    (136, "flowEndReason", Ty::Uint),
    (144, "exportingProcessId", Ty::Uint),
    (148, "flowId", Ty::Uint),
    (149, "observationDomainId", Ty::Uint),
    (192, "ipTTL", Ty::Uint),
    (195, "ipDiffServCodePoint", Ty::Uint),
    (225, "postNATSourceIPv4Address", Ty::Ipv4),
    (226, "postNATDestinationIPv4Address", Ty::Ipv4),
    (227, "postNAPTSourceTransportPort", Ty::Uint),
    (228, "postNAPTDestinationTransportPort", Ty::Uint),
    (233, "firewallEvent", Ty::Uint),
    (234, "ingressVRFID", Ty::Uint),
    (235, "egressVRFID", Ty::Uint),
    (239, "biflowDirection", Ty::Uint),
    (281, "postNATSourceIPv6Address", Ty::Ipv6),
    (282, "postNATDestinationIPv6Address", Ty::Ipv6),
    (323, "observationTimeMilliseconds", Ty::Uint),
    (346, "privateEnterpriseNumber", Ty::Uint),
    (351, "layer2SegmentId", Ty::Uint),
    (352, "layer2OctetDeltaCount", Ty::Uint),
];

/// Vendor elements that carry policy context, reported in `extra` under
/// `vendor.name`. (enterprise number, element id, name, type); enterprise 0
/// marks NetFlow v9 field types above 32767, which have no enterprise bit.
const VENDOR: &[(u32, u16, &str, Ty)] = &[
    // Palo Alto Networks (PEN 25461) exports v9 with App-ID and User-ID as
    // fixed-length strings: PAN-OS administrator's guide, "NetFlow
    // Templates" (field types 56701 and 56702). tshark 4.0 shows them as
    // unknown field types, so names follow the vendor.
    (0, 56701, "paloalto.appId", Ty::Str),
    (0, 56702, "paloalto.userId", Ty::Str),
    // VMware (PEN 6876) NSX distributed firewall elements: NSX-T 3.2
    // Administration Guide, "IPFIX Monitoring on a Distributed Firewall"
    // element table (docs.vmware.com GUID-F7304386-EFAE-4479-9E3B-251519969D4C).
    // The rule's action is the standard firewallEvent (233).
    (6876, 950, "vmware.ruleId", Ty::Uint),
    (6876, 951, "vmware.vmUuid", Ty::Bytes),
    (6876, 952, "vmware.vnicIndex", Ty::Uint),
    (6876, 953, "vmware.sessionFlags", Ty::Uint),
    (6876, 954, "vmware.flowDirection", Ty::Uint),
    (6876, 960, "vmware.vifUuid", Ty::Bytes),
    (6876, 961, "vmware.vifId", Ty::Str),
];

fn vendor(version: u16, pen: u32, id: u16) -> Option<Kind> {
    if pen == 0 && version != 9 {
        return None;
    }
    VENDOR
        .iter()
        .position(|e| (e.0, e.1) == (pen, id))
        .map(|i| Kind::Vendor(i as u16))
}

/// `version` is 9 or 10; `pen` is 0 for standard elements.
pub(crate) fn classify(version: u16, pen: u32, id: u16, len: u16) -> Kind {
    use Kind::*;
    if pen == REVERSE_PEN {
        return match id {
            1 => RevOctetDelta,
            2 => RevPacketDelta,
            85 => RevOctetTotal,
            86 => RevPacketTotal,
            _ => Skip,
        };
    }
    if pen != 0 || (version == 9 && id >= 0x8000) {
        if let Some(k) = vendor(version, pen, id) {
            return k;
        }
        // v9 has no enterprise bit; ids at or above 32768 are vendor-private
        // by convention and carry no meaning we could trust.
        return Skip;
    }
    let fixed = |want: u16, k: Kind| if len == want { k } else { Unknown };
    let k = match id {
        1 => OctetDelta,
        2 => PacketDelta,
        4 => Protocol,
        6 => TcpFlags,
        7 => SrcPort,
        8 => fixed(4, SrcV4),
        10 => InIf,
        11 => DstPort,
        12 => fixed(4, DstV4),
        14 => OutIf,
        21 => LastUptime,
        22 => FirstUptime,
        27 => fixed(16, SrcV6),
        28 => fixed(16, DstV6),
        32 | 139 => IcmpTypeCode,
        34 | 50 => SamplingInterval,
        48 | 302 => SamplerId,
        85 => OctetTotal,
        86 => PacketTotal,
        150 => StartSec,
        151 => EndSec,
        152 => StartMs,
        153 => EndMs,
        154 | 156 => fixed(8, StartNtp),
        155 | 157 => fixed(8, EndNtp),
        158 => StartDeltaUs,
        159 => EndDeltaUs,
        160 => SysInitMs,
        176 | 178 => IcmpType,
        177 | 179 => IcmpCode,
        180 | 182 => L4SrcPort,
        181 | 183 => L4DstPort,
        231 => InitOctets,
        232 => RespOctets,
        298 => InitPackets,
        299 => RespPackets,
        305 => PacketInterval,
        306 => PacketSpace,
        _ => match NAMED.binary_search_by_key(&id, |e| e.0) {
            Ok(i) => Named(i as u16),
            Err(_) => Unknown,
        },
    };
    // Integer kinds wider than 8 bytes cannot be reduced-size encodings of
    // anything we know: report the raw bytes instead of truncating them.
    if len > 8 && is_integer(k) { Unknown } else { k }
}

fn is_integer(k: Kind) -> bool {
    !matches!(
        k,
        Kind::SrcV4
            | Kind::DstV4
            | Kind::SrcV6
            | Kind::DstV6
            | Kind::Named(_)
            | Kind::Vendor(_)
            | Kind::Unknown
            | Kind::Skip
            | Kind::StartNtp
            | Kind::EndNtp
    )
}

fn ntp_to_unix_ms(v: u64) -> Option<u64> {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let secs = (v >> 32).checked_sub(NTP_UNIX_OFFSET)?;
    let frac_ms = ((v & 0xffff_ffff) * 1000) >> 32;
    Some(secs * 1000 + frac_ms)
}

#[inline]
fn v4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

#[inline]
fn v6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// Applies one field value to the accumulator. `b` has exactly the length
/// the template (or the variable-length prefix) announced; kinds that need a
/// fixed length were only chosen when the template length matched.
#[inline]
pub(crate) fn apply(kind: Kind, id: u16, version: u16, b: &[u8], acc: &mut Acc, extra: bool) {
    use Kind::*;
    let n = || be_uint(b);
    match kind {
        SrcV4 => acc.src4 = Some(v4(b)),
        DstV4 => acc.dst4 = Some(v4(b)),
        SrcV6 => acc.src6 = Some(v6(b)),
        DstV6 => acc.dst6 = Some(v6(b)),
        SrcPort => acc.src_port = Some(n() as u16),
        DstPort => acc.dst_port = Some(n() as u16),
        L4SrcPort => acc.l4_src_port = Some(n() as u16),
        L4DstPort => acc.l4_dst_port = Some(n() as u16),
        Protocol => acc.protocol = Some(n() as u8),
        TcpFlags => acc.tcp_flags = Some(n() as u16),
        InIf => acc.in_if = Some(n() as u32),
        OutIf => acc.out_if = Some(n() as u32),
        OctetDelta => acc.octet_delta = Some(n()),
        PacketDelta => acc.packet_delta = Some(n()),
        OctetTotal => acc.octet_total = Some(n()),
        PacketTotal => acc.packet_total = Some(n()),
        InitOctets => acc.init_octets = Some(n()),
        InitPackets => acc.init_packets = Some(n()),
        RevOctetDelta => acc.rev_octet_delta = Some(n()),
        RevPacketDelta => acc.rev_packet_delta = Some(n()),
        RevOctetTotal => acc.rev_octet_total = Some(n()),
        RevPacketTotal => acc.rev_packet_total = Some(n()),
        RespOctets => acc.resp_octets = Some(n()),
        RespPackets => acc.resp_packets = Some(n()),
        FirstUptime => acc.first_uptime = Some(n() as u32),
        LastUptime => acc.last_uptime = Some(n() as u32),
        StartSec => acc.start_ms = Some(n().saturating_mul(1000)),
        EndSec => acc.end_ms = Some(n().saturating_mul(1000)),
        StartMs => acc.start_ms = Some(n()),
        EndMs => acc.end_ms = Some(n()),
        StartNtp => acc.start_ms = ntp_to_unix_ms(n()),
        EndNtp => acc.end_ms = ntp_to_unix_ms(n()),
        StartDeltaUs => acc.start_delta_us = Some(n()),
        EndDeltaUs => acc.end_delta_us = Some(n()),
        SysInitMs => acc.sys_init_ms = Some(n()),
        IcmpTypeCode => acc.icmp_type_code = Some(n() as u16),
        IcmpType => acc.icmp_type = Some(n() as u8),
        IcmpCode => acc.icmp_code = Some(n() as u8),
        SamplingInterval => acc.sampling_interval = Some(n()),
        SamplerId => acc.sampler_id = Some(n()),
        PacketInterval => acc.packet_interval = Some(n()),
        PacketSpace => acc.packet_space = Some(n()),
        Named(i) => {
            if extra {
                let (_, name, ty) = NAMED[usize::from(i)];
                acc.extra.push((Cow::Borrowed(name), render(ty, b)));
            }
        }
        Vendor(i) => {
            if extra {
                let (_, _, name, ty) = VENDOR[usize::from(i)];
                acc.extra.push((Cow::Borrowed(name), render(ty, b)));
            }
        }
        Unknown => {
            if extra {
                let name = if version == 9 {
                    format!("v9_{id}")
                } else {
                    format!("ie{id}")
                };
                acc.extra.push((Cow::Owned(name), hex(b)));
            }
        }
        Skip => {}
    }
}

fn render(ty: Ty, b: &[u8]) -> String {
    match ty {
        Ty::Uint if b.len() <= 8 => be_uint(b).to_string(),
        Ty::Ipv4 if b.len() == 4 => v4(b).to_string(),
        Ty::Ipv6 if b.len() == 16 => v6(b).to_string(),
        Ty::Mac if b.len() == 6 => mac(b),
        Ty::Str => {
            // Exporters pad fixed-length strings with NULs.
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        }
        _ => hex(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_table_is_sorted_for_binary_search() {
        assert!(NAMED.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn ntp_epoch_conversion() {
        // 2020-01-01T00:00:00.5Z
        let secs = 1_577_836_800u64 + 2_208_988_800;
        assert_eq!(
            ntp_to_unix_ms((secs << 32) | 0x8000_0000),
            Some(1_577_836_800_500)
        );
        assert_eq!(ntp_to_unix_ms(5 << 32), None);
    }
}
