//! Seeded fault simulation of a Raft cluster running the replicated KV store, shared by the
//! `sim_*` test files (each checks one invariant of the paper after every step).
//!
//! A run: a cluster of 3 or 5 nodes; a random schedule of deliveries (reordered, dropped,
//! duplicated), ticks, client proposals and reads, deferred flushes (group commit), crashes with
//! torn unsynced tails, restarts, partitions and heals. Then a quiet phase without faults that
//! must elect a leader and commit a final proposal (liveness once the network is healthy).
//!
//! The number of seeds per test is `SIM_SEEDS` (default in each file); `SIM_SEED=n` replays
//! seed `n` alone.
#![allow(dead_code)]

use std::collections::BTreeMap;

use common::{DetRng, NodeId, RequestId};
use raft::kv::{KvCommand, KvQuery, KvStore};
use raft::testing::{Cluster, Faults};
use raft::{Config, Entry, Payload, RaftNode, Request, Response, Role, StateMachine, Term};

/// Prints every node's state (on failure only).
fn dump(c: &Cluster<KvStore>) {
    for n in c.running() {
        let terms: Vec<_> = (n.first_log_index()..=n.last_log_index())
            .map(|i| n.entry_term(i).unwrap_or(0))
            .collect();
        eprintln!("{:?}\n  terms {terms:?}", common::Node::metrics(n));
    }
}

/// Ticks the quiet phase may take to elect a leader and commit.
const QUIET_TICKS_MAX: usize = 5_000;

/// How many seeds to run: `SIM_SEEDS` or `default`.
pub fn seeds(default: u64) -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Knobs of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Steps of the faulty phase.
    pub steps: usize,
    /// Snapshot threshold (0: no snapshots).
    pub snapshot_log_entries_max: u64,
    /// Whether to issue leadership transfers.
    pub transfers: bool,
    /// Whether to change the membership: two spare nodes (4 and 5) may join, and any node may
    /// be added, promoted or removed, by single-server changes or joint consensus.
    pub membership: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            steps: 1500,
            snapshot_log_entries_max: 0,
            transfers: false,
            membership: false,
        }
    }
}

/// The client side of a run: what was asked and answered.
#[derive(Default, Debug)]
pub struct History {
    /// Proposals: request → (command, response if any).
    pub proposals: BTreeMap<RequestId, (KvCommand, Option<Response<raft::kv::KvOutput>>)>,
}

/// Runs seed `seed` under `plan`, calling `check` after every step. Panics (with the seed in
/// the message) when a check fails or the quiet phase makes no progress.
pub fn run(
    seed: u64,
    plan: &Plan,
    check: &mut dyn FnMut(&Cluster<KvStore>) -> Result<(), String>,
) -> RunStats {
    let mut rng = DetRng::new(seed);
    let n = if rng.chance(0.5) { 3 } else { 5 };
    let voters: Vec<NodeId> = (1..=n).collect();
    // Spare nodes know the initial voters and see themselves as learners until a leader's
    // configuration says otherwise.
    let spares: Vec<NodeId> = if plan.membership {
        vec![n + 1, n + 2]
    } else {
        vec![]
    };
    let configs = voters
        .iter()
        .chain(spares.iter())
        .map(|&id| {
            let mut c = Config::new(id, voters.clone());
            if spares.contains(&id) {
                c.learners = vec![id];
            }
            c.known_nodes = voters.iter().chain(spares.iter()).copied().collect();
            c.seed = seed;
            c.election_timeout_ticks_min = 10;
            c.election_timeout_ticks_max = 20;
            c.heartbeat_interval_ticks = 2;
            c.append_entries_max = 1 + rng.index(8).unwrap_or(0);
            c.inflight_max = 1 + rng.index(4).unwrap_or(0);
            c.pre_vote = rng.chance(0.8);
            c.check_quorum = c.pre_vote || rng.chance(0.5);
            c.lease_reads = c.check_quorum && rng.chance(0.3);
            c.snapshot_log_entries_max = plan.snapshot_log_entries_max;
            c.snapshot_chunk_bytes_max = 16;
            c
        })
        .collect();
    let mut cluster = Cluster::<KvStore>::with_configs(configs, seed);
    cluster.faults = Faults {
        drop: 0.05 * rng.index(3).unwrap_or(0) as f64,
        duplicate: 0.05 * rng.index(2).unwrap_or(0) as f64,
        reorder: 0.3 * rng.index(2).unwrap_or(0) as f64,
        defer_flush: 0.2 * rng.index(2).unwrap_or(0) as f64,
    };
    let fail = |step: usize, what: String| -> ! {
        panic!("seed {seed}, step {step}: {what}");
    };
    let mut next_value = 0u64;
    let mut history = History::default();
    for step in 0..plan.steps {
        let r = rng.next_u64() % 1000;
        let ids = cluster.ids();
        let pick = |rng: &mut DetRng| ids[rng.index(ids.len()).unwrap_or(0)];
        match r {
            0..=549 => {
                if !cluster.deliver_one() {
                    let id = pick(&mut rng);
                    cluster.tick(id);
                }
            }
            550..=799 => {
                let id = pick(&mut rng);
                cluster.tick(id);
            }
            800..=879 => {
                let to = match cluster.leader() {
                    Some(l) if rng.chance(0.8) => l,
                    _ => pick(&mut rng),
                };
                next_value += 1;
                let cmd = KvCommand::Append {
                    key: format!("k{}", rng.index(3).unwrap_or(0)),
                    value: format!("{next_value},"),
                };
                let rid = cluster.submit(to, Request::Propose(cmd.clone()));
                history.proposals.insert(rid, (cmd, None));
            }
            880..=899 => {
                let to = cluster.leader().unwrap_or_else(|| pick(&mut rng));
                cluster.submit(to, Request::Read(KvQuery::Get("k0".into())));
            }
            900..=904 => {
                let id = pick(&mut rng);
                let crashed = cluster
                    .ids()
                    .iter()
                    .filter(|&&i| cluster.node(i).is_none())
                    .count();
                if cluster.node(id).is_some() && crashed < (n as usize - 1) / 2 {
                    let torn = rng.chance(0.5);
                    cluster.crash(id, torn);
                }
            }
            905..=924 => {
                let id = pick(&mut rng);
                if cluster.node(id).is_none() {
                    cluster.restart(id);
                }
            }
            925..=929 => {
                let id = pick(&mut rng);
                cluster.isolate(id);
            }
            930..=934 => {
                let a = pick(&mut rng);
                let b = pick(&mut rng);
                if a != b {
                    cluster.block(a, b);
                }
            }
            935..=954 => cluster.heal(),
            955..=989 => {
                let id = pick(&mut rng);
                cluster.flush(id);
            }
            990..=994 if plan.membership => {
                if let Some(l) = cluster.leader() {
                    let all = cluster.ids();
                    let target = pick(&mut rng);
                    let req = match rng.index(4).unwrap_or(0) {
                        0 => Request::AddLearner(target),
                        1 => Request::AddVoter(target),
                        2 => Request::RemoveNode(target),
                        _ => {
                            let voters = all.iter().copied().filter(|_| rng.chance(0.5)).collect();
                            Request::ChangeVoters(voters)
                        }
                    };
                    cluster.submit(l, req);
                }
            }
            _ => {
                if plan.transfers {
                    if let Some(l) = cluster.leader() {
                        let target = pick(&mut rng);
                        cluster.submit(l, Request::TransferLeadership(target));
                    }
                }
            }
        }
        if let Err(e) = check(&cluster) {
            fail(step, e);
        }
        for (rid, (_, resp)) in history.proposals.iter_mut() {
            if resp.is_none() {
                *resp = cluster.take_response(*rid);
            }
        }
    }
    let applied_during_faults = history
        .proposals
        .values()
        .filter(|(_, r)| matches!(r, Some(Response::Applied { .. })))
        .count();
    // Quiet phase: heal, restart, no faults; the cluster must make progress.
    cluster.faults = Faults::default();
    cluster.heal();
    for id in cluster.ids() {
        if cluster.node(id).is_none() {
            cluster.restart(id);
        }
    }
    cluster.flush_all();
    // Deliver and tick by hand, checking after every step, until a proposal to the leader
    // is applied.
    let mut committed = false;
    let mut pending: Option<RequestId> = None;
    let mut last_refusal = None;
    let mut step = plan.steps;
    'quiet: for _tick in 0..QUIET_TICKS_MAX {
        while cluster.deliver_one() {
            step += 1;
            if let Err(e) = check(&cluster) {
                dump(&cluster);
                fail(step, e);
            }
            if let Some(rid) = pending {
                match cluster.take_response(rid) {
                    Some(Response::Applied { .. }) => {
                        committed = true;
                        break 'quiet;
                    }
                    Some(other) => {
                        last_refusal = Some(other);
                        pending = None
                    }
                    None => {}
                }
            }
        }
        cluster.flush_all();
        cluster.tick_all();
        step += 1;
        if let Err(e) = check(&cluster) {
            dump(&cluster);
            fail(step, e);
        }
        if pending.is_none() {
            if let Some(l) = cluster.leader() {
                let cmd = KvCommand::Put {
                    key: "final".into(),
                    value: "done".into(),
                };
                pending = Some(cluster.submit(l, Request::Propose(cmd)));
            }
        }
        if let Some(rid) = pending {
            match cluster.take_response(rid) {
                Some(Response::Applied { .. }) => {
                    committed = true;
                    break;
                }
                Some(other) => {
                    last_refusal = Some(other);
                    pending = None
                }
                None => {}
            }
        }
    }
    if let Err(e) = check(&cluster) {
        fail(plan.steps, e);
    }
    if !committed {
        for n in cluster.running() {
            eprintln!("{:?}", common::Node::metrics(n));
        }
        fail(
            plan.steps,
            format!("no progress after the faults stopped; last refusal {last_refusal:?}"),
        );
    }
    RunStats {
        applied_during_faults,
        snapshots: cluster
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, raft::Event::Snapshot { .. }))
            .count(),
    }
}

/// What a run achieved, to prove the runs are not vacuous.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    /// Proposals answered `Applied` during the faulty phase.
    pub applied_during_faults: usize,
    /// Snapshots taken or installed.
    pub snapshots: usize,
}

/// State for the invariants that need memory across steps.
#[derive(Default)]
pub struct Observed {
    /// The leader seen in each term.
    pub leaders: BTreeMap<Term, NodeId>,
    /// Every committed entry seen: index → term.
    pub committed: BTreeMap<u64, Term>,
    /// What each index applied: index → (term, state machine snapshot after it, if seen).
    pub applied: BTreeMap<u64, (Term, Payload<KvCommand>)>,
    /// The highest applied index checked per node.
    pub applied_checked: BTreeMap<NodeId, u64>,
}

/// Election safety (§5.2): at most one leader per term.
pub fn election_safety(obs: &mut Observed, c: &Cluster<KvStore>) -> Result<(), String> {
    for n in c.running() {
        if n.role() == Role::Leader {
            let prev = *obs.leaders.entry(n.term()).or_insert(common::Node::id(n));
            if prev != common::Node::id(n) {
                return Err(format!(
                    "two leaders in term {}: {prev} and {}",
                    n.term(),
                    common::Node::id(n)
                ));
            }
        }
    }
    Ok(())
}

fn entry_eq(a: &Entry<KvCommand>, b: &Entry<KvCommand>) -> bool {
    a == b
}

/// Log matching (§5.3): if two logs hold an entry with the same index and term, the logs are
/// identical in all entries up through that index.
pub fn log_matching(c: &Cluster<KvStore>) -> Result<(), String> {
    let nodes: Vec<&RaftNode<KvStore>> = c.running().collect();
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            let lo = a.first_log_index().max(b.first_log_index());
            let hi = a.last_log_index().min(b.last_log_index());
            // The highest index where both hold the same term.
            let mut top = None;
            let mut idx = hi;
            while idx >= lo && idx > 0 {
                if a.entry_term(idx).is_some() && a.entry_term(idx) == b.entry_term(idx) {
                    top = Some(idx);
                    break;
                }
                idx -= 1;
            }
            let Some(top) = top else { continue };
            for j in lo..=top {
                match (a.entry(j), b.entry(j)) {
                    (Some(x), Some(y)) if !entry_eq(x, y) => {
                        return Err(format!(
                            "logs of {} and {} agree at {top} but differ at {j}: {x:?} vs {y:?}",
                            common::Node::id(*a),
                            common::Node::id(*b)
                        ))
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Leader completeness (§5.4): every entry committed (by anyone, ever) is in the log of every
/// leader of a later term.
pub fn leader_completeness(obs: &mut Observed, c: &Cluster<KvStore>) -> Result<(), String> {
    // Only what rests on durable records counts as committed (see `Cluster::is_flushed`).
    for n in c.running().filter(|n| c.is_flushed(common::Node::id(*n))) {
        for i in n.first_log_index()..=n.commit_index() {
            if let Some(t) = n.entry_term(i) {
                obs.committed.entry(i).or_insert(t);
            }
        }
    }
    for n in c.running().filter(|n| n.role() == Role::Leader) {
        for (&i, &t) in obs.committed.range(n.first_log_index()..) {
            if t >= n.term() {
                continue;
            }
            if n.entry_term(i) != Some(t) {
                return Err(format!(
                    "leader {} of term {} lacks committed entry {i} of term {t} (has {:?})",
                    common::Node::id(n),
                    n.term(),
                    n.entry_term(i)
                ));
            }
        }
    }
    Ok(())
}

/// State machine safety (§5.4.3): no two nodes apply different entries at the same index; nodes
/// at the same applied index hold the same state.
pub fn state_machine_safety(obs: &mut Observed, c: &Cluster<KvStore>) -> Result<(), String> {
    // Only what rests on durable records counts as applied (see `Cluster::is_flushed`); a crash
    // legitimately forgets the rest, which never left the node.
    for n in c.running().filter(|n| c.is_flushed(common::Node::id(*n))) {
        let id = common::Node::id(n);
        let from = obs.applied_checked.get(&id).copied().unwrap_or(0) + 1;
        for i in from.max(n.first_log_index())..=n.applied_index() {
            let Some(e) = n.entry(i) else { continue };
            let seen = obs
                .applied
                .entry(i)
                .or_insert_with(|| (e.term, e.payload.clone()));
            if (seen.0, &seen.1) != (e.term, &e.payload) {
                return Err(format!(
                    "node {id} applied {:?} at {i}, another node applied {:?}",
                    (e.term, &e.payload),
                    seen
                ));
            }
        }
        obs.applied_checked.insert(id, n.applied_index());
    }
    let nodes: Vec<&RaftNode<KvStore>> = c
        .running()
        .filter(|n| c.is_flushed(common::Node::id(*n)))
        .collect();
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            if a.applied_index() == b.applied_index()
                && a.state_machine().snapshot() != b.state_machine().snapshot()
            {
                return Err(format!(
                    "nodes {} and {} applied up to {} but hold different states",
                    common::Node::id(*a),
                    common::Node::id(*b),
                    a.applied_index()
                ));
            }
        }
    }
    Ok(())
}

/// Runs `seeds` seeds checking `check` after every step.
pub fn run_seeds(seeds: u64, plan: &Plan, mut make: impl FnMut() -> Check) {
    // `SIM_SEED=n` replays one seed (the failure message names it).
    let range = match std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(seed) => seed..seed + 1,
        None => 0..seeds,
    };
    let seeds = range.end - range.start;
    let mut busy = 0;
    let mut snapshots = 0;
    for seed in range {
        let mut check = make();
        let stats = run(seed, plan, &mut *check);
        if stats.applied_during_faults >= 5 {
            busy += 1;
        }
        snapshots += stats.snapshots;
    }
    if plan.snapshot_log_entries_max > 0 {
        assert!(
            snapshots as u64 >= seeds,
            "only {snapshots} snapshots in {seeds} runs"
        );
    }
    // The faults must leave room for work, or the invariants hold vacuously.
    assert!(
        busy * 2 >= seeds,
        "only {busy} of {seeds} runs applied 5 proposals during the faults"
    );
}

/// A check run after every step.
pub type Check = Box<dyn FnMut(&Cluster<KvStore>) -> Result<(), String>>;

/// Every invariant of this module at once (for the feature simulations: snapshots, transfer).
pub fn all_invariants() -> Check {
    let mut obs = Observed::default();
    Box::new(move |c| {
        election_safety(&mut obs, c)?;
        log_matching(c)?;
        leader_completeness(&mut obs, c)?;
        state_machine_safety(&mut obs, c)
    })
}
