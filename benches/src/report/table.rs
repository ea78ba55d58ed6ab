//! The shootout's tables as aligned text and as Markdown: the steady-state rows ([`COLUMNS`],
//! [`cells`]) and the fault rows ([`FAULT_COLUMNS`], [`render_faults`]).

use std::fmt::Write as _;

use crate::{FaultRow, Row};

/// The table's column headers.
pub const COLUMNS: [&str; 18] = [
    "protocol",
    "transport",
    "storage",
    "nodes",
    "clients",
    "ops",
    "errors",
    "ops/s",
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "max µs",
    "msgs/op",
    "bytes/op",
    "records/op",
    "syncs/op",
    "theory delays",
    "theory msgs/op",
];

/// The cells of `row`, in the order of [`COLUMNS`].
pub fn cells(row: &Row) -> [String; COLUMNS.len()] {
    [
        row.protocol.clone(),
        row.transport.name().to_string(),
        if row.durable { "wal+fsync" } else { "memory" }.to_string(),
        row.nodes.to_string(),
        row.concurrency.to_string(),
        row.ops.to_string(),
        row.errors.to_string(),
        format!("{:.0}", row.ops_per_sec),
        format!("{:.1}", row.p50_us),
        format!("{:.1}", row.p99_us),
        format!("{:.1}", row.p999_us),
        format!("{:.1}", row.max_us),
        format!("{:.2}", row.msgs_per_op),
        format!("{:.1}", row.bytes_per_op),
        format!("{:.2}", row.records_per_op),
        format!("{:.2}", row.syncs_per_op),
        row.theory.message_delays.to_string(),
        format!("{:.0}", row.theory.messages_per_op),
    ]
}

/// The cells of every row, for [`markdown_table`] and [`text_table`].
fn body(rows: &[Row]) -> Vec<Vec<String>> {
    rows.iter().map(|r| cells(r).to_vec()).collect()
}

/// Renders `rows` as a Markdown table (figures right-aligned).
pub fn render_markdown(rows: &[Row]) -> String {
    markdown_table(&COLUMNS, &body(rows), 3)
}

/// Renders `rows` as an aligned text table (one header line, one line per row): names
/// left-aligned, figures right-aligned.
pub fn render_table(rows: &[Row]) -> String {
    text_table(&COLUMNS, &body(rows), 3)
}

/// The fault table's column headers.
pub const FAULT_COLUMNS: [&str; 12] = [
    "scenario",
    "protocol",
    "transport",
    "nodes",
    "clients",
    "crashed",
    "ops before",
    "unavailable ms",
    "blocked",
    "failed",
    "undecided at end",
    "conflicts at end",
];

/// The cells of a fault row, in the order of [`FAULT_COLUMNS`].
pub(crate) fn fault_cells(row: &FaultRow) -> [String; FAULT_COLUMNS.len()] {
    [
        row.scenario.clone(),
        row.protocol.clone(),
        row.transport.name().to_string(),
        row.nodes.to_string(),
        row.concurrency.to_string(),
        row.crashed.map_or("-".into(), |id| format!("node {id}")),
        row.ops_before.to_string(),
        row.unavailable_ms
            .map_or("not recovered".into(), |ms| format!("{ms:.0}")),
        row.blocked.to_string(),
        row.failed.to_string(),
        row.undecided_at_end.map_or("-".into(), |n| n.to_string()),
        row.conflicts_at_end.map_or("-".into(), |n| n.to_string()),
    ]
}

/// Renders rows of any table as Markdown; the first `names` columns are left-aligned.
pub(crate) fn markdown_table(columns: &[&str], body: &[Vec<String>], names: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", columns.join(" | "));
    let align: Vec<&str> = (0..columns.len())
        .map(|i| if i < names { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for cells in body {
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// Renders rows of any table as aligned text; the first `names` columns are left-aligned.
pub(crate) fn text_table(columns: &[&str], body: &[Vec<String>], names: usize) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for cells in body {
        for (w, cell) in widths.iter_mut().zip(cells) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            if i < names {
                let _ = write!(text, "{cell}{:pad$}  ", "");
            } else {
                let _ = write!(text, "{:pad$}{cell}  ", "");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&columns.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    for cells in body {
        line(cells);
    }
    out
}

/// Renders the fault rows as aligned text (or Markdown).
pub fn render_faults(rows: &[FaultRow], markdown: bool) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(|r| fault_cells(r).to_vec()).collect();
    let mut out = if markdown {
        markdown_table(&FAULT_COLUMNS, &body, 3)
    } else {
        text_table(&FAULT_COLUMNS, &body, 3)
    };
    out.push('\n');
    for row in rows {
        let _ = writeln!(
            out,
            "{}{} ({}), {} nodes: {}",
            if markdown { "- " } else { "  " },
            row.protocol,
            row.scenario,
            row.nodes,
            row.note
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Theory, TransportKind};

    fn row(protocol: &str, ops: u64) -> Row {
        Row {
            protocol: protocol.into(),
            transport: TransportKind::Tcp,
            durable: true,
            nodes: 5,
            concurrency: 64,
            ops,
            errors: 1,
            elapsed_secs: 2.0,
            ops_per_sec: ops as f64 / 2.0,
            p50_us: 10.0,
            p99_us: 100.25,
            p999_us: 400.0,
            max_us: 1000.0,
            msgs_per_op: 4.0,
            bytes_per_op: 40.5,
            records_per_op: 1.0,
            syncs_per_op: 0.5,
            theory: Theory::replicated_log(5),
            finding: None,
        }
    }

    #[test]
    fn table_aligns_every_column() {
        let table = render_table(&[row("demo", 10), row("a-longer-name", 123_456)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("protocol     "));
        assert!(lines[2].starts_with("a-longer-name  tcp"));
        assert!(lines[1].contains("wal+fsync") && lines[2].contains("61728"));
        // Figures are right-aligned: every line ends at the same column.
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width), "{table}");
        assert_eq!(cells(&row("x", 1)).len(), COLUMNS.len());
    }
}
