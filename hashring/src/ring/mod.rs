//! The consistent-hash ring with virtual nodes (Karger et al. 1997; Dynamo's variant with
//! preference lists).
//!
//! This file holds [`Ring`] itself (membership, the tree of virtual nodes, lookups); `index.rs`
//! the lookup index described below; `preference.rs` the [`PreferenceList`] iterator.
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

mod index;
mod preference;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use crate::error::Error;
use crate::hash::{KeyHasher, StableHash};
use crate::membership::{Member, Membership, NodeId, RingConfig, MEMBERS_MAX};
use index::{sort_ring_order, Index, Vnode};
pub use index::{PREFERENCE_TABLE_LEN, RING_VNODES_MAX};
pub use preference::{PreferenceList, PREFERENCE_INLINE_MAX};

/// A node's zone as the ring compares it: interned zone names, or (for nodes without a zone) a
/// value unique to the node, so it counts as a zone of its own.
type ZoneKey = u64;
const ZONE_OWN_BIT: u64 = 1 << 32;

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
