//! The pump of the workspace's cores: any [`Node`] whose answers say "applied", released by the
//! Outbox rule (records into the node's in-memory `Vec`, then messages into the queue, then
//! answers).

use std::collections::VecDeque;

use common::{Effects, Node, NodeId, Outbox, Persist, RequestId};

use super::{Pump, DELIVERIES_MAX};
use crate::BenchError;

/// What the pump needs from one of our cores beyond [`Node`].
pub trait OurCore: Node {
    /// The name in tables.
    const NAME: &'static str;

    /// Node `id` of a cluster of `members`, with the crate's default configuration and the
    /// [`paxos::Counter`] state machine, recovered from no records.
    fn build(id: NodeId, members: Vec<NodeId>) -> Result<Self, BenchError>;

    /// Whether this node leads and accepts proposals.
    fn is_leading(&self) -> bool;

    /// The request proposing `command`.
    fn propose(command: u64) -> Self::Request;

    /// The state machine's output if `response` says a command was applied (the counter's
    /// total: the sum of every command applied so far); `Err` if it says the proposal failed.
    fn applied(response: &Self::Response) -> Result<Option<u64>, String>;
}

impl OurCore for paxos::PaxosNode<paxos::Counter> {
    const NAME: &'static str = "our paxos";

    fn build(id: NodeId, members: Vec<NodeId>) -> Result<Self, BenchError> {
        let config = paxos::Config::new(id, members);
        Self::recover(config.into(), Vec::new())
            .map_err(|e| BenchError::Invalid(format!("paxos replica {id}: {e}")))
    }

    fn is_leading(&self) -> bool {
        self.is_leader()
    }

    fn propose(command: u64) -> Self::Request {
        paxos::Request::Propose {
            command,
            session: None,
        }
    }

    fn applied(response: &Self::Response) -> Result<Option<u64>, String> {
        match response {
            paxos::Response::Applied { output, .. } => Ok(Some(*output)),
            paxos::Response::Failed(e) => Err(e.to_string()),
            _ => Ok(None),
        }
    }
}

impl OurCore for raft::RaftNode<paxos::Counter> {
    const NAME: &'static str = "our raft";

    fn build(id: NodeId, members: Vec<NodeId>) -> Result<Self, BenchError> {
        let config = raft::Config::new(id, members);
        Self::recover(config.into(), Vec::new())
            .map_err(|e| BenchError::Invalid(format!("raft node {id}: {e}")))
    }

    fn is_leading(&self) -> bool {
        self.role() == raft::Role::Leader
    }

    fn propose(command: u64) -> Self::Request {
        raft::Request::Propose(command)
    }

    fn applied(response: &Self::Response) -> Result<Option<u64>, String> {
        match response {
            raft::Response::Applied { output, .. } => Ok(Some(*output)),
            raft::Response::Failed(e) => Err(e.to_string()),
            _ => Ok(None),
        }
    }
}

/// The messages one step sent: `(to, message)`, in order.
type Sent<N> = Vec<(NodeId, <N as Node>::Message)>;

/// A cluster of one of our cores, pumped by hand.
pub struct OurPump<N: OurCore> {
    /// Node `id` at index `id - 1`.
    nodes: Vec<N>,
    /// Each node's durable records: what a store that never crashes would hold.
    disks: Vec<Vec<N::Record>>,
    /// Checkpoints each node asked for (all durable at once here).
    checkpoints: Vec<u64>,
    /// One outbox, emptied after every step.
    out: Outbox<N>,
    /// The effects of the step being released; drained, then traded back to the outbox by the
    /// next release, so that steps reuse two sets of buffers (as a driver's loop would).
    effects: Effects<N>,
    /// Messages in flight, oldest first: each step's list whole, with its sender. Moving the
    /// list, not each message, keeps the pump's own cost per message down (the omnipaxos pump
    /// likewise extends its queue with each step's list).
    queue: VecDeque<(NodeId, Sent<N>)>,
    /// Emptied lists, handed back to the effects for the next steps.
    spare: Vec<Sent<N>>,
    /// Index of the leader, once found.
    leader: Option<usize>,
    next_request: u64,
    /// Commands the leader applied since the last [`Pump::deliver_until_quiet`].
    applied: u64,
    /// The leader's counter after its latest applied command.
    applied_sum: u64,
    delivered: u64,
    /// A failure answered by the leader, reported by the next call.
    failure: Option<String>,
}

impl<N: OurCore> OurPump<N> {
    /// `replicas` nodes with ids `1..=replicas`.
    pub fn new(replicas: u64) -> Result<Self, BenchError> {
        let members: Vec<NodeId> = (1..=replicas).collect();
        let nodes = members
            .iter()
            .map(|&id| N::build(id, members.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let n = nodes.len();
        Ok(OurPump {
            nodes,
            disks: vec![Vec::new(); n],
            checkpoints: vec![0; n],
            out: Outbox::new(),
            effects: Effects::default(),
            queue: VecDeque::new(),
            spare: Vec::new(),
            leader: None,
            next_request: 0,
            applied: 0,
            applied_sum: 0,
            delivered: 0,
            failure: None,
        })
    }

    /// Releases the effects of node `i`'s last step by the Outbox rule.
    fn release(&mut self, i: usize) {
        let effects = &mut self.effects;
        self.out.take_into(effects);
        let disk = &mut self.disks[i];
        let mut checkpoints = 0;
        for record in effects.records.drain(..) {
            match record {
                Persist::Append(r) => disk.push(r),
                Persist::Checkpoint(r) => {
                    checkpoints += 1;
                    disk.clear();
                    disk.push(r);
                }
            }
        }
        if checkpoints > 0 {
            self.checkpoints[i] += checkpoints;
            self.nodes[i].checkpoints_durable(self.checkpoints[i]);
        }
        if !effects.messages.is_empty() {
            let list = self.spare.pop().unwrap_or_default();
            let sent = std::mem::replace(&mut effects.messages, list);
            self.queue.push_back((i as NodeId + 1, sent));
        }
        effects.events.clear();
        for (_, response) in effects.responses.drain(..) {
            match N::applied(&response) {
                Ok(Some(total)) => {
                    self.applied += 1;
                    self.applied_sum = total;
                }
                Ok(None) => {}
                Err(e) => {
                    self.failure.get_or_insert(e);
                }
            }
        }
    }

    fn check(&mut self) -> Result<(), BenchError> {
        match self.failure.take() {
            Some(e) => Err(BenchError::Op(format!("{}: {e}", N::NAME))),
            None => Ok(()),
        }
    }
}

impl<N: OurCore> Pump for OurPump<N> {
    fn name(&self) -> &'static str {
        N::NAME
    }

    fn tick_all(&mut self) -> Result<(), BenchError> {
        for i in 0..self.nodes.len() {
            self.nodes[i].tick(&mut self.out);
            self.release(i);
        }
        self.check()
    }

    fn deliver_until_quiet(&mut self) -> Result<u64, BenchError> {
        let mut deliveries = 0;
        // In order: a step's list is delivered whole before any list queued after it.
        while let Some((from, mut list)) = self.queue.pop_front() {
            for (to, message) in list.drain(..) {
                deliveries += 1;
                if deliveries > DELIVERIES_MAX {
                    return Err(BenchError::Op(format!(
                        "{}: more than {DELIVERIES_MAX} messages without a pause",
                        N::NAME
                    )));
                }
                let i = (to - 1) as usize;
                let Some(node) = self.nodes.get_mut(i) else {
                    return Err(BenchError::Op(format!("{}: message to node {to}", N::NAME)));
                };
                node.handle_message(from, message, &mut self.out);
                self.release(i);
            }
            self.spare.push(list);
        }
        self.delivered += deliveries;
        self.check()?;
        Ok(std::mem::take(&mut self.applied))
    }

    fn find_leader(&mut self) -> Option<NodeId> {
        if let Some(i) = self.leader {
            return Some(i as NodeId + 1);
        }
        let leaders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_leading())
            .collect();
        match leaders[..] {
            [i] => {
                self.leader = Some(i);
                Some(i as NodeId + 1)
            }
            _ => None,
        }
    }

    fn propose(&mut self, commands: &[u64]) -> Result<(), BenchError> {
        let Some(i) = self.leader else {
            return Err(BenchError::NotReady(format!("{}: no leader", N::NAME)));
        };
        // Handed over together, as the driver hands over the requests it found waiting.
        let first = self.next_request + 1;
        self.next_request += commands.len() as u64;
        let requests = (first..)
            .zip(commands)
            .map(|(id, &command)| (RequestId(id), N::propose(command)));
        self.nodes[i].handle_requests(requests, &mut self.out);
        self.release(i);
        self.check()
    }

    fn applied_sum(&self) -> u64 {
        self.applied_sum
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }
}
