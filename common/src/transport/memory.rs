//! An in-process network with faults that can be changed while it runs.
//!
//! Guarantees first:
//!
//! - **Per-link FIFO without faults.** With no fault set (or a *fixed* delay), frames from one
//!   node to another are received in the order they were sent.
//! - **Bounded.** Each node's inbound queue holds at most [`MemoryConfig::inbound_queue_max`]
//!   frames (delayed frames included); a send to a full queue fails with
//!   [`TransportError::QueueFull`] and is counted in [`MemoryStats::dropped_queue_full`].
//!   Frames above [`MemoryConfig::frame_bytes_max`] are refused with
//!   [`TransportError::FrameTooLarge`]; ids that never joined with [`TransportError::UnknownPeer`].
//! - **Seeded.** Every random choice (drop, duplicate, delay) comes from one [`DetRng`] seeded by
//!   [`MemoryNetwork::new`]. Under a single-threaded runtime with the same schedule of sends, the
//!   same seed gives the same faults.
//! - **Paused clock.** Delays use `tokio::time`, so tests run with `start_paused = true` and a
//!   one-second delay costs no real time.
//!
//! Faults are set through a [`NetworkFaults`] handle (cheap to clone, usable from any task):
//! per-link or default [`LinkFaults`] (drop probability, duplication probability, delay range),
//! symmetric partitions between two sets of nodes, one-way partitions, and [`NetworkFaults::heal`].
//! Faults are decided when a frame is sent: a frame already in flight when a partition starts is
//! still delivered, as on a real network where the packet had already left.
//!
//! A delay range `delay_min..=delay_max` draws each frame's delay independently, so a later frame
//! may overtake an earlier one on the same link by up to `delay_max - delay_min`: this is how the
//! network *reorders*. A fixed delay (`delay_min == delay_max`) keeps per-link order.
//!
//! ```
//! use bytes::Bytes;
//! use common::transport::memory::{LinkFaults, MemoryNetwork};
//! use common::transport::Transport;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let network = MemoryNetwork::new(7);
//! let mut a = network.join(1).unwrap();
//! let mut b = network.join(2).unwrap();
//!
//! a.send(2, Bytes::from_static(b"hello")).unwrap();
//! let got = b.recv().await.unwrap();
//! assert_eq!((got.from, &got.frame[..]), (1, &b"hello"[..]));
//!
//! // Cut node 1 off from node 2 in both directions: frames are silently lost.
//! let faults = network.faults();
//! faults.partition(&[1], &[2]);
//! a.send(2, Bytes::from_static(b"lost")).unwrap();
//! faults.heal();
//! a.send(2, Bytes::from_static(b"after heal")).unwrap();
//! assert_eq!(&b.recv().await.unwrap().frame[..], b"after heal");
//!
//! // Drop everything on every link.
//! faults.set_default(LinkFaults { drop_probability: 1.0, ..LinkFaults::NONE });
//! a.send(2, Bytes::from_static(b"dropped")).unwrap();
//! assert_eq!(network.stats().dropped_fault, 1);
//! # a.shutdown().await; b.shutdown().await;
//! # });
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Inbound, Transport, TransportError, TryRecvError, FRAME_BYTES_MAX_DEFAULT};
use crate::{DetRng, NodeId};

/// Default for [`MemoryConfig::inbound_queue_max`].
pub const INBOUND_QUEUE_MAX_DEFAULT: usize = 4096;

/// Limits of a [`MemoryNetwork`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// The most frames waiting for one node (delivered or still delayed) before sends to it fail
    /// with [`TransportError::QueueFull`].
    pub inbound_queue_max: usize,
    /// The largest frame accepted by `send`.
    pub frame_bytes_max: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            inbound_queue_max: INBOUND_QUEUE_MAX_DEFAULT,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
        }
    }
}

impl MemoryConfig {
    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), TransportError> {
        if self.inbound_queue_max == 0 {
            return Err(TransportError::Setup(
                "inbound_queue_max must be at least 1".into(),
            ));
        }
        if self.frame_bytes_max == 0 {
            return Err(TransportError::Setup(
                "frame_bytes_max must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Faults applied to frames on one link (or, as the default, on every link).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkFaults {
    /// Probability that a frame is silently lost.
    pub drop_probability: f64,
    /// Probability that a frame that was not lost is delivered twice (each copy with its own
    /// delay).
    pub duplicate_probability: f64,
    /// Smallest delay before a frame can be received.
    pub delay_min: Duration,
    /// Largest delay; each frame's delay is drawn uniformly from `delay_min..=delay_max` (with
    /// microsecond resolution). A range wider than zero reorders frames on a link.
    pub delay_max: Duration,
}

impl LinkFaults {
    /// No fault: no loss, no duplication, no delay.
    pub const NONE: LinkFaults = LinkFaults {
        drop_probability: 0.0,
        duplicate_probability: 0.0,
        delay_min: Duration::ZERO,
        delay_max: Duration::ZERO,
    };
}

impl Default for LinkFaults {
    fn default() -> Self {
        Self::NONE
    }
}

/// Counters of a [`MemoryNetwork`], over its whole life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Frames accepted by `send` (every call that returned `Ok`).
    pub sent: u64,
    /// Bytes of the frames counted in `sent`.
    pub sent_bytes: u64,
    /// Frames handed to a receiver by `recv`.
    pub delivered: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
    /// Frames lost to a link's drop probability.
    pub dropped_fault: u64,
    /// Frames lost to a partition.
    pub dropped_partition: u64,
    /// Frames refused because the destination's queue was full.
    pub dropped_queue_full: u64,
    /// Frames lost because the destination was not running (shut down, not restarted yet), or
    /// was shut down while they waited in its queue.
    pub dropped_down: u64,
}

/// A frame waiting in a node's queue until `due`.
struct Delayed {
    due: Instant,
    /// Global send order: breaks ties between equal deadlines, so a fixed delay keeps FIFO.
    order: u64,
    inbound: Inbound,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

/// One running node's inbound queue.
#[derive(Default)]
struct Inbox {
    /// Frames ready to be received, in arrival order.
    ready: VecDeque<Inbound>,
    /// Frames still in flight, earliest first.
    delayed: BinaryHeap<Reverse<Delayed>>,
    closed: bool,
}

impl Inbox {
    fn len(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    /// Moves every delayed frame that is due into `ready`, in (deadline, send order) order.
    fn promote(&mut self, now: Instant) {
        while let Some(Reverse(first)) = self.delayed.peek() {
            if first.due > now {
                break;
            }
            if let Some(Reverse(d)) = self.delayed.pop() {
                self.ready.push_back(d.inbound);
            }
        }
    }
}

struct NodeSlot {
    inbox: Arc<Mutex<Inbox>>,
    notify: Arc<Notify>,
    /// Distinguishes a restarted node from the instance it replaces, so dropping an old handle
    /// does not unregister the new one.
    generation: u64,
}

struct Shared {
    config: MemoryConfig,
    rng: DetRng,
    /// Every id that ever joined: sends to other ids are [`TransportError::UnknownPeer`].
    known: BTreeSet<NodeId>,
    /// Nodes currently running.
    running: BTreeMap<NodeId, NodeSlot>,
    default_faults: LinkFaults,
    link_faults: BTreeMap<(NodeId, NodeId), LinkFaults>,
    /// Directed links `(from, to)` that are cut.
    blocked: BTreeSet<(NodeId, NodeId)>,
    stats: MemoryStats,
    next_generation: u64,
    next_order: u64,
}

/// Recovers the guard of a poisoned lock: every critical section here leaves the state
/// consistent before anything that could panic, so the data is still valid.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An in-process network. Cheap to clone (all clones share the network).
#[derive(Clone)]
pub struct MemoryNetwork {
    shared: Arc<Mutex<Shared>>,
    /// [`MemoryStats::delivered`], counted outside the network's lock: `recv` then touches only
    /// its own node's queue, and receivers do not contend with every sender for one lock.
    delivered: Arc<AtomicU64>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork")
            .field("running", &self.running())
            .field("stats", &self.stats())
            .finish()
    }
}

impl MemoryNetwork {
    /// A network with default limits whose random choices are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self::build(seed, MemoryConfig::default())
    }

    /// A network with the given limits.
    pub fn with_config(seed: u64, config: MemoryConfig) -> Result<Self, TransportError> {
        config.validate()?;
        Ok(Self::build(seed, config))
    }

    fn build(seed: u64, config: MemoryConfig) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Shared {
                config,
                rng: DetRng::new(seed),
                known: BTreeSet::new(),
                running: BTreeMap::new(),
                default_faults: LinkFaults::NONE,
                link_faults: BTreeMap::new(),
                blocked: BTreeSet::new(),
                stats: MemoryStats::default(),
                next_generation: 0,
                next_order: 0,
            })),
            delivered: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts node `id` on the network and returns its transport. A node that was shut down (or
    /// whose transport was dropped) can join again: that is a restart, with an empty queue.
    /// Fails with [`TransportError::Setup`] while another transport with the same id runs.
    ///
    /// Join every node before sending: a send to an id that never joined is
    /// [`TransportError::UnknownPeer`], a send to a known node that is down is silently lost.
    pub fn join(&self, id: NodeId) -> Result<MemoryTransport, TransportError> {
        let mut s = lock(&self.shared);
        if s.running.contains_key(&id) {
            return Err(TransportError::Setup(format!(
                "node {id} is already running on this network"
            )));
        }
        let generation = s.next_generation;
        s.next_generation += 1;
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let notify = Arc::new(Notify::new());
        s.known.insert(id);
        s.running.insert(
            id,
            NodeSlot {
                inbox: Arc::clone(&inbox),
                notify: Arc::clone(&notify),
                generation,
            },
        );
        Ok(MemoryTransport {
            id,
            generation,
            network: self.clone(),
            inbox,
            notify,
            closed: false,
        })
    }

    /// The handle that changes this network's faults.
    pub fn faults(&self) -> NetworkFaults {
        NetworkFaults {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The network's counters.
    pub fn stats(&self) -> MemoryStats {
        let mut stats = lock(&self.shared).stats;
        stats.delivered = self.delivered.load(Ordering::Relaxed);
        stats
    }

    /// Ids of the nodes currently running.
    pub fn running(&self) -> Vec<NodeId> {
        lock(&self.shared).running.keys().copied().collect()
    }

    fn leave(&self, id: NodeId, generation: u64) {
        let mut s = lock(&self.shared);
        if s.running
            .get(&id)
            .is_some_and(|n| n.generation == generation)
        {
            if let Some(slot) = s.running.remove(&id) {
                let mut inbox = lock(&slot.inbox);
                s.stats.dropped_down += inbox.len() as u64;
                inbox.ready.clear();
                inbox.delayed.clear();
                inbox.closed = true;
                drop(inbox);
                slot.notify.notify_one();
            }
        }
    }

    fn send_from(&self, from: NodeId, to: NodeId, frame: Bytes) -> Result<(), TransportError> {
        let mut guard = lock(&self.shared);
        let s = &mut *guard;
        if frame.len() > s.config.frame_bytes_max {
            return Err(TransportError::FrameTooLarge {
                len: frame.len(),
                max: s.config.frame_bytes_max,
            });
        }
        if frame.is_empty() {
            return Err(TransportError::EmptyFrame);
        }
        if to == from || !s.known.contains(&to) {
            return Err(TransportError::UnknownPeer(to));
        }
        let Some(slot) = s.running.get(&to) else {
            s.stats.sent += 1;
            s.stats.sent_bytes += frame.len() as u64;
            s.stats.dropped_down += 1;
            return Ok(());
        };
        let capacity = s.config.inbound_queue_max;
        let mut inbox = lock(&slot.inbox);
        if inbox.len() >= capacity {
            s.stats.dropped_queue_full += 1;
            return Err(TransportError::QueueFull { peer: to, capacity });
        }
        s.stats.sent += 1;
        s.stats.sent_bytes += frame.len() as u64;
        if s.blocked.contains(&(from, to)) {
            s.stats.dropped_partition += 1;
            return Ok(());
        }
        let faults = s
            .link_faults
            .get(&(from, to))
            .copied()
            .unwrap_or(s.default_faults);
        if s.rng.chance(faults.drop_probability) {
            s.stats.dropped_fault += 1;
            return Ok(());
        }
        let copies = if s.rng.chance(faults.duplicate_probability) {
            2
        } else {
            1
        };
        for copy in 0..copies {
            if copy > 0 {
                // A duplicate that does not fit is lost, like any extra packet on a full link.
                if inbox.len() >= capacity {
                    s.stats.dropped_queue_full += 1;
                    break;
                }
                s.stats.duplicated += 1;
            }
            let inbound = Inbound {
                from,
                frame: frame.clone(),
            };
            let delay = draw_delay(&mut s.rng, &faults);
            if delay.is_zero() && inbox.delayed.is_empty() {
                inbox.ready.push_back(inbound);
            } else {
                let order = s.next_order;
                s.next_order += 1;
                inbox.delayed.push(Reverse(Delayed {
                    due: Instant::now() + delay,
                    order,
                    inbound,
                }));
            }
        }
        drop(inbox);
        slot.notify.notify_one();
        Ok(())
    }
}

/// A delay drawn uniformly from the link's range, in whole microseconds.
fn draw_delay(rng: &mut DetRng, faults: &LinkFaults) -> Duration {
    let min = faults.delay_min.as_micros().min(u64::MAX as u128) as u64;
    let max = faults.delay_max.as_micros().min(u64::MAX as u128) as u64;
    if max <= min {
        return Duration::from_micros(min);
    }
    Duration::from_micros(rng.range_inclusive(min, max))
}

/// Changes the faults of a [`MemoryNetwork`] while it runs. Cheap to clone.
#[derive(Clone)]
pub struct NetworkFaults {
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for NetworkFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.shared);
        f.debug_struct("NetworkFaults")
            .field("default", &s.default_faults)
            .field("links", &s.link_faults)
            .field("blocked", &s.blocked)
            .finish()
    }
}

impl NetworkFaults {
    /// Sets the faults of every link that has no faults of its own.
    pub fn set_default(&self, faults: LinkFaults) {
        lock(&self.shared).default_faults = faults;
    }

    /// Sets the faults of the directed link `from → to`, overriding the default.
    pub fn set_link(&self, from: NodeId, to: NodeId, faults: LinkFaults) {
        lock(&self.shared).link_faults.insert((from, to), faults);
    }

    /// Removes the faults of the directed link `from → to`: it falls back to the default.
    pub fn clear_link(&self, from: NodeId, to: NodeId) {
        lock(&self.shared).link_faults.remove(&(from, to));
    }

    /// Cuts every link between a node of `a` and a node of `b`, in both directions.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId]) {
        self.partition_one_way(a, b);
        self.partition_one_way(b, a);
    }

    /// Cuts the links from each node of `from` to each node of `to` (the other direction keeps
    /// working: an asymmetric partition).
    pub fn partition_one_way(&self, from: &[NodeId], to: &[NodeId]) {
        let mut s = lock(&self.shared);
        for &f in from {
            for &t in to {
                if f != t {
                    s.blocked.insert((f, t));
                }
            }
        }
    }

    /// Cuts `node` off from every node that ever joined, in both directions.
    pub fn isolate(&self, node: NodeId) {
        let others: Vec<NodeId> = lock(&self.shared).known.iter().copied().collect();
        self.partition(&[node], &others);
    }

    /// Removes every partition (link faults stay).
    pub fn heal(&self) {
        lock(&self.shared).blocked.clear();
    }

    /// Removes every fault: partitions, per-link faults and the default.
    pub fn clear(&self) {
        let mut s = lock(&self.shared);
        s.blocked.clear();
        s.link_faults.clear();
        s.default_faults = LinkFaults::NONE;
    }

    /// Whether the directed link `from → to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        lock(&self.shared).blocked.contains(&(from, to))
    }
}

/// One node's endpoint on a [`MemoryNetwork`].
pub struct MemoryTransport {
    id: NodeId,
    generation: u64,
    network: MemoryNetwork,
    inbox: Arc<Mutex<Inbox>>,
    notify: Arc<Notify>,
    closed: bool,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("id", &self.id)
            .field("closed", &self.closed)
            .finish()
    }
}

impl MemoryTransport {
    /// The network this transport belongs to.
    pub fn network(&self) -> &MemoryNetwork {
        &self.network
    }

    /// Frames waiting for this node (received or still delayed).
    pub fn queued(&self) -> usize {
        lock(&self.inbox).len()
    }

    /// The next frame that is due, or why there is none.
    fn take_ready(&mut self) -> Taken {
        let mut inbox = lock(&self.inbox);
        if inbox.closed {
            return Taken::Closed;
        }
        // Without delayed frames (no fault set) there is nothing to promote, and no need to
        // read the clock on every receive.
        if !inbox.delayed.is_empty() {
            inbox.promote(Instant::now());
        }
        if let Some(inbound) = inbox.ready.pop_front() {
            drop(inbox);
            self.network.delivered.fetch_add(1, Ordering::Relaxed);
            return Taken::Frame(inbound);
        }
        Taken::Empty {
            next_due: inbox.delayed.peek().map(|Reverse(d)| d.due),
        }
    }
}

/// What [`MemoryTransport::take_ready`] found.
enum Taken {
    Frame(Inbound),
    Closed,
    /// Nothing due now; the earliest delayed frame falls due at `next_due`, if there is one.
    Empty {
        next_due: Option<Instant>,
    },
}

#[async_trait]
impl Transport for MemoryTransport {
    fn local_id(&self) -> NodeId {
        self.id
    }

    fn send(&self, to: NodeId, frame: Bytes) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::Closed);
        }
        self.network.send_from(self.id, to, frame)
    }

    async fn recv(&mut self) -> Option<Inbound> {
        loop {
            let next_due = match self.take_ready() {
                Taken::Frame(inbound) => return Some(inbound),
                Taken::Closed => return None,
                Taken::Empty { next_due } => next_due,
            };
            // `notify_one` stores a permit when nobody waits, so a send between the check above
            // and this wait is not missed.
            match next_due {
                Some(due) => {
                    tokio::select! {
                        // Fixed polling order: tokio would otherwise pick a branch at random, from an
                        // unseeded source, and a seeded simulation (turmoil) would not replay.
                        biased;
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    fn try_recv(&mut self) -> Result<Inbound, TryRecvError> {
        match self.take_ready() {
            Taken::Frame(inbound) => Ok(inbound),
            Taken::Closed => Err(TryRecvError::Closed),
            Taken::Empty { .. } => Err(TryRecvError::Empty),
        }
    }

    async fn shutdown(&mut self) {
        if !self.closed {
            self.closed = true;
            self.network.leave(self.id, self.generation);
        }
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        if !self.closed {
            self.closed = true;
            self.network.leave(self.id, self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u32) -> Bytes {
        Bytes::copy_from_slice(&i.to_le_bytes())
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_delay_keeps_fifo_and_range_reorders() {
        let network = MemoryNetwork::new(1);
        let a = network.join(1).unwrap();
        let mut b = network.join(2).unwrap();
        let fixed = Duration::from_millis(50);
        network.faults().set_default(LinkFaults {
            delay_min: fixed,
            delay_max: fixed,
            ..LinkFaults::NONE
        });
        let start = Instant::now();
        for i in 0..100 {
            a.send(2, frame(i)).unwrap();
        }
        for i in 0..100 {
            assert_eq!(b.recv().await.unwrap().frame, frame(i));
        }
        assert!(Instant::now() >= start + fixed, "the delay was applied");

        network.faults().set_default(LinkFaults {
            delay_min: Duration::ZERO,
            delay_max: Duration::from_millis(100),
            ..LinkFaults::NONE
        });
        for i in 0..100 {
            a.send(2, frame(i)).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..100 {
            got.push(b.recv().await.unwrap().frame);
        }
        let sent: Vec<Bytes> = (0..100).map(frame).collect();
        assert_ne!(got, sent, "a delay range reorders");
        got.sort();
        let mut sorted = sent.clone();
        sorted.sort();
        assert_eq!(got, sorted, "but loses nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn try_recv_takes_what_is_due_and_never_waits() {
        let network = MemoryNetwork::new(3);
        let a = network.join(1).unwrap();
        let mut b = network.join(2).unwrap();
        assert_eq!(b.try_recv(), Err(TryRecvError::Empty));
        a.send(2, frame(1)).unwrap();
        a.send(2, frame(2)).unwrap();
        assert_eq!(b.try_recv().unwrap().frame, frame(1));
        assert_eq!(b.try_recv().unwrap().frame, frame(2));
        assert_eq!(b.try_recv(), Err(TryRecvError::Empty));
        // A delayed frame is not there before it is due, and is once it is.
        let delay = Duration::from_millis(20);
        network.faults().set_default(LinkFaults {
            delay_min: delay,
            delay_max: delay,
            ..LinkFaults::NONE
        });
        a.send(2, frame(3)).unwrap();
        assert_eq!(b.try_recv(), Err(TryRecvError::Empty));
        tokio::time::advance(delay).await;
        assert_eq!(b.try_recv().unwrap().frame, frame(3));
        assert_eq!(network.stats().delivered, 3);
        b.shutdown().await;
        assert_eq!(b.try_recv(), Err(TryRecvError::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn queue_bound_and_restart() {
        let network = MemoryNetwork::with_config(
            2,
            MemoryConfig {
                inbound_queue_max: 3,
                ..MemoryConfig::default()
            },
        )
        .unwrap();
        let a = network.join(1).unwrap();
        let mut b = network.join(2).unwrap();
        for i in 0..3 {
            a.send(2, frame(i)).unwrap();
        }
        assert_eq!(
            a.send(2, frame(3)),
            Err(TransportError::QueueFull {
                peer: 2,
                capacity: 3
            })
        );
        assert_eq!(network.stats().dropped_queue_full, 1);
        assert!(network.join(2).is_err(), "node 2 is already running");
        b.shutdown().await;
        assert_eq!(b.recv().await, None);
        assert_eq!(b.send(1, frame(0)), Err(TransportError::Closed));
        a.send(2, frame(9)).unwrap(); // lost: node 2 is down
        let mut b2 = network.join(2).unwrap();
        drop(b); // dropping the old handle must not unregister the new one
        a.send(2, frame(10)).unwrap();
        assert_eq!(b2.recv().await.unwrap().frame, frame(10));
        assert_eq!(network.stats().dropped_down, 4);
        assert!(MemoryNetwork::with_config(
            0,
            MemoryConfig {
                inbound_queue_max: 0,
                ..MemoryConfig::default()
            }
        )
        .is_err());
    }
}
