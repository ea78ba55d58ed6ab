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
//! outcome. Both answer the same [`Request`](super::Request) with the same
//! [`Response`](super::Response); only the participant status differs, and [`AtomicCommit`] maps
//! it.
//!
//! This is the only async part of [`common::txn`](super): everything else is sans-IO.

use std::collections::BTreeMap;

use super::{AtomicCommit, Outcome, TxError, TxId, Write};
use crate::driver::{DriverError, NodeHandle};
use crate::NodeId;

/// Why a transaction could not be run to a known outcome.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The driver did not deliver an answer (queue full, node stopped). The transaction may or
    /// may not have been started.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
    /// The coordinator refused or could not finish the request.
    #[error("coordinator: {0}")]
    Refused(TxError),
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
    pub async fn status(&self) -> Result<N::Status, ClientError> {
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
    pub async fn commit(self) -> Result<Outcome, ClientError> {
        self.commit_with_id().await.map(|(_, outcome)| outcome)
    }

    /// Runs the transaction and returns its id and outcome.
    pub async fn commit_with_id(self) -> Result<(TxId, Outcome), ClientError> {
        let response = self
            .client
            .handle
            .request(N::commit_request(self.writes))
            .await?;
        N::commit_outcome(response).map_err(ClientError::Refused)
    }
}
