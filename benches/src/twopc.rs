//! Two-phase commit for the benchmarks and the shootout: an in-process cluster of cores pumped
//! by hand (the protocol's own cost and its message count) and a cluster on the shared driver over
//! the in-memory network (end to end); and the shootout contender [`TwoPc`].
//!
//! In the shootout, node 1 coordinates and every other node is a participant. Client `c`'s
//! operation is one transaction writing its command to key `c{c}` at every participant (each
//! client has its own keys, so concurrent transactions never conflict); it completes when the
//! coordinator answers Committed. Theory: 4 messages per participant
//! ([`THEORY_MESSAGES_PER_PARTICIPANT`]), so `4 * (nodes - 1)` per operation.

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

/// Cores of twopc in one process, pumped by hand.
pub type CoreCluster = commit::CoreCluster<TwoPc>;
/// A twopc cluster on the shared driver.
pub type DriverCluster = commit::DriverCluster<TwoPc>;
/// A running shootout cluster of twopc.
pub type TwoPcCluster = commit::CommitCluster<TwoPc>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterSpec, Contender};
    use common::txn::Outcome;

    #[test]
    fn a_committing_transaction_costs_four_messages_per_participant() {
        for n in [1usize, 3, 5] {
            let mut cluster = CoreCluster::new(n);
            let (outcome, messages) = cluster.commit(0);
            assert_eq!(outcome, Some(Outcome::Committed));
            let expected = if n == 1 {
                2 // one-phase commit: OnePhaseCommit and its result
            } else {
                THEORY_MESSAGES_PER_PARTICIPANT * n as u64
            };
            assert_eq!(messages, expected, "{n} participants");
        }
    }

    #[tokio::test]
    async fn the_contender_commits_with_the_theoretical_message_count() {
        let spec = ClusterSpec::new(4, crate::TransportKind::Memory, false, 5);
        let cluster = TwoPc.start(&spec).await.unwrap();
        let ops = 20u64;
        for seq in 0..ops {
            cluster.run_op((seq % 3) as usize, seq).await.unwrap();
        }
        cluster.shutdown().await.unwrap();
        // Acks may still be in flight when the last answer arrives; after shutdown every node's
        // counters are final. 4 messages per participant, 3 participants.
        let sent = cluster.stats().messages_sent;
        assert!(
            sent <= ops * 4 * 3,
            "{sent} messages for {ops} transactions"
        );
        assert!(
            sent >= (ops - 1) * 4 * 3,
            "{sent} messages for {ops} transactions"
        );
    }
}
