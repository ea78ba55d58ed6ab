//! The tokio driver: runs any [`Node`] over any [`Transport`], [`Storage`] and [`Codec`]
//! (feature `runtime`, on by default).
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
//!   for room (backpressure), [`NodeHandle::submit`] takes its place in line for room and
//!   [`NodeHandle::try_request`] answers [`DriverError::Busy`]; the queue never grows. At most [`DriverConfig::requests_pending_max`] requests wait for the core's
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
//!   node, and the tokio worker never blocks on disk IO. After a sync the thread may keep
//!   checking for the next batch for [`DriverConfig::persist_spin`] before it sleeps, trading
//!   CPU time for the wake-ups a write crosses (off by default; `kv-node` turns it on).
//! - [`Persistence::Inline`] (for [`MemStorage`](crate::MemStorage), whose `sync` is free): the
//!   node task calls storage itself, saving a thread hop per batch.
//!
//! Either way a batch without records that has nothing before it waiting for storage is released
//! at once, with no thread hop: the in-memory path stays short.
//!
//! # What the driver expects from its parts
//!
//! - [`Transport::recv`] is cancel-safe: a frame is either returned or stays queued when the
//!   future is dropped. The driver selects over it while it waits for an input. (Both
//!   transports of the workspace are.)
//! - [`Transport::try_recv`] never waits: while gathering a batch the driver asks it for one
//!   more frame after every input, so a transport should implement it with a plain check (the
//!   default polls `recv` once, allocating its future each time).
//!
//! While gathering, the driver takes waiting requests up to 32 at a time: tokio's bounded
//! channel locks to hand each freed slot back to the callers, once per take. Between two takes
//! it looks for a frame, so requests cannot keep the peers' messages waiting. (Both changes
//! measured in the `raft` crate's docs, "Through the driver".)
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
//!
//! # Layout
//!
//! `config.rs` holds [`DriverConfig`] and [`Persistence`]; `stats.rs` [`DriverStats`] and the
//! counters behind it; `handle.rs` the [`NodeHandle`] clients use; `runner.rs` the node task
//! (inputs, batching, release of effects, shutdown); `persistence.rs` where a batch's records
//! are made durable (inline, or on the persistence thread).

mod config;
mod handle;
mod persistence;
mod runner;
mod stats;

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

pub use config::{
    DriverConfig, Persistence, BATCH_STEPS_MAX_DEFAULT, EVENTS_CAPACITY_DEFAULT,
    METRICS_QUEUE_CAPACITY, PERSIST_BATCHES_IN_FLIGHT_MAX_DEFAULT, PERSIST_SPIN_MAX,
    QUEUE_CAPACITY_LIMIT, REJECTIONS_LOGGED_FIRST, REQUESTS_PENDING_MAX_DEFAULT,
    REQUEST_QUEUE_CAPACITY_DEFAULT, TICK_DEFAULT,
};
pub use handle::{Answer, MappedAnswer, NodeHandle};
pub use stats::DriverStats;

use crate::codec::{Codec, CodecError};
use crate::transport::Transport;
use crate::{Node, Outbox, Storage, StorageError};
use handle::{report_end, Status};
use persistence::Stage;
use runner::Runner;
use stats::Counters;

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
        requests: Vec::new(),
        commands_buf: Vec::new(),
        early_buf: Vec::new(),
        early_answers_buf: Vec::new(),
    };
    let task = tokio::spawn(runner.run().instrument(tracing::info_span!("node", id)));
    report_end(id, task, status_tx);
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

#[cfg(test)]
mod tests {
    use super::config::QUEUE_CAPACITY_LIMIT;
    use super::runner::log_rejection;
    use super::*;
    use std::time::Duration;

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
        let spin = |persist_spin| DriverConfig {
            persist_spin,
            ..DriverConfig::default()
        };
        assert!(spin(PERSIST_SPIN_MAX).validate().is_ok());
        let err = spin(PERSIST_SPIN_MAX + Duration::from_micros(1))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("persist_spin"), "{err}");
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
