//! Criterion suite: every protocol of the shootout (demo, Raft, Multi-Paxos, 2PC, 3PC) through
//! the tokio driver on in-memory clusters of 3 and 5 nodes, with 1 and 64 operations in flight
//! (one group per in-flight count, `BenchmarkId::new(protocol, cluster_size)`). The figure is the
//! time per acknowledged operation, so it is the latency at 1 in flight and the inverse
//! throughput at 64.
//!
//! `BENCH_FAST=1` shortens measurement for a quick pass by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{Cluster, ClusterSpec, TransportKind};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const IN_FLIGHT: [usize; 2] = [1, 64];
const CLUSTER_SIZES: [usize; 2] = [3, 5];

/// Runs `iters` operations with `in_flight` clients and returns the wall time.
async fn run(cluster: &Arc<dyn Cluster>, in_flight: usize, iters: u64) -> Duration {
    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..in_flight {
        // Spread `iters` over the clients.
        let ops = iters / in_flight as u64 + u64::from((client as u64) < iters % in_flight as u64);
        let cluster = cluster.clone();
        clients.spawn(async move {
            for seq in 0..ops {
                cluster.run_op(client, seq).await.unwrap();
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    start.elapsed()
}

fn driver(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for in_flight in IN_FLIGHT {
        let mut group = c.benchmark_group(format!("driver/in_flight_{in_flight}"));
        support::fast_mode(&mut group);
        group.throughput(Throughput::Elements(1));
        for contender in benches::contenders() {
            for nodes in CLUSTER_SIZES {
                let spec = ClusterSpec::new(nodes, TransportKind::Memory, false, 1);
                let cluster = rt.block_on(contender.start(&spec)).unwrap();
                group.bench_with_input(
                    BenchmarkId::new(contender.name(), nodes),
                    &in_flight,
                    |b, &in_flight| {
                        b.iter_custom(|iters| rt.block_on(run(&cluster, in_flight, iters)));
                    },
                );
                rt.block_on(cluster.shutdown()).unwrap();
            }
        }
        group.finish();
    }
}

criterion_group!(benches, driver);
criterion_main!(benches);
