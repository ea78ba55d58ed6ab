//! A deterministic simulator for sans-IO cores (feature `sim`).
//!
//! # Guarantees
//!
//! - **Same seed, same run.** A [`Sim`] is a single-threaded discrete-event loop over virtual
//!   time. Every random choice (message delays, loss, duplication, tick skew, torn tails,
//!   workload) comes from streams derived from [`SimConfig::seed`]; events at the same virtual
//!   time run in the order they were scheduled. [`Sim::trace_hash`] is a running hash of every
//!   event (times, nodes, message and record contents): run a seed twice and compare it.
//! - **The driver contract, faithfully.** A node's effects are released by the Outbox rule
//!   ([`crate::node`]): its records are appended to its durable log and synced before any of
//!   the same batch's messages, responses or events leave. With a sync latency
//!   ([`SimConfig::sync_latency_max`] > 0) several steps share one sync (group commit); a crash
//!   before the sync loses the batch's messages and responses, and keeps only a seeded prefix of
//!   its records (a torn tail, [`SimConfig::torn_tail`]), never a message without its records.
//!   [`crate::Persist::Checkpoint`] drops the records before it.
//! - **Faults.** Per-link latency with jitter (which reorders), loss, duplication, symmetric and
//!   one-way partitions, partial connectivity, heal ([`Fault`]); crash (volatile state gone,
//!   pending client requests end as [`Outcome::Crashed`]: outcome unknown) and restart through
//!   [`crate::Node::recover`] with the node's durable records. Faults are scheduled by hand
//!   ([`FaultPlan::at`]) or drawn from a seed ([`FaultPlan::random`], which keeps a majority up and
//!   repairs everything at the end so liveness can be observed).
//! - **Checked after every step.** Invariants ([`Sim::add_invariant`]) see every live node,
//!   every node's durable records, the time and the client history after every event. The
//!   first violation stops the run with a [`SimError`] naming the seed, the step and the
//!   message; rebuilding the simulation from the same seed fails at the same step with the same
//!   message. Every run has a step limit ([`SimConfig::steps_max`]).
//! - **Clients.** Requests are injected one by one ([`Sim::submit`]), or by open-loop
//!   ([`Sim::open_loop`]) and closed-loop ([`Sim::closed_loop`]) generators; the history records
//!   invocation and completion times ([`ClientOp`]).
//! - **Seeing a run.** With [`SimConfig::record_trace`], every send, delivery, drop, crash,
//!   restart, network change and client event is recorded ([`TraceEvent`]) and renders as a
//!   Mermaid sequence diagram ([`diagram`]).
//!
//! # Writing a simulation test for a protocol crate
//!
//! Enable the feature in the protocol crate's `Cargo.toml`:
//!
//! ```toml
//! [dev-dependencies]
//! common = { workspace = true, features = ["sim"] }
//! ```
//!
//! Then build a simulation per seed, add invariants, drive a workload through faults, check what
//! must hold at the end, and loop over seeds. [`run_seeds`] reads `SIM_SEEDS` (how many seeds)
//! and `SIM_SEED` (replay one seed) from the environment and returns the first failure, whose
//! message names the seed to replay:
//!
//! ```
//! use common::demo::{DemoConfig, DemoNode, DemoRecord, DemoRequest, DemoResponse};
//! use common::sim::{run_seeds, FaultPlan, Outcome, RandomFaults, Sim, SimConfig, SimError};
//!
//! fn one_run(seed: u64) -> Result<(), SimError> {
//!     let members = vec![1, 2, 3];
//!     let mut config = SimConfig::new(seed, members.clone());
//!     config.link.drop = 0.05; // lose 5% of messages
//!     config.link.duplicate = 0.05; // and duplicate some
//!     let cluster = members.clone();
//!     let mut sim: Sim<DemoNode> =
//!         Sim::new(config, move |id| DemoConfig::new(id, cluster.clone()))?;
//!
//!     // Safety, checked after every step: a node's total is the sum of its distinct records.
//!     sim.add_invariant("total matches records", |view| {
//!         for (id, node) in view.nodes() {
//!             let Some(node) = node else { continue }; // crashed
//!             let mut seen = std::collections::BTreeSet::new();
//!             let mut sum = 0u64;
//!             for DemoRecord::Applied { origin, seq, amount } in view.records(id) {
//!                 if seen.insert((*origin, *seq)) {
//!                     sum += amount;
//!                 }
//!             }
//!             let total = common::Node::metrics(node).total;
//!             if total != sum {
//!                 return Err(format!("node {id}: total {total} != records {sum}"));
//!             }
//!         }
//!         Ok(())
//!     });
//!
//!     // Faults drawn from the seed between t=50 and t=1500, then a quiet period.
//!     sim.schedule(FaultPlan::random(seed, &members, &RandomFaults::new(50, 1_500, 1.0)));
//!     for i in 0..10 {
//!         sim.submit(100 + 100 * i, 1 + i % 3, DemoRequest::Add(1));
//!     }
//!     sim.run_until(3_000)?;
//!
//!     // Liveness after the quiet period: every request has ended one way or another.
//!     for op in sim.history() {
//!         if matches!(op.outcome, Outcome::Pending) {
//!             return Err(sim.fail_now(format!("request {} never ended", op.id)));
//!         }
//!     }
//!     Ok(())
//! }
//!
//! // In a test: `run_seeds(1_000, one_run).unwrap()` (the error names the failing seed;
//! // `SIM_SEED=<seed> cargo test ...` replays it alone).
//! let report = run_seeds(20, one_run).unwrap();
//! assert_eq!(report.seeds, 20);
//! ```
//!
//! To see what a failing seed did, replay it with [`SimConfig::record_trace`] on and print
//! [`Sim::diagram`] for the time window before [`SimError::time`] (the failing invariant appears
//! as the diagram's last note); recording does not change the run.
//!
//! A failing run's error reads like
//! `simulation failed: seed 17, step 2351, time 842: invariant "total matches records": node 2:
//! total 5 != records 4 (replay: SIM_SEED=17)`.
//!
//! # Semantics worth knowing
//!
//! - A message is checked against the network twice: when it is sent (a cut link or a random
//!   loss drops it) and when it arrives (a link cut meanwhile, or a destination that is down,
//!   drops it). Messages already in flight from a node that crashes still arrive.
//! - A step is one event: a tick, a delivery, a client request, a fault, a sync. Invariants run
//!   after each; [`SimError::step`] counts them.
//! - Time is virtual and only moves with events; [`SimConfig::tick_interval`] sets how much of
//!   it a tick is worth, so latencies and timeouts are in the same unit.
//! - To add a node mid-run (membership change), list it in [`SimConfig::nodes`], crash it
//!   before the first step ([`Sim::crash`]) and schedule [`Fault::Restart`] when it should join:
//!   it starts from no records.
//! - Each call into a core runs inside a `tracing` span `sim` with the node, virtual time and
//!   step, so a subscriber installed by the test shows a failing seed's story in order.
//! - A client history converts to a checker history with
//!   [`History::from_sim`](crate::check::History::from_sim), for
//!   [`check_kv`](crate::check::check_kv) (linearizability of key-value operations).
//!
//! # Requirements on the core
//!
//! The simulator keeps a copy of each client request for the history, so it needs
//! `N::Request: Clone`.

pub mod diagram;
pub mod fault;
pub mod net;
pub mod trace;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::hash::Hasher;
use std::sync::Arc;

pub use fault::{Fault, FaultPlan, RandomFaults};
pub use net::{DropReason, LinkConfig, Network};
pub use trace::{short_debug, InFlight, TraceEvent, TraceKind};

use crate::codec::{Bincode, Codec};
use crate::snapshot::MemSnapshotStore;
use crate::{DetRng, Node, NodeId, Outbox, Persist, RequestId};

/// Default for [`SimConfig::tick_interval`].
pub const TICK_INTERVAL_DEFAULT: u64 = 10;
/// Default for [`SimConfig::steps_max`].
pub const STEPS_MAX_DEFAULT: u64 = 2_000_000;
/// Default for [`SimConfig::label_chars_max`].
pub const LABEL_CHARS_MAX_DEFAULT: usize = 40;
/// Default for [`SimConfig::batch_steps_max`].
pub const BATCH_STEPS_MAX_DEFAULT: usize = 64;

/// Configuration of a simulation. Plain data with public fields; [`SimConfig::new`] gives the
/// defaults.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed every random choice of the run derives from.
    pub seed: u64,
    /// The cluster's node ids.
    pub nodes: Vec<NodeId>,
    /// Virtual time between two ticks of a node.
    pub tick_interval: u64,
    /// Each tick is late by up to this much (seeded, drawn per tick): timers jitter.
    pub tick_skew: u64,
    /// Each node's clock runs slow by a fixed amount drawn once per node from
    /// `0..=tick_drift_max`: its ticks come every `tick_interval + drift`, so nodes' timeouts
    /// drift apart as real clocks do.
    pub tick_drift_max: u64,
    /// The behaviour of every link at the start (see [`Network`] and [`Fault`] for changes).
    pub link: LinkConfig,
    /// Delay from a node's step to the sync of its records, drawn from
    /// `sync_latency_min..=sync_latency_max`. `0..=0` (the default) releases each step's effects
    /// right after the step; a larger value batches the steps that run meanwhile into one sync
    /// (group commit), and lets a crash hit between step and sync.
    pub sync_latency_min: u64,
    /// See [`SimConfig::sync_latency_min`].
    pub sync_latency_max: u64,
    /// Most steps in one batch: the batch is synced as soon as it holds this many.
    pub batch_steps_max: usize,
    /// When a crash hits before a batch is synced, keep a seeded prefix of its records (a torn
    /// tail, as a write-ahead log allows) instead of losing all of them.
    pub torn_tail: bool,
    /// The run fails with [`SimErrorKind::StepLimit`] after this many steps.
    pub steps_max: u64,
    /// Requests submitted by [`Sim::submit`] that get no answer within this time end as
    /// [`Outcome::TimedOut`]. `None`: wait forever.
    pub request_timeout: Option<u64>,
    /// Round-trip every message through the workspace codec ([`Bincode`]) and deliver the
    /// decoded copy; a failure stops the run. Costs time, so off by default.
    pub wire_check: bool,
    /// Hash message and record contents (encoded with [`Bincode`]) into [`Sim::trace_hash`];
    /// without it only the event skeleton (times, kinds, nodes) is hashed.
    pub hash_contents: bool,
    /// Record a [`TraceEvent`] list for diagrams ([`Sim::trace`]). Costs a `Debug` format per
    /// message, so off by default.
    pub record_trace: bool,
    /// Keep the events nodes publish ([`SimView::events`]).
    pub record_events: bool,
    /// Longest label of a message, request or response in the trace.
    pub label_chars_max: usize,
}

impl SimConfig {
    /// Defaults for a cluster of `nodes`, with every random choice derived from `seed`.
    pub fn new(seed: u64, nodes: Vec<NodeId>) -> Self {
        Self {
            seed,
            nodes,
            tick_interval: TICK_INTERVAL_DEFAULT,
            tick_skew: 1,
            tick_drift_max: 0,
            link: LinkConfig::default(),
            sync_latency_min: 0,
            sync_latency_max: 0,
            batch_steps_max: BATCH_STEPS_MAX_DEFAULT,
            torn_tail: true,
            steps_max: STEPS_MAX_DEFAULT,
            request_timeout: None,
            wire_check: false,
            hash_contents: true,
            record_trace: false,
            record_events: true,
            label_chars_max: LABEL_CHARS_MAX_DEFAULT,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("no nodes".into());
        }
        let distinct: BTreeSet<_> = self.nodes.iter().collect();
        if distinct.len() != self.nodes.len() {
            return Err(format!("duplicate node ids in {:?}", self.nodes));
        }
        if self.tick_interval == 0 {
            return Err("tick_interval must be at least 1".into());
        }
        if self.link.latency_max < self.link.latency_min {
            return Err("link.latency_max < link.latency_min".into());
        }
        if self.sync_latency_max < self.sync_latency_min {
            return Err("sync_latency_max < sync_latency_min".into());
        }
        if self.batch_steps_max == 0 {
            return Err("batch_steps_max must be at least 1".into());
        }
        Ok(())
    }
}

/// How a client request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// No answer yet.
    Pending,
    /// The node answered.
    Response(R),
    /// The node crashed before answering: the request may or may not take effect.
    Crashed,
    /// The client stopped waiting: the request may or may not take effect.
    TimedOut,
    /// The node was down when the request was sent: the request certainly had no effect.
    NodeDown,
}

impl<R> Outcome<R> {
    /// Whether the request may have taken effect without the client knowing (pending, crashed,
    /// timed out). A linearizability checker treats such operations as open-ended.
    pub fn is_unknown(&self) -> bool {
        matches!(
            self,
            Outcome::Pending | Outcome::Crashed | Outcome::TimedOut
        )
    }

    /// The response, if the node answered.
    pub fn response(&self) -> Option<&R> {
        match self {
            Outcome::Response(r) => Some(r),
            _ => None,
        }
    }
}

/// One client operation of the history: invocation, completion and outcome.
pub struct ClientOp<N: Node> {
    /// The request's id (unique within the run).
    pub id: RequestId,
    /// The client that issued it (each client has at most one request in flight when it comes
    /// from a closed-loop generator; requests from [`Sim::submit`] and open-loop generators each
    /// get a client of their own).
    pub client: u64,
    /// The node it was sent to.
    pub node: NodeId,
    /// The request.
    pub request: N::Request,
    /// Virtual time of the invocation.
    pub invoked_at: u64,
    /// Virtual time at which it ended (`None` while pending).
    pub completed_at: Option<u64>,
    /// How it ended.
    pub outcome: Outcome<N::Response>,
}

impl<N: Node> std::fmt::Debug for ClientOp<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOp")
            .field("id", &self.id)
            .field("client", &self.client)
            .field("node", &self.node)
            .field("request", &self.request)
            .field("invoked_at", &self.invoked_at)
            .field("completed_at", &self.completed_at)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// Why a simulation stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimErrorKind {
    /// An invariant returned an error.
    Invariant {
        /// The invariant's name.
        name: String,
        /// Its message.
        message: String,
    },
    /// The run took more than [`SimConfig::steps_max`] steps.
    StepLimit {
        /// The limit.
        steps_max: u64,
    },
    /// A node could not be rebuilt by [`Node::recover`].
    Recover {
        /// The node.
        node: NodeId,
        /// The core's error.
        message: String,
    },
    /// A message did not survive the codec round trip ([`SimConfig::wire_check`]).
    WireCheck {
        /// What went wrong.
        message: String,
    },
    /// The core broke the node contract (answered a request twice, or a request it never got).
    Contract {
        /// What went wrong.
        message: String,
    },
    /// The configuration is invalid.
    Config {
        /// What is wrong.
        message: String,
    },
    /// A check made by the test itself ([`Sim::fail_now`]).
    Check {
        /// What went wrong.
        message: String,
    },
}

impl std::fmt::Display for SimErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimErrorKind::Invariant { name, message } => {
                write!(f, "invariant {name:?}: {message}")
            }
            SimErrorKind::StepLimit { steps_max } => write!(f, "step limit {steps_max} reached"),
            SimErrorKind::Recover { node, message } => {
                write!(f, "node {node} failed to recover: {message}")
            }
            SimErrorKind::WireCheck { message } => write!(f, "wire check: {message}"),
            SimErrorKind::Contract { message } => write!(f, "node contract broken: {message}"),
            SimErrorKind::Config { message } => write!(f, "invalid configuration: {message}"),
            SimErrorKind::Check { message } => write!(f, "check failed: {message}"),
        }
    }
}

/// A failed simulation: the seed to replay, where it failed and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "simulation failed: seed {seed}, step {step}, time {time}: {kind} (replay: SIM_SEED={seed})"
)]
pub struct SimError {
    /// The run's seed ([`SimConfig::seed`]): rebuilding the simulation with it replays the run.
    pub seed: u64,
    /// The step at which the run failed.
    pub step: u64,
    /// The virtual time at which the run failed.
    pub time: u64,
    /// Why.
    pub kind: SimErrorKind,
}

/// A boxed invariant.
type Invariant<N> = Box<dyn FnMut(&SimView<'_, N>) -> Result<(), String>>;
/// A boxed request generator.
type Generator<N> =
    Box<dyn FnMut(&mut DetRng, &ClientCtx<'_, N>) -> Option<(NodeId, <N as Node>::Request)>>;
/// A boxed labeler.
type Labeler<T> = Box<dyn Fn(&T) -> String>;

/// What a request generator knows when it is asked for the next request.
pub struct ClientCtx<'a, N: Node> {
    /// The client asking.
    pub client: u64,
    /// Virtual time.
    pub now: u64,
    /// Requests this generator issued so far.
    pub issued: u64,
    /// The client's previous operation (closed loop only), e.g. to follow a leader hint.
    pub last: Option<&'a ClientOp<N>>,
    /// The cluster's node ids.
    pub nodes: &'a [NodeId],
}

/// A closed-loop workload: `clients` clients, each sending one request, waiting for its end,
/// thinking, and sending the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedLoop {
    /// How many clients.
    pub clients: u64,
    /// When the first requests go out (each client starts within `think_max` after it).
    pub start: u64,
    /// Pause between the end of one request and the next: `think_min..=think_max`.
    pub think_min: u64,
    /// See [`ClosedLoop::think_min`].
    pub think_max: u64,
    /// Requests at most, all clients together.
    pub requests_max: u64,
    /// No request is sent after this time.
    pub until: u64,
    /// A client stops waiting after this long ([`Outcome::TimedOut`]); `None`: never.
    pub timeout: Option<u64>,
}

/// An open-loop workload: requests go out at seeded intervals whether or not earlier ones ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenLoop {
    /// First request.
    pub start: u64,
    /// No request after this time.
    pub until: u64,
    /// Gap between two requests: `interval_min..=interval_max`.
    pub interval_min: u64,
    /// See [`OpenLoop::interval_min`].
    pub interval_max: u64,
    /// Requests at most.
    pub requests_max: u64,
    /// A request is abandoned after this long ([`Outcome::TimedOut`]); `None`: never.
    pub timeout: Option<u64>,
}

struct GenState<N: Node> {
    generate: Generator<N>,
    issued: u64,
    requests_max: u64,
    until: u64,
    timeout: Option<u64>,
    kind: GenKind,
}

enum GenKind {
    Closed {
        think_min: u64,
        think_max: u64,
    },
    Open {
        interval_min: u64,
        interval_max: u64,
    },
}

struct Slot<N: Node> {
    id: NodeId,
    /// Extra time between this node's ticks ([`SimConfig::tick_drift_max`]).
    drift: u64,
    node: Option<N>,
    durable: Vec<N::Record>,
    /// The node's snapshot files: finished ones survive crashes like synced records.
    snapshots: MemSnapshotStore,
    /// Checkpoints made durable since the node was last recovered.
    checkpoints_durable: u64,
    /// Records made durable since the node was last recovered ([`Node::records_durable`]).
    records_durable: u64,
    outbox: Outbox<N>,
    batch_steps: usize,
    flush_scheduled: bool,
    incarnation: u64,
    /// [`Fault::FailSync`]: the next sync with records fails.
    fail_next_sync: bool,
}

enum Ev<N: Node> {
    Tick {
        node: usize,
        incarnation: u64,
    },
    Deliver {
        from: NodeId,
        to: usize,
        msg: N::Message,
        sent: u64,
    },
    Request {
        id: RequestId,
        client: u64,
        node: NodeId,
        request: N::Request,
        timeout: Option<u64>,
        generator: Option<usize>,
    },
    Fault(Fault),
    Flush {
        node: usize,
        incarnation: u64,
    },
    ClientTimeout {
        op: usize,
    },
    ClientNext {
        generator: usize,
        client: u64,
    },
}

struct Queued<N: Node> {
    time: u64,
    seq: u64,
    ev: Ev<N>,
}

impl<N: Node> PartialEq for Queued<N> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl<N: Node> Eq for Queued<N> {}
impl<N: Node> PartialOrd for Queued<N> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<N: Node> Ord for Queued<N> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

/// Read access to a simulation's state, handed to invariants (and available from
/// [`Sim::view`]).
pub struct SimView<'a, N: Node> {
    sim: &'a Sim<N>,
}

impl<'a, N: Node> SimView<'a, N> {
    /// Virtual time.
    pub fn now(&self) -> u64 {
        self.sim.now
    }

    /// Steps run so far.
    pub fn step(&self) -> u64 {
        self.sim.steps
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.sim.config.seed
    }

    /// The cluster's node ids.
    pub fn ids(&self) -> &'a [NodeId] {
        &self.sim.config.nodes
    }

    /// Node `id`, or `None` if it is down or unknown.
    pub fn node(&self, id: NodeId) -> Option<&'a N> {
        self.sim.slot(id).and_then(|s| s.node.as_ref())
    }

    /// Every node, in the order of [`SimConfig::nodes`], with `None` for the ones that are down.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, Option<&'a N>)> + 'a {
        self.sim.slots.iter().map(|s| (s.id, s.node.as_ref()))
    }

    /// The durable (synced) records of node `id`, oldest first, as recovery would see them.
    pub fn records(&self, id: NodeId) -> &'a [N::Record] {
        self.sim
            .slot(id)
            .map(|s| s.durable.as_slice())
            .unwrap_or(&[])
    }

    /// The records node `id` asked to persist that are not synced yet.
    pub fn unsynced(&self, id: NodeId) -> &'a [Persist<N::Record>] {
        self.sim.slot(id).map(|s| s.outbox.records()).unwrap_or(&[])
    }

    /// The client history so far.
    pub fn history(&self) -> &'a [ClientOp<N>] {
        &self.sim.history
    }

    /// The history entry of request `id`, once it has been invoked.
    pub fn op(&self, id: RequestId) -> Option<&'a ClientOp<N>> {
        self.sim
            .op_index
            .get(&id)
            .and_then(|&i| self.sim.history.get(i))
    }

    /// Events the nodes published: `(time, node, event)` ([`SimConfig::record_events`]).
    pub fn events(&self) -> &'a [(u64, NodeId, N::Event)] {
        &self.sim.events
    }

    /// The network's current state.
    pub fn network(&self) -> &'a Network {
        &self.sim.net
    }
}

/// What [`run_seeds`] ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedReport {
    /// How many seeds ran.
    pub seeds: u64,
    /// The first seed.
    pub first: u64,
}

/// Runs `run` for the seeds chosen by the environment, stopping at the first failure.
///
/// - `SIM_SEED=s` runs only seed `s` (replaying a failure);
/// - otherwise `SIM_SEEDS=n` runs seeds `0..n`, and without it `0..default_count`.
pub fn run_seeds<F>(default_count: u64, mut run: F) -> Result<SeedReport, SimError>
where
    F: FnMut(u64) -> Result<(), SimError>,
{
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let (first, count) = match env("SIM_SEED") {
        Some(seed) => (seed, 1),
        None => (0, env("SIM_SEEDS").unwrap_or(default_count)),
    };
    for seed in first..first.saturating_add(count) {
        run(seed)?;
    }
    Ok(SeedReport {
        seeds: count,
        first,
    })
}

/// A deterministic simulation of a cluster of `N` nodes. See the module documentation.
pub struct Sim<N: Node> {
    config: SimConfig,
    make_config: Box<dyn Fn(NodeId) -> N::Config>,
    slots: Vec<Slot<N>>,
    index: BTreeMap<NodeId, usize>,
    net: Network,
    net_rng: DetRng,
    node_rng: DetRng,
    workload_rng: DetRng,
    queue: BinaryHeap<Reverse<Queued<N>>>,
    seq: u64,
    now: u64,
    steps: u64,
    hasher: std::collections::hash_map::DefaultHasher,
    /// Syncs failed by [`Fault::FailSync`].
    failed_syncs: u64,
    scratch: Vec<u8>,
    invariants: Vec<(String, Invariant<N>)>,
    generators: Vec<Option<GenState<N>>>,
    history: Vec<ClientOp<N>>,
    /// In-flight requests: id -> index into `history`.
    inflight: BTreeMap<RequestId, usize>,
    /// Requests whose client gave up: a late answer is legal and ignored.
    abandoned: BTreeSet<RequestId>,
    /// The generator each history entry came from.
    op_generator: Vec<Option<usize>>,
    /// Every invoked request: id -> index into `history`.
    op_index: BTreeMap<RequestId, usize>,
    /// Each client's latest request: client -> index into `history`.
    last_op: BTreeMap<u64, usize>,
    events: Vec<(u64, NodeId, N::Event)>,
    trace: Vec<TraceEvent>,
    next_request: u64,
    next_client: u64,
    failed: Option<SimError>,
    message_label: Labeler<N::Message>,
    request_label: Labeler<N::Request>,
    response_label: Labeler<N::Response>,
}

impl<N: Node> Sim<N> {
    fn slot(&self, id: NodeId) -> Option<&Slot<N>> {
        self.index.get(&id).map(|&i| &self.slots[i])
    }
}

impl<N: Node> Sim<N>
where
    N::Request: Clone,
{
    /// Builds the cluster: every node of `config.nodes` starts through [`Node::recover`] with
    /// the configuration `make_config(id)` and no records. Ticks start at a seeded offset.
    pub fn new<F>(config: SimConfig, make_config: F) -> Result<Self, SimError>
    where
        F: Fn(NodeId) -> N::Config + 'static,
    {
        let seed = config.seed;
        let fail = |kind| SimError {
            seed,
            step: 0,
            time: 0,
            kind,
        };
        config
            .validate()
            .map_err(|message| fail(SimErrorKind::Config { message }))?;
        let label_max = config.label_chars_max;
        let mut sim = Sim {
            net: Network::new(config.link.clone()),
            net_rng: DetRng::new(seed ^ 0x6E65_7477_6F72_6B00),
            node_rng: DetRng::new(seed ^ 0x6E6F_6465_7300_0000),
            workload_rng: DetRng::new(seed ^ 0x776F_726B_6C6F_6164),
            make_config: Box::new(make_config),
            slots: Vec::new(),
            index: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            steps: 0,
            hasher: std::collections::hash_map::DefaultHasher::new(),
            failed_syncs: 0,
            scratch: Vec::new(),
            invariants: Vec::new(),
            generators: Vec::new(),
            history: Vec::new(),
            inflight: BTreeMap::new(),
            abandoned: BTreeSet::new(),
            op_generator: Vec::new(),
            op_index: BTreeMap::new(),
            last_op: BTreeMap::new(),
            events: Vec::new(),
            trace: Vec::new(),
            next_request: 1,
            next_client: 1,
            failed: None,
            message_label: Box::new(move |m| short_debug(m, label_max)),
            request_label: Box::new(move |m| short_debug(m, label_max)),
            response_label: Box::new(move |m| short_debug(m, label_max)),
            config,
        };
        sim.hasher.write_u64(seed);
        for (i, &id) in sim.config.nodes.clone().iter().enumerate() {
            let snapshots = MemSnapshotStore::new();
            let node = N::recover_with_snapshots(
                (sim.make_config)(id),
                Vec::new(),
                Arc::new(snapshots.clone()),
            )
            .map_err(|e| {
                fail(SimErrorKind::Recover {
                    node: id,
                    message: e.to_string(),
                })
            })?;
            sim.index.insert(id, i);
            let drift = sim.node_rng.range_inclusive(0, sim.config.tick_drift_max);
            sim.slots.push(Slot {
                id,
                drift,
                node: Some(node),
                durable: Vec::new(),
                snapshots,
                checkpoints_durable: 0,
                records_durable: 0,
                outbox: Outbox::new(),
                batch_steps: 0,
                flush_scheduled: false,
                incarnation: 0,
                fail_next_sync: false,
            });
            sim.schedule_first_tick(i);
        }
        Ok(sim)
    }

    // ----- configuration during a run -----

    /// Adds an invariant, checked after every step from now on. It gets read access to every
    /// node, the durable records, the time and the history; an `Err` stops the run.
    pub fn add_invariant<F>(&mut self, name: &str, check: F)
    where
        F: FnMut(&SimView<'_, N>) -> Result<(), String> + 'static,
    {
        self.invariants.push((name.to_string(), Box::new(check)));
    }

    /// Schedules every fault of `plan` (times are absolute virtual times; faults in the past run
    /// at the next step).
    pub fn schedule(&mut self, plan: FaultPlan) {
        for (time, fault) in plan.into_faults() {
            self.push(time.max(self.now), Ev::Fault(fault));
        }
    }

    /// Schedules one fault at virtual time `at`.
    pub fn schedule_fault(&mut self, at: u64, fault: Fault) {
        self.push(at.max(self.now), Ev::Fault(fault));
    }

    /// Sets how messages are labelled in the trace (default: `Debug`, shortened).
    pub fn set_message_label<F: Fn(&N::Message) -> String + 'static>(&mut self, label: F) {
        self.message_label = Box::new(label);
    }

    /// Sets how requests are labelled in the trace (default: `Debug`, shortened).
    pub fn set_request_label<F: Fn(&N::Request) -> String + 'static>(&mut self, label: F) {
        self.request_label = Box::new(label);
    }

    /// Sets how responses are labelled in the trace (default: `Debug`, shortened).
    pub fn set_response_label<F: Fn(&N::Response) -> String + 'static>(&mut self, label: F) {
        self.response_label = Box::new(label);
    }

    /// Mutable access to the network, to change it between runs (see also [`Fault`]).
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    // ----- clients -----

    /// Sends `request` to `node` at virtual time `at` (as a client of its own) and returns the
    /// request's id. The outcome appears in [`Sim::history`].
    pub fn submit(&mut self, at: u64, node: NodeId, request: N::Request) -> RequestId {
        let client = self.new_client();
        self.submit_as(at, client, node, request)
    }

    /// Like [`Sim::submit`], on behalf of client `client` (the caller keeps each client
    /// sequential if it wants a well-formed history).
    pub fn submit_as(
        &mut self,
        at: u64,
        client: u64,
        node: NodeId,
        request: N::Request,
    ) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let timeout = self.config.request_timeout;
        self.push(
            at.max(self.now),
            Ev::Request {
                id,
                client,
                node,
                request,
                timeout,
                generator: None,
            },
        );
        id
    }

    /// Adds a closed-loop workload; `generate` returns the next request of a client and the
    /// node to send it to, or `None` when that client is done.
    pub fn closed_loop<F>(&mut self, spec: ClosedLoop, generate: F)
    where
        F: FnMut(&mut DetRng, &ClientCtx<'_, N>) -> Option<(NodeId, N::Request)> + 'static,
    {
        let generator = self.generators.len();
        self.generators.push(Some(GenState {
            generate: Box::new(generate),
            issued: 0,
            requests_max: spec.requests_max,
            until: spec.until,
            timeout: spec.timeout,
            kind: GenKind::Closed {
                think_min: spec.think_min,
                think_max: spec.think_max,
            },
        }));
        for _ in 0..spec.clients {
            let client = self.new_client();
            let start = spec.start.max(self.now)
                + self
                    .workload_rng
                    .range_inclusive(0, spec.think_max.max(spec.think_min));
            self.push(start, Ev::ClientNext { generator, client });
        }
    }

    /// Adds an open-loop workload; `generate` returns the next request and its node, or `None`
    /// to stop.
    pub fn open_loop<F>(&mut self, spec: OpenLoop, generate: F)
    where
        F: FnMut(&mut DetRng, &ClientCtx<'_, N>) -> Option<(NodeId, N::Request)> + 'static,
    {
        let generator = self.generators.len();
        self.generators.push(Some(GenState {
            generate: Box::new(generate),
            issued: 0,
            requests_max: spec.requests_max,
            until: spec.until,
            timeout: spec.timeout,
            kind: GenKind::Open {
                interval_min: spec.interval_min,
                interval_max: spec.interval_max,
            },
        }));
        self.push(
            spec.start.max(self.now),
            Ev::ClientNext {
                generator,
                client: 0,
            },
        );
    }

    // ----- running -----

    /// Runs one step (one event). Returns `Ok(false)` when nothing is scheduled any more.
    pub fn step(&mut self) -> Result<bool, SimError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(Reverse(q)) = self.queue.pop() else {
            return Ok(false);
        };
        self.now = q.time;
        self.steps += 1;
        if self.steps > self.config.steps_max {
            return Err(self.fail(SimErrorKind::StepLimit {
                steps_max: self.config.steps_max,
            }));
        }
        self.hasher.write_u64(q.time);
        let result = self.dispatch(q.ev);
        if let Err(kind) = result {
            return Err(self.fail(kind));
        }
        self.check_invariants()?;
        Ok(true)
    }

    /// Runs every step scheduled up to virtual time `time` (inclusive), then sets the clock to
    /// `time`.
    pub fn run_until(&mut self, time: u64) -> Result<(), SimError> {
        while self.queue.peek().is_some_and(|Reverse(q)| q.time <= time) {
            self.step()?;
        }
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.now = self.now.max(time);
        Ok(())
    }

    /// Runs for `duration` more virtual time.
    pub fn run_for(&mut self, duration: u64) -> Result<(), SimError> {
        self.run_until(self.now.saturating_add(duration))
    }

    /// Runs until `done` holds (checked after every step) or virtual time passes `deadline`.
    /// Returns whether `done` held.
    pub fn run_until_cond<F>(&mut self, deadline: u64, mut done: F) -> Result<bool, SimError>
    where
        F: FnMut(&SimView<'_, N>) -> bool,
    {
        if done(&self.view()) {
            return Ok(true);
        }
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(q)| q.time <= deadline)
        {
            self.step()?;
            if done(&self.view()) {
                return Ok(true);
            }
        }
        self.now = self.now.max(deadline);
        Ok(false)
    }

    /// Applies `fault` now, as its own step (invariants are checked after it).
    pub fn apply(&mut self, fault: Fault) -> Result<(), SimError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.steps += 1;
        if let Err(kind) = self.apply_fault(fault) {
            return Err(self.fail(kind));
        }
        self.check_invariants()
    }

    /// Crashes `node` now (see [`Fault::Crash`]).
    pub fn crash(&mut self, node: NodeId) -> Result<(), SimError> {
        self.apply(Fault::Crash(node))
    }

    /// Restarts `node` now (see [`Fault::Restart`]).
    pub fn restart(&mut self, node: NodeId) -> Result<(), SimError> {
        self.apply(Fault::Restart(node))
    }

    /// Stops the run with a failure made by the test itself (reported like an invariant
    /// failure, with seed, step and time).
    pub fn fail_now(&mut self, message: String) -> SimError {
        self.fail(SimErrorKind::Check { message })
    }

    // ----- inspection -----

    /// Read access to the state (what invariants see).
    pub fn view(&self) -> SimView<'_, N> {
        SimView { sim: self }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Virtual time.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Steps run so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Node `id`, or `None` if it is down or unknown.
    pub fn node(&self, id: NodeId) -> Option<&N> {
        self.slot(id).and_then(|s| s.node.as_ref())
    }

    /// Mutable access to node `id` (for tests that poke a core directly; effects the caller
    /// produces through its own outbox are not released by the simulator).
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut N> {
        let i = *self.index.get(&id)?;
        self.slots[i].node.as_mut()
    }

    /// Syncs that failed through [`Fault::FailSync`] so far (each stopped its node).
    pub fn failed_syncs(&self) -> u64 {
        self.failed_syncs
    }

    /// The snapshot store of node `id` (to inspect it, or to damage a snapshot as a disk fault
    /// would with [`MemSnapshotStore::corrupt`]).
    pub fn snapshot_store(&self, id: NodeId) -> Option<&MemSnapshotStore> {
        self.slot(id).map(|s| &s.snapshots)
    }

    /// The durable records of node `id`.
    pub fn records(&self, id: NodeId) -> &[N::Record] {
        self.slot(id).map(|s| s.durable.as_slice()).unwrap_or(&[])
    }

    /// The client history so far, in invocation order.
    pub fn history(&self) -> &[ClientOp<N>] {
        &self.history
    }

    /// Events the nodes published: `(time, node, event)`.
    pub fn events(&self) -> &[(u64, NodeId, N::Event)] {
        &self.events
    }

    /// The history entry of request `id`, once it has been invoked (see [`Sim::submit`]).
    pub fn op(&self, id: RequestId) -> Option<&ClientOp<N>> {
        self.view().op(id)
    }

    /// The recorded trace (empty unless [`SimConfig::record_trace`]).
    pub fn trace(&self) -> &[TraceEvent] {
        &self.trace
    }

    /// The recorded trace as a Mermaid sequence diagram ([`diagram::render`]).
    pub fn diagram(&self, options: &diagram::DiagramOptions) -> String {
        diagram::render(&self.trace, options)
    }

    /// A hash of every event so far: equal for two runs of the same seed (within one build of
    /// the workspace), and almost surely different for different runs.
    pub fn trace_hash(&self) -> u64 {
        self.hasher.finish()
    }

    /// The failure that stopped the run, if any.
    pub fn failure(&self) -> Option<&SimError> {
        self.failed.as_ref()
    }

    // ----- internals -----

    fn new_client(&mut self) -> u64 {
        let c = self.next_client;
        self.next_client += 1;
        c
    }

    fn push(&mut self, time: u64, ev: Ev<N>) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            time,
            seq: self.seq,
            ev,
        }));
    }

    fn record(&mut self, kind: TraceKind) {
        if self.config.record_trace {
            self.trace.push(TraceEvent {
                time: self.now,
                step: self.steps,
                kind,
            });
        }
    }

    fn fail(&mut self, kind: SimErrorKind) -> SimError {
        if let SimErrorKind::Invariant { name, message } = &kind {
            let (name, message) = (name.clone(), message.clone());
            self.record(TraceKind::InvariantFailed { name, message });
        }
        let e = SimError {
            seed: self.config.seed,
            step: self.steps,
            time: self.now,
            kind,
        };
        self.failed = Some(e.clone());
        e
    }

    fn hash_value<T: serde::Serialize>(&mut self, value: &T) {
        if !self.config.hash_contents {
            return;
        }
        self.scratch.clear();
        if Bincode.encode_into(value, &mut self.scratch).is_ok() {
            self.hasher.write(&self.scratch);
        }
    }

    fn check_invariants(&mut self) -> Result<(), SimError> {
        if self.invariants.is_empty() {
            return Ok(());
        }
        let mut invariants = std::mem::take(&mut self.invariants);
        let mut failure = None;
        {
            let view = SimView { sim: &*self };
            for (name, check) in invariants.iter_mut() {
                if let Err(message) = check(&view) {
                    failure = Some(SimErrorKind::Invariant {
                        name: name.clone(),
                        message,
                    });
                    break;
                }
            }
        }
        self.invariants = invariants;
        match failure {
            Some(kind) => Err(self.fail(kind)),
            None => Ok(()),
        }
    }

    fn schedule_first_tick(&mut self, i: usize) {
        let offset = self
            .node_rng
            .range_inclusive(1, self.config.tick_interval.max(1));
        let incarnation = self.slots[i].incarnation;
        self.push(
            self.now + offset,
            Ev::Tick {
                node: i,
                incarnation,
            },
        );
    }

    fn dispatch(&mut self, ev: Ev<N>) -> Result<(), SimErrorKind> {
        match ev {
            Ev::Tick { node, incarnation } => {
                self.hasher.write_u8(1);
                self.hasher.write_usize(node);
                let slot = &mut self.slots[node];
                if slot.incarnation != incarnation {
                    return Ok(()); // a tick chain of a previous life
                }
                let Some(n) = slot.node.as_mut() else {
                    return Ok(());
                };
                let _span = node_span(slot.id, self.now, self.steps);
                n.tick(&mut slot.outbox);
                let next = self.config.tick_interval
                    + slot.drift
                    + self.node_rng.range_inclusive(0, self.config.tick_skew);
                self.push(self.now + next, Ev::Tick { node, incarnation });
                self.after_step(node)
            }
            Ev::Deliver {
                from,
                to,
                msg,
                sent,
            } => {
                self.hasher.write_u8(2);
                self.hasher.write_u64(from);
                self.hasher.write_usize(to);
                let to_id = self.slots[to].id;
                let reason = if self.slots[to].node.is_none() {
                    Some(DropReason::NodeDown)
                } else if self.net.is_cut(from, to_id) {
                    Some(DropReason::Partitioned)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.hasher.write_u8(0xD);
                    if self.config.record_trace {
                        let label = (self.message_label)(&msg);
                        self.record(TraceKind::Drop {
                            from,
                            to: to_id,
                            label,
                            reason,
                        });
                    }
                    return Ok(());
                }
                if self.config.record_trace {
                    let label = (self.message_label)(&msg);
                    self.record(TraceKind::Deliver {
                        from,
                        to: to_id,
                        label,
                        sent,
                    });
                }
                let slot = &mut self.slots[to];
                if let Some(n) = slot.node.as_mut() {
                    let _span = node_span(slot.id, self.now, self.steps);
                    n.handle_message(from, msg, &mut slot.outbox);
                }
                self.after_step(to)
            }
            Ev::Request {
                id,
                client,
                node,
                request,
                timeout,
                generator,
            } => {
                self.hasher.write_u8(3);
                self.hasher.write_u64(id.0);
                self.hasher.write_u64(node);
                self.invoke(id, client, node, request, timeout, generator)
            }
            Ev::Fault(fault) => self.apply_fault(fault),
            Ev::Flush { node, incarnation } => {
                self.hasher.write_u8(5);
                self.hasher.write_usize(node);
                if self.slots[node].incarnation == incarnation && self.slots[node].flush_scheduled {
                    self.flush(node)?;
                }
                Ok(())
            }
            Ev::ClientTimeout { op } => {
                self.hasher.write_u8(6);
                self.hasher.write_usize(op);
                if matches!(self.history[op].outcome, Outcome::Pending) {
                    let id = self.history[op].id;
                    self.inflight.remove(&id);
                    self.abandoned.insert(id);
                    self.end_op(op, Outcome::TimedOut, "timed out");
                }
                Ok(())
            }
            Ev::ClientNext { generator, client } => {
                self.hasher.write_u8(7);
                self.hasher.write_usize(generator);
                self.next_request_of(generator, client);
                Ok(())
            }
        }
    }

    fn invoke(
        &mut self,
        id: RequestId,
        client: u64,
        node: NodeId,
        request: N::Request,
        timeout: Option<u64>,
        generator: Option<usize>,
    ) -> Result<(), SimErrorKind> {
        let op = self.history.len();
        if self.config.record_trace {
            let label = (self.request_label)(&request);
            self.record(TraceKind::Invoke {
                client,
                node,
                id,
                label,
            });
        }
        self.history.push(ClientOp {
            id,
            client,
            node,
            request: request.clone(),
            invoked_at: self.now,
            completed_at: None,
            outcome: Outcome::Pending,
        });
        self.op_generator.push(generator);
        self.op_index.insert(id, op);
        self.last_op.insert(client, op);
        let Some(&i) = self.index.get(&node) else {
            self.end_op(op, Outcome::NodeDown, "unknown node");
            return Ok(());
        };
        let slot = &mut self.slots[i];
        let Some(n) = slot.node.as_mut() else {
            self.end_op(op, Outcome::NodeDown, "node down");
            return Ok(());
        };
        self.inflight.insert(id, op);
        let _span = node_span(node, self.now, self.steps);
        n.handle_request(id, request, &mut slot.outbox);
        if let Some(t) = timeout {
            self.push(self.now + t, Ev::ClientTimeout { op });
        }
        self.after_step(i)
    }

    /// Ends history entry `op` without a response (or records the completion time for one).
    fn end_op(&mut self, op: usize, outcome: Outcome<N::Response>, reason: &str) {
        let now = self.now;
        let entry = &mut self.history[op];
        entry.completed_at = Some(now);
        entry.outcome = outcome;
        let (client, node, id) = (entry.client, entry.node, entry.id);
        self.hasher.write_u64(id.0);
        self.record(TraceKind::ClientFailed {
            client,
            node,
            id,
            reason: reason.to_string(),
        });
        self.op_ended(op);
    }

    /// A closed-loop client whose request ended thinks, then sends the next one.
    fn op_ended(&mut self, op: usize) {
        let Some(generator) = self.op_generator[op] else {
            return;
        };
        let Some(Some(g)) = self.generators.get(generator) else {
            return;
        };
        if let GenKind::Closed {
            think_min,
            think_max,
        } = g.kind
        {
            let think = self.workload_rng.range_inclusive(think_min, think_max);
            let client = self.history[op].client;
            self.push(self.now + think, Ev::ClientNext { generator, client });
        }
    }

    fn next_request_of(&mut self, generator: usize, client: u64) {
        let Some(mut g) = self.generators.get_mut(generator).and_then(Option::take) else {
            return;
        };
        let open = matches!(g.kind, GenKind::Open { .. });
        if g.issued < g.requests_max && self.now <= g.until {
            let client = if open { self.new_client() } else { client };
            let last = if open {
                None
            } else {
                self.last_op.get(&client).and_then(|&i| self.history.get(i))
            };
            let ctx = ClientCtx {
                client,
                now: self.now,
                issued: g.issued,
                last,
                nodes: &self.config.nodes,
            };
            let next = (g.generate)(&mut self.workload_rng, &ctx);
            if let Some((node, request)) = next {
                g.issued += 1;
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.push(
                    self.now,
                    Ev::Request {
                        id,
                        client,
                        node,
                        request,
                        timeout: g.timeout,
                        generator: Some(generator),
                    },
                );
                if let GenKind::Open {
                    interval_min,
                    interval_max,
                } = g.kind
                {
                    let gap = self
                        .workload_rng
                        .range_inclusive(interval_min, interval_max);
                    self.push(
                        self.now + gap.max(1),
                        Ev::ClientNext {
                            generator,
                            client: 0,
                        },
                    );
                }
            }
        }
        self.generators[generator] = Some(g);
    }

    /// After a node's step: release its effects now, or batch them until a scheduled sync.
    fn after_step(&mut self, i: usize) -> Result<(), SimErrorKind> {
        // Early messages and answers (`Outbox::send_early`, `respond_early`) leave now,
        // before the step's sync.
        if self.slots[i].outbox.has_early() {
            let (mut early, mut answers) = (Vec::new(), Vec::new());
            self.slots[i]
                .outbox
                .take_early_into(&mut early, &mut answers);
            let from = self.slots[i].id;
            for (to, msg) in early {
                self.send(from, to, msg)?;
            }
            for (id, response) in answers {
                self.respond(from, id, response)?;
            }
        }
        let slot = &mut self.slots[i];
        if slot.outbox.is_empty() {
            return Ok(());
        }
        slot.batch_steps += 1;
        if self.config.sync_latency_max == 0 || slot.batch_steps >= self.config.batch_steps_max {
            return self.flush(i);
        }
        if !slot.flush_scheduled {
            slot.flush_scheduled = true;
            let incarnation = slot.incarnation;
            let delay = self
                .node_rng
                .range_inclusive(self.config.sync_latency_min, self.config.sync_latency_max);
            self.push(
                self.now + delay,
                Ev::Flush {
                    node: i,
                    incarnation,
                },
            );
        }
        Ok(())
    }

    /// The Outbox rule: records durable first, then messages, responses and events.
    fn flush(&mut self, i: usize) -> Result<(), SimErrorKind> {
        let slot = &mut self.slots[i];
        slot.batch_steps = 0;
        slot.flush_scheduled = false;
        let effects = slot.outbox.take();
        let from = slot.id;
        if slot.fail_next_sync && !effects.records.is_empty() {
            // `Fault::FailSync`: the write reaches the disk only in part, and the node stops
            // before anything of the batch leaves it (fail-stop, as the driver does).
            slot.fail_next_sync = false;
            self.failed_syncs += 1;
            self.stop_node(i, effects, true);
            return Ok(());
        }
        let mut checkpoints = 0;
        let records = effects.records.len() as u64;
        for p in effects.records {
            self.hash_value(p.record());
            checkpoints += u64::from(p.is_checkpoint());
            append(&mut self.slots[i].durable, p);
        }
        if checkpoints > 0 {
            let slot = &mut self.slots[i];
            slot.checkpoints_durable += checkpoints;
            if let Some(node) = slot.node.as_mut() {
                node.checkpoints_durable(slot.checkpoints_durable);
            }
        }
        for (to, msg) in effects.messages {
            self.send(from, to, msg)?;
        }
        for (id, response) in effects.responses {
            self.respond(from, id, response)?;
        }
        for event in effects.events {
            if self.config.record_trace {
                let label = short_debug(&event, self.config.label_chars_max);
                self.record(TraceKind::Event { node: from, label });
            }
            if self.config.record_events {
                self.events.push((self.now, from, event));
            }
        }
        for (to, msg) in effects.early {
            // Normally sent right after their step; only a batch flushed by hand holds any.
            self.send(from, to, msg)?;
        }
        for (id, response) in effects.early_responses {
            self.respond(from, id, response)?;
        }
        if records > 0 {
            // Tell the node, as a step of its own, which of its records are durable now.
            let slot = &mut self.slots[i];
            slot.records_durable += records;
            if let Some(node) = slot.node.as_mut() {
                let _span = node_span(slot.id, self.now, self.steps);
                node.records_durable(slot.records_durable, &mut slot.outbox);
            }
            return self.after_step(i);
        }
        Ok(())
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: N::Message) -> Result<(), SimErrorKind> {
        self.hasher.write_u8(0x51);
        self.hasher.write_u64(to);
        self.hash_value(&msg);
        let msg = if self.config.wire_check {
            wire_round_trip(&msg)?
        } else {
            msg
        };
        let label = if self.config.record_trace {
            (self.message_label)(&msg)
        } else {
            String::new()
        };
        let Some(&to_i) = self.index.get(&to) else {
            self.record(TraceKind::Drop {
                from,
                to,
                label,
                reason: DropReason::UnknownNode,
            });
            return Ok(());
        };
        let link = self.net.link(from, to).clone();
        let dropped = if self.net.is_cut(from, to) {
            Some(DropReason::Partitioned)
        } else if self.net_rng.chance(link.drop) {
            Some(DropReason::Lost)
        } else {
            None
        };
        if let Some(reason) = dropped {
            self.hasher.write_u8(0xD);
            self.record(TraceKind::Send {
                from,
                to,
                label: label.clone(),
                arrives: None,
            });
            self.record(TraceKind::Drop {
                from,
                to,
                label,
                reason,
            });
            return Ok(());
        }
        let arrives = self.now + link.draw_latency(&mut self.net_rng);
        self.hasher.write_u64(arrives);
        if self.net_rng.chance(link.duplicate) {
            let again = self.now + link.draw_latency(&mut self.net_rng);
            self.hasher.write_u64(again);
            self.record(TraceKind::Duplicate {
                from,
                to,
                label: label.clone(),
                arrives: again,
            });
            let now = self.now;
            self.push(
                again,
                Ev::Deliver {
                    from,
                    to: to_i,
                    msg: msg.clone(),
                    sent: now,
                },
            );
        }
        self.record(TraceKind::Send {
            from,
            to,
            label,
            arrives: Some(arrives),
        });
        let now = self.now;
        self.push(
            arrives,
            Ev::Deliver {
                from,
                to: to_i,
                msg,
                sent: now,
            },
        );
        Ok(())
    }

    fn respond(
        &mut self,
        from: NodeId,
        id: RequestId,
        response: N::Response,
    ) -> Result<(), SimErrorKind> {
        self.hasher.write_u8(0x52);
        self.hasher.write_u64(id.0);
        let Some(op) = self.inflight.remove(&id) else {
            if self.abandoned.remove(&id) {
                return Ok(()); // the client gave up; a late answer is legal
            }
            return Err(SimErrorKind::Contract {
                message: format!(
                    "node {from} answered {id}, which is not in flight (answered twice, or never asked)"
                ),
            });
        };
        if self.history[op].node != from {
            return Err(SimErrorKind::Contract {
                message: format!(
                    "node {from} answered {id}, which was sent to node {}",
                    self.history[op].node
                ),
            });
        }
        if self.config.record_trace {
            let label = (self.response_label)(&response);
            let client = self.history[op].client;
            self.record(TraceKind::Complete {
                client,
                node: from,
                id,
                label,
            });
        }
        let entry = &mut self.history[op];
        entry.completed_at = Some(self.now);
        entry.outcome = Outcome::Response(response);
        self.op_ended(op);
        Ok(())
    }

    fn apply_fault(&mut self, fault: Fault) -> Result<(), SimErrorKind> {
        self.hasher.write_u8(4);
        match fault {
            Fault::Crash(id) => {
                self.hasher.write_u64(id);
                self.crash_node(id);
                Ok(())
            }
            Fault::Restart(id) => {
                self.hasher.write_u64(id);
                self.restart_node(id)
            }
            Fault::FailSync(id) => {
                self.hasher.write_u64(id);
                if let Some(&i) = self.index.get(&id) {
                    self.slots[i].fail_next_sync = true;
                }
                if self.config.record_trace {
                    self.record(TraceKind::Network {
                        description: describe_fault(&Fault::FailSync(id)),
                    });
                }
                Ok(())
            }
            other => {
                self.hasher.write_u8(0x4E);
                if self.config.record_trace {
                    self.record(TraceKind::Network {
                        description: describe_fault(&other),
                    });
                }
                let members = self.config.nodes.clone();
                match other {
                    Fault::Partition { a, b } => self.net.partition(&a, &b),
                    Fault::OneWay { from, to } => self.net.one_way(&from, &to),
                    Fault::Isolate(n) => self.net.connect_only(n, &[], &members),
                    Fault::ConnectOnly { node, reach } => {
                        self.net.connect_only(node, &reach, &members)
                    }
                    Fault::Heal => self.net.heal(),
                    Fault::Drop(p) => self.net.default_link_mut().drop = p,
                    Fault::Duplicate(p) => self.net.default_link_mut().duplicate = p,
                    Fault::Latency { min, max } => {
                        let link = self.net.default_link_mut();
                        link.latency_min = min;
                        link.latency_max = max.max(min);
                    }
                    Fault::Link { from, to, link } => self.net.set_link(from, to, link),
                    Fault::ResetNetwork => self.net = Network::new(self.config.link.clone()),
                    Fault::Crash(_) | Fault::Restart(_) | Fault::FailSync(_) => {}
                }
                Ok(())
            }
        }
    }

    fn crash_node(&mut self, id: NodeId) {
        let Some(&i) = self.index.get(&id) else {
            return;
        };
        if self.slots[i].node.is_none() {
            return;
        }
        let effects = self.slots[i].outbox.take();
        self.stop_node(i, effects, self.config.torn_tail);
    }

    /// Stops node `i` with `effects` unsynced: a seeded prefix of their records reaches the disk
    /// when `torn` (else none), and nothing else of them leaves the node.
    fn stop_node(&mut self, i: usize, effects: crate::Effects<N>, torn: bool) {
        let id = self.slots[i].id;
        let unsynced = effects.records.len();
        let kept = if torn {
            self.node_rng.range_inclusive(0, unsynced as u64) as usize
        } else {
            0
        };
        self.hasher.write_usize(kept);
        for p in effects.records.into_iter().take(kept) {
            append(&mut self.slots[i].durable, p);
        }
        let slot = &mut self.slots[i];
        slot.node = None;
        slot.checkpoints_durable = 0;
        slot.records_durable = 0;
        slot.incarnation += 1;
        slot.batch_steps = 0;
        slot.flush_scheduled = false;
        self.record(TraceKind::Crash {
            node: id,
            unsynced_kept: kept,
            unsynced_lost: unsynced - kept,
            effects_lost: effects.messages.len() + effects.responses.len(),
        });
        // Every request in flight at this node now has an unknown outcome.
        let lost: Vec<usize> = self
            .inflight
            .iter()
            .filter(|(_, &op)| self.history[op].node == id)
            .map(|(_, &op)| op)
            .collect();
        for op in lost {
            let rid = self.history[op].id;
            self.inflight.remove(&rid);
            self.end_op(op, Outcome::Crashed, "node crashed");
        }
    }

    fn restart_node(&mut self, id: NodeId) -> Result<(), SimErrorKind> {
        let Some(&i) = self.index.get(&id) else {
            return Ok(());
        };
        if self.slots[i].node.is_some() {
            return Ok(());
        }
        let records = self.slots[i].durable.clone();
        let count = records.len();
        let snapshots = Arc::new(self.slots[i].snapshots.clone());
        let node =
            N::recover_with_snapshots((self.make_config)(id), records, snapshots).map_err(|e| {
                SimErrorKind::Recover {
                    node: id,
                    message: e.to_string(),
                }
            })?;
        self.slots[i].node = Some(node);
        self.record(TraceKind::Restart {
            node: id,
            records: count,
        });
        self.schedule_first_tick(i);
        Ok(())
    }
}

/// A tracing span around one call into a core, so its log lines carry the node, the virtual
/// time and the step (`RUST_LOG=debug SIM_SEED=17 cargo test ...` reads a failing seed's story).
/// Without a subscriber, entering a disabled span costs a branch.
fn node_span(node: NodeId, time: u64, step: u64) -> tracing::span::EnteredSpan {
    tracing::debug_span!("sim", node, time, step).entered()
}

/// Appends one persisted record to a durable log, honouring checkpoints.
fn append<R>(log: &mut Vec<R>, p: Persist<R>) {
    match p {
        Persist::Append(r) => log.push(r),
        Persist::Checkpoint(r) => {
            log.clear();
            log.push(r);
        }
    }
}

/// Encodes and decodes `msg` with the workspace codec, and checks that the copy encodes to the
/// same bytes.
fn wire_round_trip<M>(msg: &M) -> Result<M, SimErrorKind>
where
    M: serde::Serialize + serde::de::DeserializeOwned,
{
    let wire = |e: crate::codec::CodecError| SimErrorKind::WireCheck {
        message: e.to_string(),
    };
    let bytes = Bincode.encode(msg).map_err(wire)?;
    let copy: M = Bincode.decode(&bytes).map_err(wire)?;
    let again = Bincode.encode(&copy).map_err(wire)?;
    if again != bytes {
        return Err(SimErrorKind::WireCheck {
            message: "message re-encodes to different bytes after a round trip".into(),
        });
    }
    Ok(copy)
}

/// A one-line description of a fault, for traces and diagrams.
pub fn describe_fault(fault: &Fault) -> String {
    let list = |v: &[NodeId]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match fault {
        Fault::Crash(n) => format!("crash {n}"),
        Fault::Restart(n) => format!("restart {n}"),
        Fault::Partition { a, b } => format!("partition {{{}}} | {{{}}}", list(a), list(b)),
        Fault::OneWay { from, to } => format!("cut {{{}}} -> {{{}}}", list(from), list(to)),
        Fault::Isolate(n) => format!("isolate {n}"),
        Fault::ConnectOnly { node, reach } => {
            format!("{node} reaches only {{{}}}", list(reach))
        }
        Fault::Heal => "heal".to_string(),
        Fault::Drop(p) => format!("drop {p:.2}"),
        Fault::Duplicate(p) => format!("duplicate {p:.2}"),
        Fault::Latency { min, max } => format!("latency {min}..{max}"),
        Fault::Link { from, to, link } => format!(
            "link {from}->{to}: latency {}..{}, drop {:.2}, duplicate {:.2}",
            link.latency_min, link.latency_max, link.drop, link.duplicate
        ),
        Fault::ResetNetwork => "reset network".to_string(),
        Fault::FailSync(n) => format!("the next sync of {n} fails"),
    }
}
