//! The async handle (feature `runtime`): transactions through a coordinator node run by
//! `common`'s driver; and the participant status a node reports, with or without it.
//!
//! [`TwoPcClient`] is the shared [`common::txn::TxClient`] for [`TwoPcNode`]: [`TwoPcClient::begin`]
//! starts a [`Transaction`] that gathers writes per participant locally, and
//! [`Transaction::commit`] hands them to the coordinator and waits for the outcome.
//! [`TwoPcClient::status`] reports the node's participant side as a [`ParticipantStatus`]: its
//! in-doubt transactions, their age, and how many are blocked.

#[cfg(feature = "runtime")]
use common::txn::MemKv;

use crate::InDoubt;
#[cfg(feature = "runtime")]
use crate::TwoPcNode;

/// A client of one two-phase-commit coordinator node.
#[cfg(feature = "runtime")]
pub type TwoPcClient<R = MemKv> = common::txn::TxClient<TwoPcNode<R>>;

/// One two-phase-commit node running under `common`'s driver (what [`TwoPcClient::new`] takes).
#[cfg(feature = "runtime")]
pub type TwoPcHandle<R = MemKv> = common::driver::NodeHandle<TwoPcNode<R>>;

/// A two-phase-commit transaction being built.
#[cfg(feature = "runtime")]
pub type Transaction<'a, R = MemKv> = common::txn::Transaction<'a, TwoPcNode<R>>;

/// Participant status of a two-phase-commit node, from its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantStatus {
    /// Prepared transactions waiting for their outcome, oldest first, with their age in ticks.
    pub in_doubt: Vec<InDoubt>,
    /// How many of them are blocked (nobody reachable knows the outcome).
    pub blocked: usize,
}
