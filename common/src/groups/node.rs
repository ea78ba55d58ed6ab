//! [`Groups`]: the host of many groups, itself a [`Node`]: recovery of the hosted set and of
//! each group, the routing of inputs to the group they name, and the translation of each
//! group's effects into the host's (tagged records, coalesced messages, tagged answers and
//! events). Adding and removing groups at run time is in `membership.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::{Configure, GroupsConfig};
use super::journal::{replay, Journal};
use super::snapshots::{remove_orphans, GroupSnapshots};
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

/// A request to a [`Groups`] host: one for a group's core, or one for the host itself.
/// `(group, request)` converts into [`GroupsRequest::Group`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupsRequest<R> {
    /// A request for group `.0`'s core.
    Group(GroupId, R),
    /// Start hosting group `group`, configured by
    /// [`GroupsConfig::configure`](super::GroupsConfig::configure) from `spec`. Answered
    /// [`GroupResponse::Added`] once the group's [`GroupsRecord::Added`] is durable, or with a
    /// refusal that changed nothing.
    AddGroup {
        /// The group.
        group: GroupId,
        /// What the group's configuration is built from (its members, say), kept in the log.
        spec: Vec<u8>,
    },
    /// Stop hosting group `group`: answered [`GroupResponse::Removed`] once its
    /// [`GroupsRecord::Removed`] is durable ([`GroupResponse::UnknownGroup`] if it is not
    /// hosted).
    RemoveGroup {
        /// The group.
        group: GroupId,
    },
}

impl<R> From<(GroupId, R)> for GroupsRequest<R> {
    fn from((group, request): (GroupId, R)) -> Self {
        GroupsRequest::Group(group, request)
    }
}

/// The answer to a [`GroupsRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupResponse<R> {
    /// The group's core answered.
    Group(GroupId, R),
    /// This process hosts no such group; no core saw the request (or, for a
    /// [`GroupsRequest::RemoveGroup`], nothing was removed).
    UnknownGroup(GroupId),
    /// The group was removed while its core held the request unanswered: the request may or
    /// may not have taken effect in the group.
    Abandoned(GroupId),
    /// The group is hosted, and its addition is durable.
    Added(GroupId),
    /// The group is no longer hosted, and its removal is durable.
    Removed(GroupId),
    /// Refused: the group is hosted already (nothing changed).
    AlreadyHosted(GroupId),
    /// Refused: the group's removal is not durable yet; ask again later (nothing changed).
    RemovalPending(GroupId),
    /// Refused: this process hosts [`GroupsConfig::groups_max`] groups already.
    TooManyGroups {
        /// The group.
        group: GroupId,
        /// The limit.
        max: usize,
    },
    /// Refused: no configuration could be built from the spec, or the core refused it.
    BadSpec {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
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
    /// Groups added at run time ([`GroupsRequest::AddGroup`] accepted).
    pub groups_added: u64,
    /// Groups removed at run time.
    pub groups_removed: u64,
    /// Additions and removals refused (duplicate, unknown, over the limit, bad spec, removal
    /// pending).
    pub membership_refused: u64,
    /// Requests answered [`GroupResponse::Abandoned`] because their group was removed.
    pub abandoned_requests: u64,
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
    /// The log holds records of a group it does not host at that point (or adds a group
    /// twice), or its hosted set names a group of the initial set that the configuration no
    /// longer lists: dropping them would lose that group's state at the next compaction.
    #[error("the log holds records of group {0}, which this process does not host")]
    UnknownGroupInLog(GroupId),
}

/// Many groups of core `N` in one process: one [`Node`] to the driver, the transport, the
/// write-ahead log and the simulator. See the module documentation.
///
/// Each hosted group has a *slot*: its place in the per-group vectors below. A removal frees
/// the slot (every per-slot vector keeps its length) and a later addition may reuse it.
pub struct Groups<N: Node> {
    pub(super) id: NodeId,
    pub(super) groups_max: usize,
    parts_per_message_max: usize,
    compact_records_min: u64,
    compact_live_multiple: u64,
    compacted_bytes_max: usize,
    /// Builds the configuration of a group added at run time.
    pub(super) configure: Option<Configure<N::Config>>,
    /// The process's snapshot store, when recovered with one.
    pub(super) snapshots: Option<Arc<dyn SnapshotStore>>,
    /// Slot → group id (of the last group in it, for a free slot).
    pub(super) ids: Vec<GroupId>,
    /// Slot → the group's core; `None` for a free slot.
    pub(super) nodes: Vec<Option<N>>,
    /// Slot → the group's spec if it was added at run time.
    pub(super) specs: Vec<Option<Vec<u8>>>,
    /// Slot → requests handed to the group's core and not answered yet, answered
    /// [`GroupResponse::Abandoned`] if the group is removed.
    pub(super) asked: Vec<BTreeSet<RequestId>>,
    /// Free slots.
    pub(super) free: Vec<usize>,
    /// Group id → slot, for the hosted groups.
    pub(super) index: BTreeMap<GroupId, usize>,
    /// The hosted groups' slots in group order (how a tick visits them).
    pub(super) order: Vec<usize>,
    /// Groups removed whose `Removed` record is not durable yet.
    pub(super) removing: BTreeSet<GroupId>,
    pub(super) journal: Journal<N::Record>,
    /// Slot → checkpoints last reported durable to the group's core.
    pub(super) checkpoints_reported: Vec<u64>,
    /// The outbox every group's step runs into, and the buffers its effects are swapped into.
    inner: Outbox<N>,
    scratch: Effects<N>,
    /// This step's messages per peer, not yet sent: after the sync, and early.
    late: BTreeMap<NodeId, Vec<(GroupId, N::Message)>>,
    early: BTreeMap<NodeId, Vec<(GroupId, N::Message)>>,
    pub(super) counters: GroupsCounters,
}

/// A core recovered from `records`, with group `group`'s view of `snapshots` if there is one.
pub(super) fn recover_core<N: Node>(
    snapshots: Option<&Arc<dyn SnapshotStore>>,
    group: GroupId,
    config: N::Config,
    records: Vec<N::Record>,
) -> Result<N, N::Error> {
    match snapshots {
        Some(store) => {
            let own: Arc<dyn SnapshotStore> = Arc::new(GroupSnapshots::new(store.clone(), group));
            N::recover_with_snapshots(config, records, own)
        }
        None => N::recover(config, records),
    }
}

/// The core configuration of `group` as the log left it: from the initial set if it has no
/// spec (taken out of `initial`), else built by `configure` from its spec.
fn core_config<C, E: std::error::Error + 'static>(
    group: GroupId,
    spec: Option<&[u8]>,
    initial: &mut BTreeMap<GroupId, C>,
    configure: &Option<Configure<C>>,
) -> Result<C, GroupsError<E>> {
    let Some(spec) = spec else {
        return initial
            .remove(&group)
            .ok_or(GroupsError::UnknownGroupInLog(group));
    };
    let configure = configure.as_ref().ok_or_else(|| {
        GroupsError::Config(format!(
            "the log adds group {group}, and no configure is set"
        ))
    })?;
    configure(group, spec).map_err(|e| GroupsError::Config(format!("group {group}'s spec: {e}")))
}

impl<N: Node> Groups<N> {
    /// Builds the host from its configuration and the shared log's records: the log, replayed
    /// from the configuration's initial groups, decides the hosted set; each group's core is
    /// recovered from its records, with its view of `snapshots` if there is a store.
    fn build(
        config: GroupsConfig<N::Config>,
        records: Vec<GroupsRecord<N::Record>>,
        snapshots: Option<Arc<dyn SnapshotStore>>,
    ) -> Result<Self, GroupsError<N::Error>> {
        config.validate().map_err(GroupsError::Config)?;
        let mut initial: BTreeMap<GroupId, N::Config> = config.groups.into_iter().collect();
        let (hosted, since) =
            replay(records, initial.keys().copied()).map_err(GroupsError::UnknownGroupInLog)?;
        let (mut ids, mut nodes, mut specs, mut live) = (vec![], vec![], vec![], vec![]);
        for (group, (spec, records)) in hosted {
            let c = core_config(group, spec.as_deref(), &mut initial, &config.configure)?;
            let node = recover_core::<N>(snapshots.as_ref(), group, c, records.clone())
                .map_err(|source| GroupsError::Group { group, source })?;
            if node.id() != config.id {
                return Err(GroupsError::Config(format!(
                    "group {group} runs as node {}, not as this process's id {}",
                    node.id(),
                    config.id
                )));
            }
            ids.push(group);
            nodes.push(Some(node));
            specs.push(spec);
            live.push(records);
        }
        if !initial.is_empty() {
            // Configured, but the log removed them (or was compacted before they were
            // configured): the log decides.
            tracing::info!(groups = ?initial.keys().collect::<Vec<_>>(), "groups: configured groups the log does not host are not started");
        }
        let slots = ids.len();
        let host = Self {
            id: config.id,
            groups_max: config.groups_max,
            parts_per_message_max: config.parts_per_message_max,
            compact_records_min: config.compact_records_min,
            compact_live_multiple: config.compact_live_multiple,
            compacted_bytes_max: config.compacted_bytes_max,
            configure: config.configure,
            checkpoints_reported: vec![0; slots],
            journal: Journal::recovered(live, since),
            index: ids.iter().enumerate().map(|(i, g)| (*g, i)).collect(),
            order: (0..slots).collect(),
            ids,
            nodes,
            specs,
            asked: vec![BTreeSet::new(); slots],
            free: Vec::new(),
            removing: BTreeSet::new(),
            snapshots,
            inner: Outbox::new(),
            scratch: Effects::default(),
            late: BTreeMap::new(),
            early: BTreeMap::new(),
            counters: GroupsCounters::default(),
        };
        if let Some(store) = &host.snapshots {
            // Files of groups the log no longer hosts: a crash came between a removal's
            // record becoming durable and its files' deletion.
            if let Err(e) = remove_orphans(store.as_ref(), |g| host.index.contains_key(&g)) {
                tracing::warn!(error = %e, "groups: orphan snapshot files not removed");
            }
        }
        Ok(host)
    }

    /// Group `group`'s core, if this process hosts it.
    pub fn group(&self, group: GroupId) -> Option<&N> {
        self.index.get(&group).and_then(|&i| self.nodes[i].as_ref())
    }

    /// Every hosted group and its core, by group id.
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &N)> + '_ {
        self.index
            .iter()
            .filter_map(|(&g, &i)| self.nodes[i].as_ref().map(|n| (g, n)))
    }

    /// Whether group `group`'s removal is not durable yet.
    pub fn removal_pending(&self, group: GroupId) -> bool {
        self.removing.contains(&group)
    }

    /// The host's counters.
    pub fn counters(&self) -> GroupsCounters {
        self.counters
    }

    /// Runs one step of the group in `slot` and takes its effects into this step's.
    pub(super) fn step(
        &mut self,
        slot: usize,
        out: &mut Outbox<Self>,
        f: impl FnOnce(&mut N, &mut Outbox<N>),
    ) {
        let Some(node) = self.nodes[slot].as_mut() else {
            return; // a free slot: nothing runs there
        };
        // Log lines of the group's core carry its group (inside the driver's span of the node).
        let _span = tracing::debug_span!("group", group = self.ids[slot]).entered();
        f(node, &mut self.inner);
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
        let asked = &mut self.asked[slot];
        for (id, r) in fx.early_responses.drain(..) {
            asked.remove(&id);
            out.respond_early(id, GroupResponse::Group(group, r));
        }
        for (id, r) in fx.responses.drain(..) {
            asked.remove(&id);
            out.respond(id, GroupResponse::Group(group, r));
        }
        for e in fx.events.drain(..) {
            out.emit((group, e));
        }
    }

    /// Ends a step of the host: each peer's parts leave as one message (early parts in one
    /// early message), then a compaction record follows the step's records if one is due.
    pub(super) fn finish(&mut self, out: &mut Outbox<Self>) {
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
        let hosted = self
            .order
            .iter()
            .map(|&slot| (self.ids[slot], slot, self.specs[slot].as_ref()));
        let record = self.journal.compaction(hosted);
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
    type Request = GroupsRequest<N::Request>;
    type Response = GroupResponse<N::Response>;
    type Event = (GroupId, N::Event);
    type Record = GroupsRecord<N::Record>;
    type Metrics = GroupsMetrics<N::Metrics>;
    type Error = GroupsError<N::Error>;

    const PROTOCOL: u16 = N::PROTOCOL | GROUPED_PROTOCOL_BIT;
    const WIRE_VERSION: u16 = (GROUPS_WIRE_VERSION << 12) | (N::WIRE_VERSION & 0x0FFF);

    fn recover(config: Self::Config, records: Vec<Self::Record>) -> Result<Self, Self::Error> {
        Self::build(config, records, None)
    }

    fn recover_with_snapshots(
        config: Self::Config,
        records: Vec<Self::Record>,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> Result<Self, Self::Error> {
        Self::build(config, records, Some(snapshots))
    }

    fn checkpoints_durable(&mut self, count: u64) {
        // The host's own checkpoints are compactions, which no group asked for; a group's
        // checkpoints are appends of the shared log, reported with `records_durable`.
        let _ = count;
    }

    fn records_durable(&mut self, count: u64, out: &mut Outbox<Self>) {
        let report = self.journal.durable(count);
        for (slot, d) in report.groups {
            if d.checkpoints > self.checkpoints_reported[slot] {
                self.checkpoints_reported[slot] = d.checkpoints;
                if let Some(node) = self.nodes[slot].as_mut() {
                    node.checkpoints_durable(d.checkpoints);
                }
            }
            self.step(slot, out, |n, o| n.records_durable(d.records, o));
        }
        for group in report.removed {
            self.removal_durable(group);
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
        // that batches (Raft, Multi-Paxos) still sends one round for it. A request for the
        // host (adding or removing a group) first hands the groups what came before it, so
        // the batch acts as its requests would one by one.
        let mut per_slot: BTreeMap<usize, Vec<(RequestId, N::Request)>> = BTreeMap::new();
        for (id, request) in requests {
            let (group, req) = match request {
                GroupsRequest::Group(group, req) => (group, req),
                host => {
                    self.run_batches(&mut per_slot, out);
                    self.handle_host_request(id, host, out);
                    continue;
                }
            };
            match self.index.get(&group) {
                Some(&slot) => {
                    self.asked[slot].insert(id);
                    per_slot.entry(slot).or_default().push((id, req));
                }
                None => {
                    self.counters.unknown_group_requests += 1;
                    out.respond(id, GroupResponse::UnknownGroup(group));
                }
            }
        }
        self.run_batches(&mut per_slot, out);
        self.finish(out);
    }

    fn tick(&mut self, out: &mut Outbox<Self>) {
        // No step of a core adds or removes a group, so the order holds through the loop.
        for i in 0..self.order.len() {
            let slot = self.order[i];
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
