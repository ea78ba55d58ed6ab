//! The atomic-commit checker accepts correct histories and names each kind of violation.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use common::check::atomic::{AtomicChecker, AtomicViolation};
use common::txn::{Outcome, TxId};

fn t(seq: u64) -> TxId {
    TxId::new(1, seq)
}

fn committed_everywhere() -> AtomicChecker {
    let mut c = AtomicChecker::new();
    c.client_outcome(t(0), Outcome::Committed, &[2, 3]);
    c.participant_outcome(2, t(0), Outcome::Committed);
    c.participant_outcome(3, t(0), Outcome::Committed);
    c.client_outcome(t(1), Outcome::Aborted, &[2, 3]);
    c.participant_outcome(2, t(1), Outcome::Aborted);
    c.set_applied(2, [t(0)]);
    c.set_applied(3, [t(0)]);
    c
}

#[test]
fn a_correct_history_passes() {
    let c = committed_everywhere();
    c.check_agreement().unwrap();
    c.check_final().unwrap();
    assert_eq!(c.reported(), 2);
    assert_eq!(c.reported_committed(), 1);
}

#[test]
fn repeated_identical_reports_are_harmless() {
    let mut c = committed_everywhere();
    c.participant_outcome(2, t(0), Outcome::Committed);
    c.client_outcome(t(0), Outcome::Committed, &[2, 3]);
    c.check_final().unwrap();
}

#[test]
fn split_decision_is_caught() {
    let mut c = AtomicChecker::new();
    c.participant_outcome(2, t(5), Outcome::Committed);
    c.participant_outcome(3, t(5), Outcome::Aborted);
    assert_eq!(
        c.check_agreement(),
        Err(AtomicViolation::Split {
            tx: t(5),
            committed_at: 2,
            aborted_at: 3
        })
    );
}

#[test]
fn a_participant_changing_its_mind_is_caught() {
    let mut c = AtomicChecker::new();
    c.participant_outcome(2, t(5), Outcome::Aborted);
    c.participant_outcome(2, t(5), Outcome::Committed);
    assert_eq!(
        c.check_agreement(),
        Err(AtomicViolation::ChangedMind {
            tx: t(5),
            participant: 2
        })
    );
}

#[test]
fn a_report_contradicted_by_a_participant_is_caught() {
    let mut c = AtomicChecker::new();
    c.client_outcome(t(0), Outcome::Aborted, &[2]);
    c.participant_outcome(2, t(0), Outcome::Committed);
    assert_eq!(
        c.check_agreement(),
        Err(AtomicViolation::ReportContradicted {
            tx: t(0),
            reported: Outcome::Aborted,
            participant: 2
        })
    );
    let mut c = AtomicChecker::new();
    c.client_outcome(t(0), Outcome::Committed, &[2]);
    c.client_outcome(t(0), Outcome::Aborted, &[2]);
    assert_eq!(
        c.check_agreement(),
        Err(AtomicViolation::ReportChanged { tx: t(0) })
    );
}

#[test]
fn a_lost_reported_commit_is_caught_only_at_the_end() {
    let mut c = committed_everywhere();
    c.set_applied(3, []);
    c.check_agreement().unwrap();
    assert_eq!(
        c.check_final(),
        Err(AtomicViolation::CommitNotApplied {
            tx: t(0),
            participant: 3
        })
    );
    // A participant that never reported any history counts as missing too.
    let mut c = AtomicChecker::new();
    c.client_outcome(t(0), Outcome::Committed, &[4]);
    assert_eq!(
        c.check_final(),
        Err(AtomicViolation::CommitNotApplied {
            tx: t(0),
            participant: 4
        })
    );
}

#[test]
fn double_application_is_caught() {
    let mut c = committed_everywhere();
    c.set_applied(2, [t(0), t(0)]);
    assert_eq!(
        c.check_agreement(),
        Err(AtomicViolation::AppliedTwice {
            tx: t(0),
            participant: 2,
            times: 2
        })
    );
}

#[test]
fn applying_an_aborted_transaction_is_caught() {
    let mut c = committed_everywhere();
    c.set_applied(3, [t(0), t(1)]);
    assert_eq!(
        c.check_agreement(),
        Err(AtomicViolation::AppliedButAborted {
            tx: t(1),
            participant: 3
        })
    );
}
