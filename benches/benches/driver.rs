//! Criterion suite: the demo protocol through the tokio driver on a three-node in-memory
//! cluster, with 1 and 64 operations in flight. The figure is the time per acknowledged
//! operation, so it is the latency at 1 in flight and the inverse throughput at 64.
//!
//! `BENCH_FAST=1` shortens measurement for a quick pass by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{Cluster, ClusterSpec, TransportKind};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const IN_FLIGHT: [usize; 2] = [1, 64];

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
    let mut group = c.benchmark_group("driver");
    if std::env::var_os("BENCH_FAST").is_some() {
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(1));
        group.sample_size(10);
    }
    group.throughput(Throughput::Elements(1));
    for contender in benches::contenders() {
        let spec = ClusterSpec {
            nodes: 3,
            transport: TransportKind::Memory,
            durable: false,
            seed: 1,
        };
        let cluster = rt.block_on(contender.start(&spec)).unwrap();
        for in_flight in IN_FLIGHT {
            group.bench_with_input(
                BenchmarkId::new(contender.name(), in_flight),
                &in_flight,
                |b, &in_flight| {
                    b.iter_custom(|iters| rt.block_on(run(&cluster, in_flight, iters)));
                },
            );
        }
        rt.block_on(cluster.shutdown()).unwrap();
    }
    group.finish();
}

criterion_group!(benches, driver);
criterion_main!(benches);
