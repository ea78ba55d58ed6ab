//! [`TwoPcNode`]: one node hosting a coordinator (`coordinator.rs`) and a participant
//! (`participant.rs`), joined by message routing; its [`Event`]s and [`Metrics`]; and its
//! [`AtomicCommit`] binding to the shared skeleton of `common::txn`.
//!
//! The sans-IO boundary is checked, not only promised: clippy denies here the clocks, sleeps,
//! files, sockets, unseeded randomness and tokio that the workspace's `clippy.toml` lists.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub(crate) mod coordinator;
pub(crate) mod participant;

use common::txn::{
    reject, replay_records, AtomicCommit, Counters, MemKv, Outcome, Request, Resource, Response,
    SendBudget, TxError, TxId,
};
use common::{protocol, Node, NodeId, Outbox, RequestId};

use crate::client::ParticipantStatus;
use crate::{Config, Message, Record};
use coordinator::Coordinator;
use participant::Participant;

/// What a two-phase-commit node tells observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Coordinator: the decision on `tx` was taken.
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

/// A snapshot of a two-phase-commit node's state.
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

/// A two-phase-commit node: the coordinator of the transactions its clients start and a
/// participant, over the resource `R`, in the transactions of others.
///
/// One node type carries both roles because, as in real databases, every node is both a
/// transaction manager and a resource manager: the two roles share one message enum, one log
/// and one driver, and a homogeneous cluster is what the simulator and the driver run. Inside,
/// the roles are separate state machines (coordinator-side and participant-side code
/// never touch each other's state); messages are routed to the role they are addressed to.
///
/// `Clone` and `Debug` let a model checker hold nodes in its states and tell states apart.
#[derive(Clone, Debug)]
pub struct TwoPcNode<R = MemKv> {
    pub(crate) config: Config,
    pub(crate) coordinator: Coordinator,
    pub(crate) participant: Participant<R>,
    pub(crate) rejected: u64,
}

impl<R: Resource + Default> TwoPcNode<R> {
    /// The participant's resource (its data), for inspection.
    pub fn resource(&self) -> &R {
        &self.participant.ledger.resource
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Routes a message to the role it is addressed to.
    fn route(
        &mut self,
        from: NodeId,
        msg: Message,
        out: &mut Outbox<Self>,
    ) -> Result<(), &'static str> {
        self.config.txn.check_sender(from)?;
        let config = &self.config;
        let p = &mut self.participant;
        let c = &mut self.coordinator;
        let mine = |tx: TxId| tx.coordinator == config.txn.id;
        match msg {
            Message::Prepare { tx, writes, peers } => {
                p.on_prepare(config, from, tx, writes, peers, out)
            }
            Message::OnePhaseCommit { tx, writes } => p.on_one_phase(config, from, tx, writes, out),
            Message::Commit { tx } => p.on_commit(from, tx, out),
            Message::Abort { tx } => p.on_abort(from, tx, out),
            Message::StatusQuery { tx } => p.on_status_query(from, tx, out),
            Message::StatusReply { tx, status } => p.on_status_reply(config, from, tx, status, out),
            Message::Vote { tx, .. }
            | Message::OnePhaseResult { tx, .. }
            | Message::Ack { tx }
            | Message::DecisionRequest { tx }
                if !mine(tx) =>
            {
                Err("coordinator message for another coordinator's transaction")
            }
            Message::Vote { tx, vote } => c.on_vote(from, tx, vote, out),
            Message::OnePhaseResult { tx, outcome } => {
                c.on_one_phase_result(from, tx, outcome, out)
            }
            Message::Ack { tx } => c.on_ack(from, tx, out),
            Message::DecisionRequest { tx } => c.on_decision_request(from, tx, out),
        }
    }
}

impl<R: Resource + Default> Node for TwoPcNode<R> {
    type Config = Config;
    type Message = Message;
    type Request = Request;
    type Response = Response;
    type Event = Event;
    type Record = Record;
    type Metrics = Metrics;
    type Error = TxError;

    const PROTOCOL: u16 = protocol::TWOPC;
    const WIRE_VERSION: u16 = 1;

    fn recover(config: Config, records: Vec<Record>) -> Result<Self, TxError> {
        config.validate()?;
        let mut coordinator = Coordinator::default();
        let mut participant = Participant::new(&config);
        replay_records(
            records,
            |r| coordinator.replay(&config, r),
            |r| participant.replay(&config, r),
        )?;
        Ok(TwoPcNode {
            config,
            coordinator,
            participant,
            rejected: 0,
        })
    }

    fn id(&self) -> NodeId {
        self.config.txn.id
    }

    fn handle_message(&mut self, from: NodeId, msg: Message, out: &mut Outbox<Self>) {
        let result = self.route(from, msg, out);
        reject::<Self>(result, &mut self.rejected, self.config.txn.id, from);
    }

    fn handle_request(&mut self, id: RequestId, req: Request, out: &mut Outbox<Self>) {
        match req {
            Request::Commit { writes } => self.coordinator.begin(&self.config, id, writes, out),
        }
    }

    fn tick(&mut self, out: &mut Outbox<Self>) {
        // One budget for both roles: it bounds what this node resends in one tick.
        let mut budget = SendBudget::new(self.config.txn.sends_per_tick_max);
        self.coordinator.tick(&self.config, &mut budget, out);
        self.participant.tick(&self.config, &mut budget, out);
    }

    fn metrics(&self) -> Metrics {
        let in_doubt = self.participant.in_doubt();
        let ledger = &self.participant.ledger;
        Metrics {
            coordinating: self.coordinator.txs.len(),
            unacknowledged: self.coordinator.unacknowledged(&self.config),
            decided_committed: self.coordinator.book.decided_committed,
            decided_aborted: self.coordinator.book.decided_aborted,
            blocked: in_doubt.iter().filter(|d| d.blocked).count(),
            in_doubt,
            applied: ledger.applied,
            aborted: ledger.aborted,
            rejected: self.rejected,
            decision_conflicts: ledger.decision_conflicts,
        }
    }
}

impl<R: Resource + Default> AtomicCommit for TwoPcNode<R> {
    type Status = ParticipantStatus;
    type Resource = R;

    const NAME: &'static str = "twopc";

    fn resource(&self) -> &R {
        &self.participant.ledger.resource
    }

    fn reserved_record(seq_limit: u64) -> Record {
        Record::Reserved { seq_limit }
    }

    fn committed_record(tx: TxId) -> Record {
        Record::Committed { tx }
    }

    fn aborted_record(tx: TxId) -> Record {
        Record::Aborted { tx }
    }

    fn decided_event(tx: TxId, outcome: Outcome) -> Event {
        Event::Decided { tx, outcome }
    }

    fn finished_event(tx: TxId, outcome: Outcome) -> Event {
        Event::Finished { tx, outcome }
    }

    fn finished(event: &Event) -> Option<(TxId, Outcome)> {
        match event {
            Event::Finished { tx, outcome } => Some((*tx, *outcome)),
            _ => None,
        }
    }

    fn participant_status(metrics: Metrics) -> ParticipantStatus {
        ParticipantStatus {
            blocked: metrics.blocked,
            in_doubt: metrics.in_doubt,
        }
    }

    fn counters(m: &Metrics) -> Counters {
        Counters {
            coordinating: m.coordinating,
            undecided: m.in_doubt.len(),
            applied: m.applied,
            aborted: m.aborted,
            rejected: m.rejected,
            decision_conflicts: m.decision_conflicts,
        }
    }
}
