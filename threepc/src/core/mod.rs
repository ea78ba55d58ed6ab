//! [`ThreePcNode`]: one node hosting a coordinator (`coordinator.rs`) and a participant
//! (`participant.rs`, with the termination protocol in `termination.rs`), joined by message
//! routing; its [`Event`]s and [`Metrics`]; and its [`AtomicCommit`] binding to the shared
//! skeleton of `common::txn`.
//!
//! The sans-IO boundary is checked, not only promised: clippy denies here the clocks, sleeps,
//! files, sockets, unseeded randomness and tokio that the workspace's `clippy.toml` lists.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub(crate) mod coordinator;
pub(crate) mod participant;
pub(crate) mod termination;

use common::txn::{self, AtomicCommit, Counters, MemKv, Outcome, Resource, SendBudget, TxId};
use common::{protocol, Node, NodeId, Outbox, RequestId};

use crate::{Config, Message, ParticipantStatus, Record, Request, Response, State};
use coordinator::Coordinator;
use participant::Participant;

/// What a three-phase-commit node tells observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Participant: `tx` ended here.
    Finished {
        /// The transaction that ended.
        tx: TxId,
        /// Its outcome at this participant.
        outcome: Outcome,
    },
    /// Coordinator: decided `tx`.
    Decided {
        /// The transaction it decided.
        tx: TxId,
        /// Commit or abort.
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

/// A snapshot of a three-phase-commit node's state.
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
    /// Participant: decisions contradicting one taken here (ignored; a DoCommit from the
    /// coordinator is answered with the abort taken here). Each is a transaction decided both
    /// ways: the split of a network slower than the timeouts, never seen while messages arrive
    /// within them.
    pub decision_conflicts: u64,
    /// Coordinator: participants that answered this coordinator's commit with their abort (the
    /// other side of a split; since the last restart). The coordinator stops resending to them.
    pub commits_refused: u64,
}

/// A three-phase-commit node: the coordinator of its clients' transactions and a participant
/// (over the resource `R`) in others'. One node type for both roles, as in `twopc`, so the two
/// crates have the same shape and the shootout can swap them.
///
/// `Clone` and `Debug` let a model checker hold nodes in its states and tell states apart.
#[derive(Clone, Debug)]
pub struct ThreePcNode<R = MemKv> {
    pub(crate) participant: Participant<R>,
    pub(crate) coordinator: Coordinator,
    pub(crate) config: Config,
    /// Messages refused by either role.
    pub(crate) rejected: u64,
}

impl<R: Resource + Default> ThreePcNode<R> {
    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The participant's resource (the data it applies transactions to), for inspection.
    pub fn resource(&self) -> &R {
        &self.participant.ledger.resource
    }

    /// Routes a message to the role it is addressed to: messages about this node's own
    /// transactions go to the coordinator, the rest to the participant (and its termination
    /// protocol).
    fn route(
        &mut self,
        from: NodeId,
        message: Message,
        out: &mut Outbox<Self>,
    ) -> Result<(), &'static str> {
        self.config.txn.check_sender(from)?;
        let (config, p, c) = (&self.config, &mut self.participant, &mut self.coordinator);
        let mine = |tx: TxId| tx.coordinator == config.txn.id;
        match message {
            Message::CanCommit {
                tx,
                writes,
                participants,
            } => p.on_can_commit(config, from, tx, writes, participants, out),
            Message::PreCommit { tx } => p.on_pre_commit(from, tx, out),
            Message::DoCommit { tx } => p.on_decision(from, tx, Outcome::Committed, out),
            Message::Abort { tx } => p.on_decision(from, tx, Outcome::Aborted, out),
            Message::StateRequest { tx } => p.on_query(from, tx, true, out),
            Message::TerminationStart { tx } => p.on_termination_start(config, from, tx, out),
            Message::NoDecision { tx } => p.on_no_decision(from, tx),
            Message::StateReply {
                tx,
                state,
                recovering,
            } => p.on_state_reply(config, from, tx, state, recovering, out),
            Message::Vote { tx, vote } if mine(tx) => c.on_vote(config, from, tx, vote, out),
            Message::PreCommitAck { tx } if mine(tx) => c.on_pre_commit_ack(config, from, tx, out),
            Message::PreCommitAck { tx } => p.on_pre_commit_ack(from, tx),
            Message::HaveCommitted { tx } if mine(tx) => c.on_have_committed(from, tx, out),
            Message::DecisionRequest { tx } if mine(tx) => c.on_decision_request(from, tx, out),
            Message::DecisionRequest { tx } => p.on_query(from, tx, false, out),
            Message::Decision { tx, outcome } if mine(tx) => c.on_decision(from, tx, outcome, out),
            Message::Decision { tx, outcome } => p.on_decision(from, tx, outcome, out),
            Message::Vote { .. } | Message::HaveCommitted { .. } => {
                Err("coordinator message for another coordinator's transaction")
            }
        }
    }
}

impl<R: Resource + Default> Node for ThreePcNode<R> {
    type Config = Config;
    type Record = Record;
    type Message = Message;
    type Event = Event;
    type Metrics = Metrics;
    type Request = Request;
    type Response = Response;
    type Error = txn::TxError;

    const PROTOCOL: u16 = protocol::THREEPC;
    const WIRE_VERSION: u16 = 1;

    fn recover(config: Config, records: Vec<Record>) -> Result<Self, txn::TxError> {
        config.validate()?;
        let (mut coordinator, mut participant) =
            (Coordinator::default(), Participant::new(&config));
        let to_coordinator = |r: &Record| coordinator.replay(&config, r);
        txn::replay_records(records, to_coordinator, |r| participant.replay(&config, r))?;
        Ok(ThreePcNode {
            participant,
            coordinator,
            rejected: 0,
            config,
        })
    }

    fn handle_message(&mut self, from: NodeId, msg: Message, out: &mut Outbox<Self>) {
        let routed = self.route(from, msg, out);
        txn::reject::<Self>(routed, &mut self.rejected, self.config.txn.id, from);
    }

    fn handle_request(&mut self, id: RequestId, req: Request, out: &mut Outbox<Self>) {
        let Request::Commit { writes } = req;
        self.coordinator.begin(&self.config, id, writes, out);
    }

    fn id(&self) -> NodeId {
        let Config { txn, .. } = &self.config;
        txn.id
    }

    fn tick(&mut self, out: &mut Outbox<Self>) {
        // Both roles draw on one budget, which bounds this node's resends per tick.
        let budget = &mut SendBudget::new(self.config.txn.sends_per_tick_max);
        let config = &self.config;
        self.coordinator.tick(config, budget, out);
        self.participant.tick(config, budget, out);
    }

    fn metrics(&self) -> Metrics {
        let (coordinator, participant) = (&self.coordinator, &self.participant);
        Metrics {
            in_doubt: participant.in_doubt(),
            applied: participant.ledger.applied,
            aborted: participant.ledger.aborted,
            decision_conflicts: participant.ledger.decision_conflicts,
            commits_refused: coordinator.commits_refused,
            terminated_as_backup: participant.terminated_as_backup,
            coordinating: coordinator.txs.len(),
            decided_committed: coordinator.book.decided_committed,
            decided_aborted: coordinator.book.decided_aborted,
            rejected: self.rejected,
        }
    }
}

impl<R: Resource + Default> AtomicCommit for ThreePcNode<R> {
    type Status = ParticipantStatus;
    type Resource = R;

    const NAME: &'static str = "threepc";

    fn resource(&self) -> &R {
        &self.participant.ledger.resource
    }

    fn finished_event(transaction: TxId, outcome: Outcome) -> Event {
        Event::Finished {
            tx: transaction,
            outcome,
        }
    }

    fn reserved_record(limit: u64) -> Record {
        Record::Reserved { seq_limit: limit }
    }

    fn decided_event(transaction: TxId, outcome: Outcome) -> Event {
        Event::Decided {
            tx: transaction,
            outcome,
        }
    }

    fn aborted_record(transaction: TxId) -> Record {
        Record::Aborted { tx: transaction }
    }

    fn committed_record(transaction: TxId) -> Record {
        Record::Committed { tx: transaction }
    }

    fn finished(event: &Event) -> Option<(TxId, Outcome)> {
        if let Event::Finished { tx, outcome } = event {
            return Some((*tx, *outcome));
        }
        None
    }

    fn participant_status(metrics: Metrics) -> ParticipantStatus {
        ParticipantStatus {
            terminating: metrics.in_doubt.iter().filter(|d| d.terminating).count(),
            in_doubt: metrics.in_doubt,
        }
    }

    fn counters(metrics: &Metrics) -> Counters {
        Counters {
            undecided: metrics.in_doubt.len(),
            coordinating: metrics.coordinating,
            applied: metrics.applied,
            aborted: metrics.aborted,
            decision_conflicts: metrics.decision_conflicts,
            rejected: metrics.rejected,
        }
    }
}
