//! The driver's counters: [`DriverStats`], the snapshot handles read, and the atomic counters
//! the node task updates.

use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(doc)]
use super::DriverError;
#[cfg(doc)]
use crate::{Node, Storage};

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
    /// Client requests the node took from its queue.
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
///
/// The node task is the only writer of every counter but one, so they share cache lines with
/// nobody else's writes. The exception, `requests_busy`, is written by clients on other
/// threads and sits on a cache line of its own: when clients counted every request in this
/// struct, each request moved the node task's cache line between cores (false sharing), which
/// doubled the CPU time per request through the driver in some runs.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) messages_sent: AtomicU64,
    pub(super) bytes_sent: AtomicU64,
    pub(super) send_failures: AtomicU64,
    pub(super) messages_received: AtomicU64,
    pub(super) bytes_received: AtomicU64,
    pub(super) frames_rejected: AtomicU64,
    pub(super) steps: AtomicU64,
    pub(super) ticks: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) records_persisted: AtomicU64,
    pub(super) bytes_persisted: AtomicU64,
    pub(super) syncs: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) responses: AtomicU64,
    pub(super) events: AtomicU64,
    /// Written by clients (see above).
    pub(super) requests_busy: OwnLine,
}

/// An atomic counter alone on its cache line (64 bytes on x86-64 and most ARM cores).
#[derive(Default)]
#[repr(align(64))]
pub(super) struct OwnLine(pub(super) AtomicU64);

/// Relaxed ordering is enough: counters are statistics, never used to synchronize.
pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(super) fn snapshot(&self) -> DriverStats {
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
            requests_busy: get(&self.requests_busy.0),
            responses: get(&self.responses),
            events: get(&self.events),
        }
    }
}
