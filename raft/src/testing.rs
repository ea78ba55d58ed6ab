//! An in-process cluster that pumps messages between [`RaftNode`]s by hand, for tests,
//! examples and benchmarks.
//!
//! [`Cluster`] plays the driver: every node has an [`Outbox`]; [`Cluster::flush`] releases it
//! the way the Outbox rule says (records first, into the node's in-memory "disk", then messages
//! into the network, responses and events to the cluster). Everything is deterministic: the
//! network is a queue, and the optional faults ([`Faults`]) draw from a seeded [`DetRng`].
//!
//! It serves the paper-section tests, the crate documentation and the core benchmarks, where
//! stepping by hand is the point; the simulation proofs (`tests/sim_*.rs`) run on the
//! workspace simulator, `common::sim`, instead.
//!
//! Faults model what the simulator does: dropped, duplicated and reordered messages, several
//! steps gathered before one flush (group commit), and crashes that lose the node's memory, its
//! unsent effects, and a random part of its unsynced records (a torn tail).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use common::snapshot::MemSnapshotStore;
use common::{DetRng, Node, NodeId, Outbox, Persist, RequestId};

use crate::config::Config;
use crate::core::{MessageOf, RaftNode, RecordOf, RequestOf, ResponseOf};
use crate::message::{Event, Role};
use crate::state_machine::{Setup, StateMachine};

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

/// A node's setup (configuration and state-machine factory) and the durable records it starts
/// from.
pub type NodeDisk<S> = (Setup<Config, S>, Vec<RecordOf<S>>);

/// A cluster of [`RaftNode`]s in one thread, driven by hand.
pub struct Cluster<S: StateMachine> {
    configs: BTreeMap<NodeId, Setup<Config, S>>,
    /// Each node's snapshot files (they survive crashes, like the disk).
    snapshots: BTreeMap<NodeId, MemSnapshotStore>,
    /// Checkpoints each node made durable since it was last recovered.
    checkpoints: BTreeMap<NodeId, u64>,
    /// `None` while crashed.
    nodes: BTreeMap<NodeId, Option<RaftNode<S>>>,
    /// Each node's durable records (synced).
    disks: BTreeMap<NodeId, Vec<RecordOf<S>>>,
    /// Effects of steps not yet released.
    outboxes: BTreeMap<NodeId, Outbox<RaftNode<S>>>,
    /// Messages in flight: `(from, to, message)`.
    network: VecDeque<(NodeId, NodeId, MessageOf<S>)>,
    /// Links that drop everything: `(from, to)`.
    blocked: BTreeSet<(NodeId, NodeId)>,
    responses: BTreeMap<RequestId, ResponseOf<S>>,
    events: Vec<(NodeId, Event)>,
    next_request: u64,
    rng: DetRng,
    /// The faults injected.
    pub faults: Faults,
    /// Messages delivered so far.
    pub delivered: u64,
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
        let mut cluster = Self {
            configs: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            outboxes: BTreeMap::new(),
            network: VecDeque::new(),
            blocked: BTreeSet::new(),
            responses: BTreeMap::new(),
            events: Vec::new(),
            next_request: 1,
            rng: DetRng::new(seed ^ 0x5eed),
            faults: Faults::default(),
            delivered: 0,
        };
        for (c, records) in nodes {
            let id = c.config.id;
            cluster.configs.insert(id, c);
            cluster.snapshots.insert(id, MemSnapshotStore::new());
            cluster.disks.insert(id, records);
            cluster.outboxes.insert(id, Outbox::new());
            cluster.nodes.insert(id, None);
            cluster.restart(id);
        }
        cluster
    }

    /// The ids of every node.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Node `id`, unless crashed.
    pub fn node(&self, id: NodeId) -> Option<&RaftNode<S>> {
        self.nodes.get(&id).and_then(Option::as_ref)
    }

    /// Every running node.
    pub fn running(&self) -> impl Iterator<Item = &RaftNode<S>> {
        self.nodes.values().filter_map(Option::as_ref)
    }

    /// Whether node `id` has released all its effects: its in-memory state then rests only on
    /// durable records. (Before that, a leader may have counted its own unsynced entries towards
    /// a commit that a crash would undo; nothing of it has left the node yet, by the Outbox
    /// rule.)
    pub fn is_flushed(&self, id: NodeId) -> bool {
        self.outboxes
            .get(&id)
            .is_none_or(|o| o.records().is_empty())
    }

    /// Node `id`'s durable records.
    pub fn disk(&self, id: NodeId) -> &[RecordOf<S>] {
        self.disks.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The events published so far, with the node that published them.
    pub fn events(&self) -> &[(NodeId, Event)] {
        &self.events
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.network.len()
    }

    /// The response to request `id`, once given (taken out of the cluster).
    pub fn take_response(&mut self, id: RequestId) -> Option<ResponseOf<S>> {
        self.responses.remove(&id)
    }

    /// Runs one step on node `id` (if running) and releases its effects unless a fault defers
    /// them.
    fn step(&mut self, id: NodeId, f: impl FnOnce(&mut RaftNode<S>, &mut Outbox<RaftNode<S>>)) {
        let Some(Some(node)) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(out) = self.outboxes.get_mut(&id) else {
            return;
        };
        f(node, out);
        let defer = self.rng.chance(self.faults.defer_flush);
        if !defer {
            self.flush(id);
        }
    }

    /// Releases node `id`'s effects by the Outbox rule: records to its disk (synced), then
    /// messages, responses and events.
    pub fn flush(&mut self, id: NodeId) {
        let Some(out) = self.outboxes.get_mut(&id) else {
            return;
        };
        let effects = out.take();
        let mut checkpoints = 0;
        if let Some(disk) = self.disks.get_mut(&id) {
            for p in effects.records {
                match p {
                    Persist::Append(r) => disk.push(r),
                    Persist::Checkpoint(r) => {
                        checkpoints += 1;
                        disk.clear();
                        disk.push(r);
                    }
                }
            }
        }
        if checkpoints > 0 {
            let count = self.checkpoints.entry(id).or_default();
            *count += checkpoints;
            if let Some(Some(node)) = self.nodes.get_mut(&id) {
                node.checkpoints_durable(*count);
            }
        }
        for (to, msg) in effects.messages {
            self.enqueue(id, to, msg);
        }
        for (req, resp) in effects.responses {
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

    fn enqueue(&mut self, from: NodeId, to: NodeId, msg: MessageOf<S>) {
        if self.blocked.contains(&(from, to)) || self.rng.chance(self.faults.drop) {
            return;
        }
        if self.rng.chance(self.faults.duplicate) {
            self.network.push_back((from, to, msg.clone()));
        }
        self.network.push_back((from, to, msg));
    }

    /// Puts a message into the network as if `from` had sent it.
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: MessageOf<S>) {
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
    pub fn submit(&mut self, id: NodeId, req: RequestOf<S>) -> RequestId {
        let rid = RequestId(self.next_request);
        self.next_request += 1;
        self.step(id, |n, out| n.handle_request(rid, req, out));
        rid
    }

    /// Submits `req` to node `id` and runs the cluster (ticks and deliveries) until it is
    /// answered or `ticks_max` ticks passed.
    pub fn request(
        &mut self,
        id: NodeId,
        req: RequestOf<S>,
        ticks_max: u64,
    ) -> Option<ResponseOf<S>> {
        let rid = self.submit(id, req);
        for _ in 0..=ticks_max {
            self.deliver_all(100_000);
            if let Some(r) = self.take_response(rid) {
                return Some(r);
            }
            self.flush_all();
            self.tick_all();
        }
        None
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
            self.deliver_all(100_000);
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

    /// Node `id`'s snapshot store (to inspect it, or damage a snapshot as a disk fault would).
    pub fn snapshot_store(&self, id: NodeId) -> Option<&MemSnapshotStore> {
        self.snapshots.get(&id)
    }

    /// Crashes node `id`: its memory and unreleased messages are lost. With `torn`, a random
    /// part of its unsynced records survives (a prefix, as a real log keeps); otherwise none.
    pub fn crash(&mut self, id: NodeId, torn: bool) {
        if let Some(slot) = self.nodes.get_mut(&id) {
            *slot = None;
        }
        self.checkpoints.insert(id, 0);
        let Some(out) = self.outboxes.get_mut(&id) else {
            return;
        };
        let effects = out.take();
        if torn {
            let keep = self.rng.index(effects.records.len() + 1).unwrap_or(0);
            if let Some(disk) = self.disks.get_mut(&id) {
                for p in effects.records.into_iter().take(keep) {
                    match p {
                        Persist::Append(r) => disk.push(r),
                        Persist::Checkpoint(r) => {
                            disk.clear();
                            disk.push(r);
                        }
                    }
                }
            }
        }
        self.network.retain(|(_, to, _)| *to != id);
    }

    /// Restarts node `id` from its durable records.
    ///
    /// # Panics
    ///
    /// If recovery fails: in this harness that is a bug to surface.
    pub fn restart(&mut self, id: NodeId) {
        let (Some(config), Some(disk), Some(snapshots)) = (
            self.configs.get(&id),
            self.disks.get(&id),
            self.snapshots.get(&id),
        ) else {
            return;
        };
        #[allow(clippy::expect_used)]
        let node = RaftNode::<S>::recover_with_snapshots(
            config.clone(),
            disk.clone(),
            Arc::new(snapshots.clone()),
        )
        .expect("recovery from the harness's own records");
        self.checkpoints.insert(id, 0);
        self.nodes.insert(id, Some(node));
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
