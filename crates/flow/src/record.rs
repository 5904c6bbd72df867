use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

/// One flow as reported by an exporter, normalised across NetFlow v5, v9,
/// IPFIX and sFlow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRecord {
    /// The address the datagram came from, as given by the caller.
    pub exporter: SocketAddr,
    /// 5, 9, 10 (IPFIX) or [`SFLOW_V5`](crate::SFLOW_V5) (5000, kept apart from NetFlow v5).
    pub version: u16,
    /// IPFIX observation domain, v9 source id, v5 `engine_type << 8 | engine_id`,
    /// sFlow `source_id` of the sample.
    pub observation_domain: u32,
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    /// Packets with the sampling interval applied (`raw_packets * sampling_interval`).
    pub packets: u64,
    /// Bytes with the sampling interval applied.
    pub bytes: u64,
    /// Packets exactly as exported.
    pub raw_packets: u64,
    /// Bytes exactly as exported.
    pub raw_bytes: u64,
    /// Flow start, unix milliseconds.
    pub start_ms: Option<u64>,
    /// Flow end, unix milliseconds.
    pub end_ms: Option<u64>,
    pub tcp_flags: Option<u16>,
    pub input_interface: Option<u32>,
    pub output_interface: Option<u32>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// 1 when the exporter did not announce sampling.
    pub sampling_interval: u32,
    /// RFC 5103 reverse direction (or NSEL responder) packets, sampling applied.
    pub reverse_packets: Option<u64>,
    /// RFC 5103 reverse direction (or NSEL responder) bytes, sampling applied.
    pub reverse_bytes: Option<u64>,
    /// Every other non-enterprise element, as (IANA name or `ie<id>`, text
    /// value), plus the vendor elements that carry policy context
    /// (`vmware.ruleId`, `paloalto.appId`, …). Empty when
    /// [`DecoderConfig::capture_extra`](crate::DecoderConfig::capture_extra) is off.
    pub extra: Vec<(Cow<'static, str>, String)>,
}

/// What one header tells about time, so that relative timestamps can be
/// made absolute.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx {
    pub exporter: SocketAddr,
    pub version: u16,
    pub domain: u32,
    /// Export time of the datagram, unix milliseconds.
    pub export_ms: u64,
    /// v5/v9 only: exporter uptime at export time, milliseconds.
    pub sys_uptime: Option<u32>,
}

/// Per-scope sampling knowledge learned from options data.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sampling {
    pub default_interval: Option<u32>,
    pub by_sampler: Vec<(u64, u32)>,
}

const MAX_SAMPLERS: usize = 256;

impl Sampling {
    pub(crate) fn set(&mut self, sampler: Option<u64>, interval: u32) {
        match sampler {
            None => self.default_interval = Some(interval),
            Some(id) => {
                if let Some(e) = self.by_sampler.iter_mut().find(|e| e.0 == id) {
                    e.1 = interval;
                } else if self.by_sampler.len() < MAX_SAMPLERS {
                    self.by_sampler.push((id, interval));
                }
            }
        }
    }

    fn lookup(&self, sampler: Option<u64>) -> Option<u32> {
        if let Some(id) = sampler
            && let Some(e) = self.by_sampler.iter().find(|e| e.0 == id)
        {
            return Some(e.1);
        }
        // A record that names no sampler (or an unknown one) only gets an
        // interval announced for the whole scope, never a sampler's.
        self.default_interval
    }
}

/// Values collected from one template-described record before they are
/// turned into a [`FlowRecord`] (or applied as options data).
#[derive(Debug, Default)]
pub(crate) struct Acc {
    pub src4: Option<Ipv4Addr>,
    pub dst4: Option<Ipv4Addr>,
    pub src6: Option<Ipv6Addr>,
    pub dst6: Option<Ipv6Addr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub l4_src_port: Option<u16>,
    pub l4_dst_port: Option<u16>,
    pub protocol: Option<u8>,
    pub tcp_flags: Option<u16>,
    pub in_if: Option<u32>,
    pub out_if: Option<u32>,
    pub octet_delta: Option<u64>,
    pub packet_delta: Option<u64>,
    pub octet_total: Option<u64>,
    pub packet_total: Option<u64>,
    pub init_octets: Option<u64>,
    pub init_packets: Option<u64>,
    pub rev_octet_delta: Option<u64>,
    pub rev_packet_delta: Option<u64>,
    pub rev_octet_total: Option<u64>,
    pub rev_packet_total: Option<u64>,
    pub resp_octets: Option<u64>,
    pub resp_packets: Option<u64>,
    pub first_uptime: Option<u32>,
    pub last_uptime: Option<u32>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub start_delta_us: Option<u64>,
    pub end_delta_us: Option<u64>,
    pub sys_init_ms: Option<u64>,
    pub icmp_type_code: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub sampling_interval: Option<u64>,
    pub sampler_id: Option<u64>,
    pub packet_interval: Option<u64>,
    pub packet_space: Option<u64>,
    pub extra: Vec<(Cow<'static, str>, String)>,
}

fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// `a - b` in unix milliseconds, `None` when it would precede 1970.
fn sub_ms(a: u64, b: i64) -> Option<u64> {
    let v = i128::from(a) - i128::from(b);
    u64::try_from(v).ok()
}

impl Acc {
    /// The sampling interval this record itself announces (options data or
    /// data records that carry their own interval).
    pub(crate) fn announced_interval(&self) -> Option<u32> {
        if let (Some(n), Some(space)) = (self.packet_interval, self.packet_space) {
            // Systematic count-based sampling (RFC 5475): select n, skip space.
            if let Some(rate) = n.saturating_add(space).checked_div(n) {
                return Some(clamp_u32(rate));
            }
        }
        self.sampling_interval.filter(|&v| v > 0).map(clamp_u32)
    }

    fn uptime_to_abs(&self, ctx: &Ctx, sys_init_ms: Option<u64>, uptime: u32) -> Option<u64> {
        match ctx.sys_uptime {
            // v5/v9: both uptimes share the exporter's clock, so their signed
            // difference survives the 49.7-day wrap of the 32-bit counter.
            Some(now) => sub_ms(ctx.export_ms, i64::from(now.wrapping_sub(uptime) as i32)),
            // IPFIX: flow*SysUpTime is relative to systemInitTimeMilliseconds;
            // without it there is no honest absolute time.
            None => self
                .sys_init_ms
                .or(sys_init_ms)
                .map(|init| init.saturating_add(u64::from(uptime))),
        }
    }

    pub(crate) fn into_record(
        self,
        ctx: &Ctx,
        sampling: &Sampling,
        sys_init_ms: Option<u64>,
    ) -> Option<FlowRecord> {
        // Templates shared by both families (NSX, some Cisco) carry both
        // address pairs and zero the unused one: the record's family is the
        // one with a non-zero address.
        let set4 = [self.src4, self.dst4]
            .iter()
            .any(|a| a.is_some_and(|a| !a.is_unspecified()));
        let set6 = [self.src6, self.dst6]
            .iter()
            .any(|a| a.is_some_and(|a| !a.is_unspecified()));
        let has4 = self.src4.is_some() || self.dst4.is_some();
        let v4 = |a: Option<Ipv4Addr>| a.map(IpAddr::V4);
        let v6 = |a: Option<Ipv6Addr>| a.map(IpAddr::V6);
        let (src, dst) = if (set6 && !set4) || !has4 {
            (
                v6(self.src6).or(v4(self.src4)),
                v6(self.dst6).or(v4(self.dst4)),
            )
        } else {
            (
                v4(self.src4).or(v6(self.src6)),
                v4(self.dst4).or(v6(self.dst6)),
            )
        };
        let (src_addr, dst_addr) = match (src, dst) {
            (Some(s), Some(d)) => (s, d),
            (Some(s), None) => (s, unspecified_like(s)),
            (None, Some(d)) => (unspecified_like(d), d),
            (None, None) => return None,
        };
        let interval = self
            .announced_interval()
            .or_else(|| sampling.lookup(self.sampler_id))
            .unwrap_or(1)
            .max(1);
        let raw_bytes = self
            .octet_delta
            .or(self.octet_total)
            .or(self.init_octets)
            .unwrap_or(0);
        let raw_packets = self
            .packet_delta
            .or(self.packet_total)
            .or(self.init_packets)
            .unwrap_or(0);
        let rev_bytes = self
            .rev_octet_delta
            .or(self.rev_octet_total)
            .or(self.resp_octets);
        let rev_packets = self
            .rev_packet_delta
            .or(self.rev_packet_total)
            .or(self.resp_packets);
        let scale = |v: u64| v.saturating_mul(u64::from(interval));

        let start_ms = self
            .start_ms
            .or_else(|| {
                self.first_uptime
                    .and_then(|u| self.uptime_to_abs(ctx, sys_init_ms, u))
            })
            .or_else(|| {
                self.start_delta_us
                    .and_then(|d| sub_ms(ctx.export_ms, i64::try_from(d / 1000).ok()?))
            });
        let end_ms = self
            .end_ms
            .or_else(|| {
                self.last_uptime
                    .and_then(|u| self.uptime_to_abs(ctx, sys_init_ms, u))
            })
            .or_else(|| {
                self.end_delta_us
                    .and_then(|d| sub_ms(ctx.export_ms, i64::try_from(d / 1000).ok()?))
            });

        let protocol = self.protocol.unwrap_or(0);
        let src_port = self.src_port.or(self.l4_src_port).unwrap_or(0);
        let dst_port = self.dst_port.or(self.l4_dst_port).unwrap_or(0);
        let (mut icmp_type, mut icmp_code) = (self.icmp_type, self.icmp_code);
        if let Some(tc) = self.icmp_type_code {
            icmp_type = icmp_type.or(Some((tc >> 8) as u8));
            icmp_code = icmp_code.or(Some((tc & 0xff) as u8));
        }
        if icmp_type.is_none() && (protocol == 1 || protocol == 58) && self.dst_port.is_some() {
            // Exporters without ICMP elements encode type << 8 | code in the
            // destination port (the v5 convention nfdump and tshark follow).
            icmp_type = Some((dst_port >> 8) as u8);
            icmp_code = Some((dst_port & 0xff) as u8);
        }

        Some(FlowRecord {
            exporter: ctx.exporter,
            version: ctx.version,
            observation_domain: ctx.domain,
            src_addr,
            dst_addr,
            src_port,
            dst_port,
            protocol,
            packets: scale(raw_packets),
            bytes: scale(raw_bytes),
            raw_packets,
            raw_bytes,
            start_ms,
            end_ms,
            tcp_flags: self.tcp_flags,
            input_interface: self.in_if,
            output_interface: self.out_if,
            icmp_type,
            icmp_code,
            sampling_interval: interval,
            reverse_packets: rev_packets.map(scale),
            reverse_bytes: rev_bytes.map(scale),
            extra: self.extra,
        })
    }
}

fn unspecified_like(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}
