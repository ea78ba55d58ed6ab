//! Determinism and bad input.
//!
//! Property: placement is a pure function of (membership, key), identical in every process,
//! platform and release. The vectors below were computed once and committed; a change to the
//! hash, the seed, the byte encodings, the virtual-node derivation or any algorithm fails here.
//!
//! Property: bad input is a typed error and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use hashring::*;

fn ids() -> Vec<String> {
    (0..5).map(|i| format!("node-{i}")).collect()
}

fn uniform() -> Membership<String> {
    Membership::from_members(RingConfig::default(), ids().into_iter().map(Member::new)).unwrap()
}

fn weighted() -> Membership<String> {
    let weights = [1.0, 1.0, 2.0, 1.0, 0.5];
    Membership::from_members(
        RingConfig::default(),
        ids()
            .into_iter()
            .zip(weights)
            .map(|(id, w)| Member::new(id).with_weight(w)),
    )
    .unwrap()
}

fn keys() -> Vec<String> {
    (0..12).map(|i| format!("key-{i}")).collect()
}

/// Node indexes (into `ids()`) chosen for `keys()`.
fn placements(a: &dyn Placement<String>) -> Vec<usize> {
    let ids = ids();
    keys()
        .iter()
        .map(|k| {
            let owner = a.locate_hash(a.hasher().hash(k)).unwrap();
            ids.iter().position(|id| id == owner).unwrap()
        })
        .collect()
}

#[test]
fn xxh3_is_the_reference_algorithm_and_the_seed_is_pinned() {
    // The published XXH3-64 value of the empty input with seed 0: proves the hash is standard
    // XXH3, not a look-alike.
    assert_eq!(
        KeyHasher::with_seed(0).hash_bytes(b""),
        0x2d06_8005_38d3_94c2
    );
    assert_eq!(DEFAULT_SEED, 0x6861_7368_7269_6e67);
    let h = KeyHasher::default();
    assert_eq!(h.hash(""), 0x8c34_0746_bfcc_2f40);
    assert_eq!(h.hash("a"), 0xd9d7_f9b5_300e_3583);
    assert_eq!(h.hash("hashring"), 0x0a2a_1eac_1ec2_041c);
    assert_eq!(h.hash("user:42"), 0x0668_f639_75ec_f99f);
    assert_eq!(h.hash(&0u64), 0xff53_3bc8_2d8c_6a99);
    assert_eq!(h.hash(&1u64), 0xd2da_9538_edaf_1acf);
    assert_eq!(h.hash(&42u64), 0xbaf1_979c_529a_0695);
    assert_eq!(h.hash(&u64::MAX), 0x5787_99a8_cdfc_74f2);
    assert_eq!(h.hash_pair(1, 2), 0x2064_9443_5823_42f3);
    // Integer widths hash alike; String and &str alike.
    assert_eq!(h.hash(&42u32), h.hash(&42u64));
    assert_eq!(h.hash(&-1i32), h.hash(&-1i64));
    assert_eq!(h.hash(&"x".to_string()), h.hash("x"));
}

#[test]
fn ring_vectors() {
    let ring = Ring::from_membership(&uniform()).unwrap();
    assert_eq!(placements(&ring), [2, 2, 2, 3, 3, 0, 4, 3, 3, 2, 4, 1]);
    let ring = Ring::from_membership(&weighted()).unwrap();
    assert_eq!(placements(&ring), [2, 2, 2, 3, 2, 0, 4, 3, 3, 2, 4, 1]);
}

#[test]
fn ring_built_incrementally_in_any_order_matches_the_vectors() {
    let ids = ids();
    let mut ring = Ring::new();
    for i in [3, 0, 4, 1, 2] {
        ring.add_node(ids[i].clone()).unwrap();
    }
    assert_eq!(placements(&ring), [2, 2, 2, 3, 3, 0, 4, 3, 3, 2, 4, 1]);
}

#[test]
fn preference_list_vectors() {
    let ring = Ring::from_membership(&uniform()).unwrap();
    let ids = ids();
    let expected = [[2, 3, 0], [2, 4, 1], [2, 3, 0], [3, 4, 2]];
    for (key, want) in keys().iter().zip(expected) {
        let got: Vec<usize> = ring
            .preference_list(key, 3)
            .map(|n| ids.iter().position(|id| id == n).unwrap())
            .collect();
        assert_eq!(got, want, "{key}");
    }
}

#[test]
fn jump_vectors() {
    let jump = JumpHash::from_membership(&uniform()).unwrap();
    assert_eq!(placements(&jump), [4, 1, 2, 1, 2, 1, 4, 0, 3, 3, 2, 3]);
    let h = KeyHasher::default().hash(&42u64);
    assert_eq!(
        [1, 10, 100, 1000].map(|b| jump_bucket(h, b)),
        [Some(0), Some(2), Some(59), Some(708)]
    );
    assert_eq!(jump_bucket(h, 0), None);
}

#[test]
fn rendezvous_vectors() {
    let hrw = Rendezvous::from_membership(&uniform()).unwrap();
    assert_eq!(placements(&hrw), [2, 0, 0, 4, 1, 2, 4, 1, 2, 2, 1, 3]);
    let hrw = Rendezvous::from_membership(&weighted()).unwrap();
    assert_eq!(placements(&hrw), [2, 0, 0, 4, 1, 2, 0, 1, 2, 2, 1, 3]);
}

#[test]
fn maglev_vectors() {
    let maglev = Maglev::from_membership(&uniform(), 65_537).unwrap();
    assert_eq!(placements(&maglev), [3, 3, 2, 1, 1, 0, 4, 2, 0, 0, 0, 3]);
    let maglev = Maglev::from_membership(&weighted(), 65_537).unwrap();
    assert_eq!(placements(&maglev), [3, 2, 2, 1, 2, 0, 4, 2, 0, 0, 0, 2]);
}

#[test]
fn empty_structures_answer_none() {
    let empty: Membership<u64> = Membership::new();
    let ring = Ring::from_membership(&empty).unwrap();
    assert_eq!(ring.locate(&1u64), None);
    assert_eq!(ring.preference_list(&1u64, 3).count(), 0);
    assert_eq!(ring.preference_list_zoned(&1u64, 3).count(), 0);
    assert!(ring.owned_ranges(&1).is_empty());
    assert_eq!(BoundedLoads::new(&ring, 0.5).unwrap().assign(&1u64), None);
    assert_eq!(
        JumpHash::from_membership(&empty).unwrap().locate(&1u64),
        None
    );
    assert_eq!(
        Rendezvous::from_membership(&empty).unwrap().locate(&1u64),
        None
    );
    assert_eq!(
        Maglev::from_membership(&empty, 13).unwrap().locate(&1u64),
        None
    );
    let mut ring: Ring<u64> = Ring::new();
    ring.add_node(7).unwrap();
    ring.remove(&7).unwrap();
    assert_eq!(ring.locate(&1u64), None);
}

#[test]
fn bad_weights_are_rejected_and_change_nothing() {
    let mut ring: Ring<u64> = Ring::new();
    ring.add_node(1).unwrap();
    let before = ring.membership();
    for weight in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = ring.add(Member::new(2).with_weight(weight)).unwrap_err();
        assert!(
            matches!(err, Error::InvalidWeight { .. }),
            "{weight}: {err}"
        );
        let mut m = Membership::new();
        assert!(matches!(
            m.add(Member::new(2u64).with_weight(weight)),
            Err(Error::InvalidWeight { .. })
        ));
        assert_eq!(m.version(), 0);
    }
    assert!(matches!(
        ring.add(Member::new(2).with_weight(1e-6)),
        Err(Error::WeightTooSmall { .. })
    ));
    assert!(matches!(
        ring.add(Member::new(2).with_weight(1e6)),
        Err(Error::TooManyVirtualNodes { .. })
    ));
    assert_eq!(ring.membership(), before);
    assert_eq!(ring.len(), 1);
}

#[test]
fn zero_vnodes_duplicates_and_unknown_nodes_are_rejected() {
    let mut ring: Ring<u64> = Ring::new();
    ring.add_node(1).unwrap();
    assert_eq!(
        ring.add(Member::new(2).with_vnodes(0)),
        Err(Error::ZeroVirtualNodes)
    );
    assert_eq!(ring.add_node(1), Err(Error::DuplicateNode));
    assert_eq!(ring.remove(&9), Err(Error::NodeNotFound));
    assert_eq!(ring.len(), 1);
    assert_eq!(ring.vnode_len(), 160);
    assert_eq!(ring.version(), 1);

    let dup = Membership::from_members(RingConfig::default(), [Member::new(1u64), Member::new(1)]);
    assert_eq!(dup.unwrap_err(), Error::DuplicateNode);
    let mut m = Membership::new();
    m.add(Member::new(1u64)).unwrap();
    assert_eq!(m.add(Member::new(1)), Err(Error::DuplicateNode));
    assert_eq!(m.remove(&5), Err(Error::NodeNotFound));
    assert_eq!(m.version(), 1);
}

#[test]
fn bad_parameters_are_rejected() {
    let ring: Ring<u64> = Ring::from_membership(
        &Membership::from_members(RingConfig::default(), (0..3u64).map(Member::new)).unwrap(),
    )
    .unwrap();
    for epsilon in [0.0, -0.5, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            BoundedLoads::new(&ring, epsilon),
            Err(Error::InvalidEpsilon { .. })
        ));
    }
    for value in [0.0, -1.0, f64::NAN] {
        let config = RingConfig {
            vnodes_per_weight: value,
            ..RingConfig::default()
        };
        assert!(matches!(
            Ring::<u64>::with_config(config),
            Err(Error::InvalidVnodesPerWeight { .. })
        ));
    }
    let m = Membership::from_members(RingConfig::default(), (0..20u64).map(Member::new)).unwrap();
    for table_size in [0, 1, 15, 13, MAGLEV_TABLE_SIZE_MAX + 2] {
        assert!(
            matches!(
                Maglev::from_membership(&m, table_size),
                Err(Error::InvalidTableSize { .. })
            ),
            "{table_size}"
        );
    }
    assert!(Maglev::from_membership(&m, 23).is_ok());
    let w = Membership::from_members(
        RingConfig::default(),
        [Member::new(1u64), Member::new(2).with_weight(2.0)],
    )
    .unwrap();
    assert_eq!(
        JumpHash::from_membership(&w).unwrap_err(),
        Error::WeightsUnsupported { algorithm: "jump" }
    );
    let other = Ring::<u64>::with_config(RingConfig {
        hasher: KeyHasher::with_seed(1),
        ..RingConfig::default()
    })
    .unwrap();
    assert!(matches!(
        diff(&ring, &other),
        Err(Error::HasherMismatch { .. })
    ));
    let mut loads = BoundedLoads::new(&ring, 0.1).unwrap();
    assert_eq!(loads.release(&0), Err(Error::NothingToRelease));
    assert_eq!(loads.release(&99), Err(Error::NodeNotFound));
}

#[test]
fn membership_round_trips_through_serde_and_deserialization_validates() {
    let mut m = weighted();
    m.remove(&"node-1".to_string()).unwrap();
    m.add(Member::new("node-9".to_string()).in_zone("eu-1"))
        .unwrap();
    let json = serde_json::to_string(&m).unwrap();
    let back: Membership<String> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    assert_eq!(back.version(), 7);
    let a = Ring::from_membership(&m).unwrap();
    let b = Ring::from_membership(&back).unwrap();
    for k in keys() {
        assert_eq!(a.locate(&k), b.locate(&k));
    }
    assert_eq!(a.membership(), m);

    // A hostile document: a duplicate id and a zero weight must not deserialize.
    let dup = json.replace("node-9", "node-0");
    let err = serde_json::from_str::<Membership<String>>(&dup).unwrap_err();
    assert!(err.to_string().contains("duplicate"), "{err}");
    let zero = json.replacen("\"weight\":1.0", "\"weight\":0.0", 1);
    assert!(serde_json::from_str::<Membership<String>>(&zero).is_err());
}

#[test]
fn bounded_load_vectors() {
    // ε = 0.1 and few keys: capacities are tiny, so keys spill clockwise; the spill order is part
    // of the pinned behaviour.
    let ring = Ring::from_membership(&uniform()).unwrap();
    let mut loads = BoundedLoads::new(&ring, 0.1).unwrap();
    let ids = ids();
    let got: Vec<usize> = keys()
        .iter()
        .map(|k| {
            let n = loads.assign(k).unwrap();
            ids.iter().position(|id| id == n).unwrap()
        })
        .collect();
    // Unbounded, the same keys go to [2, 2, 2, 3, 3, 0, 4, 3, 3, 2, 4, 1] (`ring_vectors`).
    assert_eq!(got, [2, 4, 3, 1, 3, 0, 4, 0, 2, 2, 4, 1]);
}
