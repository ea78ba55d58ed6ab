//! Read access to a running simulation: [`SimView`], handed to invariants, the inspection
//! methods of [`Sim`], and the invariant checks run after every step.

use std::hash::Hasher;

use super::net::Network;
use super::trace::TraceEvent;
use super::workload::ClientOp;
#[cfg(doc)]
use super::Fault;
use super::{diagram, Sim, SimConfig, SimError, SimErrorKind};
use crate::snapshot::MemSnapshotStore;
use crate::{Node, NodeId, Persist, RequestId};

/// A boxed invariant.
pub(super) type Invariant<N> = Box<dyn FnMut(&SimView<'_, N>) -> Result<(), String>>;

/// Read access to a simulation's state, handed to invariants (and available from
/// [`Sim::view`]).
pub struct SimView<'a, N: Node> {
    pub(super) sim: &'a Sim<N>,
}

impl<'a, N: Node> SimView<'a, N> {
    /// Virtual time.
    pub fn now(&self) -> u64 {
        self.sim.sched.now
    }

    /// Steps run so far.
    pub fn step(&self) -> u64 {
        self.sim.sched.steps
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.sim.config.seed
    }

    /// The cluster's node ids.
    pub fn ids(&self) -> &'a [NodeId] {
        &self.sim.config.nodes
    }

    /// Node `id`, or `None` if it is down or unknown.
    pub fn node(&self, id: NodeId) -> Option<&'a N> {
        self.sim.slot(id).and_then(|s| s.node.as_ref())
    }

    /// Every node, in the order of [`SimConfig::nodes`], with `None` for the ones that are down.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, Option<&'a N>)> + 'a {
        self.sim
            .cluster
            .slots
            .iter()
            .map(|s| (s.id, s.node.as_ref()))
    }

    /// The durable (synced) records of node `id`, oldest first, as recovery would see them.
    pub fn records(&self, id: NodeId) -> &'a [N::Record] {
        self.sim
            .slot(id)
            .map(|s| s.durable.as_slice())
            .unwrap_or(&[])
    }

    /// The records node `id` asked to persist that are not synced yet.
    pub fn unsynced(&self, id: NodeId) -> &'a [Persist<N::Record>] {
        self.sim.slot(id).map(|s| s.outbox.records()).unwrap_or(&[])
    }

    /// The client history so far.
    pub fn history(&self) -> &'a [ClientOp<N>] {
        &self.sim.clients.history
    }

    /// The history entry of request `id`, once it has been invoked.
    pub fn op(&self, id: RequestId) -> Option<&'a ClientOp<N>> {
        self.sim
            .clients
            .op_index
            .get(&id)
            .and_then(|&i| self.sim.clients.history.get(i))
    }

    /// Events the nodes published: `(time, node, event)` ([`SimConfig::record_events`]).
    pub fn events(&self) -> &'a [(u64, NodeId, N::Event)] {
        &self.sim.rec.events
    }

    /// The network's current state.
    pub fn network(&self) -> &'a Network {
        &self.sim.links.net
    }
}

impl<N: Node> Sim<N>
where
    N::Request: Clone,
{
    /// Read access to the state (what invariants see).
    pub fn view(&self) -> SimView<'_, N> {
        SimView { sim: self }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Virtual time.
    pub fn now(&self) -> u64 {
        self.sched.now
    }

    /// Steps run so far.
    pub fn steps(&self) -> u64 {
        self.sched.steps
    }

    /// Node `id`, or `None` if it is down or unknown.
    pub fn node(&self, id: NodeId) -> Option<&N> {
        self.slot(id).and_then(|s| s.node.as_ref())
    }

    /// Mutable access to node `id` (for tests that poke a core directly; effects the caller
    /// produces through its own outbox are not released by the simulator).
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut N> {
        let i = *self.cluster.index.get(&id)?;
        self.cluster.slots[i].node.as_mut()
    }

    /// Syncs that failed through [`Fault::FailSync`] so far (each stopped its node).
    pub fn failed_syncs(&self) -> u64 {
        self.cluster.failed_syncs
    }

    /// The snapshot store of node `id` (to inspect it, or to damage a snapshot as a disk fault
    /// would with [`MemSnapshotStore::corrupt`]).
    pub fn snapshot_store(&self, id: NodeId) -> Option<&MemSnapshotStore> {
        self.slot(id).map(|s| &s.snapshots)
    }

    /// The durable records of node `id`.
    pub fn records(&self, id: NodeId) -> &[N::Record] {
        self.slot(id).map(|s| s.durable.as_slice()).unwrap_or(&[])
    }

    /// The client history so far, in invocation order.
    pub fn history(&self) -> &[ClientOp<N>] {
        &self.clients.history
    }

    /// Events the nodes published: `(time, node, event)`.
    pub fn events(&self) -> &[(u64, NodeId, N::Event)] {
        &self.rec.events
    }

    /// The history entry of request `id`, once it has been invoked (see [`Sim::submit`]).
    pub fn op(&self, id: RequestId) -> Option<&ClientOp<N>> {
        self.view().op(id)
    }

    /// The recorded trace (empty unless [`SimConfig::record_trace`]).
    pub fn trace(&self) -> &[TraceEvent] {
        &self.rec.trace
    }

    /// The recorded trace as a Mermaid sequence diagram ([`diagram::render`]).
    pub fn diagram(&self, options: &diagram::DiagramOptions) -> String {
        diagram::render(&self.rec.trace, options)
    }

    /// A hash of every event so far: equal for two runs of the same seed (within one build of
    /// the workspace), and almost surely different for different runs.
    pub fn trace_hash(&self) -> u64 {
        self.rec.hasher.finish()
    }

    /// The failure that stopped the run, if any.
    pub fn failure(&self) -> Option<&SimError> {
        self.failed.as_ref()
    }

    /// Runs every invariant against the current state; the first failure stops the run.
    pub(super) fn check_invariants(&mut self) -> Result<(), SimError> {
        if self.invariants.is_empty() {
            return Ok(());
        }
        let mut invariants = std::mem::take(&mut self.invariants);
        let mut failure = None;
        {
            let view = SimView { sim: &*self };
            for (name, check) in invariants.iter_mut() {
                if let Err(message) = check(&view) {
                    failure = Some(SimErrorKind::Invariant {
                        name: name.clone(),
                        message,
                    });
                    break;
                }
            }
        }
        self.invariants = invariants;
        match failure {
            Some(kind) => Err(self.fail(kind)),
            None => Ok(()),
        }
    }
}
