//! The transaction table's unit tests: commit through the record, presumed abort, no-wait
//! locks, stale prepares, reads and read-only transactions.

use super::*;

fn part(compares: &[(&str, Option<&str>)], writes: &[(&str, &str)]) -> TxPart {
    TxPart {
        reads: Vec::new(),
        compares: compares
            .iter()
            .map(|(k, v)| Compare {
                key: (*k).into(),
                value: v.map(Into::into),
            })
            .collect(),
        writes: writes
            .iter()
            .map(|(k, v)| TxWrite {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
    }
}

fn prepare(tx: TxId, p: TxPart, coordinator: GroupId, parts: &[GroupId]) -> TxCommand {
    TxCommand::Prepare {
        tx,
        part: p,
        coordinator,
        participants: parts.to_vec(),
    }
}

#[test]
fn commit_through_the_coordinators_record_applies_every_part_once() {
    let (t, c, p) = (TxId::new(9, 1), 1, 2);
    let (mut tc, mut sc) = (TxTable::default(), KvStore::default());
    let (mut tp, mut sp) = (TxTable::default(), KvStore::default());
    let out = tc.apply(
        c,
        5,
        &prepare(t, part(&[("a", None)], &[("a", "1")]), c, &[c, p]),
        &mut sc,
    );
    assert_eq!(
        out,
        TxOutput::Prepared {
            at: 5,
            reads: vec![]
        }
    );
    let out = tp.apply(
        p,
        7,
        &prepare(t, part(&[], &[("b", "2")]), c, &[c, p]),
        &mut sp,
    );
    assert_eq!(
        out,
        TxOutput::Prepared {
            at: 7,
            reads: vec![]
        }
    );
    // A duplicate prepare answers the first index.
    assert_eq!(
        tp.apply(
            p,
            8,
            &prepare(t, part(&[], &[("b", "2")]), c, &[c, p]),
            &mut sp
        ),
        TxOutput::Prepared {
            at: 7,
            reads: vec![]
        }
    );
    assert_eq!(tp.lock_holder("b"), Some(t));
    let decide = TxCommand::Decide {
        tx: t,
        outcome: Outcome::Committed,
        prepared: vec![(p, 7)],
    };
    let out = tc.apply(c, 9, &decide, &mut sc);
    assert_eq!(
        out,
        TxOutput::Decided {
            outcome: Outcome::Committed,
            prepared: vec![(p, 7)],
            reads: vec![],
        }
    );
    assert_eq!(sc.get("a"), Some("1"));
    // A resolver deciding abort afterwards hears the commit.
    let abort = TxCommand::Decide {
        tx: t,
        outcome: Outcome::Aborted,
        prepared: vec![],
    };
    assert_eq!(tc.apply(c, 10, &abort, &mut sc), out);
    let finish = TxCommand::Finish {
        tx: t,
        outcome: Outcome::Committed,
        prepared_at: Some(7),
    };
    tp.apply(p, 11, &finish, &mut sp);
    assert_eq!(sp.get("b"), Some("2"));
    assert!(tp.is_quiet());
    assert_eq!(tp.finished(t), Some(Outcome::Committed));
    // A stale duplicate prepare after the finish is refused; so is a re-prepare at the
    // coordinator while its record stands.
    assert_eq!(
        tp.apply(
            p,
            12,
            &prepare(t, part(&[], &[("b", "2")]), c, &[c, p]),
            &mut sp
        ),
        TxOutput::No(TxRefusal::Decided(t))
    );
    assert_eq!(tc.in_doubt().len(), 1);
    tc.apply(c, 13, &TxCommand::Forget { tx: t }, &mut sc);
    assert!(tc.is_quiet());
    // The driver's answer to its decision was lost, and a resolver finished and forgot the
    // transaction meanwhile: the driver asks again, and hears the commit, not a presumed
    // abort (which it would report to its client for a transaction that committed). So does
    // a resolver. Nothing is applied again.
    let committed = TxOutput::Decided {
        outcome: Outcome::Committed,
        prepared: vec![],
        reads: vec![],
    };
    assert_eq!(tc.apply(c, 14, &decide, &mut sc), committed);
    assert_eq!(tc.apply(c, 15, &abort, &mut sc), committed);
    assert!(tc.is_quiet());
    assert_eq!(tc.finished(t), Some(Outcome::Committed));
    assert_eq!(sc.get("a"), Some("1"));
}

#[test]
fn the_first_decision_wins_and_no_record_means_abort() {
    let (t, c, p) = (TxId::new(9, 2), 1, 2);
    let (mut tc, mut sc) = (TxTable::default(), KvStore::default());
    tc.apply(
        c,
        1,
        &prepare(t, part(&[], &[("a", "1")]), c, &[c, p]),
        &mut sc,
    );
    let abort = TxCommand::Decide {
        tx: t,
        outcome: Outcome::Aborted,
        prepared: vec![],
    };
    let aborted = TxOutput::Decided {
        outcome: Outcome::Aborted,
        prepared: vec![],
        reads: Vec::new(),
    };
    assert_eq!(tc.apply(c, 2, &abort, &mut sc), aborted);
    assert!(tc.is_quiet());
    let commit = TxCommand::Decide {
        tx: t,
        outcome: Outcome::Committed,
        prepared: vec![(p, 4)],
    };
    assert_eq!(tc.apply(c, 3, &commit, &mut sc), aborted);
    assert_eq!(sc.get("a"), None);
    // A commit that leaves out a participant is an abort too.
    let t2 = TxId::new(9, 3);
    tc.apply(
        c,
        4,
        &prepare(t2, part(&[], &[("a", "1")]), c, &[c, p, 3]),
        &mut sc,
    );
    let partial = TxCommand::Decide {
        tx: t2,
        outcome: Outcome::Committed,
        prepared: vec![(p, 4)],
    };
    assert_eq!(tc.apply(c, 5, &partial, &mut sc), aborted);
}

#[test]
fn locks_refuse_without_waiting_and_compares_are_checked() {
    let (t1, t2, c) = (TxId::new(1, 1), TxId::new(2, 1), 1);
    let (mut t, mut s) = (TxTable::default(), KvStore::default());
    t.apply(
        c,
        1,
        &prepare(t1, part(&[("x", None)], &[("y", "1")]), c, &[c, 2]),
        &mut s,
    );
    assert_eq!(t.lock_holder("x"), Some(t1));
    assert_eq!(
        t.apply(
            c,
            2,
            &prepare(t2, part(&[], &[("x", "2")]), c, &[c]),
            &mut s
        ),
        TxOutput::No(TxRefusal::Locked {
            key: "x".into(),
            holder: t1
        })
    );
    let t3 = TxId::new(3, 1);
    assert_eq!(
        t.apply(
            c,
            3,
            &TxCommand::OnePhase {
                tx: t3,
                part: part(&[("z", Some("9"))], &[("z", "1")])
            },
            &mut s
        ),
        TxOutput::No(TxRefusal::CompareFailed {
            key: "z".into(),
            expected: Some("9".into())
        })
    );
    let ok = t.apply(
        c,
        4,
        &TxCommand::OnePhase {
            tx: t3,
            part: part(&[("z", None)], &[("z", "1")]),
        },
        &mut s,
    );
    assert!(matches!(
        ok,
        TxOutput::Decided {
            outcome: Outcome::Committed,
            ..
        }
    ));
    assert_eq!(s.get("z"), Some("1"));
}

#[test]
fn reads_answer_values_under_lock_and_a_read_only_transaction_ends_only_if_still_pending() {
    let (tx, c) = (TxId::new(5, 1), 1);
    let (mut t, mut s) = (TxTable::default(), KvStore::default());
    s.apply(
        1,
        &KvCommand::Put {
            key: "a".into(),
            value: "7".into(),
        },
    );
    let read_a = TxPart {
        reads: vec!["a".into(), "b".into()],
        ..TxPart::default()
    };
    let reads = vec![
        ("a".to_string(), Some("7".to_string())),
        ("b".to_string(), None),
    ];
    assert_eq!(
        t.apply(c, 2, &prepare(tx, read_a, c, &[c, 2]), &mut s),
        TxOutput::Prepared { at: 2, reads }
    );
    assert_eq!(t.lock_holder("a"), Some(tx));
    let end = t.apply(c, 3, &TxCommand::EndReadOnly { tx }, &mut s);
    assert!(matches!(
        end,
        TxOutput::Decided {
            outcome: Outcome::Committed,
            ..
        }
    ));
    assert!(t.is_quiet(), "{t:?}");
    // Once a resolver aborted it at the coordinator, ending it answers Aborted: what it
    // read may no longer hold.
    let tx2 = TxId::new(5, 2);
    let read_b = TxPart {
        reads: vec!["b".into()],
        ..TxPart::default()
    };
    t.apply(c, 4, &prepare(tx2, read_b, c, &[c, 2]), &mut s);
    let abort = TxCommand::Decide {
        tx: tx2,
        outcome: Outcome::Aborted,
        prepared: vec![],
    };
    t.apply(c, 5, &abort, &mut s);
    let end = t.apply(c, 6, &TxCommand::EndReadOnly { tx: tx2 }, &mut s);
    assert!(matches!(
        end,
        TxOutput::Decided {
            outcome: Outcome::Aborted,
            ..
        }
    ));
}

#[test]
fn a_commit_for_a_part_prepared_at_another_index_drops_it() {
    let (tx, c, p) = (TxId::new(4, 4), 1, 2);
    let (mut t, mut s) = (TxTable::default(), KvStore::default());
    t.apply(
        p,
        20,
        &prepare(tx, part(&[], &[("b", "stale")]), c, &[c, p]),
        &mut s,
    );
    let finish = TxCommand::Finish {
        tx,
        outcome: Outcome::Committed,
        prepared_at: Some(7),
    };
    t.apply(p, 21, &finish, &mut s);
    assert_eq!(s.get("b"), None);
    assert!(t.is_quiet());
    assert_eq!(t.finished(tx), None);
}

/// "Decided already" answers a one-phase commit only when the outcome remembered is a commit
/// (the client reads it so); an id remembered as aborted is answered with the abort.
#[test]
fn a_one_phase_commit_of_an_id_remembered_as_aborted_is_told_aborted() {
    let tx = TxId::new(8, 2);
    let (mut t, mut s) = (TxTable::default(), KvStore::default());
    t.apply(1, 1, &TxCommand::EndReadOnly { tx }, &mut s);
    assert_eq!(t.finished(tx), Some(Outcome::Aborted));
    let out = t.apply(
        1,
        2,
        &TxCommand::OnePhase {
            tx,
            part: part(&[], &[("k", "v")]),
        },
        &mut s,
    );
    assert_eq!(
        out,
        TxOutput::Decided {
            outcome: Outcome::Aborted,
            prepared: Vec::new(),
            reads: Vec::new(),
        }
    );
    assert_eq!(s.get("k"), None, "nothing applied");
}

/// `ShardClient::put` sends a one-phase transaction and sends it again after a lost answer: the
/// copy that arrives after the first was applied, even after a later write to the key, is
/// answered "decided already" and changes nothing.
#[test]
fn a_one_phase_write_sent_again_applies_once() {
    let (first, later) = (TxId::new(8, 1), TxId::new(9, 1));
    let (mut t, mut s) = (TxTable::default(), KvStore::default());
    let put = |tx, value| TxCommand::OnePhase {
        tx,
        part: part(&[], &[("k", value)]),
    };
    assert!(matches!(
        t.apply(1, 1, &put(first, "old"), &mut s),
        TxOutput::Decided {
            outcome: Outcome::Committed,
            ..
        }
    ));
    t.apply(1, 2, &put(later, "new"), &mut s);
    assert_eq!(
        t.apply(1, 3, &put(first, "old"), &mut s),
        TxOutput::No(TxRefusal::Decided(first))
    );
    assert_eq!(
        s.get("k"),
        Some("new"),
        "the resent write did not apply again"
    );
}
