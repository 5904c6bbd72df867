//! IPFIX encoding throughput (records/s) on a realistic mix of IPv4 and IPv6 flows,
//! and the flow generator's own rate, so a benchmark that feeds a collector knows
//! which side limits it.

use std::hint::black_box;

use bulkhead_sim::{Estate, IpfixEncoder, SimConfig, SimFlow};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn estate() -> Estate {
    Estate::generate(&SimConfig {
        apps: 20,
        unknown_devices: 50,
        attacker: true,
        duration_ms: 10 * 60_000,
        flows_per_minute: 10_000,
        ..SimConfig::default()
    })
}

fn encode(c: &mut Criterion) {
    let estate = estate();
    let flows: Vec<SimFlow> = estate.flows().collect();
    let mut g = c.benchmark_group("ipfix");
    g.throughput(Throughput::Elements(flows.len() as u64));
    g.bench_function("encode_each", |b| {
        let mut enc = IpfixEncoder::new(1);
        b.iter(|| {
            let mut bytes = 0usize;
            enc.encode_each(black_box(&flows), |d| bytes += d.len());
            bytes
        })
    });
    g.bench_function("encode_vec", |b| {
        let mut enc = IpfixEncoder::new(1);
        b.iter(|| enc.encode(black_box(&flows)).len())
    });
    g.finish();

    let mut g = c.benchmark_group("generate");
    g.throughput(Throughput::Elements(flows.len() as u64));
    g.sample_size(10);
    g.bench_function("flows", |b| b.iter(|| estate.flows().count()));
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
