//! Leader completeness (Raft paper §5.4, Figure 3): "if a log entry is committed in a given
//! term, then that entry will be present in the logs of the leaders for all higher-numbered
//! terms." Checked after every step of seeded simulations (`common::sim`) of 3- and 5-node
//! clusters under message loss, duplication, jittered delays that reorder, symmetric and
//! one-way partitions, crash-restarts with torn unsynced tails, and group commit; once the
//! faults are repaired, a leader must be elected and a final proposal applied.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names its seed); `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{
    check_seeds, elect, install, node_with_log, synced, Invariant, LeaderCompleteness, Scenario,
};

/// Seeds in the normal test run.
const SEEDS: u64 = 750;

#[test]
fn leader_completeness_holds_under_faults() {
    let totals = check_seeds(SEEDS, &Scenario::default(), |sim| {
        install(sim, LeaderCompleteness::default())
    });
    totals.assert_busy();
}

/// The checker is not vacuous: a leader whose log lacks an entry committed in an earlier term
/// is reported.
#[test]
fn a_leader_missing_a_committed_entry_is_reported() {
    let mut check = LeaderCompleteness::default();
    // Planted: entries 1 and 2 of term 1 were seen committed in term 1 on node 2.
    check.committed.insert(1, (1, 1, 2));
    check.committed.insert(2, (1, 1, 2));
    // Node 1 holds only entry 1 and wins term 2.
    let mut leader = node_with_log(1, 3, 1, &[(1, "a")]);
    elect(&mut leader, 3);
    let err = check.check(&synced(&[&leader])).unwrap_err();
    assert!(
        err.starts_with(
            "leader 1 of term 2 lacks entry 2 of term 1, committed in term 1 on node 2"
        ),
        "{err}"
    );

    // With both entries it passes.
    let mut leader = node_with_log(1, 3, 1, &[(1, "a"), (1, "b")]);
    elect(&mut leader, 3);
    check.check(&synced(&[&leader])).unwrap();
}

/// The check is about the term an entry was committed in, not the term it was created in: an
/// entry of term 1 that only a leader of term 3 committed may be missing from the log of the
/// leader of term 2 (§5.4.2: a leader never commits an entry of an earlier term by counting
/// replicas; it is committed, later, with an entry of the leader's own term).
#[test]
fn an_entry_committed_in_a_later_term_is_not_required_of_an_earlier_leader() {
    let mut check = LeaderCompleteness::default();
    // Entry 2 of term 1 was first seen committed in term 3.
    check.committed.insert(1, (1, 1, 2));
    check.committed.insert(2, (1, 3, 3));
    // The leader of term 2 holds only entry 1: legal.
    let mut leader = node_with_log(1, 3, 1, &[(1, "a")]);
    elect(&mut leader, 3);
    check.check(&synced(&[&leader])).unwrap();
}
