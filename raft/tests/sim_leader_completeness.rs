//! Leader completeness (Raft paper §5.4, Figure 3): if an entry is committed in a given term,
//! it is present in the logs of the leaders of all higher terms. Checked after every step of
//! seeded runs under drops, duplicates, reordering, partitions, crash-restarts with torn
//! unsynced tails, and group commit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{leader_completeness, run_seeds, seeds, Observed, Plan};

#[test]
fn leader_completeness_holds_under_faults() {
    run_seeds(seeds(500), &Plan::default(), || {
        let mut obs = Observed::default();
        Box::new(move |c| leader_completeness(&mut obs, c))
    });
}
