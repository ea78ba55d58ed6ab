//! Log matching (Raft paper §5.3, Figure 3): "if two logs contain an entry with the same index
//! and term, then the logs are identical in all entries up through the given index." Checked
//! after every step of seeded simulations (`common::sim`) of 3- and 5-node clusters under
//! message loss, duplication, jittered delays that reorder, symmetric and one-way partitions,
//! crash-restarts with torn unsynced tails, and group commit; once the faults are repaired, a
//! leader must be elected and a final proposal applied.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names its seed); `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{check_seeds, install, node_with_log, synced, Invariant, LogMatching, Scenario};

/// Seeds in the normal test run.
const SEEDS: u64 = 750;

#[test]
fn log_matching_holds_under_faults() {
    let totals = check_seeds(SEEDS, &Scenario::default(), |sim| {
        install(sim, LogMatching::default())
    });
    totals.assert_busy();
}

/// The checker is not vacuous: logs that agree on an entry's index and term but differ in its
/// command, or in the entry before it, are reported; logs that diverge only after their last
/// common entry (as Figure 7's followers do) are not.
#[test]
fn divergent_logs_are_reported() {
    let a = node_with_log(1, 3, 2, &[(1, "x"), (1, "y"), (2, "z")]);
    let same_term_other_command = node_with_log(2, 3, 2, &[(1, "x"), (1, "w")]);
    let err = LogMatching::default()
        .check(&synced(&[&a, &same_term_other_command]))
        .unwrap_err();
    assert!(
        err.starts_with("entry (2, term 1) differs between logs"),
        "{err}"
    );

    let other_prefix = node_with_log(3, 3, 2, &[(1, "x"), (2, "q"), (2, "z")]);
    let err = LogMatching::default()
        .check(&synced(&[&a, &other_prefix]))
        .unwrap_err();
    assert!(
        err.starts_with("entry (3, term 2) differs between logs"),
        "{err}"
    );

    let diverges_after = node_with_log(3, 3, 3, &[(1, "x"), (1, "y"), (3, "v"), (3, "u")]);
    LogMatching::default()
        .check(&synced(&[&a, &diverges_after]))
        .unwrap();
}
