//! [`ThreePcNode`]: one node hosting a coordinator and a participant.

use common::txn::{MemKv, Outcome, Resource, SendBudget, TxId};
use common::{protocol, Node, NodeId, Outbox, RequestId};

use crate::coordinator::Coordinator;
use crate::participant::Participant;
use crate::types::{Config, Event, Message, Metrics, Record, Request, Response};
use crate::ThreePcError;

/// A three-phase-commit node: the coordinator of its clients' transactions and a participant
/// (over the resource `R`) in others'. One node type for both roles, as in `twopc`, so the two
/// crates have the same shape and the shootout can swap them.
///
/// `Clone` and `Debug` let a model checker hold nodes in its states and tell states apart.
#[derive(Clone, Debug)]
pub struct ThreePcNode<R = MemKv> {
    pub(crate) config: Config,
    pub(crate) coordinator: Coordinator,
    pub(crate) participant: Participant<R>,
    pub(crate) rejected: u64,
}

impl<R: Resource + Default> ThreePcNode<R> {
    /// The participant's resource (its data), for inspection.
    pub fn resource(&self) -> &R {
        &self.participant.resource
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl<R: Resource + Default> Node for ThreePcNode<R> {
    type Config = Config;
    type Message = Message;
    type Request = Request;
    type Response = Response;
    type Event = Event;
    type Record = Record;
    type Metrics = Metrics;
    type Error = ThreePcError;

    const PROTOCOL: u16 = protocol::THREEPC;
    const WIRE_VERSION: u16 = 1;

    fn recover(config: Config, records: Vec<Record>) -> Result<Self, ThreePcError> {
        config.validate()?;
        let mut node = ThreePcNode {
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
            self.rejected += 1;
            return;
        }
        let config = &self.config;
        let p = &mut self.participant;
        let c = &mut self.coordinator;
        let mine = |tx: TxId| tx.coordinator == config.id;
        let result = match msg {
            Message::CanCommit {
                tx,
                writes,
                participants,
            } => p.on_can_commit(config, from, tx, writes, participants, out),
            Message::PreCommit { tx } => p.on_pre_commit(from, tx, out),
            Message::DoCommit { tx } => p.on_decision(config, from, tx, Outcome::Committed, out),
            Message::Abort { tx } => p.on_decision(config, from, tx, Outcome::Aborted, out),
            Message::StateRequest { tx } => p.on_query(config, from, tx, true, out),
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
            Message::DecisionRequest { tx } => p.on_query(config, from, tx, false, out),
            Message::Decision { tx, outcome } if mine(tx) => c.on_decision(tx, outcome, out),
            Message::Decision { tx, outcome } => p.on_decision(config, from, tx, outcome, out),
            Message::Vote { .. } | Message::HaveCommitted { .. } => {
                Err("coordinator message for another coordinator's transaction")
            }
        };
        if let Err(why) = result {
            self.rejected += 1;
            tracing::debug!(
                node = self.config.id,
                from,
                why,
                "threepc: message rejected"
            );
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
        Metrics {
            coordinating: self.coordinator.txs.len(),
            decided_committed: self.coordinator.decided_committed,
            decided_aborted: self.coordinator.decided_aborted,
            in_doubt: self.participant.in_doubt(),
            applied: self.participant.applied,
            aborted: self.participant.aborted,
            terminated_as_backup: self.participant.terminated_as_backup,
            rejected: self.rejected,
            decision_conflicts: self.participant.decision_conflicts,
        }
    }
}
