//! The crate's error type.

use common::NodeId;

use crate::message::Slot;

/// Why a request failed or a replica could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaxosError {
    /// The configuration is invalid: fatal when a replica starts (it cannot); for a
    /// [`crate::Request::Reconfigure`] with an invalid member list, the request is refused and
    /// nothing changes.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The persisted records contradict each other (fatal: recovery refuses to guess).
    #[error("corrupt records: {0}")]
    Corrupt(String),
    /// The state machine could not be built by its factory, or refused a snapshot for a reason
    /// of its own (fatal at recovery).
    #[error("state machine: {0}")]
    StateMachine(String),
    /// The snapshot file the latest checkpoint names is not in the snapshot store (fatal at
    /// recovery: the state it holds exists nowhere else on this replica).
    #[error("the snapshot of slot {slot} (file {id}) is missing from the snapshot store")]
    SnapshotMissing {
        /// The first slot the snapshot does not cover.
        slot: Slot,
        /// The file's id in the store.
        id: u64,
    },
    /// The snapshot file the latest checkpoint names does not match its length or checksum, or
    /// its content does not decode (fatal at recovery).
    #[error("the snapshot of slot {slot} is corrupt: {reason}")]
    SnapshotCorrupt {
        /// The first slot the snapshot does not cover.
        slot: Slot,
        /// What does not match.
        reason: String,
    },
    /// The snapshot file the latest checkpoint names could not be read (fatal at recovery).
    #[error("the snapshot of slot {slot} could not be read: {reason}")]
    SnapshotIo {
        /// The first slot the snapshot does not cover.
        slot: Slot,
        /// The I/O error.
        reason: String,
    },
    /// This replica is not the leader; retry at `leader` if known. Nothing was proposed.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The replica this one believes leads, if any.
        leader: Option<NodeId>,
    },
    /// This replica stopped leading before the command's slot was decided. The command may or
    /// may not be applied: retry it with the same session to learn its outcome safely.
    #[error("leadership lost before the command was decided; outcome unknown")]
    LeadershipLost,
    /// A queue is full; nothing was proposed. Retry later.
    #[error("too many pending requests")]
    Busy,
    /// The session's sequence number is older than the last one applied for that client (or the
    /// session was forgotten): the command was not applied now, and its old output is gone.
    #[error("session sequence number {seq} of client {client} is stale")]
    SessionStale {
        /// The client.
        client: u64,
        /// The stale sequence number.
        seq: u64,
    },
}
