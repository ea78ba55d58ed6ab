//! Three-phase commit under the simulator (Skeen, "Nonblocking commit protocols", 1981): crash-stop
//! failures with restarts, message delay and loss with retransmission, no partitions. Atomicity,
//! durability and no blocking; the coordinator crash 2PC blocks on; and the known flaw, under a
//! partition and under a merely slow network.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use common::check::atomic::{AtomicChecker, AtomicViolation};
use common::sim::{
    run_seeds, Fault, FaultPlan, LinkConfig, OpenLoop, Outcome as SimOutcome, Sim, SimConfig,
    SimError, SimView, TraceKind,
};
use common::txn::{Outcome, TxId, Write};
use common::{DetRng, Node, NodeId};
use threepc::{Config, Event, Record, Request, Response, ThreePcNode};

const MEMBERS: [NodeId; 5] = [1, 2, 3, 4, 5];
const COORDINATORS: [NodeId; 2] = [1, 2];
const KEYS: usize = 6;
const FAULTS_UNTIL: u64 = 1_500;
const SETTLE_DEADLINE: u64 = 8_000;
const SEEDS_DEFAULT: u64 = 2_000;

type Sim3 = Sim<ThreePcNode>;
type Outcomes = Rc<RefCell<BTreeMap<TxId, BTreeMap<NodeId, Outcome>>>>;

fn node_config(id: NodeId) -> Config {
    Config::new(id, MEMBERS.to_vec())
}

/// Collects every participant's `Finished` events; when `enforce`, a contradiction stops the run
/// (checked after every step, incrementally).
fn add_agreement(sim: &mut Sim3, enforce: bool) -> Outcomes {
    let outcomes: Outcomes = Rc::default();
    let seen = Rc::new(RefCell::new(0usize));
    let o = outcomes.clone();
    sim.add_invariant(
        "atomic commit agreement",
        move |view: &SimView<'_, ThreePcNode>| {
            let events = view.events();
            let mut seen = seen.borrow_mut();
            let mut o = o.borrow_mut();
            for (_, node, ev) in &events[*seen..] {
                if let Event::Finished { tx, outcome } = ev {
                    let at = o.entry(*tx).or_default();
                    if enforce {
                        if let Some((other, x)) = at.iter().find(|(_, x)| **x != *outcome) {
                            return Err(format!("{tx}: {outcome} at {node} but {x} at {other}"));
                        }
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

fn workload(sim: &mut Sim3, until: u64, requests_max: u64) {
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
                let w: Vec<Write> = (0..rng.range_inclusive(1, 2))
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

/// Crash-stop faults with restarts, no partitions: any node (coordinators included) crashes at
/// a seeded time and restarts after a seeded pause; everyone is up again by `until`.
fn crash_plan(seed: u64, until: u64) -> FaultPlan {
    let mut rng = DetRng::new(seed ^ 0x00C4_A511);
    let mut plan = FaultPlan::new();
    let mut t = 50;
    loop {
        t += rng.range_inclusive(20, 300);
        if t >= until {
            break;
        }
        let node = MEMBERS[rng.index(MEMBERS.len()).unwrap_or(0)];
        let back = (t + rng.range_inclusive(10, 400)).min(until);
        plan.push(t, Fault::Crash(node));
        plan.push(back, Fault::Restart(node));
    }
    plan
}

fn settled(view: &SimView<'_, ThreePcNode>) -> bool {
    view.nodes().all(|(id, n)| {
        view.unsynced(id).is_empty()
            && n.is_some_and(|n| {
                let m = n.metrics();
                m.in_doubt.is_empty() && m.coordinating == 0
            })
    })
}

fn settle(sim: &mut Sim3, deadline: u64) -> Result<bool, SimError> {
    let done = sim.run_until_cond(deadline, settled)?;
    sim.run_for(100)?;
    Ok(done && settled(&sim.view()))
}

fn checker(sim: &Sim3, outcomes: &BTreeMap<TxId, BTreeMap<NodeId, Outcome>>) -> AtomicChecker {
    let mut check = AtomicChecker::new();
    for (tx, at) in outcomes {
        for (node, o) in at {
            check.participant_outcome(*node, *tx, *o);
        }
    }
    for op in sim.history() {
        let Request::Commit { writes } = &op.request;
        if let SimOutcome::Response(Response::Outcome { tx, outcome }) = &op.outcome {
            let ps: Vec<NodeId> = writes.keys().copied().collect();
            check.client_outcome(*tx, *outcome, &ps);
        }
    }
    for id in MEMBERS {
        if let Some(n) = sim.node(id) {
            check.set_applied(id, n.resource().applied().iter().copied());
        }
    }
    check
}

#[derive(Default)]
struct Totals {
    committed: usize,
    reported: usize,
    terminations: u64,
}

fn one_seed(seed: u64, totals: &mut Totals) -> Result<(), SimError> {
    let mut cfg = SimConfig::new(seed, MEMBERS.to_vec());
    cfg.link = LinkConfig {
        latency_min: 1,
        latency_max: 8,
        drop: 0.02,
        duplicate: 0.02,
    };
    cfg.sync_latency_max = 3;
    cfg.steps_max = 400_000;
    let mut sim: Sim3 = Sim::new(cfg, node_config)?;
    let outcomes = add_agreement(&mut sim, true);
    sim.schedule(crash_plan(seed, FAULTS_UNTIL));
    workload(&mut sim, FAULTS_UNTIL - 100, 40);
    sim.run_until(FAULTS_UNTIL)?;
    // No blocking: with every node back, every transaction finishes.
    if !settle(&mut sim, SETTLE_DEADLINE)? {
        let stuck: Vec<_> = MEMBERS
            .iter()
            .filter_map(|&id| sim.node(id).map(|n| (id, n.metrics())))
            .collect();
        return Err(sim.fail_now(format!(
            "blocked: not settled by {SETTLE_DEADLINE}: {stuck:?}"
        )));
    }
    let check = checker(&sim, &outcomes.borrow());
    if let Err(v) = check.check_final() {
        return Err(sim.fail_now(format!("atomic commit violated: {v}")));
    }
    for id in MEMBERS {
        let m = sim.node(id).map(|n| n.metrics()).unwrap_or_default();
        if m.decision_conflicts != 0 {
            return Err(sim.fail_now(format!(
                "node {id}: {} decision conflicts",
                m.decision_conflicts
            )));
        }
        totals.terminations += m.terminated_as_backup;
    }
    totals.committed += check.reported_committed();
    totals.reported += check.reported();
    Ok(())
}

#[test]
fn atomicity_durability_and_no_blocking_under_crashes() {
    let mut totals = Totals::default();
    let report = run_seeds(SEEDS_DEFAULT, |seed| one_seed(seed, &mut totals)).unwrap();
    assert!(
        totals.committed as u64 >= report.seeds * 5,
        "only {} commits over {} seeds",
        totals.committed,
        report.seeds
    );
    assert!(totals.reported > totals.committed, "no aborts at all");
    if report.seeds >= 100 {
        assert!(
            totals.terminations > 0,
            "the termination protocol never ran"
        );
    }
}

fn fixed_sim(seed: u64) -> Sim3 {
    let mut cfg = SimConfig::new(seed, MEMBERS.to_vec());
    cfg.link = LinkConfig::fixed(5);
    Sim::new(cfg, node_config).unwrap()
}

fn three_writes() -> BTreeMap<NodeId, Vec<Write>> {
    BTreeMap::from([
        (2, vec![Write::put("a", "1")]),
        (3, vec![Write::put("b", "1")]),
        (4, vec![Write::put("c", "1")]),
    ])
}

/// The case 2PC blocks on: every participant voted Yes and the coordinator crashes before any
/// decision (here, before any PreCommit) leaves. The coordinator stays down; the survivors time
/// out, elect the lowest id as backup, find everyone Uncertain, and abort — without it.
#[test]
fn coordinator_crash_after_all_yes_survivors_decide_without_it() {
    let mut sim = fixed_sim(1);
    let outcomes = add_agreement(&mut sim, true);
    sim.submit(
        100,
        1,
        Request::Commit {
            writes: three_writes(),
        },
    );
    // CanCommit arrives at 105, the votes at 110: the coordinator logs PreCommit and sends it.
    // Cut it off just before, then crash it: no PreCommit arrives anywhere.
    sim.run_until(109).unwrap();
    sim.apply(Fault::OneWay {
        from: vec![1],
        to: vec![2, 3, 4, 5],
    })
    .unwrap();
    sim.run_until(111).unwrap();
    let tx = TxId::new(1, 0);
    assert!(sim
        .records(1)
        .iter()
        .any(|r| matches!(r, Record::PreCommitDecision { .. })));
    sim.crash(1).unwrap();
    sim.apply(Fault::Heal).unwrap();
    let done = sim
        .run_until_cond(2_000, |v| {
            [2, 3, 4]
                .iter()
                .all(|&p| v.node(p).is_some_and(|n| n.metrics().in_doubt.is_empty()))
        })
        .unwrap();
    assert!(done, "the survivors decided while the coordinator is down");
    sim.run_for(50).unwrap();
    let o = outcomes.borrow();
    assert_eq!(o[&tx].len(), 3);
    assert!(o[&tx].values().all(|x| *x == Outcome::Aborted));
    // Node 2, the lowest live participant, was the backup.
    assert!(sim.events().iter().any(|(_, n, e)| *n == 2
        && *e
            == Event::TerminatedAsBackup {
                tx,
                outcome: Outcome::Aborted
            }));
    assert!(sim.node(1).is_none(), "the coordinator is still down");
}

/// Same crash, after the PreCommit reached one participant (4): the backup (2) finds a
/// PreCommitted participant, pre-commits the Uncertain ones, and everyone commits — still
/// without the coordinator. If the backup crashes midway, the next lowest takes over.
#[test]
fn survivors_commit_when_one_is_precommitted_even_if_the_backup_crashes() {
    let mut sim = fixed_sim(2);
    let outcomes = add_agreement(&mut sim, true);
    sim.submit(
        100,
        1,
        Request::Commit {
            writes: three_writes(),
        },
    );
    sim.run_until(109).unwrap();
    // Only the link to 4 stays: PreCommit reaches 4 alone.
    sim.apply(Fault::OneWay {
        from: vec![1],
        to: vec![2, 3, 5],
    })
    .unwrap();
    sim.run_until(116).unwrap();
    sim.crash(1).unwrap();
    sim.apply(Fault::Heal).unwrap();
    let tx = TxId::new(1, 0);
    assert!(sim.records(4).contains(&Record::PreCommitted { tx }));
    // Let termination start, then crash the backup (2) as soon as it has sent its requests.
    let started = sim
        .run_until_cond(2_000, |v| {
            v.events()
                .iter()
                .any(|(_, n, e)| *n == 2 && *e == Event::TerminationStarted { tx })
        })
        .unwrap();
    assert!(started);
    sim.run_for(5).unwrap();
    sim.crash(2).unwrap();
    let done = sim
        .run_until_cond(4_000, |v| {
            [3, 4]
                .iter()
                .all(|&p| v.node(p).is_some_and(|n| n.metrics().in_doubt.is_empty()))
        })
        .unwrap();
    assert!(done, "the re-elected backup (3) finished");
    sim.run_for(50).unwrap();
    {
        let o = outcomes.borrow();
        assert_eq!(o[&tx].get(&3), Some(&Outcome::Committed));
        assert_eq!(o[&tx].get(&4), Some(&Outcome::Committed));
    }
    assert!(sim.events().iter().any(|(_, n, e)| *n == 3
        && *e
            == Event::TerminatedAsBackup {
                tx,
                outcome: Outcome::Committed
            }));
    // The crashed backup recovers and learns the outcome from the others.
    sim.restart(2).unwrap();
    let learned = sim
        .run_until_cond(6_000, |v| {
            v.node(2).is_some_and(|n| n.metrics().in_doubt.is_empty())
        })
        .unwrap();
    assert!(learned);
    sim.run_for(50).unwrap();
    assert_eq!(outcomes.borrow()[&tx].get(&2), Some(&Outcome::Committed));
    assert_eq!(sim.node(2).unwrap().resource().applied(), &[tx]);
}

/// **The known flaw.** 3PC is non-blocking only if a silent node has crashed (perfect failure
/// detection) and the network never partitions. Here a partition separates the coordinator and
/// participant 2, which received PreCommit, from participants 3 and 4, which did not:
///
/// - on 2's side, the coordinator's PreCommit acks from 3 and 4 time out; by 3PC's rules they
///   must have crashed, so it commits, and 2 commits;
/// - on 3 and 4's side, the coordinator is silent; by 3PC's rules it crashed, so they elect 3 as
///   backup, find only Uncertain states, and abort.
///
/// Both sides follow the protocol and the transaction is split: atomicity is violated. The test
/// asserts that the violation happens. No timeout-based protocol can tell a crashed node from an
/// unreachable one; the remedy is to decide the outcome by consensus among a majority (Paxos
/// Commit, Gray & Lamport 2006, or a commit record replicated with Raft), so that a minority side
/// cannot decide at all.
#[test]
fn the_known_flaw_a_partition_splits_the_decision() {
    let mut sim = fixed_sim(3);
    let outcomes = add_agreement(&mut sim, false);
    let req = sim.submit(
        100,
        1,
        Request::Commit {
            writes: three_writes(),
        },
    );
    // Votes arrive at 110 and PreCommit leaves at 110, arriving at 115. Partition at 112: the
    // PreCommit to 2 is delivered (same side), those to 3 and 4 are dropped.
    sim.run_until(112).unwrap();
    sim.apply(Fault::Partition {
        a: vec![1, 2],
        b: vec![3, 4, 5],
    })
    .unwrap();
    let tx = TxId::new(1, 0);
    sim.run_until(3_000).unwrap();
    assert_eq!(sim.node(2).unwrap().metrics().in_doubt.len(), 0);
    let o = outcomes.borrow();
    assert_eq!(
        o[&tx].get(&2),
        Some(&Outcome::Committed),
        "the PreCommitted side commits"
    );
    assert_eq!(
        o[&tx].get(&3),
        Some(&Outcome::Aborted),
        "the Uncertain side aborts"
    );
    assert_eq!(o[&tx].get(&4), Some(&Outcome::Aborted));
    // The client was even told it committed.
    let op = sim.history().iter().find(|op| op.id == req).unwrap();
    assert_eq!(
        op.outcome,
        SimOutcome::Response(Response::Outcome {
            tx,
            outcome: Outcome::Committed
        })
    );
    // And the atomic-commit checker names the violation.
    let check = checker(&sim, &o);
    assert!(matches!(
        check.check_agreement(),
        Err(AtomicViolation::Split { tx: t, committed_at: 2, .. }) if t == tx
    ));
    // Healing the partition does not repair it: each side's decision is final and durable.
    drop(o);
    sim.apply(Fault::Heal).unwrap();
    sim.run_until(5_000).unwrap();
    assert!(sim.records(2).contains(&Record::Committed { tx }));
    assert!(sim.records(3).contains(&Record::Aborted { tx }));
    assert_eq!(sim.node(2).unwrap().resource().applied(), &[tx]);
    assert!(sim.node(3).unwrap().resource().applied().is_empty());
}

/// Crashes at every step: for each node of a three-participant transaction and each step `k` of
/// the run, crash that node right after step `k` (with a sync latency, also between a step and
/// the sync of its records), restart it later, and check atomicity, durability and that
/// everything resolves.
#[test]
fn crash_at_every_step_of_a_transaction() {
    let mut crashed_mid_protocol = 0;
    for victim in [1, 2, 3, 4] {
        for k in 0..60u64 {
            let mut cfg = SimConfig::new(k, MEMBERS.to_vec());
            cfg.link = LinkConfig {
                latency_min: 1,
                latency_max: 6,
                drop: 0.0,
                duplicate: 0.0,
            };
            cfg.sync_latency_max = 2;
            let mut sim: Sim3 = Sim::new(cfg, node_config).unwrap();
            let outcomes = add_agreement(&mut sim, true);
            sim.submit(
                10,
                1,
                Request::Commit {
                    writes: three_writes(),
                },
            );
            sim.run_until(9).unwrap();
            for _ in 0..k {
                sim.step().unwrap();
            }
            crashed_mid_protocol += usize::from(outcomes.borrow().is_empty());
            sim.crash(victim).unwrap();
            let back = sim.now() + 600;
            sim.schedule_fault(back, Fault::Restart(victim));
            sim.run_until(back).unwrap();
            assert!(
                settle(&mut sim, back + 5_000).unwrap(),
                "victim {victim}, step {k}: not settled"
            );
            let check = checker(&sim, &outcomes.borrow());
            check
                .check_final()
                .unwrap_or_else(|e| panic!("victim {victim}, step {k}: {e}"));
        }
    }
    assert!(
        crashed_mid_protocol >= 80,
        "only {crashed_mid_protocol} crashes hit the protocol mid-way"
    );
}

/// **The same flaw without a partition: a slow network.** Nothing is lost and nothing crashes;
/// the coordinator's links to its participants slow down to 100 ticks just before the PreCommits
/// leave (`threepc::scenario::slow_network`). The coordinator's ack timeout takes the silent
/// participants as crashed and commits, telling the client; the participants' termination timeout
/// takes the silent coordinator as crashed, and the backup (2), finding everyone Uncertain,
/// aborts. The late PreCommits and DoCommits then contradict a durable abort. 3PC's timeouts are
/// a failure detector only on a synchronous network.
#[test]
fn the_known_flaw_a_slow_network_is_taken_for_a_crash() {
    use threepc::scenario::slow_network;
    for seed in 0..20 {
        // Built step by step, as a trace diagram would, with the trace on.
        let mut cfg = slow_network::sim_config(seed);
        cfg.record_trace = true;
        let mut sim: Sim3 = Sim::new(cfg, slow_network::node_config).unwrap();
        let request = slow_network::schedule(&mut sim);
        sim.run_until(slow_network::RUN_UNTIL).unwrap();
        let tx = TxId::new(slow_network::COORDINATOR, 0);
        // No message was lost and no node crashed or was cut off: only delays.
        assert!(!sim.trace().iter().any(|e| matches!(
            e.kind,
            TraceKind::Drop { .. } | TraceKind::Crash { .. } | TraceKind::Restart { .. }
        )));
        let op = sim.op(request).unwrap();
        assert_eq!(
            op.outcome,
            SimOutcome::Response(Response::Outcome {
                tx,
                outcome: Outcome::Committed
            }),
            "seed {seed}: the coordinator committed and told the client"
        );
        for p in slow_network::PARTICIPANTS {
            let n = sim.node(p).unwrap();
            assert!(
                sim.records(p).contains(&Record::Aborted { tx }),
                "seed {seed}"
            );
            assert!(n.resource().applied().is_empty(), "seed {seed}");
            assert!(n.metrics().in_doubt.is_empty(), "seed {seed}");
            assert!(
                n.metrics().decision_conflicts > 0,
                "seed {seed}: the commit came late"
            );
        }
        assert!(sim.events().iter().any(|(_, n, e)| *n == 2
            && *e
                == Event::TerminatedAsBackup {
                    tx,
                    outcome: Outcome::Aborted
                }));
        assert!(sim
            .records(slow_network::COORDINATOR)
            .iter()
            .any(|r| matches!(r, Record::CommitDecision { tx: t, .. } if *t == tx)));
        // The atomic-commit checker names the violation.
        let mut outcomes: BTreeMap<TxId, BTreeMap<NodeId, Outcome>> = BTreeMap::new();
        for (_, node, ev) in sim.events() {
            if let Event::Finished { tx, outcome } = ev {
                outcomes.entry(*tx).or_default().insert(*node, *outcome);
            }
        }
        let check = checker(&sim, &outcomes);
        assert!(
            matches!(
                check.check_agreement(),
                Err(AtomicViolation::ReportContradicted {
                    tx: t,
                    reported: Outcome::Committed,
                    ..
                }) if t == tx
            ),
            "seed {seed}: {:?}",
            check.check_agreement()
        );
    }
}
