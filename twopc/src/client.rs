//! The async handle: transactions through a coordinator node run by `common`'s driver.
//!
//! [`TxClient`] wraps the [`NodeHandle`] of a running [`TwoPcNode`]: [`TxClient::begin`] starts a
//! [`Transaction`] that gathers writes per participant locally, and [`Transaction::commit`] hands
//! them to the coordinator and waits for the outcome. [`TxClient::status`] reports the node's
//! participant side: its in-doubt transactions and their age.

use std::collections::BTreeMap;

use common::driver::{DriverError, NodeHandle};
use common::txn::{MemKv, Outcome, Resource, TxId, Write};
use common::NodeId;

use crate::{InDoubt, Request, Response, TwoPcError, TwoPcNode};

/// Why a transaction could not be run to a known outcome.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The driver did not deliver an answer (queue full, node stopped). The transaction may or
    /// may not have been started.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
    /// The coordinator refused or could not finish the request.
    #[error("coordinator: {0}")]
    Refused(#[from] TwoPcError),
}

/// Participant status of a node, from its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantStatus {
    /// Prepared transactions waiting for their outcome, oldest first, with their age in ticks.
    pub in_doubt: Vec<InDoubt>,
    /// How many of them are blocked (nobody reachable knows the outcome).
    pub blocked: usize,
}

/// A client of one coordinator node.
pub struct TxClient<R: Resource + Default = MemKv> {
    handle: NodeHandle<TwoPcNode<R>>,
}

impl<R: Resource + Default> Clone for TxClient<R> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
        }
    }
}

impl<R: Resource + Default> TxClient<R> {
    /// A client of the node behind `handle`, which coordinates the transactions.
    pub fn new(handle: NodeHandle<TwoPcNode<R>>) -> Self {
        Self { handle }
    }

    /// The node's handle.
    pub fn handle(&self) -> &NodeHandle<TwoPcNode<R>> {
        &self.handle
    }

    /// Starts a transaction. Nothing is sent until [`Transaction::commit`].
    pub fn begin(&self) -> Transaction<'_, R> {
        Transaction {
            client: self,
            writes: BTreeMap::new(),
        }
    }

    /// The node's participant status: in-doubt transactions and their age.
    pub async fn status(&self) -> Result<ParticipantStatus, ClientError> {
        let m = self.handle.metrics().await?;
        Ok(ParticipantStatus {
            blocked: m.blocked,
            in_doubt: m.in_doubt,
        })
    }
}

/// A transaction being built: writes per participant.
pub struct Transaction<'a, R: Resource + Default = MemKv> {
    client: &'a TxClient<R>,
    writes: BTreeMap<NodeId, Vec<Write>>,
}

impl<R: Resource + Default> Transaction<'_, R> {
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

    /// Enlists `participant` without writes: it votes ReadOnly.
    pub fn enlist(&mut self, participant: NodeId) -> &mut Self {
        self.writes.entry(participant).or_default();
        self
    }

    /// Runs the transaction and returns its outcome.
    pub async fn commit(self) -> Result<Outcome, ClientError> {
        self.commit_with_id().await.map(|(_, o)| o)
    }

    /// Runs the transaction and returns its id and outcome.
    pub async fn commit_with_id(self) -> Result<(TxId, Outcome), ClientError> {
        match self
            .client
            .handle
            .request(Request::Commit {
                writes: self.writes,
            })
            .await?
        {
            Response::Outcome { tx, outcome } => Ok((tx, outcome)),
            Response::Failed(e) => Err(ClientError::Refused(e)),
        }
    }
}
