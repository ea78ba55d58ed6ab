//! Fuzz targets for what a Raft node reads from the network: message payloads and the
//! membership they carry. Whatever a peer sends (a forged term, an impossible index, an
//! unknown sender), a node decodes it with the codec's limits and handles it without
//! panicking; the guarantee the crate documents as "bad input is rejected, logged and
//! counted, never a panic".
//!
//! Run by `cargo test` with `bolero`: the random inputs of the normal run, or `FUZZ_SECS=n`
//! seconds each; `cargo bolero test` drives the same targets with coverage-guided engines.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use common::codec::{Bincode, Codec};
use common::Node as _;
use raft::kv::{KvCommand, KvStore};
use raft::testing::Cluster;
use std::collections::BTreeSet;

use raft::message::{Membership, SnapshotMeta};
use raft::{Entry, Message, Payload, Role};

/// Random inputs per target in the normal test run.
const ITERATIONS: usize = 2_000;
/// Longest random input.
const INPUT_BYTES_MAX: usize = 512;

/// Three nodes with node 1 elected (bounded: the harness has no faults set).
fn elected() -> Cluster<KvStore> {
    let mut c: Cluster<KvStore> = Cluster::new(3, 7);
    for _ in 0..500 {
        if c.running().any(|n| n.role() == Role::Leader) {
            return c;
        }
        c.tick_all();
        c.deliver_all(1_000);
    }
    panic!("no leader in the harness");
}

/// Feeds `message` from a member to the leader and to a follower, and from a stranger, then
/// lets the cluster run: no panic, and never two leaders in one term.
fn survive(message: Message<KvCommand>) {
    let mut c = elected();
    let leader = c
        .running()
        .find(|n| n.role() == Role::Leader)
        .map(|n| n.id())
        .unwrap();
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    c.inject(follower, leader, message.clone());
    c.inject(leader, follower, message.clone());
    c.inject(99, leader, message);
    for _ in 0..20 {
        c.deliver_all(1_000);
        c.tick_all();
    }
    let mut terms: Vec<_> = c
        .running()
        .filter(|n| n.role() == Role::Leader)
        .map(|n| n.term())
        .collect();
    let leaders = terms.len();
    terms.dedup();
    assert_eq!(terms.len(), leaders, "two leaders in one term");
}

/// Random payload bytes, decoded as the driver would (a prefix suffices).
#[test]
fn message_payloads_never_panic_a_node() {
    common::fuzz_bytes!(INPUT_BYTES_MAX, ITERATIONS, |bytes: &Vec<u8>| {
        // A prefix is enough: random tails would otherwise fail every decode as trailing bytes.
        if let Ok((message, _)) = Bincode.decode_prefix::<Message<KvCommand>>(bytes) {
            survive(message);
        }
    });
}

/// Well-formed messages with arbitrary fields: terms and indexes near the cluster's (small)
/// and far from them, entries with any terms and indexes, snapshot chunks at any offset.
/// Random bytes rarely decode (an enum tag must be in range), so this reaches the handlers.
#[test]
fn arbitrary_well_formed_messages_never_panic_a_node() {
    let target =
        common::fuzz::bolero::check!().with_type::<(u8, u64, u64, u64, u8, Vec<(u64, u64)>)>();
    let target = match common::fuzz::fuzz_secs() {
        Some(secs) => target.with_test_time(secs),
        None => target.with_iterations(ITERATIONS),
    };
    target.for_each(
        |(kind, a, b, c, flags, entries): &(u8, u64, u64, u64, u8, Vec<(u64, u64)>)| {
            // Low flag bits fold the numbers into the cluster's range, so they are not all absurd.
            let near = |v: u64, bit: u8| if flags & (1 << bit) != 0 { v % 8 } else { v };
            let (a, b, c) = (near(*a, 0), near(*b, 1), near(*c, 2));
            let flag = flags & 0x80 != 0;
            let entries = arbitrary_entries(entries, &near);
            survive(arbitrary_message(*kind, (a, b, c), flag, entries, &near));
        },
    );
}

/// Up to 16 entries from raw `(term, index)` pairs, folded into range by `near`, with every
/// kind of payload.
fn arbitrary_entries(raw: &[(u64, u64)], near: &dyn Fn(u64, u8) -> u64) -> Vec<Entry<KvCommand>> {
    raw.iter()
        .take(16)
        .enumerate()
        .map(|(i, &(t, x))| Entry {
            term: near(t, 3),
            index: near(x, 4),
            payload: match i % 3 {
                0 => Payload::Noop,
                1 => Payload::Command(KvCommand::Put {
                    key: format!("k{x}"),
                    value: "v".into(),
                }),
                _ => Payload::Membership(Box::new(Membership {
                    voters: (1..=(x % 5)).collect(),
                    learners: BTreeSet::new(),
                    voters_outgoing: None,
                })),
            },
        })
        .collect()
}

/// A message of each kind (`kind % 10`), its fields taken from `a`, `b`, `c` and `flag`.
fn arbitrary_message(
    kind: u8,
    (a, b, c): (u64, u64, u64),
    flag: bool,
    entries: Vec<Entry<KvCommand>>,
    near: &dyn Fn(u64, u8) -> u64,
) -> Message<KvCommand> {
    match kind % 10 {
        0 => Message::PreVote {
            term: a,
            last_log_index: b,
            last_log_term: c,
        },
        1 => Message::PreVoteResponse {
            term: a,
            granted: flag,
        },
        2 => Message::RequestVote {
            term: a,
            last_log_index: b,
            last_log_term: c,
            transfer: flag,
        },
        3 => Message::RequestVoteResponse {
            term: a,
            granted: flag,
        },
        4 => Message::AppendEntries {
            term: a,
            prev_log_index: b,
            prev_log_term: c,
            entries: entries.into(),
            leader_commit: near(b.wrapping_add(c), 5),
            read_seq: c,
        },
        5 => Message::AppendEntriesResponse {
            term: a,
            success: flag,
            index: b,
            conflict: (c % 2 == 0).then_some((c, b)),
            last_log_index: c,
            read_seq: b,
        },
        6 => Message::InstallSnapshot {
            term: a,
            meta: Box::new(SnapshotMeta {
                index: b,
                term: c,
                bytes: near(b.wrapping_mul(3), 6),
                crc32c: a as u32,
                membership: Membership {
                    voters: (1..=3).collect(),
                    learners: BTreeSet::new(),
                    voters_outgoing: None,
                },
            }),
            offset: near(c, 7),
            data: vec![0; (c % 64) as usize],
            done: flag,
        },
        7 => Message::InstallSnapshotResponse {
            term: a,
            index: b,
            next_offset: c,
            done: flag,
        },
        _ => Message::TimeoutNow { term: a },
    }
}

#[test]
fn membership_decoding_never_panics() {
    common::fuzz_bytes!(INPUT_BYTES_MAX, ITERATIONS, |bytes: &Vec<u8>| {
        if let Ok((m, _)) = Bincode.decode_prefix::<Membership>(bytes) {
            let again = Bincode.encode(&m).unwrap();
            assert_eq!(Bincode.decode::<Membership>(&again).unwrap(), m);
        }
    });
}
