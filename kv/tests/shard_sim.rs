//! The sharded store (`kv::shard`) under the simulator's faults: a process joins the ring (or,
//! on some seeds, leaves it) while clients read and write, and the partitions the ring names
//! move (learner,
//! catch-up, promotion, removal of the replica it replaces) through crash-restarts,
//! partitions, loss, duplication, jitter and torn tails, with the mover itself restarted at
//! random steps.
//!
//! # One run
//!
//! - **Processes**: 3 or 4 founders (`1..=f`) hold the map group and every partition the
//!   ring places on them; process `f + 1` starts empty. [`PARTITIONS`] partitions of 3
//!   replicas.
//! - **Groups**: the per-seed Raft knobs of the other simulations; on half the seeds the
//!   groups snapshot every few entries, so a learner is caught up by snapshot.
//! - **Clients**: [`CLIENTS`] closed-loop clients, each with its own [`Router`]: puts and
//!   linearizable reads on [`KEYS`] keys spread over the partitions, routed by the map,
//!   following leader hints, reading the map again after a redirect.
//! - **Mover**: at a seeded time it puts process `f + 1` on the ring (or, with four founders
//!   on half the seeds, takes a founder off it) and moves partitions until the map is in
//!   place. Now and then it forgets everything (a mover process that
//!   crashed) and resumes from the map.
//! - **Checks**: after every step, every property of the Raft paper's Figure 3 for every
//!   group (election safety, leader append-only, log matching, leader completeness, state
//!   machine safety), on whichever processes host it at that step. At the end: the
//!   whole client history is linearizable; the mover finished; it moved exactly the
//!   partitions whose place on the ring changed, each by one replica, to the process that
//!   joined or away from the one that left;
//!   every process hosts exactly the groups the map gives it; every group's voters are the
//!   map's replicas; every group has a leader.
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

use common::check::kv::{check_kv, KvInput, KvOutput as CheckOutput, Verdict};
use common::check::{Completion, History};
use common::groups::{GroupId, GroupResponse, GroupsRequest};
use common::kv_store::{KvCommand, KvOutput, KvQuery};
use common::sim::{run_seeds, ClosedLoop, Sim, SimConfig, SimError, SimView};
use common::{DetRng, NodeId};
use kv::shard::{
    Layout, MapCommand, Mover, Next, Router, ShardCommand, ShardConfig, ShardMap, ShardOutput,
    ShardQuery, ShardRequest, ShardResponse, MAP_GROUP,
};
use raft::{RaftError, Request, Response};

/// Seeds in the normal test run.
const SEEDS: u64 = 1_000;
/// Partitions of the key space.
const PARTITIONS: u32 = 6;
/// Keys the clients use (spread over the partitions by hash).
const KEYS: usize = 8;
/// Closed-loop clients.
const CLIENTS: u64 = 4;
/// Client requests per run at most.
const REQUESTS_MAX: u64 = 300;
/// After the faults, the mover finishes within this long.
const SETTLE_WITHIN: u64 = 6_000;
/// The chance that the mover forgets everything before one of its requests.
const MOVER_RESTART_CHANCE: f64 = 0.03;

/// What the runs did, to show they are not vacuous.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    seeds: u64,
    applied: u64,
    reads: u64,
    moved: u64,
    removals: u64,
    catch_up_waits: u64,
    redirects: u64,
    snapshots_installed: u64,
}

#[test]
fn partitions_move_to_a_new_process_under_faults_and_every_key_stays_linearizable() {
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
    assert!(t.applied >= 10 * t.seeds, "too little work: {t:?}");
    assert!(t.reads >= t.seeds, "too few reads: {t:?}");
    assert!(t.moved >= t.seeds, "too few moves: {t:?}");
    assert!(
        t.removals * 10 >= t.seeds,
        "too few processes left the ring: {t:?}"
    );
    assert!(t.redirects > 0, "no client was redirected: {t:?}");
    assert!(t.catch_up_waits > 0, "no promotion waited: {t:?}");
    assert!(
        t.snapshots_installed > 0,
        "no learner caught up by snapshot: {t:?}"
    );
}

fn run(seed: u64, totals: &mut Totals) -> Result<(), SimError> {
    let mut rng = DetRng::new(seed ^ 0x5348_4152_4453_0000);
    let founders: u64 = if rng.chance(0.5) { 3 } else { 4 };
    let all: Vec<NodeId> = (1..=founders + 1).collect();
    // Process `founders + 1` joins the ring; or, with four founders on half the seeds, one of
    // them leaves it (the map group's members stay, hosting the map group only).
    let change = if founders == 4 && rng.chance(0.5) {
        MapCommand::RemoveProcess(rng.range_inclusive(1, 4))
    } else {
        MapCommand::AddProcess(founders + 1)
    };
    let layout = Layout::new(PARTITIONS, 3).unwrap();
    let map_group: Vec<NodeId> = (1..=3).collect();
    let template = raft_template(seed, &mut rng);
    let config = move |id: NodeId| ShardConfig {
        id,
        layout,
        map_group: map_group.clone(),
        initial_processes: (1..=founders).collect(),
        raft: template.clone(),
    };
    let genesis = config(1).genesis().unwrap();

    let mut sim = build(seed, &mut rng, &all, config)?;
    let installs = Rc::new(RefCell::new(0u64));
    count_snapshot_installs(&mut sim, &genesis, installs.clone());
    install_raft_invariants(&mut sim);

    schedule_faults(&mut sim, seed, &mut rng, &all);

    let redirects = Rc::new(RefCell::new(0u64));
    start_clients(&mut sim, redirects.clone());
    let mover = Rc::new(RefCell::new(Mover::new(vec![1, 2, 3])));
    mover.borrow_mut().change_ring(change.clone());
    let move_at = rng.range_inclusive(FAULTS_START, FAULTS_UNTIL / 2);
    start_mover(
        &mut sim,
        move_at,
        FAULTS_UNTIL + SETTLE_WITHIN,
        MOVER_RESTART_CHANCE,
        mover.clone(),
    );

    sim.run_until(FAULTS_UNTIL)?;
    let deadline = FAULTS_UNTIL + SETTLE_WITHIN;
    let m = mover.clone();
    if !sim.run_until_cond(deadline, move |_| m.borrow().is_done())? {
        let state = format!("{:?}", mover.borrow());
        return Err(sim.fail_now(format!("the mover did not finish: {state}")));
    }
    let map = mover
        .borrow()
        .map()
        .cloned()
        .expect("a finished mover read the map");
    check_placement(&mut sim, &genesis, &map, &change, &mover.borrow())?;
    check_groups(&mut sim, &map)?;
    linearizable(&mut sim)?;

    let history = sim.history();
    let answered = |f: &dyn Fn(&Response<ShardOutput>) -> bool| {
        history
            .iter()
            .filter(|op| matches!(op.outcome.response(), Some(GroupResponse::Group(g, r)) if *g != MAP_GROUP && f(r)))
            .count() as u64
    };
    totals.applied += answered(&|r| {
        matches!(
            r,
            Response::Applied {
                output: ShardOutput::Kv(_),
                ..
            }
        )
    });
    totals.reads += answered(&|r| matches!(r, Response::Read(ShardOutput::Kv(_))));
    totals.moved += mover.borrow().moved().len() as u64;
    totals.removals += u64::from(matches!(change, MapCommand::RemoveProcess(_)));
    totals.catch_up_waits += mover.borrow().stats().catch_up_waits;
    totals.redirects += *redirects.borrow();
    totals.snapshots_installed += *installs.borrow();
    Ok(())
}

/// Counts, after every step, the snapshots that replicas added by moves installed through
/// InstallSnapshot (a replica's snapshot index jumps past the last entry it held the step
/// before). (The Raft properties themselves are `install_raft_invariants`'s.)
fn count_snapshot_installs(sim: &mut Sim<H>, genesis: &ShardMap, installs: Rc<RefCell<u64>>) {
    let founding: BTreeSet<(NodeId, GroupId)> = genesis
        .partitions
        .iter()
        .enumerate()
        .flat_map(|(p, s)| {
            s.replicas
                .iter()
                .map(move |&n| (n, Layout::group_of(p as u32)))
        })
        .collect();
    let mut last: BTreeMap<(NodeId, GroupId), u64> = BTreeMap::new();
    sim.add_invariant("counting snapshot installs", move |view| {
        for (id, host) in view.nodes() {
            let Some(host) = host else {
                last.retain(|(n, _), _| *n != id);
                continue;
            };
            for (g, node) in host.groups() {
                let base = node.first_log_index() - 1;
                let new_replica = g != MAP_GROUP && !founding.contains(&(id, g));
                if new_replica && last.get(&(id, g)).is_some_and(|&prev| base > prev) {
                    *installs.borrow_mut() += 1;
                }
                last.insert((id, g), node.last_log_index());
            }
        }
        Ok(())
    });
}

/// The keys of the run.
fn key(i: usize) -> String {
    format!("key{i}")
}

/// Closed-loop clients, each routing by its own [`Router`].
fn start_clients(sim: &mut Sim<H>, redirects: Rc<RefCell<u64>>) {
    let mut routers: BTreeMap<u64, Router> = BTreeMap::new();
    let mut seq = 0u64;
    sim.closed_loop(
        ClosedLoop {
            clients: CLIENTS,
            start: 100,
            think_min: 0,
            think_max: 30,
            requests_max: REQUESTS_MAX,
            until: FAULTS_UNTIL + 500,
            timeout: Some(REQUEST_TIMEOUT),
        },
        move |rng, ctx| {
            let router = routers
                .entry(ctx.client)
                .or_insert_with(|| Router::new(vec![1, 2, 3]));
            if let Some(last) = ctx.last {
                let group = match &last.request {
                    GroupsRequest::Group(g, _) => *g,
                    _ => MAP_GROUP,
                };
                let answer = last.outcome.response();
                if matches!(answer, Some(GroupResponse::UnknownGroup(_))) {
                    *redirects.borrow_mut() += 1;
                }
                router.observe(group, last.node, answer);
            }
            let k = key(rng.index(KEYS).unwrap_or(0));
            match router.next(&k) {
                Next::ReadMap(node) => Some((node, Router::map_request())),
                Next::Send { group, node } => {
                    seq += 1;
                    let request = if rng.index(10).unwrap_or(0) < 4 {
                        Request::Read(ShardQuery::Kv(KvQuery::Get(k)))
                    } else {
                        let value = format!("{}.{seq}", ctx.client);
                        Request::Propose(ShardCommand::Kv(KvCommand::Put { key: k, value }))
                    };
                    Some((node, GroupsRequest::Group(group, request)))
                }
            }
        },
    );
}

/// The mover moved exactly the partitions whose place on the ring changed, each by handing
/// one replica to the new process, and the map is in place.
fn check_placement(
    sim: &mut Sim<H>,
    genesis: &ShardMap,
    map: &ShardMap,
    change: &MapCommand,
    mover: &Mover,
) -> Result<(), SimError> {
    let target = map.target();
    let diff: BTreeSet<u32> = (0..PARTITIONS)
        .filter(|&p| genesis.partitions[p as usize].replicas != target[p as usize])
        .collect();
    let mut problems = Vec::new();
    let (arrived, left) = match *change {
        MapCommand::AddProcess(id) => (Some(id), None),
        MapCommand::RemoveProcess(id) => (None, Some(id)),
        _ => (None, None),
    };
    if arrived.is_some_and(|id| !map.processes.contains(&id))
        || left.is_some_and(|id| map.processes.contains(&id))
    {
        problems.push(format!(
            "{change:?} is not on the ring: {:?}",
            map.processes
        ));
    }
    if mover.moved() != &diff {
        problems.push(format!(
            "moved {:?}, the ring names {diff:?}",
            mover.moved()
        ));
    }
    for (p, state) in map.partitions.iter().enumerate() {
        if state.moving_to.is_some() || state.replicas != target[p] {
            problems.push(format!("partition {p} not in place: {state:?}"));
        }
        let old = &genesis.partitions[p].replicas;
        let gained: Vec<NodeId> = state
            .replicas
            .iter()
            .filter(|n| !old.contains(n))
            .copied()
            .collect();
        let lost: Vec<NodeId> = old
            .iter()
            .filter(|n| !state.replicas.contains(n))
            .copied()
            .collect();
        // The ring is monotone: a move hands one replica to the process that arrived, or
        // takes one from the process that left.
        let one_swap = gained.len() == 1
            && lost.len() == 1
            && arrived.is_none_or(|id| gained == [id])
            && left.is_none_or(|id| lost == [id]);
        if diff.contains(&(p as u32)) && !one_swap {
            problems.push(format!(
                "partition {p} went from {old:?} to {:?}",
                state.replicas
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(sim.fail_now(problems.join("; ")))
    }
}

/// Every process hosts exactly the groups the map gives it, and every group elects a leader
/// whose voters are the map's replicas.
fn check_groups(sim: &mut Sim<H>, map: &ShardMap) -> Result<(), SimError> {
    let expected = |id: NodeId| -> BTreeSet<GroupId> {
        let mut groups: BTreeSet<GroupId> = map
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.replicas.contains(&id))
            .map(|(p, _)| Layout::group_of(p as u32))
            .collect();
        if map.map_group.contains(&id) {
            groups.insert(MAP_GROUP);
        }
        groups
    };
    let deadline = sim.now() + 2_000;
    let settled = move |view: &SimView<'_, H>| {
        let hosting = view.nodes().all(|(id, host)| {
            host.is_some_and(|h| {
                h.groups().map(|(g, _)| g).collect::<BTreeSet<_>>() == expected(id)
            })
        });
        hosting && (0..=u64::from(PARTITIONS)).all(|g| leader_of(view, g).is_some())
    };
    if !sim.run_until_cond(deadline, settled)? {
        let view = sim.view();
        let hosted: Vec<(NodeId, Vec<GroupId>)> = view
            .nodes()
            .map(|(id, h)| {
                (
                    id,
                    h.map(|h| h.groups().map(|(g, _)| g).collect())
                        .unwrap_or_default(),
                )
            })
            .collect();
        return Err(sim.fail_now(format!(
            "processes do not host what the map says, or a group has no leader: {hosted:?}"
        )));
    }
    let view = sim.view();
    for (p, state) in map.partitions.iter().enumerate() {
        let g = Layout::group_of(p as u32);
        let Some(leader) = leader_of(&view, g) else {
            continue;
        };
        let membership = view
            .node(leader)
            .and_then(|h| h.group(g))
            .map(|n| n.membership().clone());
        let Some(m) = membership else { continue };
        let voters: Vec<NodeId> = m.voters.iter().copied().collect();
        if voters != state.replicas || !m.learners.is_empty() || m.voters_outgoing.is_some() {
            let message = format!(
                "group {g}: members {m:?}, the map says {:?}",
                state.replicas
            );
            return Err(sim.fail_now(message));
        }
    }
    Ok(())
}

/// The whole client history is linearizable, key by key (a key stays in its partition's
/// group however the group's members change).
fn linearizable(sim: &mut Sim<H>) -> Result<(), SimError> {
    let history = History::from_sim(
        sim.history(),
        |req: &ShardRequest| match req {
            GroupsRequest::Group(
                _,
                Request::Propose(ShardCommand::Kv(KvCommand::Put { key, value })),
            ) => Some(KvInput::Put {
                key: key.clone(),
                value: value.clone(),
            }),
            GroupsRequest::Group(_, Request::Read(ShardQuery::Kv(KvQuery::Get(key)))) => {
                Some(KvInput::Get { key: key.clone() })
            }
            _ => None,
        },
        |_req, resp: &ShardResponse| match resp {
            GroupResponse::Group(
                _,
                Response::Applied {
                    output: ShardOutput::Kv(_),
                    ..
                },
            ) => Completion::Ok(CheckOutput::Done),
            GroupResponse::Group(_, Response::Read(ShardOutput::Kv(KvOutput::Value(value)))) => {
                Completion::Ok(CheckOutput::Value {
                    value: value.clone(),
                })
            }
            GroupResponse::Group(_, Response::Failed(RaftError::Indeterminate { .. })) => {
                Completion::Unknown
            }
            // The replica was removed from the process while it held the request.
            GroupResponse::Abandoned(_) => Completion::Unknown,
            _ => Completion::Fail,
        },
    );
    match check_kv(&history) {
        Ok(Verdict::Linearizable) => Ok(()),
        Ok(v) => Err(sim.fail_now(format!("not linearizable: {v:?}"))),
        Err(e) => Err(sim.fail_now(format!("bad history: {e}"))),
    }
}

/// Most virtual time between two successful requests of one client while partitions move on
/// a healthy network: two election timeouts (a removed leader steps down and its group elects
/// another) plus a client's think time and a few round trips. Over the test's 100 seeds the
/// longest gap is between 64 and 80 ticks.
const SERVICE_GAP_MAX: u64 = 120;

/// On a healthy network (no loss, no crash), the store serves throughout the moves a new
/// process brings: no client request goes unanswered, and no client waits longer than
/// [`SERVICE_GAP_MAX`] between two successful requests, redirects included.
#[test]
fn the_store_serves_throughout_the_moves_on_a_healthy_network() {
    let report = run_seeds(100, |seed| {
        let mut rng = DetRng::new(seed ^ 0x4845_414c_5448_5900);
        let layout = Layout::new(PARTITIONS, 3).unwrap();
        let mut template = raft_template(seed, &mut rng);
        template.pre_vote = true;
        template.check_quorum = true;
        let config = move |id: NodeId| ShardConfig {
            id,
            layout,
            map_group: vec![1, 2, 3],
            initial_processes: (1..=3).collect(),
            raft: template.clone(),
        };
        let mut sc = SimConfig::new(seed, (1..=4).collect());
        sc.link.latency_min = 1;
        sc.link.latency_max = 4;
        sc.request_timeout = Some(REQUEST_TIMEOUT);
        sc.hash_contents = false;
        let mut sim: Sim<H> = Sim::new(sc, move |id| {
            config(id).groups_config().expect("a valid configuration")
        })?;
        let redirects = Rc::new(RefCell::new(0u64));
        start_clients(&mut sim, redirects);
        let mover = Rc::new(RefCell::new(Mover::new(vec![1, 2, 3])));
        mover.borrow_mut().change_ring(MapCommand::AddProcess(4));
        let move_at = 400;
        start_mover(
            &mut sim,
            move_at,
            FAULTS_UNTIL + SETTLE_WITHIN,
            MOVER_RESTART_CHANCE,
            mover.clone(),
        );
        let m = mover.clone();
        if !sim.run_until_cond(FAULTS_UNTIL, move |_| m.borrow().is_done())? {
            return Err(sim.fail_now("the mover did not finish".into()));
        }
        let moved_until = sim.now();
        let history = sim.history();
        if let Some(op) = history.iter().find(|op| {
            op.client < CLIENTS && op.outcome.response().is_none() && op.completed_at.is_some()
        }) {
            let message = format!("a request went unanswered: {op:?}");
            return Err(sim.fail_now(message));
        }
        for client in 0..CLIENTS {
            let mut last_ok = move_at;
            for op in history.iter().filter(|op| op.client == client) {
                let Some(done) = op.completed_at else {
                    continue;
                };
                let ok = matches!(
                    op.outcome.response(),
                    Some(GroupResponse::Group(
                        _,
                        Response::Applied { .. } | Response::Read(_)
                    ))
                );
                if !ok || done < move_at {
                    continue;
                }
                if done - last_ok > SERVICE_GAP_MAX && done <= moved_until {
                    let message = format!(
                        "client {client} waited {} ticks (until {done}) while partitions moved",
                        done - last_ok
                    );
                    return Err(sim.fail_now(message));
                }
                last_ok = done;
            }
        }
        Ok(())
    });
    if let Err(e) = report {
        panic!("{e}");
    }
}
