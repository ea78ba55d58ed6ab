//! Starting a cluster for the shootout: its shape ([`ClusterSpec`]: size, transport, storage,
//! seed, injected delay) and [`Nodes`], which runs every node through the tokio driver over the
//! in-memory network or TCP loopback, on memory or the write-ahead log, and crashes nodes or
//! slows their links for the fault scenarios.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::codec::Bincode;
use common::driver::{self, DriverConfig, DriverError, DriverStats, NodeHandle, Persistence};
use common::transport::memory::{LinkFaults, MemoryNetwork, NetworkFaults};
use common::transport::tcp::{TcpConfig, TcpTransport};
use common::transport::Transport;
use common::wal::{Wal, WalConfig};
use common::{MemStorage, Node, NodeId, Storage};

use crate::BenchError;

/// Most nodes of one cluster.
pub const CLUSTER_SIZE_MAX: usize = 15;
/// The cluster name and key used by TCP runs (loopback only).
pub const TCP_CLUSTER: &str = "shootout";
/// See [`TCP_CLUSTER`].
pub const TCP_CLUSTER_KEY: &[u8] = b"shootout-loopback-cluster-key-32";

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
    /// half the round trip of the wide-area scenario ([`wan`](crate::wan)). Zero adds none.
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
