//! The core shootout: our consensus cores against omnipaxos and raft-rs, every one pumped the same
//! way in one thread ([`benches::peers`]), in one run.
//!
//! ```text
//! cargo run --release -p benches --features peers --bin core-shootout
//! cargo run --release -p benches --features peers --bin core-shootout -- --quick
//! cargo run --release -p benches --features peers --bin core-shootout -- --write-docs
//! ```
//!
//! For each setup (3 replicas with 1 and 100 commands in flight, 5 replicas with 100) and each
//! implementation, every repetition builds a fresh cluster, elects a leader, runs a short
//! warm-up, then measures commands applied at the leader per second over `--commands` commands.
//! Repetitions are interleaved (every setup and implementation once, then again), so a slow
//! moment of a shared machine spreads over all rows rather than one. The table gives the median
//! and the range over repetitions, the ratio of each median to the best peer's in its setup, and
//! heap allocations and messages per applied command, counted by this binary's global allocator.
//!
//! Results go to `target/core-shootout/core-shootout.{md,json}` (or `--out-dir`); with
//! `--write-docs`, also to `docs/core-shootout.{md,json}`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use benches::peers::{self, Implementation, Setup, SETUPS};
use benches::BenchError;
use clap::Parser;

/// The system allocator, counting allocations (and reallocations) with relaxed atomics: the
/// count is read only between runs, in this one thread, so no ordering is needed.
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// Safety: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s contract;
// the counter has no effect on memory. The workspace denies unsafe code; a global allocator
// cannot be written without it.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // Safety: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // Safety: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // Safety: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Safety: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Default commands measured per repetition.
const COMMANDS_DEFAULT: u64 = 300_000;
/// Default repetitions.
const REPS_DEFAULT: u32 = 5;
/// Commands and repetitions of `--quick`.
const QUICK: (u64, u32) = (20_000, 1);
/// Most commands per repetition.
const COMMANDS_MAX: u64 = 100_000_000;
/// Most repetitions.
const REPS_MAX: u32 = 100;
/// Warm-up commands before each measurement: a tenth of the measured ones, at most this many.
const WARMUP_COMMANDS_MAX: u64 = 20_000;

/// Our consensus cores against omnipaxos and raft-rs, pumped in one thread.
#[derive(Debug, Parser)]
#[command(name = "core-shootout")]
struct Args {
    /// Commands measured per repetition (applied at the leader).
    #[arg(long, default_value_t = COMMANDS_DEFAULT)]
    commands: u64,
    /// Repetitions of every setup and implementation.
    #[arg(long, default_value_t = REPS_DEFAULT)]
    reps: u32,
    /// A quick pass: 20 000 commands, one repetition (overrides --commands and --reps).
    #[arg(long)]
    quick: bool,
    /// Where to write core-shootout.{md,json} (default: target/core-shootout/ of the
    /// workspace).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Also refresh docs/core-shootout.{md,json} of the workspace.
    #[arg(long)]
    write_docs: bool,
    /// Run only these implementations (repeat the flag for several; default: all). Handy under
    /// a profiler; without a peer, the ratio column stays empty.
    #[arg(long = "only", value_enum)]
    only: Vec<Implementation>,
    /// Run only the setups of this many replicas.
    #[arg(long)]
    replicas: Option<u64>,
    /// Run only the setups with this many commands in flight.
    #[arg(long)]
    in_flight: Option<u64>,
}

/// Where the run happened.
#[derive(Debug, serde::Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    rustc: String,
    date: String,
    command: String,
    /// The load average (1, 5 and 15 minutes) when the run started, if the system reports it:
    /// how much else competed for the cores.
    load_before: Option<[f64; 3]>,
    /// The same when the run ended.
    load_after: Option<[f64; 3]>,
    /// The highest 1-minute load average read after each repetition.
    load_one_minute_max: Option<f64>,
}

/// The load average over 1, 5 and 15 minutes (Linux's `/proc/loadavg`).
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

fn describe_load(load: Option<[f64; 3]>) -> String {
    load.map_or_else(
        || "unknown".to_string(),
        |[one, five, fifteen]| format!("{one:.2}, {five:.2}, {fifteen:.2}"),
    )
}

impl Machine {
    fn describe() -> Machine {
        let run = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string())
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut command =
            "cargo run --release -p benches --features peers --bin core-shootout".to_string();
        if !args.is_empty() {
            command.push_str(" -- ");
            command.push_str(&args.join(" "));
        }
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rustc: run("rustc", &["--version"]),
            date: run("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            command,
            load_before: load_average(),
            load_after: None,
            load_one_minute_max: None,
        }
    }
}

/// One repetition's figures.
#[derive(Clone, Copy, Debug, serde::Serialize)]
struct Sample {
    commands_per_sec: f64,
    allocations_per_command: f64,
    messages_per_command: f64,
    ticks: u64,
}

/// Every repetition of one implementation in one setup, and their summary.
#[derive(Debug, serde::Serialize)]
struct Row {
    setup: Setup,
    implementation: Implementation,
    name: &'static str,
    ours: bool,
    samples: Vec<Sample>,
    median_per_sec: f64,
    min_per_sec: f64,
    max_per_sec: f64,
    /// This row's median over the best peer's median in the same setup.
    vs_best_peer: Option<f64>,
    allocations_per_command: f64,
    messages_per_command: f64,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    machine: Machine,
    commands: u64,
    warmup_commands: u64,
    reps: u32,
    method: &'static str,
    rows: Vec<Row>,
}

const METHOD: &str = "Each implementation is pumped in one thread (benches::peers): messages are \
delivered synchronously from one FIFO queue, nothing is encoded, records stay in memory (our \
cores: the outbox's records in a Vec per node; omnipaxos: its MemoryStorage; raft-rs: its \
MemStorage). After a leader is elected (not measured) and a warm-up, rounds of W commands are \
handed to the leader together (our cores: one `Node::handle_requests`, as the driver hands over \
the requests it found waiting) and its effects released once, then messages are delivered until none is in flight; every round must apply \
its W commands at the leader before the next. The figure is commands applied at the leader per \
second. Each implementation runs with its defaults, except two of raft-rs's that let it batch \
as the others do: max_size_per_msg is 1 MiB (as in TiKV; the default of 0 sends one entry per \
append) and batch_append is on. Our Raft keeps its default compaction: it checkpoints every \
100 000 entries (snapshot_log_entries_max), and the pump then frees the records before the \
checkpoint inside the measured run, as storage would; the peers are never asked to compact, so \
their logs only grow and none of their records is freed during the run.";

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn measure(
    implementation: Implementation,
    setup: Setup,
    warmup: u64,
    commands: u64,
) -> Result<Sample, BenchError> {
    let mut pump = peers::prepare(implementation, setup.replicas)?;
    peers::run(pump.as_mut(), setup.in_flight, warmup)?;
    let before = allocations();
    let run = peers::run(pump.as_mut(), setup.in_flight, commands)?;
    let allocated = allocations() - before;
    // The cluster is dropped here, outside the measurement.
    drop(pump);
    let per_command = |n: u64| n as f64 / run.commands.max(1) as f64;
    Ok(Sample {
        commands_per_sec: run.commands_per_sec(),
        allocations_per_command: per_command(allocated),
        messages_per_command: per_command(run.messages),
        ticks: run.ticks,
    })
}

fn summarize(setup: Setup, implementation: Implementation, samples: Vec<Sample>) -> Row {
    let mut rates: Vec<f64> = samples.iter().map(|s| s.commands_per_sec).collect();
    let mut allocs: Vec<f64> = samples.iter().map(|s| s.allocations_per_command).collect();
    let mut messages: Vec<f64> = samples.iter().map(|s| s.messages_per_command).collect();
    Row {
        setup,
        implementation,
        name: implementation.name(),
        ours: implementation.is_ours(),
        median_per_sec: median(&mut rates),
        min_per_sec: rates.first().copied().unwrap_or(0.0),
        max_per_sec: rates.last().copied().unwrap_or(0.0),
        vs_best_peer: None,
        allocations_per_command: median(&mut allocs),
        messages_per_command: median(&mut messages),
        samples,
    }
}

fn mega(per_sec: f64) -> String {
    format!("{:.2}", per_sec / 1e6)
}

const COLUMNS: [&str; 8] = [
    "setup",
    "implementation",
    "M cmd/s (median)",
    "min–max",
    "vs best peer",
    "allocs/cmd",
    "msgs/cmd",
    "ticks",
];

fn cells(row: &Row) -> Vec<String> {
    vec![
        row.setup.label(),
        row.name.to_string(),
        mega(row.median_per_sec),
        format!("{}–{}", mega(row.min_per_sec), mega(row.max_per_sec)),
        row.vs_best_peer.map_or("-".into(), |r| format!("{r:.2}")),
        format!("{:.2}", row.allocations_per_command),
        format!("{:.2}", row.messages_per_command),
        row.samples
            .iter()
            .map(|s| s.ticks)
            .max()
            .unwrap_or(0)
            .to_string(),
    ]
}

fn text_table(rows: &[Row]) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let mut widths: Vec<usize> = COLUMNS.iter().map(|c| c.chars().count()).collect();
    for line in &body {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    for line in std::iter::once(&header).chain(&body) {
        let mut text = String::new();
        for (i, (cell, w)) in line.iter().zip(&widths).enumerate() {
            let pad = w - cell.chars().count();
            if i < 2 {
                let _ = write!(text, "{cell}{:pad$}  ", "");
            } else {
                let _ = write!(text, "{:pad$}{cell}  ", "");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

fn markdown(report: &Report) -> String {
    let m = &report.machine;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Core shootout: our consensus cores against their peers\n"
    );
    let _ = writeln!(
        out,
        "Measured {} on {} ({} cores), {}, with `{}`: {} commands per repetition after {} of \
         warm-up, {} repetitions, interleaved.\n",
        m.date,
        m.cpu,
        m.cores,
        m.rustc,
        m.command,
        report.commands,
        report.warmup_commands,
        report.reps
    );
    let _ = writeln!(
        out,
        "Load average (1, 5, 15 minutes): {} when the run started, {} when it ended, at most \
         {} over 1 minute between repetitions, on {} cores. The run itself keeps one core busy, \
         about 1 of the load; the rest is other processes, which share the caches and memory \
         bandwidth with it and, beyond the number of cores, the cores themselves, so the \
         figures (wall-clock rates) drop and spread with it. The interleaved repetitions spread \
         such moments over every row, and the min–max column shows how far they reached.\n",
        describe_load(m.load_before),
        describe_load(m.load_after),
        m.load_one_minute_max
            .map_or_else(|| "unknown".to_string(), |l| format!("{l:.2}")),
        m.cores
    );
    let _ = writeln!(out, "{METHOD}\n");
    let _ = writeln!(
        out,
        "\"vs best peer\" is the row's median over the best peer's median in the same setup; \
         allocations and messages are per applied command (medians); \"ticks\" is the most \
         ticks any repetition's rounds needed (0: messages alone completed every round).\n"
    );
    let _ = writeln!(out, "| {} |", COLUMNS.join(" | "));
    let align: Vec<&str> = (0..COLUMNS.len())
        .map(|i| if i < 2 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for row in &report.rows {
        let _ = writeln!(out, "| {} |", cells(row).join(" | "));
    }
    out
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn write(dir: &Path, report: &Report) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| BenchError::Invalid(format!("json: {e}")))?;
    std::fs::write(dir.join("core-shootout.json"), json + "\n")?;
    std::fs::write(dir.join("core-shootout.md"), markdown(report))?;
    println!("wrote {}/core-shootout.{{md,json}}", dir.display());
    Ok(())
}

/// Every (setup, implementation) the filters of `args` select, in the order they run.
fn cases(args: &Args) -> Result<Vec<(Setup, Implementation)>, BenchError> {
    let cases: Vec<(Setup, Implementation)> = SETUPS
        .iter()
        .filter(|s| args.replicas.is_none_or(|r| r == s.replicas))
        .filter(|s| args.in_flight.is_none_or(|w| w == s.in_flight))
        .flat_map(|&s| Implementation::ALL.iter().map(move |&i| (s, i)))
        .filter(|(_, i)| args.only.is_empty() || args.only.contains(i))
        .collect();
    if cases.is_empty() {
        return Err(BenchError::Invalid(
            "no setup and implementation match the filters".into(),
        ));
    }
    Ok(cases)
}

/// Sets each row's ratio to the best peer's median in its setup (when a peer ran in it).
fn compare_with_best_peer(rows: &mut [Row]) {
    for setup in SETUPS {
        let best_peer = rows
            .iter()
            .filter(|r| r.setup == setup && !r.ours)
            .map(|r| r.median_per_sec)
            .fold(0.0_f64, f64::max);
        for row in rows.iter_mut().filter(|r| r.setup == setup) {
            if best_peer > 0.0 {
                row.vs_best_peer = Some(row.median_per_sec / best_peer);
            }
        }
    }
}

fn main() -> Result<(), BenchError> {
    let args = Args::parse();
    let (commands, reps) = if args.quick {
        QUICK
    } else {
        (args.commands, args.reps)
    };
    if commands == 0 || commands > COMMANDS_MAX || reps == 0 || reps > REPS_MAX {
        return Err(BenchError::Invalid(format!(
            "--commands must be between 1 and {COMMANDS_MAX}, --reps between 1 and {REPS_MAX}"
        )));
    }
    let warmup = (commands / 10).min(WARMUP_COMMANDS_MAX);
    let mut machine = Machine::describe();
    println!(
        "core shootout on {} ({} cores): {commands} commands, {reps} repetitions",
        machine.cpu, machine.cores
    );

    let cases = cases(&args)?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); cases.len()];
    for rep in 1..=reps {
        for (case, &(setup, implementation)) in cases.iter().enumerate() {
            let sample = measure(implementation, setup, warmup, commands)?;
            println!(
                "rep {rep}/{reps}  {:<22} {:<10} {:>6} M cmd/s  {:>6.2} allocs/cmd",
                setup.label(),
                implementation.name(),
                mega(sample.commands_per_sec),
                sample.allocations_per_command
            );
            samples[case].push(sample);
        }
        if let Some([one, ..]) = load_average() {
            machine.load_one_minute_max =
                Some(machine.load_one_minute_max.map_or(one, |m| m.max(one)));
        }
    }

    let mut rows: Vec<Row> = cases
        .iter()
        .zip(samples)
        .map(|(&(setup, implementation), s)| summarize(setup, implementation, s))
        .collect();
    compare_with_best_peer(&mut rows);

    machine.load_after = load_average();
    println!();
    print!("{}", text_table(&rows));
    println!(
        "load average (1, 5, 15 min): {} before, {} after, 1-minute at most {}",
        describe_load(machine.load_before),
        describe_load(machine.load_after),
        machine
            .load_one_minute_max
            .map_or_else(|| "unknown".to_string(), |l| format!("{l:.2}"))
    );
    let report = Report {
        machine,
        commands,
        warmup_commands: warmup,
        reps,
        method: METHOD,
        rows,
    };
    let out_dir = args
        .out_dir
        .unwrap_or_else(|| workspace_root().join("target").join("core-shootout"));
    write(&out_dir, &report)?;
    if args.write_docs {
        write(&workspace_root().join("docs"), &report)?;
    }
    Ok(())
}
