//! State machine safety (Raft paper §5.4.3, Figure 3): if a server has applied a log entry at a
//! given index, no other server ever applies a different entry for that index; servers that
//! applied the same prefix hold the same state. Checked after every step of seeded runs under
//! drops, duplicates, reordering, partitions, crash-restarts with torn unsynced tails, and group
//! commit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{run_seeds, seeds, state_machine_safety, Observed, Plan};

#[test]
fn state_machine_safety_holds_under_faults() {
    run_seeds(seeds(500), &Plan::default(), || {
        let mut obs = Observed::default();
        Box::new(move |c| state_machine_safety(&mut obs, c))
    });
}
