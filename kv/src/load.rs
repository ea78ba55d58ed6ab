//! The load generator: concurrent [`KvClient`]s issuing random gets, puts and compare-and-sets
//! on a few shared keys, recording every operation in [`common::check`]'s history format, plus
//! writes to keys of their own whose acknowledgements are remembered for a read-back.
//!
//! # Guarantees
//!
//! - **Every operation is recorded**: invoked right before it is sent, completed `ok` with the
//!   answer, `fail` only when it certainly was not applied, `info` when it may have been.
//! - **Seeded.** The operations a client issues depend only on the seed and the client's index.
//! - **It stops by itself**: after [`LoadOptions::ops_per_client`] operations per client, or
//!   when [`Load::stop`] is called, whichever comes first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use common::check::{self, KvInput, Recorder};
use common::rng::DetRng;
use common::NodeId;

use super::net::{CallOutcome, KvClient, SharedConnections};
use super::{KvOp, KvOutput};
use common::transport::tls::TlsConfig;

/// Shared keys the clients contend on.
pub const SHARED_KEYS: u64 = 3;

/// What the load generator does.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Concurrent clients (each has one operation in flight).
    pub clients: u64,
    /// Operations per client at most.
    pub ops_per_client: u64,
    /// Seed of the operation mix.
    pub seed: u64,
    /// The first client id; clients are numbered from it (ids name sessions: never reuse them
    /// against the same cluster).
    pub first_client_id: u64,
    /// Prepended to every key. The checker assumes every key starts absent, so a load against
    /// a cluster that already holds data uses a prefix of its own (the CLI uses the run's first
    /// client id).
    pub key_prefix: String,
}

/// A running (or finished) load: its history and acknowledged own-key writes.
#[derive(Clone)]
pub struct Load {
    /// The history being recorded.
    pub recorder: Recorder<KvInput, check::KvOutput>,
    /// Operations completed so far (any outcome).
    pub completed: Arc<AtomicU64>,
    /// Operations completed `ok` so far.
    pub acknowledged: Arc<AtomicU64>,
    /// Own-key writes acknowledged: key to value. Each client writes each own key once.
    pub acked_writes: Arc<Mutex<BTreeMap<String, String>>>,
    /// Latency of every acknowledged operation, in microseconds.
    pub latency_us: Arc<Mutex<Histogram<u64>>>,
    stop: Arc<AtomicBool>,
    tls: Option<TlsConfig>,
    shared: Option<usize>,
}

/// How often [`Load::stalled_for`] looks for acknowledged operations.
pub const STALL_POLL: Duration = Duration::from_millis(100);

/// Longest latency the histogram tracks, in microseconds (longer ones are clamped to it).
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Three significant digits from 1 µs to [`LATENCY_US_MAX`].
#[allow(clippy::expect_used)] // constant bounds, checked by the unit tests: cannot fail
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid constant bounds")
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

impl Load {
    /// An empty load.
    pub fn new() -> Self {
        Self {
            recorder: Recorder::new(),
            completed: Arc::new(AtomicU64::new(0)),
            acknowledged: Arc::new(AtomicU64::new(0)),
            acked_writes: Arc::new(Mutex::new(BTreeMap::new())),
            latency_us: Arc::new(Mutex::new(latency_histogram())),
            stop: Arc::new(AtomicBool::new(false)),
            tls: None,
            shared: None,
        }
    }

    /// The clients talk to the nodes over mutual TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The clients share `per_node` connections to each node (each connection carries several
    /// clients' requests at once, [`crate::net::SharedConnections`]) instead of one connection
    /// each. Every client keeps its own session and one operation in flight.
    pub fn with_shared_connections(mut self, per_node: usize) -> Self {
        self.shared = Some(per_node);
        self
    }

    /// Asks every client to stop after its current operation.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Resolves once no operation has been acknowledged for `stall` (looking every
    /// [`STALL_POLL`], or every `stall` if shorter): a load against a cluster that is down
    /// would otherwise wait out every call's deadline, one after another. Run it beside
    /// [`Load::run`] (`tokio::select!`) and stop the load when it resolves; `kv-client load
    /// --stall-secs` does so.
    pub async fn stalled_for(&self, stall: Duration) {
        let mut acknowledged = self.acknowledged.load(Ordering::SeqCst);
        let mut since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(STALL_POLL.min(stall)).await;
            let now = self.acknowledged.load(Ordering::SeqCst);
            if now != acknowledged {
                acknowledged = now;
                since = tokio::time::Instant::now();
            } else if since.elapsed() >= stall {
                return;
            }
        }
    }

    /// Runs the clients against `nodes` until they are done or stopped.
    pub async fn run(&self, nodes: &BTreeMap<NodeId, SocketAddr>, options: &LoadOptions) {
        let mut tasks = tokio::task::JoinSet::new();
        let shared = self.shared.map(|per_node| {
            let connections = SharedConnections::new(per_node);
            match &self.tls {
                Some(tls) => connections.with_tls(tls.clone()),
                None => connections,
            }
        });
        for i in 0..options.clients {
            let this = self.clone();
            let nodes = nodes.clone();
            let options = options.clone();
            let shared = shared.clone();
            tasks.spawn(async move { this.client(i, nodes, options, shared).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn client(
        &self,
        index: u64,
        nodes: BTreeMap<NodeId, SocketAddr>,
        o: LoadOptions,
        shared: Option<SharedConnections>,
    ) {
        let id = o.first_client_id + index;
        let mut client = KvClient::new(id, nodes);
        if let Some(tls) = &self.tls {
            client = client.with_tls(tls.clone());
        }
        if let Some(shared) = shared {
            client = client.with_shared_connections(shared);
        }
        let mut rng = DetRng::new(o.seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for n in 0..o.ops_per_client {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let key = format!(
                "{}k{}",
                o.key_prefix,
                rng.range_inclusive(0, SHARED_KEYS - 1)
            );
            let value = format!("c{id}-{n}");
            let started = Instant::now();
            let roll = rng.range_inclusive(0, 9);
            let is_read = roll < 4;
            let (input, outcome) = if is_read {
                let input = KvInput::Get { key: key.clone() };
                let op = self.recorder.invoke(id, input.clone());
                (op, client.get(&key).await)
            } else if roll < 7 {
                let input = KvInput::Put {
                    key: key.clone(),
                    value: value.clone(),
                };
                let op = self.recorder.invoke(id, input);
                (op, client.write(KvOp::Put { key, value }).await)
            } else if roll < 9 {
                // Expect a value some client wrote recently, so some swaps succeed.
                let writer = o.first_client_id + rng.range_inclusive(0, o.clients.max(1) - 1);
                let back = rng.range_inclusive(0, 2);
                let expected = Some(format!("c{writer}-{}", n.saturating_sub(back)));
                let input = KvInput::Cas {
                    key: key.clone(),
                    expected: expected.clone(),
                    new: value.clone(),
                };
                let op = self.recorder.invoke(id, input);
                let cas = KvOp::Cas {
                    key,
                    expected,
                    new: Some(value),
                };
                (op, client.write(cas).await)
            } else {
                // A write to a key of this client's own, read back at the end.
                let key = format!("{}own-{id}-{n}", o.key_prefix);
                self.own_write(&mut client, key, value).await
            };
            if matches!(outcome, CallOutcome::Ok(_)) {
                let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                if let Ok(mut h) = self.latency_us.lock() {
                    h.saturating_record(us.clamp(1, LATENCY_US_MAX));
                }
            }
            self.complete(input, is_read, outcome);
        }
    }

    /// Writes `value` to `key`, a key of this client's own, recording it to be read back at the
    /// end once acknowledged. Returns the operation's id in the history and the outcome.
    async fn own_write(
        &self,
        client: &mut KvClient,
        key: String,
        value: String,
    ) -> (u64, CallOutcome) {
        let input = KvInput::Put {
            key: key.clone(),
            value: value.clone(),
        };
        let op = self.recorder.invoke(client.id(), input);
        let outcome = client
            .write(KvOp::Put {
                key: key.clone(),
                value: value.clone(),
            })
            .await;
        if matches!(outcome, CallOutcome::Ok(_)) {
            if let Ok(mut acked) = self.acked_writes.lock() {
                acked.insert(key, value);
            }
        }
        (op, outcome)
    }

    fn complete(&self, op: u64, is_read: bool, outcome: CallOutcome) {
        match outcome {
            CallOutcome::Ok(out) => match to_check_output(is_read, out) {
                Some(out) => {
                    self.recorder.ok(op, out);
                    self.acknowledged.fetch_add(1, Ordering::SeqCst);
                }
                None => self.recorder.info(op),
            },
            CallOutcome::Failed(_) => self.recorder.fail(op),
            CallOutcome::Unknown(_) => self.recorder.info(op),
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
    }
}

/// The checker's view of an answer (`is_read`: the answer of a get): a read is its value, put
/// and delete are `Done` (their previous value is not checked), a compare-and-set is whether it
/// swapped. `None` for answers that say nothing about the operation (stale, too large, a scan,
/// which the load does not issue).
pub fn to_check_output(is_read: bool, out: KvOutput) -> Option<check::KvOutput> {
    match out {
        KvOutput::Value(value) if is_read => Some(check::KvOutput::Value { value }),
        KvOutput::Value(_) => Some(check::KvOutput::Done),
        KvOutput::Cas { swapped, .. } => Some(check::KvOutput::Cas { swapped }),
        KvOutput::Stale | KvOutput::TooLarge | KvOutput::Refused(_) | KvOutput::Entries { .. } => {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_histogram_spans_a_microsecond_to_a_minute() {
        let mut h = latency_histogram();
        h.saturating_record(1);
        h.saturating_record(LATENCY_US_MAX);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= LATENCY_US_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_load_is_stalled_only_after_a_whole_stall_without_an_acknowledgement() {
        let stall = Duration::from_secs(2);
        let load = Load::new();
        // Acknowledgements every 500 ms for 3 s, then none.
        let acker = {
            let load = load.clone();
            tokio::spawn(async move {
                for _ in 0..6 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    load.acknowledged.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let start = tokio::time::Instant::now();
        load.stalled_for(stall).await;
        let waited = start.elapsed();
        acker.await.unwrap();
        // The last acknowledgement came at 3 s; the watch sees it within one poll and then
        // waits a whole stall, seen within one more poll.
        assert!(waited >= Duration::from_secs(5), "{waited:?}");
        assert!(
            waited <= Duration::from_secs(5) + 2 * STALL_POLL,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_load_that_never_acknowledges_is_stalled_after_one_stall() {
        let stall = Duration::from_millis(50);
        let start = tokio::time::Instant::now();
        Load::new().stalled_for(stall).await;
        // Shorter than a poll: it looks every `stall`.
        let waited = start.elapsed();
        assert!(waited >= stall && waited <= 2 * stall, "{waited:?}");
    }
}
