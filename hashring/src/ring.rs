//! The consistent-hash ring with virtual nodes (Karger et al. 1997; Dynamo's variant with
//! preference lists).
//!
//! # Layout
//!
//! Two structures hold the same virtual nodes:
//!
//! * **`entries`**, a `BTreeMap` keyed by `(position, id_hash, vnode)`: the source of truth.
//!   Adding or removing a node of `v` virtual nodes costs `v` tree operations, O(v·log k) for a
//!   ring of `k` virtual nodes.
//! * **the lookup index**, built from `entries` on the first lookup after a change (O(k), so a
//!   batch of changes pays once), sized to keep the hot part small — at k = 160 000 (1000 nodes)
//!   1.8 MB are read by lookups, where a plain sorted array of positions and owners is 1.9 MB
//!   and needs ~17 dependent reads per binary search:
//!   - a **prefix table** `buckets` of 2^b `u32` indexes, b = ⌊log₂ k⌋ (one or two virtual nodes
//!     per bucket; 512 KiB at k = 160 000): bucket `h = hash >> (64 − b)` spans records
//!     `buckets[h]..buckets[h + 1]`;
//!   - **8-byte records** in ring order, eight to a cache line: the 16 position bits that follow
//!     the prefix, and the first [`PREFERENCE_TABLE_LEN`] distinct owners clockwise from the
//!     virtual node, as 16-bit slots (a ring has at most [`MEMBERS_MAX`] = 2^16 nodes). The
//!     first of them owns the virtual node.
//!   - the full 64-bit **positions**, read only when a hash and a record agree in all kept bits
//!     (odds 2⁻¹⁶ per comparison), and by rebalancing.
//!
//!   A lookup is two dependent reads — the table (largely cache-resident) and one record line —
//!   and a scan of about one record. A preference list of up to [`PREFERENCE_TABLE_LEN`] nodes
//!   costs the same two reads: the successor's record already lists them, so there is no walk
//!   and no distinct-set bookkeeping. The owner lists are filled in one backward pass (the list
//!   of a virtual node is its owner followed by its successor's list without that owner), O(k).
//!   [`Ring::from_membership`] puts the virtual nodes in ring order with a counting sort on the
//!   same prefix buckets, also O(k).
//!
//!   Measured alternatives: 32-bit suffixes with six owners (16-byte records) and 16-bit suffixes
//!   with five owners (12-byte records) made lookups 20–40 % slower at 1000 nodes for the bigger
//!   working set; the previous layout (u64 positions, u32 owners, a table of 8-byte entries with
//!   inline owners for empty buckets) looked up as fast but needed three dependent reads and a
//!   walk for a preference list (3–8× slower at 1000 nodes).
//!
//! # Collisions
//!
//! Two virtual nodes may land on the same 64-bit position (probability ≈ k²/2⁶⁵). Entries are
//! ordered by `(position, id_hash, vnode)`, so the one whose node id has the smaller hash owns
//! the arc and the other owns an empty one — whatever order the nodes were added in, every
//! process agrees, and removing the winner hands the arc to the other. Two node ids with equal
//! 64-bit hashes are rejected ([`Error::NodeIdHashCollision`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use crate::error::Error;
use crate::hash::{KeyHasher, StableHash};
use crate::membership::{Member, Membership, NodeId, RingConfig, MEMBERS_MAX};

/// A node's zone as the ring compares it: interned zone names, or (for nodes without a zone) a
/// value unique to the node, so it counts as a zone of its own.
type ZoneKey = u64;
const ZONE_OWN_BIT: u64 = 1 << 32;

/// How many distinct owners each virtual node's record lists: the first
/// `PREFERENCE_TABLE_LEN` distinct nodes clockwise from it, its own owner first. A
/// [`PreferenceList`] of at most this many nodes (Dynamo's usual N = 3) is read from one record,
/// without walking the ring; a longer one walks. Three keeps a record at 8 bytes (with a 16-bit
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
    fn build(sorted: impl ExactSizeIterator<Item = (u64, u32)>) -> Self {
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
    fn distinct_owners_at(&self, i: usize) -> &[u16; PREFERENCE_TABLE_LEN] {
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

    fn heap_bytes(&self) -> usize {
        self.positions.capacity() * 8
            + self.records.capacity() * std::mem::size_of::<Record>()
            + self.buckets.capacity() * 4
    }
}

/// The prefix-table bits for `len` virtual nodes: ⌊log₂ len⌋ within the limits.
fn prefix_bits(len: usize) -> u32 {
    (usize::BITS - 1 - len.max(1).leading_zeros()).clamp(PREFIX_BITS_MIN, PREFIX_BITS_MAX)
}

/// A virtual node before indexing.
#[derive(Clone, Copy, Debug, Default)]
struct Vnode {
    position: u64,
    slot: u32,
    vnode: u32,
}

/// Puts virtual nodes in ring order, `(position, id_hash, vnode)`, the tree's order. A
/// counting sort by prefix bucket (the index's buckets: one or two random positions each), then
/// a sort of each small bucket: O(k), where a comparison sort of the 160 000 virtual nodes of a
/// 1000-node ring took about a third of the build.
fn sort_ring_order(items: Vec<Vnode>, id_hash: impl Fn(u32) -> u64) -> Vec<Vnode> {
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
#[derive(Clone, Debug)]
struct NodeSlot<N> {
    member: Member<N>,
    id_hash: u64,
    vnodes: u32,
}

/// A consistent-hash ring with virtual nodes, over node ids of type `N`.
///
/// See the [crate documentation](crate) for a tutorial. Lookups take `&self` and are safe to
/// share between threads; the lookup index is rebuilt lazily (once) after a change.
#[derive(Clone, Debug)]
pub struct Ring<N: NodeId> {
    config: RingConfig,
    version: u64,
    /// Nodes by slot; the index stores slots (u32) rather than ids. Freed slots are reused.
    slots: Vec<Option<NodeSlot<N>>>,
    /// The ids and zones by slot again, densely: the lookup path reads only these (a node slot
    /// is ~10× larger than an id), so they stay in cache.
    ids: Vec<Option<N>>,
    slot_zones: Vec<ZoneKey>,
    free_slots: Vec<u32>,
    slot_of: HashMap<N, u32>,
    /// Membership order, for `membership()`: (insertion sequence → slot).
    order: BTreeMap<u64, u32>,
    order_of_slot: HashMap<u32, u64>,
    next_order: u64,
    id_hashes: HashMap<u64, u32>,
    zones: HashMap<String, (u32, usize)>,
    next_zone: u32,
    zone_count: usize,
    entries: BTreeMap<(u64, u64, u32), u32>,
    index: OnceLock<Index>,
}

impl<N: NodeId> Default for Ring<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<N: NodeId> Ring<N> {
    /// An empty ring with the default [`RingConfig`] (seed [`crate::DEFAULT_SEED`], 160 virtual
    /// nodes per unit of weight).
    pub fn new() -> Self {
        Self {
            config: RingConfig::default(),
            version: 0,
            slots: Vec::new(),
            ids: Vec::new(),
            slot_zones: Vec::new(),
            free_slots: Vec::new(),
            slot_of: HashMap::new(),
            order: BTreeMap::new(),
            order_of_slot: HashMap::new(),
            next_order: 0,
            id_hashes: HashMap::new(),
            zones: HashMap::new(),
            next_zone: 0,
            zone_count: 0,
            entries: BTreeMap::new(),
            index: OnceLock::new(),
        }
    }

    /// An empty ring with the given parameters.
    pub fn with_config(config: RingConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            config,
            ..Self::new()
        })
    }

    /// The ring of a membership (same version, same members, same placement in every process).
    /// Builds all virtual nodes with one sort, and the lookup index eagerly.
    pub fn from_membership(membership: &Membership<N>) -> Result<Self, Error> {
        membership.validate()?;
        let mut ring = Self::with_config(*membership.config())?;
        let mut counts = Vec::with_capacity(membership.len());
        for member in membership.members() {
            counts.push(member.vnode_count(&ring.config)?);
        }
        let total: usize = counts.iter().map(|&v| v as usize).sum();
        if total > RING_VNODES_MAX {
            return Err(Error::TooManyVirtualNodes {
                vnodes: total as u64,
                max: RING_VNODES_MAX as u64,
            });
        }
        let mut all = Vec::with_capacity(total);
        for (member, &vnodes) in membership.members().iter().zip(&counts) {
            let id_hash = ring.config.hasher.hash(&member.id);
            let slot = ring.insert_slot(member.clone(), id_hash, vnodes);
            all.extend((0..vnodes).map(|vnode| Vnode {
                position: ring.config.hasher.hash_pair(id_hash, u64::from(vnode)),
                slot,
                vnode,
            }));
        }
        // Ring order by a counting sort on the prefix bits (positions are uniform, so buckets
        // hold one or two virtual nodes), the index straight from it, then the tree:
        // `BTreeMap: FromIterator` bulk-builds, and its stable sort of already sorted input is a
        // single linear pass.
        let sorted = sort_ring_order(all, |slot| ring.slot(slot).map_or(0, |s| s.id_hash));
        let _ = ring
            .index
            .set(Index::build(sorted.iter().map(|v| (v.position, v.slot))));
        ring.entries = sorted
            .iter()
            .map(|v| {
                let id_hash = ring.slot(v.slot).map_or(0, |s| s.id_hash);
                ((v.position, id_hash, v.vnode), v.slot)
            })
            .collect();
        ring.version = membership.version();
        Ok(ring)
    }

    /// A snapshot of the membership this ring implements (members in insertion order).
    pub fn membership(&self) -> Membership<N> {
        let members = self
            .order
            .values()
            .filter_map(|&slot| self.slot(slot).map(|s| s.member.clone()));
        // The ring checked every member on the way in, so no second validation is needed.
        Membership::from_parts(self.version, self.config, members.collect())
    }

    /// The parameters.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// The hasher keys are placed with.
    pub fn hasher(&self) -> KeyHasher {
        self.config.hasher
    }

    /// The version: the membership's version when built from one, +1 per `add`/`remove`.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The number of (physical) nodes.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// Whether the ring has no nodes.
    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// The number of virtual nodes.
    pub fn vnode_len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &N) -> bool {
        self.slot_of.contains_key(id)
    }

    /// The member record of `id`.
    pub fn member(&self, id: &N) -> Option<&Member<N>> {
        let slot = *self.slot_of.get(id)?;
        self.slot(slot).map(|s| &s.member)
    }

    /// The ids of all nodes (in no particular order).
    pub fn nodes(&self) -> impl Iterator<Item = &N> + '_ {
        self.slot_of.keys()
    }

    /// The number of virtual nodes of `id`.
    pub fn vnodes_of(&self, id: &N) -> Option<u32> {
        let slot = *self.slot_of.get(id)?;
        self.slot(slot).map(|s| s.vnodes)
    }

    /// Adds a node of weight 1 (so `vnodes_per_weight` virtual nodes).
    pub fn add_node(&mut self, id: N) -> Result<(), Error> {
        self.add(Member::new(id))
    }

    /// Adds a member: O(v·log k). Validates first; on error nothing changes.
    pub fn add(&mut self, member: Member<N>) -> Result<(), Error> {
        let vnodes = member.vnode_count(&self.config)?;
        if self.slot_of.contains_key(&member.id) {
            return Err(Error::DuplicateNode);
        }
        if self.slot_of.len() >= MEMBERS_MAX {
            return Err(Error::TooManyNodes { max: MEMBERS_MAX });
        }
        if self.entries.len() + vnodes as usize > RING_VNODES_MAX {
            return Err(Error::TooManyVirtualNodes {
                vnodes: (self.entries.len() + vnodes as usize) as u64,
                max: RING_VNODES_MAX as u64,
            });
        }
        let id_hash = self.config.hasher.hash(&member.id);
        if self.id_hashes.contains_key(&id_hash) {
            return Err(Error::NodeIdHashCollision { id_hash });
        }
        let slot = self.insert_slot(member, id_hash, vnodes);
        for v in 0..vnodes {
            self.entries.insert(self.vnode_key(id_hash, v), slot);
        }
        self.version += 1;
        self.index = OnceLock::new();
        Ok(())
    }

    /// Removes a node: O(v·log k). Returns its member record.
    pub fn remove(&mut self, id: &N) -> Result<Member<N>, Error> {
        let slot = self.slot_of.remove(id).ok_or(Error::NodeNotFound)?;
        let Some(node) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return Err(Error::NodeNotFound);
        };
        self.ids[slot as usize] = None;
        for v in 0..node.vnodes {
            self.entries.remove(&self.vnode_key(node.id_hash, v));
        }
        self.id_hashes.remove(&node.id_hash);
        if let Some(order) = self.order_of_slot.remove(&slot) {
            self.order.remove(&order);
        }
        if let Some(zone) = &node.member.zone {
            if let Some(entry) = self.zones.get_mut(zone) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.zones.remove(zone);
                    self.zone_count -= 1;
                }
            }
        } else {
            self.zone_count -= 1;
        }
        self.free_slots.push(slot);
        self.version += 1;
        self.index = OnceLock::new();
        Ok(node.member)
    }

    /// The node that owns `key`: the owner of the first virtual node clockwise from the key's
    /// hash. `None` only when the ring is empty.
    #[inline]
    pub fn locate<K: StableHash + ?Sized>(&self, key: &K) -> Option<&N> {
        self.locate_hash(self.config.hasher.hash(key))
    }

    /// [`Ring::locate`] for an already hashed key.
    #[inline]
    pub fn locate_hash(&self, key_hash: u64) -> Option<&N> {
        self.id_of_slot(self.index().owner(key_hash)?)
    }

    /// The preference list of `key` (Dynamo §4.3): the first `count` **distinct** nodes
    /// clockwise from its hash (fewer if the ring has fewer nodes). The first is
    /// [`Ring::locate`]'s answer. The iterator does not allocate.
    pub fn preference_list<K: StableHash + ?Sized>(
        &self,
        key: &K,
        count: usize,
    ) -> PreferenceList<'_, N> {
        PreferenceList::new(self, self.config.hasher.hash(key), count, false)
    }

    /// A zone-aware preference list: first one node from each distinct zone in clockwise order,
    /// then (if `count` exceeds the number of zones) the remaining distinct nodes in clockwise
    /// order. Nodes without a zone count as zones of their own. Does not allocate.
    pub fn preference_list_zoned<K: StableHash + ?Sized>(
        &self,
        key: &K,
        count: usize,
    ) -> PreferenceList<'_, N> {
        PreferenceList::new(self, self.config.hasher.hash(key), count, true)
    }

    /// [`Ring::preference_list`] for an already hashed key.
    pub fn preference_list_hash(&self, key_hash: u64, count: usize) -> PreferenceList<'_, N> {
        PreferenceList::new(self, key_hash, count, false)
    }

    /// [`Ring::preference_list_zoned`] for an already hashed key.
    pub fn preference_list_zoned_hash(&self, key_hash: u64, count: usize) -> PreferenceList<'_, N> {
        PreferenceList::new(self, key_hash, count, true)
    }

    /// The number of distinct zones (nodes without a zone count one each).
    pub fn zone_count(&self) -> usize {
        self.zone_count
    }

    /// Approximate heap bytes: the tree of virtual nodes (estimated at 1.5× its payload for node
    /// overhead), the lookup index, and the node table (ids' own heap data not counted).
    pub fn heap_bytes(&self) -> usize {
        let tree = self.entries.len() * (24 + 4) * 3 / 2;
        let index = self.index.get().map_or(0, Index::heap_bytes);
        let slots = self.slots.capacity() * std::mem::size_of::<Option<NodeSlot<N>>>();
        tree + index + slots
    }

    pub(crate) fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            Index::build(
                self.entries
                    .iter()
                    .map(|(&(position, _, _), &slot)| (position, slot)),
            )
        })
    }

    #[inline]
    pub(crate) fn id_of_slot(&self, slot: u32) -> Option<&N> {
        self.ids.get(slot as usize).and_then(Option::as_ref)
    }

    pub(crate) fn slot_of(&self, id: &N) -> Option<u32> {
        self.slot_of.get(id).copied()
    }

    pub(crate) fn slot_capacity(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn slot_vnodes(&self, slot: u32) -> u32 {
        self.slot(slot).map_or(0, |s| s.vnodes)
    }

    #[inline]
    fn zone_of_slot(&self, slot: u32) -> ZoneKey {
        self.slot_zones
            .get(slot as usize)
            .copied()
            .unwrap_or(ZONE_OWN_BIT | u64::from(slot))
    }

    #[inline]
    fn slot(&self, slot: u32) -> Option<&NodeSlot<N>> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// A virtual node's tree key: its position `hash(id_hash ‖ vnode)`, then the tie-breakers.
    fn vnode_key(&self, id_hash: u64, vnode: u32) -> (u64, u64, u32) {
        let position = self.config.hasher.hash_pair(id_hash, u64::from(vnode));
        (position, id_hash, vnode)
    }

    fn insert_slot(&mut self, member: Member<N>, id_hash: u64, vnodes: u32) -> u32 {
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.ids.push(None);
                self.slot_zones.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let zone = match &member.zone {
            Some(name) => {
                if let Some(entry) = self.zones.get_mut(name) {
                    entry.1 += 1;
                    u64::from(entry.0)
                } else {
                    let z = self.next_zone;
                    self.next_zone = self.next_zone.wrapping_add(1);
                    self.zones.insert(name.clone(), (z, 1));
                    self.zone_count += 1;
                    u64::from(z)
                }
            }
            None => {
                self.zone_count += 1;
                ZONE_OWN_BIT | u64::from(slot)
            }
        };
        self.slot_of.insert(member.id.clone(), slot);
        self.id_hashes.insert(id_hash, slot);
        self.order.insert(self.next_order, slot);
        self.order_of_slot.insert(slot, self.next_order);
        self.next_order += 1;
        self.ids[slot as usize] = Some(member.id.clone());
        self.slot_zones[slot as usize] = zone;
        self.slots[slot as usize] = Some(NodeSlot {
            member,
            id_hash,
            vnodes,
        });
        slot
    }
}

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
    fn new(ring: &'a Ring<N>, key_hash: u64, count: usize, zoned: bool) -> Self {
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
