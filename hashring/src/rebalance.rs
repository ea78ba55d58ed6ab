//! Rebalancing: which hash ranges a node owns, and which ranges move between two rings.
//!
//! A storage layer that keeps keys sorted by hash (or can scan by hash) migrates exactly the
//! keys in the ranges [`diff`] returns, from the old owner to the new one, and nothing else.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::membership::{Membership, NodeId};
use crate::ring::Ring;

/// An arc of the hash circle: the hashes `h` with `start < h <= end`, going clockwise and
/// wrapping past `u64::MAX` to 0 when `start >= end`. `start == end` is the whole circle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashRange {
    /// Exclusive start.
    pub start: u64,
    /// Inclusive end.
    pub end: u64,
}

impl HashRange {
    /// Whether the arc contains `hash`.
    #[inline]
    pub fn contains(&self, hash: u64) -> bool {
        if self.start < self.end {
            self.start < hash && hash <= self.end
        } else {
            hash > self.start || hash <= self.end
        }
    }

    /// The number of hashes in the arc (2^64 for the whole circle).
    pub fn len(&self) -> u128 {
        if self.start == self.end {
            1u128 << 64
        } else {
            u128::from(self.end.wrapping_sub(self.start))
        }
    }

    /// Always false: an arc holds at least one hash.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The fraction of the circle the arc covers.
    pub fn fraction(&self) -> f64 {
        self.len() as f64 / 18_446_744_073_709_551_616.0
    }
}

/// A range whose owner changes: its keys must move `from` → `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeMove<N> {
    /// The moving keys' hashes.
    pub range: HashRange,
    /// The owner in the old ring.
    pub from: N,
    /// The owner in the new ring.
    pub to: N,
}

impl<N: NodeId> Ring<N> {
    /// The arcs `id` owns, adjacent arcs merged, clockwise from the lowest position. Empty when
    /// `id` is not a member (or owns only empty arcs after position collisions).
    pub fn owned_ranges(&self, id: &N) -> Vec<HashRange> {
        let Some(slot) = self.slot_of(id) else {
            return Vec::new();
        };
        let index = self.index();
        let len = index.positions.len();
        let mut ranges: Vec<HashRange> = Vec::new();
        for i in 0..len {
            if index.owner_at(i) != slot {
                continue;
            }
            let prev = index.positions[(i + len - 1) % len];
            let end = index.positions[i];
            if prev == end && len > 1 {
                continue; // an empty arc: a position collision lost to another entry
            }
            match ranges.last_mut() {
                Some(last) if last.end == prev => last.end = end,
                _ => ranges.push(HashRange { start: prev, end }),
            }
        }
        // The wrapping arc may continue the first one.
        if ranges.len() > 1 {
            let first = ranges[0];
            if let Some(last) = ranges.last_mut() {
                if last.end == first.start {
                    last.end = first.end;
                    ranges.remove(0);
                }
            }
        }
        ranges
    }
}

/// The ranges whose owner differs between `old` and `new`, with both owners, adjacent moves of
/// the same pair merged, in clockwise order. O((k₁ + k₂)·log) for rings of k₁ and k₂ virtual
/// nodes. Empty if either ring is empty (there is nothing to move from, or nowhere to move to).
///
/// Both rings must use the same hasher seed, or [`Error::HasherMismatch`].
pub fn diff<N: NodeId>(old: &Ring<N>, new: &Ring<N>) -> Result<Vec<RangeMove<N>>, Error> {
    let (left, right) = (old.hasher().seed(), new.hasher().seed());
    if left != right {
        return Err(Error::HasherMismatch { left, right });
    }
    if old.is_empty() || new.is_empty() {
        return Ok(Vec::new());
    }
    // Every boundary of either ring; between two consecutive boundaries both owners are
    // constant, and the owner of an arc (a, b] is the owner of its end point b.
    let (a, b) = (&old.index().positions, &new.index().positions);
    let mut bounds = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = if j >= b.len() || (i < a.len() && a[i] <= b[j]) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        if bounds.last() != Some(&next) {
            bounds.push(next);
        }
    }
    let mut moves: Vec<RangeMove<N>> = Vec::new();
    let count = bounds.len();
    for k in 0..count {
        let start = bounds[(k + count - 1) % count];
        let end = bounds[k];
        let (Some(from), Some(to)) = (old.locate_hash(end), new.locate_hash(end)) else {
            continue;
        };
        if from == to {
            continue;
        }
        match moves.last_mut() {
            Some(last) if last.range.end == start && &last.from == from && &last.to == to => {
                last.range.end = end;
            }
            _ => moves.push(RangeMove {
                range: HashRange { start, end },
                from: from.clone(),
                to: to.clone(),
            }),
        }
    }
    if moves.len() > 1 {
        let first = moves[0].clone();
        if let Some(last) = moves.last_mut() {
            if last.range.end == first.range.start && last.from == first.from && last.to == first.to
            {
                last.range.end = first.range.end;
                moves.remove(0);
            }
        }
    }
    Ok(moves)
}

/// [`diff`] of the rings two memberships describe (for example the memberships of two
/// consecutive entries of a replicated log).
///
/// ```
/// use hashring::{diff_memberships, Member, Membership};
///
/// let mut old = Membership::new();
/// for id in 0..3u64 { old.add(Member::new(id))?; }
/// let mut new = old.clone();
/// new.remove(&1)?;
/// let moves = diff_memberships(&old, &new)?;
/// assert!(moves.iter().all(|m| m.from == 1 && m.to != 1)); // only node 1's ranges move
/// # Ok::<(), hashring::Error>(())
/// ```
pub fn diff_memberships<N: NodeId>(
    old: &Membership<N>,
    new: &Membership<N>,
) -> Result<Vec<RangeMove<N>>, Error> {
    diff(&Ring::from_membership(old)?, &Ring::from_membership(new)?)
}
