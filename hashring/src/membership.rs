//! Who is in the cluster: members with weights and zones, the ring's parameters, and a version.
//!
//! A [`Membership`] is plain, serde-serializable data. It fully determines placement: every
//! algorithm of the crate builds the same structure from the same membership in every process,
//! so a consensus log (Raft, Paxos) can replicate the membership and each replica derives the
//! ring locally. The version number grows by one with every change, so replicas can tell which
//! of two memberships is newer and a storage layer can tag migrations with it.
//!
//! Deserialization validates (duplicate ids, bad weights, limits): bytes from the network or
//! disk cannot produce a membership that would build a broken ring.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::hash::{KeyHasher, StableHash};

/// The most members a membership (and so a ring) may have.
pub const MEMBERS_MAX: usize = 1 << 16;
/// The most virtual nodes one node may have.
pub const VNODES_PER_NODE_MAX: u32 = 1 << 16;
/// The longest zone name, in bytes.
pub const ZONE_NAME_BYTES_MAX: usize = 255;
/// Virtual nodes per unit of weight unless configured otherwise: 160, the figure long used by
/// Ketama-style rings, which gives a peak-to-mean load of roughly 1.2–1.3 at 100 nodes.
pub const DEFAULT_VNODES_PER_WEIGHT: f64 = 160.0;

/// What node ids must be: cloneable, comparable, usable as a `HashMap` key, and stably hashable.
///
/// Implemented for every type with these traits (`u64`, `String`, `SocketAddr`, your own types
/// with a [`StableHash`] implementation).
pub trait NodeId: Clone + Eq + std::hash::Hash + StableHash {}
impl<T: Clone + Eq + std::hash::Hash + StableHash> NodeId for T {}

/// The parameters that, with the members, determine placement.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingConfig {
    /// The hash (and its seed) used for keys and virtual-node positions.
    pub hasher: KeyHasher,
    /// Virtual nodes per unit of weight, for members that do not give an explicit count:
    /// `vnodes = round(weight × vnodes_per_weight)`.
    pub vnodes_per_weight: f64,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            hasher: KeyHasher::default(),
            vnodes_per_weight: DEFAULT_VNODES_PER_WEIGHT,
        }
    }
}

impl RingConfig {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), Error> {
        let value = self.vnodes_per_weight;
        if !value.is_finite() || value <= 0.0 {
            return Err(Error::InvalidVnodesPerWeight { value });
        }
        Ok(())
    }
}

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member<N> {
    /// The node's id.
    pub id: N,
    /// Its relative capacity (1.0 by default). Rendezvous and Maglev use it directly; the ring
    /// turns it into virtual nodes unless [`Member::vnodes`] is set; jump hash requires all
    /// weights equal.
    pub weight: f64,
    /// An explicit number of virtual nodes on the ring, overriding the weight-derived count.
    pub vnodes: Option<u32>,
    /// The zone (rack, availability zone) it runs in, for zone-aware preference lists. A node
    /// without a zone counts as a zone of its own.
    pub zone: Option<String>,
}

impl<N> Member<N> {
    /// A member of weight 1, no explicit virtual-node count, no zone.
    pub fn new(id: N) -> Self {
        Self {
            id,
            weight: 1.0,
            vnodes: None,
            zone: None,
        }
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Sets an explicit virtual-node count.
    pub fn with_vnodes(mut self, vnodes: u32) -> Self {
        self.vnodes = Some(vnodes);
        self
    }

    /// Sets the zone.
    pub fn in_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Checks the member on its own (weight, virtual nodes, zone name) under `config`, and
    /// returns its number of virtual nodes on the ring.
    pub fn vnode_count(&self, config: &RingConfig) -> Result<u32, Error> {
        config.validate()?;
        let weight = self.weight;
        if !weight.is_finite() || weight <= 0.0 {
            return Err(Error::InvalidWeight { weight });
        }
        if let Some(zone) = &self.zone {
            if zone.len() > ZONE_NAME_BYTES_MAX {
                return Err(Error::ZoneNameTooLong {
                    len: zone.len(),
                    max: ZONE_NAME_BYTES_MAX,
                });
            }
        }
        let vnodes = match self.vnodes {
            Some(0) => return Err(Error::ZeroVirtualNodes),
            Some(v) => u64::from(v),
            None => {
                let derived = (weight * config.vnodes_per_weight).round();
                if derived < 1.0 {
                    return Err(Error::WeightTooSmall {
                        weight,
                        vnodes_per_weight: config.vnodes_per_weight,
                    });
                }
                // Saturating float-to-int cast: anything above the limit is rejected below.
                derived.min(u64::MAX as f64) as u64
            }
        };
        if vnodes > u64::from(VNODES_PER_NODE_MAX) {
            return Err(Error::TooManyVirtualNodes {
                vnodes,
                max: u64::from(VNODES_PER_NODE_MAX),
            });
        }
        Ok(vnodes as u32)
    }
}

/// The members of a cluster, the ring parameters, and a version that grows with every change.
///
/// ```
/// use hashring::{Member, Membership};
///
/// let mut m = Membership::new();
/// m.add(Member::new("a".to_string()))?;
/// m.add(Member::new("b".to_string()).with_weight(2.0).in_zone("eu-1"))?;
/// assert_eq!(m.version(), 2);
/// assert!(m.add(Member::new("a".to_string())).is_err()); // duplicate: rejected, version unchanged
/// assert_eq!(m.version(), 2);
/// # Ok::<(), hashring::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    try_from = "MembershipWire<N>",
    into = "MembershipWire<N>",
    bound(
        serialize = "N: NodeId + Serialize",
        deserialize = "N: NodeId + Deserialize<'de>"
    )
)]
pub struct Membership<N: NodeId> {
    version: u64,
    config: RingConfig,
    members: Vec<Member<N>>,
}

/// The unvalidated wire form; `Membership`'s `Deserialize` goes through `validate`.
#[derive(Serialize, Deserialize)]
struct MembershipWire<N> {
    version: u64,
    config: RingConfig,
    members: Vec<Member<N>>,
}

impl<N: NodeId> TryFrom<MembershipWire<N>> for Membership<N> {
    type Error = Error;

    fn try_from(wire: MembershipWire<N>) -> Result<Self, Error> {
        let membership = Membership {
            version: wire.version,
            config: wire.config,
            members: wire.members,
        };
        membership.validate()?;
        Ok(membership)
    }
}

impl<N: NodeId> From<Membership<N>> for MembershipWire<N> {
    fn from(m: Membership<N>) -> Self {
        MembershipWire {
            version: m.version,
            config: m.config,
            members: m.members,
        }
    }
}

impl<N: NodeId> Default for Membership<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<N: NodeId> Membership<N> {
    /// An empty membership, version 0, default [`RingConfig`].
    pub fn new() -> Self {
        Self::with_config(RingConfig::default())
    }

    /// An empty membership with the given parameters. They are checked when the first member is
    /// added (and by [`Membership::validate`]).
    pub fn with_config(config: RingConfig) -> Self {
        Self {
            version: 0,
            config,
            members: Vec::new(),
        }
    }

    /// A membership of `members` (version = number of members), validated.
    pub fn from_members(
        config: RingConfig,
        members: impl IntoIterator<Item = Member<N>>,
    ) -> Result<Self, Error> {
        let members: Vec<Member<N>> = members.into_iter().collect();
        let membership = Self {
            version: members.len() as u64,
            config,
            members,
        };
        membership.validate()?;
        Ok(membership)
    }

    pub(crate) fn from_parts(version: u64, config: RingConfig, members: Vec<Member<N>>) -> Self {
        Self {
            version,
            config,
            members,
        }
    }

    /// The version: 0 when empty and new, +1 per successful `add` or `remove`.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The ring parameters.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// The members, in the order they were added (jump hash numbers its buckets in this order).
    pub fn members(&self) -> &[Member<N>] {
        &self.members
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member with this id.
    pub fn get(&self, id: &N) -> Option<&Member<N>> {
        self.members.iter().find(|m| &m.id == id)
    }

    /// Adds a member after checking it; returns the new version.
    pub fn add(&mut self, member: Member<N>) -> Result<u64, Error> {
        member.vnode_count(&self.config)?;
        if self.members.len() >= MEMBERS_MAX {
            return Err(Error::TooManyNodes { max: MEMBERS_MAX });
        }
        if self.get(&member.id).is_some() {
            return Err(Error::DuplicateNode);
        }
        let id_hash = self.config.hasher.hash(&member.id);
        if self
            .members
            .iter()
            .any(|m| self.config.hasher.hash(&m.id) == id_hash)
        {
            return Err(Error::NodeIdHashCollision { id_hash });
        }
        self.members.push(member);
        self.version += 1;
        Ok(self.version)
    }

    /// Removes a member (keeping the order of the others); returns it.
    pub fn remove(&mut self, id: &N) -> Result<Member<N>, Error> {
        let index = self
            .members
            .iter()
            .position(|m| &m.id == id)
            .ok_or(Error::NodeNotFound)?;
        self.version += 1;
        Ok(self.members.remove(index))
    }

    /// Checks everything: parameters, each member, duplicates, id-hash collisions, limits.
    pub fn validate(&self) -> Result<(), Error> {
        self.config.validate()?;
        if self.members.len() > MEMBERS_MAX {
            return Err(Error::TooManyNodes { max: MEMBERS_MAX });
        }
        let mut ids = HashSet::with_capacity(self.members.len());
        let mut id_hashes = HashSet::with_capacity(self.members.len());
        for member in &self.members {
            member.vnode_count(&self.config)?;
            if !ids.insert(&member.id) {
                return Err(Error::DuplicateNode);
            }
            let id_hash = self.config.hasher.hash(&member.id);
            if !id_hashes.insert(id_hash) {
                return Err(Error::NodeIdHashCollision { id_hash });
            }
        }
        Ok(())
    }

    /// Whether all members have the same weight (jump hash needs this).
    pub fn weights_uniform(&self) -> bool {
        self.members
            .windows(2)
            .all(|pair| pair[0].weight == pair[1].weight)
    }
}
