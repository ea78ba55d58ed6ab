//! Log compaction (Raft paper §7): snapshots taken when the log passes its limit, persisted as
//! checkpoints, and InstallSnapshot sent in chunks to followers that fell behind — under drops,
//! duplicates, reordering, partitions, crash-restarts with torn unsynced tails (recovery then
//! starts from the checkpoint) and group commit. Election safety, log matching, leader
//! completeness and state machine safety (§5.2–§5.4) are checked after every step.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{all_invariants, run_seeds, seeds, Plan};

#[test]
fn invariants_hold_with_snapshots_under_faults() {
    let plan = Plan {
        snapshot_log_entries_max: 5,
        ..Plan::default()
    };
    run_seeds(seeds(300), &plan, all_invariants);
}
