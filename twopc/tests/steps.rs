//! The exact effects of every step of both roles, including every timeout transition.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use common::txn::{Outcome, TxId, Vote, Write};
use common::{Effects, Node, NodeId, Outbox, Persist, RequestId};
use twopc::{
    Config, Event, Message, PeerStatus, Record, Request, Response, TwoPcError, TwoPcNode, SEQ_BLOCK,
};

const C: NodeId = 1;
const MEMBERS: [NodeId; 5] = [1, 2, 3, 4, 5];

fn config(id: NodeId) -> Config {
    Config::new(id, MEMBERS.to_vec())
}

fn node(id: NodeId) -> TwoPcNode {
    TwoPcNode::recover(config(id), vec![]).unwrap()
}

fn node_with(id: NodeId, records: Vec<Record>) -> TwoPcNode {
    TwoPcNode::recover(config(id), records).unwrap()
}

fn w(k: &str) -> Vec<Write> {
    vec![Write::put(k, "v")]
}

fn tx0() -> TxId {
    TxId::new(C, 0)
}

fn step(
    n: &mut TwoPcNode,
    f: impl FnOnce(&mut TwoPcNode, &mut Outbox<TwoPcNode>),
) -> Effects<TwoPcNode> {
    let mut out = Outbox::new();
    f(n, &mut out);
    out.take()
}

fn msg(n: &mut TwoPcNode, from: NodeId, m: Message) -> Effects<TwoPcNode> {
    step(n, |n, o| n.handle_message(from, m, o))
}

fn tick(n: &mut TwoPcNode) -> Effects<TwoPcNode> {
    step(n, |n, o| n.tick(o))
}

fn appended(e: &Effects<TwoPcNode>) -> Vec<Record> {
    e.records
        .iter()
        .map(|p| match p {
            Persist::Append(r) => r.clone(),
            Persist::Checkpoint(_) => panic!("no checkpoints expected"),
        })
        .collect()
}

fn prepare(tx: TxId, writes: Vec<Write>, peers: &[NodeId]) -> Message {
    Message::Prepare {
        tx,
        writes,
        peers: peers.to_vec(),
    }
}

fn vote(tx: TxId, vote: Vote) -> Message {
    Message::Vote { tx, vote }
}

/// A coordinator that sent Prepare for tx0 to 2, 3 and 4 (4 read-only when `ro`).
fn coordinator_voting(ro: bool) -> TwoPcNode {
    let mut c = node(C);
    let mut writes = BTreeMap::from([(2, w("a")), (3, w("b")), (4, w("c"))]);
    if ro {
        writes.insert(4, vec![]);
    }
    let e = step(&mut c, |n, o| {
        n.handle_request(RequestId(1), Request::Commit { writes }, o)
    });
    assert!(!e.messages.is_empty());
    c
}

// ---------------------------------------------------------------- coordinator

/// The ticks, counted from a send, at which it is resent while unanswered: `base` ticks after
/// it, then after waits doubling up to `max` (`common::txn::Backoff`), up to tick `until`.
fn resend_schedule(base: u64, max: u64, until: u64) -> Vec<u64> {
    let (mut t, mut wait, mut at) = (0, base, Vec::new());
    loop {
        t += wait;
        if t > until {
            return at;
        }
        at.push(t);
        wait = (wait * 2).min(max);
    }
}

#[test]
fn commit_request_reserves_ids_and_sends_prepare_to_every_participant() {
    let mut c = node(C);
    let writes = BTreeMap::from([(2, w("a")), (3, w("b")), (4, vec![])]);
    let e = step(&mut c, |n, o| {
        n.handle_request(RequestId(1), Request::Commit { writes }, o)
    });
    assert_eq!(
        appended(&e),
        vec![Record::Reserved {
            seq_limit: SEQ_BLOCK
        }]
    );
    assert_eq!(
        e.messages,
        vec![
            (2, prepare(tx0(), w("a"), &[2, 3])),
            (3, prepare(tx0(), w("b"), &[2, 3])),
            (4, prepare(tx0(), vec![], &[2, 3])),
        ]
    );
    assert!(e.responses.is_empty());
    assert_eq!(c.metrics().coordinating, 1);
    // The next transaction uses the reserved block: no new record.
    let e = step(&mut c, |n, o| {
        n.handle_request(
            RequestId(2),
            Request::Commit {
                writes: BTreeMap::from([(2, w("x")), (3, w("y"))]),
            },
            o,
        )
    });
    assert!(e.records.is_empty());
    assert!(matches!(e.messages[0].1, Message::Prepare { tx, .. } if tx == TxId::new(C, 1)));
}

#[test]
fn all_yes_forces_commit_record_then_sends_commit_and_answers() {
    let mut c = coordinator_voting(false);
    assert!(msg(&mut c, 2, vote(tx0(), Vote::Yes)).is_empty());
    assert!(msg(&mut c, 3, vote(tx0(), Vote::Yes)).is_empty());
    let e = msg(&mut c, 4, vote(tx0(), Vote::Yes));
    assert_eq!(
        appended(&e),
        vec![Record::CommitDecision {
            tx: tx0(),
            participants: vec![2, 3, 4]
        }]
    );
    assert_eq!(
        e.messages,
        vec![
            (2, Message::Commit { tx: tx0() }),
            (3, Message::Commit { tx: tx0() }),
            (4, Message::Commit { tx: tx0() })
        ]
    );
    assert_eq!(
        e.responses,
        vec![(
            RequestId(1),
            Response::Outcome {
                tx: tx0(),
                outcome: Outcome::Committed
            }
        )]
    );
    assert_eq!(
        e.events,
        vec![Event::Decided {
            tx: tx0(),
            outcome: Outcome::Committed
        }]
    );
    // Acks: the last one writes the lazy End record and nothing else.
    assert!(msg(&mut c, 2, Message::Ack { tx: tx0() }).is_empty());
    assert!(msg(&mut c, 3, Message::Ack { tx: tx0() }).is_empty());
    let e = msg(&mut c, 4, Message::Ack { tx: tx0() });
    assert_eq!(appended(&e), vec![Record::End { tx: tx0() }]);
    assert!(e.messages.is_empty() && e.responses.is_empty());
    assert_eq!(c.metrics().coordinating, 0);
    assert_eq!(c.metrics().decided_committed, 1);
}

#[test]
fn a_no_vote_aborts_at_once_without_a_record_or_acks() {
    let mut c = coordinator_voting(false);
    msg(&mut c, 2, vote(tx0(), Vote::Yes));
    let e = msg(&mut c, 3, vote(tx0(), Vote::No));
    assert!(e.records.is_empty(), "presumed abort: no abort record");
    // Abort goes to the Yes voter and to the one that has not voted; not to the No voter.
    assert_eq!(
        e.messages,
        vec![
            (2, Message::Abort { tx: tx0() }),
            (4, Message::Abort { tx: tx0() })
        ]
    );
    assert_eq!(
        e.responses,
        vec![(
            RequestId(1),
            Response::Outcome {
                tx: tx0(),
                outcome: Outcome::Aborted
            }
        )]
    );
    assert_eq!(
        c.metrics().coordinating,
        0,
        "aborted transactions are forgotten at once"
    );
    // A late vote for the forgotten transaction: a Yes is told Abort (presumed), others ignored.
    let e = msg(&mut c, 4, vote(tx0(), Vote::Yes));
    assert_eq!(e.messages, vec![(4, Message::Abort { tx: tx0() })]);
    assert!(msg(&mut c, 4, vote(tx0(), Vote::No)).messages.is_empty());
}

#[test]
fn vote_timeout_resends_prepare_to_the_silent_then_aborts() {
    let mut c = coordinator_voting(false);
    let cfg = config(C);
    msg(&mut c, 2, vote(tx0(), Vote::Yes));
    let mut resent = Vec::new();
    let due = resend_schedule(
        cfg.resend_ticks,
        cfg.resend_ticks_max,
        cfg.vote_timeout_ticks,
    );
    for t in 1..cfg.vote_timeout_ticks {
        let e = tick(&mut c);
        assert!(e.records.is_empty() && e.responses.is_empty());
        if due.contains(&t) {
            assert_eq!(
                e.messages,
                vec![
                    (3, prepare(tx0(), w("b"), &[2, 3, 4])),
                    (4, prepare(tx0(), w("c"), &[2, 3, 4]))
                ],
                "tick {t}: Prepare resent only to participants that have not voted"
            );
            resent.push(t);
        } else {
            assert!(e.messages.is_empty(), "tick {t}");
        }
    }
    assert!(!resent.is_empty());
    let e = tick(&mut c);
    assert!(e.records.is_empty());
    assert_eq!(
        e.messages,
        vec![
            (2, Message::Abort { tx: tx0() }),
            (3, Message::Abort { tx: tx0() }),
            (4, Message::Abort { tx: tx0() })
        ]
    );
    assert_eq!(
        e.responses,
        vec![(
            RequestId(1),
            Response::Outcome {
                tx: tx0(),
                outcome: Outcome::Aborted
            }
        )]
    );
}

#[test]
fn missing_acks_resend_the_decision_backing_off_forever() {
    let mut c = coordinator_voting(false);
    for p in [2, 3, 4] {
        msg(&mut c, p, vote(tx0(), Vote::Yes));
    }
    msg(&mut c, 2, Message::Ack { tx: tx0() });
    let cfg = config(C);
    let horizon = cfg.resend_ticks_max * 10;
    let mut resent = Vec::new();
    for t in 1..=horizon {
        let e = tick(&mut c);
        assert!(e.records.is_empty());
        if !e.messages.is_empty() {
            assert_eq!(
                e.messages,
                vec![
                    (3, Message::Commit { tx: tx0() }),
                    (4, Message::Commit { tx: tx0() })
                ]
            );
            resent.push(t);
        }
        if resent.len() == cfg.decision_retries_max as usize {
            assert_eq!(c.metrics().unacknowledged, 1, "counted as unacknowledged");
        }
    }
    // Waits double from resend_ticks up to resend_ticks_max, and it never gives up: a commit
    // cannot be forgotten before it is acked.
    assert_eq!(
        resent,
        resend_schedule(cfg.resend_ticks, cfg.resend_ticks_max, horizon)
    );
    let gaps: Vec<u64> = resent.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.last(), Some(&cfg.resend_ticks_max));
    // The participants can still pull the decision.
    let e = msg(&mut c, 3, Message::DecisionRequest { tx: tx0() });
    assert_eq!(e.messages, vec![(3, Message::Commit { tx: tx0() })]);
}

#[test]
fn read_only_participants_leave_after_voting() {
    let mut c = coordinator_voting(true);
    msg(&mut c, 4, vote(tx0(), Vote::ReadOnly));
    msg(&mut c, 2, vote(tx0(), Vote::Yes));
    let e = msg(&mut c, 3, vote(tx0(), Vote::Yes));
    assert_eq!(
        appended(&e),
        vec![Record::CommitDecision {
            tx: tx0(),
            participants: vec![2, 3]
        }]
    );
    assert_eq!(
        e.messages,
        vec![
            (2, Message::Commit { tx: tx0() }),
            (3, Message::Commit { tx: tx0() })
        ]
    );
}

#[test]
fn all_read_only_commits_with_no_record_and_no_second_phase() {
    let mut c = node(C);
    let writes = BTreeMap::from([(2, vec![]), (3, vec![])]);
    step(&mut c, |n, o| {
        n.handle_request(RequestId(1), Request::Commit { writes }, o)
    });
    msg(&mut c, 2, vote(tx0(), Vote::ReadOnly));
    let e = msg(&mut c, 3, vote(tx0(), Vote::ReadOnly));
    assert!(e.records.is_empty() && e.messages.is_empty());
    assert_eq!(
        e.responses,
        vec![(
            RequestId(1),
            Response::Outcome {
                tx: tx0(),
                outcome: Outcome::Committed
            }
        )]
    );
    assert_eq!(c.metrics().coordinating, 0);
}

#[test]
fn one_participant_uses_one_phase_commit() {
    let mut c = node(C);
    let e = step(&mut c, |n, o| {
        n.handle_request(
            RequestId(1),
            Request::Commit {
                writes: BTreeMap::from([(2, w("a"))]),
            },
            o,
        )
    });
    assert_eq!(
        e.messages,
        vec![(
            2,
            Message::OnePhaseCommit {
                tx: tx0(),
                writes: w("a")
            }
        )]
    );
    let e = msg(
        &mut c,
        2,
        Message::OnePhaseResult {
            tx: tx0(),
            outcome: Outcome::Committed,
        },
    );
    assert!(
        e.records.is_empty() && e.messages.is_empty(),
        "the coordinator logs nothing for 1PC"
    );
    assert_eq!(
        e.responses,
        vec![(
            RequestId(1),
            Response::Outcome {
                tx: tx0(),
                outcome: Outcome::Committed
            }
        )]
    );
}

#[test]
fn one_phase_commit_without_answer_is_resent_then_reported_unknown() {
    let mut c = node(C);
    let cfg = config(C);
    step(&mut c, |n, o| {
        n.handle_request(
            RequestId(1),
            Request::Commit {
                writes: BTreeMap::from([(2, w("a"))]),
            },
            o,
        )
    });
    let mut resends = 0;
    let mut answer = None;
    for _ in 0..(cfg.resend_ticks_max * u64::from(cfg.one_phase_retries_max + 2)) {
        let e = tick(&mut c);
        resends += e.messages.len();
        if let Some(r) = e.responses.first() {
            answer = Some(r.clone());
        }
    }
    assert_eq!(resends, cfg.one_phase_retries_max as usize);
    // The coordinator may not presume abort: the participant alone decides a one-phase commit.
    assert_eq!(
        answer,
        Some((
            RequestId(1),
            Response::Failed(TwoPcError::OutcomeUnknown(tx0()))
        ))
    );
}

#[test]
fn unknown_transactions_are_presumed_aborted() {
    let mut c = node(C);
    let e = msg(
        &mut c,
        2,
        Message::DecisionRequest {
            tx: TxId::new(C, 77),
        },
    );
    assert!(e.records.is_empty());
    assert_eq!(
        e.messages,
        vec![(
            2,
            Message::Abort {
                tx: TxId::new(C, 77)
            }
        )]
    );
    // A decision request while still voting is not answered yet.
    let mut c = coordinator_voting(false);
    assert!(msg(&mut c, 2, Message::DecisionRequest { tx: tx0() }).is_empty());
}

#[test]
fn recovered_coordinator_resends_logged_commits_and_skips_used_ids() {
    let t5 = TxId::new(C, 5);
    let records = vec![
        Record::Reserved {
            seq_limit: SEQ_BLOCK,
        },
        Record::CommitDecision {
            tx: tx0(),
            participants: vec![2, 3],
        },
        Record::CommitDecision {
            tx: t5,
            participants: vec![4],
        },
        Record::End { tx: tx0() },
    ];
    let mut c = node_with(C, records);
    assert_eq!(c.metrics().coordinating, 1);
    let e = tick(&mut c);
    assert_eq!(e.messages, vec![(4, Message::Commit { tx: t5 })]);
    let e = msg(&mut c, 4, Message::Ack { tx: t5 });
    assert_eq!(appended(&e), vec![Record::End { tx: t5 }]);
    // A transaction that was voting when the coordinator crashed has no record: presumed abort.
    let e = msg(
        &mut c,
        3,
        Message::DecisionRequest {
            tx: TxId::new(C, 6),
        },
    );
    assert_eq!(
        e.messages,
        vec![(
            3,
            Message::Abort {
                tx: TxId::new(C, 6)
            }
        )]
    );
    // New transactions start past the whole reserved block.
    let e = step(&mut c, |n, o| {
        n.handle_request(
            RequestId(9),
            Request::Commit {
                writes: BTreeMap::from([(2, w("a")), (3, w("b"))]),
            },
            o,
        )
    });
    assert_eq!(
        appended(&e),
        vec![Record::Reserved {
            seq_limit: 2 * SEQ_BLOCK
        }]
    );
    assert!(
        matches!(e.messages[0].1, Message::Prepare { tx, .. } if tx == TxId::new(C, SEQ_BLOCK))
    );
}

#[test]
fn coordinator_rejects_bad_input_and_counts_it() {
    let mut c = coordinator_voting(false);
    // From a non-member, from a non-participant, duplicate, for another coordinator's tx.
    assert!(msg(&mut c, 99, vote(tx0(), Vote::Yes)).is_empty());
    assert!(msg(&mut c, 5, vote(tx0(), Vote::Yes)).is_empty());
    assert!(msg(&mut c, 2, vote(tx0(), Vote::Yes)).is_empty(), "valid");
    assert!(msg(&mut c, 2, vote(tx0(), Vote::Yes)).is_empty());
    assert!(
        msg(&mut c, 2, vote(tx0(), Vote::No)).is_empty(),
        "a changed vote is ignored"
    );
    assert!(msg(&mut c, 2, vote(TxId::new(3, 0), Vote::Yes)).is_empty());
    assert!(msg(&mut c, 2, Message::Ack { tx: tx0() }).is_empty());
    assert_eq!(c.metrics().rejected, 6);
    assert_eq!(c.metrics().coordinating, 1);
    // Invalid requests are answered with typed errors.
    let e = step(&mut c, |n, o| {
        n.handle_request(
            RequestId(5),
            Request::Commit {
                writes: BTreeMap::from([(1, w("a"))]),
            },
            o,
        )
    });
    assert_eq!(
        e.responses,
        vec![(
            RequestId(5),
            Response::Failed(TwoPcError::InvalidParticipants(vec![1]))
        )]
    );
    let e = step(&mut c, |n, o| {
        n.handle_request(
            RequestId(6),
            Request::Commit {
                writes: BTreeMap::new(),
            },
            o,
        )
    });
    assert!(matches!(
        e.responses[0].1,
        Response::Failed(TwoPcError::InvalidParticipants(_))
    ));
}

#[test]
fn coordinator_refuses_beyond_txs_max() {
    let mut cfg = config(C);
    cfg.txs_max = 1;
    let mut c: TwoPcNode = TwoPcNode::recover(cfg, vec![]).unwrap();
    let writes = BTreeMap::from([(2, w("a")), (3, w("b"))]);
    step(&mut c, |n, o| {
        n.handle_request(
            RequestId(1),
            Request::Commit {
                writes: writes.clone(),
            },
            o,
        )
    });
    let e = step(&mut c, |n, o| {
        n.handle_request(RequestId(2), Request::Commit { writes }, o)
    });
    assert_eq!(
        e.responses,
        vec![(RequestId(2), Response::Failed(TwoPcError::Busy))]
    );
    assert!(e.messages.is_empty());
}

// ---------------------------------------------------------------- participant

fn prepared_participant(id: NodeId) -> TwoPcNode {
    let mut p = node(id);
    let e = msg(&mut p, C, prepare(tx0(), w("a"), &[2, 3, 4]));
    assert_eq!(e.messages, vec![(C, vote(tx0(), Vote::Yes))]);
    p
}

#[test]
fn prepare_forces_the_prepared_record_before_voting_yes() {
    let mut p = node(2);
    let e = msg(&mut p, C, prepare(tx0(), w("a"), &[2, 3]));
    assert_eq!(
        appended(&e),
        vec![Record::Prepared {
            tx: tx0(),
            coordinator: C,
            peers: vec![2, 3],
            writes: w("a")
        }]
    );
    assert_eq!(e.messages, vec![(C, vote(tx0(), Vote::Yes))]);
    assert_eq!(p.resource().lock_holder("a"), Some(tx0()));
    // A duplicate Prepare repeats the vote without a new record.
    let e = msg(&mut p, C, prepare(tx0(), w("a"), &[2, 3]));
    assert!(e.records.is_empty());
    assert_eq!(e.messages, vec![(C, vote(tx0(), Vote::Yes))]);
}

#[test]
fn conflicting_prepare_votes_no_without_waiting_or_logging() {
    let mut p = prepared_participant(2);
    let t1 = TxId::new(C, 1);
    let e = msg(&mut p, C, prepare(t1, w("a"), &[2, 3]));
    assert!(e.records.is_empty());
    assert_eq!(e.messages, vec![(C, vote(t1, Vote::No))]);
    // A different coordinator's transaction on the same key: also No.
    let t2 = TxId::new(5, 0);
    let e = msg(&mut p, 5, prepare(t2, w("a"), &[2, 3]));
    assert_eq!(e.messages, vec![(5, vote(t2, Vote::No))]);
    // And the duplicate of a No-voted Prepare is voted No again.
    let e = msg(&mut p, C, prepare(t1, w("a"), &[2, 3]));
    assert_eq!(e.messages, vec![(C, vote(t1, Vote::No))]);
}

#[test]
fn empty_writes_vote_read_only_without_record() {
    let mut p = node(4);
    let e = msg(&mut p, C, prepare(tx0(), vec![], &[2, 3]));
    assert!(e.records.is_empty());
    assert_eq!(e.messages, vec![(C, vote(tx0(), Vote::ReadOnly))]);
    assert!(p.metrics().in_doubt.is_empty());
}

#[test]
fn commit_forces_the_outcome_before_the_ack_and_applies() {
    let mut p = prepared_participant(2);
    let e = msg(&mut p, C, Message::Commit { tx: tx0() });
    assert_eq!(appended(&e), vec![Record::Committed { tx: tx0() }]);
    assert_eq!(e.messages, vec![(C, Message::Ack { tx: tx0() })]);
    assert_eq!(
        e.events,
        vec![Event::Finished {
            tx: tx0(),
            outcome: Outcome::Committed
        }]
    );
    assert_eq!(p.resource().get("a"), Some(&b"v"[..]));
    assert_eq!(p.resource().lock_holder("a"), None);
    // A duplicate Commit is acked again, applied once.
    let e = msg(&mut p, C, Message::Commit { tx: tx0() });
    assert!(e.records.is_empty());
    assert_eq!(e.messages, vec![(C, Message::Ack { tx: tx0() })]);
    assert_eq!(p.resource().applied(), &[tx0()]);
}

#[test]
fn abort_releases_without_record_or_ack() {
    let mut p = prepared_participant(2);
    let e = msg(&mut p, C, Message::Abort { tx: tx0() });
    // The abort record is lazy: no message of the step waits for it.
    assert_eq!(appended(&e), vec![Record::Aborted { tx: tx0() }]);
    assert!(e.messages.is_empty());
    assert_eq!(
        e.events,
        vec![Event::Finished {
            tx: tx0(),
            outcome: Outcome::Aborted
        }]
    );
    assert_eq!(p.resource().lock_holder("a"), None);
    assert_eq!(p.resource().get("a"), None);
    // An Abort that overtakes its Prepare makes the Prepare a No.
    let t1 = TxId::new(C, 1);
    assert!(msg(&mut p, C, Message::Abort { tx: t1 }).is_empty());
    let e = msg(&mut p, C, prepare(t1, w("b"), &[2, 3]));
    assert_eq!(e.messages, vec![(C, vote(t1, Vote::No))]);
}

#[test]
fn in_doubt_participant_asks_each_round_and_reports_blocked() {
    let mut p = prepared_participant(2);
    let cfg = config(2);
    for t in 1..cfg.in_doubt_query_ticks {
        assert!(
            tick(&mut p).is_empty(),
            "tick {t}: a prepared participant never decides alone"
        );
    }
    let e = tick(&mut p);
    assert!(e.records.is_empty() && e.events.is_empty());
    assert_eq!(
        e.messages,
        vec![
            (C, Message::DecisionRequest { tx: tx0() }),
            (3, Message::StatusQuery { tx: tx0() }),
            (4, Message::StatusQuery { tx: tx0() }),
        ]
    );
    let m = p.metrics();
    assert_eq!(m.in_doubt.len(), 1);
    assert_eq!(m.in_doubt[0].age_ticks, cfg.in_doubt_query_ticks);
    assert!(!m.in_doubt[0].blocked);
    // Both peers are prepared too: blocked, and it says so.
    assert!(msg(
        &mut p,
        3,
        Message::StatusReply {
            tx: tx0(),
            status: PeerStatus::Prepared
        }
    )
    .events
    .is_empty());
    let e = msg(
        &mut p,
        4,
        Message::StatusReply {
            tx: tx0(),
            status: PeerStatus::Prepared,
        },
    );
    assert_eq!(e.events, vec![Event::Blocked { tx: tx0() }]);
    assert_eq!(p.metrics().blocked, 1);
    // Still it keeps asking, and still it decides nothing.
    for _ in 0..cfg.in_doubt_query_ticks {
        let e = tick(&mut p);
        assert!(e.records.is_empty() && e.events.is_empty());
    }
    assert_eq!(p.metrics().in_doubt.len(), 1);
    // The coordinator's answer ends it.
    let e = msg(&mut p, C, Message::Commit { tx: tx0() });
    assert_eq!(e.messages, vec![(C, Message::Ack { tx: tx0() })]);
    assert_eq!(p.metrics().blocked, 0);
}

#[test]
fn silent_round_marks_blocked_without_cooperation() {
    let mut cfg = config(2);
    cfg.cooperative_termination = false;
    let mut p: TwoPcNode = TwoPcNode::recover(cfg.clone(), vec![]).unwrap();
    msg(&mut p, C, prepare(tx0(), w("a"), &[2, 3]));
    for _ in 0..cfg.in_doubt_query_ticks - 1 {
        tick(&mut p);
    }
    assert_eq!(
        tick(&mut p).messages,
        vec![(C, Message::DecisionRequest { tx: tx0() })]
    );
    // The next round waits twice as long (backoff).
    for _ in 0..2 * cfg.in_doubt_query_ticks - 1 {
        assert!(tick(&mut p).is_empty());
    }
    let e = tick(&mut p);
    assert_eq!(e.events, vec![Event::Blocked { tx: tx0() }]);
    assert_eq!(
        e.messages,
        vec![(C, Message::DecisionRequest { tx: tx0() })]
    );
}

#[test]
fn cooperative_termination_a_peer_that_committed_decides() {
    let mut p = prepared_participant(2);
    let e = msg(
        &mut p,
        3,
        Message::StatusReply {
            tx: tx0(),
            status: PeerStatus::Committed,
        },
    );
    assert_eq!(appended(&e), vec![Record::Committed { tx: tx0() }]);
    assert_eq!(p.resource().get("a"), Some(&b"v"[..]));
}

#[test]
fn cooperative_termination_a_peer_that_aborted_decides() {
    let mut p = prepared_participant(2);
    let e = msg(
        &mut p,
        4,
        Message::StatusReply {
            tx: tx0(),
            status: PeerStatus::Aborted,
        },
    );
    assert_eq!(appended(&e), vec![Record::Aborted { tx: tx0() }]);
    assert!(e.messages.is_empty());
    assert_eq!(
        e.events,
        vec![Event::Finished {
            tx: tx0(),
            outcome: Outcome::Aborted
        }]
    );
    assert!(p.metrics().in_doubt.is_empty());
    // A status reply from outside the transaction is rejected.
    let mut p = prepared_participant(2);
    assert!(msg(
        &mut p,
        5,
        Message::StatusReply {
            tx: tx0(),
            status: PeerStatus::Aborted
        }
    )
    .is_empty());
    assert_eq!(p.metrics().in_doubt.len(), 1);
    assert_eq!(p.metrics().rejected, 1);
}

#[test]
fn status_query_answers_from_state_and_an_unvoted_peer_refuses_durably() {
    let mut p = prepared_participant(2);
    let e = msg(&mut p, 3, Message::StatusQuery { tx: tx0() });
    assert_eq!(
        e.messages,
        vec![(
            3,
            Message::StatusReply {
                tx: tx0(),
                status: PeerStatus::Prepared
            }
        )]
    );
    msg(&mut p, C, Message::Commit { tx: tx0() });
    let e = msg(&mut p, 3, Message::StatusQuery { tx: tx0() });
    assert_eq!(
        e.messages,
        vec![(
            3,
            Message::StatusReply {
                tx: tx0(),
                status: PeerStatus::Committed
            }
        )]
    );
    // Never heard of t1: it has not voted, so it gives up voting Yes, durably, then answers.
    let t1 = TxId::new(C, 1);
    let e = msg(&mut p, 3, Message::StatusQuery { tx: t1 });
    assert_eq!(appended(&e), vec![Record::Aborted { tx: t1 }]);
    assert_eq!(
        e.messages,
        vec![(
            3,
            Message::StatusReply {
                tx: t1,
                status: PeerStatus::Aborted
            }
        )]
    );
    let e = msg(&mut p, C, prepare(t1, w("z"), &[2, 3]));
    assert_eq!(e.messages, vec![(C, vote(t1, Vote::No))]);
    // Also after a crash.
    let mut p = node_with(2, vec![Record::Aborted { tx: t1 }]);
    let e = msg(&mut p, C, prepare(t1, w("z"), &[2, 3]));
    assert_eq!(e.messages, vec![(C, vote(t1, Vote::No))]);
}

#[test]
fn recovered_prepared_participant_retakes_locks_and_asks_at_once() {
    let records = vec![
        Record::Prepared {
            tx: tx0(),
            coordinator: C,
            peers: vec![2, 3],
            writes: w("a"),
        },
        Record::Prepared {
            tx: TxId::new(C, 1),
            coordinator: C,
            peers: vec![2, 3],
            writes: w("b"),
        },
        Record::Committed {
            tx: TxId::new(C, 1),
        },
    ];
    let mut p = node_with(2, records);
    assert_eq!(p.resource().lock_holder("a"), Some(tx0()));
    assert_eq!(p.resource().get("b"), Some(&b"v"[..]));
    assert_eq!(p.metrics().in_doubt.len(), 1);
    let e = tick(&mut p);
    assert_eq!(
        e.messages,
        vec![
            (C, Message::DecisionRequest { tx: tx0() }),
            (3, Message::StatusQuery { tx: tx0() })
        ]
    );
    let e = msg(
        &mut p,
        3,
        Message::StatusQuery {
            tx: TxId::new(C, 1),
        },
    );
    assert_eq!(
        e.messages,
        vec![(
            3,
            Message::StatusReply {
                tx: TxId::new(C, 1),
                status: PeerStatus::Committed
            }
        )]
    );
    // A conflicting prepare still votes No: the locks are back.
    let t9 = TxId::new(5, 9);
    let e = msg(&mut p, 5, prepare(t9, w("a"), &[2]));
    assert_eq!(e.messages, vec![(5, vote(t9, Vote::No))]);
}

#[test]
fn one_phase_commit_at_the_participant_logs_its_own_decision() {
    let mut p = node(2);
    let e = msg(
        &mut p,
        C,
        Message::OnePhaseCommit {
            tx: tx0(),
            writes: w("a"),
        },
    );
    assert_eq!(
        appended(&e),
        vec![
            Record::Prepared {
                tx: tx0(),
                coordinator: C,
                peers: vec![2],
                writes: w("a")
            },
            Record::Committed { tx: tx0() },
        ]
    );
    assert_eq!(
        e.messages,
        vec![(
            C,
            Message::OnePhaseResult {
                tx: tx0(),
                outcome: Outcome::Committed
            }
        )]
    );
    // A duplicate gets the same answer, with no second execution.
    let e = msg(
        &mut p,
        C,
        Message::OnePhaseCommit {
            tx: tx0(),
            writes: w("a"),
        },
    );
    assert!(e.records.is_empty());
    assert_eq!(
        e.messages,
        vec![(
            C,
            Message::OnePhaseResult {
                tx: tx0(),
                outcome: Outcome::Committed
            }
        )]
    );
    assert_eq!(p.resource().applied(), &[tx0()]);
    // A conflicting one-phase commit aborts, and logs it: it decided.
    let mut p = prepared_participant(3);
    let t1 = TxId::new(C, 1);
    let e = msg(
        &mut p,
        C,
        Message::OnePhaseCommit {
            tx: t1,
            writes: w("a"),
        },
    );
    assert_eq!(appended(&e), vec![Record::Aborted { tx: t1 }]);
    assert_eq!(
        e.messages,
        vec![(
            C,
            Message::OnePhaseResult {
                tx: t1,
                outcome: Outcome::Aborted
            }
        )]
    );
}

#[test]
fn participant_rejects_messages_from_impostors() {
    let mut p = prepared_participant(2);
    // Only the transaction's coordinator may prepare, commit or abort it.
    assert!(msg(&mut p, 3, Message::Commit { tx: tx0() }).is_empty());
    assert!(msg(&mut p, 3, Message::Abort { tx: tx0() }).is_empty());
    assert!(msg(&mut p, 3, prepare(TxId::new(C, 4), w("q"), &[2, 3])).is_empty());
    assert!(msg(&mut p, 42, Message::Commit { tx: tx0() }).is_empty());
    assert_eq!(p.metrics().rejected, 4);
    assert_eq!(p.metrics().in_doubt.len(), 1);
    // A stale presumed abort after the commit is ignored.
    msg(&mut p, C, Message::Commit { tx: tx0() });
    assert!(msg(&mut p, C, Message::Abort { tx: tx0() }).is_empty());
    assert_eq!(p.metrics().decision_conflicts, 0);
    assert_eq!(p.metrics().rejected, 5);
    assert_eq!(p.resource().applied(), &[tx0()]);
    // A Commit contradicting an abort taken here is ignored and counted as a conflict.
    let t1 = TxId::new(C, 1);
    msg(&mut p, C, Message::Abort { tx: t1 });
    assert!(msg(&mut p, C, Message::Commit { tx: t1 }).is_empty());
    assert_eq!(p.metrics().decision_conflicts, 1);
    assert_eq!(p.resource().applied(), &[tx0()]);
}

#[test]
fn invalid_configuration_is_explained() {
    let mut cfg = config(1);
    cfg.members = vec![2, 3];
    assert!(matches!(
        TwoPcNode::<common::txn::MemKv>::recover(cfg, vec![]),
        Err(TwoPcError::Config(_))
    ));
    let mut cfg = config(1);
    cfg.vote_timeout_ticks = 1;
    assert!(matches!(
        TwoPcNode::<common::txn::MemKv>::recover(cfg, vec![]),
        Err(TwoPcError::Config(_))
    ));
}

#[test]
fn recovery_releases_an_older_prepared_transaction_whose_abort_record_was_lost() {
    // tx0 prepared on "a", was aborted (its lazy abort record lost in a crash), then tx1
    // prepared on "a". tx1 could only lock "a" because tx0 had finished, and tx0 has no Committed
    // record before tx1's Prepared: tx0 aborted.
    let t1 = TxId::new(C, 1);
    let records = vec![
        Record::Prepared {
            tx: tx0(),
            coordinator: C,
            peers: vec![2, 3],
            writes: w("a"),
        },
        Record::Prepared {
            tx: t1,
            coordinator: C,
            peers: vec![2, 3],
            writes: w("a"),
        },
    ];
    let mut p = node_with(2, records);
    assert_eq!(p.resource().lock_holder("a"), Some(t1));
    let m = p.metrics();
    assert_eq!(
        m.in_doubt.iter().map(|d| d.tx).collect::<Vec<_>>(),
        vec![t1]
    );
    let e = msg(&mut p, 3, Message::StatusQuery { tx: tx0() });
    assert_eq!(
        e.messages,
        vec![(
            3,
            Message::StatusReply {
                tx: tx0(),
                status: PeerStatus::Aborted
            }
        )]
    );
}
