//! An in-process cluster that pumps messages between [`RaftNode`]s by hand, for tests,
//! examples and benchmarks.
//!
//! [`Cluster`] is the workspace's hand-pumped cluster, [`common::pump::Cluster`], with what only
//! Raft can answer added: who leads, and a run until a leader holds a majority. Everything else
//! (stepping, flushing by the Outbox rule, delivering, crashes with torn tails, partitions, the
//! seeded [`Faults`]) is the common harness's, reached through `Deref`.
//!
//! It serves the paper-section tests, the crate documentation and the core benchmarks, where
//! stepping by hand is the point; the simulation proofs (`tests/sim_*.rs`) run on the
//! workspace simulator, `common::sim`, instead.
//!
//! [`invariants`] holds the properties of the paper's Figure 3 as checks over the live nodes of
//! a cluster, generic over the state machine, for this cluster, the simulator, or a host of
//! many groups alike.

pub mod invariants;

use std::ops::{Deref, DerefMut};

use common::pump;
use common::{Node, NodeId};

pub use common::pump::Faults;

use crate::config::Config;
use crate::core::{RaftNode, RecordOf};
use crate::message::Role;
use crate::state_machine::{Setup, StateMachine};

/// A node's setup (configuration and state-machine factory) and the durable records it starts
/// from.
pub type NodeDisk<S> = (Setup<Config, S>, Vec<RecordOf<S>>);

/// A cluster of [`RaftNode`]s in one thread, driven by hand: [`common::pump::Cluster`] plus
/// Raft's own questions.
pub struct Cluster<S: StateMachine>(pump::Cluster<RaftNode<S>>);

impl<S: StateMachine> Deref for Cluster<S> {
    type Target = pump::Cluster<RaftNode<S>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<S: StateMachine> DerefMut for Cluster<S> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<S: StateMachine + Default> Cluster<S> {
    /// A cluster of `n` voters with ids `1..=n` and default configurations, seeded by `seed`.
    pub fn new(n: u64, seed: u64) -> Self {
        let voters: Vec<NodeId> = (1..=n).collect();
        let configs = voters
            .iter()
            .map(|&id| {
                let mut c = Config::new(id, voters.clone());
                c.seed = seed;
                c
            })
            .collect();
        Self::with_configs(configs, seed)
    }

    /// A cluster of nodes with the given configurations (recovered from empty disks).
    ///
    /// # Panics
    ///
    /// If a configuration is invalid: this is a test harness.
    pub fn with_configs(configs: Vec<Config>, seed: u64) -> Self {
        Self::with_disks(configs.into_iter().map(|c| (c, Vec::new())).collect(), seed)
    }

    /// A cluster of nodes recovered from the given configurations and durable records (to
    /// start from a prepared state, such as the logs of the paper's figures).
    ///
    /// # Panics
    ///
    /// If a configuration or record list is invalid: this is a test harness.
    pub fn with_disks(nodes: Vec<(Config, Vec<RecordOf<S>>)>, seed: u64) -> Self {
        Self::with_setups(
            nodes
                .into_iter()
                .map(|(c, records)| (Setup::from(c), records))
                .collect(),
            seed,
        )
    }
}

impl<S: StateMachine> Cluster<S> {
    /// A cluster of nodes built from the given setups (state-machine factories included) and
    /// durable records.
    ///
    /// # Panics
    ///
    /// If a configuration or record list is invalid: this is a test harness.
    pub fn with_setups(nodes: Vec<NodeDisk<S>>, seed: u64) -> Self {
        Self(pump::Cluster::new(
            nodes
                .into_iter()
                .map(|(setup, records)| (setup.config.id, setup, records)),
            seed,
        ))
    }

    /// The leader of the highest term among running nodes, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.running()
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    /// Ticks and delivers until a leader exists that a majority of running nodes follow in its
    /// term, for at most `ticks_max` ticks.
    pub fn run_until_leader(&mut self, ticks_max: u64) -> Option<NodeId> {
        for _ in 0..=ticks_max {
            self.deliver_all(pump::DELIVERIES_PER_ROUND_MAX);
            self.flush_all();
            if let Some(l) = self.leader() {
                let (term, voters) = self.node(l).map_or((0, Default::default()), |n| {
                    (n.term(), n.membership().voters.clone())
                });
                let following = self
                    .running()
                    .filter(|n| {
                        voters.contains(&n.id()) && n.term() == term && n.leader() == Some(l)
                    })
                    .count();
                // The leader counts itself among its followers here.
                if following > voters.len() / 2 {
                    return Some(l);
                }
            }
            self.tick_all();
        }
        None
    }
}
