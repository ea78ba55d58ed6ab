//! The pump of raft-rs 0.7: a `RawNode` over its own `MemStorage`, each `Ready` handled the way
//! the crate's documentation lays out (send, apply, append, save the hard state, send the
//! persisted messages, advance, then the same for the `LightReady`).
//!
//! Configuration: raft-rs's defaults (election after 20 ticks, heartbeat every 2, 256 appends
//! in flight per follower), except two that decide whether it can batch as the other
//! implementations do: `max_size_per_msg`, whose default of 0 caps every append at one entry,
//! is TiKV's 1 MiB; and `batch_append` is on, so the appends to one follower that a `Ready`
//! gathers (one per proposal) go out as one message, as omnipaxos merges its accepts and our
//! cores batch on their own.

use std::collections::VecDeque;

use common::NodeId;
use raft_rs::eraftpb::{Entry, EntryType, Message};
use raft_rs::storage::MemStorage;
use raft_rs::{Config, RawNode, StateRole};

use super::{Pump, DELIVERIES_MAX};
use crate::BenchError;

/// `max_size_per_msg` of every node (TiKV's default).
pub const MAX_SIZE_PER_MSG_BYTES: u64 = 1024 * 1024;

/// A cluster of raft-rs nodes, pumped by hand.
pub struct RaftRsPump {
    /// Node `id` at index `id - 1`.
    nodes: Vec<RawNode<MemStorage>>,
    /// Messages in flight, oldest first (each names its receiver).
    queue: VecDeque<Message>,
    leader: Option<usize>,
    /// Commands the leader applied since the last [`Pump::deliver_until_quiet`].
    applied: u64,
    applied_sum: u64,
    delivered: u64,
}

fn fail(what: &str, e: raft_rs::Error) -> BenchError {
    BenchError::Op(format!("raft-rs: {what}: {e}"))
}

impl RaftRsPump {
    /// `replicas` nodes with ids `1..=replicas`.
    pub fn new(replicas: u64) -> Result<Self, BenchError> {
        let voters: Vec<u64> = (1..=replicas).collect();
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let nodes = voters
            .iter()
            .map(|&id| {
                let config = Config {
                    id,
                    max_size_per_msg: MAX_SIZE_PER_MSG_BYTES,
                    batch_append: true,
                    ..Config::default()
                };
                config
                    .validate()
                    .map_err(|e| BenchError::Invalid(format!("raft-rs node {id}: {e}")))?;
                let storage = MemStorage::new_with_conf_state((voters.clone(), Vec::new()));
                RawNode::new(&config, storage, &logger)
                    .map_err(|e| BenchError::Invalid(format!("raft-rs node {id}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RaftRsPump {
            nodes,
            queue: VecDeque::new(),
            leader: None,
            applied: 0,
            applied_sum: 0,
            delivered: 0,
        })
    }

    /// Handles node `i`'s `Ready`, if it has one.
    fn release(&mut self, i: usize) -> Result<(), BenchError> {
        let is_leader = self.leader == Some(i);
        let node = &mut self.nodes[i];
        if !node.has_ready() {
            return Ok(());
        }
        let mut ready = node.ready();
        self.queue.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            node.mut_store()
                .wl()
                .apply_snapshot(snapshot)
                .map_err(|e| fail("apply snapshot", e))?;
        }
        let committed = ready.take_committed_entries();
        if is_leader {
            apply(&committed, &mut self.applied, &mut self.applied_sum)?;
        }
        if !ready.entries().is_empty() {
            node.mut_store()
                .wl()
                .append(ready.entries())
                .map_err(|e| fail("append", e))?;
        }
        if let Some(hard_state) = ready.hs() {
            node.mut_store().wl().set_hardstate(hard_state.clone());
        }
        self.queue.extend(ready.take_persisted_messages());
        let mut light = node.advance(ready);
        if let Some(commit) = light.commit_index() {
            node.mut_store().wl().mut_hard_state().set_commit(commit);
        }
        self.queue.extend(light.take_messages());
        let committed = light.take_committed_entries();
        node.advance_apply();
        if is_leader {
            apply(&committed, &mut self.applied, &mut self.applied_sum)?;
        }
        Ok(())
    }
}

/// Applies committed entries at the leader: counts the commands and adds them to `sum`, skipping
/// the empty entry of a new term.
fn apply(entries: &[Entry], applied: &mut u64, sum: &mut u64) -> Result<(), BenchError> {
    for entry in entries {
        if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
            continue;
        }
        let bytes: [u8; 8] = entry.data[..].try_into().map_err(|_| {
            BenchError::Op(format!(
                "raft-rs: a command of {} bytes instead of 8",
                entry.data.len()
            ))
        })?;
        *applied += 1;
        *sum = sum.wrapping_add(u64::from_le_bytes(bytes));
    }
    Ok(())
}

impl Pump for RaftRsPump {
    fn name(&self) -> &'static str {
        "raft-rs"
    }

    fn tick_all(&mut self) -> Result<(), BenchError> {
        for i in 0..self.nodes.len() {
            self.nodes[i].tick();
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
                    "raft-rs: more than {DELIVERIES_MAX} messages without a pause"
                )));
            }
            let to = message.to;
            let i = (to as usize).wrapping_sub(1);
            let Some(node) = self.nodes.get_mut(i) else {
                return Err(BenchError::Op(format!("raft-rs: message to node {to}")));
            };
            node.step(message).map_err(|e| fail("step", e))?;
            self.release(i)?;
        }
        self.delivered += deliveries;
        Ok(std::mem::take(&mut self.applied))
    }

    fn find_leader(&mut self) -> Option<NodeId> {
        if let Some(i) = self.leader {
            return Some(i as NodeId + 1);
        }
        let i = self
            .nodes
            .iter()
            .position(|n| n.raft.state == StateRole::Leader)?;
        let leader = self.nodes[i].raft.id;
        let term = self.nodes[i].raft.term;
        // Every node follows it, and its first entry (the empty one of its term) is committed.
        let followed = self
            .nodes
            .iter()
            .all(|n| n.raft.leader_id == leader && n.raft.term == term);
        let log = &self.nodes[i].raft.raft_log;
        if !followed || log.committed < log.last_index() {
            return None;
        }
        self.leader = Some(i);
        Some(leader)
    }

    fn propose(&mut self, commands: &[u64]) -> Result<(), BenchError> {
        let Some(i) = self.leader else {
            return Err(BenchError::NotReady("raft-rs: no leader".into()));
        };
        for &command in commands {
            self.nodes[i]
                .propose(Vec::new(), command.to_le_bytes().to_vec())
                .map_err(|e| fail("propose", e))?;
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
