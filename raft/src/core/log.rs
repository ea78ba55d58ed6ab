//! The in-memory copy of the log: entries after the latest snapshot.
//!
//! The durable copy is the node's records; this structure mirrors what they say, so every
//! change here goes with a [`crate::Record`] in the same step.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::message::{Entry, LogIndex, Term};

/// Entries `snapshot_index + 1 ..= last_index`, plus the index and term of the snapshot that
/// replaced the ones before.
#[derive(Debug)]
pub(crate) struct RaftLog<C> {
    /// The last index the snapshot covers (0: no snapshot).
    snapshot_index: LogIndex,
    /// The term of that entry (0: no snapshot).
    snapshot_term: Term,
    /// `entries[i].index == snapshot_index + 1 + i`.
    entries: VecDeque<Entry<C>>,
}

impl<C: Clone> RaftLog<C> {
    pub(crate) fn new() -> Self {
        Self {
            snapshot_index: 0,
            snapshot_term: 0,
            entries: VecDeque::new(),
        }
    }

    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.snapshot_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The term of the entry at `index`: `Some` for the snapshot's last index and every entry
    /// held, `None` below the snapshot or past the end.
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry<C>> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// The entries held from `first` to `last` (both included), in order: one walk over the
    /// buffer instead of an index computation per entry. Indexes outside the log are skipped.
    pub(crate) fn range(
        &self,
        first: LogIndex,
        last: LogIndex,
    ) -> std::collections::vec_deque::Iter<'_, Entry<C>> {
        let first = first.max(self.snapshot_index + 1);
        let last = last.min(self.last_index());
        if first > last {
            return self.entries.range(0..0);
        }
        let start = (first - self.snapshot_index - 1) as usize;
        let end = (last - self.snapshot_index) as usize;
        self.entries.range(start..end)
    }

    /// The first index of the run of entries of `term` that contains `index` (used for the
    /// conflict hint of a rejected AppendEntries).
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut i = index;
        while i > self.snapshot_index + 1 && self.term(i - 1) == Some(term) {
            i -= 1;
        }
        i
    }

    /// The last index holding an entry of `term`, if any (searching from the end: the leader's
    /// side of fast backtracking).
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        for e in self.entries.iter().rev() {
            if e.term == term {
                return Some(e.index);
            }
            if e.term < term {
                return None;
            }
        }
        (self.snapshot_term == term && self.snapshot_index > 0).then_some(self.snapshot_index)
    }

    /// Entries from `from` on, at most `count_max` of them and, beyond the first, at most
    /// `bytes_max` bytes as measured by `size`.
    pub(crate) fn slice(
        &self,
        from: LogIndex,
        count_max: usize,
        bytes_max: usize,
        size: impl Fn(&Entry<C>) -> usize,
    ) -> Vec<Entry<C>> {
        let (start, n) = self.span(from, count_max, bytes_max, size);
        // Collected from an iterator of known length: one allocation of the exact size.
        self.entries.range(start..start + n).cloned().collect()
    }

    /// The `n` entries at position `start` of the held entries (see [`RaftLog::span`]), in one
    /// shared list.
    pub(crate) fn shared(&self, start: usize, n: usize) -> Arc<[Entry<C>]> {
        self.entries.range(start..start + n).cloned().collect()
    }

    /// Where [`RaftLog::slice`]'s entries start among the held entries, and how many there
    /// are.
    pub(crate) fn span(
        &self,
        from: LogIndex,
        count_max: usize,
        bytes_max: usize,
        size: impl Fn(&Entry<C>) -> usize,
    ) -> (usize, usize) {
        if from <= self.snapshot_index {
            return (0, 0);
        }
        let start = ((from - self.snapshot_index - 1) as usize).min(self.entries.len());
        let mut bytes = 0usize;
        let mut n = 0;
        for e in self.entries.range(start..).take(count_max) {
            bytes = bytes.saturating_add(size(e));
            if n > 0 && bytes > bytes_max {
                break;
            }
            n += 1;
        }
        (start, n)
    }

    /// Entries after `index` (all of them).
    pub(crate) fn entries_after(&self, index: LogIndex) -> Vec<Entry<C>> {
        self.slice(index + 1, usize::MAX, usize::MAX, |_| 0)
    }

    /// Appends an entry; its index must be `last_index() + 1`.
    pub(crate) fn push(&mut self, entry: Entry<C>) {
        debug_assert_eq!(entry.index, self.last_index() + 1, "log gap");
        self.entries.push_back(entry);
    }

    /// Removes every entry at `from` and after (`from` above the snapshot).
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        if from <= self.snapshot_index {
            self.entries.clear();
            return;
        }
        self.entries
            .truncate((from - self.snapshot_index - 1) as usize);
    }

    /// Replaces everything up to `index` by a snapshot ending at `(index, term)`. Entries after
    /// it are kept when the log holds `index` with `term`; otherwise the whole log is dropped.
    pub(crate) fn compact(&mut self, index: LogIndex, term: Term) {
        if index <= self.snapshot_index {
            return;
        }
        if self.term(index) == Some(term) {
            let drop = (index - self.snapshot_index) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Payload;

    fn log(terms: &[Term]) -> RaftLog<()> {
        let mut l = RaftLog::new();
        for (i, &t) in terms.iter().enumerate() {
            l.push(Entry {
                term: t,
                index: i as u64 + 1,
                payload: Payload::Noop,
            });
        }
        l
    }

    #[test]
    fn terms_and_hints() {
        let l = log(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(l.last_index(), 6);
        assert_eq!(l.term(0), Some(0));
        assert_eq!(l.term(7), None);
        assert_eq!(l.first_index_of_term_at(5), 3);
        assert_eq!(l.last_index_of_term(2), Some(5));
        assert_eq!(l.last_index_of_term(3), None);
    }

    #[test]
    fn slice_respects_limits() {
        let l = log(&[1, 1, 1, 1]);
        assert_eq!(l.slice(2, 2, usize::MAX, |_| 1).len(), 2);
        assert_eq!(l.slice(1, 10, 2, |_| 1).len(), 2);
        assert_eq!(l.slice(1, 10, 0, |_| 5).len(), 1, "one entry always goes");
    }

    #[test]
    fn range_clamps_to_the_entries_held() {
        let mut l = log(&[1, 1, 2, 3, 3]);
        l.compact(2, 1);
        let indexes = |a, b| l.range(a, b).map(|e| e.index).collect::<Vec<_>>();
        assert_eq!(indexes(1, 9), vec![3, 4, 5]);
        assert_eq!(indexes(4, 4), vec![4]);
        assert_eq!(indexes(5, 4), Vec::<u64>::new());
        assert_eq!(indexes(0, 2), Vec::<u64>::new());
    }

    #[test]
    fn compact_keeps_matching_suffix() {
        let mut l = log(&[1, 1, 2, 3]);
        l.compact(2, 1);
        assert_eq!((l.snapshot_index(), l.len(), l.last_index()), (2, 2, 4));
        assert_eq!(l.term(2), Some(1));
        assert_eq!(l.term(1), None);
        l.compact(3, 9);
        assert_eq!((l.snapshot_index(), l.len(), l.last_term()), (3, 0, 9));
    }
}
