//! `groups`: many Raft groups per process (`common::groups::Groups`) on three processes over
//! TCP loopback, each process with its own write-ahead log (fsync on), under closed-loop
//! clients spread over 1, 16 and 256 groups. One table: throughput, latency, and per
//! operation the frames sent, the records written and the fsyncs, summed over the processes.
//!
//! ```text
//! cargo run --release -p benches --bin groups -- [--secs 5] [--clients 256] [--groups 1,16,256]
//! ```
//!
//! The binary is its own node program: for each row it starts three copies of itself with
//! `--node <id>`, each hosting every group (one Raft replica per group) behind one driver, one
//! TCP transport and one write-ahead log. The parent talks to them over their stdin and stdout
//! in lines:
//!
//! 1. a node binds a loopback port and prints `ADDR <addr>`; the parent answers
//!    `PEERS <id>=<addr>,...`;
//! 2. `LEADS?` is answered `LEADS <led here> <groups with a known leader>`, until every group
//!    has a leader;
//! 3. `RUN <clients> <warm-up ms> <measure ms>` runs that many closed-loop clients in the node,
//!    spread over the groups it leads (the parent gives each node clients in proportion to the
//!    groups it leads, so every client talks to a leader in its own process: the clients stand
//!    in for a routing layer the bench does not have), and is answered `DONE <json>` with what
//!    the measured window saw;
//! 4. `EXIT` shuts the node down.
//!
//! A recorded run and how to read it: `docs/groups.md`.
//!
//! Each client proposes puts of a small value to its own key. Latencies are from the client's
//! call on the leader's handle to the `Applied` answer (commit on a majority, fsynced).
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::codec::Bincode;
use common::driver::{self, DriverConfig, NodeHandle};
use common::groups::{GroupId, GroupResponse, Groups, GroupsConfig};
use common::transport::tcp::{TcpConfig, TcpTransport};
use common::wal::{Wal, WalConfig};
use common::NodeId;
use raft::kv::{KvCommand, KvStore};
use raft::{Config, RaftNode, Request, Response, Role};
use serde::{Deserialize, Serialize};

/// The host every process runs.
type Host = Groups<RaftNode<KvStore>>;

/// Processes (replicas of every group).
const NODES: u64 = 3;
/// The cluster's name and key in the TCP handshake.
const CLUSTER: &str = "groups-bench";
const CLUSTER_KEY: &[u8] = b"groups-bench-loopback-cluster-key";
/// Bytes of each put's value.
const VALUE_BYTES: usize = 16;
/// How long the parent waits for every group to have a leader.
const ELECTION_WAIT: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(about = "Many Raft groups per process: 3 processes, TCP loopback, WAL with fsync")]
struct Args {
    /// Seconds measured per row.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Seconds of warm-up per row, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Closed-loop clients per row, all processes together.
    #[arg(long, default_value_t = 256)]
    clients: u64,
    /// Group counts, one row each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    groups: Vec<u64>,
    /// Run as node `id` of a row (started by the parent).
    #[arg(long, hide = true)]
    node: Option<NodeId>,
    /// The node's groups (with `--node`).
    #[arg(long, hide = true, default_value_t = 1)]
    group_count: u64,
    /// The node's write-ahead log directory (with `--node`).
    #[arg(long, hide = true)]
    dir: Option<std::path::PathBuf>,
}

/// What one node measured in the window, sent to the parent as JSON.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Window {
    ops: u64,
    failed: u64,
    /// Every measured latency, in microseconds.
    latencies_us: Vec<u32>,
    frames: u64,
    bytes_sent: u64,
    records: u64,
    syncs: u64,
    /// Messages of the groups carried by those frames.
    parts: u64,
}

fn main() {
    let args = Args::parse();
    if let Some(id) = args.node {
        let dir = args.dir.clone().expect("--node needs --dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(node_main(id, args.group_count, dir));
        return;
    }
    parent(&args);
}

// ----- the parent -----

fn parent(args: &Args) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let machine = benches::report::Machine::describe();
    println!(
        "groups bench: {NODES} processes on TCP loopback, one write-ahead log each (fsync on); \
         {} closed-loop clients proposing {VALUE_BYTES}-byte puts; {} s measured after {} s \
         warm-up per row",
        args.clients, args.secs, args.warmup
    );
    println!(
        "machine: {} cores, {}; load average before: {}",
        machine.cores,
        machine.os,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    println!(
        "| groups | clients | ops/s | p50 ms | p99 ms | frames/op | msgs/frame | records/op | \
         fsyncs/op |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &g in &args.groups {
        match row(args, g) {
            Ok(line) => println!("{line}"),
            Err(e) => println!("| {g} | failed: {e} |"),
        }
    }
}

/// One started node process and its pipes.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn say(&mut self, line: &str) -> Result<(), String> {
        writeln!(self.stdin, "{line}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())
    }

    fn hear(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("a node exited".into());
        }
        Ok(line.trim_end().to_string())
    }
}

/// Runs one row: `groups` groups on fresh processes and logs.
fn row(args: &Args, groups: u64) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut procs = Vec::new();
    for id in 1..=NODES {
        let mut child = Command::new(&exe)
            .args([
                "--node",
                &id.to_string(),
                "--group-count",
                &groups.to_string(),
            ])
            .arg("--dir")
            .arg(dir.path().join(format!("node-{id}")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        procs.push(Proc {
            child,
            stdin,
            stdout,
        });
    }
    let result = drive(args, groups, &mut procs);
    for p in &mut procs {
        let _ = p.say("EXIT");
    }
    for p in &mut procs {
        let _ = p.child.wait();
    }
    result
}

/// Introduces the nodes, waits for leaders, runs the clients, and formats the row.
fn drive(args: &Args, groups: u64, procs: &mut [Proc]) -> Result<String, String> {
    let mut addrs = Vec::new();
    for (i, p) in procs.iter_mut().enumerate() {
        let line = p.hear()?;
        let addr = line
            .strip_prefix("ADDR ")
            .ok_or(format!("bad line {line:?}"))?;
        addrs.push(format!("{}={addr}", i + 1));
    }
    let peers = format!("PEERS {}", addrs.join(","));
    for p in procs.iter_mut() {
        p.say(&peers)?;
    }
    let leads = await_leaders(groups, procs)?;
    // Clients in proportion to the groups each node leads (largest remainders last).
    let total: u64 = leads.iter().sum();
    let mut clients: Vec<u64> = leads.iter().map(|l| args.clients * l / total).collect();
    let mut short = args.clients - clients.iter().sum::<u64>();
    for (c, l) in clients.iter_mut().zip(&leads) {
        if short > 0 && *l > 0 {
            *c += 1;
            short -= 1;
        }
    }
    for (p, c) in procs.iter_mut().zip(&clients) {
        p.say(&format!(
            "RUN {c} {} {}",
            args.warmup * 1000,
            args.secs * 1000
        ))?;
    }
    let mut all = Window::default();
    for p in procs.iter_mut() {
        let line = p.hear()?;
        let json = line
            .strip_prefix("DONE ")
            .ok_or(format!("bad line {line:?}"))?;
        let w: Window = serde_json::from_str(json).map_err(|e| e.to_string())?;
        all.ops += w.ops;
        all.failed += w.failed;
        all.latencies_us.extend(w.latencies_us);
        all.frames += w.frames;
        all.bytes_sent += w.bytes_sent;
        all.records += w.records;
        all.syncs += w.syncs;
        all.parts += w.parts;
    }
    Ok(format_row(groups, args, &mut all))
}

/// Asks every node what it leads until every group has a leader; returns each node's count.
fn await_leaders(groups: u64, procs: &mut [Proc]) -> Result<Vec<u64>, String> {
    let began = Instant::now();
    loop {
        let mut leads = Vec::new();
        for p in procs.iter_mut() {
            p.say("LEADS?")?;
            let line = p.hear()?;
            let n: u64 = line
                .strip_prefix("LEADS ")
                .and_then(|s| s.parse().ok())
                .ok_or(format!("bad line {line:?}"))?;
            leads.push(n);
        }
        if leads.iter().sum::<u64>() == groups {
            return Ok(leads);
        }
        if began.elapsed() > ELECTION_WAIT {
            return Err(format!("no leader for every group: {leads:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn format_row(groups: u64, args: &Args, w: &mut Window) -> String {
    w.latencies_us.sort_unstable();
    let pct = |q: f64| -> f64 {
        if w.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((w.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(w.latencies_us[i]) / 1000.0
    };
    let ops = w.ops.max(1) as f64;
    format!(
        "| {groups} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.3} | {:.3} |",
        args.clients,
        w.ops as f64 / args.secs as f64,
        pct(0.5),
        pct(0.99),
        w.frames as f64 / ops,
        w.parts as f64 / w.frames.max(1) as f64,
        w.records as f64 / ops,
        w.syncs as f64 / ops,
    )
}

// ----- a node -----

/// Reads one command line from the parent (blocking: only this thread waits on it).
fn read_line() -> String {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim_end().to_string()
}

fn tell(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Node `id` hosting groups `1..=groups`, with its log in `dir`, serving the parent's lines.
async fn node_main(id: NodeId, groups: u64, dir: std::path::PathBuf) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tell(&format!("ADDR {addr}"));
    let line = read_line();
    let mut peers: BTreeMap<NodeId, SocketAddr> = BTreeMap::new();
    for pair in line.trim_start_matches("PEERS ").split(',') {
        if let Some((i, a)) = pair.split_once('=') {
            if let (Ok(i), Ok(a)) = (i.parse(), a.parse()) {
                peers.insert(i, a);
            }
        }
    }
    let tcp = TcpConfig::new(id, CLUSTER, CLUSTER_KEY.to_vec(), addr, peers);
    let transport = TcpTransport::with_listener(tcp, listener).expect("TCP transport");
    let members: Vec<NodeId> = (1..=NODES).collect();
    let hosted = (1..=groups)
        .map(|g| {
            let mut c = Config::new(id, members.clone());
            c.seed = g;
            // The leaders of a process heartbeat on the same ticks: one message per peer.
            c.heartbeat_aligned = true;
            (g, c.into())
        })
        .collect();
    let config = GroupsConfig::new(id, hosted);
    let wal = Wal::open(WalConfig::new(dir)).expect("open the write-ahead log");
    let handle = driver::spawn_recovered::<Host, _, _, _>(
        config,
        transport,
        wal,
        Bincode,
        DriverConfig::default(),
    )
    .await
    .expect("start the node");
    loop {
        let line = read_line();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("LEADS?") => tell(&format!("LEADS {}", led_here(&handle).await.len())),
            Some("RUN") => {
                let n: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
                let [clients, warm, secs] = n[..] else {
                    tell("DONE {}");
                    continue;
                };
                let w = run_clients(&handle, clients, warm, secs).await;
                tell(&format!(
                    "DONE {}",
                    serde_json::to_string(&w).unwrap_or_default()
                ));
            }
            _ => break, // EXIT, or the parent is gone
        }
    }
    let _ = handle.shutdown().await;
}

/// The groups this node leads.
async fn led_here(handle: &NodeHandle<Host>) -> Vec<GroupId> {
    match handle.metrics().await {
        Ok(m) => m
            .groups
            .iter()
            .filter(|(_, g)| g.role == Role::Leader)
            .map(|(id, _)| *id)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Runs `clients` closed-loop clients over the groups led here: `warm_ms` of warm-up, then
/// `secs_ms` measured.
async fn run_clients(
    handle: &NodeHandle<Host>,
    clients: u64,
    warm_ms: u64,
    secs_ms: u64,
) -> Window {
    let led = led_here(handle).await;
    let began = Instant::now();
    let measure_from = began + Duration::from_millis(warm_ms);
    let end = measure_from + Duration::from_millis(secs_ms);
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let Some(&group) = led.get(c as usize % led.len().max(1)) else {
            break;
        };
        let handle = handle.clone();
        let failed = failed.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let key = format!("client-{c}");
            let value = "v".repeat(VALUE_BYTES);
            while Instant::now() < end {
                let put = Request::Propose(KvCommand::Put {
                    key: key.clone(),
                    value: value.clone(),
                });
                let t = Instant::now();
                let answer = handle.request((group, put).into()).await;
                let done = Instant::now();
                match answer {
                    Ok(GroupResponse::Group(_, Response::Applied { .. })) => {
                        if t >= measure_from && done <= end {
                            let us = (done - t).as_micros().min(u128::from(u32::MAX)) as u32;
                            latencies.push(us);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let (s0, g0) = (handle.stats(), counters(handle).await);
    tokio::time::sleep_until(end.into()).await;
    let (s1, g1) = (handle.stats(), counters(handle).await);
    let mut w = Window {
        frames: s1.messages_sent - s0.messages_sent,
        bytes_sent: s1.bytes_sent - s0.bytes_sent,
        records: s1.records_persisted - s0.records_persisted,
        syncs: s1.syncs - s0.syncs,
        parts: g1 - g0,
        ..Window::default()
    };
    for t in tasks {
        if let Ok(l) = t.await {
            w.ops += l.len() as u64;
            w.latencies_us.extend(l);
        }
    }
    w.failed = failed.load(Ordering::Relaxed);
    w
}

/// The groups' messages this node has sent so far.
async fn counters(handle: &NodeHandle<Host>) -> u64 {
    handle
        .metrics()
        .await
        .map(|m| m.counters.parts_sent)
        .unwrap_or(0)
}
