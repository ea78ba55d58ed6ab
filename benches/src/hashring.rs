//! The consistent-hashing report: every placement algorithm side by side on the same membership,
//! keys and hasher — lookup time, balance, movement on add and remove, memory per node.
//!
//! [`rows`] returns the measurements (serde-serializable, for the shootout's JSON) and
//! [`format_table`] prints them. The criterion suite `benches/benches/hashring.rs` measures
//! lookups more carefully; this report's lookup figure is a single timed pass over the keys.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use hashring::{JumpHash, Maglev, Member, Membership, Placement, Rendezvous, Ring, RingConfig};
use serde::{Deserialize, Serialize};

use crate::BenchError;

/// Keys per measurement: 2^20 (≈ 1 M), a power of two so benches can index with a mask.
pub const KEYS_DEFAULT: usize = 1 << 20;
/// Virtual nodes per node of the ring (weight 1 at the default 160 per unit of weight).
pub const VNODES_PER_NODE: u32 = 160;
/// Seed of the key generator.
pub const KEY_SEED: u64 = 0x6b65_7973;

/// Lookups per timed chunk in [`time_per_op`].
pub const TIMING_CHUNK_OPS: u64 = 1024;

/// Runs `op` `iters` times and returns the **median chunk time** scaled to `iters` operations:
/// the operations run in chunks of [`TIMING_CHUNK_OPS`], each timed on its own.
///
/// Why not one wall-clock total: the machine these benches run on is shared (two cores, many
/// compilers and test runs at once), and a total includes every time slice the scheduler gave
/// to other processes — it measured up to 5× the real cost. A chunk of 1 024 lookups lasts tens
/// of microseconds, far shorter than a time slice, so most chunks run uninterrupted and the
/// median chunk is the cost of the code itself (cache effects of sharing the machine included).
pub fn time_per_op(iters: u64, mut op: impl FnMut(u64)) -> std::time::Duration {
    let chunks = iters.div_ceil(TIMING_CHUNK_OPS).max(1);
    let mut times = Vec::with_capacity(chunks as usize);
    let mut done = 0u64;
    for _ in 0..chunks {
        let n = TIMING_CHUNK_OPS.min(iters - done).max(1);
        let start = Instant::now();
        for i in done..done + n {
            op(i);
        }
        times.push(start.elapsed().as_nanos() as f64 / n as f64);
        done += n;
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    std::time::Duration::from_nanos((median * iters as f64) as u64)
}

/// `count` random `u64` keys from a fixed seed (splitmix64), the same in every run.
pub fn random_keys(count: usize) -> Vec<u64> {
    let mut state = KEY_SEED;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
        .collect()
}

/// Nodes `0..nodes`, weight 1 (160 virtual nodes on the ring), default hasher.
pub fn membership(nodes: usize) -> Membership<u64> {
    let members = (0..nodes as u64).map(|id| Member::new(id).with_vnodes(VNODES_PER_NODE));
    match Membership::from_members(RingConfig::default(), members) {
        Ok(m) => m,
        // Distinct ids with a valid vnode count: cannot fail; an empty membership keeps the report
        // running (and shows up as empty rows) if it somehow did.
        Err(_) => Membership::new(),
    }
}

/// One algorithm at one cluster size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `ring`, `jump`, `rendezvous` or `maglev`.
    pub algorithm: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Mean time per lookup (hashing the key included), nanoseconds.
    pub lookup_ns: f64,
    /// Keys on the most loaded node divided by the mean.
    pub peak_to_mean: f64,
    /// Standard deviation of per-node key counts, relative to the mean.
    pub stddev_relative: f64,
    /// Fraction of keys moved when one node is appended (n → n+1), divided by the ideal 1/(n+1).
    pub moved_on_add_vs_ideal: f64,
    /// Fraction of keys moved when the middle node is removed (n → n−1), divided by the ideal
    /// 1/n. Jump hash cannot remove a middle bucket without renumbering the later ones.
    pub moved_on_remove_vs_ideal: f64,
    /// Heap bytes of the structure divided by the number of nodes.
    pub memory_bytes_per_node: f64,
    /// Time to build the structure from the membership, milliseconds.
    pub build_ms: f64,
}

fn build<P>(
    membership: &Membership<u64>,
    make: &dyn Fn(&Membership<u64>) -> Option<P>,
) -> Option<(P, f64)> {
    let start = Instant::now();
    let p = make(membership)?;
    Some((p, start.elapsed().as_secs_f64() * 1e3))
}

fn measure<P: Placement<u64>>(
    name: &str,
    nodes: usize,
    keys: &[u64],
    make: &dyn Fn(&Membership<u64>) -> Option<P>,
) -> Option<Row> {
    let base = membership(nodes);
    let (placement, build_ms) = build(&base, make)?;
    let hasher = placement.hasher();
    let hashes: Vec<u64> = keys.iter().map(|k| hasher.hash(k)).collect();

    // Lookup time: one pass, hashing included (as a caller would do), median of chunks.
    let elapsed = time_per_op(keys.len() as u64, |i| {
        black_box(placement.locate(&keys[i as usize]));
    });
    let lookup_ns = elapsed.as_nanos() as f64 / keys.len() as f64;

    // Balance.
    let owners: Vec<u64> = hashes
        .iter()
        .map(|&h| placement.locate_hash(h).copied().unwrap_or(u64::MAX))
        .collect();
    let mut counts: HashMap<u64, u64> = HashMap::new();
    for &o in &owners {
        *counts.entry(o).or_default() += 1;
    }
    let mean = keys.len() as f64 / nodes as f64;
    let peak = counts.values().copied().max().unwrap_or(0) as f64;
    let variance = (0..nodes as u64)
        .map(|id| {
            let d = counts.get(&id).copied().unwrap_or(0) as f64 - mean;
            d * d
        })
        .sum::<f64>()
        / nodes as f64;

    // Movement on add (append a node) and on remove (the middle one).
    let mut added = base.clone();
    added
        .add(Member::new(nodes as u64).with_vnodes(VNODES_PER_NODE))
        .ok()?;
    let after_add = make(&added)?;
    let mut removed = base.clone();
    removed.remove(&(nodes as u64 / 2)).ok()?;
    let after_remove = make(&removed)?;
    let moved = |after: &P| {
        hashes
            .iter()
            .zip(&owners)
            .filter(|(&h, o)| after.locate_hash(h) != Some(o))
            .count() as f64
            / keys.len() as f64
    };
    Some(Row {
        algorithm: name.to_string(),
        nodes,
        lookup_ns,
        peak_to_mean: peak / mean,
        stddev_relative: variance.sqrt() / mean,
        moved_on_add_vs_ideal: moved(&after_add) * (nodes + 1) as f64,
        moved_on_remove_vs_ideal: moved(&after_remove) * nodes as f64,
        memory_bytes_per_node: placement.heap_bytes() as f64 / nodes as f64,
        build_ms,
    })
}

/// Measures every algorithm at every size in `node_counts` over `key_count` keys.
pub fn rows(node_counts: &[usize], key_count: usize) -> Vec<Row> {
    let keys = random_keys(key_count);
    let mut rows = Vec::new();
    for &nodes in node_counts {
        if nodes < 2 {
            continue; // removing the middle node needs at least two
        }
        let size = Maglev::<u64>::recommended_table_size(nodes + 1);
        rows.extend(measure("ring", nodes, &keys, &|m| {
            Ring::from_membership(m).ok()
        }));
        rows.extend(measure("jump", nodes, &keys, &|m| {
            JumpHash::from_membership(m).ok()
        }));
        rows.extend(measure("rendezvous", nodes, &keys, &|m| {
            Rendezvous::from_membership(m).ok()
        }));
        rows.extend(measure("maglev", nodes, &keys, &|m| {
            Maglev::from_membership(m, size).ok()
        }));
    }
    rows
}

/// The rows as an aligned text table.
pub fn format_table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<11} {:>6} {:>10} {:>10} {:>8} {:>10} {:>10} {:>12} {:>10}\n",
        "algorithm",
        "nodes",
        "lookup ns",
        "peak/mean",
        "stddev",
        "add/ideal",
        "rm/ideal",
        "bytes/node",
        "build ms"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<11} {:>6} {:>10.1} {:>10.3} {:>7.1}% {:>10.3} {:>10.3} {:>12.0} {:>10.2}\n",
            r.algorithm,
            r.nodes,
            r.lookup_ns,
            r.peak_to_mean,
            r.stddev_relative * 100.0,
            r.moved_on_add_vs_ideal,
            r.moved_on_remove_vs_ideal,
            r.memory_bytes_per_node,
            r.build_ms
        ));
    }
    out
}

/// The report as one chart of two panels, side by side: lookup time in nanoseconds (left) and
/// the most loaded node's share against the mean (right, 1.0 is perfect balance), one group of
/// bars per cluster size and one colour per algorithm, with a legend.
pub fn chart(rows: &[Row]) -> Result<String, BenchError> {
    use plotters::prelude::*;

    let mut algorithms: Vec<&str> = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    for r in rows {
        if !algorithms.contains(&r.algorithm.as_str()) {
            algorithms.push(&r.algorithm);
        }
        if !sizes.contains(&r.nodes) {
            sizes.push(r.nodes);
        }
    }
    let mut out = String::new();
    {
        let root =
            SVGBackend::with_string(&mut out, crate::report::charts::SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| chart_error(&e))?;
        let panels = root.split_evenly((1, 2));
        let metrics: [Metric; 2] = [
            (
                "Lookup (ns per key, lower is better)",
                "ns",
                |r| r.lookup_ns,
                |v| format!("{v:.1}"),
            ),
            (
                "Peak load / mean (1.0 is perfect)",
                "peak/mean",
                |r| r.peak_to_mean,
                |v| format!("{v:.2}"),
            ),
        ];
        for (panel, metric) in panels.iter().zip(metrics) {
            draw_panel(panel, rows, &algorithms, &sizes, metric)?;
        }
        root.present().map_err(|e| chart_error(&e))?;
    }
    Ok(out)
}

/// What one panel of [`chart`] shows: its caption, its unit, a row's value and how a value is
/// written above its bar.
type Metric = (
    &'static str,
    &'static str,
    fn(&Row) -> f64,
    fn(f64) -> String,
);

fn chart_error(e: &dyn std::fmt::Display) -> BenchError {
    BenchError::Invalid(format!("chart: {e}"))
}

/// Draws one panel of [`chart`]: a group of bars per cluster size (`sizes`), a bar and colour
/// per algorithm (`algorithms`), each bar's value above it, and the legend.
fn draw_panel(
    panel: &plotters::prelude::DrawingArea<
        plotters::prelude::SVGBackend<'_>,
        plotters::coord::Shift,
    >,
    rows: &[Row],
    algorithms: &[&str],
    sizes: &[usize],
    (caption, unit, value, shown): Metric,
) -> Result<(), BenchError> {
    use plotters::prelude::*;

    let err = chart_error;
    let colour = |i: usize| Palette99::pick(i).to_rgba();
    let slot = 0.8 / algorithms.len().max(1) as f64;
    let top = rows.iter().map(value).fold(0.0, f64::max).max(1e-9) * 1.2;
    let mut chart = ChartBuilder::on(panel)
        .caption(caption, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..sizes.len() as f64 - 0.5, 0.0..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(sizes.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            match sizes.get(i as usize) {
                Some(n) if (x - i).abs() < 1e-6 && i >= 0.0 => format!("{n} nodes"),
                _ => String::new(),
            }
        })
        .y_desc(unit)
        .draw()
        .map_err(|e| err(&e))?;
    for (a, name) in algorithms.iter().enumerate() {
        let c = colour(a);
        let bars = sizes.iter().enumerate().filter_map(|(s, n)| {
            let r = rows
                .iter()
                .find(|r| r.algorithm == *name && r.nodes == *n)?;
            let left = s as f64 - 0.4 + a as f64 * slot + slot * 0.08;
            Some(Rectangle::new(
                [(left, 0.0), (left + slot * 0.84, value(r))],
                c.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        // Each bar's value above it: a bar too short to see still reads.
        let values = sizes.iter().enumerate().filter_map(|(s, n)| {
            let r = rows
                .iter()
                .find(|r| r.algorithm == *name && r.nodes == *n)?;
            let centre = s as f64 - 0.4 + a as f64 * slot + slot * 0.5;
            let style = ("sans-serif", 12).into_font().color(&BLACK).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Bottom,
                ),
            );
            Some(Text::new(shown(value(r)), (centre, value(r)), style))
        });
        chart.draw_series(values).map_err(|e| err(&e))?;
    }
    crate::report::charts::legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_svg_with_both_panels_and_every_algorithm() {
        let rows = rows(&[10, 20], 1 << 12);
        let svg = chart(&rows).unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
        let text: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
        for wanted in [
            "ring",
            "jump",
            "rendezvous",
            "maglev",
            "10 nodes",
            "20 nodes",
            "Lookup (ns per key, lower is better)",
            "Peak load / mean (1.0 is perfect)",
        ] {
            assert!(
                text.iter().any(|t| t.trim() == wanted),
                "`{wanted}` missing from the chart"
            );
        }
    }

    #[test]
    fn the_report_has_a_row_per_algorithm_and_sane_figures() {
        let rows = rows(&[10], 1 << 14);
        let names: Vec<&str> = rows.iter().map(|r| r.algorithm.as_str()).collect();
        assert_eq!(names, ["ring", "jump", "rendezvous", "maglev"]);
        for r in &rows {
            assert!(r.peak_to_mean >= 1.0, "{r:?}");
            assert!(
                r.moved_on_add_vs_ideal > 0.5 && r.moved_on_add_vs_ideal < 2.0,
                "{r:?}"
            );
        }
        assert!(format_table(&rows).lines().count() == 5);
    }
}
