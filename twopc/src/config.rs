//! [`Config`]: the shared settings of an atomic-commit node ([`TxnConfig`]) and the timeouts
//! of two-phase commit.

use common::txn::{TxError, TxnConfig};
use common::NodeId;

/// Default for [`TxnConfig::resend_ticks`] in two-phase commit.
pub const RESEND_TICKS_DEFAULT: u64 = 3;
/// Default for [`Config::decision_retries_max`].
pub const DECISION_RETRIES_MAX_DEFAULT: u32 = 20;
/// Default for [`Config::one_phase_retries_max`].
pub const ONE_PHASE_RETRIES_MAX_DEFAULT: u32 = 10;
/// Default for [`Config::in_doubt_query_ticks`].
pub const IN_DOUBT_QUERY_TICKS_DEFAULT: u64 = 8;

/// Configuration of a [`TwoPcNode`](crate::TwoPcNode): the settings every atomic-commit node has
/// (`txn`: its id, members, resend pacing, vote timeout and limits) and those of two-phase
/// commit. In `txn`, the coordinator resends an unanswered Prepare, one-phase commit or Commit
/// after [`TxnConfig::resend_ticks`] (backing off), and [`TxnConfig::prepared_max`] bounds the
/// prepared transactions of a participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The settings shared with every atomic-commit protocol.
    pub txn: TxnConfig,
    /// Coordinator: after this many resends of a Commit that is still not acked, the transaction
    /// is counted in [`Metrics::unacknowledged`](crate::Metrics). Resending goes on (backing
    /// off): a commit is never forgotten before every participant has it.
    pub decision_retries_max: u32,
    /// Coordinator: how many times a one-phase commit is resent before the client is told the
    /// outcome is unknown (only the participant decides a one-phase commit).
    pub one_phase_retries_max: u32,
    /// Participant: ticks before the second round of asking for the outcome of an in-doubt
    /// transaction (the coordinator, and the peers when cooperative termination is on); each
    /// further round waits twice as long, up to [`TxnConfig::resend_ticks_max`].
    pub in_doubt_query_ticks: u64,
    /// Participant: whether an in-doubt participant also asks its peers (cooperative
    /// termination), not only the coordinator.
    pub cooperative_termination: bool,
}

impl Config {
    /// A configuration with default timeouts and limits.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Self {
        Self {
            txn: TxnConfig::new(id, members, RESEND_TICKS_DEFAULT),
            decision_retries_max: DECISION_RETRIES_MAX_DEFAULT,
            one_phase_retries_max: ONE_PHASE_RETRIES_MAX_DEFAULT,
            in_doubt_query_ticks: IN_DOUBT_QUERY_TICKS_DEFAULT,
            cooperative_termination: true,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), TxError> {
        self.txn.validate()?;
        if self.in_doubt_query_ticks == 0 {
            return Err(TxError::Config(
                "in_doubt_query_ticks must be at least 1".into(),
            ));
        }
        if self.txn.resend_ticks_max < self.in_doubt_query_ticks {
            return Err(TxError::Config(
                "resend_ticks_max must be at least in_doubt_query_ticks".into(),
            ));
        }
        Ok(())
    }
}
