//! What an atomic-commit protocol plugs into the shared skeleton: the client's request and
//! answer ([`Request`], [`Response`]), the error both protocols report ([`TxError`]), and the
//! [`AtomicCommit`] trait through which the skeleton, the client, the test suite and the
//! benchmarks reach a protocol's records, events and metrics without knowing its phases.
//!
//! Everything here is sans-IO: no task, socket or clock.

use std::collections::BTreeMap;

use super::{Outcome, Resource, TxId, Write};
use crate::{Node, NodeId};

/// A client request to a coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Run a transaction: the writes of each participant. An empty list enlists a participant
    /// without writes (what it then does is the protocol's). Answered with
    /// [`Response::Outcome`] once decided.
    Commit {
        /// Writes per participant.
        writes: BTreeMap<NodeId, Vec<Write>>,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The coordinator decided (a commit is durable at the coordinator, or, for two-phase
    /// commit's one-phase optimisation, at the only participant).
    Outcome {
        /// The transaction's id.
        tx: TxId,
        /// Its outcome.
        outcome: Outcome,
    },
    /// The request failed. The transaction, if one was started, may still end either way only
    /// for [`TxError::OutcomeUnknown`]; otherwise it did not commit.
    Failed(TxError),
}

/// Errors of the atomic-commit protocols.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The node could not be rebuilt from its records (a corrupt or foreign log).
    #[error("recovery failed: {0}")]
    Recovery(String),
    /// A transaction must name between one and `participants_max` participants, all members,
    /// and not the coordinator itself.
    #[error("invalid participants {0:?}")]
    InvalidParticipants(Vec<NodeId>),
    /// The coordinator has too many transactions in progress; retry later.
    #[error("too many transactions in progress")]
    Busy,
    /// A transaction its only participant decides alone (two-phase commit's one-phase
    /// optimisation) got no answer: only that participant knows whether it committed. Three-phase
    /// commit never reports it.
    #[error("outcome of {0} unknown: its only participant did not answer")]
    OutcomeUnknown(TxId),
}

/// The counters every atomic-commit node reports, read from its metrics by
/// [`AtomicCommit::counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Coordinator: transactions in progress.
    pub coordinating: usize,
    /// Participant: transactions voted on here whose outcome is not known yet (in doubt,
    /// uncertain or pre-committed).
    pub undecided: usize,
    /// Participant: transactions committed here.
    pub applied: u64,
    /// Participant: transactions aborted here.
    pub aborted: u64,
    /// Messages rejected.
    pub rejected: u64,
    /// Participant: decisions that contradicted one already taken here (each is a transaction
    /// decided both ways: atomicity broken).
    pub decision_conflicts: u64,
}

/// An atomic-commit protocol as the shared skeleton sees it: a [`Node`] answering the shared
/// [`Request`] with the shared [`Response`], plus the few protocol-specific values the shared
/// code needs to build (records, events) or read (events, metrics).
pub trait AtomicCommit: Node<Request = Request, Response = Response, Error = TxError> {
    /// The participant status [`TxClient::status`](super::TxClient) returns.
    type Status;
    /// The participant's resource manager.
    type Resource: Resource;

    /// The protocol's name in logs (`"twopc"`, `"threepc"`).
    const NAME: &'static str;

    /// The participant's resource (its data), for inspection.
    fn resource(&self) -> &Self::Resource;

    /// Coordinator record: sequence numbers below `seq_limit` may have been used.
    fn reserved_record(seq_limit: u64) -> Self::Record;

    /// Participant record: `tx` committed here.
    fn committed_record(tx: TxId) -> Self::Record;

    /// Participant record: `tx` aborted here and must never be voted Yes.
    fn aborted_record(tx: TxId) -> Self::Record;

    /// Coordinator event: `tx` was decided.
    fn decided_event(tx: TxId, outcome: Outcome) -> Self::Event;

    /// Participant event: `tx` ended here.
    fn finished_event(tx: TxId, outcome: Outcome) -> Self::Event;

    /// The transaction and outcome of a participant's `Finished` event.
    fn finished(event: &Self::Event) -> Option<(TxId, Outcome)>;

    /// The participant status in `metrics`.
    fn participant_status(metrics: Self::Metrics) -> Self::Status;

    /// The shared counters in `metrics`.
    fn counters(metrics: &Self::Metrics) -> Counters;

    /// The request that runs a transaction with `writes` per participant.
    fn commit_request(writes: BTreeMap<NodeId, Vec<Write>>) -> Request {
        Request::Commit { writes }
    }

    /// The transaction's id and outcome from the answer to a [`Request`], or the error the
    /// coordinator answered with.
    fn commit_outcome(response: Response) -> Result<(TxId, Outcome), TxError> {
        match response {
            Response::Outcome { tx, outcome } => Ok((tx, outcome)),
            Response::Failed(e) => Err(e),
        }
    }

    /// How many transactions, by `metrics`, this node has voted on as a participant without
    /// knowing their outcome yet (in doubt, uncertain or pre-committed).
    fn undecided(metrics: &Self::Metrics) -> usize {
        Self::counters(metrics).undecided
    }

    /// How many decisions, by `metrics`, reached this node that contradicted one it had
    /// already taken: each is a transaction decided both ways (atomicity broken).
    fn decision_conflicts(metrics: &Self::Metrics) -> u64 {
        Self::counters(metrics).decision_conflicts
    }
}
