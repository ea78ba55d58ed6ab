//! What two-phase commit sends and logs: the wire [`Message`]s between coordinators and
//! participants (with [`PeerStatus`], a peer's answer in cooperative termination) and the
//! [`Record`]s a node persists.

use common::txn::{Outcome, TxId, Vote, Write};
use common::NodeId;
use serde::{Deserialize, Serialize};

/// Messages between coordinators and participants.
///
/// A committing transaction costs 4 messages per participant that writes (Prepare, Vote,
/// Commit, Ack), 2 per read-only participant (Prepare, Vote), and 2 in all with a single
/// participant (one-phase commit). An aborting one costs no Ack (presumed abort).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Coordinator → participant: here are your writes; can you commit?
    Prepare {
        /// The transaction.
        tx: TxId,
        /// What this participant must write (empty: it has nothing to do and votes ReadOnly).
        writes: Vec<Write>,
        /// The participants that write, for cooperative termination.
        peers: Vec<NodeId>,
    },
    /// Participant → coordinator: the answer to a Prepare.
    Vote {
        /// The transaction.
        tx: TxId,
        /// Yes, No or ReadOnly.
        vote: Vote,
    },
    /// Coordinator → the only participant: commit these writes if you can, deciding yourself.
    OnePhaseCommit {
        /// The transaction.
        tx: TxId,
        /// Its writes.
        writes: Vec<Write>,
    },
    /// Participant → coordinator: how a one-phase commit ended.
    OnePhaseResult {
        /// The transaction.
        tx: TxId,
        /// Its outcome.
        outcome: Outcome,
    },
    /// Coordinator → participant: the decision is commit.
    Commit {
        /// The transaction.
        tx: TxId,
    },
    /// Coordinator → participant: the decision is abort (never acknowledged).
    Abort {
        /// The transaction.
        tx: TxId,
    },
    /// Participant → coordinator: the commit is durable here.
    Ack {
        /// The transaction.
        tx: TxId,
    },
    /// In-doubt participant → coordinator: what was decided? Answered with Commit or Abort.
    DecisionRequest {
        /// The transaction.
        tx: TxId,
    },
    /// In-doubt participant → peer participant: what do you know? (cooperative termination)
    StatusQuery {
        /// The transaction.
        tx: TxId,
    },
    /// Peer → in-doubt participant: the answer to a [`Message::StatusQuery`].
    StatusReply {
        /// The transaction.
        tx: TxId,
        /// What the peer knows.
        status: PeerStatus,
    },
}

/// What a participant knows of a transaction, as told to an in-doubt peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerStatus {
    /// It committed: the outcome is commit.
    Committed,
    /// It aborted, or had not voted and now never will vote Yes: the outcome is abort.
    Aborted,
    /// It is prepared and in doubt too: no help.
    Prepared,
}

/// What a node persists. Participant records: `Prepared` (forced before voting Yes), `Committed`
/// (forced before acking), `Aborted` (lazy after an abort: nothing is acked, so no message waits
/// for it; forced only where the participant itself decides: a failed one-phase commit, or a
/// refusal to vote given to an in-doubt peer). Coordinator records:
/// `Reserved` (sequence numbers), `CommitDecision` (forced before any Commit leaves) and `End`
/// (lazy: nothing waits for it). There is no coordinator abort record: presumed abort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Coordinator: sequence numbers below `seq_limit` may have been used.
    Reserved {
        /// The first sequence number not yet reserved.
        seq_limit: u64,
    },
    /// Coordinator: `tx` commits; `participants` voted Yes and must learn it.
    CommitDecision {
        /// The transaction.
        tx: TxId,
        /// The participants that voted Yes.
        participants: Vec<NodeId>,
    },
    /// Coordinator: every Yes voter acknowledged the commit of `tx`; it may be forgotten.
    End {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: prepared `tx` with these writes; it votes Yes.
    Prepared {
        /// The transaction.
        tx: TxId,
        /// Its coordinator.
        coordinator: NodeId,
        /// The participants that write, for cooperative termination.
        peers: Vec<NodeId>,
        /// The writes staged here.
        writes: Vec<Write>,
    },
    /// Participant: `tx` committed here.
    Committed {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: `tx` aborted here and must never be voted Yes.
    Aborted {
        /// The transaction.
        tx: TxId,
    },
}
