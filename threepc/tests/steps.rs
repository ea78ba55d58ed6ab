//! The exact effects of every step of both roles: each phase, every timeout transition and each
//! rule of the termination protocol.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use common::txn::{Outcome, TxId, Vote, Write};
use common::{Effects, Node, NodeId, Outbox, Persist, RequestId};
use threepc::{
    Config, Event, Message, Record, Request, Response, State, ThreePcError, ThreePcNode, SEQ_BLOCK,
};

const C: NodeId = 1;
const MEMBERS: [NodeId; 5] = [1, 2, 3, 4, 5];
const PS: [NodeId; 3] = [2, 3, 4];

type N = ThreePcNode;

fn config(id: NodeId) -> Config {
    Config::new(id, MEMBERS.to_vec())
}

fn node(id: NodeId) -> N {
    N::recover(config(id), vec![]).unwrap()
}

fn node_with(id: NodeId, records: Vec<Record>) -> N {
    N::recover(config(id), records).unwrap()
}

fn w(k: &str) -> Vec<Write> {
    vec![Write::put(k, "v")]
}

fn tx0() -> TxId {
    TxId::new(C, 0)
}

fn step(n: &mut N, f: impl FnOnce(&mut N, &mut Outbox<N>)) -> Effects<N> {
    let mut out = Outbox::new();
    f(n, &mut out);
    out.take()
}

fn msg(n: &mut N, from: NodeId, m: Message) -> Effects<N> {
    step(n, |n, o| n.handle_message(from, m, o))
}

fn tick(n: &mut N) -> Effects<N> {
    step(n, |n, o| n.tick(o))
}

fn ticks(n: &mut N, count: u64) -> Effects<N> {
    let mut all = Effects::default();
    for _ in 0..count {
        let e = tick(n);
        all.records.extend(e.records);
        all.messages.extend(e.messages);
        all.responses.extend(e.responses);
        all.events.extend(e.events);
    }
    all
}

fn appended(e: &Effects<N>) -> Vec<Record> {
    e.records
        .iter()
        .map(|p| Persist::record(p).clone())
        .collect()
}

fn to_all(ps: &[NodeId], m: Message) -> Vec<(NodeId, Message)> {
    ps.iter().map(|&p| (p, m.clone())).collect()
}

fn can_commit(tx: TxId, k: &str) -> Message {
    Message::CanCommit {
        tx,
        writes: w(k),
        participants: PS.to_vec(),
    }
}

fn request(c: &mut N) -> Effects<N> {
    let writes = BTreeMap::from([(2, w("a")), (3, w("b")), (4, w("c"))]);
    step(c, |n, o| {
        n.handle_request(RequestId(1), Request::Commit { writes }, o)
    })
}

fn yes(tx: TxId) -> Message {
    Message::Vote {
        tx,
        vote: Vote::Yes,
    }
}

fn committed(tx: TxId) -> Response {
    Response::Outcome {
        tx,
        outcome: Outcome::Committed,
    }
}

// ------------------------------------------------------------------ coordinator

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
fn coordinator_three_phases_exact_effects() {
    let mut c = node(C);
    let e = request(&mut c);
    assert_eq!(
        appended(&e),
        vec![Record::Reserved {
            seq_limit: SEQ_BLOCK
        }]
    );
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
        vec![Event::Decided {
            tx: tx0(),
            outcome: Outcome::Committed
        }]
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
fn coordinator_vote_timeout_resends_then_aborts() {
    let mut c = node(C);
    let cfg = config(C);
    request(&mut c);
    msg(&mut c, 2, yes(tx0()));
    let resends = resend_schedule(
        cfg.resend_ticks,
        cfg.resend_ticks_max,
        cfg.vote_timeout_ticks,
    );
    assert!(resends.len() >= 2);
    for t in 1..cfg.vote_timeout_ticks {
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

#[test]
fn coordinator_ack_timeout_resends_then_commits_without_the_silent() {
    let mut c = node(C);
    let cfg = config(C);
    request(&mut c);
    for p in PS {
        msg(&mut c, p, yes(tx0()));
    }
    msg(&mut c, 2, Message::PreCommitAck { tx: tx0() });
    let resends = resend_schedule(
        cfg.resend_ticks,
        cfg.resend_ticks_max,
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
    let e = ticks(&mut c, cfg.resend_ticks);
    assert_eq!(e.messages, to_all(&[3, 4], Message::DoCommit { tx: tx0() }));
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

// ------------------------------------------------------------------ participant

fn uncertain(id: NodeId) -> N {
    let mut p = node(id);
    let e = msg(&mut p, C, can_commit(tx0(), &format!("k{id}")));
    assert_eq!(e.messages, vec![(C, yes(tx0()))]);
    p
}

fn reply(state: State, recovering: bool) -> Message {
    Message::StateReply {
        tx: tx0(),
        state,
        recovering,
    }
}

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
fn uncertain_timeout_starts_termination_and_the_lowest_collects_states() {
    let mut p = uncertain(2);
    let cfg = config(2);
    assert!(
        ticks(&mut p, cfg.termination_timeout_ticks - 1).is_empty(),
        "it waits for the coordinator"
    );
    let e = tick(&mut p);
    assert_eq!(e.events, vec![Event::TerminationStarted { tx: tx0() }]);
    assert_eq!(
        e.messages,
        to_all(&[3, 4], Message::StateRequest { tx: tx0() })
    );
    assert!(p.metrics().in_doubt[0].terminating);
}

#[test]
fn precommitted_timeout_starts_termination_too() {
    let mut p = uncertain(2);
    msg(&mut p, C, Message::PreCommit { tx: tx0() });
    let e = ticks(&mut p, config(2).termination_timeout_ticks);
    assert_eq!(e.events, vec![Event::TerminationStarted { tx: tx0() }]);
}

/// Node 2 as backup, with `replies` from 3 and 4.
fn backup_after(replies: &[(NodeId, Message)]) -> (N, Effects<N>) {
    let mut p = uncertain(2);
    ticks(&mut p, config(2).termination_timeout_ticks);
    let mut last = Effects::default();
    for (from, m) in replies {
        last = msg(&mut p, *from, m.clone());
    }
    assert!(last.is_empty() || !last.records.is_empty());
    let e = tick(&mut p);
    (p, e)
}

fn abort_everywhere(tx: TxId) -> Vec<(NodeId, Message)> {
    let mut v = to_all(&[3, 4], Message::Abort { tx });
    v.push((
        C,
        Message::Decision {
            tx,
            outcome: Outcome::Aborted,
        },
    ));
    v
}

#[test]
fn rule_any_aborted_aborts() {
    let mut p = uncertain(2);
    ticks(&mut p, config(2).termination_timeout_ticks);
    msg(&mut p, 3, reply(State::Uncertain, false));
    // An Aborted reply decides at once.
    let e = msg(&mut p, 4, reply(State::Aborted, false));
    assert_eq!(appended(&e), vec![Record::Aborted { tx: tx0() }]);
    assert_eq!(e.messages, abort_everywhere(tx0()));
    assert_eq!(
        e.events,
        vec![
            Event::Finished {
                tx: tx0(),
                outcome: Outcome::Aborted
            },
            Event::TerminatedAsBackup {
                tx: tx0(),
                outcome: Outcome::Aborted
            }
        ]
    );
}

#[test]
fn rule_any_committed_commits() {
    let mut p = uncertain(2);
    ticks(&mut p, config(2).termination_timeout_ticks);
    let e = msg(&mut p, 3, reply(State::Committed, false));
    assert_eq!(appended(&e), vec![Record::Committed { tx: tx0() }]);
    let mut expected = to_all(&[3, 4], Message::DoCommit { tx: tx0() });
    expected.push((
        C,
        Message::Decision {
            tx: tx0(),
            outcome: Outcome::Committed,
        },
    ));
    assert_eq!(e.messages, expected);
    assert_eq!(p.resource().applied(), &[tx0()]);
}

#[test]
fn rule_all_uncertain_aborts() {
    let (p, e) = backup_after(&[
        (3, reply(State::Uncertain, false)),
        (4, reply(State::Uncertain, false)),
    ]);
    assert_eq!(appended(&e), vec![Record::Aborted { tx: tx0() }]);
    assert_eq!(e.messages, abort_everywhere(tx0()));
    assert!(e.events.contains(&Event::TerminatedAsBackup {
        tx: tx0(),
        outcome: Outcome::Aborted
    }));
    assert_eq!(p.metrics().terminated_as_backup, 1);
}

#[test]
fn rule_any_precommitted_precommits_the_uncertain_then_commits() {
    let (mut p, e) = backup_after(&[
        (3, reply(State::PreCommitted, false)),
        (4, reply(State::Uncertain, false)),
    ]);
    // The backup itself was Uncertain: it pre-commits first, then pre-commits the others.
    assert_eq!(appended(&e), vec![Record::PreCommitted { tx: tx0() }]);
    assert_eq!(
        e.messages,
        to_all(&[3, 4], Message::PreCommit { tx: tx0() })
    );
    assert!(msg(&mut p, 3, Message::PreCommitAck { tx: tx0() }).is_empty());
    assert!(msg(&mut p, 4, Message::PreCommitAck { tx: tx0() }).is_empty());
    let e = tick(&mut p);
    assert_eq!(appended(&e), vec![Record::Committed { tx: tx0() }]);
    let mut expected = to_all(&[3, 4], Message::DoCommit { tx: tx0() });
    expected.push((
        C,
        Message::Decision {
            tx: tx0(),
            outcome: Outcome::Committed,
        },
    ));
    assert_eq!(e.messages, expected);
}

#[test]
fn backup_precommit_ack_timeout_commits_without_the_silent() {
    let (mut p, _) = backup_after(&[
        (3, reply(State::PreCommitted, false)),
        (4, reply(State::Uncertain, false)),
    ]);
    msg(&mut p, 3, Message::PreCommitAck { tx: tx0() });
    let e = ticks(&mut p, config(2).state_timeout_ticks);
    assert!(
        e.messages.contains(&(4, Message::PreCommit { tx: tx0() })),
        "resent to the silent"
    );
    assert_eq!(appended(&e), vec![Record::Committed { tx: tx0() }]);
}

#[test]
fn rule_ignores_the_undecided_state_of_recovering_participants() {
    // 3 says PreCommitted but has restarted since: its state may be stale, so it is not used.
    let (_, e) = backup_after(&[
        (3, reply(State::PreCommitted, true)),
        (4, reply(State::Uncertain, false)),
    ]);
    assert_eq!(appended(&e), vec![Record::Aborted { tx: tx0() }]);
}

#[test]
fn state_timeout_takes_the_silent_as_crashed() {
    let mut p = uncertain(2);
    let cfg = config(2);
    ticks(&mut p, cfg.termination_timeout_ticks);
    msg(&mut p, 3, reply(State::Uncertain, false));
    let e = ticks(&mut p, cfg.state_timeout_ticks - 1);
    assert!(e.records.is_empty());
    assert!(e
        .messages
        .iter()
        .all(|m| *m == (4, Message::StateRequest { tx: tx0() })));
    assert!(!e.messages.is_empty(), "the silent one is asked again");
    let e = tick(&mut p);
    assert_eq!(appended(&e), vec![Record::Aborted { tx: tx0() }]);
}

#[test]
fn follower_prods_the_backup_and_reelects_when_it_is_silent() {
    let mut p = uncertain(3);
    let cfg = config(3);
    let e = ticks(&mut p, cfg.termination_timeout_ticks + cfg.resend_ticks);
    assert_eq!(e.events, vec![Event::TerminationStarted { tx: tx0() }]);
    assert_eq!(
        e.messages,
        vec![(2, Message::TerminationStart { tx: tx0() })]
    );
    // 2 never answers: after another timeout, 3 suspects it and becomes the backup.
    let e = ticks(&mut p, cfg.termination_timeout_ticks);
    assert!(e
        .messages
        .contains(&(4, Message::StateRequest { tx: tx0() })));
    assert!(!e
        .messages
        .iter()
        .any(|(to, m)| *to == 2 && matches!(m, Message::StateRequest { .. })));
    let e = msg(&mut p, 4, reply(State::Uncertain, false));
    assert!(e.is_empty());
    let e = tick(&mut p);
    assert_eq!(appended(&e), vec![Record::Aborted { tx: tx0() }]);
}

#[test]
fn termination_start_makes_the_elected_backup_join_at_once() {
    let mut p = uncertain(2);
    let e = msg(&mut p, 3, Message::TerminationStart { tx: tx0() });
    assert_eq!(e.events, vec![Event::TerminationStarted { tx: tx0() }]);
    let e = tick(&mut p);
    assert_eq!(
        e.messages,
        to_all(&[3, 4], Message::StateRequest { tx: tx0() })
    );
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
    let e = ticks(&mut p, cfg.resend_ticks);
    assert!(e.records.is_empty());
    // The coordinator says it never decided commit: with every state known, the rules apply.
    msg(&mut p, C, Message::NoDecision { tx: tx0() });
    msg(&mut p, 3, reply(State::Uncertain, true));
    msg(&mut p, 4, reply(State::PreCommitted, true));
    let e = ticks(&mut p, cfg.resend_ticks);
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
    assert!(msg(&mut p, C, Message::DoCommit { tx: tx0() }).is_empty());
    assert_eq!(p.metrics().decision_conflicts, 1);
    assert!(p.resource().applied().is_empty());
}
