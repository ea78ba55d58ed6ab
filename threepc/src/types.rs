//! Configuration, wire messages, log records, client requests and answers, events and metrics.

use std::collections::{BTreeMap, BTreeSet};

use common::txn::{Outcome, TxId, Vote, Write};
use common::NodeId;
use serde::{Deserialize, Serialize};

use crate::ThreePcError;

/// Default for [`Config::resend_ticks`].
pub const RESEND_TICKS_DEFAULT: u64 = 2;
/// Default for [`Config::vote_timeout_ticks`].
pub const VOTE_TIMEOUT_TICKS_DEFAULT: u64 = 20;
/// Default for [`Config::ack_timeout_ticks`].
pub const ACK_TIMEOUT_TICKS_DEFAULT: u64 = 20;
/// Default for [`Config::resend_ticks_max`].
pub const RESEND_TICKS_MAX_DEFAULT: u64 = 32;
/// Default for [`Config::sends_per_tick_max`].
pub const SENDS_PER_TICK_MAX_DEFAULT: usize = 256;
/// Default for [`Config::termination_timeout_ticks`].
pub const TERMINATION_TIMEOUT_TICKS_DEFAULT: u64 = 30;
/// Default for [`Config::state_timeout_ticks`].
pub const STATE_TIMEOUT_TICKS_DEFAULT: u64 = 15;
/// Default for [`Config::txs_max`].
pub const TXS_MAX_DEFAULT: usize = 4096;
/// Default for [`Config::participants_max`].
pub const PARTICIPANTS_MAX_DEFAULT: usize = 64;
/// Default for [`Config::prepared_max`].
pub const PREPARED_MAX_DEFAULT: usize = 4096;
/// Default for [`Config::decided_remembered_max`].
pub const DECIDED_REMEMBERED_MAX_DEFAULT: usize = 100_000;
/// A follower's wait before re-electing a silent backup coordinator starts at
/// [`Config::termination_timeout_ticks`] and doubles after each re-election, up to this many
/// times that timeout.
pub const REELECTION_WAIT_FACTOR_MAX: u64 = 4;
/// How many transaction sequence numbers a coordinator reserves with one durable record.
pub const SEQ_BLOCK: u64 = 1024;

/// Configuration of a [`ThreePcNode`](crate::ThreePcNode).
///
/// 3PC assumes that a silent node has crashed (a perfect failure detector), which holds only on
/// a synchronous network: the four timeouts below (`vote_timeout_ticks`, `ack_timeout_ticks`,
/// `termination_timeout_ticks`, `state_timeout_ticks`) must each exceed the longest delay of the
/// messages they wait for, retransmissions included. When a delay exceeds them, a backup
/// coordinator can abort what the coordinator committed, and a client can be told Committed
/// while the participants abort (see the crate documentation). Partitions are the extreme case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every node this one may exchange messages with, itself included.
    pub members: Vec<NodeId>,
    /// Ticks before the first retransmission of any unanswered message (CanCommit, PreCommit,
    /// DoCommit, TerminationStart, state requests, decision requests). Each further
    /// retransmission of the same message waits twice as long as the previous one, up to
    /// [`Config::resend_ticks_max`] ([`common::txn::Backoff`]).
    pub resend_ticks: u64,
    /// The longest wait between two retransmissions of one message. Without a cap a message lost
    /// during a long slow spell would wait unboundedly long for its resend once the network is
    /// fast again; without backoff a slow network would be flooded by its own resends.
    pub resend_ticks_max: u64,
    /// Most retransmissions one node sends in one tick, over all its transactions and both roles.
    /// A transaction's resend batch (one message to each silent participant) that does not fit is
    /// deferred to a later tick, not dropped. First transmissions (a new transaction's CanCommit,
    /// a phase's first PreCommit or DoCommit, a decision, a backup's first state requests) and
    /// answers to received messages are not counted: they happen once per transaction and phase,
    /// or once per message received. Must be at least [`Config::participants_max`], so that every
    /// batch fits.
    pub sends_per_tick_max: usize,
    /// Coordinator: ticks to wait for every vote before aborting.
    pub vote_timeout_ticks: u64,
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
    /// Coordinator: most transactions in progress at once.
    pub txs_max: usize,
    /// Most participants of one transaction.
    pub participants_max: usize,
    /// Participant: most undecided (voted) transactions at once; a CanCommit beyond it is voted
    /// No.
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
            ack_timeout_ticks: ACK_TIMEOUT_TICKS_DEFAULT,
            termination_timeout_ticks: TERMINATION_TIMEOUT_TICKS_DEFAULT,
            state_timeout_ticks: STATE_TIMEOUT_TICKS_DEFAULT,
            txs_max: TXS_MAX_DEFAULT,
            participants_max: PARTICIPANTS_MAX_DEFAULT,
            prepared_max: PREPARED_MAX_DEFAULT,
            decided_remembered_max: DECIDED_REMEMBERED_MAX_DEFAULT,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), ThreePcError> {
        let bad = |s: &str| Err(ThreePcError::Config(s.to_string()));
        if !self.members.contains(&self.id) {
            return bad("members must include this node");
        }
        if self.members.iter().collect::<BTreeSet<_>>().len() != self.members.len() {
            return bad("members contain duplicates");
        }
        if self.resend_ticks == 0 {
            return bad("resend_ticks must be at least 1");
        }
        if self.vote_timeout_ticks <= self.resend_ticks
            || self.ack_timeout_ticks <= self.resend_ticks
            || self.state_timeout_ticks <= self.resend_ticks
            || self.termination_timeout_ticks <= self.resend_ticks
        {
            return bad("every timeout must exceed resend_ticks");
        }
        if self.resend_ticks_max < self.resend_ticks {
            return bad("resend_ticks_max must be at least resend_ticks");
        }
        if self.sends_per_tick_max < self.participants_max {
            return bad("sends_per_tick_max must be at least participants_max");
        }
        if self.txs_max == 0 || self.participants_max == 0 || self.prepared_max == 0 {
            return bad("txs_max, participants_max and prepared_max must be at least 1");
        }
        if self.decided_remembered_max == 0 {
            return bad("decided_remembered_max must be at least 1");
        }
        Ok(())
    }
}

/// A participant's state for one transaction (Skeen's states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    /// Has not voted.
    Initial,
    /// Voted Yes; does not know whether everyone did.
    Uncertain,
    /// Knows everyone voted Yes; will commit unless it learns of an abort.
    PreCommitted,
    /// Committed.
    Committed,
    /// Aborted.
    Aborted,
}

/// Messages of three-phase commit and of its termination protocol.
///
/// A committing transaction costs 6 messages per participant: CanCommit, Vote, PreCommit,
/// PreCommitAck, DoCommit, HaveCommitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Coordinator → participant: here are your writes; can you commit?
    CanCommit {
        /// The transaction.
        tx: TxId,
        /// This participant's writes.
        writes: Vec<Write>,
        /// Every participant of the transaction (for the termination protocol).
        participants: Vec<NodeId>,
    },
    /// Participant → coordinator: Yes or No.
    Vote {
        /// The transaction.
        tx: TxId,
        /// The vote ([`Vote::ReadOnly`] is not used by 3PC and counts as No).
        vote: Vote,
    },
    /// Coordinator or backup → participant: everyone voted Yes; move to PreCommitted.
    PreCommit {
        /// The transaction.
        tx: TxId,
    },
    /// Participant → coordinator or backup: PreCommitted is durable here.
    PreCommitAck {
        /// The transaction.
        tx: TxId,
    },
    /// Coordinator or backup → participant: commit.
    DoCommit {
        /// The transaction.
        tx: TxId,
    },
    /// Participant → coordinator: the commit is durable here.
    HaveCommitted {
        /// The transaction.
        tx: TxId,
    },
    /// Coordinator or backup → participant: abort.
    Abort {
        /// The transaction.
        tx: TxId,
    },
    /// Backup coordinator → participant: what is your state?
    StateRequest {
        /// The transaction.
        tx: TxId,
    },
    /// Participant → the participant it elected backup coordinator: the coordinator is taken as
    /// crashed; start the termination protocol.
    TerminationStart {
        /// The transaction.
        tx: TxId,
    },
    /// Participant → backup coordinator.
    StateReply {
        /// The transaction.
        tx: TxId,
        /// The participant's state.
        state: State,
        /// Whether the participant crashed and restarted since it voted: its undecided state is
        /// then not used by an operational backup (it may be stale).
        recovering: bool,
    },
    /// Anyone → anyone who may know: what was decided?
    DecisionRequest {
        /// The transaction.
        tx: TxId,
    },
    /// Coordinator → participant, answering a [`Message::DecisionRequest`]: the coordinator has
    /// not decided commit and never will (it has no record of the transaction, or it recovered
    /// without a commit decision). Lets recovered participants decide among themselves.
    NoDecision {
        /// The transaction.
        tx: TxId,
    },
    /// The answer to a [`Message::DecisionRequest`], from a node that knows.
    Decision {
        /// The transaction.
        tx: TxId,
        /// The outcome.
        outcome: Outcome,
    },
}

/// What a node persists: the participant's vote, pre-commit and decision, and the coordinator's
/// pre-commit and commit decisions, each forced before the message that reveals it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Coordinator: sequence numbers below `seq_limit` may have been used.
    Reserved {
        /// The first sequence number not yet reserved.
        seq_limit: u64,
    },
    /// Coordinator: every participant voted Yes; PreCommit is being sent.
    PreCommitDecision {
        /// The transaction.
        tx: TxId,
        /// Its participants.
        participants: Vec<NodeId>,
    },
    /// Coordinator: `tx` commits.
    CommitDecision {
        /// The transaction.
        tx: TxId,
        /// Its participants.
        participants: Vec<NodeId>,
    },
    /// Coordinator: `tx` is finished and may be forgotten.
    End {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: voted Yes on `tx` (Uncertain), with its writes.
    Voted {
        /// The transaction.
        tx: TxId,
        /// Its coordinator.
        coordinator: NodeId,
        /// Every participant.
        participants: Vec<NodeId>,
        /// The writes staged here.
        writes: Vec<Write>,
    },
    /// Participant: PreCommitted.
    PreCommitted {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: committed.
    Committed {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: aborted (also a refusal to vote given to a backup).
    Aborted {
        /// The transaction.
        tx: TxId,
    },
}

/// A client request to a coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Run a transaction with these writes per participant.
    Commit {
        /// Writes per participant.
        writes: BTreeMap<NodeId, Vec<Write>>,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// The coordinator decided.
    Outcome {
        /// The transaction's id.
        tx: TxId,
        /// Its outcome.
        outcome: Outcome,
    },
    /// The request was refused; nothing was started.
    Failed(ThreePcError),
}

/// Notifications of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Coordinator: decided `tx`.
    Decided {
        /// The transaction.
        tx: TxId,
        /// The decision.
        outcome: Outcome,
    },
    /// Participant: `tx` ended here.
    Finished {
        /// The transaction.
        tx: TxId,
        /// How it ended here.
        outcome: Outcome,
    },
    /// Participant: the coordinator of `tx` is taken as crashed; the termination protocol starts.
    TerminationStarted {
        /// The transaction.
        tx: TxId,
    },
    /// Participant: this node, as backup coordinator, decided `tx` by the termination rules.
    TerminatedAsBackup {
        /// The transaction.
        tx: TxId,
        /// The decision.
        outcome: Outcome,
    },
}

/// One undecided transaction at a participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InDoubt {
    /// The transaction.
    pub tx: TxId,
    /// Uncertain or PreCommitted.
    pub state: State,
    /// Ticks since it voted (or since the participant recovered it).
    pub age_ticks: u64,
    /// Whether the termination protocol runs for it.
    pub terminating: bool,
    /// Whether the participant restarted since voting (it then waits to learn the outcome).
    pub recovering: bool,
}

/// A snapshot of a node's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Coordinator: transactions in progress.
    pub coordinating: usize,
    /// Coordinator: transactions decided commit.
    pub decided_committed: u64,
    /// Coordinator: transactions decided abort.
    pub decided_aborted: u64,
    /// Participant: undecided transactions, oldest first.
    pub in_doubt: Vec<InDoubt>,
    /// Participant: transactions committed here.
    pub applied: u64,
    /// Participant: transactions aborted here.
    pub aborted: u64,
    /// Participant: transactions this node decided as backup coordinator.
    pub terminated_as_backup: u64,
    /// Messages rejected (unknown senders or transactions, out-of-place messages).
    pub rejected: u64,
    /// Participant: decisions contradicting one taken here (ignored; never expected without
    /// partitions).
    pub decision_conflicts: u64,
}
