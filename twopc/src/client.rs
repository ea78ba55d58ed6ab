//! The async handle: transactions through a coordinator node run by `common`'s driver.
//!
//! [`TxClient`] is the shared [`common::txn::TxClient`] for [`TwoPcNode`]: [`TxClient::begin`]
//! starts a [`Transaction`] that gathers writes per participant locally, and
//! [`Transaction::commit`] hands them to the coordinator and waits for the outcome.
//! [`TxClient::status`] reports the node's participant side as a [`ParticipantStatus`]: its
//! in-doubt transactions, their age, and how many are blocked.

use common::txn::MemKv;

use crate::{InDoubt, TwoPcNode};

/// A client of one two-phase-commit coordinator node.
pub type TxClient<R = MemKv> = common::txn::TxClient<TwoPcNode<R>>;

/// A two-phase-commit transaction being built.
pub type Transaction<'a, R = MemKv> = common::txn::Transaction<'a, TwoPcNode<R>>;

/// Participant status of a two-phase-commit node, from its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantStatus {
    /// Prepared transactions waiting for their outcome, oldest first, with their age in ticks.
    pub in_doubt: Vec<InDoubt>,
    /// How many of them are blocked (nobody reachable knows the outcome).
    pub blocked: usize,
}
