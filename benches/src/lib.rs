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
//! [`render_table`] prints the rows.
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

pub mod demo;
pub mod hashring;
pub mod paxos;
pub mod raft;
pub mod threepc;
pub mod twopc;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::codec::Bincode;
use common::driver::{self, DriverConfig, DriverError, DriverStats, NodeHandle, Persistence};
use common::transport::memory::MemoryNetwork;
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
}

impl ClusterSpec {
    /// Checks the spec.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.nodes == 0 || self.nodes > CLUSTER_SIZE_MAX {
            return Err(BenchError::Invalid(format!(
                "cluster size {} is not between 1 and {CLUSTER_SIZE_MAX}",
                self.nodes
            )));
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

    /// Stops every node.
    async fn shutdown(&self) -> Result<(), BenchError>;
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
    vec![Box::new(demo::Demo)]
}

/// The nodes of one cluster, each run by the driver over the requested transport and storage.
pub struct Nodes<N: Node> {
    /// One handle per node, in id order (`handles[i]` is node `i + 1`).
    pub handles: Vec<NodeHandle<N>>,
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
        match spec.transport {
            TransportKind::Memory => {
                let network = MemoryNetwork::new(spec.seed);
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
        Ok(Self { handles, _dir: dir })
    }

    /// The driver counters of every node, summed.
    pub fn stats(&self) -> DriverStats {
        self.handles.iter().map(|h| h.stats()).sum()
    }

    /// Shuts every node down; reports the first error.
    pub async fn shutdown(&self) -> Result<(), BenchError> {
        let mut first = Ok(());
        for handle in &self.handles {
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
    /// Largest latency, in microseconds.
    pub max_us: f64,
    /// Messages sent by all nodes per acknowledged operation.
    pub msgs_per_op: f64,
    /// Bytes of those messages per acknowledged operation.
    pub bytes_per_op: f64,
    /// Storage syncs of all nodes per acknowledged operation.
    pub syncs_per_op: f64,
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
    Ok(Row {
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
        max_us: us(histogram.max()),
        msgs_per_op: per_op(stats.messages_sent, ops),
        bytes_per_op: per_op(stats.bytes_sent, ops),
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
pub const COLUMNS: [&str; 14] = [
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
    "max µs",
    "msgs/op",
    "bytes/op",
    "syncs/op",
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
        format!("{:.1}", row.max_us),
        format!("{:.2}", row.msgs_per_op),
        format!("{:.1}", row.bytes_per_op),
        format!("{:.2}", row.syncs_per_op),
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
                        let spec = ClusterSpec {
                            nodes,
                            transport,
                            durable: self.durable,
                            seed: self.seed,
                        };
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
            max_us: 1000.0,
            msgs_per_op: 4.0,
            bytes_per_op: 40.5,
            syncs_per_op: 0.5,
        }
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
        let spec = ClusterSpec {
            nodes: 0,
            transport: TransportKind::Memory,
            durable: false,
            seed: 0,
        };
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
