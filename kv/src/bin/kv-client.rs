//! The command-line client of the replicated key-value store, and its load generator.
//!
//! ```text
//! kv-client --nodes 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003 put x 1
//! kv-client --nodes ... get x
//! kv-client --nodes ... cas x 1 2          # set x to 2 if it is 1 (`-` for "absent")
//! kv-client --nodes ... load --clients 4 --ops 200 --history history.jsonl
//! ```
//!
//! `--nodes` lists the nodes' *client* addresses with their ids, so "not the leader, try node N"
//! answers can be followed. `load` records every operation in `common::check`'s JSON-lines
//! history format and checks it for linearizability at the end; its keys are prefixed with
//! `run<client id>/`, so every run starts from absent keys, as the checker assumes.

use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;

use kv::load::{Load, LoadOptions};
use kv::net::{parse_nodes, CallOutcome, KvClient};
use kv::KvOp;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "Client of the replicated key-value store")]
struct Args {
    /// The nodes' client addresses: `id=addr,id=addr`.
    #[arg(long)]
    nodes: String,
    /// Client id (names the exactly-once session: use a fresh one per run). Default: derived
    /// from the clock.
    #[arg(long)]
    client_id: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Reads a key.
    Get {
        /// The key.
        key: String,
    },
    /// Writes a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Compare-and-set (`-` stands for "absent").
    Cas {
        /// The key.
        key: String,
        /// The expected value.
        expected: String,
        /// The new value.
        new: String,
    },
    /// Runs the load generator and checks the history.
    Load {
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        clients: u64,
        /// Operations per client.
        #[arg(long, default_value_t = 100)]
        ops: u64,
        /// Seed of the operation mix.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write the JSON-lines history.
        #[arg(long)]
        history: Option<PathBuf>,
    },
}

fn absent(s: String) -> Option<String> {
    (s != "-").then_some(s)
}

async fn run(args: Args) -> Result<(), String> {
    let nodes = parse_nodes(&args.nodes)?;
    let client_id = args.client_id.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let single = |outcome: CallOutcome| match outcome {
        CallOutcome::Ok(out) => {
            println!("{out:?}");
            Ok(())
        }
        CallOutcome::Failed(why) => Err(format!("failed (not applied): {why}")),
        CallOutcome::Unknown(why) => Err(format!("outcome unknown (may be applied): {why}")),
    };
    let mut client = KvClient::new(client_id, nodes.clone());
    match args.command {
        Command::Get { key } => single(client.get(&key).await),
        Command::Put { key, value } => single(client.write(KvOp::Put { key, value }).await),
        Command::Cas { key, expected, new } => single(
            client
                .write(KvOp::Cas {
                    key,
                    expected: absent(expected),
                    new: absent(new),
                })
                .await,
        ),
        Command::Load {
            clients,
            ops,
            seed,
            history,
        } => {
            let load = Load::new();
            let options = LoadOptions {
                clients,
                ops_per_client: ops,
                seed,
                first_client_id: client_id,
                // Fresh keys: the checker assumes every key starts absent.
                key_prefix: format!("run{client_id}/"),
            };
            load.run(&nodes, &options).await;
            let h = load.recorder.history();
            if let Some(path) = history {
                let file =
                    std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                h.write_json_lines(BufWriter::new(file))
                    .map_err(|e| e.to_string())?;
            }
            let verdict = common::check::check_kv(&h).map_err(|e| e.to_string())?;
            println!(
                "{} operations, {} acknowledged; linearizable: {}",
                load.completed.load(std::sync::atomic::Ordering::SeqCst),
                load.acknowledged.load(std::sync::atomic::Ordering::SeqCst),
                verdict.is_linearizable()
            );
            if verdict.is_linearizable() {
                Ok(())
            } else {
                Err(format!("history is not linearizable: {verdict:?}"))
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kv-client: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv-client: {e}");
            ExitCode::FAILURE
        }
    }
}
