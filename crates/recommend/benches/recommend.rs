//! Recommendation time over 1M flow summaries and 10,000 workloads (docs/benchmarks.md),
//! and coverage of the proposal over the same summaries.

use bulkhead_policy::{CompiledPolicy, Policy};
use bulkhead_recommend::{CoverageOptions, Options, coverage, recommend};
use criterion::{Criterion, criterion_group, criterion_main};

mod synth;

fn bench(c: &mut Criterion) {
    let inv = synth::inventory();
    let summaries = synth::summaries(1_000_000);
    let mut g = c.benchmark_group("recommend");
    g.sample_size(10);
    g.bench_function("1M summaries, 10k workloads", |b| {
        b.iter(|| recommend(&summaries, &inv, None, &Options::default()))
    });
    let r = recommend(&summaries, &inv, None, &Options::default());
    let policy = Policy::from_sources(&r.rendered_files()).expect("proposal checks");
    let compiled = CompiledPolicy::compile(&inv, &policy);
    g.bench_function("coverage of the proposal, 1M summaries", |b| {
        b.iter(|| {
            coverage(
                &compiled,
                &policy,
                &inv,
                &summaries,
                &CoverageOptions::default(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
