//! The async handle: transactions through a coordinator node run by `common`'s driver.
//!
//! [`TxClient`] (the shared [`common::txn::TxClient`] for [`TwoPcNode`]) wraps the node's
//! [`NodeHandle`](common::driver::NodeHandle): [`TxClient::begin`] starts a [`Transaction`] that
//! gathers writes per participant locally, and [`Transaction::commit`] hands them to the
//! coordinator and waits for the outcome. [`TxClient::status`] reports the node's participant
//! side as a [`ParticipantStatus`]: its in-doubt transactions and their age.

use std::collections::BTreeMap;

use common::txn::{AtomicCommit, MemKv, Outcome, Resource, TxId, Write};
use common::NodeId;

use crate::{InDoubt, Metrics, Request, Response, TwoPcError, TwoPcNode};

/// A client of one two-phase-commit coordinator node.
pub type TxClient<R = MemKv> = common::txn::TxClient<TwoPcNode<R>>;

/// A two-phase-commit transaction being built.
pub type Transaction<'a, R = MemKv> = common::txn::Transaction<'a, TwoPcNode<R>>;

/// Why a transaction could not be run to a known outcome.
pub type ClientError = common::txn::ClientError<TwoPcError>;

/// Participant status of a node, from its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantStatus {
    /// Prepared transactions waiting for their outcome, oldest first, with their age in ticks.
    pub in_doubt: Vec<InDoubt>,
    /// How many of them are blocked (nobody reachable knows the outcome).
    pub blocked: usize,
}

impl<R: Resource + Default> AtomicCommit for TwoPcNode<R> {
    type Status = ParticipantStatus;
    type Resource = R;

    fn resource(&self) -> &R {
        &self.participant.resource
    }

    fn commit_request(writes: BTreeMap<NodeId, Vec<Write>>) -> Request {
        Request::Commit { writes }
    }

    fn commit_outcome(response: Response) -> Result<(TxId, Outcome), TwoPcError> {
        match response {
            Response::Outcome { tx, outcome } => Ok((tx, outcome)),
            Response::Failed(e) => Err(e),
        }
    }

    fn participant_status(metrics: Metrics) -> ParticipantStatus {
        ParticipantStatus {
            blocked: metrics.blocked,
            in_doubt: metrics.in_doubt,
        }
    }

    fn undecided(metrics: &Metrics) -> usize {
        metrics.in_doubt.len()
    }

    fn decision_conflicts(metrics: &Metrics) -> u64 {
        metrics.decision_conflicts
    }
}
