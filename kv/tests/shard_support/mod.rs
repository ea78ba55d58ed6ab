//! What the sharded store's simulations share: the per-seed Raft settings, the simulated
//! network and disk, the fault plan, the mover as a closed-loop client, who leads a group, and
//! the Raft paper's Figure 3 checked for every group after every step.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use common::groups::GroupId;
use common::sim::{ClosedLoop, FaultPlan, RandomFaults, Sim, SimConfig, SimError, SimView};
use common::{DetRng, NodeId};
use kv::shard::{Mover, ShardConfig, ShardHost, ShardMachine};
use raft::testing::invariants::{figure_3, Invariant, Live};
use raft::{Config, Role};

/// The host every simulated process runs.
pub type H = ShardHost;

/// Faults start once first leaders had time to be elected.
pub const FAULTS_START: u64 = 200;
/// Faults stop (and everything is repaired) here.
pub const FAULTS_UNTIL: u64 = 2_500;
/// A request is given up after this long (virtual time).
pub const REQUEST_TIMEOUT: u64 = 200;

/// The Raft settings every group of a run shares, drawn from `rng`: the knobs of the other
/// Raft simulations (pre-vote, check-quorum, lease reads, entries per message, in-flight
/// window, parallel append, aligned heartbeats), and snapshots every few entries on half the
/// seeds, in small chunks, so that a learner is caught up by snapshot.
pub fn raft_template(seed: u64, rng: &mut DetRng) -> Config {
    let mut c = Config::new(1, vec![1]);
    c.seed = seed;
    c.election_timeout_ticks_min = 10;
    c.election_timeout_ticks_max = 20;
    c.heartbeat_interval_ticks = 2;
    c.pre_vote = rng.chance(0.8);
    c.check_quorum = c.pre_vote || rng.chance(0.5);
    c.lease_reads = c.check_quorum && rng.chance(0.3);
    c.append_entries_max = 1 + rng.index(8).unwrap_or(0);
    c.inflight_max = 1 + rng.index(4).unwrap_or(0);
    c.parallel_append = rng.chance(0.5);
    c.heartbeat_aligned = rng.chance(0.5);
    c.snapshot_log_entries_max = if rng.chance(0.5) { 6 } else { 0 };
    c.snapshot_chunk_bytes_max = 64;
    c
}

/// The simulator for `processes`, each configured by `config`: jitter (which reorders), loss,
/// duplication, group commit with a seeded sync latency, torn unsynced tails at crashes, and
/// on half the seeds requests handed over in batches; the groups host compacts its shared log
/// often, so crashes meet compactions.
pub fn build(
    seed: u64,
    rng: &mut DetRng,
    processes: &[NodeId],
    config: impl Fn(NodeId) -> ShardConfig + 'static,
) -> Result<Sim<H>, SimError> {
    let mut sc = SimConfig::new(seed, processes.to_vec());
    sc.link.latency_min = 1;
    sc.link.latency_max = 2 + rng.range_inclusive(0, 10);
    sc.link.drop = [0.0, 0.02, 0.05][rng.index(3).unwrap_or(0)];
    sc.link.duplicate = [0.0, 0.02, 0.05][rng.index(3).unwrap_or(0)];
    sc.sync_latency_min = 0;
    sc.sync_latency_max = [0, 3, 10][rng.index(3).unwrap_or(0)];
    sc.torn_tail = true;
    sc.request_timeout = Some(REQUEST_TIMEOUT);
    sc.request_batch_window = [0, 0, 3, 8][rng.index(4).unwrap_or(0)];
    sc.hash_contents = false;
    Sim::new(sc, move |id| {
        let mut gc = config(id).groups_config().expect("a valid configuration");
        gc.compact_records_min = 32;
        gc.compact_live_multiple = 2;
        gc
    })
}

/// Schedules random faults on `processes` from [`FAULTS_START`] to [`FAULTS_UNTIL`]:
/// crash-restarts, partitions, partial connectivity, loss and duplication bursts, latency
/// spikes; on a fifth of the seeds a majority may be down at once.
pub fn schedule_faults(sim: &mut Sim<H>, seed: u64, rng: &mut DetRng, processes: &[NodeId]) {
    let mut k = RandomFaults::new(FAULTS_START, FAULTS_UNTIL, 1.0);
    k.mean_gap = 80;
    k.duration_min = 20;
    k.duration_max = 400;
    k.allow_majority_down = rng.chance(0.2);
    sim.schedule(FaultPlan::random(seed, processes, &k));
}

/// The mover, as one closed-loop client from `at` until `until`, forgetting everything before
/// a request with chance `restart_chance` (a mover process that crashed).
pub fn start_mover(
    sim: &mut Sim<H>,
    at: u64,
    until: u64,
    restart_chance: f64,
    mover: Rc<RefCell<Mover>>,
) {
    sim.closed_loop(
        ClosedLoop {
            clients: 1,
            start: at,
            think_min: 2,
            think_max: 10,
            requests_max: u64::MAX,
            until,
            timeout: Some(REQUEST_TIMEOUT),
        },
        move |rng, ctx| {
            let mut mover = mover.borrow_mut();
            if let Some(last) = ctx.last {
                mover.observe(last.node, last.outcome.response());
            }
            if restart_chance > 0.0 && rng.chance(restart_chance) {
                mover.restart();
            }
            mover.next_request()
        },
    );
}

/// Group `g`'s leader with the highest term, if any process hosting it leads.
pub fn leader_of(view: &SimView<'_, H>, g: GroupId) -> Option<NodeId> {
    view.nodes()
        .filter_map(|(id, host)| {
            let node = host?.group(g)?;
            (node.role() == Role::Leader).then_some((node.term(), id))
        })
        .max()
        .map(|(_, id)| id)
}

/// After every step, every property of the Raft paper's Figure 3 (election safety, leader
/// append-only, log matching, leader completeness, state machine safety) for every group, on
/// the processes hosting it at that step: replicas come and go as partitions move, and a
/// replica is taken as synced when none of its group's records wait for its process's sync.
pub fn install_raft_invariants(sim: &mut Sim<H>) {
    let mut per_group: BTreeMap<GroupId, Vec<Box<dyn Invariant<ShardMachine>>>> = BTreeMap::new();
    sim.add_invariant("raft's figure 3, per group", move |view| {
        let mut members: BTreeMap<GroupId, Vec<Live<'_, ShardMachine>>> = BTreeMap::new();
        for (id, host) in view.nodes() {
            let Some(host) = host else { continue };
            for (g, node) in host.groups() {
                let synced = !view
                    .unsynced(id)
                    .iter()
                    .any(|p| p.record().group() == Some(g));
                members
                    .entry(g)
                    .or_default()
                    .push(Live { id, node, synced });
            }
        }
        for (g, checks) in per_group.iter_mut() {
            let nodes = members.remove(g).unwrap_or_default();
            for check in checks.iter_mut() {
                check
                    .check(&nodes)
                    .map_err(|e| format!("group {g}: {}: {e}", check.name()))?;
            }
        }
        // Groups seen for the first time.
        for (g, nodes) in members {
            let mut checks = figure_3::<ShardMachine>();
            for check in checks.iter_mut() {
                check
                    .check(&nodes)
                    .map_err(|e| format!("group {g}: {}: {e}", check.name()))?;
            }
            per_group.insert(g, checks);
        }
        Ok(())
    });
}
