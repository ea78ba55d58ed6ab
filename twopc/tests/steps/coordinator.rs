//! The coordinator: ids, votes, the decision, resends and timeouts, one-phase commit,
//! presumed abort, recovery and bad input.

use super::*;

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
    assert_eq!(e.responses, first_answer(tx0(), Outcome::Committed));
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
    assert_eq!(e.responses, first_answer(tx0(), Outcome::Aborted));
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
        cfg.txn.resend_ticks,
        cfg.txn.resend_ticks_max,
        cfg.txn.vote_timeout_ticks,
    );
    for t in 1..cfg.txn.vote_timeout_ticks {
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
    assert_eq!(e.responses, first_answer(tx0(), Outcome::Aborted));
}

#[test]
fn missing_acks_resend_the_decision_backing_off_forever() {
    let mut c = coordinator_voting(false);
    for p in [2, 3, 4] {
        msg(&mut c, p, vote(tx0(), Vote::Yes));
    }
    msg(&mut c, 2, Message::Ack { tx: tx0() });
    let cfg = config(C);
    let horizon = cfg.txn.resend_ticks_max * 10;
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
        resend_schedule(cfg.txn.resend_ticks, cfg.txn.resend_ticks_max, horizon)
    );
    let gaps: Vec<u64> = resent.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.last(), Some(&cfg.txn.resend_ticks_max));
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
    assert_eq!(e.responses, first_answer(tx0(), Outcome::Committed));
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
    assert_eq!(e.responses, first_answer(tx0(), Outcome::Committed));
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
    for _ in 0..(cfg.txn.resend_ticks_max * u64::from(cfg.one_phase_retries_max + 2)) {
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
    cfg.txn.txs_max = 1;
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
