//! Moving frames between nodes (feature `runtime`, on by default).
//!
//! A [`Transport`] carries opaque frames (already encoded by the driver with the workspace codec)
//! between nodes identified by [`NodeId`]. Two implementations:
//!
//! - [`memory`]: an in-process network of tokio channels with faults (drop, delay, duplicate,
//!   partitions) that can be changed while it runs, all seeded;
//! - [`tcp`]: TCP with length-delimited frames, a maximum frame size, an authenticated handshake
//!   (cluster name, node id, HMAC over a server nonce with the cluster's shared key), reconnect
//!   with capped exponential backoff, a bounded send queue per peer, peers added and removed at
//!   run time, and optional mutual TLS ([`tls`]) under the handshake.
//!
//! Both, and TCP inside TLS, pass the same conformance suite
//! (`common/tests/transport_conformance.rs`): delivery to
//! the right node, per-link FIFO without faults, frames up to the limit, oversize, empty and
//! unknown-destination frames refused with a typed [`TransportError`], delivery resuming after a
//! peer restarts.
//!
//! The TCP transport is generic over its socket layer ([`tcp::Sockets`]); with the feature
//! `turmoil`, `tcp::TurmoilSockets` runs the same code over turmoil's simulated network, which
//! is how `common/tests/turmoil_transport.rs` tests it (and the driver on top of it) under
//! seeded partitions and host crashes.

use async_trait::async_trait;
use bytes::Bytes;

use crate::NodeId;

pub mod memory;
pub mod tcp;
pub mod tls;

/// The default largest frame a transport carries (16 MiB): large enough for a snapshot chunk,
/// small enough that a hostile length prefix cannot make a node allocate without bound.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;

/// A frame received from a peer. `from` is the peer's authenticated id (for TCP, the id proven in
/// the handshake), not a claim read from the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The sending node.
    pub from: NodeId,
    /// The frame's bytes.
    pub frame: Bytes,
}

/// Why [`Transport::try_recv`] returned no frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// No frame is ready now.
    Empty,
    /// The transport is shut down: no frame will come.
    Closed,
}

/// Why a frame could not be handed to the transport.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The destination is not a member of this transport's cluster.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The per-peer send queue is full; the frame was dropped (protocols retransmit).
    #[error("send queue to {peer} is full ({capacity} frames); frame dropped")]
    QueueFull {
        /// The destination.
        peer: NodeId,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The frame is larger than the transport's maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The frame is empty. Transports may use empty frames internally (TCP sends them as
    /// keepalives), and the workspace codec never produces one, so `send` refuses them on every
    /// transport alike.
    #[error("empty frames are not sent")]
    EmptyFrame,
    /// The transport was shut down.
    #[error("transport is shut down")]
    Closed,
    /// Setting the transport up failed (binding a socket, invalid configuration, ...).
    #[error("transport setup failed: {0}")]
    Setup(String),
}

/// Sends frames to peers and receives frames from them.
///
/// `send` never blocks: it queues the frame (bounded) and returns. Delivery is best effort —
/// frames may be lost when a peer is down, a queue is full or a fault is injected — and protocols
/// are built to retransmit. When no fault is configured and both nodes stay up, frames on one
/// link (one sender to one receiver) arrive in the order they were sent.
#[async_trait]
pub trait Transport: Send + 'static {
    /// The id of the node this transport belongs to.
    fn local_id(&self) -> NodeId;

    /// Queues `frame` for delivery to `to`.
    fn send(&self, to: NodeId, frame: Bytes) -> Result<(), TransportError>;

    /// Waits for the next frame from any peer. Returns `None` once the transport is shut down.
    async fn recv(&mut self) -> Option<Inbound>;

    /// The next frame if one is ready now, without waiting. The default polls
    /// [`recv`](Self::recv) once, which (through `async_trait`) allocates its future and may
    /// register a waker only to drop it; transports override it with a plain check, since the
    /// driver asks after every input it takes (to gather what is ready into one batch).
    fn try_recv(&mut self) -> Result<Inbound, TryRecvError> {
        match futures::FutureExt::now_or_never(self.recv()) {
            Some(Some(inbound)) => Ok(inbound),
            Some(None) => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Stops sending and receiving, closes connections and releases the listening socket.
    async fn shutdown(&mut self);
}
