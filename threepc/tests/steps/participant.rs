//! The participant: voting, pre-commit and commit, refusals, recovery and bad input.

use super::*;

#[test]
fn participant_vote_precommit_commit_exact_effects() {
    let mut p = node(2);
    let e = msg(&mut p, C, can_commit(tx0(), "a"));
    assert_eq!(
        appended(&e),
        vec![Record::Voted {
            tx: tx0(),
            coordinator: C,
            participants: PS.to_vec(),
            writes: w("a")
        }]
    );
    assert_eq!(e.messages, vec![(C, yes(tx0()))]);
    assert_eq!(p.metrics().in_doubt[0].state, State::Uncertain);
    let e = msg(&mut p, C, Message::PreCommit { tx: tx0() });
    assert_eq!(appended(&e), vec![Record::PreCommitted { tx: tx0() }]);
    assert_eq!(e.messages, vec![(C, Message::PreCommitAck { tx: tx0() })]);
    let e = msg(&mut p, C, Message::PreCommit { tx: tx0() });
    assert!(
        e.records.is_empty(),
        "a duplicate PreCommit is acked again, not logged"
    );
    assert_eq!(e.messages, vec![(C, Message::PreCommitAck { tx: tx0() })]);
    let e = msg(&mut p, C, Message::DoCommit { tx: tx0() });
    assert_eq!(appended(&e), vec![Record::Committed { tx: tx0() }]);
    assert_eq!(e.messages, vec![(C, Message::HaveCommitted { tx: tx0() })]);
    assert_eq!(p.resource().get("a"), Some(&b"v"[..]));
    let e = msg(&mut p, C, Message::DoCommit { tx: tx0() });
    assert!(e.records.is_empty());
    assert_eq!(e.messages, vec![(C, Message::HaveCommitted { tx: tx0() })]);
    assert_eq!(p.resource().applied(), &[tx0()]);
}

#[test]
fn participant_conflict_votes_no_and_abort_is_logged() {
    let mut p = uncertain(2);
    let t1 = TxId::new(C, 1);
    let e = msg(&mut p, C, can_commit(t1, "k2"));
    assert!(e.records.is_empty());
    assert_eq!(
        e.messages,
        vec![(
            C,
            Message::Vote {
                tx: t1,
                vote: Vote::No
            }
        )]
    );
    let e = msg(&mut p, C, Message::Abort { tx: tx0() });
    assert_eq!(appended(&e), vec![Record::Aborted { tx: tx0() }]);
    assert!(e.messages.is_empty());
    assert_eq!(p.resource().lock_holder("k2"), None);
}

#[test]
fn an_unvoted_participant_refuses_durably_when_asked() {
    let mut p = node(4);
    let e = msg(&mut p, 2, Message::StateRequest { tx: tx0() });
    assert_eq!(appended(&e), vec![Record::Aborted { tx: tx0() }]);
    assert_eq!(
        e.messages,
        vec![(
            2,
            Message::StateReply {
                tx: tx0(),
                state: State::Aborted,
                recovering: false
            }
        )]
    );
    let e = msg(&mut p, C, can_commit(tx0(), "z"));
    assert_eq!(
        e.messages,
        vec![(
            C,
            Message::Vote {
                tx: tx0(),
                vote: Vote::No
            }
        )]
    );
    // A decided participant tells a backup that pre-commits it.
    let e = msg(&mut p, 2, Message::PreCommit { tx: tx0() });
    assert_eq!(
        e.messages,
        vec![(
            2,
            Message::Decision {
                tx: tx0(),
                outcome: Outcome::Aborted
            }
        )]
    );
}

#[test]
fn recovered_participant_retakes_locks_asks_and_adopts() {
    let voted = Record::Voted {
        tx: tx0(),
        coordinator: C,
        participants: PS.to_vec(),
        writes: w("a"),
    };
    let mut p = node_with(2, vec![voted.clone(), Record::PreCommitted { tx: tx0() }]);
    assert_eq!(p.resource().lock_holder("a"), Some(tx0()));
    let m = p.metrics();
    assert_eq!(m.in_doubt[0].state, State::PreCommitted);
    assert!(m.in_doubt[0].recovering);
    let e = tick(&mut p);
    assert_eq!(
        e.messages,
        vec![
            (C, Message::DecisionRequest { tx: tx0() }),
            (3, Message::DecisionRequest { tx: tx0() }),
            (4, Message::DecisionRequest { tx: tx0() }),
        ]
    );
    // It answers a backup as recovering: its state will not be used.
    let e = msg(&mut p, 3, Message::StateRequest { tx: tx0() });
    assert_eq!(
        e.messages,
        vec![(
            3,
            Message::StateReply {
                tx: tx0(),
                state: State::PreCommitted,
                recovering: true
            }
        )]
    );
    let e = msg(
        &mut p,
        3,
        Message::Decision {
            tx: tx0(),
            outcome: Outcome::Committed,
        },
    );
    assert_eq!(appended(&e), vec![Record::Committed { tx: tx0() }]);
    assert_eq!(p.resource().applied(), &[tx0()]);
}

#[test]
fn recovered_participants_decide_only_with_a_complete_view() {
    let voted = Record::Voted {
        tx: tx0(),
        coordinator: C,
        participants: PS.to_vec(),
        writes: w("a"),
    };
    let mut p = node_with(2, vec![voted]);
    let cfg = config(2);
    tick(&mut p);
    // Everyone else recovering and Uncertain, but the coordinator has not answered: wait.
    msg(&mut p, 3, reply(State::Uncertain, true));
    msg(&mut p, 4, reply(State::Uncertain, true));
    let e = ticks(&mut p, cfg.txn.resend_ticks);
    assert!(e.records.is_empty());
    // The coordinator says it never decided commit: with every state known, the rules apply.
    msg(&mut p, C, Message::NoDecision { tx: tx0() });
    msg(&mut p, 3, reply(State::Uncertain, true));
    msg(&mut p, 4, reply(State::PreCommitted, true));
    let e = ticks(&mut p, cfg.txn.resend_ticks);
    assert_eq!(appended(&e), vec![Record::PreCommitted { tx: tx0() }]);
    assert!(e.messages.contains(&(3, Message::PreCommit { tx: tx0() })));
    msg(&mut p, 3, Message::PreCommitAck { tx: tx0() });
    msg(&mut p, 4, Message::PreCommitAck { tx: tx0() });
    let e = tick(&mut p);
    assert_eq!(appended(&e), vec![Record::Committed { tx: tx0() }]);
}

#[test]
fn participant_rejects_bad_input() {
    let mut p = uncertain(2);
    assert!(
        msg(&mut p, 5, Message::DoCommit { tx: tx0() }).is_empty(),
        "not in the transaction"
    );
    assert!(msg(&mut p, 5, Message::PreCommit { tx: tx0() }).is_empty());
    assert!(
        msg(&mut p, 3, can_commit(TxId::new(C, 7), "q")).is_empty(),
        "not the coordinator"
    );
    assert!(
        msg(&mut p, 42, Message::Abort { tx: tx0() }).is_empty(),
        "not a member"
    );
    assert_eq!(p.metrics().rejected, 4);
    assert_eq!(p.metrics().in_doubt.len(), 1);
    msg(&mut p, C, Message::Abort { tx: tx0() });
    // A commit against the abort taken here (a split): ignored, and answered with the abort so
    // that the coordinator stops resending it.
    assert_eq!(
        msg(&mut p, C, Message::DoCommit { tx: tx0() }).messages,
        vec![(
            C,
            Message::Decision {
                tx: tx0(),
                outcome: Outcome::Aborted
            }
        )]
    );
    assert_eq!(p.metrics().decision_conflicts, 1);
    assert!(p.resource().applied().is_empty());
    // Only the coordinator's DoCommit is answered so: another member's commit is just refused.
    assert!(msg(&mut p, 3, Message::DoCommit { tx: tx0() }).is_empty());
    assert_eq!(p.metrics().decision_conflicts, 2);
}
