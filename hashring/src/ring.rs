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
//!   batch of changes pays once): `positions: Vec<u64>` and `owners: Vec<u32>` in separate,
//!   dense arrays (a lookup reads one cache line of each), plus a **prefix table** that maps the
//!   top `b` bits of a hash (k ≤ 2^b < 2k) to the first position in that bucket and its owner.
//!   A lookup is one table read — and nothing more when the bucket holds no position (37–60 % of
//!   buckets) — then a scan over about one position, instead of a binary search over k
//!   positions (~17 dependent cache misses at k = 160 000). When the table is built, a tree of
//!   160 000 entries is walked once; a production system with very frequent changes could
//!   patch the arrays in place instead.
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

/// The lookup index of `k` virtual nodes: sorted positions, their owners, and a prefix table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    pub(crate) positions: Vec<u64>,
    pub(crate) owners: Vec<u32>,
    /// One entry per bucket of hashes sharing their top `bits` bits (k ≤ 2^bits < 2k buckets,
    /// so 37–60 % of buckets hold no position at all). The low 32 bits are the index of the bucket's
    /// first position, or, with [`BUCKET_EMPTY`] set, of the successor every hash in the (empty)
    /// bucket has; the high 32 bits are that index's owner. A lookup in an empty bucket reads
    /// nothing but this entry: one cache miss. (Measured: one or two buckets per virtual node
    /// perform alike; more buckets only cost memory.)
    buckets: Vec<u64>,
    shift: u32,
}

/// Flag of a bucket that holds no position (its entry is then the successor's index).
const BUCKET_EMPTY: u32 = 1 << 31;
/// Prefix-table bits: one to two buckets per virtual node, between 2 and 2^24 buckets (a
/// 128 MiB cap, reached at 16 M virtual nodes).
const PREFIX_BITS_MIN: u32 = 1;
const PREFIX_BITS_MAX: u32 = 24;
/// Positions scanned linearly inside a bucket before falling back to binary search (a bucket
/// holds 0.5 positions on average; more than 8 is rare).
const BUCKET_SCAN_MAX: usize = 8;
/// The most virtual nodes a ring may hold: the prefix table stores indexes in 31 bits.
pub const RING_VNODES_MAX: usize = 1 << 28;

impl Index {
    /// Builds from `(position, owner)` pairs in ring order.
    fn build(sorted: impl ExactSizeIterator<Item = (u64, u32)>) -> Self {
        let len = sorted.len();
        let mut positions = Vec::with_capacity(len);
        let mut owners = Vec::with_capacity(len);
        for (position, slot) in sorted {
            positions.push(position);
            owners.push(slot);
        }
        let bits =
            (usize::BITS - len.max(1).leading_zeros()).clamp(PREFIX_BITS_MIN, PREFIX_BITS_MAX);
        let shift = 64 - bits;
        let bucket_count = 1usize << bits;
        let mut buckets = Vec::with_capacity(bucket_count);
        let mut i = 0usize;
        for bucket in 0..bucket_count as u64 {
            while i < len && (positions[i] >> shift) < bucket {
                i += 1;
            }
            let has_position = i < len && (positions[i] >> shift) == bucket;
            let entry = if has_position {
                i as u32
            } else {
                // Every hash of this bucket is above all earlier positions and below all later
                // ones: its successor is `i`, wrapping to 0 past the end.
                (if i == len { 0 } else { i as u32 }) | BUCKET_EMPTY
            };
            let owner = owners
                .get((entry & !BUCKET_EMPTY) as usize)
                .copied()
                .unwrap_or(0);
            buckets.push(u64::from(entry) | (u64::from(owner) << 32));
        }
        Self {
            positions,
            owners,
            buckets,
            shift,
        }
    }

    /// The owner (slot) of `hash`: [`Index::successor`]'s owner, reading only the prefix table
    /// when the hash's bucket is empty.
    #[inline]
    pub(crate) fn owner(&self, hash: u64) -> Option<u32> {
        let entry = *self.buckets.get((hash >> self.shift) as usize)?;
        if self.positions.is_empty() {
            return None;
        }
        if entry as u32 & BUCKET_EMPTY != 0 {
            return Some((entry >> 32) as u32);
        }
        let i = self.scan(hash, entry as u32 as usize);
        self.owners.get(i).copied()
    }

    /// The index of the first virtual node at or clockwise after `hash` (wrapping), or `None`
    /// when empty.
    #[inline]
    pub(crate) fn successor(&self, hash: u64) -> Option<usize> {
        let entry = *self.buckets.get((hash >> self.shift) as usize)? as u32;
        if self.positions.is_empty() {
            return None;
        }
        let lo = (entry & !BUCKET_EMPTY) as usize;
        if entry & BUCKET_EMPTY != 0 {
            return Some(lo);
        }
        Some(self.scan(hash, lo))
    }

    /// The successor of `hash` in a non-empty bucket whose first position is at `lo`.
    #[inline]
    fn scan(&self, hash: u64, lo: usize) -> usize {
        // The answer is in this bucket or is the first position after it: positions are sorted,
        // so scan forward from the bucket's first position.
        let len = self.positions.len();
        let end = (lo + BUCKET_SCAN_MAX).min(len);
        let mut i = lo;
        while i < end && self.positions[i] < hash {
            i += 1;
        }
        if i == end && end < len {
            i = end + self.positions[end..].partition_point(|&p| p < hash);
        }
        if i == len {
            0
        } else {
            i
        }
    }

    fn heap_bytes(&self) -> usize {
        self.positions.capacity() * 8 + self.owners.capacity() * 4 + self.buckets.capacity() * 8
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
        let mut all = Vec::new();
        for member in membership.members() {
            let vnodes = member.vnode_count(&ring.config)?;
            let id_hash = ring.config.hasher.hash(&member.id);
            let slot = ring.insert_slot(member.clone(), id_hash, vnodes);
            all.extend((0..vnodes).map(|v| (ring.vnode_key(id_hash, v), slot)));
        }
        if all.len() > RING_VNODES_MAX {
            return Err(Error::TooManyVirtualNodes {
                vnodes: all.len() as u64,
                max: RING_VNODES_MAX as u64,
            });
        }
        // One unstable sort of the flat array, the index straight from it, then the tree:
        // `BTreeMap: FromIterator` bulk-builds, and its stable sort of already sorted input is a
        // single linear pass.
        all.sort_unstable();
        let _ = ring
            .index
            .set(Index::build(all.iter().map(|&(key, slot)| (key.0, slot))));
        ring.entries = all.into_iter().collect();
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
    /// 0: plain list; 1: zone-aware, first pass (new zones); 2: zone-aware, second pass.
    phase: u8,
}

impl<'a, N: NodeId> PreferenceList<'a, N> {
    fn new(ring: &'a Ring<N>, key_hash: u64, count: usize, zoned: bool) -> Self {
        let index = ring.index();
        let start = index.successor(key_hash).unwrap_or(0);
        Self {
            ring,
            index,
            start,
            step: 0,
            remaining: count.min(ring.len()),
            yielded: 0,
            yielded_slots: [0; PREFERENCE_INLINE_MAX],
            yielded_zones: [0; PREFERENCE_INLINE_MAX],
            zones_seen: 0,
            phase: u8::from(zoned),
        }
    }

    #[inline]
    fn owner_at_step(&self, step: usize) -> u32 {
        let len = self.index.owners.len();
        let mut i = self.start + step;
        if i >= len {
            i -= len;
        }
        self.index.owners[i]
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

    fn next(&mut self) -> Option<&'a N> {
        let len = self.index.owners.len();
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

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}
