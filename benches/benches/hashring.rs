//! Criterion suite for consistent hashing: lookups, preference lists, building and incremental
//! changes, for the ring and the alternatives, at 100 and 1000 nodes with 160 virtual nodes per
//! node, over 1 M pre-generated random `u64` keys (the key is hashed inside the measured loop).
//!
//! Per-operation benches report the median of 1 024-operation chunks (see
//! `benches::hashring::time_per_op`): the machine is shared, and a plain wall-clock total would
//! include other processes' time slices.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::hint::black_box;

use benches::hashring::{membership, random_keys, time_per_op, KEYS_DEFAULT};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hashring::{JumpHash, Maglev, Member, Placement, Rendezvous, Ring};

const NODE_COUNTS: [usize; 2] = [100, 1000];

/// Cycles through the key array: one lookup per iteration.
fn bench_lookups<P: Placement<u64>>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    nodes: usize,
    placement: &P,
    keys: &[u64],
) {
    let mask = keys.len() as u64 - 1;
    group.bench_function(BenchmarkId::new(name, nodes), |b| {
        b.iter_custom(|iters| {
            time_per_op(iters, |i| {
                black_box(placement.locate(&keys[(i & mask) as usize]));
            })
        })
    });
}

fn lookup(c: &mut Criterion) {
    let keys = random_keys(KEYS_DEFAULT);
    assert!(keys.len().is_power_of_two());
    let mut group = c.benchmark_group("hashring/lookup");
    group.throughput(Throughput::Elements(1));
    support::fast_mode(&mut group);
    for nodes in NODE_COUNTS {
        let m = membership(nodes);
        bench_lookups(
            &mut group,
            "ring",
            nodes,
            &Ring::from_membership(&m).unwrap(),
            &keys,
        );
        bench_lookups(
            &mut group,
            "jump",
            nodes,
            &JumpHash::from_membership(&m).unwrap(),
            &keys,
        );
        let size = Maglev::<u64>::recommended_table_size(nodes);
        bench_lookups(
            &mut group,
            "maglev",
            nodes,
            &Maglev::from_membership(&m, size).unwrap(),
            &keys,
        );
        bench_lookups(
            &mut group,
            "rendezvous",
            nodes,
            &Rendezvous::from_membership(&m).unwrap(),
            &keys,
        );
    }
    group.finish();
}

fn preference_list(c: &mut Criterion) {
    let keys = random_keys(KEYS_DEFAULT);
    let mask = keys.len() as u64 - 1;
    let mut group = c.benchmark_group("hashring/preference_list_3");
    support::fast_mode(&mut group);
    for nodes in NODE_COUNTS {
        let ring = Ring::from_membership(&membership(nodes)).unwrap();
        group.bench_function(BenchmarkId::new("ring", nodes), |b| {
            b.iter_custom(|iters| {
                time_per_op(iters, |i| {
                    // Consumed in place: no Vec, no allocation.
                    let mut acc = 0u64;
                    for node in ring.preference_list(&keys[(i & mask) as usize], 3) {
                        acc ^= *node;
                    }
                    black_box(acc);
                })
            })
        });
        group.bench_function(BenchmarkId::new("ring-zoned", nodes), |b| {
            b.iter_custom(|iters| {
                time_per_op(iters, |i| {
                    // Consumed in place: no Vec, no allocation.
                    let mut acc = 0u64;
                    for node in ring.preference_list_zoned(&keys[(i & mask) as usize], 3) {
                        acc ^= *node;
                    }
                    black_box(acc);
                })
            })
        });
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("hashring/build");
    group.sample_size(10);
    support::fast_mode(&mut group);
    for nodes in NODE_COUNTS {
        let m = membership(nodes);
        group.bench_function(BenchmarkId::new("ring", nodes), |b| {
            b.iter(|| Ring::from_membership(black_box(&m)).unwrap())
        });
        let size = Maglev::<u64>::recommended_table_size(nodes);
        group.bench_function(BenchmarkId::new("maglev", nodes), |b| {
            b.iter(|| Maglev::from_membership(black_box(&m), size).unwrap())
        });
    }
    group.finish();
}

fn incremental(c: &mut Criterion) {
    let mut group = c.benchmark_group("hashring/add_remove");
    support::fast_mode(&mut group);
    for nodes in NODE_COUNTS {
        let mut ring = Ring::from_membership(&membership(nodes)).unwrap();
        let extra = u64::MAX;
        // One add and one remove of a 160-vnode node: 320 tree operations, no index rebuild.
        group.bench_function(BenchmarkId::new("ring", nodes), |b| {
            b.iter(|| {
                ring.add(Member::new(extra)).unwrap();
                ring.remove(&extra).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, preference_list, build, incremental);
criterion_main!(benches);
