//! Criterion suite: the atomic-commit protocols side by side, two-phase and three-phase commit,
//! with 3 and 5 participants, in memory and with the WAL.
//!
//! - `twopc_core` / `threepc_core`: the cores alone, pumped in one thread (the protocol's CPU
//!   cost per transaction); prints messages per committed transaction beside theory (4 per
//!   participant for 2PC, 6 for 3PC).
//! - `twopc_driver` / `threepc_driver` and `twopc_wal` / `threepc_wal`: end to end through the
//!   shared driver and the in-memory network, with in-memory storage or a write-ahead log (fsync
//!   per batch), one transaction at a time (latency-bound throughput).
//!
//! The adapters in `benches::twopc` and `benches::threepc` have the same shape (one macro writes
//! both), so one macro here writes the suite of each.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use common::txn::Outcome;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PARTICIPANTS: [usize; 2] = [3, 5];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

macro_rules! commit_suite {
    ($core:ident, $driver:ident, $proto:ident) => {
        fn $core(c: &mut Criterion) {
            use benches::$proto::{CoreCluster, THEORY_MESSAGES_PER_PARTICIPANT};
            let name = stringify!($proto);
            let mut group = c.benchmark_group(format!("{name}_core"));
            group.throughput(Throughput::Elements(1));
            support::fast_mode(&mut group);
            for n in PARTICIPANTS {
                let mut probe = CoreCluster::new(n);
                let (outcome, messages) = probe.commit(0);
                assert_eq!(outcome, Some(Outcome::Committed));
                eprintln!(
                    "{name}, {n} participants: {messages} messages per committed transaction \
                     (theory: {})",
                    THEORY_MESSAGES_PER_PARTICIPANT * n as u64
                );
                let mut cluster = CoreCluster::new(n);
                let mut i = 0u64;
                group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                    b.iter(|| {
                        i += 1;
                        cluster.commit(i)
                    })
                });
            }
            group.finish();
        }

        fn $driver(c: &mut Criterion) {
            use benches::$proto::DriverCluster;
            let name = stringify!($proto);
            let rt = runtime();
            for wal in [false, true] {
                let kind = if wal { "wal" } else { "driver" };
                let mut group = c.benchmark_group(format!("{name}_{kind}"));
                group.throughput(Throughput::Elements(1));
                support::fast_mode(&mut group);
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
                    group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
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
    };
}

commit_suite!(twopc_core, twopc_driver, twopc);
commit_suite!(threepc_core, threepc_driver, threepc);

criterion_group!(
    benches,
    twopc_core,
    threepc_core,
    twopc_driver,
    threepc_driver
);
criterion_main!(benches);
