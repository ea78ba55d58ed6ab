//! `trace`: runs a named, seeded scenario in the deterministic simulator (`common::sim`) and
//! prints the run as a Mermaid sequence diagram.
//!
//! ```text
//! cargo run -p benches --bin trace -- raft-election
//! cargo run -p benches --bin trace -- --list
//! cargo run -p benches --bin trace -- 3pc-partition --markdown > docs/diagrams/3pc-partition.md
//! ```
//!
//! Every scenario is deterministic: the same seed prints the same diagram, byte for byte. The
//! diagrams committed under `docs/diagrams/` are what this program prints with `--markdown` and
//! the default seed; `benches/tests/trace_diagrams.rs` fails when they drift apart
//! (`UPDATE_DIAGRAMS=1 cargo test -p benches --test trace_diagrams` rewrites them).
//!
//! Each scenario shows one thing and keeps the diagram readable with a time window and, where it
//! helps, a node filter ([`DiagramOptions`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Parser;
use common::demo::{DemoConfig, DemoNode, DemoRequest};
use common::sim::diagram::{render, DiagramOptions};
use common::sim::{Fault, LinkConfig, Sim, SimConfig, SimError};
use common::txn::Write;
use common::{Node as _, NodeId};

/// One named scenario.
pub struct Scenario {
    /// The name given on the command line (and the diagram's file name).
    pub name: &'static str,
    /// What the diagram shows, one paragraph of Markdown.
    pub about: &'static str,
    run: fn(u64) -> Result<String, SimError>,
}

/// Every scenario, in the order `--list` prints them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "demo",
        about: "The demo replicated counter of `common::demo`: two `Add` requests, each \
                broadcast by the node that took it and applied everywhere.",
        run: demo,
    },
    Scenario {
        name: "raft-election",
        about: "Raft (§5.2): three nodes start as followers; the first whose randomized election \
                timeout fires asks for votes (pre-vote first, then the real vote) and becomes \
                leader; it appends its no-op and commits a client `Put`. Then the leader crashes: \
                the followers stop hearing heartbeats, one times out, wins the next term and \
                serves the next request.",
        run: raft_election,
    },
    Scenario {
        name: "paxos-duel",
        about: "Multi-Paxos with no election jitter: every replica raises its ballot in the \
                same round, so proposers duel from the first tick. Ballots tie on the round and \
                the node id breaks the tie, so the duel ends with one leader, which then chooses \
                a client command in one round trip of phase 2.",
        run: paxos_duel,
    },
    Scenario {
        name: "2pc-coordinator-crash",
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
        about: "Three-phase commit does not block on a coordinator crash (crash-stop, no \
                partitions). The coordinator collects three Yes votes and crashes before any \
                PreCommit leaves. The participants time out, elect the lowest id as backup \
                coordinator (the termination protocol), find everyone Uncertain and abort \
                without it.",
        run: threepc_coordinator_crash,
    },
    Scenario {
        name: "3pc-partition",
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
        about: "Three-phase commit on a slow network, with no loss, no crash and no partition \
                (`threepc::scenario::slow_network`). Right after the votes, the links from the \
                coordinator to the participants slow to 1,000 time units, longer than every \
                timeout. The coordinator hears no PreCommit acknowledgement, takes the \
                participants as crashed, commits and tells the client Committed. The \
                participants hear nothing from the coordinator, take it as crashed, elect node \
                2 as backup, find everyone Uncertain and abort. The slow PreCommits and \
                DoCommits arrive long after: too late. 3PC is safe only when every message \
                arrives within the timeouts.",
        run: threepc_slow_network,
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
    (scenario.run)(seed)
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
         `UPDATE_DIAGRAMS=1 cargo test -p benches --test trace_diagrams`.\n\n",
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

fn demo(seed: u64) -> Result<String, SimError> {
    let members = vec![1, 2, 3];
    let cluster = members.clone();
    let mut sim: Sim<DemoNode> = Sim::new(traced(seed, members, 5), move |id| {
        DemoConfig::new(id, cluster.clone())
    })?;
    sim.set_message_label(label);
    sim.submit(10, 1, DemoRequest::Add(5));
    sim.submit(40, 3, DemoRequest::Add(2));
    sim.run_until(100)?;
    Ok(render(sim.trace(), &options(0, 100, None)))
}

fn raft_election(seed: u64) -> Result<String, SimError> {
    use raft::kv::{KvCommand, KvStore};
    use raft::{Config, RaftNode, Request};
    type Node = RaftNode<KvStore>;

    let members: Vec<NodeId> = vec![1, 2, 3];
    let voters = members.clone();
    let mut sim: Sim<Node> = Sim::new(traced(seed, members.clone(), 3), move |id| {
        let mut c = Config::new(id, voters.clone());
        c.seed = seed;
        c.election_timeout_ticks_min = 10;
        c.election_timeout_ticks_max = 20;
        // Sparse heartbeats keep the diagram short; the timeout is still twice their interval.
        c.heartbeat_interval_ticks = 5;
        c.into()
    })?;
    sim.set_message_label(label);
    let leader_of = |sim: &Sim<Node>| members.iter().copied().find(|&id| is_raft_leader(sim, id));
    let found = sim.run_until_cond(2_000, |v| {
        v.nodes()
            .any(|(_, n)| n.is_some_and(|n| n.metrics().leader == Some(n.id())))
    })?;
    let Some(first) = leader_of(&sim).filter(|_| found) else {
        return Err(sim.fail_now("no leader elected".into()));
    };
    let put = |v: &str| {
        Request::Propose(KvCommand::Put {
            key: "x".into(),
            value: v.into(),
        })
    };
    let now = sim.now();
    sim.submit(now + 5, first, put("1"));
    sim.run_for(40)?;
    let crash_at = sim.now();
    sim.crash(first)?;
    let found = sim.run_until_cond(crash_at + 2_000, move |v| {
        v.nodes()
            .any(|(id, n)| id != first && n.is_some_and(|n| n.metrics().leader == Some(id)))
    })?;
    let Some(second) = leader_of(&sim).filter(|_| found) else {
        return Err(sim.fail_now("no leader after the crash".into()));
    };
    let now = sim.now();
    sim.submit(now + 5, second, put("2"));
    sim.run_for(30)?;
    Ok(render(sim.trace(), &options(0, sim.now(), None)))
}

fn is_raft_leader(sim: &Sim<raft::RaftNode<raft::kv::KvStore>>, id: NodeId) -> bool {
    sim.node(id).is_some_and(|n| n.metrics().leader == Some(id))
}

fn paxos_duel(seed: u64) -> Result<String, SimError> {
    use paxos::{Config, KvCommand, KvStore, Replica, Request, Session};
    type Node = Replica<KvStore>;

    let members: Vec<NodeId> = vec![1, 2, 3];
    let cluster = members.clone();
    let mut sim: Sim<Node> = Sim::new(traced(seed, members.clone(), 3), move |id| {
        let mut c = Config::new(id, cluster.clone());
        c.seed = seed;
        // Everyone raises its ballot in the same round: a duel from the first tick.
        c.election_jitter_rounds_max = 0;
        c.into()
    })?;
    sim.set_message_label(label);
    let found = sim.run_until_cond(2_000, |v| {
        v.nodes()
            .filter(|(_, n)| n.is_some_and(|r| r.is_leader()))
            .count()
            == 1
    })?;
    if !found {
        return Err(sim.fail_now("no leader".into()));
    }
    // Candidates that raised in the same round pre-empt each other for a few rounds; once one
    // leads alone for a while, the duel is over.
    sim.run_for(60)?;
    let leader = members
        .iter()
        .copied()
        .find(|&id| sim.node(id).is_some_and(|r| r.is_leader()));
    let Some(leader) = leader else {
        return Err(sim.fail_now("the duel did not end with one leader".into()));
    };
    let now = sim.now();
    sim.submit(
        now + 5,
        leader,
        Request::Propose {
            command: KvCommand::Put {
                key: "x".into(),
                value: "1".into(),
            },
            session: Some(Session { client: 7, seq: 1 }),
        },
    );
    sim.run_for(30)?;
    Ok(render(sim.trace(), &options(0, sim.now(), None)))
}

fn three_writes() -> BTreeMap<NodeId, Vec<Write>> {
    BTreeMap::from([
        (2, vec![Write::put("a", "1")]),
        (3, vec![Write::put("b", "1")]),
        (4, vec![Write::put("c", "1")]),
    ])
}

fn twopc_coordinator_crash(seed: u64) -> Result<String, SimError> {
    use twopc::{Config, Request, TwoPcNode};
    let members: Vec<NodeId> = vec![1, 2, 3, 4];
    let cluster = members.clone();
    let mut sim: Sim<TwoPcNode> = Sim::new(traced(seed, members, 5), move |id| {
        Config::new(id, cluster.clone())
    })?;
    sim.set_message_label(label);
    sim.submit(
        10,
        1,
        Request::Commit {
            writes: three_writes(),
        },
    );
    // Prepare arrives at 15, the votes at 20. Cut the coordinator's outgoing links before the
    // votes arrive: it decides Commit, but the decision never leaves.
    sim.run_until(17)?;
    sim.apply(Fault::OneWay {
        from: vec![1],
        to: vec![2, 3, 4],
    })?;
    sim.run_until(25)?;
    sim.crash(1)?;
    sim.apply(Fault::Heal)?;
    // The participants ask and ask; nobody can tell them.
    sim.run_until(400)?;
    sim.restart(1)?;
    sim.run_until(500)?;
    Ok(render(sim.trace(), &options(0, 500, None)))
}

fn threepc_coordinator_crash(seed: u64) -> Result<String, SimError> {
    use threepc::{Config, Request, ThreePcNode};
    let members: Vec<NodeId> = vec![1, 2, 3, 4];
    let cluster = members.clone();
    let mut sim: Sim<ThreePcNode> = Sim::new(traced(seed, members, 5), move |id| {
        Config::new(id, cluster.clone())
    })?;
    sim.set_message_label(label);
    sim.submit(
        10,
        1,
        Request::Commit {
            writes: three_writes(),
        },
    );
    // CanCommit arrives at 15, the votes at 20: the coordinator logs PreCommit and would send it.
    // Cut it off just before, then crash it: no PreCommit arrives anywhere.
    sim.run_until(19)?;
    sim.apply(Fault::OneWay {
        from: vec![1],
        to: vec![2, 3, 4],
    })?;
    sim.run_until(21)?;
    sim.crash(1)?;
    sim.apply(Fault::Heal)?;
    let decided = sim.run_until_cond(2_000, |v| {
        [2, 3, 4]
            .iter()
            .all(|&p| v.node(p).is_some_and(|n| n.metrics().in_doubt.is_empty()))
    })?;
    if !decided {
        return Err(sim.fail_now("the survivors did not decide".into()));
    }
    let end = sim.now() + 20;
    sim.run_until(end)?;
    Ok(render(sim.trace(), &options(0, end, None)))
}

fn threepc_partition(seed: u64) -> Result<String, SimError> {
    use threepc::{Config, Request, ThreePcNode};
    let members: Vec<NodeId> = vec![1, 2, 3, 4, 5];
    let cluster = members.clone();
    let mut sim: Sim<ThreePcNode> = Sim::new(traced(seed, members, 5), move |id| {
        Config::new(id, cluster.clone())
    })?;
    sim.set_message_label(label);
    sim.submit(
        10,
        1,
        Request::Commit {
            writes: three_writes(),
        },
    );
    // The votes arrive at 20 and PreCommit leaves at 20, arriving at 25. Split at 22: the
    // PreCommit to 2 is delivered (same side), those to 3 and 4 are dropped.
    sim.run_until(22)?;
    sim.apply(Fault::Partition {
        a: vec![1, 2],
        b: vec![3, 4, 5],
    })?;
    let decided = sim.run_until_cond(3_000, |v| {
        [2, 3, 4]
            .iter()
            .all(|&p| v.node(p).is_some_and(|n| n.metrics().in_doubt.is_empty()))
    })?;
    if !decided {
        return Err(sim.fail_now("the two sides did not decide".into()));
    }
    let end = sim.now() + 20;
    sim.run_until(end)?;
    Ok(render(
        sim.trace(),
        &options(0, end, Some(vec![1, 2, 3, 4])),
    ))
}

fn threepc_slow_network(seed: u64) -> Result<String, SimError> {
    use threepc::scenario::slow_network;
    let mut config = slow_network::sim_config(seed);
    config.record_trace = true;
    config.label_chars_max = LABEL_CHARS_MAX;
    let mut sim = Sim::new(config, slow_network::node_config)?;
    sim.set_message_label(label);
    slow_network::schedule(&mut sim);
    // Until the slow DoCommits have arrived and been refused, and a little after.
    let end = 1_350;
    sim.run_until(end)?;
    if slow_network::client_outcome(&sim) != Some(common::txn::Outcome::Committed) {
        return Err(sim.fail_now("the client was not told Committed".into()));
    }
    Ok(render(sim.trace(), &options(0, end, None)))
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
    #[arg(long)]
    markdown: bool,
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
    let text = if args.markdown {
        markdown(scenario, args.seed)
    } else {
        diagram(scenario, args.seed)
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
