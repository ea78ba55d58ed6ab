//! The termination protocol: timeouts, the election of a backup, each of its rules, and
//! re-election.

use super::*;

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
    let e = ticks(&mut p, cfg.termination_timeout_ticks + cfg.txn.resend_ticks);
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
