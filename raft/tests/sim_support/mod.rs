//! Seeded fault simulation of a Raft cluster running the replicated KV store on the workspace
//! simulator ([`common::sim`]), shared by the `sim_*` test files. Each file installs the
//! invariant it is about ([`install`]); the simulator checks it after every step.
//!
//! # One run
//!
//! - **Cluster**: 3 or 5 voters (`1..=n`), plus, for membership runs, [`SPARES`] nodes outside
//!   the initial configuration (`n+1..`): they know the voters and wait as learners of nobody
//!   until a leader adds them. The last spare starts down and joins mid-run (the simulator's
//!   way to add a node: crashed before the first step, restarted later from no records).
//! - **Nodes**: seeded per run: pre-vote, check-quorum, lease reads, entries per message,
//!   AppendEntries in flight, and sometimes small caps on uncommitted bytes and pending
//!   proposals (so flow control refuses work under load).
//! - **Network and disk** ([`SimConfig`]): per-link jitter (which reorders), loss, duplication;
//!   group commit (a seeded sync latency gathers several steps into one sync); a crash keeps a
//!   seeded prefix of the unsynced records (a torn tail).
//! - **Faults** ([`FaultPlan::random`]) from [`FAULTS_START`] to [`Scenario::faults_until`]:
//!   crash-restarts, symmetric and one-way partitions, partial connectivity, loss and
//!   duplication bursts, latency spikes, a slow lossy link; on some seeds a majority may be down
//!   at once. At `faults_until` everything is repaired.
//! - **Nemesis**: every [`ADMIN_INTERVAL`] the current leader may be crashed or isolated for a
//!   while ([`LEADER_FAULT_CHANCE`]), so that elections are frequent.
//! - **Clients** ([`Sim::closed_loop`]): [`CLIENTS`] closed-loop clients propose `Put`/`Append`
//!   commands and linearizable reads, following "not the leader, try node N" hints.
//! - **Operator** (membership and transfer scenarios): every [`ADMIN_INTERVAL`] the current
//!   leader may be asked to add a learner, add or remove a node, change the voters by joint
//!   consensus, or hand its leadership to some node.
//! - **Liveness** once the faults are repaired: within [`Scenario::liveness_within`] a leader
//!   followed by a quorum of its configuration is elected and a final proposal is applied.
//!
//! Every failure is a [`SimError`] naming the seed (`replay: SIM_SEED=n`); `SIM_SEEDS=n` runs
//! more seeds than a file's default.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use common::check::kv::{check_kv, KvInput, KvOutput as CheckOutput, Verdict};
use common::check::{Completion, History};
use common::sim::{
    run_seeds, ClosedLoop, Fault, FaultPlan, Outcome, RandomFaults, Sim, SimConfig, SimError,
    SimView,
};
use common::{DetRng, Node, NodeId, Outbox};
use raft::kv::{KvCommand, KvOutput, KvQuery, KvStore};
use raft::message::Membership;
use raft::{
    Config, Entry, Event, LogIndex, Message, Payload, RaftError, RaftNode, Record, Request,
    Response, Role, StateMachine, Term,
};

/// The node under test.
pub type N = RaftNode<KvStore>;
/// Its client requests.
pub type Req = Request<KvCommand, KvQuery>;
/// Its answers.
pub type Resp = Response<KvOutput>;

/// Faults start once a first leader had time to be elected.
pub const FAULTS_START: u64 = 200;
/// Default of [`Scenario::faults_until`]: 300 ticks of faults per node.
pub const FAULTS_UNTIL: u64 = 3_000;
/// Default of [`Scenario::liveness_within`].
pub const LIVENESS_WITHIN: u64 = 3_000;
/// Closed-loop clients per run.
pub const CLIENTS: u64 = 3;
/// Requests per run at most, all clients together.
pub const REQUESTS_MAX: u64 = 200;
/// A client gives up on a request after this long (virtual time).
pub const REQUEST_TIMEOUT: u64 = 300;
/// How often the operator may ask the leader for a membership change or a transfer.
pub const ADMIN_INTERVAL: u64 = 100;
/// The chance, every [`ADMIN_INTERVAL`], that the nemesis crashes or isolates the leader.
pub const LEADER_FAULT_CHANCE: f64 = 0.25;
/// A transfer counts as completed when its target leads within this long of the TimeoutNow.
pub const TRANSFER_WITHIN: u64 = 300;
/// Nodes outside the initial configuration in membership runs.
pub const SPARES: u64 = 2;
/// Bytes per InstallSnapshot chunk: small, so every snapshot travels in several chunks.
pub const SNAPSHOT_CHUNK_BYTES: usize = 16;

/// What a run exercises beyond the base faults and workload.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Snapshot when the log holds more than this many applied entries (0: never).
    pub snapshot_log_entries_max: u64,
    /// The operator asks leaders to hand leadership over (thesis §3.10).
    pub transfers: bool,
    /// Spare nodes exist and the operator changes the membership (§6, thesis ch. 4).
    pub membership: bool,
    /// Proposals include `Append` (otherwise only `Put`, which the linearizability checker
    /// models).
    pub appends: bool,
    /// Faults stop (and everything is repaired) at this virtual time.
    pub faults_until: u64,
    /// After `faults_until`, a leader must be elected and a proposal applied within this long.
    pub liveness_within: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            snapshot_log_entries_max: 0,
            transfers: false,
            membership: false,
            appends: true,
            faults_until: FAULTS_UNTIL,
            liveness_within: LIVENESS_WITHIN,
        }
    }
}

// ----- invariants -----

/// One live node as the invariants see it after a step.
pub struct Live<'a> {
    /// Its id.
    pub id: NodeId,
    /// Its state.
    pub node: &'a N,
    /// Whether every record it asked to persist is synced. Until then its in-memory state may
    /// rest on records a crash loses (a leader alone in its configuration commits its own
    /// unsynced entries); nothing of that state has left the node yet (the Outbox rule), so
    /// the commit and apply checks only look at synced nodes.
    pub synced: bool,
}

/// The live nodes of a simulation, in id order.
pub fn live<'a>(view: &SimView<'a, N>) -> Vec<Live<'a>> {
    view.nodes()
        .filter_map(|(id, node)| {
            node.map(|node| Live {
                id,
                node,
                synced: view.unsynced(id).is_empty(),
            })
        })
        .collect()
}

/// A safety property checked after every step.
pub trait Invariant: 'static {
    /// Its name in failure messages (with the paper's section).
    fn name(&self) -> &'static str;
    /// Checks the live nodes; `Err` explains the violation.
    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String>;
}

/// Installs `invariant` in `sim`: checked after every step from now on.
pub fn install<I: Invariant>(sim: &mut Sim<N>, mut invariant: I) {
    let name = invariant.name();
    sim.add_invariant(name, move |view| invariant.check(&live(view)));
}

/// Installs every property of the paper's Figure 3 (§5.2–§5.4.3).
pub fn install_all(sim: &mut Sim<N>) {
    install(sim, ElectionSafety::default());
    install(sim, LeaderAppendOnly::default());
    install(sim, LogMatching::default());
    install(sim, LeaderCompleteness::default());
    install(sim, StateMachineSafety::default());
}

/// Forgets what a cache knows of nodes that are down, so a restarted node is read afresh.
fn forget_down<V>(cache: &mut BTreeMap<NodeId, V>, nodes: &[Live<'_>]) {
    if cache.len() != nodes.len() || nodes.iter().any(|n| !cache.contains_key(&n.id)) {
        cache.retain(|id, _| nodes.iter().any(|n| n.id == *id));
    }
}

/// Election safety (§5.2): at most one leader can be elected in a given term. The leader of
/// every term ever seen is remembered, across crashes.
#[derive(Default)]
pub struct ElectionSafety {
    /// The leader seen in each term.
    pub leaders: BTreeMap<Term, NodeId>,
}

impl Invariant for ElectionSafety {
    fn name(&self) -> &'static str {
        "election safety (§5.2)"
    }

    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String> {
        for n in nodes.iter().filter(|n| n.node.role() == Role::Leader) {
            let term = n.node.term();
            let first = *self.leaders.entry(term).or_insert(n.id);
            if first != n.id {
                return Err(format!(
                    "two leaders in term {term}: node {first} and node {}",
                    n.id
                ));
            }
        }
        Ok(())
    }
}

/// Leader append-only (§5.3, Figure 3): a leader never overwrites or deletes entries in its
/// log; it only appends new entries. While a node leads a term, every entry it held at an
/// earlier step must still be there with the same term (compaction into a snapshot aside).
#[derive(Default)]
pub struct LeaderAppendOnly {
    /// Per node leading a term: the term, its snapshot index and the terms of the entries after
    /// it, as last read.
    leading: BTreeMap<NodeId, (Term, LogIndex, Vec<Term>)>,
}

impl Invariant for LeaderAppendOnly {
    fn name(&self) -> &'static str {
        "leader append-only (§5.3)"
    }

    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String> {
        forget_down(&mut self.leading, nodes);
        for n in nodes {
            if n.node.role() != Role::Leader {
                self.leading.remove(&n.id);
                continue;
            }
            let term = n.node.term();
            if let Some((t, base, terms)) = self.leading.get(&n.id) {
                if *t == term {
                    let first = n.node.first_log_index();
                    for (k, &old) in terms.iter().enumerate() {
                        let index = base + 1 + k as u64;
                        let now = n.node.entry_term(index);
                        if index >= first && now != Some(old) {
                            return Err(format!(
                                "leader {} of term {term} replaced or removed entry {index} \
                                 (term {old}, now {now:?})",
                                n.id
                            ));
                        }
                    }
                }
            }
            let base = n.node.first_log_index() - 1;
            let terms = (base + 1..=n.node.last_log_index())
                .map(|i| n.node.entry_term(i).unwrap_or(0))
                .collect();
            self.leading.insert(n.id, (term, base, terms));
        }
        Ok(())
    }
}

/// Log matching (§5.3): if two logs contain an entry with the same index and term, the logs are
/// identical in all entries up through that index.
///
/// Checked in the inductive form the paper proves it by: every entry with a given index and
/// term, in any log at any time, carries the same payload and follows an entry of the same
/// term. Two logs that agree at `(index, term)` therefore agree on the entry before it, and so
/// on down to the older of their snapshots. Each step reads the entries whose index or term
/// changed since the node was last read (a restarted node is read in full).
#[derive(Default)]
pub struct LogMatching {
    /// `(index, term)` → the term of the entry before it and the payload, as first seen.
    seen: HashMap<(LogIndex, Term), (Term, Payload<KvCommand>, NodeId)>,
    /// Per node: the snapshot index and the terms of the entries after it, as last read.
    read: BTreeMap<NodeId, (LogIndex, Vec<Term>)>,
}

impl Invariant for LogMatching {
    fn name(&self) -> &'static str {
        "log matching (§5.3)"
    }

    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String> {
        forget_down(&mut self.read, nodes);
        for n in nodes {
            let base = n.node.first_log_index() - 1;
            let last = n.node.last_log_index();
            let (old_base, old_terms) = self.read.entry(n.id).or_insert((base, Vec::new()));
            if *old_base != base {
                old_terms.clear();
                *old_base = base;
            }
            // The first index whose term differs from what was read last time.
            let mut changed = base + 1;
            for (k, &t) in old_terms.iter().enumerate() {
                let index = base + 1 + k as u64;
                if index > last || n.node.entry_term(index) != Some(t) {
                    break;
                }
                changed = index + 1;
            }
            old_terms.truncate((changed - base - 1) as usize);
            for index in changed..=last {
                let Some(entry) = n.node.entry(index) else {
                    return Err(format!("node {}: entry {index} missing from its log", n.id));
                };
                let prev = n.node.entry_term(index - 1).unwrap_or(0);
                let key = (index, entry.term);
                match self.seen.get(&key) {
                    Some((p, payload, by)) if *p != prev || *payload != entry.payload => {
                        return Err(format!(
                            "entry ({index}, term {}) differs between logs: node {by} holds \
                             {payload:?} after term {p}, node {} holds {:?} after term {prev}",
                            entry.term, n.id, entry.payload
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.seen.insert(key, (prev, entry.payload.clone(), n.id));
                    }
                }
                old_terms.push(entry.term);
            }
        }
        Ok(())
    }
}

/// Leader completeness (§5.4): if a log entry is committed in a given term, that entry is
/// present in the logs of the leaders of all higher terms. Every entry a synced node holds at
/// or below its commit index counts as committed from then on; every leader must hold each
/// committed entry of its term or earlier that its log has not compacted.
#[derive(Default)]
pub struct LeaderCompleteness {
    /// Committed index → (term, the node it was first seen committed on).
    pub committed: BTreeMap<LogIndex, (Term, NodeId)>,
    /// Per node: the commit index up to which its entries were recorded.
    recorded: BTreeMap<NodeId, LogIndex>,
}

impl Invariant for LeaderCompleteness {
    fn name(&self) -> &'static str {
        "leader completeness (§5.4)"
    }

    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String> {
        forget_down(&mut self.recorded, nodes);
        for n in nodes.iter().filter(|n| n.synced) {
            let commit = n.node.commit_index();
            let done = self.recorded.entry(n.id).or_insert(0);
            // The snapshot's last entry is known by its term even though it is compacted.
            let from = (*done + 1).max(n.node.first_log_index().saturating_sub(1).max(1));
            for index in from..=commit {
                let Some(term) = n.node.entry_term(index) else {
                    continue;
                };
                let (t, by) = *self.committed.entry(index).or_insert((term, n.id));
                if t != term {
                    return Err(format!(
                        "entry {index} committed with term {t} on node {by} and term {term} \
                         on node {}",
                        n.id
                    ));
                }
            }
            *done = commit;
        }
        for n in nodes.iter().filter(|n| n.node.role() == Role::Leader) {
            let term = n.node.term();
            let from = n.node.first_log_index().saturating_sub(1);
            for (&index, &(t, by)) in self.committed.range(from..) {
                if t <= term && n.node.entry_term(index) != Some(t) {
                    return Err(format!(
                        "leader {} of term {term} lacks entry {index} of term {t}, committed \
                         on node {by} (it holds term {:?} there)",
                        n.id,
                        n.node.entry_term(index)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// State machine safety (§5.4.3): if a server has applied a log entry at a given index to its
/// state machine, no other server will ever apply a different log entry for the same index.
/// Checked on both what is applied (the entry at each applied index, while the log still holds
/// it) and what it produces (a digest of the state machine after each applied index, which
/// also covers states installed from snapshots).
#[derive(Default)]
pub struct StateMachineSafety {
    /// Applied index → the entry's term and payload, and the node first seen applying it.
    applied: HashMap<LogIndex, (Term, Payload<KvCommand>, NodeId)>,
    /// Applied index → digest of the state after it, and the node first seen there.
    states: HashMap<LogIndex, (u64, NodeId)>,
    /// Per node: the applied index last checked.
    checked: BTreeMap<NodeId, LogIndex>,
}

impl StateMachineSafety {
    /// Records that `node` reached `index` with a state machine whose digest is `digest`.
    pub fn observe_state(
        &mut self,
        node: NodeId,
        index: LogIndex,
        digest: u64,
    ) -> Result<(), String> {
        let (d, by) = *self.states.entry(index).or_insert((digest, node));
        if d != digest {
            return Err(format!(
                "nodes {by} and {node} applied up to {index} but hold different states"
            ));
        }
        Ok(())
    }
}

/// A digest of a state machine's state.
pub fn state_digest(s: &KvStore) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut bytes = Vec::new();
    s.snapshot(&mut bytes).expect("an in-memory snapshot");
    bytes.hash(&mut h);
    h.finish()
}

impl Invariant for StateMachineSafety {
    fn name(&self) -> &'static str {
        "state machine safety (§5.4.3)"
    }

    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String> {
        forget_down(&mut self.checked, nodes);
        for n in nodes.iter().filter(|n| n.synced) {
            let applied = n.node.applied_index();
            let last = self.checked.get(&n.id).copied();
            if last == Some(applied) {
                continue;
            }
            let from = last.map_or(1, |l| l + 1).max(n.node.first_log_index());
            for index in from..=applied {
                let Some(e) = n.node.entry(index) else {
                    continue;
                };
                let (t, p, by) = self
                    .applied
                    .entry(index)
                    .or_insert_with(|| (e.term, e.payload.clone(), n.id));
                if (*t, &*p) != (e.term, &e.payload) {
                    return Err(format!(
                        "node {} applied {:?} of term {} at {index}; node {by} applied {p:?} of \
                         term {t}",
                        n.id, e.payload, e.term
                    ));
                }
            }
            self.observe_state(n.id, applied, state_digest(n.node.state_machine()))?;
            self.checked.insert(n.id, applied);
        }
        Ok(())
    }
}

// ----- the run -----

/// What a run did, to show the runs are not vacuous.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    /// Proposals answered `Applied` before the faults stopped.
    pub applied_during_faults: u64,
    /// Reads answered.
    pub reads: u64,
    /// Proposals refused by flow control ([`RaftError::Busy`]).
    pub busy: u64,
    /// Leadership transfers started.
    pub transfers: u64,
    /// Transfers whose target then led (it announced itself leader within
    /// [`TRANSFER_WITHIN`] of the TimeoutNow).
    pub transfers_completed: u64,
    /// Membership changes committed.
    pub membership_changes: u64,
    /// Of which: learners added.
    pub learners_added: u64,
    /// Of which: single-server additions of voters (new nodes or promoted learners).
    pub voters_added: u64,
    /// Of which: single-server removals.
    pub nodes_removed: u64,
    /// Of which: the leader removed itself.
    pub leaders_removed: u64,
    /// Of which: voter sets replaced through joint consensus.
    pub joint_changes: u64,
    /// Spares (nodes outside the initial configuration) that ended as members of the final
    /// leader's configuration with entries applied.
    pub spares_joined: u64,
    /// Snapshots taken or installed (events).
    pub snapshots: u64,
    /// Snapshots installed by InstallSnapshot (a node's log jumped past its end).
    pub installs: u64,
    /// Terms in which a leader was elected.
    pub elections: u64,
    /// Crashes and restarts.
    pub restarts: u64,
    /// Simulation steps.
    pub steps: u64,
}

/// The totals over a file's seeds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Seeds run.
    pub seeds: u64,
    /// Runs with at least 5 proposals applied during the faults.
    pub busy_runs: u64,
    /// Sums over the runs.
    pub sum: RunStats,
}

impl Totals {
    fn add(&mut self, s: &RunStats) {
        if s.applied_during_faults >= 5 {
            self.busy_runs += 1;
        }
        let t = &mut self.sum;
        t.applied_during_faults += s.applied_during_faults;
        t.reads += s.reads;
        t.busy += s.busy;
        t.transfers += s.transfers;
        t.transfers_completed += s.transfers_completed;
        t.membership_changes += s.membership_changes;
        t.learners_added += s.learners_added;
        t.voters_added += s.voters_added;
        t.nodes_removed += s.nodes_removed;
        t.leaders_removed += s.leaders_removed;
        t.joint_changes += s.joint_changes;
        t.spares_joined += s.spares_joined;
        t.snapshots += s.snapshots;
        t.installs += s.installs;
        t.elections += s.elections;
        t.restarts += s.restarts;
        t.steps += s.steps;
    }

    /// Whether enough seeds ran to judge the totals (a replay of one seed proves nothing about
    /// the others).
    pub fn is_sweep(&self) -> bool {
        self.seeds >= 20
    }

    /// The faults must leave room for work, or the invariants hold vacuously: most runs
    /// commit proposals while the faults go on, and crashes happen.
    pub fn assert_busy(&self) {
        if !self.is_sweep() {
            return;
        }
        assert!(
            self.busy_runs * 2 >= self.seeds,
            "only {} of {} runs applied 5 proposals during the faults: {self:?}",
            self.busy_runs,
            self.seeds
        );
        assert!(self.sum.restarts >= self.seeds, "too few crashes: {self:?}");
        assert!(
            self.sum.elections >= 2 * self.seeds,
            "too few elections: {self:?}"
        );
        assert!(self.sum.reads >= self.seeds, "too few reads: {self:?}");
    }
}

/// The leader of the highest term among live nodes, if any.
pub fn current_leader(view: &SimView<'_, N>) -> Option<NodeId> {
    view.nodes()
        .filter_map(|(id, n)| n.map(|n| (id, n)))
        .filter(|(_, n)| n.role() == Role::Leader)
        .max_by_key(|(_, n)| n.term())
        .map(|(id, _)| id)
}

/// The current leader, if a quorum of its configuration's voters (itself included) follows it
/// in its term.
pub fn stable_leader(view: &SimView<'_, N>) -> Option<NodeId> {
    let l = current_leader(view)?;
    let leader = view.node(l)?;
    let following: BTreeSet<NodeId> = view
        .nodes()
        .filter_map(|(id, n)| n.map(|n| (id, n)))
        .filter(|(id, n)| *id == l || (n.term() == leader.term() && n.leader() == Some(l)))
        .map(|(id, _)| id)
        .collect();
    leader.membership().quorum(&following).then_some(l)
}

/// Runs seed `seed` of `scenario`: builds the cluster, lets `install` add invariants, drives
/// the workload through the faults, then checks liveness. Returns the simulation (for checks
/// on the history) and what the run did.
pub fn run(
    seed: u64,
    scenario: &Scenario,
    install: &dyn Fn(&mut Sim<N>),
) -> Result<(Sim<N>, RunStats), SimError> {
    let mut rng = DetRng::new(seed ^ 0x5241_4654_5349_4d00);
    let n: u64 = if rng.chance(0.5) { 3 } else { 5 };
    let voters: Vec<NodeId> = (1..=n).collect();
    let spares: Vec<NodeId> = if scenario.membership {
        (n + 1..=n + SPARES).collect()
    } else {
        Vec::new()
    };
    let all: Vec<NodeId> = voters.iter().chain(&spares).copied().collect();

    let mut sc = SimConfig::new(seed, all.clone());
    sc.link.latency_min = 1;
    sc.link.latency_max = 2 + rng.range_inclusive(0, 10);
    sc.link.drop = [0.0, 0.02, 0.05, 0.1][rng.index(4).unwrap_or(0)];
    sc.link.duplicate = [0.0, 0.02, 0.05][rng.index(3).unwrap_or(0)];
    sc.sync_latency_min = 0;
    sc.sync_latency_max = [0, 3, 10][rng.index(3).unwrap_or(0)];
    sc.torn_tail = true;
    sc.request_timeout = Some(REQUEST_TIMEOUT);
    // The trace hash is not compared here; hashing every message's bytes would cost more than
    // the protocol itself.
    sc.hash_contents = false;

    let pre_vote = rng.chance(0.8);
    let check_quorum = pre_vote || rng.chance(0.5);
    let lease_reads = check_quorum && rng.chance(0.3);
    let append_entries_max = 1 + rng.index(8).unwrap_or(0);
    let inflight_max = 1 + rng.index(4).unwrap_or(0);
    let small_caps = rng.chance(0.2);
    let snapshot_log_entries_max = scenario.snapshot_log_entries_max;
    // Half the seeds let the leader send AppendEntries before its own write is durable
    // (§10.2.1). Drawn from a stream of its own, so every other draw of a seed stays the same.
    let parallel_append = DetRng::new(seed ^ 0x5041_5241_4c4c_454c).chance(0.5);
    let (cluster, joiners) = (voters.clone(), spares.clone());
    let make = move |id: NodeId| {
        let mut c = Config::new(id, cluster.clone());
        if joiners.contains(&id) {
            // Outside the initial configuration: a learner in its own eyes until a leader's
            // configuration names it.
            c.learners = vec![id];
        }
        c.known_nodes = cluster.iter().chain(&joiners).copied().collect();
        c.seed = seed;
        c.election_timeout_ticks_min = 10;
        c.election_timeout_ticks_max = 20;
        c.heartbeat_interval_ticks = 2;
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
        c.lease_reads = lease_reads;
        c.append_entries_max = append_entries_max;
        c.inflight_max = inflight_max;
        c.parallel_append = parallel_append;
        if small_caps {
            // About three commands of the workload, and two proposals per node.
            c.uncommitted_bytes_max = 48;
            c.proposals_pending_max = 2;
        }
        c.snapshot_log_entries_max = snapshot_log_entries_max;
        c.snapshot_chunk_bytes_max = SNAPSHOT_CHUNK_BYTES;
        c
    };
    let mut sim: Sim<N> = Sim::new(sc, move |id| make(id).into())?;
    install(&mut sim);
    if !scenario.membership {
        install_durable_commit(&mut sim, voters.iter().copied().collect());
    }
    let installs = Rc::new(RefCell::new(0u64));
    sim.add_invariant(
        "observer: snapshot installs",
        count_installs(installs.clone()),
    );

    // A spare that joins mid-run: down from the start, restarted from no records later.
    if let Some(&late) = spares.last() {
        sim.crash(late)?;
        let at = rng.range_inclusive(FAULTS_START, scenario.faults_until);
        sim.schedule_fault(at, Fault::Restart(late));
    }

    let mut knobs = RandomFaults::new(FAULTS_START, scenario.faults_until, 1.0);
    knobs.mean_gap = 60;
    knobs.duration_min = 20;
    knobs.duration_max = 600;
    knobs.allow_majority_down = rng.chance(0.2);
    let plan = FaultPlan::random(seed, &all, &knobs);
    let mut restarts = plan
        .faults()
        .iter()
        .filter(|(_, f)| matches!(f, Fault::Crash(_)))
        .count() as u64;
    sim.schedule(plan);

    let appends = scenario.appends;
    let mut hint: BTreeMap<u64, NodeId> = BTreeMap::new();
    let mut seq = 0u64;
    sim.closed_loop(
        ClosedLoop {
            clients: CLIENTS,
            start: 100,
            think_min: 0,
            think_max: 30,
            requests_max: REQUESTS_MAX,
            until: scenario.faults_until + 500,
            timeout: Some(REQUEST_TIMEOUT),
        },
        move |rng, ctx| {
            // Follow the leader hint of the client's last answer; otherwise try another node.
            let node = hint.entry(ctx.client).or_insert(1);
            if let Some(last) = ctx.last {
                match last.outcome.response() {
                    Some(Response::Failed(
                        RaftError::NotLeader { leader: Some(l) }
                        | RaftError::LeadershipLost { leader: Some(l) },
                    )) => *node = *l,
                    Some(Response::Applied { .. } | Response::Read(_)) => {}
                    _ => *node = ctx.nodes[rng.index(ctx.nodes.len()).unwrap_or(0)],
                }
            }
            let key = format!("k{}", rng.index(3).unwrap_or(0));
            seq += 1;
            let value = format!("{}.{seq},", ctx.client);
            let req = match rng.index(10).unwrap_or(0) {
                0..=3 => Request::Read(KvQuery::Get(key)),
                4..=6 if appends => Request::Propose(KvCommand::Append { key, value }),
                _ => Request::Propose(KvCommand::Put { key, value }),
            };
            Some((*node, req))
        },
    );

    // Every ADMIN_INTERVAL: the nemesis may take the current leader down or cut it off (so
    // elections happen often, not only when a random fault happens to hit the leader), and
    // the operator may ask it for a membership change or a transfer.
    let mut t = FAULTS_START;
    while t < scenario.faults_until {
        sim.run_until(t)?;
        t += ADMIN_INTERVAL;
        let Some(leader) = current_leader(&sim.view()) else {
            continue;
        };
        if rng.chance(LEADER_FAULT_CHANCE) {
            let until = (sim.now() + rng.range_inclusive(50, 400)).min(scenario.faults_until);
            if rng.chance(0.5) {
                sim.crash(leader)?;
                restarts += 1;
                sim.schedule_fault(until, Fault::Restart(leader));
            } else {
                sim.apply(Fault::Isolate(leader))?;
                // Heal also ends the random plan's cuts early; its later faults still come.
                sim.schedule_fault(until, Fault::Heal);
            }
            continue;
        }
        if !(scenario.membership || scenario.transfers) || !rng.chance(0.5) {
            continue;
        }
        let target = all[rng.index(all.len()).unwrap_or(0)];
        let transfer = scenario.transfers && (!scenario.membership || rng.chance(0.3));
        let req: Req = if transfer {
            Request::TransferLeadership(target)
        } else {
            match rng.index(4).unwrap_or(0) {
                0 => Request::AddLearner(target),
                1 => Request::AddVoter(target),
                2 => Request::RemoveNode(target),
                _ => {
                    let mut new: BTreeSet<NodeId> =
                        all.iter().copied().filter(|_| rng.chance(0.5)).collect();
                    new.insert(target);
                    Request::ChangeVoters(new)
                }
            }
        };
        sim.submit(sim.now(), leader, req);
    }
    sim.run_until(scenario.faults_until)?;
    let applied_during_faults = count(&sim, |r| matches!(r, Response::Applied { .. }));

    // Liveness once everything is repaired: a leader, then a final proposal applied.
    let deadline = scenario.faults_until + scenario.liveness_within;
    let mut last_refusal = None;
    loop {
        if !sim.run_until_cond(deadline, |v| stable_leader(v).is_some())? {
            let state = describe(&sim);
            return Err(sim.fail_now(format!(
                "no leader within {} after the faults stopped; last refusal {last_refusal:?}; \
                 {state}",
                scenario.liveness_within
            )));
        }
        let Some(leader) = stable_leader(&sim.view()) else {
            continue;
        };
        let final_put = Request::Propose(KvCommand::Put {
            key: "final".into(),
            value: "done".into(),
        });
        let id = sim.submit(sim.now(), leader, final_put);
        let ended = sim.run_until_cond(deadline, |v| {
            v.op(id).is_some_and(|op| op.outcome != Outcome::Pending)
        })?;
        let outcome = sim.op(id).map(|op| op.outcome.clone());
        match outcome {
            Some(Outcome::Response(Response::Applied { .. })) => break,
            _ if !ended => {
                let state = describe(&sim);
                return Err(sim.fail_now(format!(
                    "the final proposal was not applied within {} after the faults stopped; \
                     {state}",
                    scenario.liveness_within
                )));
            }
            other => {
                last_refusal = other;
                sim.run_for(10)?;
            }
        }
    }

    let changed = |f: &dyn Fn(&Req, NodeId) -> bool| {
        sim.history()
            .iter()
            .filter(|op| {
                matches!(
                    op.outcome,
                    Outcome::Response(Response::MembershipChanged { .. })
                ) && f(&op.request, op.node)
            })
            .count() as u64
    };
    let final_leader = current_leader(&sim.view()).and_then(|l| sim.node(l));
    let spares_joined = spares
        .iter()
        .filter(|&&s| {
            final_leader.is_some_and(|l| l.membership().is_member(s))
                && sim.node(s).is_some_and(|n| n.applied_index() > 0)
        })
        .count() as u64;
    let stats = RunStats {
        transfers_completed: transfers_completed(&sim),
        learners_added: changed(&|r, _| matches!(r, Request::AddLearner(_))),
        voters_added: changed(&|r, _| matches!(r, Request::AddVoter(_))),
        nodes_removed: changed(&|r, _| matches!(r, Request::RemoveNode(_))),
        leaders_removed: changed(&|r, at| *r == Request::RemoveNode(at)),
        joint_changes: changed(&|r, _| matches!(r, Request::ChangeVoters(_))),
        spares_joined,
        applied_during_faults,
        reads: count(&sim, |r| matches!(r, Response::Read(_))),
        busy: count(&sim, |r| matches!(r, Response::Failed(RaftError::Busy(_)))),
        transfers: count(&sim, |r| matches!(r, Response::TransferStarted)),
        membership_changes: count(&sim, |r| matches!(r, Response::MembershipChanged { .. })),
        snapshots: sim
            .events()
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::Snapshot { .. }))
            .count() as u64,
        installs: *installs.borrow(),
        elections: sim
            .events()
            .iter()
            .filter_map(|(_, node, e)| match e {
                Event::LeaderChanged {
                    term,
                    leader: Some(l),
                } if l == node => Some(*term),
                _ => None,
            })
            .collect::<BTreeSet<Term>>()
            .len() as u64,
        restarts,
        steps: sim.steps(),
    };
    Ok((sim, stats))
}

/// Transfers whose target announced itself leader within [`TRANSFER_WITHIN`] of the answer.
fn transfers_completed(sim: &Sim<N>) -> u64 {
    sim.history()
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Response(Response::TransferStarted)))
        .filter(|op| {
            let (Request::TransferLeadership(target), Some(at)) = (&op.request, op.completed_at)
            else {
                return false;
            };
            sim.events().iter().any(|(time, node, e)| {
                node == target
                    && (at..=at + TRANSFER_WITHIN).contains(time)
                    && matches!(e, Event::LeaderChanged { leader: Some(l), .. } if l == target)
            })
        })
        .count() as u64
}

/// Counts the answers of the history that match `f`.
fn count(sim: &Sim<N>, f: impl Fn(&Resp) -> bool) -> u64 {
    sim.history()
        .iter()
        .filter(|op| op.outcome.response().is_some_and(&f))
        .count() as u64
}

/// Every live node's metrics, for failure messages.
fn describe(sim: &Sim<N>) -> String {
    let view = sim.view();
    let mut s = String::new();
    for (id, n) in view.nodes() {
        match n {
            Some(n) => s.push_str(&format!(
                "[node {id}: {:?} term {} leader {:?} commit {} log {}..={} {:?}] ",
                n.role(),
                n.term(),
                n.leader(),
                n.commit_index(),
                n.first_log_index(),
                n.last_log_index(),
                n.membership()
            )),
            None => s.push_str(&format!("[node {id}: down] ")),
        }
    }
    s
}

/// An observer (never fails) counting snapshots installed through InstallSnapshot: a node's
/// snapshot index jumps past the last entry it held at the previous step.
fn count_installs(installs: Rc<RefCell<u64>>) -> impl FnMut(&SimView<'_, N>) -> Result<(), String> {
    let mut last: BTreeMap<NodeId, LogIndex> = BTreeMap::new();
    move |view| {
        let nodes = live(view);
        forget_down(&mut last, &nodes);
        for n in &nodes {
            let base = n.node.first_log_index() - 1;
            if let Some(&prev) = last.get(&n.id) {
                if base > prev {
                    *installs.borrow_mut() += 1;
                }
            }
            last.insert(n.id, n.node.last_log_index());
        }
        Ok(())
    }
}

/// Runs the seeds chosen by the environment (`SIM_SEED` replays one, `SIM_SEEDS` sets how
/// many; `default` otherwise) through [`run`], then `after` on each finished simulation.
/// Panics with the first failure, which names the seed.
pub fn check_seeds_then(
    default: u64,
    scenario: &Scenario,
    install: impl Fn(&mut Sim<N>),
    mut after: impl FnMut(&mut Sim<N>) -> Result<(), SimError>,
) -> Totals {
    let mut totals = Totals::default();
    let result = run_seeds(default, |seed| {
        let (mut sim, stats) = run(seed, scenario, &install)?;
        after(&mut sim)?;
        totals.add(&stats);
        Ok(())
    });
    match result {
        Ok(report) => totals.seeds = report.seeds,
        Err(e) => panic!("{e}"),
    }
    // Shown with `--nocapture`: what the seeds exercised.
    eprintln!("{totals:?}");
    totals
}

/// [`check_seeds_then`] without a final check.
pub fn check_seeds(default: u64, scenario: &Scenario, install: impl Fn(&mut Sim<N>)) -> Totals {
    check_seeds_then(default, scenario, install, |_| Ok(()))
}

/// Whether a node's durable records (as recovery would read them) hold entry `index` of
/// `term`; an index inside their snapshot counts as held (only committed entries are
/// compacted, and those never change).
fn durable_holds(records: &[Record<KvCommand>], index: LogIndex, term: Term) -> bool {
    let mut held = None;
    for record in records {
        match record {
            Record::HardState { .. } => {}
            Record::Entries(entries) => {
                if let Some(e) = entries.iter().find(|e| e.index == index) {
                    held = Some(e.term);
                }
            }
            Record::Truncate { from } => {
                if *from <= index {
                    held = None;
                }
            }
            Record::Snapshot { meta, entries, .. } => {
                held = if meta.index >= index {
                    // Compacted: only committed entries are, and they never change.
                    Some(term)
                } else {
                    entries.iter().find(|e| e.index == index).map(|e| e.term)
                };
            }
        }
    }
    held == Some(term)
}

/// The durable-commit property behind the Outbox rule and the leader's parallel append
/// (thesis §10.2.1): whatever commit index a node learned from a leader is held, *durably*, by
/// a majority of `voters`. A leader that counted its own unsynced entries and sent the result
/// early would break it at the first follower that learns such a commit index, crash or not.
/// Checked when a non-leader's commit index grows; for a fixed set of voters (no membership
/// changes, whose majorities move with the log).
pub fn install_durable_commit(sim: &mut Sim<N>, voters: BTreeSet<NodeId>) {
    let membership = Membership {
        voters: voters.clone(),
        voters_outgoing: None,
        learners: BTreeSet::new(),
    };
    let mut checked: BTreeMap<NodeId, LogIndex> = BTreeMap::new();
    sim.add_invariant("durable commit (§10.2.1)", move |view| {
        for (id, node) in view.nodes() {
            let Some(node) = node else { continue };
            let commit = node.commit_index();
            if node.role() == Role::Leader || commit <= checked.get(&id).copied().unwrap_or(0) {
                continue;
            }
            checked.insert(id, commit);
            // Compacted away: committed long since.
            let Some(term) = node.entry_term(commit) else {
                continue;
            };
            let holders: BTreeSet<NodeId> = voters
                .iter()
                .copied()
                .filter(|&v| durable_holds(view.records(v), commit, term))
                .collect();
            if !membership.quorum(&holders) {
                return Err(format!(
                    "node {id} learned commit index {commit} (term {term}), durable only on \
                     {holders:?} of {voters:?}"
                ));
            }
        }
        Ok(())
    });
}

/// The client history in `common::check`'s terms. Puts and gets only (the scenario proposes no
/// appends); a proposal whose fate the node could not tell is open-ended, a refused one failed.
pub fn history(sim: &Sim<N>) -> History<KvInput, CheckOutput> {
    History::from_sim(
        sim.history(),
        |req: &Req| match req {
            Request::Propose(KvCommand::Put { key, value }) => Some(KvInput::Put {
                key: key.clone(),
                value: value.clone(),
            }),
            Request::Read(KvQuery::Get(key)) => Some(KvInput::Get { key: key.clone() }),
            _ => None,
        },
        |_req, resp: &Resp| match resp {
            Response::Applied { .. } => Completion::Ok(CheckOutput::Done),
            Response::Read(KvOutput::Value(value)) => Completion::Ok(CheckOutput::Value {
                value: value.clone(),
            }),
            Response::Failed(RaftError::Indeterminate { .. }) => Completion::Unknown,
            _ => Completion::Fail,
        },
    )
}

pub fn linearizable(sim: &mut Sim<N>) -> Result<(), SimError> {
    match check_kv(&history(sim)) {
        Ok(Verdict::Linearizable) => Ok(()),
        Ok(v) => Err(sim.fail_now(format!("not linearizable: {v:?}"))),
        Err(e) => Err(sim.fail_now(format!("bad history: {e}"))),
    }
}

// ----- planting violations -----

/// A configuration for a hand-built node of voters `1..=n` (no pre-vote, so a few ticks make
/// it a candidate).
pub fn plain_config(id: NodeId, n: u64) -> Config {
    let mut c = Config::new(id, (1..=n).collect());
    c.pre_vote = false;
    c.check_quorum = false;
    c
}

/// A command naming `value`.
pub fn put(value: &str) -> KvCommand {
    KvCommand::Put {
        key: "k".into(),
        value: value.into(),
    }
}

/// A node of voters `1..=n` recovered in `term` with a log of `(term, value)` entries.
pub fn node_with_log(id: NodeId, n: u64, term: Term, log: &[(Term, &str)]) -> N {
    let entries = log
        .iter()
        .enumerate()
        .map(|(i, &(t, v))| Entry {
            term: t,
            index: i as u64 + 1,
            payload: Payload::Command(put(v)),
        })
        .collect();
    let records = vec![
        Record::HardState {
            term,
            voted_for: None,
        },
        Record::Entries(entries),
    ];
    N::recover(plain_config(id, n).into(), records).unwrap_or_else(|e| panic!("recover: {e}"))
}

/// Makes `node` campaign and win with the votes of every other voter of `1..=n`.
pub fn elect(node: &mut N, n: u64) {
    let mut out = Outbox::new();
    for _ in 0..100 {
        if node.role() == Role::Candidate {
            break;
        }
        node.tick(&mut out);
    }
    assert_eq!(node.role(), Role::Candidate, "the node campaigns");
    let term = node.term();
    let me = Node::id(&*node);
    for v in (1..=n).filter(|&v| v != me) {
        node.handle_message(
            v,
            Message::RequestVoteResponse {
                term,
                granted: true,
            },
            &mut out,
        );
    }
    assert_eq!(node.role(), Role::Leader, "the node wins");
}

/// The live-node view of hand-built nodes, all synced.
pub fn synced<'a>(nodes: &[&'a N]) -> Vec<Live<'a>> {
    nodes
        .iter()
        .map(|n| Live {
            id: Node::id(*n),
            node: n,
            synced: true,
        })
        .collect()
}
