//! The participant: voting, the forced records, the decision, in-doubt queries and
//! cooperative termination, recovery, bad input and configuration checks.

use super::*;

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
    cfg.txn.members = vec![2, 3];
    assert!(matches!(
        TwoPcNode::<common::txn::MemKv>::recover(cfg, vec![]),
        Err(TwoPcError::Config(_))
    ));
    let mut cfg = config(1);
    cfg.txn.vote_timeout_ticks = 1;
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
