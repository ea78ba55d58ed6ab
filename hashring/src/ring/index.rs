//! The ring's lookup index, built from the tree of virtual nodes after a change: a prefix table
//! over 8-byte records in ring order, each listing the first distinct owners clockwise (see the
//! layout in the [parent module](super)), and the counting sort that puts virtual nodes in ring
//! order.

use crate::membership::MEMBERS_MAX;

/// How many distinct owners each virtual node's record lists: the first
/// `PREFERENCE_TABLE_LEN` distinct nodes clockwise from it, its own owner first. A
/// [`PreferenceList`](super::PreferenceList) of at most this many nodes (Dynamo's usual N = 3)
/// is read from one record, without walking the ring; a longer one walks. Three keeps a record at 8 bytes (with a 16-bit
/// position suffix); five or six made records 12 or 16 bytes and lookups measurably slower.
pub const PREFERENCE_TABLE_LEN: usize = 3;

/// One virtual node in the lookup index: 8 bytes, eight to a cache line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Record {
    /// The 16 bits of the position that follow the bucket's prefix bits. Inside one bucket,
    /// comparing suffixes compares positions, except when two suffixes are equal (odds 2⁻¹⁶ per
    /// comparison): then the full position decides.
    suffix: Suffix,
    /// The first distinct owners (slots) clockwise from this virtual node; `owners[0]` owns it.
    /// Only the first `min(PREFERENCE_TABLE_LEN, nodes)` entries are meaningful.
    owners: [u16; PREFERENCE_TABLE_LEN],
}

/// The lookup index of `k` virtual nodes: a prefix table over 16-byte records in ring order,
/// plus the full positions (read only to break a suffix tie, and by rebalancing).
#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    /// Full positions in ring order: the source for ties, `owned_ranges` and `diff`.
    pub(crate) positions: Vec<u64>,
    records: Vec<Record>,
    /// `buckets[b]` is the index of the first record whose position's top `bits` bits are ≥ `b`,
    /// for `b` in `0..=2^bits` (the last entry is `k`): bucket `b`'s records are
    /// `buckets[b]..buckets[b + 1]`, and when that range is empty, `buckets[b]` is the successor
    /// of every hash in the bucket.
    buckets: Vec<u32>,
    bits: u32,
}

/// Prefix-table bits: ⌊log₂ k⌋, so one to two virtual nodes per bucket (2–4 bytes of table per
/// virtual node), between 2 and 2^24 buckets (a 64 MiB cap, reached at 16 M virtual nodes).
const PREFIX_BITS_MIN: u32 = 1;
const PREFIX_BITS_MAX: u32 = 24;
/// Records scanned linearly inside a bucket; a larger bucket (rare with random positions, or a
/// ring over 2^24 virtual nodes) is binary-searched.
const BUCKET_SCAN_MAX: usize = 8;
/// The most virtual nodes a ring may hold: the prefix table stores indexes in 32 bits.
pub const RING_VNODES_MAX: usize = 1 << 28;
// Owners are stored as 16-bit slots: a ring never has more than `MEMBERS_MAX` nodes, and slots
// are reused, so every slot is below it.
const _: () = assert!(MEMBERS_MAX <= 1 << 16);

impl Index {
    /// Builds from `(position, slot)` pairs in ring order.
    pub(crate) fn build(sorted: impl ExactSizeIterator<Item = (u64, u32)>) -> Self {
        let len = sorted.len();
        let bits = prefix_bits(len);
        let shift = 64 - bits;
        let bucket_count = 1usize << bits;
        let mut positions = Vec::with_capacity(len);
        let mut records = Vec::with_capacity(len);
        let mut buckets = Vec::with_capacity(bucket_count + 1);
        for (i, (position, slot)) in sorted.enumerate() {
            let bucket = (position >> shift) as usize;
            // Every bucket up to this one whose first record is not yet known starts here.
            while buckets.len() <= bucket {
                buckets.push(i as u32);
            }
            positions.push(position);
            let mut owners = [0; PREFERENCE_TABLE_LEN];
            owners[0] = slot as u16;
            records.push(Record {
                suffix: suffix(position, bits),
                owners,
            });
        }
        buckets.resize(bucket_count + 1, len as u32);
        fill_distinct_owners(&mut records);
        Self {
            positions,
            records,
            buckets,
            bits,
        }
    }

    /// The number of virtual nodes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// The owner (slot) of the virtual node at `i` (`i < len`).
    #[inline]
    pub(crate) fn owner_at(&self, i: usize) -> u32 {
        u32::from(self.records[i].owners[0])
    }

    /// The first distinct owners clockwise from the virtual node at `i`.
    #[inline]
    pub(crate) fn distinct_owners_at(&self, i: usize) -> &[u16; PREFERENCE_TABLE_LEN] {
        &self.records[i].owners
    }

    /// The owner (slot) of `hash`: [`Index::successor`]'s owner.
    #[inline]
    pub(crate) fn owner(&self, hash: u64) -> Option<u32> {
        let i = self.successor(hash)?;
        Some(self.owner_at(i))
    }

    /// The index of the first virtual node at or clockwise after `hash` (wrapping), or `None`
    /// when empty.
    #[inline]
    pub(crate) fn successor(&self, hash: u64) -> Option<usize> {
        let len = self.records.len();
        if len == 0 {
            return None;
        }
        let bucket = (hash >> (64 - self.bits)) as usize;
        let start = *self.buckets.get(bucket)? as usize;
        let end = *self.buckets.get(bucket + 1)? as usize;
        let i = if end - start <= BUCKET_SCAN_MAX {
            // Positions are sorted: the answer is the first record of the bucket at or after
            // `hash`, else the first record after the bucket.
            let key = suffix(hash, self.bits);
            let mut i = start;
            while i < end {
                let s = self.records[i].suffix;
                if s > key || (s == key && self.positions[i] >= hash) {
                    break;
                }
                i += 1;
            }
            i
        } else {
            start + self.positions[start..end].partition_point(|&p| p < hash)
        };
        Some(if i == len { 0 } else { i })
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.positions.capacity() * 8
            + self.records.capacity() * std::mem::size_of::<Record>()
            + self.buckets.capacity() * 4
    }
}

/// The prefix-table bits for `len` virtual nodes: ⌊log₂ len⌋ within the limits.
pub(super) fn prefix_bits(len: usize) -> u32 {
    (usize::BITS - 1 - len.max(1).leading_zeros()).clamp(PREFIX_BITS_MIN, PREFIX_BITS_MAX)
}

/// A virtual node before indexing.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Vnode {
    pub(super) position: u64,
    pub(super) slot: u32,
    pub(super) vnode: u32,
}

/// Puts virtual nodes in ring order, `(position, id_hash, vnode)`, the tree's order. A
/// counting sort by prefix bucket (the index's buckets: one or two random positions each), then
/// a sort of each small bucket: O(k), where a comparison sort of the 160 000 virtual nodes of a
/// 1000-node ring took about a third of the build.
pub(super) fn sort_ring_order(items: Vec<Vnode>, id_hash: impl Fn(u32) -> u64) -> Vec<Vnode> {
    let shift = 64 - prefix_bits(items.len());
    let mut ends = vec![0u32; (1usize << (64 - shift)) + 1];
    for item in &items {
        ends[(item.position >> shift) as usize + 1] += 1;
    }
    for b in 1..ends.len() {
        ends[b] += ends[b - 1];
    }
    // `ends[b]` is now the start of bucket `b`; it advances to the bucket's end as it fills.
    let mut sorted = vec![Vnode::default(); items.len()];
    for item in &items {
        let next = &mut ends[(item.position >> shift) as usize];
        sorted[*next as usize] = *item;
        *next += 1;
    }
    let mut start = 0;
    for &end in &ends[..ends.len() - 1] {
        let bucket = &mut sorted[start..end as usize];
        if bucket.len() > 1 {
            // Equal positions are rare: the tie-breakers are looked up only for them.
            bucket.sort_unstable_by(|a, b| {
                a.position
                    .cmp(&b.position)
                    .then_with(|| (id_hash(a.slot), a.vnode).cmp(&(id_hash(b.slot), b.vnode)))
            });
        }
        start = end as usize;
    }
    sorted
}

/// The bits of a position kept in its record, after the bucket's prefix bits.
type Suffix = u16;

/// The [`Suffix::BITS`] bits of `position` after its top `bits` bits (`1 <= bits <= 48`).
#[inline]
fn suffix(position: u64, bits: u32) -> Suffix {
    ((position << bits) >> (64 - Suffix::BITS)) as Suffix
}

/// Fills every record's `owners` from `owners[0]` of all records: the first
/// [`PREFERENCE_TABLE_LEN`] distinct owners clockwise from each virtual node, within one turn.
///
/// The list of `i` is `owners[i]` followed by the list of `i + 1` without `owners[i]` (a full
/// turn from `i + 1` sees every node, and the only one whose first occurrence the step from `i`
/// changes is `owners[i]` itself). So one backward pass computes every list in O(k · R), seeded
/// with the list of virtual node 0 (what follows the last one), found by walking forward.
fn fill_distinct_owners(records: &mut [Record]) {
    let len = records.len();
    let mut list = [0u16; PREFERENCE_TABLE_LEN];
    let mut count = 0;
    for record in records.iter() {
        let owner = record.owners[0];
        if !list[..count].contains(&owner) {
            list[count] = owner;
            count += 1;
            if count == PREFERENCE_TABLE_LEN {
                break;
            }
        }
    }
    for i in (0..len).rev() {
        let owner = records[i].owners[0];
        let mut next = [owner; PREFERENCE_TABLE_LEN];
        let mut n = 1;
        for &other in &list[..count] {
            if other != owner && n < PREFERENCE_TABLE_LEN {
                next[n] = other;
                n += 1;
            }
        }
        list = next;
        count = n;
        records[i].owners = list;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        /// The index finds the first position at or after a hash (wrapping), like a binary
        /// search over all positions, also when positions crowd into a few buckets (beyond the
        /// linear scan), repeat, or agree in every bit a record keeps; and every record lists
        /// the first distinct owners of a walk from it.
        #[test]
        fn index_matches_a_binary_search_on_crowded_positions(
            prefixes in vec(any::<u64>(), 1..4),
            entries in vec((0usize..4, any::<u16>(), 0u32..5), 1..300),
            probes in vec(any::<u64>(), 50),
        ) {
            let mut sorted: Vec<(u64, u32)> = entries
                .iter()
                .map(|&(p, low, slot)| {
                    ((prefixes[p % prefixes.len()] & !0xff_ffff) | u64::from(low), slot)
                })
                .collect();
            sorted.sort_unstable();
            let index = Index::build(sorted.iter().copied());
            let len = sorted.len();
            let mut hashes = probes;
            for &(p, _) in &sorted {
                hashes.extend([p, p.wrapping_sub(1), p.wrapping_add(1)]);
            }
            for h in hashes {
                let want = sorted.partition_point(|&(p, _)| p < h) % len;
                prop_assert_eq!(index.successor(h), Some(want), "hash {:#x}", h);
                prop_assert_eq!(index.owner(h), Some(sorted[want].1));
            }
            for i in 0..len {
                let mut walk: Vec<u16> = Vec::new();
                for s in 0..len {
                    let owner = sorted[(i + s) % len].1 as u16;
                    if !walk.contains(&owner) && walk.len() < PREFERENCE_TABLE_LEN {
                        walk.push(owner);
                    }
                }
                prop_assert_eq!(&index.distinct_owners_at(i)[..walk.len()], &walk[..], "record {}", i);
            }
        }
    }

    #[test]
    fn an_empty_index_answers_none() {
        let index = Index::build(std::iter::empty());
        assert_eq!(index.successor(7), None);
        assert_eq!(index.owner(7), None);
    }
}
