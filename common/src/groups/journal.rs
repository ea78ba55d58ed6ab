//! The shared log's bookkeeping: each group's live records (its last checkpoint and what
//! followed), when to compact, recovery's replay of the hosted set and of each group, and
//! whose each record of the shared log is (a group's, or the host's own: compactions, groups
//! added and removed), so that durability reported for the shared log maps back to each group
//! in order.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::GroupId;

/// A record of the shared log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupsRecord<R> {
    /// A record group `group` appended.
    Append {
        /// The group.
        group: GroupId,
        /// Its record.
        record: R,
    },
    /// A checkpoint of group `group`: it supersedes that group's earlier records (and no
    /// other group's). Written as an ordinary append of the shared log.
    Checkpoint {
        /// The group.
        group: GroupId,
        /// Its checkpoint record.
        record: R,
    },
    /// The process started hosting group `group` (a
    /// [`GroupsRequest::AddGroup`](super::GroupsRequest::AddGroup)), configured from `spec`
    /// ([`GroupsConfig::configure`](super::GroupsConfig::configure)). Every record of the
    /// group's core follows it in the log.
    Added {
        /// The group.
        group: GroupId,
        /// Its spec, as the request carried it.
        spec: Vec<u8>,
    },
    /// The process stopped hosting group `group`: its earlier records are dead.
    Removed {
        /// The group.
        group: GroupId,
    },
    /// A compaction of the whole log, written as the shared log's checkpoint: every hosted
    /// group (those without live records too), with how it is configured and its live records
    /// (its last checkpoint first, if it made one, then what it appended since), oldest first.
    /// Recovery starts from it, and hosts exactly the groups it lists.
    Compacted {
        /// Each hosted group.
        groups: Vec<CompactedGroup<R>>,
    },
}

impl<R> GroupsRecord<R> {
    /// The one group the record belongs to; `None` for a compaction, which holds them all.
    pub fn group(&self) -> Option<GroupId> {
        match self {
            GroupsRecord::Append { group, .. }
            | GroupsRecord::Checkpoint { group, .. }
            | GroupsRecord::Added { group, .. }
            | GroupsRecord::Removed { group } => Some(*group),
            GroupsRecord::Compacted { .. } => None,
        }
    }
}

/// One hosted group in a [`GroupsRecord::Compacted`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactedGroup<R> {
    /// The group.
    pub group: GroupId,
    /// Its spec if it was added at run time ([`GroupsRecord::Added`]); `None` for a group of
    /// the initial set, configured by [`GroupsConfig::groups`](super::GroupsConfig::groups).
    pub spec: Option<Vec<u8>>,
    /// Its live records.
    pub records: Vec<R>,
}

/// Whose record one entry of the shared log is, for the durability mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// A record of the group in a slot (its checkpoint if `checkpoint`).
    Group { slot: u32, checkpoint: bool },
    /// A record of the host that no group needs to hear of: a compaction, an `Added`, or a
    /// record of a group removed since.
    Host,
    /// The `Removed` record of a group: once durable, the group's snapshot files may go.
    Removed(GroupId),
}

/// What one group has asked for and what of it is durable, counted since its core was
/// recovered (at the host's recovery, or when it was added).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Durable {
    /// Records of the group that are durable ([`crate::Node::records_durable`]).
    pub(super) records: u64,
    /// Checkpoints of the group that are durable ([`crate::Node::checkpoints_durable`]).
    pub(super) checkpoints: u64,
}

/// What a durability report changed.
#[derive(Debug, Default)]
pub(super) struct DurableReport {
    /// Slots whose durable counts grew, ascending, with their new counts.
    pub(super) groups: Vec<(usize, Durable)>,
    /// Groups whose `Removed` record became durable.
    pub(super) removed: Vec<GroupId>,
}

/// The bookkeeping of the shared log. Slots are the groups' places in the host; a slot freed
/// by a removal may be reused by a later addition.
#[derive(Debug)]
pub(super) struct Journal<R> {
    /// Per slot: the group's live records (empty for a free slot).
    live: Vec<Vec<R>>,
    /// Sum of `live`'s lengths.
    live_total: u64,
    /// Records appended to the shared log since its last compaction (or since the start).
    since_compaction: u64,
    /// Owners of the shared log's records asked for since recovery and not yet durable, in
    /// log order.
    pending: VecDeque<Owner>,
    /// Records of the shared log durable since recovery.
    outer_durable: u64,
    /// Per slot: what of the group's own records is durable.
    durable: Vec<Durable>,
}

impl<R: Clone> Journal<R> {
    /// The bookkeeping after recovery: `live` per slot, `since_compaction` records after the
    /// last compaction.
    pub(super) fn recovered(live: Vec<Vec<R>>, since_compaction: u64) -> Self {
        let live_total = live.iter().map(|l| l.len() as u64).sum();
        let slots = live.len();
        Self {
            live,
            live_total,
            since_compaction,
            pending: VecDeque::new(),
            outer_durable: 0,
            durable: vec![Durable::default(); slots],
        }
    }

    /// Slot `slot` asked for `record` (a checkpoint if `checkpoint`); it goes into the shared
    /// log next.
    pub(super) fn appended(&mut self, slot: usize, record: &R, checkpoint: bool) {
        let live = &mut self.live[slot];
        if checkpoint {
            self.live_total -= live.len() as u64;
            live.clear();
        }
        live.push(record.clone());
        self.live_total += 1;
        self.since_compaction += 1;
        self.pending.push_back(Owner::Group {
            slot: slot as u32,
            checkpoint,
        });
    }

    /// A group was added in `slot` (a free one, or one past the last): its `Added` record
    /// goes into the shared log next, and its counts start from nothing.
    pub(super) fn added(&mut self, slot: usize) {
        if slot == self.live.len() {
            self.live.push(Vec::new());
            self.durable.push(Durable::default());
        }
        self.durable[slot] = Durable::default();
        self.since_compaction += 1;
        self.pending.push_back(Owner::Host);
    }

    /// Group `group` in `slot` was removed: its `Removed` record goes into the shared log
    /// next, its live records are dropped (the next compaction forgets them), and its records
    /// still waiting for durability become the host's, so the slot can be reused without a
    /// new group being told of the old one's records.
    pub(super) fn removed(&mut self, slot: usize, group: GroupId) {
        let live = &mut self.live[slot];
        self.live_total -= live.len() as u64;
        *live = Vec::new();
        for owner in self.pending.iter_mut() {
            if matches!(owner, Owner::Group { slot: s, .. } if *s as usize == slot) {
                *owner = Owner::Host;
            }
        }
        self.durable[slot] = Durable::default();
        self.since_compaction += 1;
        self.pending.push_back(Owner::Removed(group));
    }

    /// Whether a compaction is due: at least `records_min` appended since the last one, and
    /// more than `live_multiple` times the live records.
    pub(super) fn compaction_due(&self, records_min: u64, live_multiple: u64) -> bool {
        self.since_compaction >= records_min
            && self.since_compaction > self.live_total.saturating_mul(live_multiple)
    }

    /// The compaction record of the live records as they stand, for the hosted groups
    /// `(group, slot, spec)`.
    pub(super) fn compaction<'a>(
        &self,
        hosted: impl Iterator<Item = (GroupId, usize, Option<&'a Vec<u8>>)>,
    ) -> GroupsRecord<R> {
        GroupsRecord::Compacted {
            groups: hosted
                .map(|(group, slot, spec)| CompactedGroup {
                    group,
                    spec: spec.cloned(),
                    records: self.live[slot].clone(),
                })
                .collect(),
        }
    }

    /// The compaction record went into the shared log next.
    pub(super) fn compacted(&mut self) {
        self.since_compaction = 0;
        self.pending.push_back(Owner::Host);
    }

    /// A compaction was due but not written; start counting afresh so the next try waits for
    /// as many records again.
    pub(super) fn compaction_skipped(&mut self) {
        self.since_compaction = 0;
    }

    /// The first `count` records of the shared log asked for since recovery are durable:
    /// which groups' durable counts grew (in slot order), and which removals became durable.
    pub(super) fn durable(&mut self, count: u64) -> DurableReport {
        let mut report = DurableReport::default();
        if count <= self.outer_durable {
            return report;
        }
        let mut touched = Vec::new();
        while self.outer_durable < count {
            let Some(owner) = self.pending.pop_front() else {
                // More durable than was asked for: a driver bug; never count what was not
                // asked.
                tracing::error!(count, "groups: more records durable than were persisted");
                break;
            };
            self.outer_durable += 1;
            match owner {
                Owner::Host => {}
                Owner::Removed(group) => report.removed.push(group),
                Owner::Group { slot, checkpoint } => {
                    let slot = slot as usize;
                    let d = &mut self.durable[slot];
                    d.records += 1;
                    d.checkpoints += u64::from(checkpoint);
                    touched.push(slot);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        report.groups = touched
            .into_iter()
            .map(|slot| (slot, self.durable[slot]))
            .collect();
        report
    }

    /// Live records, all groups together.
    pub(super) fn live_total(&self) -> u64 {
        self.live_total
    }

    /// Records appended since the last compaction.
    pub(super) fn since_compaction(&self) -> u64 {
        self.since_compaction
    }
}

/// One group as the log leaves it: how it is configured (`None`: by the initial set) and its
/// live records.
pub(super) type Replayed<R> = (Option<Vec<u8>>, Vec<R>);

/// Replays the shared log from the `initial` groups: the groups it leaves hosted with their
/// records as each core's recovery must see them, and how many records followed the last
/// compaction. A record naming a group not hosted at that point of the log (or adding one
/// twice) is an error naming the group.
pub(super) fn replay<R>(
    records: Vec<GroupsRecord<R>>,
    initial: impl Iterator<Item = GroupId>,
) -> Result<(BTreeMap<GroupId, Replayed<R>>, u64), GroupId> {
    let mut hosted: BTreeMap<GroupId, Replayed<R>> =
        initial.map(|g| (g, (None, Vec::new()))).collect();
    let mut since = 0u64;
    for r in records {
        match r {
            GroupsRecord::Append { group, record } => {
                hosted.get_mut(&group).ok_or(group)?.1.push(record);
            }
            GroupsRecord::Checkpoint { group, record } => {
                let live = &mut hosted.get_mut(&group).ok_or(group)?.1;
                live.clear();
                live.push(record);
            }
            GroupsRecord::Added { group, spec } => {
                if hosted.insert(group, (Some(spec), Vec::new())).is_some() {
                    return Err(group);
                }
            }
            GroupsRecord::Removed { group } => {
                hosted.remove(&group).ok_or(group)?;
            }
            GroupsRecord::Compacted { groups } => {
                hosted = groups
                    .into_iter()
                    .map(|c| (c.group, (c.spec, c.records)))
                    .collect();
                since = 0;
                continue;
            }
        }
        since += 1;
    }
    Ok((hosted, since))
}

/// The records group `group`'s recovery would be handed from the shared log `records`: its
/// live records at the last compaction, then its own records after it (a checkpoint of the
/// group replaces what came before; its addition or removal starts it afresh). For checks and
/// tools that read a host's log.
pub fn group_records<R: Clone>(records: &[GroupsRecord<R>], group: GroupId) -> Vec<R> {
    let mut out = Vec::new();
    for r in records {
        match r {
            GroupsRecord::Append { group: g, record } if *g == group => out.push(record.clone()),
            GroupsRecord::Checkpoint { group: g, record } if *g == group => {
                out.clear();
                out.push(record.clone());
            }
            GroupsRecord::Added { group: g, .. } | GroupsRecord::Removed { group: g }
                if *g == group =>
            {
                out.clear();
            }
            GroupsRecord::Compacted { groups } => {
                out.clear();
                if let Some(c) = groups.iter().find(|c| c.group == group) {
                    out.extend(c.records.iter().cloned());
                }
            }
            _ => {}
        }
    }
    out
}
