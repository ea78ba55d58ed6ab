//! [`PreferenceList`]: the first distinct nodes clockwise from a key, read from the key's
//! successor record when short enough, else by a walk of the ring (optionally one zone at a
//! time).

use super::index::{Index, PREFERENCE_TABLE_LEN};
use super::{Ring, ZoneKey};
use crate::membership::NodeId;

/// How many yielded nodes (and zones) a [`PreferenceList`] remembers inline. Longer lists stay
/// allocation-free by re-scanning the walked part of the ring instead, O(walk) per step.
pub const PREFERENCE_INLINE_MAX: usize = 8;

/// An iterator over the first distinct nodes clockwise from a key; see
/// [`Ring::preference_list`]. It never allocates and stops after one full turn of the ring.
///
/// A list of at most [`PREFERENCE_TABLE_LEN`] nodes is copied from the key's successor record
/// when it is created (zone-aware lists too, when that record's nodes cover every zone or enough
/// of them); longer lists walk the ring.
#[derive(Clone, Debug)]
pub struct PreferenceList<'a, N: NodeId> {
    ring: &'a Ring<N>,
    index: &'a Index,
    start: usize,
    /// Virtual nodes visited in the current phase.
    step: usize,
    remaining: usize,
    yielded: usize,
    yielded_slots: [u32; PREFERENCE_INLINE_MAX],
    yielded_zones: [ZoneKey; PREFERENCE_INLINE_MAX],
    zones_seen: usize,
    /// 0: plain list; 1: zone-aware, first pass (new zones); 2: zone-aware, second pass;
    /// 3: the whole list is in `table`.
    phase: u8,
    /// Phase 3: the list, `yielded` of it already returned.
    table: [u16; PREFERENCE_TABLE_LEN],
}

impl<'a, N: NodeId> PreferenceList<'a, N> {
    pub(super) fn new(ring: &'a Ring<N>, key_hash: u64, count: usize, zoned: bool) -> Self {
        let index = ring.index();
        let start = index.successor(key_hash).unwrap_or(0);
        let remaining = count.min(ring.len());
        let mut list = Self {
            ring,
            index,
            start,
            step: 0,
            remaining,
            yielded: 0,
            yielded_slots: [0; PREFERENCE_INLINE_MAX],
            yielded_zones: [0; PREFERENCE_INLINE_MAX],
            zones_seen: 0,
            phase: u8::from(zoned),
            table: [0; PREFERENCE_TABLE_LEN],
        };
        if remaining > 0 && remaining <= PREFERENCE_TABLE_LEN {
            let row = index.distinct_owners_at(start);
            if !zoned || ring.zone_count == ring.len() {
                // Every node is a zone of its own: the zone-aware list is the plain one.
                list.table = *row;
                list.phase = 3;
            } else if let Some(table) = zoned_from_row(ring, row, remaining) {
                list.table = table;
                list.phase = 3;
            }
        }
        list
    }

    #[inline]
    fn owner_at_step(&self, step: usize) -> u32 {
        let len = self.index.len();
        let mut i = self.start + step;
        if i >= len {
            i -= len;
        }
        self.index.owner_at(i)
    }

    /// Whether `slot` occurs among the first `step` virtual nodes of the walk.
    fn seen_in_walk(&self, slot: u32, step: usize) -> bool {
        (0..step).any(|s| self.owner_at_step(s) == slot)
    }

    /// Whether a node of zone `zone` occurs among the first `step` virtual nodes of the walk.
    fn zone_in_walk(&self, zone: ZoneKey, step: usize) -> bool {
        (0..step).any(|s| self.ring.zone_of_slot(self.owner_at_step(s)) == zone)
    }

    fn already_yielded(&self, slot: u32, zone: ZoneKey, step: usize) -> bool {
        if self.yielded <= PREFERENCE_INLINE_MAX {
            return self.yielded_slots[..self.yielded].contains(&slot);
        }
        match self.phase {
            0 | 1 => self.seen_in_walk(slot, step),
            // The walk is the same in both phases: the first pass yielded every node that was
            // the first of its zone; the second yields a node at its first occurrence.
            _ => self.seen_in_walk(slot, step) || !self.zone_in_walk(zone, step),
        }
    }

    fn zone_yielded(&self, zone: ZoneKey, step: usize) -> bool {
        if self.zones_seen <= PREFERENCE_INLINE_MAX {
            return self.yielded_zones[..self.zones_seen].contains(&zone);
        }
        self.zone_in_walk(zone, step)
    }

    fn record(&mut self, slot: u32) {
        if self.yielded < PREFERENCE_INLINE_MAX {
            self.yielded_slots[self.yielded] = slot;
        }
        self.yielded += 1;
        self.remaining -= 1;
    }
}

impl<'a, N: NodeId> Iterator for PreferenceList<'a, N> {
    type Item = &'a N;

    #[inline]
    fn next(&mut self) -> Option<&'a N> {
        if self.phase == 3 {
            if self.remaining == 0 {
                return None;
            }
            let slot = self.table.get(self.yielded).copied()?;
            self.yielded += 1;
            self.remaining -= 1;
            return self.ring.id_of_slot(u32::from(slot));
        }
        self.next_by_walk()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

impl<'a, N: NodeId> PreferenceList<'a, N> {
    /// The next node of a list the records do not decide: walks the ring. Kept out of line so
    /// that the common, table-read `next` stays small where it is inlined.
    #[inline(never)]
    fn next_by_walk(&mut self) -> Option<&'a N> {
        let len = self.index.len();
        while self.remaining > 0 {
            if self.step >= len {
                if self.phase == 1 {
                    self.phase = 2;
                    self.step = 0;
                    continue;
                }
                return None;
            }
            let step = self.step;
            let slot = self.owner_at_step(step);
            self.step += 1;
            match self.phase {
                0 => {
                    if self.already_yielded(slot, 0, step) {
                        continue;
                    }
                }
                1 => {
                    let zone = self.ring.zone_of_slot(slot);
                    if self.zone_yielded(zone, step) {
                        continue;
                    }
                    if self.zones_seen < PREFERENCE_INLINE_MAX {
                        self.yielded_zones[self.zones_seen] = zone;
                    }
                    self.zones_seen += 1;
                    if self.zones_seen == self.ring.zone_count {
                        // Every zone has its node: the rest come from the second pass.
                        self.phase = 2;
                        self.record(slot);
                        self.step = 0;
                        return self.ring.id_of_slot(slot);
                    }
                }
                _ => {
                    let zone = self.ring.zone_of_slot(slot);
                    if self.already_yielded(slot, zone, step) {
                        continue;
                    }
                }
            }
            self.record(slot);
            return self.ring.id_of_slot(slot);
        }
        None
    }
}

/// The zone-aware list of `count` nodes (`count <= PREFERENCE_TABLE_LEN`, at most the number of
/// nodes) from a record's distinct owners, when they decide it; `None` when the walk must go on
/// past them.
///
/// The row lists nodes in order of first occurrence clockwise, so the first pass (the first
/// node of each new zone) picks its nodes from the row in the same order as the walk; once the
/// row has shown every zone, the second pass takes the row's other nodes in order.
fn zoned_from_row<N: NodeId>(
    ring: &Ring<N>,
    row: &[u16; PREFERENCE_TABLE_LEN],
    count: usize,
) -> Option<[u16; PREFERENCE_TABLE_LEN]> {
    let row_len = PREFERENCE_TABLE_LEN.min(ring.len());
    let mut zones = [0 as ZoneKey; PREFERENCE_TABLE_LEN];
    let mut picked = [false; PREFERENCE_TABLE_LEN];
    let mut out = [0u16; PREFERENCE_TABLE_LEN];
    let mut n = 0;
    for (k, &slot) in row[..row_len].iter().enumerate() {
        let zone = ring.zone_of_slot(u32::from(slot));
        if !zones[..n].contains(&zone) {
            zones[n] = zone;
            out[n] = slot;
            picked[k] = true;
            n += 1;
            if n == count {
                return Some(out);
            }
        }
    }
    if n < ring.zone_count {
        return None; // a zone not yet seen lies further on: the first pass continues
    }
    for (k, &slot) in row[..row_len].iter().enumerate() {
        if !picked[k] {
            out[n] = slot;
            n += 1;
            if n == count {
                return Some(out);
            }
        }
    }
    None
}
