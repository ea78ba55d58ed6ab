//! A state far larger than any record or frame, and a new node catching up by snapshot.
//!
//! ```text
//! cargo run --release -p benches --example big_state -- --protocol raft --state-mib 256
//! cargo run --release -p benches --example big_state -- --protocol paxos --state-mib 256
//! ```
//!
//! Three nodes in this process, each with its write-ahead log (fsync on) and its state machine
//! in a redb database (`benches::redb_kv`, page cache `--cache-mib`) in a directory of its own,
//! over the in-memory network. Clients write `--state-mib` MiB of distinct keys in values of
//! `--value-kib` KiB; the nodes snapshot every `--snapshot-every` entries (Raft) or slots
//! (Multi-Paxos), so the log is compacted far past the start. Then a fourth node starts empty
//! and joins (Raft: as a learner; Multi-Paxos: by reconfiguration to four members); it can only
//! catch up by snapshot, streamed in chunks from the leader's snapshot file into its own.
//!
//! It prints how many writes were acknowledged, the snapshot's size, the time the new node took
//! to catch up, and the process's peak resident memory (`VmHWM`), against the state's size.
//! The state lives on disk in every node, so the peak is the nodes' logs, caches and buffers,
//! not a copy of the state; recorded runs and their noise are in `docs/big-state.md`.
// A command-line run: a failure stops it with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::redb_kv::{RedbCommand, RedbKv, RedbOutput, RedbQuery};
use clap::{Parser, ValueEnum};
use common::codec::Bincode;
use common::driver::{self, DriverConfig};
use common::transport::memory::MemoryNetwork;
use common::wal::{Wal, WalConfig};
use common::{NodeId, Setup};

/// How long the new node may take to catch up before the run fails.
const CATCH_UP_MAX: Duration = Duration::from_secs(600);
/// How long a write may be retried across leader changes.
const WRITE_ATTEMPTS_MAX: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    Raft,
    Paxos,
}

#[derive(Debug, Parser)]
#[command(about = "A state past any record or frame size, and a new node catching up by snapshot")]
struct Args {
    /// The consensus protocol.
    #[arg(long, value_enum, default_value = "raft")]
    protocol: Protocol,
    /// MiB of state written.
    #[arg(long, default_value_t = 256)]
    state_mib: u64,
    /// KiB per value.
    #[arg(long, default_value_t = 4)]
    value_kib: u64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    clients: u64,
    /// Entries (slots) between snapshots.
    #[arg(long, default_value_t = 4096)]
    snapshot_every: u64,
    /// MiB of commands applied between snapshots (whichever bound comes first).
    #[arg(long, default_value_t = 16)]
    snapshot_mib: u64,
    /// Page cache of each node's database, MiB.
    #[arg(long, default_value_t = 8)]
    cache_mib: usize,
    /// Where the nodes keep their files (default: a temporary directory, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The process's peak resident memory in bytes (`VmHWM` of `/proc/self/status`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn value(i: u64, bytes: usize) -> Vec<u8> {
    let mut v = i.to_le_bytes().repeat(bytes / 8 + 1);
    v.truncate(bytes);
    v
}

fn put(i: u64, bytes: usize) -> RedbCommand {
    RedbCommand::Put {
        key: format!("key-{i:010}"),
        value: value(i, bytes),
    }
}

/// The files of node `id`: its WAL and its database.
fn node_files(dir: &Path, id: NodeId, cache_bytes: usize) -> (Wal, Setup<(), RedbKv>) {
    let node_dir = dir.join(format!("node-{id}"));
    let wal = Wal::open(WalConfig::new(node_dir.join("wal")))
        .unwrap_or_else(|e| panic!("node {id}: write-ahead log: {e}"));
    let path = node_dir.join("sm.redb");
    std::fs::create_dir_all(&node_dir).unwrap_or_else(|e| panic!("{}: {e}", node_dir.display()));
    let setup = Setup::new((), move || RedbKv::open(&path, cache_bytes));
    (wal, setup)
}

/// Opens node 4's database (the node is stopped) and checks that it holds every key, and the
/// last one's value.
fn new_node_holds_everything(dir: &Path, writes: u64, value_bytes: usize, cache: usize) -> bool {
    use common::StateMachine as _;
    let db = match RedbKv::open(&dir.join("node-4").join("sm.redb"), cache) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("node 4's database: {e}");
            return false;
        }
    };
    let last = writes - 1;
    db.query(&RedbQuery::Len) == RedbOutput::Count(writes)
        && db.query(&RedbQuery::Get(format!("key-{last:010}")))
            == RedbOutput::Value(Some(value(last, value_bytes)))
}

/// Runs the writers concurrently over writes `0..writes` (each takes the next number not yet
/// taken) and returns how many were acknowledged and how long they all took.
async fn write_all<W, F>(writers: Vec<W>, writes: u64) -> (u64, Duration)
where
    W: FnMut(u64) -> F + Send + 'static,
    F: std::future::Future<Output = bool> + Send,
{
    let began = Instant::now();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut write in writers {
        let (acknowledged, next) = (acknowledged.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    return;
                }
                if write(i).await {
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a writer task");
    }
    (acknowledged.load(Ordering::Relaxed), began.elapsed())
}

struct Report {
    /// The leader's log was compacted below this position when the new node joined (and, for
    /// Multi-Paxos, the new replica installed a snapshot); 0: it could catch up from the log.
    compacted_through: u64,
    acknowledged: u64,
    writes: u64,
    write_time: Duration,
    snapshot_bytes: u64,
    catch_up: Duration,
    checked: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().expect("a temporary directory");
            temp.path().to_path_buf()
        }
    };
    let value_bytes = (args.value_kib * 1024) as usize;
    let writes = (args.state_mib * 1024).div_ceil(args.value_kib).max(1);
    println!(
        "{:?}: 3 nodes + 1 joining, {} writes of {} KiB ({} MiB of state), snapshots every {} \
         entries or {} MiB, WAL and redb under {}",
        args.protocol,
        writes,
        args.value_kib,
        args.state_mib,
        args.snapshot_every,
        args.snapshot_mib,
        dir.display()
    );
    let report = match args.protocol {
        Protocol::Raft => run_raft(&args, &dir, writes, value_bytes).await,
        Protocol::Paxos => run_paxos(&args, &dir, writes, value_bytes).await,
    };
    let peak = peak_rss_bytes().unwrap_or(0);
    let state = args.state_mib * 1024 * 1024;
    println!("acknowledged {} of {}", report.acknowledged, report.writes);
    println!(
        "writes: {:.1} s ({:.0} writes/s)",
        report.write_time.as_secs_f64(),
        report.writes as f64 / report.write_time.as_secs_f64().max(1e-9)
    );
    println!(
        "snapshot: {:.1} MiB; the leader's log was compacted through {}, so the new node caught \
         up by snapshot: {}",
        mib(report.snapshot_bytes),
        report.compacted_through,
        if report.compacted_through > 0 {
            "yes"
        } else {
            "NO"
        }
    );
    println!(
        "new node caught up in {:.2} s; its database holds every key: {}",
        report.catch_up.as_secs_f64(),
        if report.checked { "yes" } else { "NO" }
    );
    println!(
        "peak resident memory: {:.1} MiB for {:.1} MiB of state ({:+.1} MiB over the state)",
        mib(peak),
        mib(state),
        mib(peak) - mib(state)
    );
    if report.acknowledged != report.writes || !report.checked || report.compacted_through == 0 {
        std::process::exit(1);
    }
}

async fn run_raft(args: &Args, dir: &Path, writes: u64, value_bytes: usize) -> Report {
    use raft::{RaftClient, RaftHandle, RaftNode, Request};
    let net = MemoryNetwork::new(1);
    let cache = args.cache_mib * 1024 * 1024;
    let start = |id: NodeId| {
        let (wal, setup) = node_files(dir, id, cache);
        let setup = setup.with_config(raft_config(args, id));
        let transport = net.join(id).expect("joins the network");
        async move {
            let h = driver::spawn_recovered::<RaftNode<RedbKv>, _, _, _>(
                setup,
                transport,
                wal,
                Bincode,
                DriverConfig::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
            RaftHandle::new(h)
        }
    };
    let mut handles = Vec::new();
    for id in 1..=3 {
        handles.push(start(id).await);
    }
    let client = Arc::new(RaftClient::new(handles.clone()));
    raft_leader(&handles).await;

    let writers = (0..args.clients).map(|_| {
        let client = client.clone();
        move |i: u64| {
            let client = client.clone();
            async move {
                for attempt in 0..WRITE_ATTEMPTS_MAX {
                    match client.propose(put(i, value_bytes)).await {
                        Ok(_) => return true,
                        Err(e) if attempt + 1 == WRITE_ATTEMPTS_MAX => {
                            eprintln!("write {i} failed: {e}")
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                false
            }
        }
    });
    let (acknowledged, write_time) = write_all(writers.collect(), writes).await;

    let (_, m) = raft_leader(&handles).await;
    let four = start(4).await;
    let joined = Instant::now();
    client
        .change_membership(Request::AddLearner(4))
        .await
        .expect("node 4 added as a learner");
    let snapshot_bytes = raft_catch_up(&four, m.applied_index, joined).await;
    let catch_up = joined.elapsed();
    for h in handles.iter().chain([&four]) {
        let _ = h.shutdown().await;
    }
    drop((handles, four, client));
    let checked = new_node_holds_everything(dir, writes, value_bytes, cache);
    Report {
        compacted_through: m.snapshot_index,
        acknowledged,
        writes,
        write_time,
        snapshot_bytes,
        catch_up,
        checked,
    }
}

async fn run_paxos(args: &Args, dir: &Path, writes: u64, value_bytes: usize) -> Report {
    use paxos::{Config, PaxosClient, PaxosHandle};
    let net = MemoryNetwork::new(2);
    let cache = args.cache_mib * 1024 * 1024;
    let start = |id: NodeId| {
        let (wal, setup) = node_files(dir, id, cache);
        let mut c = Config::new(id, vec![1, 2, 3]);
        c.snapshot_interval_slots = args.snapshot_every;
        c.snapshot_log_bytes_max = args.snapshot_mib * 1024 * 1024;
        let setup = setup.with_config(c);
        let transport = net.join(id).expect("joins the network");
        async move {
            PaxosHandle::spawn_with(setup, transport, wal, DriverConfig::default())
                .await
                .unwrap_or_else(|e| panic!("replica {id}: {e}"))
        }
    };
    let mut handles = Vec::new();
    for id in 1..=3 {
        handles.push(start(id).await);
    }
    paxos_leader(&handles).await;

    // One client (one session) per writer: its sequence numbers make retries exactly-once.
    let writers = (0..args.clients).map(|c| {
        let client = Arc::new(PaxosClient::new(c + 1, handles.clone()));
        move |i: u64| {
            let client = client.clone();
            async move {
                match client.propose(put(i, value_bytes)).await {
                    Ok(_) => true,
                    Err(e) => {
                        eprintln!("write {i} failed: {e}");
                        false
                    }
                }
            }
        }
    });
    let (acknowledged, write_time) = write_all(writers.collect(), writes).await;

    let (leader, before) = paxos_leader(&handles).await;
    let compacted = before.log_start;
    let four = start(4).await;
    let joined = Instant::now();
    leader
        .reconfigure(vec![1, 2, 3, 4])
        .await
        .expect("replica 4 added by reconfiguration");
    let (_, m) = paxos_leader(&handles).await;
    let snapshot_bytes = paxos_catch_up(&four, m.applied, joined).await;
    let catch_up = joined.elapsed();
    let installed = four
        .metrics()
        .await
        .expect("replica 4 runs")
        .snapshots_installed;
    for h in handles.iter().chain([&four]) {
        let _ = h.shutdown().await;
    }
    drop((handles, four, leader));
    let checked = new_node_holds_everything(dir, writes, value_bytes, cache);
    Report {
        compacted_through: if installed > 0 { compacted } else { 0 },
        acknowledged,
        writes,
        write_time,
        snapshot_bytes,
        catch_up,
        checked,
    }
}

/// Node `id`'s Raft configuration: nodes 1 to 3 vote and know node 4, which joins as a learner.
fn raft_config(args: &Args, id: NodeId) -> raft::Config {
    let mut c = raft::Config::new(id, vec![1, 2, 3]);
    c.snapshot_log_entries_max = args.snapshot_every;
    c.snapshot_log_bytes_max = args.snapshot_mib * 1024 * 1024;
    if id == 4 {
        c.learners = vec![4];
    } else {
        c.known_nodes = vec![4];
    }
    c
}

/// The Raft leader among `handles` and its metrics, once there is one.
async fn raft_leader(
    handles: &[raft::RaftHandle<RedbKv>],
) -> (raft::RaftHandle<RedbKv>, raft::Metrics) {
    loop {
        for h in handles {
            if let Ok(m) = h.metrics().await {
                if m.role == raft::Role::Leader {
                    return (h.clone(), m);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the new node applied `target` (panics past [`CATCH_UP_MAX`] from `joined`);
/// returns the largest snapshot it reported on the way.
async fn raft_catch_up(four: &raft::RaftHandle<RedbKv>, target: u64, joined: Instant) -> u64 {
    let mut snapshot_bytes = 0;
    loop {
        let f = four.metrics().await.expect("node 4 runs");
        snapshot_bytes = snapshot_bytes.max(f.snapshot_bytes);
        if f.applied_index >= target {
            return snapshot_bytes;
        }
        assert!(joined.elapsed() < CATCH_UP_MAX, "node 4 did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Multi-Paxos leader among `handles` and its metrics, once there is one.
async fn paxos_leader(
    handles: &[paxos::PaxosHandle<RedbKv>],
) -> (paxos::PaxosHandle<RedbKv>, paxos::Metrics) {
    loop {
        for h in handles {
            if let Ok(m) = h.metrics().await {
                if m.is_leader {
                    return (h.clone(), m);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the new replica applied `target` (panics past [`CATCH_UP_MAX`] from `joined`);
/// returns the largest snapshot it reported on the way.
async fn paxos_catch_up(four: &paxos::PaxosHandle<RedbKv>, target: u64, joined: Instant) -> u64 {
    let mut snapshot_bytes = 0;
    loop {
        let f = four.metrics().await.expect("replica 4 runs");
        snapshot_bytes = snapshot_bytes.max(f.snapshot_bytes);
        if f.applied >= target {
            return snapshot_bytes;
        }
        assert!(
            joined.elapsed() < CATCH_UP_MAX,
            "replica 4 did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
