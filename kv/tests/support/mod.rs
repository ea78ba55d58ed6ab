//! The process harness shared by the process-level tests: a cluster of `kv-node` processes on
//! 127.0.0.1, started, killed, stopped and restarted for real, with bounded waits.

#![allow(dead_code)]

pub mod proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::check::check_kv;
use common::NodeId;
use kv::load::{Load, LoadOptions};
use kv::net::{CallOutcome, KvClient};

pub const NODES: u64 = 3;
pub const KEY: &str = "a test cluster key of enough bytes";
/// Longest wait for any one condition (a leader, a restarted node, progress).
pub const WAIT_MAX: Duration = Duration::from_secs(20);
pub const POLL: Duration = Duration::from_millis(10);
/// Log entries (Raft) or slots (Multi-Paxos) between snapshots in the kill test.
pub const SNAPSHOT_EVERY: u64 = 20;

pub struct Cluster {
    pub protocol: &'static str,
    pub dir: tempfile::TempDir,
    pub peers: String,
    /// Replica addresses, the spares' included.
    pub listen: BTreeMap<NodeId, SocketAddr>,
    /// Client addresses of the first `NODES` replicas (the ones clients are told of).
    pub clients: BTreeMap<NodeId, SocketAddr>,
    /// Client addresses of the spares, for replicas added at run time.
    pub spare_clients: BTreeMap<NodeId, SocketAddr>,
    pub children: BTreeMap<NodeId, Child>,
    /// Extra arguments of every node; `{id}` stands for the node's id.
    pub extra_args: Vec<String>,
    /// When set, replicas reach each other through these fault proxies.
    pub proxies: Option<proxy::Proxies>,
    /// Replicas the cluster starts with (`NODES` unless made with [`Cluster::with_proxies_n`]).
    pub n: u64,
    /// `RUST_LOG` of every node started from now on (the nodes' default when unset).
    pub log_filter: Option<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Free loopback addresses for the processes a test starts (see
/// [`common::testing::free_loopback_addrs`]: binding port 0 and releasing it races).
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    common::testing::free_loopback_addrs(n)
}

impl Cluster {
    /// How many times `text` stands in the replicas' whole logs (`node-{id}.log`).
    pub fn logged(&self, text: &str) -> usize {
        self.listen
            .keys()
            .map(|id| {
                std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log")))
                    .unwrap_or_default()
                    .matches(text)
                    .count()
            })
            .sum()
    }

    pub fn new(protocol: &'static str) -> Self {
        Self::with_spares(protocol, 0)
    }

    /// `NODES` replicas started with `extra_args` (`{id}` stands for each node's id).
    pub fn with_args(protocol: &'static str, extra_args: &[&str]) -> Self {
        Self::build(
            protocol,
            0,
            extra_args.iter().map(|a| a.to_string()).collect(),
        )
    }

    /// `NODES` replicas started, and addresses reserved for `spares` more (ids `NODES + 1`…),
    /// to be added at run time and started with [`Cluster::start_joining`].
    pub fn with_spares(protocol: &'static str, spares: u64) -> Self {
        Self::build(protocol, spares, Vec::new())
    }

    /// `NODES` replicas that reach each other only through fault proxies ([`proxy::Proxies`]).
    pub async fn with_proxies(protocol: &'static str) -> Self {
        Self::with_proxies_n(protocol, NODES).await
    }

    /// [`Cluster::with_proxies`] with `n` replicas.
    pub async fn with_proxies_n(protocol: &'static str, n: u64) -> Self {
        let mut cluster = Self::prepare_n(protocol, n, 0, Vec::new());
        let reserved = cluster
            .listen
            .values()
            .chain(cluster.clients.values())
            .copied()
            .collect();
        cluster.proxies = Some(proxy::Proxies::start(&cluster.listen, &reserved).await);
        for id in 1..=n {
            cluster.start(id);
        }
        cluster
    }

    /// The proxies (for clusters made by [`Cluster::with_proxies`]).
    pub fn net(&self) -> &proxy::Proxies {
        self.proxies.as_ref().unwrap()
    }

    fn build(protocol: &'static str, spares: u64, extra_args: Vec<String>) -> Self {
        let mut cluster = Self::prepare(protocol, spares, extra_args);
        for id in 1..=NODES {
            cluster.start(id);
        }
        cluster
    }

    /// `NODES` replicas prepared but not started (to set up their directories first); start
    /// them with [`Cluster::start`].
    pub fn prepared(protocol: &'static str) -> Self {
        Self::prepare(protocol, 0, Vec::new())
    }

    fn prepare(protocol: &'static str, spares: u64, extra_args: Vec<String>) -> Self {
        Self::prepare_n(protocol, NODES, spares, extra_args)
    }

    fn prepare_n(protocol: &'static str, n: u64, spares: u64, extra_args: Vec<String>) -> Self {
        let total = n + spares;
        let addrs = free_addrs(2 * total as usize);
        let listen: BTreeMap<NodeId, SocketAddr> =
            (1..=total).map(|id| (id, addrs[id as usize - 1])).collect();
        let clients: BTreeMap<NodeId, SocketAddr> = (1..=n)
            .map(|id| (id, addrs[(total + id) as usize - 1]))
            .collect();
        let spare_clients: BTreeMap<NodeId, SocketAddr> = (n + 1..=total)
            .map(|id| (id, addrs[(total + id) as usize - 1]))
            .collect();
        let peers = listen
            .iter()
            .filter(|(id, _)| **id <= n)
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("node.toml"),
            format!(
                "[raft]\nsnapshot_log_entries_max = {SNAPSHOT_EVERY}\n\n\
                 [paxos]\nsnapshot_interval_slots = {SNAPSHOT_EVERY}\n"
            ),
        )
        .unwrap();
        Cluster {
            protocol,
            dir,
            peers,
            listen,
            clients,
            spare_clients,
            children: BTreeMap::new(),
            extra_args,
            proxies: None,
            n,
            log_filter: None,
        }
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// The client address of any replica, spares included.
    pub fn client_addr(&self, id: NodeId) -> SocketAddr {
        self.clients
            .get(&id)
            .or_else(|| self.spare_clients.get(&id))
            .copied()
            .unwrap()
    }

    /// Starts spare `id` with `--join` (the first replicas' client addresses) instead of
    /// `--peers`; restarting it later with [`Cluster::start`] joins again.
    pub fn start_joining(&mut self, id: NodeId) {
        self.spawn(id, true);
    }

    pub fn start(&mut self, id: NodeId) {
        self.spawn(id, id > self.n);
    }

    fn spawn(&mut self, id: NodeId, join: bool) {
        let (how, whom) = if join {
            let seeds = self
                .clients
                .values()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",");
            ("--join", seeds)
        } else if let Some(proxies) = &self.proxies {
            ("--peers", proxies.peers_for(id))
        } else {
            ("--peers", self.peers.clone())
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_kv-node"));
        if let Some(filter) = &self.log_filter {
            command.env("RUST_LOG", filter);
        }
        let child = command
            .arg("--config")
            .arg(self.dir.path().join("node.toml"))
            .arg("--protocol")
            .arg(self.protocol)
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(self.listen[&id].to_string())
            .arg("--client-listen")
            .arg(self.client_addr(id).to_string())
            .arg(how)
            .arg(whom)
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(
                self.extra_args
                    .iter()
                    .map(|a| a.replace("{id}", &id.to_string())),
            )
            .env("KV_CLUSTER_KEY", KEY)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.insert(id, child);
    }

    /// Sends `signal` (`-STOP`, `-CONT`, …) to node `id`'s process.
    pub fn signal(&self, id: NodeId, signal: &str) {
        let pid = self.children[&id].id().to_string();
        let ok = Command::new("kill")
            .arg(signal)
            .arg(&pid)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} {pid} failed");
    }

    /// SIGKILLs every running replica.
    pub fn kill_all(&mut self) {
        let ids: Vec<NodeId> = self.children.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }

    pub fn kill(&mut self, id: NodeId) {
        let mut child = self.children.remove(&id).unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    /// Sends SIGTERM to node `id` and waits (bounded) for it to exit; returns its exit code.
    pub async fn terminate(&mut self, id: NodeId) -> Option<i32> {
        let mut child = self.children.remove(&id).unwrap();
        let pid = child.id().to_string();
        let signal = |name: &str| {
            Command::new("kill")
                .arg(name)
                .arg(&pid)
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(signal("-TERM"), "kill -TERM failed");
        let exited =
            tokio::time::timeout(WAIT_MAX, tokio::task::spawn_blocking(move || child.wait())).await;
        match exited {
            Ok(Ok(Ok(status))) => status.code(),
            _ => {
                signal("-KILL");
                panic!(
                    "node {id} did not stop within {WAIT_MAX:?} of SIGTERM\n{}",
                    self.logs()
                );
            }
        }
    }

    pub fn logs(&self) -> String {
        self.listen
            .keys()
            .map(|&id| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "--- node {id} ---\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The node every answering node agrees leads, once there is one (bounded wait).
    pub async fn leader(&self, probe: &mut KvClient) -> NodeId {
        let deadline = Instant::now() + WAIT_MAX;
        while Instant::now() < deadline {
            for &id in self.children.keys() {
                if let Some((true, _)) = probe.status(id).await {
                    return id;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("no leader within {WAIT_MAX:?}\n{}", self.logs());
    }

    /// Waits until node `id` answers on its client port.
    pub async fn wait_serving(&self, id: NodeId, probe: &mut KvClient) {
        let deadline = Instant::now() + WAIT_MAX;
        while Instant::now() < deadline {
            if probe.status(id).await.is_some() {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "node {id} does not serve within {WAIT_MAX:?}\n{}",
            self.logs()
        );
    }
}

/// Waits until `load` completed at least `target` operations.
pub async fn wait_completed(load: &Load, target: u64, cluster: &Cluster) {
    let deadline = Instant::now() + WAIT_MAX;
    while load.completed.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "load stalled at {} of {target} operations\n{}",
            load.completed.load(Ordering::SeqCst),
            cluster.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Hostile client input: a frame that does not decode, then a length prefix above the limit.
/// The node must close those connections and keep serving.
pub async fn send_garbage(addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    let mut buf = [0u8; 64];
    // The node hangs up (0 bytes) rather than answering.
    let n = tokio::time::timeout(WAIT_MAX, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the node answered a malformed request");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let n = tokio::time::timeout(WAIT_MAX, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the node accepted an oversized frame");
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A bounded HTTP GET on loopback; the whole answer as text.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: kv\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    tokio::time::timeout(WAIT_MAX, get).await.unwrap()
}

/// A load of four clients against `cluster`'s first replicas, running until stopped.
pub fn start_load(
    cluster: &Cluster,
    seed: u64,
    first_client_id: u64,
    key_prefix: &str,
) -> (Load, tokio::task::JoinHandle<()>) {
    start_load_with(Load::new(), cluster, seed, first_client_id, key_prefix)
}

/// [`start_load`] with `load` as configured (shared connections, say).
pub fn start_load_with(
    load: Load,
    cluster: &Cluster,
    seed: u64,
    first_client_id: u64,
    key_prefix: &str,
) -> (Load, tokio::task::JoinHandle<()>) {
    let options = LoadOptions {
        clients: 4,
        ops_per_client: u64::MAX,
        seed,
        first_client_id,
        key_prefix: key_prefix.into(),
    };
    let runner = {
        let load = load.clone();
        let nodes = cluster.clients.clone();
        tokio::spawn(async move { load.run(&nodes, &options).await })
    };
    (load, runner)
}

/// Stops `load`, then checks that every write it saw acknowledged reads back (through the
/// cluster, as client `reader_id`) and that its history is linearizable.
pub async fn stop_and_check(
    load: &Load,
    runner: tokio::task::JoinHandle<()>,
    cluster: &Cluster,
    reader_id: u64,
) {
    load.stop();
    tokio::time::timeout(WAIT_MAX, runner)
        .await
        .expect("load generator stops")
        .unwrap();
    let mut reader = KvClient::new(reader_id, cluster.clients.clone());
    let acked = load.acked_writes.lock().unwrap().clone();
    assert!(!acked.is_empty(), "no write was acknowledged");
    for (key, value) in &acked {
        match reader.get(key).await {
            CallOutcome::Ok(kv::KvOutput::Value(Some(v))) => {
                assert_eq!(&v, value, "acknowledged write to {key} lost or changed")
            }
            other => panic!("acknowledged write to {key} missing: {other:?}"),
        }
    }
    let verdict = check_kv(&load.recorder.history()).unwrap();
    assert!(
        verdict.is_linearizable(),
        "{}: the history is not linearizable: {verdict:?}",
        cluster.protocol
    );
}

/// Waits until `load` completed `ops` more operations, failing after `within` with `what` and
/// the replicas' logs.
pub async fn wait_progress(load: &Load, cluster: &Cluster, ops: u64, within: Duration, what: &str) {
    let target = load.completed.load(Ordering::SeqCst) + ops;
    let deadline = Instant::now() + within;
    while load.completed.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "no progress within {within:?} after {what}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}
