//! One replica of the replicated key-value store, as its own process.
//!
//! ```text
//! kv-node --protocol raft --id 1 --listen 127.0.0.1:7001 --client-listen 127.0.0.1:8001 \
//!     --peers 2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir /var/lib/kv/1 --key-file /etc/kv/key
//! ```
//!
//! or, with the same settings in a file (see `kv::config` for every field, including the
//! protocols' timeouts and the client port's limits):
//!
//! ```text
//! kv-node --config /etc/kv/node-1.toml
//! ```
//!
//! Each setting can be a flag, an environment variable (`KV_ID`, `KV_LISTEN`, ...) or a field of
//! the file, in that precedence; addresses take host names or IP addresses. A missing or
//! invalid setting stops the node with one error naming it (exit code 2). The cluster key (16
//! bytes or more, shared by all replicas) comes from `--key-file` (or `key_file`) or the
//! environment variable `KV_CLUSTER_KEY`, never from the command line, where other users of
//! the machine could read it. Restarting a replica with the same `--data-dir` recovers it from its
//! write-ahead log. Prints `kv-node <id> ready` once it serves.
//!
//! When the write-ahead log fails the node stops but the process stays up, answering clients
//! "storage unavailable" and saying why on `/health`; after a full disk it starts again from its
//! directory by itself once there is room (the `[storage]` table of the file sets how it
//! probes), after a failed fsync it waits for a restart.
//!
//! A replica added at run time is first registered with `kv-client member add ID PEER CLIENT`,
//! then started with `--join` (members' client addresses) instead of `--peers`: it learns the
//! members and their addresses from the first member that answers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kv::config::{self, FileConfig};
use kv::server::{run, NodeOptions};

/// Longest key file read, in bytes.
const KEY_FILE_BYTES_MAX: u64 = 4096;

/// Every setting can also come from the environment (the variable named below) or from the
/// `--config` file; a flag wins over the environment, which wins over the file.
#[derive(Parser, Debug)]
#[command(about = "One replica of the replicated key-value store")]
struct Args {
    /// A TOML configuration file (see the `kv::config` documentation for every field).
    #[arg(long, env = "KV_CONFIG")]
    config: Option<PathBuf>,
    /// The consensus protocol: raft or paxos.
    #[arg(long, env = "KV_PROTOCOL")]
    protocol: Option<String>,
    /// This replica's id.
    #[arg(long, env = "KV_ID")]
    id: Option<u64>,
    /// Address for the other replicas: host:port (a host name or an IP address).
    #[arg(long, env = "KV_LISTEN")]
    listen: Option<String>,
    /// Address for clients: host:port.
    #[arg(long, env = "KV_CLIENT_LISTEN")]
    client_listen: Option<String>,
    /// The other replicas: `id=host:port,id=host:port`.
    #[arg(long, env = "KV_PEERS")]
    peers: Option<String>,
    /// Instead of --peers, for a replica added at run time with `kv-client member add`: client
    /// addresses of members to learn the cluster from, `host:port,host:port`.
    #[arg(long, env = "KV_JOIN", conflicts_with = "peers")]
    join: Option<String>,
    /// The write-ahead log's directory.
    #[arg(long, env = "KV_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// File holding the cluster key (else the environment variable KV_CLUSTER_KEY).
    #[arg(long, env = "KV_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`) and a health check (`GET /health`) here:
    /// host:port.
    #[arg(long, env = "KV_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Threads of the async runtime. Default: one per CPU. Replicas that share a machine run
    /// best with the CPUs split among them (the load bench runs three on two CPUs with one each).
    #[arg(long, env = "KV_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Mutual TLS on both ports (or the `[tls]` table of the file).
    #[command(flatten)]
    tls: config::TlsArgs,
}

fn cluster_key(key_file: Option<PathBuf>) -> Result<Vec<u8>, String> {
    match key_file {
        Some(path) => {
            let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if meta.len() > KEY_FILE_BYTES_MAX {
                return Err(format!(
                    "{}: longer than {KEY_FILE_BYTES_MAX} bytes",
                    path.display()
                ));
            }
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(bytes.trim_ascii().to_vec())
        }
        None => std::env::var("KV_CLUSTER_KEY")
            .map(String::into_bytes)
            .map_err(|_| "no cluster key: give --key-file (or key_file in the config file) or set KV_CLUSTER_KEY".to_string()),
    }
}

/// Merges the flags (and the environment) over the file into the node's options, and the
/// runtime's worker threads when set.
fn options(args: Args) -> Result<(NodeOptions, Option<usize>), String> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    let worker_threads = config::worker_threads(args.worker_threads.or(file.worker_threads))?;
    let protocol = config::protocol(&config::required(
        "protocol",
        "KV_PROTOCOL",
        args.protocol,
        file.protocol.clone(),
    )?)?;
    let id = config::required("id", "KV_ID", args.id, file.id)?;
    let listen = config::required("listen", "KV_LISTEN", args.listen, file.listen.clone())?;
    let client_listen = config::required(
        "client_listen",
        "KV_CLIENT_LISTEN",
        args.client_listen,
        file.client_listen.clone(),
    )?;
    let join: Vec<String> = match (&args.join, &file.join) {
        (Some(flag), _) => flag
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect(),
        (None, Some(list)) => list.clone(),
        (None, None) => Vec::new(),
    };
    let peers = match (args.peers, &file.peers) {
        (Some(flag), _) => config::parse_peers(&flag)?,
        (None, Some(table)) => config::resolve_peers(table)?,
        (None, None) if !join.is_empty() => Default::default(),
        (None, None) => Err(
            "`peers` is not set: give --peers or KV_PEERS, or set `peers` in the --config file \
             (or `join` for a replica added at run time)"
                .to_string(),
        )?,
    };
    let data_dir = config::required(
        "data_dir",
        "KV_DATA_DIR",
        args.data_dir,
        file.data_dir.clone(),
    )?;
    let tls = config::TlsSection::from(args.tls).or(&file.tls).load()?;
    let options = NodeOptions {
        tls,
        protocol,
        id,
        listen: config::resolve("listen", &listen)?,
        client_listen: config::resolve("client_listen", &client_listen)?,
        peers,
        join,
        data_dir,
        cluster_key: cluster_key(args.key_file.or(file.key_file.clone()))?,
        metrics_listen: args
            .metrics_listen
            .or(file.metrics_listen.clone())
            .map(|a| config::resolve("metrics_listen", &a))
            .transpose()?,
        tuning: file,
    };
    Ok((options, worker_threads))
}

/// The allocator: glibc's malloc took about an eighth of a busy leader's CPU time (the
/// malloc family together), mimalloc about a third of that (kv/README.md, "How fast").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let (options, worker_threads) = match options(Args::parse()) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("kv-node: {e}");
            return ExitCode::from(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        runtime.worker_threads(n);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kv-node: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv-node: {e}");
            ExitCode::FAILURE
        }
    }
}
