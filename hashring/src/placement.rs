//! One trait over every placement algorithm of the crate, and the three alternatives to the
//! ring: jump consistent hash, weighted rendezvous hashing and Maglev.
//!
//! All four hash keys with the same [`KeyHasher`] and are built from the same [`Membership`],
//! so a head-to-head comparison measures the algorithms, not their hash functions.
//!
//! | | ring (160 vnodes) | jump | rendezvous (HRW) | Maglev |
//! |---|---|---|---|---|
//! | keys moved on add | ≈ 1/(n+1) (exactly the new node's share) | 1/(n+1), optimal | 1/(n+1), optimal | more: measured 1.6× the ideal at M/n ≈ 650, 6.7× at M/n ≈ 100 |
//! | arbitrary removal | yes, moves only its keys | **no**: only the last bucket; removing another renumbers buckets | yes, optimal | yes, with the same extra churn as on add |
//! | balance (peak/mean) | ≈ 1 + 3/√v (≈ 1.2–1.3 at v = 160) | ≈ 1.0 | ≈ 1.0 (binomial noise) | ≈ 1.0 (table entries differ by ≤ 1) |
//! | weights | via virtual-node counts | **none** | exact (logarithmic method) | via fill turns |
//! | memory | ≈ 19 B per vnode index (8 B record, 8 B position, 2–4 B prefix table) + tree | just the id list | ids + hashes + weights | one `u32` per table entry (M ≥ 100·n recommended) |
//! | lookup | O(1) expected (prefix table) | O(log n) | **O(n)** | O(1), one table read |
//! | preference lists | yes (walk clockwise) | no | yes (top N scores, O(n)) | no |
//!
//! Jump is the right choice when nodes are numbered shards that only grow or shrink at the end;
//! rendezvous when n is small and weights must be exact; Maglev for load balancers that rebuild
//! a table on change and want the fastest, most even lookup; the ring for everything that needs
//! arbitrary membership changes, preference lists, bounded loads and range-based migration.

use crate::error::Error;
use crate::hash::{KeyHasher, StableHash};
use crate::membership::{Membership, NodeId};
use crate::ring::Ring;

/// The common interface of the placement algorithms.
pub trait Placement<N: NodeId> {
    /// A short name for reports: `"ring"`, `"jump"`, `"rendezvous"`, `"maglev"`.
    fn algorithm(&self) -> &'static str;

    /// The hasher keys are placed with.
    fn hasher(&self) -> KeyHasher;

    /// The node owning a key of this hash; `None` only when there are no nodes.
    fn locate_hash(&self, key_hash: u64) -> Option<&N>;

    /// The node owning `key`; `None` only when there are no nodes.
    fn locate<K: StableHash + ?Sized>(&self, key: &K) -> Option<&N>
    where
        Self: Sized,
    {
        self.locate_hash(self.hasher().hash(key))
    }

    /// The number of nodes.
    fn node_count(&self) -> usize;

    /// Approximate heap bytes held (not counting the ids' own heap data).
    fn heap_bytes(&self) -> usize;
}

impl<N: NodeId> Placement<N> for Ring<N> {
    fn algorithm(&self) -> &'static str {
        "ring"
    }
    fn hasher(&self) -> KeyHasher {
        Ring::hasher(self)
    }
    #[inline]
    fn locate_hash(&self, key_hash: u64) -> Option<&N> {
        Ring::locate_hash(self, key_hash)
    }
    fn node_count(&self) -> usize {
        self.len()
    }
    fn heap_bytes(&self) -> usize {
        Ring::heap_bytes(self)
    }
}

/// Jump consistent hash (Lamping & Veach, 2014): maps a key to one of `n` numbered buckets with
/// no memory beyond the list of ids, moving exactly the optimal 1/(n+1) of keys when a bucket is
/// appended.
///
/// Buckets are the members in membership order. Only the **last** member can be removed without
/// moving other keys; removing another one renumbers every later bucket (measured by the
/// report). It has no weights: unequal weights are rejected with [`Error::WeightsUnsupported`].
#[derive(Clone, Debug)]
pub struct JumpHash<N> {
    hasher: KeyHasher,
    ids: Vec<N>,
}

impl<N: NodeId> JumpHash<N> {
    /// Builds from a membership (weights must all be equal).
    pub fn from_membership(membership: &Membership<N>) -> Result<Self, Error> {
        membership.validate()?;
        if !membership.weights_uniform() {
            return Err(Error::WeightsUnsupported { algorithm: "jump" });
        }
        Ok(Self {
            hasher: membership.config().hasher,
            ids: membership.members().iter().map(|m| m.id.clone()).collect(),
        })
    }
}

/// The bucket in `0..buckets` of a key hash (Lamping & Veach, Figure 1); `None` when `buckets`
/// is 0.
///
/// Its floating-point steps are IEEE-754 multiplications and divisions, exact and identical on
/// every platform Rust supports.
#[inline]
pub fn jump_bucket(key_hash: u64, buckets: u32) -> Option<u32> {
    if buckets == 0 {
        return None;
    }
    let mut key = key_hash;
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    Some(b as u32)
}

impl<N: NodeId> Placement<N> for JumpHash<N> {
    fn algorithm(&self) -> &'static str {
        "jump"
    }
    fn hasher(&self) -> KeyHasher {
        self.hasher
    }
    #[inline]
    fn locate_hash(&self, key_hash: u64) -> Option<&N> {
        let bucket = jump_bucket(key_hash, self.ids.len() as u32)?;
        self.ids.get(bucket as usize)
    }
    fn node_count(&self) -> usize {
        self.ids.len()
    }
    fn heap_bytes(&self) -> usize {
        self.ids.capacity() * std::mem::size_of::<N>()
    }
}

/// Weighted rendezvous (highest-random-weight) hashing (Thaler & Ravishankar, 1998), weights by
/// the logarithmic method (Schindelhauer & Schomaker, 2005): node `i` scores
/// `w_i / −ln(u_i)` with `u_i = hash(key_hash ‖ id_hash_i)` mapped into (0, 1), and the highest
/// score wins. Each node then receives exactly its weight share in expectation, and any change
/// moves only the keys that must move. The price is O(n) hashes per lookup.
///
/// When all weights are equal the score is the raw hash (`−ln` is monotone), skipping the
/// logarithm; ties go to the smaller id hash.
#[derive(Clone, Debug)]
pub struct Rendezvous<N> {
    hasher: KeyHasher,
    ids: Vec<N>,
    id_hashes: Vec<u64>,
    weights: Vec<f64>,
    uniform: bool,
}

impl<N: NodeId> Rendezvous<N> {
    /// Builds from a membership.
    pub fn from_membership(membership: &Membership<N>) -> Result<Self, Error> {
        membership.validate()?;
        let hasher = membership.config().hasher;
        let members = membership.members();
        Ok(Self {
            hasher,
            ids: members.iter().map(|m| m.id.clone()).collect(),
            id_hashes: members.iter().map(|m| hasher.hash(&m.id)).collect(),
            weights: members.iter().map(|m| m.weight).collect(),
            uniform: membership.weights_uniform(),
        })
    }

    /// The nodes ranked by score, best first, up to `count` (a preference list). Allocates a
    /// vector of `count` entries; O(n·count).
    pub fn ranked(&self, key_hash: u64, count: usize) -> Vec<&N> {
        let mut scored: Vec<(f64, u64, usize)> = (0..self.ids.len())
            .map(|i| (self.score(key_hash, i), self.id_hashes[i], i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored
            .into_iter()
            .take(count)
            .map(|(_, _, i)| &self.ids[i])
            .collect()
    }

    fn score(&self, key_hash: u64, i: usize) -> f64 {
        let h = self.hasher.hash_pair(key_hash, self.id_hashes[i]);
        if self.uniform {
            return h as f64;
        }
        // u in (0, 1): the top 53 bits, centred in their interval, never 0 or 1.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        self.weights[i] / -u.ln()
    }
}

impl<N: NodeId> Placement<N> for Rendezvous<N> {
    fn algorithm(&self) -> &'static str {
        "rendezvous"
    }
    fn hasher(&self) -> KeyHasher {
        self.hasher
    }
    fn locate_hash(&self, key_hash: u64) -> Option<&N> {
        if self.uniform {
            // Integer comparison; ties (equal 64-bit hashes) go to the smaller id hash.
            let mut best: Option<(u64, u64, usize)> = None;
            for (i, &id_hash) in self.id_hashes.iter().enumerate() {
                let h = self.hasher.hash_pair(key_hash, id_hash);
                let better = match best {
                    None => true,
                    Some((bh, bid, _)) => h > bh || (h == bh && id_hash < bid),
                };
                if better {
                    best = Some((h, id_hash, i));
                }
            }
            return best.map(|(_, _, i)| &self.ids[i]);
        }
        let mut best: Option<(f64, u64, usize)> = None;
        for i in 0..self.ids.len() {
            let s = self.score(key_hash, i);
            let id_hash = self.id_hashes[i];
            let better = match best {
                None => true,
                Some((bs, bid, _)) => s > bs || (s == bs && id_hash < bid),
            };
            if better {
                best = Some((s, id_hash, i));
            }
        }
        best.map(|(_, _, i)| &self.ids[i])
    }
    fn node_count(&self) -> usize {
        self.ids.len()
    }
    fn heap_bytes(&self) -> usize {
        self.ids.capacity() * std::mem::size_of::<N>()
            + self.id_hashes.capacity() * 8
            + self.weights.capacity() * 8
    }
}

/// The largest Maglev table accepted: 67 108 879 entries (a prime just above 2^26, 256 MiB of
/// `u32`). Far beyond need; the cap stops a typo from allocating gigabytes.
pub const MAGLEV_TABLE_SIZE_MAX: u64 = 67_108_879;
/// The smallest table [`Maglev::recommended_table_size`] returns (the paper's 65 537).
pub const MAGLEV_TABLE_SIZE_MIN_RECOMMENDED: u64 = 65_537;

const MAGLEV_OFFSET_TAG: u64 = 0x6d61_676c_6576_2d6f; // "maglev-o"
const MAGLEV_SKIP_TAG: u64 = 0x6d61_676c_6576_2d73; // "maglev-s"

/// Maglev hashing (Eisenbud et al., NSDI 2016): every node has a pseudo-random permutation of the
/// `M` table slots (`offset + j·skip mod M`, M prime), and nodes take turns claiming their next
/// free preferred slot until the table is full. Lookup is one table read. Node shares differ by
/// at most one entry (so balance is near perfect for M ≫ n); a membership change moves more
/// than the optimal fraction because the fill turns shift (the smaller M/n, the more). Weighted nodes take turns in proportion to
/// their weight.
///
/// The table size is a parameter: it must be prime and at least the number of nodes; the paper
/// recommends M ≥ 100·n (see [`Maglev::recommended_table_size`]). Building costs
/// O(M·log M) expected and M·4 bytes.
#[derive(Clone, Debug)]
pub struct Maglev<N> {
    hasher: KeyHasher,
    ids: Vec<N>,
    table: Vec<u32>,
}

impl<N: NodeId> Maglev<N> {
    /// Builds the lookup table of `table_size` entries for a membership.
    pub fn from_membership(membership: &Membership<N>, table_size: u64) -> Result<Self, Error> {
        membership.validate()?;
        let members = membership.members();
        let n = members.len();
        if table_size > MAGLEV_TABLE_SIZE_MAX || table_size < n as u64 || !is_prime(table_size) {
            return Err(Error::InvalidTableSize {
                table_size,
                nodes: n,
                max: MAGLEV_TABLE_SIZE_MAX,
            });
        }
        let hasher = membership.config().hasher;
        let ids: Vec<N> = members.iter().map(|m| m.id.clone()).collect();
        if n == 0 {
            return Ok(Self {
                hasher,
                ids,
                table: Vec::new(),
            });
        }
        let m = table_size;
        let (offsets, skips): (Vec<u64>, Vec<u64>) = members
            .iter()
            .map(|member| {
                let id_hash = hasher.hash(&member.id);
                let offset = hasher.hash_pair(id_hash, MAGLEV_OFFSET_TAG) % m;
                let skip = hasher.hash_pair(id_hash, MAGLEV_SKIP_TAG) % (m - 1) + 1;
                (offset, skip)
            })
            .unzip();
        let weight_max = members.iter().map(|m| m.weight).fold(0.0f64, f64::max);
        let turns: Vec<f64> = members.iter().map(|m| m.weight / weight_max).collect();
        let mut credit = vec![0.0f64; n];
        let mut next = vec![0u64; n];
        let mut table = vec![u32::MAX; m as usize];
        let mut filled = 0u64;
        'fill: loop {
            for i in 0..n {
                credit[i] += turns[i];
                while credit[i] >= 1.0 {
                    credit[i] -= 1.0;
                    // Claim the next free slot of node i's permutation. A permutation visits
                    // every slot (skip and M are coprime), and a free slot exists, so this ends.
                    loop {
                        let c = ((offsets[i] + next[i] * skips[i]) % m) as usize;
                        next[i] += 1;
                        if table[c] == u32::MAX {
                            table[c] = i as u32;
                            break;
                        }
                    }
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Ok(Self { hasher, ids, table })
    }

    /// The smallest prime ≥ max(100·nodes, 65 537), capped at [`MAGLEV_TABLE_SIZE_MAX`].
    pub fn recommended_table_size(nodes: usize) -> u64 {
        let mut m = (nodes as u64)
            .saturating_mul(100)
            .clamp(MAGLEV_TABLE_SIZE_MIN_RECOMMENDED, MAGLEV_TABLE_SIZE_MAX);
        while !is_prime(m) {
            m += 1;
        }
        m
    }

    /// The table size M.
    pub fn table_size(&self) -> usize {
        self.table.len()
    }
}

/// Trial division: table sizes are at most [`MAGLEV_TABLE_SIZE_MAX`], so at most ~4 100
/// divisions.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

impl<N: NodeId> Placement<N> for Maglev<N> {
    fn algorithm(&self) -> &'static str {
        "maglev"
    }
    fn hasher(&self) -> KeyHasher {
        self.hasher
    }
    #[inline]
    fn locate_hash(&self, key_hash: u64) -> Option<&N> {
        if self.table.is_empty() {
            return None;
        }
        // Multiply-shift instead of `%`: maps the hash uniformly onto 0..M without a division.
        let slot = ((u128::from(key_hash) * self.table.len() as u128) >> 64) as usize;
        self.ids.get(self.table[slot] as usize)
    }
    fn node_count(&self) -> usize {
        self.ids.len()
    }
    fn heap_bytes(&self) -> usize {
        self.ids.capacity() * std::mem::size_of::<N>() + self.table.capacity() * 4
    }
}
