//! [`Config`]: the shared settings of an atomic-commit node ([`TxnConfig`]) and the timeouts
//! of three-phase commit and its termination protocol.

use common::txn::{TxError, TxnConfig};
use common::NodeId;

/// Default for [`TxnConfig::resend_ticks`] in three-phase commit.
pub const RESEND_TICKS_DEFAULT: u64 = 2;
/// Default for [`Config::ack_timeout_ticks`].
pub const ACK_TIMEOUT_TICKS_DEFAULT: u64 = 20;
/// Default for [`Config::termination_timeout_ticks`].
pub const TERMINATION_TIMEOUT_TICKS_DEFAULT: u64 = 30;
/// Default for [`Config::state_timeout_ticks`].
pub const STATE_TIMEOUT_TICKS_DEFAULT: u64 = 15;
/// A follower's wait before re-electing a silent backup coordinator starts at
/// [`Config::termination_timeout_ticks`] and doubles after each re-election, up to this many
/// times that timeout.
pub const REELECTION_WAIT_FACTOR_MAX: u64 = 4;

/// Configuration of a [`ThreePcNode`](crate::ThreePcNode): the settings every atomic-commit node
/// has (`txn`: its id, members, resend pacing, vote timeout and limits) and the timeouts of
/// three-phase commit. In `txn`, [`TxnConfig::resend_ticks`] paces the retransmission of any
/// unanswered message (CanCommit, PreCommit, DoCommit, TerminationStart, state requests, decision
/// requests), and [`TxnConfig::prepared_max`] bounds the undecided (voted) transactions of a
/// participant.
///
/// 3PC assumes that a silent node has crashed (a perfect failure detector), which holds only on
/// a synchronous network: the four timeouts (`txn.vote_timeout_ticks`, `ack_timeout_ticks`,
/// `termination_timeout_ticks`, `state_timeout_ticks`) must each exceed the longest delay of the
/// messages they wait for, retransmissions included. When a delay exceeds them, a backup
/// coordinator can abort what the coordinator committed, and a client can be told Committed
/// while the participants abort (see the crate documentation). Partitions are the extreme case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The settings shared with every atomic-commit protocol.
    pub txn: TxnConfig,
    /// Coordinator: ticks to wait for the PreCommit acks; silent participants are then taken as
    /// crashed and the coordinator commits (they learn the outcome when they recover). An ack
    /// merely slower than this is where a slow network breaks atomicity.
    pub ack_timeout_ticks: u64,
    /// Participant: ticks without hearing from the coordinator (in Uncertain or PreCommitted), or
    /// from the backup coordinator during termination, before taking it as crashed. A PreCommit
    /// or DoCommit merely slower than this lets a backup abort what the coordinator committed.
    /// The wait before re-electing a silent backup starts here and doubles after each
    /// re-election, up to [`REELECTION_WAIT_FACTOR_MAX`] times this.
    pub termination_timeout_ticks: u64,
    /// Backup coordinator: ticks to wait for state replies or PreCommit acks before taking the
    /// silent participants as crashed. A state reply merely slower than this can split the
    /// decision.
    pub state_timeout_ticks: u64,
}

impl Config {
    /// A configuration with default timeouts and limits.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Self {
        Self {
            txn: TxnConfig::new(id, members, RESEND_TICKS_DEFAULT),
            ack_timeout_ticks: ACK_TIMEOUT_TICKS_DEFAULT,
            termination_timeout_ticks: TERMINATION_TIMEOUT_TICKS_DEFAULT,
            state_timeout_ticks: STATE_TIMEOUT_TICKS_DEFAULT,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), TxError> {
        self.txn.validate()?;
        let resend = self.txn.resend_ticks;
        if self.ack_timeout_ticks <= resend
            || self.state_timeout_ticks <= resend
            || self.termination_timeout_ticks <= resend
        {
            return Err(TxError::Config(
                "every timeout must exceed resend_ticks".into(),
            ));
        }
        Ok(())
    }
}
