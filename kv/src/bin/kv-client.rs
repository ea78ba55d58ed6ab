//! The command-line client of the replicated key-value store, and its load generator.
//!
//! ```text
//! kv-client --nodes 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003 put x 1
//! kv-client --nodes ... get x
//! kv-client --nodes ... cas x 1 2          # set x to 2 if it is 1 (`-` for "absent")
//! kv-client --nodes ... delete x
//! kv-client --nodes ... scan user/ --limit 10
//! kv-client --nodes ... status             # every node's view: leader, term, indexes
//! kv-client --nodes ... member list        # members, roles and addresses
//! kv-client --nodes ... member add 4 node-4:7004 node-4:8004   # then start it with --join
//! kv-client --nodes ... member promote 4   # Raft: the learner becomes a voter
//! kv-client --nodes ... member remove 4    # for good: the id is never used again
//! kv-client --nodes ... transfer-leader 2  # Raft
//! kv-client --nodes ... --output json get x
//! kv-client --nodes ... load --clients 4 --ops 200 --history history.jsonl
//! ```
//!
//! Answers print as plain text by default (`get`: the value, or `(absent)`; `scan`: one
//! `key<TAB>value` line per entry) and as one JSON object with `--output json`, for scripts.
//!
//! `--nodes` lists the nodes' *client* addresses with their ids, so "not the leader, try node N"
//! answers can be followed. `load` records every operation in `common::check`'s JSON-lines
//! history format and checks it for linearizability at the end; its keys are prefixed with
//! `run<client id>/`, so every run starts from absent keys, as the checker assumes.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use common::transport::tls::TlsConfig;
use common::NodeId;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kv::load::{Load, LoadOptions};
use kv::net::{parse_nodes, CallOutcome, KvClient, MembersInfo, NodeStatus};
use kv::{KvOp, KvOutput};

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
    /// How answers are printed.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Mutual TLS, when the nodes' client ports have it.
    #[command(flatten)]
    tls: kv::config::TlsArgs,
    #[command(subcommand)]
    command: Command,
}

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Plain text for people.
    Text,
    /// One JSON object per answer, for scripts.
    Json,
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
    /// Removes a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Lists the keys starting with a prefix, in order (a linearizable read).
    Scan {
        /// The prefix (empty: every key).
        prefix: String,
        /// Most entries to list (the store caps it at kv::SCAN_LIMIT_MAX).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Every node's view: whether it leads, the leader it knows, term and indexes.
    Status,
    /// Compare-and-set (`-` stands for "absent").
    Cas {
        /// The key.
        key: String,
        /// The expected value.
        expected: String,
        /// The new value.
        new: String,
    },
    /// Lists or changes the cluster's members.
    Member {
        #[command(subcommand)]
        action: MemberAction,
    },
    /// Hands leadership to a voter (Raft).
    TransferLeader {
        /// The voter to lead.
        id: u64,
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
        /// Skip the linearizability check (for throughput runs: the check's cost grows quickly
        /// with the number of concurrent clients).
        #[arg(long)]
        no_check: bool,
        /// Connections per node the clients share (each carries several clients' requests at
        /// once); 0 gives every client a connection of its own.
        #[arg(long, default_value_t = 0)]
        conns: usize,
        /// Stop, and fail, when no operation has been acknowledged for this many seconds (a
        /// cluster that is down or unreachable), instead of waiting out every operation's
        /// deadline.
        #[arg(long, default_value_t = STALL_SECS_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
        stall_secs: u64,
    },
}

/// Default of `load --stall-secs`: three times a call's deadline, long enough to ride out
/// leader elections and restarts.
const STALL_SECS_DEFAULT: u64 = 3 * kv::net::CALL_DEADLINE.as_secs();

#[derive(Subcommand, Debug)]
enum MemberAction {
    /// The members, their roles and addresses.
    List,
    /// Adds a replica: Raft as a learner (promote it once it caught up), Multi-Paxos as a voting
    /// member. Then start it with `kv-node --join`.
    Add {
        /// The new replica's id (never used before in this cluster).
        id: u64,
        /// Where the other replicas reach it: host:port.
        peer_addr: String,
        /// Where clients reach it: host:port.
        client_addr: String,
    },
    /// Makes a Raft learner a voter.
    Promote {
        /// The learner.
        id: u64,
    },
    /// Removes a replica for good (its id is never used again); stop its process afterwards.
    Remove {
        /// The replica.
        id: u64,
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
    let output = args.output;
    let single = |outcome: CallOutcome| match outcome {
        CallOutcome::Ok(out) => {
            println!("{}", render(&out, output));
            Ok(())
        }
        CallOutcome::Failed(why) => Err(format!("failed (not applied): {why}")),
        CallOutcome::Unknown(why) => Err(format!("outcome unknown (may be applied): {why}")),
    };
    let tls = kv::config::TlsSection::from(args.tls).load()?;
    let mut client = KvClient::new(client_id, nodes.clone());
    if let Some(tls) = &tls {
        client = client.with_tls(tls.clone());
    }
    match args.command {
        Command::Get { key } => single(client.get(&key).await),
        Command::Put { key, value } => single(client.write(KvOp::Put { key, value }).await),
        Command::Delete { key } => single(client.write(KvOp::Delete { key }).await),
        Command::Scan { prefix, limit } => single(client.scan(&prefix, limit).await),
        Command::Status => status(&mut client, &nodes, output).await,
        Command::Cas { key, expected, new } => single(
            client
                .write(KvOp::Cas {
                    key,
                    expected: absent(expected),
                    new: absent(new),
                })
                .await,
        ),
        Command::Member { action } => members(member(&mut client, action).await, output),
        Command::TransferLeader { id } => members(client.transfer_leader(id).await, output),
        Command::Load {
            clients,
            ops,
            seed,
            history,
            no_check,
            conns,
            stall_secs,
        } => {
            let options = LoadOptions {
                clients,
                ops_per_client: ops,
                seed,
                first_client_id: client_id,
                // Fresh keys: the checker assumes every key starts absent.
                key_prefix: format!("run{client_id}/"),
            };
            let run = LoadRun {
                tls,
                conns,
                history,
                no_check,
                stall: Duration::from_secs(stall_secs),
            };
            run_load(&nodes, &options, run).await
        }
    }
}

/// `kv-client status`: asks every node of `nodes` for its view and prints them; fails only if
/// no node answered.
async fn status(
    client: &mut KvClient,
    nodes: &BTreeMap<NodeId, SocketAddr>,
    output: Output,
) -> Result<(), String> {
    let mut rows = Vec::new();
    for &id in nodes.keys() {
        rows.push((id, client.node_status(id).await));
    }
    print_status(&rows, output);
    if rows.iter().any(|(_, s)| s.is_some()) {
        Ok(())
    } else {
        Err("no node answered".into())
    }
}

/// `kv-client member …`: runs the membership action; the answer is the members afterwards.
async fn member(client: &mut KvClient, action: MemberAction) -> CallOutcome<MembersInfo> {
    match action {
        MemberAction::List => client.members().await,
        MemberAction::Add {
            id,
            peer_addr,
            client_addr,
        } => client.add_member(id, &peer_addr, &client_addr).await,
        MemberAction::Promote { id } => client.promote_member(id).await,
        MemberAction::Remove { id } => client.remove_member(id).await,
    }
}

/// How `kv-client load` runs, besides the load's own options.
struct LoadRun {
    tls: Option<TlsConfig>,
    /// Shared connections per node; 0 for one per client.
    conns: usize,
    /// Where to write the history, if anywhere.
    history: Option<PathBuf>,
    no_check: bool,
    /// Stop and fail after this long without an acknowledged operation.
    stall: Duration,
}

/// `kv-client load`: runs the recorded load with `options`, writes its history if asked,
/// prints throughput and latency, and checks the history unless told not to. Fails when no
/// operation was acknowledged for `run.stall` (the clients still waiting are dropped; their
/// operations stay open in the history), or when none was acknowledged at all.
async fn run_load(
    nodes: &BTreeMap<NodeId, SocketAddr>,
    options: &LoadOptions,
    run: LoadRun,
) -> Result<(), String> {
    let LoadRun {
        tls,
        conns,
        history,
        no_check,
        stall,
    } = run;
    let mut load = Load::new();
    if let Some(tls) = &tls {
        load = load.with_tls(tls.clone());
    }
    if conns > 0 {
        load = load.with_shared_connections(conns);
    }
    let total = options.clients.saturating_mul(options.ops_per_client);
    let progress = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} operations ({per_sec}, {eta} left)")
    {
        progress.set_style(style);
    }
    let started = Instant::now();
    {
        let load = load.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                progress.set_position(load.completed.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let stalled = tokio::select! {
        () = load.run(nodes, options) => false,
        () = load.stalled_for(stall) => true,
    };
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    let h = load.recorder.history();
    if let Some(path) = history {
        let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        h.write_json_lines(BufWriter::new(file))
            .map_err(|e| e.to_string())?;
    }
    print_summary(&load, elapsed);
    if stalled {
        return Err(format!(
            "no operation acknowledged for {} s: stopped (is the cluster up and reachable?)",
            stall.as_secs()
        ));
    }
    if load.acknowledged.load(Ordering::SeqCst) == 0 && total > 0 {
        return Err("no operation was acknowledged".into());
    }
    if no_check {
        println!("linearizable: not checked");
        return Ok(());
    }
    let verdict = common::check::check_kv(&h).map_err(|e| e.to_string())?;
    println!("linearizable: {}", verdict.is_linearizable());
    if verdict.is_linearizable() {
        Ok(())
    } else {
        Err(format!("history is not linearizable: {verdict:?}"))
    }
}

/// Prints what a load run did: operations, acknowledged ones, throughput and latency.
fn print_summary(load: &Load, elapsed: Duration) {
    let acknowledged = load.acknowledged.load(Ordering::SeqCst);
    println!(
        "{} operations, {} acknowledged",
        load.completed.load(Ordering::SeqCst),
        acknowledged,
    );
    if let Ok(lat) = load.latency_us.lock() {
        let ms = |q: f64| lat.value_at_quantile(q) as f64 / 1e3;
        println!(
            "{:.0} acknowledged ops/s over {:.2} s; latency ms: p50 {:.2}, p99 {:.2}, \
             p99.9 {:.2}, max {:.2}",
            acknowledged as f64 / elapsed.as_secs_f64().max(1e-9),
            elapsed.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            lat.max() as f64 / 1e3
        );
    }
}

/// Prints a membership answer.
fn members(outcome: CallOutcome<MembersInfo>, output: Output) -> Result<(), String> {
    let info = match outcome {
        CallOutcome::Ok(info) => info,
        CallOutcome::Failed(why) => return Err(format!("failed (not applied): {why}")),
        CallOutcome::Unknown(why) => {
            return Err(format!("outcome unknown (may be applied): {why}"))
        }
    };
    if output == Output::Json {
        println!("{}", serde_json::json!(info));
        return Ok(());
    }
    println!("node  role      peer                   client");
    for node in &info.nodes {
        let role = if info.leader == Some(node.id) {
            "leader"
        } else if info.voters.contains(&node.id) {
            "voter"
        } else if info.learners.contains(&node.id) {
            "learner"
        } else {
            "-"
        };
        println!(
            "{:<4}  {:<8}  {:<21}  {}",
            node.id,
            role,
            node.peer,
            node.client.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// An answer as text or JSON.
fn render(out: &KvOutput, output: Output) -> String {
    if output == Output::Json {
        let value = match out {
            KvOutput::Value(v) => serde_json::json!({ "value": v }),
            KvOutput::Cas { swapped, current } => {
                serde_json::json!({ "swapped": swapped, "current": current })
            }
            KvOutput::Stale => serde_json::json!({ "error": "stale" }),
            KvOutput::TooLarge => serde_json::json!({ "error": "too large" }),
            KvOutput::Refused(why) => serde_json::json!({ "error": why }),
            KvOutput::Entries { entries, more } => serde_json::json!({
                "entries": entries
                    .iter()
                    .map(|(k, v)| serde_json::json!({ "key": k, "value": v }))
                    .collect::<Vec<_>>(),
                "more": more,
            }),
        };
        return value.to_string();
    }
    let absent = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
    match out {
        KvOutput::Value(v) => absent(v),
        KvOutput::Cas {
            swapped: true,
            current,
        } => format!("swapped; now {}", absent(current)),
        KvOutput::Cas {
            swapped: false,
            current,
        } => {
            format!("not swapped; the value is {}", absent(current))
        }
        KvOutput::Stale => "stale: this request was superseded".into(),
        KvOutput::TooLarge => "refused: a key or value is too large".into(),
        KvOutput::Refused(why) => format!("refused: {why}"),
        KvOutput::Entries { entries, more } => {
            let mut text: Vec<String> = entries.iter().map(|(k, v)| format!("{k}\t{v}")).collect();
            if *more {
                text.push("(more keys match; raise --limit)".into());
            }
            text.join("\n")
        }
    }
}

fn print_status(rows: &[(u64, Option<NodeStatus>)], output: Output) {
    if output == Output::Json {
        let nodes: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, s)| match s {
                Some(s) => serde_json::json!({
                    "id": s.id, "is_leader": s.is_leader, "leader": s.leader, "term": s.term,
                    "commit_index": s.commit_index, "applied_index": s.applied_index,
                }),
                None => serde_json::json!({ "id": id, "error": "no answer" }),
            })
            .collect();
        println!("{}", serde_json::json!({ "nodes": nodes }));
        return;
    }
    println!("node  role      leader  term  commit  applied");
    for (id, s) in rows {
        match s {
            Some(s) => println!(
                "{:<4}  {:<8}  {:<6}  {:<4}  {:<6}  {}",
                s.id,
                if s.is_leader { "leader" } else { "follower" },
                s.leader.map_or("-".into(), |l| l.to_string()),
                s.term,
                s.commit_index,
                s.applied_index
            ),
            None => println!("{id:<4}  (no answer)"),
        }
    }
}

/// The same allocator as `kv-node`'s, cheaper than glibc's malloc for many small blocks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
