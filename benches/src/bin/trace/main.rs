//! `trace`: runs a named, seeded scenario in the deterministic simulator (`common::sim`) and
//! prints the run as a Mermaid sequence diagram, or as JSON for the trace viewer.
//!
//! ```text
//! cargo run -p benches --bin trace -- raft-election
//! cargo run -p benches --bin trace -- --list
//! cargo run -p benches --bin trace -- 3pc-partition --markdown > docs/diagrams/3pc-partition.md
//! cargo run -p benches --bin trace -- 3pc-partition --json > docs/viewer/traces/3pc-partition.json
//! ```
//!
//! The JSON ([`benches::viewer::TraceFile`]) holds the whole run, every node from time 0 to the
//! end, whatever window the diagram shows: node roles and terms as the real cores reported them
//! after every step, every message with its send time, arrival time and fate, cut links,
//! crashes, restarts and client operations. `docs/viewer/index.html` animates it.
//!
//! Every scenario is deterministic: the same seed prints the same diagram, byte for byte. The
//! diagrams committed under `docs/diagrams/` are what this program prints with `--markdown` and
//! the default seed, and so are the JSON files under `docs/viewer/traces/` (with `--json`) and
//! `docs/viewer/traces.js`; `benches/tests/trace_diagrams.rs` fails when they drift apart
//! (`UPDATE_DIAGRAMS=1 cargo test -p benches --test trace_diagrams` rewrites them).
//!
//! Each scenario shows one thing and keeps the diagram readable with a time window and, where it
//! helps, a node filter ([`DiagramOptions`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::ExitCode;

use benches::viewer::{self, CutChange, NodeState, Observed, StateChange, TraceFile};
use clap::Parser;
use common::demo::{DemoConfig, DemoNode, DemoRequest};
use common::sim::diagram::{render, DiagramOptions};
use common::sim::{Fault, LinkConfig, Sim, SimConfig, SimError, TraceEvent};
use common::txn::Write;
use common::{Node as _, NodeId};

mod commit;
mod consensus;
mod sharded;

use commit::{
    threepc_coordinator_crash, threepc_partition, threepc_slow_network, twopc_coordinator_crash,
};
use consensus::{demo, paxos_duel, raft_election};
use sharded::twopc_raft_coordinator_crash;

/// One named scenario.
pub struct Scenario {
    /// The name given on the command line (and the diagram's file name).
    pub name: &'static str,
    /// What the diagram shows, one paragraph of Markdown.
    pub about: &'static str,
    /// The protocol, as a short name (the viewer's title).
    pub protocol: &'static str,
    /// What the cores' term means here (`term`, `ballot round`), if they have one.
    pub term_name: Option<&'static str>,
    run: fn(u64) -> Result<Run, SimError>,
}

/// One recorded run of a scenario: what the diagram and the JSON export are made from.
pub struct Run {
    /// The simulator's trace.
    pub trace: Vec<TraceEvent>,
    /// The nodes of the simulation.
    pub nodes: Vec<NodeId>,
    /// Virtual time at the end of the run.
    pub end: u64,
    /// Node states over time, read from the cores.
    pub states: Vec<StateChange>,
    /// Cut links over time.
    pub cuts: Vec<CutChange>,
    /// What the Mermaid diagram shows of it.
    pub window: DiagramOptions,
}

impl Run {
    fn of<N: common::Node>(run: Observed<N>, window: DiagramOptions) -> Self
    where
        N::Request: Clone,
    {
        let (states, cuts) = run.recorded();
        Self {
            trace: run.sim.trace().to_vec(),
            nodes: run.sim.config().nodes.clone(),
            end: run.sim.now(),
            states: states.to_vec(),
            cuts: cuts.to_vec(),
            window,
        }
    }
}

/// Every scenario, in the order `--list` prints them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "demo",
        protocol: "demo",
        term_name: None,
        about: "The demo replicated counter of `common::demo`: two `Add` requests, each \
                broadcast by the node that took it and applied everywhere.",
        run: demo,
    },
    Scenario {
        name: "raft-election",
        protocol: "raft",
        term_name: Some("term"),
        about: "Raft (§5.2): three nodes start as followers; the first whose randomized election \
                timeout fires asks for votes (pre-vote first, then the real vote) and becomes \
                leader; it appends its no-op and commits a client `Put`. Then the leader crashes: \
                the followers stop hearing heartbeats, one times out, wins the next term and \
                serves the next request.",
        run: raft_election,
    },
    Scenario {
        name: "paxos-duel",
        protocol: "paxos",
        term_name: Some("ballot round"),
        about: "Multi-Paxos with no election jitter: every replica raises its ballot in the \
                same round, so proposers duel from the first tick. Ballots tie on the round and \
                the node id breaks the tie, so the duel ends with one leader, which then chooses \
                a client command in one round trip of phase 2.",
        run: paxos_duel,
    },
    Scenario {
        name: "2pc-coordinator-crash",
        protocol: "2pc",
        term_name: None,
        about: "Two-phase commit blocks. Node 1 coordinates a transaction at participants 2, 3 \
                and 4. All vote Yes and the coordinator logs Commit, but its Commit messages \
                never leave (its outgoing links are cut) and it crashes. Every participant is \
                prepared and asks the coordinator (down) and its peers (prepared too): nobody \
                knows the outcome and none may decide alone, so they stay blocked, locks held, \
                until the coordinator restarts, finds its Commit record and finishes.",
        run: twopc_coordinator_crash,
    },
    Scenario {
        name: "3pc-coordinator-crash",
        protocol: "3pc",
        term_name: None,
        about: "Three-phase commit does not block on a coordinator crash (crash-stop, no \
                partitions). The coordinator collects three Yes votes and crashes before any \
                PreCommit leaves. The participants time out, elect the lowest id as backup \
                coordinator (the termination protocol), find everyone Uncertain and abort \
                without it.",
        run: threepc_coordinator_crash,
    },
    Scenario {
        name: "3pc-partition",
        protocol: "3pc",
        term_name: None,
        about: "Three-phase commit's known flaw: a partition is not a crash. The coordinator's \
                PreCommit reaches participant 2 and then the network splits {1, 2} from \
                {3, 4, 5}. Each side runs the termination protocol: the side with a \
                PreCommitted member commits, the side where everyone is Uncertain aborts. The \
                transaction commits at 2 and aborts at 3 and 4, and healing the partition does \
                not repair it.",
        run: threepc_partition,
    },
    Scenario {
        name: "3pc-slow-network",
        protocol: "3pc",
        term_name: None,
        about: "Three-phase commit on a slow network, with no loss, no crash and no partition \
                (`threepc::scenario::slow_network`). Right after the votes, the links from the \
                coordinator to the participants slow to 1,000 time units, longer than every \
                timeout. The coordinator hears no PreCommit acknowledgement, takes the \
                participants as crashed, commits and tells the client Committed. The \
                participants hear nothing from the coordinator, take it as crashed, elect node \
                2 as backup, find everyone Uncertain and abort. The slow PreCommits and \
                DoCommits arrive long after: too late. Each participant answers a DoCommit with \
                its abort, which ends the coordinator's resends; the split stays. 3PC is safe \
                only when every message arrives within the timeouts.",
        run: threepc_slow_network,
    },
    Scenario {
        name: "2pc-raft-coordinator-crash",
        protocol: "2pc-raft",
        term_name: Some("term"),
        about: "Two-phase commit over Raft groups does not block. Three processes host the map \
                group (g0) and two partitions' groups (g1, g2). A driver runs a transaction \
                writing a key in each partition: it prepares g1's part (the coordinator group, \
                which also records the transaction as pending) and g2's, then decides commit, an \
                entry in g1's log. Then the process leading g1 crashes and the driver vanishes \
                before telling g2. g1 elects another leader, which has the decision in its log. \
                A resolver scanning the groups finds g1's committed record there and g2's part \
                still prepared, finishes g2's part with the commit and drops g1's record. No \
                process's crash blocks the transaction. Arrows between processes carry \
                every group's Raft messages to that peer in one frame (`g1 ... / g2 ...`); client 1 \
                is the driver, client 2 the resolver.",
        run: twopc_raft_coordinator_crash,
    },
];

/// The scenario called `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// The seed every committed diagram uses.
pub const DEFAULT_SEED: u64 = 1;
/// Most lines of one diagram: a diagram longer than this is no longer read.
pub const DIAGRAM_LINES_MAX: usize = 400;

/// Runs `scenario` with `seed` and returns its Mermaid diagram.
pub fn diagram(scenario: &Scenario, seed: u64) -> Result<String, SimError> {
    let run = (scenario.run)(seed)?;
    Ok(render(&run.trace, &run.window))
}

/// Runs `scenario` with `seed` and exports the whole run (every node, from time 0 to its end)
/// for the trace viewer.
pub fn export(scenario: &Scenario, seed: u64) -> Result<TraceFile, String> {
    let run = (scenario.run)(seed).map_err(|e| e.to_string())?;
    Ok(TraceFile {
        format: viewer::FORMAT,
        scenario: scenario.name.to_string(),
        protocol: scenario.protocol.to_string(),
        about: scenario.about.to_string(),
        seed,
        end: run.end,
        nodes: run.nodes,
        term_name: scenario.term_name.map(str::to_string),
        states: run.states,
        cuts: run.cuts,
        messages: viewer::messages(&run.trace).map_err(|e| e.to_string())?,
        happenings: viewer::happenings(&run.trace),
    })
}

/// The scenario's JSON file, as committed under `docs/viewer/traces/`.
pub fn json(scenario: &Scenario, seed: u64) -> Result<String, String> {
    export(scenario, seed)?.to_json().map_err(|e| e.to_string())
}

/// `docs/viewer/traces.js`: every scenario's JSON, defined as `TRACES[name]`, so that the viewer
/// opened from disk (where a browser refuses `fetch`) has the committed traces at hand.
pub fn traces_js(seed: u64) -> Result<String, String> {
    let mut out = String::from(
        "// Generated by `UPDATE_DIAGRAMS=1 cargo test -p benches --test trace_diagrams` from the \n\
         // `trace` binary's scenarios (seed given in each); do not edit by hand.\n\
         var TRACES = {};\n",
    );
    for s in SCENARIOS {
        out.push_str(&format!(
            "TRACES[{:?}] = {};",
            s.name,
            json(s, seed)?.trim_end()
        ));
        out.push('\n');
    }
    Ok(out)
}

/// The Markdown page of a scenario: a title, what it shows, how to reproduce it and the diagram.
pub fn markdown(scenario: &Scenario, seed: u64) -> Result<String, SimError> {
    let diagram = diagram(scenario, seed)?;
    Ok(format!(
        "# `{name}`\n\n{about}\n\nGenerated by `cargo run -p benches --bin trace -- {name} \
         --seed {seed} --markdown`; do not edit by hand.\n\n```mermaid\n{diagram}```\n",
        name = scenario.name,
        about = scenario.about,
    ))
}

/// Longest message label in a diagram, in characters.
pub const LABEL_CHARS_MAX: usize = 72;

/// Shortens `struct Name { a: X, b: Y }` to `prefixX.Y` wherever it occurs in `text` (ids that
/// would otherwise fill every label).
fn abbreviate(text: &str, name: &str, fields: [&str; 2], prefix: &str) -> String {
    let open = format!("{name} {{ {}: ", fields[0]);
    let mid = format!(", {}: ", fields[1]);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        let parsed = after.split_once(&mid).and_then(|(a, tail)| {
            let (b, tail) = tail.split_once(" }")?;
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
            (digits(a) && digits(b)).then_some((a, b, tail))
        });
        match parsed {
            Some((a, b, tail)) => {
                out.push_str(&rest[..at]);
                out.push_str(&format!("{prefix}{a}.{b}"));
                rest = tail;
            }
            None => {
                out.push_str(&rest[..at + open.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A message's label: its `Debug` form with transaction ids and ballots abbreviated, cut at
/// [`LABEL_CHARS_MAX`].
fn label<T: std::fmt::Debug>(message: &T) -> String {
    let text = format!("{message:?}");
    let text = abbreviate(&text, "TxId", ["coordinator", "seq"], "tx");
    let text = abbreviate(&text, "Ballot", ["round", "leader"], "b");
    cut_label(text)
}

/// `text`, or its first [`LABEL_CHARS_MAX`] characters ending in an ellipsis when it is longer.
fn cut_label(text: String) -> String {
    if text.chars().count() <= LABEL_CHARS_MAX {
        text
    } else {
        let mut cut: String = text.chars().take(LABEL_CHARS_MAX - 1).collect();
        cut.push('…');
        cut
    }
}

/// The index page of `docs/diagrams/`: one line per scenario, linking its page.
pub fn index() -> String {
    let mut out = String::from(
        "# Protocol traces\n\nSeeded runs of the deterministic simulator, drawn as Mermaid sequence \
         diagrams by the `trace` binary (`cargo run -p benches --bin trace -- --list`). Arrows are \
         labelled `[sent..arrived] message`; a cross is a lost message; a message repeated on \
         its link with nothing else between its two nodes is drawn once, `[first..last] message \
         ×n`; notes mark crashes, restarts and network changes. Regenerate every page with \
         `UPDATE_DIAGRAMS=1 cargo test -p benches --test trace_diagrams`.\n\n\
         To watch the same runs animated, open the [trace viewer](../viewer/index.html) in a \
         browser (from disk; `?trace=NAME` picks one): nodes with their roles and terms, \
         messages in flight, lost messages, crashes and partitions, with a timeline to scrub \
         and step. Each run is also committed as JSON under [`viewer/traces/`](../viewer/traces/) \
         (`trace -- NAME --json`).\n\n",
    );
    for s in SCENARIOS {
        let first = s.about.split(". ").next().unwrap_or(s.about);
        out.push_str(&format!(
            "- [`{}`]({}.md): {}.\n",
            s.name,
            s.name,
            first.trim_end_matches('.')
        ));
    }
    out
}

fn options(from: u64, to: u64, nodes: Option<Vec<NodeId>>) -> DiagramOptions {
    DiagramOptions {
        from,
        to,
        nodes,
        lines_max: DIAGRAM_LINES_MAX,
        ..DiagramOptions::default()
    }
}

fn traced(seed: u64, nodes: Vec<NodeId>, latency: u64) -> SimConfig {
    let mut config = SimConfig::new(seed, nodes);
    config.record_trace = true;
    config.link = LinkConfig::fixed(latency);
    config.label_chars_max = LABEL_CHARS_MAX;
    config
}

/// Prints a simulated scenario as a Mermaid sequence diagram.
#[derive(Parser, Debug)]
#[command(name = "trace")]
struct Args {
    /// The scenario (see --list).
    scenario: Option<String>,
    /// The simulation's seed.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Print the Markdown page committed under docs/diagrams/ instead of the bare diagram.
    #[arg(long, conflicts_with = "json")]
    markdown: bool,
    /// Print the whole run as JSON for the trace viewer (docs/viewer/): nodes, their roles and
    /// terms over time, every message with its fate, crashes, partitions and client operations.
    #[arg(long)]
    json: bool,
    /// List the scenarios.
    #[arg(long)]
    list: bool,
}

#[allow(dead_code)] // the diagram test includes this file as a module and never calls main
fn main() -> ExitCode {
    let args = Args::parse();
    if args.list || args.scenario.is_none() {
        for s in SCENARIOS {
            println!("{}", s.name);
        }
        return if args.list {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let name = args.scenario.unwrap_or_default();
    let Some(scenario) = scenario(&name) else {
        eprintln!("unknown scenario {name:?}; --list shows them");
        return ExitCode::FAILURE;
    };
    let text = if args.json {
        json(scenario, args.seed)
    } else if args.markdown {
        markdown(scenario, args.seed).map_err(|e| e.to_string())
    } else {
        diagram(scenario, args.seed).map_err(|e| e.to_string())
    };
    match text {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
