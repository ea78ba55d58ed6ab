//! The wide-area scenario: the replicated logs (Raft, Multi-Paxos) with every message delayed by
//! half a round trip, as between data centres.
//!
//! Each protocol runs on the in-memory transport with a fixed one-way delay on every link
//! ([`ClusterSpec::one_way_delay`]; fixed, so links stay FIFO as TCP connections do), through
//! the same driver, codec and storage as the main table, with the protocols' default
//! configurations (the driver ticks every 10 ms). Per round trip it measures:
//!
//! - throughput and p50/p99 latency of a closed loop, for each concurrency level;
//! - the failover time: the leader crashes a third of the way into a closed-loop run and stays
//!   down; the time from the crash until an operation issued after it is acknowledged
//!   ([`measure_crash`]), so it includes one commit round trip on top of the election.
//!
//! The theory column is what the papers predict for one operation at the leader: one round
//! trip from the leader to a majority (two message delays), so a lone client's p50 should sit
//! just above the round trip. With many clients, latency adds the wait for the batch ahead.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::ProgressBar;

use crate::report::table::{markdown_table, text_table};
use crate::{
    measure, measure_crash, BenchError, ClusterSpec, Contender, Machine, TransportKind, Workload,
};

/// Round trips of the default wide-area run, in milliseconds: a rack, two regions of one
/// continent, two continents.
pub const RTTS_MS_DEFAULT: [u64; 3] = [1, 20, 100];
/// The protocols the scenario is about (the atomic-commit protocols have no leader to elect).
pub const PROTOCOLS: [&str; 2] = ["raft", "multi-paxos"];
/// Largest round trip the scenario accepts, in milliseconds.
pub const RTT_MS_MAX: u64 = 2_000;

/// What a wide-area run covers.
#[derive(Clone, Debug, PartialEq)]
pub struct WanPlan {
    /// Protocol names (of [`PROTOCOLS`]); empty means both.
    pub protocols: Vec<String>,
    /// Cluster sizes.
    pub cluster_sizes: Vec<usize>,
    /// Round trips, in milliseconds.
    pub rtts_ms: Vec<u64>,
    /// Concurrency levels of the throughput measurements.
    pub concurrency: Vec<usize>,
    /// Warm-up and measured period of each throughput measurement.
    pub workload: Workload,
    /// Length of each failover run (with the largest concurrency level); zero skips it.
    pub crash_duration: Duration,
    /// Seed of the protocols' randomness.
    pub seed: u64,
}

/// One line of the wide-area table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WanRow {
    /// The protocol.
    pub protocol: String,
    /// Cluster size.
    pub nodes: usize,
    /// Round trip between any two nodes, in milliseconds.
    pub rtt_ms: u64,
    /// Clients in the closed loop.
    pub concurrency: usize,
    /// Acknowledged operations per second.
    pub ops_per_sec: f64,
    /// Median latency, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// What the paper predicts for one operation without queueing: one round trip from the
    /// leader to a majority, in milliseconds.
    pub theory_ms: f64,
    /// Milliseconds from the leader's crash until an operation issued after it was
    /// acknowledged; `None` where not measured (other concurrency levels) or not recovered.
    pub failover_ms: Option<f64>,
    /// Whether the failover run was made for this row (so `None` above means not recovered).
    pub failover_run: bool,
}

impl WanPlan {
    fn contenders(&self) -> Result<Vec<Box<dyn Contender>>, BenchError> {
        for p in &self.protocols {
            if !PROTOCOLS.contains(&p.as_str()) {
                return Err(BenchError::Invalid(format!(
                    "the wide-area scenario runs {PROTOCOLS:?}, not {p:?}"
                )));
            }
        }
        if let Some(&rtt) = self.rtts_ms.iter().find(|&&r| r > RTT_MS_MAX) {
            return Err(BenchError::Invalid(format!(
                "round trip {rtt} ms exceeds {RTT_MS_MAX} ms"
            )));
        }
        Ok(crate::contenders()
            .into_iter()
            .filter(|c| PROTOCOLS.contains(&c.name()))
            .filter(|c| self.protocols.is_empty() || self.protocols.iter().any(|p| p == c.name()))
            .collect())
    }

    /// Runs every measurement in order; `progress` counts acknowledged operations.
    pub async fn run(&self, progress: &ProgressBar) -> Result<Vec<WanRow>, BenchError> {
        let mut rows = Vec::new();
        let crash_concurrency = self.concurrency.iter().copied().max().unwrap_or(1);
        for contender in self.contenders()? {
            let theory = contender.theory(3);
            for &nodes in &self.cluster_sizes {
                for &rtt_ms in &self.rtts_ms {
                    let spec = ClusterSpec {
                        one_way_delay: Duration::from_micros(rtt_ms * 500),
                        ..ClusterSpec::new(nodes, TransportKind::Memory, false, self.seed)
                    };
                    let failover_ms = if self.crash_duration.is_zero() {
                        None
                    } else {
                        progress.set_message(format!(
                            "wide area: {} failover, {nodes} nodes, {rtt_ms} ms round trip",
                            contender.name()
                        ));
                        let row = measure_crash(
                            contender.as_ref(),
                            &spec,
                            crash_concurrency,
                            self.crash_duration,
                            progress,
                        )
                        .await?;
                        Some(row.unavailable_ms)
                    };
                    for &concurrency in &self.concurrency {
                        progress.set_message(format!(
                            "wide area: {}, {nodes} nodes, {rtt_ms} ms round trip, \
                             {concurrency} clients",
                            contender.name()
                        ));
                        let workload = Workload {
                            concurrency,
                            ..self.workload
                        };
                        let row = measure(contender.as_ref(), &spec, &workload, progress).await?;
                        let failover_run =
                            failover_ms.is_some() && concurrency == crash_concurrency;
                        rows.push(WanRow {
                            protocol: contender.name().to_string(),
                            nodes,
                            rtt_ms,
                            concurrency,
                            ops_per_sec: row.ops_per_sec,
                            p50_ms: row.p50_us / 1e3,
                            p99_ms: row.p99_us / 1e3,
                            theory_ms: rtt_ms as f64 * f64::from(theory.message_delays) / 2.0,
                            failover_ms: failover_ms.flatten().filter(|_| failover_run),
                            failover_run,
                        });
                    }
                }
            }
        }
        Ok(rows)
    }
}

/// The wide-area table's column headers.
pub const COLUMNS: [&str; 9] = [
    "protocol",
    "nodes",
    "rtt ms",
    "clients",
    "ops/s",
    "p50 ms",
    "p99 ms",
    "theory p50 ms",
    "failover ms",
];

fn cells(row: &WanRow) -> Vec<String> {
    vec![
        row.protocol.clone(),
        row.nodes.to_string(),
        row.rtt_ms.to_string(),
        row.concurrency.to_string(),
        format!("{:.0}", row.ops_per_sec),
        format!("{:.1}", row.p50_ms),
        format!("{:.1}", row.p99_ms),
        format!("{:.0}", row.theory_ms),
        match (row.failover_run, row.failover_ms) {
            (false, _) => "-".into(),
            (true, Some(ms)) => format!("{ms:.0}"),
            (true, None) => "not recovered".into(),
        },
    ]
}

/// Renders the rows as aligned text (or Markdown).
pub fn render(rows: &[WanRow], markdown: bool) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    if markdown {
        markdown_table(&COLUMNS, &body, 1)
    } else {
        text_table(&COLUMNS, &body, 1)
    }
}

/// Every figure of one wide-area run, as written to the JSON file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WanReport {
    /// Where it ran.
    pub machine: Machine,
    /// The setup, in words.
    pub setup: String,
    /// The measurements.
    pub rows: Vec<WanRow>,
}

impl WanReport {
    /// The report as Markdown: machine, setup, how to read it, the table.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Shootout: wide-area round trips\n");
        let _ = writeln!(
            out,
            "Machine: {} cores, {}. {}\n",
            self.machine.cores, self.machine.os, self.setup
        );
        let _ = writeln!(
            out,
            "`theory p50 ms` is one round trip from the leader to a majority, what the papers \
             predict for one operation without queueing. `failover ms` runs the largest client \
             count, crashes the leader a third of the way in and measures until an operation \
             issued after the crash is acknowledged (election plus one commit round trip); \
             `not recovered` means no operation succeeded in the rest of the run. The \
             in-memory transport delays frames with tokio's timer, which has millisecond \
             resolution: at a 1 ms round trip each hop costs up to a millisecond more than \
             injected, so those rows overstate latency.\n"
        );
        out.push_str(&render(&self.rows, true));
        out
    }

    /// Every figure as pretty-printed JSON.
    pub fn json(&self) -> Result<String, BenchError> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError::Invalid(format!("json: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> WanPlan {
        WanPlan {
            protocols: Vec::new(),
            cluster_sizes: vec![3],
            rtts_ms: vec![20],
            concurrency: vec![1],
            workload: Workload {
                concurrency: 1,
                warmup: Duration::ZERO,
                duration: Duration::ZERO,
                ops_max: Some(20),
            },
            crash_duration: Duration::ZERO,
            seed: 1,
        }
    }

    #[test]
    fn only_replicated_logs_and_bounded_round_trips() {
        let names: Vec<_> = plan()
            .contenders()
            .unwrap()
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(names, PROTOCOLS);
        let bad = WanPlan {
            protocols: vec!["2pc".into()],
            ..plan()
        };
        assert!(bad.contenders().is_err());
        let slow = WanPlan {
            rtts_ms: vec![RTT_MS_MAX + 1],
            ..plan()
        };
        assert!(slow.contenders().is_err());
    }

    /// A 20 ms round trip is paid by every operation: one lone client's median is at least the
    /// round trip (a floor the injected delay guarantees, whatever the machine's speed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_operation_pays_one_round_trip() {
        let rows = plan().run(&ProgressBar::hidden()).await.unwrap();
        assert_eq!(rows.len(), 2);
        for row in &rows {
            assert_eq!(row.theory_ms, 20.0);
            assert!(
                row.p50_ms >= 20.0,
                "{}: p50 {} ms under the 20 ms round trip",
                row.protocol,
                row.p50_ms
            );
        }
        let text = render(&rows, false);
        assert!(text.contains("theory p50 ms"), "{text}");
    }
}
