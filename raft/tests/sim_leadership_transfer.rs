//! Leadership transfer (Ongaro's thesis §3.10: TimeoutNow) issued at random to random targets,
//! under drops, duplicates, reordering, partitions, crash-restarts with torn unsynced tails and
//! group commit. Election safety, log matching, leader completeness and state machine safety
//! (paper §5.2–§5.4) are checked after every step; the cluster must still make progress once
//! the faults stop.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{all_invariants, run_seeds, seeds, Plan};

#[test]
fn invariants_hold_with_leadership_transfers_under_faults() {
    let plan = Plan {
        transfers: true,
        ..Plan::default()
    };
    run_seeds(seeds(300), &plan, all_invariants);
}
