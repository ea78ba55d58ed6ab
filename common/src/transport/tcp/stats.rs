//! [`TcpStats`]: a TCP transport's counters, and the atomic counters its tasks update.

use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(doc)]
use super::TcpTransport;

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
pub(super) struct Counters {
    pub(super) frames_in: AtomicU64,
    pub(super) bytes_in: AtomicU64,
    pub(super) frames_out: AtomicU64,
    pub(super) bytes_out: AtomicU64,
    pub(super) dropped_queue_full: AtomicU64,
    pub(super) dropped_write_failed: AtomicU64,
    pub(super) handshakes_ok: AtomicU64,
    pub(super) handshakes_rejected: AtomicU64,
    pub(super) disconnects: AtomicU64,
    pub(super) dials_failed: AtomicU64,
    pub(super) connections_refused: AtomicU64,
    pub(super) connections_superseded: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(super) fn snapshot(&self) -> TcpStats {
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
