//! The async handle: transactions through a coordinator node run by `common`'s driver.
//!
//! [`TxClient`] (the shared [`common::txn::TxClient`] for [`ThreePcNode`]) wraps the node's
//! [`NodeHandle`](common::driver::NodeHandle): [`TxClient::begin`] starts a [`Transaction`] that
//! gathers writes per participant locally, and [`Transaction::commit`] hands them to the
//! coordinator and waits for the outcome. [`TxClient::status`] reports the node's participant
//! side as a [`ParticipantStatus`]: its undecided transactions, their state and age.

use std::collections::BTreeMap;

use common::txn::{AtomicCommit, MemKv, Outcome, Resource, TxId, Write};
use common::NodeId;

use crate::{InDoubt, Metrics, Request, Response, ThreePcError, ThreePcNode};

/// A client of one three-phase-commit coordinator node.
pub type TxClient<R = MemKv> = common::txn::TxClient<ThreePcNode<R>>;

/// A three-phase-commit transaction being built.
pub type Transaction<'a, R = MemKv> = common::txn::Transaction<'a, ThreePcNode<R>>;

/// Why a transaction could not be run to a known outcome.
pub type ClientError = common::txn::ClientError<ThreePcError>;

/// Participant status of a node, from its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantStatus {
    /// Undecided transactions, oldest first, with their state and age in ticks.
    pub in_doubt: Vec<InDoubt>,
    /// How many of them are in the termination protocol.
    pub terminating: usize,
}

impl<R: Resource + Default> AtomicCommit for ThreePcNode<R> {
    type Status = ParticipantStatus;
    type Resource = R;

    fn resource(&self) -> &R {
        &self.participant.resource
    }

    fn commit_request(writes: BTreeMap<NodeId, Vec<Write>>) -> Request {
        Request::Commit { writes }
    }

    fn commit_outcome(response: Response) -> Result<(TxId, Outcome), ThreePcError> {
        match response {
            Response::Outcome { tx, outcome } => Ok((tx, outcome)),
            Response::Failed(e) => Err(e),
        }
    }

    fn participant_status(metrics: Metrics) -> ParticipantStatus {
        ParticipantStatus {
            terminating: metrics.in_doubt.iter().filter(|d| d.terminating).count(),
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
