//! [`TcpConfig`]: a TCP transport's addresses, cluster key, limits and timeouts, with their
//! defaults and validation.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::super::tls::TlsConfig;
use super::super::{TransportError, FRAME_BYTES_MAX_DEFAULT};
#[cfg(doc)]
use super::TcpTransport;
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
    /// Mutual TLS on every connection (see [`tls`](super::super::tls)); `None`: plain TCP, authenticated
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
