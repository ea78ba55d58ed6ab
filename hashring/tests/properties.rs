//! Property tests: each test states the property it checks in its doc comment.
//!
//! Keys are sampled from a fixed, seeded sequence of hashes (so a failure reproduces), memberships
//! and parameters come from proptest. Case counts are kept small so the suite runs in seconds;
//! set `PROPTEST_CASES` for a longer run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{HashMap, HashSet};

use hashring::*;
use proptest::prelude::*;

/// `count` pseudo-random key hashes (splitmix64 of 0..count: fixed, spread over the circle).
fn key_hashes(count: usize) -> Vec<u64> {
    (0..count as u64)
        .map(|i| {
            let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
        .collect()
}

fn ring_of(ids: &[u64], vnodes: u32) -> Ring<u64> {
    let members = ids.iter().map(|&id| Member::new(id).with_vnodes(vnodes));
    Ring::from_membership(&Membership::from_members(RingConfig::default(), members).unwrap())
        .unwrap()
}

fn membership_of(ids: &[u64]) -> Membership<u64> {
    Membership::from_members(RingConfig::default(), ids.iter().map(|&id| Member::new(id))).unwrap()
}

/// Distinct node ids, 1..=max of them.
fn node_ids(max: usize) -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::hash_set(any::<u64>(), 1..=max).prop_map(|s| s.into_iter().collect())
}

/// `cases` unless the `PROPTEST_CASES` environment variable asks for another count.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// Monotonicity (Karger et al.): after adding a node, every key either keeps its owner or
    /// moves to the new node. After removing a node, only the keys it owned change owner.
    /// Checked for the ring and for rendezvous; for jump, appending a bucket.
    #[test]
    fn adding_moves_keys_only_to_the_new_node_and_removing_only_the_removed_nodes_keys(
        ids in node_ids(24),
        extra in any::<u64>(),
        vnodes in 1u32..200,
    ) {
        prop_assume!(!ids.contains(&extra));
        let keys = key_hashes(3_000);
        let before = ring_of(&ids, vnodes);
        let mut after = before.clone();
        after.add(Member::new(extra).with_vnodes(vnodes)).unwrap();
        let mut with_all = ids.clone();
        with_all.push(extra);
        let (hrw_before, hrw_after) = (
            Rendezvous::from_membership(&membership_of(&ids)).unwrap(),
            Rendezvous::from_membership(&membership_of(&with_all)).unwrap(),
        );
        let (jump_before, jump_after) = (
            JumpHash::from_membership(&membership_of(&ids)).unwrap(),
            JumpHash::from_membership(&membership_of(&with_all)).unwrap(),
        );
        for &h in &keys {
            let (old, new) = (before.locate_hash(h).unwrap(), after.locate_hash(h).unwrap());
            prop_assert!(old == new || *new == extra, "ring: key {h:#x} moved {old} -> {new}");
            let (old, new) = (hrw_before.locate_hash(h).unwrap(), hrw_after.locate_hash(h).unwrap());
            prop_assert!(old == new || *new == extra, "rendezvous: key {h:#x} moved {old} -> {new}");
            let (old, new) = (jump_before.locate_hash(h).unwrap(), jump_after.locate_hash(h).unwrap());
            prop_assert!(old == new || *new == extra, "jump: key {h:#x} moved {old} -> {new}");
        }
        // Removal: take `extra` out again, and also an original node.
        let mut removed = after.clone();
        removed.remove(&extra).unwrap();
        let victim = ids[0];
        let mut without = after.clone();
        without.remove(&victim).unwrap();
        for &h in &keys {
            prop_assert_eq!(removed.locate_hash(h), before.locate_hash(h));
            let (old, new) = (after.locate_hash(h).unwrap(), without.locate_hash(h));
            if *old != victim {
                prop_assert_eq!(new, Some(old), "ring: key {:#x} of a kept node moved", h);
            }
        }
    }

    /// Movement: adding one node to n moves close to 1/(n+1) of the keys (exactly the new node's
    /// share, which with v virtual nodes deviates from the mean by about 1/√v). The measured ratio
    /// to the ideal is in the assertion message.
    #[test]
    fn adding_one_node_moves_about_one_over_n_plus_one_of_the_keys(
        ids in node_ids(60),
        extra in any::<u64>(),
    ) {
        prop_assume!(!ids.contains(&extra) && ids.len() >= 4);
        let keys = key_hashes(40_000);
        let before = ring_of(&ids, 160);
        let mut after = before.clone();
        after.add(Member::new(extra).with_vnodes(160)).unwrap();
        let moved = keys.iter().filter(|&&h| before.locate_hash(h) != after.locate_hash(h)).count();
        let ideal = keys.len() as f64 / (ids.len() + 1) as f64;
        let ratio = moved as f64 / ideal;
        // 160 vnodes: σ ≈ 8 % of the share, plus sampling noise; 0.55..1.45 is > 4σ.
        prop_assert!((0.55..=1.45).contains(&ratio),
            "moved {moved} of {} keys on {}→{} nodes: {ratio:.3}× the ideal", keys.len(), ids.len(), ids.len() + 1);
    }

    /// Balance: with v virtual nodes per node the most loaded node's share of the circle is at
    /// most (1 + 6/√v) times the mean (a node's share is a sum of v exponential arcs, relative
    /// spread 1/√v, skewed to the right; the bound is for the largest of up to 80 such shares,
    /// and 5/√v was seen exceeded at 40 vnodes and 40 nodes: 1.808 against 1.791). Shares are
    /// measured exactly from the owned ranges, not sampled.
    #[test]
    fn peak_to_mean_load_is_bounded_for_given_virtual_node_counts(
        ids in node_ids(80),
        vnodes in prop::sample::select(vec![40u32, 160, 640]),
    ) {
        prop_assume!(ids.len() >= 2);
        let ring = ring_of(&ids, vnodes);
        let shares: Vec<f64> = ids.iter()
            .map(|id| ring.owned_ranges(id).iter().map(HashRange::fraction).sum())
            .collect();
        let total: f64 = shares.iter().sum();
        prop_assert!((total - 1.0).abs() < 1e-9, "owned ranges cover the circle once: {total}");
        let mean = 1.0 / ids.len() as f64;
        let peak = shares.iter().cloned().fold(0.0, f64::max) / mean;
        let bound = 1.0 + 6.0 / f64::from(vnodes).sqrt();
        prop_assert!(peak <= bound, "peak/mean {peak:.3} > {bound:.3} with {vnodes} vnodes, {} nodes", ids.len());
    }

    /// Bounded loads (Mirrokni et al.): after every assignment, no node holds more than
    /// ⌈(1+ε)·m/n⌉ of the m keys assigned so far; every key is assigned.
    #[test]
    fn bounded_loads_never_exceed_capacity(
        ids in node_ids(20),
        epsilon in 0.01f64..1.0,
        keys in 1usize..3_000,
    ) {
        let ring = ring_of(&ids, 40);
        let mut loads = BoundedLoads::new(&ring, epsilon).unwrap();
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for (m, &h) in key_hashes(keys).iter().enumerate() {
            let node = *loads.assign_hash(h).unwrap();
            *counts.entry(node).or_default() += 1;
            let cap = ((1.0 + epsilon) * (m + 1) as f64 / ids.len() as f64).ceil() as u64;
            prop_assert!(counts[&node] <= cap, "node {node} holds {} > capacity {cap} after {} keys", counts[&node], m + 1);
            prop_assert_eq!(loads.load(&node), counts[&node]);
        }
        prop_assert_eq!(loads.total(), keys as u64);
    }

    /// Preference lists hold distinct nodes, start with the key's owner, have length
    /// min(count, n), and for zone-aware lists the first min(count, zones) entries are in
    /// distinct zones.
    #[test]
    fn preference_lists_are_distinct_and_zone_aware_lists_spread_over_zones(
        ids in node_ids(30),
        zones in 1u64..12,
        count in 1usize..12,
        vnodes in 1u32..100,
    ) {
        let mut ring = Ring::new();
        for &id in &ids {
            ring.add(Member::new(id).with_vnodes(vnodes).in_zone(format!("z{}", id % zones))).unwrap();
        }
        let zone_count = ids.iter().map(|id| id % zones).collect::<HashSet<_>>().len();
        prop_assert_eq!(ring.zone_count(), zone_count);
        for &h in &key_hashes(200) {
            let list: Vec<u64> = ring.preference_list_hash(h, count).copied().collect();
            prop_assert_eq!(list.len(), count.min(ids.len()));
            prop_assert_eq!(list.iter().collect::<HashSet<_>>().len(), list.len(), "repeated node in {:?}", list);
            prop_assert_eq!(Some(&list[0]), ring.locate_hash(h));

            let zoned: Vec<u64> = ring.preference_list_zoned(&h, count).copied().collect();
            prop_assert_eq!(zoned.len(), count.min(ids.len()));
            prop_assert_eq!(zoned.iter().collect::<HashSet<_>>().len(), zoned.len());
            let head = count.min(zone_count);
            let head_zones: HashSet<u64> = zoned[..head].iter().map(|id| id % zones).collect();
            prop_assert_eq!(head_zones.len(), head, "zones not spread: {:?}", zoned);
        }
    }

    /// Preference lists are stable under unrelated membership changes: adding a node X only
    /// inserts X (the others keep their order); removing a node that is not on a key's list
    /// leaves that list unchanged.
    #[test]
    fn preference_lists_are_stable_under_unrelated_changes(
        ids in node_ids(30),
        extra in any::<u64>(),
        count in 1usize..6,
    ) {
        prop_assume!(!ids.contains(&extra) && ids.len() >= 2);
        let before = ring_of(&ids, 50);
        let mut added = before.clone();
        added.add(Member::new(extra).with_vnodes(50)).unwrap();
        let victim = ids[ids.len() / 2];
        let mut removed = before.clone();
        removed.remove(&victim).unwrap();
        for &h in &key_hashes(300) {
            let old: Vec<u64> = before.preference_list_hash(h, count).copied().collect();
            let new: Vec<u64> = added.preference_list_hash(h, count).copied().collect();
            let others: Vec<u64> = new.iter().copied().filter(|&n| n != extra).collect();
            prop_assert_eq!(&old[..others.len()], &others[..], "adding {} reordered {:?} -> {:?}", extra, old, new);
            if !old.contains(&victim) {
                let new: Vec<u64> = removed.preference_list_hash(h, count).copied().collect();
                prop_assert_eq!(&new, &old);
            }
        }
    }

    /// Rebalancing: `diff` covers exactly the keys whose owner changes (with the right old and new
    /// owner), and `owned_ranges` covers exactly the keys a node owns.
    #[test]
    fn diff_lists_exactly_the_keys_that_change_owner(
        ids in node_ids(20),
        extra in any::<u64>(),
        vnodes in 1u32..64,
    ) {
        prop_assume!(!ids.contains(&extra));
        let before = ring_of(&ids, vnodes);
        let mut after = before.clone();
        after.add(Member::new(extra).with_vnodes(vnodes)).unwrap();
        if ids.len() > 1 {
            after.remove(&ids[0]).unwrap();
        }
        let moves = diff(&before, &after).unwrap();
        let owned: HashMap<u64, Vec<HashRange>> =
            ids.iter().chain([&extra]).map(|&id| (id, after.owned_ranges(&id))).collect();
        for &h in &key_hashes(3_000) {
            let (old, new) = (before.locate_hash(h).unwrap(), after.locate_hash(h).unwrap());
            let hits: Vec<&RangeMove<u64>> = moves.iter().filter(|m| m.range.contains(h)).collect();
            if old == new {
                prop_assert!(hits.is_empty(), "key {h:#x} stays on {old} but is in {hits:?}");
            } else {
                prop_assert_eq!(hits.len(), 1, "key {:#x} moves {} -> {}", h, old, new);
                prop_assert_eq!((&hits[0].from, &hits[0].to), (old, new));
            }
            for (id, ranges) in &owned {
                let inside = ranges.iter().filter(|r| r.contains(h)).count();
                prop_assert_eq!(inside, usize::from(id == new), "key {:#x}, node {}", h, id);
            }
        }
    }

    /// Determinism: a ring built by adding nodes in any order, or from a membership, or after
    /// adding and removing other nodes, places every key identically.
    #[test]
    fn placement_does_not_depend_on_insertion_order_or_history(
        ids in node_ids(20),
        noise in node_ids(5),
        seed in any::<u64>(),
    ) {
        let reference = ring_of(&ids, 30);
        let mut shuffled = ids.clone();
        let mut s = seed;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut ring = Ring::new();
        for &id in noise.iter().filter(|id| !ids.contains(id)) {
            ring.add(Member::new(id).with_vnodes(30)).unwrap();
        }
        for &id in &shuffled {
            ring.add(Member::new(id).with_vnodes(30)).unwrap();
        }
        for &id in noise.iter().filter(|id| !ids.contains(id)) {
            ring.remove(&id).unwrap();
        }
        for &h in &key_hashes(1_000) {
            prop_assert_eq!(ring.locate_hash(h), reference.locate_hash(h));
        }
    }
}

/// Movement, averaged: over 40 different added nodes (100 → 101 nodes, 160 virtual nodes each),
/// the mean fraction of keys moved is within 5 % of the ideal 1/101 (the mean of the new node's
/// share is exactly the ideal; 40 samples of σ ≈ 8 % give a standard error of ≈ 1.3 %).
#[test]
fn mean_movement_on_add_matches_the_ideal() {
    let ids: Vec<u64> = (0..100).collect();
    let base = ring_of(&ids, 160);
    let trials = 40u64;
    let mut ratios = Vec::new();
    for t in 0..trials {
        let mut ring = base.clone();
        ring.add(Member::new(1_000 + t).with_vnodes(160)).unwrap();
        // Exact: the moved fraction is the new node's share of the circle.
        let moved: f64 = diff(&base, &ring)
            .unwrap()
            .iter()
            .map(|m| m.range.fraction())
            .sum();
        ratios.push(moved * 101.0);
    }
    let mean = ratios.iter().sum::<f64>() / trials as f64;
    assert!(
        (0.95..=1.05).contains(&mean),
        "mean moved / ideal over {trials} additions = {mean:.4} (individual: {ratios:.3?})"
    );
}

/// Movement for the alternatives: jump and rendezvous move the optimal 1/(n+1) on add (within
/// sampling noise); Maglev moves more, but less than twice the ideal.
#[test]
fn alternatives_move_close_to_the_ideal_on_add() {
    let keys = key_hashes(200_000);
    let ids: Vec<u64> = (0..50).collect();
    let mut more = ids.clone();
    more.push(50);
    let (a, b) = (membership_of(&ids), membership_of(&more));
    let ideal = keys.len() as f64 / 51.0;
    let ratio = |before: &dyn Placement<u64>, after: &dyn Placement<u64>| {
        keys.iter()
            .filter(|&&h| before.locate_hash(h) != after.locate_hash(h))
            .count() as f64
            / ideal
    };
    let jump = ratio(
        &JumpHash::from_membership(&a).unwrap(),
        &JumpHash::from_membership(&b).unwrap(),
    );
    assert!(
        (0.9..=1.1).contains(&jump),
        "jump moved {jump:.3}× the ideal"
    );
    let hrw = ratio(
        &Rendezvous::from_membership(&a).unwrap(),
        &Rendezvous::from_membership(&b).unwrap(),
    );
    assert!(
        (0.9..=1.1).contains(&hrw),
        "rendezvous moved {hrw:.3}× the ideal"
    );
    let size = Maglev::<u64>::recommended_table_size(51);
    let maglev = ratio(
        &Maglev::from_membership(&a, size).unwrap(),
        &Maglev::from_membership(&b, size).unwrap(),
    );
    assert!(
        (0.9..=2.0).contains(&maglev),
        "maglev moved {maglev:.3}× the ideal"
    );
}

/// Weights: a node of weight w receives about w/Σw of the keys (ring via virtual nodes,
/// rendezvous and Maglev directly); Maglev's and rendezvous' unweighted balance is near perfect.
#[test]
fn weights_set_the_share_of_keys() {
    let keys = key_hashes(200_000);
    let weights = [1.0, 1.0, 2.0, 4.0];
    let m = Membership::from_members(
        RingConfig::default(),
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member::new(i as u64).with_weight(w)),
    )
    .unwrap();
    let algorithms: Vec<(Box<dyn Placement<u64>>, f64)> = vec![
        (Box::new(Ring::from_membership(&m).unwrap()), 0.25),
        (Box::new(Rendezvous::from_membership(&m).unwrap()), 0.03),
        (Box::new(Maglev::from_membership(&m, 65_537).unwrap()), 0.03),
    ];
    for (a, tolerance) in &algorithms {
        let mut counts = [0usize; 4];
        for &h in &keys {
            counts[*a.locate_hash(h).unwrap() as usize] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let expected = keys.len() as f64 * w / 8.0;
            let ratio = counts[i] as f64 / expected;
            assert!(
                (ratio - 1.0).abs() <= *tolerance,
                "{}: node {i} (weight {w}) got {ratio:.3}× its share",
                a.algorithm()
            );
        }
    }
}
