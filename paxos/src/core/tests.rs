//! Unit tests of each role, asserting the exact effects of each step.

use std::collections::VecDeque;

use common::{Node, Outbox, Persist, RequestId};

use super::*;
use crate::message::{Command, PromisedEntry};
use crate::state_machine::{KvCommand, KvOutput, KvStore};

type R = Replica<KvStore>;
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

#[test]
fn acceptor_promises_durably_and_reports_highest_accepted() {
    let mut b = replica(2);
    let mut out = Outbox::new();
    let b1 = Ballot::new(1, 1);
    let v = batch(b1, &[put("x", "1")]);
    b.handle_message(
        1,
        M::Accept {
            ballot: b1,
            slot: 0,
            values: vec![v.clone()],
            commit: 0,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(
        e.records,
        vec![
            Persist::Append(Record::Promise(b1)),
            Persist::Append(Record::Accept {
                ballot: b1,
                slot: 0,
                values: vec![v.clone()]
            })
        ]
    );
    assert_eq!(
        e.messages,
        vec![(
            1,
            M::Accepted {
                ballot: b1,
                slot: 0,
                count: 1
            }
        )]
    );
    // A higher prepare: promise it, and report slot 0 accepted under b1.
    let b2 = Ballot::new(2, 3);
    b.handle_message(
        3,
        M::Prepare {
            ballot: b2,
            from_slot: 0,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(e.records, vec![Persist::Append(Record::Promise(b2))]);
    assert_eq!(
        e.messages,
        vec![(
            3,
            M::Promise {
                ballot: b2,
                decided: 0,
                accepted: vec![PromisedEntry {
                    slot: 0,
                    ballot: b1,
                    value: v
                }]
            }
        )]
    );
    // Now an accept under the lower b1 is refused, naming the promise; nothing is persisted.
    b.handle_message(
        1,
        M::Accept {
            ballot: b1,
            slot: 1,
            values: vec![Value::Noop],
            commit: 0,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.records.is_empty());
    assert_eq!(
        e.messages,
        vec![(
            1,
            M::Nack {
                ballot: b1,
                promised: b2
            }
        )]
    );
    // And so is a prepare below the promise.
    b.handle_message(
        1,
        M::Prepare {
            ballot: b1,
            from_slot: 0,
        },
        &mut out,
    );
    assert_eq!(
        out.take().messages,
        vec![(
            1,
            M::Nack {
                ballot: b1,
                promised: b2
            }
        )]
    );
    assert_eq!(b.metrics().promised, b2);
    assert_eq!(b.metrics().stale, 2);
}

#[test]
fn bad_input_is_rejected_counted_and_leaves_the_promise_alone() {
    let mut b = replica(2);
    let mut out = Outbox::new();
    // Unknown sender.
    b.handle_message(
        9,
        M::Prepare {
            ballot: Ballot::new(5, 9),
            from_slot: 0,
        },
        &mut out,
    );
    // A ballot owned by someone other than the sender.
    b.handle_message(
        1,
        M::Prepare {
            ballot: Ballot::new(5, 3),
            from_slot: 0,
        },
        &mut out,
    );
    // Round 0 is not a real ballot.
    b.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(0, 1),
            slot: 0,
            values: vec![Value::Noop],
            commit: 0,
        },
        &mut out,
    );
    // A slot far outside the window.
    b.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(5, 1),
            slot: 1 << 40,
            values: vec![Value::Noop],
            commit: 0,
        },
        &mut out,
    );
    // An overflowing slot range.
    b.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(5, 1),
            slot: u64::MAX,
            values: vec![Value::Noop, Value::Noop],
            commit: 0,
        },
        &mut out,
    );
    // An empty accept.
    b.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(5, 1),
            slot: 0,
            values: vec![],
            commit: 0,
        },
        &mut out,
    );
    // An oversized catch-up.
    b.handle_message(
        1,
        M::CatchUp {
            from_slot: 0,
            values: vec![Value::Noop; 10_000],
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.records.is_empty(), "no durable change: {:?}", e.records);
    assert_eq!(b.metrics().promised, Ballot::ZERO);
    assert_eq!(b.metrics().rejected, 7);
    assert_eq!(b.decided(), 0);
}

#[test]
fn phase1_reproposes_highest_ballot_values_and_fills_holes_with_noops() {
    let mut a = replica(1);
    let mut out = Outbox::new();
    let b = Ballot::new(3, 1);
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    out.take();
    let old = Ballot::new(1, 2);
    let newer = Ballot::new(2, 3);
    let v_old = batch(old, &[put("a", "old")]);
    let v_new = batch(newer, &[put("a", "new")]);
    let v2 = batch(old, &[put("b", "2")]);
    // Acceptor 2 reports slot 0 under `old` and slot 3 under `old`; acceptor 3 is not needed:
    // the leader itself and acceptor 2 form a majority.
    a.handle_message(
        2,
        M::Promise {
            ballot: b,
            decided: 0,
            accepted: vec![
                PromisedEntry {
                    slot: 0,
                    ballot: old,
                    value: v_old.clone(),
                },
                PromisedEntry {
                    slot: 3,
                    ballot: old,
                    value: v2.clone(),
                },
            ],
        },
        &mut out,
    );
    assert!(a.is_leader());
    let e = out.take();
    let sent: Vec<_> = e.messages.iter().filter(|(to, _)| *to == 2).collect();
    assert_eq!(
        sent,
        vec![&(
            2,
            M::Accept {
                ballot: b,
                slot: 0,
                values: vec![v_old.clone(), Value::Noop, Value::Noop, v2.clone()],
                commit: 0
            }
        )]
    );
    // With a higher-ballot value from another promise, that one wins (fresh leader).
    let mut a = replica(1);
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    for (from, entry) in [(2, (old, v_old.clone())), (3, (newer, v_new.clone()))] {
        a.handle_message(
            from,
            M::Promise {
                ballot: b,
                decided: 0,
                accepted: vec![PromisedEntry {
                    slot: 0,
                    ballot: entry.0,
                    value: entry.1,
                }],
            },
            &mut out,
        );
    }
    let e = out.take();
    let accept = e
        .messages
        .iter()
        .find_map(|(_, m)| match m {
            M::Accept { values, .. } => Some(values.clone()),
            _ => None,
        })
        .unwrap();
    // Only acceptor 2's promise was needed for the majority; 3's came after phase 1 ended.
    assert_eq!(accept, vec![v_old]);
}

#[test]
fn stable_leader_runs_only_phase2_per_command_and_answers_when_applied() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    out.take();
    a.handle_request(
        RequestId(7),
        Request::Propose {
            command: put("k", "v"),
            session: None,
        },
        &mut out,
    );
    let e = out.take();
    let v = batch(b, &[put("k", "v")]);
    assert_eq!(
        e.records,
        vec![Persist::Append(Record::Accept {
            ballot: b,
            slot: 0,
            values: vec![v.clone()]
        })]
    );
    let accept = M::Accept {
        ballot: b,
        slot: 0,
        values: vec![v],
        commit: 0,
    };
    assert_eq!(e.messages, vec![(2, accept.clone()), (3, accept)]);
    assert!(e.responses.is_empty());
    a.handle_message(
        3,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 1,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(
        e.records,
        vec![Persist::Append(Record::Commit { decided: 1 })]
    );
    assert_eq!(
        e.responses,
        vec![(
            RequestId(7),
            Response::Applied {
                slot: 0,
                output: KvOutput::Value(None)
            }
        )]
    );
    // The idle commit goes out on the next tick.
    a.tick(&mut out);
    let e = out.take();
    assert!(e.messages.contains(&(
        2,
        M::Commit {
            ballot: b,
            commit: 1
        }
    )));
}

/// With `parallel_accept`, the leader's Accepts leave before its own acceptance is durable, and
/// that acceptance counts towards a majority only once the driver reports it durable (the rule
/// of Raft's §10.2.1 applied to phase 2).
#[test]
fn a_parallel_accept_goes_out_at_once_and_counts_the_leader_once_durable() {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.parallel_accept = true;
    let (mut a, b) = leader_with(cfg);
    let mut out = Outbox::new();
    // The promise of the election is durable.
    a.records_durable(u64::MAX, &mut out);
    out.take();
    a.handle_request(
        RequestId(7),
        Request::Propose {
            command: put("k", "v"),
            session: None,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(e.records.len(), 1, "its own acceptance, to be written");
    assert!(e.messages.is_empty(), "nothing waits for the sync");
    let early: Vec<NodeId> = e
        .early
        .iter()
        .map(|(to, m)| {
            assert!(matches!(m, M::Accept { slot: 0, .. }), "{m:?}");
            *to
        })
        .collect();
    assert_eq!(early, vec![2, 3]);
    // One acceptor accepted durably; the leader's own acceptance is not durable yet.
    a.handle_message(
        3,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 1,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.responses.is_empty() && e.early_responses.is_empty());
    assert_eq!(a.decided(), 0);
    // Its write is synced: two of three, chosen, applied and answered at once.
    a.records_durable(u64::MAX, &mut out);
    let e = out.take();
    assert_eq!(a.decided(), 1);
    assert!(e.responses.is_empty());
    assert_eq!(
        e.early_responses,
        vec![(
            RequestId(7),
            Response::Applied {
                slot: 0,
                output: KvOutput::Value(None)
            }
        )]
    );
}

#[test]
fn pipeline_is_bounded_and_backlog_is_batched() {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.in_flight_slots_max = 2;
    cfg.eager_slots_max = 2;
    let (mut a, b) = leader_with(cfg);
    let mut out = Outbox::new();
    for i in 0..5 {
        a.handle_request(
            RequestId(i),
            Request::Propose {
                command: put("k", &i.to_string()),
                session: None,
            },
            &mut out,
        );
    }
    assert_eq!(a.metrics().in_flight, 2);
    assert_eq!(a.metrics().queued, 3);
    out.take();
    a.handle_message(
        2,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 2,
        },
        &mut out,
    );
    let e = out.take();
    // Both slots chosen; the three queued commands go out as one batch in slot 2.
    assert_eq!(e.responses.len(), 2);
    let batched = e.messages.iter().find_map(|(_, m)| match m {
        M::Accept { slot, values, .. } => Some((*slot, values[0].commands_len(), values.len())),
        _ => None,
    });
    assert_eq!(batched, Some((2, 3, 1)));
}

/// With the default `eager_slots_max` of one, a command arriving while a slot is in flight
/// waits; when that slot is chosen, everything that waited goes out in one slot (one Accept per
/// acceptor), and a lone command still goes out at once.
#[test]
fn commands_arriving_under_load_share_the_next_slot() {
    let cfg = Config::new(1, vec![1, 2, 3]);
    assert_eq!(cfg.eager_slots_max, 1);
    let (mut a, b) = leader_with(cfg);
    let mut out = Outbox::new();
    let propose = |a: &mut R, i: u64, out: &mut Outbox<R>| {
        a.handle_request(
            RequestId(i),
            Request::Propose {
                command: put("k", &i.to_string()),
                session: None,
            },
            out,
        )
    };
    // The first command goes out at once, alone in slot 0.
    propose(&mut a, 0, &mut out);
    let e = out.take();
    let accepts: Vec<_> = e
        .messages
        .iter()
        .filter_map(|(to, m)| match m {
            M::Accept { slot, values, .. } => Some((*to, *slot, values.len())),
            _ => None,
        })
        .collect();
    assert_eq!(accepts, vec![(2, 0, 1), (3, 0, 1)]);
    // Four more while slot 0 is in flight: they wait, nothing is sent.
    for i in 1..5 {
        propose(&mut a, i, &mut out);
    }
    let e = out.take();
    assert!(e.messages.is_empty(), "{:?}", e.messages);
    assert_eq!(a.metrics().in_flight, 1);
    assert_eq!(a.metrics().queued, 4);
    // Slot 0 is chosen: its client is answered and the four share slot 1.
    a.handle_message(
        2,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 1,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(e.responses.len(), 1);
    let batched: Vec<_> = e
        .messages
        .iter()
        .filter_map(|(to, m)| match m {
            M::Accept { slot, values, .. } => {
                Some((*to, *slot, values.len(), values[0].commands_len()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(batched, vec![(2, 1, 1, 4), (3, 1, 1, 4)]);
    assert_eq!(a.metrics().queued, 0);
}

#[test]
fn learner_decides_matching_ballot_and_catches_up_the_rest() {
    let mut c = replica(3);
    let mut out = Outbox::new();
    let b = Ballot::new(2, 1);
    let v0 = batch(Ballot::new(1, 1), &[put("a", "1")]);
    let v1 = batch(b, &[put("a", "2")]);
    // Slot 1 accepted under b, slot 0 never received.
    c.handle_message(
        1,
        M::Accept {
            ballot: b,
            slot: 1,
            values: vec![v1.clone()],
            commit: 0,
        },
        &mut out,
    );
    out.take();
    c.handle_message(
        1,
        M::Commit {
            ballot: b,
            commit: 2,
        },
        &mut out,
    );
    let e = out.take();
    assert!(
        e.records.is_empty(),
        "slot 0 is unknown: nothing decided yet"
    );
    assert_eq!(e.messages, vec![(1, M::CatchUpRequest { from_slot: 0 })]);
    c.handle_message(
        1,
        M::CatchUp {
            from_slot: 0,
            values: vec![v0.clone(), v1.clone()],
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(
        e.records,
        vec![Persist::Append(Record::Learn {
            from_slot: 0,
            values: vec![v0, v1]
        })]
    );
    assert_eq!(c.decided(), 2);
    assert_eq!(c.metrics().applied, 2);
    assert_eq!(c.state().get("a"), Some("2"));
}

#[test]
fn retried_command_is_applied_once() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    let session = Some(Session { client: 5, seq: 1 });
    let append = KvCommand::Append {
        key: "k".into(),
        value: "x".into(),
    };
    for id in [1, 2] {
        a.handle_request(
            RequestId(id),
            Request::Propose {
                command: append.clone(),
                session,
            },
            &mut out,
        );
    }
    let e = out.take();
    // The retry arrived while the first copy was in flight: it takes no second slot.
    let accepts: Vec<_> = e
        .messages
        .iter()
        .filter(|(to, m)| *to == 2 && matches!(m, M::Accept { .. }))
        .collect();
    assert_eq!(accepts.len(), 1);
    assert_eq!(a.metrics().in_flight, 1);
    assert_eq!(a.metrics().retries_attached, 1);
    a.handle_message(
        2,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 1,
        },
        &mut out,
    );
    let e = out.take();
    // Both requests are answered by the one application.
    let applied = Response::Applied {
        slot: 0,
        output: KvOutput::Value(Some(String::new())),
    };
    assert_eq!(
        e.responses,
        vec![(RequestId(2), applied.clone()), (RequestId(1), applied)]
    );
    assert_eq!(a.state().get("k"), Some("x"));
    assert_eq!(a.metrics().duplicates, 0);
    // A third retry is answered from the session table without a slot.
    a.handle_request(
        RequestId(3),
        Request::Propose {
            command: append,
            session,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.messages.is_empty());
    assert_eq!(
        e.responses,
        vec![(
            RequestId(3),
            Response::Applied {
                slot: 1,
                output: KvOutput::Value(Some(String::new()))
            }
        )]
    );
}

#[test]
fn retry_of_a_command_found_in_phase1_attaches_to_its_slot() {
    let mut a = replica(1);
    let mut out = Outbox::new();
    let b = Ballot::new(3, 1);
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    // Phase 1 finds a copy of the client's command accepted under an older ballot (its leader
    // lost leadership before answering).
    let session = Some(Session { client: 8, seq: 4 });
    let old = Ballot::new(2, 2);
    let copy = Value::Batch {
        origin: old,
        commands: vec![Command {
            session,
            payload: put("a", "1"),
        }],
    };
    a.handle_message(
        2,
        M::Promise {
            ballot: b,
            decided: 0,
            accepted: vec![PromisedEntry {
                slot: 0,
                ballot: old,
                value: copy.clone(),
            }],
        },
        &mut out,
    );
    assert!(a.is_leader());
    out.take();
    // The retry reaches the new leader: it attaches to slot 0 instead of taking slot 1.
    a.handle_request(
        RequestId(9),
        Request::Propose {
            command: put("a", "1"),
            session,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.messages.is_empty(), "{:?}", e.messages);
    assert_eq!(a.metrics().in_flight, 1);
    a.handle_message(
        3,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 1,
        },
        &mut out,
    );
    assert_eq!(
        out.take().responses,
        vec![(
            RequestId(9),
            Response::Applied {
                slot: 0,
                output: KvOutput::Value(None)
            }
        )]
    );
    assert_eq!(a.decided_value(0), Some(&copy));
}

#[test]
fn new_leader_proposes_only_after_applying_what_was_chosen_before_it() {
    let mut a = replica(1);
    let mut out = Outbox::new();
    let b = Ballot::new(3, 1);
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    // Acceptor 2 decided slots 0 and 1 already; this leader knows neither.
    a.handle_message(
        2,
        M::Promise {
            ballot: b,
            decided: 2,
            accepted: vec![],
        },
        &mut out,
    );
    assert!(a.is_leader());
    out.take();
    let session = Some(Session { client: 8, seq: 1 });
    a.handle_request(
        RequestId(1),
        Request::Propose {
            command: put("a", "1"),
            session,
        },
        &mut out,
    );
    let e = out.take();
    assert!(
        !e.messages
            .iter()
            .any(|(_, m)| matches!(m, M::Accept { .. })),
        "no proposal before the chosen prefix is applied"
    );
    // It catches up: slot 1 holds the very same command (chosen under an older leader).
    let chosen = Value::Batch {
        origin: Ballot::new(2, 2),
        commands: vec![Command {
            session,
            payload: put("a", "1"),
        }],
    };
    a.handle_message(
        2,
        M::CatchUp {
            from_slot: 0,
            values: vec![Value::Noop, chosen],
        },
        &mut out,
    );
    let e = out.take();
    // Answered from the session table: the command is not proposed a second time.
    assert_eq!(
        e.responses,
        vec![(
            RequestId(1),
            Response::Applied {
                slot: 2,
                output: KvOutput::Value(None)
            }
        )]
    );
    assert!(!e
        .messages
        .iter()
        .any(|(_, m)| matches!(m, M::Accept { .. })));
}

#[test]
fn follower_refuses_proposals_and_reads_with_a_hint() {
    let mut c = replica(3);
    let mut out = Outbox::new();
    c.handle_message(
        1,
        M::Prepare {
            ballot: Ballot::new(1, 1),
            from_slot: 0,
        },
        &mut out,
    );
    out.take();
    c.handle_request(
        RequestId(1),
        Request::Propose {
            command: put("a", "b"),
            session: None,
        },
        &mut out,
    );
    c.handle_request(
        RequestId(2),
        Request::Read(crate::KvQuery::Get("a".into())),
        &mut out,
    );
    let e = out.take();
    assert_eq!(
        e.responses,
        vec![
            (
                RequestId(1),
                Response::Failed(Error::NotLeader { leader: Some(1) })
            ),
            (
                RequestId(2),
                Response::Failed(Error::NotLeader { leader: Some(1) })
            )
        ]
    );
}

#[test]
fn read_waits_for_a_quorum_round() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    out.take();
    a.handle_request(
        RequestId(1),
        Request::Read(crate::KvQuery::Get("a".into())),
        &mut out,
    );
    let e = out.take();
    assert!(e.responses.is_empty());
    let probe = M::ReadProbe {
        ballot: b,
        round: 1,
    };
    assert_eq!(e.messages, vec![(2, probe.clone()), (3, probe)]);
    // A stale round does nothing; the current one completes the quorum.
    a.handle_message(
        3,
        M::ReadAck {
            ballot: b,
            round: 0,
        },
        &mut out,
    );
    assert!(out.take().responses.is_empty());
    a.handle_message(
        3,
        M::ReadAck {
            ballot: b,
            round: 1,
        },
        &mut out,
    );
    assert_eq!(
        out.take().responses,
        vec![(RequestId(1), Response::Read(KvOutput::Value(None)))]
    );
}

#[test]
fn leader_steps_down_on_nack_and_fails_pending() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    a.handle_request(
        RequestId(1),
        Request::Propose {
            command: put("a", "b"),
            session: None,
        },
        &mut out,
    );
    out.take();
    a.handle_message(
        2,
        M::Nack {
            ballot: b,
            promised: Ballot::new(4, 3),
        },
        &mut out,
    );
    let e = out.take();
    assert!(!a.is_leader());
    assert_eq!(
        e.responses,
        vec![(RequestId(1), Response::Failed(Error::LeadershipLost))]
    );
    assert_eq!(a.metrics().leader, Some(3));
}

#[test]
fn recover_rebuilds_promise_log_and_state() {
    let b = Ballot::new(2, 1);
    let v = batch(b, &[put("a", "1")]);
    let records = vec![
        Record::Promise(b),
        Record::Accept {
            ballot: b,
            slot: 0,
            values: vec![v.clone(), Value::Noop],
        },
        Record::Commit { decided: 1 },
    ];
    let r = R::recover(Config::new(2, vec![1, 2, 3]).into(), records).unwrap();
    assert_eq!(r.metrics().promised, b);
    assert_eq!(r.decided(), 1);
    assert_eq!(r.state().get("a"), Some("1"));
    assert_eq!(r.decided_value(0), Some(&v));
    // A restarted replica's candidacy ballot is above anything it promised.
    assert!(r.election.ballot > b);
    // Contradictory records are refused.
    let bad = vec![Record::Commit { decided: 3 }];
    assert!(matches!(
        R::recover(Config::new(2, vec![1, 2, 3]).into(), bad),
        Err(Error::Corrupt(_))
    ));
}

#[test]
fn snapshot_checkpoints_compacts_and_serves_lagging_peers() {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = 2;
    cfg.eager_slots_max = 2;
    let (mut a, b) = leader_with(cfg);
    let mut out = Outbox::new();
    let session = Some(Session { client: 9, seq: 1 });
    a.handle_request(
        RequestId(1),
        Request::Propose {
            command: put("a", "1"),
            session,
        },
        &mut out,
    );
    a.handle_request(
        RequestId(2),
        Request::Propose {
            command: put("b", "2"),
            session: None,
        },
        &mut out,
    );
    out.take();
    a.handle_message(
        2,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 2,
        },
        &mut out,
    );
    let e = out.take();
    // Two applied slots reach the interval: a checkpoint, and the log is compacted.
    let checkpoint = e
        .records
        .iter()
        .find(|r| r.is_checkpoint())
        .map(|r| r.record().clone())
        .unwrap();
    assert!(matches!(
        checkpoint,
        Record::Snapshot {
            slot: 2,
            promised,
            decided: 2,
            ..
        } if promised == b
    ));
    assert_eq!(a.log_start(), 2);
    // A peer asking for slot 0 gets the snapshot file instead of values, in chunks.
    let mut net = Net::default();
    a.handle_message(3, M::CatchUpRequest { from_slot: 0 }, &mut out);
    net.collect(1, &mut out);
    assert!(matches!(
        net.queue.front(),
        Some((
            1,
            3,
            M::SnapshotChunk {
                slot: 2,
                offset: 0,
                ..
            }
        ))
    ));
    // The peer installs it: same state, same sessions (the retry is recognised), durably.
    let mut c = replica(3);
    net.run(&mut [&mut a, &mut c], &mut perfect);
    assert!(net.records[&3].iter().any(|r| r.is_checkpoint()));
    assert_eq!(c.state(), a.state());
    assert_eq!(c.metrics().snapshots_installed, 1);
    assert_eq!(c.decided(), 2);
    assert_eq!(
        c.sessions.check(Session { client: 9, seq: 1 }),
        crate::state_machine::Dedup::Duplicate(Some(KvOutput::Value(None)))
    );
    assert!(
        a.outgoing.is_empty(),
        "the sender heard the transfer is done"
    );
    // Recovery from the checkpoint and the snapshot store rebuilds the same replica.
    let cfg = || Config::new(1, vec![1, 2, 3]).into();
    let r =
        R::recover_with_snapshots(cfg(), vec![checkpoint.clone()], a.snapshots.clone()).unwrap();
    assert_eq!(r.state(), a.state());
    assert_eq!(r.metrics().promised, b);
    assert_eq!(r.metrics().sessions, 1);
    // Without the store that holds its file, the checkpoint does not recover.
    assert!(matches!(
        R::recover(cfg(), vec![checkpoint]),
        Err(Error::SnapshotMissing { slot: 2, .. })
    ));
}

/// The digest of `data`, as a sender would announce it.
pub(super) fn digest_of(data: &[u8]) -> common::snapshot::SnapshotDigest {
    let store = common::snapshot::MemSnapshotStore::new();
    let mut w = common::snapshot::SnapshotWriter::create(&store, u64::MAX).unwrap();
    w.append(data).unwrap();
    w.finish().unwrap().into()
}

#[test]
fn undecodable_snapshot_is_rejected_and_changes_nothing() {
    let mut c = replica(3);
    let mut out = Outbox::new();
    // A replica with some state of its own.
    let learned = M::CatchUp {
        from_slot: 0,
        values: vec![batch(Ballot::new(1, 1), &[put("a", "1")])],
    };
    c.handle_message(1, learned, &mut out);
    out.take();
    let before = c.state().clone();
    // Bytes that match their digest but are no snapshot.
    let data = vec![0xff; 3];
    c.handle_message(
        1,
        M::SnapshotChunk {
            slot: 5,
            digest: digest_of(&data),
            offset: 0,
            data,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.records.is_empty());
    assert_eq!(
        e.messages,
        vec![(
            1,
            M::SnapshotAck {
                slot: 5,
                next_offset: 3,
                done: true
            }
        )]
    );
    assert_eq!(c.metrics().rejected, 1);
    assert_eq!(c.metrics().snapshots_rejected, 1);
    assert_eq!((c.decided(), c.metrics().applied), (1, 1));
    assert_eq!(c.state(), &before);
    assert!(
        c.snapshots.list().unwrap().is_empty(),
        "the file is deleted"
    );
}

// ---- reconfiguration ----

fn stop_sign(epoch: u64, members: &[NodeId]) -> Value<KvCommand> {
    Value::StopSign {
        epoch,
        members: members.to_vec(),
    }
}

#[test]
fn stop_sign_ends_the_configuration_and_the_leader_carries_on_in_the_next() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    out.take();
    a.handle_request(
        RequestId(1),
        Request::Reconfigure {
            members: vec![1, 2, 4],
        },
        &mut out,
    );
    let e = out.take();
    let ss = stop_sign(1, &[1, 2, 4]);
    let accept = M::Accept {
        ballot: b,
        slot: 0,
        values: vec![ss.clone()],
        commit: 0,
    };
    assert_eq!(e.messages, vec![(2, accept.clone()), (3, accept)]);
    // A second change while one is in flight is refused; a command waits: nothing is proposed
    // after a stop-sign.
    a.handle_request(
        RequestId(2),
        Request::Reconfigure {
            members: vec![1, 2],
        },
        &mut out,
    );
    a.handle_request(
        RequestId(3),
        Request::Propose {
            command: put("k", "v"),
            session: None,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.messages.is_empty());
    assert_eq!(
        e.responses,
        vec![(RequestId(2), Response::Failed(Error::Busy))]
    );
    assert_eq!(a.metrics().queued, 1);
    // The stop-sign is chosen: the change took effect from slot 1 on.
    a.handle_message(
        2,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 1,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(
        e.responses,
        vec![(RequestId(1), Response::Reconfigured { epoch: 1, slot: 1 })]
    );
    let m = a.metrics();
    assert_eq!(
        (m.epoch, m.members.clone(), m.is_member),
        (1, vec![1, 2, 4], true)
    );
    // The old members hear that the stop-sign was chosen; the leader runs phase 1 again with a
    // ballot of the new epoch, among the new members only.
    let b1 = Ballot::in_epoch(1, 1, 1);
    assert!(e.messages.contains(&(
        3,
        M::Commit {
            ballot: b,
            commit: 1
        }
    )));
    let prepare = M::Prepare {
        ballot: b1,
        from_slot: 1,
    };
    assert!(e.messages.contains(&(2, prepare.clone())));
    assert!(e.messages.contains(&(4, prepare)));
    assert!(!e
        .messages
        .iter()
        .any(|(to, m)| *to == 3 && matches!(m, M::Prepare { .. })));
    assert_eq!(
        e.records,
        vec![
            Persist::Append(Record::Commit { decided: 1 }),
            Persist::Append(Record::Promise(b1)),
        ]
    );
    // Node 3 is no member any more: its messages are rejected and counted.
    let rejected = a.metrics().rejected;
    a.handle_message(
        3,
        M::Promise {
            ballot: b1,
            decided: 1,
            accepted: vec![],
        },
        &mut out,
    );
    assert_eq!(a.metrics().rejected, rejected + 1);
    assert!(!a.is_leader());
    // A majority of the new configuration (1 and 4) completes phase 1; the carried command is
    // proposed under the new ballot, after the stop-sign.
    a.handle_message(
        4,
        M::Promise {
            ballot: b1,
            decided: 1,
            accepted: vec![],
        },
        &mut out,
    );
    assert!(a.is_leader());
    let e = out.take();
    let accept = M::Accept {
        ballot: b1,
        slot: 1,
        values: vec![batch(b1, &[put("k", "v")])],
        commit: 1,
    };
    assert!(e.messages.contains(&(4, accept)));
    // A member that shows it has not learned the configuration (its decided slot is below the
    // configuration's first) is sent the commit index, so it catches up even on an idle cluster.
    let round = a.election.round;
    a.handle_message(
        2,
        M::HeartbeatReply {
            round,
            ballot: Ballot::new(1, 2),
            quorum_connected: true,
            leader: b,
            leader_alive: true,
            decided: 0,
        },
        &mut out,
    );
    assert_eq!(
        out.take().messages,
        vec![(
            2,
            M::Commit {
                ballot: b1,
                commit: 1
            }
        )]
    );
}

#[test]
fn removed_leader_steps_down_and_goes_passive() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    a.handle_request(
        RequestId(1),
        Request::Reconfigure {
            members: vec![2, 3, 4],
        },
        &mut out,
    );
    a.handle_request(
        RequestId(2),
        Request::Propose {
            command: put("k", "v"),
            session: None,
        },
        &mut out,
    );
    out.take();
    a.handle_message(
        3,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 1,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(
        e.responses,
        vec![
            (RequestId(1), Response::Reconfigured { epoch: 1, slot: 1 }),
            (
                RequestId(2),
                Response::Failed(Error::NotLeader { leader: None })
            ),
        ]
    );
    assert!(!a.is_leader());
    assert!(!a.metrics().is_member);
    // The new members hear that the stop-sign was chosen (4 learns it is in).
    assert!(e.messages.contains(&(
        4,
        M::Commit {
            ballot: b,
            commit: 1
        }
    )));
    // A removed replica runs no election; it only tells the new members, each heartbeat round,
    // until each showed it learned the new configuration.
    for _ in 0..2 {
        a.tick(&mut out);
    }
    let e = out.take();
    let mut told: Vec<_> = e.messages.iter().map(|(to, _)| *to).collect();
    told.sort();
    assert_eq!(told, vec![2, 3, 4]);
    assert!(e
        .messages
        .iter()
        .all(|(_, m)| matches!(m, M::Heartbeat { .. })));
    let round = match e.messages[0].1 {
        M::Heartbeat { round } => round,
        _ => unreachable!(),
    };
    for from in [2, 3, 4] {
        a.handle_message(
            from,
            M::HeartbeatReply {
                round,
                ballot: Ballot::in_epoch(1, 1, from),
                quorum_connected: true,
                leader: Ballot::in_epoch(1, 1, 2),
                leader_alive: true,
                decided: 1,
            },
            &mut out,
        );
    }
    out.take();
    for _ in 0..10 {
        a.tick(&mut out);
    }
    assert!(out.take().messages.is_empty());
    // ...and refuses requests.
    a.handle_request(
        RequestId(3),
        Request::Reconfigure {
            members: vec![1, 2, 3],
        },
        &mut out,
    );
    assert!(matches!(
        out.take().responses[..],
        [(RequestId(3), Response::Failed(Error::NotLeader { .. }))]
    ));
}

#[test]
fn acceptor_refuses_ballots_of_other_epochs_and_catches_up() {
    let mut b = replica(2);
    let mut out = Outbox::new();
    let later = Ballot::in_epoch(1, 1, 1);
    b.handle_message(
        1,
        M::Prepare {
            ballot: later,
            from_slot: 3,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.records.is_empty(), "no promise across configurations");
    assert_eq!(e.messages, vec![(1, M::CatchUpRequest { from_slot: 0 })]);
    assert_eq!(b.metrics().promised, Ballot::ZERO);
    assert_eq!(b.metrics().stale, 1);
    // It learns the stop-sign that moved the cluster on, and then takes part.
    b.handle_message(
        1,
        M::CatchUp {
            from_slot: 0,
            values: vec![Value::Noop, stop_sign(1, &[1, 2, 4])],
        },
        &mut out,
    );
    out.take();
    assert_eq!(b.metrics().epoch, 1);
    b.handle_message(
        1,
        M::Prepare {
            ballot: later,
            from_slot: 2,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(e.records, vec![Persist::Append(Record::Promise(later))]);
    // A ballot of the old configuration is refused now, although it is the same round.
    b.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(9, 1),
            slot: 2,
            values: vec![Value::Noop],
            commit: 0,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.records.is_empty());
    assert!(e.messages.is_empty());
}

#[test]
fn joining_replica_learns_before_it_votes() {
    // Node 4 starts outside the first configuration {1, 2, 3}.
    let mut d = R::recover(Config::new(4, vec![1, 2, 3]).into(), vec![]).unwrap();
    let mut out = Outbox::new();
    assert!(!d.metrics().is_member);
    for _ in 0..10 {
        d.tick(&mut out);
    }
    assert!(out.take().messages.is_empty(), "a learner runs no election");
    // An accept of the first configuration is not for it to vote on.
    d.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(1, 1),
            slot: 0,
            values: vec![Value::Noop],
            commit: 0,
        },
        &mut out,
    );
    assert!(out.take().records.is_empty());
    // The leader of the configuration that added it prepares: it asks for catch-up first...
    let b1 = Ballot::in_epoch(1, 2, 1);
    let prepare = M::Prepare {
        ballot: b1,
        from_slot: 2,
    };
    d.handle_message(1, prepare.clone(), &mut out);
    let e = out.take();
    assert!(e.records.is_empty());
    assert_eq!(e.messages, vec![(1, M::CatchUpRequest { from_slot: 0 })]);
    // ...learns the stop-sign (here by snapshot, the leader having compacted its log)...
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = 2;
    let mut a = R::recover(
        cfg.into(),
        vec![
            Record::Accept {
                ballot: Ballot::new(1, 1),
                slot: 0,
                values: vec![Value::Noop, stop_sign(1, &[1, 2, 4])],
            },
            Record::Commit { decided: 2 },
        ],
    )
    .unwrap();
    assert_eq!(a.metrics().epoch, 1, "recovery replays the stop-sign");
    // The snapshot the replayed slots call for is taken at the first step after recovery.
    assert_eq!(a.log_start(), 0);
    a.tick(&mut out);
    assert!(out.take().records.iter().any(|r| r.is_checkpoint()));
    assert_eq!(a.log_start(), 2);
    let mut net = Net::default();
    a.handle_message(4, M::CatchUpRequest { from_slot: 0 }, &mut out);
    net.collect(1, &mut out);
    assert!(matches!(
        net.queue.front(),
        Some((1, 4, M::SnapshotChunk { slot: 2, .. }))
    ));
    net.run(&mut [&mut a, &mut d], &mut perfect);
    let m = d.metrics();
    assert_eq!((m.epoch, m.is_member, m.decided), (1, true, 2));
    // ...and then promises.
    d.handle_message(1, prepare, &mut out);
    let e = out.take();
    assert_eq!(e.records, vec![Persist::Append(Record::Promise(b1))]);
    assert!(matches!(e.messages[..], [(1, M::Promise { .. })]));
}

#[test]
fn settling_stop_signs_voids_outlived_ones_and_cuts_after_standing_ones() {
    let b = |r| Ballot::new(r, 1);
    let mut chosen: BTreeMap<Slot, (Ballot, Value<KvCommand>)> = BTreeMap::new();
    chosen.insert(3, (b(2), stop_sign(1, &[1, 2])));
    chosen.insert(4, (b(3), Value::Noop)); // a later slot under a higher ballot: void
    chosen.insert(6, (b(4), stop_sign(1, &[1, 3])));
    chosen.insert(7, (b(1), Value::Noop)); // lower ballot after a standing stop-sign: dropped
    assert_eq!(reconfig::settle_stop_signs(&mut chosen), Some(6));
    assert_eq!(chosen.get(&3), Some(&(b(2), Value::Noop)));
    assert!(chosen.contains_key(&4));
    assert!(!chosen.contains_key(&7));
    let mut none: BTreeMap<Slot, (Ballot, Value<KvCommand>)> = BTreeMap::new();
    none.insert(0, (b(1), Value::Noop));
    assert_eq!(reconfig::settle_stop_signs(&mut none), None);
}

#[test]
fn invalid_reconfiguration_is_refused() {
    let (mut a, _) = leader();
    let mut out = Outbox::new();
    out.take();
    for members in [vec![], vec![1, 1, 2]] {
        a.handle_request(RequestId(1), Request::Reconfigure { members }, &mut out);
        assert!(matches!(
            out.take().responses[..],
            [(RequestId(1), Response::Failed(Error::Config(_)))]
        ));
    }
    // The same members: nothing to do.
    a.handle_request(
        RequestId(2),
        Request::Reconfigure {
            members: vec![1, 2, 3],
        },
        &mut out,
    );
    assert_eq!(
        out.take().responses,
        vec![(RequestId(2), Response::Reconfigured { epoch: 0, slot: 0 })]
    );
}

#[test]
fn quorum_not_reached_reads_as_a_sentence() {
    let event = Event::QuorumNotReached {
        rounds: 8,
        rtt_ticks_max: Some(37),
        round_ticks: 16,
    };
    assert_eq!(
        event.to_string(),
        "quorum not reached in 8 rounds; longest round trip seen 37 ticks (rounds of 16 ticks)"
    );
    let event = Event::QuorumNotReached {
        rounds: 1,
        rtt_ticks_max: None,
        round_ticks: 2,
    };
    assert_eq!(
        event.to_string(),
        "quorum not reached in 1 round; no heartbeat reply seen (rounds of 2 ticks)"
    );
}

#[test]
fn an_isolated_member_reports_it_then_doubles_the_interval() {
    // Replica 1 of three hears nobody for 40 rounds (round 0 sends no heartbeat and does not
    // count): an event after rounds 1, 2, 4, 8, 16 and 32, and the metrics say so.
    let mut replica: Replica<KvStore> =
        Replica::recover(Config::new(1, vec![1, 2, 3]).into(), vec![]).unwrap();
    let mut out = Outbox::new();
    let mut reported = Vec::new();
    for _ in 0..41 * crate::config::HEARTBEAT_TICKS_DEFAULT {
        replica.tick(&mut out);
        for event in out.take().events {
            if let Event::QuorumNotReached { rounds, .. } = event {
                reported.push(rounds);
            }
        }
    }
    assert_eq!(reported, vec![1, 2, 4, 8, 16, 32]);
    let m = replica.metrics();
    assert_eq!(m.rounds_without_quorum, 40);
    assert_eq!(m.round_ticks, crate::config::HEARTBEAT_TICKS_DEFAULT);
}
