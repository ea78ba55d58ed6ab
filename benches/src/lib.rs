//! Shared code of the benchmarks and the `shootout` binary.
//!
//! The shootout measures every protocol through **the same plumbing**: the tokio driver
//! ([`common::driver`]), the same transport (in-memory network or TCP loopback), the same codec
//! ([`Bincode`]) and the same storage ([`MemStorage`], or the write-ahead log with fsync when
//! durable). What differs is only the protocol core, so the differences in the table are the
//! protocols' own.
//!
//! # How a run works
//!
//! For each protocol ([`Contender`]), transport and concurrency level, [`measure`] starts a
//! cluster ([`Contender::start`]), runs a *closed loop*: `concurrency` clients each issue one
//! operation ([`Cluster::run_op`]), wait for its acknowledgement, and issue the next, first for a
//! warm-up period (discarded), then for the measured period. Latencies go into an HDR histogram;
//! the driver counters of every node ([`DriverStats`]) are read before and after the measured
//! period to give messages, bytes and syncs per operation. The result is a [`Row`];
//! [`render_table`] prints the rows. Beside each row stands the paper's cost of one operation
//! ([`Contender::theory`], [`Theory`]); a measured message count more than
//! [`THEORY_TOLERANCE`] away from it becomes a [`finding`].
//!
//! The crash scenario ([`measure_crash`], [`Plan::run_faults`]) runs a closed loop, crashes the
//! leader or coordinator a third of the way in ([`Cluster::crash_leader`]: its driver stops and
//! it stays down) and reports the window of unavailability (from the crash to the first
//! acknowledgement of an operation issued after it) and the operations blocked or failed in it.
//! A request in flight at the crashed node fails at once (its driver answers that it stopped),
//! so such requests count as failed, not blocked; every client retries after 1 ms, so `failed`
//! counts attempts.
//!
//! # Adding a protocol
//!
//! Each protocol is one adapter module, `benches/src/<protocol>.rs`, of about a hundred lines:
//!
//! 1. Write the cluster type. Most adapters hold a [`Nodes<N>`] (which starts the nodes over the
//!    requested transport and storage, through the driver) and implement [`Cluster::run_op`] by
//!    sending one request, for instance to the current leader, retrying on "not the leader":
//!
//!    ```text
//!    struct RaftCluster { nodes: Nodes<RaftNode>, leader: AtomicUsize }
//!
//!    #[async_trait]
//!    impl Cluster for RaftCluster {
//!        async fn run_op(&self, client: usize, seq: u64) -> Result<(), BenchError> {
//!            let command = benches::command(client, seq); // the shared 16-byte workload
//!            // ... send to the leader, follow redirects, map a failure to BenchError::Op
//!        }
//!        fn stats(&self) -> DriverStats { self.nodes.stats() }
//!        async fn shutdown(&self) -> Result<(), BenchError> { self.nodes.shutdown().await }
//!    }
//!    ```
//!
//! 2. Write the contender: a unit struct whose [`Contender::start`] calls [`Nodes::start`] with a
//!    function building each node's configuration, then waits until the cluster is ready (a
//!    leader is elected) so that the measurement starts in the steady state.
//! 3. Register it in [`contenders`].
//!
//! [`demo`] is the smallest complete adapter; copy it.
//!
//! # The core shootout (the `peers` feature)
//!
//! The shootout above runs whole nodes; the core shootout compares the consensus cores alone
//! with the libraries people compare them with. With the `peers` feature (off by default, so
//! plain builds and tests never compile omnipaxos and raft-rs), `benches::peers` pumps
//! omnipaxos, raft-rs, our Multi-Paxos and our Raft the same way in one thread: one FIFO queue,
//! no codec, records in memory, rounds of W commands at the leader after an unmeasured election.
//!
//! ```text
//! cargo run --release -p benches --features peers --bin core-shootout            # ~15 s
//! cargo run --release -p benches --features peers --bin core-shootout -- --quick # one pass
//! cargo run --release -p benches --features peers --bin core-shootout -- --write-docs
//! cargo bench -p benches --features peers --bench peers                          # criterion
//! # one row, e.g. under a profiler:
//! cargo run --release -p benches --features peers --bin core-shootout -- \
//!     --only our-raft --replicas 3 --in-flight 100
//! ```
//!
//! The binary prints, per setup (3 replicas with W = 1 and 100, 5 replicas with W = 100),
//! commands applied at the leader per second (median and range over `--reps`), the ratio to the
//! best peer, and allocations and messages per command; it writes
//! `target/core-shootout/core-shootout.{md,json}`, and with `--write-docs` refreshes the
//! committed `docs/core-shootout.{md,json}`.

pub mod charts;
pub mod commit;
pub mod demo;
pub mod hashring;
pub mod paxos;
#[cfg(feature = "peers")]
pub mod peers;
pub mod raft;
pub mod redb_kv;
pub mod report;
pub mod threepc;
pub mod twopc;
pub mod viewer;
pub mod wan;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::codec::Bincode;
use common::driver::{self, DriverConfig, DriverError, DriverStats, NodeHandle, Persistence};
use common::transport::memory::{LinkFaults, MemoryNetwork, NetworkFaults};
use common::transport::tcp::{TcpConfig, TcpTransport};
use common::transport::{Transport, TransportError};
use common::wal::{Wal, WalConfig};
use common::{MemStorage, Node, NodeId, Storage, StorageError};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

/// The longest latency the histograms record (60 s); longer ones are clamped to it.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits kept by the latency histograms.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Most clients of one closed loop.
pub const CONCURRENCY_MAX: usize = 4096;
/// Most nodes of one cluster.
pub const CLUSTER_SIZE_MAX: usize = 15;
/// The cluster name and key used by TCP runs (loopback only).
pub const TCP_CLUSTER: &str = "shootout";
/// See [`TCP_CLUSTER`].
pub const TCP_CLUSTER_KEY: &[u8] = b"shootout-loopback-cluster-key-32";

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The driver refused or failed.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
    /// A transport could not be set up.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// Storage could not be set up.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// An operation was answered with a failure by the protocol.
    #[error("operation failed: {0}")]
    Op(String),
    /// The cluster did not become ready (no leader, ...).
    #[error("cluster not ready: {0}")]
    NotReady(String),
    /// The requested run is invalid.
    #[error("invalid run: {0}")]
    Invalid(String),
    /// An operating-system error (temporary directory, socket).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A simulator trace does not hold together (an arrival without its send), or could not be
    /// written out.
    #[error("trace: {0}")]
    Trace(String),
}

/// Which transport a cluster runs over.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The in-process network of tokio channels (no faults).
    Memory,
    /// TCP on 127.0.0.1, with the authenticated handshake.
    Tcp,
}

impl TransportKind {
    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Memory => "memory",
            TransportKind::Tcp => "tcp",
        }
    }
}

/// The shape of a cluster to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Number of nodes (ids `1..=nodes`).
    pub nodes: usize,
    /// The transport between them.
    pub transport: TransportKind,
    /// Whether records go to a write-ahead log with fsync (in a temporary directory) instead of
    /// memory.
    pub durable: bool,
    /// Seed of the protocols' and the network's randomness.
    pub seed: u64,
    /// Delay added to every message on every link, one way (the in-memory transport only):
    /// half the round trip of the wide-area scenario ([`wan`]). Zero adds none.
    pub one_way_delay: Duration,
}

/// Longest one-way delay a [`ClusterSpec`] may inject.
pub const ONE_WAY_DELAY_MAX: Duration = Duration::from_secs(5);

impl ClusterSpec {
    /// A spec without injected delay.
    pub fn new(nodes: usize, transport: TransportKind, durable: bool, seed: u64) -> Self {
        ClusterSpec {
            nodes,
            transport,
            durable,
            seed,
            one_way_delay: Duration::ZERO,
        }
    }

    /// Checks the spec.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.nodes == 0 || self.nodes > CLUSTER_SIZE_MAX {
            return Err(BenchError::Invalid(format!(
                "cluster size {} is not between 1 and {CLUSTER_SIZE_MAX}",
                self.nodes
            )));
        }
        if self.one_way_delay > ONE_WAY_DELAY_MAX {
            return Err(BenchError::Invalid(format!(
                "one-way delay {:?} exceeds {ONE_WAY_DELAY_MAX:?}",
                self.one_way_delay
            )));
        }
        if !self.one_way_delay.is_zero() && self.transport != TransportKind::Memory {
            return Err(BenchError::Invalid(
                "an injected delay needs the in-memory transport".into(),
            ));
        }
        Ok(())
    }

    /// The node ids: `1..=nodes`.
    pub fn members(&self) -> Vec<NodeId> {
        (1..=self.nodes as NodeId).collect()
    }

    /// The driver configuration every protocol runs under: inline persistence for memory
    /// storage, a persistence thread for the write-ahead log.
    pub fn driver_config(&self) -> DriverConfig {
        DriverConfig {
            persistence: if self.durable {
                Persistence::Background
            } else {
                Persistence::Inline
            },
            ..DriverConfig::default()
        }
    }
}

/// A protocol taking part in the shootout. See the crate documentation for how to add one.
#[async_trait]
pub trait Contender: Send + Sync {
    /// The protocol's name in tables ("raft", "2pc", ...).
    fn name(&self) -> &'static str;

    /// What the protocol's paper states an operation costs on a cluster of `nodes` nodes.
    fn theory(&self, nodes: usize) -> Theory;

    /// Starts a cluster of this protocol and returns once it can serve operations.
    async fn start(&self, spec: &ClusterSpec) -> Result<Arc<dyn Cluster>, BenchError>;
}

/// A running cluster of one protocol.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Runs one operation for client `client` (`0..concurrency`), its `seq`-th, and returns once
    /// the protocol acknowledged it (committed, decided, applied).
    async fn run_op(&self, client: usize, seq: u64) -> Result<(), BenchError>;

    /// The driver counters of every node, summed.
    fn stats(&self) -> DriverStats;

    /// Crashes (stops for good) the node that leads or coordinates, for the fault scenario;
    /// returns its id, or `None` when the adapter does not support the scenario. Later
    /// operations must avoid the crashed node where the protocol allows it.
    async fn crash_leader(&self) -> Result<Option<NodeId>, BenchError> {
        Ok(None)
    }

    /// Transactions that the live participants voted on and whose outcome they still do not
    /// know (each holds its locks), summed over the nodes; `None` for protocols without
    /// participants. After the coordinator's crash this is atomic commit's blocked work.
    async fn undecided(&self) -> Result<Option<u64>, BenchError> {
        Ok(None)
    }

    /// Slows every link from the leader or coordinator to the others to `delay` for `window`,
    /// then heals them; returns the slowed node, or `None` when the adapter does not support
    /// the scenario.
    async fn slow_leader_links(
        &self,
        delay: Duration,
        window: Duration,
    ) -> Result<Option<NodeId>, BenchError> {
        let _ = (delay, window);
        Ok(None)
    }

    /// Atomic commit only: decisions that reached a participant contradicting one it had
    /// already taken, summed over the live nodes (each a transaction decided both ways).
    async fn decision_conflicts(&self) -> Result<Option<u64>, BenchError> {
        Ok(None)
    }

    /// Stops every node that is still running.
    async fn shutdown(&self) -> Result<(), BenchError>;
}

/// What a protocol's paper states one operation costs in the steady state, without batching.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Theory {
    /// One-way message delays from the node receiving the request (leader, coordinator) until
    /// it can answer.
    pub message_delays: u32,
    /// Messages sent by all nodes per operation.
    pub messages_per_op: f64,
}

impl Theory {
    /// A replicated log with a stable leader (Raft, Multi-Paxos phase 2): the leader sends the
    /// entry to the `n - 1` others and each answers: 2 message delays, `2(n - 1)` messages.
    pub fn replicated_log(nodes: usize) -> Theory {
        Theory {
            message_delays: 2,
            messages_per_op: 2.0 * nodes.saturating_sub(1) as f64,
        }
    }

    /// An atomic commitment protocol with one coordinator and `nodes - 1` participants that
    /// exchanges `rounds` request/answer rounds with each participant (2PC: 2 rounds, 4 delays,
    /// 4 messages per participant; 3PC: 3 rounds, 6 delays, 6 messages per participant).
    pub fn commit_rounds(nodes: usize, rounds: u32) -> Theory {
        Theory {
            message_delays: 2 * rounds,
            messages_per_op: 2.0 * rounds as f64 * nodes.saturating_sub(1) as f64,
        }
    }
}

/// Bytes of the command every replicated-log protocol (Raft, Multi-Paxos) proposes per operation.
pub const COMMAND_BYTES: usize = 16;

/// The command of client `client`'s `seq`-th operation: [`COMMAND_BYTES`] bytes, the client and
/// the sequence number in little endian, so every command is distinct and every protocol carries
/// the same payload.
pub fn command(client: usize, seq: u64) -> [u8; COMMAND_BYTES] {
    let mut bytes = [0u8; COMMAND_BYTES];
    bytes[..8].copy_from_slice(&(client as u64).to_le_bytes());
    bytes[8..].copy_from_slice(&seq.to_le_bytes());
    bytes
}

/// Every protocol registered in the shootout.
pub fn contenders() -> Vec<Box<dyn Contender>> {
    vec![
        Box::new(demo::Demo),
        Box::new(raft::Raft),
        Box::new(paxos::MultiPaxos),
        Box::new(twopc::TwoPc),
        Box::new(threepc::ThreePc),
    ]
}

/// The nodes of one cluster, each run by the driver over the requested transport and storage.
pub struct Nodes<N: Node> {
    /// One handle per node, in id order (`handles[i]` is node `i + 1`).
    pub handles: Vec<NodeHandle<N>>,
    /// `crashed[i]`: node `handles[i]` was crashed by the fault scenario.
    crashed: Vec<AtomicBool>,
    /// The in-memory network's fault controls (`None` over TCP), for the slow-link scenario.
    faults: Option<NetworkFaults>,
    /// Holds the write-ahead logs' directory of a durable run until the cluster is dropped.
    _dir: Option<tempfile::TempDir>,
}

impl<N: Node> Nodes<N> {
    /// Starts `spec.nodes` nodes, node `id` with configuration `config(id, &members)`, recovered
    /// from empty storage, with [`ClusterSpec::driver_config`] and the [`Bincode`] codec.
    pub async fn start(
        spec: &ClusterSpec,
        config: impl Fn(NodeId, &[NodeId]) -> N::Config,
    ) -> Result<Self, BenchError> {
        spec.validate()?;
        let members = spec.members();
        let dir = if spec.durable {
            Some(tempfile::tempdir()?)
        } else {
            None
        };
        let mut handles = Vec::with_capacity(members.len());
        let mut faults = None;
        match spec.transport {
            TransportKind::Memory => {
                let network = MemoryNetwork::new(spec.seed);
                faults = Some(network.faults());
                if !spec.one_way_delay.is_zero() {
                    // A fixed delay keeps every link FIFO, as a TCP connection across a WAN is.
                    network.faults().set_default(LinkFaults {
                        delay_min: spec.one_way_delay,
                        delay_max: spec.one_way_delay,
                        ..LinkFaults::NONE
                    });
                }
                let transports = members
                    .iter()
                    .map(|&id| network.join(id))
                    .collect::<Result<Vec<_>, _>>()?;
                for (transport, &id) in transports.into_iter().zip(&members) {
                    let node_config = config(id, &members);
                    handles.push(
                        start_node::<N, _>(spec, dir.as_ref(), id, node_config, transport).await?,
                    );
                }
            }
            TransportKind::Tcp => {
                let mut listeners = Vec::new();
                let mut addrs: BTreeMap<NodeId, SocketAddr> = BTreeMap::new();
                for &id in &members {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    addrs.insert(id, listener.local_addr()?);
                    listeners.push(listener);
                }
                for (listener, &id) in listeners.into_iter().zip(&members) {
                    let tcp = TcpConfig::new(
                        id,
                        TCP_CLUSTER,
                        TCP_CLUSTER_KEY.to_vec(),
                        addrs[&id],
                        addrs.clone(),
                    );
                    let transport = TcpTransport::with_listener(tcp, listener)?;
                    let node_config = config(id, &members);
                    handles.push(
                        start_node::<N, _>(spec, dir.as_ref(), id, node_config, transport).await?,
                    );
                }
            }
        }
        let crashed = handles.iter().map(|_| AtomicBool::new(false)).collect();
        Ok(Self {
            handles,
            crashed,
            faults,
            _dir: dir,
        })
    }

    /// Delays every frame from node `from` to every other node by `delay` (in-memory transport
    /// only; frames already sent keep the delay they were given). Returns whether it could.
    pub fn slow_links_from(&self, from: NodeId, delay: Duration) -> bool {
        let Some(faults) = &self.faults else {
            return false;
        };
        for h in &self.handles {
            if h.id() != from {
                faults.set_link(
                    from,
                    h.id(),
                    LinkFaults {
                        delay_min: delay,
                        delay_max: delay,
                        ..LinkFaults::NONE
                    },
                );
            }
        }
        true
    }

    /// Ends [`Nodes::slow_links_from`].
    pub fn heal_links(&self) {
        if let Some(faults) = &self.faults {
            faults.clear();
        }
    }

    /// The driver counters of every node, summed.
    pub fn stats(&self) -> DriverStats {
        self.handles.iter().map(|h| h.stats()).sum()
    }

    /// Whether `handles[i]` was crashed.
    pub fn is_crashed(&self, i: usize) -> bool {
        self.crashed
            .get(i)
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// The first node after `handles[i]` (cyclically) that was not crashed.
    pub fn next_live(&self, i: usize) -> usize {
        let n = self.handles.len().max(1);
        (1..=n)
            .map(|d| (i + d) % n)
            .find(|&j| !self.is_crashed(j))
            .unwrap_or(i % n)
    }

    /// Crashes `handles[i]`: its driver stops at once, without a goodbye to its peers (they
    /// only notice its silence), and it stays down. Returns its id.
    pub async fn crash(&self, i: usize) -> NodeId {
        if let Some(c) = self.crashed.get(i) {
            c.store(true, Ordering::Relaxed);
        }
        // A node already stopped is as crashed as it gets: the error is not interesting.
        let _ = self.handles[i].shutdown().await;
        self.handles[i].id()
    }

    /// Shuts every node down (but the crashed ones); reports the first error.
    pub async fn shutdown(&self) -> Result<(), BenchError> {
        let mut first = Ok(());
        for (i, handle) in self.handles.iter().enumerate() {
            if self.is_crashed(i) {
                continue;
            }
            if let Err(e) = handle.shutdown().await {
                if first.is_ok() {
                    first = Err(BenchError::Driver(e));
                }
            }
        }
        first
    }
}

async fn start_node<N: Node, T: Transport>(
    spec: &ClusterSpec,
    dir: Option<&tempfile::TempDir>,
    id: NodeId,
    config: N::Config,
    transport: T,
) -> Result<NodeHandle<N>, BenchError> {
    let driver_config = spec.driver_config();
    let handle = match dir {
        Some(dir) => {
            let wal = Wal::open(WalConfig::new(dir.path().join(format!("node-{id}"))))?;
            spawn_on::<N, T, _>(config, transport, wal, driver_config).await?
        }
        None => spawn_on::<N, T, _>(config, transport, MemStorage::new(), driver_config).await?,
    };
    Ok(handle)
}

async fn spawn_on<N: Node, T: Transport, S: Storage>(
    config: N::Config,
    transport: T,
    storage: S,
    driver_config: DriverConfig,
) -> Result<NodeHandle<N>, DriverError> {
    driver::spawn_recovered::<N, T, S, Bincode>(config, transport, storage, Bincode, driver_config)
        .await
}

/// The closed-loop workload of one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Clients, each with one operation in flight.
    pub concurrency: usize,
    /// Operations run before measuring, and discarded (connections up, caches warm).
    pub warmup: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// Stop measuring after this many operations, even before `duration` ends.
    pub ops_max: Option<u64>,
}

impl Workload {
    /// Checks the workload.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.concurrency == 0 || self.concurrency > CONCURRENCY_MAX {
            return Err(BenchError::Invalid(format!(
                "concurrency {} is not between 1 and {CONCURRENCY_MAX}",
                self.concurrency
            )));
        }
        if self.duration.is_zero() && self.ops_max.is_none() {
            return Err(BenchError::Invalid(
                "a run needs a duration or an operation count".into(),
            ));
        }
        Ok(())
    }
}

/// One line of the shootout's table: one protocol, transport, cluster size and concurrency.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Row {
    /// The protocol ([`Contender::name`]).
    pub protocol: String,
    /// The transport.
    pub transport: TransportKind,
    /// Whether storage was the write-ahead log with fsync.
    pub durable: bool,
    /// Cluster size.
    pub nodes: usize,
    /// Clients in the closed loop.
    pub concurrency: usize,
    /// Operations acknowledged during the measured period.
    pub ops: u64,
    /// Operations that failed during the measured period.
    pub errors: u64,
    /// Length of the measured period, in seconds.
    pub elapsed_secs: f64,
    /// Acknowledged operations per second.
    pub ops_per_sec: f64,
    /// Median latency of an acknowledged operation, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency, in microseconds.
    pub p999_us: f64,
    /// Largest latency, in microseconds.
    pub max_us: f64,
    /// Messages sent by all nodes per acknowledged operation.
    pub msgs_per_op: f64,
    /// Bytes of those messages per acknowledged operation.
    pub bytes_per_op: f64,
    /// Records appended to storage by all nodes per acknowledged operation.
    pub records_per_op: f64,
    /// Storage syncs of all nodes per acknowledged operation.
    pub syncs_per_op: f64,
    /// What the paper states: message delays and messages per operation.
    pub theory: Theory,
    /// How the measured messages per operation compare with [`Row::theory`], when they differ.
    pub finding: Option<String>,
}

/// Relative difference between measured and theoretical messages per operation below which they
/// are said to match (heartbeats and the last acknowledgements in flight blur the count a bit).
pub const THEORY_TOLERANCE: f64 = 0.10;

/// Compares measured messages per operation with the paper's; `None` when they match within
/// [`THEORY_TOLERANCE`].
pub fn finding(
    protocol: &str,
    nodes: usize,
    concurrency: usize,
    measured: f64,
    theory: &Theory,
) -> Option<String> {
    let expected = theory.messages_per_op;
    if expected <= 0.0 || (measured - expected).abs() <= THEORY_TOLERANCE * expected {
        return None;
    }
    let why = match (measured < expected, concurrency > 1) {
        (true, true) => {
            "below the paper's count: with several operations in flight one message carries \
             many commands or acknowledgements (batching), which the paper's per-operation \
             count does not assume"
        }
        (true, false) => {
            "below the paper's count with one operation in flight: the leader answers once a \
             majority acknowledged, so a slower follower likely receives several entries in one \
             message (records/op below the cluster size points the same way)"
        }
        (false, _) => {
            "above the paper's count: messages the steady-state count leaves out (heartbeats, \
             commit notifications, retries, extra acknowledgement rounds) cost more than one per \
             operation"
        }
    };
    Some(format!(
        "{protocol}, {nodes} nodes, {concurrency} clients: {measured:.2} messages/op measured vs \
         {expected:.0} in theory, {why}"
    ))
}

fn per_op(total: u64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        total as f64 / ops as f64
    }
}

/// Starts a cluster of `contender`, runs `workload` against it and shuts it down. `progress`
/// advances by one per acknowledged operation (warm-up included).
pub async fn measure(
    contender: &dyn Contender,
    spec: &ClusterSpec,
    workload: &Workload,
    progress: &ProgressBar,
) -> Result<Row, BenchError> {
    spec.validate()?;
    workload.validate()?;
    let cluster = contender.start(spec).await?;
    let result = measure_on(cluster.clone(), workload, progress).await;
    let stopped = cluster.shutdown().await;
    let (histogram, ops, errors, elapsed, stats) = result?;
    stopped?;
    let us = |ns: u64| ns as f64 / 1_000.0;
    let theory = contender.theory(spec.nodes);
    let msgs_per_op = per_op(stats.messages_sent, ops);
    Ok(Row {
        finding: finding(
            contender.name(),
            spec.nodes,
            workload.concurrency,
            msgs_per_op,
            &theory,
        ),
        theory,
        protocol: contender.name().to_string(),
        transport: spec.transport,
        durable: spec.durable,
        nodes: spec.nodes,
        concurrency: workload.concurrency,
        ops,
        errors,
        elapsed_secs: elapsed.as_secs_f64(),
        ops_per_sec: if elapsed.is_zero() {
            0.0
        } else {
            ops as f64 / elapsed.as_secs_f64()
        },
        p50_us: us(histogram.value_at_quantile(0.50)),
        p99_us: us(histogram.value_at_quantile(0.99)),
        p999_us: us(histogram.value_at_quantile(0.999)),
        max_us: us(histogram.max()),
        msgs_per_op,
        bytes_per_op: per_op(stats.bytes_sent, ops),
        records_per_op: per_op(stats.records_persisted, ops),
        syncs_per_op: per_op(stats.syncs, ops),
    })
}

type Measured = (Histogram<u64>, u64, u64, Duration, DriverStats);

async fn measure_on(
    cluster: Arc<dyn Cluster>,
    workload: &Workload,
    progress: &ProgressBar,
) -> Result<Measured, BenchError> {
    if !workload.warmup.is_zero() {
        closed_loop(
            &cluster,
            workload.concurrency,
            workload.warmup,
            None,
            progress,
        )
        .await?;
    }
    let before = cluster.stats();
    let start = Instant::now();
    let (histogram, ops, errors) = closed_loop(
        &cluster,
        workload.concurrency,
        workload.duration,
        workload.ops_max,
        progress,
    )
    .await?;
    let elapsed = start.elapsed();
    let stats = cluster.stats() - before;
    Ok((histogram, ops, errors, elapsed, stats))
}

fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .map_err(|e| BenchError::Invalid(format!("histogram: {e}")))
}

/// `concurrency` clients, each running operations back to back until `duration` passed (when
/// not zero) or `ops_max` operations completed in total. Returns the merged latency histogram
/// (nanoseconds), the acknowledged and the failed operations.
async fn closed_loop(
    cluster: &Arc<dyn Cluster>,
    concurrency: usize,
    duration: Duration,
    ops_max: Option<u64>,
    progress: &ProgressBar,
) -> Result<(Histogram<u64>, u64, u64), BenchError> {
    let deadline = (!duration.is_zero()).then(|| Instant::now() + duration);
    let started = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..concurrency {
        let cluster = cluster.clone();
        let started = started.clone();
        let progress = progress.clone();
        let mut histogram = new_histogram()?;
        clients.spawn(async move {
            let (mut ops, mut errors) = (0u64, 0u64);
            for seq in 0.. {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if let Some(max) = ops_max {
                    if started.fetch_add(1, Ordering::Relaxed) >= max {
                        break;
                    }
                }
                let t0 = Instant::now();
                match cluster.run_op(client, seq).await {
                    Ok(()) => {
                        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        histogram.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
                        ops += 1;
                        progress.inc(1);
                    }
                    Err(error) => {
                        errors += 1;
                        tracing::debug!(client, %error, "operation failed");
                        // A failing cluster (no leader yet, overloaded) must not be hammered by
                        // a tight loop.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (histogram, ops, errors)
        });
    }
    let mut merged = new_histogram()?;
    let (mut ops, mut errors) = (0, 0);
    while let Some(joined) = clients.join_next().await {
        let (histogram, o, e) =
            joined.map_err(|e| BenchError::Op(format!("a client task failed: {e}")))?;
        merged
            .add(&histogram)
            .map_err(|e| BenchError::Invalid(format!("histogram: {e}")))?;
        ops += o;
        errors += e;
    }
    Ok((merged, ops, errors))
}

/// The table's column headers.
pub const COLUMNS: [&str; 18] = [
    "protocol",
    "transport",
    "storage",
    "nodes",
    "clients",
    "ops",
    "errors",
    "ops/s",
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "max µs",
    "msgs/op",
    "bytes/op",
    "records/op",
    "syncs/op",
    "theory delays",
    "theory msgs/op",
];

/// The cells of `row`, in the order of [`COLUMNS`].
pub fn cells(row: &Row) -> [String; COLUMNS.len()] {
    [
        row.protocol.clone(),
        row.transport.name().to_string(),
        if row.durable { "wal+fsync" } else { "memory" }.to_string(),
        row.nodes.to_string(),
        row.concurrency.to_string(),
        row.ops.to_string(),
        row.errors.to_string(),
        format!("{:.0}", row.ops_per_sec),
        format!("{:.1}", row.p50_us),
        format!("{:.1}", row.p99_us),
        format!("{:.1}", row.p999_us),
        format!("{:.1}", row.max_us),
        format!("{:.2}", row.msgs_per_op),
        format!("{:.1}", row.bytes_per_op),
        format!("{:.2}", row.records_per_op),
        format!("{:.2}", row.syncs_per_op),
        row.theory.message_delays.to_string(),
        format!("{:.0}", row.theory.messages_per_op),
    ]
}

/// Renders `rows` as a Markdown table (figures right-aligned).
pub fn render_markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", COLUMNS.join(" | "));
    let align: Vec<&str> = (0..COLUMNS.len())
        .map(|i| if i < 3 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for row in rows {
        let _ = writeln!(out, "| {} |", cells(row).join(" | "));
    }
    out
}

/// Renders `rows` as pretty-printed JSON (an array of objects with every [`Row`] field).
pub fn render_json(rows: &[Row]) -> Result<String, BenchError> {
    serde_json::to_string_pretty(rows).map_err(|e| BenchError::Invalid(format!("json: {e}")))
}

/// Renders `rows` as an aligned text table (one header line, one line per row).
pub fn render_table(rows: &[Row]) -> String {
    let body: Vec<[String; COLUMNS.len()]> = rows.iter().map(cells).collect();
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for cells in &body {
        for (w, cell) in widths.iter_mut().zip(cells) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            // Names left-aligned, figures right-aligned.
            if i < 3 {
                let _ = write!(text, "{cell}{:pad$}  ", "");
            } else {
                let _ = write!(text, "{:pad$}{cell}  ", "");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&COLUMNS.map(String::from));
    for cells in &body {
        line(cells);
    }
    out
}

/// What one shootout run covers: every combination of the listed protocols, transports, cluster
/// sizes and concurrency levels, each measured with the same workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Protocol names to run ([`Contender::name`]); empty means all registered ones.
    pub protocols: Vec<String>,
    /// Transports to run over.
    pub transports: Vec<TransportKind>,
    /// Cluster sizes.
    pub cluster_sizes: Vec<usize>,
    /// Concurrency levels (clients in the closed loop).
    pub concurrency: Vec<usize>,
    /// Warm-up and measured period of each measurement (its `concurrency` is overridden).
    pub workload: Workload,
    /// Whether storage is the write-ahead log with fsync.
    pub durable: bool,
    /// Seed of the protocols' and the network's randomness.
    pub seed: u64,
    /// Length of each crash-scenario run ([`measure_crash`]); zero skips the scenario.
    pub fault_duration: Duration,
}

impl Plan {
    /// The contenders selected by [`Plan::protocols`], in registration order. Fails on a name
    /// that is not registered.
    pub fn contenders(&self) -> Result<Vec<Box<dyn Contender>>, BenchError> {
        let all = contenders();
        for wanted in &self.protocols {
            if !all.iter().any(|c| c.name() == wanted) {
                let known: Vec<_> = all.iter().map(|c| c.name()).collect();
                return Err(BenchError::Invalid(format!(
                    "unknown protocol {wanted:?}; registered: {known:?}"
                )));
            }
        }
        Ok(all
            .into_iter()
            .filter(|c| self.protocols.is_empty() || self.protocols.iter().any(|p| p == c.name()))
            .collect())
    }

    /// The number of measurements the plan makes.
    pub fn measurements(&self) -> Result<usize, BenchError> {
        Ok(self.contenders()?.len()
            * self.transports.len()
            * self.cluster_sizes.len()
            * self.concurrency.len())
    }

    /// Runs every measurement in order. `progress` counts acknowledged operations; its message
    /// names the measurement under way.
    pub async fn run(&self, progress: &ProgressBar) -> Result<Vec<Row>, BenchError> {
        let mut rows = Vec::new();
        let total = self.measurements()?;
        for contender in self.contenders()? {
            for &transport in &self.transports {
                for &nodes in &self.cluster_sizes {
                    for &concurrency in &self.concurrency {
                        progress.set_message(format!(
                            "[{}/{total}] {} over {}, {nodes} nodes, {concurrency} clients",
                            rows.len() + 1,
                            contender.name(),
                            transport.name(),
                        ));
                        let spec = ClusterSpec::new(nodes, transport, self.durable, self.seed);
                        let workload = Workload {
                            concurrency,
                            ..self.workload
                        };
                        rows.push(measure(contender.as_ref(), &spec, &workload, progress).await?);
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Runs the fault scenarios ([`measure_fault`]: the crash, and the slow links over the
    /// in-memory transport) for every selected protocol and cluster size, over the first
    /// transport, with the largest concurrency level. Protocols whose adapter does not support
    /// a scenario are left out of it (only the commit protocols slow their coordinator's links).
    pub async fn run_faults(&self, progress: &ProgressBar) -> Result<Vec<FaultRow>, BenchError> {
        let mut rows = Vec::new();
        if self.fault_duration.is_zero() {
            return Ok(rows);
        }
        let transport = self
            .transports
            .first()
            .copied()
            .unwrap_or(TransportKind::Memory);
        let concurrency = self.concurrency.iter().copied().max().unwrap_or(1);
        for contender in self.contenders()? {
            for &nodes in &self.cluster_sizes {
                progress.set_message(format!(
                    "crash scenario: {} over {}, {nodes} nodes, {concurrency} clients",
                    contender.name(),
                    transport.name()
                ));
                let spec = ClusterSpec::new(nodes, transport, self.durable, self.seed);
                for fault in [Fault::Crash, SLOW_LINKS] {
                    // The slow links need the in-memory network's fault controls.
                    if fault != Fault::Crash && transport != TransportKind::Memory {
                        continue;
                    }
                    let row = measure_fault(
                        contender.as_ref(),
                        &spec,
                        fault,
                        concurrency,
                        self.fault_duration,
                        progress,
                    )
                    .await?;
                    if row.crashed.is_some() {
                        rows.push(row);
                    }
                }
            }
        }
        Ok(rows)
    }
}

/// Longest an operation may take in the fault scenario before it counts as failed (a request
/// stuck at a crashed node must not stall the closed loop).
pub const FAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of the crash scenario for one protocol and cluster size: the leader (or
/// coordinator) is crashed a third of the way into a closed-loop run and stays down.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FaultRow {
    /// The protocol ([`Contender::name`]).
    pub protocol: String,
    /// The transport.
    pub transport: TransportKind,
    /// Cluster size.
    pub nodes: usize,
    /// Clients in the closed loop.
    pub concurrency: usize,
    /// The fault injected ([`Fault::name`]).
    pub scenario: String,
    /// The node crashed (or whose links were slowed); `None` when the adapter does not support
    /// the scenario.
    pub crashed: Option<NodeId>,
    /// Operations acknowledged before the crash.
    pub ops_before: u64,
    /// Operations acknowledged after the cluster recovered.
    pub ops_after: u64,
    /// Milliseconds from the crash until the first acknowledgement of an operation issued after
    /// it; `None` when the cluster did not recover before the run ended.
    pub unavailable_ms: Option<f64>,
    /// Operations in flight across the outage that were acknowledged only once it ended.
    pub blocked: u64,
    /// Operations that failed (error or [`FAULT_OP_TIMEOUT`]) between the crash and the recovery
    /// (or the end of the run).
    pub failed: u64,
    /// Atomic commit only ([`Cluster::undecided`]): transactions the surviving participants still
    /// hold undecided, with their locks, at the end of the run. Two-phase commit leaves here
    /// what the crashed coordinator had prepared; three-phase commit's termination protocol
    /// decides it without the coordinator.
    pub undecided_at_end: Option<u64>,
    /// Atomic commit only ([`Cluster::decision_conflicts`]): decisions that contradicted one a
    /// participant had already taken, at the end of the run: transactions decided both ways.
    pub conflicts_at_end: Option<u64>,
    /// What happened, in words.
    pub note: String,
    /// When the fault hit, in milliseconds from the start of the run.
    pub fault_at_ms: f64,
    /// Operations acknowledged in each [`FAULT_WINDOW`] of the run, from its start: the
    /// throughput around the fault, window by window.
    pub acks_per_window: Vec<u64>,
}

/// Width of the windows of [`FaultRow::acks_per_window`].
pub const FAULT_WINDOW: Duration = Duration::from_millis(10);

/// Counts the acknowledgements at `acked` (offsets from the start of a run) in consecutive
/// windows of `window`, from the start to the end of the run, `span` (or to the last
/// acknowledgement, if later). There are at most `windows_max` windows: acknowledgements past
/// the last one are left out, so that a run far longer than planned cannot make the list grow
/// without bound.
pub fn windows(
    acked: &[Duration],
    span: Duration,
    window: Duration,
    windows_max: usize,
) -> Vec<u64> {
    let width = window.as_nanos().max(1);
    let index = |d: Duration| usize::try_from(d.as_nanos() / width).unwrap_or(usize::MAX);
    let mut counts: Vec<u64> = vec![0; index(span).min(windows_max)];
    for &at in acked {
        let i = index(at);
        if i >= windows_max {
            continue;
        }
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] += 1;
    }
    counts
}

/// Most windows of [`FaultRow::acks_per_window`]: 100 s of 10 ms windows.
pub const FAULT_WINDOWS_MAX: usize = 10_000;

/// A fault the fault scenarios inject a third of the way into a closed-loop run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The leader or coordinator crashes and stays down.
    Crash,
    /// Every link from the leader or coordinator to the others becomes slow: each frame sent
    /// during `window` takes `delay` to arrive. Nothing is lost and nobody crashes.
    SlowLinks {
        /// One-way delay of a frame sent in the window.
        delay: Duration,
        /// How long the links stay slow.
        window: Duration,
    },
}

impl Fault {
    /// The scenario's name in tables.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::SlowLinks { .. } => "slow links",
        }
    }
}

/// Quiet time after a slow-link fault's delay, before the participants are asked.
pub const SLOW_LINKS_SETTLE: Duration = Duration::from_secs(1);

/// The slow-link scenario of the shootout: 1 s per frame from the coordinator for half a
/// second, far beyond 3PC's ack (200 ms) and termination (300 ms) timeouts with the driver's
/// 10 ms tick.
pub const SLOW_LINKS: Fault = Fault::SlowLinks {
    delay: Duration::from_secs(1),
    window: Duration::from_millis(500),
};

/// Runs the crash scenario: `concurrency` clients in a closed loop for `duration`; a third of the
/// way in, [`Cluster::crash_leader`] crashes the leader or coordinator for good.
pub async fn measure_crash(
    contender: &dyn Contender,
    spec: &ClusterSpec,
    concurrency: usize,
    duration: Duration,
    progress: &ProgressBar,
) -> Result<FaultRow, BenchError> {
    measure_fault(
        contender,
        spec,
        Fault::Crash,
        concurrency,
        duration,
        progress,
    )
    .await
}

/// Runs a fault scenario: `concurrency` clients in a closed loop for `duration`; a third of the
/// way in, `fault` hits the leader or coordinator. After a slow-link fault the cluster is left
/// quiet for [`SLOW_LINKS_SETTLE`] more than the delay, so every late frame has arrived before
/// the participants are asked what they decided.
pub async fn measure_fault(
    contender: &dyn Contender,
    spec: &ClusterSpec,
    fault: Fault,
    concurrency: usize,
    duration: Duration,
    progress: &ProgressBar,
) -> Result<FaultRow, BenchError> {
    spec.validate()?;
    Workload {
        concurrency,
        warmup: Duration::ZERO,
        duration,
        ops_max: None,
    }
    .validate()?;
    let cluster = contender.start(spec).await?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..concurrency {
        let cluster = cluster.clone();
        let progress = progress.clone();
        clients.spawn(async move {
            // (issued, answered, acknowledged) of every operation of this client.
            let mut ops: Vec<(Instant, Instant, bool)> = Vec::new();
            for seq in 0.. {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                let ok = matches!(
                    tokio::time::timeout(FAULT_OP_TIMEOUT, cluster.run_op(client, seq)).await,
                    Ok(Ok(()))
                );
                ops.push((t0, Instant::now(), ok));
                if ok {
                    progress.inc(1);
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            ops
        });
    }
    tokio::time::sleep(duration / 3).await;
    // The outage starts once the crashed node has stopped (operations it answered while
    // stopping were served), or as soon as the links slow down (the call returns when they
    // heal).
    let (crashed, crash_at) = match fault {
        Fault::Crash => {
            let crashed = cluster.crash_leader().await;
            (crashed, Instant::now())
        }
        Fault::SlowLinks { delay, window } => {
            let at = Instant::now();
            (cluster.slow_leader_links(delay, window).await, at)
        }
    };
    let mut ops = Vec::new();
    while let Some(joined) = clients.join_next().await {
        ops.extend(joined.map_err(|e| BenchError::Op(format!("a client task failed: {e}")))?);
    }
    if let Fault::SlowLinks { delay, .. } = fault {
        tokio::time::sleep(delay + SLOW_LINKS_SETTLE).await;
    }
    let undecided_at_end = cluster.undecided().await;
    let conflicts_at_end = cluster.decision_conflicts().await;
    let stopped = cluster.shutdown().await;
    let crashed = crashed?;
    let undecided_at_end = undecided_at_end?;
    let conflicts_at_end = conflicts_at_end?;
    stopped?;
    let recovered_at = ops
        .iter()
        .filter(|(issued, _, ok)| *ok && *issued >= crash_at)
        .map(|&(_, answered, _)| answered)
        .min();
    let end = recovered_at.unwrap_or_else(Instant::now);
    let ops_before = ops
        .iter()
        .filter(|(_, answered, ok)| *ok && *answered < crash_at)
        .count() as u64;
    let ops_after = ops
        .iter()
        .filter(|(_, answered, ok)| *ok && recovered_at.is_some_and(|r| *answered >= r))
        .count() as u64;
    let blocked = ops
        .iter()
        .filter(|(issued, answered, ok)| *ok && *issued < crash_at && *answered >= end)
        .count() as u64;
    let failed = ops
        .iter()
        .filter(|(_, answered, ok)| !*ok && *answered >= crash_at && *answered <= end)
        .count() as u64;
    let unavailable_ms = recovered_at.map(|r| r.duration_since(crash_at).as_secs_f64() * 1e3);
    let mut note = match (fault, crashed, unavailable_ms) {
        (_, None, _) => format!("the adapter does not support the {} scenario", fault.name()),
        (Fault::SlowLinks { delay, window }, Some(id), _) => format!(
            "node {id}'s links delayed every frame by {} ms for {} ms",
            delay.as_millis(),
            window.as_millis()
        ),
        (Fault::Crash, Some(id), Some(ms)) => {
            format!("node {id} crashed; a new leader served again after {ms:.0} ms")
        }
        (Fault::Crash, Some(id), None) => format!(
            "node {id} crashed; no operation completed afterwards: nothing takes over from a \
             crashed coordinator (it does not restart in this scenario), so no new transaction \
             starts"
        ),
    };
    match undecided_at_end {
        Some(0) if fault == Fault::Crash => note.push_str(
            "; the participants decided every transaction the coordinator left open, without it",
        ),
        Some(0) => note.push_str("; nothing is left undecided"),
        Some(n) => note.push_str(&format!(
            "; {n} transaction(s) stay undecided at the participants, holding their locks \
             until the coordinator returns"
        )),
        None => {}
    }
    match conflicts_at_end {
        Some(0) | None => {}
        Some(n) => note.push_str(&format!(
            "; {n} decision(s) reached a participant that had decided the other way: \
             transactions decided both ways"
        )),
    }
    Ok(FaultRow {
        scenario: fault.name().to_string(),
        conflicts_at_end,
        protocol: contender.name().to_string(),
        transport: spec.transport,
        nodes: spec.nodes,
        concurrency,
        crashed,
        ops_before,
        ops_after,
        unavailable_ms,
        blocked,
        failed,
        undecided_at_end,
        note,
        fault_at_ms: crash_at.duration_since(start).as_secs_f64() * 1e3,
        acks_per_window: windows(
            &ops.iter()
                .filter(|(_, _, ok)| *ok)
                .map(|&(_, answered, _)| answered.duration_since(start))
                .collect::<Vec<_>>(),
            duration,
            FAULT_WINDOW,
            FAULT_WINDOWS_MAX,
        ),
    })
}

/// The fault table's column headers.
pub const FAULT_COLUMNS: [&str; 12] = [
    "scenario",
    "protocol",
    "transport",
    "nodes",
    "clients",
    "crashed",
    "ops before",
    "unavailable ms",
    "blocked",
    "failed",
    "undecided at end",
    "conflicts at end",
];

fn fault_cells(row: &FaultRow) -> [String; FAULT_COLUMNS.len()] {
    [
        row.scenario.clone(),
        row.protocol.clone(),
        row.transport.name().to_string(),
        row.nodes.to_string(),
        row.concurrency.to_string(),
        row.crashed.map_or("-".into(), |id| format!("node {id}")),
        row.ops_before.to_string(),
        row.unavailable_ms
            .map_or("not recovered".into(), |ms| format!("{ms:.0}")),
        row.blocked.to_string(),
        row.failed.to_string(),
        row.undecided_at_end.map_or("-".into(), |n| n.to_string()),
        row.conflicts_at_end.map_or("-".into(), |n| n.to_string()),
    ]
}

/// Renders rows of any table as Markdown; the first `names` columns are left-aligned.
pub(crate) fn markdown_table(columns: &[&str], body: &[Vec<String>], names: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", columns.join(" | "));
    let align: Vec<&str> = (0..columns.len())
        .map(|i| if i < names { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for cells in body {
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// Renders rows of any table as aligned text; the first `names` columns are left-aligned.
pub(crate) fn text_table(columns: &[&str], body: &[Vec<String>], names: usize) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for cells in body {
        for (w, cell) in widths.iter_mut().zip(cells) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            if i < names {
                let _ = write!(text, "{cell}{:pad$}  ", "");
            } else {
                let _ = write!(text, "{:pad$}{cell}  ", "");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&columns.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    for cells in body {
        line(cells);
    }
    out
}

/// Renders the fault rows as aligned text (or Markdown).
pub fn render_faults(rows: &[FaultRow], markdown: bool) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(|r| fault_cells(r).to_vec()).collect();
    let mut out = if markdown {
        markdown_table(&FAULT_COLUMNS, &body, 3)
    } else {
        text_table(&FAULT_COLUMNS, &body, 3)
    };
    out.push('\n');
    for row in rows {
        let _ = writeln!(
            out,
            "{}{} ({}), {} nodes: {}",
            if markdown { "- " } else { "  " },
            row.protocol,
            row.scenario,
            row.nodes,
            row.note
        );
    }
    out
}

/// The findings of `rows`: every mismatch between measured and theoretical messages per
/// operation.
pub fn findings(rows: &[Row]) -> Vec<String> {
    rows.iter().filter_map(|r| r.finding.clone()).collect()
}

/// The machine a report was produced on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Machine {
    /// Logical cores available to the process.
    pub cores: usize,
    /// Operating system and architecture (`linux x86_64`).
    pub os: String,
    /// The kernel release, when `uname -r` answers.
    pub kernel: Option<String>,
    /// `rustc --version`, when a compiler is on the path.
    pub rustc: Option<String>,
}

impl Machine {
    /// Describes the machine the process runs on.
    pub fn describe() -> Machine {
        let run = |cmd: &str, arg: &str| {
            std::process::Command::new(cmd)
                .arg(arg)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        };
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            kernel: run("uname", "-r"),
            rustc: run("rustc", "--version"),
        }
    }
}

/// Every figure of one shootout run, as written to the JSON file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Transports, storage, durations, in words.
    pub setup: String,
    /// The steady-state measurements.
    pub rows: Vec<Row>,
    /// Mismatches between measured and theoretical message counts.
    pub findings: Vec<String>,
    /// The crash scenario (empty when not run).
    pub faults: Vec<FaultRow>,
    /// The consistent-hashing comparison (empty when not run).
    pub hashring: Vec<hashring::Row>,
}

impl Report {
    /// Renders the whole report as Markdown: setup, table, findings, faults, hashring.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Shootout\n");
        let _ = writeln!(
            out,
            "Machine: {} cores, {}{}{}. {}\n",
            self.machine.cores,
            self.machine.os,
            self.machine
                .kernel
                .as_ref()
                .map_or(String::new(), |k| format!(", kernel {k}")),
            self.machine
                .rustc
                .as_ref()
                .map_or(String::new(), |r| format!(", {r}")),
            self.setup
        );
        out.push_str(&render_markdown(&self.rows));
        if !self.findings.is_empty() {
            let _ = writeln!(out, "\n## Findings: measurement against theory\n");
            for f in &self.findings {
                let _ = writeln!(out, "- {f}");
            }
        }
        if !self.faults.is_empty() {
            let _ = writeln!(out, "\n## Faults: a crash, and slow links\n");
            out.push_str(&render_faults(&self.faults, true));
        }
        if !self.hashring.is_empty() {
            let _ = writeln!(out, "\n## Consistent hashing\n\n```text");
            out.push_str(&hashring::format_table(&self.hashring));
            let _ = writeln!(out, "```");
        }
        out
    }

    /// Renders every figure as pretty-printed JSON.
    pub fn json(&self) -> Result<String, BenchError> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError::Invalid(format!("json: {e}")))
    }
}

/// Smallest size of the chart, in pixels.
pub const CHART_SIZE: (u32, u32) = (1600, 800);
/// Width given to each bar of the chart, in pixels, so its label fits beneath it.
pub const CHART_BAR_WIDTH: u32 = 115;

/// Renders an SVG chart of `rows`: throughput (top) and p99 latency (bottom), one bar per row.
pub fn render_svg(rows: &[Row]) -> Result<String, BenchError> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| BenchError::Invalid(format!("chart: {e}"));
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            let tcp = if r.transport == TransportKind::Tcp {
                " tcp"
            } else {
                ""
            };
            format!("{} {}n {}c{tcp}", r.protocol, r.nodes, r.concurrency)
        })
        .collect();
    let mut svg = String::new();
    {
        let width = CHART_SIZE
            .0
            .max(CHART_BAR_WIDTH.saturating_mul(u32::try_from(rows.len()).unwrap_or(u32::MAX)));
        let root = SVGBackend::with_string(&mut svg, (width, CHART_SIZE.1)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let panels = root.split_evenly((2, 1));
        let figures: [(&str, Vec<f64>, RGBColor); 2] = [
            (
                "throughput (acknowledged ops/s, higher is better)",
                rows.iter().map(|r| r.ops_per_sec).collect(),
                RGBColor(31, 119, 180),
            ),
            (
                "p99 latency (µs, lower is better)",
                rows.iter().map(|r| r.p99_us).collect(),
                RGBColor(214, 39, 40),
            ),
        ];
        for (panel, (title, values, color)) in panels.iter().zip(figures) {
            let top = values.iter().cloned().fold(0.0_f64, f64::max).max(1.0) * 1.1;
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(60)
                .y_label_area_size(80)
                .build_cartesian_2d((0..values.len()).into_segmented(), 0.0..top)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(values.len().max(1))
                .x_label_style(("sans-serif", 10))
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                        labels.get(*i).cloned().unwrap_or_default()
                    }
                    SegmentValue::Last => String::new(),
                })
                .y_label_formatter(&|v| format!("{v:.0}"))
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_series(
                    Histogram::vertical(&chart)
                        .style(color.filled())
                        .margin(6)
                        .data(values.iter().enumerate().map(|(i, v)| (i, *v))),
                )
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Environment variable that asks every criterion suite for a quick pass by hand
/// (`BENCH_FAST=1 cargo bench -p benches`): short warm-up and measurement, few samples.
pub const BENCH_FAST_ENV: &str = "BENCH_FAST";

/// Shortens a criterion group's warm-up, measurement and sample count when [`BENCH_FAST_ENV`] is
/// set; otherwise leaves the group's own settings alone. Call it after the group is configured.
pub fn fast_mode<M: criterion::measurement::Measurement>(
    group: &mut criterion::BenchmarkGroup<'_, M>,
) {
    if std::env::var_os(BENCH_FAST_ENV).is_some() {
        group
            .warm_up_time(std::time::Duration::from_millis(200))
            .measurement_time(std::time::Duration::from_millis(800))
            .sample_size(10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(protocol: &str, ops: u64) -> Row {
        Row {
            protocol: protocol.into(),
            transport: TransportKind::Tcp,
            durable: true,
            nodes: 5,
            concurrency: 64,
            ops,
            errors: 1,
            elapsed_secs: 2.0,
            ops_per_sec: ops as f64 / 2.0,
            p50_us: 10.0,
            p99_us: 100.25,
            p999_us: 400.0,
            max_us: 1000.0,
            msgs_per_op: 4.0,
            bytes_per_op: 40.5,
            records_per_op: 1.0,
            syncs_per_op: 0.5,
            theory: Theory::replicated_log(5),
            finding: None,
        }
    }

    #[test]
    fn windows_count_acknowledgements_over_the_whole_run() {
        let ms = Duration::from_millis;
        let acked = [ms(1), ms(3), ms(12), ms(35)];
        assert_eq!(windows(&acked, ms(50), ms(10), 100), vec![2, 1, 0, 1, 0]);
        // A late acknowledgement extends the list; the cap bounds it.
        assert_eq!(windows(&acked, ms(20), ms(10), 100), vec![2, 1, 0, 1]);
        assert_eq!(windows(&acked, ms(50), ms(10), 2), vec![2, 1]);
        assert!(windows(&[], Duration::ZERO, ms(10), 10).is_empty());
    }

    #[test]
    fn table_aligns_every_column() {
        let table = render_table(&[row("demo", 10), row("a-longer-name", 123_456)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("protocol     "));
        assert!(lines[2].starts_with("a-longer-name  tcp"));
        assert!(lines[1].contains("wal+fsync") && lines[2].contains("61728"));
        // Figures are right-aligned: every line ends at the same column.
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width), "{table}");
        assert_eq!(cells(&row("x", 1)).len(), COLUMNS.len());
    }

    #[test]
    fn commands_are_distinct_and_fixed_size() {
        assert_eq!(command(1, 2).len(), COMMAND_BYTES);
        assert_ne!(command(1, 2), command(2, 1));
        assert_eq!(per_op(10, 0), 0.0);
        assert_eq!(per_op(10, 4), 2.5);
    }

    #[test]
    fn invalid_specs_and_workloads_are_refused() {
        let spec = ClusterSpec::new(0, TransportKind::Memory, false, 0);
        assert!(spec.validate().is_err());
        assert!(ClusterSpec { nodes: 3, ..spec }.validate().is_ok());
        assert_eq!(ClusterSpec { nodes: 3, ..spec }.members(), vec![1, 2, 3]);
        let workload = Workload {
            concurrency: 0,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            ops_max: None,
        };
        assert!(workload.validate().is_err());
        let endless = Workload {
            concurrency: 1,
            duration: Duration::ZERO,
            ..workload
        };
        assert!(endless.validate().is_err());
    }
}
