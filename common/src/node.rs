//! The sans-IO node model every protocol core implements.
//!
//! A core is a deterministic state machine. It never touches a socket, a file, a clock or an
//! unseeded random source: inputs arrive as method calls, and effects leave as data in an
//! [`Outbox`]. The same core therefore runs unchanged under the tokio driver
//! ([`crate::driver`]), the deterministic simulator (`common::sim`, feature `sim`) and a plain
//! test that pumps messages by hand.
//!
//! # The contract between a core and whoever drives it
//!
//! 1. **Start.** Load the records the node persisted (none for a new node) and call
//!    [`Node::recover`]. Recovery itself produces no effects.
//! 2. **Steps.** Repeatedly call one of [`Node::handle_message`], [`Node::handle_request`] or
//!    [`Node::tick`], passing an [`Outbox`]. Calls are never concurrent. A driver may run several
//!    steps into the same outbox before releasing its effects (group commit).
//! 3. **Release, in this order** (the *Outbox rule*):
//!    1. append every record in [`Effects::records`] to storage, in order, and make them durable
//!       (one `sync` for the whole batch);
//!    2. only then send [`Effects::messages`], deliver [`Effects::responses`] and publish
//!       [`Effects::events`].
//!
//!    If the records cannot be made durable, none of the batch's messages, responses or events
//!    may leave the node: the driver stops the node instead (it would otherwise acknowledge state
//!    it may forget). This single rule gives Raft's "persist before you answer", the Paxos
//!    acceptor's "the promise is on disk before the reply" and 2PC's "prepared is forced before
//!    voting yes".
//!
//!    Stated exactly, the rule is: *a record is durable before any message that claims it*.
//!    A message that claims nothing about the sender's records not yet durable may leave at
//!    once, in parallel with the write: [`Outbox::send_early`] asks for that (and
//!    [`Outbox::respond_early`] for an answer), and a driver lets [`Effects::early`] and
//!    [`Effects::early_responses`] go as soon as it takes the step's effects, before the sync. The
//!    core that sends early learns when its records became durable from
//!    [`Node::records_durable`], and must not count them as durable (towards a quorum, in an
//!    answer) before. Raft's leader uses it to send AppendEntries while it writes the same
//!    entries to its own log (Ongaro's thesis, §10.2.1).
//! 4. **Crash.** Everything in memory is lost. Records that were appended but not yet synced may
//!    or may not survive (a torn tail); records that were synced always survive. Restart is step 1.
//!
//! Time is measured in logical ticks: a core counts calls to [`Node::tick`] and never asks what
//! time it is. Randomness comes from a seed in the core's configuration ([`crate::DetRng`]).

use std::fmt::Debug;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::snapshot::SnapshotStore;
use crate::{NodeId, RequestId};

/// A protocol core: a pure, deterministic state machine (see the module documentation for the
/// order in which a driver must call it).
pub trait Node: Sized + Send + 'static {
    /// Everything needed to build the node besides its persisted records: its id, its peers,
    /// timeouts in ticks, the seed of its random source, limits.
    type Config: Clone + Debug + Send + 'static;
    /// Messages exchanged between nodes of this protocol. They cross the network, so they are
    /// serialized by the workspace codec ([`crate::codec`]).
    type Message: Clone + Debug + Serialize + DeserializeOwned + Send + 'static;
    /// A client request (propose a command, read, begin a transaction, ...).
    type Request: Debug + Send + 'static;
    /// The answer to one [`Node::Request`], delivered through [`Outbox::respond`].
    type Response: Debug + Send + 'static;
    /// Notifications for observers that are not answers to a request (leader changed, slot
    /// decided, transaction blocked, ...).
    type Event: Clone + Debug + Send + 'static;
    /// What must survive a crash. Records are appended to a log and replayed, in order, into
    /// [`Node::recover`].
    type Record: Clone + Debug + Serialize + DeserializeOwned + Send + 'static;
    /// A snapshot of the node's state for dashboards and tests (role, term, commit index, ...).
    type Metrics: Clone + Debug + Send + 'static;
    /// Why a node could not be rebuilt from its configuration and records.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The protocol tag written into every frame's envelope ([`crate::protocol`]).
    const PROTOCOL: u16;
    /// The wire version of [`Node::Message`]; bump it on any incompatible change.
    const WIRE_VERSION: u16;

    /// Rebuilds a node from its configuration and the records it persisted, oldest first. For a
    /// node that never ran, `records` is empty. When the log was compacted, the first record is
    /// the latest checkpoint ([`Outbox::checkpoint`]) and the rest came after it.
    fn recover(config: Self::Config, records: Vec<Self::Record>) -> Result<Self, Self::Error>;

    /// [`Node::recover`] for a node whose checkpoints name snapshot files: `snapshots` is the
    /// store they live in ([`crate::Storage::snapshots`]), which the node keeps using to write,
    /// send and delete snapshots. Drivers and the simulator call this form. The default ignores
    /// the store, for cores that keep everything in their records.
    fn recover_with_snapshots(
        config: Self::Config,
        records: Vec<Self::Record>,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> Result<Self, Self::Error> {
        let _ = snapshots;
        Self::recover(config, records)
    }

    /// The first `count` checkpoints this node asked for since it was recovered
    /// ([`Outbox::checkpoint`], counted in the order asked) are durable. Drivers call this after
    /// each sync that made a checkpoint durable; a core that keeps snapshot files deletes those
    /// that no durable checkpoint needs any more. The default does nothing.
    fn checkpoints_durable(&mut self, count: u64) {
        let _ = count;
    }

    /// The first `count` records this node asked for since it was recovered
    /// ([`Outbox::persist`] and [`Outbox::checkpoint`], counted in the order asked; a record
    /// extended through [`Outbox::last_record_mut`] counts once) are durable. Drivers and the
    /// simulator call this after every sync that made records durable, as a step: its effects
    /// are released like any other step's. A core that sends early ([`Outbox::send_early`])
    /// uses it to know what of its own it may count; the default does nothing.
    fn records_durable(&mut self, count: u64, out: &mut Outbox<Self>) {
        let _ = (count, out);
    }

    /// This node's id.
    fn id(&self) -> NodeId;

    /// A message from peer `from` arrived. `from` is authenticated by the transport; the core
    /// still treats the content as untrusted (stale terms, impossible indexes, unknown senders
    /// are rejected and counted, never a panic).
    fn handle_message(&mut self, from: NodeId, msg: Self::Message, out: &mut Outbox<Self>);

    /// A client request arrived. The core must eventually answer it exactly once with
    /// [`Outbox::respond`] using `id` (possibly with an error such as "not the leader").
    fn handle_request(&mut self, id: RequestId, req: Self::Request, out: &mut Outbox<Self>);

    /// Client requests that arrived together, in order, as one step each: what
    /// [`Node::handle_request`] does for each one in turn, which is the default. A core may
    /// override it to act once for the whole batch where acting per request would be wasted
    /// (Raft and Multi-Paxos send one round of replication messages for all the proposals of a
    /// batch, instead of one for the first proposal and another for the rest once it is
    /// acknowledged). The driver hands over the requests it found waiting this way.
    fn handle_requests<I>(&mut self, requests: I, out: &mut Outbox<Self>)
    where
        I: IntoIterator<Item = (RequestId, Self::Request)>,
    {
        for (id, req) in requests {
            self.handle_request(id, req, out);
        }
    }

    /// One logical tick of time passed.
    fn tick(&mut self, out: &mut Outbox<Self>);

    /// Merges, where the protocol can carry them together, messages to the same peer that
    /// leave at the same time. Drivers and the simulator call it on the messages a batch of
    /// steps releases together (and on the early messages they send together) just before
    /// sending them, so a core that hosts several others ([`crate::groups::Groups`]) can send
    /// one message per peer for a whole batch instead of one per step. It must keep the order
    /// of the messages to each peer (their content concatenated in that order) and never
    /// change what they say; the order across peers does not matter. The default leaves the
    /// list as it is.
    fn coalesce(&self, messages: &mut Vec<(NodeId, Self::Message)>) {
        let _ = messages;
    }

    /// The node's current metrics.
    fn metrics(&self) -> Self::Metrics;
}

/// One record a step asks to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist<R> {
    /// Append the record after all earlier ones.
    Append(R),
    /// Append the record as a checkpoint: it summarizes everything before it, so once it is
    /// durable, storage may delete the records before it. Recovery then starts from it.
    Checkpoint(R),
}

impl<R> Persist<R> {
    /// The record, whichever way it is persisted.
    pub fn record(&self) -> &R {
        match self {
            Persist::Append(r) | Persist::Checkpoint(r) => r,
        }
    }

    /// Whether this is a checkpoint.
    pub fn is_checkpoint(&self) -> bool {
        matches!(self, Persist::Checkpoint(_))
    }
}

/// The effects of one or more steps, taken out of an [`Outbox`] by a driver.
///
/// Fields are public so tests can assert the exact effects a step produced.
pub struct Effects<N: Node> {
    /// Records to make durable before anything else leaves the node, in order.
    pub records: Vec<Persist<N::Record>>,
    /// Messages to send after the records are durable: `(destination, message)`, in order.
    pub messages: Vec<(NodeId, N::Message)>,
    /// Messages that claim nothing the records hold ([`Outbox::send_early`]): sent as soon as
    /// the driver takes the effects, without waiting for the sync, in order among themselves.
    pub early: Vec<(NodeId, N::Message)>,
    /// Answers that claim nothing the records hold ([`Outbox::respond_early`]): delivered as
    /// soon as the driver takes the effects.
    pub early_responses: Vec<(RequestId, N::Response)>,
    /// Answers to client requests, after the records are durable.
    pub responses: Vec<(RequestId, N::Response)>,
    /// Notifications, after the records are durable.
    pub events: Vec<N::Event>,
}

impl<N: Node> Debug for Effects<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects")
            .field("records", &self.records)
            .field("messages", &self.messages)
            .field("early", &self.early)
            .field("early_responses", &self.early_responses)
            .field("responses", &self.responses)
            .field("events", &self.events)
            .finish()
    }
}

impl<N: Node> Default for Effects<N> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            messages: Vec::new(),
            early: Vec::new(),
            early_responses: Vec::new(),
            responses: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl<N: Node> Effects<N> {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.messages.is_empty()
            && self.early.is_empty()
            && self.early_responses.is_empty()
            && self.responses.is_empty()
            && self.events.is_empty()
    }

    /// Empties every list, keeping its capacity for the next steps.
    pub fn clear(&mut self) {
        self.records.clear();
        self.messages.clear();
        self.early.clear();
        self.early_responses.clear();
        self.responses.clear();
        self.events.clear();
    }
}

/// Where a core puts the effects of a step: records to persist, messages to send, responses to
/// client requests and events. See the module documentation for the order in which a driver
/// releases them.
pub struct Outbox<N: Node> {
    effects: Effects<N>,
}

impl<N: Node> Default for Outbox<N> {
    fn default() -> Self {
        Self {
            effects: Effects::default(),
        }
    }
}

impl<N: Node> Debug for Outbox<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.effects.fmt(f)
    }
}

impl<N: Node> Outbox<N> {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for `record` to be appended to the node's durable log.
    pub fn persist(&mut self, record: N::Record) {
        self.effects.records.push(Persist::Append(record));
    }

    /// Asks for `record` to be appended as a checkpoint that supersedes every earlier record.
    pub fn checkpoint(&mut self, record: N::Record) {
        self.effects.records.push(Persist::Checkpoint(record));
    }

    /// Sends `msg` to `to` (after this step's records are durable).
    pub fn send(&mut self, to: NodeId, msg: N::Message) {
        self.effects.messages.push((to, msg));
    }

    /// Sends `msg` to `to` without waiting for this step's records to be durable: only for a
    /// message that claims nothing those records hold (the module's Outbox rule). Early
    /// messages keep their order among themselves, not with [`Outbox::send`]'s.
    pub fn send_early(&mut self, to: NodeId, msg: N::Message) {
        self.effects.early.push((to, msg));
    }

    /// Answers client request `id` without waiting for this step's records to be durable:
    /// only for an answer that claims nothing those records hold (a command a majority already
    /// holds durably was applied, say).
    pub fn respond_early(&mut self, id: RequestId, response: N::Response) {
        self.effects.early_responses.push((id, response));
    }

    /// Takes the early messages and answers out ([`Outbox::send_early`],
    /// [`Outbox::respond_early`]), leaving every other effect: a driver lets them go while the
    /// batch they came with waits for its sync.
    pub fn take_early_into(
        &mut self,
        early: &mut Vec<(NodeId, N::Message)>,
        early_responses: &mut Vec<(RequestId, N::Response)>,
    ) {
        early.append(&mut self.effects.early);
        early_responses.append(&mut self.effects.early_responses);
    }

    /// Whether any early message or answer waits to be taken.
    pub fn has_early(&self) -> bool {
        !self.effects.early.is_empty() || !self.effects.early_responses.is_empty()
    }

    /// Sends a copy of `msg` to every node in `to`.
    pub fn broadcast<I: IntoIterator<Item = NodeId>>(&mut self, to: I, msg: &N::Message) {
        for peer in to {
            self.effects.messages.push((peer, msg.clone()));
        }
    }

    /// Answers client request `id`.
    pub fn respond(&mut self, id: RequestId, response: N::Response) {
        self.effects.responses.push((id, response));
    }

    /// Publishes an event.
    pub fn emit(&mut self, event: N::Event) {
        self.effects.events.push(event);
    }

    /// The records asked for so far.
    pub fn records(&self) -> &[Persist<N::Record>] {
        &self.effects.records
    }

    /// The record asked for last, if no effect was taken out since: a core may extend it (add
    /// entries to a batch of entries) instead of asking for one more record. Nothing has left
    /// the node yet, so the driver persists the extended record exactly as it would the two.
    pub fn last_record_mut(&mut self) -> Option<&mut Persist<N::Record>> {
        self.effects.records.last_mut()
    }

    /// The messages asked for so far.
    pub fn messages(&self) -> &[(NodeId, N::Message)] {
        &self.effects.messages
    }

    /// The early messages asked for so far ([`Outbox::send_early`]).
    pub fn early_messages(&self) -> &[(NodeId, N::Message)] {
        &self.effects.early
    }

    /// The responses given so far.
    pub fn responses(&self) -> &[(RequestId, N::Response)] {
        &self.effects.responses
    }

    /// The events published so far.
    pub fn events(&self) -> &[N::Event] {
        &self.effects.events
    }

    /// Whether no effect is pending.
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }

    /// Takes every pending effect out, leaving the outbox empty (and its buffers' capacity
    /// released to the caller).
    pub fn take(&mut self) -> Effects<N> {
        std::mem::take(&mut self.effects)
    }

    /// Swaps every pending effect into `effects`, which must be empty, and keeps the buffers
    /// of `effects` for the next steps. A driver that releases `effects` by draining its lists
    /// and then hands the same `Effects` back on its next call trades two sets of buffers
    /// between itself and the outbox, so steps in the steady state allocate no effect buffers
    /// (with [`Outbox::take`], every step's first record, message and response regrows an
    /// empty list).
    ///
    /// # Panics
    ///
    /// If `effects` is not empty: its effects would be lost.
    pub fn take_into(&mut self, effects: &mut Effects<N>) {
        assert!(
            effects.is_empty(),
            "Outbox::take_into needs empty effects; release them first"
        );
        std::mem::swap(&mut self.effects, effects);
    }
}
