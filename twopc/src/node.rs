//! [`TwoPcNode`]: one node hosting a coordinator and a participant, joined by message routing.

use common::txn::{MemKv, Resource, SendBudget};
use common::{protocol, Node, NodeId, Outbox, RequestId};

use crate::coordinator::Coordinator;
use crate::participant::Participant;
use crate::types::{Config, Event, Message, Metrics, Record, Request, Response};
use crate::TwoPcError;

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
        &self.participant.resource
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn reject(&mut self, from: NodeId, why: &str) {
        self.rejected += 1;
        tracing::debug!(node = self.config.id, from, why, "twopc: message rejected");
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
    type Error = TwoPcError;

    const PROTOCOL: u16 = protocol::TWOPC;
    const WIRE_VERSION: u16 = 1;

    fn recover(config: Config, records: Vec<Record>) -> Result<Self, TwoPcError> {
        config.validate()?;
        let mut node = TwoPcNode {
            coordinator: Coordinator::default(),
            participant: Participant::new(),
            rejected: 0,
            config,
        };
        for record in records {
            if !node.coordinator.replay(&node.config, &record) {
                node.participant.replay(&node.config, record)?;
            }
        }
        Ok(node)
    }

    fn id(&self) -> NodeId {
        self.config.id
    }

    fn handle_message(&mut self, from: NodeId, msg: Message, out: &mut Outbox<Self>) {
        if from == self.config.id || !self.config.members.contains(&from) {
            self.reject(from, "sender is not a member");
            return;
        }
        let config = &self.config;
        let p = &mut self.participant;
        let c = &mut self.coordinator;
        let mine = |tx: common::txn::TxId| tx.coordinator == config.id;
        let result = match msg {
            Message::Prepare { tx, writes, peers } => {
                p.on_prepare(config, from, tx, writes, peers, out)
            }
            Message::OnePhaseCommit { tx, writes } => p.on_one_phase(config, from, tx, writes, out),
            Message::Commit { tx } => p.on_commit(config, from, tx, out),
            Message::Abort { tx } => p.on_abort(config, from, tx, out),
            Message::StatusQuery { tx } => p.on_status_query(config, from, tx, out),
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
        };
        if let Err(why) = result {
            self.reject(from, why);
        }
    }

    fn handle_request(&mut self, id: RequestId, req: Request, out: &mut Outbox<Self>) {
        match req {
            Request::Commit { writes } => self.coordinator.begin(&self.config, id, writes, out),
        }
    }

    fn tick(&mut self, out: &mut Outbox<Self>) {
        // One budget for both roles: it bounds what this node resends in one tick.
        let mut budget = SendBudget::new(self.config.sends_per_tick_max);
        self.coordinator.tick(&self.config, &mut budget, out);
        self.participant.tick(&self.config, &mut budget, out);
    }

    fn metrics(&self) -> Metrics {
        let in_doubt = self.participant.in_doubt();
        Metrics {
            coordinating: self.coordinator.txs.len(),
            unacknowledged: self.coordinator.unacknowledged(&self.config),
            decided_committed: self.coordinator.decided_committed,
            decided_aborted: self.coordinator.decided_aborted,
            blocked: in_doubt.iter().filter(|d| d.blocked).count(),
            in_doubt,
            applied: self.participant.applied,
            aborted: self.participant.aborted,
            rejected: self.rejected,
            decision_conflicts: self.participant.decision_conflicts,
        }
    }
}
