//! The coordinator: the three phases, votes, timeouts, resends, decision requests, recovery
//! and bad input.

use super::*;
use common::txn::AtomicCommit;

#[test]
fn coordinator_three_phases_exact_effects() {
    let mut c = node(C);
    let e = request(&mut c);
    let reserved = Record::Reserved {
        seq_limit: SEQ_BLOCK,
    };
    assert_eq!(appended(&e), [reserved]);
    assert_eq!(
        e.messages,
        vec![
            (2, can_commit(tx0(), "a")),
            (3, can_commit(tx0(), "b")),
            (4, can_commit(tx0(), "c"))
        ]
    );
    assert!(msg(&mut c, 2, yes(tx0())).is_empty());
    assert!(msg(&mut c, 3, yes(tx0())).is_empty());
    let e = msg(&mut c, 4, yes(tx0()));
    assert_eq!(
        appended(&e),
        vec![Record::PreCommitDecision {
            tx: tx0(),
            participants: PS.to_vec()
        }]
    );
    assert_eq!(e.messages, to_all(&PS, Message::PreCommit { tx: tx0() }));
    assert!(e.responses.is_empty());
    msg(&mut c, 2, Message::PreCommitAck { tx: tx0() });
    msg(&mut c, 3, Message::PreCommitAck { tx: tx0() });
    let e = msg(&mut c, 4, Message::PreCommitAck { tx: tx0() });
    assert_eq!(
        appended(&e),
        vec![Record::CommitDecision {
            tx: tx0(),
            participants: PS.to_vec()
        }]
    );
    assert_eq!(e.messages, to_all(&PS, Message::DoCommit { tx: tx0() }));
    assert_eq!(e.responses, vec![(RequestId(1), committed(tx0()))]);
    assert_eq!(
        e.events,
        vec![<N as AtomicCommit>::decided_event(
            tx0(),
            Outcome::Committed
        )]
    );
    assert!(msg(&mut c, 2, Message::HaveCommitted { tx: tx0() }).is_empty());
    assert!(msg(&mut c, 3, Message::HaveCommitted { tx: tx0() }).is_empty());
    let e = msg(&mut c, 4, Message::HaveCommitted { tx: tx0() });
    assert_eq!(appended(&e), vec![Record::End { tx: tx0() }]);
    assert!(e.messages.is_empty());
    assert_eq!(c.metrics().coordinating, 0);
}

#[test]
fn a_no_vote_aborts_everywhere_without_a_record() {
    let mut c = node(C);
    request(&mut c);
    msg(&mut c, 2, yes(tx0()));
    let e = msg(
        &mut c,
        3,
        Message::Vote {
            tx: tx0(),
            vote: Vote::No,
        },
    );
    assert!(e.records.is_empty());
    assert_eq!(e.messages, to_all(&PS, Message::Abort { tx: tx0() }));
    assert_eq!(e.responses, first_answer(tx0(), Outcome::Aborted));
}

#[test]
fn coordinator_vote_timeout_resends_then_aborts() {
    let mut c = node(C);
    let cfg = config(C);
    request(&mut c);
    msg(&mut c, 2, yes(tx0()));
    let resends = resend_schedule(
        cfg.txn.resend_ticks,
        cfg.txn.resend_ticks_max,
        cfg.txn.vote_timeout_ticks,
    );
    assert!(resends.len() >= 2);
    for t in 1..cfg.txn.vote_timeout_ticks {
        let e = tick(&mut c);
        if resends.contains(&t) {
            assert_eq!(
                e.messages,
                vec![(3, can_commit(tx0(), "b")), (4, can_commit(tx0(), "c"))],
                "tick {t}"
            );
        } else {
            assert!(e.is_empty(), "tick {t}");
        }
    }
    let e = tick(&mut c);
    assert_eq!(e.messages, to_all(&PS, Message::Abort { tx: tx0() }));
    assert_eq!(e.responses.len(), 1);
}

/// The coordinator with `tx0` voted Yes by every participant, PreCommit sent, and acknowledged
/// by `acks`.
fn pre_committing(acks: &[NodeId]) -> N {
    let mut c = node(C);
    request(&mut c);
    for p in PS {
        msg(&mut c, p, yes(tx0()));
    }
    for &p in acks {
        msg(&mut c, p, Message::PreCommitAck { tx: tx0() });
    }
    c
}

#[test]
fn coordinator_ack_timeout_resends_then_commits_without_the_silent() {
    let mut c = pre_committing(&[2]);
    let cfg = config(C);
    let resends = resend_schedule(
        cfg.txn.resend_ticks,
        cfg.txn.resend_ticks_max,
        cfg.ack_timeout_ticks,
    );
    assert!(resends.len() >= 2);
    for t in 1..cfg.ack_timeout_ticks {
        let e = tick(&mut c);
        if resends.contains(&t) {
            assert_eq!(
                e.messages,
                to_all(&[3, 4], Message::PreCommit { tx: tx0() }),
                "tick {t}"
            );
        } else {
            assert!(e.is_empty(), "tick {t}");
        }
    }
    // The silent are taken as crashed (3PC's failure model): commit.
    let e = tick(&mut c);
    assert_eq!(
        appended(&e),
        vec![Record::CommitDecision {
            tx: tx0(),
            participants: PS.to_vec()
        }]
    );
    assert_eq!(e.messages, to_all(&PS, Message::DoCommit { tx: tx0() }));
    assert_eq!(e.responses, vec![(RequestId(1), committed(tx0()))]);
    // DoCommit is resent to those that have not answered.
    msg(&mut c, 2, Message::HaveCommitted { tx: tx0() });
    let e = ticks(&mut c, cfg.txn.resend_ticks);
    assert_eq!(e.messages, to_all(&[3, 4], Message::DoCommit { tx: tx0() }));
}

#[test]
fn a_participant_that_aborted_what_the_coordinator_committed_ends_its_resends() {
    // The split of a slow network: participant 4 was silent past the ack timeout, so the
    // coordinator committed; meanwhile 4's termination protocol aborted. 4 answers DoCommit
    // with its abort, and the coordinator stops waiting for it.
    let mut c = pre_committing(&[2, 3]);
    let cfg = config(C);
    let e = ticks(&mut c, cfg.ack_timeout_ticks);
    assert_eq!(
        e.messages.last(),
        Some(&(4, Message::DoCommit { tx: tx0() }))
    );
    msg(&mut c, 2, Message::HaveCommitted { tx: tx0() });
    let aborted = |tx| Message::Decision {
        tx,
        outcome: Outcome::Aborted,
    };
    let e = msg(&mut c, 4, aborted(tx0()));
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(c.metrics().commits_refused, 1);
    assert_eq!(c.metrics().rejected, 0);
    // Only 3 is still sent DoCommit.
    let e = ticks(&mut c, cfg.txn.resend_ticks);
    assert_eq!(e.messages, vec![(3, Message::DoCommit { tx: tx0() })]);
    // The same abort again, or from a participant that acknowledged, is refused.
    msg(&mut c, 4, aborted(tx0()));
    msg(&mut c, 2, aborted(tx0()));
    assert_eq!(c.metrics().rejected, 2);
    assert_eq!(c.metrics().commits_refused, 1);
    // The last answer ends the transaction: every participant has decided.
    let e = msg(&mut c, 3, Message::HaveCommitted { tx: tx0() });
    assert_eq!(appended(&e), vec![Record::End { tx: tx0() }]);
    assert_eq!(c.metrics().coordinating, 0);
    assert!(ticks(&mut c, cfg.txn.resend_ticks_max * 2).is_empty());
}

#[test]
fn coordinator_answers_decision_requests_with_its_phase() {
    let mut c = node(C);
    request(&mut c);
    assert_eq!(
        msg(&mut c, 3, Message::DecisionRequest { tx: tx0() }).messages,
        vec![(3, can_commit(tx0(), "b"))]
    );
    for p in PS {
        msg(&mut c, p, yes(tx0()));
    }
    assert_eq!(
        msg(&mut c, 3, Message::DecisionRequest { tx: tx0() }).messages,
        vec![(3, Message::PreCommit { tx: tx0() })]
    );
    // Unknown: never decided commit.
    let t9 = TxId::new(C, 9);
    assert_eq!(
        msg(&mut c, 3, Message::DecisionRequest { tx: t9 }).messages,
        vec![(3, Message::NoDecision { tx: t9 })]
    );
}

#[test]
fn recovered_coordinator_resends_commit_or_learns() {
    let t1 = TxId::new(C, 1);
    let mut c = node_with(
        C,
        vec![
            Record::Reserved {
                seq_limit: SEQ_BLOCK,
            },
            Record::PreCommitDecision {
                tx: tx0(),
                participants: PS.to_vec(),
            },
            Record::PreCommitDecision {
                tx: t1,
                participants: PS.to_vec(),
            },
            Record::CommitDecision {
                tx: t1,
                participants: PS.to_vec(),
            },
        ],
    );
    let e = tick(&mut c);
    let mut expected = to_all(&PS, Message::DecisionRequest { tx: tx0() });
    expected.extend(to_all(&PS, Message::DoCommit { tx: t1 }));
    assert_eq!(e.messages, expected);
    // Learning: it says it will never decide commit itself, and adopts what it is told.
    assert_eq!(
        msg(&mut c, 3, Message::DecisionRequest { tx: tx0() }).messages,
        vec![(3, Message::NoDecision { tx: tx0() })]
    );
    let e = msg(
        &mut c,
        2,
        Message::Decision {
            tx: tx0(),
            outcome: Outcome::Aborted,
        },
    );
    assert_eq!(appended(&e), vec![Record::End { tx: tx0() }]);
    assert_eq!(c.metrics().coordinating, 1);
}

#[test]
fn coordinator_rejects_bad_input() {
    let mut c = node(C);
    request(&mut c);
    assert!(msg(&mut c, 99, yes(tx0())).is_empty());
    assert!(msg(&mut c, 5, yes(tx0())).is_empty());
    assert!(msg(&mut c, 2, Message::PreCommitAck { tx: tx0() }).is_empty());
    assert!(msg(&mut c, 2, Message::HaveCommitted { tx: tx0() }).is_empty());
    assert!(msg(
        &mut c,
        2,
        Message::Vote {
            tx: TxId::new(3, 0),
            vote: Vote::Yes
        }
    )
    .is_empty());
    assert_eq!(c.metrics().rejected, 5);
    let e = step(&mut c, |n, o| {
        n.handle_request(
            RequestId(2),
            Request::Commit {
                writes: BTreeMap::from([(C, w("a"))]),
            },
            o,
        )
    });
    assert_eq!(
        e.responses,
        vec![(
            RequestId(2),
            Response::Failed(ThreePcError::InvalidParticipants(vec![C]))
        )]
    );
}
