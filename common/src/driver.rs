//! The tokio driver: runs any [`Node`] over any [`Transport`], [`Storage`] and [`Codec`].
//!
//! # Guarantees
//!
//! - **The Outbox rule holds.** The records of a batch of steps are appended to storage and made
//!   durable with one [`Storage::sync`] before any message, response or event of that batch
//!   leaves the node, and batches are released strictly in the order their steps ran. If storage
//!   fails, the node stops: nothing of the failed batch (or of any later one) leaves, and every
//!   caller waiting on a request gets [`DriverError::StorageFailed`]. The one exception is what
//!   the core marked early ([`Outbox::send_early`], [`Outbox::respond_early`]: it claims nothing
//!   of the batch's records): that leaves as soon as the driver takes the steps' effects, before
//!   the sync. After every sync the driver tells the core how many of its records are durable
//!   ([`Node::records_durable`], run as a step of its own).
//! - **Nothing from the network can panic the node.** Every inbound frame is decoded with the
//!   codec's limits, must carry this protocol's tag and wire version, must name this node as its
//!   receiver and the transport's authenticated sender as its sender; anything else is counted in
//!   [`DriverStats::frames_rejected`], logged, and dropped while the node keeps serving.
//! - **Every queue is bounded.** Client requests wait in a queue of
//!   [`DriverConfig::request_queue_capacity`]; when it is full, [`NodeHandle::request`] waits
//!   for room (backpressure) and [`NodeHandle::try_request`] answers [`DriverError::Busy`]; the
//!   queue never grows. At most [`DriverConfig::requests_pending_max`] requests wait for the core's
//!   answer, at most [`DriverConfig::batch_steps_max`] steps go into one batch and at most
//!   [`DriverConfig::persist_batches_in_flight_max`] batches wait for storage at once.
//! - **No caller hangs.** A request pending when the node stops (shutdown, storage failure,
//!   transport closed, all handles dropped) is answered with an error.
//!
//! # How it works
//!
//! One tokio task per node owns the core, the transport and the codec. It waits for one input
//! (an inbound frame, a tick of [`DriverConfig::tick`], a client request, a metrics query or
//! shutdown), runs the step into an [`Outbox`], then keeps taking inputs that are *already*
//! ready, without waiting, up to [`DriverConfig::batch_steps_max`] steps: a **group commit**.
//! The batch's records are then persisted with one `sync`, and only after that are its messages
//! encoded and sent, its responses delivered and its events published.
//!
//! Where the storage calls run is chosen by [`DriverConfig::persistence`]:
//!
//! - [`Persistence::Background`] (the default, for real disks): a dedicated thread owns the
//!   storage and receives batches in order. While it fsyncs, the node task keeps stepping and
//!   gathers the next batch, so a slow fsync turns into larger batches rather than a stalled
//!   node, and the tokio worker never blocks on disk IO.
//! - [`Persistence::Inline`] (for [`MemStorage`](crate::MemStorage), whose `sync` is free): the
//!   node task calls storage itself, saving a thread hop per batch.
//!
//! Either way a batch without records that has nothing before it waiting for storage is released
//! at once, with no thread hop: the in-memory path stays short.
//!
//! # What the driver expects from its parts
//!
//! - [`Transport::recv`] is cancel-safe: a frame is either returned or stays queued when the
//!   future is dropped. The driver selects over it and polls it once, without waiting, when it
//!   gathers a batch. (Both transports of the workspace are.)
//! - Storage calls of [`Persistence::Inline`] never block for long; see [`Persistence`].
//! - The core answers every request exactly once ([`Node::handle_request`]); an answer to an
//!   unknown request id is logged and dropped.
//!
//! # Example
//!
//! A one-node demo counter over a loopback transport (any [`Transport`] works; the workspace
//! provides an in-memory network and TCP):
//!
//! ```
//! use async_trait::async_trait;
//! use bytes::Bytes;
//! use common::codec::Bincode;
//! use common::demo::{DemoConfig, DemoNode, DemoRequest, DemoResponse};
//! use common::driver::{self, DriverConfig, Persistence};
//! use common::transport::{Inbound, Transport, TransportError};
//! use common::{MemStorage, Node, NodeId};
//!
//! /// A transport for a cluster of one: nothing to send to, nothing to receive.
//! struct Alone(NodeId);
//!
//! #[async_trait]
//! impl Transport for Alone {
//!     fn local_id(&self) -> NodeId {
//!         self.0
//!     }
//!     fn send(&self, to: NodeId, _frame: Bytes) -> Result<(), TransportError> {
//!         Err(TransportError::UnknownPeer(to))
//!     }
//!     async fn recv(&mut self) -> Option<Inbound> {
//!         std::future::pending().await
//!     }
//!     async fn shutdown(&mut self) {}
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let node = DemoNode::recover(DemoConfig::new(1, vec![1]), vec![]).unwrap();
//! let config = DriverConfig {
//!     persistence: Persistence::Inline,
//!     ..DriverConfig::default()
//! };
//! let handle = driver::spawn(node, Alone(1), MemStorage::new(), Bincode, config).unwrap();
//! assert_eq!(handle.request(DemoRequest::Add(5)).await.unwrap(), DemoResponse::Total(5));
//! assert_eq!(handle.metrics().await.unwrap().total, 5);
//! assert_eq!(handle.stats().records_persisted, 1);
//!
//! // Shut down and get the storage back: a node recovered from it remembers the add.
//! let storage: MemStorage = handle.shutdown_and_take_storage().await.unwrap();
//! let handle = driver::spawn_recovered::<DemoNode, _, _, _>(
//!     DemoConfig::new(1, vec![1]), Alone(1), storage, Bincode, config,
//! )
//! .await
//! .unwrap();
//! assert_eq!(handle.request(DemoRequest::Get).await.unwrap(), DemoResponse::Total(5));
//! handle.shutdown().await.unwrap();
//! # });
//! ```

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tokio::time::{Interval, MissedTickBehavior};
use tracing::Instrument;

use crate::codec::{decode_frame, encode_frame, Codec, CodecError, Header};
use crate::transport::{Inbound, Transport};
use crate::{Effects, Node, NodeId, Outbox, Persist, RequestId, Storage, StorageError};

/// Default for [`DriverConfig::tick`]: 10 ms.
pub const TICK_DEFAULT: Duration = Duration::from_millis(10);
/// Default for [`DriverConfig::request_queue_capacity`].
pub const REQUEST_QUEUE_CAPACITY_DEFAULT: usize = 1024;
/// Default for [`DriverConfig::requests_pending_max`].
pub const REQUESTS_PENDING_MAX_DEFAULT: usize = 4096;
/// Default for [`DriverConfig::batch_steps_max`].
pub const BATCH_STEPS_MAX_DEFAULT: usize = 256;
/// Most flushes in a row when persisting inline, each following the durability step of the one
/// before ([`Node::records_durable`]).
const INLINE_FLUSH_ROUNDS_MAX: usize = 4;

/// Default for [`DriverConfig::persist_batches_in_flight_max`].
pub const PERSIST_BATCHES_IN_FLIGHT_MAX_DEFAULT: usize = 1;
/// Default for [`DriverConfig::events_capacity`].
pub const EVENTS_CAPACITY_DEFAULT: usize = 1024;
/// Metrics queries waiting for the node. They have their own small queue so a node that is
/// saturated with requests still answers them.
pub const METRICS_QUEUE_CAPACITY: usize = 16;
/// Rejected frames logged individually before logging thins out (see
/// [`DriverStats::frames_rejected`] for the full count).
pub const REJECTIONS_LOGGED_FIRST: u64 = 16;
/// Upper bound for every queue capacity and limit in [`DriverConfig`]: a larger value is a
/// configuration mistake, not a deliberate choice.
pub const QUEUE_CAPACITY_LIMIT: usize = 1 << 20;

/// Where the driver runs storage calls. See the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Persistence {
    /// A dedicated thread per node owns the storage; the node keeps stepping while it syncs.
    /// Use this for storage that does real IO (the write-ahead log).
    ///
    /// Under tokio's paused test clock (`start_paused = true`), time jumps ahead whenever every
    /// task waits, including while the node waits for this thread: ticks then fire faster than
    /// storage answers. Tests on a paused clock use [`Persistence::Inline`].
    #[default]
    Background,
    /// The node task calls storage itself. Only for storage whose calls never block, such as
    /// [`MemStorage`](crate::MemStorage): a blocking call here would stall a tokio worker.
    Inline,
}

/// Configuration of the driver of one node. Plain fields with defaults
/// ([`DriverConfig::default`]); [`DriverConfig::validate`] explains what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Real time between two calls to [`Node::tick`].
    pub tick: Duration,
    /// Client requests and metrics queries waiting to be taken by the node. A request that finds
    /// the queue full waits for room ([`NodeHandle::request`]) or fails with
    /// [`DriverError::Busy`] ([`NodeHandle::try_request`]).
    pub request_queue_capacity: usize,
    /// Requests taken by the node and not answered yet. When reached, the node stops taking
    /// requests from the queue until the core answers some (so the queue fills and callers wait,
    /// or see [`DriverError::Busy`] from [`NodeHandle::try_request`]).
    pub requests_pending_max: usize,
    /// Most steps gathered into one batch before its records are persisted (group commit).
    pub batch_steps_max: usize,
    /// Most batches handed to storage and not yet synced. While that many are in flight the node
    /// keeps stepping into the next batch (up to [`DriverConfig::batch_steps_max`] steps).
    pub persist_batches_in_flight_max: usize,
    /// Capacity of the event broadcast channel; a subscriber that falls further behind loses
    /// the oldest events (it sees `RecvError::Lagged`).
    pub events_capacity: usize,
    /// Where storage calls run.
    pub persistence: Persistence,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            tick: TICK_DEFAULT,
            request_queue_capacity: REQUEST_QUEUE_CAPACITY_DEFAULT,
            requests_pending_max: REQUESTS_PENDING_MAX_DEFAULT,
            batch_steps_max: BATCH_STEPS_MAX_DEFAULT,
            persist_batches_in_flight_max: PERSIST_BATCHES_IN_FLIGHT_MAX_DEFAULT,
            events_capacity: EVENTS_CAPACITY_DEFAULT,
            persistence: Persistence::Background,
        }
    }
}

impl DriverConfig {
    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), DriverError> {
        if self.tick.is_zero() {
            return Err(DriverError::Config("tick must be longer than zero".into()));
        }
        for (name, value) in [
            ("request_queue_capacity", self.request_queue_capacity),
            ("requests_pending_max", self.requests_pending_max),
            ("batch_steps_max", self.batch_steps_max),
            (
                "persist_batches_in_flight_max",
                self.persist_batches_in_flight_max,
            ),
            ("events_capacity", self.events_capacity),
        ] {
            if value == 0 || value > QUEUE_CAPACITY_LIMIT {
                return Err(DriverError::Config(format!(
                    "{name} is {value}; it must be between 1 and {QUEUE_CAPACITY_LIMIT}"
                )));
            }
        }
        Ok(())
    }
}

/// Why the driver could not do what was asked.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DriverError {
    /// The request queue is full: the node is overloaded. Nothing was sent; retry later.
    #[error("the node is busy: its request queue of {capacity} is full")]
    Busy {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The node is not running: it was shut down (or every handle was dropped) and did not fail.
    #[error("the node is stopped")]
    Stopped,
    /// Storage failed to persist a batch; the node stopped without releasing that batch's
    /// messages, responses or events.
    #[error("storage failed, the node stopped: {0}")]
    StorageFailed(#[source] Arc<StorageError>),
    /// A record could not be encoded (while persisting) or decoded (while recovering).
    #[error("record codec failed: {0}")]
    Codec(#[source] CodecError),
    /// The core could not be rebuilt from its configuration and records.
    #[error("recovery failed: {0}")]
    Recover(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The transport stopped delivering frames (it was shut down underneath the node).
    #[error("the transport closed, the node stopped")]
    TransportClosed,
    /// The driver's configuration is invalid, or does not match the node or transport.
    #[error("invalid driver configuration: {0}")]
    Config(String),
    /// A thread could not be started (persistence thread, loading storage).
    #[error("could not start a thread: {0}")]
    Spawn(String),
    /// The node task ended abnormally: the core panicked (a bug), or the runtime shut down under
    /// it. Its storage is not handed back.
    #[error("the node task ended abnormally: {0}")]
    Panicked(String),
    /// The storage was asked back with a type it does not have, or was already taken.
    #[error("storage is not available as the requested type (already taken, or another type)")]
    StorageUnavailable,
}

/// A snapshot of the driver's counters, read without a round trip to the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Messages handed to the transport.
    pub messages_sent: u64,
    /// Bytes of the frames handed to the transport.
    pub bytes_sent: u64,
    /// Messages the transport refused (queue full, unknown peer, frame too large, encoding).
    pub send_failures: u64,
    /// Frames received and accepted.
    pub messages_received: u64,
    /// Bytes of the frames accepted.
    pub bytes_received: u64,
    /// Frames rejected (undecodable, wrong protocol or version, forged sender, wrong receiver).
    pub frames_rejected: u64,
    /// Calls into the core (`handle_message`, `handle_request`, `tick`).
    pub steps: u64,
    /// Calls to [`Node::tick`].
    pub ticks: u64,
    /// Batches released (each released after at most one `sync`).
    pub batches: u64,
    /// Records appended to storage and synced.
    pub records_persisted: u64,
    /// Bytes of the records persisted.
    pub bytes_persisted: u64,
    /// Calls to [`Storage::sync`] that succeeded.
    pub syncs: u64,
    /// Client requests accepted into the queue.
    pub requests: u64,
    /// Client requests refused with [`DriverError::Busy`].
    pub requests_busy: u64,
    /// Responses delivered to waiting callers.
    pub responses: u64,
    /// Events published.
    pub events: u64,
}

macro_rules! stats_arithmetic {
    ($($field:ident),* $(,)?) => {
        impl std::ops::Add for DriverStats {
            type Output = DriverStats;
            /// Field-wise sum, for totals over the nodes of a cluster.
            fn add(self, other: DriverStats) -> DriverStats {
                DriverStats { $($field: self.$field.saturating_add(other.$field)),* }
            }
        }

        impl std::ops::Sub for DriverStats {
            type Output = DriverStats;
            /// Field-wise difference (saturating at zero), for what happened between two
            /// snapshots.
            fn sub(self, other: DriverStats) -> DriverStats {
                DriverStats { $($field: self.$field.saturating_sub(other.$field)),* }
            }
        }

        impl std::iter::Sum for DriverStats {
            fn sum<I: Iterator<Item = DriverStats>>(iter: I) -> DriverStats {
                iter.fold(DriverStats::default(), |a, b| a + b)
            }
        }
    };
}

stats_arithmetic!(
    messages_sent,
    bytes_sent,
    send_failures,
    messages_received,
    bytes_received,
    frames_rejected,
    steps,
    ticks,
    batches,
    records_persisted,
    bytes_persisted,
    syncs,
    requests,
    requests_busy,
    responses,
    events,
);

/// Counters shared between the node task and its handles.
#[derive(Default)]
struct Counters {
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    send_failures: AtomicU64,
    messages_received: AtomicU64,
    bytes_received: AtomicU64,
    frames_rejected: AtomicU64,
    steps: AtomicU64,
    ticks: AtomicU64,
    batches: AtomicU64,
    records_persisted: AtomicU64,
    bytes_persisted: AtomicU64,
    syncs: AtomicU64,
    requests: AtomicU64,
    requests_busy: AtomicU64,
    responses: AtomicU64,
    events: AtomicU64,
}

/// Relaxed ordering is enough: counters are statistics, never used to synchronize.
fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> DriverStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DriverStats {
            messages_sent: get(&self.messages_sent),
            bytes_sent: get(&self.bytes_sent),
            send_failures: get(&self.send_failures),
            messages_received: get(&self.messages_received),
            bytes_received: get(&self.bytes_received),
            frames_rejected: get(&self.frames_rejected),
            steps: get(&self.steps),
            ticks: get(&self.ticks),
            batches: get(&self.batches),
            records_persisted: get(&self.records_persisted),
            bytes_persisted: get(&self.bytes_persisted),
            syncs: get(&self.syncs),
            requests: get(&self.requests),
            requests_busy: get(&self.requests_busy),
            responses: get(&self.responses),
            events: get(&self.events),
        }
    }
}

/// Whether the node task still runs.
#[derive(Clone, Debug)]
enum Status {
    Running,
    /// Stopped: `None` after a clean shutdown, the cause otherwise.
    Stopped(Option<DriverError>),
}

type Reply<N> = oneshot::Sender<Result<<N as Node>::Response, DriverError>>;

/// A client request and where to send its answer.
struct Command<N: Node>(N::Request, Reply<N>);

/// A handle to a running node. Cheap to clone; every clone talks to the same node. When the
/// last handle is dropped the node shuts down.
pub struct NodeHandle<N: Node> {
    id: NodeId,
    commands: mpsc::Sender<Command<N>>,
    metrics: mpsc::Sender<oneshot::Sender<N::Metrics>>,
    request_queue_capacity: usize,
    events: broadcast::Sender<N::Event>,
    counters: Arc<Counters>,
    shutdown: Arc<Notify>,
    status: watch::Receiver<Status>,
    storage: Arc<Mutex<Option<Box<dyn Any + Send>>>>,
}

impl<N: Node> Clone for NodeHandle<N> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            commands: self.commands.clone(),
            metrics: self.metrics.clone(),
            request_queue_capacity: self.request_queue_capacity,
            events: self.events.clone(),
            counters: self.counters.clone(),
            shutdown: self.shutdown.clone(),
            status: self.status.clone(),
            storage: self.storage.clone(),
        }
    }
}

impl<N: Node> std::fmt::Debug for NodeHandle<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("id", &self.id)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl<N: Node> NodeHandle<N> {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Hands `req` to the node and waits for the core's answer, which is delivered only after the
    /// records of the step that produced it are durable.
    ///
    /// Backpressure: when the request queue is full, waits for room instead of failing (the
    /// caller slows down to the node's pace; [`NodeHandle::try_request`] is the form that fails
    /// at once). Fails with the node's stop cause if it is or becomes stopped before answering,
    /// including while waiting for room.
    pub async fn request(&self, req: N::Request) -> Result<N::Response, DriverError> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command(req, reply)).await.is_err() {
            return Err(self.stop_cause());
        }
        add(&self.counters.requests, 1);
        self.answer(answer).await
    }

    /// [`NodeHandle::request`] without waiting for room: fails at once with
    /// [`DriverError::Busy`] when the request queue is full (the request is dropped), for callers
    /// that would rather shed load than queue it.
    pub async fn try_request(&self, req: N::Request) -> Result<N::Response, DriverError> {
        let (reply, answer) = oneshot::channel();
        match self.commands.try_send(Command(req, reply)) {
            Ok(()) => add(&self.counters.requests, 1),
            Err(mpsc::error::TrySendError::Full(_)) => {
                add(&self.counters.requests_busy, 1);
                return Err(DriverError::Busy {
                    capacity: self.request_queue_capacity,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.stop_cause()),
        }
        self.answer(answer).await
    }

    async fn answer(
        &self,
        answer: oneshot::Receiver<Result<N::Response, DriverError>>,
    ) -> Result<N::Response, DriverError> {
        match answer.await {
            Ok(result) => result,
            // Dropped unanswered: the node task ended abnormally (a clean stop answers every
            // waiting request). Its final status says why, and is set right after it ends.
            Err(_) => Err(self.stopped().await.err().unwrap_or(DriverError::Stopped)),
        }
    }

    /// Subscribes to the node's events (published after their records are durable). A
    /// subscriber sees events published after it subscribed.
    pub fn subscribe(&self) -> broadcast::Receiver<N::Event> {
        self.events.subscribe()
    }

    /// The core's current metrics (its in-memory state, which may be ahead of what is durable).
    /// Queries have their own small queue ([`METRICS_QUEUE_CAPACITY`]), served even while the
    /// node is saturated with requests; a full queue makes this wait rather than fail.
    pub async fn metrics(&self) -> Result<N::Metrics, DriverError> {
        let (reply, answer) = oneshot::channel();
        if self.metrics.send(reply).await.is_err() {
            return Err(self.stop_cause());
        }
        answer.await.map_err(|_| self.stop_cause())
    }

    /// The driver's counters, read without waiting for the node.
    pub fn stats(&self) -> DriverStats {
        self.counters.snapshot()
    }

    /// Whether the node task is still running.
    pub fn is_running(&self) -> bool {
        matches!(*self.status.borrow(), Status::Running)
    }

    /// Waits until the node stops, and says why: `Ok(())` after a clean shutdown, the error that
    /// stopped it otherwise.
    pub async fn stopped(&self) -> Result<(), DriverError> {
        let mut status = self.status.clone();
        let result = status
            .wait_for(|s| matches!(s, Status::Stopped(_)))
            .await
            .map(|s| s.clone());
        match result {
            Ok(Status::Stopped(None)) => Ok(()),
            Ok(Status::Stopped(Some(e))) => Err(e),
            // The node task ended without reporting (it panicked).
            Ok(Status::Running) | Err(_) => Err(DriverError::Stopped),
        }
    }

    /// Shuts the node down gracefully and waits until it has stopped: it takes no new input,
    /// persists and releases what its steps already produced, fails the requests still waiting,
    /// shuts the transport down and hands the storage back (see
    /// [`NodeHandle::shutdown_and_take_storage`]). Returns the error that stopped the node, if
    /// one did before.
    pub async fn shutdown(&self) -> Result<(), DriverError> {
        self.shutdown.notify_one();
        self.stopped().await
    }

    /// Like [`NodeHandle::shutdown`], then takes the node's storage back (for instance to
    /// restart the node from it with [`spawn_recovered`]). `S` must be the storage type given to
    /// [`spawn`]; the storage can be taken once.
    pub async fn shutdown_and_take_storage<S: Storage>(&self) -> Result<S, DriverError> {
        self.shutdown().await?;
        let mut slot = self
            .storage
            .lock()
            .map_err(|_| DriverError::StorageUnavailable)?;
        let boxed = slot.take().ok_or(DriverError::StorageUnavailable)?;
        match boxed.downcast::<S>() {
            Ok(storage) => Ok(*storage),
            Err(other) => {
                *slot = Some(other);
                Err(DriverError::StorageUnavailable)
            }
        }
    }

    fn stop_cause(&self) -> DriverError {
        match &*self.status.borrow() {
            Status::Stopped(Some(e)) => e.clone(),
            _ => DriverError::Stopped,
        }
    }
}

/// Starts a task running `node` over `transport`, persisting to `storage` with `codec`. Must be
/// called from within a tokio runtime.
///
/// Fails if `config` is invalid, if the transport's id is not the node's, or if the persistence
/// thread cannot be started.
pub fn spawn<N, T, S, C>(
    node: N,
    transport: T,
    storage: S,
    codec: C,
    config: DriverConfig,
) -> Result<NodeHandle<N>, DriverError>
where
    N: Node,
    T: Transport,
    S: Storage,
    C: Codec,
{
    config.validate()?;
    let id = node.id();
    if transport.local_id() != id {
        return Err(DriverError::Config(format!(
            "the transport belongs to node {}, the core is node {id}",
            transport.local_id()
        )));
    }
    let counters = Arc::new(Counters::default());
    let (commands, command_rx) = mpsc::channel(config.request_queue_capacity);
    let (metrics, metrics_rx) = mpsc::channel(METRICS_QUEUE_CAPACITY);
    let (events, _) = broadcast::channel(config.events_capacity);
    let shutdown = Arc::new(Notify::new());
    let (status_tx, status) = watch::channel(Status::Running);
    let storage_slot: Arc<Mutex<Option<Box<dyn Any + Send>>>> = Arc::new(Mutex::new(None));

    let stage = match config.persistence {
        Persistence::Inline => Stage::Inline(Some(storage)),
        Persistence::Background => Stage::background(id, storage, &config)?,
    };
    let mut tick = tokio::time::interval(config.tick);
    // After a stall, tick at the normal pace again instead of firing a burst of catch-up ticks.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let runner = Runner {
        node,
        transport,
        codec,
        config,
        stage,
        commands: command_rx,
        metrics: metrics_rx,
        tick,
        outbox: Outbox::new(),
        open_steps: 0,
        open_requests: 0,
        in_flight: VecDeque::new(),
        pending: HashMap::default(),
        next_request: 0,
        events: events.clone(),
        counters: counters.clone(),
        shutdown: shutdown.clone(),
        record_buf: Vec::new(),
        storage_slot: storage_slot.clone(),
        checkpoints_durable: 0,
        records_durable: 0,
        early_buf: Vec::new(),
        early_answers_buf: Vec::new(),
    };
    let task = tokio::spawn(runner.run().instrument(tracing::info_span!("node", id)));
    // Reports how the node task ended, including a panic of the core, which would otherwise
    // leave the handles believing the node runs.
    tokio::spawn(async move {
        let status = match task.await {
            Ok(cause) => Status::Stopped(cause),
            Err(join) => {
                let reason = if join.is_panic() {
                    let payload = join.into_panic();
                    payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".to_string())
                } else {
                    "the task was cancelled (the runtime shut down)".to_string()
                };
                tracing::error!(node = id, %reason, "node task ended abnormally");
                Status::Stopped(Some(DriverError::Panicked(reason)))
            }
        };
        status_tx.send_replace(status);
    });
    Ok(NodeHandle {
        id,
        commands,
        metrics,
        request_queue_capacity: config.request_queue_capacity,
        events,
        counters,
        shutdown,
        status,
        storage: storage_slot,
    })
}

/// Loads the records in `storage`, decodes them with `codec`, rebuilds the core with
/// [`Node::recover`] and [`spawn`]s it. Loading runs on a blocking thread.
pub async fn spawn_recovered<N, T, S, C>(
    config: N::Config,
    transport: T,
    storage: S,
    codec: C,
    driver_config: DriverConfig,
) -> Result<NodeHandle<N>, DriverError>
where
    N: Node,
    T: Transport,
    S: Storage,
    C: Codec,
{
    driver_config.validate()?;
    let load_codec = codec.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let mut storage = storage;
        let result = storage
            .load()
            .map_err(|e| DriverError::StorageFailed(Arc::new(e)))
            .and_then(|raw| {
                raw.iter()
                    .map(|bytes| load_codec.decode::<N::Record>(bytes))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(DriverError::Codec)
            });
        result.map(|records| (storage, records))
    })
    .await
    .map_err(|e| DriverError::Spawn(e.to_string()))?;
    let (storage, records) = loaded?;
    let node = N::recover_with_snapshots(config, records, storage.snapshots())
        .map_err(|e| DriverError::Recover(Arc::new(e)))?;
    spawn(node, transport, storage, codec, driver_config)
}

/// One batch of encoded records on its way to the persistence thread: `(is_checkpoint, bytes)`.
type EncodedBatch = Vec<(bool, Vec<u8>)>;

/// What the persistence thread reports for each batch, in order.
type BatchResult = Result<PersistedBatch, StorageError>;

struct PersistedBatch {
    records: u64,
    bytes: u64,
    /// How many of the records were checkpoints.
    checkpoints: u64,
}

/// Where storage calls run.
enum Stage<S: Storage> {
    /// In the node task. `None` only after the storage was handed back.
    Inline(Option<S>),
    /// In a dedicated thread.
    Background {
        /// Batches to persist; `None` once closed for shutdown.
        batches: Option<std::sync::mpsc::SyncSender<EncodedBatch>>,
        /// One result per batch, in order.
        results: mpsc::Receiver<BatchResult>,
        /// The storage, when the thread exits.
        storage: Option<oneshot::Receiver<S>>,
    },
}

impl<S: Storage> Stage<S> {
    fn background(id: NodeId, storage: S, config: &DriverConfig) -> Result<Self, DriverError> {
        let (batch_tx, batch_rx) =
            std::sync::mpsc::sync_channel::<EncodedBatch>(config.persist_batches_in_flight_max);
        let (result_tx, results) = mpsc::channel(config.persist_batches_in_flight_max);
        let (storage_tx, storage_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("persist-{id}"))
            .spawn(move || persistence_thread(storage, batch_rx, result_tx, storage_tx))
            .map_err(|e| DriverError::Spawn(e.to_string()))?;
        Ok(Stage::Background {
            batches: Some(batch_tx),
            results,
            storage: Some(storage_rx),
        })
    }
}

/// Appends and syncs the batches it receives, in order, reporting each result. Exits after the
/// first failure (the storage's state is then unknown) or when the node closes the channel, and
/// hands the storage back.
fn persistence_thread<S: Storage>(
    mut storage: S,
    batches: std::sync::mpsc::Receiver<EncodedBatch>,
    results: mpsc::Sender<BatchResult>,
    storage_back: oneshot::Sender<S>,
) {
    while let Ok(batch) = batches.recv() {
        let result = persist_batch(&mut storage, batch.iter().map(|(c, b)| (*c, b.as_slice())));
        let failed = result.is_err();
        if results.blocking_send(result).is_err() || failed {
            break;
        }
    }
    // The node may be gone already; then nobody wants the storage back.
    let _ = storage_back.send(storage);
}

/// Appends every record, then syncs once.
fn persist_batch<'a, S: Storage>(
    storage: &mut S,
    records: impl Iterator<Item = (bool, &'a [u8])>,
) -> Result<PersistedBatch, StorageError> {
    let mut done = PersistedBatch {
        records: 0,
        bytes: 0,
        checkpoints: 0,
    };
    for (checkpoint, bytes) in records {
        done.checkpoints += u64::from(checkpoint);
        if checkpoint {
            storage.append_checkpoint(bytes)?;
        } else {
            storage.append(bytes)?;
        }
        done.records += 1;
        done.bytes += bytes.len() as u64;
    }
    storage.sync()?;
    Ok(done)
}

/// One input taken by the node task.
enum Input<N: Node> {
    Frame(Option<Inbound>),
    Tick,
    Command(Option<Command<N>>),
    Metrics(oneshot::Sender<N::Metrics>),
    Persisted(Option<BatchResult>),
    Shutdown,
}

/// The node task's state.
struct Runner<N: Node, T, S: Storage, C> {
    node: N,
    transport: T,
    codec: C,
    config: DriverConfig,
    stage: Stage<S>,
    commands: mpsc::Receiver<Command<N>>,
    metrics: mpsc::Receiver<oneshot::Sender<N::Metrics>>,
    tick: Interval,
    /// Effects of the open batch: steps run but not yet handed to storage.
    outbox: Outbox<N>,
    /// Steps in the open batch.
    open_steps: usize,
    /// Client requests among them.
    open_requests: usize,
    /// Batches handed to the persistence thread, oldest first, with their records taken out:
    /// what they release once synced.
    in_flight: VecDeque<Effects<N>>,
    /// Requests taken by the core and not answered yet.
    pending: HashMap<RequestId, Reply<N>, BuildHasherDefault<RequestIdHasher>>,
    next_request: u64,
    events: broadcast::Sender<N::Event>,
    counters: Arc<Counters>,
    shutdown: Arc<Notify>,
    /// Reused buffer for encoding records when persisting inline.
    record_buf: Vec<u8>,
    storage_slot: Arc<Mutex<Option<Box<dyn Any + Send>>>>,
    /// Checkpoints made durable since the node was spawned ([`Node::checkpoints_durable`]).
    checkpoints_durable: u64,
    /// Records made durable since the node was spawned ([`Node::records_durable`]).
    records_durable: u64,
    /// Reused buffers for early messages and answers.
    early_buf: Vec<(NodeId, N::Message)>,
    early_answers_buf: Vec<(RequestId, N::Response)>,
}

/// Hashes the driver's own request ids for the pending-request map, which sees an insert and a
/// removal per request. The ids are a counter this driver assigns, never chosen by a peer or a
/// client, so the hash needs no protection against chosen collisions (the job of the default
/// SipHash): one multiplication by 2^64 / φ (Fibonacci hashing) spreads consecutive ids over
/// every bit, the high ones included, which the map's probing uses. Written by hand because it
/// is two lines and the workspace has no hashing crate for it.
#[derive(Default)]
struct RequestIdHasher(u64);

impl std::hash::Hasher for RequestIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `RequestId` (it hashes one u64), but correct for any input.
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Whether the `rejected`-th rejected frame is logged at `warn`: the first
/// [`REJECTIONS_LOGGED_FIRST`], then only at powers of two, so a peer flooding garbage cannot
/// flood the log. Every rejection is counted in [`DriverStats::frames_rejected`].
fn log_rejection(rejected: u64) -> bool {
    rejected <= REJECTIONS_LOGGED_FIRST || rejected.is_power_of_two()
}

/// Waits for the next persistence result, or forever when persistence is inline.
async fn next_result(results: Option<&mut mpsc::Receiver<BatchResult>>) -> Option<BatchResult> {
    match results {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<N, T, S, C> Runner<N, T, S, C>
where
    N: Node,
    T: Transport,
    S: Storage,
    C: Codec,
{
    /// Serves until shutdown or failure, then stops; returns the stop cause.
    async fn run(mut self) -> Option<DriverError> {
        let cause = self.serve().await;
        self.stop(cause).await
    }

    /// Serves inputs until shutdown (`None`) or a fatal error.
    async fn serve(&mut self) -> Option<DriverError> {
        // Registered once: a `Notified` made afresh on every turn would be added to and removed
        // from the `Notify`'s waiter list (a lock each) on every turn.
        let shutdown = Arc::clone(&self.shutdown);
        let shutdown = shutdown.notified();
        tokio::pin!(shutdown);
        loop {
            // The open batch may take more steps while it is under its limit.
            let can_step = self.open_steps < self.config.batch_steps_max;
            let can_take_request =
                can_step && self.pending.len() < self.config.requests_pending_max;
            let waiting_storage = !self.in_flight.is_empty();
            let results = match &mut self.stage {
                Stage::Background { results, .. } => Some(results),
                Stage::Inline(_) => None,
            };
            // `biased`: branches are polled in this order, not in an order drawn by tokio from
            // an unseeded source, so a seeded run (turmoil) replays exactly. The order is fair:
            // shutdown and the storage results are rare and come first; a tick is ready once per
            // `tick` and so cannot starve anything after it, and would itself be starved by a
            // steady stream of frames if it came later (a leader under load would stop ticking);
            // metrics queries are rare and bounded. Frames and requests come last, and after
            // the first input `gather_ready` takes both kinds in turn, so neither starves the
            // other.
            let input = tokio::select! {
                biased;
                _ = &mut shutdown => Input::Shutdown,
                r = next_result(results), if waiting_storage => Input::Persisted(r),
                _ = self.tick.tick(), if can_step => Input::Tick,
                Some(m) = self.metrics.recv() => Input::Metrics(m),
                f = self.transport.recv(), if can_step => Input::Frame(f),
                c = self.commands.recv(), if can_take_request => Input::Command(c),
            };
            match input {
                Input::Shutdown => return None,
                Input::Persisted(Some(Ok(done))) => {
                    self.count_persisted(&done);
                    if let Some(effects) = self.in_flight.pop_front() {
                        self.release(effects);
                    }
                }
                Input::Persisted(Some(Err(e))) => {
                    tracing::error!(error = %e, "storage failed; stopping the node");
                    return Some(DriverError::StorageFailed(Arc::new(e)));
                }
                Input::Persisted(None) => {
                    tracing::error!("persistence thread ended; stopping the node");
                    return Some(DriverError::StorageFailed(Arc::new(
                        StorageError::Poisoned("the persistence thread ended unexpectedly".into()),
                    )));
                }
                Input::Frame(None) => return Some(DriverError::TransportClosed),
                Input::Frame(Some(inbound)) => self.on_frame(inbound),
                Input::Tick => self.on_tick(),
                // Every handle is gone: nobody can ask anything any more.
                Input::Command(None) => return None,
                Input::Command(Some(command)) => self.on_command(command),
                Input::Metrics(reply) => {
                    // The caller may have given up waiting; that is fine.
                    let _ = reply.send(self.node.metrics());
                    continue;
                }
            }
            if let Err(e) = self.gather_ready() {
                return Some(e);
            }
            if self.worth_waiting_for_more() {
                // Other clients are likely runnable right now, about to send their next request
                // (they were just answered in a bulk release). Letting them run first turns
                // their requests into one batch: one sync, one AppendEntries, one release,
                // instead of a turn each. `yield_now` puts this task behind the tasks that are
                // ready, and costs one reschedule when none is.
                tokio::task::yield_now().await;
                if let Err(e) = self.gather_ready() {
                    return Some(e);
                }
            }
            if let Err(e) = self.flush() {
                return Some(e);
            }
        }
    }

    /// Whether the open batch should wait one scheduling round for more input before it is
    /// flushed: only when it is not full, and more requests are waiting for answers than the
    /// batch took (several clients are active, so more requests are probably on their way).
    /// With one client this is never true, so its latency pays nothing.
    fn worth_waiting_for_more(&self) -> bool {
        self.open_steps < self.config.batch_steps_max
            && self.open_requests > 0
            && self.pending.len() > self.open_requests
    }

    /// Takes inputs that are ready now, without waiting, until the batch is full or none is.
    /// Inputs that are not steps (rejected frames) count against the same limit, so a peer
    /// flooding garbage cannot keep the node task from yielding.
    fn gather_ready(&mut self) -> Result<(), DriverError> {
        let mut taken = 0;
        while self.open_steps < self.config.batch_steps_max && taken < self.config.batch_steps_max {
            taken += 1;
            let mut took = false;
            if self.pending.len() < self.config.requests_pending_max {
                if let Ok(command) = self.commands.try_recv() {
                    self.on_command(command);
                    took = true;
                }
            }
            // `recv` of a transport is cancel-safe (a frame is either returned or left queued),
            // so polling it once and dropping the future loses nothing.
            match self.transport.recv().now_or_never() {
                Some(Some(inbound)) => {
                    self.on_frame(inbound);
                    took = true;
                }
                Some(None) => return Err(DriverError::TransportClosed),
                None => {}
            }
            if !took {
                break;
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, inbound: Inbound) {
        let len = inbound.frame.len() as u64;
        let me = self.node.id();
        match decode_frame::<C, N::Message>(
            &self.codec,
            N::PROTOCOL,
            N::WIRE_VERSION,
            &inbound.frame,
        ) {
            Ok((header, msg)) if header.from == inbound.from && header.to == me => {
                add(&self.counters.messages_received, 1);
                add(&self.counters.bytes_received, len);
                add(&self.counters.steps, 1);
                self.open_steps += 1;
                self.node
                    .handle_message(inbound.from, msg, &mut self.outbox);
            }
            Ok((header, _)) => {
                let rejected = self.count_rejected();
                if log_rejection(rejected) {
                    tracing::warn!(
                        peer = inbound.from,
                        claimed_from = header.from,
                        claimed_to = header.to,
                        rejected,
                        "frame rejected: its header does not match the authenticated sender and this node"
                    );
                }
            }
            Err(error) => {
                let rejected = self.count_rejected();
                if log_rejection(rejected) {
                    tracing::warn!(peer = inbound.from, bytes = len, %error, rejected, "frame rejected");
                }
            }
        }
    }

    /// Counts one rejected frame; returns how many were rejected so far.
    fn count_rejected(&self) -> u64 {
        self.counters
            .frames_rejected
            .fetch_add(1, Ordering::Relaxed)
            + 1
    }

    fn on_tick(&mut self) {
        add(&self.counters.ticks, 1);
        add(&self.counters.steps, 1);
        self.open_steps += 1;
        self.node.tick(&mut self.outbox);
    }

    fn on_command(&mut self, Command(req, reply): Command<N>) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.pending.insert(id, reply);
        add(&self.counters.steps, 1);
        self.open_steps += 1;
        self.open_requests += 1;
        self.node.handle_request(id, req, &mut self.outbox);
    }

    /// [`Self::flush_once`], again while persisting inline left new effects behind (the
    /// [`Node::records_durable`] step that follows each inline sync), a bounded number of times;
    /// whatever remains is flushed after the next input.
    fn flush(&mut self) -> Result<(), DriverError> {
        for _ in 0..INLINE_FLUSH_ROUNDS_MAX {
            self.flush_once()?;
            if self.outbox.is_empty() || !matches!(self.stage, Stage::Inline(_)) {
                break;
            }
        }
        Ok(())
    }

    /// Hands the open batch on: released at once when it has no records and nothing waits
    /// before it, persisted inline, or sent to the persistence thread. While the thread is
    /// already busy with as many batches as allowed, the open batch stays open and keeps growing.
    fn flush_once(&mut self) -> Result<(), DriverError> {
        // Even when the batch must stay open (storage is busy), its early messages go now.
        self.send_early();
        if self.outbox.is_empty() {
            self.open_steps = 0;
            self.open_requests = 0;
            return Ok(());
        }
        if self.in_flight.len() >= self.config.persist_batches_in_flight_max {
            return Ok(());
        }
        let mut effects = self.outbox.take();
        self.open_steps = 0;
        self.open_requests = 0;
        if effects.records.is_empty() {
            match self.in_flight.back_mut() {
                // Nothing to wait for: release now, no thread hop.
                None => self.release(effects),
                // Must not overtake the batches before it; it needs no sync of its own, so it
                // rides along with the newest one.
                Some(last) => {
                    last.messages.append(&mut effects.messages);
                    last.responses.append(&mut effects.responses);
                    last.events.append(&mut effects.events);
                }
            }
            return Ok(());
        }
        let records = std::mem::take(&mut effects.records);
        match &mut self.stage {
            Stage::Inline(storage) => {
                let Some(storage) = storage.as_mut() else {
                    return Err(DriverError::Stopped);
                };
                let mut done = PersistedBatch {
                    records: 0,
                    bytes: 0,
                    checkpoints: 0,
                };
                for record in &records {
                    self.record_buf.clear();
                    self.codec
                        .encode_into(record.record(), &mut self.record_buf)
                        .map_err(DriverError::Codec)?;
                    let appended = if record.is_checkpoint() {
                        storage.append_checkpoint(&self.record_buf)
                    } else {
                        storage.append(&self.record_buf)
                    };
                    appended.map_err(|e| DriverError::StorageFailed(Arc::new(e)))?;
                    done.checkpoints += u64::from(record.is_checkpoint());
                    done.records += 1;
                    done.bytes += self.record_buf.len() as u64;
                }
                storage
                    .sync()
                    .map_err(|e| DriverError::StorageFailed(Arc::new(e)))?;
                self.count_persisted(&done);
                self.release(effects);
            }
            Stage::Background { batches, .. } => {
                let encoded = records
                    .iter()
                    .map(|r| {
                        self.codec
                            .encode(r.record())
                            .map(|bytes| (matches!(r, Persist::Checkpoint(_)), bytes))
                    })
                    .collect::<Result<EncodedBatch, _>>()
                    .map_err(DriverError::Codec)?;
                let Some(sender) = batches.as_ref() else {
                    return Err(DriverError::Stopped);
                };
                // Never blocks: the channel holds `persist_batches_in_flight_max` batches and
                // fewer than that are in flight.
                if sender.try_send(encoded).is_err() {
                    return Err(DriverError::StorageFailed(Arc::new(
                        StorageError::Poisoned("the persistence thread is gone".into()),
                    )));
                }
                self.in_flight.push_back(effects);
            }
        }
        Ok(())
    }

    fn count_persisted(&mut self, done: &PersistedBatch) {
        add(&self.counters.records_persisted, done.records);
        add(&self.counters.bytes_persisted, done.bytes);
        add(&self.counters.syncs, 1);
        if done.checkpoints > 0 {
            self.checkpoints_durable += done.checkpoints;
            self.node.checkpoints_durable(self.checkpoints_durable);
        }
        if done.records > 0 {
            // A step of its own: what it produces joins the open batch.
            self.records_durable += done.records;
            add(&self.counters.steps, 1);
            self.open_steps += 1;
            self.node
                .records_durable(self.records_durable, &mut self.outbox);
        }
    }

    /// Encodes and sends one message, counting it.
    fn send(&mut self, to: NodeId, msg: &N::Message) {
        let header = Header {
            protocol: N::PROTOCOL,
            version: N::WIRE_VERSION,
            from: self.node.id(),
            to,
        };
        let frame = match encode_frame(&self.codec, &header, msg) {
            Ok(frame) => frame,
            Err(error) => {
                add(&self.counters.send_failures, 1);
                tracing::error!(to, %error, "message could not be encoded; dropped");
                return;
            }
        };
        let len = frame.len() as u64;
        match self.transport.send(to, frame) {
            Ok(()) => {
                add(&self.counters.messages_sent, 1);
                add(&self.counters.bytes_sent, len);
            }
            Err(error) => {
                add(&self.counters.send_failures, 1);
                tracing::debug!(to, %error, "message not sent");
            }
        }
    }

    /// Sends the open batch's early messages ([`Outbox::send_early`]) now: they claim nothing
    /// its records hold, so they need not wait for its sync.
    fn send_early(&mut self) {
        if !self.outbox.has_early() {
            return;
        }
        let mut early = std::mem::take(&mut self.early_buf);
        let mut answers = std::mem::take(&mut self.early_answers_buf);
        self.outbox.take_early_into(&mut early, &mut answers);
        for (to, msg) in early.drain(..) {
            self.send(to, &msg);
        }
        for (id, response) in answers.drain(..) {
            self.answer(id, response);
        }
        self.early_buf = early;
        self.early_answers_buf = answers;
    }

    /// Hands `response` to the caller waiting for request `id`.
    fn answer(&mut self, id: RequestId, response: N::Response) {
        match self.pending.remove(&id) {
            Some(reply) => {
                add(&self.counters.responses, 1);
                // The caller may have given up waiting; that is fine.
                let _ = reply.send(Ok(response));
            }
            None => tracing::warn!(%id, "the core answered a request that is not pending"),
        }
    }

    /// Lets a batch's effects leave the node. Only called once its records are durable.
    fn release(&mut self, effects: Effects<N>) {
        add(&self.counters.batches, 1);
        for (to, msg) in effects.messages {
            self.send(to, &msg);
        }
        for (to, msg) in effects.early {
            // Early messages normally left when the batch was taken; any that remain (a batch
            // released without records) go now.
            self.send(to, &msg);
        }
        for (id, response) in effects.early_responses.into_iter().chain(effects.responses) {
            self.answer(id, response);
        }
        for event in effects.events {
            add(&self.counters.events, 1);
            // No subscriber is not an error.
            let _ = self.events.send(event);
        }
    }

    /// Ends the node: after a clean shutdown (`cause` is `None`) the steps already run are
    /// persisted and released; after a failure nothing more leaves. Then waiting callers get an
    /// error, the transport shuts down and the storage is handed back.
    async fn stop(mut self, mut cause: Option<DriverError>) -> Option<DriverError> {
        if cause.is_none() {
            cause = self.drain().await.err();
        }
        if let Some(e) = &cause {
            tracing::error!(error = %e, "node stopped");
            // Whatever is still held was never made durable: it must not leave.
            self.in_flight.clear();
            drop(self.outbox.take());
        }
        let error = cause.clone().unwrap_or(DriverError::Stopped);
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        self.commands.close();
        while let Ok(Command(_, reply)) = self.commands.try_recv() {
            let _ = reply.send(Err(error.clone()));
        }
        self.transport.shutdown().await;
        let storage = match &mut self.stage {
            Stage::Inline(storage) => storage.take(),
            Stage::Background {
                batches, storage, ..
            } => {
                // Closing the channel lets the thread finish and hand the storage back.
                batches.take();
                match storage.take() {
                    Some(rx) => rx.await.ok(),
                    None => None,
                }
            }
        };
        if let (Some(storage), Ok(mut slot)) = (storage, self.storage_slot.lock()) {
            *slot = Some(Box::new(storage));
        }
        cause
    }

    /// Persists and releases everything the core produced so far.
    async fn drain(&mut self) -> Result<(), DriverError> {
        loop {
            self.flush()?;
            if self.in_flight.is_empty() && self.outbox.is_empty() {
                return Ok(());
            }
            let Stage::Background { results, .. } = &mut self.stage else {
                return Ok(());
            };
            match results.recv().await {
                Some(Ok(done)) => {
                    self.count_persisted(&done);
                    if let Some(effects) = self.in_flight.pop_front() {
                        self.release(effects);
                    }
                }
                Some(Err(e)) => return Err(DriverError::StorageFailed(Arc::new(e))),
                None => return Err(DriverError::Stopped),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_logging_thins_out_but_never_stops() {
        let logged: Vec<u64> = (1..=5000).filter(|&n| log_rejection(n)).collect();
        assert_eq!(logged[..16], (1..=16).collect::<Vec<_>>()[..]);
        assert_eq!(logged[16..], [32, 64, 128, 256, 512, 1024, 2048, 4096]);
    }

    #[test]
    fn config_validation_names_the_field() {
        assert!(DriverConfig::default().validate().is_ok());
        let err = DriverConfig {
            events_capacity: QUEUE_CAPACITY_LIMIT + 1,
            ..DriverConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("events_capacity"), "{err}");
        let zero_tick = DriverConfig {
            tick: Duration::ZERO,
            ..DriverConfig::default()
        };
        assert!(zero_tick.validate().is_err());
    }

    #[test]
    fn stats_add_and_subtract_field_wise() {
        let a = DriverStats {
            messages_sent: 5,
            syncs: 2,
            ..DriverStats::default()
        };
        let b = DriverStats {
            messages_sent: 3,
            syncs: 7,
            ..DriverStats::default()
        };
        let sum: DriverStats = [a, b].into_iter().sum();
        assert_eq!((sum.messages_sent, sum.syncs), (8, 9));
        let diff = a - b;
        assert_eq!((diff.messages_sent, diff.syncs), (2, 0));
    }
}
