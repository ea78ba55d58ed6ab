//! Log compaction (Raft paper §7): a node snapshots its state machine once its log holds more
//! than a few applied entries, persists the snapshot as a checkpoint (recovery then starts
//! from it), and a leader sends InstallSnapshot, in chunks of a few bytes, to followers that
//! need entries it has compacted. Seeded simulations (`common::sim`) under message loss,
//! duplication, jittered delays that reorder, partitions, crash-restarts with torn unsynced
//! tails and group commit check election safety, log matching, leader completeness and state
//! machine safety (§5.2–§5.4.3) after every step, and liveness once the faults are repaired.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names its seed); `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{check_seeds, install_all, Scenario};

/// Seeds in the normal test run.
const SEEDS: u64 = 300;

#[test]
fn invariants_hold_with_snapshots_and_install_snapshot_under_faults() {
    let scenario = Scenario {
        snapshot_log_entries_max: 5,
        ..Scenario::default()
    };
    let totals = check_seeds(SEEDS, &scenario, install_all);
    totals.assert_busy();
    if totals.is_sweep() {
        assert!(totals.sum.snapshots >= totals.seeds, "{totals:?}");
        assert!(
            totals.sum.installs * 4 >= totals.seeds,
            "InstallSnapshot too rare: {totals:?}"
        );
    }
}
