//! The pump of omnipaxos 0.2: `OmniPaxos` over its own `MemoryStorage`, default configuration.
//!
//! omnipaxos keeps no state machine: the application reads the decided entries back from the
//! log. The pump does that on the leader after each of its steps (`read_decided_suffix` from the
//! last index it read), adding each command to its sum, as an application applying them would.

use std::collections::VecDeque;

use common::NodeId;
use omnipaxos::messages::Message;
use omnipaxos::storage::{Entry, NoSnapshot};
use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig, OmniPaxos, OmniPaxosConfig, ServerConfig};
use omnipaxos_storage::memory_storage::MemoryStorage;

use super::{Pump, DELIVERIES_MAX};
use crate::BenchError;

/// The replicated command: the same `u64` every implementation carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command(pub u64);

impl Entry for Command {
    type Snapshot = NoSnapshot;
}

type Server = OmniPaxos<Command, MemoryStorage<Command>>;

/// A cluster of omnipaxos servers, pumped by hand.
pub struct OmniPaxosPump {
    /// Server `pid` at index `pid - 1`.
    servers: Vec<Server>,
    /// Messages in flight, oldest first (each names its receiver).
    queue: VecDeque<Message<Command>>,
    /// Reused buffer for `take_outgoing_messages`.
    outgoing: Vec<Message<Command>>,
    leader: Option<usize>,
    /// The leader's log index up to which decided entries were applied.
    applied_idx: usize,
    /// Commands the leader applied since the last [`Pump::deliver_until_quiet`].
    applied: u64,
    applied_sum: u64,
    delivered: u64,
}

impl OmniPaxosPump {
    /// `replicas` servers with pids `1..=replicas`.
    pub fn new(replicas: u64) -> Result<Self, BenchError> {
        let nodes: Vec<NodeId> = (1..=replicas).collect();
        let servers = nodes
            .iter()
            .map(|&pid| {
                OmniPaxosConfig {
                    cluster_config: ClusterConfig {
                        configuration_id: 1,
                        nodes: nodes.clone(),
                        ..ClusterConfig::default()
                    },
                    server_config: ServerConfig {
                        pid,
                        ..ServerConfig::default()
                    },
                }
                .build(MemoryStorage::default())
                .map_err(|e| BenchError::Invalid(format!("omnipaxos server {pid}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OmniPaxosPump {
            servers,
            queue: VecDeque::new(),
            outgoing: Vec::new(),
            leader: None,
            applied_idx: 0,
            applied: 0,
            applied_sum: 0,
            delivered: 0,
        })
    }

    /// Moves server `i`'s outgoing messages to the queue and, on the leader, applies what was
    /// newly decided.
    fn release(&mut self, i: usize) -> Result<(), BenchError> {
        self.servers[i].take_outgoing_messages(&mut self.outgoing);
        self.queue.extend(self.outgoing.drain(..));
        if self.leader != Some(i) {
            return Ok(());
        }
        let leader = &self.servers[i];
        let decided = leader.get_decided_idx();
        if decided <= self.applied_idx {
            return Ok(());
        }
        let entries = leader
            .read_decided_suffix(self.applied_idx)
            .ok_or_else(|| {
                BenchError::Op(format!(
                    "omnipaxos: no decided suffix from index {}",
                    self.applied_idx
                ))
            })?;
        for entry in entries {
            match entry {
                LogEntry::Decided(Command(c)) => {
                    self.applied += 1;
                    self.applied_sum = self.applied_sum.wrapping_add(c);
                }
                other => {
                    return Err(BenchError::Op(format!(
                        "omnipaxos: unexpected decided entry {other:?}"
                    )))
                }
            }
        }
        self.applied_idx = decided;
        Ok(())
    }
}

impl Pump for OmniPaxosPump {
    fn name(&self) -> &'static str {
        "omnipaxos"
    }

    fn tick_all(&mut self) -> Result<(), BenchError> {
        for i in 0..self.servers.len() {
            self.servers[i].tick();
            self.release(i)?;
        }
        Ok(())
    }

    fn deliver_until_quiet(&mut self) -> Result<u64, BenchError> {
        let mut deliveries = 0;
        while let Some(message) = self.queue.pop_front() {
            deliveries += 1;
            if deliveries > DELIVERIES_MAX {
                return Err(BenchError::Op(format!(
                    "omnipaxos: more than {DELIVERIES_MAX} messages without a pause"
                )));
            }
            let to = message.get_receiver();
            let i = (to as usize).wrapping_sub(1);
            let Some(server) = self.servers.get_mut(i) else {
                return Err(BenchError::Op(format!("omnipaxos: message to server {to}")));
            };
            server.handle_incoming(message);
            self.release(i)?;
        }
        self.delivered += deliveries;
        Ok(std::mem::take(&mut self.applied))
    }

    fn find_leader(&mut self) -> Option<NodeId> {
        if let Some(i) = self.leader {
            return Some(i as NodeId + 1);
        }
        // A leader in the accept phase that every server promised to and accepts from.
        let first = self.servers.first()?.get_current_leader()?;
        let agreed = self
            .servers
            .iter()
            .all(|s| s.get_current_leader() == Some((first.0, true)));
        if !agreed {
            return None;
        }
        let i = (first.0 as usize).checked_sub(1)?;
        self.applied_idx = self.servers.get(i)?.get_decided_idx();
        self.leader = Some(i);
        Some(first.0)
    }

    fn propose(&mut self, commands: &[u64]) -> Result<(), BenchError> {
        let Some(i) = self.leader else {
            return Err(BenchError::NotReady("omnipaxos: no leader".into()));
        };
        for &command in commands {
            self.servers[i]
                .append(Command(command))
                .map_err(|e| BenchError::Op(format!("omnipaxos: append refused: {e:?}")))?;
        }
        self.release(i)
    }

    fn applied_sum(&self) -> u64 {
        self.applied_sum
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }
}
