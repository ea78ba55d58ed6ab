//! Configuration, wire messages, log records, client requests and answers, events and metrics.

use std::collections::{BTreeMap, BTreeSet};

use common::txn::{Outcome, TxId, Vote, Write};
use common::NodeId;
use serde::{Deserialize, Serialize};

use crate::TwoPcError;

/// Default for [`Config::resend_ticks`].
pub const RESEND_TICKS_DEFAULT: u64 = 3;
/// Default for [`Config::vote_timeout_ticks`].
pub const VOTE_TIMEOUT_TICKS_DEFAULT: u64 = 20;
/// Default for [`Config::resend_ticks_max`].
pub const RESEND_TICKS_MAX_DEFAULT: u64 = 32;
/// Default for [`Config::sends_per_tick_max`].
pub const SENDS_PER_TICK_MAX_DEFAULT: usize = 256;
/// Default for [`Config::decision_retries_max`].
pub const DECISION_RETRIES_MAX_DEFAULT: u32 = 20;
/// Default for [`Config::one_phase_retries_max`].
pub const ONE_PHASE_RETRIES_MAX_DEFAULT: u32 = 10;
/// Default for [`Config::in_doubt_query_ticks`].
pub const IN_DOUBT_QUERY_TICKS_DEFAULT: u64 = 8;
/// Default for [`Config::txs_max`].
pub const TXS_MAX_DEFAULT: usize = 4096;
/// Default for [`Config::participants_max`].
pub const PARTICIPANTS_MAX_DEFAULT: usize = 64;
/// Default for [`Config::prepared_max`].
pub const PREPARED_MAX_DEFAULT: usize = 4096;
/// Default for [`Config::decided_remembered_max`].
pub const DECIDED_REMEMBERED_MAX_DEFAULT: usize = 100_000;
/// How many transaction sequence numbers a coordinator reserves with one durable record.
pub const SEQ_BLOCK: u64 = 1024;

/// Configuration of a [`TwoPcNode`](crate::TwoPcNode). Every node can coordinate its own
/// transactions and take part in others'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every node this one may exchange messages with, itself included. Messages from anyone
    /// else are rejected and counted.
    pub members: Vec<NodeId>,
    /// Coordinator: ticks before the first resend of an unanswered Prepare, one-phase commit or
    /// Commit. Each further resend of the same message waits twice as long as the previous one,
    /// up to [`Config::resend_ticks_max`] ([`common::txn::Backoff`]).
    pub resend_ticks: u64,
    /// The longest wait between two resends of one message (coordinator resends and the
    /// participant's in-doubt query rounds). Without backoff a slow network is flooded by its own
    /// resends; without a cap a message lost during a slow spell waits unboundedly long for its
    /// resend once the network is fast again.
    pub resend_ticks_max: u64,
    /// Most resends one node sends in one tick, over all its transactions and both roles. A
    /// transaction's resend batch (one message to each silent participant, or one query round)
    /// that does not fit is deferred to a later tick, not dropped. First transmissions (a new
    /// transaction's Prepare, a decision) and answers to received messages are not counted: they
    /// happen once per transaction, or once per message received. Must be at least
    /// [`Config::participants_max`], so that every batch fits.
    pub sends_per_tick_max: usize,
    /// Coordinator: ticks to wait for every vote before aborting.
    pub vote_timeout_ticks: u64,
    /// Coordinator: after this many resends of a Commit that is still not acked, the transaction
    /// is counted in [`Metrics::unacknowledged`]. Resending goes on (backing off): a commit is
    /// never forgotten before every participant has it.
    pub decision_retries_max: u32,
    /// Coordinator: how many times a one-phase commit is resent before the client is told the
    /// outcome is unknown (only the participant decides a one-phase commit).
    pub one_phase_retries_max: u32,
    /// Participant: ticks before the second round of asking for the outcome of an in-doubt
    /// transaction (the coordinator, and the peers when cooperative termination is on); each
    /// further round waits twice as long, up to [`Config::resend_ticks_max`].
    pub in_doubt_query_ticks: u64,
    /// Participant: whether an in-doubt participant also asks its peers (cooperative
    /// termination), not only the coordinator.
    pub cooperative_termination: bool,
    /// Coordinator: most transactions in progress at once; more are refused with
    /// [`TwoPcError::Busy`].
    pub txs_max: usize,
    /// Most participants of one transaction.
    pub participants_max: usize,
    /// Participant: most prepared transactions at once; a Prepare beyond it is voted No.
    pub prepared_max: usize,
    /// Participant: how many decided transactions it remembers to answer duplicates and peers.
    pub decided_remembered_max: usize,
}

impl Config {
    /// A configuration with default timeouts and limits.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Self {
        Self {
            id,
            members,
            resend_ticks: RESEND_TICKS_DEFAULT,
            resend_ticks_max: RESEND_TICKS_MAX_DEFAULT,
            sends_per_tick_max: SENDS_PER_TICK_MAX_DEFAULT,
            vote_timeout_ticks: VOTE_TIMEOUT_TICKS_DEFAULT,
            decision_retries_max: DECISION_RETRIES_MAX_DEFAULT,
            one_phase_retries_max: ONE_PHASE_RETRIES_MAX_DEFAULT,
            in_doubt_query_ticks: IN_DOUBT_QUERY_TICKS_DEFAULT,
            cooperative_termination: true,
            txs_max: TXS_MAX_DEFAULT,
            participants_max: PARTICIPANTS_MAX_DEFAULT,
            prepared_max: PREPARED_MAX_DEFAULT,
            decided_remembered_max: DECIDED_REMEMBERED_MAX_DEFAULT,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), TwoPcError> {
        let bad = |s: &str| Err(TwoPcError::Config(s.to_string()));
        if !self.members.contains(&self.id) {
            return bad("members must include this node");
        }
        if self.members.iter().collect::<BTreeSet<_>>().len() != self.members.len() {
            return bad("members contain duplicates");
        }
        if self.resend_ticks == 0 || self.in_doubt_query_ticks == 0 {
            return bad("resend_ticks and in_doubt_query_ticks must be at least 1");
        }
        if self.vote_timeout_ticks <= self.resend_ticks {
            return bad("vote_timeout_ticks must exceed resend_ticks");
        }
        if self.resend_ticks_max < self.resend_ticks
            || self.resend_ticks_max < self.in_doubt_query_ticks
        {
            return bad("resend_ticks_max must be at least resend_ticks and in_doubt_query_ticks");
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
}

/// Messages between coordinators and participants.
///
/// A committing transaction costs 4 messages per participant that writes (Prepare, Vote,
/// Commit, Ack), 2 per read-only participant (Prepare, Vote), and 2 in all with a single
/// participant (one-phase commit). An aborting one costs no Ack (presumed abort).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Coordinator → participant: here are your writes; can you commit?
    Prepare {
        /// The transaction.
        tx: TxId,
        /// What this participant must write (empty: it has nothing to do and votes ReadOnly).
        writes: Vec<Write>,
        /// The participants that write, for cooperative termination.
        peers: Vec<NodeId>,
    },
    /// Participant → coordinator: the answer to a Prepare.
    Vote {
        /// The transaction.
        tx: TxId,
        /// Yes, No or ReadOnly.
        vote: Vote,
    },
    /// Coordinator → the only participant: commit these writes if you can, deciding yourself.
    OnePhaseCommit {
        /// The transaction.
        tx: TxId,
        /// Its writes.
        writes: Vec<Write>,
    },
    /// Participant → coordinator: how a one-phase commit ended.
    OnePhaseResult {
        /// The transaction.
        tx: TxId,
        /// Its outcome.
        outcome: Outcome,
    },
    /// Coordinator → participant: the decision is commit.
    Commit {
        /// The transaction.
        tx: TxId,
    },
    /// Coordinator → participant: the decision is abort (never acknowledged).
    Abort {
        /// The transaction.
        tx: TxId,
    },
    /// Participant → coordinator: the commit is durable here.
    Ack {
        /// The transaction.
        tx: TxId,
    },
    /// In-doubt participant → coordinator: what was decided? Answered with Commit or Abort.
    DecisionRequest {
        /// The transaction.
        tx: TxId,
    },
    /// In-doubt participant → peer participant: what do you know? (cooperative termination)
    StatusQuery {
        /// The transaction.
        tx: TxId,
    },
    /// Peer → in-doubt participant: the answer to a [`Message::StatusQuery`].
    StatusReply {
        /// The transaction.
        tx: TxId,
        /// What the peer knows.
        status: PeerStatus,
    },
}

/// What a participant knows of a transaction, as told to an in-doubt peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerStatus {
    /// It committed: the outcome is commit.
    Committed,
    /// It aborted, or had not voted and now never will vote Yes: the outcome is abort.
    Aborted,
    /// It is prepared and in doubt too: no help.
    Prepared,
}

/// What a node persists. Participant records: `Prepared` (forced before voting Yes), `Committed`
/// (forced before acking), `Aborted` (lazy after an abort: nothing is acked, so no message waits
/// for it; forced only where the participant itself decides: a failed one-phase commit, or a
/// refusal to vote given to an in-doubt peer). Coordinator records:
/// `Reserved` (sequence numbers), `CommitDecision` (forced before any Commit leaves) and `End`
/// (lazy: nothing waits for it). There is no coordinator abort record: presumed abort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Coordinator: sequence numbers below `seq_limit` may have been used.
    Reserved {
        /// The first sequence number not yet reserved.
        seq_limit: u64,
    },
    /// Coordinator: `tx` commits; `participants` voted Yes and must learn it.
    CommitDecision {
        /// The transaction.
        tx: TxId,
        /// The participants that voted Yes.
        participants: Vec<NodeId>,
    },
    /// Coordinator: every Yes voter acknowledged the commit of `tx`; it may be forgotten.
    End {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: prepared `tx` with these writes; it votes Yes.
    Prepared {
        /// The transaction.
        tx: TxId,
        /// Its coordinator.
        coordinator: NodeId,
        /// The participants that write, for cooperative termination.
        peers: Vec<NodeId>,
        /// The writes staged here.
        writes: Vec<Write>,
    },
    /// Participant: `tx` committed here.
    Committed {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: `tx` aborted here and must never be voted Yes.
    Aborted {
        /// The transaction.
        tx: TxId,
    },
}

/// A client request to a coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Run a transaction: the writes of each participant (an empty list makes that participant
    /// read-only). Answered with [`Response::Outcome`] once decided.
    Commit {
        /// Writes per participant.
        writes: BTreeMap<NodeId, Vec<Write>>,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The transaction was decided (a commit is durable at the coordinator, or at the only
    /// participant for a one-phase commit).
    Outcome {
        /// The transaction's id.
        tx: TxId,
        /// Its outcome.
        outcome: Outcome,
    },
    /// The request failed; the transaction, if one was started, may still end either way only
    /// for [`TwoPcError::OutcomeUnknown`], otherwise it did not commit.
    Failed(TwoPcError),
}

/// Notifications of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Coordinator: `tx` was decided.
    Decided {
        /// The transaction.
        tx: TxId,
        /// The decision.
        outcome: Outcome,
    },
    /// Participant: `tx` ended here (writes applied, or dropped).
    Finished {
        /// The transaction.
        tx: TxId,
        /// How it ended here.
        outcome: Outcome,
    },
    /// Participant: `tx` is prepared, its coordinator is silent and no reachable peer knows the
    /// outcome: it holds its locks and waits. This is 2PC's blocking case.
    Blocked {
        /// The transaction.
        tx: TxId,
    },
}

/// One in-doubt (prepared, undecided) transaction at a participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InDoubt {
    /// The transaction.
    pub tx: TxId,
    /// Ticks since it was prepared (or since the participant recovered it).
    pub age_ticks: u64,
    /// Whether a full round of asking found nobody who knows the outcome.
    pub blocked: bool,
}

/// A snapshot of a node's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Coordinator: transactions in progress (voting, one-phase or committing).
    pub coordinating: usize,
    /// Coordinator: committed transactions still unacknowledged after
    /// [`Config::decision_retries_max`] resends.
    pub unacknowledged: usize,
    /// Coordinator: transactions decided commit.
    pub decided_committed: u64,
    /// Coordinator: transactions decided abort.
    pub decided_aborted: u64,
    /// Participant: prepared transactions waiting for their outcome, oldest first.
    pub in_doubt: Vec<InDoubt>,
    /// Participant: how many of `in_doubt` are blocked.
    pub blocked: usize,
    /// Participant: transactions committed here.
    pub applied: u64,
    /// Participant: transactions aborted here after voting, or voted No.
    pub aborted: u64,
    /// Messages rejected: unknown senders, unknown transactions, votes from non-participants,
    /// out-of-place messages.
    pub rejected: u64,
    /// Participant: Commit messages for a transaction aborted here (never expected; a protocol
    /// bug or a forged message). They are ignored. (An Abort for a transaction committed here is
    /// expected: a coordinator that forgot a finished commit presumes abort when a stale message
    /// asks; it counts as rejected.)
    pub decision_conflicts: u64,
}
