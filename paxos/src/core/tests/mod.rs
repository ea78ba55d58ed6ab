//! Unit tests of each role, asserting the exact effects of each step: the hand-run network
//! and helpers shared by every test module (the snapshot tests' included), then one module per
//! role.

use std::collections::{BTreeMap, VecDeque};

use common::{Node, Outbox, Persist, RequestId};

use super::*;
use crate::error::PaxosError;
use crate::message::{Command, Message, PromisedEntry, Session};
use crate::state_machine::{KvCommand, KvOutput, KvStore};

mod acceptor;
mod election;
mod learner;
mod proposer;
mod reconfig;
mod snapshot;

type R = PaxosNode<KvStore>;
type M = Message<KvCommand>;

/// A message in flight: (from, to, message).
pub(super) type Flight = (NodeId, NodeId, M);

/// A hand-run network between a few replicas of a test.
#[derive(Default)]
pub(super) struct Net {
    pub queue: VecDeque<Flight>,
    /// What each replica asked to persist, in order.
    pub records: BTreeMap<NodeId, Vec<Persist<Record<KvCommand>>>>,
    /// Snapshot chunks delivered.
    pub chunks: usize,
}

impl Net {
    /// Takes the effects of a step of replica `from`: records kept, messages queued.
    pub fn collect(&mut self, from: NodeId, out: &mut Outbox<R>) {
        let e = out.take();
        self.records.entry(from).or_default().extend(e.records);
        self.queue
            .extend(e.messages.into_iter().map(|(to, m)| (from, to, m)));
    }

    /// Delivers messages in queue order, each through `fault` (which returns what arrives in
    /// its place, and may push it back to the queue's end to reorder it), until nothing is
    /// delivered for many ticks. When the queue is empty, the catch-up and transfer timers of
    /// every replica run (no election: the test decides who leads). Messages to replicas not
    /// in `nodes` are lost.
    pub fn run(
        &mut self,
        nodes: &mut [&mut R],
        fault: &mut dyn FnMut(Flight, &mut VecDeque<Flight>) -> Vec<Flight>,
    ) {
        let mut out = Outbox::new();
        let mut quiet = 0;
        for _ in 0..1_000_000 {
            let Some(flight) = self.queue.pop_front() else {
                quiet += 1;
                if quiet > 100 {
                    return;
                }
                for n in nodes.iter_mut() {
                    n.learner_tick(&mut out);
                    n.transfer_tick(&mut out);
                    let id = n.id();
                    self.collect(id, &mut out);
                }
                continue;
            };
            for (from, to, m) in fault(flight, &mut self.queue) {
                if let Some(n) = nodes.iter_mut().find(|n| n.id() == to) {
                    quiet = 0;
                    self.chunks += usize::from(matches!(m, M::SnapshotChunk { .. }));
                    n.handle_message(from, m, &mut out);
                    self.collect(to, &mut out);
                }
            }
        }
        panic!("the network never went quiet");
    }
}

/// Delivers every message as it is.
pub(super) fn perfect(f: Flight, _: &mut VecDeque<Flight>) -> Vec<Flight> {
    vec![f]
}

pub(super) fn replica(id: NodeId) -> R {
    R::recover(Config::new(id, vec![1, 2, 3]).into(), vec![]).unwrap()
}

pub(super) fn put(k: &str, v: &str) -> KvCommand {
    KvCommand::Put {
        key: k.into(),
        value: v.into(),
    }
}

fn batch(origin: Ballot, cmds: &[KvCommand]) -> Value<KvCommand> {
    Value::Batch {
        origin,
        commands: cmds
            .iter()
            .map(|c| Command {
                session: None,
                payload: c.clone(),
            })
            .collect(),
    }
}

/// Makes replica 1 the leader of {1, 2, 3} with ballot (1, 1), promises from 2 and 3 empty.
fn leader() -> (R, Ballot) {
    leader_with(Config::new(1, vec![1, 2, 3]))
}

/// [`leader`] with replica 1 configured by `cfg`.
fn leader_with(cfg: Config) -> (R, Ballot) {
    let mut a = R::recover(cfg.into(), vec![]).unwrap();
    let b = Ballot::new(1, 1);
    let mut out = Outbox::new();
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    let e = out.take();
    assert_eq!(e.records, vec![Persist::Append(Record::Promise(b))]);
    assert!(e.messages.iter().all(|(_, m)| *m
        == M::Prepare {
            ballot: b,
            from_slot: 0
        }));
    a.handle_message(
        2,
        M::Promise {
            ballot: b,
            decided: 0,
            accepted: vec![],
        },
        &mut out,
    );
    assert!(a.is_leader());
    (a, b)
}

/// The digest of `data`, as a sender would announce it.
pub(super) fn digest_of(data: &[u8]) -> common::snapshot::SnapshotDigest {
    let store = common::snapshot::MemSnapshotStore::new();
    let mut w = common::snapshot::SnapshotWriter::create(&store, u64::MAX).unwrap();
    w.append(data).unwrap();
    w.finish().unwrap().into()
}

fn stop_sign(epoch: u64, members: &[NodeId]) -> Value<KvCommand> {
    Value::StopSign {
        epoch,
        members: members.to_vec(),
    }
}
