//! Membership change (Raft paper §6; Ongaro's thesis §4: single-server changes, learners,
//! joint consensus, removal of the leader) issued at random under drops, duplicates,
//! reordering, partitions, crash-restarts with torn unsynced tails and group commit. Two spare
//! nodes may join. Election safety, log matching, leader completeness and state machine safety
//! (§5.2–§5.4) are checked after every step; once the faults stop, the configuration in force
//! must still elect a leader and commit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{all_invariants, run_seeds, seeds, Plan};

#[test]
fn invariants_hold_with_membership_changes_under_faults() {
    let plan = Plan {
        membership: true,
        ..Plan::default()
    };
    run_seeds(seeds(300), &plan, all_invariants);
}

/// The same with snapshots: configurations travel inside snapshots (§7) and checkpoints.
#[test]
fn invariants_hold_with_membership_changes_and_snapshots_under_faults() {
    let plan = Plan {
        membership: true,
        snapshot_log_entries_max: 5,
        ..Plan::default()
    };
    run_seeds(seeds(200), &plan, all_invariants);
}
