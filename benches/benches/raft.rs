//! Criterion suite of the `raft` crate.
//!
//! - `raft_core/*`: the sans-IO cores alone, pumped in one thread by `raft::testing::Cluster`
//!   (no driver, no codec, no threads): 3 and 5 nodes, 1 and 100 proposals in flight.
//! - `raft_driver/*`: three nodes on the shared tokio driver over the in-memory transport (every
//!   message encoded and decoded), in-memory storage, empty commands: one client (latency) and
//!   256 concurrent clients (throughput).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::driver::DriverConfig;
use common::transport::memory::MemoryNetwork;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft::kv::{KvCommand, KvStore};
use raft::testing::Cluster;
use raft::{spawn_memory_cluster, Config, RaftClient, Request, Response, Role};

fn core(c: &mut Criterion) {
    let mut g = c.benchmark_group("raft_core");
    benches::fast_mode(&mut g);
    for nodes in [3u64, 5] {
        for in_flight in [1u64, 100] {
            g.throughput(Throughput::Elements(in_flight));
            g.bench_with_input(
                BenchmarkId::new(format!("{in_flight}_in_flight"), nodes),
                &(nodes, in_flight),
                |b, &(nodes, in_flight)| {
                    let mut cluster = Cluster::<KvStore>::new(nodes, 1);
                    let leader = cluster.run_until_leader(1_000).unwrap();
                    b.iter(|| {
                        let ids: Vec<_> = (0..in_flight)
                            .map(|_| cluster.submit(leader, Request::Propose(KvCommand::Nop)))
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
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn cluster(seed: u64) -> Arc<RaftClient<KvStore>> {
    let configs: Vec<Config> = (1..=3)
        .map(|id| {
            let mut c = Config::new(id, vec![1, 2, 3]);
            // Batches grow under load: many entries per AppendEntries, a few in flight.
            c.append_entries_max = 4096;
            c.inflight_max = 4;
            c
        })
        .collect();
    let net = MemoryNetwork::new(seed);
    let client = spawn_memory_cluster(configs, &net, DriverConfig::default()).unwrap();
    // Wait for a leader and point the client at it.
    for _ in 0..1_000 {
        if client.propose(KvCommand::Nop).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut leader_found = false;
    for h in client.nodes() {
        if h.metrics().await.unwrap().role == Role::Leader {
            leader_found = true;
        }
    }
    assert!(leader_found);
    Arc::new(client)
}

fn driver(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("raft_driver");
    g.measurement_time(Duration::from_secs(5));
    benches::fast_mode(&mut g);
    let client = rt.block_on(cluster(3));
    g.throughput(Throughput::Elements(1));
    // criterion's async support is a feature the workspace does not enable: time whole
    // batches of iterations inside one `block_on` instead.
    g.bench_function(BenchmarkId::new("1_client", 3), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    client.propose(KvCommand::Nop).await.unwrap();
                }
                start.elapsed()
            })
        });
    });
    let clients = 256u64;
    g.throughput(Throughput::Elements(clients));
    g.bench_function(BenchmarkId::new("256_clients", 3), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..clients)
                    .map(|_| {
                        let client = client.clone();
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                client.propose(KvCommand::Nop).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            })
        });
    });
    g.finish();
    rt.block_on(client.shutdown()).unwrap();
}

criterion_group!(benches, core, driver);
criterion_main!(benches);
