//! TCP transport on tokio: length-delimited frames, an authenticated handshake, reconnect with
//! capped exponential backoff, bounded queues.
//!
//! Guarantees first:
//!
//! - **Authenticated senders.** Every inbound frame is attributed to the node id proven in the
//!   connection's handshake (HMAC-SHA256 with the cluster's shared key over a fresh nonce; see
//!   [`handshake`]); a peer that is not configured, names another cluster or does not hold the key
//!   is disconnected before it can deliver anything.
//! - **Per-link FIFO.** Each node dials each peer for its own outbound frames (one connection per
//!   direction), so frames from one node to another are received in the order they were sent.
//!   Frames can be lost when a connection breaks; frames sent after a reconnect still follow
//!   everything delivered before.
//! - **Bounded.** Frames above [`TcpConfig::frame_bytes_max`] are refused by `send`
//!   ([`TransportError::FrameTooLarge`]) and by the receiving codec, which reads the length
//!   prefix and disconnects before allocating. Each peer has a send queue of
//!   [`TcpConfig::send_queue_max`] frames; **when it is full, the new frame is dropped** and `send`
//!   returns [`TransportError::QueueFull`] (counted in [`TcpStats::dropped_queue_full`]): protocols
//!   retransmit, and dropping the newest keeps the frames already queued in order. Received frames
//!   wait in one queue of [`TcpConfig::inbound_queue_max`] frames; when it is full, reading from the
//!   sockets pauses and TCP flow control pushes back on the senders. Inbound connections are
//!   capped at [`TcpConfig::connections_max`].
//! - **Hostile input never panics.** A peer that fails the handshake, sends a frame above the
//!   limit, goes silent for [`TcpConfig::idle_timeout`] or breaks the protocol is disconnected
//!   with a logged reason (`tracing`, level `warn`), and every other connection keeps being served.
//! - **Liveness.** Both sides send an empty keepalive frame after
//!   [`TcpConfig::keepalive_interval`] without traffic, and drop a connection that stays silent
//!   for [`TcpConfig::idle_timeout`]: a half-open connection (the peer's machine vanished, or a
//!   partition swallowed its packets) is noticed and replaced. Empty frames are the keepalive,
//!   which is why `send` refuses empty frames ([`TransportError::EmptyFrame`]).
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use bytes::Bytes;
//! use common::transport::tcp::{TcpConfig, TcpTransport};
//! use common::transport::Transport;
//!
//! # async fn run() -> Result<(), common::transport::TransportError> {
//! let peers = BTreeMap::from([(2, "10.0.0.2:7000".parse().unwrap())]);
//! let config = TcpConfig::new(1, "prod", b"a shared secret of 16+ bytes".to_vec(),
//!                             "0.0.0.0:7000".parse().unwrap(), peers);
//! let mut node = TcpTransport::start(config).await?;
//! node.send(2, Bytes::from_static(b"hello"))?;
//! while let Some(inbound) = node.recv().await {
//!     println!("{} sent {} bytes", inbound.from, inbound.frame.len());
//! }
//! # Ok(()) }
//! ```
//!
//! **Peers change at run time.** [`TcpConfig::peers`] is the set a transport starts with;
//! [`TcpTransport::peers`] hands out a [`TcpPeers`] control that adds a peer (a new dialer and
//! queue; its handshakes are admitted from then on) or removes one (its queue and dialer go, its
//! inbound connection is closed, and its handshakes are refused) while the transport runs, for
//! clusters whose membership changes.
//!
//! The socket layer is a type parameter ([`Sockets`]): [`TokioSockets`] by default, turmoil's
//! simulated network with feature `turmoil` (`TurmoilSockets`), so the same code is tested under
//! seeded partitions and crashes.

pub mod handshake;
pub mod sockets;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tracing::Instrument;

use self::handshake::{Challenge, HandshakeError, Hello, Welcome, HANDSHAKE_FRAME_BYTES_MAX};
#[cfg(feature = "turmoil")]
pub use self::sockets::TurmoilSockets;
pub use self::sockets::{Sockets, TokioSockets};
use super::tls::{secure, MaybeTlsRead, MaybeTlsWrite, TlsConfig};
use super::{Inbound, Transport, TransportError, FRAME_BYTES_MAX_DEFAULT};
use crate::NodeId;

/// Default for [`TcpConfig::send_queue_max`].
pub const SEND_QUEUE_MAX_DEFAULT: usize = 1024;
/// Default for [`TcpConfig::inbound_queue_max`].
pub const INBOUND_QUEUE_MAX_DEFAULT: usize = 4096;
/// Default for [`TcpConfig::backoff_min`].
pub const BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(20);
/// Default for [`TcpConfig::backoff_max`].
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(2);
/// Default for [`TcpConfig::handshake_timeout`].
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// Default for [`TcpConfig::keepalive_interval`].
pub const KEEPALIVE_INTERVAL_DEFAULT: Duration = Duration::from_millis(500);
/// Default for [`TcpConfig::idle_timeout`].
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Default for [`TcpConfig::connections_max`].
pub const CONNECTIONS_MAX_DEFAULT: usize = 256;
/// The shortest cluster key accepted by [`TcpConfig::validate`].
pub const CLUSTER_KEY_BYTES_MIN: usize = 16;
/// The longest cluster name accepted by [`TcpConfig::validate`].
pub const CLUSTER_NAME_BYTES_MAX: usize = 128;
/// The largest frame the 4-byte length prefix can describe.
pub const FRAME_BYTES_LIMIT: usize = u32::MAX as usize;
/// Most queued frames written before one flush: batches small frames into few syscalls while
/// keeping the latency of a lone frame at one write.
pub const WRITE_BATCH_FRAMES_MAX: usize = 64;

/// Configuration of a [`TcpTransport`].
#[derive(Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// This node.
    pub id: NodeId,
    /// The cluster's name; a peer naming another cluster is refused.
    pub cluster: String,
    /// The cluster's shared secret (at least [`CLUSTER_KEY_BYTES_MIN`] bytes).
    pub cluster_key: Vec<u8>,
    /// Where to listen for peers.
    pub listen_addr: SocketAddr,
    /// Every peer's id and address. An entry for this node itself is ignored, so one map can
    /// describe the whole cluster.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The largest frame sent or received.
    pub frame_bytes_max: usize,
    /// Frames queued per peer before `send` drops new ones.
    pub send_queue_max: usize,
    /// Frames received and not yet taken by `recv` before reading pauses.
    pub inbound_queue_max: usize,
    /// The first wait before reconnecting to a peer; doubled after every failure.
    pub backoff_min: Duration,
    /// The cap of the reconnect wait.
    pub backoff_max: Duration,
    /// The most time a connection's handshake (and a dial) may take.
    pub handshake_timeout: Duration,
    /// Send a keepalive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Drop a connection after this long without receiving anything (must exceed
    /// `keepalive_interval`).
    pub idle_timeout: Duration,
    /// The most inbound connections (authenticated or still in their handshake).
    pub connections_max: usize,
    /// Mutual TLS on every connection (see [`super::tls`]); `None`: plain TCP, authenticated
    /// by the HMAC handshake but not encrypted. Both ends of a link must agree.
    pub tls: Option<TlsConfig>,
}

impl std::fmt::Debug for TcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TcpConfig")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .field(
                "cluster_key",
                &format_args!("<{} bytes>", self.cluster_key.len()),
            )
            .field("listen_addr", &self.listen_addr)
            .field("peers", &self.peers)
            .field("frame_bytes_max", &self.frame_bytes_max)
            .field("send_queue_max", &self.send_queue_max)
            .field("inbound_queue_max", &self.inbound_queue_max)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("connections_max", &self.connections_max)
            .field("tls", &self.tls)
            .finish()
    }
}

impl TcpConfig {
    /// A configuration with the default limits and timeouts.
    pub fn new(
        id: NodeId,
        cluster: impl Into<String>,
        cluster_key: Vec<u8>,
        listen_addr: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> Self {
        Self {
            id,
            cluster: cluster.into(),
            cluster_key,
            listen_addr,
            peers,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            send_queue_max: SEND_QUEUE_MAX_DEFAULT,
            inbound_queue_max: INBOUND_QUEUE_MAX_DEFAULT,
            backoff_min: BACKOFF_MIN_DEFAULT,
            backoff_max: BACKOFF_MAX_DEFAULT,
            handshake_timeout: HANDSHAKE_TIMEOUT_DEFAULT,
            keepalive_interval: KEEPALIVE_INTERVAL_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            tls: None,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), TransportError> {
        let fail = |msg: String| Err(TransportError::Setup(msg));
        if self.cluster.is_empty() || self.cluster.len() > CLUSTER_NAME_BYTES_MAX {
            return fail(format!(
                "cluster name must be 1 to {CLUSTER_NAME_BYTES_MAX} bytes, got {}",
                self.cluster.len()
            ));
        }
        if self.cluster_key.len() < CLUSTER_KEY_BYTES_MIN {
            return fail(format!(
                "cluster_key must be at least {CLUSTER_KEY_BYTES_MIN} bytes, got {}",
                self.cluster_key.len()
            ));
        }
        if self.frame_bytes_max == 0 || self.frame_bytes_max > FRAME_BYTES_LIMIT {
            return fail(format!(
                "frame_bytes_max must be 1 to {FRAME_BYTES_LIMIT}, got {}",
                self.frame_bytes_max
            ));
        }
        for (name, value) in [
            ("send_queue_max", self.send_queue_max),
            ("inbound_queue_max", self.inbound_queue_max),
            ("connections_max", self.connections_max),
        ] {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        for (name, value) in [
            ("backoff_min", self.backoff_min),
            ("handshake_timeout", self.handshake_timeout),
            ("keepalive_interval", self.keepalive_interval),
        ] {
            if value.is_zero() {
                return fail(format!("{name} must be positive"));
            }
        }
        if self.backoff_max < self.backoff_min {
            return fail(format!(
                "backoff_max ({:?}) is below backoff_min ({:?})",
                self.backoff_max, self.backoff_min
            ));
        }
        if self.idle_timeout <= self.keepalive_interval {
            return fail(format!(
                "idle_timeout ({:?}) must exceed keepalive_interval ({:?})",
                self.idle_timeout, self.keepalive_interval
            ));
        }
        Ok(())
    }
}

/// Counters of a [`TcpTransport`], over its whole life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Frames received from authenticated peers and queued for `recv`.
    pub frames_in: u64,
    /// Bytes of those frames (without length prefixes).
    pub bytes_in: u64,
    /// Frames handed to a connection's socket (a frame can still be lost if the connection
    /// breaks before the peer reads it).
    pub frames_out: u64,
    /// Bytes of those frames (without length prefixes).
    pub bytes_out: u64,
    /// Frames refused by `send` because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Frames taken from a send queue and lost because their connection broke while writing.
    pub dropped_write_failed: u64,
    /// Handshakes completed (both directions).
    pub handshakes_ok: u64,
    /// Handshakes refused or failed (bad key, unknown node, wrong cluster, garbage, timeout).
    pub handshakes_rejected: u64,
    /// Established connections that ended (error, idle, oversize frame, peer closed).
    pub disconnects: u64,
    /// Dials that failed before a handshake could start.
    pub dials_failed: u64,
    /// Inbound connections refused because `connections_max` were open.
    pub connections_refused: u64,
    /// Inbound connections closed because the same peer authenticated a newer one.
    pub connections_superseded: u64,
}

#[derive(Default)]
struct Counters {
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_write_failed: AtomicU64,
    handshakes_ok: AtomicU64,
    handshakes_rejected: AtomicU64,
    disconnects: AtomicU64,
    dials_failed: AtomicU64,
    connections_refused: AtomicU64,
    connections_superseded: AtomicU64,
}

/// Recovers the guard of a poisoned lock: the map it protects is updated in single steps, so it
/// is consistent even if a holder panicked.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> TcpStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TcpStats {
            frames_in: g(&self.frames_in),
            bytes_in: g(&self.bytes_in),
            frames_out: g(&self.frames_out),
            bytes_out: g(&self.bytes_out),
            dropped_queue_full: g(&self.dropped_queue_full),
            dropped_write_failed: g(&self.dropped_write_failed),
            handshakes_ok: g(&self.handshakes_ok),
            handshakes_rejected: g(&self.handshakes_rejected),
            disconnects: g(&self.disconnects),
            dials_failed: g(&self.dials_failed),
            connections_refused: g(&self.connections_refused),
            connections_superseded: g(&self.connections_superseded),
        }
    }
}

/// One peer's outbound link: where it listens, the queue its dialer drains, and the dialer.
struct Link {
    addr: SocketAddr,
    queue: mpsc::Sender<Bytes>,
    dialer: tokio::task::AbortHandle,
}

/// What every task of one transport shares.
struct Ctx {
    config: TcpConfig,
    counters: Counters,
    /// The current peers. Read on every `send` and handshake; written only when a peer is added
    /// or removed.
    links: std::sync::RwLock<BTreeMap<NodeId, Link>>,
    /// The dialer tasks (aborted and awaited on shutdown).
    dialers: std::sync::Mutex<JoinSet<()>>,
    /// Set by shutdown: no peer is added after it.
    closed: std::sync::atomic::AtomicBool,
    /// The transport's tracing span, for dialers started later.
    span: tracing::Span,
    /// The live inbound connection of each peer: its number and how to tell it to stop.
    inbound_by_peer: std::sync::Mutex<BTreeMap<NodeId, (u64, Arc<tokio::sync::Notify>)>>,
    /// Numbers inbound connections, so a connection only unregisters itself.
    next_connection: AtomicU64,
}

/// Read access to the links: the map is updated in single steps, so it is consistent even if a
/// holder panicked.
fn read_links(ctx: &Ctx) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeId, Link>> {
    ctx.links
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_links(ctx: &Ctx) -> std::sync::RwLockWriteGuard<'_, BTreeMap<NodeId, Link>> {
    ctx.links
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A node's TCP endpoint. See the module documentation.
pub struct TcpTransport<S: Sockets = TokioSockets> {
    id: NodeId,
    local_addr: SocketAddr,
    frame_bytes_max: usize,
    send_queue_max: usize,
    ctx: Arc<Ctx>,
    inbound: mpsc::Receiver<Inbound>,
    /// The listener task. Aborted on shutdown or drop; it owns the connection tasks, so they
    /// end with it. (The dialers live in [`Ctx::dialers`].)
    tasks: JoinSet<()>,
    closed: bool,
    _sockets: PhantomData<S>,
}

impl<S: Sockets> Drop for TcpTransport<S> {
    fn drop(&mut self) {
        // The dialers hold the shared context, so they would outlive a transport dropped without
        // `shutdown`: stop them here (the listener task ends with `tasks`).
        self.ctx.closed.store(true, Ordering::Release);
        write_links(&self.ctx).clear();
        lock(&self.ctx.dialers).abort_all();
    }
}

/// Adds and removes the peers of a running [`TcpTransport`]; see the module documentation.
/// Cheap to clone. Its methods must be called inside the transport's tokio runtime.
pub struct TcpPeers<S: Sockets = TokioSockets> {
    ctx: Arc<Ctx>,
    _sockets: PhantomData<S>,
}

impl<S: Sockets> Clone for TcpPeers<S> {
    fn clone(&self) -> Self {
        Self {
            ctx: Arc::clone(&self.ctx),
            _sockets: PhantomData,
        }
    }
}

impl<S: Sockets> std::fmt::Debug for TcpPeers<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(read_links(&self.ctx).iter().map(|(id, l)| (id, l.addr)))
            .finish()
    }
}

impl<S: Sockets> TcpPeers<S> {
    /// Adds `id` at `addr`: frames sent to it are queued and delivered from now on, and its
    /// handshakes are admitted. `Ok(false)` if it was already a peer at that address (or is this
    /// node); a known peer at another address gets a new link, and the frames still queued for
    /// the old address are dropped. Fails only once the transport is shut down.
    pub fn add(&self, id: NodeId, addr: SocketAddr) -> Result<bool, TransportError> {
        if self.ctx.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        if id == self.ctx.config.id {
            return Ok(false);
        }
        let mut links = write_links(&self.ctx);
        if links.get(&id).is_some_and(|l| l.addr == addr) {
            return Ok(false);
        }
        let link = start_link::<S>(&self.ctx, id, addr);
        if let Some(old) = links.insert(id, link) {
            old.dialer.abort();
        }
        tracing::info!(node = self.ctx.config.id, peer = id, %addr, "peer added");
        Ok(true)
    }

    /// Removes `id`: its queue and dialer are dropped, its inbound connection is closed, and its
    /// handshakes are refused from now on. Whether it was a peer.
    pub fn remove(&self, id: NodeId) -> bool {
        let Some(link) = write_links(&self.ctx).remove(&id) else {
            return false;
        };
        link.dialer.abort();
        if let Some((_, inbound)) = lock(&self.ctx.inbound_by_peer).remove(&id) {
            inbound.notify_one();
        }
        tracing::info!(node = self.ctx.config.id, peer = id, "peer removed");
        true
    }

    /// The current peers and their addresses.
    pub fn list(&self) -> BTreeMap<NodeId, SocketAddr> {
        read_links(&self.ctx)
            .iter()
            .map(|(&id, l)| (id, l.addr))
            .collect()
    }
}

/// Starts the dialer of a new link to `peer`.
fn start_link<S: Sockets>(ctx: &Arc<Ctx>, peer: NodeId, addr: SocketAddr) -> Link {
    let (queue, rx) = mpsc::channel(ctx.config.send_queue_max);
    let dialer = lock(&ctx.dialers)
        .spawn(dial_loop::<S>(Arc::clone(ctx), peer, addr, rx).instrument(ctx.span.clone()));
    Link {
        addr,
        queue,
        dialer,
    }
}

impl<S: Sockets> std::fmt::Debug for TcpTransport<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .field("peers", &read_links(&self.ctx).keys().collect::<Vec<_>>())
            .field("closed", &self.closed)
            .finish()
    }
}

impl TcpTransport<TokioSockets> {
    /// Validates `config`, binds [`TcpConfig::listen_addr`] with real sockets and starts
    /// listening and dialing.
    pub async fn start(config: TcpConfig) -> Result<Self, TransportError> {
        Self::bind(config).await
    }

    /// Starts on a tokio listener bound beforehand (for example to port 0, to learn the address
    /// before configuring the peers); [`TcpConfig::listen_addr`] is replaced by the listener's
    /// address. Must be called inside a tokio runtime.
    pub fn with_listener(
        config: TcpConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Self, TransportError> {
        Self::from_listener(config, listener)
    }
}

impl<S: Sockets> TcpTransport<S> {
    /// [`TcpTransport::start`] over any socket layer: validates `config`, binds
    /// [`TcpConfig::listen_addr`] and starts listening and dialing.
    pub async fn bind(config: TcpConfig) -> Result<Self, TransportError> {
        config.validate()?;
        let listener = S::bind(config.listen_addr).await.map_err(|e| {
            TransportError::Setup(format!("binding {} failed: {e}", config.listen_addr))
        })?;
        Self::from_listener(config, listener)
    }

    /// [`TcpTransport::with_listener`] over any socket layer.
    pub fn from_listener(
        mut config: TcpConfig,
        listener: S::Listener,
    ) -> Result<Self, TransportError> {
        config.validate()?;
        let local_addr = S::local_addr(&listener)
            .map_err(|e| TransportError::Setup(format!("listener has no address: {e}")))?;
        config.listen_addr = local_addr;
        let id = config.id;
        let frame_bytes_max = config.frame_bytes_max;
        let send_queue_max = config.send_queue_max;
        let (inbound_tx, inbound) = mpsc::channel(config.inbound_queue_max);
        let peer_addrs: Vec<(NodeId, SocketAddr)> = config
            .peers
            .iter()
            .filter(|(&p, _)| p != id)
            .map(|(&p, &a)| (p, a))
            .collect();
        let span = tracing::info_span!("tcp", node = id);
        let ctx = Arc::new(Ctx {
            config,
            counters: Counters::default(),
            links: std::sync::RwLock::new(BTreeMap::new()),
            dialers: std::sync::Mutex::new(JoinSet::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            span: span.clone(),
            inbound_by_peer: std::sync::Mutex::new(BTreeMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop::<S>(Arc::clone(&ctx), listener, inbound_tx).instrument(span));
        {
            let mut links = write_links(&ctx);
            for (peer, addr) in peer_addrs {
                let link = start_link::<S>(&ctx, peer, addr);
                links.insert(peer, link);
            }
        }
        Ok(Self {
            id,
            local_addr,
            frame_bytes_max,
            send_queue_max,
            ctx,
            inbound,
            tasks,
            closed: false,
            _sockets: PhantomData,
        })
    }

    /// The address this transport listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The transport's counters.
    pub fn stats(&self) -> TcpStats {
        self.ctx.counters.snapshot()
    }

    /// The configuration in use (with the actual listening address). Its `peers` are the ones
    /// the transport started with; [`TcpPeers::list`] has the current ones.
    pub fn config(&self) -> &TcpConfig {
        &self.ctx.config
    }

    /// The control that adds and removes peers while the transport runs (for example after the
    /// transport was handed to a driver).
    pub fn peers(&self) -> TcpPeers<S> {
        TcpPeers {
            ctx: Arc::clone(&self.ctx),
            _sockets: PhantomData,
        }
    }
}

#[async_trait]
impl<S: Sockets> Transport for TcpTransport<S> {
    fn local_id(&self) -> NodeId {
        self.id
    }

    fn send(&self, to: NodeId, frame: Bytes) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::Closed);
        }
        if frame.len() > self.frame_bytes_max {
            return Err(TransportError::FrameTooLarge {
                len: frame.len(),
                max: self.frame_bytes_max,
            });
        }
        if frame.is_empty() {
            return Err(TransportError::EmptyFrame);
        }
        let links = read_links(&self.ctx);
        let Some(link) = links.get(&to) else {
            return Err(TransportError::UnknownPeer(to));
        };
        match link.queue.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&self.ctx.counters.dropped_queue_full, 1);
                Err(TransportError::QueueFull {
                    peer: to,
                    capacity: self.send_queue_max,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(TransportError::Closed),
        }
    }

    async fn recv(&mut self) -> Option<Inbound> {
        if self.closed {
            return None;
        }
        self.inbound.recv().await
    }

    async fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.ctx.closed.store(true, Ordering::Release);
        write_links(&self.ctx).clear();
        let mut dialers = std::mem::take(&mut *lock(&self.ctx.dialers));
        dialers.abort_all();
        self.tasks.abort_all();
        // Wait until every task is gone, so the listening socket is released when this returns
        // and a restarted transport can bind the same address.
        while self.tasks.join_next().await.is_some() {}
        while dialers.join_next().await.is_some() {}
        self.inbound.close();
        tracing::debug!(node = self.id, "tcp transport shut down");
    }
}

fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max)
        .new_codec()
}

type ReadHalf<S> = MaybeTlsRead<<S as Sockets>::ReadHalf, <S as Sockets>::WriteHalf>;
type WriteHalf<S> = MaybeTlsWrite<<S as Sockets>::ReadHalf, <S as Sockets>::WriteHalf>;
type Reader<S> = FramedRead<ReadHalf<S>, LengthDelimitedCodec>;
type Writer<S> = FramedWrite<WriteHalf<S>, LengthDelimitedCodec>;

/// Reads one handshake frame.
async fn read_msg<S: Sockets, T: serde::de::DeserializeOwned>(
    reader: &mut Reader<S>,
) -> Result<T, HandshakeError> {
    match reader.next().await {
        None => Err(HandshakeError::Closed),
        Some(Err(e)) => Err(HandshakeError::Io(e.to_string())),
        Some(Ok(bytes)) => handshake::decode(&bytes),
    }
}

async fn write_msg<S: Sockets, T: serde::Serialize>(
    writer: &mut Writer<S>,
    msg: &T,
) -> Result<(), HandshakeError> {
    writer
        .send(handshake::encode(msg)?)
        .await
        .map_err(|e| HandshakeError::Io(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Inbound side: accept, authenticate, read frames.

async fn accept_loop<S: Sockets>(
    ctx: Arc<Ctx>,
    listener: S::Listener,
    inbound: mpsc::Sender<Inbound>,
) {
    // Owned here so that aborting this task (shutdown) drops, and so aborts, every connection.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (reader, writer, addr) = match S::accept(&listener).await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically out of file descriptors: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ctx.config.backoff_min).await;
                continue;
            }
        };
        if connections.len() >= ctx.config.connections_max {
            bump(&ctx.counters.connections_refused, 1);
            tracing::warn!(
                %addr,
                open = connections.len(),
                "refusing connection: connections_max reached"
            );
            continue;
        }
        connections.spawn(
            serve_inbound::<S>(Arc::clone(&ctx), reader, writer, addr, inbound.clone())
                .in_current_span(),
        );
    }
}

/// The acceptor's half of the handshake; returns the authenticated peer.
async fn accept_handshake<S: Sockets>(
    ctx: &Ctx,
    reader: &mut Reader<S>,
    writer: &mut Writer<S>,
) -> Result<NodeId, HandshakeError> {
    let cfg = &ctx.config;
    let challenge = Challenge {
        version: handshake::HANDSHAKE_VERSION,
        nonce: handshake::nonce()?,
    };
    write_msg::<S, _>(writer, &challenge).await?;
    let hello: Hello = read_msg::<S, _>(reader).await?;
    let (peer, welcome) = handshake::check_hello(
        &cfg.cluster_key,
        &cfg.cluster,
        cfg.id,
        |id| read_links(ctx).contains_key(&id),
        &challenge,
        &hello,
    )?;
    write_msg::<S, _>(writer, &welcome).await?;
    Ok(peer)
}

async fn serve_inbound<S: Sockets>(
    ctx: Arc<Ctx>,
    read_half: S::ReadHalf,
    write_half: S::WriteHalf,
    addr: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
) {
    let cfg = &ctx.config;
    let opened = async {
        let (read_half, write_half) = secure(cfg.tls.as_ref(), read_half, write_half, false)
            .await
            .map_err(|e| HandshakeError::Tls(e.to_string()))?;
        let mut reader: Reader<S> = FramedRead::new(read_half, codec(HANDSHAKE_FRAME_BYTES_MAX));
        let mut writer: Writer<S> = FramedWrite::new(write_half, codec(HANDSHAKE_FRAME_BYTES_MAX));
        let peer = accept_handshake::<S>(&ctx, &mut reader, &mut writer).await?;
        Ok((peer, reader, writer))
    };
    let (peer, mut reader, mut writer) = match tokio::time::timeout(cfg.handshake_timeout, opened)
        .await
        .unwrap_or(Err(HandshakeError::Timeout))
    {
        Ok(opened) => opened,
        Err(reason) => {
            bump(&ctx.counters.handshakes_rejected, 1);
            tracing::warn!(%addr, %reason, "inbound handshake rejected; disconnecting");
            return;
        }
    };
    bump(&ctx.counters.handshakes_ok, 1);
    tracing::debug!(peer, %addr, "inbound connection authenticated");
    reader
        .decoder_mut()
        .set_max_frame_length(cfg.frame_bytes_max);
    writer
        .encoder_mut()
        .set_max_frame_length(cfg.frame_bytes_max);
    // A peer has one inbound connection at a time. When it dials again (it restarted, or gave
    // up on a connection it believed dead), the older connection stops reading at once: frames
    // still unread there are lost rather than delivered after the newer connection's, which
    // keeps the link FIFO across reconnects.
    let number = ctx.next_connection.fetch_add(1, Ordering::Relaxed);
    let superseded = Arc::new(tokio::sync::Notify::new());
    let older = lock(&ctx.inbound_by_peer).insert(peer, (number, Arc::clone(&superseded)));
    if let Some((_, older)) = older {
        older.notify_one();
    }
    let reason = tokio::select! {
        // Fixed polling order: tokio would otherwise pick a branch at random, from an
        // unseeded source, and a seeded simulation (turmoil) would not replay.
        biased;
        _ = superseded.notified() => Err(ConnectionError::Superseded),
        r = read_frames::<S>(&ctx, peer, &mut reader, &inbound) => r,
        r = send_keepalives::<S>(&ctx, &mut writer) => r,
    };
    {
        let mut by_peer = lock(&ctx.inbound_by_peer);
        if by_peer.get(&peer).is_some_and(|(n, _)| *n == number) {
            by_peer.remove(&peer);
        }
    }
    match reason {
        Ok(()) => tracing::debug!(peer, %addr, "inbound connection closed"),
        Err(ConnectionError::Superseded) => {
            bump(&ctx.counters.connections_superseded, 1);
            tracing::debug!(peer, %addr, "inbound connection superseded by a newer one");
        }
        Err(reason) => {
            bump(&ctx.counters.disconnects, 1);
            tracing::warn!(peer, %addr, %reason, "disconnecting inbound peer");
        }
    }
}

/// Why an established connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("no frame for {0:?}; the connection is presumed dead")]
    Idle(Duration),
    #[error("read failed (oversize frame or broken connection): {0}")]
    Read(std::io::Error),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("write did not complete within {0:?}")]
    WriteStalled(Duration),
    #[error("peer closed the connection")]
    PeerClosed,
    #[error("the accepting side sent a data frame; it only ever sends keepalives")]
    Unexpected,
    #[error("the peer opened a newer connection")]
    Superseded,
}

/// Reads frames from an authenticated peer into the inbound queue. `Ok` when the transport is
/// gone; `Err` names why the connection must be dropped.
async fn read_frames<S: Sockets>(
    ctx: &Ctx,
    peer: NodeId,
    reader: &mut Reader<S>,
    inbound: &mpsc::Sender<Inbound>,
) -> Result<(), ConnectionError> {
    let idle = ctx.config.idle_timeout;
    loop {
        let frame = match tokio::time::timeout(idle, reader.next()).await {
            Err(_) => return Err(ConnectionError::Idle(idle)),
            Ok(None) => return Err(ConnectionError::PeerClosed),
            Ok(Some(Err(e))) => return Err(ConnectionError::Read(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if frame.is_empty() {
            continue; // keepalive
        }
        bump(&ctx.counters.frames_in, 1);
        bump(&ctx.counters.bytes_in, frame.len() as u64);
        let inbound_frame = Inbound {
            from: peer,
            frame: frame.freeze(),
        };
        if inbound.send(inbound_frame).await.is_err() {
            return Ok(());
        }
    }
}

/// The accepting side's writer: only keepalives, so the dialer can tell the connection lives.
async fn send_keepalives<S: Sockets>(
    ctx: &Ctx,
    writer: &mut Writer<S>,
) -> Result<(), ConnectionError> {
    let mut every = tokio::time::interval(ctx.config.keepalive_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        write_bounded::<S>(ctx, writer, Bytes::new(), true).await?;
    }
}

/// Writes (and optionally flushes) one frame within the idle timeout: a write that cannot make
/// progress for that long means the peer stopped reading or vanished.
async fn write_bounded<S: Sockets>(
    ctx: &Ctx,
    writer: &mut Writer<S>,
    frame: Bytes,
    flush: bool,
) -> Result<(), ConnectionError> {
    let limit = ctx.config.idle_timeout;
    let io = async {
        if flush {
            writer.send(frame).await
        } else {
            writer.feed(frame).await
        }
    };
    match tokio::time::timeout(limit, io).await {
        Err(_) => Err(ConnectionError::WriteStalled(limit)),
        Ok(Err(e)) => Err(ConnectionError::Write(e)),
        Ok(Ok(())) => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Outbound side: dial, authenticate, write frames, reconnect.

/// Dials `peer` and runs the handshake as the dialer.
async fn dial<S: Sockets>(
    ctx: &Ctx,
    peer: NodeId,
    addr: SocketAddr,
) -> Result<(Reader<S>, Writer<S>), DialError> {
    let cfg = &ctx.config;
    let (read_half, write_half) = S::connect(addr).await.map_err(DialError::Connect)?;
    let (read_half, write_half) = secure(cfg.tls.as_ref(), read_half, write_half, true)
        .await
        .map_err(|e| DialError::Handshake(HandshakeError::Tls(e.to_string())))?;
    let mut reader: Reader<S> = FramedRead::new(read_half, codec(HANDSHAKE_FRAME_BYTES_MAX));
    let mut writer: Writer<S> = FramedWrite::new(write_half, codec(HANDSHAKE_FRAME_BYTES_MAX));
    let exchange = async {
        let challenge: Challenge = read_msg::<S, _>(&mut reader).await?;
        let my_nonce = handshake::nonce()?;
        let hello = handshake::hello(
            &cfg.cluster_key,
            &cfg.cluster,
            cfg.id,
            peer,
            &challenge,
            my_nonce,
        )?;
        write_msg::<S, _>(&mut writer, &hello).await?;
        let welcome: Welcome = read_msg::<S, _>(&mut reader).await?;
        handshake::check_welcome(
            &cfg.cluster_key,
            &cfg.cluster,
            cfg.id,
            peer,
            &my_nonce,
            &welcome,
        )
    };
    exchange.await.map_err(DialError::Handshake)?;
    reader
        .decoder_mut()
        .set_max_frame_length(cfg.frame_bytes_max);
    writer
        .encoder_mut()
        .set_max_frame_length(cfg.frame_bytes_max);
    Ok((reader, writer))
}

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
}

/// Keeps a connection to `peer` and writes its queued frames, reconnecting with capped
/// exponential backoff.
async fn dial_loop<S: Sockets>(
    ctx: Arc<Ctx>,
    peer: NodeId,
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Bytes>,
) {
    let cfg = &ctx.config;
    let mut backoff = cfg.backoff_min;
    loop {
        let dialed = tokio::time::timeout(cfg.handshake_timeout, dial::<S>(&ctx, peer, addr))
            .await
            .unwrap_or(Err(DialError::Handshake(HandshakeError::Timeout)));
        match dialed {
            Ok((mut reader, mut writer)) => {
                bump(&ctx.counters.handshakes_ok, 1);
                tracing::debug!(peer, %addr, "outbound connection authenticated");
                backoff = cfg.backoff_min;
                let outcome = tokio::select! {
                    // Fixed polling order: tokio would otherwise pick a branch at random, from an
                    // unseeded source, and a seeded simulation (turmoil) would not replay.
                    biased;
                    r = write_frames::<S>(&ctx, &mut writer, &mut queue) => r,
                    r = watch_acceptor::<S>(&ctx, &mut reader) => r.map(|()| false),
                };
                match outcome {
                    Ok(true) => return, // the transport is gone
                    Ok(false) => {}
                    Err(reason) => {
                        bump(&ctx.counters.disconnects, 1);
                        tracing::warn!(peer, %addr, %reason, "outbound connection lost; reconnecting");
                    }
                }
            }
            Err(DialError::Connect(e)) => {
                bump(&ctx.counters.dials_failed, 1);
                tracing::debug!(peer, %addr, error = %e, ?backoff, "dial failed; retrying");
            }
            Err(DialError::Handshake(reason)) => {
                bump(&ctx.counters.handshakes_rejected, 1);
                tracing::warn!(peer, %addr, %reason, ?backoff, "outbound handshake failed; retrying");
            }
        }
        // A production deployment would add random jitter here so that a cluster restarting
        // together does not reconnect in lockstep; the cap keeps the worst case bounded.
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(cfg.backoff_max);
    }
}

/// Writes queued frames in batches, and a keepalive after `keepalive_interval` of silence.
/// `Ok(true)` when the queue closed (the transport is gone).
async fn write_frames<S: Sockets>(
    ctx: &Ctx,
    writer: &mut Writer<S>,
    queue: &mut mpsc::Receiver<Bytes>,
) -> Result<bool, ConnectionError> {
    let keepalive = ctx.config.keepalive_interval;
    loop {
        let first = match tokio::time::timeout(keepalive, queue.recv()).await {
            Err(_) => {
                write_bounded::<S>(ctx, writer, Bytes::new(), true).await?;
                continue;
            }
            Ok(None) => return Ok(true),
            Ok(Some(frame)) => frame,
        };
        let mut batch = 1;
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            let len = frame.len() as u64;
            let more = if batch < WRITE_BATCH_FRAMES_MAX {
                queue.try_recv().ok()
            } else {
                None
            };
            if let Err(e) = write_bounded::<S>(ctx, writer, frame, more.is_none()).await {
                // This frame and the next one already taken from the queue are lost with the
                // connection (frames fed before it may be lost too; they were counted as out).
                bump(
                    &ctx.counters.dropped_write_failed,
                    1 + u64::from(more.is_some()),
                );
                return Err(e);
            }
            bump(&ctx.counters.frames_out, 1);
            bump(&ctx.counters.bytes_out, len);
            batch += 1;
            next = more;
        }
    }
}

/// Reads what the acceptor sends (only keepalives) to notice a dead or closed connection.
async fn watch_acceptor<S: Sockets>(
    ctx: &Ctx,
    reader: &mut Reader<S>,
) -> Result<(), ConnectionError> {
    let idle = ctx.config.idle_timeout;
    loop {
        match tokio::time::timeout(idle, reader.next()).await {
            Err(_) => return Err(ConnectionError::Idle(idle)),
            Ok(None) => return Err(ConnectionError::PeerClosed),
            Ok(Some(Err(e))) => return Err(ConnectionError::Read(e)),
            Ok(Some(Ok(frame))) if frame.is_empty() => {}
            Ok(Some(Ok(_))) => return Err(ConnectionError::Unexpected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TcpConfig {
        TcpConfig::new(
            1,
            "test",
            vec![7; 32],
            "127.0.0.1:0".parse().unwrap(),
            BTreeMap::from([(2, "127.0.0.1:1".parse().unwrap())]),
        )
    }

    #[test]
    fn default_config_is_valid_and_mistakes_are_explained() {
        config().validate().unwrap();
        type Case = (fn(&mut TcpConfig), &'static str);
        let cases: Vec<Case> = vec![
            (|c| c.cluster_key = vec![1; 3], "cluster_key"),
            (|c| c.cluster = String::new(), "cluster name"),
            (|c| c.frame_bytes_max = 0, "frame_bytes_max"),
            (|c| c.send_queue_max = 0, "send_queue_max"),
            (|c| c.backoff_max = Duration::from_millis(1), "backoff_max"),
            (|c| c.idle_timeout = c.keepalive_interval, "idle_timeout"),
            (
                |c| c.handshake_timeout = Duration::ZERO,
                "handshake_timeout",
            ),
        ];
        for (break_it, needle) in cases {
            let mut c = config();
            break_it(&mut c);
            match c.validate() {
                Err(TransportError::Setup(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("expected a setup error about {needle}, got {other:?}"),
            }
        }
        assert!(
            !format!("{:?}", config()).contains("7, 7"),
            "key not logged"
        );
    }
}
