//! One replica of the KV store as a network service: the consensus node (Raft or Multi-Paxos)
//! over the TCP transport with a write-ahead log, and the client protocol ([`super::net`]) on a
//! second port. The `kv-node` binary is a command line around [`run`].
//!
//! # Guarantees
//!
//! - **Durable before acknowledged.** The node runs on the shared driver with a [`Wal`] in its
//!   data directory: nothing is acknowledged before its log records are fsynced, and a restart
//!   (after a `kill -9`, say) recovers the node from the directory.
//! - **Authenticated peers.** Replicas talk over [`TcpTransport`], which admits only configured
//!   peers proving the cluster key.
//! - **Bad clients cannot hurt the node.** Each client connection is served by its own task;
//!   an oversized or malformed frame closes that connection; a connection that completes no
//!   request within [`CLIENT_IDLE_TIMEOUT`] (idle, or trickling bytes) is closed; and at
//!   [`CLIENT_CONNECTIONS_MAX`] open connections, a new client takes the place of the one idle
//!   longest ([`ClientLimits`]), so idle sockets never lock new clients out.
//! - **Honest answers.** A write the protocol may have applied but cannot confirm is answered
//!   [`ClientReply::Unknown`], never as refused.
//!
//! - **A full disk is survived.** When the write-ahead log fails, the node stops (nothing is
//!   built on a log it could not write) but the process stays up: clients are answered
//!   [`ClientReply::Unavailable`] so they go to another replica, and `/health` and the metrics
//!   say why. When the failure was a write refused for lack of space, the node probes its data
//!   directory ([`ResumePolicy`]) and, once there is room, starts again from it as a restart
//!   would (recovery truncates the torn tail), on the same ports, and catches up. A failed
//!   fsync stays fail-stop until an operator restarts the node.
//!
//! This file holds the options and [`run`], which starts everything and shuts it down;
//! `replica.rs` the replica as the ports see it (the node, or why there is none) and the task
//! that starts it, watches it and resumes it; `storage.rs` the log's guard, the kinds of storage
//! failure and the probe of a full disk; `backend.rs` the consensus node as the client port sees
//! it (requests, membership changes, leadership hand-over); `membership.rs` where the replicas
//! are (the address book's follower and the cluster a node starts or joins); `clients.rs` the
//! client port and its limits.

// The submodules take these imports with `use super::*`: one list for the whole service.
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::driver::{self, DriverConfig};
use common::transport::tcp::{TcpConfig, TcpTransport};
use common::wal::{Wal, WalConfig};
use common::NodeId;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use common::driver::DriverStats;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::config::FileConfig;
use super::metrics::{serve_http, Metrics, NodeView, TimedStorage};
use super::net::{
    client_codec, decode_request, encode_reply, CallOutcome, ClientReply, ClientRequest, KvClient,
    MemberInfo, MembersInfo,
};
use super::{AddressBook, KvCommand, KvMachine, KvOp, KvOutput, KvQuery};
use common::transport::tcp::TcpPeers;
use common::transport::tls::{secure, TlsConfig};
use tokio::sync::watch;

mod backend;
mod clients;
mod membership;
mod replica;
mod storage;

pub use backend::HANDOVER_WAIT;
use backend::{Backend, Submitted};
pub use clients::{
    serve_clients, ClientLimits, CLIENT_CONNECTIONS_MAX, CLIENT_IDLE_TIMEOUT, CLIENT_PIPELINE_MAX,
};
pub use membership::JOIN_DEADLINE;
use membership::{follow_address_book, Directory, Topology};
use replica::{supervise, Replica, Starter};
use storage::FaultSlot;
pub use storage::{
    probe, ResumePolicy, StorageFault, PROBE_FILE_NAME, PROBE_INTERVAL_DEFAULT,
    PROBE_INTERVAL_MAX_DEFAULT, RESUME_FREE_BYTES_DEFAULT,
};

/// The cluster name in the transport handshake.
pub const CLUSTER_NAME: &str = "kv";

/// `kv-node`'s default for [`DriverConfig::persist_spin`] (`[driver] persist_spin_us`): the
/// log's thread checks for the next batch of writes for this long before it sleeps. Chosen from
/// side-by-side runs of the load bench (the README's "How fast"); 0 turns it off.
pub const PERSIST_SPIN_DEFAULT: Duration = Duration::from_micros(400);

/// Which consensus protocol replicates the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Raft (`raft` crate).
    Raft,
    /// Multi-Paxos (`paxos` crate).
    Paxos,
}

/// Everything one replica needs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The protocol.
    pub protocol: Protocol,
    /// This replica's id.
    pub id: NodeId,
    /// Where replicas reach this one.
    pub listen: SocketAddr,
    /// Where clients reach this one.
    pub client_listen: SocketAddr,
    /// The other replicas: id to replica address (empty when joining).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// For a replica added at run time, instead of `peers`: client addresses (`host:port`) of
    /// members to learn the cluster from ([`ClientRequest::Members`]).
    pub join: Vec<String>,
    /// The write-ahead log's directory.
    pub data_dir: PathBuf,
    /// The shared cluster key (at least 16 bytes).
    pub cluster_key: Vec<u8>,
    /// Protocol timeouts, the driver's tick and the client port's limits (the `[driver]`,
    /// `[raft]`, `[paxos]` and `[client]` tables of the configuration file); the defaults where
    /// it is silent.
    pub tuning: FileConfig,
    /// Where to serve `GET /metrics` and `GET /health` ([`crate::metrics`]); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Mutual TLS on both ports (replicas and clients); `None`: plain TCP.
    pub tls: Option<TlsConfig>,
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport could not start (bad key, address in use…).
    #[error("transport: {0}")]
    Transport(#[from] common::transport::TransportError),
    /// The write-ahead log could not be opened.
    #[error("write-ahead log: {0}")]
    Storage(#[from] common::StorageError),
    /// The node could not be recovered or started.
    #[error("node: {0}")]
    Node(String),
    /// The client port could not be bound.
    #[error("client listener: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is invalid (the message names the field).
    #[error("configuration: {0}")]
    Config(String),
}

/// Starts the replica and serves clients until SIGTERM or SIGINT, then shuts down gracefully:
/// no new work, leadership handed over (Raft), the node stopped with its records persisted.
/// Prints `kv-node <id> ready` on standard output once both ports are bound and the node runs,
/// and `kv-node <id> stopped` after a graceful shutdown.
///
/// If the node's storage fails, the process stays up: clients are answered
/// [`ClientReply::Unavailable`], `/health` says why, and when the failure was a full disk the
/// node starts again from its data directory once there is room (see `replica.rs`).
pub async fn run(options: NodeOptions) -> Result<(), ServeError> {
    let topology = Topology::learn(&options).await?;
    let mut tcp = TcpConfig::new(
        options.id,
        CLUSTER_NAME,
        options.cluster_key.clone(),
        options.listen,
        topology.peers.clone(),
    );
    tcp.tls = options.tls.clone();
    let tuning = &options.tuning;
    let client_limits = tuning.client_limits().map_err(ServeError::Config)?;
    let resume = tuning.resume_policy().map_err(ServeError::Config)?;
    let wal_config = tuning
        .wal_config(&options.data_dir)
        .map_err(ServeError::Config)?;
    let mut driver_config = DriverConfig::default();
    if let Some(tick) = tuning.tick().map_err(ServeError::Config)? {
        driver_config.tick = tick;
    }
    driver_config.persist_spin = tuning
        .persist_spin()
        .map_err(ServeError::Config)?
        .unwrap_or(PERSIST_SPIN_DEFAULT);
    let configs = consensus_configs(&options, &topology)?;
    let (book, book_rx) = watch::channel(AddressBook::default());
    let metrics = Metrics::new();
    let mut starter = Starter {
        options: options.clone(),
        tcp,
        configs,
        driver_config,
        book,
        metrics: metrics.clone(),
        fault: FaultSlot::default(),
        resume,
        wal_config,
        book_follower: None,
    };
    let backend = starter.start().await?;
    // Shared, not cloned, by the requests: it holds maps that would be copied per request.
    let directory = Arc::new(Directory::new(
        &options,
        &topology,
        starter.listen_addr(),
        book_rx,
    ));
    let stop = CancellationToken::new();
    let (replica, supervisor) = supervise(starter, backend, stop.clone());
    let listener = TcpListener::bind(options.client_listen).await?;
    if let Some(addr) = options.metrics_listen {
        serve_metrics(addr, metrics.clone(), replica.clone()).await?;
    }
    println!("kv-node {} ready", options.id);
    let draining = Arc::new(AtomicBool::new(false));
    let id = options.id;
    let serving = serve_clients(
        listener,
        client_limits,
        options.tls.clone(),
        metrics.client_connections.clone(),
        {
            let draining = draining.clone();
            let latency = metrics.proposal_latency.clone();
            move |request: ClientRequest| {
                let draining = draining.load(Ordering::Relaxed);
                let span = tracing::debug_span!("request", node = id, kind = request.kind());
                let state = span
                    .in_scope(|| start_request(&replica, &directory, draining, &latency, request));
                Served { span, state }
            }
        },
    );
    tokio::select! {
        () = serving => {}
        signal = stop_signal() => {
            let why = signal.map_err(ServeError::Io)?;
            tracing::info!("{why}: shutting down");
        }
    }
    // Graceful shutdown: accept nothing new (the accept loop is gone, open connections are
    // refused), then the supervisor hands leadership over and stops the node, which persists
    // what it produced and fails what still waits.
    draining.store(true, Ordering::Relaxed);
    stop.cancel();
    supervisor
        .await
        .map_err(|e| ServeError::Node(format!("the supervisor ended abnormally: {e}")))??;
    println!("kv-node {} stopped", options.id);
    Ok(())
}

/// Binds `addr` and serves `GET /metrics` and `GET /health` there from a task of its own.
async fn serve_metrics(
    addr: SocketAddr,
    metrics: Metrics,
    replica: Replica,
) -> std::io::Result<()> {
    let http = TcpListener::bind(addr).await?;
    tokio::spawn(serve_http(http, metrics, move || {
        let replica = replica.clone();
        async move { replica.view().await }
    }));
    Ok(())
}

/// The consensus crates' configurations for this node, from its topology and tuning, checked
/// before anything is bound so that a mistake is one clear error.
fn consensus_configs(
    options: &NodeOptions,
    topology: &Topology,
) -> Result<(raft::Config, paxos::Config), ServeError> {
    let tuning = &options.tuning;
    let mut raft_config = raft::Config::new(options.id, topology.voters.clone());
    raft_config.learners = topology.learners.clone();
    raft_config.known_nodes = topology.known.clone();
    // The driver reports durability, so the leader may replicate while it writes.
    raft_config.parallel_append = true;
    tuning.tune_raft(&mut raft_config);
    let mut paxos_config = paxos::Config::new(options.id, topology.initial.clone());
    paxos_config.parallel_accept = true;
    tuning.tune_paxos(&mut paxos_config);
    match options.protocol {
        Protocol::Raft => raft_config
            .validate()
            .map_err(|e| ServeError::Config(format!("[raft] {e}")))?,
        Protocol::Paxos => paxos_config
            .validate()
            .map_err(|e| ServeError::Config(format!("[paxos] {e}")))?,
    }
    Ok((raft_config, paxos_config))
}

/// One client request being served, as its connection holds it until the answer goes out.
/// Puts, gets and scans wait as the protocol's small answer future; the rare rest (status,
/// membership) as a boxed `async` call. Each poll runs in the request's span.
struct Served {
    span: tracing::Span,
    state: ServedState,
}

enum ServedState {
    /// Answered without the node (refused while draining, unavailable while it is down).
    Answered(Option<ClientReply>),
    /// Handed to the node; a write's time to its answer goes into `latency`.
    Submitted {
        answer: Submitted,
        started: Instant,
        latency: Option<Histogram>,
    },
    /// Served through [`Backend::serve`].
    Boxed(Pin<Box<dyn Future<Output = ClientReply> + Send>>),
}

impl Future for Served {
    type Output = ClientReply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ClientReply> {
        let this = &mut *self;
        let _entered = this.span.enter();
        match &mut this.state {
            // Polled again after it answered (a misuse): it has nothing more to say.
            ServedState::Answered(reply) => Poll::Ready(reply.take().unwrap_or_else(|| {
                ClientReply::Refused("the request was answered already".into())
            })),
            ServedState::Submitted {
                answer,
                started,
                latency,
            } => {
                let reply = std::task::ready!(Pin::new(answer).poll(cx));
                if let Some(latency) = latency {
                    latency.observe(started.elapsed().as_secs_f64());
                }
                Poll::Ready(reply)
            }
            ServedState::Boxed(serving) => serving.as_mut().poll(cx),
        }
    }
}

/// Starts serving one client request through the replica's node: refused while `draining`,
/// answered [`ClientReply::Unavailable`] while the node is down, handed to the node at once
/// when it is a put, get or scan.
fn start_request(
    replica: &Replica,
    directory: &Arc<Directory>,
    draining: bool,
    latency: &Histogram,
    request: ClientRequest,
) -> ServedState {
    if draining {
        // Refused, so the client tries another node at once.
        return ServedState::Answered(Some(ClientReply::Refused(
            "the node is shutting down".into(),
        )));
    }
    // Reads are refused too: a linearizable read needs the node, and the state it held when
    // its storage failed is gone (and would be stale).
    let backend = match replica.backend() {
        Ok(backend) => backend,
        Err(outage) => {
            return ServedState::Answered(Some(ClientReply::Unavailable(outage.describe())))
        }
    };
    let started = Instant::now();
    match backend.submit(request) {
        Ok(answer) => ServedState::Submitted {
            latency: answer.is_write().then(|| latency.clone()),
            answer,
            started,
        },
        Err(request) => {
            let directory = directory.clone();
            ServedState::Boxed(Box::pin(
                async move { backend.serve(&directory, request).await },
            ))
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C), naming it.
async fn stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
