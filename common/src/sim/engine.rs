//! The event loop: the queue of pending events over virtual time, the nodes with their
//! durable state, and the release of each node's effects by the Outbox rule (records synced
//! first, then messages, responses and events).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::Hasher;
use std::sync::Arc;

use super::fault::Fault;
use super::net::{DropReason, LinkConfig};
use super::trace::{short_debug, TraceEvent, TraceKind};
use super::{Sim, SimError, SimErrorKind, SimView};
use crate::codec::{Bincode, Codec};
use crate::snapshot::MemSnapshotStore;
use crate::{DetRng, Node, NodeId, Outbox, Persist, RequestId};

/// One node of the cluster: its core (while up) and what survives its crashes.
pub(super) struct Slot<N: Node> {
    pub(super) id: NodeId,
    /// Extra time between this node's ticks ([`SimConfig::tick_drift_max`]).
    pub(super) drift: u64,
    pub(super) node: Option<N>,
    pub(super) durable: Vec<N::Record>,
    /// The node's snapshot files: finished ones survive crashes like synced records.
    pub(super) snapshots: MemSnapshotStore,
    /// Checkpoints made durable since the node was last recovered.
    pub(super) checkpoints_durable: u64,
    /// Records made durable since the node was last recovered ([`Node::records_durable`]).
    pub(super) records_durable: u64,
    pub(super) outbox: Outbox<N>,
    pub(super) batch_steps: usize,
    pub(super) flush_scheduled: bool,
    pub(super) incarnation: u64,
    /// [`Fault::FailSync`]: the next sync with records fails.
    pub(super) fail_next_sync: bool,
    /// Requests that arrived and wait to be handed over together
    /// ([`SimConfig::request_batch_window`]).
    pub(super) requests: Vec<(RequestId, N::Request)>,
    /// A [`Ev::HandOver`] is scheduled for `requests`.
    pub(super) hand_over_scheduled: bool,
}

/// A scheduled event.
pub(super) enum Ev<N: Node> {
    Tick {
        node: usize,
        incarnation: u64,
    },
    Deliver {
        from: NodeId,
        to: usize,
        msg: N::Message,
        sent: u64,
    },
    Request {
        id: RequestId,
        client: u64,
        node: NodeId,
        request: N::Request,
        timeout: Option<u64>,
        generator: Option<usize>,
    },
    Fault(Fault),
    Flush {
        node: usize,
        incarnation: u64,
    },
    /// The batch window of a node's waiting requests ends.
    HandOver {
        node: usize,
        incarnation: u64,
    },
    ClientTimeout {
        op: usize,
    },
    ClientNext {
        generator: usize,
        client: u64,
    },
}

/// An event in the queue, ordered by time, then by scheduling order.
struct Queued<N: Node> {
    time: u64,
    seq: u64,
    ev: Ev<N>,
}

impl<N: Node> PartialEq for Queued<N> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl<N: Node> Eq for Queued<N> {}
impl<N: Node> PartialOrd for Queued<N> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<N: Node> Ord for Queued<N> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

/// The queue of pending events and the virtual clock.
pub(super) struct Schedule<N: Node> {
    queue: BinaryHeap<Reverse<Queued<N>>>,
    /// Scheduling order, to break ties between events at the same time.
    pub(super) seq: u64,
    /// Virtual time.
    pub(super) now: u64,
    /// Steps run so far.
    pub(super) steps: u64,
}

impl<N: Node> Schedule<N> {
    /// Nothing scheduled, time 0.
    pub(super) fn new() -> Self {
        Self {
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            steps: 0,
        }
    }
}

/// The nodes: each one's slot, how to configure it, and the stream of its seeded choices
/// (tick offsets, drift, skew, sync latency, torn tails).
pub(super) struct Cluster<N: Node> {
    pub(super) make_config: Box<dyn Fn(NodeId) -> N::Config>,
    pub(super) slots: Vec<Slot<N>>,
    /// Node id -> index into `slots`.
    pub(super) index: BTreeMap<NodeId, usize>,
    pub(super) rng: DetRng,
    /// Syncs failed by [`Fault::FailSync`].
    pub(super) failed_syncs: u64,
}

impl<N: Node> Sim<N> {
    /// The slot of node `id`, if it is a member.
    pub(super) fn slot(&self, id: NodeId) -> Option<&Slot<N>> {
        self.cluster.index.get(&id).map(|&i| &self.cluster.slots[i])
    }
}

impl<N: Node> Sim<N>
where
    N::Request: Clone,
{
    /// Starts every node of the configuration from no records, in order.
    pub(super) fn start_nodes(&mut self) -> Result<(), SimErrorKind> {
        for (i, &id) in self.config.nodes.clone().iter().enumerate() {
            let snapshots = MemSnapshotStore::new();
            let node = N::recover_with_snapshots(
                (self.cluster.make_config)(id),
                Vec::new(),
                Arc::new(snapshots.clone()),
            )
            .map_err(|e| SimErrorKind::Recover {
                node: id,
                message: e.to_string(),
            })?;
            self.cluster.index.insert(id, i);
            let drift = self
                .cluster
                .rng
                .range_inclusive(0, self.config.tick_drift_max);
            self.cluster.slots.push(Slot {
                id,
                drift,
                node: Some(node),
                durable: Vec::new(),
                snapshots,
                checkpoints_durable: 0,
                records_durable: 0,
                outbox: Outbox::new(),
                batch_steps: 0,
                flush_scheduled: false,
                incarnation: 0,
                fail_next_sync: false,
                requests: Vec::new(),
                hand_over_scheduled: false,
            });
            self.schedule_first_tick(i);
        }
        Ok(())
    }

    // ----- running -----

    /// Runs one step (one event). Returns `Ok(false)` when nothing is scheduled any more.
    pub fn step(&mut self) -> Result<bool, SimError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(Reverse(q)) = self.sched.queue.pop() else {
            return Ok(false);
        };
        self.sched.now = q.time;
        self.sched.steps += 1;
        if self.sched.steps > self.config.steps_max {
            return Err(self.fail(SimErrorKind::StepLimit {
                steps_max: self.config.steps_max,
            }));
        }
        self.rec.hasher.write_u64(q.time);
        let result = self.dispatch(q.ev);
        if let Err(kind) = result {
            return Err(self.fail(kind));
        }
        self.check_invariants()?;
        Ok(true)
    }

    /// Runs every step scheduled up to virtual time `time` (inclusive), then sets the clock to
    /// `time`.
    pub fn run_until(&mut self, time: u64) -> Result<(), SimError> {
        while self
            .sched
            .queue
            .peek()
            .is_some_and(|Reverse(q)| q.time <= time)
        {
            self.step()?;
        }
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.sched.now = self.sched.now.max(time);
        Ok(())
    }

    /// Runs for `duration` more virtual time.
    pub fn run_for(&mut self, duration: u64) -> Result<(), SimError> {
        self.run_until(self.sched.now.saturating_add(duration))
    }

    /// Runs until `done` holds (checked after every step) or virtual time passes `deadline`.
    /// Returns whether `done` held.
    pub fn run_until_cond<F>(&mut self, deadline: u64, mut done: F) -> Result<bool, SimError>
    where
        F: FnMut(&SimView<'_, N>) -> bool,
    {
        if done(&self.view()) {
            return Ok(true);
        }
        while self
            .sched
            .queue
            .peek()
            .is_some_and(|Reverse(q)| q.time <= deadline)
        {
            self.step()?;
            if done(&self.view()) {
                return Ok(true);
            }
        }
        self.sched.now = self.sched.now.max(deadline);
        Ok(false)
    }

    /// Applies `fault` now, as its own step (invariants are checked after it).
    pub fn apply(&mut self, fault: Fault) -> Result<(), SimError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.sched.steps += 1;
        if let Err(kind) = self.apply_fault(fault) {
            return Err(self.fail(kind));
        }
        self.check_invariants()
    }

    /// Crashes `node` now (see [`Fault::Crash`]).
    pub fn crash(&mut self, node: NodeId) -> Result<(), SimError> {
        self.apply(Fault::Crash(node))
    }

    /// Restarts `node` now (see [`Fault::Restart`]).
    pub fn restart(&mut self, node: NodeId) -> Result<(), SimError> {
        self.apply(Fault::Restart(node))
    }

    /// Stops the run with a failure made by the test itself (reported like an invariant
    /// failure, with seed, step and time).
    pub fn fail_now(&mut self, message: String) -> SimError {
        self.fail(SimErrorKind::Check { message })
    }

    // ----- internals -----

    /// Schedules `ev` at virtual time `time`, after every event already scheduled for then.
    pub(super) fn push(&mut self, time: u64, ev: Ev<N>) {
        self.sched.seq += 1;
        self.sched.queue.push(Reverse(Queued {
            time,
            seq: self.sched.seq,
            ev,
        }));
    }

    /// Records a trace event now, if the configuration records a trace.
    pub(super) fn record(&mut self, kind: TraceKind) {
        if self.config.record_trace {
            self.rec.trace.push(TraceEvent {
                time: self.sched.now,
                step: self.sched.steps,
                kind,
            });
        }
    }

    /// Hashes `value`'s encoding into the run's hash, when contents are hashed.
    pub(super) fn hash_value<T: serde::Serialize>(&mut self, value: &T) {
        if !self.config.hash_contents {
            return;
        }
        self.rec.scratch.clear();
        if Bincode.encode_into(value, &mut self.rec.scratch).is_ok() {
            self.rec.hasher.write(&self.rec.scratch);
        }
    }

    /// Schedules node `i`'s first tick of its current life, at a seeded offset.
    pub(super) fn schedule_first_tick(&mut self, i: usize) {
        let offset = self
            .cluster
            .rng
            .range_inclusive(1, self.config.tick_interval.max(1));
        let incarnation = self.cluster.slots[i].incarnation;
        self.push(
            self.sched.now + offset,
            Ev::Tick {
                node: i,
                incarnation,
            },
        );
    }

    /// Runs one event.
    pub(super) fn dispatch(&mut self, ev: Ev<N>) -> Result<(), SimErrorKind> {
        match ev {
            Ev::Tick { node, incarnation } => self.tick(node, incarnation),
            Ev::Deliver {
                from,
                to,
                msg,
                sent,
            } => self.deliver(from, to, msg, sent),
            Ev::Request {
                id,
                client,
                node,
                request,
                timeout,
                generator,
            } => {
                self.rec.hasher.write_u8(3);
                self.rec.hasher.write_u64(id.0);
                self.rec.hasher.write_u64(node);
                self.invoke(id, client, node, request, timeout, generator)
            }
            Ev::Fault(fault) => self.apply_fault(fault),
            Ev::Flush { node, incarnation } => {
                self.rec.hasher.write_u8(5);
                self.rec.hasher.write_usize(node);
                let slot = &self.cluster.slots[node];
                if slot.incarnation == incarnation && slot.flush_scheduled {
                    self.flush(node)?;
                }
                Ok(())
            }
            Ev::HandOver { node, incarnation } => {
                self.rec.hasher.write_u8(8);
                self.rec.hasher.write_usize(node);
                if self.cluster.slots[node].incarnation == incarnation {
                    self.hand_over_requests(node);
                    return self.after_step(node);
                }
                Ok(())
            }
            Ev::ClientTimeout { op } => {
                self.rec.hasher.write_u8(6);
                self.rec.hasher.write_usize(op);
                self.client_timeout(op);
                Ok(())
            }
            Ev::ClientNext { generator, client } => {
                self.rec.hasher.write_u8(7);
                self.rec.hasher.write_usize(generator);
                self.next_request_of(generator, client);
                Ok(())
            }
        }
    }

    /// A node's timer fires (unless the tick belongs to a previous life), and the next tick is
    /// scheduled.
    fn tick(&mut self, node: usize, incarnation: u64) -> Result<(), SimErrorKind> {
        self.rec.hasher.write_u8(1);
        self.rec.hasher.write_usize(node);
        let slot = &mut self.cluster.slots[node];
        if slot.incarnation != incarnation {
            return Ok(()); // a tick chain of a previous life
        }
        if slot.node.is_none() {
            return Ok(());
        }
        self.hand_over_requests(node);
        let slot = &mut self.cluster.slots[node];
        let Some(n) = slot.node.as_mut() else {
            return Ok(());
        };
        let _span = node_span(slot.id, self.sched.now, self.sched.steps);
        n.tick(&mut slot.outbox);
        let next = self.config.tick_interval
            + slot.drift
            + self.cluster.rng.range_inclusive(0, self.config.tick_skew);
        self.push(self.sched.now + next, Ev::Tick { node, incarnation });
        self.after_step(node)
    }

    /// A message arrives: dropped if its destination is down or the link is cut meanwhile,
    /// handed to the core otherwise.
    fn deliver(
        &mut self,
        from: NodeId,
        to: usize,
        msg: N::Message,
        sent: u64,
    ) -> Result<(), SimErrorKind> {
        self.rec.hasher.write_u8(2);
        self.rec.hasher.write_u64(from);
        self.rec.hasher.write_usize(to);
        let to_id = self.cluster.slots[to].id;
        let reason = if self.cluster.slots[to].node.is_none() {
            Some(DropReason::NodeDown)
        } else if self.links.net.is_cut(from, to_id) {
            Some(DropReason::Partitioned)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.rec.hasher.write_u8(0xD);
            if self.config.record_trace {
                let label = (self.rec.message_label)(&msg);
                self.record(TraceKind::Drop {
                    from,
                    to: to_id,
                    label,
                    reason,
                });
            }
            return Ok(());
        }
        if self.config.record_trace {
            let label = (self.rec.message_label)(&msg);
            self.record(TraceKind::Deliver {
                from,
                to: to_id,
                label,
                sent,
            });
        }
        self.hand_over_requests(to);
        let slot = &mut self.cluster.slots[to];
        if let Some(n) = slot.node.as_mut() {
            let _span = node_span(slot.id, self.sched.now, self.sched.steps);
            n.handle_message(from, msg, &mut slot.outbox);
        }
        self.after_step(to)
    }

    /// Hands node `i` the requests waiting for it, all at once, before its next input (the
    /// driver's rule). Their effects join the open batch; the caller's step releases them.
    pub(super) fn hand_over_requests(&mut self, i: usize) {
        let slot = &mut self.cluster.slots[i];
        slot.hand_over_scheduled = false;
        if slot.requests.is_empty() {
            return;
        }
        let mut requests = std::mem::take(&mut slot.requests);
        self.rec.hasher.write_u8(9);
        self.rec.hasher.write_usize(requests.len());
        if let Some(n) = slot.node.as_mut() {
            let _span = node_span(slot.id, self.sched.now, self.sched.steps);
            n.handle_requests(requests.drain(..), &mut slot.outbox);
        }
        // The list's buffer serves the next batch.
        self.cluster.slots[i].requests = requests;
    }

    /// After a node's step: release its effects now, or batch them until a scheduled sync.
    pub(super) fn after_step(&mut self, i: usize) -> Result<(), SimErrorKind> {
        // Early messages and answers (`Outbox::send_early`, `respond_early`) leave now,
        // before the step's sync.
        if self.cluster.slots[i].outbox.has_early() {
            let (mut early, mut answers) = (Vec::new(), Vec::new());
            self.cluster.slots[i]
                .outbox
                .take_early_into(&mut early, &mut answers);
            let from = self.cluster.slots[i].id;
            if let Some(node) = self.cluster.slots[i].node.as_ref() {
                node.coalesce(&mut early);
            }
            for (to, msg) in early {
                self.send(from, to, msg)?;
            }
            for (id, response) in answers {
                self.respond(from, id, response)?;
            }
        }
        let slot = &mut self.cluster.slots[i];
        if slot.outbox.is_empty() {
            return Ok(());
        }
        slot.batch_steps += 1;
        if self.config.sync_latency_max == 0 || slot.batch_steps >= self.config.batch_steps_max {
            return self.flush(i);
        }
        if !slot.flush_scheduled {
            slot.flush_scheduled = true;
            let incarnation = slot.incarnation;
            let delay = self
                .cluster
                .rng
                .range_inclusive(self.config.sync_latency_min, self.config.sync_latency_max);
            self.push(
                self.sched.now + delay,
                Ev::Flush {
                    node: i,
                    incarnation,
                },
            );
        }
        Ok(())
    }

    /// The Outbox rule: records durable first, then messages, responses and events.
    pub(super) fn flush(&mut self, i: usize) -> Result<(), SimErrorKind> {
        let slot = &mut self.cluster.slots[i];
        slot.batch_steps = 0;
        slot.flush_scheduled = false;
        let mut effects = slot.outbox.take();
        let from = slot.id;
        if let Some(node) = slot.node.as_ref() {
            // What a driver does before sending a batch (`Node::coalesce`).
            node.coalesce(&mut effects.messages);
            node.coalesce(&mut effects.early);
        }
        if slot.fail_next_sync && !effects.records.is_empty() {
            // `Fault::FailSync`: the write reaches the disk only in part, and the node stops
            // before anything of the batch leaves it (fail-stop, as the driver does).
            slot.fail_next_sync = false;
            self.cluster.failed_syncs += 1;
            self.stop_node(i, effects, true);
            return Ok(());
        }
        let mut checkpoints = 0;
        let records = effects.records.len() as u64;
        for p in effects.records {
            self.hash_value(p.record());
            checkpoints += u64::from(p.is_checkpoint());
            append(&mut self.cluster.slots[i].durable, p);
        }
        if checkpoints > 0 {
            let slot = &mut self.cluster.slots[i];
            slot.checkpoints_durable += checkpoints;
            if let Some(node) = slot.node.as_mut() {
                node.checkpoints_durable(slot.checkpoints_durable);
            }
        }
        for (to, msg) in effects.messages {
            self.send(from, to, msg)?;
        }
        for (id, response) in effects.responses {
            self.respond(from, id, response)?;
        }
        for event in effects.events {
            if self.config.record_trace {
                let label = short_debug(&event, self.config.label_chars_max);
                self.record(TraceKind::Event { node: from, label });
            }
            if self.config.record_events {
                self.rec.events.push((self.sched.now, from, event));
            }
        }
        for (to, msg) in effects.early {
            // Normally sent right after their step; only a batch flushed by hand holds any.
            self.send(from, to, msg)?;
        }
        for (id, response) in effects.early_responses {
            self.respond(from, id, response)?;
        }
        if records > 0 {
            // Tell the node, as a step of its own, which of its records are durable now.
            self.hand_over_requests(i);
            let slot = &mut self.cluster.slots[i];
            slot.records_durable += records;
            if let Some(node) = slot.node.as_mut() {
                let _span = node_span(slot.id, self.sched.now, self.sched.steps);
                node.records_durable(slot.records_durable, &mut slot.outbox);
            }
            return self.after_step(i);
        }
        Ok(())
    }

    /// A node hands `msg` to the network: checked against the network when sent (a cut link
    /// or a random loss drops it), then scheduled to arrive.
    pub(super) fn send(
        &mut self,
        from: NodeId,
        to: NodeId,
        msg: N::Message,
    ) -> Result<(), SimErrorKind> {
        self.rec.hasher.write_u8(0x51);
        self.rec.hasher.write_u64(to);
        self.hash_value(&msg);
        let msg = if self.config.wire_check {
            wire_round_trip(&msg)?
        } else {
            msg
        };
        let label = if self.config.record_trace {
            (self.rec.message_label)(&msg)
        } else {
            String::new()
        };
        let Some(&to_i) = self.cluster.index.get(&to) else {
            self.record(TraceKind::Drop {
                from,
                to,
                label,
                reason: DropReason::UnknownNode,
            });
            return Ok(());
        };
        let link = self.links.net.link(from, to).clone();
        let dropped = if self.links.net.is_cut(from, to) {
            Some(DropReason::Partitioned)
        } else if self.links.rng.chance(link.drop) {
            Some(DropReason::Lost)
        } else {
            None
        };
        if let Some(reason) = dropped {
            self.rec.hasher.write_u8(0xD);
            self.record(TraceKind::Send {
                from,
                to,
                label: label.clone(),
                arrives: None,
            });
            self.record(TraceKind::Drop {
                from,
                to,
                label,
                reason,
            });
            return Ok(());
        }
        self.schedule_arrival(from, to, to_i, msg, label, &link);
        Ok(())
    }

    /// Draws when a message that the network let through arrives (and whether a duplicate
    /// follows it), and schedules its delivery.
    fn schedule_arrival(
        &mut self,
        from: NodeId,
        to: NodeId,
        to_i: usize,
        msg: N::Message,
        label: String,
        link: &LinkConfig,
    ) {
        let arrives = self.sched.now + link.draw_latency(&mut self.links.rng);
        self.rec.hasher.write_u64(arrives);
        if self.links.rng.chance(link.duplicate) {
            let again = self.sched.now + link.draw_latency(&mut self.links.rng);
            self.rec.hasher.write_u64(again);
            self.record(TraceKind::Duplicate {
                from,
                to,
                label: label.clone(),
                arrives: again,
            });
            let now = self.sched.now;
            self.push(
                again,
                Ev::Deliver {
                    from,
                    to: to_i,
                    msg: msg.clone(),
                    sent: now,
                },
            );
        }
        self.record(TraceKind::Send {
            from,
            to,
            label,
            arrives: Some(arrives),
        });
        let now = self.sched.now;
        self.push(
            arrives,
            Ev::Deliver {
                from,
                to: to_i,
                msg,
                sent: now,
            },
        );
    }
}

/// A tracing span around one call into a core, so its log lines carry the node, the virtual
/// time and the step (`RUST_LOG=debug SIM_SEED=17 cargo test ...` reads a failing seed's story).
/// Without a subscriber, entering a disabled span costs a branch.
pub(super) fn node_span(node: NodeId, time: u64, step: u64) -> tracing::span::EnteredSpan {
    tracing::debug_span!("sim", node, time, step).entered()
}

/// Appends one persisted record to a durable log, honouring checkpoints.
pub(super) fn append<R>(log: &mut Vec<R>, p: Persist<R>) {
    match p {
        Persist::Append(r) => log.push(r),
        Persist::Checkpoint(r) => {
            log.clear();
            log.push(r);
        }
    }
}

/// Encodes and decodes `msg` with the workspace codec, and checks that the copy encodes to the
/// same bytes.
pub(super) fn wire_round_trip<M>(msg: &M) -> Result<M, SimErrorKind>
where
    M: serde::Serialize + serde::de::DeserializeOwned,
{
    let wire = |e: crate::codec::CodecError| SimErrorKind::WireCheck {
        message: e.to_string(),
    };
    let bytes = Bincode.encode(msg).map_err(wire)?;
    let copy: M = Bincode.decode(&bytes).map_err(wire)?;
    let again = Bincode.encode(&copy).map_err(wire)?;
    if again != bytes {
        return Err(SimErrorKind::WireCheck {
            message: "message re-encodes to different bytes after a round trip".into(),
        });
    }
    Ok(copy)
}
