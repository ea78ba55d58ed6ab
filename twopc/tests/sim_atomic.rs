//! Atomicity and durability of two-phase commit under the simulator (Bernstein, Hadzilacos &
//! Goodman, ch. 7, rules AC1–AC5): loss, duplication, reordering, partitions, crashes and restarts
//! of coordinators and participants at every step; and the blocking scenario 2PC is known for.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use common::check::atomic::AtomicChecker;
use common::sim::{
    run_seeds, Fault, FaultPlan, LinkConfig, OpenLoop, Outcome as SimOutcome, RandomFaults, Sim,
    SimConfig, SimError, SimView,
};
use common::txn::{Outcome, TxId, Write};
use common::{Node, NodeId};
use twopc::{Config, Event, Record, Request, Response, TwoPcNode};

const MEMBERS: [NodeId; 5] = [1, 2, 3, 4, 5];
const COORDINATORS: [NodeId; 2] = [1, 2];
const KEYS: usize = 6;
const FAULTS_UNTIL: u64 = 1_500;
const SETTLE_DEADLINE: u64 = 6_000;
const SEEDS_DEFAULT: u64 = 2_000;

type Sim2 = Sim<TwoPcNode>;

fn node_config(id: NodeId) -> Config {
    Config::new(id, MEMBERS.to_vec())
}

/// Agreement after every step: a participant's `Finished` events never contradict another's,
/// nor its own earlier one. Incremental (events only grow), so it costs O(new events) per step.
fn add_agreement_invariant(
    sim: &mut Sim2,
) -> Rc<RefCell<BTreeMap<TxId, BTreeMap<NodeId, Outcome>>>> {
    let outcomes: Rc<RefCell<BTreeMap<TxId, BTreeMap<NodeId, Outcome>>>> = Rc::default();
    let seen = Rc::new(RefCell::new(0usize));
    let outcomes_in = outcomes.clone();
    sim.add_invariant(
        "atomic commit agreement",
        move |view: &SimView<'_, TwoPcNode>| {
            let events = view.events();
            let mut seen = seen.borrow_mut();
            let mut outcomes = outcomes_in.borrow_mut();
            for (_, node, ev) in &events[*seen..] {
                if let Event::Finished { tx, outcome } = ev {
                    let at = outcomes.entry(*tx).or_default();
                    if let Some((other, o)) = at.iter().find(|(_, o)| **o != *outcome) {
                        return Err(format!(
                            "{tx}: {outcome} at node {node} but {o} at node {other}"
                        ));
                    }
                    at.insert(*node, *outcome);
                }
            }
            *seen = events.len();
            Ok(())
        },
    );
    outcomes
}

/// Random transactions: a coordinator among `COORDINATORS`, one to three other participants,
/// zero to two writes each on a small key set (so conflicts and no-wait aborts are common).
fn workload(sim: &mut Sim2, until: u64, requests_max: u64) {
    sim.open_loop(
        OpenLoop {
            start: 20,
            until,
            interval_min: 5,
            interval_max: 40,
            requests_max,
            timeout: None,
        },
        |rng, _ctx| {
            let c = COORDINATORS[rng.index(COORDINATORS.len())?];
            let others: Vec<NodeId> = MEMBERS.iter().copied().filter(|&m| m != c).collect();
            let count = rng.range_inclusive(1, 3) as usize;
            let mut writes = BTreeMap::new();
            while writes.len() < count {
                let p = others[rng.index(others.len())?];
                let n = if rng.chance(0.15) {
                    0
                } else {
                    rng.range_inclusive(1, 2)
                };
                let w: Vec<Write> = (0..n)
                    .map(|_| {
                        let k = rng.index(KEYS).unwrap_or(0);
                        Write::put(format!("k{k}"), rng.next_u64().to_le_bytes().to_vec())
                    })
                    .collect();
                writes.insert(p, w);
            }
            Some((c, Request::Commit { writes }))
        },
    );
}

/// The end-of-run checks: everything resolved, and atomic commit over the whole history.
fn check_settled(
    sim: &mut Sim2,
    outcomes: &BTreeMap<TxId, BTreeMap<NodeId, Outcome>>,
) -> Result<AtomicChecker, SimError> {
    let mut check = AtomicChecker::new();
    for (tx, at) in outcomes {
        for (node, o) in at {
            check.participant_outcome(*node, *tx, *o);
        }
    }
    for op in sim.history() {
        let Request::Commit { writes } = &op.request;
        if let SimOutcome::Response(Response::Outcome { tx, outcome }) = &op.outcome {
            let writers: Vec<NodeId> = writes
                .iter()
                .filter(|(_, w)| !w.is_empty())
                .map(|(p, _)| *p)
                .collect();
            check.client_outcome(*tx, *outcome, &writers);
        }
    }
    for id in MEMBERS {
        let Some(node) = sim.node(id) else {
            return Err(sim.fail_now(format!("node {id} is down after the quiet period")));
        };
        let m = node.metrics();
        if !m.in_doubt.is_empty() {
            return Err(sim.fail_now(format!("node {id} still in doubt: {:?}", m.in_doubt)));
        }
        if m.decision_conflicts != 0 {
            return Err(sim.fail_now(format!(
                "node {id} saw {} conflicting decisions",
                m.decision_conflicts
            )));
        }
        check.set_applied(id, node.resource().applied().iter().copied());
    }
    if let Err(v) = check.check_final() {
        return Err(sim.fail_now(format!("atomic commit violated: {v}")));
    }
    Ok(check)
}

/// Every node up, nothing in doubt, nothing being coordinated, and every effect released (a
/// step's state changes before its batch is synced and its events published).
fn settled(view: &SimView<'_, TwoPcNode>) -> bool {
    view.nodes().all(|(id, n)| {
        view.unsynced(id).is_empty()
            && n.is_some_and(|n| {
                let m = n.metrics();
                m.in_doubt.is_empty() && m.coordinating == 0
            })
    })
}

/// Runs until [`settled`] (by `deadline`), then a little longer so the last batches' events are
/// published.
fn settle(sim: &mut Sim2, deadline: u64) -> Result<bool, SimError> {
    let done = sim.run_until_cond(deadline, settled)?;
    sim.run_for(100)?;
    Ok(done && settled(&sim.view()))
}

#[derive(Default)]
struct Totals {
    committed: usize,
    reported: usize,
    blocked_seen: usize,
}

fn one_seed(seed: u64, totals: &mut Totals) -> Result<(), SimError> {
    let mut cfg = SimConfig::new(seed, MEMBERS.to_vec());
    cfg.link = LinkConfig {
        latency_min: 1,
        latency_max: 12,
        drop: 0.03,
        duplicate: 0.03,
    };
    // Group commit, and crashes between a step and its sync (torn tails).
    cfg.sync_latency_max = 3;
    cfg.steps_max = 400_000;
    let mut sim: Sim2 = Sim::new(cfg, node_config)?;
    let outcomes = add_agreement_invariant(&mut sim);
    let mut knobs = RandomFaults::new(50, FAULTS_UNTIL, 1.0);
    // 2PC needs no majority: let any number of nodes be down at once.
    knobs.allow_majority_down = true;
    sim.schedule(FaultPlan::random(seed, &MEMBERS, &knobs));
    workload(&mut sim, FAULTS_UNTIL - 100, 40);
    sim.run_until(FAULTS_UNTIL)?;
    // Quiet period: everyone restarted, network repaired. Every transaction must end.
    if !settle(&mut sim, SETTLE_DEADLINE)? {
        let mut stuck = Vec::new();
        for id in MEMBERS {
            if let Some(n) = sim.node(id) {
                stuck.push((id, n.metrics()));
            }
        }
        return Err(sim.fail_now(format!("not settled by {SETTLE_DEADLINE}: {stuck:?}")));
    }
    let check = check_settled(&mut sim, &outcomes.borrow())?;
    totals.committed += check.reported_committed();
    totals.reported += check.reported();
    totals.blocked_seen += sim
        .events()
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::Blocked { .. }))
        .count();
    Ok(())
}

#[test]
fn atomicity_and_durability_under_random_faults() {
    let mut totals = Totals::default();
    let report = run_seeds(SEEDS_DEFAULT, |seed| one_seed(seed, &mut totals)).unwrap();

    // The runs did real work: most seeds commit transactions, and faults did block some.
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
    if report.seeds >= 100 {
        assert!(
            totals.blocked_seen > 0,
            "no run ever blocked: the faults are too tame"
        );
    }
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut t = Totals::default();
        let mut cfg = SimConfig::new(seed, MEMBERS.to_vec());
        cfg.link.drop = 0.05;
        let mut sim: Sim2 = Sim::new(cfg, node_config).unwrap();
        sim.schedule(FaultPlan::random(
            seed,
            &MEMBERS,
            &RandomFaults::new(50, 800, 1.0),
        ));
        workload(&mut sim, 700, 20);
        sim.run_until(2_000).unwrap();
        t.reported = sim.history().len();
        (sim.trace_hash(), t.reported)
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7).0, run(8).0);
}

/// The case 2PC is known for. The coordinator collects three Yes votes and logs Commit, but its
/// Commit messages never leave (its outgoing links are cut), and it crashes. The participants are
/// prepared; each asks the coordinator (down) and its peers (prepared too): nobody knows, and
/// none may decide alone, so all stay blocked, holding their locks, and say so. When the
/// coordinator recovers, it finds its Commit record and finishes: all commit. Neither split nor
/// progress happens while it is down.
#[test]
fn coordinator_crash_after_all_yes_blocks_until_it_recovers() {
    let mut cfg = SimConfig::new(1, MEMBERS.to_vec());
    cfg.link = LinkConfig::fixed(5);
    let mut sim: Sim2 = Sim::new(cfg, node_config).unwrap();
    let outcomes = add_agreement_invariant(&mut sim);
    let writes = BTreeMap::from([
        (2, vec![Write::put("a", "1")]),
        (3, vec![Write::put("b", "1")]),
        (4, vec![Write::put("c", "1")]),
    ]);
    sim.submit(100, 1, Request::Commit { writes });
    // Prepare leaves at 100 and arrives at 105; the votes arrive at 110. Cut the coordinator's
    // outgoing links in between, so the decision is taken but never delivered.
    sim.run_until(107).unwrap();
    sim.apply(Fault::OneWay {
        from: vec![1],
        to: vec![2, 3, 4, 5],
    })
    .unwrap();
    sim.run_until(115).unwrap();
    let tx = TxId::new(1, 0);
    assert!(
        sim.records(1).contains(&Record::CommitDecision {
            tx,
            participants: vec![2, 3, 4]
        }),
        "the coordinator decided commit"
    );
    for p in [2, 3, 4] {
        assert!(sim
            .records(p)
            .iter()
            .any(|r| matches!(r, Record::Prepared { .. })));
    }
    sim.crash(1).unwrap();
    sim.apply(Fault::Heal).unwrap();
    // A long time passes with the coordinator down.
    sim.run_until(3_000).unwrap();
    for p in [2, 3, 4] {
        let m = sim.node(p).unwrap().metrics();
        assert_eq!(
            m.in_doubt.len(),
            1,
            "participant {p} must still be in doubt"
        );
        assert_eq!(m.in_doubt[0].tx, tx);
        assert!(
            m.in_doubt[0].blocked,
            "participant {p} reports itself blocked"
        );
        assert!(m.in_doubt[0].age_ticks > 200);
        assert_eq!(m.blocked, 1);
        assert_eq!(m.applied, 0);
        assert_eq!(
            sim.node(p)
                .unwrap()
                .resource()
                .lock_holder(["a", "b", "c"][p as usize - 2]),
            Some(tx)
        );
    }
    assert!(
        outcomes.borrow().is_empty(),
        "nobody decided without the coordinator"
    );
    let blocked: BTreeSet<NodeId> = sim
        .events()
        .iter()
        .filter(|(_, _, e)| *e == Event::Blocked { tx })
        .map(|(_, n, _)| *n)
        .collect();
    assert_eq!(blocked, BTreeSet::from([2, 3, 4]));
    // The coordinator comes back, replays its log and resends Commit.
    sim.restart(1).unwrap();
    let done = settle(&mut sim, 4_000).unwrap();
    assert!(done, "everything resolved after the coordinator recovered");
    for p in [2, 3, 4] {
        assert_eq!(sim.node(p).unwrap().resource().applied(), &[tx]);
    }
    let o = outcomes.borrow();
    assert_eq!(o[&tx].len(), 3);
    assert!(o[&tx].values().all(|v| *v == Outcome::Committed));
    // The End record was written once every participant acked.
    assert!(sim.records(1).contains(&Record::End { tx }));
}

/// The same crash, but before the Commit record is durable (the coordinator's log sync is slow
/// and the crash hits before it): presumed abort makes everyone abort after recovery.
#[test]
fn coordinator_crash_before_the_commit_record_is_durable_aborts_everywhere() {
    let mut cfg = SimConfig::new(3, MEMBERS.to_vec());
    cfg.link = LinkConfig::fixed(5);
    cfg.sync_latency_min = 20;
    cfg.sync_latency_max = 20;
    cfg.torn_tail = false;
    let mut sim: Sim2 = Sim::new(cfg, node_config).unwrap();
    let outcomes = add_agreement_invariant(&mut sim);
    let writes = BTreeMap::from([
        (2, vec![Write::put("a", "1")]),
        (3, vec![Write::put("b", "1")]),
    ]);
    let req = sim.submit(100, 1, Request::Commit { writes });
    // Prepare is synced and sent at 120, arrives at 125; the participants sync their Prepared
    // records until 145 and vote; the votes arrive at 150; the coordinator's Commit record would
    // be durable at 170. Crash in between.
    sim.run_until(160).unwrap();
    let tx = TxId::new(1, 0);
    assert!(!sim
        .records(1)
        .iter()
        .any(|r| matches!(r, Record::CommitDecision { .. })));
    sim.crash(1).unwrap();
    sim.run_until(1_000).unwrap();
    for p in [2, 3] {
        assert_eq!(sim.node(p).unwrap().metrics().in_doubt.len(), 1);
    }
    sim.restart(1).unwrap();
    assert!(settle(&mut sim, 3_000).unwrap());
    let o = outcomes.borrow();
    assert!(o[&tx].values().all(|v| *v == Outcome::Aborted));
    assert_eq!(o[&tx].len(), 2);
    let op = sim.history().iter().find(|op| op.id == req).unwrap();
    assert_eq!(
        op.outcome,
        SimOutcome::Crashed,
        "the client never heard a commit"
    );
}

/// Crashes at every step: for each node of a three-participant transaction and each step `k` of
/// the run, crash that node right after step `k`, restart it later, and check atomicity,
/// durability and that everything resolves. With a sync latency, crashes also fall between a
/// step and the sync of its records (torn tails).
#[test]
fn crash_at_every_step_of_a_transaction() {
    let mut crashed_mid_protocol = 0;
    for victim in [1, 2, 3, 4] {
        for k in 0..40u64 {
            let mut cfg = SimConfig::new(k, MEMBERS.to_vec());
            cfg.link = LinkConfig {
                latency_min: 1,
                latency_max: 6,
                drop: 0.0,
                duplicate: 0.0,
            };
            cfg.sync_latency_max = 2;
            let mut sim: Sim2 = Sim::new(cfg, node_config).unwrap();
            let outcomes = add_agreement_invariant(&mut sim);
            let writes = BTreeMap::from([
                (2, vec![Write::put("a", "1")]),
                (3, vec![Write::put("b", "1")]),
                (4, vec![Write::put("c", "1")]),
            ]);
            sim.submit(10, 1, Request::Commit { writes });
            sim.run_until(9).unwrap();
            for _ in 0..k {
                sim.step().unwrap();
            }
            let undecided = outcomes.borrow().is_empty();
            crashed_mid_protocol += usize::from(undecided);
            sim.crash(victim).unwrap();
            let back = sim.now() + 300;
            sim.schedule_fault(back, Fault::Restart(victim));
            sim.run_until(back).unwrap();
            let settled = settle(&mut sim, back + 3_000).unwrap();
            assert!(settled, "victim {victim}, step {k}: not settled");
            let o = outcomes.borrow();
            check_settled(&mut sim, &o)
                .unwrap_or_else(|e| panic!("victim {victim}, step {k}: {e}"));
        }
    }
    assert!(
        crashed_mid_protocol >= 80,
        "only {crashed_mid_protocol} crashes hit the protocol mid-way"
    );
}
