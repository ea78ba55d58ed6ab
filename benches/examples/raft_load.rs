//! A closed loop of clients proposing empty commands to a three-node Raft group in one process,
//! for a fixed time: the setup of the `raft_memory` and `raft_tcp` criterion groups, in a form
//! that is easy to run under `perf`.
//!
//! ```text
//! cargo run --release -p benches --example raft_load -- 256 5         # 256 clients, 5 s, memory
//! cargo run --release -p benches --example raft_load -- 1 5 tcp       # one client over TCP
//! cargo run --release -p benches --example raft_load -- 256 3 memory 5  # five runs of 3 s
//! perf record -g target/release/examples/raft_load 256 10
//! ```
//!
//! Prints proposals per second, the mean time per proposal of one client, and what the drivers
//! did per proposal (CPU time of the process, messages, bytes, records, syncs, batches). With a
//! fourth argument, `RUNS` (at most [`RUNS_MAX`]), it measures that many times on the same group
//! and ends with the median and the range of the throughput and of the CPU per proposal: one
//! run on a shared machine moves by a fifth either way.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use benches::raft::Group;
use benches::{ClusterSpec, TransportKind};

/// Most runs the fourth argument asks for.
const RUNS_MAX: usize = 50;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let clients: usize = args.first().map_or(256, |a| a.parse().expect("clients"));
    let secs: f64 = args.get(1).map_or(5.0, |a| a.parse().expect("seconds"));
    let transport = match args.get(2).map(String::as_str) {
        None | Some("memory") => TransportKind::Memory,
        Some("tcp") => TransportKind::Tcp,
        Some(other) => panic!("transport {other}: memory or tcp"),
    };
    let runs: usize = args.get(3).map_or(1, |a| a.parse().expect("runs"));
    assert!((1..=RUNS_MAX).contains(&runs), "runs: 1 to {RUNS_MAX}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spec = ClusterSpec::new(3, transport, false, 3);
        let group = Group::start(&spec, |_| {}).await.unwrap();
        // Warm-up: connections up, buffers grown.
        group
            .closed_loop(clients, u64::MAX, Some(Duration::from_millis(500)))
            .await
            .unwrap();
        let mut throughput = Vec::new();
        let mut cpu_per_op = Vec::new();
        for _ in 0..runs {
            let cpu_before = cpu_secs();
            let run = group
                .closed_loop(clients, u64::MAX, Some(Duration::from_secs_f64(secs)))
                .await
                .unwrap();
            let cpu = cpu_secs() - cpu_before;
            let per_op = |n: u64| n as f64 / run.ops.max(1) as f64;
            println!(
                "{} clients over {}: {} proposals in {:.2} s = {:.0} ops/s, {:.1} us per proposal \
                 per client, {:.2} us of CPU per proposal; per proposal: {:.2} messages, {:.1} bytes, {:.3} records, {:.3} syncs, \
                 {:.3} batches",
                clients,
                transport.name(),
                run.ops,
                run.elapsed.as_secs_f64(),
                run.ops_per_sec(),
                run.elapsed.as_secs_f64() * 1e6 * clients as f64 / run.ops.max(1) as f64,
                cpu * 1e6 / run.ops.max(1) as f64,
                per_op(run.stats.messages_sent),
                per_op(run.stats.bytes_sent),
                per_op(run.stats.records_persisted),
                per_op(run.stats.syncs),
                per_op(run.stats.batches),
            );
            throughput.push(run.ops_per_sec());
            cpu_per_op.push(cpu * 1e6 / run.ops.max(1) as f64);
        }
        if runs > 1 {
            let (ops, ops_low, ops_high) = spread(&mut throughput);
            let (cpu, cpu_low, cpu_high) = spread(&mut cpu_per_op);
            println!(
                "over {runs} runs: {ops:.0} ops/s median ({ops_low:.0} to {ops_high:.0}), \
                 {:.1} us per proposal per client at the median, {cpu:.2} us of CPU per proposal \
                 median ({cpu_low:.2} to {cpu_high:.2})",
                1e6 * clients as f64 / ops.max(f64::MIN_POSITIVE),
            );
        }
        group.shutdown().await.unwrap();
    });
}

/// The median, lowest and highest of `values` (sorted in place; the median of an even count is
/// the mean of the middle two).
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

/// CPU time of the whole process so far (user and system, every thread), from `/proc/self/stat`
/// in clock ticks of 10 ms: on a shared machine this is steadier than wall time. `NaN` where
/// `/proc` is absent.
fn cpu_secs() -> f64 {
    const TICKS_PER_SEC: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // The command name (field 2) may hold spaces; the fields after it are space-separated.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / TICKS_PER_SEC,
        _ => f64::NAN,
    }
}
