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
                DoCommits arrive long after: too late. 3PC is safe only when every message \
                arrives within the timeouts.",
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

fn demo_state(n: &DemoNode) -> NodeState {
    let m = n.metrics();
    NodeState {
        log: Some(m.applied),
        detail: format!("total {}, {} waiting", m.total, m.pending),
        ..NodeState::role("replica")
    }
}

fn demo(seed: u64) -> Result<Run, SimError> {
    let members = vec![1, 2, 3];
    let cluster = members.clone();
    let mut sim: Sim<DemoNode> = Sim::new(traced(seed, members, 5), move |id| {
        DemoConfig::new(id, cluster.clone())
    })?;
    sim.set_message_label(label);
    sim.submit(10, 1, DemoRequest::Add(5));
    sim.submit(40, 3, DemoRequest::Add(2));
    let mut run = Observed::new(sim, demo_state);
    run.run_until(100)?;
    Ok(Run::of(run, options(0, 100, None)))
}

type RaftKv = raft::RaftNode<raft::kv::KvStore>;

/// A Raft node's role, term and log, whatever its state machine.
fn raft_state<S: common::StateMachine>(n: &raft::RaftNode<S>) -> NodeState {
    use raft::Role;
    let role = match n.role() {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::Learner => "learner",
    };
    NodeState {
        term: Some(n.term()),
        log: Some(n.last_log_index()),
        commit: Some(n.commit_index()),
        leader: n.leader(),
        ..NodeState::role(role)
    }
}

fn raft_election(seed: u64) -> Result<Run, SimError> {
    use raft::kv::KvCommand;
    use raft::{Config, Request};
    type Node = RaftKv;

    let members: Vec<NodeId> = vec![1, 2, 3];
    let voters = members.clone();
    let sim: Sim<Node> = Sim::new(traced(seed, members.clone(), 3), move |id| {
        let mut c = Config::new(id, voters.clone());
        c.seed = seed;
        c.election_timeout_ticks_min = 10;
        c.election_timeout_ticks_max = 20;
        // Sparse heartbeats keep the diagram short; the timeout is still twice their interval.
        c.heartbeat_interval_ticks = 5;
        c.into()
    })?;
    let mut run = Observed::new(sim, raft_state);
    run.sim.set_message_label(label);
    let leader_of = |sim: &Sim<Node>| members.iter().copied().find(|&id| is_raft_leader(sim, id));
    let found = run.run_until_cond(2_000, |v| {
        v.nodes()
            .any(|(_, n)| n.is_some_and(|n| n.metrics().leader == Some(n.id())))
    })?;
    let Some(first) = leader_of(&run.sim).filter(|_| found) else {
        return Err(run.sim.fail_now("no leader elected".into()));
    };
    let put = |v: &str| {
        Request::Propose(KvCommand::Put {
            key: "x".into(),
            value: v.into(),
        })
    };
    let now = run.sim.now();
    run.sim.submit(now + 5, first, put("1"));
    run.run_for(40)?;
    let crash_at = run.sim.now();
    run.crash(first)?;
    let found = run.run_until_cond(crash_at + 2_000, move |v| {
        v.nodes()
            .any(|(id, n)| id != first && n.is_some_and(|n| n.metrics().leader == Some(id)))
    })?;
    let Some(second) = leader_of(&run.sim).filter(|_| found) else {
        return Err(run.sim.fail_now("no leader after the crash".into()));
    };
    let now = run.sim.now();
    run.sim.submit(now + 5, second, put("2"));
    run.run_for(30)?;
    let end = run.sim.now();
    Ok(Run::of(run, options(0, end, None)))
}

fn is_raft_leader(sim: &Sim<RaftKv>, id: NodeId) -> bool {
    sim.node(id).is_some_and(|n| n.metrics().leader == Some(id))
}

type PaxosKv = paxos::PaxosNode<paxos::KvStore>;

fn paxos_state(r: &PaxosKv) -> NodeState {
    let m = r.metrics();
    // `leader` is who the ballot leader election picked; a replica it picked that has not yet
    // finished phase 1 is still preparing.
    let role = if m.is_leader {
        "leader"
    } else if m.leader == Some(m.id) {
        "preparing"
    } else if m.leader.is_some() {
        "follower"
    } else {
        "no leader"
    };
    NodeState {
        term: Some(m.promised.round),
        log: Some(m.decided),
        commit: Some(m.applied),
        leader: m.leader,
        detail: format!("promised b{}.{}", m.promised.round, m.promised.leader),
        ..NodeState::role(role)
    }
}

fn paxos_duel(seed: u64) -> Result<Run, SimError> {
    use paxos::{Config, KvCommand, Request, Session};
    type Node = PaxosKv;

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
    let mut run = Observed::new(sim, paxos_state);
    let found = run.run_until_cond(2_000, |v| {
        v.nodes()
            .filter(|(_, n)| n.is_some_and(|r| r.is_leader()))
            .count()
            == 1
    })?;
    if !found {
        return Err(run.sim.fail_now("no leader".into()));
    }
    // Candidates that raised in the same round pre-empt each other for a few rounds; once one
    // leads alone for a while, the duel is over.
    run.run_for(60)?;
    let leader = members
        .iter()
        .copied()
        .find(|&id| run.sim.node(id).is_some_and(|r| r.is_leader()));
    let Some(leader) = leader else {
        return Err(run
            .sim
            .fail_now("the duel did not end with one leader".into()));
    };
    let now = run.sim.now();
    run.sim.submit(
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
    run.run_for(30)?;
    let end = run.sim.now();
    Ok(Run::of(run, options(0, end, None)))
}

fn three_writes() -> BTreeMap<NodeId, Vec<Write>> {
    BTreeMap::from([
        (2, vec![Write::put("a", "1")]),
        (3, vec![Write::put("b", "1")]),
        (4, vec![Write::put("c", "1")]),
    ])
}

/// A commit-protocol node's role from its counters: what it is doing now, else how its
/// transactions ended.
fn commit_role(
    coordinating: usize,
    in_doubt: Option<&'static str>,
    ended: [u64; 4],
) -> &'static str {
    let [decided_committed, decided_aborted, applied, aborted] = ended;
    if coordinating > 0 {
        "coordinating"
    } else if let Some(role) = in_doubt {
        role
    } else if decided_committed > 0 {
        "decided commit"
    } else if decided_aborted > 0 {
        "decided abort"
    } else if applied > 0 {
        "committed"
    } else if aborted > 0 {
        "aborted"
    } else {
        "idle"
    }
}

fn twopc_state(n: &twopc::TwoPcNode) -> NodeState {
    let m = n.metrics();
    let in_doubt = match (m.blocked, m.in_doubt.len()) {
        (0, 0) => None,
        (0, _) => Some("prepared"),
        _ => Some("blocked"),
    };
    let ended = [m.decided_committed, m.decided_aborted, m.applied, m.aborted];
    NodeState {
        detail: format!(
            "{} in doubt, {} committed, {} aborted",
            m.in_doubt.len(),
            m.applied,
            m.aborted
        ),
        ..NodeState::role(commit_role(m.coordinating, in_doubt, ended))
    }
}

fn threepc_state(n: &threepc::ThreePcNode) -> NodeState {
    use threepc::State;
    let m = n.metrics();
    let in_doubt = m.in_doubt.first().map(|d| match (d.state, d.terminating) {
        (State::PreCommitted, true) => "precommitted, terminating",
        (State::PreCommitted, false) => "precommitted",
        (_, true) => "uncertain, terminating",
        (_, false) => "uncertain",
    });
    let ended = [m.decided_committed, m.decided_aborted, m.applied, m.aborted];
    NodeState {
        detail: format!(
            "{} in doubt, {} committed, {} aborted",
            m.in_doubt.len(),
            m.applied,
            m.aborted
        ),
        ..NodeState::role(commit_role(m.coordinating, in_doubt, ended))
    }
}

fn twopc_coordinator_crash(seed: u64) -> Result<Run, SimError> {
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
    let mut run = Observed::new(sim, twopc_state);
    // Prepare arrives at 15, the votes at 20. Cut the coordinator's outgoing links before the
    // votes arrive: it decides Commit, but the decision never leaves.
    run.run_until(17)?;
    run.apply(Fault::OneWay {
        from: vec![1],
        to: vec![2, 3, 4],
    })?;
    run.run_until(25)?;
    run.crash(1)?;
    run.apply(Fault::Heal)?;
    // The participants ask and ask; nobody can tell them.
    run.run_until(400)?;
    run.restart(1)?;
    run.run_until(500)?;
    Ok(Run::of(run, options(0, 500, None)))
}

fn threepc_coordinator_crash(seed: u64) -> Result<Run, SimError> {
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
    let mut run = Observed::new(sim, threepc_state);
    // CanCommit arrives at 15, the votes at 20: the coordinator logs PreCommit and would send it.
    // Cut it off just before, then crash it: no PreCommit arrives anywhere.
    run.run_until(19)?;
    run.apply(Fault::OneWay {
        from: vec![1],
        to: vec![2, 3, 4],
    })?;
    run.run_until(21)?;
    run.crash(1)?;
    run.apply(Fault::Heal)?;
    let decided = run.run_until_cond(2_000, |v| {
        [2, 3, 4]
            .iter()
            .all(|&p| v.node(p).is_some_and(|n| n.metrics().in_doubt.is_empty()))
    })?;
    if !decided {
        return Err(run.sim.fail_now("the survivors did not decide".into()));
    }
    let end = run.sim.now() + 20;
    run.run_until(end)?;
    Ok(Run::of(run, options(0, end, None)))
}

fn threepc_partition(seed: u64) -> Result<Run, SimError> {
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
    let mut run = Observed::new(sim, threepc_state);
    // The votes arrive at 20 and PreCommit leaves at 20, arriving at 25. Split at 22: the
    // PreCommit to 2 is delivered (same side), those to 3 and 4 are dropped.
    run.run_until(22)?;
    run.apply(Fault::Partition {
        a: vec![1, 2],
        b: vec![3, 4, 5],
    })?;
    let decided = run.run_until_cond(3_000, |v| {
        [2, 3, 4]
            .iter()
            .all(|&p| v.node(p).is_some_and(|n| n.metrics().in_doubt.is_empty()))
    })?;
    if !decided {
        return Err(run.sim.fail_now("the two sides did not decide".into()));
    }
    let end = run.sim.now() + 20;
    run.run_until(end)?;
    Ok(Run::of(run, options(0, end, Some(vec![1, 2, 3, 4]))))
}

fn threepc_slow_network(seed: u64) -> Result<Run, SimError> {
    use threepc::scenario::slow_network;
    let mut config = slow_network::sim_config(seed);
    config.record_trace = true;
    config.label_chars_max = LABEL_CHARS_MAX;
    let mut sim = Sim::new(config, slow_network::node_config)?;
    sim.set_message_label(label);
    slow_network::schedule(&mut sim);
    let mut run = Observed::new(sim, threepc_state);
    // Until the slow DoCommits have arrived and been refused, and a little after.
    let end = 1_350;
    run.run_until(end)?;
    if slow_network::client_outcome(&run.sim) != Some(common::txn::Outcome::Committed) {
        return Err(run.sim.fail_now("the client was not told Committed".into()));
    }
    Ok(Run::of(run, options(0, end, None)))
}

/// The sharded store's process, as the trace draws it.
type Shard = kv::shard::ShardHost;

/// A process of the sharded store, seen through its replica of the coordinator group (g1).
fn shard_state(h: &Shard) -> NodeState {
    match h.group(1) {
        Some(n) => raft_state(n),
        None => NodeState::role("none"),
    }
}

/// A short name for a transaction step or command in a sharded store's log.
fn shard_command_label(c: &kv::shard::ShardCommand) -> String {
    use kv::shard::{ShardCommand, TxCommand};
    let tx = |t: &common::txn::TxId| format!("tx{}.{}", t.coordinator, t.seq);
    match c {
        ShardCommand::Tx(TxCommand::Prepare { tx: t, .. }) => format!("Prepare {}", tx(t)),
        ShardCommand::Tx(TxCommand::Decide { tx: t, outcome, .. }) => {
            format!("Decide {outcome} {}", tx(t))
        }
        ShardCommand::Tx(TxCommand::Finish { tx: t, outcome, .. }) => {
            format!("Finish {outcome} {}", tx(t))
        }
        ShardCommand::Tx(TxCommand::Forget { tx: t }) => format!("Forget {}", tx(t)),
        ShardCommand::Tx(TxCommand::EndReadOnly { tx: t }) => format!("EndReadOnly {}", tx(t)),
        ShardCommand::Tx(TxCommand::OnePhase { tx: t, .. }) => format!("OnePhase {}", tx(t)),
        ShardCommand::Kv(_) => "Kv".into(),
        ShardCommand::Map(_) => "Map".into(),
    }
}

/// A frame between two processes: each group's Raft message in a few words.
fn shard_label(
    m: &common::groups::GroupsMessage<raft::Message<kv::shard::ShardCommand>>,
) -> String {
    use raft::{Message, Payload};
    let parts: Vec<String> = m
        .parts
        .iter()
        .map(|(g, msg)| {
            let what = match msg {
                Message::AppendEntries { entries, .. } if entries.is_empty() => "heartbeat".into(),
                Message::AppendEntries { entries, .. } => entries
                    .iter()
                    .map(|e| match &e.payload {
                        Payload::Noop => "noop".to_string(),
                        Payload::Command(c) => shard_command_label(c),
                        _ => "config".to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                Message::AppendEntriesResponse {
                    success: true,
                    index,
                    ..
                } => format!("ok {index}"),
                Message::AppendEntriesResponse { .. } => "refused".into(),
                Message::PreVote { term, .. } => format!("PreVote t{term}"),
                Message::RequestVote { term, .. } => format!("RequestVote t{term}"),
                Message::PreVoteResponse { granted, .. }
                | Message::RequestVoteResponse { granted, .. } => {
                    if *granted {
                        "vote yes".into()
                    } else {
                        "vote no".into()
                    }
                }
                Message::InstallSnapshot { .. } => "InstallSnapshot".into(),
                Message::InstallSnapshotResponse { .. } => "snapshot ok".into(),
                Message::TimeoutNow { .. } => "TimeoutNow".into(),
            };
            format!("g{g} {what}")
        })
        .collect();
    // Not ";": Mermaid ends a statement there.
    let text = parts.join(" / ");
    if text.chars().count() <= LABEL_CHARS_MAX {
        text
    } else {
        let mut cut: String = text.chars().take(LABEL_CHARS_MAX - 1).collect();
        cut.push('…');
        cut
    }
}

/// A client request to a process of the sharded store, in a few words.
fn shard_request_label(r: &kv::shard::ShardRequest) -> String {
    use common::groups::GroupsRequest;
    use raft::Request;
    match r {
        GroupsRequest::Group(g, Request::Propose(c)) => format!("g{g} {}", shard_command_label(c)),
        GroupsRequest::Group(g, Request::Read(q)) => format!("g{g} read {q:?}"),
        other => label(other),
    }
}

fn twopc_raft_coordinator_crash(seed: u64) -> Result<Run, SimError> {
    use common::txn::TxId;
    use kv::shard::{
        Layout, Resolver, ShardConfig, ShardOutput, ShardRequest, TxDriver, TxOutput, TxWrite,
    };
    use raft::Response;

    let layout = Layout::new(2, 3).expect("a valid layout");
    let mut raft = raft::Config::new(1, vec![1]);
    raft.seed = seed;
    raft.election_timeout_ticks_min = 10;
    raft.election_timeout_ticks_max = 20;
    // Sparse heartbeats keep the diagram short; aligned, so every group's share one frame.
    raft.heartbeat_interval_ticks = 5;
    raft.heartbeat_aligned = true;
    let config = move |id: NodeId| ShardConfig {
        id,
        layout,
        map_group: vec![1, 2, 3],
        initial_processes: (1..=3).collect(),
        raft: raft.clone(),
    };
    let mut sim: Sim<Shard> = Sim::new(traced(seed, vec![1, 2, 3], 3), move |id| {
        config(id).groups_config().expect("a valid configuration")
    })?;
    sim.set_message_label(shard_label);
    sim.set_request_label(shard_request_label);
    let mut run = Observed::new(sim, shard_state);
    let leader = |v: &common::sim::SimView<'_, Shard>, g: u64| {
        v.nodes().find_map(|(id, h)| {
            let n = h?.group(g)?;
            (n.role() == raft::Role::Leader && n.entry_term(n.commit_index()) == Some(n.term()))
                .then_some(id)
        })
    };
    if !run.run_until_cond(2_000, |v| (0..=2).all(|g| leader(v, g).is_some()))? {
        return Err(run.sim.fail_now("the groups elected no leaders".into()));
    }
    let start = run.sim.now();
    let key_in = |p: u32| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| layout.partition_of(k) == p)
            .unwrap_or_default()
    };
    let writes = vec![
        TxWrite {
            key: key_in(0),
            value: "1".into(),
        },
        TxWrite {
            key: key_in(1),
            value: "1".into(),
        },
    ];
    // One request at a time until the request answered is the commit decision.
    let mut driver = TxDriver::new(vec![1, 2, 3]);
    driver.begin(TxId::new(9, 1), Vec::new(), writes);
    let mut decided = false;
    for _ in 0..50 {
        let Some((node, request)) = driver.next_request() else {
            break;
        };
        let id = run.sim.submit_as(run.sim.now(), 1, node, request.clone());
        let deadline = run.sim.now() + 100;
        run.run_until_cond(deadline, |v| {
            v.op(id).is_some_and(|op| op.completed_at.is_some())
        })?;
        let answer = run.sim.op(id).and_then(|op| op.outcome.response().cloned());
        decided = matches!(
            answer,
            Some(common::groups::GroupResponse::Group(
                1,
                Response::Applied {
                    output: ShardOutput::Tx(TxOutput::Decided { .. }),
                    ..
                }
            ))
        );
        driver.observe(node, &request, answer.as_ref());
        if decided {
            break;
        }
    }
    if !decided {
        return Err(run.sim.fail_now("the transaction was not decided".into()));
    }
    // The decision is in g1's log. Its leader's process crashes; the driver is gone.
    let Some(crashed) = leader(&run.sim.view(), 1) else {
        return Err(run.sim.fail_now("g1 has no leader".into()));
    };
    run.crash(crashed)?;
    let quiet = |v: &common::sim::SimView<'_, Shard>| {
        (1..=2).all(|g| {
            leader(v, g).is_some_and(|l| {
                v.node(l)
                    .and_then(|h| h.group(g))
                    .and_then(|n| n.state_machine().txns())
                    .is_some_and(|t| t.is_quiet())
            })
        })
    };
    // A resolver, one request at a time, until neither group holds anything of it.
    let mut resolver = Resolver::new(vec![1, 2, 3], 20);
    let resolve_until = run.sim.now() + 1_500;
    while !quiet(&run.sim.view()) && run.sim.now() < resolve_until {
        let (node, request): (NodeId, ShardRequest) = resolver.next_request();
        let id = run.sim.submit_as(run.sim.now(), 2, node, request.clone());
        let deadline = run.sim.now() + 60;
        run.run_until_cond(deadline, |v| {
            v.op(id).is_some_and(|op| op.completed_at.is_some())
        })?;
        let answer = run.sim.op(id).and_then(|op| op.outcome.response().cloned());
        resolver.observe(run.sim.now(), node, &request, answer.as_ref());
        let pause = run.sim.now() + 5;
        run.run_until(pause)?;
    }
    if !quiet(&run.sim.view()) || resolver.stats().finished == 0 {
        return Err(run
            .sim
            .fail_now("the resolver did not finish the commit".into()));
    }
    let end = run.sim.now() + 10;
    run.run_until(end)?;
    Ok(Run::of(run, options(start, end, None)))
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
