//! What three-phase commit sends and logs: a participant's [`State`] (Skeen's states), the wire
//! [`Message`]s of the protocol and of its termination protocol, and the [`Record`]s a node
//! persists.

use common::txn::{Outcome, TxId, Vote, Write};
use common::NodeId;
use serde::{Deserialize, Serialize};

/// A participant's state for one transaction (Skeen's states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    /// Has not voted.
    Initial,
    /// Voted Yes; does not know whether everyone did.
    Uncertain,
    /// Knows everyone voted Yes; will commit unless it learns of an abort.
    PreCommitted,
    /// Committed.
    Committed,
    /// Aborted.
    Aborted,
}

/// Messages of three-phase commit and of its termination protocol.
///
/// A committing transaction costs 6 messages per participant: CanCommit, Vote, PreCommit,
/// PreCommitAck, DoCommit, HaveCommitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Coordinator → participant: here are your writes; can you commit?
    CanCommit {
        /// The transaction.
        tx: TxId,
        /// This participant's writes.
        writes: Vec<Write>,
        /// Every participant of the transaction (for the termination protocol).
        participants: Vec<NodeId>,
    },
    /// Participant → coordinator: Yes or No.
    Vote {
        /// The transaction.
        tx: TxId,
        /// The vote ([`Vote::ReadOnly`] is not used by 3PC and counts as No).
        vote: Vote,
    },
    /// Coordinator or backup → participant: everyone voted Yes; move to PreCommitted.
    PreCommit {
        /// The transaction.
        tx: TxId,
    },
    /// Participant → coordinator or backup: PreCommitted is durable here.
    PreCommitAck {
        /// The transaction.
        tx: TxId,
    },
    /// Coordinator or backup → participant: commit.
    DoCommit {
        /// The transaction.
        tx: TxId,
    },
    /// Participant → coordinator: the commit is durable here.
    HaveCommitted {
        /// The transaction.
        tx: TxId,
    },
    /// Coordinator or backup → participant: abort.
    Abort {
        /// The transaction.
        tx: TxId,
    },
    /// Backup coordinator → participant: what is your state?
    StateRequest {
        /// The transaction.
        tx: TxId,
    },
    /// Participant → the participant it elected backup coordinator: the coordinator is taken as
    /// crashed; start the termination protocol.
    TerminationStart {
        /// The transaction.
        tx: TxId,
    },
    /// Participant → backup coordinator.
    StateReply {
        /// The transaction.
        tx: TxId,
        /// The participant's state.
        state: State,
        /// Whether the participant crashed and restarted since it voted: its undecided state is
        /// then not used by an operational backup (it may be stale).
        recovering: bool,
    },
    /// Anyone → anyone who may know: what was decided?
    DecisionRequest {
        /// The transaction.
        tx: TxId,
    },
    /// Coordinator → participant, answering a [`Message::DecisionRequest`]: the coordinator has
    /// not decided commit and never will (it has no record of the transaction, or it recovered
    /// without a commit decision). Lets recovered participants decide among themselves.
    NoDecision {
        /// The transaction.
        tx: TxId,
    },
    /// The answer to a [`Message::DecisionRequest`], from a node that knows; also a participant's
    /// answer to a [`Message::DoCommit`] for a transaction it aborted (after a split), so that
    /// the coordinator stops resending it.
    Decision {
        /// The transaction.
        tx: TxId,
        /// The outcome.
        outcome: Outcome,
    },
}

/// What a node persists: the participant's vote, pre-commit and decision, and the coordinator's
/// pre-commit and commit decisions, each forced before the message that reveals it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Coordinator: sequence numbers below `seq_limit` may have been used.
    Reserved {
        /// The first sequence number not yet reserved.
        seq_limit: u64,
    },
    /// Coordinator: every participant voted Yes; PreCommit is being sent.
    PreCommitDecision {
        /// The transaction.
        tx: TxId,
        /// Its participants.
        participants: Vec<NodeId>,
    },
    /// Coordinator: `tx` commits.
    CommitDecision {
        /// The transaction.
        tx: TxId,
        /// Its participants.
        participants: Vec<NodeId>,
    },
    /// Coordinator: `tx` is finished and may be forgotten.
    End {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: voted Yes on `tx` (Uncertain), with its writes.
    Voted {
        /// The transaction.
        tx: TxId,
        /// Its coordinator.
        coordinator: NodeId,
        /// Every participant.
        participants: Vec<NodeId>,
        /// The writes staged here.
        writes: Vec<Write>,
    },
    /// Participant: PreCommitted.
    PreCommitted {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: committed.
    Committed {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: aborted (also a refusal to vote given to a backup).
    Aborted {
        /// The transaction.
        tx: TxId,
    },
}
