//! State machine safety (Raft paper §5.4.3, Figure 3): "if a server has applied a log entry at
//! a given index to its state machine, no other server will ever apply a different log entry
//! for the same index." Checked after every step, on both the entries applied and the state
//! they produce (which covers states installed from snapshots), in seeded simulations
//! (`common::sim`) of 3- and 5-node clusters under message loss, duplication, jittered delays
//! that reorder, symmetric and one-way partitions, crash-restarts with torn unsynced tails, and
//! group commit; once the faults are repaired, a leader must be elected and a final proposal
//! applied.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names its seed); `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use common::{Node, NodeId, Outbox};
use raft::kv::KvCommand;
use raft::{Entry, Message, Payload};
use sim_support::{
    check_seeds, install, plain_config, put, synced, Invariant, Scenario, StateMachineSafety, N,
};

/// Seeds in the normal test run.
const SEEDS: u64 = 750;

#[test]
fn state_machine_safety_holds_under_faults() {
    let totals = check_seeds(SEEDS, &Scenario::default(), |sim| {
        install(sim, StateMachineSafety::default())
    });
    totals.assert_busy();
}

/// A fresh follower of voters 1..=3 that accepted `entries` from leader 1 in term 1 with
/// everything committed, so it applied them.
fn follower_applying(id: NodeId, values: &[&str]) -> N {
    let mut n = N::recover(plain_config(id, 3).into(), vec![]).unwrap();
    let entries: Vec<Entry<KvCommand>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Entry {
            term: 1,
            index: i as u64 + 1,
            payload: Payload::Command(put(v)),
        })
        .collect();
    let last = entries.len() as u64;
    let append = Message::AppendEntries {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: entries.into(),
        leader_commit: last,
        read_seq: 1,
    };
    n.handle_message(1, append, &mut Outbox::new());
    assert_eq!(n.applied_index(), last);
    n
}

/// The checker is not vacuous: two nodes that applied different commands at the same index are
/// reported, whether they are seen at the same step or one after the other, and so are equal
/// indexes with different states.
#[test]
fn divergent_applied_entries_are_reported() {
    let b = follower_applying(2, &["x", "y"]);
    let c = follower_applying(3, &["x", "z"]);
    let err = StateMachineSafety::default()
        .check(&synced(&[&b, &c]))
        .unwrap_err();
    assert!(err.starts_with("node 3 applied Command(Put"), "{err}");
    assert!(err.contains("at 2; node 2 applied"), "{err}");

    let mut check = StateMachineSafety::default();
    check.check(&synced(&[&b])).unwrap();
    assert!(check.check(&synced(&[&c])).is_err());

    let mut check = StateMachineSafety::default();
    check.observe_state(1, 7, 0xAAAA).unwrap();
    check.observe_state(2, 7, 0xAAAA).unwrap();
    check.observe_state(2, 8, 0xBBBB).unwrap();
    let err = check.observe_state(3, 7, 0xCCCC).unwrap_err();
    assert_eq!(
        err,
        "nodes 1 and 3 applied up to 7 but hold different states"
    );
}
