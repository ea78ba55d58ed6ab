//! [`Groups`]: the host of many groups, itself a [`Node`]: recovery per group, the routing of
//! inputs to the group they name, and the translation of each group's effects into the host's
//! (tagged records, coalesced messages, tagged answers and events).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::GroupsConfig;
use super::journal::{replay, Journal};
use super::snapshots::GroupSnapshots;
use super::{GroupId, GroupsRecord};
use crate::codec::{Bincode, Codec};
use crate::snapshot::SnapshotStore;
use crate::{Effects, Node, NodeId, Outbox, Persist, RequestId};

/// Set in [`Node::PROTOCOL`] of a [`Groups`] host: the frame carries grouped messages of the
/// protocol in the low bits, which a single-group node of the same protocol rejects.
pub const GROUPED_PROTOCOL_BIT: u16 = 0x8000;
/// The wire version of the grouped envelope ([`GroupsMessage`]), carried in the top four bits
/// of [`Node::WIRE_VERSION`] above the inner protocol's version.
pub const GROUPS_WIRE_VERSION: u16 = 1;

/// Everything one step of the host sends to one peer, all groups together (up to
/// [`GroupsConfig::parts_per_message_max`] parts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsMessage<M> {
    /// Each group's messages to the peer, in the order the group sent them.
    pub parts: Vec<(GroupId, M)>,
}

/// The answer to a request `(group, request)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupResponse<R> {
    /// The group's core answered.
    Group(GroupId, R),
    /// This process hosts no such group; no core saw the request.
    UnknownGroup(GroupId),
}

/// What the host itself counted (each group's core counts its own in its metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupsCounters {
    /// Message parts naming a group this process does not host, dropped.
    pub unknown_group_parts: u64,
    /// Messages with more than [`GroupsConfig::parts_per_message_max`] parts, dropped whole.
    pub oversized_messages: u64,
    /// Requests naming a group this process does not host, refused.
    pub unknown_group_requests: u64,
    /// Compaction records written.
    pub compactions: u64,
    /// Compactions due but not written: the record would have exceeded
    /// [`GroupsConfig::compacted_bytes_max`] (or failed to encode).
    pub compactions_skipped: u64,
    /// Messages the host's steps sent (one per step and peer), early ones included; a driver
    /// may merge a batch's further before they leave ([`Node::coalesce`]).
    pub messages_sent: u64,
    /// Parts those messages carried: the messages the groups' cores sent.
    pub parts_sent: u64,
}

/// The host's metrics: every group's, and the host's own.
#[derive(Clone, Debug)]
pub struct GroupsMetrics<M> {
    /// Each group's core's metrics.
    pub groups: BTreeMap<GroupId, M>,
    /// The host's counters.
    pub counters: GroupsCounters,
    /// Live records kept for compaction, all groups together.
    pub live_records: u64,
    /// Records appended to the shared log since its last compaction.
    pub records_since_compaction: u64,
}

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GroupsError<E: std::error::Error + 'static> {
    /// The configuration is invalid.
    #[error("invalid groups configuration: {0}")]
    Config(String),
    /// A group's core refused its configuration or records.
    #[error("group {group} failed to recover: {source}")]
    Group {
        /// The group.
        group: GroupId,
        /// The core's error.
        #[source]
        source: E,
    },
    /// The log holds records of a group this process does not host (stage 1 hosts a fixed
    /// set of groups; dropping them would lose that group's state at the next compaction).
    #[error("the log holds records of group {0}, which this process does not host")]
    UnknownGroupInLog(GroupId),
}

/// Many groups of core `N` in one process: one [`Node`] to the driver, the transport, the
/// write-ahead log and the simulator. See the module documentation.
pub struct Groups<N: Node> {
    id: NodeId,
    parts_per_message_max: usize,
    compact_records_min: u64,
    compact_live_multiple: u64,
    compacted_bytes_max: usize,
    /// Slot → group id, ascending.
    ids: Vec<GroupId>,
    /// Slot → the group's core.
    nodes: Vec<N>,
    /// Group id → slot.
    index: BTreeMap<GroupId, usize>,
    journal: Journal<N::Record>,
    /// Slot → checkpoints last reported durable to the group's core.
    checkpoints_reported: Vec<u64>,
    /// The outbox every group's step runs into, and the buffers its effects are swapped into.
    inner: Outbox<N>,
    scratch: Effects<N>,
    /// This step's messages per peer, not yet sent: after the sync, and early.
    late: BTreeMap<NodeId, Vec<(GroupId, N::Message)>>,
    early: BTreeMap<NodeId, Vec<(GroupId, N::Message)>>,
    counters: GroupsCounters,
}

impl<N: Node> Groups<N> {
    /// Builds the host from its configuration and the shared log's records, recovering each
    /// group with `recover_group(group, config, records)`.
    fn build(
        config: GroupsConfig<N::Config>,
        records: Vec<GroupsRecord<N::Record>>,
        mut recover_group: impl FnMut(GroupId, N::Config, Vec<N::Record>) -> Result<N, N::Error>,
    ) -> Result<Self, GroupsError<N::Error>> {
        config.validate().map_err(GroupsError::Config)?;
        let mut groups = config.groups;
        groups.sort_by_key(|(g, _)| *g);
        let ids: Vec<GroupId> = groups.iter().map(|(g, _)| *g).collect();
        let index: BTreeMap<GroupId, usize> =
            ids.iter().enumerate().map(|(i, g)| (*g, i)).collect();
        let (live, since) = replay(records, ids.len(), |g| index.get(&g).copied())
            .map_err(GroupsError::UnknownGroupInLog)?;
        let mut nodes = Vec::with_capacity(ids.len());
        for ((group, c), records) in groups.into_iter().zip(live.iter().cloned()) {
            let node = recover_group(group, c, records)
                .map_err(|source| GroupsError::Group { group, source })?;
            if node.id() != config.id {
                return Err(GroupsError::Config(format!(
                    "group {group} runs as node {}, not as this process's id {}",
                    node.id(),
                    config.id
                )));
            }
            nodes.push(node);
        }
        Ok(Self {
            id: config.id,
            parts_per_message_max: config.parts_per_message_max,
            compact_records_min: config.compact_records_min,
            compact_live_multiple: config.compact_live_multiple,
            compacted_bytes_max: config.compacted_bytes_max,
            checkpoints_reported: vec![0; ids.len()],
            journal: Journal::recovered(live, since),
            ids,
            nodes,
            index,
            inner: Outbox::new(),
            scratch: Effects::default(),
            late: BTreeMap::new(),
            early: BTreeMap::new(),
            counters: GroupsCounters::default(),
        })
    }

    /// Group `group`'s core, if this process hosts it.
    pub fn group(&self, group: GroupId) -> Option<&N> {
        self.index.get(&group).map(|&i| &self.nodes[i])
    }

    /// Every hosted group and its core, by group id.
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &N)> + '_ {
        self.ids.iter().copied().zip(&self.nodes)
    }

    /// The host's counters.
    pub fn counters(&self) -> GroupsCounters {
        self.counters
    }

    /// Runs one step of the group in `slot` and takes its effects into this step's.
    fn step(
        &mut self,
        slot: usize,
        out: &mut Outbox<Self>,
        f: impl FnOnce(&mut N, &mut Outbox<N>),
    ) {
        // Log lines of the group's core carry its group (inside the driver's span of the node).
        let _span = tracing::debug_span!("group", group = self.ids[slot]).entered();
        f(&mut self.nodes[slot], &mut self.inner);
        self.inner.take_into(&mut self.scratch);
        self.absorb(slot, out);
    }

    /// Moves the group's effects (in `scratch`) into the host's: records tagged and appended
    /// in order, messages into this step's per-peer parts, answers and events tagged.
    fn absorb(&mut self, slot: usize, out: &mut Outbox<Self>) {
        let group = self.ids[slot];
        let fx = &mut self.scratch;
        for p in fx.records.drain(..) {
            let record = match p {
                Persist::Append(record) => {
                    self.journal.appended(slot, &record, false);
                    GroupsRecord::Append { group, record }
                }
                Persist::Checkpoint(record) => {
                    self.journal.appended(slot, &record, true);
                    GroupsRecord::Checkpoint { group, record }
                }
            };
            out.persist(record);
        }
        for (to, msg) in fx.messages.drain(..) {
            self.late.entry(to).or_default().push((group, msg));
        }
        for (to, msg) in fx.early.drain(..) {
            self.early.entry(to).or_default().push((group, msg));
        }
        for (id, r) in fx.early_responses.drain(..) {
            out.respond_early(id, GroupResponse::Group(group, r));
        }
        for (id, r) in fx.responses.drain(..) {
            out.respond(id, GroupResponse::Group(group, r));
        }
        for e in fx.events.drain(..) {
            out.emit((group, e));
        }
    }

    /// Ends a step of the host: each peer's parts leave as one message (early parts in one
    /// early message), then a compaction record follows the step's records if one is due.
    fn finish(&mut self, out: &mut Outbox<Self>) {
        let max = self.parts_per_message_max;
        let c = &mut self.counters;
        for (early, buckets) in [(true, &mut self.early), (false, &mut self.late)] {
            for (peer, mut parts) in std::mem::take(buckets) {
                while !parts.is_empty() {
                    let rest = if parts.len() > max {
                        parts.split_off(max)
                    } else {
                        Vec::new()
                    };
                    c.messages_sent += 1;
                    c.parts_sent += parts.len() as u64;
                    let msg = GroupsMessage { parts };
                    if early {
                        out.send_early(peer, msg);
                    } else {
                        out.send(peer, msg);
                    }
                    parts = rest;
                }
            }
        }
        self.maybe_compact(out);
    }

    /// Writes a compaction record if one is due and fits.
    fn maybe_compact(&mut self, out: &mut Outbox<Self>) {
        if !self
            .journal
            .compaction_due(self.compact_records_min, self.compact_live_multiple)
        {
            return;
        }
        let record = self.journal.compaction(&self.ids);
        let fits = Bincode
            .encode(&record)
            .is_ok_and(|b| b.len() <= self.compacted_bytes_max);
        if fits {
            out.checkpoint(record);
            self.journal.compacted();
            self.counters.compactions += 1;
        } else {
            tracing::warn!(
                live = self.journal.live_total(),
                "groups: compaction record too large; the log keeps growing until the groups \
                 checkpoint"
            );
            self.journal.compaction_skipped();
            self.counters.compactions_skipped += 1;
        }
    }
}

impl<N: Node> Node for Groups<N> {
    type Config = GroupsConfig<N::Config>;
    type Message = GroupsMessage<N::Message>;
    type Request = (GroupId, N::Request);
    type Response = GroupResponse<N::Response>;
    type Event = (GroupId, N::Event);
    type Record = GroupsRecord<N::Record>;
    type Metrics = GroupsMetrics<N::Metrics>;
    type Error = GroupsError<N::Error>;

    const PROTOCOL: u16 = N::PROTOCOL | GROUPED_PROTOCOL_BIT;
    const WIRE_VERSION: u16 = (GROUPS_WIRE_VERSION << 12) | (N::WIRE_VERSION & 0x0FFF);

    fn recover(config: Self::Config, records: Vec<Self::Record>) -> Result<Self, Self::Error> {
        Self::build(config, records, |_, c, r| N::recover(c, r))
    }

    fn recover_with_snapshots(
        config: Self::Config,
        records: Vec<Self::Record>,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> Result<Self, Self::Error> {
        Self::build(config, records, |group, c, r| {
            let own: Arc<dyn SnapshotStore> =
                Arc::new(GroupSnapshots::new(snapshots.clone(), group));
            N::recover_with_snapshots(c, r, own)
        })
    }

    fn checkpoints_durable(&mut self, count: u64) {
        // The host's own checkpoints are compactions, which no group asked for; a group's
        // checkpoints are appends of the shared log, reported with `records_durable`.
        let _ = count;
    }

    fn records_durable(&mut self, count: u64, out: &mut Outbox<Self>) {
        let mut changed = Vec::new();
        self.journal
            .durable(count, |slot, d| changed.push((slot, d)));
        for (slot, d) in changed {
            if d.checkpoints > self.checkpoints_reported[slot] {
                self.checkpoints_reported[slot] = d.checkpoints;
                self.nodes[slot].checkpoints_durable(d.checkpoints);
            }
            self.step(slot, out, |n, o| n.records_durable(d.records, o));
        }
        self.finish(out);
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn handle_message(&mut self, from: NodeId, msg: Self::Message, out: &mut Outbox<Self>) {
        if msg.parts.len() > self.parts_per_message_max {
            self.counters.oversized_messages += 1;
            tracing::debug!(
                from,
                parts = msg.parts.len(),
                "groups: oversized message dropped"
            );
            return;
        }
        for (group, m) in msg.parts {
            match self.index.get(&group) {
                Some(&slot) => self.step(slot, out, |n, o| n.handle_message(from, m, o)),
                None => {
                    self.counters.unknown_group_parts += 1;
                    tracing::debug!(from, group, "groups: part for an unknown group dropped");
                }
            }
        }
        self.finish(out);
    }

    fn handle_request(&mut self, id: RequestId, req: Self::Request, out: &mut Outbox<Self>) {
        self.handle_requests([(id, req)], out);
    }

    fn handle_requests<I>(&mut self, requests: I, out: &mut Outbox<Self>)
    where
        I: IntoIterator<Item = (RequestId, Self::Request)>,
    {
        // Each group gets its share of the batch in one call, in arrival order, so a core
        // that batches (Raft, Multi-Paxos) still sends one round for it.
        let mut per_slot: BTreeMap<usize, Vec<(RequestId, N::Request)>> = BTreeMap::new();
        for (id, (group, req)) in requests {
            match self.index.get(&group) {
                Some(&slot) => per_slot.entry(slot).or_default().push((id, req)),
                None => {
                    self.counters.unknown_group_requests += 1;
                    out.respond(id, GroupResponse::UnknownGroup(group));
                }
            }
        }
        for (slot, batch) in per_slot {
            self.step(slot, out, |n, o| n.handle_requests(batch, o));
        }
        self.finish(out);
    }

    fn tick(&mut self, out: &mut Outbox<Self>) {
        for slot in 0..self.nodes.len() {
            self.step(slot, out, |n, o| n.tick(o));
        }
        self.finish(out);
    }

    /// A batch of steps sends each peer one message (see `coalesce.rs`).
    fn coalesce(&self, messages: &mut Vec<(NodeId, Self::Message)>) {
        super::coalesce::merge_per_peer(messages, self.parts_per_message_max);
    }

    fn metrics(&self) -> Self::Metrics {
        GroupsMetrics {
            groups: self.groups().map(|(g, n)| (g, n.metrics())).collect(),
            counters: self.counters,
            live_records: self.journal.live_total(),
            records_since_compaction: self.journal.since_compaction(),
        }
    }
}
