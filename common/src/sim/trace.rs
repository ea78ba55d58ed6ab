//! The recorded trace of a simulation, for diagrams and debugging.

use std::hash::Hasher;

use crate::{Node, NodeId, RequestId};

use super::net::DropReason;

/// A boxed labeler.
pub(super) type Labeler<T> = Box<dyn Fn(&T) -> String>;

/// What a simulation records about its run: the trace, the events nodes publish, the running
/// hash of every event ([`super::Sim::trace_hash`]) and how messages, requests and responses
/// are labelled.
pub(super) struct Recorder<N: Node> {
    pub(super) hasher: std::collections::hash_map::DefaultHasher,
    /// Reused buffer for encoding hashed contents.
    pub(super) scratch: Vec<u8>,
    pub(super) events: Vec<(u64, NodeId, N::Event)>,
    pub(super) trace: Vec<TraceEvent>,
    pub(super) message_label: Labeler<N::Message>,
    pub(super) request_label: Labeler<N::Request>,
    pub(super) response_label: Labeler<N::Response>,
}

impl<N: Node> Recorder<N> {
    /// Nothing recorded yet; the hash starts from the seed; labels are `Debug`, shortened to
    /// `label_max` characters.
    pub(super) fn new(seed: u64, label_max: usize) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        hasher.write_u64(seed);
        Self {
            hasher,
            scratch: Vec::new(),
            events: Vec::new(),
            trace: Vec::new(),
            message_label: Box::new(move |m| short_debug(m, label_max)),
            request_label: Box::new(move |m| short_debug(m, label_max)),
            response_label: Box::new(move |m| short_debug(m, label_max)),
        }
    }
}

/// One thing that happened during a run. Message, request and response texts are short labels
/// (see [`super::Sim::set_message_label`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEvent {
    /// Virtual time.
    pub time: u64,
    /// The step during which it happened.
    pub step: u64,
    /// What happened.
    pub kind: TraceKind,
}

/// What a [`TraceEvent`] records.
#[derive(Clone, Debug, PartialEq)]
pub enum TraceKind {
    /// A node handed a message to the network (after its records were synced).
    Send {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
        /// Short label of the message.
        label: String,
        /// When it will arrive (the first copy), or `None` if the network drops it.
        arrives: Option<u64>,
    },
    /// The network will deliver one more copy of a message.
    Duplicate {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
        /// Short label of the message.
        label: String,
        /// When the copy arrives.
        arrives: u64,
    },
    /// A message reached its destination and was handed to the node.
    Deliver {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
        /// Short label of the message.
        label: String,
        /// When it was sent.
        sent: u64,
    },
    /// A message was lost.
    Drop {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
        /// Short label of the message.
        label: String,
        /// Why.
        reason: DropReason,
    },
    /// A node crashed.
    Crash {
        /// The node.
        node: NodeId,
        /// Unsynced records that survived the crash (a torn tail keeps a prefix).
        unsynced_kept: usize,
        /// Unsynced records lost.
        unsynced_lost: usize,
        /// Messages and responses that never left the node.
        effects_lost: usize,
    },
    /// A node restarted from its durable records.
    Restart {
        /// The node.
        node: NodeId,
        /// How many records it recovered from.
        records: usize,
    },
    /// A network fault or repair (partition, heal, loss, latency...).
    Network {
        /// Description of the fault.
        description: String,
    },
    /// A client invoked a request at a node.
    Invoke {
        /// The client.
        client: u64,
        /// The node it talked to.
        node: NodeId,
        /// The request's id.
        id: RequestId,
        /// Short label of the request.
        label: String,
    },
    /// A client received a response.
    Complete {
        /// The client.
        client: u64,
        /// The node that answered.
        node: NodeId,
        /// The request's id.
        id: RequestId,
        /// Short label of the response.
        label: String,
    },
    /// A client request ended without a response (node crashed or down, client timeout).
    ClientFailed {
        /// The client.
        client: u64,
        /// The node it talked to.
        node: NodeId,
        /// The request's id.
        id: RequestId,
        /// What happened ("crashed", "timed out", "node down").
        reason: String,
    },
    /// A node published an event.
    Event {
        /// The node.
        node: NodeId,
        /// Short label of the event.
        label: String,
    },
    /// An invariant failed.
    InvariantFailed {
        /// The invariant's name.
        name: String,
        /// Its message.
        message: String,
    },
}

/// The default label of a value: its `Debug` form, cut to `max` characters.
pub fn short_debug<T: std::fmt::Debug + ?Sized>(value: &T, max: usize) -> String {
    let s = format!("{value:?}");
    shorten(s, max)
}

/// Cuts `s` to at most `max` characters, marking the cut with `…`.
pub fn shorten(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Counts the messages in flight from a trace, step by step: every scheduled delivery (a send
/// not dropped at once, or a duplicate) minus every delivery and every drop at arrival. Feed
/// it the whole trace after each step ([`InFlight::update`] reads only what is new).
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    seen: usize,
    now: u64,
    /// The most messages in flight seen so far.
    pub peak: u64,
}

impl InFlight {
    /// Reads the trace's new events and returns the messages in flight now.
    pub fn update(&mut self, trace: &[TraceEvent]) -> u64 {
        for ev in trace.get(self.seen..).unwrap_or_default() {
            match &ev.kind {
                TraceKind::Send {
                    arrives: Some(_), ..
                }
                | TraceKind::Duplicate { .. } => self.now += 1,
                TraceKind::Deliver { .. }
                | TraceKind::Drop {
                    reason: super::net::DropReason::NodeDown,
                    ..
                } => self.now = self.now.saturating_sub(1),
                _ => {}
            }
        }
        self.seen = trace.len();
        self.peak = self.peak.max(self.now);
        self.now
    }
}
