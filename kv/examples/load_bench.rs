//! The durable load bench: three replicas on loopback, each its own `kv-node` process with its
//! write-ahead log fsynced, under a closed-loop put load (16-byte values over 1,000 keys, every
//! client one request in flight), for Raft and Multi-Paxos; and, when an `etcd` binary is on
//! the `PATH`, a three-member etcd cluster under the same load, in the same run.
//!
//! ```text
//! cargo build --release -p kv && cargo run --release -p kv --example load_bench
//! cargo run --release -p kv --example load_bench -- --clients 1,32,256 --secs 5
//! cargo run --release -p kv --example load_bench -- --clients 256 --conns 8 --turns 5
//! ```
//!
//! On a shared machine one run of a row says little: `--turns N` runs all the rows N times in
//! turns (the systems alternate, so each meets the machine's good and bad moments alike), then
//! prints each row's median throughput, its lowest and highest, and its median p99 latency and
//! server CPU per operation; the one-client lines then judge the median p50.
//!
//! It also measures, in the same run and on the same disk, what bounds a durable write: the
//! disk's `fdatasync` (4 KiB appends) alone and three at once (each replica syncs its own log
//! when a write arrives), and a loopback round trip between two threads, and from them the bound
//! for one client (two `fdatasync`s, a leader's and a follower's, plus one round trip), with a
//! line per one-client row saying whether its p50 is within it. It also prints the `fdatasync`
//! of 4 KiB written over a zero-filled file, which is what the write-ahead log does
//! (`WalConfig::preallocate_bytes`); the bound keeps the appends' figure. It prints the
//! machine's load average before and after, so a noisy run shows. The etcd clients use its HTTP gateway
//! (`POST /v3/kv/put`) over kept-alive connections, spread over the three members as etcd's
//! own clients do; the `kv` clients talk to the leader, each over a connection of its own
//! (`conns` = clients) or sharing a few pipelined connections (`--conns`,
//! [`kv::net::SharedConnections`]), as etcd's own benchmark tool shares its gRPC connections
//! among its clients. `LOAD_BENCH_DEBUG=1` prints every write that did not end `Ok` (the
//! `errors` column counts them) and lets the `kv-node`s' logs through to this process's
//! standard error (`RUST_LOG` sets their level).
//!
//! Each server process computes with `--threads` threads (`kv-node --worker-threads`, etcd's
//! `GOMAXPROCS`): one by default, since the three replicas and the clients share the machine's
//! CPUs. The clients run on `--client-threads` threads of this process, one by default.
//!
//! For every row it also prints the CPU time spent per operation, read from `/proc` over the
//! measured window: by the three server processes together, and by this process (the clients).
//! Throughput moves with whatever else runs on the machine; CPU per operation much less, so it
//! is the figure to compare across runs. The load generator's own CPU per operation is a gauge
//! of the machine's speed at that moment: its work per operation does not change between rows.
//!
//! For the `kv-node` rows it reads the leader's metrics (`kv-node --metrics-listen`) before and
//! after the row, and prints how many times a second the leader synced its log (warm-up
//! included) and how long a sync took on average. A leader syncs one batch at a time, so the
//! sync time over the period between syncs (one second over the syncs per second) is the
//! share of the time its disk was busy: what is left of the period is the rest of a batch's
//! round (answering the batch before, taking the next requests, handing them to the log). The
//! last column is a write's mean time inside the leader, from its request taken off the
//! connection to its answer: set against the clients' latency, it shows how much of that the
//! loopback trip and the clients' own side take.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kv::net::{CallOutcome, KvClient, SharedConnections};
use kv::KvOp;

#[derive(Parser, Debug)]
#[command(about = "Closed-loop durable put load against kv-node (Raft, Multi-Paxos) and etcd")]
struct Args {
    /// Client counts to run, comma separated.
    #[arg(long, default_value = "1,32,256", value_delimiter = ',')]
    clients: Vec<usize>,
    /// Measured seconds per row (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// How the `kv` clients connect, comma separated, one row each: 0 gives every client a
    /// connection of its own; N > 0 has the clients share N connections to the leader, each
    /// carrying several clients' requests at once (a value not below the client count is
    /// skipped). etcd's clients always use the HTTP client's pool of kept-alive connections.
    #[arg(long, default_value = "0,8", value_delimiter = ',')]
    conns: Vec<usize>,
    /// Systems to run: raft, paxos, etcd (etcd only when the binary is on the PATH).
    #[arg(long, default_value = "raft,paxos,etcd", value_delimiter = ',')]
    systems: Vec<String>,
    /// Threads each server process computes with: `kv-node --worker-threads`, and etcd's
    /// `GOMAXPROCS`. The three replicas share this machine's CPUs, so one each by default.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,
    /// `[driver] persist_spin_us` for every `kv-node` (how long the log's thread checks for the
    /// next batch before it sleeps; 0 turns it off), given in a configuration file. Default:
    /// kv-node's own.
    #[arg(long)]
    persist_spin_us: Option<u64>,
    /// Runs every row this many times, in turns (each turn runs the rows once, in order, so
    /// every system meets the same moments of the machine), then prints per row the median and
    /// the range over the turns: how noisy the run was.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=TURNS_MAX))]
    turns: u64,
    /// Threads of this process's runtime, which runs every client (1: tokio's current-thread
    /// runtime). The clients share the machine's CPUs with the servers; on one thread they
    /// spend about a quarter less CPU per operation than on two (no waking of the other worker),
    /// and one thread carries them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=CLIENT_THREADS_MAX))]
    client_threads: u64,
}

/// Most threads `--client-threads` takes.
const CLIENT_THREADS_MAX: u64 = 64;

/// Most turns `--turns` takes (each turn of the default rows takes about two minutes).
const TURNS_MAX: u64 = 20;

/// How each `kv-node` runs: [`Args::threads`] and [`Args::persist_spin_us`].
#[derive(Clone, Copy)]
struct Servers {
    threads: u64,
    persist_spin_us: Option<u64>,
}

/// Keys the load writes (uniformly at random).
const KEYS: u64 = 1_000;
/// Bytes per value.
const VALUE_BYTES: usize = 16;
/// Longest wait for a cluster to serve.
const READY_MAX: Duration = Duration::from_secs(30);
const WARM_UP: Duration = Duration::from_secs(1);
const KEY: &str = "the load bench's cluster key, long enough";

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Processes that are killed when dropped.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One row's figures.
struct Row {
    ops: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    errors: u64,
    /// CPU time over the measured window: the servers' processes, and this process (the
    /// clients).
    cpu: Option<(Duration, Duration)>,
    /// The leader's log syncs, read from its metrics (`kv-node` rows only).
    syncs: Option<LeaderSyncs>,
}

/// How often the leader synced its log over a row (warm-up included), and how long a sync
/// took on average: against the `fdatasync` measured alone, it tells whether the disk or
/// the rest of a batch's round sets the pace.
#[derive(Clone, Copy)]
struct LeaderSyncs {
    per_sec: f64,
    mean_ms: f64,
    /// Mean time of a write inside the leader, from its request taken off the connection to
    /// its answer (`kv_proposal_latency_seconds`): what the clients see beyond it is the trip
    /// over the loopback and their own side.
    write_ms: f64,
}

impl Row {
    /// Median latency in milliseconds.
    fn p50_ms(&self) -> f64 {
        self.latency_us.value_at_quantile(0.5) as f64 / 1e3
    }

    fn p99_ms(&self) -> f64 {
        self.latency_us.value_at_quantile(0.99) as f64 / 1e3
    }

    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU µs per operation of the servers, if `/proc` could be read.
    fn server_us_per_op(&self) -> Option<f64> {
        self.cpu
            .map(|(servers, _)| servers.as_secs_f64() * 1e6 / self.ops.max(1) as f64)
    }

    fn print(&self, system: &str, clients: usize, conns: &str) {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1e3;
        let per_op = |d: Duration| d.as_secs_f64() * 1e6 / self.ops.max(1) as f64;
        let (servers, client) = match self.cpu {
            Some((servers, client)) => (
                format!("{:.1}", per_op(servers)),
                format!("{:.1}", per_op(client)),
            ),
            None => ("?".into(), "?".into()),
        };
        let (syncs, sync_ms, write_ms) = match self.syncs {
            Some(s) => (
                format!("{:.0}", s.per_sec),
                format!("{:.3}", s.mean_ms),
                format!("{:.2}", s.write_ms),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {system} | {clients} | {conns} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {servers} | {client} | {syncs} | {sync_ms} | {write_ms} |",
            self.ops_per_sec(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.errors
        );
    }
}

/// CPU time (user and system) `pid` has used so far, from `/proc/PID/stat`; `None` where that
/// cannot be read (not Linux, the process is gone).
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = Some(rustix::param::clock_ticks_per_second()).filter(|&h| h > 0)?;
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// CPU time used so far by the processes `pids` (summed) and by this process.
fn cpu_now(pids: &[u32]) -> Option<(Duration, Duration)> {
    let mut servers = Duration::ZERO;
    for pid in pids {
        servers += cpu_time(&pid.to_string())?;
    }
    Some((servers, cpu_time("self")?))
}

/// Runs `clients` closed loops of `op` for warm-up plus `secs`, counting only the measured part
/// and the CPU time `pids` and this process use over it.
async fn closed_loop<F, Fut>(clients: usize, secs: u64, pids: &[u32], op: F) -> Row
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now() + WARM_UP;
    let end = start + Duration::from_secs(secs);
    let cpu_at_start = {
        let pids = pids.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            cpu_now(&pids)
        })
    };
    // One histogram for every client: one per client (256 of some 200 KiB each) missed the
    // caches on every record and cost the load generator a twentieth of its CPU time.
    let latency_us = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let op = op.clone();
        let latency_us = latency_us.clone();
        let counts = counts.clone();
        tasks.spawn(async move {
            let (mut ops, mut errors) = (0u64, 0u64);
            let mut n = 0u64;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let ok = op(c, n).await;
                n += 1;
                if began >= start {
                    if ok {
                        ops += 1;
                        let us = began.elapsed().as_micros() as u64;
                        let _ = latency_us.lock().unwrap().record(us);
                    } else {
                        errors += 1;
                    }
                }
            }
            let mut counts = counts.lock().unwrap();
            counts.0 += ops;
            counts.1 += errors;
        });
    }
    while tasks.join_next().await.is_some() {}
    let cpu = match (cpu_at_start.await.ok().flatten(), cpu_now(pids)) {
        (Some(a), Some(b)) => Some((b.0.saturating_sub(a.0), b.1.saturating_sub(a.1))),
        _ => None,
    };
    let (ops, errors) = *counts.lock().unwrap();
    let latency_us = latency_us.lock().unwrap().clone();
    Row {
        syncs: None,
        ops,
        elapsed: Duration::from_secs(secs),
        latency_us,
        errors,
        cpu,
    }
}

fn key_of(client: usize, n: u64) -> u64 {
    // A cheap deterministic spread over the keys.
    (client as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(n.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        % KEYS
}

/// One node's metrics without labels (`name value` lines), read from its `--metrics-listen`
/// address; `None` when it does not answer.
fn scrape(addr: SocketAddr) -> Option<BTreeMap<String, f64>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: load-bench\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    stream
        .take(SCRAPE_BYTES_MAX)
        .read_to_string(&mut text)
        .ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| {
                let (name, value) = l.split_once(' ')?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect(),
    )
}

/// Longest wait for a node's metrics.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of one metrics page read.
const SCRAPE_BYTES_MAX: u64 = 1 << 20;

/// Every node's metrics, by id (nodes that do not answer are left out).
async fn scrape_all(metrics: &BTreeMap<u64, SocketAddr>) -> BTreeMap<u64, BTreeMap<String, f64>> {
    let metrics = metrics.clone();
    tokio::task::spawn_blocking(move || {
        metrics
            .iter()
            .filter_map(|(&id, &addr)| Some((id, scrape(addr)?)))
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// The syncs of the node that leads at the end, between the two readings.
fn leader_syncs(
    before: &BTreeMap<u64, BTreeMap<String, f64>>,
    after: &BTreeMap<u64, BTreeMap<String, f64>>,
    over: Duration,
) -> Option<LeaderSyncs> {
    let (id, now) = after
        .iter()
        .find(|(_, m)| m.get("kv_is_leader") == Some(&1.0))?;
    let then = before.get(id)?;
    let delta = |name: &str| Some(now.get(name)? - then.get(name)?);
    let syncs = delta("kv_fsync_latency_seconds_count")?;
    let writes = delta("kv_proposal_latency_seconds_count")?;
    Some(LeaderSyncs {
        per_sec: syncs / over.as_secs_f64(),
        mean_ms: delta("kv_fsync_latency_seconds_sum")? * 1e3 / syncs.max(1.0),
        write_ms: delta("kv_proposal_latency_seconds_sum")? * 1e3 / writes.max(1.0),
    })
}

/// Starts three `kv-node`s in fresh directories under `dir` and waits until one leads; returns
/// them with their client and metrics addresses.
async fn start_kv(
    bin: &Path,
    protocol: &str,
    dir: &Path,
    servers: Servers,
) -> (Procs, BTreeMap<u64, SocketAddr>, BTreeMap<u64, SocketAddr>) {
    let addrs = free_addrs(9);
    let metrics: BTreeMap<u64, SocketAddr> = (1..=3).map(|i| (i, addrs[5 + i as usize])).collect();
    let peers = (1..=3)
        .map(|i| format!("{i}={}", addrs[i - 1]))
        .collect::<Vec<_>>()
        .join(",");
    let clients: BTreeMap<u64, SocketAddr> = (1..=3).map(|i| (i, addrs[2 + i as usize])).collect();
    let mut procs = Procs(Vec::new());
    std::fs::create_dir_all(dir).expect("data directory");
    for i in 1..=3u64 {
        let mut command = Command::new(bin);
        if let Some(us) = servers.persist_spin_us {
            let file = dir.join(format!("node-{i}.toml"));
            std::fs::write(&file, format!("[driver]\npersist_spin_us = {us}\n"))
                .expect("configuration file");
            command.arg("--config").arg(file);
        }
        procs.0.push(
            command
                .args(["--protocol", protocol, "--id", &i.to_string()])
                .args(["--listen", &addrs[i as usize - 1].to_string()])
                .args(["--client-listen", &clients[&i].to_string()])
                .args(["--metrics-listen", &metrics[&i].to_string()])
                .args(["--peers", &peers])
                .arg("--data-dir")
                .arg(dir.join(format!("node-{i}")))
                .args(["--worker-threads", &servers.threads.to_string()])
                .env("KV_CLUSTER_KEY", KEY)
                .stdout(Stdio::null())
                .stderr(if std::env::var_os("LOAD_BENCH_DEBUG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn()
                .expect("kv-node starts"),
        );
    }
    let mut probe = KvClient::new(u64::MAX, clients.clone()).with_deadline(READY_MAX);
    let ready = probe
        .write(KvOp::Put {
            key: "ready".into(),
            value: "1".into(),
        })
        .await;
    assert!(matches!(ready, CallOutcome::Ok(_)), "{protocol}: {ready:?}");
    (procs, clients, metrics)
}

async fn run_kv(
    bin: &Path,
    protocol: &str,
    dir: &Path,
    clients: usize,
    conns: usize,
    secs: u64,
    servers: Servers,
) -> Row {
    // A fresh cluster per row: no state (sessions included) carries over.
    let data = dir.join(format!("{protocol}-{clients}-{conns}"));
    let (procs, nodes, metrics) = start_kv(bin, protocol, &data, servers).await;
    let pids: Vec<u32> = procs.0.iter().map(Child::id).collect();
    let value = "v".repeat(VALUE_BYTES);
    let shared = (conns > 0).then(|| SharedConnections::new(conns));
    let sessions: Arc<Vec<tokio::sync::Mutex<KvClient>>> = Arc::new(
        (0..clients)
            .map(|c| {
                let client = KvClient::new(1_000 + c as u64, nodes.clone());
                tokio::sync::Mutex::new(match &shared {
                    Some(shared) => client.with_shared_connections(shared.clone()),
                    None => client,
                })
            })
            .collect(),
    );
    let before = scrape_all(&metrics).await;
    let began = Instant::now();
    let mut row = closed_loop(clients, secs, &pids, move |c, n| {
        let sessions = sessions.clone();
        let value = value.clone();
        async move {
            let mut client = sessions[c].lock().await;
            let op = KvOp::Put {
                key: format!("k{}", key_of(c, n)),
                value,
            };
            let outcome = client.write(op).await;
            if !matches!(outcome, CallOutcome::Ok(_))
                && std::env::var_os("LOAD_BENCH_DEBUG").is_some()
            {
                eprintln!("{outcome:?}");
            }
            matches!(outcome, CallOutcome::Ok(_))
        }
    })
    .await;
    let after = scrape_all(&metrics).await;
    row.syncs = leader_syncs(&before, &after, began.elapsed());
    drop(procs);
    row
}

/// Starts three etcd members with their data under `data`: member `i` (1 to 3) listens for
/// peers on `addrs[i - 1]` and for clients on `addrs[2 + i]`.
fn start_etcd(etcd: &Path, data: &Path, addrs: &[SocketAddr], threads: u64) -> Procs {
    let cluster = (1..=3)
        .map(|i| format!("e{i}=http://{}", addrs[i - 1]))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Procs(Vec::new());
    for i in 1..=3usize {
        let client_url = format!("http://{}", addrs[2 + i]);
        let peer_url = format!("http://{}", addrs[i - 1]);
        procs.0.push(
            Command::new(etcd)
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(data.join(format!("e{i}")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "load-bench"])
                .env("GOMAXPROCS", threads.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd starts"),
        );
    }
    procs
}

/// Measures etcd: starts a three-member cluster, loads it with `clients` closed loops of puts
/// over its HTTP/JSON gateway for `secs`, then stops it.
async fn run_etcd(etcd: &Path, dir: &Path, clients: usize, secs: u64, threads: u64) -> Row {
    let addrs = free_addrs(6);
    let procs = start_etcd(etcd, &dir.join(format!("etcd-{clients}")), &addrs, threads);
    let http: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(clients)
        .build_http();
    let endpoints: Arc<Vec<String>> = Arc::new(
        (1..=3)
            .map(|i| format!("http://{}/v3/kv/put", addrs[2 + i]))
            .collect(),
    );
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let put = {
        let http = http.clone();
        let endpoints = endpoints.clone();
        move |c: usize, n: u64, value: String| {
            let http = http.clone();
            let endpoints = endpoints.clone();
            let body = format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                b64(&format!("k{}", key_of(c, n))),
                b64(&value)
            );
            async move {
                let request = hyper::Request::post(endpoints[c % endpoints.len()].as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                match http.request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok && response.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                }
            }
        }
    };
    let deadline = Instant::now() + READY_MAX;
    while !put(0, 0, "ready".into()).await {
        assert!(
            Instant::now() < deadline,
            "etcd did not serve within {READY_MAX:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let value = "v".repeat(VALUE_BYTES);
    let pids: Vec<u32> = procs.0.iter().map(Child::id).collect();
    let row = closed_loop(clients, secs, &pids, move |c, n| put(c, n, value.clone())).await;
    drop(procs);
    row
}

/// Appends probed per `fdatasync` measurement.
const SYNC_PROBES: usize = 500;
/// Round trips probed for the loopback measurement.
const RTT_PROBES: usize = 2_000;

/// `fdatasync` of 4 KiB appends to a file of its own in `dir`, `SYNC_PROBES` times, by each of
/// `writers` threads at once: every sync's time in milliseconds, sorted. With `zeroed`, the file
/// is first filled with zeros (and synced), and the 4 KiB blocks are written over them.
fn fdatasync_ms(dir: &Path, writers: usize, zeroed: bool) -> Vec<f64> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let start = Arc::new(std::sync::Barrier::new(writers));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let path = dir.join(format!("fdatasync-{w}.probe"));
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let mut file = std::fs::File::create(&path).unwrap();
                let block = [7u8; 4096];
                if zeroed {
                    file.write_all(&vec![0u8; block.len() * SYNC_PROBES])
                        .unwrap();
                    file.sync_data().unwrap();
                }
                start.wait();
                let times: Vec<f64> = (0..SYNC_PROBES)
                    .map(|i| {
                        file.write_all_at(&block, (i * block.len()) as u64).unwrap();
                        let began = Instant::now();
                        file.sync_data().unwrap();
                        began.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                drop(file);
                let _ = std::fs::remove_file(&path);
                times
            })
        })
        .collect();
    let mut times: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

/// The `q` quantile of sorted `times`.
fn quantile(times: &[f64], q: f64) -> f64 {
    times[((times.len() as f64 * q) as usize).min(times.len() - 1)]
}

/// A loopback TCP round trip of one small message between two threads that each wait in the
/// kernel for the other, as the processes of a cluster do: p50 in milliseconds. (Two tasks of
/// one tokio runtime would not do: they can run on one thread, and the round trip then never
/// wakes anybody.)
fn loopback_rtt_ms() -> f64 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; 64];
    let mut times: Vec<f64> = (0..RTT_PROBES)
        .map(|_| {
            let began = Instant::now();
            s.write_all(&buf).unwrap();
            s.read_exact(&mut buf).unwrap();
            began.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    drop(s);
    echo.join().unwrap();
    times.sort_by(f64::total_cmp);
    quantile(&times, 0.5)
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The summary of a run in turns: per row, the median and the range of the throughput, and
/// the medians of the p99 latency and of the servers' CPU per operation.
fn print_turns(rows: &[(String, usize, String, Vec<Row>)]) {
    println!();
    println!("over the turns, per row: median, and lowest to highest:");
    println!();
    println!("| system | clients | conns | ops/s median | ops/s lowest to highest | p99 ms median | server CPU µs/op median |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (system, clients, conns, runs) in rows {
        let ops: Vec<f64> = runs.iter().map(Row::ops_per_sec).collect();
        let lowest = ops.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = ops.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let cpu: Vec<f64> = runs.iter().filter_map(Row::server_us_per_op).collect();
        let cpu = if cpu.is_empty() {
            "?".to_string()
        } else {
            format!("{:.1}", median(cpu))
        };
        println!(
            "| {system} | {clients} | {conns} | {:.0} | {lowest:.0} to {highest:.0} | {:.2} | {cpu} |",
            median(ops),
            median(runs.iter().map(Row::p99_ms).collect()),
        );
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The same allocator as `kv-node`'s, cheaper than glibc's malloc for many small blocks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = Args::parse();
    let runtime = match args.client_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::try_from(n).unwrap_or(2))
            .enable_all()
            .build(),
    };
    runtime.expect("a tokio runtime").block_on(run(args));
}

async fn run(args: Args) {
    // The example lives in target/<profile>/examples/; kv-node beside target/<profile>/.
    let exe = std::env::current_exe().unwrap();
    let kv_node = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("kv-node"))
        .filter(|p| p.is_file());
    let dir = tempfile::tempdir().unwrap();
    println!("load average before: {}", load_average());
    let alone = fdatasync_ms(dir.path(), 1, false);
    let (sync_p50, sync_p99) = (quantile(&alone, 0.5), quantile(&alone, 0.99));
    let three = quantile(&fdatasync_ms(dir.path(), 3, false), 0.5);
    let over = fdatasync_ms(dir.path(), 1, true);
    let over_three = quantile(&fdatasync_ms(dir.path(), 3, true), 0.5);
    let rtt = loopback_rtt_ms();
    println!(
        "fdatasync (4 KiB appends): p50 {sync_p50:.3} ms, p99 {sync_p99:.3} ms; three at once \
         (one per replica, as in the cluster): p50 {three:.3} ms; loopback round trip between \
         two threads p50 {rtt:.3} ms"
    );
    println!(
        "fdatasync (4 KiB over zeros, as the log writes): p50 {:.3} ms, p99 {:.3} ms; three at \
         once: p50 {over_three:.3} ms",
        quantile(&over, 0.5),
        quantile(&over, 0.99)
    );
    // One write with one client costs at least the leader's and a follower's `fdatasync`, which
    // run at the same time but share the disk, plus the client's round trip.
    let bound = 2.0 * sync_p50 + rtt;
    println!("one-client bound: 2 x fdatasync p50 + round trip = {bound:.3} ms");
    println!(
        "closed-loop puts, {VALUE_BYTES}-byte values over {KEYS} keys, 3 replicas on \
         loopback, fsync on, {} thread(s) per server process and {} for the clients, \
         kv-node's log thread checking {} before it sleeps; {} s per row after {} s of warm-up",
        args.threads,
        args.client_threads,
        args.persist_spin_us.map_or_else(
            || format!(
                "{} µs (its default)",
                kv::server::PERSIST_SPIN_DEFAULT.as_micros()
            ),
            |us| format!("{us} µs")
        ),
        args.secs,
        WARM_UP.as_secs()
    );
    let etcd = find_on_path("etcd");
    // Every row of every turn, in the order of a turn: (system, clients, conns shown, runs).
    let mut rows: Vec<(String, usize, String, Vec<Row>)> = Vec::new();
    for turn in 1..=args.turns {
        println!();
        if args.turns > 1 {
            println!(
                "turn {turn} of {} (load average {}):",
                args.turns,
                load_average()
            );
            println!();
        }
        println!(
            "| system | clients | conns | ops/s | p50 ms | p99 ms | p99.9 ms | errors \
             | server CPU µs/op | client CPU µs/op | leader syncs/s | leader sync ms \
             | leader write ms |"
        );
        println!(
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: \
             | ---: |"
        );
        // A directory per turn: every row starts a fresh cluster, with no data (sessions
        // included) from the same row of an earlier turn.
        let turn_dir = dir.path().join(format!("turn-{turn}"));
        std::fs::create_dir_all(&turn_dir).unwrap();
        let mut at = 0;
        let mut keep = |system: String, clients: usize, conns: String, row: Row| {
            row.print(&system, clients, &conns);
            if rows.len() <= at {
                rows.push((system, clients, conns, Vec::new()));
            }
            rows[at].3.push(row);
            at += 1;
        };
        for system in &args.systems {
            for &clients in &args.clients {
                match system.as_str() {
                    "raft" | "paxos" => {
                        let Some(bin) = &kv_node else {
                            eprintln!(
                                "kv-node not found beside this example: \
                                 run `cargo build --release -p kv` first"
                            );
                            std::process::exit(2);
                        };
                        for &conns in args.conns.iter().filter(|&&n| n < clients) {
                            let shown = if conns == 0 {
                                clients.to_string()
                            } else {
                                conns.to_string()
                            };
                            let row = run_kv(
                                bin,
                                system,
                                &turn_dir,
                                clients,
                                conns,
                                args.secs,
                                Servers {
                                    threads: args.threads,
                                    persist_spin_us: args.persist_spin_us,
                                },
                            )
                            .await;
                            keep(format!("kv-node ({system})"), clients, shown, row);
                        }
                    }
                    "etcd" => match &etcd {
                        Some(bin) => {
                            let row =
                                run_etcd(bin, &turn_dir, clients, args.secs, args.threads).await;
                            keep("etcd".into(), clients, "pool".into(), row);
                        }
                        None => {
                            if clients == args.clients[0] && turn == 1 {
                                println!(
                                    "| etcd | - | - | skipped: no `etcd` on the PATH | | | | | | | | |"
                                );
                            }
                        }
                    },
                    other => {
                        eprintln!("unknown system `{other}`: expected raft, paxos or etcd");
                        std::process::exit(2);
                    }
                }
            }
        }
        // Every row's processes have stopped: its data is no longer needed.
        let _ = std::fs::remove_dir_all(&turn_dir);
    }
    if args.turns > 1 {
        print_turns(&rows);
    }
    println!();
    for (system, clients, _, runs) in &rows {
        if *clients != 1 || !system.starts_with("kv-node") {
            continue;
        }
        let p50 = median(runs.iter().map(Row::p50_ms).collect());
        let verdict = if p50 <= bound { "within" } else { "over" };
        let of = if runs.len() > 1 {
            " (median of the turns)"
        } else {
            ""
        };
        println!("{system}, one client: p50 {p50:.3} ms{of}, {verdict} the bound of {bound:.3} ms");
    }
    println!("load average after: {}", load_average());
}
