//! One replica of the replicated key-value store, as its own process.
//!
//! ```text
//! kv-node --protocol raft --id 1 --listen 127.0.0.1:7001 --client-listen 127.0.0.1:8001 \
//!     --peers 2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir /var/lib/kv/1 --key-file /etc/kv/key
//! ```
//!
//! The cluster key (16 bytes or more, shared by all replicas) comes from `--key-file` or the
//! environment variable `KV_CLUSTER_KEY`, never from the command line, where other users of the
//! machine could read it. Restarting a replica with the same `--data-dir` recovers it from its
//! write-ahead log. Prints `kv-node <id> ready` once it serves.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kv::net::parse_nodes;
use kv::server::{run, NodeOptions, Protocol};

/// Longest key file read, in bytes.
const KEY_FILE_BYTES_MAX: u64 = 4096;

#[derive(Parser, Debug)]
#[command(about = "One replica of the replicated key-value store")]
struct Args {
    /// The consensus protocol.
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// This replica's id.
    #[arg(long)]
    id: u64,
    /// Address for the other replicas.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Address for clients.
    #[arg(long)]
    client_listen: std::net::SocketAddr,
    /// The other replicas: `id=addr,id=addr`.
    #[arg(long)]
    peers: String,
    /// The write-ahead log's directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// File holding the cluster key (else the environment variable KV_CLUSTER_KEY).
    #[arg(long)]
    key_file: Option<PathBuf>,
}

fn cluster_key(args: &Args) -> Result<Vec<u8>, String> {
    match &args.key_file {
        Some(path) => {
            let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if meta.len() > KEY_FILE_BYTES_MAX {
                return Err(format!(
                    "{}: longer than {KEY_FILE_BYTES_MAX} bytes",
                    path.display()
                ));
            }
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(bytes.trim_ascii().to_vec())
        }
        None => std::env::var("KV_CLUSTER_KEY")
            .map(String::into_bytes)
            .map_err(|_| "no cluster key: pass --key-file or set KV_CLUSTER_KEY".to_string()),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let options = match (cluster_key(&args), parse_nodes(&args.peers)) {
        (Ok(cluster_key), Ok(peers)) => NodeOptions {
            protocol: args.protocol,
            id: args.id,
            listen: args.listen,
            client_listen: args.client_listen,
            peers,
            data_dir: args.data_dir.clone(),
            cluster_key,
        },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("kv-node: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
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
