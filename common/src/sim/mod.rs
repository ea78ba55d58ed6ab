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
//! must hold at the end, and loop over seeds. [`run_seeds`] reads `SIM_SEEDS` (how many seeds),
//! `SIM_SEED_FIRST` (where they start) and `SIM_SEED` (replay one seed) from the environment and
//! returns the first failure, whose message names the seed to replay:
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
//!
//! # Layout
//!
//! `config.rs` holds [`SimConfig`]; `engine.rs` the event queue, the nodes and the release of
//! their effects; `workload.rs` the clients, generators and history; `fault.rs` the faults,
//! fault plans and how a fault is applied; `net.rs` the network model; `view.rs` what
//! invariants see ([`SimView`]) and the inspection methods; `seeds.rs` [`run_seeds`];
//! `trace.rs` and [`diagram`] the recorded trace and its rendering.

mod config;
pub mod diagram;
mod engine;
pub mod fault;
pub mod net;
mod seeds;
pub mod trace;
mod view;
mod workload;

use std::collections::BTreeMap;

pub use config::{
    SimConfig, BATCH_STEPS_MAX_DEFAULT, LABEL_CHARS_MAX_DEFAULT, STEPS_MAX_DEFAULT,
    TICK_INTERVAL_DEFAULT,
};
pub use fault::{describe_fault, Fault, FaultPlan, RandomFaults};
pub use net::{DropReason, LinkConfig, Network};
pub use seeds::{run_seed_range, run_seeds, SeedReport};
pub use trace::{short_debug, InFlight, TraceEvent, TraceKind};
pub use view::SimView;
pub use workload::{ClientCtx, ClientOp, ClosedLoop, OpenLoop, Outcome};

use crate::{DetRng, Node, NodeId};
use engine::{Cluster, Ev, Schedule};
use net::Links;
use trace::Recorder;
use view::Invariant;
use workload::Clients;

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

/// A deterministic simulation of a cluster of `N` nodes. See the module documentation.
///
/// Its state is grouped by the module that works on it: the event queue and virtual clock, and
/// the nodes with their durable state and crash bookkeeping (`engine.rs`), the network and its
/// random stream (`net.rs`), the clients and their history (`workload.rs`), and what is
/// recorded about the run (`trace.rs`).
pub struct Sim<N: Node> {
    config: SimConfig,
    /// Pending events, virtual time and the step count.
    sched: Schedule<N>,
    /// The nodes: their cores, durable records, snapshot stores and outboxes.
    cluster: Cluster<N>,
    /// The network model and the stream its random choices come from.
    links: Links,
    /// Client requests, generators and the history.
    clients: Clients<N>,
    /// The trace, the published events, the run's hash and the labelers.
    rec: Recorder<N>,
    invariants: Vec<(String, Invariant<N>)>,
    failed: Option<SimError>,
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
        let mut sim = Sim {
            links: Links {
                net: Network::new(config.link.clone()),
                rng: DetRng::new(seed ^ 0x6E65_7477_6F72_6B00),
            },
            cluster: Cluster {
                make_config: Box::new(make_config),
                slots: Vec::new(),
                index: BTreeMap::new(),
                rng: DetRng::new(seed ^ 0x6E6F_6465_7300_0000),
                failed_syncs: 0,
            },
            clients: Clients::new(DetRng::new(seed ^ 0x776F_726B_6C6F_6164)),
            sched: Schedule::new(),
            rec: Recorder::new(seed, config.label_chars_max),
            invariants: Vec::new(),
            failed: None,
            config,
        };
        sim.start_nodes().map_err(fail)?;
        Ok(sim)
    }

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
            self.push(time.max(self.sched.now), Ev::Fault(fault));
        }
    }

    /// Schedules one fault at virtual time `at`.
    pub fn schedule_fault(&mut self, at: u64, fault: Fault) {
        self.push(at.max(self.sched.now), Ev::Fault(fault));
    }

    /// Sets how messages are labelled in the trace (default: `Debug`, shortened).
    pub fn set_message_label<F: Fn(&N::Message) -> String + 'static>(&mut self, label: F) {
        self.rec.message_label = Box::new(label);
    }

    /// Sets how requests are labelled in the trace (default: `Debug`, shortened).
    pub fn set_request_label<F: Fn(&N::Request) -> String + 'static>(&mut self, label: F) {
        self.rec.request_label = Box::new(label);
    }

    /// Sets how responses are labelled in the trace (default: `Debug`, shortened).
    pub fn set_response_label<F: Fn(&N::Response) -> String + 'static>(&mut self, label: F) {
        self.rec.response_label = Box::new(label);
    }

    /// Mutable access to the network, to change it between runs (see also [`Fault`]).
    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.links.net
    }

    /// Records `kind` as the run's failure (with seed, step and time) and returns it.
    pub(super) fn fail(&mut self, kind: SimErrorKind) -> SimError {
        if let SimErrorKind::Invariant { name, message } = &kind {
            let (name, message) = (name.clone(), message.clone());
            self.record(TraceKind::InvariantFailed { name, message });
        }
        let e = SimError {
            seed: self.config.seed,
            step: self.sched.steps,
            time: self.sched.now,
            kind,
        };
        self.failed = Some(e.clone());
        e
    }
}
