//! Unit tests of snapshot files, chunked catch-up, recovery from snapshots, retention and the
//! state-machine seam (batches, durable state machines).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use common::codec::{Bincode, Codec};
use common::snapshot::{MemSnapshotStore, SnapshotWriter};
use common::state_machine::{read_frame, write_frame, FRAME_BYTES_MAX};
use common::{DetRng, Node, Outbox, Persist, RequestId, Setup, StateMachineError};

use super::tests::{digest_of, perfect, put, replica, Flight, Net};
use super::*;
use crate::error::PaxosError;
use crate::message::{Command, Message, Session};
use crate::state_machine::{Dedup, KvCommand, KvStore};
use common::snapshot::SnapshotStore;

mod apply;
mod recovery;
mod transfer;

type R = PaxosNode<KvStore>;
type M = Message<KvCommand>;

/// Replica 1 of {1, 2, 3}, built from `setup` over `store`, made leader with ballot (1, 1) by
/// acceptor 2's empty promise.
fn lead<S: StateMachine>(
    setup: Setup<Config, S>,
    store: &MemSnapshotStore,
) -> (PaxosNode<S>, Ballot) {
    let mut a =
        PaxosNode::<S>::recover_with_snapshots(setup, vec![], Arc::new(store.clone())).unwrap();
    let b = Ballot::new(1, 1);
    let mut out = Outbox::new();
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    let promise = Message::Promise {
        ballot: b,
        decided: 0,
        accepted: vec![],
    };
    a.handle_message(2, promise, &mut out);
    assert!(a.is_leader());
    (a, b)
}

/// Has leader `a` (ballot `b`) decide `commands`, one slot each, with acceptor 2's help.
/// Returns every record it asked for.
fn decide<S: StateMachine>(
    a: &mut PaxosNode<S>,
    b: Ballot,
    commands: Vec<(S::Command, Option<Session>)>,
) -> Vec<Persist<Record<S::Command>>> {
    let mut out = Outbox::new();
    let mut records = Vec::new();
    for (command, session) in commands {
        let slot = a.proposer.leader.as_ref().map(|l| l.next_slot).unwrap();
        let request = Request::Propose { command, session };
        a.handle_request(RequestId(100 + slot), request, &mut out);
        let accepted = Message::Accepted {
            ballot: b,
            slot,
            count: 1,
        };
        a.handle_message(2, accepted, &mut out);
        assert_eq!(a.decided(), slot + 1);
        records.extend(out.take().records);
    }
    // The decided prefix, which would otherwise wait for the next record or tick.
    a.shared.log_commit(&mut out);
    records.extend(out.take().records);
    records
}

/// What storage holds after `records`: the last checkpoint and everything after it.
fn stored<C: Clone>(records: &[Persist<Record<C>>]) -> Vec<Record<C>> {
    let from = records.iter().rposition(|r| r.is_checkpoint()).unwrap_or(0);
    records[from..].iter().map(|r| r.record().clone()).collect()
}

/// A KV leader (replica 1) over `store` that decided `puts` puts of `value_bytes` bytes each
/// (client 1, one session each) and took a snapshot of all of them; `tweak` configures it.
fn kv_leader(
    store: &MemSnapshotStore,
    puts: u64,
    value_bytes: usize,
    tweak: impl FnOnce(&mut Config),
) -> (R, Ballot, Vec<Persist<Record<KvCommand>>>) {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = puts;
    tweak(&mut cfg);
    let (mut a, b) = lead(cfg.into(), store);
    let commands = (0..puts)
        .map(|i| {
            let value = format!("{i}{}", "v".repeat(value_bytes));
            let session = Session {
                client: 1,
                seq: i + 1,
            };
            (put(&format!("k{i}"), &value), Some(session))
        })
        .collect();
    let records = decide(&mut a, b, commands);
    assert_eq!(a.log_start(), puts, "the leader compacted its log");
    (a, b, records)
}

/// Replica 3 learns from leader `a` that slots below `commit` are chosen, and asks it for them.
fn behind(a: &R, b: Ballot, net: &mut Net) -> R {
    let mut c = replica(3);
    let mut out = Outbox::new();
    let commit = M::Commit {
        ballot: b,
        commit: a.decided(),
    };
    c.handle_message(1, commit, &mut out);
    net.collect(3, &mut out);
    assert!(matches!(
        net.queue.front(),
        Some((3, 1, M::CatchUpRequest { from_slot: 0 }))
    ));
    c
}

/// Chunks the file of `a`'s latest snapshot takes at `a`'s chunk size.
fn chunks_of(a: &R) -> u64 {
    let bytes = a.snapshots.latest.as_ref().map(|l| l.file.bytes).unwrap();
    bytes.div_ceil(a.shared.config.snapshot_chunk_bytes_max as u64)
}
