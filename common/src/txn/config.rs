//! [`TxnConfig`]: the settings every atomic-commit node has whatever its protocol (who it is,
//! whom it talks to, how it paces resends, its limits), their checks, and the membership tests
//! the coordinator and the participant apply to what they receive.

use std::collections::{BTreeMap, BTreeSet};

use super::{TxError, Write};
use crate::NodeId;

/// Default for [`TxnConfig::resend_ticks_max`].
const RESEND_TICKS_MAX_DEFAULT: u64 = 32;
/// Default for [`TxnConfig::sends_per_tick_max`].
const SENDS_PER_TICK_MAX_DEFAULT: usize = 256;
/// Default for [`TxnConfig::vote_timeout_ticks`].
const VOTE_TIMEOUT_TICKS_DEFAULT: u64 = 20;
/// Default for [`TxnConfig::txs_max`].
const TXS_MAX_DEFAULT: usize = 4096;
/// Default for [`TxnConfig::participants_max`].
const PARTICIPANTS_MAX_DEFAULT: usize = 64;
/// Default for [`TxnConfig::prepared_max`].
const PREPARED_MAX_DEFAULT: usize = 4096;
/// Default for [`TxnConfig::decided_remembered_max`].
const DECIDED_REMEMBERED_MAX_DEFAULT: usize = 100_000;

/// The settings shared by every atomic-commit node. Every node can coordinate its own
/// transactions and take part in others'. A protocol's `Config` holds one (its `txn` field) next
/// to its own timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnConfig {
    /// This node.
    pub id: NodeId,
    /// Every node this one may exchange messages with, itself included. Messages from anyone
    /// else are rejected and counted.
    pub members: Vec<NodeId>,
    /// Ticks before the first resend of an unanswered message. Each further resend of the same
    /// message waits twice as long as the previous one, up to
    /// [`TxnConfig::resend_ticks_max`] ([`Backoff`](super::Backoff)).
    pub resend_ticks: u64,
    /// The longest wait between two resends of one message. Without backoff a slow network is
    /// flooded by its own resends; without a cap a message lost during a slow spell waits
    /// unboundedly long for its resend once the network is fast again.
    pub resend_ticks_max: u64,
    /// Most resends one node sends in one tick, over all its transactions and both roles. A
    /// transaction's resend batch (one message to each silent participant, or one round of
    /// questions) that does not fit is deferred to a later tick, not dropped. First
    /// transmissions (a new transaction's or phase's messages, a decision) and answers to
    /// received messages are not counted: they happen once per transaction and phase, or once
    /// per message received. Must be at least [`TxnConfig::participants_max`], so that every
    /// batch fits.
    pub sends_per_tick_max: usize,
    /// Coordinator: ticks to wait for every vote before aborting.
    pub vote_timeout_ticks: u64,
    /// Coordinator: most transactions in progress at once; more are refused with
    /// [`TxError::Busy`].
    pub txs_max: usize,
    /// Most participants of one transaction.
    pub participants_max: usize,
    /// Participant: most voted, undecided transactions at once; a request to vote beyond it is
    /// voted No.
    pub prepared_max: usize,
    /// Participant: how many decided transactions it remembers to answer duplicates and peers.
    pub decided_remembered_max: usize,
}

impl TxnConfig {
    /// Default settings for node `id` of `members`, with a first resend after `resend_ticks`.
    pub fn new(id: NodeId, members: Vec<NodeId>, resend_ticks: u64) -> Self {
        Self {
            id,
            members,
            resend_ticks,
            resend_ticks_max: RESEND_TICKS_MAX_DEFAULT,
            sends_per_tick_max: SENDS_PER_TICK_MAX_DEFAULT,
            vote_timeout_ticks: VOTE_TIMEOUT_TICKS_DEFAULT,
            txs_max: TXS_MAX_DEFAULT,
            participants_max: PARTICIPANTS_MAX_DEFAULT,
            prepared_max: PREPARED_MAX_DEFAULT,
            decided_remembered_max: DECIDED_REMEMBERED_MAX_DEFAULT,
        }
    }

    /// Checks the shared settings, explaining what is wrong.
    pub fn validate(&self) -> Result<(), TxError> {
        let bad = |s: &str| Err(TxError::Config(s.to_string()));
        if !self.members.contains(&self.id) {
            return bad("members must include this node");
        }
        if self.members.iter().collect::<BTreeSet<_>>().len() != self.members.len() {
            return bad("members contain duplicates");
        }
        if self.resend_ticks == 0 {
            return bad("resend_ticks must be at least 1");
        }
        if self.vote_timeout_ticks <= self.resend_ticks {
            return bad("vote_timeout_ticks must exceed resend_ticks");
        }
        if self.resend_ticks_max < self.resend_ticks {
            return bad("resend_ticks_max must be at least resend_ticks");
        }
        if self.txs_max == 0 || self.participants_max == 0 || self.prepared_max == 0 {
            return bad("txs_max, participants_max and prepared_max must be at least 1");
        }
        if self.decided_remembered_max == 0 {
            return bad("decided_remembered_max must be at least 1");
        }
        if self.sends_per_tick_max < self.participants_max {
            return bad("sends_per_tick_max must be at least participants_max");
        }
        Ok(())
    }

    /// Whether a message from `from` may be handled at all: it is a member other than this
    /// node.
    pub fn check_sender(&self, from: NodeId) -> Result<(), &'static str> {
        if from == self.id || !self.members.contains(&from) {
            return Err("sender is not a member");
        }
        Ok(())
    }

    /// Whether a client's transaction names valid participants: between one and
    /// `participants_max`, all members, not this node (the coordinator).
    pub fn valid_participants(&self, writes: &BTreeMap<NodeId, Vec<Write>>) -> bool {
        !writes.is_empty()
            && writes.len() <= self.participants_max
            && writes
                .keys()
                .all(|p| *p != self.id && self.members.contains(p))
    }

    /// Whether the participant list a coordinator sent with a request to vote is valid here: at
    /// most `participants_max` members, this node among them.
    pub fn valid_peer_list(&self, peers: &[NodeId]) -> bool {
        peers.len() <= self.participants_max
            && peers.contains(&self.id)
            && peers.iter().all(|p| self.members.contains(p))
    }
}
