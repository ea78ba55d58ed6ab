//! Consistent hashing with bounded loads (Mirrokni, Thorup & Zadimoghaddam, SODA 2018), the
//! scheme HAProxy (`hash-balance-factor`) and Envoy use.
//!
//! Each node may hold at most `capacity = ⌈(1 + ε) · m / n⌉` keys, where `m` counts the keys
//! assigned so far including the one being placed. A key goes to the first node clockwise from
//! its hash that is below capacity. The paper shows that with ε > 0 a key is expected to walk
//! past O(1/ε²) full nodes, and that adding or removing a node or key moves O(1/ε²) keys in
//! expectation.
//!
//! With unequal virtual-node counts the capacity of a node is proportional to its share of
//! virtual nodes: `⌈(1 + ε) · m · v_i / Σv⌉` (the paper's setting is the equal case).
//!
//! Because the total capacity is at least `(1 + ε)·m > m`, some node always has room, so
//! [`BoundedLoads::assign`] always succeeds on a non-empty ring, and no node ever exceeds its
//! capacity.

use crate::error::Error;
use crate::hash::StableHash;
use crate::membership::NodeId;
use crate::ring::Ring;

/// Stateful assignment of keys to a ring's nodes under a load bound. Tracks loads per node.
///
/// ```
/// use hashring::{BoundedLoads, Ring};
///
/// let mut ring = Ring::new();
/// for id in 0u64..4 { ring.add_node(id)?; }
/// let mut loads = BoundedLoads::new(&ring, 0.25)?;
/// for key in 0u64..1000 {
///     loads.assign(&key);
/// }
/// // ⌈1.25 · 1000 / 4⌉ = 313
/// assert!(ring.nodes().all(|n| loads.load(n) <= 313));
/// # Ok::<(), hashring::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct BoundedLoads<'a, N: NodeId> {
    ring: &'a Ring<N>,
    epsilon: f64,
    /// Keys assigned per ring slot.
    loads: Vec<u64>,
    total: u64,
    vnodes_total: u64,
}

impl<'a, N: NodeId> BoundedLoads<'a, N> {
    /// Starts with no keys assigned. `epsilon` must be finite and greater than 0.
    pub fn new(ring: &'a Ring<N>, epsilon: f64) -> Result<Self, Error> {
        if !epsilon.is_finite() || epsilon <= 0.0 {
            return Err(Error::InvalidEpsilon { epsilon });
        }
        Ok(Self {
            ring,
            epsilon,
            loads: vec![0; ring.slot_capacity()],
            total: 0,
            vnodes_total: ring.vnode_len() as u64,
        })
    }

    /// The slack ε.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// The number of keys assigned.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The keys currently assigned to `id` (0 if it is not a member).
    pub fn load(&self, id: &N) -> u64 {
        self.ring
            .slot_of(id)
            .and_then(|slot| self.loads.get(slot as usize).copied())
            .unwrap_or(0)
    }

    /// The capacity of `id` for `keys` assigned keys (0 if it is not a member).
    pub fn capacity(&self, id: &N, keys: u64) -> u64 {
        self.ring
            .slot_of(id)
            .map_or(0, |slot| self.slot_capacity(slot, keys))
    }

    fn slot_capacity(&self, slot: u32, keys: u64) -> u64 {
        let share = f64::from(self.ring.slot_vnodes(slot)) / self.vnodes_total.max(1) as f64;
        ((1.0 + self.epsilon) * keys as f64 * share).ceil() as u64
    }

    /// Assigns one more key: the first node clockwise from its hash with room. `None` only when
    /// the ring is empty.
    pub fn assign<K: StableHash + ?Sized>(&mut self, key: &K) -> Option<&'a N> {
        self.assign_hash(self.ring.hasher().hash(key))
    }

    /// [`BoundedLoads::assign`] for an already hashed key.
    pub fn assign_hash(&mut self, key_hash: u64) -> Option<&'a N> {
        let ring = self.ring;
        let index = ring.index();
        let start = index.successor(key_hash)?;
        let keys = self.total + 1;
        let len = index.len();
        // At most one full turn: the total capacity exceeds `keys`, so a node with room exists.
        for step in 0..len {
            let slot = index.owner_at((start + step) % len);
            let load = self.loads[slot as usize];
            if load < self.slot_capacity(slot, keys) {
                self.loads[slot as usize] = load + 1;
                self.total = keys;
                return ring.id_of_slot(slot);
            }
        }
        None
    }

    /// Forgets one key assigned to `id` (the key was deleted or moved away).
    ///
    /// Releasing lowers every capacity a little but moves no key: nodes may then sit above the
    /// new capacity until keys are re-assigned. (The paper re-places keys on deletion; a storage
    /// layer that wants that can release and re-assign the affected keys itself.)
    pub fn release(&mut self, id: &N) -> Result<(), Error> {
        let slot = self.ring.slot_of(id).ok_or(Error::NodeNotFound)?;
        let load = &mut self.loads[slot as usize];
        if *load == 0 {
            return Err(Error::NothingToRelease);
        }
        *load -= 1;
        self.total -= 1;
        Ok(())
    }
}
