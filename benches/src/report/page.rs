//! The shootout's report page: one self-contained static HTML file (`index.html` beside the
//! tables) with the machine, the setup, how to reproduce the run, the charts inlined as SVG, and
//! every table. It loads nothing: no script, style sheet, font or image from anywhere, so it
//! opens from disk, offline, in any browser.

use std::fmt::Write as _;

use super::charts;
use super::table::{cells, fault_cells, COLUMNS, FAULT_COLUMNS};
use super::Report;
use crate::BenchError;

/// The charts of one shootout run, as SVG documents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Charts {
    /// Throughput grouped by configuration ([`charts::throughput`]).
    pub throughput: Option<String>,
    /// Latency percentiles ([`charts::latency`]).
    pub latency: Option<String>,
    /// The latency–throughput curves ([`charts::sweep`]), for a sweep of concurrency levels.
    pub sweep: Option<String>,
    /// Throughput around the crash ([`charts::crash`]), when the fault scenarios ran.
    pub crash: Option<String>,
}

impl Charts {
    /// Draws the charts `report` has data for; the sweep only when `sweep` (the run varied
    /// the clients on purpose) and there are at least two concurrency levels.
    pub fn of(report: &Report, sweep: bool) -> Result<Self, BenchError> {
        let rows = &report.rows;
        let levels = {
            let mut v: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
            v.sort_unstable();
            v.dedup();
            v.len()
        };
        let crashes = report
            .faults
            .iter()
            .any(|f| f.scenario == "crash" && !f.acks_per_window.is_empty());
        Ok(Self {
            throughput: (!rows.is_empty())
                .then(|| charts::throughput(rows))
                .transpose()?,
            latency: (!rows.is_empty())
                .then(|| charts::latency(rows))
                .transpose()?,
            sweep: (sweep && levels >= 2)
                .then(|| charts::sweep(rows))
                .transpose()?,
            crash: crashes.then(|| charts::crash(&report.faults)).transpose()?,
        })
    }

    /// Each chart with its file name (`shootout-<name>.svg`) and caption.
    pub fn named(&self) -> Vec<(&'static str, &'static str, &str)> {
        [
            (
                "throughput",
                "Throughput by configuration, one colour per protocol.",
                &self.throughput,
            ),
            (
                "latency",
                "Latency percentiles (p50, p99, p99.9) on a log scale.",
                &self.latency,
            ),
            (
                "sweep",
                "Latency against throughput as the clients grow: where each protocol's curve \
                 turns up is where it saturates.",
                &self.sweep,
            ),
            (
                "crash",
                "Throughput in 10 ms windows around the crash of the leader or coordinator.",
                &self.crash,
            ),
        ]
        .into_iter()
        .filter_map(|(name, caption, svg)| svg.as_deref().map(|s| (name, caption, s)))
        .collect()
    }
}

/// Escapes `text` for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn table(out: &mut String, columns: &[&str], body: &[Vec<String>], names: usize) {
    out.push_str("<table>\n<thead><tr>");
    for c in columns {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in body {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if i < names { "" } else { " class=\"num\"" };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

/// An SVG document ready to sit inside HTML: without an XML declaration, if it had one.
fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(at) => &svg[at..],
        None => svg,
    }
}

const STYLE: &str = "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
color:#1f2328;max-width:1280px;margin:24px auto;padding:0 16px}\
h1{font-size:26px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #d0d7de}\
table{border-collapse:collapse;font-size:13px;margin:8px 0}\
th,td{border:1px solid #d0d7de;padding:3px 7px}th{background:#f6f8fa}\
td.num{text-align:right;font-variant-numeric:tabular-nums}\
figure{margin:16px 0}figure svg{max-width:100%;height:auto;border:1px solid #d0d7de}\
figcaption{color:#656d76;font-size:13px}pre,code{font-family:ui-monospace,Menlo,monospace}\
pre{background:#f6f8fa;padding:8px;overflow:auto;white-space:pre-wrap}#summary{display:none}";

/// A script of the page itself (inline; the page loads nothing): it counts what the page
/// shows and any script error into `#summary`, for the browser test and anyone curious.
const SUMMARY_SCRIPT: &str = "<script>\n\
var errors=[];window.addEventListener('error',function(e){errors.push(String(e.message));write();});\n\
function write(){var s=document.getElementById('summary');if(!s)return;\n\
s.textContent=JSON.stringify({errors:errors,charts:document.querySelectorAll('figure svg').length,\n\
tables:document.querySelectorAll('table').length,\n\
chart_names:Array.prototype.map.call(document.querySelectorAll('figure'),function(f){return f.id;})});}\n\
write();\n</script>\n";

/// The report page: `report`, its `charts` and the command that reproduces the run.
pub fn html(report: &Report, charts: &Charts, command: &str) -> String {
    let mut out =
        String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(
        out,
        "<title>Shootout report</title>\n<style>{STYLE}</style>\n</head>\n<body>"
    );
    out.push_str("<h1>Shootout</h1>\n");
    let m = &report.machine;
    let _ = writeln!(
        out,
        "<p><b>Machine:</b> {} cores, {}{}{}.</p>\n<p><b>Setup:</b> {}</p>",
        m.cores,
        escape(&m.os),
        m.kernel
            .as_ref()
            .map_or(String::new(), |k| format!(", kernel {}", escape(k))),
        m.rustc
            .as_ref()
            .map_or(String::new(), |r| format!(", {}", escape(r))),
        escape(&report.setup)
    );
    let _ = writeln!(
        out,
        "<p><b>Reproduce:</b></p>\n<pre>{}</pre>\n<p>Figures differ from machine to machine and \
         run to run; compare protocols within one report, not across reports.</p>",
        escape(command)
    );
    for (name, caption, svg) in charts.named() {
        let _ = writeln!(
            out,
            "<figure id=\"chart-{name}\">\n{}\n<figcaption>{}</figcaption>\n</figure>",
            inline_svg(svg),
            escape(caption)
        );
    }
    if !report.rows.is_empty() {
        out.push_str("<h2>Steady state</h2>\n");
        let body: Vec<Vec<String>> = report.rows.iter().map(|r| cells(r).to_vec()).collect();
        table(&mut out, &COLUMNS, &body, 3);
    }
    if !report.findings.is_empty() {
        out.push_str("<h2>Findings: measurement against theory</h2>\n<ul>\n");
        for f in &report.findings {
            let _ = writeln!(out, "<li>{}</li>", escape(f));
        }
        out.push_str("</ul>\n");
    }
    faults_section(&mut out, report);
    if !report.hashring.is_empty() {
        let _ = writeln!(
            out,
            "<h2>Consistent hashing</h2>\n<pre>{}</pre>",
            escape(&crate::hashring::format_table(&report.hashring))
        );
    }
    out.push_str("<pre id=\"summary\"></pre>\n");
    out.push_str(SUMMARY_SCRIPT);
    out.push_str("</body>\n</html>\n");
    out
}

/// The fault scenarios' table and notes, when they ran.
fn faults_section(out: &mut String, report: &Report) {
    if report.faults.is_empty() {
        return;
    }
    out.push_str("<h2>Faults: a crash, and slow links</h2>\n");
    let body: Vec<Vec<String>> = report
        .faults
        .iter()
        .map(|r| fault_cells(r).to_vec())
        .collect();
    table(out, &FAULT_COLUMNS, &body, 3);
    out.push_str("<ul>\n");
    for r in &report.faults {
        let _ = writeln!(
            out,
            "<li>{} ({}), {} nodes: {}</li>",
            escape(&r.protocol),
            escape(&r.scenario),
            r.nodes,
            escape(&r.note)
        );
    }
    out.push_str("</ul>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Machine;

    #[test]
    fn escape_covers_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn an_empty_report_is_a_page_without_charts() {
        let report = Report {
            machine: Machine {
                cores: 2,
                os: "linux <x86_64>".into(),
                kernel: None,
                rustc: None,
            },
            setup: "nothing".into(),
            rows: Vec::new(),
            findings: Vec::new(),
            faults: Vec::new(),
            hashring: Vec::new(),
        };
        let charts = Charts::of(&report, true).unwrap();
        assert!(charts.named().is_empty());
        let page = html(&report, &charts, "shootout --quick");
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
        assert!(page.contains("linux &lt;x86_64&gt;"));
        assert!(!page.contains("<figure"));
        // Nothing is loaded from anywhere.
        for outside in ["src=", "href=", "url(", "@import"] {
            assert!(!page.contains(outside), "{outside}");
        }
    }
}
