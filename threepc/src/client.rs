//! The async handle: transactions through a coordinator node run by `common`'s driver.
//!
//! [`TxClient`] is the shared [`common::txn::TxClient`] for [`ThreePcNode`]: [`TxClient::begin`]
//! starts a [`Transaction`] that gathers writes per participant locally, and
//! [`Transaction::commit`] hands them to the coordinator and waits for the outcome.
//! [`TxClient::status`] reports the node's participant side as a [`ParticipantStatus`]: its
//! undecided transactions, their state and age, and how many are in the termination protocol.

use common::txn::MemKv;

use crate::{InDoubt, ThreePcNode};

/// A client of one three-phase-commit coordinator node.
pub type TxClient<R = MemKv> = common::txn::TxClient<ThreePcNode<R>>;

/// A three-phase-commit transaction being built.
pub type Transaction<'a, R = MemKv> = common::txn::Transaction<'a, ThreePcNode<R>>;

/// Participant status of a three-phase-commit node, from its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantStatus {
    /// Undecided transactions, oldest first, with their state and age in ticks.
    pub in_doubt: Vec<InDoubt>,
    /// How many of them are in the termination protocol.
    pub terminating: usize,
}
