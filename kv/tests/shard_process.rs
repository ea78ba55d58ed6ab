//! The sharded store (`kv::shard`) as real processes: `kv-shard node` processes on loopback,
//! each with its write-ahead log (fsync on) and snapshot files in a temporary directory,
//! talking TCP to one another, and clients in this process talking the client protocol
//! (`kv::shard::net`).
//!
//! - [`a_bank_keeps_its_total_while_partitions_move_and_a_founder_is_killed`]: three founders
//!   (two run a resolver) and [`PARTITIONS`] partitions; [`CLIENTS`] bank clients read two
//!   balances and transfer between them by a transaction across partitions, all run long;
//!   one of them drops some of its transactions half-way, as a crashed client would, leaving
//!   prepared parts for the resolvers.
//!   Meanwhile a fourth process starts and the mover puts it on the ring (partitions move while
//!   the bank runs), and once a move has begun one founder is killed with SIGKILL and
//!   restarted on the same directory and ports. Then: the mover finished, the fourth process
//!   holds partitions, transactions committed after the restart, no group holds a prepared
//!   part or a record, and the balances add up to `ACCOUNTS × INITIAL`.
//! - [`the_command_line_commits_across_two_partitions_and_a_failed_compare_aborts`]:
//!   `kv-shard txn` commits a transaction of two partitions, `kv-shard get` sees both writes,
//!   a failing compare prints `aborted: ...`, and bad arguments are one clear error.
//!
//! Every wait is bounded; a failure prints the tail of every process's log.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::groups::{GroupResponse, GroupsRequest};
use common::txn::TxId;
use common::NodeId;
use kv::shard::net::ShardClient;
use kv::shard::{
    Compare, Layout, MapCommand, Mover, Router, ShardMap, ShardOutput, ShardQuery, ShardResponse,
    TxDriver, TxResult, TxWrite,
};
use raft::{Request, Response};

const KEY: &str = "a test cluster key of enough bytes";
/// Partitions of the key space.
const PARTITIONS: u32 = 16;
/// Bank accounts, spread over the partitions by hash.
const ACCOUNTS: usize = 24;
/// Every account's balance at the start (an absent key holds it).
const INITIAL: i64 = 100;
/// Concurrent bank clients.
const CLIENTS: u64 = 4;
/// Each group snapshots after this many entries: restarts and moves then go through snapshot
/// files and compacted logs.
const SNAPSHOT_ENTRIES: u64 = 16;
/// The resolvers finish what stays in doubt this long.
const RESOLVE_AFTER_MS: u64 = 1_500;
/// A process prints READY within this.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// One read of a balance, or one transaction, gives up after this (the transaction is left
/// to the resolvers).
const OP_WITHIN: Duration = Duration::from_secs(10);
/// Bound of each wait for progress (first commits, a move begun, commits after the restart).
const PROGRESS_WITHIN: Duration = Duration::from_secs(20);
/// The mover puts the fourth process in place within this.
const MOVE_WITHIN: Duration = Duration::from_secs(45);
/// Once the bank stops, no transaction stays in doubt longer than this.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);
/// Client 0 drops one transaction in this many half-way, as a crashed client would.
const DROP_ONE_IN: u64 = 4;
/// Commits required after the restart of the killed founder.
const COMMITS_AFTER_RESTART: u64 = 50;
/// How long the killed founder stays down.
const DOWN_FOR: Duration = Duration::from_millis(1_000);
const POLL: Duration = Duration::from_millis(50);

/// The tests start processes: one at a time, to stay within the machine's cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Free loopback addresses for the processes (binding port 0 and releasing it races).
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    common::testing::free_loopback_addrs(n)
}

fn list(addrs: &BTreeMap<NodeId, SocketAddr>) -> String {
    addrs
        .iter()
        .map(|(id, a)| format!("{id}={a}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `kv-shard` processes on loopback; every one is killed when the cluster is dropped.
struct Cluster {
    dir: tempfile::TempDir,
    listen: BTreeMap<NodeId, SocketAddr>,
    clients: BTreeMap<NodeId, SocketAddr>,
    resolvers: Vec<NodeId>,
    children: BTreeMap<NodeId, Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    /// Addresses for processes `1..=n`; founders 1, 2, 3; `resolvers` run a resolver.
    fn new(n: u64, resolvers: &[NodeId]) -> Self {
        let addrs = free_addrs(2 * n as usize);
        let listen = (1..=n).map(|id| (id, addrs[id as usize - 1])).collect();
        let clients = (1..=n)
            .map(|id| (id, addrs[(n + id) as usize - 1]))
            .collect();
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            listen,
            clients,
            resolvers: resolvers.to_vec(),
            children: BTreeMap::new(),
        }
    }

    fn log(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    /// The last lines of every process's log.
    fn logs(&self) -> String {
        let mut out = String::new();
        for id in self.listen.keys() {
            let text = std::fs::read_to_string(self.log(*id)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out += &format!("--- node {id} ---\n{}\n", tail.join("\n"));
        }
        out
    }

    /// Starts process `id` (again, on its directory and ports) and waits for its READY.
    async fn start(&mut self, id: NodeId) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kv-shard"));
        cmd.arg("node")
            .args(["--id", &id.to_string()])
            .args(["--listen", &self.listen[&id].to_string()])
            .args(["--client-listen", &self.clients[&id].to_string()])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("node-{id}")))
            .args(["--partitions", &PARTITIONS.to_string()])
            .args(["--founders", "1,2,3"])
            .args(["--snapshot-entries", &SNAPSHOT_ENTRIES.to_string()]);
        for (peer, addr) in self.listen.iter().filter(|(p, _)| **p != id) {
            cmd.args(["--peer", &format!("{peer}={addr}")]);
        }
        if self.resolvers.contains(&id) {
            cmd.arg("--resolver")
                .args(["--cluster", &list(&self.clients)])
                .args(["--resolve-after-ms", &RESOLVE_AFTER_MS.to_string()]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(id))
            .unwrap();
        let mut child = cmd
            .env("KV_CLUSTER_KEY", KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.children.insert(id, child);
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut ready = Some(ready);
            // Drained to the end, so the process never writes to a closed pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "READY" {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
            }
        });
        let waited = tokio::time::timeout(READY_WITHIN, is_ready).await;
        assert!(
            matches!(waited, Ok(Ok(()))),
            "process {id} did not get ready\n{}",
            self.logs()
        );
    }

    /// SIGKILL.
    fn kill(&mut self, id: NodeId) {
        let mut child = self.children.remove(&id).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn client(&self) -> ShardClient {
        ShardClient::new(self.clients.clone())
    }
}

/// Polls `cond` every [`POLL`] until it holds, or fails with `what` after `within`.
async fn wait_for<F, Fut>(cluster: &Cluster, within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

fn account(i: usize) -> String {
    format!("acct{i}")
}

fn balance(value: Option<&str>) -> i64 {
    value.map_or(INITIAL, |v| v.parse().unwrap())
}

#[derive(Default)]
struct Tally {
    committed: AtomicU64,
    aborted: AtomicU64,
    /// Transactions given up on (left to the resolvers) and reads that timed out.
    abandoned: AtomicU64,
    cross_partition: AtomicU64,
    /// Transactions dropped half-way on purpose.
    dropped: AtomicU64,
}

/// One bank client: reads two balances, then moves an amount from one to the other by a
/// transaction that compares both and writes both; until `stop`.
async fn bank(client: ShardClient, c: u64, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut driver = TxDriver::new(vec![1, 2, 3]);
    let mut rng = c.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let layout = Layout::new(PARTITIONS, 3).unwrap();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let from = next(ACCOUNTS as u64) as usize;
        let to = (from + 1 + next(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
        let amount = 1 + next(10) as i64;
        let (a, b) = (account(from), account(to));
        let read = async {
            let va = client.get(driver.router_mut(), &a).await;
            let vb = client.get(driver.router_mut(), &b).await;
            (va, vb)
        };
        let Ok((va, vb)) = tokio::time::timeout(OP_WITHIN, read).await else {
            tally.abandoned.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let compares = vec![
            Compare {
                key: a.clone(),
                value: va.clone(),
            },
            Compare {
                key: b.clone(),
                value: vb.clone(),
            },
        ];
        let writes = vec![
            TxWrite {
                key: a.clone(),
                value: (balance(va.as_deref()) - amount).to_string(),
            },
            TxWrite {
                key: b.clone(),
                value: (balance(vb.as_deref()) + amount).to_string(),
            },
        ];
        seq += 1;
        driver.begin(TxId::new(100 + c, seq), compares, writes);
        if c == 0 && next(DROP_ONE_IN) == 0 {
            // A client process that dies half-way: a few steps, then nothing. The parts it
            // prepared hold their locks until a resolver finishes the transaction.
            for _ in 0..1 + next(3) {
                let Some((node, request)) = driver.next_request() else {
                    break;
                };
                let answer = client.call(node, request.clone()).await;
                driver.observe(node, &request, answer.as_ref());
            }
            tally.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match tokio::time::timeout(OP_WITHIN, client.run_tx(&mut driver)).await {
            Ok(TxResult::Committed) => {
                tally.committed.fetch_add(1, Ordering::Relaxed);
                if layout.partition_of(&a) != layout.partition_of(&b) {
                    tally.cross_partition.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(TxResult::Aborted(_)) => {
                tally.aborted.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                tally.abandoned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The shard map, read from any founder that answers.
async fn read_map(client: &ShardClient) -> Option<ShardMap> {
    for node in 1..=3 {
        if let Some(GroupResponse::Group(_, Response::Read(ShardOutput::Map(map)))) =
            client.call(node, Router::map_request()).await
        {
            return Some(*map);
        }
    }
    None
}

/// Whether every partition's leader answers that it holds no prepared part and no record.
async fn quiet(client: &ShardClient, processes: u64) -> bool {
    for p in 0..PARTITIONS {
        let group = Layout::group_of(p);
        let mut answered = false;
        // A read is answered by the group's leader only (the others say who leads).
        for node in 1..=processes {
            let request = GroupsRequest::Group(group, Request::Read(ShardQuery::InDoubt));
            let answer: Option<ShardResponse> = client.call(node, request).await;
            if let Some(GroupResponse::Group(_, Response::Read(ShardOutput::InDoubt(list)))) =
                answer
            {
                if !list.is_empty() {
                    return false;
                }
                answered = true;
                break;
            }
        }
        if !answered {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_keeps_its_total_while_partitions_move_and_a_founder_is_killed() {
    let _serial = SERIAL.lock().await;
    let began = Instant::now();
    let mut cluster = Cluster::new(4, &[1, 3]);
    for id in 1..=3 {
        cluster.start(id).await;
    }
    let client = cluster.client();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let banks: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(bank(client.clone(), c, stop.clone(), tally.clone())))
        .collect();
    let committed = || tally.committed.load(Ordering::Relaxed);
    wait_for(&cluster, PROGRESS_WITHIN, "first commits", || async {
        committed() >= 5
    })
    .await;

    // A fourth process joins; its partitions move while the bank runs.
    cluster.start(4).await;
    let mover = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut mover = Mover::new(vec![1, 2, 3]);
            mover.change_ring(MapCommand::AddProcess(4));
            let done = tokio::time::timeout(MOVE_WITHIN, client.run_mover(&mut mover)).await;
            (done.is_ok(), mover)
        })
    };
    // Once a partition is moving (its move begun in the map), kill a founder that also runs
    // a resolver, and bring it back on the same directory and ports.
    wait_for(&cluster, PROGRESS_WITHIN, "a move under way", || async {
        read_map(&client)
            .await
            .is_some_and(|m| m.partitions.iter().any(|p| p.moving_to.is_some()))
    })
    .await;
    let killed_at = began.elapsed();
    cluster.kill(1);
    let at_kill = committed();
    tokio::time::sleep(DOWN_FOR).await;
    cluster.start(1).await;

    let (finished, mover) = mover.await.unwrap();
    assert!(
        finished && mover.is_done(),
        "the mover did not finish: {mover:?}\n{}",
        cluster.logs()
    );
    assert!(mover.refused().is_empty(), "{:?}", mover.refused());
    assert!(!mover.moved().is_empty(), "no partition moved");
    let map = read_map(&client).await.expect("the map");
    let on_four = map
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&4))
        .count();
    assert!(on_four > 0, "process 4 holds no partition: {map:?}");
    assert!(map.pending().is_empty(), "moves left: {map:?}");
    wait_for(
        &cluster,
        PROGRESS_WITHIN,
        "commits after the restart",
        || async { committed() >= at_kill + COMMITS_AFTER_RESTART },
    )
    .await;

    stop.store(true, Ordering::Relaxed);
    for b in banks {
        // Each client ends its current transaction within OP_WITHIN (or leaves it).
        tokio::time::timeout(3 * OP_WITHIN, b)
            .await
            .expect("a bank client stopped")
            .unwrap();
    }
    wait_for(&cluster, SETTLE_WITHIN, "no transaction in doubt", || {
        quiet(&client, 4)
    })
    .await;

    let mut router = Router::new(vec![1, 2, 3]);
    let mut total = 0;
    for i in 0..ACCOUNTS {
        let value = tokio::time::timeout(OP_WITHIN, client.get(&mut router, &account(i)))
            .await
            .expect("a balance read");
        total += balance(value.as_deref());
    }
    let t = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let summary = format!(
        "committed {} ({} across partitions, {at_kill} before the kill at {killed_at:?}), \
         aborted {}, abandoned {}, dropped {}, moved {} partitions, {on_four} on process 4, in {:?}",
        t(&tally.committed),
        t(&tally.cross_partition),
        t(&tally.aborted),
        t(&tally.abandoned),
        t(&tally.dropped),
        mover.moved().len(),
        began.elapsed()
    );
    if std::env::var_os("SHARD_PROCESS_LOGS").is_some() {
        eprintln!("{}", cluster.logs());
    }
    assert_eq!(
        total,
        INITIAL * ACCOUNTS as i64,
        "the balances do not add up; {summary}"
    );
    assert!(t(&tally.cross_partition) > 0, "{summary}");
    for id in 1..=4 {
        let snapshots = cluster.dir.path().join(format!("node-{id}/snapshots"));
        let files = std::fs::read_dir(&snapshots).map_or(0, |d| d.count());
        assert!(files > 0, "process {id} wrote no snapshot file; {summary}");
    }
    assert!(
        t(&tally.dropped) > 0,
        "no transaction dropped half-way: {summary}"
    );
    eprintln!("{summary}");
}

/// Runs `kv-shard` with `args`; its exit code and stdout and stderr.
async fn kv_shard(args: Vec<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_kv-shard"))
            .args(&args)
            .env_remove("KV_SHARD_CLUSTER")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(words: &[&str], cluster: &str) -> Vec<String> {
    words
        .iter()
        .map(|w| w.to_string())
        .chain(["--cluster".to_string(), cluster.to_string()])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_commits_across_two_partitions_and_a_failed_compare_aborts() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::new(3, &[1]);
    for id in 1..=3 {
        cluster.start(id).await;
    }
    let c = list(&cluster.clients);
    let layout = Layout::new(PARTITIONS, 3).unwrap();
    let key_in = |p: u32| {
        (0..)
            .map(|i| format!("key{i}"))
            .find(|k| layout.partition_of(k) == p)
            .unwrap()
    };
    let (a, b) = (key_in(0), key_in(1));

    let (code, out, err) = kv_shard(args(
        &[
            "txn",
            "--compare",
            &format!("{a}=absent"),
            "--compare",
            &format!("{b}=absent"),
            "--put",
            &format!("{a}=1"),
            "--put",
            &format!("{b}=2"),
        ],
        &c,
    ))
    .await;
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "committed\n"),
        "{err}\n{}",
        cluster.logs()
    );
    for (key, want) in [(&a, "1\n"), (&b, "2\n")] {
        let (code, out, err) = kv_shard(args(&["get", key], &c)).await;
        assert_eq!((code, out.as_str()), (Some(0), want), "{err}");
    }

    // A compare that fails: nothing is written.
    let (code, out, err) = kv_shard(args(
        &[
            "txn",
            "--compare",
            &format!("{a}=absent"),
            "--put",
            &format!("{a}=3"),
            "--put",
            &format!("{b}=3"),
        ],
        &c,
    ))
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("aborted: {a} is not absent\n"), "{err}");
    for (key, want) in [(&a, "1\n"), (&b, "2\n")] {
        let (code, out, err) = kv_shard(args(&["get", key], &c)).await;
        assert_eq!((code, out.as_str()), (Some(0), want), "{err}");
    }
    let (code, out, _) = kv_shard(args(&["get", "never-written"], &c)).await;
    assert_eq!((code, out.as_str()), (Some(0), "(absent)\n"));

    // Bad arguments: one clear error, exit 2, nothing printed on stdout.
    let bad_cases = [
        (args(&["txn", "--put", "no-equals-sign"], &c), "--put"),
        (args(&["txn"], &c), "at least one"),
        (args(&["get", "k"], "1=nowhere"), "--cluster"),
        (args(&["get", "k"], "x=127.0.0.1:1"), "--cluster"),
    ];
    for (words, says) in bad_cases {
        let (code, out, err) = kv_shard(words.clone()).await;
        assert_eq!(code, Some(2), "{words:?}: {out}{err}");
        assert!(out.is_empty(), "{words:?}: {out}");
        assert!(err.contains(says), "{words:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{words:?}: {err}");
    }
    let (code, _, err) = kv_shard(vec!["node".into(), "--id".into(), "1".into()]).await;
    assert_eq!(code, Some(2), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let node = |founders: &str, key: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kv-shard"));
        cmd.args(["node", "--id", "1", "--listen", "127.0.0.1:0"])
            .args(["--client-listen", "127.0.0.1:0", "--partitions", "4"])
            .args(["--founders", founders])
            .arg("--data-dir")
            .arg(dir.path())
            .env("KV_CLUSTER_KEY", key);
        cmd
    };
    for (mut cmd, says) in [
        (node("1", "short"), "cluster key"),
        (node("1", KEY), "--founders"),
        (node("1,2,3", KEY), "founder 2 has no --peer"),
        (
            {
                let mut cmd = node("1", KEY);
                cmd.args(["--persist-spin-us", "20000"]);
                cmd
            },
            "--persist-spin-us",
        ),
    ] {
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
    }
}
