//! The shootout's report: the machine it ran on and every figure ([`Report`]), rendered as tables
//! ([`table`]), JSON ([`json`]), the overview chart ([`svg`]), the detailed charts ([`charts`])
//! and the self-contained HTML page ([`page`]).

pub mod charts;
pub mod json;
pub mod page;
pub mod svg;
pub mod table;

use std::fmt::Write as _;

pub use page::{escape, html, Charts};

use crate::{hashring, FaultRow, Row};
use table::{render_faults, render_markdown};

/// The machine a report was produced on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Machine {
    /// Logical cores available to the process.
    pub cores: usize,
    /// Operating system and architecture (`linux x86_64`).
    pub os: String,
    /// The kernel release, when `uname -r` answers.
    pub kernel: Option<String>,
    /// `rustc --version`, when a compiler is on the path.
    pub rustc: Option<String>,
}

impl Machine {
    /// Describes the machine the process runs on.
    pub fn describe() -> Machine {
        let run = |cmd: &str, arg: &str| {
            std::process::Command::new(cmd)
                .arg(arg)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        };
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            kernel: run("uname", "-r"),
            rustc: run("rustc", "--version"),
        }
    }
}

/// Every figure of one shootout run, as written to the JSON file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Transports, storage, durations, in words.
    pub setup: String,
    /// The steady-state measurements.
    pub rows: Vec<Row>,
    /// Mismatches between measured and theoretical message counts.
    pub findings: Vec<String>,
    /// The crash scenario (empty when not run).
    pub faults: Vec<FaultRow>,
    /// The consistent-hashing comparison (empty when not run).
    pub hashring: Vec<hashring::Row>,
}

impl Report {
    /// Renders the whole report as Markdown: setup, table, findings, faults, hashring.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Shootout\n");
        let _ = writeln!(
            out,
            "Machine: {} cores, {}{}{}. {}\n",
            self.machine.cores,
            self.machine.os,
            self.machine
                .kernel
                .as_ref()
                .map_or(String::new(), |k| format!(", kernel {k}")),
            self.machine
                .rustc
                .as_ref()
                .map_or(String::new(), |r| format!(", {r}")),
            self.setup
        );
        out.push_str(&render_markdown(&self.rows));
        if !self.findings.is_empty() {
            let _ = writeln!(out, "\n## Findings: measurement against theory\n");
            for f in &self.findings {
                let _ = writeln!(out, "- {f}");
            }
        }
        if !self.faults.is_empty() {
            let _ = writeln!(out, "\n## Faults: a crash, and slow links\n");
            out.push_str(&render_faults(&self.faults, true));
        }
        if !self.hashring.is_empty() {
            let _ = writeln!(out, "\n## Consistent hashing\n\n```text");
            out.push_str(&hashring::format_table(&self.hashring));
            let _ = writeln!(out, "```");
        }
        out
    }
}
