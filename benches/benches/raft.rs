//! Criterion suite of the `raft` crate.
//!
//! The setup of the groups that run through the driver is the one other Raft implementations
//! publish figures for (openraft's benchmark: three nodes in one process, in-memory storage,
//! empty requests), so the numbers can be set side by side:
//!
//! - `raft_core/*`: the sans-IO cores alone, pumped in one thread by `raft::testing::Cluster`
//!   (no driver, no codec, no threads, no async): 3 and 5 nodes, 1 and 100 proposals in flight.
//! - `raft_memory/*`: three nodes in one process, each on the shared tokio driver, over the
//!   in-memory transport (every message encoded and decoded by the codec, as on a network),
//!   `MemStorage` persisted inline, empty commands (`benches::raft::Empty`). `1_client`: one
//!   client, one proposal at a time (the time is the latency of a proposal); `256_clients`: 256
//!   concurrent clients, each with one proposal in flight (the figure is the inverse
//!   throughput).
//! - `raft_tcp/*`: the same three nodes over the real TCP transport on 127.0.0.1 (handshake,
//!   length-delimited frames), with 1 and 64 clients.
//!
//! The runtime is tokio's multi-threaded one with one worker per core. `BENCH_FAST=1` shortens
//! measurement for a quick pass by hand. `cargo run --release -p benches --example raft_load`
//! runs the same groups for a fixed time, which is handier under `perf`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use benches::raft::{Empty, Group};
use benches::{ClusterSpec, TransportKind};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft::testing::Cluster;
use raft::{Request, Response};

/// Concurrent clients of the throughput figure over the in-memory transport.
const MEMORY_CLIENTS: [usize; 2] = [1, 256];
/// Concurrent clients over TCP.
const TCP_CLIENTS: [usize; 2] = [1, 64];

fn core(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft_core");
    support::fast_mode(&mut g);
    for nodes in [3u64, 5] {
        for in_flight in [1u64, 100] {
            g.throughput(Throughput::Elements(in_flight));
            g.bench_with_input(
                BenchmarkId::new(format!("{in_flight}_in_flight"), nodes),
                &(nodes, in_flight),
                |b, &(nodes, in_flight)| {
                    let mut cluster = Cluster::<Empty>::new(nodes, 1);
                    let leader = cluster.run_until_leader(1_000).unwrap();
                    b.iter(|| {
                        let ids: Vec<_> = (0..in_flight)
                            .map(|_| cluster.submit(leader, Request::Propose(())))
                            .collect();
                        cluster.deliver_all(usize::MAX);
                        for id in ids {
                            let r = cluster.take_response(id);
                            assert!(matches!(r, Some(Response::Applied { .. })), "{r:?}");
                        }
                    });
                },
            );
        }
    }
    g.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .unwrap()
}

/// One group of driver benchmarks: three nodes over `transport`, one benchmark per client count.
fn group(c: &mut Criterion, name: &str, transport: TransportKind, clients: &[usize]) {
    let rt = runtime();
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(5));
    support::fast_mode(&mut g);
    let spec = ClusterSpec::new(3, transport, false, 3);
    let raft = rt.block_on(Group::start(&spec, |_| {})).unwrap();
    // Connections up, buffers grown.
    rt.block_on(raft.closed_loop(64, 10_000, None)).unwrap();
    // One operation per iteration: criterion reports time per acknowledged proposal and, with
    // the throughput set, proposals per second.
    g.throughput(Throughput::Elements(1));
    for &n in clients {
        // criterion's async support is a feature the workspace does not enable: time whole
        // batches of iterations inside one `block_on` instead.
        g.bench_function(BenchmarkId::new(format!("{n}_clients"), 3), |b| {
            b.iter_custom(|iters| {
                let run = rt.block_on(raft.closed_loop(n, iters, None)).unwrap();
                assert_eq!(run.ops, iters);
                run.elapsed
            });
        });
    }
    g.finish();
    rt.block_on(raft.shutdown()).unwrap();
}

fn memory(c: &mut Criterion) {
    group(c, "raft_memory", TransportKind::Memory, &MEMORY_CLIENTS);
}

fn tcp(c: &mut Criterion) {
    group(c, "raft_tcp", TransportKind::Tcp, &TCP_CLIENTS);
}

criterion_group!(benches, core, memory, tcp);
criterion_main!(benches);
