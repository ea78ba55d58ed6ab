//! Criterion suite: two-phase commit with 3 and 5 participants, in memory and with the WAL.
//!
//! - `twopc_core`: the cores alone, pumped in one thread (the protocol's CPU cost per
//!   transaction); prints messages per committed transaction beside theory (4 per participant).
//! - `twopc_driver` and `twopc_wal`: end to end through the shared driver and the in-memory
//!   network, with in-memory storage or a write-ahead log (fsync per batch), one transaction at
//!   a time (latency-bound throughput).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use benches::twopc::{CoreCluster, DriverCluster, THEORY_MESSAGES_PER_PARTICIPANT};
use common::txn::Outcome;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PARTICIPANTS: [usize; 2] = [3, 5];

fn core(c: &mut Criterion) {
    let mut group = c.benchmark_group("twopc_core");
    group.throughput(Throughput::Elements(1));
    benches::fast_mode(&mut group);
    for n in PARTICIPANTS {
        let mut probe = CoreCluster::new(n);
        let (outcome, messages) = probe.commit(0);
        assert_eq!(outcome, Some(Outcome::Committed));
        eprintln!(
            "twopc, {n} participants: {messages} messages per committed transaction \
             (theory: {})",
            THEORY_MESSAGES_PER_PARTICIPANT * n as u64
        );
        let mut cluster = CoreCluster::new(n);
        let mut i = 0u64;
        group.bench_with_input(BenchmarkId::new("twopc", n), &n, |b, _| {
            b.iter(|| {
                i += 1;
                cluster.commit(i)
            })
        });
    }
    group.finish();
}

fn driver(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for wal in [false, true] {
        let mut group = c.benchmark_group(if wal { "twopc_wal" } else { "twopc_driver" });
        group.throughput(Throughput::Elements(1));
        benches::fast_mode(&mut group);
        for n in PARTICIPANTS {
            let dir = tempfile::tempdir().unwrap();
            let cluster = rt
                .block_on(async {
                    if wal {
                        DriverCluster::start_wal(n, 1, dir.path())
                    } else {
                        DriverCluster::start(n, 1)
                    }
                })
                .unwrap();
            let mut i = 0u64;
            group.bench_with_input(BenchmarkId::new("twopc", n), &n, |b, _| {
                b.iter(|| {
                    i += 1;
                    rt.block_on(cluster.commit(i)).unwrap()
                })
            });
            rt.block_on(cluster.shutdown());
        }
        group.finish();
    }
}

criterion_group!(benches, core, driver);
criterion_main!(benches);
