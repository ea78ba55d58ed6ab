//! Log matching (Raft paper §5.3, Figure 3): if two logs contain an entry with the same index
//! and term, the logs are identical in all entries up through that index. Checked after every
//! step of seeded runs under drops, duplicates, reordering, partitions, crash-restarts with torn
//! unsynced tails, and group commit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use sim_support::{log_matching, run_seeds, seeds, Plan};

#[test]
fn log_matching_holds_under_faults() {
    run_seeds(seeds(500), &Plan::default(), || Box::new(log_matching));
}
