//! The test suite both atomic-commit protocols run (feature `sim`): the pieces of their
//! simulations that do not depend on the protocol, written once over [`AtomicCommit`].
//!
//! Each protocol crate's `tests/` calls these with its node type and asserts what its protocol
//! promises: the invariant that collects participants' outcomes after every step
//! ([`add_agreement`]), the random workload ([`workload`]), when a run has settled ([`settled`],
//! [`settle`]), the atomic-commit checker over a finished run ([`checker`]), crashes at every
//! step of one transaction ([`crash_at_every_step`]) and the retransmission-storm run
//! ([`storm_run`]). The async driver tests are in [`driver`].

// A test suite: a failed expectation is a panic, as in a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "runtime")]
pub mod driver;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::check::atomic::AtomicChecker;
use crate::sim::{
    run_seeds, Fault, InFlight, LinkConfig, OpenLoop, Outcome as SimOutcome, Sim, SimConfig,
    SimError, SimView,
};
use crate::{Effects, Node, NodeId, Outbox, RequestId};

use super::{storm, AtomicCommit, MemKv, Outcome, Request, Response, TxId, Write};

/// The cluster of the random-fault simulations.
pub const MEMBERS: [NodeId; 5] = [1, 2, 3, 4, 5];
/// When the random faults of those simulations stop (then everyone is up and the network
/// repaired, and every transaction must end).
pub const FAULTS_UNTIL: u64 = 1_500;
/// How many seeds they run by default ([`run_seeds`]: the environment may say otherwise).
pub const SEEDS_DEFAULT: u64 = 2_000;
/// Their workload: coordinators 1 and 2, six keys, every participant with writes.
pub const WORKLOAD: Workload<'static> = Workload {
    members: &MEMBERS,
    coordinators: &[1, 2],
    keys: 6,
    enlisted_only: None,
};

/// Runs one step of a core (`f` calls it with an outbox) and returns its effects, for tests
/// that assert the exact effects of every step.
pub fn step<N: Node>(n: &mut N, f: impl FnOnce(&mut N, &mut Outbox<N>)) -> Effects<N> {
    let mut out = Outbox::new();
    f(n, &mut out);
    out.take()
}

/// Delivers message `m` from `from` to `n`: one step.
pub fn deliver<N: Node>(n: &mut N, from: NodeId, m: N::Message) -> Effects<N> {
    step(n, |n, o| n.handle_message(from, m, o))
}

/// One tick of `n`: one step.
pub fn tick<N: Node>(n: &mut N) -> Effects<N> {
    step(n, |n, o| n.tick(o))
}

/// One participant's writes in a steps test: `key` set to `"v"`.
pub fn one_write(key: &str) -> Vec<Write> {
    vec![Write::put(key, "v")]
}

/// The ticks, counted from a send, at which a message is resent while unanswered: `base`
/// ticks after it, then after waits doubling up to `max` ([`Backoff`](super::Backoff)), up to
/// tick `until`.
pub fn resend_schedule(base: u64, max: u64, until: u64) -> Vec<u64> {
    let (mut t, mut wait, mut at) = (0, base, Vec::new());
    loop {
        t += wait;
        if t > until {
            return at;
        }
        at.push(t);
        wait = (wait * 2).min(max);
    }
}

/// The one answer a steps test expects for its first request (`RequestId(1)`): `tx` was
/// decided `outcome`.
pub fn first_answer(tx: TxId, outcome: Outcome) -> Vec<(RequestId, Response)> {
    vec![(RequestId(1), Response::Outcome { tx, outcome })]
}

/// Every participant's outcome of every transaction, as its `Finished` events said.
pub type Outcomes = Rc<RefCell<BTreeMap<TxId, BTreeMap<NodeId, Outcome>>>>;

/// Collects every participant's `Finished` events, incrementally after every step (events only
/// grow, so each step costs its new events); when `enforce`, an outcome contradicting another
/// participant's, or the participant's own earlier one, stops the run.
pub fn add_agreement<N: AtomicCommit>(sim: &mut Sim<N>, enforce: bool) -> Outcomes {
    let outcomes: Outcomes = Rc::default();
    let seen = Rc::new(RefCell::new(0usize));
    let collected = outcomes.clone();
    sim.add_invariant("atomic commit agreement", move |view: &SimView<'_, N>| {
        let events = view.events();
        let mut seen = seen.borrow_mut();
        let mut collected = collected.borrow_mut();
        for (_, node, ev) in &events[*seen..] {
            let Some((tx, outcome)) = N::finished(ev) else {
                continue;
            };
            let at = collected.entry(tx).or_default();
            if enforce {
                if let Some((other, o)) = at.iter().find(|(_, o)| **o != outcome) {
                    return Err(format!(
                        "{tx}: {outcome} at node {node} but {o} at node {other}"
                    ));
                }
            }
            at.insert(*node, outcome);
        }
        *seen = events.len();
        Ok(())
    });
    outcomes
}

/// The shape of the random workload of [`workload`].
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    /// The cluster.
    pub members: &'a [NodeId],
    /// The nodes that coordinate.
    pub coordinators: &'a [NodeId],
    /// Keys the writes spread over (few, so conflicts and no-wait aborts are common).
    pub keys: usize,
    /// The chance that a participant is enlisted without writes (`None`: never, and no random
    /// draw is spent on it).
    pub enlisted_only: Option<f64>,
}

/// Random transactions until `until`, at most `requests_max`: a coordinator among
/// `coordinators`, one to three other participants with one or two writes each (or, with
/// [`Workload::enlisted_only`], sometimes none).
pub fn workload<N: AtomicCommit>(
    sim: &mut Sim<N>,
    w: Workload<'static>,
    until: u64,
    requests_max: u64,
) {
    sim.open_loop(
        OpenLoop {
            start: 20,
            until,
            interval_min: 5,
            interval_max: 40,
            requests_max,
            timeout: None,
        },
        move |rng, _ctx| {
            let c = w.coordinators[rng.index(w.coordinators.len())?];
            let others: Vec<NodeId> = w.members.iter().copied().filter(|&m| m != c).collect();
            let count = rng.range_inclusive(1, 3) as usize;
            let mut writes = BTreeMap::new();
            while writes.len() < count {
                let p = others[rng.index(others.len())?];
                let n = match w.enlisted_only {
                    Some(chance) if rng.chance(chance) => 0,
                    _ => rng.range_inclusive(1, 2),
                };
                let ws: Vec<Write> = (0..n)
                    .map(|_| {
                        let k = rng.index(w.keys).unwrap_or(0);
                        Write::put(format!("k{k}"), rng.next_u64().to_le_bytes().to_vec())
                    })
                    .collect();
                writes.insert(p, ws);
            }
            Some((c, Request::Commit { writes }))
        },
    );
}

/// Every node up, nothing undecided, nothing being coordinated, and every effect released (a
/// step's state changes before its batch is synced and its events published).
pub fn settled<N: AtomicCommit>(view: &SimView<'_, N>) -> bool {
    view.nodes().all(|(id, n)| {
        view.unsynced(id).is_empty()
            && n.is_some_and(|n| {
                let c = N::counters(&n.metrics());
                c.undecided == 0 && c.coordinating == 0
            })
    })
}

/// Runs until [`settled`] (by `deadline`), then a little longer so the last batches' events are
/// published.
pub fn settle<N: AtomicCommit>(sim: &mut Sim<N>, deadline: u64) -> Result<bool, SimError> {
    let done = sim.run_until_cond(deadline, settled)?;
    sim.run_for(100)?;
    Ok(done && settled(&sim.view()))
}

/// The atomic-commit checker over a run: the participants' outcomes, what clients were told
/// (a commit must reach every participant of the request, or with `writers_only` every
/// participant with writes: the others may leave early), and what each live node applied.
pub fn checker<N: AtomicCommit<Resource = MemKv>>(
    sim: &Sim<N>,
    members: &[NodeId],
    outcomes: &BTreeMap<TxId, BTreeMap<NodeId, Outcome>>,
    writers_only: bool,
) -> AtomicChecker {
    let mut check = AtomicChecker::new();
    for (tx, at) in outcomes {
        for (node, o) in at {
            check.participant_outcome(*node, *tx, *o);
        }
    }
    for op in sim.history() {
        let Request::Commit { writes } = &op.request;
        if let SimOutcome::Response(Response::Outcome { tx, outcome }) = &op.outcome {
            let ps: Vec<NodeId> = writes
                .iter()
                .filter(|(_, w)| !writers_only || !w.is_empty())
                .map(|(p, _)| *p)
                .collect();
            check.client_outcome(*tx, *outcome, &ps);
        }
    }
    for &id in members {
        if let Some(n) = sim.node(id) {
            check.set_applied(id, n.resource().applied().iter().copied());
        }
    }
    check
}

/// The end-of-run checks of a settled run: every node up, nothing undecided, no conflicting
/// decision, and atomic commit over the whole history ([`checker`]).
pub fn check_settled<N: AtomicCommit<Resource = MemKv>>(
    sim: &mut Sim<N>,
    members: &[NodeId],
    outcomes: &BTreeMap<TxId, BTreeMap<NodeId, Outcome>>,
    writers_only: bool,
) -> Result<AtomicChecker, SimError> {
    for &id in members {
        let Some(node) = sim.node(id) else {
            return Err(sim.fail_now(format!("node {id} is down after the quiet period")));
        };
        let m = node.metrics();
        let c = N::counters(&m);
        if c.undecided != 0 {
            return Err(sim.fail_now(format!("node {id} still undecided: {m:?}")));
        }
        if c.decision_conflicts != 0 {
            return Err(sim.fail_now(format!(
                "node {id} saw {} conflicting decisions",
                c.decision_conflicts
            )));
        }
    }
    let check = checker(sim, members, outcomes, writers_only);
    if let Err(v) = check.check_final() {
        return Err(sim.fail_now(format!("atomic commit violated: {v}")));
    }
    Ok(check)
}

/// The simulator configuration of a random-fault run over [`MEMBERS`]: links as given, group
/// commit with a sync latency (so crashes also fall between a step and the sync of its
/// records: torn tails), and a generous step bound.
pub fn fault_config(seed: u64, link: LinkConfig) -> SimConfig {
    let mut cfg = SimConfig::new(seed, MEMBERS.to_vec());
    cfg.link = link;
    cfg.sync_latency_max = 3;
    cfg.steps_max = 400_000;
    cfg
}

/// Runs until every transaction has ended ([`settle`], by `deadline`), or fails the run naming
/// the nodes' metrics.
pub fn settle_or_fail<N: AtomicCommit>(sim: &mut Sim<N>, deadline: u64) -> Result<(), SimError> {
    if settle(sim, deadline)? {
        return Ok(());
    }
    let members: Vec<NodeId> = sim.view().nodes().map(|(id, _)| id).collect();
    let stuck: Vec<_> = members
        .into_iter()
        .filter_map(|id| sim.node(id).map(|n| (id, n.metrics())))
        .collect();
    Err(sim.fail_now(format!("not settled by {deadline}: {stuck:?}")))
}

/// What the random-fault runs of all seeds add up to.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultTotals {
    /// Transactions reported committed to their clients.
    pub committed: usize,
    /// Transactions reported to their clients, either way.
    pub reported: usize,
}

impl FaultTotals {
    /// Adds the client reports of a finished run.
    pub fn add(&mut self, check: &AtomicChecker) {
        self.committed += check.reported_committed();
        self.reported += check.reported();
    }
}

/// Runs `one_seed` over the seeds ([`run_seeds`]), each adding its run to the totals, then
/// asserts that the runs did real work: most seeds commit transactions (five commits a seed at
/// least), and some abort (conflicts and faults). Returns how many seeds ran.
pub fn fault_seeds(
    default_count: u64,
    mut one_seed: impl FnMut(u64, &mut FaultTotals) -> Result<(), SimError>,
) -> u64 {
    let mut totals = FaultTotals::default();
    let report = run_seeds(default_count, |seed| one_seed(seed, &mut totals)).unwrap();
    assert!(
        totals.committed as u64 >= report.seeds * 5,
        "only {} commits over {} seeds",
        totals.committed,
        report.seeds
    );
    assert!(
        totals.reported > totals.committed,
        "no aborts at all: the workload is too tame"
    );
    report.seeds
}

/// How [`crash_at_every_step`] runs.
#[derive(Clone, Copy, Debug)]
pub struct CrashEveryStep {
    /// The cluster (node 1 coordinates a transaction writing at 2, 3 and 4).
    pub members: &'static [NodeId],
    /// For each victim, crashes after each of steps `0..steps`.
    pub steps: u64,
    /// How long the victim stays down.
    pub down_for: u64,
    /// How long after the restart everything must have settled.
    pub settle_within: u64,
    /// Whether a client's commit must reach only the participants with writes ([`checker`]).
    pub writers_only: bool,
    /// Whether the end-of-run checks are [`check_settled`]'s (no node down or undecided, no
    /// conflicting decision) rather than the checker's alone.
    pub strict: bool,
}

/// Crashes at every step: for each node of a three-participant transaction (coordinator 1,
/// participants 2, 3, 4) and each step `k` of the run, crash that node right after step `k`
/// (with a sync latency, also between a step and the sync of its records: torn tails), restart
/// it later, and check atomicity, durability and that everything resolves. Returns how many
/// crashes hit the protocol mid-way (before any participant finished).
pub fn crash_at_every_step<N: AtomicCommit<Resource = MemKv>>(
    plan: CrashEveryStep,
    node_config: fn(NodeId) -> N::Config,
) -> usize {
    let mut crashed_mid_protocol = 0;
    for victim in [1, 2, 3, 4] {
        for k in 0..plan.steps {
            let mut cfg = SimConfig::new(k, plan.members.to_vec());
            cfg.link = LinkConfig {
                latency_min: 1,
                latency_max: 6,
                drop: 0.0,
                duplicate: 0.0,
            };
            cfg.sync_latency_max = 2;
            let mut sim: Sim<N> = Sim::new(cfg, node_config).unwrap_or_else(|e| panic!("{e}"));
            let outcomes = add_agreement(&mut sim, true);
            let writes = BTreeMap::from([
                (2, vec![Write::put("a", "1")]),
                (3, vec![Write::put("b", "1")]),
                (4, vec![Write::put("c", "1")]),
            ]);
            sim.submit(10, 1, Request::Commit { writes });
            let step = |sim: &mut Sim<N>| -> Result<(), SimError> {
                sim.run_until(9)?;
                for _ in 0..k {
                    sim.step()?;
                }
                Ok(())
            };
            step(&mut sim).unwrap_or_else(|e| panic!("victim {victim}, step {k}: {e}"));
            crashed_mid_protocol += usize::from(outcomes.borrow().is_empty());
            let back = crash_and_restart(&mut sim, victim, plan.down_for)
                .unwrap_or_else(|e| panic!("victim {victim}, step {k}: {e}"));
            let done = settle(&mut sim, back + plan.settle_within)
                .unwrap_or_else(|e| panic!("victim {victim}, step {k}: {e}"));
            assert!(done, "victim {victim}, step {k}: not settled");
            let o = outcomes.borrow();
            if plan.strict {
                check_settled(&mut sim, plan.members, &o, plan.writers_only)
                    .unwrap_or_else(|e| panic!("victim {victim}, step {k}: {e}"));
            } else {
                let check = checker(&sim, plan.members, &o, plan.writers_only);
                check
                    .check_final()
                    .unwrap_or_else(|e| panic!("victim {victim}, step {k}: {e}"));
            }
        }
    }
    crashed_mid_protocol
}

/// Crashes `victim` now and runs until it is restarted `down_for` later; returns that time.
fn crash_and_restart<N: AtomicCommit>(
    sim: &mut Sim<N>,
    victim: NodeId,
    down_for: u64,
) -> Result<u64, SimError> {
    sim.crash(victim)?;
    let back = sim.now() + down_for;
    sim.schedule_fault(back, Fault::Restart(victim));
    sim.run_until(back)?;
    Ok(back)
}

/// One storm run ([`storm`]): seeded crash-restarts on a slow, lossy network, then a fast one,
/// stepping until everything is decided (or [`storm::QUIET_DEADLINE`]), failing the run when
/// more than `in_flight_max` messages are in flight after any step. `prepare` adds the
/// protocol's own invariants before the run. Returns the finished simulation (settled: every
/// node up, nothing undecided, nothing coordinated) and the peak of messages in flight.
pub fn storm_run<N: AtomicCommit>(
    seed: u64,
    in_flight_max: u64,
    node_config: impl Fn(NodeId) -> N::Config + 'static,
    prepare: impl FnOnce(&mut Sim<N>),
) -> Result<(Sim<N>, u64), SimError> {
    let mut cfg = SimConfig::new(seed, storm::MEMBERS.to_vec());
    cfg.link = storm::slow_link();
    cfg.sync_latency_max = 3;
    cfg.record_trace = true;
    cfg.steps_max = 2_000_000;
    let mut sim: Sim<N> = Sim::new(cfg, node_config)?;
    sim.set_message_label(|_| String::new());
    sim.schedule(storm::crash_plan(seed));
    storm::workload(&mut sim);
    prepare(&mut sim);
    let mut in_flight = InFlight::default();
    let mut quiet_since = None;
    while sim.now() < storm::QUIET_DEADLINE {
        if !sim.step()? {
            break;
        }
        let n = in_flight.update(sim.trace());
        if n > in_flight_max {
            return Err(sim.fail_now(format!("{n} messages in flight (bound {in_flight_max})")));
        }
        if sim.now() > storm::SLOW_UNTIL && settled(&sim.view()) {
            let since = *quiet_since.get_or_insert(sim.now());
            if sim.now() > since + 200 {
                break;
            }
        } else {
            quiet_since = None;
        }
    }
    if !settled(&sim.view()) {
        let stuck: Vec<_> = storm::MEMBERS
            .iter()
            .filter_map(|&id| sim.node(id).map(|n| (id, n.metrics())))
            .collect();
        return Err(sim.fail_now(format!(
            "not settled by {} on a fast network: {stuck:?}",
            storm::QUIET_DEADLINE
        )));
    }
    Ok((sim, in_flight.peak))
}

/// What the storm runs of all seeds add up to.
#[derive(Clone, Copy, Debug, Default)]
pub struct StormTotals {
    /// The most messages in flight after any step of any seed.
    pub peak: u64,
    /// Transactions that ended at a participant, over all seeds.
    pub decided: u64,
}

/// Runs `one_seed` over the seeds ([`run_seeds`]: `default_count` unless the environment says
/// otherwise), each adding its run to the totals ([`StormTotals::add`]), then asserts what every
/// protocol's storm promises over all of them: the messages in flight stayed within
/// `in_flight_max`, and the workload ran (ten decisions a seed at least). Returns how many seeds
/// ran.
pub fn storm_seeds(
    default_count: u64,
    in_flight_max: u64,
    mut one_seed: impl FnMut(u64, &mut StormTotals) -> Result<(), SimError>,
) -> u64 {
    let mut totals = StormTotals::default();
    let report = run_seeds(default_count, |seed| one_seed(seed, &mut totals)).unwrap();
    assert!(totals.peak <= in_flight_max);
    assert!(
        totals.decided >= report.seeds * 10,
        "only {} decisions over {} seeds: the workload did not run",
        totals.decided,
        report.seeds
    );
    report.seeds
}

impl StormTotals {
    /// Adds a finished storm run with its peak of messages in flight.
    pub fn add<N: AtomicCommit>(&mut self, sim: &Sim<N>, peak: u64) {
        self.peak = self.peak.max(peak);
        self.decided += decided_total(sim, &storm::MEMBERS);
    }
}

/// How many transactions, summed over the live nodes of a finished run, ended at a participant
/// (applied or aborted).
pub fn decided_total<N: AtomicCommit>(sim: &Sim<N>, members: &[NodeId]) -> u64 {
    members
        .iter()
        .filter_map(|&id| sim.node(id))
        .map(|n| {
            let c = N::counters(&n.metrics());
            c.applied + c.aborted
        })
        .sum()
}

/// The participants' outcomes of a finished run, from its `Finished` events.
pub fn finished_outcomes<N: AtomicCommit>(
    sim: &Sim<N>,
) -> BTreeMap<TxId, BTreeMap<NodeId, Outcome>> {
    let mut outcomes: BTreeMap<TxId, BTreeMap<NodeId, Outcome>> = BTreeMap::new();
    for (_, node, ev) in sim.events() {
        if let Some((tx, outcome)) = N::finished(ev) {
            outcomes.entry(tx).or_default().insert(*node, outcome);
        }
    }
    outcomes
}
