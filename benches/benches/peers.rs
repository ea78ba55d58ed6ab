//! Criterion suite of the core shootout (`--features peers`): omnipaxos, raft-rs, our paxos and
//! our raft, each pumped in one thread by `benches::peers` (one FIFO queue, no codec, records in
//! memory), in the setups of the `core-shootout` binary: 3 replicas with 1 and 100 commands in
//! flight, 5 replicas with 100.
//!
//! Each iteration is one round: W commands proposed at the leader, then messages delivered until
//! none is in flight, all W applied at the leader. The throughput is set to W, so criterion
//! reports commands per second. One cluster per benchmark is elected before measuring and kept
//! for all its iterations; its in-memory log grows with them, as in the binary.
//!
//! ```text
//! cargo bench -p benches --features peers --bench peers
//! BENCH_FAST=1 cargo bench -p benches --features peers --bench peers
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use benches::peers::{self, Implementation, SETUPS};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn peers(c: &mut Criterion) {
    for setup in SETUPS {
        let mut group = c.benchmark_group(format!(
            "peers/{}_replicas_{}_in_flight",
            setup.replicas, setup.in_flight
        ));
        group.throughput(Throughput::Elements(setup.in_flight));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        group.sample_size(20);
        support::fast_mode(&mut group);
        for implementation in Implementation::ALL {
            let mut pump = peers::prepare(implementation, setup.replicas).unwrap();
            group.bench_function(BenchmarkId::from_parameter(implementation.name()), |b| {
                b.iter(|| peers::run(pump.as_mut(), setup.in_flight, setup.in_flight).unwrap());
            });
        }
        group.finish();
    }
}

criterion_group!(benches, peers);
criterion_main!(benches);
