//! Transactions across the partitions of the sharded store (`kv::shard`), two-phase commit
//! through the groups' Raft logs, under the simulator's faults: a bank whose accounts live in
//! different partitions, transfers that compare both balances and write both, drivers that
//! vanish half-way, and a resolver that finishes what they leave.
//!
//! # One run
//!
//! - **Processes**: 3 founders hold the map group and every partition (3 replicas each); on
//!   half the seeds a fourth joins the ring during the run and a [`Mover`] moves the
//!   partitions the ring names to it (learner, catch-up, promotion, removal), prepared parts
//!   and locks included;
//!   [`PARTITIONS`] partitions, [`ACCOUNTS`] accounts spread over them by hash, each starting
//!   at [`INITIAL`] (an absent key).
//! - **Groups**: the per-seed Raft knobs of the other simulations; snapshots every few entries
//!   on half the seeds, so prepared parts and locks travel in snapshots.
//! - **Faults** between [`FAULTS_START`] and [`FAULTS_UNTIL`]: crash-restarts, partitions,
//!   loss, duplication, jitter, torn unsynced tails.
//! - **Clients**: [`CLIENTS`] bank clients. Each reads two balances (linearizable reads,
//!   refused while a transaction holds the key), then runs a transfer through its
//!   [`TxDriver`]: compare both balances, write both. Transfers within one partition commit in
//!   one entry. Before any request a client may drop its transaction
//!   ([`DRIVER_DROP_CHANCE`]), as a crashed client process would, leaving prepared parts.
//! - **Auditor**: a client that reads every account in one read-only transaction, again and
//!   again (dropping some half-way too); every audit that completes must add up to the bank's
//!   total: a transfer seen half-applied would show (serializability of reads).
//! - **Resolver**: one [`Resolver`] scans the groups all run long and resolves what stays in
//!   doubt [`RESOLVE_AFTER`] ticks.
//! - **Checks**: after every step, atomicity: no transaction is remembered committed by one
//!   group and aborted by another, on any replica. At the end: every transaction a driver saw
//!   committed is committed, every one it saw aborted is not; once the network heals, no
//!   group holds a lock, a prepared part or a record (nothing left undecided), within
//!   [`SETTLE_WITHIN`]; and the balances add up to `ACCOUNTS × INITIAL`.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names it); `SIM_SEEDS=n` runs more seeds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shard_support;

use shard_support::{
    build, leader_of, raft_template, schedule_faults, start_mover, FAULTS_START, FAULTS_UNTIL, H,
    REQUEST_TIMEOUT,
};

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use common::groups::{GroupId, GroupResponse, GroupsRequest};
use common::kv_store::{KvOutput, KvQuery};
use common::sim::{run_seeds, ClosedLoop, Sim, SimError, SimView};
use common::txn::{Outcome, TxId};
use common::{DetRng, NodeId};
use kv::shard::{
    Compare, Layout, MapCommand, Mover, Next, Resolver, ShardConfig, ShardOutput, ShardQuery,
    ShardRequest, ShardResponse, TxDriver, TxPlan, TxResult, TxWrite, MAP_GROUP,
};
use raft::{Request, Response};

/// Seeds in the normal test run.
const SEEDS: u64 = 1_000;
/// Partitions of the key space.
const PARTITIONS: u32 = 4;
/// Bank accounts.
const ACCOUNTS: usize = 6;
/// Every account's balance at the start (an absent key holds it).
const INITIAL: i64 = 100;
/// Bank clients.
const CLIENTS: u64 = 3;
/// Client requests per run at most (reads and transaction steps).
const REQUESTS_MAX: u64 = 500;
/// After the faults, every group is quiet within this long.
const SETTLE_WITHIN: u64 = 5_000;
/// The resolver resolves what stays in doubt this long.
const RESOLVE_AFTER: u64 = 300;
/// The chance that a client drops its transaction before one of its requests.
const DRIVER_DROP_CHANCE: f64 = 0.02;

/// What the runs did, to show they are not vacuous.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    seeds: u64,
    committed: u64,
    one_phase: u64,
    aborted: u64,
    dropped: u64,
    resolved: u64,
    resolved_committed: u64,
    locked_reads: u64,
    moved: u64,
    audits: u64,
}

#[test]
fn bank_transfers_across_partitions_stay_atomic_and_the_total_never_changes() {
    let mut totals = Totals::default();
    let report = run_seeds(SEEDS, |seed| run(seed, &mut totals));
    match report {
        Ok(r) => totals.seeds = r.seeds,
        Err(e) => panic!("{e}"),
    }
    eprintln!("{totals:?}");
    if totals.seeds < 20 {
        return; // a replay of one seed proves nothing about the others
    }
    let t = totals;
    assert!(t.committed >= 5 * t.seeds, "too few commits: {t:?}");
    assert!(t.one_phase > 0, "no one-phase commit: {t:?}");
    assert!(t.aborted > 0, "no abort: {t:?}");
    assert!(t.dropped >= t.seeds / 2, "too few dropped drivers: {t:?}");
    assert!(t.resolved > 0, "the resolver resolved nothing: {t:?}");
    assert!(
        t.resolved_committed > 0,
        "the resolver never found a commit: {t:?}"
    );
    assert!(t.locked_reads > 0, "no read met a lock: {t:?}");
    assert!(t.moved >= t.seeds / 4, "too few partitions moved: {t:?}");
    assert!(t.audits >= t.seeds, "too few audits: {t:?}");
}

fn account(i: usize) -> String {
    format!("acct{i}")
}

fn balance(value: Option<&str>) -> i64 {
    value.map_or(INITIAL, |v| v.parse().unwrap_or(i64::MIN))
}

/// What the drivers saw: every transaction's result, by id.
type Seen = Rc<RefCell<BTreeMap<TxId, TxResult>>>;

fn run(seed: u64, totals: &mut Totals) -> Result<(), SimError> {
    let mut rng = DetRng::new(seed ^ 0x4241_4e4b_0000_0000);
    // On half the seeds a fourth process joins the ring during the bank's run, and the
    // partitions the ring names move to it while transactions hold locks in them.
    let joins = rng.chance(0.5);
    let processes: Vec<NodeId> = (1..=if joins { 4 } else { 3 }).collect();
    let layout = Layout::new(PARTITIONS, 3).unwrap();
    let template = raft_template(seed, &mut rng);
    let config = move |id: NodeId| ShardConfig {
        id,
        layout,
        map_group: vec![1, 2, 3],
        initial_processes: (1..=3).collect(),
        raft: template.clone(),
    };
    let mut sim = build(seed, &mut rng, &processes, config)?;
    let outcomes: Rc<RefCell<BTreeMap<TxId, Outcome>>> = Rc::default();
    install_atomicity(&mut sim, outcomes.clone());
    schedule_faults(&mut sim, seed, &mut rng, &processes);

    let seen: Seen = Rc::default();
    let stats = Rc::new(RefCell::new(Totals::default()));
    start_bank(&mut sim, seen.clone(), stats.clone());
    let audit_failures: Rc<RefCell<Vec<String>>> = Rc::default();
    start_auditor(&mut sim, stats.clone(), audit_failures.clone());
    let resolver = Rc::new(RefCell::new(Resolver::new(vec![1, 2, 3], RESOLVE_AFTER)));
    start_resolver(&mut sim, resolver.clone());
    let mover = Rc::new(RefCell::new(Mover::new(vec![1, 2, 3])));
    if joins {
        mover.borrow_mut().change_ring(MapCommand::AddProcess(4));
        let at = rng.range_inclusive(FAULTS_START, FAULTS_UNTIL / 2);
        start_mover(
            &mut sim,
            at,
            FAULTS_UNTIL + SETTLE_WITHIN,
            0.0,
            mover.clone(),
        );
    }

    sim.run_until(FAULTS_UNTIL)?;
    let deadline = FAULTS_UNTIL + SETTLE_WITHIN;
    let m = mover.clone();
    let settled = move |view: &SimView<'_, H>| {
        (!joins || m.borrow().is_done()) && quiet(view, layout).is_some()
    };
    if !sim.run_until_cond(deadline, settled)? {
        let view = sim.view();
        let tables: Vec<String> = (0..PARTITIONS)
            .map(|p| {
                let g = Layout::group_of(p);
                let t = leader_of(&view, g)
                    .and_then(|l| view.node(l)?.group(g)?.state_machine().txns().cloned());
                format!("group {g}: {t:?}")
            })
            .collect();
        let mover = format!("{:?}", mover.borrow());
        return Err(sim.fail_now(format!(
            "transactions left undecided after the faults: {tables:?}; mover {mover}"
        )));
    }
    if let Some(failure) = audit_failures.borrow().first() {
        let message = format!("an audit saw a total that is not the bank's: {failure}");
        return Err(sim.fail_now(message));
    }
    let view = sim.view();
    let total = quiet(&view, layout).unwrap_or(i64::MIN);
    if total != INITIAL * ACCOUNTS as i64 {
        return Err(sim.fail_now(format!(
            "the balances add up to {total}, not {}",
            INITIAL * ACCOUNTS as i64
        )));
    }
    // What drivers saw agrees with what the groups decided.
    let decided = outcomes.borrow();
    for (tx, result) in seen.borrow().iter() {
        let group_says = decided.get(tx).copied();
        let agrees = match result {
            TxResult::Committed => group_says == Some(Outcome::Committed),
            TxResult::Aborted(_) => group_says != Some(Outcome::Committed),
        };
        if !agrees {
            let message = format!("{tx}: the driver saw {result:?}, the groups {group_says:?}");
            return Err(sim.fail_now(message));
        }
    }
    let s = *stats.borrow();
    totals.committed += s.committed;
    totals.one_phase += s.one_phase;
    totals.aborted += s.aborted;
    totals.dropped += s.dropped;
    totals.locked_reads += s.locked_reads;
    totals.audits += s.audits;
    totals.moved += mover.borrow().moved().len() as u64;
    let r = resolver.borrow();
    totals.resolved += r.stats().decisions;
    totals.resolved_committed += r.stats().found_committed;
    Ok(())
}

/// After every step: no transaction is remembered committed by one group and aborted by
/// another, on any replica. Reads only what each table remembered since the last step.
fn install_atomicity(sim: &mut Sim<H>, outcomes: Rc<RefCell<BTreeMap<TxId, Outcome>>>) {
    let mut cursor: BTreeMap<(NodeId, GroupId), usize> = BTreeMap::new();
    sim.add_invariant("atomicity", move |view| {
        let mut outcomes = outcomes.borrow_mut();
        for (id, host) in view.nodes() {
            let Some(host) = host else { continue };
            for (g, node) in host.groups() {
                let Some(table) = node.state_machine().txns() else {
                    continue;
                };
                let log = table.finished_log();
                let from = cursor
                    .get(&(id, g))
                    .copied()
                    .filter(|&c| c <= log.len())
                    .unwrap_or(0);
                for tx in log.range(from..) {
                    let Some(outcome) = table.finished(*tx) else {
                        continue;
                    };
                    let first = *outcomes.entry(*tx).or_insert(outcome);
                    if first != outcome {
                        return Err(format!(
                            "{tx} is {outcome} at group {g} on process {id}, {first} elsewhere"
                        ));
                    }
                }
                cursor.insert((id, g), log.len());
            }
        }
        Ok(())
    });
}

/// The total of the balances if every partition's group has a leader that has committed an
/// entry of its term, applied all it committed, and holds no lock, prepared part or record;
/// `None` otherwise.
fn quiet(view: &SimView<'_, H>, layout: Layout) -> Option<i64> {
    let mut total = 0;
    for p in 0..PARTITIONS {
        let g = Layout::group_of(p);
        let node = view.node(leader_of(view, g)?)?.group(g)?;
        // A leader knows what is committed once it has committed an entry of its own term.
        let settled = node.entry_term(node.commit_index()) == Some(node.term());
        if !settled || node.applied_index() < node.commit_index() {
            return None;
        }
        let machine = node.state_machine();
        if !machine.txns()?.is_quiet() {
            return None;
        }
        let store = machine.store()?;
        for i in (0..ACCOUNTS).filter(|&i| layout.partition_of(&account(i)) == p) {
            total += balance(store.get(&account(i)));
        }
    }
    Some(total)
}

/// One bank client: read two balances, then transfer between them.
struct Bank {
    client: u64,
    driver: TxDriver,
    seq: u64,
    /// The accounts of the transfer under way and the balances read so far.
    transfer: Option<(usize, usize, i64, Vec<Option<String>>)>,
    in_tx: bool,
}

impl Bank {
    fn next(
        &mut self,
        rng: &mut DetRng,
        seen: &Seen,
        stats: &RefCell<Totals>,
    ) -> Option<(NodeId, ShardRequest)> {
        if self.in_tx {
            if let Some(result) = self.driver.result().cloned() {
                let mut s = stats.borrow_mut();
                match &result {
                    TxResult::Committed => s.committed += 1,
                    TxResult::Aborted(_) => s.aborted += 1,
                }
                if let Some(tx) = self.driver.tx() {
                    seen.borrow_mut().insert(tx, result);
                }
                self.in_tx = false;
                self.transfer = None;
            } else if rng.chance(DRIVER_DROP_CHANCE) {
                // The client process crashed: the transaction is left to the resolver.
                stats.borrow_mut().dropped += 1;
                self.in_tx = false;
                self.transfer = None;
            } else {
                return self.driver.next_request();
            }
        }
        let (from, to, amount, got) = self.transfer.get_or_insert_with(|| {
            let from = rng.index(ACCOUNTS).unwrap_or(0);
            let to = (from + 1 + rng.index(ACCOUNTS - 1).unwrap_or(0)) % ACCOUNTS;
            (from, to, rng.range_inclusive(1, 10) as i64, Vec::new())
        });
        if got.len() < 2 {
            let key = account(if got.is_empty() { *from } else { *to });
            return Some(match self.driver.router_mut().next(&key) {
                Next::ReadMap(node) => (node, kv::shard::Router::map_request()),
                Next::Send { group, node } => (
                    node,
                    GroupsRequest::Group(group, Request::Read(ShardQuery::Kv(KvQuery::Get(key)))),
                ),
            });
        }
        let (a, b) = (account(*from), account(*to));
        let (va, vb) = (got[0].clone(), got[1].clone());
        let compares = vec![
            Compare {
                key: a.clone(),
                value: va.clone(),
            },
            Compare {
                key: b.clone(),
                value: vb.clone(),
            },
        ];
        let writes = vec![
            TxWrite {
                key: a.clone(),
                value: (balance(va.as_deref()) - *amount).to_string(),
            },
            TxWrite {
                key: b.clone(),
                value: (balance(vb.as_deref()) + *amount).to_string(),
            },
        ];
        if let Some(map) = self.driver.router_mut().map() {
            if map.layout.partition_of(&a) == map.layout.partition_of(&b) {
                stats.borrow_mut().one_phase += 1;
            }
        }
        self.seq += 1;
        self.driver
            .begin(TxId::new(100 + self.client, self.seq), compares, writes);
        self.in_tx = true;
        self.driver.next_request()
    }

    fn observe(
        &mut self,
        node: NodeId,
        request: &ShardRequest,
        answer: Option<&ShardResponse>,
        stats: &RefCell<Totals>,
    ) {
        if self.in_tx {
            self.driver.observe(node, request, answer);
            return;
        }
        let group = match request {
            GroupsRequest::Group(g, _) => *g,
            _ => MAP_GROUP,
        };
        self.driver.router_mut().observe(group, node, answer);
        match answer {
            Some(GroupResponse::Group(_, Response::Read(ShardOutput::Kv(KvOutput::Value(v)))))
                if group != MAP_GROUP =>
            {
                if let Some((_, _, _, got)) = self.transfer.as_mut() {
                    got.push(v.clone());
                }
            }
            Some(GroupResponse::Group(
                _,
                Response::Read(ShardOutput::Refused(kv::shard::Refusal::Locked { .. })),
            )) => {
                stats.borrow_mut().locked_reads += 1;
            }
            _ => {}
        }
    }
}

fn start_bank(sim: &mut Sim<H>, seen: Seen, stats: Rc<RefCell<Totals>>) {
    let mut banks: BTreeMap<u64, Bank> = BTreeMap::new();
    sim.closed_loop(
        ClosedLoop {
            clients: CLIENTS,
            start: 100,
            think_min: 0,
            think_max: 20,
            requests_max: REQUESTS_MAX,
            until: FAULTS_UNTIL,
            timeout: Some(REQUEST_TIMEOUT),
        },
        move |rng, ctx| {
            let bank = banks.entry(ctx.client).or_insert_with(|| Bank {
                client: ctx.client,
                driver: TxDriver::new(vec![1, 2, 3]),
                seq: 0,
                transfer: None,
                in_tx: false,
            });
            if let Some(last) = ctx.last {
                bank.observe(last.node, &last.request, last.outcome.response(), &stats);
            }
            bank.next(rng, &seen, &stats)
        },
    );
}

fn start_resolver(sim: &mut Sim<H>, resolver: Rc<RefCell<Resolver>>) {
    sim.closed_loop(
        ClosedLoop {
            clients: 1,
            start: 150,
            think_min: 5,
            think_max: 20,
            requests_max: u64::MAX,
            until: FAULTS_UNTIL + SETTLE_WITHIN,
            timeout: Some(REQUEST_TIMEOUT),
        },
        move |_rng, ctx| {
            let mut r = resolver.borrow_mut();
            if let Some(last) = ctx.last {
                r.observe(ctx.now, last.node, &last.request, last.outcome.response());
            }
            Some(r.next_request())
        },
    );
}

/// The auditor: read-only transactions over every account, each of which must see the bank's
/// total; `failures` collects those that do not.
fn start_auditor(sim: &mut Sim<H>, stats: Rc<RefCell<Totals>>, failures: Rc<RefCell<Vec<String>>>) {
    let mut driver = TxDriver::new(vec![1, 2, 3]);
    let mut seq = 0u64;
    let mut busy = false;
    sim.closed_loop(
        ClosedLoop {
            clients: 1,
            start: 150,
            think_min: 10,
            think_max: 60,
            requests_max: REQUESTS_MAX,
            until: FAULTS_UNTIL,
            timeout: Some(REQUEST_TIMEOUT),
        },
        move |rng, ctx| {
            if let (Some(last), true) = (ctx.last, busy) {
                driver.observe(last.node, &last.request, last.outcome.response());
            }
            if busy {
                if let Some(result) = driver.result() {
                    busy = false;
                    if *result == TxResult::Committed {
                        stats.borrow_mut().audits += 1;
                        let total: i64 = driver
                            .reads()
                            .iter()
                            .map(|(_, v)| balance(v.as_deref()))
                            .sum();
                        let expected = INITIAL * ACCOUNTS as i64;
                        if driver.reads().len() != ACCOUNTS || total != expected {
                            failures.borrow_mut().push(format!(
                                "{:?} read {:?}: total {total}",
                                driver.tx(),
                                driver.reads()
                            ));
                        }
                    }
                } else if rng.chance(DRIVER_DROP_CHANCE) {
                    busy = false; // dropped half-way: the resolver releases its locks
                } else {
                    return driver.next_request();
                }
            }
            seq += 1;
            let plan = TxPlan {
                reads: (0..ACCOUNTS).map(account).collect(),
                ..TxPlan::default()
            };
            driver.start(TxId::new(99, seq), plan);
            busy = true;
            driver.next_request()
        },
    );
}
