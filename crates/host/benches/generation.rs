//! What the agent's tamper check costs while nothing changed: one read of the nftables
//! ruleset generation (a netlink round trip in this process's namespace), to set beside
//! the full read-back it replaces (`bench/enforce.sh`, "drift check").

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    c.bench_function("nftables_generation", |b| {
        b.iter(|| bulkhead_host::nftables_generation().expect("reading the generation"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
