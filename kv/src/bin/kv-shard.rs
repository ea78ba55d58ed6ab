//! The sharded store (`kv::shard`) as real processes: `kv-shard node` hosts one process of it,
//! and `get`, `put`, `txn` and `join` are its client.
//!
//! ```text
//! export KV_CLUSTER_KEY='a cluster key of 16 bytes or more'
//! kv-shard node --id 1 --listen 127.0.0.1:7101 --client-listen 127.0.0.1:8101 \
//!     --peer 2=127.0.0.1:7102 --peer 3=127.0.0.1:7103 --peer 4=127.0.0.1:7104 \
//!     --data-dir /var/lib/kv-shard/1 --partitions 16 --founders 1,2,3 \
//!     --resolver --cluster 1=127.0.0.1:8101,2=127.0.0.1:8102,3=127.0.0.1:8103
//! kv-shard get KEY --cluster 1=127.0.0.1:8101,2=127.0.0.1:8102,3=127.0.0.1:8103
//! kv-shard put KEY VALUE --cluster ...
//! kv-shard txn --compare a=absent --compare b=1 --put a=1 --put b=2 --cluster ...
//! kv-shard join 4 --cluster ...
//! ```
//!
//! Every process of a store must be started with the same `--partitions`, `--replicas` and
//! `--founders`; the founders hold the shard map and, at first, every partition. A process
//! started later (not a founder) hosts nothing until `kv-shard join ID` puts it on the ring and
//! moves its partitions to it. Peers are fixed at start: list every process the store will
//! ever have, later ones included, in `--peer`. Restarting a process with the same
//! `--data-dir` recovers it from its write-ahead log and snapshot files.
//!
//! `node` prints one line `READY` once its ports listen and its groups run; logs go to
//! stderr (`RUST_LOG`, default `warn`). `--resolver` also runs a resolver in the process: it
//! finishes the transactions whose client vanished half-way (it needs `--cluster`, the client
//! ports of the processes). The cluster key (16 bytes or more, the same for every process)
//! comes from `--key-file` or the environment variable `KV_CLUSTER_KEY`.
//!
//! `txn` runs one transaction across partitions: every `--compare` must hold (`KEY=absent`
//! for an absent key), then every `--put` is applied, all or none. It prints `committed` or
//! `aborted: <why>` and exits 0 either way; it exits non-zero when it could not finish (no
//! answers) or was given bad arguments.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use common::codec::Bincode;
use common::driver::{self, DriverConfig};
use common::transport::tcp::{TcpConfig, TcpTransport, CLUSTER_KEY_BYTES_MIN};
use common::wal::{Wal, WalConfig};
use common::NodeId;
use kv::shard::net::{serve, ShardClient};
use kv::shard::{
    Compare, Layout, MapCommand, Mover, Resolver, Router, ShardConfig, ShardHost, TxDriver,
    TxRefusal, TxResult, TxWrite,
};

/// The cluster's name in the transport's handshake.
const CLUSTER: &str = "kv-shard";
/// Longest key file read, in bytes.
const KEY_FILE_BYTES_MAX: u64 = 4096;
/// Election timeouts of every group, in driver ticks (10 ms): longer than Raft's defaults, since
/// one process runs many groups and a loaded machine delays its ticks.
const ELECTION_TICKS_MIN: u64 = 30;
/// See [`ELECTION_TICKS_MIN`].
const ELECTION_TICKS_MAX: u64 = 60;
/// Heartbeat interval of every group, in ticks.
const HEARTBEAT_TICKS: u64 = 5;
/// Default of `--snapshot-entries`.
const SNAPSHOT_ENTRIES_DEFAULT: u64 = 1_000;
/// The process compacts its shared log once it holds this many records at least.
const COMPACT_RECORDS_MIN: u64 = 4_096;
/// How long a client command (`get`, `put`, `txn`) keeps trying before it gives up.
const OP_DEADLINE: Duration = Duration::from_secs(30);
/// How long `join` keeps moving partitions before it gives up (run it again to resume).
const JOIN_DEADLINE: Duration = Duration::from_secs(600);
/// Default of `--resolve-after-ms`.
const RESOLVE_AFTER_MS_DEFAULT: u64 = 3_000;

#[derive(Parser, Debug)]
#[command(about = "A sharded key-value store: one process of it, or its client")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Hosts one process of the store.
    Node(NodeArgs),
    /// Reads a key (prints its value, or `(absent)`).
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Writes a key, once (a one-phase transaction of its own, so a resend is not applied again).
    Put {
        /// The key.
        key: String,
        /// Its new value.
        value: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Runs one transaction across partitions: the compares must hold, then the puts are applied,
    /// all or none. Prints `committed` or `aborted: <why>`.
    Txn {
        /// `KEY=VALUE`, or `KEY=absent`: the key must hold that value (be absent). Repeatable.
        #[arg(long = "compare", value_name = "KEY=VALUE")]
        compares: Vec<String>,
        /// `KEY=VALUE`: set the key. Repeatable.
        #[arg(long = "put", value_name = "KEY=VALUE")]
        puts: Vec<String>,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Puts process ID on the ring and moves its partitions to it (start it first).
    Join {
        /// The process.
        id: NodeId,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

#[derive(clap::Args, Debug)]
struct ClusterArg {
    /// The processes' client addresses: `ID=HOST:PORT,ID=HOST:PORT,...`.
    #[arg(long, env = "KV_SHARD_CLUSTER")]
    cluster: String,
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// This process's id (1 or more).
    #[arg(long)]
    id: NodeId,
    /// Another process: `ID=HOST:PORT` (its --listen). Repeatable, or comma-separated.
    #[arg(long = "peer", value_name = "ID=ADDR", value_delimiter = ',')]
    peers: Vec<String>,
    /// Address for the other processes: HOST:PORT.
    #[arg(long)]
    listen: String,
    /// Address for clients: HOST:PORT.
    #[arg(long)]
    client_listen: String,
    /// The write-ahead log and snapshot directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// Partitions of the key space (the same for every process).
    #[arg(long)]
    partitions: u32,
    /// Replicas of each partition (the same for every process).
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    /// The founding processes, comma-separated (the same for every process).
    #[arg(long, value_delimiter = ',', required = true)]
    founders: Vec<NodeId>,
    /// Also run a resolver, finishing transactions whose client vanished (needs --cluster).
    #[arg(long, requires = "cluster")]
    resolver: bool,
    /// The processes' client addresses, for the resolver: `ID=HOST:PORT,...`.
    #[arg(long)]
    cluster: Option<String>,
    /// The resolver finishes a transaction in doubt this long, in milliseconds.
    #[arg(long, default_value_t = RESOLVE_AFTER_MS_DEFAULT)]
    resolve_after_ms: u64,
    /// File holding the cluster key (else the environment variable KV_CLUSTER_KEY).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// A group snapshots its state (and its log can be compacted) after this many entries.
    #[arg(long, default_value_t = SNAPSHOT_ENTRIES_DEFAULT)]
    snapshot_entries: u64,
    /// Threads of the async runtime (at least 1). Default: one per CPU; fewer when processes
    /// share a machine's CPUs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=kv::config::WORKER_THREADS_MAX as u64))]
    worker_threads: Option<u64>,
    /// How long, in microseconds, the log's thread keeps checking for the next batch of writes
    /// after a sync before it sleeps, yielding the CPU between checks (as `kv-node`'s
    /// `[driver] persist_spin_us`; 0: sleep at once).
    #[arg(
        long,
        default_value_t = kv::server::PERSIST_SPIN_DEFAULT.as_micros() as u64,
        value_parser = clap::value_parser!(u64)
            .range(0..=driver::PERSIST_SPIN_MAX.as_micros() as u64)
    )]
    persist_spin_us: u64,
}

/// Why a command failed: bad input (exit 2) or a failure while running (exit 1).
enum Failure {
    Usage(String),
    Run(String),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Node(NodeArgs {
        worker_threads: Some(n),
        ..
    }) = &args.command
    {
        // In range: the parser checked it.
        runtime.worker_threads(usize::try_from(*n).unwrap_or(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kv-shard: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            Command::Node(node) => run_node(node).await,
            other => run_client(other).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("kv-shard: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("kv-shard: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cluster_key(key_file: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    let key = match key_file {
        Some(path) => {
            let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if meta.len() > KEY_FILE_BYTES_MAX {
                return Err(format!(
                    "{}: longer than {KEY_FILE_BYTES_MAX} bytes",
                    path.display()
                ));
            }
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            bytes.trim_ascii().to_vec()
        }
        None => std::env::var("KV_CLUSTER_KEY")
            .map(String::into_bytes)
            .map_err(|_| "no cluster key: give --key-file or set KV_CLUSTER_KEY".to_string())?,
    };
    if key.len() < CLUSTER_KEY_BYTES_MIN {
        return Err(format!(
            "the cluster key is {} bytes; it must be {CLUSTER_KEY_BYTES_MIN} or more",
            key.len()
        ));
    }
    Ok(key)
}

/// `ID=ADDR,...` as a map, with the flag's name in any error.
fn parse_addrs(flag: &str, text: &str) -> Result<BTreeMap<NodeId, SocketAddr>, Failure> {
    let addrs = kv::net::parse_nodes(text).map_err(|e| Failure::Usage(format!("{flag}: {e}")))?;
    if addrs.is_empty() {
        return Err(Failure::Usage(format!("{flag}: no process given")));
    }
    if addrs.contains_key(&0) {
        return Err(Failure::Usage(format!("{flag}: process ids start at 1")));
    }
    Ok(addrs)
}

/// The Raft settings every group of the process starts from.
fn raft_template(id: NodeId, snapshot_entries: u64) -> raft::Config {
    let mut c = raft::Config::new(id, vec![id]);
    c.election_timeout_ticks_min = ELECTION_TICKS_MIN;
    c.election_timeout_ticks_max = ELECTION_TICKS_MAX;
    c.heartbeat_interval_ticks = HEARTBEAT_TICKS;
    // The leaders of a process heartbeat on the same ticks: one message per peer.
    c.heartbeat_aligned = true;
    c.snapshot_log_entries_max = snapshot_entries;
    c
}

async fn run_node(a: NodeArgs) -> Result<(), Failure> {
    let usage = Failure::Usage;
    if a.id == 0 {
        return Err(usage("--id: process ids start at 1".into()));
    }
    let peers = if a.peers.is_empty() {
        BTreeMap::new()
    } else {
        parse_addrs("--peer", &a.peers.join(","))?
    };
    let listen = kv::config::resolve("--listen", &a.listen).map_err(usage)?;
    let client_listen = kv::config::resolve("--client-listen", &a.client_listen).map_err(usage)?;
    let founders: BTreeSet<NodeId> = a.founders.iter().copied().collect();
    if founders.len() != a.founders.len() {
        return Err(usage("--founders: a process named twice".into()));
    }
    if let Some(missing) = founders
        .iter()
        .find(|f| **f != a.id && !peers.contains_key(f))
    {
        return Err(usage(format!(
            "--founders: founder {missing} has no --peer address"
        )));
    }
    let cluster = a
        .cluster
        .as_deref()
        .map(|c| parse_addrs("--cluster", c))
        .transpose()?;
    let layout = Layout::new(a.partitions, a.replicas)
        .map_err(|e| usage(format!("--partitions/--replicas: {e}")))?;
    let key = cluster_key(a.key_file.as_ref()).map_err(usage)?;
    let config = ShardConfig {
        id: a.id,
        layout,
        map_group: a.founders.clone(),
        initial_processes: founders,
        raft: raft_template(a.id, a.snapshot_entries),
    };
    let mut groups = config
        .groups_config()
        .map_err(|e| usage(format!("--founders/--partitions/--replicas: {e}")))?;
    groups.compact_records_min = COMPACT_RECORDS_MIN;

    // The client port first: a bad address fails before anything is written.
    let client_listener = tokio::net::TcpListener::bind(client_listen)
        .await
        .map_err(|e| Failure::Run(format!("--client-listen {client_listen}: {e}")))?;
    let tcp = TcpConfig::new(a.id, CLUSTER, key, listen, peers);
    let transport = TcpTransport::start(tcp)
        .await
        .map_err(|e| Failure::Run(format!("--listen {listen}: {e}")))?;
    let wal = Wal::open(WalConfig::new(&a.data_dir))
        .map_err(|e| Failure::Run(format!("--data-dir {}: {e}", a.data_dir.display())))?;
    let handle = driver::spawn_recovered::<ShardHost, _, _, _>(
        groups,
        transport,
        wal,
        Bincode,
        DriverConfig {
            persist_spin: Duration::from_micros(a.persist_spin_us),
            ..DriverConfig::default()
        },
    )
    .await
    .map_err(|e| Failure::Run(format!("starting the node: {e}")))?;
    let server = tokio::spawn(serve(client_listener, handle.clone()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let resolver = match (a.resolver, cluster) {
        (true, Some(cluster)) => {
            let client = ShardClient::new(cluster);
            let resolver = Resolver::new(client.nodes(), a.resolve_after_ms);
            Some(tokio::spawn(async move {
                client.run_resolver(resolver, stopped).await
            }))
        }
        _ => None,
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "READY");
        let _ = out.flush();
    }
    tracing::info!(id = a.id, %listen, %client_listen, "serving");
    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        end = handle.stopped() => Err(Failure::Run(match end {
            Ok(()) => "the node stopped".to_string(),
            Err(e) => format!("the node stopped: {e}"),
        })),
    };
    let _ = stop.send(true);
    if let Some(resolver) = resolver {
        if let Ok(stats) = resolver.await {
            tracing::info!(?stats, "resolver stopped");
        }
    }
    server.abort();
    let _ = handle.shutdown().await;
    outcome
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `KEY=VALUE` split, with the flag's name in any error.
fn key_value<'a>(flag: &str, text: &'a str) -> Result<(&'a str, &'a str), Failure> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key, value)),
        _ => Err(Failure::Usage(format!(
            "{flag} {text:?}: expected KEY=VALUE"
        ))),
    }
}

/// Runs `work` within `deadline`, or fails saying what did not finish.
async fn within<T>(
    deadline: Duration,
    what: &str,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| Failure::Run(format!("{what}: no answer within {} s", deadline.as_secs())))
}

async fn run_client(command: Command) -> Result<(), Failure> {
    match command {
        Command::Node(_) => Ok(()),
        Command::Get { key, cluster } => {
            let client = ShardClient::new(parse_addrs("--cluster", &cluster.cluster)?);
            let mut router = Router::new(client.nodes());
            let value = within(OP_DEADLINE, "get", client.get(&mut router, &key)).await?;
            println!("{}", value.as_deref().unwrap_or("(absent)"));
            Ok(())
        }
        Command::Put {
            key,
            value,
            cluster,
        } => {
            let client = ShardClient::new(parse_addrs("--cluster", &cluster.cluster)?);
            let mut router = Router::new(client.nodes());
            within(OP_DEADLINE, "put", client.put(&mut router, &key, &value)).await?;
            println!("ok");
            Ok(())
        }
        Command::Txn {
            compares,
            puts,
            cluster,
        } => {
            let mut compare = Vec::new();
            for c in &compares {
                let (key, value) = key_value("--compare", c)?;
                compare.push(Compare {
                    key: key.to_string(),
                    value: (value != "absent").then(|| value.to_string()),
                });
            }
            let mut writes = Vec::new();
            for p in &puts {
                let (key, value) = key_value("--put", p)?;
                writes.push(TxWrite {
                    key: key.to_string(),
                    value: value.to_string(),
                });
            }
            if compare.is_empty() && writes.is_empty() {
                return Err(Failure::Usage(
                    "txn: give at least one --compare or --put".into(),
                ));
            }
            let client = ShardClient::new(parse_addrs("--cluster", &cluster.cluster)?);
            let mut driver = TxDriver::new(client.nodes());
            driver.begin(client.fresh_tx(), compare, writes);
            // Cut short, the transaction is left to the cluster's resolvers.
            match within(OP_DEADLINE, "txn", client.run_tx(&mut driver)).await? {
                TxResult::Committed => println!("committed"),
                TxResult::Aborted(Some(TxRefusal::CompareFailed { key, expected })) => {
                    match expected {
                        Some(value) => println!("aborted: {key} does not hold {value}"),
                        None => println!("aborted: {key} is not absent"),
                    }
                }
                TxResult::Aborted(Some(why)) => println!("aborted: {why}"),
                TxResult::Aborted(None) => {
                    println!("aborted: the coordinator group decided abort (no part refused)")
                }
            }
            Ok(())
        }
        Command::Join { id, cluster } => {
            if id == 0 {
                return Err(Failure::Usage("join: process ids start at 1".into()));
            }
            let client = ShardClient::new(parse_addrs("--cluster", &cluster.cluster)?);
            let mut mover = Mover::new(client.nodes());
            mover.change_ring(MapCommand::AddProcess(id));
            within(JOIN_DEADLINE, "join", client.run_mover(&mut mover)).await?;
            if let Some((change, why)) = mover.refused().first() {
                return Err(Failure::Run(format!("the map refused {change:?}: {why}")));
            }
            println!(
                "process {id} is on the ring; {} partitions moved",
                mover.moved().len()
            );
            Ok(())
        }
    }
}
