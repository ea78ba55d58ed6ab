//! The slot log: what this replica's acceptor accepted in each slot, and how far the prefix of
//! chosen slots reaches.

use std::collections::VecDeque;

use crate::message::{Ballot, Slot, Value};

/// One accepted entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry<C> {
    /// The ballot under which the value was accepted ([`Ballot::ZERO`] for a chosen value that
    /// was learned from a peer rather than accepted).
    pub ballot: Ballot,
    /// The value.
    pub value: Value<C>,
}

/// The log of slots. Slots below `decided` are chosen and hold their chosen value; slots at or
/// above it hold whatever the acceptor last accepted there (possibly nothing: a hole).
#[derive(Debug)]
pub(crate) struct SlotLog<C> {
    /// Slots before `start` were compacted into a snapshot (0 until the first snapshot).
    start: Slot,
    /// Entry of slot `start + i` at index `i`.
    entries: VecDeque<Option<Entry<C>>>,
    /// First slot not known to be chosen here.
    pub decided: Slot,
}

impl<C> SlotLog<C> {
    pub(crate) fn new() -> Self {
        SlotLog {
            start: 0,
            entries: VecDeque::new(),
            decided: 0,
        }
    }

    /// The first slot held.
    pub(crate) fn start(&self) -> Slot {
        self.start
    }

    pub(crate) fn get(&self, slot: Slot) -> Option<&Entry<C>> {
        let i = slot.checked_sub(self.start)?;
        self.entries.get(usize::try_from(i).ok()?)?.as_ref()
    }

    /// Stores `entry` in `slot` (ignored below `start`: those slots are compacted).
    pub(crate) fn set(&mut self, slot: Slot, entry: Entry<C>) {
        let Some(i) = slot.checked_sub(self.start) else {
            return;
        };
        let Ok(i) = usize::try_from(i) else { return };
        if i >= self.entries.len() {
            self.entries.resize_with(i + 1, || None);
        }
        self.entries[i] = Some(entry);
    }

    /// Entries from `from` on (at least `start`), in slot order.
    pub(crate) fn iter_from(&self, from: Slot) -> impl Iterator<Item = (Slot, &Entry<C>)> {
        let first = from.max(self.start);
        let skip = usize::try_from(first - self.start).unwrap_or(usize::MAX);
        let start = self.start;
        self.entries
            .iter()
            .enumerate()
            .skip(skip)
            .filter_map(move |(i, e)| e.as_ref().map(|e| (start + i as u64, e)))
    }

    /// Drops every slot below `upto` (which must not exceed `decided`): a snapshot covers them.
    pub(crate) fn compact(&mut self, upto: Slot) {
        let upto = upto.min(self.decided);
        self.drop_below(upto);
    }

    /// Installs a snapshot covering every slot below `slot`: those slots are chosen and
    /// dropped; accepted entries at or above `slot` stay (they are still acceptor state).
    pub(crate) fn install(&mut self, slot: Slot) {
        self.drop_below(slot);
        self.decided = self.decided.max(slot);
    }

    fn drop_below(&mut self, slot: Slot) {
        if slot <= self.start {
            return;
        }
        let n = usize::try_from(slot - self.start).unwrap_or(usize::MAX);
        if n >= self.entries.len() {
            self.entries.clear();
        } else {
            self.entries.drain(..n);
        }
        self.start = slot;
    }
}
