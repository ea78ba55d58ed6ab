//! The driver's configuration: [`DriverConfig`], [`Persistence`] and the limits and defaults
//! they are checked against.

use std::time::Duration;

use super::DriverError;
#[cfg(doc)]
use super::{DriverStats, NodeHandle};
#[cfg(doc)]
use crate::Node;

/// Default for [`DriverConfig::tick`]: 10 ms.
pub const TICK_DEFAULT: Duration = Duration::from_millis(10);
/// Default for [`DriverConfig::request_queue_capacity`].
pub const REQUEST_QUEUE_CAPACITY_DEFAULT: usize = 1024;
/// Default for [`DriverConfig::requests_pending_max`].
pub const REQUESTS_PENDING_MAX_DEFAULT: usize = 4096;
/// Default for [`DriverConfig::batch_steps_max`].
pub const BATCH_STEPS_MAX_DEFAULT: usize = 256;
/// Most flushes in a row when persisting inline, each following the durability step of the one
/// before ([`Node::records_durable`]).
pub(super) const INLINE_FLUSH_ROUNDS_MAX: usize = 4;

/// Requests the node task takes from its queue at once while it gathers a batch: the slots
/// they free go back to waiting callers in one release (tokio's bounded channel locks for each),
/// yet between two such takes it looks for a frame, so requests cannot keep peers' messages
/// waiting.
pub(super) const REQUESTS_TAKEN_AT_ONCE: usize = 32;

/// Default for [`DriverConfig::persist_batches_in_flight_max`].
pub const PERSIST_BATCHES_IN_FLIGHT_MAX_DEFAULT: usize = 1;
/// Longest [`DriverConfig::persist_spin`] accepted: 10 ms. A longer check costs a CPU for as
/// long after every batch, and in the `kv` README's load bench 1,000 µs bought nothing over 400.
pub const PERSIST_SPIN_MAX: Duration = Duration::from_millis(10);
/// Default for [`DriverConfig::events_capacity`].
pub const EVENTS_CAPACITY_DEFAULT: usize = 1024;
/// Metrics queries waiting for the node. They have their own small queue so a node that is
/// saturated with requests still answers them.
pub const METRICS_QUEUE_CAPACITY: usize = 16;
/// Rejected frames logged individually before logging thins out (see
/// [`DriverStats::frames_rejected`] for the full count).
pub const REJECTIONS_LOGGED_FIRST: u64 = 16;
/// Upper bound for every queue capacity and limit in [`DriverConfig`]: a larger value is a
/// configuration mistake, not a deliberate choice.
pub const QUEUE_CAPACITY_LIMIT: usize = 1 << 20;

/// Where the driver runs storage calls. See the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Persistence {
    /// A dedicated thread per node owns the storage; the node keeps stepping while it syncs.
    /// Use this for storage that does real IO (the write-ahead log).
    ///
    /// Under tokio's paused test clock (`start_paused = true`), time jumps ahead whenever every
    /// task waits, including while the node waits for this thread: ticks then fire faster than
    /// storage answers. Tests on a paused clock use [`Persistence::Inline`].
    #[default]
    Background,
    /// The node task calls storage itself. Only for storage whose calls never block, such as
    /// [`MemStorage`](crate::MemStorage): a blocking call here would stall a tokio worker.
    Inline,
}

/// Configuration of the driver of one node. Plain fields with defaults
/// ([`DriverConfig::default`]); [`DriverConfig::validate`] explains what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Real time between two calls to [`Node::tick`].
    pub tick: Duration,
    /// Client requests and metrics queries waiting to be taken by the node. A request that finds
    /// the queue full waits for room ([`NodeHandle::request`]) or fails with
    /// [`DriverError::Busy`] ([`NodeHandle::try_request`]).
    pub request_queue_capacity: usize,
    /// Requests taken by the node and not answered yet. When reached, the node stops taking
    /// requests from the queue until the core answers some (so the queue fills and callers wait,
    /// or see [`DriverError::Busy`] from [`NodeHandle::try_request`]).
    pub requests_pending_max: usize,
    /// Most steps gathered into one batch before its records are persisted (group commit).
    pub batch_steps_max: usize,
    /// Most batches handed to storage and not yet synced. While that many are in flight the node
    /// keeps stepping into the next batch (up to [`DriverConfig::batch_steps_max`] steps).
    pub persist_batches_in_flight_max: usize,
    /// How long the persistence thread ([`Persistence::Background`]) keeps checking for the next
    /// batch after it synced one, before it sleeps. Between checks it yields its CPU, so a thread
    /// with work waiting for that CPU runs first. A batch handed over while it checks starts at
    /// once, with no wake-up of a sleeping thread; and the CPU it runs on stays awake, so the
    /// node's other threads, woken for the network, wake sooner. On a virtual machine whose idle
    /// CPUs halt at once, a durable write crosses several wake-ups of halted CPUs (about 0.1 ms
    /// of a 0.4 ms one-client write in the `kv` README's load bench): there this trades CPU time,
    /// up to `persist_spin` after every batch, for latency. Zero (the default) sleeps at once;
    /// at most [`PERSIST_SPIN_MAX`].
    pub persist_spin: Duration,
    /// Capacity of the event broadcast channel; a subscriber that falls further behind loses
    /// the oldest events (it sees `RecvError::Lagged`).
    pub events_capacity: usize,
    /// Where storage calls run.
    pub persistence: Persistence,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            tick: TICK_DEFAULT,
            request_queue_capacity: REQUEST_QUEUE_CAPACITY_DEFAULT,
            requests_pending_max: REQUESTS_PENDING_MAX_DEFAULT,
            batch_steps_max: BATCH_STEPS_MAX_DEFAULT,
            persist_batches_in_flight_max: PERSIST_BATCHES_IN_FLIGHT_MAX_DEFAULT,
            persist_spin: Duration::ZERO,
            events_capacity: EVENTS_CAPACITY_DEFAULT,
            persistence: Persistence::Background,
        }
    }
}

impl DriverConfig {
    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), DriverError> {
        if self.tick.is_zero() {
            return Err(DriverError::Config("tick must be longer than zero".into()));
        }
        if self.persist_spin > PERSIST_SPIN_MAX {
            return Err(DriverError::Config(format!(
                "persist_spin is {:?}; it must be at most {PERSIST_SPIN_MAX:?}",
                self.persist_spin
            )));
        }
        for (name, value) in [
            ("request_queue_capacity", self.request_queue_capacity),
            ("requests_pending_max", self.requests_pending_max),
            ("batch_steps_max", self.batch_steps_max),
            (
                "persist_batches_in_flight_max",
                self.persist_batches_in_flight_max,
            ),
            ("events_capacity", self.events_capacity),
        ] {
            if value == 0 || value > QUEUE_CAPACITY_LIMIT {
                return Err(DriverError::Config(format!(
                    "{name} is {value}; it must be between 1 and {QUEUE_CAPACITY_LIMIT}"
                )));
            }
        }
        Ok(())
    }
}
