//! Criterion suite: the two implementations of the workspace codec, bincode and postcard,
//! encoding and decoding a small message (a protocol's typical vote or acknowledgement) and a
//! large one (a batch of log entries).
//!
//! `BENCH_FAST=1` shortens measurement for a quick pass by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use common::codec::{Bincode, Codec, Postcard};
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use serde::{Deserialize, Serialize};

/// A log entry as replication messages carry them: term, index and a 16-byte command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Entry {
    term: u64,
    index: u64,
    command: Vec<u8>,
}

/// A replication message: small with no entries (a heartbeat or vote), large with many.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Append {
    term: u64,
    leader: u64,
    prev_index: u64,
    prev_term: u64,
    commit: u64,
    entries: Vec<Entry>,
}

fn message(entries: usize) -> Append {
    Append {
        term: 7,
        leader: 2,
        prev_index: 1_000_000,
        prev_term: 6,
        commit: 999_990,
        entries: (0..entries as u64)
            .map(|i| Entry {
                term: 7,
                index: 1_000_001 + i,
                command: (0..16).map(|b| (b as u64 * 31 + i) as u8).collect(),
            })
            .collect(),
    }
}

/// The two sizes: a message without entries and one with 1000 entries.
const SIZES: [(&str, usize); 2] = [("small", 0), ("large", 1000)];

/// Which half of the codec a group measures.
#[derive(Clone, Copy)]
enum Direction {
    Encode,
    Decode,
}

fn bench_codec<C: Codec>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    direction: Direction,
    codec: C,
) {
    for (size, entries) in SIZES {
        let msg = message(entries);
        let bytes = codec.encode(&msg).unwrap();
        assert_eq!(codec.decode::<Append>(&bytes).unwrap(), msg);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let id = BenchmarkId::new(C::NAME, size);
        match direction {
            Direction::Encode => group.bench_with_input(id, &msg, |b, msg| {
                let mut buf = Vec::with_capacity(bytes.len());
                b.iter(|| {
                    buf.clear();
                    codec.encode_into(msg, &mut buf).unwrap();
                    buf.len()
                });
            }),
            Direction::Decode => group.bench_with_input(id, &bytes, |b, bytes| {
                b.iter(|| codec.decode::<Append>(bytes).unwrap());
            }),
        };
    }
}

fn codec(c: &mut Criterion) {
    for (name, direction) in [
        ("codec/encode", Direction::Encode),
        ("codec/decode", Direction::Decode),
    ] {
        let mut group = c.benchmark_group(name);
        support::fast_mode(&mut group);
        bench_codec(&mut group, direction, Bincode);
        bench_codec(&mut group, direction, Postcard);
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
