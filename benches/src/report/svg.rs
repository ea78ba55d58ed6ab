//! The shootout's overview chart (`shootout.svg`): throughput and p99 latency, one bar per row.

use crate::{BenchError, Row, TransportKind};

/// Smallest size of the chart, in pixels.
pub const CHART_SIZE: (u32, u32) = (1600, 800);
/// Width given to each bar of the chart, in pixels, so its label fits beneath it.
pub const CHART_BAR_WIDTH: u32 = 115;

/// Renders an SVG chart of `rows`: throughput (top) and p99 latency (bottom), one bar per row.
pub fn render_svg(rows: &[Row]) -> Result<String, BenchError> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| BenchError::Invalid(format!("chart: {e}"));
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            let tcp = if r.transport == TransportKind::Tcp {
                " tcp"
            } else {
                ""
            };
            format!("{} {}n {}c{tcp}", r.protocol, r.nodes, r.concurrency)
        })
        .collect();
    let mut svg = String::new();
    {
        let width = CHART_SIZE
            .0
            .max(CHART_BAR_WIDTH.saturating_mul(u32::try_from(rows.len()).unwrap_or(u32::MAX)));
        let root = SVGBackend::with_string(&mut svg, (width, CHART_SIZE.1)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let panels = root.split_evenly((2, 1));
        let figures: [(&str, Vec<f64>, RGBColor); 2] = [
            (
                "throughput (acknowledged ops/s, higher is better)",
                rows.iter().map(|r| r.ops_per_sec).collect(),
                RGBColor(31, 119, 180),
            ),
            (
                "p99 latency (µs, lower is better)",
                rows.iter().map(|r| r.p99_us).collect(),
                RGBColor(214, 39, 40),
            ),
        ];
        for (panel, (title, values, color)) in panels.iter().zip(figures) {
            let top = values.iter().cloned().fold(0.0_f64, f64::max).max(1.0) * 1.1;
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(60)
                .y_label_area_size(80)
                .build_cartesian_2d((0..values.len()).into_segmented(), 0.0..top)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(values.len().max(1))
                .x_label_style(("sans-serif", 10))
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                        labels.get(*i).cloned().unwrap_or_default()
                    }
                    SegmentValue::Last => String::new(),
                })
                .y_label_formatter(&|v| format!("{v:.0}"))
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_series(
                    Histogram::vertical(&chart)
                        .style(color.filled())
                        .margin(6)
                        .data(values.iter().enumerate().map(|(i, v)| (i, *v))),
                )
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
