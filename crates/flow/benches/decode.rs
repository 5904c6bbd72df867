//! Records per second on one core, template cached, 30 records per datagram.
//!
//! `cargo bench -p bulkhead-flow --bench decode`

use std::hint::black_box;
use std::net::SocketAddr;

use bulkhead_flow::{Decoder, DecoderConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RECORDS: usize = 30;

/// (element id, length): a typical router template. ipClassOfService (5) is
/// not a core field, so it lands in `extra` when extras are captured.
const IPFIX_FIELDS: &[(u16, u16)] = &[
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (5, 1),
    (10, 4),
    (14, 4),
    (2, 4),
    (1, 4),
    (152, 8),
    (153, 8),
];

/// The v9 equivalent, with sysUptime-relative timestamps.
const V9_FIELDS: &[(u16, u16)] = &[
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (5, 1),
    (10, 4),
    (14, 4),
    (2, 4),
    (1, 4),
    (22, 4),
    (21, 4),
];

fn value(id: u16, i: usize) -> u64 {
    match id {
        8 => 0x0a00_0001 + i as u64,
        12 => 0x0a00_0101,
        7 => 40_000 + i as u64,
        11 => 443,
        4 => 6,
        152 => 1_700_000_000_000,
        153 => 1_700_000_001_000,
        22 => 1_000,
        21 => 2_000,
        _ => 1_000 + i as u64,
    }
}

fn template_set(set_id: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&set_id.to_be_bytes());
    s.extend_from_slice(&((8 + 4 * fields.len()) as u16).to_be_bytes());
    s.extend_from_slice(&256u16.to_be_bytes());
    s.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for (id, len) in fields {
        s.extend_from_slice(&id.to_be_bytes());
        s.extend_from_slice(&len.to_be_bytes());
    }
    s
}

fn data_set(fields: &[(u16, u16)]) -> Vec<u8> {
    let rl: usize = fields.iter().map(|f| usize::from(f.1)).sum();
    let mut s = Vec::new();
    s.extend_from_slice(&256u16.to_be_bytes());
    s.extend_from_slice(&((4 + rl * RECORDS) as u16).to_be_bytes());
    for i in 0..RECORDS {
        for (id, len) in fields {
            s.extend_from_slice(&value(*id, i).to_be_bytes()[8 - usize::from(*len)..]);
        }
    }
    s
}

fn ipfix(sets: &[u8]) -> Vec<u8> {
    let mut m = vec![0, 10, 0, 0];
    m.extend_from_slice(&1_700_000_001u32.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 7]);
    m.extend_from_slice(sets);
    let n = (m.len() as u16).to_be_bytes();
    m[2..4].copy_from_slice(&n);
    m
}

fn v9(sets: &[u8], count: u16) -> Vec<u8> {
    let mut m = vec![0, 9];
    m.extend_from_slice(&count.to_be_bytes());
    m.extend_from_slice(&5_000u32.to_be_bytes());
    m.extend_from_slice(&1_700_000_001u32.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 7]);
    m.extend_from_slice(sets);
    m
}

fn bench(c: &mut Criterion) {
    let exporter: SocketAddr = "192.0.2.1:4739".parse().expect("addr");
    let cases = [
        (
            "ipfix",
            ipfix(&template_set(2, IPFIX_FIELDS)),
            ipfix(&data_set(IPFIX_FIELDS)),
        ),
        (
            "netflow_v9",
            v9(&template_set(0, V9_FIELDS), 1),
            v9(&data_set(V9_FIELDS), RECORDS as u16),
        ),
    ];
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(RECORDS as u64));
    for (name, tpl, data) in &cases {
        for capture_extra in [false, true] {
            let mut d = Decoder::with_config(DecoderConfig {
                capture_extra,
                ..DecoderConfig::default()
            });
            d.decode(exporter, tpl).expect("template");
            let mut out = Vec::with_capacity(RECORDS);
            assert_eq!(
                d.decode_into(exporter, data, &mut out).expect("data"),
                RECORDS
            );
            let label = if capture_extra {
                format!("{name}/extra")
            } else {
                format!("{name}/core")
            };
            g.bench_function(label, |b| {
                b.iter(|| {
                    out.clear();
                    d.decode_into(exporter, black_box(data), &mut out)
                        .expect("data");
                    black_box(&out);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
