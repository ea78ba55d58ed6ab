//! The head-to-head shootout: every registered protocol on the same driver, transport, codec and
//! storage, under the same closed-loop workload, in one table.
//!
//! ```text
//! cargo run --release -p benches --bin shootout              # the default run, 1 to 2 min on 2 cores
//! cargo run --release -p benches --bin shootout -- --quick   # a few seconds, a smoke run
//! cargo run --release -p benches --bin shootout -- --help
//! cargo run --release -p benches --bin shootout -- --faults  # plus the crash and slow-link scenarios
//! cargo run --release -p benches --bin shootout -- --rtt-ms 1,20,100  # the wide-area table
//! cargo run --release -p benches --bin shootout -- --protocols raft,multi-paxos --nodes 3 \
//!     --sweep 1,4,16,64,256,1024                                     # latency–throughput curves
//! ```
//!
//! It prints the table, the findings, the crash scenario and the hashring comparison, and
//! writes `shootout.md`, `shootout.json` (every figure and the machine), `shootout.svg`
//! (throughput and p99 latency per protocol), the charts (`shootout-throughput.svg`,
//! `shootout-latency.svg`, with `--sweep` `shootout-sweep.svg`, with `--faults`
//! `shootout-crash.svg`; see `benches::report::charts`) and `index.html`, a self-contained report page
//! with the tables and the charts inlined, into `target/shootout/` (unless `--quick`; `--out-dir`
//! chooses another directory), and prints where. `--write-docs` writes them into `docs/` instead, the committed copies the
//! README quotes. With `--rtt-ms`, it runs the wide-area scenario instead (`benches::wan`:
//! Raft and Multi-Paxos with every message delayed by half the round trip) and writes
//! `shootout-wan.md` and `shootout-wan.json`.
//!
//! Columns: `ops/s` is acknowledged operations per second over the measured period; `p50`,
//! `p99` and `max` are the latencies of acknowledged operations as seen by a client (closed
//! loop: each client waits for its answer before sending the next operation); `msgs/op` and
//! `bytes/op` are the frames (and their bytes) that all nodes handed to the transport,
//! `records/op` and `syncs/op` the records appended and the storage syncs of all nodes, each
//! divided by the acknowledged operations; `theory delays` and `theory msgs/op` are what the
//! protocol's paper states for one operation without batching. A measured message count more
//! than 10 % away from the paper's is printed as a finding.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use benches::report::svg::render_svg;
use benches::report::table::{render_faults, render_table};
use benches::report::{self, Charts};
use benches::wan::{self, WanPlan, WanReport};
use benches::{findings, Machine, Plan, Report, TransportKind, Workload};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Runs the workspace's protocols head-to-head, prints a table and writes it as Markdown, JSON
/// and an SVG chart.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Protocols to run (comma-separated: demo, raft, multi-paxos, 2pc, 3pc, 2pc-raft); all when
    /// absent.
    #[arg(long, value_delimiter = ',')]
    protocols: Vec<String>,
    /// Transports to run over (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [TransportKind::Memory])]
    transport: Vec<TransportKind>,
    /// Cluster sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [3, 5])]
    nodes: Vec<usize>,
    /// Concurrency levels: clients, each with one operation in flight (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 32])]
    concurrency: Vec<usize>,
    /// Concurrency levels to sweep (comma-separated, e.g. 1,4,16,64,256,1024), in place of
    /// --concurrency, and draw the latency–throughput curve of each protocol.
    #[arg(long, value_delimiter = ',', conflicts_with = "concurrency")]
    sweep: Vec<usize>,
    /// Measured seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
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
    /// Also run the fault scenarios: a third of the way in, the leader or coordinator crashes
    /// (every protocol), or its links slow to 1 s per frame for 0.5 s (2PC, 3PC and 2PC over
    /// Raft).
    #[arg(long)]
    faults: bool,
    /// Seconds of each crash-scenario run.
    #[arg(long, default_value_t = 3.0)]
    fault_secs: f64,
    /// Skip the consistent-hashing comparison.
    #[arg(long)]
    no_hashring: bool,
    /// Cluster sizes of the consistent-hashing comparison (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000])]
    hashring_nodes: Vec<usize>,
    /// Keys of the consistent-hashing comparison.
    #[arg(long, default_value_t = HASHRING_KEYS)]
    hashring_keys: usize,
    /// A tiny run (a few hundred operations per measurement) to check that everything works;
    /// writes files only where paths are given.
    #[arg(long)]
    quick: bool,
    /// Seed of the protocols' and the network's randomness.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the report as Markdown here [default: shootout.md in the output directory].
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write every figure and the machine's description as JSON here [default: shootout.json
    /// in the output directory].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the chart of throughput and p99 latency here [default: shootout.svg in the output
    /// directory].
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Write the default outputs into the repository's `docs/` (the committed copies) instead
    /// of `target/shootout/`.
    #[arg(long, conflicts_with = "out_dir")]
    write_docs: bool,
    /// Write the default outputs into this directory instead of `target/shootout/` (also
    /// with --quick, which otherwise writes nothing but the paths given).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Run the wide-area scenario instead of the main table: Raft and Multi-Paxos with every
    /// message delayed by half of each of these round trips, in milliseconds (comma-separated).
    #[arg(long, value_delimiter = ',')]
    rtt_ms: Vec<u64>,
}

/// Operations per measurement in `--quick` mode.
const QUICK_OPS: u64 = 300;
/// Keys of the default consistent-hashing comparison: enough for stable balance figures, few
/// enough to keep the default run short.
const HASHRING_KEYS: usize = 1 << 18;

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
        concurrency: if args.sweep.is_empty() {
            args.concurrency.clone()
        } else {
            args.sweep.clone()
        },
        workload,
        durable: args.durable,
        seed: args.seed,
        fault_duration: if args.faults {
            seconds("fault-secs", args.fault_secs)?
        } else {
            Duration::ZERO
        },
    })
}

/// Where an output goes: the path given, else `name` in the output directory: `--out-dir`,
/// else (but in quick mode) `docs/` with `--write-docs` and `target/shootout/` otherwise, so
/// that a plain run leaves the checkout as it was.
fn output(given: &Option<PathBuf>, args: &Args, name: &str) -> Option<PathBuf> {
    if given.is_some() {
        return given.clone();
    }
    if let Some(dir) = &args.out_dir {
        return Some(dir.join(name));
    }
    given.clone().or_else(|| {
        (!args.quick).then(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let dir = if args.write_docs {
                root.join("docs")
            } else {
                std::env::var_os("CARGO_TARGET_DIR")
                    .map_or_else(|| root.join("target"), PathBuf::from)
                    .join("shootout")
            };
            dir.join(name)
        })
    })
}

fn setup(plan: &Plan) -> String {
    format!(
        "Closed loop over the {} transport, {} storage, {}{}; same driver, codec (bincode) and \
         workload for every protocol (16-byte commands for Raft and Multi-Paxos, one write at \
         every participant per 2PC/3PC transaction, one write in each of two partitions per \
         2PC-over-Raft transaction).",
        plan.transports
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(" and "),
        if plan.durable {
            "write-ahead log with fsync"
        } else {
            "in-memory"
        },
        match plan.workload.ops_max {
            Some(ops) if plan.workload.duration.is_zero() => format!("{ops} operations each"),
            _ => format!(
                "{:.1} s measured each",
                plan.workload.duration.as_secs_f64()
            ),
        },
        if plan.workload.warmup.is_zero() {
            String::new()
        } else {
            format!(
                " after {:.1} s of warm-up",
                plan.workload.warmup.as_secs_f64()
            )
        },
    )
}

fn write(path: &Option<PathBuf>, text: &str) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber_init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shootout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if !args.rtt_ms.is_empty() {
        return run_wan(args);
    }
    let plan = plan(args)?;
    let runtime = runtime()?;
    let progress = progress();
    let result = runtime.block_on(async {
        let rows = plan.run(&progress).await?;
        let faults = plan.run_faults(&progress).await?;
        Ok::<_, benches::BenchError>((rows, faults))
    });
    let hashring = if args.no_hashring || args.quick {
        Vec::new()
    } else {
        progress.set_message("consistent hashing");
        benches::hashring::rows(&args.hashring_nodes, args.hashring_keys.max(1))
    };
    progress.finish_and_clear();
    let (rows, faults) = result.map_err(|e| e.to_string())?;
    let report = Report {
        machine: Machine::describe(),
        setup: setup(&plan),
        findings: findings(&rows),
        rows,
        faults,
        hashring,
    };
    println!("{}\n", report.setup);
    print!("{}", render_table(&report.rows));
    if !report.findings.is_empty() {
        println!("\nFindings (measured messages/op against the papers' counts):");
        for f in &report.findings {
            println!("  - {f}");
        }
    }
    if !report.faults.is_empty() {
        println!("\nFaults: the leader or coordinator crashes, or its links slow down:");
        print!("{}", render_faults(&report.faults, false));
    }
    if !report.hashring.is_empty() {
        println!("\nConsistent hashing:");
        print!("{}", benches::hashring::format_table(&report.hashring));
    }
    write(
        &output(&args.markdown, args, "shootout.md"),
        &report.markdown(),
    )?;
    write(
        &output(&args.json, args, "shootout.json"),
        &report.json().map_err(|e| e.to_string())?,
    )?;
    let svg_path = output(&args.svg, args, "shootout.svg");
    if svg_path.is_some() {
        write(
            &svg_path,
            &render_svg(&report.rows).map_err(|e| e.to_string())?,
        )?;
    }
    // The charts and the report page go beside the tables (only where a default output goes).
    // Under docs/ the page is `shootout.html`; `index.html` names the directory's page.
    let page = if args.write_docs {
        "shootout.html"
    } else {
        "index.html"
    };
    if output(&None, args, page).is_some() {
        let charts = Charts::of(&report, !args.sweep.is_empty()).map_err(|e| e.to_string())?;
        for (name, _, svg) in charts.named() {
            write(&output(&None, args, &format!("shootout-{name}.svg")), svg)?;
        }
        let path = output(&None, args, page);
        write(&path, &report::html(&report, &charts, &command_line()))?;
        if let Some(path) = path.and_then(|p| p.canonicalize().ok()) {
            eprintln!("open the report: file://{}", path.display());
        }
    }
    Ok(())
}

/// The command that reproduces this run, as typed (arguments with spaces quoted).
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| {
            if a.contains(char::is_whitespace) || a.is_empty() {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect();
    let mut line = String::from("cargo run --release -p benches --bin shootout");
    if !args.is_empty() {
        line.push_str(" -- ");
        line.push_str(&args.join(" "));
    }
    line
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn progress() -> ProgressBar {
    let progress = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg}: {pos} ops ({per_sec}) [{elapsed}]")
    {
        progress.set_style(style);
    }
    progress.enable_steady_tick(Duration::from_millis(100));
    progress
}

/// The wide-area scenario: its own table and files (`shootout-wan.{md,json}`).
fn run_wan(args: &Args) -> Result<(), String> {
    let plan = plan(args)?;
    let wan = WanPlan {
        protocols: args.protocols.clone(),
        cluster_sizes: args.nodes.clone(),
        rtts_ms: args.rtt_ms.clone(),
        concurrency: args.concurrency.clone(),
        workload: plan.workload,
        crash_duration: if args.quick {
            Duration::ZERO
        } else {
            seconds("fault-secs", args.fault_secs)?
        },
        seed: args.seed,
    };
    let runtime = runtime()?;
    let progress = progress();
    let rows = runtime
        .block_on(wan.run(&progress))
        .map_err(|e| e.to_string())?;
    progress.finish_and_clear();
    let report = WanReport {
        machine: Machine::describe(),
        setup: format!(
            "In-memory transport with a fixed one-way delay of half the round trip on every \
             link, in-memory storage, default protocol configurations (10 ms driver tick); \
             {}; failover runs of {:.1} s.",
            setup(&plan),
            wan.crash_duration.as_secs_f64()
        ),
        rows,
    };
    println!("{}\n", report.setup);
    print!("{}", wan::render(&report.rows, false));
    write(
        &output(&args.markdown, args, "shootout-wan.md"),
        &report.markdown(),
    )?;
    write(
        &output(&args.json, args, "shootout-wan.json"),
        &report.json().map_err(|e| e.to_string())?,
    )?;
    Ok(())
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
