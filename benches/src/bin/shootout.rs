//! The head-to-head shootout: every registered protocol on the same driver, transport, codec and
//! storage, under the same closed-loop workload, in one table.
//!
//! ```text
//! cargo run --release -p benches --bin shootout              # the default run, about 20 s
//! cargo run --release -p benches --bin shootout -- --quick   # a few seconds, a smoke run
//! cargo run --release -p benches --bin shootout -- --help
//! ```
//!
//! Columns: `ops/s` is acknowledged operations per second over the measured period; `p50`,
//! `p99` and `max` are the latencies of acknowledged operations as seen by a client (closed
//! loop: each client waits for its answer before sending the next operation); `msgs/op` and
//! `bytes/op` are the frames (and their bytes) that all nodes handed to the transport, divided
//! by the acknowledged operations.

use std::process::ExitCode;
use std::time::Duration;

use benches::{render_json, render_markdown, render_table, Plan, TransportKind, Workload};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs the workspace's protocols head-to-head and prints a table.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Protocols to run (comma-separated); all registered ones when absent.
    #[arg(long, value_delimiter = ',')]
    protocols: Vec<String>,
    /// Transports to run over (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [TransportKind::Memory, TransportKind::Tcp])]
    transport: Vec<TransportKind>,
    /// Cluster sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [3])]
    nodes: Vec<usize>,
    /// Concurrency levels: clients, each with one operation in flight (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 32])]
    concurrency: Vec<usize>,
    /// Measured seconds per measurement.
    #[arg(long, default_value_t = 4.0)]
    duration_secs: f64,
    /// Warm-up seconds per measurement (not measured).
    #[arg(long, default_value_t = 0.5)]
    warmup_secs: f64,
    /// Stop each measurement after this many operations.
    #[arg(long)]
    ops: Option<u64>,
    /// Persist to a write-ahead log with fsync (in a temporary directory) instead of memory.
    #[arg(long)]
    durable: bool,
    /// A tiny run (a few hundred operations per measurement) to check that everything works.
    #[arg(long)]
    quick: bool,
    /// Seed of the protocols' and the network's randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the table as Markdown instead of aligned text.
    #[arg(long)]
    markdown: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Operations per measurement in `--quick` mode.
const QUICK_OPS: u64 = 500;

fn seconds(name: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|e| format!("--{name} {secs}: {e}"))
}

fn plan(args: &Args) -> Result<Plan, String> {
    let mut workload = Workload {
        concurrency: 1,
        warmup: seconds("warmup-secs", args.warmup_secs)?,
        duration: seconds("duration-secs", args.duration_secs)?,
        ops_max: args.ops,
    };
    if args.quick {
        workload = Workload {
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            ops_max: Some(args.ops.unwrap_or(QUICK_OPS)),
            ..workload
        };
    }
    Ok(Plan {
        protocols: args.protocols.clone(),
        transports: args.transport.clone(),
        cluster_sizes: args.nodes.clone(),
        concurrency: args.concurrency.clone(),
        workload,
        durable: args.durable,
        seed: args.seed,
    })
}

fn main() -> ExitCode {
    tracing_subscriber_init();
    let args = Args::parse();
    let plan = match plan(&args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("shootout: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("shootout: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg}: {pos} ops ({per_sec}) [{elapsed}]")
    {
        progress.set_style(style);
    }
    progress.enable_steady_tick(Duration::from_millis(100));
    let result = runtime.block_on(plan.run(&progress));
    progress.finish_and_clear();
    match result {
        Ok(rows) => {
            println!(
                "{} for {}, closed loop{}",
                if plan.durable {
                    "WAL with fsync"
                } else {
                    "in-memory storage"
                },
                match plan.workload.ops_max {
                    Some(ops) if plan.workload.duration.is_zero() => format!("{ops} operations"),
                    _ => format!("{:.1} s", plan.workload.duration.as_secs_f64()),
                },
                if plan.workload.warmup.is_zero() {
                    String::new()
                } else {
                    format!(
                        " after {:.1} s of warm-up",
                        plan.workload.warmup.as_secs_f64()
                    )
                },
            );
            if args.markdown {
                print!("{}", render_markdown(&rows));
            } else {
                print!("{}", render_table(&rows));
            }
            if let Some(path) = &args.json {
                let written = render_json(&rows)
                    .map_err(|e| e.to_string())
                    .and_then(|json| std::fs::write(path, json).map_err(|e| e.to_string()));
                if let Err(e) = written {
                    eprintln!("shootout: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shootout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr at `warn` unless `RUST_LOG` says otherwise. The TCP transport's
/// disconnection warnings are expected while a cluster shuts down between measurements, so they
/// are shown only from `error` up by default.
fn tracing_subscriber_init() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,common::transport::tcp=error")
            }),
        )
        .try_init();
}
