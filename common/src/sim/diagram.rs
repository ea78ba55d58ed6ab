//! Mermaid sequence diagrams of a recorded trace.
//!
//! [`render`] turns [`TraceEvent`]s (recorded with [`super::SimConfig::record_trace`]) into a
//! Mermaid `sequenceDiagram`: one lifeline per node (and per client), delivered messages as solid
//! arrows labelled `[sent..arrived] message`, lost messages as arrows ending in a cross, client
//! requests (`r<id>`) as arrows from the client and answers as dashed arrows back, and crashes, restarts, network faults and failed requests as
//! notes. Retries fold: a message that repeats on its link while nothing else happens between
//! its two nodes is drawn once, `[first..last] label ×n` (see `Body`). A time window and a node
//! filter keep a diagram of a long run readable; paste the output into any Markdown viewer that
//! renders Mermaid.
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
        None => nodes_in(&in_window),
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

    let mut body = Body::new(options.lines_max);
    for e in &in_window {
        add_event(&mut body, e, options, &span);
    }
    let left_out = body.left_out;
    body.write(&mut out);
    if left_out > 0 && !span.is_empty() {
        let _ = writeln!(
            out,
            "    Note over {span}: {left_out} more events left out (lines_max)"
        );
    }
    out
}

/// Every node a message, crash, restart, client or event in `events` involves, sorted.
fn nodes_in(events: &[&TraceEvent]) -> Vec<NodeId> {
    let mut set = BTreeSet::new();
    for e in events {
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

/// Adds the diagram line(s) of one trace event to `body`, if `options` show it.
// Over 80 lines: one flat arm per kind of trace event, each a line of the diagram.
fn add_event(body: &mut Body, e: &TraceEvent, options: &DiagramOptions, span: &str) {
    let shown = |n: NodeId| options.nodes.as_ref().is_none_or(|v| v.contains(&n));
    let t = e.time;
    match &e.kind {
        TraceKind::Deliver {
            from,
            to,
            label,
            sent,
        } if shown(*from) && shown(*to) => body.message(Message {
            from: *from,
            to: *to,
            arrow: "->>",
            label: escape(label),
            reason: None,
            first: *sent,
            last: t,
        }),
        TraceKind::Drop {
            from,
            to,
            label,
            reason,
        } if options.drops && shown(*from) && shown(*to) => body.message(Message {
            from: *from,
            to: *to,
            arrow: "-x",
            label: escape(label),
            reason: Some(drop_reason(*reason)),
            first: t,
            last: t,
        }),
        TraceKind::Crash {
            node,
            unsynced_lost,
            effects_lost,
            ..
        } if shown(*node) => body.note(Some(*node), format!(
            "    Note over n{node}: [{t}] CRASH (lost {unsynced_lost} unsynced records, {effects_lost} unsent effects)"
        )),
        TraceKind::Restart { node, records } if shown(*node) => body.note(
            Some(*node),
            format!("    Note over n{node}: [{t}] restart from {records} records"),
        ),
        TraceKind::Network { description } if !span.is_empty() => body.note(
            None,
            format!("    Note over {span}: [{t}] {}", escape(description)),
        ),
        TraceKind::Invoke {
            client,
            node,
            id,
            label,
        } if options.clients && shown(*node) => body.text(format!(
            "    c{client}->>n{node}: [{t}] r{} {}",
            id.0,
            escape(label)
        )),
        TraceKind::Complete {
            client,
            node,
            id,
            label,
        } if options.clients && shown(*node) => body.text(format!(
            "    n{node}-->>c{client}: [{t}] r{} {}",
            id.0,
            escape(label)
        )),
        TraceKind::ClientFailed {
            client,
            node,
            id,
            reason,
        } if options.clients && shown(*node) => body.text(format!(
            "    Note over c{client}: [{t}] r{} {}",
            id.0,
            escape(reason)
        )),
        TraceKind::Event { node, label } if options.events && shown(*node) => body.text(
            format!("    Note right of n{node}: [{t}] {}", escape(label)),
        ),
        TraceKind::InvariantFailed { name, message } if !span.is_empty() => body.note(
            None,
            format!(
                "    Note over {span}: [{t}] INVARIANT {} FAILED: {}",
                escape(name),
                escape(message)
            ),
        ),
        _ => {}
    }
}

/// One message arrow of the diagram; repeats of it fold into one line.
struct Message {
    from: NodeId,
    to: NodeId,
    /// `->>` delivered, `-x` lost.
    arrow: &'static str,
    label: String,
    /// Why it was lost.
    reason: Option<&'static str>,
    /// When the first copy was sent (delivered) or lost.
    first: u64,
    /// When the last copy arrived or was lost.
    last: u64,
}

impl Message {
    fn same_as(&self, other: &Message) -> bool {
        self.from == other.from
            && self.to == other.to
            && self.arrow == other.arrow
            && self.reason == other.reason
            && self.label == other.label
    }

    fn touches(&self, node: NodeId) -> bool {
        self.from == node || self.to == node
    }

    fn same_pair(&self, other: &Message) -> bool {
        (self.from == other.from && self.to == other.to)
            || (self.from == other.to && self.to == other.from)
    }
}

enum Line {
    Text(String),
    /// A message and how many times it repeated with nothing in between on its link.
    Message(Message, usize),
}

/// The diagram's lines, with retries folded: a message that repeats (same sender, receiver,
/// label and fate) while nothing else happens between its two nodes becomes one line
/// `[first..last] label ×n`, where it first appeared. Anything else on that pair of nodes (an
/// answer, another message), a crash or restart of either node, or a network change ends the
/// run of repeats. Client lines and events do not: they interleave with everything.
struct Body {
    lines: Vec<Line>,
    /// Indexes into `lines` of the messages still open to repeats.
    open: Vec<usize>,
    lines_max: usize,
    left_out: usize,
}

impl Body {
    fn new(lines_max: usize) -> Self {
        Body {
            lines: Vec::new(),
            open: Vec::new(),
            lines_max,
            left_out: 0,
        }
    }

    fn push(&mut self, line: Line) -> bool {
        if self.lines.len() >= self.lines_max {
            self.left_out += 1;
            return false;
        }
        self.lines.push(line);
        true
    }

    fn message(&mut self, m: Message) {
        let lines = &mut self.lines;
        let repeat = self
            .open
            .iter()
            .copied()
            .find(|&i| matches!(&lines[i], Line::Message(open, _) if open.same_as(&m)));
        if let Some(i) = repeat {
            if let Line::Message(open, count) = &mut lines[i] {
                open.last = m.last;
                *count += 1;
            }
            return;
        }
        self.open
            .retain(|&i| !matches!(&lines[i], Line::Message(open, _) if open.same_pair(&m)));
        if self.push(Line::Message(m, 1)) {
            self.open.push(self.lines.len() - 1);
        }
    }

    /// A note about `node` (crash, restart) or, with `None`, about everyone (network change).
    fn note(&mut self, node: Option<NodeId>, text: String) {
        let lines = &self.lines;
        self.open.retain(|&i| match (&lines[i], node) {
            (Line::Message(open, _), Some(node)) => !open.touches(node),
            _ => false,
        });
        self.push(Line::Text(text));
    }

    fn text(&mut self, text: String) {
        self.push(Line::Text(text));
    }

    fn write(self, out: &mut String) {
        for line in self.lines {
            match line {
                Line::Text(text) => out.push_str(&text),
                Line::Message(m, count) => {
                    let _ = write!(out, "    n{}{}n{}: [{}", m.from, m.arrow, m.to, m.first);
                    if m.arrow == "->>" || m.last != m.first {
                        let _ = write!(out, "..{}", m.last);
                    }
                    let _ = write!(out, "] {}", m.label);
                    if count > 1 {
                        let _ = write!(out, " ×{count}");
                    }
                    if let Some(reason) = m.reason {
                        let _ = write!(out, " ({reason})");
                    }
                }
            }
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::TraceKind;

    fn drop(time: u64, from: NodeId, to: NodeId, label: &str) -> TraceEvent {
        TraceEvent {
            time,
            step: time,
            kind: TraceKind::Drop {
                from,
                to,
                label: label.into(),
                reason: DropReason::Partitioned,
            },
        }
    }

    fn deliver(time: u64, sent: u64, from: NodeId, to: NodeId, label: &str) -> TraceEvent {
        TraceEvent {
            time,
            step: time,
            kind: TraceKind::Deliver {
                from,
                to,
                label: label.into(),
                sent,
            },
        }
    }

    fn body(trace: &[TraceEvent]) -> Vec<String> {
        render(trace, &DiagramOptions::default())
            .lines()
            .filter(|l| !l.contains("participant") && !l.starts_with("sequenceDiagram"))
            .map(|l| l.trim().to_string())
            .collect()
    }

    #[test]
    fn retries_on_interleaved_links_fold_where_they_first_appear() {
        let trace = [
            drop(25, 1, 3, "PreCommit"),
            drop(25, 1, 4, "PreCommit"),
            deliver(30, 26, 3, 4, "StateRequest"),
            drop(38, 1, 3, "PreCommit"),
            drop(38, 1, 4, "PreCommit"),
            drop(59, 1, 3, "PreCommit"),
        ];
        assert_eq!(
            body(&trace),
            [
                "n1-xn3: [25..59] PreCommit ×3 (partitioned)",
                "n1-xn4: [25..38] PreCommit ×2 (partitioned)",
                "n3->>n4: [26..30] StateRequest",
            ]
        );
    }

    #[test]
    fn an_answer_or_a_network_change_ends_the_repeats() {
        let trace = [
            deliver(15, 10, 1, 2, "Prepare"),
            deliver(20, 15, 2, 1, "Promise"),
            deliver(25, 20, 1, 2, "Prepare"),
            deliver(35, 30, 1, 2, "Prepare"),
            TraceEvent {
                time: 40,
                step: 40,
                kind: TraceKind::Network {
                    description: "heal".into(),
                },
            },
            deliver(45, 40, 1, 2, "Prepare"),
        ];
        assert_eq!(
            body(&trace),
            [
                "n1->>n2: [10..15] Prepare",
                "n2->>n1: [15..20] Promise",
                "n1->>n2: [20..35] Prepare ×2",
                "Note over n1,n2: [40] heal",
                "n1->>n2: [40..45] Prepare",
            ]
        );
    }

    #[test]
    fn a_crash_ends_the_repeats_of_the_crashed_node_only() {
        let trace = [
            drop(5, 1, 2, "Ping"),
            drop(5, 3, 2, "Ping"),
            TraceEvent {
                time: 6,
                step: 6,
                kind: TraceKind::Crash {
                    node: 1,
                    unsynced_kept: 0,
                    unsynced_lost: 0,
                    effects_lost: 0,
                },
            },
            drop(7, 1, 2, "Ping"),
            drop(7, 3, 2, "Ping"),
        ];
        let lines = body(&trace);
        assert_eq!(lines[0], "n1-xn2: [5] Ping (partitioned)");
        assert_eq!(lines[1], "n3-xn2: [5..7] Ping ×2 (partitioned)");
        assert_eq!(lines[3], "n1-xn2: [7] Ping (partitioned)");
        assert_eq!(lines.len(), 4);
    }
}
