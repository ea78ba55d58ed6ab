//! What an operator monitors: Prometheus metrics and a health check, served by `kv-node
//! --metrics-listen ADDR` as `GET /metrics` (Prometheus text format) and `GET /health`.
//!
//! | metric | type | what it says |
//! | --- | --- | --- |
//! | `kv_is_leader` | gauge | 1 on the leader |
//! | `kv_term` | gauge | Raft's term, Multi-Paxos's ballot round |
//! | `kv_commit_index`, `kv_applied_index` | gauge | how far the log is committed and applied |
//! | `kv_peer_lag_entries{peer}` | gauge | Raft leader: entries a follower is behind |
//! | `kv_client_connections` | gauge | open client connections |
//! | `kv_proposal_latency_seconds` | histogram | a write, from request to answer |
//! | `kv_fsync_latency_seconds` | histogram | one `sync` of the write-ahead log |
//! | `kv_fsync_batch_records` | histogram | records made durable by one `sync` (group commit) |
//! | `kv_messages_sent_total`, `kv_messages_received_total`, `kv_frames_rejected_total`, `kv_syncs_total`, `kv_requests_total` | counter | the driver's counters |
//! | `kv_storage_failed` | gauge | 1 while a storage failure keeps the node stopped |
//! | `kv_storage_failures_total`, `kv_storage_resumes_total` | counter | storage failures that stopped the node, and resumptions after a full disk |
//!
//! `/health` answers 200 when the node runs and knows a leader, 503 otherwise; while the node is
//! down (its storage failed) the 503 says why and whether it resumes by itself.
//!
//! The registry and the text format are `prometheus-client`'s. The HTTP side is a few lines
//! written here on purpose: two fixed GET endpoints do not justify an HTTP framework's
//! dependencies, and the request read is bounded in size and time like every other socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::driver::DriverStats;
use common::{Storage, StorageError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Longest HTTP request head read, in bytes.
pub const HTTP_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Longest time to read an HTTP request and write the answer.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Metrics connections served at once; more wait in the accept backlog.
pub const HTTP_CONNECTIONS_MAX: usize = 16;

/// A peer's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's node id.
    pub peer: String,
}

/// Every metric of one node. Cheap to clone (the metrics are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    is_leader: Gauge,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    peer_lag: Family<PeerLabel, Gauge>,
    /// Open client connections (set by the client port).
    pub client_connections: Gauge,
    /// Writes, from request to answer.
    pub proposal_latency: Histogram,
    fsync_latency: Histogram,
    fsync_batch_records: Histogram,
    driver: DriverCounters,
    /// 1 while a storage failure keeps the node stopped.
    pub storage_failed: Gauge,
    /// Storage failures that stopped the node.
    pub storage_failures: Counter,
    /// Times the node started again after its disk had filled up.
    pub storage_resumes: Counter,
}

#[derive(Clone, Default)]
struct DriverCounters {
    messages_sent: Counter,
    messages_received: Counter,
    frames_rejected: Counter,
    syncs: Counter,
    requests: Counter,
    /// The stats at the last update: counters move by the difference.
    last: Arc<std::sync::Mutex<DriverStats>>,
}

/// What the node reports at a scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Whether it leads.
    pub is_leader: bool,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Term or ballot round.
    pub term: u64,
    /// Commit index or first undecided slot.
    pub commit_index: u64,
    /// Applied index or first unapplied slot.
    pub applied_index: u64,
    /// Entries each follower is behind (Raft leader only).
    pub peer_lag: Vec<(u64, u64)>,
    /// Why the node serves nothing, while it does not (its storage failed); the other fields
    /// are then not known.
    pub down: Option<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            is_leader: Gauge::default(),
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            peer_lag: Family::default(),
            client_connections: Gauge::default(),
            // 100 µs to about 3 s.
            proposal_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            // 50 µs to about 1.6 s.
            fsync_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 to 4,096 records.
            fsync_batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            driver: DriverCounters::default(),
            storage_failed: Gauge::default(),
            storage_failures: Counter::default(),
            storage_resumes: Counter::default(),
        };
        m.register_node(&mut registry);
        m.register_driver(&mut registry);
        Metrics {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// Registers the node's own metrics: its role and log, the client port, latencies.
    fn register_node(&self, registry: &mut Registry) {
        registry.register(
            "kv_is_leader",
            "Whether this node leads (1) or not (0)",
            self.is_leader.clone(),
        );
        registry.register(
            "kv_term",
            "Raft's term, or Multi-Paxos's ballot round",
            self.term.clone(),
        );
        registry.register(
            "kv_commit_index",
            "How far the log is committed",
            self.commit_index.clone(),
        );
        registry.register(
            "kv_applied_index",
            "How far the log is applied",
            self.applied_index.clone(),
        );
        registry.register(
            "kv_peer_lag_entries",
            "Entries a follower is behind the leader",
            self.peer_lag.clone(),
        );
        registry.register(
            "kv_client_connections",
            "Open client connections",
            self.client_connections.clone(),
        );
        registry.register(
            "kv_proposal_latency_seconds",
            "A write, from request to answer",
            self.proposal_latency.clone(),
        );
        registry.register(
            "kv_fsync_latency_seconds",
            "One sync of the write-ahead log",
            self.fsync_latency.clone(),
        );
        registry.register(
            "kv_fsync_batch_records",
            "Records made durable by one sync",
            self.fsync_batch_records.clone(),
        );
        registry.register(
            "kv_storage_failed",
            "Whether a storage failure keeps the node stopped (1) or not (0)",
            self.storage_failed.clone(),
        );
        registry.register(
            "kv_storage_failures",
            "Storage failures that stopped the node",
            self.storage_failures.clone(),
        );
        registry.register(
            "kv_storage_resumes",
            "Times the node started again after its disk had filled up",
            self.storage_resumes.clone(),
        );
    }

    /// Registers the driver's counters.
    fn register_driver(&self, registry: &mut Registry) {
        let d = &self.driver;
        registry.register(
            "kv_messages_sent",
            "Messages handed to the transport",
            d.messages_sent.clone(),
        );
        registry.register(
            "kv_messages_received",
            "Messages received and accepted",
            d.messages_received.clone(),
        );
        registry.register(
            "kv_frames_rejected",
            "Frames rejected as malformed or forged",
            d.frames_rejected.clone(),
        );
        registry.register("kv_syncs", "Storage syncs", d.syncs.clone());
        registry.register(
            "kv_requests",
            "Client requests taken by the node",
            d.requests.clone(),
        );
    }

    /// Sets the node's gauges and moves the driver's counters to `stats`. While the node is
    /// down, the term and indexes keep their last values.
    pub fn update(&self, view: &NodeView, stats: DriverStats) {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.is_leader.set(i64::from(view.is_leader));
        if view.down.is_none() {
            self.term.set(as_i64(view.term));
            self.commit_index.set(as_i64(view.commit_index));
            self.applied_index.set(as_i64(view.applied_index));
        }
        self.peer_lag.clear();
        for &(peer, lag) in &view.peer_lag {
            self.peer_lag
                .get_or_create(&PeerLabel {
                    peer: peer.to_string(),
                })
                .set(as_i64(lag));
        }
        let d = &self.driver;
        let mut last = d.last.lock().unwrap_or_else(|e| e.into_inner());
        let delta = stats - *last;
        d.messages_sent.inc_by(delta.messages_sent);
        d.messages_received.inc_by(delta.messages_received);
        d.frames_rejected.inc_by(delta.frames_rejected);
        d.syncs.inc_by(delta.syncs);
        d.requests.inc_by(delta.requests);
        *last = stats;
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A [`Storage`] that times each `sync` and counts the records it made durable, into
/// [`Metrics`]; everything else goes straight to the storage inside.
pub struct TimedStorage<S> {
    inner: S,
    metrics: Metrics,
    appended: u64,
}

impl<S: Storage> TimedStorage<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, metrics: Metrics) -> Self {
        TimedStorage {
            inner,
            metrics,
            appended: 0,
        }
    }
}

impl<S: Storage> Storage for TimedStorage<S> {
    fn append(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.appended += 1;
        self.inner.append(record)
    }

    fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.appended += 1;
        self.inner.append_checkpoint(record)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let started = Instant::now();
        let result = self.inner.sync();
        if result.is_ok() {
            self.metrics
                .fsync_latency
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .fsync_batch_records
                .observe(self.appended as f64);
            self.appended = 0;
        }
        result
    }

    fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError> {
        self.inner.load()
    }

    fn snapshots(&self) -> std::sync::Arc<dyn common::SnapshotStore> {
        self.inner.snapshots()
    }
}

/// Serves `GET /metrics` and `GET /health` on `listener` until the listener fails for good.
/// `view` reads the node's state at each request (`None`: the node does not answer).
pub async fn serve_http<V, F>(listener: TcpListener, metrics: Metrics, view: V)
where
    V: Fn() -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Option<(NodeView, DriverStats)>> + Send,
{
    let permits = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let metrics = metrics.clone();
        let view = view.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(HTTP_TIMEOUT, answer(stream, &metrics, view)).await;
            drop(permit);
        });
    }
}

/// Reads one request head (bounded) and answers it.
async fn answer<V, F>(mut stream: TcpStream, metrics: &Metrics, view: V)
where
    V: Fn() -> F,
    F: std::future::Future<Output = Option<(NodeView, DriverStats)>>,
{
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > HTTP_REQUEST_BYTES_MAX {
            let _ = respond(&mut stream, "431 Request Header Fields Too Large", "").await;
            return;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next(), parts.next());
    if method != Some(b"GET".as_slice()) {
        let _ = respond(&mut stream, "405 Method Not Allowed", "").await;
        return;
    }
    let state = view().await;
    let (status, body) = match path {
        Some(b"/metrics") => {
            if let Some((v, stats)) = &state {
                metrics.update(v, *stats);
            }
            ("200 OK", metrics.encode())
        }
        Some(b"/health") => match &state {
            Some((
                NodeView {
                    down: Some(why), ..
                },
                _,
            )) => ("503 Service Unavailable", format!("{why}\n")),
            Some((v, _)) if v.leader.is_some() => (
                "200 OK",
                format!("ok: leader {}\n", v.leader.unwrap_or_default()),
            ),
            Some(_) => ("503 Service Unavailable", "no leader known\n".into()),
            None => (
                "503 Service Unavailable",
                "the node does not answer\n".into(),
            ),
        },
        _ => ("404 Not Found", String::new()),
    };
    let _ = respond(&mut stream, status, &body).await;
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::MemStorage;

    #[test]
    fn the_exposition_carries_every_metric_and_the_storage_timings() {
        let metrics = Metrics::new();
        let mut storage = TimedStorage::new(MemStorage::new(), metrics.clone());
        storage.append(b"a").unwrap();
        storage.append(b"b").unwrap();
        storage.sync().unwrap();
        metrics.proposal_latency.observe(0.002);
        let stats = DriverStats {
            messages_sent: 7,
            syncs: 1,
            ..DriverStats::default()
        };
        let view = NodeView {
            is_leader: true,
            leader: Some(1),
            term: 3,
            commit_index: 10,
            applied_index: 9,
            peer_lag: vec![(2, 0), (3, 4)],
            down: None,
        };
        metrics.update(&view, stats);
        metrics.update(&view, stats); // the same stats again: counters do not move
        let text = metrics.encode();
        for line in [
            "kv_is_leader 1",
            "kv_term 3",
            "kv_commit_index 10",
            "kv_applied_index 9",
            "kv_peer_lag_entries{peer=\"3\"} 4",
            "kv_messages_sent_total 7",
            "kv_syncs_total 1",
            "kv_fsync_latency_seconds_count 1",
            "kv_fsync_batch_records_sum 2.0",
            "kv_proposal_latency_seconds_count 1",
            "kv_storage_failed 0",
            "kv_storage_failures_total 0",
            "kv_storage_resumes_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Down: the leader flag drops, the log's position stays as last seen.
        let down = NodeView {
            down: Some("storage unavailable".into()),
            ..NodeView::default()
        };
        metrics.update(&down, stats);
        let text = metrics.encode();
        assert!(
            text.contains("kv_is_leader 0") && text.contains("kv_term 3"),
            "{text}"
        );
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn http_answers_metrics_health_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let leader = Arc::new(std::sync::Mutex::new(Some(2u64)));
        let view = {
            let leader = leader.clone();
            move || {
                let leader = *leader.lock().unwrap();
                async move {
                    Some((
                        NodeView {
                            leader,
                            term: 5,
                            ..NodeView::default()
                        },
                        DriverStats::default(),
                    ))
                }
            }
        };
        tokio::spawn(serve_http(listener, Metrics::new(), view));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
        assert!(metrics.contains("kv_term 5"), "{metrics}");
        let health = get(addr, "/health").await;
        assert!(health.starts_with("HTTP/1.1 200 OK") && health.ends_with("ok: leader 2\n"));
        *leader.lock().unwrap() = None;
        assert!(get(addr, "/health").await.starts_with("HTTP/1.1 503"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let down_addr = listener.local_addr().unwrap();
        let down = || async {
            Some((
                NodeView {
                    down: Some("storage unavailable: disk full".into()),
                    leader: Some(2),
                    ..NodeView::default()
                },
                DriverStats::default(),
            ))
        };
        tokio::spawn(serve_http(listener, Metrics::new(), down));
        let health = get(down_addr, "/health").await;
        assert!(
            health.starts_with("HTTP/1.1 503")
                && health.ends_with("storage unavailable: disk full\n"),
            "{health}"
        );
        assert!(get(addr, "/nothing").await.starts_with("HTTP/1.1 404"));
        // An endless header is cut off at the limit.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let junk = vec![b'a'; HTTP_REQUEST_BYTES_MAX + 2048];
        let _ = s.write_all(&junk).await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    }
}
