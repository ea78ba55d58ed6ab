//! Hashed file placement: a small file store that puts every file on three distinct storage
//! nodes with a consistent-hash ring, then grows and shrinks the cluster and moves only what
//! the ring says must move.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p hashring --example file_placement
//! ```
//!
//! What it shows, and asserts:
//!
//! * every file lives on [`REPLICAS`] distinct nodes (its preference list, Dynamo §4.3);
//! * adding a node moves a file only if the new node enters its preference list, and then
//!   exactly one replica moves *to* the new node; nothing else moves;
//! * removing a node moves a file only if the removed node held it, and exactly that replica
//!   moves to the next node clockwise;
//! * the files whose *primary* changes are exactly the files whose hash falls in one of the
//!   ranges that [`hashring::diff`] reports, so a store that scans by hash range can migrate
//!   without looking at any other file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use hashring::{diff, Member, Membership, Ring};

/// Copies of every file, each on a different node.
const REPLICAS: usize = 3;
/// Files in the store.
const FILES: usize = 120;

/// Where every file lives: file name → its replica nodes, primary first.
type Placement = BTreeMap<String, Vec<String>>;

fn place(ring: &Ring<String>, files: &[String]) -> Placement {
    files
        .iter()
        .map(|file| {
            let nodes: Vec<String> = ring
                .preference_list(file.as_str(), REPLICAS)
                .cloned()
                .collect();
            (file.clone(), nodes)
        })
        .collect()
}

/// Checks the placement's basic promise: [`REPLICAS`] distinct nodes per file.
fn assert_distinct(placement: &Placement) {
    for (file, nodes) in placement {
        let distinct: BTreeSet<&String> = nodes.iter().collect();
        assert_eq!(nodes.len(), REPLICAS, "{file} has {nodes:?}");
        assert_eq!(
            distinct.len(),
            REPLICAS,
            "{file} has a repeated node: {nodes:?}"
        );
    }
}

/// Checks the crate's rebalancing API against the placements `old` (on `before`) and `new` (on
/// `after`): the ranges [`diff`] reports name exactly the files whose primary changes, and they
/// move only to the `added` node or only from the `removed` one. Returns how many files changed
/// primary and how many ranges changed owner.
fn assert_diff_names_primary_moves(
    files: &[String],
    before: &Ring<String>,
    after: &Ring<String>,
    old: &Placement,
    new: &Placement,
    added: Option<&str>,
    removed: Option<&str>,
) -> (usize, usize) {
    // The ranges whose primary owner changes, from the crate's rebalancing API.
    let moves = diff(before, after).expect("same hasher on both rings");
    let hasher = after.hasher();
    let predicted_primary: BTreeSet<&String> = files
        .iter()
        .filter(|f| {
            let h = hasher.hash(f.as_str());
            moves.iter().any(|mv| mv.range.contains(h))
        })
        .collect();
    let actual_primary: BTreeSet<&String> =
        files.iter().filter(|f| old[*f][0] != new[*f][0]).collect();
    assert_eq!(
        predicted_primary, actual_primary,
        "the diff's ranges must name exactly the files whose primary changes"
    );
    for mv in &moves {
        if let Some(a) = added {
            assert_eq!(mv.to, a, "adding a node moves ranges only to it");
        }
        if let Some(r) = removed {
            assert_eq!(mv.from, r, "removing a node moves only its ranges");
        }
    }
    (actual_primary.len(), moves.len())
}

/// One membership change: prints the files that move and asserts that exactly those move, in
/// the way the change allows. `added` / `removed` name the node that joined or left.
fn rebalance(
    files: &[String],
    before: &Ring<String>,
    after: &Ring<String>,
    added: Option<&str>,
    removed: Option<&str>,
) -> usize {
    let old = place(before, files);
    let new = place(after, files);
    assert_distinct(&new);
    let (primary_changed, ranges_changed) =
        assert_diff_names_primary_moves(files, before, after, &old, &new, added, removed);

    let mut moved = 0;
    for file in files {
        let (was, now) = (&old[file], &new[file]);
        let was_set: BTreeSet<&String> = was.iter().collect();
        let now_set: BTreeSet<&String> = now.iter().collect();
        if was_set == now_set {
            // Untouched: the new node is not among its replicas, the removed node never was.
            if let Some(a) = added {
                assert!(!now_set.iter().any(|n| *n == a), "{file}");
            }
            if let Some(r) = removed {
                assert!(!was_set.iter().any(|n| *n == r), "{file}");
            }
            continue;
        }
        let gone: Vec<&&String> = was_set.difference(&now_set).collect();
        let came: Vec<&&String> = now_set.difference(&was_set).collect();
        assert_eq!(
            (gone.len(), came.len()),
            (1, 1),
            "{file}: exactly one replica moves ({was:?} -> {now:?})"
        );
        if let Some(a) = added {
            assert_eq!(
                came[0].as_str(),
                a,
                "{file}: a replica may only move to the new node"
            );
        }
        if let Some(r) = removed {
            assert_eq!(
                gone[0].as_str(),
                r,
                "{file}: only the removed node's replica moves"
            );
        }
        println!(
            "  {file:<22} {:>8} -> {:<8}  {was:?} -> {now:?}",
            gone[0], came[0]
        );
        moved += 1;
    }
    let share = moved as f64 / files.len() as f64;
    println!(
        "  {moved} of {} files moved ({:.1}%), {} of them changed primary; {} hash ranges changed owner",
        files.len(),
        share * 100.0,
        primary_changed,
        ranges_changed
    );
    moved
}

fn main() -> Result<(), hashring::Error> {
    let files: Vec<String> = (0..FILES)
        .map(|i| format!("photos/img-{i:04}.jpg"))
        .collect();

    let mut membership: Membership<String> = Membership::new();
    for name in ["store-a", "store-b", "store-c", "store-d", "store-e"] {
        membership.add(Member::new(name.to_string()))?;
    }
    let ring = Ring::from_membership(&membership)?;
    let placement = place(&ring, &files);
    assert_distinct(&placement);

    let mut load: BTreeMap<&String, usize> = BTreeMap::new();
    for nodes in placement.values() {
        for node in nodes {
            *load.entry(node).or_default() += 1;
        }
    }
    println!(
        "{FILES} files, {REPLICAS} replicas each, on {} nodes:",
        ring.len()
    );
    for (node, count) in &load {
        println!("  {node}: {count} replicas");
    }

    // Grow: store-f joins. With 6 nodes and 3 replicas, about 3/6 of the files gain a replica
    // on it; each of those gives up exactly one replica elsewhere.
    println!("\nadding store-f:");
    membership.add(Member::new("store-f".to_string()))?;
    let grown = Ring::from_membership(&membership)?;
    let moved = rebalance(&files, &ring, &grown, Some("store-f"), None);
    assert!(moved > 0 && moved < FILES, "some, not all, files move");

    // Shrink: store-b leaves. Only the files it held move, each to the next node clockwise.
    println!("\nremoving store-b:");
    membership.remove(&"store-b".to_string())?;
    let shrunk = Ring::from_membership(&membership)?;
    let held_by_b = place(&grown, &files)
        .values()
        .filter(|nodes| nodes.iter().any(|n| n == "store-b"))
        .count();
    let moved = rebalance(&files, &grown, &shrunk, None, Some("store-b"));
    assert_eq!(moved, held_by_b, "exactly the files store-b held move");
    println!("\nall checks passed");
    Ok(())
}
