//! The per-record cost of the flow pipeline after decoding: provider inference,
//! aggregation into minute and hour summaries, and (at flush) enrichment and verdicts
//! against a compiled policy. Also the memory of one million open summaries.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bulkhead_enrich::{Aggregator, Enricher, Observation};
use bulkhead_policy::{CompiledPolicy, Policy};
use bulkhead_sim::{Estate, SimConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn enricher() -> (Arc<Enricher>, Vec<Observation>) {
    let config = SimConfig {
        apps: 100,
        web: 4,
        app: 4,
        db: 2,
        flows_per_minute: 20_000,
        duration_ms: 10 * 60_000,
        unknown_devices: 200,
        attacker: true,
        ..SimConfig::default()
    };
    let estate = Estate::generate(&config);
    let inv = bulkhead_inventory::load(&[("sim.csv", estate.inventory_csv())], None).unwrap();
    let policy = Policy::from_sources(&estate.policy_files()).unwrap();
    let compiled = Arc::new(CompiledPolicy::compile(&inv, &policy));
    let observations: Vec<Observation> = estate
        .flows()
        .map(|f| Observation {
            reporter: "exporter 127.0.0.1:9995".into(),
            src: f.src,
            dst: f.dst,
            src_port: f.src_port,
            dst_port: f.dst_port,
            proto: f.proto,
            packets: f.packets,
            bytes: f.bytes,
            start_ms: Some(f.start_ms),
            end_ms: Some(f.end_ms),
            process: None,
            reverse_packets: 0,
            reverse_bytes: 0,
            icmp_type: None,
            connections: 1,
        })
        .collect();
    eprintln!(
        "estate: {} workloads, {} rules, {} observations",
        inv.len(),
        policy.rule_count(),
        observations.len()
    );
    let e = Enricher {
        inventory: Arc::new(inv),
        provisioned: Some(compiled.clone()),
        draft: Some(compiled),
        listening: Default::default(),
        hosts: Default::default(),
    };
    (Arc::new(e), observations)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn bench(c: &mut Criterion) {
    let (enricher, observations) = enricher();
    let batch = &observations[..observations.len().min(200_000)];

    let mut g = c.benchmark_group("aggregate");
    g.sample_size(10);
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("add", |b| {
        b.iter(|| {
            let mut agg = Aggregator::new(enricher.clone());
            for o in batch {
                agg.add(black_box(o), 0);
            }
            black_box(agg.open_len())
        })
    });
    g.bench_function("add_and_flush_enriched", |b| {
        b.iter(|| {
            let mut agg = Aggregator::new(enricher.clone());
            for o in batch {
                agg.add(black_box(o), 0);
            }
            black_box(agg.flush_all().len())
        })
    });
    g.finish();

    // One million distinct open summaries (500k keys × minute and hour).
    let before = rss_bytes();
    let mut agg = Aggregator::new(enricher.clone());
    let template = &observations[0];
    for i in 0..500_000u32 {
        let mut o = template.clone();
        o.src = IpAddr::V4(Ipv4Addr::from(0x0a63_0000 + i));
        o.dst_port = 5432;
        agg.add(&o, 0);
    }
    let after = rss_bytes();
    eprintln!(
        "memory: {} open summaries take {:.0} MiB of RSS ({:.0} bytes each)",
        agg.open_len(),
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / agg.open_len() as f64
    );
    let flushed = agg.flush_all();
    let after_flush = rss_bytes();
    eprintln!(
        "memory: the same {} summaries enriched and materialised take {:.0} MiB",
        flushed.len(),
        after_flush.saturating_sub(before) as f64 / (1 << 20) as f64
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
