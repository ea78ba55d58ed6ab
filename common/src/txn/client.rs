//! The async client of an atomic-commit coordinator, shared by every protocol that implements
//! [`AtomicCommit`].
//!
//! [`TxClient`] wraps the [`NodeHandle`] of a running node: [`TxClient::begin`] starts a
//! [`Transaction`] that gathers writes per participant locally, and [`Transaction::commit`] hands
//! them to the coordinator and waits for the outcome. [`TxClient::status`] reports the node's
//! participant side in the protocol's own terms ([`AtomicCommit::Status`]).
//!
//! The client is written once because what a client does is the same for two-phase and
//! three-phase commit: name the writes of each participant, ask the coordinator, wait for the
//! outcome. Only the request and response types differ, and [`AtomicCommit`] maps them.

use std::collections::BTreeMap;

use super::{Outcome, Resource, TxId, Write};
use crate::driver::{DriverError, NodeHandle};
use crate::{Node, NodeId};

/// A coordinator protocol [`TxClient`] can drive: how a transaction is asked for, how its
/// answer reads, and what the participant side reports.
pub trait AtomicCommit: Node {
    /// The participant status [`TxClient::status`] returns.
    type Status;
    /// The participant's resource manager.
    type Resource: Resource;

    /// The participant's resource (its data), for inspection.
    fn resource(&self) -> &Self::Resource;

    /// The request that runs a transaction with `writes` per participant (an empty list enlists
    /// a participant without writes).
    fn commit_request(writes: BTreeMap<NodeId, Vec<Write>>) -> Self::Request;

    /// The transaction's id and outcome from the answer to [`AtomicCommit::commit_request`], or
    /// the error the coordinator answered with.
    fn commit_outcome(response: Self::Response) -> Result<(TxId, Outcome), Self::Error>;

    /// The participant status in `metrics`.
    fn participant_status(metrics: Self::Metrics) -> Self::Status;

    /// How many transactions, by `metrics`, this node has voted on as a participant without
    /// knowing their outcome yet (in doubt, uncertain or pre-committed).
    fn undecided(metrics: &Self::Metrics) -> usize;

    /// How many decisions, by `metrics`, reached this node that contradicted one it had
    /// already taken: each is a transaction decided both ways (atomicity broken).
    fn decision_conflicts(metrics: &Self::Metrics) -> u64;
}

/// Why a transaction could not be run to a known outcome. `E` is the protocol's error type.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError<E> {
    /// The driver did not deliver an answer (queue full, node stopped). The transaction may or
    /// may not have been started.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
    /// The coordinator refused or could not finish the request.
    #[error("coordinator: {0}")]
    Refused(E),
}

/// A client of one coordinator node of protocol `N`.
pub struct TxClient<N: AtomicCommit> {
    handle: NodeHandle<N>,
}

impl<N: AtomicCommit> Clone for TxClient<N> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
        }
    }
}

impl<N: AtomicCommit> TxClient<N> {
    /// A client of the node behind `handle`, which coordinates the transactions.
    pub fn new(handle: NodeHandle<N>) -> Self {
        Self { handle }
    }

    /// The node's handle.
    pub fn handle(&self) -> &NodeHandle<N> {
        &self.handle
    }

    /// Starts a transaction. Nothing is sent until [`Transaction::commit`].
    pub fn begin(&self) -> Transaction<'_, N> {
        Transaction {
            client: self,
            writes: BTreeMap::new(),
        }
    }

    /// The node's participant status (its undecided transactions, in the protocol's terms).
    pub async fn status(&self) -> Result<N::Status, ClientError<N::Error>> {
        let metrics = self.handle.metrics().await?;
        Ok(N::participant_status(metrics))
    }
}

/// A transaction being built: writes per participant.
pub struct Transaction<'a, N: AtomicCommit> {
    client: &'a TxClient<N>,
    writes: BTreeMap<NodeId, Vec<Write>>,
}

impl<N: AtomicCommit> Transaction<'_, N> {
    /// Sets `key` to `value` at `participant`.
    pub fn write(
        &mut self,
        participant: NodeId,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.writes
            .entry(participant)
            .or_default()
            .push(Write::put(key, value));
        self
    }

    /// Deletes `key` at `participant`.
    pub fn delete(&mut self, participant: NodeId, key: impl Into<String>) -> &mut Self {
        self.writes
            .entry(participant)
            .or_default()
            .push(Write::delete(key));
        self
    }

    /// Enlists `participant` without writes. What it then does is the protocol's: two-phase
    /// commit lets it vote read-only and leave after one round; three-phase commit has no such
    /// optimisation, so it takes part in every phase (holding no locks).
    pub fn enlist(&mut self, participant: NodeId) -> &mut Self {
        self.writes.entry(participant).or_default();
        self
    }

    /// The writes gathered so far, per participant.
    pub fn writes(&self) -> &BTreeMap<NodeId, Vec<Write>> {
        &self.writes
    }

    /// Runs the transaction and returns its outcome.
    pub async fn commit(self) -> Result<Outcome, ClientError<N::Error>> {
        self.commit_with_id().await.map(|(_, outcome)| outcome)
    }

    /// Runs the transaction and returns its id and outcome.
    pub async fn commit_with_id(self) -> Result<(TxId, Outcome), ClientError<N::Error>> {
        let response = self
            .client
            .handle
            .request(N::commit_request(self.writes))
            .await?;
        N::commit_outcome(response).map_err(ClientError::Refused)
    }
}
