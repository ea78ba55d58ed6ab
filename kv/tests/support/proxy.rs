//! A fault proxy between real replica processes: one TCP forwarder per *directed* link. Replica
//! `i` is told that replica `j` listens at the proxy of link `i → j`, which forwards to `j`'s
//! real address. The transport sends `i`'s frames to `j` only on connections `i` dials, so a
//! link's proxy carries exactly the messages from `i` to `j` (and `j`'s keepalives back), and
//! cutting it is a one-way partition at the level of messages.
//!
//! Each link is in one mode at a time, changed while connections are open:
//! - `Pass`: bytes flow, after an optional delay per chunk (order kept) and at an optional
//!   bandwidth (a narrow link: each chunk waits as long as its bytes take at that rate);
//! - `Cut`: open connections are closed and new ones closed at once (a reset link);
//! - `Blackhole`: connections stay open but every byte is swallowed (a silent partition, which
//!   only the transport's idle timeout notices).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PASS: u8 = 0;
const CUT: u8 = 1;
const BLACKHOLE: u8 = 2;
/// Bytes moved per read.
const CHUNK_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct Link {
    stats: Arc<Stats>,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
    /// Bytes per second the link carries; 0 for no limit.
    bytes_per_sec: Arc<AtomicU64>,
    /// Bumped on every cut, so open connections notice and close.
    generation: Arc<watch::Sender<u64>>,
}

/// What the proxies did to the traffic, over their whole life: proof that faults happened.
#[derive(Default)]
pub struct Stats {
    /// Connections closed because their link was cut (or refused while it was).
    pub connections_cut: AtomicU64,
    /// Bytes swallowed by blackholed links.
    pub bytes_swallowed: AtomicU64,
    /// Chunks held back by a delay.
    pub chunks_delayed: AtomicU64,
    /// Bytes paced by a bandwidth limit.
    pub bytes_throttled: AtomicU64,
}

/// Every directed link of a cluster, and its controls.
pub struct Proxies {
    /// Shared by every link.
    pub stats: Arc<Stats>,
    links: BTreeMap<(NodeId, NodeId), Link>,
    addrs: BTreeMap<(NodeId, NodeId), SocketAddr>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Proxies {
    /// A proxy for every ordered pair of the replicas listening at `upstream`, on ports other
    /// than `reserved` (addresses chosen for the replicas but not bound yet).
    pub async fn start(
        upstream: &BTreeMap<NodeId, SocketAddr>,
        reserved: &std::collections::BTreeSet<SocketAddr>,
    ) -> Self {
        let stats = Arc::new(Stats::default());
        let mut links = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        let mut tasks = Vec::new();
        for &from in upstream.keys() {
            for (&to, &target) in upstream {
                if from == to {
                    continue;
                }
                let listener = loop {
                    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    if !reserved.contains(&l.local_addr().unwrap()) {
                        break l;
                    }
                };
                addrs.insert((from, to), listener.local_addr().unwrap());
                let link = Link {
                    stats: Arc::clone(&stats),
                    mode: Arc::new(AtomicU8::new(PASS)),
                    delay_ms: Arc::new(AtomicU64::new(0)),
                    bytes_per_sec: Arc::new(AtomicU64::new(0)),
                    generation: Arc::new(watch::channel(0).0),
                };
                links.insert((from, to), link.clone());
                tasks.push(tokio::spawn(accept(listener, target, link)));
            }
        }
        Self {
            stats,
            links,
            addrs,
            tasks: Mutex::new(tasks),
        }
    }

    /// The `--peers` value for replica `id`: every other replica at its link's proxy.
    pub fn peers_for(&self, id: NodeId) -> String {
        self.addrs
            .iter()
            .filter(|((from, _), _)| *from == id)
            .map(|((_, to), addr)| format!("{to}={addr}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn set(&self, from: NodeId, to: NodeId, mode: u8) {
        let link = &self.links[&(from, to)];
        link.mode.store(mode, Ordering::SeqCst);
        if mode == CUT {
            link.generation.send_modify(|g| *g += 1);
        }
    }

    /// Cuts the messages from `from` to `to` (closing their connections).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.set(from, to, CUT);
    }

    /// Swallows the messages from `from` to `to` without closing anything.
    pub fn blackhole(&self, from: NodeId, to: NodeId) {
        self.set(from, to, BLACKHOLE);
    }

    /// Both ways between every node of `a` and every node of `b`: cut, or swallowed.
    pub fn partition(&self, a: &[NodeId], b: &[NodeId], blackhole: bool) {
        let mode = if blackhole { BLACKHOLE } else { CUT };
        for &x in a {
            for &y in b {
                self.set(x, y, mode);
                self.set(y, x, mode);
            }
        }
    }

    /// Delays every chunk from `from` to `to` by `delay`.
    pub fn delay(&self, from: NodeId, to: NodeId, delay: Duration) {
        self.links[&(from, to)]
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Limits the link from `from` to `to` to `bytes_per_sec` (at least 1).
    pub fn throttle(&self, from: NodeId, to: NodeId, bytes_per_sec: u64) {
        self.links[&(from, to)]
            .bytes_per_sec
            .store(bytes_per_sec.max(1), Ordering::SeqCst);
    }

    /// Every link passes again, without delay or bandwidth limit. Connections that were swallowing bytes are
    /// closed (their streams lost bytes mid-frame, as TCP never does: it would have given up).
    pub fn heal(&self) {
        for link in self.links.values() {
            if link.mode.swap(PASS, Ordering::SeqCst) == BLACKHOLE {
                link.generation.send_modify(|g| *g += 1);
            }
            link.delay_ms.store(0, Ordering::SeqCst);
            link.bytes_per_sec.store(0, Ordering::SeqCst);
        }
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, link: Link) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if link.mode.load(Ordering::SeqCst) == CUT {
            link.stats.connections_cut.fetch_add(1, Ordering::Relaxed);
            drop(inbound);
            continue;
        }
        let link = link.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            let mut cut = link.generation.subscribe();
            cut.mark_unchanged();
            tokio::select! {
                () = pump(ir, ow, link.clone()) => {}
                () = pump(or, iw, link.clone()) => {}
                _ = cut.changed() => {
                    link.stats.connections_cut.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

/// Copies one direction of a connection under the link's mode until either side closes or the
/// link is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match link.mode.load(Ordering::SeqCst) {
            CUT => return,
            BLACKHOLE => {
                link.stats
                    .bytes_swallowed
                    .fetch_add(n as u64, Ordering::Relaxed);
                continue;
            }
            _ => {}
        }
        let delay = link.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            link.stats.chunks_delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        // Paced chunk by chunk: the chunk leaves once a link of this bandwidth would have
        // carried it (reads are at most CHUNK_BYTES, so the pacing stays fine-grained). No
        // limit (0) divides to nothing.
        let rate = link.bytes_per_sec.load(Ordering::SeqCst);
        if let Some(us) = (n as u64 * 1_000_000).checked_div(rate) {
            link.stats
                .bytes_throttled
                .fetch_add(n as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
