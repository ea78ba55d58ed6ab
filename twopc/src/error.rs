//! The crate's error type.

use common::txn::TxId;
use common::NodeId;

/// Errors of the `twopc` crate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TwoPcError {
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
    /// A one-phase commit got no answer: only its participant knows whether it committed.
    #[error("outcome of {0} unknown: its only participant did not answer")]
    OutcomeUnknown(TxId),
}
