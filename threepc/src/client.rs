//! The async handle (feature `runtime`): transactions through a coordinator node run by
//! `common`'s driver; and the participant status a node reports, with or without it.
//!
//! [`ThreePcClient`] is the shared [`common::txn::TxClient`] for [`ThreePcNode`]: [`ThreePcClient::begin`]
//! starts a [`Transaction`] that gathers writes per participant locally, and
//! [`Transaction::commit`] hands them to the coordinator and waits for the outcome.
//! [`ThreePcClient::status`] reports the node's participant side as a [`ParticipantStatus`]: its
//! undecided transactions, their state and age, and how many are in the termination protocol.

#[cfg(feature = "runtime")]
use common::txn::MemKv;

use crate::InDoubt;
#[cfg(feature = "runtime")]
use crate::ThreePcNode;

/// A client of one three-phase-commit coordinator node.
#[cfg(feature = "runtime")]
pub type ThreePcClient<R = MemKv> = common::txn::TxClient<ThreePcNode<R>>;

/// One three-phase-commit node running under `common`'s driver (what [`ThreePcClient::new`] takes).
#[cfg(feature = "runtime")]
pub type ThreePcHandle<R = MemKv> = common::driver::NodeHandle<ThreePcNode<R>>;

/// A three-phase-commit transaction being built.
#[cfg(feature = "runtime")]
pub type Transaction<'a, R = MemKv> = common::txn::Transaction<'a, ThreePcNode<R>>;

/// Participant status of a three-phase-commit node, from its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantStatus {
    /// Undecided transactions, oldest first, with their state and age in ticks.
    pub in_doubt: Vec<InDoubt>,
    /// How many of them are in the termination protocol.
    pub terminating: usize,
}
