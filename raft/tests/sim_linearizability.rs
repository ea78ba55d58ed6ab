//! Linearizability (Raft paper §8 "Client interaction"; thesis §6.3–6.4) of the replicated KV
//! store's client history, through the workspace simulator (`common::sim`) and checked per key
//! with `common::check` (porcupine). Clients follow "not the leader, try node N" hints; writes go
//! through the log, reads through ReadIndex or the leader's lease. Faults: message loss,
//! duplication, jittered delays (reordering), partitions, crash-restarts with torn unsynced
//! tails, and group commit. Election safety (§5.2) is checked after every step as well.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use common::check::kv::{check_kv, KvInput, KvOutput as CheckOutput, Verdict};
use common::check::{Completion, History};
use common::sim::{
    run_seeds, ClosedLoop, FaultPlan, Outcome, RandomFaults, Sim, SimConfig, SimError,
};
use common::{DetRng, Node, NodeId};
use raft::kv::{KvCommand, KvOutput, KvQuery, KvStore};
use raft::{Config, RaftError, RaftNode, Request, Response, Role};

type N = RaftNode<KvStore>;
type Req = Request<KvCommand, KvQuery>;

const KEYS: u64 = 3;

fn one_run(seed: u64) -> Result<(), SimError> {
    let mut rng = DetRng::new(seed);
    let n: u64 = if rng.chance(0.5) { 3 } else { 5 };
    let members: Vec<NodeId> = (1..=n).collect();
    let mut sc = SimConfig::new(seed, members.clone());
    sc.link.drop = 0.02;
    sc.link.duplicate = 0.02;
    sc.sync_latency_min = 0;
    sc.sync_latency_max = if rng.chance(0.5) { 5 } else { 0 };
    sc.torn_tail = true;
    let lease = rng.chance(0.5);
    let snapshot_every = if rng.chance(0.5) { 20 } else { 0 };
    let cluster = members.clone();
    let mut sim: Sim<N> = Sim::new(sc, move |id| {
        let mut c = Config::new(id, cluster.clone());
        c.seed = seed;
        c.lease_reads = lease;
        c.snapshot_log_entries_max = snapshot_every;
        c.snapshot_chunk_bytes_max = 64;
        c
    })?;
    let mut leaders: BTreeMap<u64, NodeId> = BTreeMap::new();
    sim.add_invariant("election safety (§5.2)", move |view| {
        for (id, node) in view.nodes() {
            let Some(node) = node else { continue };
            if node.role() == Role::Leader {
                let prev = *leaders.entry(node.term()).or_insert(id);
                if prev != id {
                    return Err(format!(
                        "two leaders in term {}: {prev} and {id}",
                        node.term()
                    ));
                }
            }
        }
        Ok(())
    });
    sim.schedule(FaultPlan::random(
        seed,
        &members,
        &RandomFaults::new(300, 3_000, 1.0),
    ));
    let mut preferred: BTreeMap<u64, NodeId> = BTreeMap::new();
    let mut next_value = 0u64;
    sim.closed_loop(
        ClosedLoop {
            clients: 4,
            start: 200,
            think_min: 0,
            think_max: 20,
            requests_max: 120,
            until: 3_500,
            timeout: Some(400),
        },
        move |rng, ctx| {
            // Follow the leader hint of the client's last answer.
            let node = preferred.entry(ctx.client).or_insert(1);
            if let Some(last) = ctx.last {
                match last.outcome.response() {
                    Some(Response::Failed(
                        RaftError::NotLeader { leader: Some(l) }
                        | RaftError::LeadershipLost { leader: Some(l) },
                    )) => *node = *l,
                    Some(Response::Failed(_)) | None => {
                        *node = 1 + rng.index(ctx.nodes.len()).unwrap_or(0) as u64
                    }
                    _ => {}
                }
            }
            let key = format!("k{}", rng.index(KEYS as usize).unwrap_or(0));
            let req = if rng.chance(0.5) {
                next_value += 1;
                Request::Propose(KvCommand::Put {
                    key,
                    value: format!("{}-{next_value}", ctx.client),
                })
            } else {
                Request::Read(KvQuery::Get(key))
            };
            Some((*node, req))
        },
    );
    sim.run_until(6_000)?;
    let history: History<KvInput, CheckOutput> = History::from_sim(
        sim.history(),
        |req: &Req| match req {
            Request::Propose(KvCommand::Put { key, value }) => Some(KvInput::Put {
                key: key.clone(),
                value: value.clone(),
            }),
            Request::Read(KvQuery::Get(key)) => Some(KvInput::Get { key: key.clone() }),
            _ => None,
        },
        |_req, resp: &Response<KvOutput>| match resp {
            Response::Applied { .. } => Completion::Ok(CheckOutput::Done),
            Response::Read(KvOutput::Value(value)) => Completion::Ok(CheckOutput::Value {
                value: value.clone(),
            }),
            Response::Failed(RaftError::Indeterminate { .. }) => Completion::Unknown,
            _ => Completion::Fail,
        },
    );
    let ok = sim
        .history()
        .iter()
        .filter(|op| {
            matches!(
                op.outcome,
                Outcome::Response(Response::Applied { .. } | Response::Read(_))
            )
        })
        .count();
    match check_kv(&history) {
        Ok(Verdict::Linearizable) => {}
        Ok(v) => return Err(sim.fail_now(format!("not linearizable: {v:?}"))),
        Err(e) => return Err(sim.fail_now(format!("bad history: {e}"))),
    }
    // Liveness after the faults: the cluster answered requests.
    if ok < 10 {
        return Err(sim.fail_now(format!("only {ok} requests succeeded")));
    }
    let _ = sim.node(1).map(|n| n.metrics());
    Ok(())
}

#[test]
fn kv_history_is_linearizable_under_faults() {
    run_seeds(200, one_run).unwrap();
}
