//! Mermaid sequence diagrams of a recorded trace.
//!
//! [`render`] turns [`TraceEvent`]s (recorded with [`super::SimConfig::record_trace`]) into a
//! Mermaid `sequenceDiagram`: one lifeline per node (and per client), delivered messages as solid
//! arrows labelled `[sent..arrived] message`, lost messages as arrows ending in a cross, client
//! requests (`r<id>`) as arrows from the client and answers as dashed arrows back, and crashes, restarts, network faults and failed requests as
//! notes. A time window and a node filter keep a diagram of a long run readable; paste the
//! output into any Markdown viewer that renders Mermaid.
//!
//! ```
//! use common::sim::diagram::{render, DiagramOptions};
//! use common::sim::{TraceEvent, TraceKind};
//! let trace = vec![
//!     TraceEvent { time: 3, step: 1, kind: TraceKind::Deliver { from: 1, to: 2, label: "Ping".into(), sent: 1 } },
//!     TraceEvent { time: 5, step: 2, kind: TraceKind::Crash { node: 2, unsynced_kept: 0, unsynced_lost: 0, effects_lost: 1 } },
//! ];
//! let text = render(&trace, &DiagramOptions::default());
//! assert!(text.starts_with("sequenceDiagram"));
//! assert!(text.contains("n1->>n2: [1..3] Ping"));
//! ```

use std::collections::BTreeSet;
use std::fmt::Write;

use super::net::DropReason;
use super::trace::{TraceEvent, TraceKind};
use crate::NodeId;

/// Default for [`DiagramOptions::lines_max`].
pub const DIAGRAM_LINES_MAX_DEFAULT: usize = 2_000;

/// What [`render`] shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagramOptions {
    /// Earliest virtual time shown.
    pub from: u64,
    /// Latest virtual time shown.
    pub to: u64,
    /// Only these nodes (messages between two of them, their crashes and clients); `None`: all.
    pub nodes: Option<Vec<NodeId>>,
    /// Show client requests and answers (with a lifeline per client).
    pub clients: bool,
    /// Show lost messages.
    pub drops: bool,
    /// Show events published by nodes.
    pub events: bool,
    /// Stop after this many lines (a final note says how many events were left out).
    pub lines_max: usize,
}

impl Default for DiagramOptions {
    fn default() -> Self {
        Self {
            from: 0,
            to: u64::MAX,
            nodes: None,
            clients: true,
            drops: true,
            events: false,
            lines_max: DIAGRAM_LINES_MAX_DEFAULT,
        }
    }
}

/// Makes `text` safe inside a Mermaid message or note: characters Mermaid reads as syntax
/// (`;`, `#`, `<`, `>`, line breaks) become entity codes or spaces.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '#' => out.push_str("#35;"),
            ';' => out.push_str("#59;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn drop_reason(reason: DropReason) -> &'static str {
    match reason {
        DropReason::Partitioned => "partitioned",
        DropReason::Lost => "lost",
        DropReason::NodeDown => "node down",
        DropReason::UnknownNode => "unknown node",
    }
}

/// Renders `trace` as a Mermaid `sequenceDiagram` (see the module documentation).
pub fn render(trace: &[TraceEvent], options: &DiagramOptions) -> String {
    let shown = |n: NodeId| options.nodes.as_ref().is_none_or(|v| v.contains(&n));
    let in_window: Vec<&TraceEvent> = trace
        .iter()
        .filter(|e| e.time >= options.from && e.time <= options.to)
        .collect();

    // Lifelines: the filter's nodes in its order, else every node in the window, sorted.
    let nodes: Vec<NodeId> = match &options.nodes {
        Some(v) => v.clone(),
        None => {
            let mut set = BTreeSet::new();
            for e in &in_window {
                match &e.kind {
                    TraceKind::Send { from, to, .. }
                    | TraceKind::Duplicate { from, to, .. }
                    | TraceKind::Deliver { from, to, .. }
                    | TraceKind::Drop { from, to, .. } => {
                        set.insert(*from);
                        set.insert(*to);
                    }
                    TraceKind::Crash { node, .. }
                    | TraceKind::Restart { node, .. }
                    | TraceKind::Invoke { node, .. }
                    | TraceKind::Complete { node, .. }
                    | TraceKind::ClientFailed { node, .. }
                    | TraceKind::Event { node, .. } => {
                        set.insert(*node);
                    }
                    TraceKind::Network { .. } | TraceKind::InvariantFailed { .. } => {}
                }
            }
            set.into_iter().collect()
        }
    };
    let mut clients = BTreeSet::new();
    if options.clients {
        for e in &in_window {
            match &e.kind {
                TraceKind::Invoke { client, node, .. }
                | TraceKind::Complete { client, node, .. }
                | TraceKind::ClientFailed { client, node, .. }
                    if shown(*node) =>
                {
                    clients.insert(*client);
                }
                _ => {}
            }
        }
    }

    let mut out = String::from("sequenceDiagram\n");
    for c in &clients {
        let _ = writeln!(out, "    participant c{c} as client {c}");
    }
    for n in &nodes {
        let _ = writeln!(out, "    participant n{n} as node {n}");
    }
    let span = match (nodes.first(), nodes.last()) {
        (Some(a), Some(b)) if a != b => format!("n{a},n{b}"),
        (Some(a), _) => format!("n{a}"),
        _ => String::new(),
    };

    let mut lines = 0usize;
    let mut left_out = 0usize;
    for e in &in_window {
        let t = e.time;
        let line = match &e.kind {
            TraceKind::Deliver {
                from,
                to,
                label,
                sent,
            } if shown(*from) && shown(*to) => Some(format!(
                "    n{from}->>n{to}: [{sent}..{t}] {}",
                escape(label)
            )),
            TraceKind::Drop {
                from,
                to,
                label,
                reason,
            } if options.drops && shown(*from) && shown(*to) => Some(format!(
                "    n{from}-xn{to}: [{t}] {} ({})",
                escape(label),
                drop_reason(*reason)
            )),
            TraceKind::Crash {
                node,
                unsynced_lost,
                effects_lost,
                ..
            } if shown(*node) => Some(format!(
                "    Note over n{node}: [{t}] CRASH (lost {unsynced_lost} unsynced records, {effects_lost} unsent effects)"
            )),
            TraceKind::Restart { node, records } if shown(*node) => Some(format!(
                "    Note over n{node}: [{t}] restart from {records} records"
            )),
            TraceKind::Network { description } if !span.is_empty() => Some(format!(
                "    Note over {span}: [{t}] {}",
                escape(description)
            )),
            TraceKind::Invoke {
                client,
                node,
                id,
                label,
            } if options.clients && shown(*node) => Some(format!(
                "    c{client}->>n{node}: [{t}] r{} {}",
                id.0,
                escape(label)
            )),
            TraceKind::Complete {
                client,
                node,
                id,
                label,
            } if options.clients && shown(*node) => Some(format!(
                "    n{node}-->>c{client}: [{t}] r{} {}",
                id.0,
                escape(label)
            )),
            TraceKind::ClientFailed {
                client,
                node,
                id,
                reason,
            } if options.clients && shown(*node) => Some(format!(
                "    Note over c{client}: [{t}] r{} {}",
                id.0,
                escape(reason)
            )),
            TraceKind::Event { node, label } if options.events && shown(*node) => Some(format!(
                "    Note right of n{node}: [{t}] {}",
                escape(label)
            )),
            TraceKind::InvariantFailed { name, message } if !span.is_empty() => Some(format!(
                "    Note over {span}: [{t}] INVARIANT {} FAILED: {}",
                escape(name),
                escape(message)
            )),
            _ => None,
        };
        if let Some(line) = line {
            if lines >= options.lines_max {
                left_out += 1;
                continue;
            }
            out.push_str(&line);
            out.push('\n');
            lines += 1;
        }
    }
    if left_out > 0 && !span.is_empty() {
        let _ = writeln!(
            out,
            "    Note over {span}: {left_out} more events left out (lines_max)"
        );
    }
    out
}
