//! Leadership transfer (Ongaro's thesis §3.10): a leader asked to hand over stops accepting
//! proposals, brings the target up to date, and sends it TimeoutNow; the target starts an
//! election at once. The operator asks random leaders to transfer to random nodes (voters,
//! learners, itself, nodes that are down) in seeded simulations (`common::sim`) under message
//! loss, duplication, jittered delays that reorder, partitions, crash-restarts with torn
//! unsynced tails and group commit. Election safety, log matching, leader completeness and
//! state machine safety (§5.2–§5.4.3) are checked after every step; once the faults are
//! repaired, a leader must be elected and a final proposal applied.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names its seed); `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{check_seeds, install_all, Scenario};

/// Seeds in the normal test run.
const SEEDS: u64 = 300;

#[test]
fn invariants_hold_with_leadership_transfers_under_faults() {
    let scenario = Scenario {
        transfers: true,
        ..Scenario::default()
    };
    let totals = check_seeds(SEEDS, &scenario, install_all);
    totals.assert_busy();
    if totals.is_sweep() {
        assert!(totals.sum.transfers >= totals.seeds, "{totals:?}");
        assert!(
            totals.sum.transfers_completed * 4 >= totals.sum.transfers,
            "few transfers ended with the target leading: {totals:?}"
        );
    }
}
