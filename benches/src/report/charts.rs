//! The shootout's charts, as SVG strings (plotters), each read at a glance:
//!
//! - [`throughput`]: acknowledged operations per second, bars grouped by configuration
//!   (transport, storage, nodes, clients), one colour per protocol, with a legend;
//! - [`latency`]: p50, p99 and p99.9 per protocol and configuration, on a log scale;
//! - [`sweep`]: the latency–throughput curve of each protocol as the clients grow
//!   (`shootout --sweep 1,4,16,64,256,1024`);
//! - [`crash`]: acknowledged operations per second, 10 ms window by 10 ms window, around the
//!   leader's or coordinator's crash, one line per protocol.
//!
//! A protocol keeps its colour across the charts ([`colour`]).

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::faults::FAULT_WINDOW;
use crate::{BenchError, FaultRow, Row, TransportKind};

/// Size of each chart, in pixels.
pub const SIZE: (u32, u32) = (1200, 560);

/// Ten colours told apart also by most colour-blind readers (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of `protocol`: fixed for the workspace's protocols, so that a chart of a subset
/// keeps them; others take the rest of the palette by the order given.
pub fn colour(protocol: &str, others: &[&str]) -> RGBColor {
    const KNOWN: [&str; 5] = ["raft", "multi-paxos", "2pc", "3pc", "demo"];
    let i = KNOWN
        .iter()
        .position(|k| *k == protocol)
        .unwrap_or_else(|| KNOWN.len() + others.iter().position(|o| *o == protocol).unwrap_or(0));
    PALETTE[i % PALETTE.len()]
}

fn err(e: &dyn std::fmt::Display) -> BenchError {
    BenchError::Invalid(format!("chart: {e}"))
}

/// The protocols of `rows`, in order of first appearance.
fn protocols<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// A row's configuration, as a group label.
fn configuration(r: &Row) -> String {
    format!(
        "{}{} · {} nodes · {} client{}",
        r.transport.name(),
        if r.durable { "+fsync" } else { "" },
        r.nodes,
        r.concurrency,
        if r.concurrency == 1 { "" } else { "s" }
    )
}

/// The rows grouped by configuration, in order of first appearance: `(label, rows)`.
fn groups(rows: &[Row]) -> Vec<(String, Vec<&Row>)> {
    let mut out: Vec<(String, Vec<&Row>)> = Vec::new();
    for r in rows {
        let label = configuration(r);
        match out.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(r),
            None => out.push((label, vec![r])),
        }
    }
    out
}

/// Draws `chart`'s legend at `position`, in the one style of every chart.
pub(crate) fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), BenchError>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| err(&e))
}

/// Draws `f` on a white canvas of [`SIZE`] and returns the SVG.
fn svg(
    f: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), BenchError>,
) -> Result<String, BenchError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        f(&root)?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(out)
}

/// Writes each group's label under its place on the x axis (`-0.5..groups - 0.5`).
fn group_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    at: impl Fn(f64) -> (i32, i32),
    labels: &[String],
) -> Result<(), BenchError> {
    for (i, label) in labels.iter().enumerate() {
        let (x, y) = at(i as f64);
        let style = ("sans-serif", 14).into_font().color(&BLACK).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ),
        );
        root.draw(&Text::new(label.clone(), (x, y + 8), style))
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// Bar chart of throughput: one group per configuration, one bar (and colour) per protocol.
pub fn throughput(rows: &[Row]) -> Result<String, BenchError> {
    let groups = groups(rows);
    let names = protocols(rows.iter().map(|r| r.protocol.as_str()));
    let top = rows
        .iter()
        .map(|r| r.ops_per_sec)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let slot = 0.8 / names.len().max(1) as f64;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Throughput (acknowledged ops/s, higher is better)",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5..groups.len() as f64 - 0.5, 0.0..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("ops/s")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| err(&e))?;
        for (p, name) in names.iter().enumerate() {
            let c = colour(name, &names);
            let x0 = -0.4 + p as f64 * slot;
            let bars = groups.iter().enumerate().filter_map(|(g, (_, rs))| {
                let r = rs.iter().find(|r| r.protocol == *name)?;
                let left = g as f64 + x0 + slot * 0.08;
                Some(Rectangle::new(
                    [(left, 0.0), (left + slot * 0.84, r.ops_per_sec)],
                    c.filled(),
                ))
            });
            chart
                .draw_series(bars)
                .map_err(|e| err(&e))?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        let labels: Vec<String> = groups.iter().map(|(l, _)| l.clone()).collect();
        group_labels(root, |x| chart.backend_coord(&(x, 0.0)), &labels)
    })
}

/// p50, p99 and p99.9 latency on a log scale: one group per configuration; per protocol a line
/// from p50 to p99.9 in its colour, with a mark for each percentile.
pub fn latency(rows: &[Row]) -> Result<String, BenchError> {
    let groups = groups(rows);
    let names = protocols(rows.iter().map(|r| r.protocol.as_str()));
    let positive = |v: f64| v.max(1.0);
    let lo = rows
        .iter()
        .map(|r| positive(r.p50_us))
        .fold(f64::MAX, f64::min)
        .min(1e6)
        / 2.0;
    let hi = rows.iter().map(|r| positive(r.p999_us)).fold(1.0, f64::max) * 2.0;
    let slot = 0.8 / names.len().max(1) as f64;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Latency p50 ● · p99 ▲ · p99.9 ■ (µs, log scale, lower is better)",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5..groups.len() as f64 - 0.5, (lo..hi).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("µs")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| err(&e))?;
        for (p, name) in names.iter().enumerate() {
            let c = colour(name, &names);
            let points: Vec<(f64, &Row)> = groups
                .iter()
                .enumerate()
                .filter_map(|(g, (_, rs))| {
                    let r = rs.iter().find(|r| r.protocol == *name)?;
                    Some((g as f64 - 0.4 + (p as f64 + 0.5) * slot, *r))
                })
                .collect();
            chart
                .draw_series(points.iter().map(|(x, r)| {
                    PathElement::new(
                        vec![(*x, positive(r.p50_us)), (*x, positive(r.p999_us))],
                        c.stroke_width(3),
                    )
                }))
                .map_err(|e| err(&e))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(4))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|(x, r)| Circle::new((*x, positive(r.p50_us)), 6, c.filled())),
                )
                .map_err(|e| err(&e))?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|(x, r)| TriangleMarker::new((*x, positive(r.p99_us)), 8, c.filled())),
                )
                .map_err(|e| err(&e))?;
            chart
                .draw_series(points.iter().map(|(x, r)| {
                    EmptyElement::at((*x, positive(r.p999_us)))
                        + Rectangle::new([(-6, -6), (6, 6)], c.filled())
                }))
                .map_err(|e| err(&e))?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        let labels: Vec<String> = groups.iter().map(|(l, _)| l.clone()).collect();
        group_labels(root, |x| chart.backend_coord(&(x, lo)), &labels)
    })
}

/// The rows of `rows` by curve of [`sweep`]: one per protocol (in the order of `names`), and
/// per cluster size and transport when `rows` has several; each with its label and protocol.
type Curves<'a> = BTreeMap<(usize, String), (String, Vec<&'a Row>)>;

/// Groups `rows` into the curves of [`sweep`].
fn curves<'a>(rows: &'a [Row], names: &[&str]) -> Curves<'a> {
    let several_sizes = rows.iter().any(|r| r.nodes != rows[0].nodes);
    let several_transports = rows
        .iter()
        .any(|r| (r.transport, r.durable) != (rows[0].transport, rows[0].durable));
    let mut curves = Curves::new();
    for r in rows {
        let mut label = r.protocol.clone();
        if several_sizes {
            label.push_str(&format!(", {} nodes", r.nodes));
        }
        if several_transports {
            label.push_str(&format!(
                ", {}{}",
                r.transport.name(),
                if r.durable { "+fsync" } else { "" }
            ));
        }
        let order = names.iter().position(|n| *n == r.protocol).unwrap_or(0);
        curves
            .entry((order, label.clone()))
            .or_insert_with(|| (r.protocol.clone(), Vec::new()))
            .1
            .push(r);
    }
    curves
}

/// The latency–throughput curve of each protocol (and cluster size, and transport when there
/// are several): one point per concurrency level, p99 latency (log scale) against throughput,
/// each point labelled with its clients.
pub fn sweep(rows: &[Row]) -> Result<String, BenchError> {
    let names = protocols(rows.iter().map(|r| r.protocol.as_str()));
    let curves = curves(rows, &names);
    let right = rows
        .iter()
        .map(|r| r.ops_per_sec)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let lo = rows
        .iter()
        .map(|r| r.p99_us.max(1.0))
        .fold(f64::MAX, f64::min)
        .min(1e6)
        / 2.0;
    let hi = rows.iter().map(|r| r.p99_us.max(1.0)).fold(1.0, f64::max) * 2.0;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "p99 latency against throughput as clients grow (labels: clients)",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..right, (lo..hi).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("acknowledged ops/s")
            .y_desc("p99 µs")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, ((_, label), (protocol, mut points))) in curves.into_iter().enumerate() {
            points.sort_by_key(|r| r.concurrency);
            let c = colour(&protocol, &names);
            // Cluster sizes and transports of one protocol share its colour; dashes tell them
            // apart.
            let style = if i % 2 == 0 {
                c.stroke_width(3)
            } else {
                c.stroke_width(2)
            };
            let xy: Vec<(f64, f64)> = points
                .iter()
                .map(|r| (r.ops_per_sec, r.p99_us.max(1.0)))
                .collect();
            chart
                .draw_series(LineSeries::new(xy.clone(), style))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(3))
                });
            chart
                .draw_series(points.iter().zip(&xy).map(|(r, &(x, y))| {
                    EmptyElement::at((x, y))
                        + Circle::new((0, 0), 5, c.filled())
                        + Text::new(r.concurrency.to_string(), (6, -16), ("sans-serif", 13))
                }))
                .map_err(|e| err(&e))?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// A labelled line of a chart: its label, colour and points.
type Series = (String, RGBColor, Vec<(f64, f64)>);

/// One line per crash row: acknowledged ops/s in each window, against the time from the
/// crash; the label names the cluster size when a protocol ran on several, and TCP.
fn crash_series(crashes: &[&FaultRow], names: &[&str]) -> Vec<Series> {
    let window_ms = FAULT_WINDOW.as_secs_f64() * 1e3;
    let per_sec = 1e3 / window_ms;
    crashes
        .iter()
        .map(|f| {
            let mut label = f.protocol.clone();
            if crashes
                .iter()
                .any(|o| o.protocol == f.protocol && o.nodes != f.nodes)
            {
                label.push_str(&format!(", {} nodes", f.nodes));
            }
            if f.transport == TransportKind::Tcp {
                label.push_str(", tcp");
            }
            let points = f
                .acks_per_window
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    (
                        (i as f64 + 0.5) * window_ms - f.fault_at_ms,
                        *n as f64 * per_sec,
                    )
                })
                .collect();
            (label, colour(&f.protocol, names), points)
        })
        .collect()
}

/// Throughput around the crash: acknowledged ops/s in each 10 ms window, against the time from
/// the crash, one line per protocol (crash rows of the fault scenarios only).
pub fn crash(faults: &[FaultRow]) -> Result<String, BenchError> {
    let crashes: Vec<&FaultRow> = faults
        .iter()
        .filter(|f| f.scenario == "crash" && f.crashed.is_some() && !f.acks_per_window.is_empty())
        .collect();
    let names = protocols(crashes.iter().map(|f| f.protocol.as_str()));
    let series = crash_series(&crashes, &names);
    let xs = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(x, _)| *x));
    let (left, right) = xs.fold((0.0_f64, 1.0_f64), |(a, b), x| (a.min(x), b.max(x)));
    let top = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0, f64::max)
        * 1.1;
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Throughput around the leader's or coordinator's crash (ops/s per 10 ms window)",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(left..right, 0.0..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("ms from the crash")
            .y_desc("ops/s")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (0.0, top)],
                BLACK.stroke_width(2),
            )))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                "crash",
                (0.0, top * 0.97),
                ("sans-serif", 15),
            )))
            .map_err(|e| err(&e))?;
        for (label, c, points) in series {
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(3))
                });
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Theory;

    fn row(protocol: &str, nodes: usize, concurrency: usize, ops_per_sec: f64) -> Row {
        Row {
            protocol: protocol.into(),
            transport: TransportKind::Memory,
            durable: false,
            nodes,
            concurrency,
            ops: 1_000,
            errors: 0,
            elapsed_secs: 1.0,
            ops_per_sec,
            p50_us: 50.0 * concurrency as f64,
            p99_us: 200.0 * concurrency as f64,
            p999_us: 900.0 * concurrency as f64,
            max_us: 2_000.0 * concurrency as f64,
            msgs_per_op: 4.0,
            bytes_per_op: 100.0,
            records_per_op: 1.0,
            syncs_per_op: 0.0,
            theory: Theory::replicated_log(nodes),
            finding: None,
        }
    }

    fn rows() -> Vec<Row> {
        let mut rows = Vec::new();
        for (p, speed) in [
            ("raft", 30_000.0),
            ("multi-paxos", 20_000.0),
            ("2pc", 9_000.0),
        ] {
            for nodes in [3, 5] {
                for c in [1, 32] {
                    rows.push(row(p, nodes, c, speed * c as f64 / nodes as f64));
                }
            }
        }
        rows
    }

    /// Parses `svg` as XML and returns every piece of text in it.
    fn texts(svg: &str) -> String {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc.descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Lines of more than two points: data series (axes, grid lines and legend marks have two).
    fn series_lines(svg: &str) -> usize {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .filter(|n| {
                n.attribute("points")
                    .is_some_and(|p| p.split_whitespace().count() > 2)
            })
            .count()
    }

    #[test]
    fn throughput_groups_by_configuration_with_a_legend() {
        let text = texts(&throughput(&rows()).unwrap());
        for name in [
            "raft",
            "multi-paxos",
            "2pc",
            "memory · 3 nodes · 32 clients",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert!(text.contains("Throughput"));
    }

    #[test]
    fn latency_shows_the_three_percentiles_on_a_log_scale() {
        let svg = latency(&rows()).unwrap();
        let text = texts(&svg);
        assert!(
            text.contains("p99.9") && text.contains("log scale"),
            "{text}"
        );
        for name in ["raft", "multi-paxos", "2pc"] {
            assert!(text.contains(name), "{name} missing");
        }
        // Three marks per row: a circle (p50), a triangle (p99), a square (p99.9).
        assert!(svg.matches("<circle").count() >= rows().len());
    }

    #[test]
    fn sweep_draws_one_curve_per_protocol_and_size() {
        let mut rows = Vec::new();
        for c in [1, 4, 16, 64] {
            rows.push(row("raft", 3, c, 1_000.0 * c as f64));
            rows.push(row("multi-paxos", 3, c, 800.0 * c as f64));
        }
        let svg = sweep(&rows).unwrap();
        let text = texts(&svg);
        assert!(
            text.contains("raft") && text.contains("multi-paxos"),
            "{text}"
        );
        assert!(!text.contains("3 nodes"), "one size: no size in the labels");
        assert!(text.contains("64"), "points labelled with their clients");
        assert_eq!(series_lines(&svg), 2, "one line per protocol");
        rows.push(row("raft", 5, 1, 900.0));
        assert!(texts(&sweep(&rows).unwrap()).contains("raft, 5 nodes"));
    }

    #[test]
    fn crash_draws_a_time_series_per_protocol() {
        let fault = |protocol: &str, acks: Vec<u64>| FaultRow {
            protocol: protocol.into(),
            transport: TransportKind::Memory,
            nodes: 3,
            concurrency: 32,
            scenario: "crash".into(),
            crashed: Some(1),
            ops_before: 1,
            ops_after: 1,
            unavailable_ms: Some(50.0),
            blocked: 0,
            failed: 0,
            undecided_at_end: None,
            conflicts_at_end: None,
            note: String::new(),
            fault_at_ms: 30.0,
            acks_per_window: acks,
        };
        let faults = vec![
            fault("raft", vec![10, 12, 11, 0, 0, 9, 10]),
            fault("2pc", vec![5, 5, 6, 0, 0, 0, 0]),
        ];
        let svg = crash(&faults).unwrap();
        let text = texts(&svg);
        assert!(
            text.contains("raft") && text.contains("2pc") && text.contains("crash"),
            "{text}"
        );
        assert_eq!(series_lines(&svg), 2);
        // No crash rows: still a valid (empty) chart.
        texts(&crash(&[]).unwrap());
    }

    #[test]
    fn colours_stay_with_their_protocol() {
        assert_eq!(colour("raft", &[]), colour("raft", &["x", "raft"]));
        assert_ne!(colour("raft", &[]), colour("multi-paxos", &[]));
        assert_ne!(colour("x", &["x", "y"]), colour("y", &["x", "y"]));
    }
}
