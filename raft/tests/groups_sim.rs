//! Many Raft groups per process (`common::groups::Groups`) under the simulator's faults: every
//! group keeps the properties of the Raft paper's Figure 3 (§5.2–§5.4.3), the durable-commit
//! property of the leader's parallel append (thesis §10.2.1), linearizability of its client
//! history (§8), and liveness once the faults are repaired, while its messages share frames
//! with the other groups' and its records share one log (with compaction) and one snapshot
//! store.
//!
//! # One run
//!
//! - **Processes**: 3 or 5. [`GROUPS`] Raft groups of 3 members each: on 3 processes every
//!   process hosts every group; on 5, group `g` lives on three consecutive processes, so
//!   processes host different sets of groups and every frame carries a different mix.
//! - **Groups**: the per-seed Raft knobs of the other simulations (pre-vote, check-quorum,
//!   lease reads, entries per message, in-flight window, parallel append on half the seeds),
//!   each group with its own seed; snapshots every few entries on half the seeds (small
//!   chunks, so snapshots travel in pieces). The host compacts its shared log often.
//! - **Network and disk**: jitter (reorders), loss, duplication, group commit with a seeded
//!   sync latency, torn unsynced tails at crashes; on half the seeds, requests that reach a
//!   process close together are handed over as one batch (split by group by the host).
//! - **Faults** ([`FaultPlan::random`]) between [`FAULTS_START`] and [`FAULTS_UNTIL`]:
//!   crash-restarts of whole processes (all their groups at once), partitions, partial
//!   connectivity, loss and duplication bursts, latency spikes; on half the seeds, failed syncs
//!   (part of a batch of every group reaches the disk and the process stops until a restart).
//! - **Clients**: closed-loop, [`CLIENTS_PER_GROUP`] per group, puts and linearizable reads,
//!   following their group's leader hints.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names it); `SIM_SEEDS=n` runs more seeds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// Groups added and removed at run time, under the same faults and checks.
#[path = "groups_sim/dynamic.rs"]
mod dynamic;
mod sim_support;

use std::collections::{BTreeMap, BTreeSet};

use common::check::kv::{check_kv, KvInput, KvOutput as CheckOutput, Verdict};
use common::check::{Completion, History};
use common::groups::{
    group_records, GroupId, GroupResponse, Groups, GroupsConfig, GroupsRecord, GroupsRequest,
};
use common::sim::{
    run_seeds, ClosedLoop, Fault, FaultPlan, Outcome, RandomFaults, Sim, SimConfig, SimError,
    SimView,
};
use common::{DetRng, Node, NodeId};
use raft::kv::{KvCommand, KvOutput, KvQuery, KvStore};
use raft::message::Membership;
use raft::{Config, Event, LogIndex, RaftError, Request, Response, Role, Term};
use sim_support::{durable_holds, figure_3, Live, N, SNAPSHOT_CHUNK_BYTES};

/// The host under test: many Raft groups of the replicated KV store.
type H = Groups<N>;
type Req = Request<KvCommand, KvQuery>;

/// Seeds in the normal test run (sized to stay well under a minute in the test profile).
const SEEDS: u64 = 2_000;
/// Raft groups per run.
const GROUPS: u64 = 4;
/// Faults start once first leaders had time to be elected.
const FAULTS_START: u64 = 200;
/// Faults stop (and everything is repaired) here.
const FAULTS_UNTIL: u64 = 2_500;
/// After the faults, every group elects a leader and applies a proposal within this long.
const LIVENESS_WITHIN: u64 = 3_000;
/// Closed-loop clients per group.
const CLIENTS_PER_GROUP: u64 = 2;
/// Requests per run at most, all clients together.
const REQUESTS_MAX: u64 = 400;
/// A client gives up on a request after this long (virtual time).
const REQUEST_TIMEOUT: u64 = 300;
/// Failed syncs planned on the seeds that have them (half).
const FAILED_SYNCS: usize = 2;

/// The members of group `g` among processes `1..=n`.
fn members(g: GroupId, n: u64) -> Vec<NodeId> {
    if n <= 3 {
        return (1..=n).collect();
    }
    let mut m: Vec<NodeId> = (0..3).map(|k| (g + k) % n + 1).collect();
    m.sort_unstable();
    m
}

/// What a run did, to show the runs are not vacuous.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    seeds: u64,
    applied: u64,
    reads: u64,
    restarts: u64,
    elections: u64,
    snapshots: u64,
    /// Runs whose durable logs ended with a compaction record at their start on some process.
    compacted_runs: u64,
    /// Runs in which a sync failed.
    failed_sync_runs: u64,
    /// Frames the processes sent, and the groups' messages they carried.
    messages: u64,
    parts: u64,
}

#[test]
fn many_raft_groups_per_process_stay_safe_and_live_under_faults() {
    let mut totals = Totals::default();
    let report = run_seeds(SEEDS, |seed| {
        let mut sim = run(seed, &mut totals)?;
        linearizable(&mut sim)
    });
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
    assert!(t.restarts >= t.seeds, "too few crashes: {t:?}");
    assert!(
        t.elections >= 2 * GROUPS * t.seeds,
        "too few elections: {t:?}"
    );
    assert!(t.snapshots >= t.seeds, "too few snapshots: {t:?}");
    // Compaction needs groups that checkpoint (snapshots are on in half the seeds).
    assert!(
        t.compacted_runs * 3 >= t.seeds,
        "too few compactions: {t:?}"
    );
    assert!(
        t.failed_sync_runs * 4 >= t.seeds,
        "too few failed syncs: {t:?}"
    );
    assert!(t.parts > t.messages, "messages were not coalesced: {t:?}");
}

/// One seeded run: build, install the per-group invariants, run the workload through the
/// faults, check every group's liveness.
fn run(seed: u64, totals: &mut Totals) -> Result<Sim<H>, SimError> {
    let mut rng = DetRng::new(seed ^ 0x4752_4f55_5053_0000);
    let n: u64 = if rng.chance(0.5) { 3 } else { 5 };
    let processes: Vec<NodeId> = (1..=n).collect();
    let groups: Vec<GroupId> = (1..=GROUPS).collect();
    let mut sim = build(seed, &mut rng, n, GROUPS, false)?;
    for &g in &groups {
        install_group_invariants(&mut sim, g, members(g, n), u64::MAX);
    }
    let knobs = {
        let mut k = RandomFaults::new(FAULTS_START, FAULTS_UNTIL, 1.0);
        k.mean_gap = 60;
        k.duration_min = 20;
        k.duration_max = 600;
        k.allow_majority_down = rng.chance(0.2);
        k
    };
    let plan = FaultPlan::random(seed, &processes, &knobs);
    totals.restarts += plan
        .faults()
        .iter()
        .filter(|(_, f)| matches!(f, Fault::Crash(_)))
        .count() as u64;
    sim.schedule(plan);
    if rng.chance(0.5) {
        schedule_failed_syncs(&mut sim, &mut rng, n);
    }
    start_clients(&mut sim, n, &groups, REQUESTS_MAX);
    sim.run_until(FAULTS_UNTIL)?;
    for &g in &groups {
        await_group(&mut sim, g, n)?;
    }
    count(&sim, totals);
    Ok(sim)
}

/// Failed syncs (a full disk, a failing device): at seeded moments a process's sync fails,
/// only part of that batch (of all its groups) reaches the disk, nothing else of it leaves, and
/// the process stops until a restart; every process is restarted after the faults.
fn schedule_failed_syncs(sim: &mut Sim<H>, rng: &mut DetRng, n: u64) {
    for _ in 0..FAILED_SYNCS {
        let node = rng.range_inclusive(1, n);
        let at = rng.range_inclusive(FAULTS_START, FAULTS_UNTIL - 400);
        sim.schedule_fault(at, Fault::FailSync(node));
        sim.schedule_fault(at + rng.range_inclusive(50, 300), Fault::Restart(node));
    }
    // A failure fires at the process's next write, which may come after its planned restart:
    // everyone is up again soon after the faults stop, whatever happened.
    for node in 1..=n {
        sim.schedule_fault(FAULTS_UNTIL, Fault::Restart(node));
        sim.schedule_fault(FAULTS_UNTIL + 300, Fault::Restart(node));
    }
}

/// The per-seed Raft knobs every group of a run shares.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    seed: u64,
    pre_vote: bool,
    check_quorum: bool,
    lease_reads: bool,
    append_entries_max: usize,
    inflight_max: usize,
    parallel_append: bool,
    snapshot_log_entries_max: u64,
    heartbeat_aligned: bool,
}

/// Group `g`'s configuration on process `id`, among `members`.
fn group_config(k: &Knobs, id: NodeId, g: GroupId, members: Vec<NodeId>) -> <N as Node>::Config {
    let mut c = Config::new(id, members);
    c.seed = k.seed ^ g.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    c.election_timeout_ticks_min = 10;
    c.election_timeout_ticks_max = 20;
    c.heartbeat_interval_ticks = 2;
    c.pre_vote = k.pre_vote;
    c.check_quorum = k.check_quorum;
    c.lease_reads = k.lease_reads;
    c.append_entries_max = k.append_entries_max;
    c.inflight_max = k.inflight_max;
    c.parallel_append = k.parallel_append;
    // Groups started with the process share its heartbeat phase; one added later has its own.
    c.heartbeat_aligned = k.heartbeat_aligned;
    c.snapshot_log_entries_max = k.snapshot_log_entries_max;
    c.snapshot_chunk_bytes_max = SNAPSHOT_CHUNK_BYTES;
    c.into()
}

/// The spec of a group added at run time: its members, one byte each.
fn spec(members: &[NodeId]) -> Vec<u8> {
    members.iter().map(|&m| m as u8).collect()
}

/// The simulator: the network and disk drawn from `rng`, and every process's share of
/// groups `1..=groups`; with `dynamic`, the processes configure groups added at run time from
/// their [`spec`].
fn build(
    seed: u64,
    rng: &mut DetRng,
    n: u64,
    groups: u64,
    dynamic: bool,
) -> Result<Sim<H>, SimError> {
    let mut sc = SimConfig::new(seed, (1..=n).collect());
    sc.link.latency_min = 1;
    sc.link.latency_max = 2 + rng.range_inclusive(0, 10);
    sc.link.drop = [0.0, 0.02, 0.05, 0.1][rng.index(4).unwrap_or(0)];
    sc.link.duplicate = [0.0, 0.02, 0.05][rng.index(3).unwrap_or(0)];
    sc.sync_latency_min = 0;
    sc.sync_latency_max = [0, 3, 10][rng.index(3).unwrap_or(0)];
    sc.torn_tail = true;
    sc.request_timeout = Some(REQUEST_TIMEOUT);
    // Half the seeds hand the requests that reach a process close together over at once, as
    // the driver does: the host splits the batch by group. A stream of its own, so the other
    // draws of a seed stay the same.
    sc.request_batch_window = [0, 0, 3, 8][DetRng::new(seed ^ 0x4241_5443_4845_5321)
        .index(4)
        .unwrap_or(0)];
    sc.hash_contents = false;

    let pre_vote = rng.chance(0.8);
    let check_quorum = pre_vote || rng.chance(0.5);
    let k = Knobs {
        seed,
        pre_vote,
        check_quorum,
        lease_reads: check_quorum && rng.chance(0.3),
        append_entries_max: 1 + rng.index(8).unwrap_or(0),
        inflight_max: 1 + rng.index(4).unwrap_or(0),
        parallel_append: rng.chance(0.5),
        snapshot_log_entries_max: if rng.chance(0.5) { 6 } else { 0 },
        heartbeat_aligned: rng.chance(0.5),
    };
    let make = move |id: NodeId| {
        let hosted = (1..=groups)
            .filter(|&g| members(g, n).contains(&id))
            .map(|g| (g, group_config(&k, id, g, members(g, n))))
            .collect();
        let mut gc = GroupsConfig::new(id, hosted);
        // Compact often, so crashes meet compactions, torn or whole.
        gc.compact_records_min = 16;
        gc.compact_live_multiple = 2;
        if dynamic {
            gc = gc.with_configure(move |g, spec| {
                let members: Vec<NodeId> = spec.iter().map(|&b| NodeId::from(b)).collect();
                if !members.contains(&id) {
                    return Err(format!("process {id} is no member of {members:?}"));
                }
                Ok(group_config(&k, id, g, members))
            });
        }
        gc
    };
    Sim::new(sc, make)
}

/// Group `g`'s live members as the Raft invariants see them. A member is synced for the
/// group when none of the group's records wait for the process's sync.
fn live_of<'a>(view: &SimView<'a, H>, g: GroupId) -> Vec<Live<'a>> {
    view.nodes()
        .filter_map(|(id, host)| {
            let node = host?.group(g)?;
            let synced = !view
                .unsynced(id)
                .iter()
                .any(|p| p.record().group() == Some(g));
            Some(Live { id, node, synced })
        })
        .collect()
}

/// Checks every property of Figure 3 for group `g` after every step, and the durable-commit
/// property over its members' shares of the shared logs until `durable_until` (when the group
/// starts being removed: a member that removed it durably holds nothing of it any more, by
/// design).
fn install_group_invariants(sim: &mut Sim<H>, g: GroupId, voters: Vec<NodeId>, durable_until: u64) {
    let mut invariants = figure_3::<KvStore>();
    let voters: BTreeSet<NodeId> = voters.into_iter().collect();
    let membership = Membership {
        voters: voters.clone(),
        voters_outgoing: None,
        learners: BTreeSet::new(),
    };
    let mut checked: BTreeMap<NodeId, LogIndex> = BTreeMap::new();
    sim.add_invariant(&format!("raft group {g}"), move |view| {
        let nodes = live_of(view, g);
        for inv in invariants.iter_mut() {
            inv.check(&nodes)
                .map_err(|e| format!("group {g}: {}: {e}", inv.name()))?;
        }
        // Durable commit (thesis §10.2.1): a commit index a follower learned is held durably
        // by a majority of the group.
        if view.now() >= durable_until {
            return Ok(());
        }
        for n in &nodes {
            let commit = n.node.commit_index();
            if n.node.role() == Role::Leader || commit <= checked.get(&n.id).copied().unwrap_or(0) {
                continue;
            }
            checked.insert(n.id, commit);
            let Some(term) = n.node.entry_term(commit) else {
                continue;
            };
            let holders: BTreeSet<NodeId> = voters
                .iter()
                .copied()
                .filter(|&v| durable_holds(&group_records(view.records(v), g), commit, term))
                .collect();
            if !membership.quorum(&holders) {
                return Err(format!(
                    "group {g}: node {} learned commit {commit} (term {term}), durable only on \
                     {holders:?}",
                    n.id
                ));
            }
        }
        Ok(())
    });
}

/// Closed-loop clients, [`CLIENTS_PER_GROUP`] per group of `groups`: puts and reads on three
/// keys of their group, each following its group's leader hints, `requests_max` in all.
fn start_clients(sim: &mut Sim<H>, n: u64, groups: &[GroupId], requests_max: u64) {
    let groups = groups.to_vec();
    let mut hint: BTreeMap<u64, NodeId> = BTreeMap::new();
    let mut seq = 0u64;
    sim.closed_loop(
        ClosedLoop {
            clients: groups.len() as u64 * CLIENTS_PER_GROUP,
            start: 100,
            think_min: 0,
            think_max: 30,
            requests_max,
            until: FAULTS_UNTIL + 500,
            timeout: Some(REQUEST_TIMEOUT),
        },
        move |rng, ctx| {
            let g = groups[(ctx.client % groups.len() as u64) as usize];
            let m = members(g, n);
            let node = hint.entry(ctx.client).or_insert(m[0]);
            if let Some(last) = ctx.last {
                match last.outcome.response() {
                    Some(GroupResponse::Group(
                        _,
                        Response::Failed(
                            RaftError::NotLeader { leader: Some(l) }
                            | RaftError::LeadershipLost { leader: Some(l) },
                        ),
                    )) => *node = *l,
                    Some(GroupResponse::Group(_, Response::Applied { .. } | Response::Read(_))) => {
                    }
                    _ => *node = m[rng.index(m.len()).unwrap_or(0)],
                }
            }
            let key = format!("k{}", rng.index(3).unwrap_or(0));
            seq += 1;
            let req: Req = if rng.index(10).unwrap_or(0) < 4 {
                Request::Read(KvQuery::Get(key))
            } else {
                let value = format!("{}.{seq}", ctx.client);
                Request::Propose(KvCommand::Put { key, value })
            };
            Some((*node, GroupsRequest::Group(g, req)))
        },
    );
}

/// Group `g`'s leader, if a quorum of its members follows it in its term.
fn stable_leader(view: &SimView<'_, H>, g: GroupId) -> Option<NodeId> {
    let nodes = live_of(view, g);
    let leader = nodes
        .iter()
        .filter(|n| n.node.role() == Role::Leader)
        .max_by_key(|n| n.node.term())?;
    let following: BTreeSet<NodeId> = nodes
        .iter()
        .filter(|n| {
            n.id == leader.id
                || (n.node.term() == leader.node.term() && n.node.leader() == Some(leader.id))
        })
        .map(|n| n.id)
        .collect();
    leader
        .node
        .membership()
        .quorum(&following)
        .then_some(leader.id)
}

/// Liveness of group `g` once the faults are repaired: a stable leader, then a final put
/// applied, within [`LIVENESS_WITHIN`].
fn await_group(sim: &mut Sim<H>, g: GroupId, n: u64) -> Result<(), SimError> {
    let deadline = FAULTS_UNTIL + LIVENESS_WITHIN;
    loop {
        if !sim.run_until_cond(deadline, |v| stable_leader(v, g).is_some())? {
            return Err(sim.fail_now(format!("group {g} of {n}: no leader after the faults")));
        }
        let Some(leader) = stable_leader(&sim.view(), g) else {
            continue;
        };
        let put = Request::Propose(KvCommand::Put {
            key: "final".into(),
            value: "done".into(),
        });
        let id = sim.submit(sim.now(), leader, GroupsRequest::Group(g, put));
        let ended = sim.run_until_cond(deadline, |v| {
            v.op(id).is_some_and(|op| op.outcome != Outcome::Pending)
        })?;
        match sim.op(id).map(|op| &op.outcome) {
            Some(Outcome::Response(GroupResponse::Group(_, Response::Applied { .. }))) => {
                return Ok(())
            }
            _ if !ended => {
                return Err(sim.fail_now(format!("group {g}: the final put was not applied")))
            }
            _ => sim.run_for(10)?,
        }
    }
}

/// Adds what a finished run did to `totals`.
fn count(sim: &Sim<H>, totals: &mut Totals) {
    let answered = |f: &dyn Fn(&Response<KvOutput>) -> bool| {
        sim.history()
            .iter()
            .filter(|op| matches!(op.outcome.response(), Some(GroupResponse::Group(_, r)) if f(r)))
            .count() as u64
    };
    totals.applied += answered(&|r| matches!(r, Response::Applied { .. }));
    totals.reads += answered(&|r| matches!(r, Response::Read(_)));
    let mut terms: BTreeSet<(GroupId, Term)> = BTreeSet::new();
    for (_, node, (g, e)) in sim.events() {
        match e {
            Event::LeaderChanged {
                term,
                leader: Some(l),
            } if l == node => {
                terms.insert((*g, *term));
            }
            Event::Snapshot { .. } => totals.snapshots += 1,
            _ => {}
        }
    }
    totals.elections += terms.len() as u64;
    let view = sim.view();
    let compacted = view.ids().iter().any(|&id| {
        matches!(
            view.records(id).first(),
            Some(GroupsRecord::Compacted { .. })
        )
    });
    totals.compacted_runs += u64::from(compacted);
    totals.failed_sync_runs += u64::from(sim.failed_syncs() > 0);
    for (_, host) in view.nodes() {
        if let Some(h) = host {
            totals.messages += h.counters().messages_sent;
            totals.parts += h.counters().parts_sent;
        }
    }
}

/// Linearizability of every group's history, checked per key (keys are prefixed with their
/// group, so each group's keys are checked apart).
fn linearizable(sim: &mut Sim<H>) -> Result<(), SimError> {
    let history = History::from_sim(
        sim.history(),
        |req: &GroupsRequest<Req>| match req {
            GroupsRequest::Group(g, Request::Propose(KvCommand::Put { key, value })) => {
                Some(KvInput::Put {
                    key: format!("{g}/{key}"),
                    value: value.clone(),
                })
            }
            GroupsRequest::Group(g, Request::Read(KvQuery::Get(key))) => Some(KvInput::Get {
                key: format!("{g}/{key}"),
            }),
            _ => None,
        },
        |_req, resp: &GroupResponse<Response<KvOutput>>| match resp {
            GroupResponse::Group(_, Response::Applied { .. }) => Completion::Ok(CheckOutput::Done),
            GroupResponse::Group(_, Response::Read(KvOutput::Value(value))) => {
                Completion::Ok(CheckOutput::Value {
                    value: value.clone(),
                })
            }
            GroupResponse::Group(_, Response::Failed(RaftError::Indeterminate { .. })) => {
                Completion::Unknown
            }
            // The group was removed while it held the request: it may have been applied.
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

/// On a quiet network, every group elects a leader and the groups' messages share frames: the
/// processes send far fewer frames than their groups send messages. (Raft starts a leader's
/// heartbeat clock when it wins, so the groups a process leads fall into
/// `heartbeat_interval_ticks` phases, and one tick's frame carries about the leaders of one.)
#[test]
fn groups_on_a_quiet_network_share_frames() {
    const MANY: u64 = 24;
    let mut rng = DetRng::new(7);
    let mut sim = build(7, &mut rng, 3, MANY, false).unwrap();
    let link = sim.network_mut().default_link_mut();
    link.drop = 0.0;
    link.duplicate = 0.0;
    sim.run_until(2_000).unwrap();
    for g in 1..=MANY {
        assert!(
            stable_leader(&sim.view(), g).is_some(),
            "group {g} has no leader"
        );
    }
    let (mut parts, mut frames) = (0, 0);
    for (_, host) in sim.view().nodes() {
        let c = host.unwrap().counters();
        parts += c.parts_sent;
        frames += c.messages_sent;
    }
    eprintln!("{parts} messages in {frames} frames");
    assert!(parts >= 3 * frames, "{parts} messages in {frames} frames");
}
