//! What the trace viewer (`docs/viewer/index.html`) reads: a seeded run of the simulator
//! exported as JSON.
//!
//! A [`TraceFile`] holds, for one run of the real protocol cores in [`common::sim`]:
//!
//! - the nodes, and how each node's role, term, log and commit index changed over time
//!   ([`StateChange`], read from the cores after every step by a [`Recorder`]; a core that has no
//!   such notion leaves the field out rather than inventing one);
//! - every message with its send time, its arrival time and its fate ([`Message`], [`Fate`]),
//!   rebuilt from the simulator's trace by [`messages`];
//! - which directed links were cut, and when ([`CutChange`]);
//! - crashes, restarts, network changes, client operations and the events the cores published
//!   ([`Happening`]).
//!
//! ```
//! use benches::viewer::{messages, Fate};
//! use common::sim::{TraceEvent, TraceKind};
//! let at = |time, kind| TraceEvent { time, step: time, kind };
//! let trace = vec![
//!     at(1, TraceKind::Send { from: 1, to: 2, label: "Ping".into(), arrives: Some(4) }),
//!     at(4, TraceKind::Deliver { from: 1, to: 2, label: "Ping".into(), sent: 1 }),
//! ];
//! let m = messages(&trace).unwrap();
//! assert_eq!((m[0].sent, m[0].arrives, m[0].fate), (1, Some(4), Fate::Delivered));
//! ```
//!
//! The simulator records a message twice, at its send and at its arrival; the two are paired on
//! (sender, receiver, label, send time, arrival time). Two messages equal in all five are
//! indistinguishable in the export, so pairing them either way gives the same file.
//!
//! `file.rs` holds the format, `record.rs` the recorder that watches a run, and `events.rs` the
//! rebuilding of messages and happenings from the simulator's trace.

mod events;
mod file;
mod record;

pub use events::{happenings, messages};
pub use file::{CutChange, Fate, Happening, Message, NodeState, StateChange, TraceFile, FORMAT};
pub use record::{Observed, Probe, Recorder};

/// Events of the simulator's trace, for the tests of this module's parts.
#[cfg(test)]
pub(crate) mod test_trace {
    use common::sim::{DropReason, TraceEvent, TraceKind};
    use common::NodeId;

    pub(crate) fn at(time: u64, kind: TraceKind) -> TraceEvent {
        TraceEvent {
            time,
            step: time,
            kind,
        }
    }

    pub(crate) fn send(
        time: u64,
        from: NodeId,
        to: NodeId,
        label: &str,
        arrives: Option<u64>,
    ) -> TraceEvent {
        at(
            time,
            TraceKind::Send {
                from,
                to,
                label: label.into(),
                arrives,
            },
        )
    }

    pub(crate) fn drop(
        time: u64,
        from: NodeId,
        to: NodeId,
        label: &str,
        reason: DropReason,
    ) -> TraceEvent {
        at(
            time,
            TraceKind::Drop {
                from,
                to,
                label: label.into(),
                reason,
            },
        )
    }

    pub(crate) fn deliver(
        time: u64,
        from: NodeId,
        to: NodeId,
        label: &str,
        sent: u64,
    ) -> TraceEvent {
        at(
            time,
            TraceKind::Deliver {
                from,
                to,
                label: label.into(),
                sent,
            },
        )
    }
}
