//! The fast lookup path against a straightforward reference implementation.
//!
//! Property: for every membership and every key, [`Ring::locate_hash`], the plain and the
//! zone-aware preference lists (short lists, which the ring reads from its precomputed
//! distinct-owner records, and longer ones, which walk the ring) give exactly the answers of a
//! reference that keeps all virtual nodes in one sorted `Vec`, binary-searches it and walks it
//! node by node. Keys include random hashes and hashes at, just before and just after virtual
//! node positions (where the index compares truncated positions and must fall back to the full
//! ones).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use hashring::*;
use proptest::prelude::*;

/// The zone a reference node counts in: its zone name, or the node itself.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Zone {
    Named(String),
    Own(u64),
}

/// All virtual nodes in ring order: `(position, id_hash, vnode)` with the owner and its zone.
struct Reference {
    vnodes: Vec<((u64, u64, u32), u64, Zone)>,
}

impl Reference {
    fn new(members: &[Member<u64>]) -> Self {
        let hasher = KeyHasher::default();
        let config = RingConfig::default();
        let mut vnodes = Vec::new();
        for m in members {
            let id_hash = hasher.hash(&m.id);
            let zone = m.zone.clone().map_or(Zone::Own(m.id), Zone::Named);
            for v in 0..m.vnode_count(&config).unwrap() {
                let position = hasher.hash_pair(id_hash, u64::from(v));
                vnodes.push(((position, id_hash, v), m.id, zone.clone()));
            }
        }
        vnodes.sort_by_key(|e| e.0);
        Self { vnodes }
    }

    fn positions(&self) -> impl Iterator<Item = u64> + '_ {
        self.vnodes.iter().map(|e| e.0 .0)
    }

    /// The walk: every virtual node's owner and zone, one full turn from the key's successor.
    fn walk(&self, hash: u64) -> impl Iterator<Item = (u64, &Zone)> + '_ {
        let len = self.vnodes.len();
        let start = if len == 0 {
            0
        } else {
            self.vnodes.partition_point(|e| e.0 .0 < hash) % len
        };
        (0..len).map(move |s| {
            let e = &self.vnodes[(start + s) % len];
            (e.1, &e.2)
        })
    }

    fn locate(&self, hash: u64) -> Option<u64> {
        self.walk(hash).next().map(|(id, _)| id)
    }

    fn preference_list(&self, hash: u64, count: usize) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for (id, _) in self.walk(hash) {
            if out.len() == count {
                break;
            }
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// One node per zone in clockwise order of first occurrence, then the other nodes in
    /// clockwise order.
    fn preference_list_zoned(&self, hash: u64, count: usize) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        let mut zones: Vec<Zone> = Vec::new();
        for (id, zone) in self.walk(hash) {
            if out.len() == count {
                return out;
            }
            if !zones.contains(zone) {
                zones.push(zone.clone());
                out.push(id);
            }
        }
        for (id, _) in self.walk(hash) {
            if out.len() == count {
                break;
            }
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }
}

/// Members with distinct ids, 1 to 200 virtual nodes, and (for some) one of a few zones.
fn members(max: usize) -> impl Strategy<Value = Vec<Member<u64>>> {
    proptest::collection::btree_map(any::<u64>(), (1u32..200, prop::option::of(0u8..4)), 1..=max)
        .prop_map(|m| {
            m.into_iter()
                .map(|(id, (vnodes, zone))| {
                    let member = Member::new(id).with_vnodes(vnodes);
                    match zone {
                        Some(z) => member.in_zone(format!("zone-{z}")),
                        None => member,
                    }
                })
                .collect()
        })
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn check(ring: &Ring<u64>, reference: &Reference, hashes: &[u64]) -> Result<(), TestCaseError> {
    for &h in hashes {
        prop_assert_eq!(
            ring.locate_hash(h).copied(),
            reference.locate(h),
            "key {:#x}",
            h
        );
        for count in 1..=PREFERENCE_TABLE_LEN + 2 {
            let got: Vec<u64> = ring.preference_list_hash(h, count).copied().collect();
            prop_assert_eq!(
                got,
                reference.preference_list(h, count),
                "key {:#x}, {} nodes",
                h,
                count
            );
            let got: Vec<u64> = ring.preference_list_zoned_hash(h, count).copied().collect();
            prop_assert_eq!(
                got,
                reference.preference_list_zoned(h, count),
                "zoned key {:#x}, {} nodes",
                h,
                count
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Built from a membership, or incrementally with unrelated nodes added and removed on the
    /// way, the ring answers exactly as the reference for random keys and for keys at, next to
    /// and sharing the leading bits of virtual-node positions.
    #[test]
    fn fast_path_matches_the_reference(
        members in members(40),
        noise in members(4),
        random in proptest::collection::vec(any::<u64>(), 200),
        sample in proptest::collection::vec(any::<prop::sample::Index>(), 60),
    ) {
        let reference = Reference::new(&members);
        let positions: Vec<u64> = reference.positions().collect();
        let mut hashes = random;
        for i in sample {
            let p = positions[i.index(positions.len())];
            // Equal, neighbouring, and equal except in the low bits a record does not keep.
            hashes.extend([p, p.wrapping_sub(1), p.wrapping_add(1), p ^ 0xffff, p & !0xffff_ffff]);
        }
        hashes.extend([0, u64::MAX]);

        let membership = Membership::from_members(RingConfig::default(), members.clone()).unwrap();
        check(&Ring::from_membership(&membership).unwrap(), &reference, &hashes)?;

        let mut ring = Ring::new();
        let extra: Vec<&Member<u64>> =
            noise.iter().filter(|n| members.iter().all(|m| m.id != n.id)).collect();
        for n in &extra {
            ring.add((*n).clone()).unwrap();
        }
        for m in members.iter().rev() {
            ring.add(m.clone()).unwrap();
            let _ = ring.locate_hash(0); // an index built mid-way must be rebuilt after changes
        }
        for n in &extra {
            ring.remove(&n.id).unwrap();
        }
        check(&ring, &reference, &hashes)?;
    }
}
