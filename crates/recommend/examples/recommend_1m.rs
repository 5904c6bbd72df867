//! One recommendation over 1M synthetic summaries and 10,000 workloads, for measuring
//! peak memory (`/usr/bin/time -v`); prints timings and the size of the proposal.

use std::time::Instant;

use bulkhead_policy::{CompiledPolicy, Policy};
use bulkhead_recommend::{CoverageOptions, Options, coverage, recommend};

#[path = "../benches/synth.rs"]
mod synth;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let t = Instant::now();
    let inv = synth::inventory();
    let summaries = synth::summaries(n);
    let generated = t.elapsed();
    // `recommend_1m N baseline` stops here: the memory of the input alone.
    if std::env::args().nth(2).as_deref() == Some("baseline") {
        println!(
            "{n} summaries, {} workloads generated in {generated:.2?}",
            inv.len()
        );
        return;
    }
    let t = Instant::now();
    let r = recommend(&summaries, &inv, None, &Options::default());
    let took = t.elapsed();
    let t = Instant::now();
    let policy = Policy::from_sources(&r.rendered_files()).expect("the proposal checks");
    let parsed = t.elapsed();
    let t = Instant::now();
    let compiled = CompiledPolicy::compile(&inv, &policy);
    let compiled_in = t.elapsed();
    let t = Instant::now();
    let c = coverage(
        &compiled,
        &policy,
        &inv,
        &summaries,
        &CoverageOptions::default(),
    );
    let covered = t.elapsed();
    println!(
        "coverage of the proposal: parsed in {parsed:.2?}, compiled in {compiled_in:.2?} ({} identity classes), measured in {covered:.2?}: {:.1}% of connections allowed",
        compiled.class_count(),
        c.connection_share * 100.0
    );
    println!(
        "{} summaries, {} workloads: generated in {:.2?}, recommended in {:.2?}: {} rulesets, {} rules, {} ip lists, {} widenings",
        n,
        inv.len(),
        generated,
        took,
        r.stats.rulesets,
        r.stats.rules,
        r.stats.ip_lists,
        r.widenings.len()
    );
}
