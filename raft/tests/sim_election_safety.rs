//! Election safety (Raft paper §5.2, Figure 3): at most one leader can be elected in a given
//! term. Checked after every step of seeded runs under drops, duplicates, reordering, partitions,
//! crash-restarts with torn unsynced tails, and group commit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{election_safety, run_seeds, seeds, Observed, Plan};

#[test]
fn election_safety_holds_under_faults() {
    run_seeds(seeds(500), &Plan::default(), || {
        let mut obs = Observed::default();
        Box::new(move |c| election_safety(&mut obs, c))
    });
}
