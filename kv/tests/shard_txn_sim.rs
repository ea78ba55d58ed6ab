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
//!   doubt [`RESOLVE_AFTER`] ticks; on a quarter of the seeds only
//!   [`RESOLVE_AFTER_IMPATIENT`] ticks, so it aborts transactions whose drivers are still at
//!   work and the two race for every step.
//! - **Checks**: after every step, atomicity: no transaction is remembered committed by one
//!   group and aborted by another, on any replica; and every property of the Raft paper's
//!   Figure 3 for every group. At the end: every transaction a driver saw
//!   committed is committed, every one it saw aborted is not; once the network heals, no
//!   group holds a lock, a prepared part or a record (nothing left undecided), within
//!   [`SETTLE_WITHIN`]; and the balances add up to `ACCOUNTS × INITIAL`.
//! - **Strict serializability** ([`check_serializable`]): every balance written names the
//!   transaction that wrote it, so each value read is a version with a known writer. The
//!   committed transactions (transfers the groups committed, whether or not their driver
//!   lived to see it, and audits their driver saw commit) form Adya's serialization graph:
//!   write→read and write→write edges from the version each one compared or read, read→write
//!   edges to the transaction that overwrote it, and real-time edges from each transaction
//!   its client saw end to each one begun later. The graph must have no cycle, no version may
//!   be overwritten twice (a lost update), and no committed transaction may have read a
//!   version no committed transaction wrote (a dirty read).
//!
//! `SIM_SEED=n` replays seed `n` (every failure names it); `SIM_SEEDS=n` runs more seeds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod shard_support;

use shard_support::{
    build, install_raft_invariants, leader_of, raft_template, schedule_faults, start_mover,
    FAULTS_START, FAULTS_UNTIL, H, REQUEST_TIMEOUT,
};

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
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
/// ... or, on some seeds, this long: shorter than many transactions take under the faults.
const RESOLVE_AFTER_IMPATIENT: u64 = 30;
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
    /// Transactions in the serialization graphs whose clients saw them commit.
    checked: u64,
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
    assert!(
        t.checked >= t.committed,
        "the serialization graphs left out commits: {t:?}"
    );
}

fn account(i: usize) -> String {
    format!("acct{i}")
}

/// A balance as written: the amount, and the transaction that wrote it (so that every value
/// is a version with a known writer).
fn versioned(amount: i64, tx: TxId) -> String {
    format!("{amount}@{tx}")
}

fn balance(value: Option<&str>) -> i64 {
    value.map_or(INITIAL, |v| {
        let amount = v.split_once('@').map_or(v, |(a, _)| a);
        amount.parse().unwrap_or(i64::MIN)
    })
}

/// What the drivers saw: every transaction's result, by id.
type Seen = Rc<RefCell<BTreeMap<TxId, TxResult>>>;

/// One transaction as its client ran it, for the serializability check.
#[derive(Clone, Debug, Default)]
struct Ran {
    /// The versions it compared or read (`None`: the key's initial, absent version).
    read: Vec<(String, Option<String>)>,
    /// The versions it wrote.
    wrote: Vec<(String, String)>,
    /// When its client began it.
    began: u64,
    /// When its client saw it commit (`None`: the client never saw it end so).
    committed_at: Option<u64>,
}

/// Every transaction the clients began, by id.
type History = Rc<RefCell<BTreeMap<TxId, Ran>>>;

/// A node of the serialization graph: a transaction, or the initial state every key's first
/// version comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Writer {
    Initial,
    Tx(TxId),
}

/// Checks that the committed transactions of `history` are strictly serializable (see the
/// module documentation). A transaction is committed if the groups decided so
/// (`decided`) or its client saw it commit (read-only audits leave no outcome in the groups).
fn check_serializable(
    history: &BTreeMap<TxId, Ran>,
    decided: &BTreeMap<TxId, Outcome>,
) -> Result<(), String> {
    let committed: BTreeMap<TxId, &Ran> = history
        .iter()
        .filter(|(tx, ran)| {
            decided.get(tx) == Some(&Outcome::Committed) || ran.committed_at.is_some()
        })
        .map(|(tx, ran)| (*tx, ran))
        .collect();
    let mut writer: BTreeMap<(&str, Option<&str>), Writer> = BTreeMap::new();
    for (tx, ran) in &committed {
        for (key, value) in &ran.wrote {
            writer.insert((key.as_str(), Some(value.as_str())), Writer::Tx(*tx));
        }
    }
    let writer_of = |key: &str, value: Option<&str>| -> Option<Writer> {
        match value {
            None => Some(Writer::Initial),
            Some(v) => writer.get(&(key, Some(v))).copied(),
        }
    };
    // Who overwrote each version: the committed transaction that compared it and wrote the
    // same key (every write here compares the key first).
    let mut overwritten_by: BTreeMap<(&str, Option<&str>), TxId> = BTreeMap::new();
    for (tx, ran) in &committed {
        for (key, value) in &ran.read {
            if ran.wrote.iter().any(|(k, _)| k == key) {
                let version = (key.as_str(), value.as_deref());
                if let Some(other) = overwritten_by.insert(version, *tx) {
                    return Err(format!(
                        "lost update: {other} and {tx} both overwrote {key}={value:?}"
                    ));
                }
            }
        }
    }
    let mut edges: BTreeMap<Writer, BTreeSet<Writer>> = BTreeMap::new();
    for (tx, ran) in &committed {
        for (key, value) in &ran.read {
            let Some(w) = writer_of(key, value.as_deref()) else {
                return Err(format!(
                    "dirty read: {tx} read {key}={value:?}, which no committed transaction wrote"
                ));
            };
            edges.entry(w).or_default().insert(Writer::Tx(*tx));
            if let Some(next) = overwritten_by.get(&(key.as_str(), value.as_deref())) {
                if next != tx {
                    edges
                        .entry(Writer::Tx(*tx))
                        .or_default()
                        .insert(Writer::Tx(*next));
                }
            }
        }
        // Real time: a transaction its client saw commit precedes every one begun later.
        if let Some(end) = ran.committed_at {
            for (later, other) in &committed {
                if other.began > end {
                    edges
                        .entry(Writer::Tx(*tx))
                        .or_default()
                        .insert(Writer::Tx(*later));
                }
            }
        }
    }
    match find_cycle(&edges) {
        Some(cycle) => Err(format!("the serialization graph has a cycle: {cycle:?}")),
        None => Ok(()),
    }
}

/// A cycle of `edges`, if there is one (iterative depth-first search).
fn find_cycle(edges: &BTreeMap<Writer, BTreeSet<Writer>>) -> Option<Vec<Writer>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: BTreeMap<Writer, Mark> = BTreeMap::new();
    for &root in edges.keys() {
        if marks.contains_key(&root) {
            continue;
        }
        let mut path: Vec<(Writer, Vec<Writer>)> = vec![(root, successors(edges, root))];
        marks.insert(root, Mark::Open);
        while let Some((node, todo)) = path.last_mut() {
            let node = *node;
            match todo.pop() {
                Some(next) => match marks.get(&next) {
                    Some(Mark::Open) => {
                        let start = path.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        return Some(path[start..].iter().map(|(n, _)| *n).collect());
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(next, Mark::Open);
                        path.push((next, successors(edges, next)));
                    }
                },
                None => {
                    marks.insert(node, Mark::Done);
                    path.pop();
                }
            }
        }
    }
    None
}

fn successors(edges: &BTreeMap<Writer, BTreeSet<Writer>>, node: Writer) -> Vec<Writer> {
    edges
        .get(&node)
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default()
}

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
    install_raft_invariants(&mut sim);
    schedule_faults(&mut sim, seed, &mut rng, &processes);

    let seen: Seen = Rc::default();
    let history: History = Rc::default();
    let stats = Rc::new(RefCell::new(Totals::default()));
    start_bank(&mut sim, seen.clone(), history.clone(), stats.clone());
    let audit_failures: Rc<RefCell<Vec<String>>> = Rc::default();
    start_auditor(
        &mut sim,
        history.clone(),
        stats.clone(),
        audit_failures.clone(),
    );
    // On a quarter of the seeds the resolver is impatient: it steps into transactions whose
    // drivers are still running them, so drivers and resolvers race for every step.
    let resolve_after = if rng.chance(0.25) {
        RESOLVE_AFTER_IMPATIENT
    } else {
        RESOLVE_AFTER
    };
    let resolver = Rc::new(RefCell::new(Resolver::new(vec![1, 2, 3], resolve_after)));
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
    if let Err(e) = check_serializable(&history.borrow(), &decided) {
        return Err(sim.fail_now(format!("not strictly serializable: {e}")));
    }
    let s = *stats.borrow();
    totals.checked += history
        .borrow()
        .values()
        .filter(|r| r.committed_at.is_some())
        .count() as u64;
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
        now: u64,
        rng: &mut DetRng,
        seen: &Seen,
        history: &History,
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
                    if result == TxResult::Committed {
                        if let Some(ran) = history.borrow_mut().get_mut(&tx) {
                            ran.committed_at = Some(now);
                        }
                    }
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
        let tx = TxId::new(100 + self.client, self.seq + 1);
        let writes = vec![
            TxWrite {
                key: a.clone(),
                value: versioned(balance(va.as_deref()) - *amount, tx),
            },
            TxWrite {
                key: b.clone(),
                value: versioned(balance(vb.as_deref()) + *amount, tx),
            },
        ];
        history.borrow_mut().insert(
            tx,
            Ran {
                read: compares
                    .iter()
                    .map(|c| (c.key.clone(), c.value.clone()))
                    .collect(),
                wrote: writes
                    .iter()
                    .map(|w| (w.key.clone(), w.value.clone()))
                    .collect(),
                began: now,
                committed_at: None,
            },
        );
        if let Some(map) = self.driver.router_mut().map() {
            if map.layout.partition_of(&a) == map.layout.partition_of(&b) {
                stats.borrow_mut().one_phase += 1;
            }
        }
        self.seq += 1;
        self.driver.begin(tx, compares, writes);
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

fn start_bank(sim: &mut Sim<H>, seen: Seen, history: History, stats: Rc<RefCell<Totals>>) {
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
            bank.next(ctx.now, rng, &seen, &history, &stats)
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
fn start_auditor(
    sim: &mut Sim<H>,
    history: History,
    stats: Rc<RefCell<Totals>>,
    failures: Rc<RefCell<Vec<String>>>,
) {
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
                        if let Some(tx) = driver.tx() {
                            if let Some(ran) = history.borrow_mut().get_mut(&tx) {
                                ran.read = driver.reads().to_vec();
                                ran.committed_at = Some(ctx.now);
                            }
                        }
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
            history.borrow_mut().insert(
                TxId::new(99, seq),
                Ran {
                    began: ctx.now,
                    ..Ran::default()
                },
            );
            driver.start(TxId::new(99, seq), plan);
            busy = true;
            driver.next_request()
        },
    );
}

/// Seed 9921 of a sweep of 12,000: a driver's answer to its commit decision was lost while an
/// impatient resolver found the committed record, finished the parts and forgot the record;
/// the driver asked again and the coordinator group, finding no record, presumed abort, so the
/// driver reported an abort for a transaction that committed (a client retrying the transfer
/// would have made it twice). The group now answers from its outcome cache, and the run's
/// final check (what each driver saw agrees with what the groups decided) passes. Run on every
/// test run.
#[test]
fn a_decision_asked_again_after_a_resolver_forgot_it_is_still_the_commit() {
    run(9921, &mut Totals::default()).unwrap_or_else(|e| panic!("{e}"));
}

/// The checker itself, on hand-made histories: each anomaly it exists for is found, and a
/// serial history passes.
#[test]
fn the_serializability_check_finds_each_anomaly() {
    let t = |seq| TxId::new(101, seq);
    let audit = TxId::new(99, 1);
    let kv = |k: &str, v: Option<String>| (k.to_string(), v);
    let transfer = |seq, from_a: Option<String>, from_b: Option<String>, began, end| Ran {
        read: vec![kv("a", from_a), kv("b", from_b)],
        wrote: vec![
            ("a".to_string(), versioned(90, t(seq))),
            ("b".to_string(), versioned(110, t(seq))),
        ],
        began,
        committed_at: end,
    };
    let v = |seq| Some(versioned(90, t(seq)));
    let w = |seq| Some(versioned(110, t(seq)));
    let decided: BTreeMap<TxId, Outcome> = [(t(1), Outcome::Committed), (t(2), Outcome::Committed)]
        .into_iter()
        .collect();

    // Serial: t1 then t2 (which compared t1's versions), an audit after both.
    let mut serial = BTreeMap::new();
    serial.insert(t(1), transfer(1, None, None, 0, Some(10)));
    serial.insert(t(2), transfer(2, v(1), w(1), 11, Some(20)));
    serial.insert(
        audit,
        Ran {
            read: vec![kv("a", v(2)), kv("b", w(2))],
            wrote: vec![],
            began: 21,
            committed_at: Some(30),
        },
    );
    assert_eq!(check_serializable(&serial, &decided), Ok(()));

    // Lost update: both overwrote the initial versions.
    let mut lost = serial.clone();
    lost.insert(t(2), transfer(2, None, None, 11, Some(20)));
    assert!(check_serializable(&lost, &decided)
        .unwrap_err()
        .starts_with("lost update"));

    // Read skew: the audit saw t2's a and the b t2 overwrote.
    let mut skew = serial.clone();
    skew.insert(
        audit,
        Ran {
            read: vec![kv("a", v(2)), kv("b", w(1))],
            wrote: vec![],
            began: 15,
            committed_at: Some(30),
        },
    );
    assert!(check_serializable(&skew, &decided)
        .unwrap_err()
        .contains("cycle"));

    // Stale in real time: the audit began after t2 committed yet saw t1's versions.
    let mut stale = serial.clone();
    stale.insert(
        audit,
        Ran {
            read: vec![kv("a", v(1)), kv("b", w(1))],
            wrote: vec![],
            began: 21,
            committed_at: Some(30),
        },
    );
    assert!(check_serializable(&stale, &decided)
        .unwrap_err()
        .contains("cycle"));
    // The same read, begun before t2 committed, is serializable (the audit goes first).
    stale.get_mut(&audit).unwrap().began = 12;
    assert_eq!(check_serializable(&stale, &decided), Ok(()));

    // Dirty read: a version of a transaction that did not commit.
    let mut dirty = serial.clone();
    dirty.insert(t(3), transfer(3, v(2), w(2), 22, None));
    dirty.insert(
        audit,
        Ran {
            read: vec![kv("a", v(3)), kv("b", w(3))],
            wrote: vec![],
            began: 25,
            committed_at: Some(30),
        },
    );
    assert!(check_serializable(&dirty, &decided)
        .unwrap_err()
        .starts_with("dirty read"));
}
