//! Two-phase commit for the benchmarks and the shootout: [`TwoPc`], the instantiation of the
//! generic adapter of [`crate::commit`] (which describes the clusters and the shootout operation),
//! and its theory: 4 messages per participant ([`THEORY_MESSAGES_PER_PARTICIPANT`]), so
//! `4 * (nodes - 1)` per operation; a transaction with one participant takes two (one-phase
//! commit).

use common::NodeId;
use twopc::{Config, TwoPcNode};

use crate::commit::{self, CommitProtocol};
pub use crate::commit::{members, writes_for, COORDINATOR, KEYS_PER_PARTICIPANT};

/// Messages per participant of a committing transaction, in theory: Prepare, Vote, Commit, Ack.
pub const THEORY_MESSAGES_PER_PARTICIPANT: u64 = 4;

/// Two-phase commit as a shootout contender and benchmark subject (see [`crate::commit`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct TwoPc;

impl CommitProtocol for TwoPc {
    type Node = TwoPcNode;
    const NAME: &'static str = "2pc";
    const ROUNDS: u32 = 2;
    const MESSAGES_PER_PARTICIPANT: u64 = THEORY_MESSAGES_PER_PARTICIPANT;

    fn config(id: NodeId, members: Vec<NodeId>) -> Config {
        Config::new(id, members)
    }
}

commit::protocol_types!(TwoPc, TwoPcCluster);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::checks;

    #[test]
    fn a_committing_transaction_costs_four_messages_per_participant() {
        checks::core_commit_costs::<TwoPc>(|n| {
            if n == 1 {
                2 // one-phase commit: OnePhaseCommit and its result
            } else {
                THEORY_MESSAGES_PER_PARTICIPANT * n as u64
            }
        });
    }

    #[tokio::test]
    async fn the_contender_commits_with_the_theoretical_message_count() {
        checks::contender_commits_with_theory_messages::<TwoPc>().await;
    }
}
