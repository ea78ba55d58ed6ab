//! Membership change (Raft paper §6; Ongaro's thesis chapter 4): single-server additions and
//! removals (§4.1), learners that catch up before they vote and their promotion (§4.2.1),
//! joint consensus for arbitrary changes (§6, thesis §4.3) and removal of the leader itself
//! (§4.2.2). Two spare nodes start outside the initial configuration (one of them down, joining
//! mid-run); the operator asks whoever leads for random changes in seeded simulations
//! (`common::sim`) under message loss, duplication, jittered delays that reorder, partitions,
//! crash-restarts with torn unsynced tails and group commit. Election safety, log matching,
//! leader completeness and state machine safety (§5.2–§5.4.3) are checked after every step;
//! once the faults are repaired, the configuration in force must elect a leader and apply a
//! final proposal.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names its seed); `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{check_seeds, install_all, Scenario};

/// Seeds in the normal test run, per test.
const SEEDS: u64 = 300;

#[test]
fn invariants_hold_with_membership_changes_under_faults() {
    let scenario = Scenario {
        membership: true,
        ..Scenario::default()
    };
    let totals = check_seeds(SEEDS, &scenario, install_all);
    totals.assert_busy();
    if totals.is_sweep() {
        let s = &totals.sum;
        assert!(s.membership_changes >= totals.seeds, "{totals:?}");
        // Every kind of change happened, and spares joined.
        for (what, n) in [
            ("learners added", s.learners_added),
            ("voters added", s.voters_added),
            ("nodes removed", s.nodes_removed),
            ("leaders removed", s.leaders_removed),
            ("joint consensus changes", s.joint_changes),
            ("spares joined", s.spares_joined),
        ] {
            assert!(n > 0, "no {what}: {totals:?}");
        }
    }
}

/// The same with snapshots: configurations travel inside snapshots (§7) and checkpoints, and a
/// node that joins late catches up by InstallSnapshot.
#[test]
fn invariants_hold_with_membership_changes_and_snapshots_under_faults() {
    let scenario = Scenario {
        membership: true,
        snapshot_log_entries_max: 5,
        ..Scenario::default()
    };
    let totals = check_seeds(SEEDS, &scenario, install_all);
    totals.assert_busy();
    if totals.is_sweep() {
        assert!(totals.sum.membership_changes >= totals.seeds, "{totals:?}");
        assert!(totals.sum.installs > 0, "{totals:?}");
    }
}

/// Seeds 2024 and 2342 of the membership sweep (`SIM_SEEDS=3000` finds the first; seeds
/// 2025..7000 hold one more). In 2024, node 5, leader of voters {2, 5}, appends a
/// configuration removing itself, steps down by check-quorum while node 2 is down, and crashes
/// before the removal commits. In 2342, node 5, sole voter of the old half of a joint
/// configuration, appends the new half {3, 4} and crashes before it commits. Either way no
/// leader is elected again: the other voters need node 5's vote, which it refuses because its
/// log is longer, and after its restart node 5 never campaigns (thesis §4.1 says it should
/// until its removal commits). See the core unit test
/// `removed_node_still_campaigns_after_a_restart_until_its_removal_commits`.
#[test]
fn removed_leader_restarting_before_its_removal_commits_does_not_stall_the_cluster() {
    let scenario = Scenario {
        membership: true,
        ..Scenario::default()
    };
    for seed in [2024, 2342] {
        if let Err(e) = sim_support::run(seed, &scenario, &install_all) {
            panic!("{e}");
        }
    }
}

/// Seed 4018 of the membership sweep (`SIM_SEEDS=6000` finds it). Node 4 leads voters
/// {1, 2, 4, 7} into a joint configuration whose new half is {4} alone, and commits the joint
/// entry together with the command after it. Applying the joint entry appends the new
/// configuration, which node 4 commits on its own at once; that inner commit applied the
/// command a second time, and state machine safety failed between node 4 and node 5, which
/// applied the same log once. See the core unit test
/// `a_commit_made_while_applying_does_not_apply_an_entry_twice`.
#[test]
fn a_leader_committing_its_new_configuration_alone_applies_each_entry_once() {
    let scenario = Scenario {
        membership: true,
        ..Scenario::default()
    };
    if let Err(e) = sim_support::run(4018, &scenario, &install_all) {
        panic!("{e}");
    }
}

/// Seed 12371 of the snapshot membership sweep (`SIM_SEED_FIRST=6000 SIM_SEEDS=8000` finds
/// it). Node 1 leads voters {1, 3}, appends a configuration of {3} alone and crashes. Node 3,
/// now its configuration's only voter, elected itself in term 3 at once and crashed before the
/// record of its vote was written; it came back in term 2 and voted for node 1 (a removed
/// leader campaigns until its removal commits, thesis §4.1), which won term 3 too: two leaders
/// of one term (§5.2). A lone candidate now leads only once its vote is durable; see
/// `section_5_2_one_round_election_outcomes`.
#[test]
fn a_lone_voter_leads_only_once_its_vote_is_durable() {
    let scenario = Scenario {
        membership: true,
        snapshot_log_entries_max: 5,
        ..Scenario::default()
    };
    if let Err(e) = sim_support::run(12_371, &scenario, &install_all) {
        panic!("{e}");
    }
}
