//! Atomicity and durability of two-phase commit under the simulator (Bernstein, Hadzilacos &
//! Goodman, ch. 7, rules AC1–AC5): loss, duplication, reordering, partitions, crashes and restarts
//! of coordinators and participants at every step; and the blocking scenario 2PC is known for.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};

use common::sim::{
    Fault, FaultPlan, LinkConfig, Outcome as SimOutcome, RandomFaults, Sim, SimConfig, SimError,
};
use common::txn::suite::{
    self, CrashEveryStep, FaultTotals, Workload, FAULTS_UNTIL, MEMBERS, SEEDS_DEFAULT,
};
use common::txn::{Outcome, TxId, Write};
use common::{Node, NodeId};
use twopc::{Config, Event, Record, Request, TwoPcNode};

const SETTLE_DEADLINE: u64 = 6_000;

/// Random transactions: a coordinator among 1 and 2, one to three other participants, zero to
/// two writes each on a small key set (so conflicts and no-wait aborts are common).
const WORKLOAD: Workload<'static> = Workload {
    enlisted_only: Some(0.15),
    ..suite::WORKLOAD
};

type Sim2 = Sim<TwoPcNode>;

fn node_config(id: NodeId) -> Config {
    Config::new(id, MEMBERS.to_vec())
}

/// The end-of-run checks: everything resolved, and atomic commit over the whole history (a
/// read-only participant leaves early, so a commit must reach the writers).
fn check_settled(
    sim: &mut Sim2,
    outcomes: &BTreeMap<TxId, BTreeMap<NodeId, Outcome>>,
) -> Result<common::check::atomic::AtomicChecker, SimError> {
    suite::check_settled(sim, &MEMBERS, outcomes, true)
}

fn settle(sim: &mut Sim2, deadline: u64) -> Result<bool, SimError> {
    suite::settle(sim, deadline)
}

fn one_seed(seed: u64, totals: &mut FaultTotals, blocked_seen: &mut usize) -> Result<(), SimError> {
    let link = LinkConfig {
        latency_min: 1,
        latency_max: 12,
        drop: 0.03,
        duplicate: 0.03,
    };
    let mut sim: Sim2 = Sim::new(suite::fault_config(seed, link), node_config)?;
    let outcomes = suite::add_agreement(&mut sim, true);
    let mut knobs = RandomFaults::new(50, FAULTS_UNTIL, 1.0);
    // 2PC needs no majority: let any number of nodes be down at once.
    knobs.allow_majority_down = true;
    sim.schedule(FaultPlan::random(seed, &MEMBERS, &knobs));
    suite::workload(&mut sim, WORKLOAD, FAULTS_UNTIL - 100, 40);
    sim.run_until(FAULTS_UNTIL)?;
    // Quiet period: everyone restarted, network repaired. Every transaction must end.
    suite::settle_or_fail(&mut sim, SETTLE_DEADLINE)?;
    let check = check_settled(&mut sim, &outcomes.borrow())?;
    totals.add(&check);
    *blocked_seen += sim
        .events()
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::Blocked { .. }))
        .count();
    Ok(())
}

#[test]
fn atomicity_and_durability_under_random_faults() {
    // The runs did real work (`fault_seeds`), and faults did block some.
    let mut blocked_seen = 0;
    let seeds = suite::fault_seeds(SEEDS_DEFAULT, |seed, totals| {
        one_seed(seed, totals, &mut blocked_seen)
    });
    if seeds >= 100 {
        assert!(
            blocked_seen > 0,
            "no run ever blocked: the faults are too tame"
        );
    }
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut cfg = SimConfig::new(seed, MEMBERS.to_vec());
        cfg.link.drop = 0.05;
        let mut sim: Sim2 = Sim::new(cfg, node_config).unwrap();
        sim.schedule(FaultPlan::random(
            seed,
            &MEMBERS,
            &RandomFaults::new(50, 800, 1.0),
        ));
        suite::workload(&mut sim, WORKLOAD, 700, 20);
        sim.run_until(2_000).unwrap();
        let reported = sim.history().len();
        (sim.trace_hash(), reported)
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7).0, run(8).0);
}

/// Participant `p` is in doubt about `tx` alone, reports itself blocked on it, has applied
/// nothing and still holds the lock on its `key`.
fn assert_blocked_in_doubt(sim: &Sim2, p: NodeId, tx: TxId, key: &str) {
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
    assert_eq!(sim.node(p).unwrap().resource().lock_holder(key), Some(tx));
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
    let outcomes = suite::add_agreement(&mut sim, true);
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
    for (p, key) in [(2, "a"), (3, "b"), (4, "c")] {
        assert_blocked_in_doubt(&sim, p, tx, key);
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
    let outcomes = suite::add_agreement(&mut sim, true);
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

/// Crashes at every step of a three-participant transaction, each node in turn
/// ([`suite::crash_at_every_step`]): atomicity, durability, and everything resolves.
#[test]
fn crash_at_every_step_of_a_transaction() {
    let plan = CrashEveryStep {
        members: &MEMBERS,
        steps: 40,
        down_for: 300,
        settle_within: 3_000,
        writers_only: true,
        strict: true,
    };
    let crashed_mid_protocol = suite::crash_at_every_step::<TwoPcNode>(plan, node_config);
    assert!(
        crashed_mid_protocol >= 80,
        "only {crashed_mid_protocol} crashes hit the protocol mid-way"
    );
}
