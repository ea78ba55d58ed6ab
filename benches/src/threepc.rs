//! Three-phase commit for the benchmarks and the shootout: [`ThreePc`], the instantiation of
//! the generic adapter of [`crate::commit`] (which describes the clusters and the shootout
//! operation), and its theory: 6 messages per participant ([`THEORY_MESSAGES_PER_PARTICIPANT`]),
//! so `6 * (nodes - 1)` per operation, whatever the number of participants.

use common::NodeId;
use threepc::{Config, ThreePcNode};

use crate::commit::{self, CommitProtocol};
pub use crate::commit::{members, writes_for, COORDINATOR, KEYS_PER_PARTICIPANT};

/// Messages per participant of a committing transaction, in theory: CanCommit, Vote, PreCommit,
/// PreCommitAck, DoCommit, HaveCommitted.
pub const THEORY_MESSAGES_PER_PARTICIPANT: u64 = 6;

/// Three-phase commit as a shootout contender and benchmark subject (see [`crate::commit`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreePc;

impl CommitProtocol for ThreePc {
    type Node = ThreePcNode;
    const NAME: &'static str = "3pc";
    const ROUNDS: u32 = 3;
    const MESSAGES_PER_PARTICIPANT: u64 = THEORY_MESSAGES_PER_PARTICIPANT;

    fn config(id: NodeId, members: Vec<NodeId>) -> Config {
        Config::new(id, members)
    }
}

commit::protocol_types!(ThreePc, ThreePcCluster);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::checks;

    #[test]
    fn a_committing_transaction_costs_six_messages_per_participant() {
        checks::core_commit_costs::<ThreePc>(|n| THEORY_MESSAGES_PER_PARTICIPANT * n as u64);
    }

    #[tokio::test]
    async fn the_contender_commits_with_the_theoretical_message_count() {
        checks::contender_commits_with_theory_messages::<ThreePc>().await;
    }
}
