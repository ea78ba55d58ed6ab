//! The crate's errors: [`RaftError`] for requests a node refuses or cannot complete, and
//! [`RecoverError`] for a node that cannot be rebuilt from its configuration and records.

use common::NodeId;

use crate::message::LogIndex;

/// Why a client request failed. The request is handed back to the caller in the sense that
/// nothing of it was applied unless the variant says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// This node is not the leader. `leader` is the node it believes leads, when it knows one:
    /// retry there. Nothing was appended to the log.
    #[error("not the leader{}", match .leader { Some(l) => format!(", try node {l}"), None => String::from(", leader unknown") })]
    NotLeader {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
    /// The entry of this proposal was appended at `index` but later replaced by another leader's
    /// entry: it was never applied and never will be. Retrying is safe.
    #[error(
        "proposal at index {index} was replaced by another leader's entry; it was not applied"
    )]
    Dropped {
        /// Where the proposal had been appended.
        index: LogIndex,
    },
    /// A limit was hit (pending proposals, uncommitted bytes, pending reads). Nothing was
    /// appended; retry later.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// A leadership transfer is in progress; proposals are refused until it ends.
    #[error("leadership transfer to node {0} in progress")]
    TransferInProgress(NodeId),
    /// The request names a node that is not a member of the cluster, or is otherwise invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The node lost its leadership, or installed a snapshot that covers the proposal's index,
    /// before learning the entry's fate: the command may or may not be applied.
    #[error("outcome of the proposal at index {index} is unknown (leadership lost or snapshot installed)")]
    Indeterminate {
        /// Where the proposal had been appended.
        index: LogIndex,
    },
    /// The transfer target did not catch up in time; this node is still the leader.
    #[error("leadership transfer to node {target} timed out")]
    TransferTimedOut {
        /// The intended new leader.
        target: NodeId,
    },
    /// A read could not be confirmed because this node lost its leadership meanwhile.
    #[error("leadership lost before the read was confirmed{}", match .leader { Some(l) => format!(", try node {l}"), None => String::new() })]
    LeadershipLost {
        /// The leader this node knows of, if any.
        leader: Option<NodeId>,
    },
}

/// Why a node could not be rebuilt (see [`common::Node::recover`]).
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The persisted records contradict each other (a gap in the log, a term going backwards):
    /// the storage is damaged and recovery refuses to guess.
    #[error("corrupt records: {0}")]
    Corrupt(String),
    /// The snapshot the checkpoint names is missing or damaged, or the state machine could not
    /// be restored from it.
    #[error("snapshot restore failed: {0}")]
    Snapshot(#[from] common::SnapshotError),
    /// The state machine could not be built (its factory failed).
    #[error("state machine could not be opened: {0}")]
    StateMachine(#[from] common::StateMachineError),
}
