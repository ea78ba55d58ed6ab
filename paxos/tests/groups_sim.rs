//! Many Multi-Paxos groups per process (`common::groups::Groups`): three groups on three
//! replicas, every replica hosting every group behind one node, one log and one connection per
//! peer, under every fault of the simulator (loss, duplication, reordering, partitions,
//! crash-restarts with torn tails, group commit, batched requests). Agreement is checked per
//! group after every step (no two replicas decide different values in one slot of one group),
//! and once the faults end every group must decide new commands. 500 seeds (`SIM_SEEDS` for
//! more, `SIM_SEED` replays one).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::BTreeMap;

use common::groups::{GroupId, GroupResponse, Groups, GroupsConfig, GroupsRequest};
use common::sim::{run_seeds, ClosedLoop, Sim, SimConfig, SimError, SimView};
use common::{DetRng, NodeId};
use paxos::{Config, KvCommand, PaxosError, Request, Response, Slot, Value};
use support::{random_faults, Kv};

type H = Groups<Kv>;

const SEEDS: u64 = 500;
const GROUPS: [GroupId; 3] = [1, 2, 3];
const FAULTS_UNTIL: u64 = 1_500;

/// The simulation of one seed: three replicas, each hosting every group.
fn sim(seed: u64) -> Result<Sim<H>, SimError> {
    let members: Vec<NodeId> = vec![1, 2, 3];
    let mut sc = SimConfig::new(seed, members.clone());
    sc.sync_latency_min = 0;
    sc.sync_latency_max = 3;
    sc.torn_tail = true;
    sc.record_events = false;
    sc.hash_contents = false;
    sc.request_batch_window = [0, 3][DetRng::new(seed).index(2).unwrap_or(0)];
    Sim::new(sc, move |id| {
        let hosted = GROUPS
            .iter()
            .map(|&g| {
                let mut c = Config::new(id, members.clone());
                c.seed = seed ^ g;
                // Half the seeds compact their logs every few slots (checkpoints of a group
                // inside the shared log, and the host's compactions).
                if seed % 2 == 1 {
                    c.snapshot_interval_slots = 4;
                }
                c.parallel_accept = (seed >> 1) % 2 == 1;
                (g, c.into())
            })
            .collect();
        let mut gc = GroupsConfig::new(id, hosted);
        gc.compact_records_min = 16;
        gc.compact_live_multiple = 2;
        gc
    })
}

/// Agreement per group, after every step: the first value seen decided in a slot of a group is
/// the only one any replica ever decides there.
fn add_agreement(sim: &mut Sim<H>) {
    let mut chosen: BTreeMap<(GroupId, Slot), Value<KvCommand>> = BTreeMap::new();
    sim.add_invariant("agreement per group", move |view: &SimView<'_, H>| {
        for (id, host) in view.nodes() {
            let Some(host) = host else { continue };
            for (g, node) in host.groups() {
                for slot in node.log_start()..node.decided() {
                    let Some(v) = node.decided_value(slot) else {
                        continue;
                    };
                    match chosen.get(&(g, slot)) {
                        Some(first) if first != v => {
                            return Err(format!(
                                "group {g} slot {slot}: replica {id} decided {v:?}, another \
                                 replica {first:?}"
                            ))
                        }
                        Some(_) => {}
                        None => {
                            chosen.insert((g, slot), v.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    });
}

/// The commands every group decided, summed over its replicas' highest decided slot.
fn decided(sim: &Sim<H>) -> BTreeMap<GroupId, Slot> {
    let mut out = BTreeMap::new();
    for id in [1, 2, 3] {
        if let Some(host) = sim.node(id) {
            for (g, node) in host.groups() {
                let d = out.entry(g).or_insert(0);
                *d = (*d).max(node.decided());
            }
        }
    }
    out
}

fn put(g: GroupId, n: u64) -> GroupsRequest<Request<KvCommand, paxos::KvQuery>> {
    GroupsRequest::Group(
        g,
        Request::Propose {
            command: KvCommand::Put {
                key: format!("k{}", n % 4),
                value: n.to_string(),
            },
            session: None,
        },
    )
}

/// One seed; returns the slots its groups decided during the faults.
fn run(seed: u64) -> Result<u64, SimError> {
    let mut sim = sim(seed)?;
    add_agreement(&mut sim);
    sim.schedule(random_faults(seed, 3, 50, FAULTS_UNTIL));
    let mut n = 0;
    sim.closed_loop(
        ClosedLoop {
            clients: 9,
            start: 20,
            think_min: 0,
            think_max: 10,
            requests_max: 60,
            until: FAULTS_UNTIL,
            timeout: Some(300),
        },
        move |rng, ctx| {
            n += 1;
            // Each client keeps to one group and follows its replicas' leader hints.
            let g = GROUPS[(ctx.client % GROUPS.len() as u64) as usize];
            let hinted = ctx.last.and_then(|op| match op.outcome.response() {
                Some(GroupResponse::Group(
                    _,
                    Response::Failed(PaxosError::NotLeader { leader }),
                )) => *leader,
                Some(GroupResponse::Group(_, Response::Applied { .. })) => Some(op.node),
                _ => None,
            });
            let node = match hinted {
                Some(node) => node,
                None => ctx.nodes[rng.index(ctx.nodes.len())?],
            };
            Some((node, put(g, n)))
        },
    );
    sim.run_until(FAULTS_UNTIL + 200)?;
    // After the faults: each group decides one more command through whichever replica leads
    // it (a proposal at a non-leader is refused with a hint; try each replica in turn).
    let before = decided(&sim);
    for g in GROUPS {
        let mut done = false;
        for attempt in 0..30 {
            let node = [1, 2, 3][attempt % 3];
            let id = sim.submit(sim.now(), node, put(g, 1_000 + attempt as u64));
            sim.run_for(100)?;
            let answered = sim.op(id).and_then(|op| op.outcome.response().cloned());
            if let Some(GroupResponse::Group(_, Response::Applied { .. })) = answered {
                done = true;
                break;
            }
        }
        if !done {
            return Err(sim.fail_now(format!("group {g} decided nothing after the faults")));
        }
    }
    let after = decided(&sim);
    if std::env::var("GROUPS_DEBUG").is_ok() {
        eprintln!(
            "seed {seed}: decided before {before:?} after {after:?}, ops {}",
            sim.history().len()
        );
    }
    for g in GROUPS {
        if after.get(&g) <= before.get(&g) {
            return Err(sim.fail_now(format!("group {g}: no new slot decided after the faults")));
        }
    }
    Ok(before.values().sum())
}

#[test]
fn multi_paxos_groups_agree_and_stay_live_under_faults() {
    let mut slots = 0;
    let report =
        run_seeds(SEEDS, |seed| run(seed).map(|n| slots += n)).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.seeds >= 1);
    // The groups made progress through the faults: several slots per group and seed.
    assert!(
        slots >= 6 * report.seeds,
        "{slots} slots in {} seeds",
        report.seeds
    );
}
