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
//! Both protocols run through the one generic adapter of `benches::commit` (instantiated by
//! `benches::twopc::TwoPc` and `benches::threepc::ThreePc`), so each suite here is one generic
//! function instantiated for each protocol.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use benches::commit::{CommitProtocol, CoreCluster, DriverCluster};
use benches::threepc::ThreePc;
use benches::twopc::TwoPc;
use common::txn::{AtomicCommit, Outcome};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PARTICIPANTS: [usize; 2] = [3, 5];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The cores of protocol `P` alone, pumped in one thread.
fn core<P: CommitProtocol>(c: &mut Criterion) {
    let name = <P::Node as AtomicCommit>::NAME;
    let mut group = c.benchmark_group(format!("{name}_core"));
    group.throughput(Throughput::Elements(1));
    support::fast_mode(&mut group);
    for n in PARTICIPANTS {
        let mut probe = CoreCluster::<P>::new(n);
        let (outcome, messages) = probe.commit(0);
        assert_eq!(outcome, Some(Outcome::Committed));
        eprintln!(
            "{name}, {n} participants: {messages} messages per committed transaction \
             (theory: {})",
            P::MESSAGES_PER_PARTICIPANT * n as u64
        );
        let mut cluster = CoreCluster::<P>::new(n);
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

/// Protocol `P` end to end on the shared driver, with in-memory storage and with the WAL.
fn driver<P: CommitProtocol>(c: &mut Criterion) {
    let name = <P::Node as AtomicCommit>::NAME;
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
                        DriverCluster::<P>::start_wal(n, 1, dir.path())
                    } else {
                        DriverCluster::<P>::start(n, 1)
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

fn twopc_core(c: &mut Criterion) {
    core::<TwoPc>(c);
}

fn threepc_core(c: &mut Criterion) {
    core::<ThreePc>(c);
}

fn twopc_driver(c: &mut Criterion) {
    driver::<TwoPc>(c);
}

fn threepc_driver(c: &mut Criterion) {
    driver::<ThreePc>(c);
}

criterion_group!(
    benches,
    twopc_core,
    threepc_core,
    twopc_driver,
    threepc_driver
);
criterion_main!(benches);
