//! Consistent hashing: a ring with virtual nodes, weights, preference lists, bounded loads and
//! range-based rebalancing, plus jump consistent hash, rendezvous and Maglev behind one trait.
//!
//! # Guarantees
//!
//! * **Every process agrees.** Keys and virtual nodes are hashed with XXH3-64 and a fixed seed
//!   ([`DEFAULT_SEED`]) over fixed byte encodings ([`StableHash`]); the same [`Membership`]
//!   gives the same placement on every platform and in every release (the tests commit vectors
//!   of (membership, key) → node for every algorithm). Position collisions are broken by the
//!   node id's hash, so insertion order never matters.
//! * **Monotone.** Adding a node to a [`Ring`] moves keys only *to* that node; removing a node
//!   moves only *its* keys. The same holds for rendezvous and (appending only) jump.
//! * **Never a panic, never a silently broken ring.** An empty structure answers `None`. Bad
//!   input — weights of zero, NaN or infinity, zero virtual nodes, duplicate ids, ε ≤ 0, a
//!   non-prime Maglev table — is a typed [`Error`], and the structure is left unchanged.
//!   Deserializing a [`Membership`] validates it.
//! * **Bounded.** [`BoundedLoads`] never gives a node more than `⌈(1 + ε)·m/n⌉` of `m` keys.
//! * **Allocation-free lookups.** [`Ring::locate`] and the [`PreferenceList`] iterator do not
//!   allocate; lookup is O(1) expected (a prefix table over compact records in ring order), and
//!   a preference list of up to [`PREFERENCE_TABLE_LEN`] nodes costs one lookup (each record
//!   lists its first distinct owners). The fast path is checked against a plain sorted-array
//!   implementation by a property test.
//! * **Incremental.** [`Ring::add`] and [`Ring::remove`] cost O(v·log k) for `v` virtual nodes
//!   of a ring of `k`; the lookup index is rebuilt (O(k)) on the first lookup after a change.
//!
//! # Tutorial
//!
//! A ring of three nodes, each with 160 virtual nodes (weight 1):
//!
//! ```
//! use hashring::Ring;
//!
//! let mut ring: Ring<String> = Ring::new();
//! assert_eq!(ring.locate("user:42"), None); // empty ring: no owner, no panic
//! for name in ["a", "b", "c"] {
//!     ring.add_node(name.to_string())?;
//! }
//! let owner = ring.locate("user:42").cloned();
//! assert!(owner.is_some());
//!
//! // Adding a node moves keys only to it.
//! ring.add_node("d".to_string())?;
//! let now = ring.locate("user:42").cloned();
//! assert!(now == owner || now.as_deref() == Some("d"));
//! # Ok::<(), hashring::Error>(())
//! ```
//!
//! Weights, explicit virtual-node counts and zones come with a [`Member`]. Bad input is a typed
//! error and changes nothing:
//!
//! ```
//! use hashring::{Error, Member, Ring};
//!
//! let mut ring: Ring<u64> = Ring::new();
//! ring.add(Member::new(1).with_weight(2.0).in_zone("eu-1"))?; // 320 virtual nodes
//! ring.add(Member::new(2).with_vnodes(100).in_zone("eu-2"))?;
//! assert_eq!(ring.vnodes_of(&1), Some(320));
//! assert!(matches!(ring.add(Member::new(3).with_weight(f64::NAN)), Err(Error::InvalidWeight { .. })));
//! assert_eq!(ring.add(Member::new(3).with_vnodes(0)), Err(Error::ZeroVirtualNodes));
//! assert_eq!(ring.add_node(1), Err(Error::DuplicateNode));
//! assert_eq!(ring.len(), 2);
//! # Ok::<(), hashring::Error>(())
//! ```
//!
//! ## Replicas: preference lists
//!
//! Dynamo stores a key on the first N *distinct* nodes clockwise from it. The iterator does not
//! allocate; the zone-aware variant first takes one node per zone:
//!
//! ```
//! use hashring::{Member, Ring};
//!
//! let mut ring: Ring<u64> = Ring::new();
//! for id in 0..6u64 {
//!     ring.add(Member::new(id).in_zone(format!("zone-{}", id % 3)))?;
//! }
//! let replicas: Vec<u64> = ring.preference_list(&"photo.jpg", 3).copied().collect();
//! assert_eq!(replicas.len(), 3);
//! assert_eq!(replicas[0], *ring.locate(&"photo.jpg").unwrap());
//!
//! let spread: Vec<u64> = ring.preference_list_zoned(&"photo.jpg", 3).copied().collect();
//! let mut zones: Vec<u64> = spread.iter().map(|id| id % 3).collect();
//! zones.sort();
//! assert_eq!(zones, [0, 1, 2]); // one replica per zone
//! # Ok::<(), hashring::Error>(())
//! ```
//!
//! ## Bounded loads
//!
//! With [`BoundedLoads`] no node takes more than `⌈(1 + ε)·m/n⌉` of `m` keys; a key whose node
//! is full goes on clockwise (see the [`bounded`] module for the paper's results).
//!
//! ## Membership and rebalancing
//!
//! A [`Membership`] is versioned, serde-serializable data that determines placement, so a
//! consensus log can replicate it. [`diff`] lists the hash ranges that change owner between two
//! rings ([`diff_memberships`] between two memberships), and [`Ring::owned_ranges`] the ranges a
//! node holds:
//!
//! ```
//! use hashring::{diff, Member, Membership, Ring};
//!
//! let mut m = Membership::new();
//! for id in 0..4u64 { m.add(Member::new(id))?; }
//! let before = Ring::from_membership(&m)?;
//! m.add(Member::new(4))?;
//! let after = Ring::from_membership(&m)?;
//! assert_eq!(after.version(), 5);
//!
//! let moves = diff(&before, &after)?;
//! assert!(moves.iter().all(|mv| mv.to == 4)); // only the new node receives
//! let moved: f64 = moves.iter().map(|mv| mv.range.fraction()).sum();
//! let owned: f64 = after.owned_ranges(&4).iter().map(|r| r.fraction()).sum();
//! assert!((moved - owned).abs() < 1e-9); // and it receives exactly what it now owns
//! # Ok::<(), hashring::Error>(())
//! ```
//!
//! ## The alternatives
//!
//! [`JumpHash`], [`Rendezvous`] and [`Maglev`] implement [`Placement`] like [`Ring`], built from
//! the same membership and hasher. The [`placement`] module documents their trade-offs
//! (movement, balance, memory, lookup cost, arbitrary removal) in one table.
//!
//! ```
//! use hashring::{JumpHash, Maglev, Member, Membership, Placement, Rendezvous, Ring};
//!
//! let m = Membership::from_members(Default::default(), (0..10u64).map(Member::new))?;
//! let algorithms: Vec<Box<dyn Placement<u64>>> = vec![
//!     Box::new(Ring::from_membership(&m)?),
//!     Box::new(JumpHash::from_membership(&m)?),
//!     Box::new(Rendezvous::from_membership(&m)?),
//!     Box::new(Maglev::from_membership(&m, Maglev::<u64>::recommended_table_size(10))?),
//! ];
//! for a in &algorithms {
//!     let h = a.hasher().hash(&"key");
//!     assert!(a.locate_hash(h).is_some(), "{}", a.algorithm());
//! }
//! # Ok::<(), hashring::Error>(())
//! ```
//!
//! Measured performance is in the crate's `README.md`.
//!
//! # Runnable example
//!
//! `cargo run -p hashring --example file_placement`: files on storage nodes with three replicas
//! each; adding and removing a node prints exactly which files move, and only those move.

pub mod bounded;
mod error;
mod hash;
mod membership;
pub mod placement;
mod rebalance;
mod ring;

pub use bounded::BoundedLoads;
pub use error::Error;
pub use hash::{KeyHasher, StableHash, DEFAULT_SEED};
pub use membership::{
    Member, Membership, NodeId, RingConfig, DEFAULT_VNODES_PER_WEIGHT, MEMBERS_MAX,
    VNODES_PER_NODE_MAX, ZONE_NAME_BYTES_MAX,
};
pub use placement::{
    jump_bucket, JumpHash, Maglev, Placement, Rendezvous, MAGLEV_TABLE_SIZE_MAX,
    MAGLEV_TABLE_SIZE_MIN_RECOMMENDED,
};
pub use rebalance::{diff, diff_memberships, HashRange, RangeMove};
pub use ring::{
    PreferenceList, Ring, PREFERENCE_INLINE_MAX, PREFERENCE_TABLE_LEN, RING_VNODES_MAX,
};
