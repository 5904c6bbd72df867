//! sFlow v5 datagrams built field by field from the sFlow Version 5
//! specification (XDR, big-endian 32-bit words).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bulkhead_flow::{Decoder, SFLOW_V5};

fn w(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

/// XDR opaque<>: length word, data, zero padding to a 4-byte boundary.
fn opaque(data: &[u8]) -> Vec<u8> {
    let mut o = w(data.len() as u32).to_vec();
    o.extend_from_slice(data);
    while !o.len().is_multiple_of(4) {
        o.push(0);
    }
    o
}

fn datagram(samples: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(w(5)); // version
    d.extend(w(1)); // agent address type IPv4
    d.extend([192, 0, 2, 10]);
    d.extend(w(0)); // sub agent id
    d.extend(w(42)); // sequence
    d.extend(w(123_456)); // uptime
    d.extend(w(samples.len() as u32));
    for (format, body) in samples {
        d.extend(w(*format));
        d.extend(opaque(body));
    }
    d
}

/// flow_sample (format 1) with the given flow records.
fn flow_sample(rate: u32, input: u32, output: u32, records: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend(w(7)); // sequence
    s.extend(w(3)); // source id: type 0, ifIndex 3
    s.extend(w(rate));
    s.extend(w(rate * 10)); // sample pool
    s.extend(w(0)); // drops
    s.extend(w(input));
    s.extend(w(output));
    s.extend(w(records.len() as u32));
    for (format, body) in records {
        s.extend(w(*format));
        s.extend(opaque(body));
    }
    s
}

/// sampled_header (flow record format 1).
fn raw_header(protocol: u32, frame_len: u32, header: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend(w(protocol));
    r.extend(w(frame_len));
    r.extend(w(4)); // stripped (FCS)
    r.extend(opaque(header));
    r
}

fn ipv4_tcp(total_len: u16, flags: u8) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend(total_len.to_be_bytes());
    p.extend([0, 1, 0x40, 0, 64, 6, 0, 0]);
    p.extend([10, 1, 0, 1]);
    p.extend([10, 2, 0, 2]);
    p.extend(51_000u16.to_be_bytes());
    p.extend(5432u16.to_be_bytes());
    p.extend([0; 8]); // seq, ack
    p.extend([0x50, flags, 0, 0, 0, 0, 0, 0]);
    p
}

fn ethernet(ethertype: u16, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6];
    if let Some(v) = vlan {
        f.extend(0x8100u16.to_be_bytes());
        f.extend(v.to_be_bytes());
    }
    f.extend(ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn exporter() -> SocketAddr {
    "192.0.2.10:6343".parse().unwrap()
}

#[test]
fn ethernet_vlan_ipv4_tcp_header_sample() {
    let frame = ethernet(0x0800, Some(100), &ipv4_tcp(1500, 0x18));
    let d = datagram(&[(
        1,
        flow_sample(512, 3, 7, &[(1, raw_header(1, 1522, &frame))]),
    )]);
    let mut dec = Decoder::new();
    let out = dec.decode(exporter(), &d).unwrap();
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(r.version, SFLOW_V5);
    assert_eq!(r.observation_domain, 3);
    assert_eq!(r.src_addr, IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)));
    assert_eq!(r.dst_addr, IpAddr::V4(Ipv4Addr::new(10, 2, 0, 2)));
    assert_eq!((r.src_port, r.dst_port, r.protocol), (51_000, 5432, 6));
    assert_eq!(r.tcp_flags, Some(0x18));
    assert_eq!((r.raw_packets, r.raw_bytes), (1, 1500));
    assert_eq!(
        (r.packets, r.bytes, r.sampling_interval),
        (512, 768_000, 512)
    );
    assert_eq!((r.input_interface, r.output_interface), (Some(3), Some(7)));
    assert_eq!(dec.counters().records, 1);
}

#[test]
fn ipv6_udp_with_extension_header_and_icmpv6() {
    let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let ip6 = |next: u8, payload: &[u8]| {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend((payload.len() as u16).to_be_bytes());
        p.extend([next, 64]);
        p.extend(src.octets());
        p.extend(dst.octets());
        p.extend_from_slice(payload);
        p
    };
    // Hop-by-hop options (8 bytes) then UDP 53.
    let mut hbh = vec![17, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend(33_333u16.to_be_bytes());
    hbh.extend(53u16.to_be_bytes());
    hbh.extend([0, 8, 0, 0]);
    let udp_frame = ethernet(0x86dd, None, &ip6(0, &hbh));
    let icmp = ip6(58, &[128, 0, 0, 0]);
    let d = datagram(&[
        (
            1,
            flow_sample(100, 1, 2, &[(1, raw_header(1, 90, &udp_frame))]),
        ),
        // Header protocol 12: the header starts at the IPv6 header.
        (1, flow_sample(100, 1, 2, &[(1, raw_header(12, 48, &icmp))])),
    ]);
    let out = Decoder::new().decode(exporter(), &d).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].src_addr, IpAddr::V6(src));
    assert_eq!(
        (out[0].protocol, out[0].src_port, out[0].dst_port),
        (17, 33_333, 53)
    );
    assert_eq!(out[0].raw_bytes, 40 + 16);
    assert_eq!(
        (out[1].protocol, out[1].icmp_type, out[1].icmp_code),
        (58, Some(128), Some(0))
    );
}

#[test]
fn sampled_ipv4_record_and_expanded_sample() {
    let mut ip = Vec::new();
    ip.extend(w(60)); // length
    ip.extend(w(17)); // protocol
    ip.extend([10, 0, 0, 1, 10, 0, 0, 2]);
    ip.extend(w(5353));
    ip.extend(w(5353));
    ip.extend(w(0));
    ip.extend(w(0));
    let mut s = Vec::new();
    s.extend(w(1)); // sequence
    s.extend(w(0)); // source id type
    s.extend(w(0x0100_0000)); // source id index beyond 24 bits
    s.extend(w(10)); // rate
    s.extend(w(100)); // pool
    s.extend(w(0)); // drops
    s.extend([w(0), w(5), w(0), w(6)].concat()); // input/output format+value
    s.extend(w(1));
    s.extend(w(3));
    s.extend(opaque(&ip));
    let out = Decoder::new()
        .decode(exporter(), &datagram(&[(3, s)]))
        .unwrap();
    assert_eq!(out[0].observation_domain, 0x0100_0000);
    assert_eq!((out[0].packets, out[0].bytes), (10, 600));
    assert_eq!(
        (out[0].input_interface, out[0].output_interface),
        (Some(5), Some(6))
    );
}

#[test]
fn counter_samples_and_non_ip_frames_are_skipped() {
    let arp = ethernet(0x0806, None, &[0; 28]);
    let d = datagram(&[
        (2, vec![0; 12]), // counters sample: not a flow
        (
            1,
            flow_sample(1, 0x4000_0001, 0x8000_0002, &[(1, raw_header(1, 64, &arp))]),
        ),
    ]);
    let mut dec = Decoder::new();
    assert!(dec.decode(exporter(), &d).unwrap().is_empty());
    assert_eq!(dec.counters().sflow_skipped, 2);
}

#[test]
fn discarded_packets_have_no_output_interface() {
    let frame = ethernet(0x0800, None, &ipv4_tcp(40, 0x02));
    let d = datagram(&[(
        1,
        flow_sample(1, 3, 0x4000_0000, &[(1, raw_header(1, 64, &frame))]),
    )]);
    let out = Decoder::new().decode(exporter(), &d).unwrap();
    assert_eq!(
        (out[0].input_interface, out[0].output_interface),
        (Some(3), None)
    );
}

#[test]
fn truncated_and_padded_datagrams_are_errors() {
    let frame = ethernet(0x0800, None, &ipv4_tcp(40, 0x02));
    let good = datagram(&[(1, flow_sample(1, 3, 4, &[(1, raw_header(1, 64, &frame))]))]);
    let mut dec = Decoder::new();
    for len in 4..good.len() {
        assert!(
            dec.decode(exporter(), &good[..len]).is_err(),
            "cut at {len}"
        );
    }
    let mut long = good.clone();
    long.extend([0; 4]);
    assert!(dec.decode(exporter(), &long).is_err());
    // A sample count far beyond the datagram must not loop or allocate.
    let mut lying = good.clone();
    lying[24..28].copy_from_slice(&w(u32::MAX));
    assert!(dec.decode(exporter(), &lying).is_err());
    assert!(dec.decode(exporter(), &good).is_ok());
}
