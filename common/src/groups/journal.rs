//! The shared log's bookkeeping: each group's live records (its last checkpoint and what
//! followed), when to compact, recovery's replay per group, and which group each record of
//! the shared log belongs to, so that durability reported for the shared log maps back to each
//! group in order.

use std::collections::VecDeque;

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
    /// A compaction of the whole log, written as the shared log's checkpoint: for each group,
    /// its live records (its last checkpoint first, if it made one, then what it appended
    /// since), oldest first. Recovery starts from it.
    Compacted {
        /// Each group's live records.
        groups: Vec<(GroupId, Vec<R>)>,
    },
}

/// Whose record one entry of the shared log is, for the durability mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    /// Index of the group's slot; `u32::MAX` for a compaction record (no group's).
    slot: u32,
    /// Whether it is the group's checkpoint.
    checkpoint: bool,
}

const NO_GROUP: u32 = u32::MAX;

/// What one group has asked for and what of it is durable, counted since recovery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Durable {
    /// Records of the group that are durable ([`crate::Node::records_durable`]).
    pub(super) records: u64,
    /// Checkpoints of the group that are durable ([`crate::Node::checkpoints_durable`]).
    pub(super) checkpoints: u64,
}

/// The bookkeeping of the shared log. Slots are the groups' indexes in the host.
#[derive(Debug)]
pub(super) struct Journal<R> {
    /// Per slot: the group's live records.
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
        self.pending.push_back(Owner {
            slot: slot as u32,
            checkpoint,
        });
    }

    /// Whether a compaction is due: at least `records_min` appended since the last one, and
    /// more than `live_multiple` times the live records.
    pub(super) fn compaction_due(&self, records_min: u64, live_multiple: u64) -> bool {
        self.since_compaction >= records_min
            && self.since_compaction > self.live_total.saturating_mul(live_multiple)
    }

    /// The compaction record of the live records as they stand, with `ids[slot]` naming each
    /// slot's group.
    pub(super) fn compaction(&self, ids: &[GroupId]) -> GroupsRecord<R> {
        GroupsRecord::Compacted {
            groups: ids
                .iter()
                .zip(&self.live)
                .filter(|(_, l)| !l.is_empty())
                .map(|(g, l)| (*g, l.clone()))
                .collect(),
        }
    }

    /// The compaction record went into the shared log next.
    pub(super) fn compacted(&mut self) {
        self.since_compaction = 0;
        self.pending.push_back(Owner {
            slot: NO_GROUP,
            checkpoint: false,
        });
    }

    /// A compaction was due but not written; start counting afresh so the next try waits for
    /// as many records again.
    pub(super) fn compaction_skipped(&mut self) {
        self.since_compaction = 0;
    }

    /// The first `count` records of the shared log asked for since recovery are durable.
    /// Calls `changed(slot, durable)` for every group whose durable counts grew, in slot order.
    pub(super) fn durable(&mut self, count: u64, mut changed: impl FnMut(usize, Durable)) {
        if count <= self.outer_durable {
            return;
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
            if owner.slot == NO_GROUP {
                continue;
            }
            let slot = owner.slot as usize;
            let d = &mut self.durable[slot];
            d.records += 1;
            d.checkpoints += u64::from(owner.checkpoint);
            touched.push(slot);
        }
        touched.sort_unstable();
        touched.dedup();
        for slot in touched {
            changed(slot, self.durable[slot]);
        }
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

/// Replays the shared log: each slot's records as its core's recovery must see them, and how
/// many records followed the last compaction. `slot_of` maps a group id to its slot; a record
/// of a group this host does not run is an error naming the group.
pub(super) fn replay<R>(
    records: Vec<GroupsRecord<R>>,
    slots: usize,
    slot_of: impl Fn(GroupId) -> Option<usize>,
) -> Result<(Vec<Vec<R>>, u64), GroupId> {
    let mut live: Vec<Vec<R>> = (0..slots).map(|_| Vec::new()).collect();
    let mut since = 0u64;
    for r in records {
        match r {
            GroupsRecord::Append { group, record } => {
                live[slot_of(group).ok_or(group)?].push(record);
                since += 1;
            }
            GroupsRecord::Checkpoint { group, record } => {
                let l = &mut live[slot_of(group).ok_or(group)?];
                l.clear();
                l.push(record);
                since += 1;
            }
            GroupsRecord::Compacted { groups } => {
                live.iter_mut().for_each(Vec::clear);
                for (group, records) in groups {
                    live[slot_of(group).ok_or(group)?] = records;
                }
                since = 0;
            }
        }
    }
    Ok((live, since))
}

/// The records group `group`'s recovery would be handed from the shared log `records`: its
/// live records at the last compaction, then its own records after it (a checkpoint of the
/// group replaces what came before). For checks and tools that read a host's log.
pub fn group_records<R: Clone>(records: &[GroupsRecord<R>], group: GroupId) -> Vec<R> {
    let mut out = Vec::new();
    for r in records {
        match r {
            GroupsRecord::Append { group: g, record } if *g == group => out.push(record.clone()),
            GroupsRecord::Checkpoint { group: g, record } if *g == group => {
                out.clear();
                out.push(record.clone());
            }
            GroupsRecord::Compacted { groups } => {
                out.clear();
                if let Some((_, live)) = groups.iter().find(|(g, _)| *g == group) {
                    out.extend(live.iter().cloned());
                }
            }
            _ => {}
        }
    }
    out
}
