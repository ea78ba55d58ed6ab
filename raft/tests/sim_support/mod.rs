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
//!
//! # Where things are
//!
//! This file holds the scenario, the constants of a run and how the properties of Figure 3
//! (`raft::testing::invariants`) are installed; `run.rs` one run and the seed loop;
//! `invariants.rs` the durable-commit check; `fixtures.rs` the client history and hand-built
//! nodes for the invariants' own tests.
#![allow(dead_code)]

mod fixtures;
mod invariants;
mod run;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
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
    Response, Role, Term,
};

// Each test file uses a part of what the submodules hold, as with `dead_code` above.
#[allow(unused_imports)]
pub use fixtures::*;
#[allow(unused_imports)]
pub use invariants::*;
#[allow(unused_imports)]
pub use run::*;

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

/// The properties of Figure 3 live in `raft::testing::invariants`, generic over the state
/// machine; this file's runs check them on the KV store.
#[allow(unused_imports)]
pub use raft::testing::invariants::{
    figure_3, forget_down, state_digest, ElectionSafety, Invariant, LeaderAppendOnly,
    LeaderCompleteness,
};

/// Log matching over the KV store's commands.
pub type LogMatching = raft::testing::invariants::LogMatching<KvStore>;
/// State machine safety over the KV store.
pub type StateMachineSafety = raft::testing::invariants::StateMachineSafety<KvStore>;

/// One live node of the KV store's cluster, as the invariants see it.
pub type Live<'a> = raft::testing::invariants::Live<'a, KvStore>;

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

/// Installs `invariant` in `sim`: checked after every step from now on.
pub fn install<I: Invariant<KvStore> + 'static>(sim: &mut Sim<N>, mut invariant: I) {
    let name = invariant.name();
    sim.add_invariant(name, move |view| invariant.check(&live(view)));
}

/// Installs every property of the paper's Figure 3 (§5.2–§5.4.3).
pub fn install_all(sim: &mut Sim<N>) {
    for mut invariant in figure_3::<KvStore>() {
        let name = invariant.name();
        sim.add_invariant(name, move |view| invariant.check(&live(view)));
    }
}
