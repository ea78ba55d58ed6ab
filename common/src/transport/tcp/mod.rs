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

mod config;
mod inbound;
mod outbound;
mod stats;

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
#[cfg_attr(docsrs, doc(cfg(feature = "turmoil")))]
pub use self::sockets::TurmoilSockets;
pub use self::sockets::{Sockets, TokioSockets};
use super::tls::{secure, MaybeTlsRead, MaybeTlsWrite};
use super::{Inbound, Transport, TransportError, TryRecvError};
use crate::NodeId;

pub use config::{
    TcpConfig, BACKOFF_MAX_DEFAULT, BACKOFF_MIN_DEFAULT, CLUSTER_KEY_BYTES_MIN,
    CLUSTER_NAME_BYTES_MAX, CONNECTIONS_MAX_DEFAULT, FRAME_BYTES_LIMIT, HANDSHAKE_TIMEOUT_DEFAULT,
    IDLE_TIMEOUT_DEFAULT, INBOUND_QUEUE_MAX_DEFAULT, KEEPALIVE_INTERVAL_DEFAULT,
    SEND_QUEUE_MAX_DEFAULT, WRITE_BATCH_FRAMES_MAX,
};
use inbound::accept_loop;
use outbound::dial_loop;
pub use stats::TcpStats;
use stats::{bump, Counters};

/// Recovers the guard of a poisoned lock: the map it protects is updated in single steps, so it
/// is consistent even if a holder panicked.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

    fn try_recv(&mut self) -> Result<Inbound, TryRecvError> {
        if self.closed {
            return Err(TryRecvError::Closed);
        }
        self.inbound.try_recv().map_err(|e| match e {
            mpsc::error::TryRecvError::Empty => TryRecvError::Empty,
            mpsc::error::TryRecvError::Disconnected => TryRecvError::Closed,
        })
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
