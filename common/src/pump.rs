//! A cluster of any [`Node`] pumped by hand in one thread, for tests, examples and benchmarks.
//!
//! [`Cluster`] plays the driver: every node has an [`Outbox`]; [`Cluster::flush`] releases it
//! the way the Outbox rule says (early messages at once; records into the node's in-memory
//! "disk", reported with [`Node::records_durable`] and [`Node::checkpoints_durable`]; then
//! messages into the network, responses and events to the cluster). Everything is
//! deterministic: the network is one FIFO queue, and the optional faults ([`Faults`]) draw from a
//! seeded [`DetRng`].
//!
//! It serves paper-section tests, crate documentation and core benchmarks, where stepping by
//! hand is the point (the protocol crates wrap it with their own questions, such as "who
//! leads?"); simulation proofs run on the workspace simulator, `common::sim`, instead.
//!
//! Faults model what the simulator does: dropped, duplicated and reordered messages, several
//! steps gathered before one flush (group commit), and crashes that lose the node's memory, its
//! unsent effects, and a random part of its unsynced records (a torn tail).
//!
//! ```
//! use common::demo::{DemoConfig, DemoNode, DemoRequest, DemoResponse};
//! use common::pump::Cluster;
//!
//! let ids = vec![1, 2, 3];
//! let mut cluster: Cluster<DemoNode> = Cluster::new(
//!     ids.iter().map(|&id| (id, DemoConfig::new(id, ids.clone()), Vec::new())),
//!     7,
//! );
//! assert_eq!(cluster.request(1, DemoRequest::Add(5), 10), Some(DemoResponse::Total(5)));
//! // Node 1 crashes and comes back from its disk: the update it holds durably is still there.
//! cluster.crash(1, false);
//! cluster.restart(1);
//! assert_eq!(cluster.request(1, DemoRequest::Get, 10), Some(DemoResponse::Total(5)));
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::snapshot::MemSnapshotStore;
use crate::{DetRng, Effects, Node, NodeId, Outbox, Persist, RequestId};

/// Probabilities of the faults a [`Cluster`] injects (all zero by default: a perfect network).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// A message is lost.
    pub drop: f64,
    /// A message is delivered twice.
    pub duplicate: f64,
    /// The next delivery picks a random queued message instead of the oldest.
    pub reorder: f64,
    /// A step's effects stay in the node's outbox instead of being flushed at once.
    pub defer_flush: f64,
}

/// One node's place in the cluster: what it is built from and what it keeps across crashes.
struct Slot<N: Node> {
    config: N::Config,
    /// `None` while crashed.
    node: Option<N>,
    /// Durable (synced) records.
    disk: Vec<N::Record>,
    /// Snapshot files, which survive crashes like the disk.
    snapshots: MemSnapshotStore,
    /// Effects of steps not yet released.
    outbox: Outbox<N>,
    /// Records and checkpoints made durable since the node was last recovered.
    records_durable: u64,
    checkpoints_durable: u64,
}

/// A cluster of nodes in one thread, driven by hand (see the module documentation).
pub struct Cluster<N: Node> {
    slots: BTreeMap<NodeId, Slot<N>>,
    /// Messages in flight: `(from, to, message)`.
    network: VecDeque<(NodeId, NodeId, N::Message)>,
    /// Links that drop everything: `(from, to)`.
    blocked: BTreeSet<(NodeId, NodeId)>,
    responses: BTreeMap<RequestId, N::Response>,
    events: Vec<(NodeId, N::Event)>,
    next_request: u64,
    rng: DetRng,
    /// The faults injected.
    pub faults: Faults,
    /// Messages delivered so far.
    pub delivered: u64,
    /// Whether synced records are kept on the nodes' in-memory disks (the default). A benchmark
    /// that never restarts a node turns it off, so a long run does not grow without bound:
    /// records then still count as durable, as on a disk that forgets nothing but is never read.
    pub keep_records: bool,
}

impl<N: Node> Cluster<N> {
    /// A cluster of the given nodes, each `(id, configuration, durable records)`, recovered at
    /// once; `seed` seeds the faults.
    ///
    /// # Panics
    ///
    /// If a node cannot recover from its configuration and records: this is a test harness.
    pub fn new(
        nodes: impl IntoIterator<Item = (NodeId, N::Config, Vec<N::Record>)>,
        seed: u64,
    ) -> Self {
        let mut cluster = Self {
            slots: BTreeMap::new(),
            network: VecDeque::new(),
            blocked: BTreeSet::new(),
            responses: BTreeMap::new(),
            events: Vec::new(),
            next_request: 1,
            rng: DetRng::new(seed ^ 0x5eed),
            faults: Faults::default(),
            delivered: 0,
            keep_records: true,
        };
        for (id, config, disk) in nodes {
            let slot = Slot {
                config,
                node: None,
                disk,
                snapshots: MemSnapshotStore::new(),
                outbox: Outbox::new(),
                records_durable: 0,
                checkpoints_durable: 0,
            };
            cluster.slots.insert(id, slot);
            cluster.restart(id);
        }
        cluster
    }

    /// The ids of every node.
    pub fn ids(&self) -> Vec<NodeId> {
        self.slots.keys().copied().collect()
    }

    /// Node `id`, unless crashed.
    pub fn node(&self, id: NodeId) -> Option<&N> {
        self.slots.get(&id).and_then(|s| s.node.as_ref())
    }

    /// Node `id`, unless crashed, to change it outside a step (a test reaching into a core).
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut N> {
        self.slots.get_mut(&id).and_then(|s| s.node.as_mut())
    }

    /// Every running node.
    pub fn running(&self) -> impl Iterator<Item = &N> {
        self.slots.values().filter_map(|s| s.node.as_ref())
    }

    /// Whether node `id` has released all its effects: its in-memory state then rests only on
    /// durable records.
    pub fn is_flushed(&self, id: NodeId) -> bool {
        self.slots
            .get(&id)
            .is_none_or(|s| s.outbox.records().is_empty())
    }

    /// Node `id`'s durable records.
    pub fn disk(&self, id: NodeId) -> &[N::Record] {
        self.slots.get(&id).map_or(&[], |s| s.disk.as_slice())
    }

    /// Node `id`'s snapshot store (to inspect it, or damage a snapshot as a disk fault would).
    pub fn snapshot_store(&self, id: NodeId) -> Option<&MemSnapshotStore> {
        self.slots.get(&id).map(|s| &s.snapshots)
    }

    /// The events published so far, with the node that published them.
    pub fn events(&self) -> &[(NodeId, N::Event)] {
        &self.events
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.network.len()
    }

    /// The response to request `id`, once given (taken out of the cluster).
    pub fn take_response(&mut self, id: RequestId) -> Option<N::Response> {
        self.responses.remove(&id)
    }

    /// Runs one step on node `id` (if running) and releases its effects unless a fault defers
    /// them.
    pub fn step(&mut self, id: NodeId, f: impl FnOnce(&mut N, &mut Outbox<N>)) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        f(node, &mut slot.outbox);
        if !self.rng.chance(self.faults.defer_flush) {
            self.flush(id);
        }
    }

    /// Releases node `id`'s effects by the Outbox rule: early messages and answers, then records
    /// to its disk (synced), then messages, responses and events. A node told that records
    /// became durable may answer with more effects; those are released too, in the same way.
    pub fn flush(&mut self, id: NodeId) {
        loop {
            let Some(slot) = self.slots.get_mut(&id) else {
                return;
            };
            if slot.outbox.is_empty() {
                return;
            }
            let mut effects = slot.outbox.take();
            if let Some(node) = slot.node.as_ref() {
                // What a driver does before sending a batch (`Node::coalesce`).
                node.coalesce(&mut effects.early);
                node.coalesce(&mut effects.messages);
            }
            let (records, checkpoints) = if self.keep_records {
                Self::persist(&mut slot.disk, effects.records.iter())
            } else {
                // Counted durable, never cloned onto a disk nobody reads.
                let checkpoints = effects.records.iter().filter(|p| p.is_checkpoint()).count();
                (effects.records.len() as u64, checkpoints as u64)
            };
            slot.records_durable += records;
            slot.checkpoints_durable += checkpoints;
            let (records_durable, checkpoints_durable) =
                (slot.records_durable, slot.checkpoints_durable);
            if let Some(node) = slot.node.as_mut() {
                if checkpoints > 0 {
                    node.checkpoints_durable(checkpoints_durable);
                }
                if records > 0 {
                    node.records_durable(records_durable, &mut slot.outbox);
                }
            }
            self.release(id, effects);
        }
    }

    /// Appends `records` to `disk` as a synced log would; returns how many records and
    /// checkpoints that made durable.
    fn persist<'a>(
        disk: &mut Vec<N::Record>,
        records: impl Iterator<Item = &'a Persist<N::Record>>,
    ) -> (u64, u64) {
        let (mut count, mut checkpoints) = (0, 0);
        for p in records {
            count += 1;
            match p {
                Persist::Append(r) => disk.push(r.clone()),
                Persist::Checkpoint(r) => {
                    checkpoints += 1;
                    disk.clear();
                    disk.push(r.clone());
                }
            }
        }
        (count, checkpoints)
    }

    fn release(&mut self, id: NodeId, effects: Effects<N>) {
        for (to, msg) in effects.early.into_iter().chain(effects.messages) {
            self.enqueue(id, to, msg);
        }
        for (req, resp) in effects.early_responses.into_iter().chain(effects.responses) {
            self.responses.insert(req, resp);
        }
        for e in effects.events {
            self.events.push((id, e));
        }
    }

    /// Flushes every node.
    pub fn flush_all(&mut self) {
        for id in self.ids() {
            self.flush(id);
        }
    }

    fn enqueue(&mut self, from: NodeId, to: NodeId, msg: N::Message) {
        if self.blocked.contains(&(from, to)) || self.rng.chance(self.faults.drop) {
            return;
        }
        if self.rng.chance(self.faults.duplicate) {
            self.network.push_back((from, to, msg.clone()));
        }
        self.network.push_back((from, to, msg));
    }

    /// Puts a message into the network as if `from` had sent it.
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: N::Message) {
        self.network.push_back((from, to, msg));
    }

    /// Delivers one message (the oldest, or a random one under the reorder fault). Returns
    /// whether one was in flight.
    pub fn deliver_one(&mut self) -> bool {
        let i = if self.rng.chance(self.faults.reorder) {
            self.rng.index(self.network.len()).unwrap_or(0)
        } else {
            0
        };
        let Some((from, to, msg)) = self.network.remove(i) else {
            return false;
        };
        if self.blocked.contains(&(from, to)) {
            return true;
        }
        self.delivered += 1;
        self.step(to, |n, out| n.handle_message(from, msg, out));
        true
    }

    /// Delivers messages until none is in flight or `max` were delivered; returns how many.
    pub fn deliver_all(&mut self, max: usize) -> usize {
        let mut n = 0;
        while n < max && self.deliver_one() {
            n += 1;
        }
        n
    }

    /// One tick on node `id`.
    pub fn tick(&mut self, id: NodeId) {
        self.step(id, |n, out| n.tick(out));
    }

    /// One tick on every node.
    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id);
        }
    }

    /// Hands request `req` to node `id`; returns its id (see [`Cluster::take_response`]).
    pub fn submit(&mut self, id: NodeId, req: N::Request) -> RequestId {
        let rid = RequestId(self.next_request);
        self.next_request += 1;
        self.step(id, |n, out| n.handle_request(rid, req, out));
        rid
    }

    /// Submits `req` to node `id` and runs the cluster (deliveries, then a tick of every node)
    /// until it is answered or `ticks_max` ticks passed.
    pub fn request(&mut self, id: NodeId, req: N::Request, ticks_max: u64) -> Option<N::Response> {
        let rid = self.submit(id, req);
        for _ in 0..=ticks_max {
            self.deliver_all(DELIVERIES_PER_ROUND_MAX);
            if let Some(r) = self.take_response(rid) {
                return Some(r);
            }
            self.flush_all();
            self.tick_all();
        }
        None
    }

    /// Crashes node `id`: its memory and unreleased effects are lost. With `torn`, a random
    /// prefix of its unsynced records survives (as a real log keeps); otherwise none.
    pub fn crash(&mut self, id: NodeId, torn: bool) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.node = None;
        let effects = slot.outbox.take();
        if torn {
            let keep = self.rng.index(effects.records.len() + 1).unwrap_or(0);
            Self::persist(&mut slot.disk, effects.records.iter().take(keep));
        }
        self.network.retain(|(_, to, _)| *to != id);
    }

    /// Restarts node `id` from its durable records and snapshot files.
    ///
    /// # Panics
    ///
    /// If recovery fails: in this harness that is a bug to surface.
    pub fn restart(&mut self, id: NodeId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let recovered = N::recover_with_snapshots(
            slot.config.clone(),
            slot.disk.clone(),
            Arc::new(slot.snapshots.clone()),
        );
        let node = match recovered {
            Ok(node) => node,
            Err(e) => panic!("node {id} cannot recover from the harness's own records: {e}"),
        };
        slot.node = Some(node);
        slot.records_durable = 0;
        slot.checkpoints_durable = 0;
    }

    /// Cuts every link between `id` and the other nodes, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
    }

    /// Cuts the link from `from` to `to` (one way).
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}

/// How many messages [`Cluster::request`] delivers between two ticks, at most.
pub const DELIVERIES_PER_ROUND_MAX: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{DemoConfig, DemoNode, DemoRequest, DemoResponse};

    fn cluster(seed: u64) -> Cluster<DemoNode> {
        let ids = vec![1, 2, 3];
        Cluster::new(
            ids.iter()
                .map(|&id| (id, DemoConfig::new(id, ids.clone()), Vec::new())),
            seed,
        )
    }

    #[test]
    fn an_isolated_node_cannot_reach_a_majority_until_healed() {
        let mut c = cluster(1);
        c.isolate(1);
        let rid = c.submit(1, DemoRequest::Add(2));
        for _ in 0..20 {
            c.deliver_all(1000);
            c.tick_all();
        }
        assert_eq!(c.take_response(rid), None);
        c.heal();
        let mut answer = None;
        for _ in 0..20 {
            c.deliver_all(1000);
            answer = answer.or(c.take_response(rid));
            c.tick_all();
        }
        assert_eq!(answer, Some(DemoResponse::Total(2)), "retried once healed");
    }

    #[test]
    fn deferred_flushes_hold_records_off_the_disk_until_released() {
        let mut c = cluster(2);
        c.faults.defer_flush = 1.0;
        let before = c.disk(1).len();
        c.submit(1, DemoRequest::Add(4));
        assert!(!c.is_flushed(1));
        assert_eq!(
            c.disk(1).len(),
            before,
            "nothing is durable before the flush"
        );
        c.crash(1, false);
        assert_eq!(
            c.disk(1).len(),
            before,
            "a crash without a torn tail keeps nothing"
        );
        c.restart(1);
        c.faults.defer_flush = 0.0;
        c.submit(1, DemoRequest::Add(4));
        assert!(c.is_flushed(1));
        assert!(c.disk(1).len() > before);
    }

    #[test]
    fn lossy_networks_still_converge_with_retries_and_count_deliveries() {
        let mut c = cluster(3);
        c.faults = Faults {
            drop: 0.2,
            duplicate: 0.2,
            reorder: 0.5,
            defer_flush: 0.3,
        };
        let answer = c.request(1, DemoRequest::Add(7), 500);
        assert_eq!(answer, Some(DemoResponse::Total(7)));
        assert!(c.delivered > 0);
    }
}
