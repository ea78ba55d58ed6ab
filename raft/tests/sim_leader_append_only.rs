//! Leader append-only (Raft paper §5.3, Figure 3): "a leader never overwrites or deletes
//! entries in its log; it only appends new entries." Checked after every step of seeded
//! simulations (`common::sim`) of 3- and 5-node clusters under message loss, duplication,
//! jittered delays that reorder, symmetric and one-way partitions, crash-restarts with torn
//! unsynced tails, and group commit; once the faults are repaired, a leader must be elected and
//! a final proposal applied.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names its seed); `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{
    check_seeds, elect, install, node_with_log, synced, Invariant, LeaderAppendOnly, Scenario,
};

/// Seeds in the normal test run.
const SEEDS: u64 = 500;

#[test]
fn leader_append_only_holds_under_faults() {
    let totals = check_seeds(SEEDS, &Scenario::default(), |sim| {
        install(sim, LeaderAppendOnly::default())
    });
    totals.assert_busy();
}

/// The checker is not vacuous: a leader whose entry changes within its term is reported; the
/// same log seen again is not.
#[test]
fn a_leader_overwriting_its_log_is_reported() {
    // Both win term 2; the first holds entries a, b, then its no-op; the second a, no-op.
    let mut before = node_with_log(1, 3, 1, &[(1, "a"), (1, "b")]);
    elect(&mut before, 3);
    let mut after = node_with_log(1, 3, 1, &[(1, "a")]);
    elect(&mut after, 3);
    let mut check = LeaderAppendOnly::default();
    check.check(&synced(&[&before])).unwrap();
    check.check(&synced(&[&before])).unwrap();
    let err = check.check(&synced(&[&after])).unwrap_err();
    assert_eq!(
        err,
        "leader 1 of term 2 replaced or removed entry 2 (term 1, now Some(2))"
    );

    let mut check = LeaderAppendOnly::default();
    check.check(&synced(&[&after])).unwrap();
    check.check(&synced(&[&before])).unwrap_err(); // entry 2 went from term 2 to term 1
    let mut shorter = node_with_log(1, 3, 1, &[]);
    elect(&mut shorter, 3);
    let mut check = LeaderAppendOnly::default();
    check.check(&synced(&[&shorter])).unwrap();
    check.check(&synced(&[&after])).unwrap_err(); // entry 1 went from term 2 to term 1
}
