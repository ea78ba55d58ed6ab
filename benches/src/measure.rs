//! Latency and throughput measurement: a closed loop of clients against a started cluster
//! ([`measure`]), its [`Workload`], the resulting [`Row`] with the paper's figures beside the
//! measured ones ([`finding`]), and the [`Plan`] that runs every combination of a shootout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::driver::DriverStats;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use crate::{contenders, BenchError, Cluster, ClusterSpec, Contender, Theory, TransportKind};

/// The longest latency the histograms record (60 s); longer ones are clamped to it.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits kept by the latency histograms.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Most clients of one closed loop.
pub const CONCURRENCY_MAX: usize = 4096;

/// The closed-loop workload of one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Clients, each with one operation in flight.
    pub concurrency: usize,
    /// Operations run before measuring, and discarded (connections up, caches warm).
    pub warmup: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// Stop measuring after this many operations, even before `duration` ends.
    pub ops_max: Option<u64>,
}

impl Workload {
    /// Checks the workload.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.concurrency == 0 || self.concurrency > CONCURRENCY_MAX {
            return Err(BenchError::Invalid(format!(
                "concurrency {} is not between 1 and {CONCURRENCY_MAX}",
                self.concurrency
            )));
        }
        if self.duration.is_zero() && self.ops_max.is_none() {
            return Err(BenchError::Invalid(
                "a run needs a duration or an operation count".into(),
            ));
        }
        Ok(())
    }
}

/// One line of the shootout's table: one protocol, transport, cluster size and concurrency.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Row {
    /// The protocol ([`Contender::name`]).
    pub protocol: String,
    /// The transport.
    pub transport: TransportKind,
    /// Whether storage was the write-ahead log with fsync.
    pub durable: bool,
    /// Cluster size.
    pub nodes: usize,
    /// Clients in the closed loop.
    pub concurrency: usize,
    /// Operations acknowledged during the measured period.
    pub ops: u64,
    /// Operations that failed during the measured period.
    pub errors: u64,
    /// Length of the measured period, in seconds.
    pub elapsed_secs: f64,
    /// Acknowledged operations per second.
    pub ops_per_sec: f64,
    /// Median latency of an acknowledged operation, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency, in microseconds.
    pub p999_us: f64,
    /// Largest latency, in microseconds.
    pub max_us: f64,
    /// Messages sent by all nodes per acknowledged operation.
    pub msgs_per_op: f64,
    /// Bytes of those messages per acknowledged operation.
    pub bytes_per_op: f64,
    /// Records appended to storage by all nodes per acknowledged operation.
    pub records_per_op: f64,
    /// Storage syncs of all nodes per acknowledged operation.
    pub syncs_per_op: f64,
    /// What the paper states: message delays and messages per operation.
    pub theory: Theory,
    /// How the measured messages per operation compare with [`Row::theory`], when they differ.
    pub finding: Option<String>,
}

/// Relative difference between measured and theoretical messages per operation below which they
/// are said to match (heartbeats and the last acknowledgements in flight blur the count a bit).
pub const THEORY_TOLERANCE: f64 = 0.10;

/// Compares measured messages per operation with the paper's; `None` when they match within
/// [`THEORY_TOLERANCE`].
pub fn finding(
    protocol: &str,
    nodes: usize,
    concurrency: usize,
    measured: f64,
    theory: &Theory,
) -> Option<String> {
    let expected = theory.messages_per_op;
    if expected <= 0.0 || (measured - expected).abs() <= THEORY_TOLERANCE * expected {
        return None;
    }
    let why = match (measured < expected, concurrency > 1) {
        (true, true) => {
            "below the paper's count: with several operations in flight one message carries \
             many commands or acknowledgements (batching), which the paper's per-operation \
             count does not assume"
        }
        (true, false) => {
            "below the paper's count with one operation in flight: the leader answers once a \
             majority acknowledged, so a slower follower likely receives several entries in one \
             message (records/op below the cluster size points the same way)"
        }
        (false, _) => {
            "above the paper's count: messages the steady-state count leaves out (heartbeats, \
             commit notifications, retries, extra acknowledgement rounds) cost more than one per \
             operation"
        }
    };
    Some(format!(
        "{protocol}, {nodes} nodes, {concurrency} clients: {measured:.2} messages/op measured vs \
         {expected:.0} in theory, {why}"
    ))
}

fn per_op(total: u64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        total as f64 / ops as f64
    }
}

/// Starts a cluster of `contender`, runs `workload` against it and shuts it down. `progress`
/// advances by one per acknowledged operation (warm-up included).
pub async fn measure(
    contender: &dyn Contender,
    spec: &ClusterSpec,
    workload: &Workload,
    progress: &ProgressBar,
) -> Result<Row, BenchError> {
    spec.validate()?;
    workload.validate()?;
    let cluster = contender.start(spec).await?;
    let result = measure_on(cluster.clone(), workload, progress).await;
    let stopped = cluster.shutdown().await;
    let (histogram, ops, errors, elapsed, stats) = result?;
    stopped?;
    let us = |ns: u64| ns as f64 / 1_000.0;
    let theory = contender.theory(spec.nodes);
    let msgs_per_op = per_op(stats.messages_sent, ops);
    Ok(Row {
        finding: finding(
            contender.name(),
            spec.nodes,
            workload.concurrency,
            msgs_per_op,
            &theory,
        ),
        theory,
        protocol: contender.name().to_string(),
        transport: spec.transport,
        durable: spec.durable,
        nodes: spec.nodes,
        concurrency: workload.concurrency,
        ops,
        errors,
        elapsed_secs: elapsed.as_secs_f64(),
        ops_per_sec: if elapsed.is_zero() {
            0.0
        } else {
            ops as f64 / elapsed.as_secs_f64()
        },
        p50_us: us(histogram.value_at_quantile(0.50)),
        p99_us: us(histogram.value_at_quantile(0.99)),
        p999_us: us(histogram.value_at_quantile(0.999)),
        max_us: us(histogram.max()),
        msgs_per_op,
        bytes_per_op: per_op(stats.bytes_sent, ops),
        records_per_op: per_op(stats.records_persisted, ops),
        syncs_per_op: per_op(stats.syncs, ops),
    })
}

type Measured = (Histogram<u64>, u64, u64, Duration, DriverStats);

async fn measure_on(
    cluster: Arc<dyn Cluster>,
    workload: &Workload,
    progress: &ProgressBar,
) -> Result<Measured, BenchError> {
    if !workload.warmup.is_zero() {
        closed_loop(
            &cluster,
            workload.concurrency,
            workload.warmup,
            None,
            progress,
        )
        .await?;
    }
    let before = cluster.stats();
    let start = Instant::now();
    let (histogram, ops, errors) = closed_loop(
        &cluster,
        workload.concurrency,
        workload.duration,
        workload.ops_max,
        progress,
    )
    .await?;
    let elapsed = start.elapsed();
    let stats = cluster.stats() - before;
    Ok((histogram, ops, errors, elapsed, stats))
}

fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .map_err(|e| BenchError::Invalid(format!("histogram: {e}")))
}

/// `concurrency` clients, each running operations back to back until `duration` passed (when
/// not zero) or `ops_max` operations completed in total. Returns the merged latency histogram
/// (nanoseconds), the acknowledged and the failed operations.
async fn closed_loop(
    cluster: &Arc<dyn Cluster>,
    concurrency: usize,
    duration: Duration,
    ops_max: Option<u64>,
    progress: &ProgressBar,
) -> Result<(Histogram<u64>, u64, u64), BenchError> {
    let deadline = (!duration.is_zero()).then(|| Instant::now() + duration);
    let started = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..concurrency {
        let cluster = cluster.clone();
        let started = started.clone();
        let progress = progress.clone();
        let mut histogram = new_histogram()?;
        clients.spawn(async move {
            let (mut ops, mut errors) = (0u64, 0u64);
            for seq in 0.. {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if let Some(max) = ops_max {
                    if started.fetch_add(1, Ordering::Relaxed) >= max {
                        break;
                    }
                }
                let t0 = Instant::now();
                match cluster.run_op(client, seq).await {
                    Ok(()) => {
                        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        histogram.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
                        ops += 1;
                        progress.inc(1);
                    }
                    Err(error) => {
                        errors += 1;
                        tracing::debug!(client, %error, "operation failed");
                        // A failing cluster (no leader yet, overloaded) must not be hammered by
                        // a tight loop.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (histogram, ops, errors)
        });
    }
    let mut merged = new_histogram()?;
    let (mut ops, mut errors) = (0, 0);
    while let Some(joined) = clients.join_next().await {
        let (histogram, o, e) =
            joined.map_err(|e| BenchError::Op(format!("a client task failed: {e}")))?;
        merged
            .add(&histogram)
            .map_err(|e| BenchError::Invalid(format!("histogram: {e}")))?;
        ops += o;
        errors += e;
    }
    Ok((merged, ops, errors))
}

/// What one shootout run covers: every combination of the listed protocols, transports, cluster
/// sizes and concurrency levels, each measured with the same workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Protocol names to run ([`Contender::name`]); empty means all registered ones.
    pub protocols: Vec<String>,
    /// Transports to run over.
    pub transports: Vec<TransportKind>,
    /// Cluster sizes.
    pub cluster_sizes: Vec<usize>,
    /// Concurrency levels (clients in the closed loop).
    pub concurrency: Vec<usize>,
    /// Warm-up and measured period of each measurement (its `concurrency` is overridden).
    pub workload: Workload,
    /// Whether storage is the write-ahead log with fsync.
    pub durable: bool,
    /// Seed of the protocols' and the network's randomness.
    pub seed: u64,
    /// Length of each crash-scenario run ([`measure_crash`](crate::measure_crash)); zero skips
    /// the scenario.
    pub fault_duration: Duration,
}

impl Plan {
    /// The contenders selected by [`Plan::protocols`], in registration order. Fails on a name
    /// that is not registered.
    pub fn contenders(&self) -> Result<Vec<Box<dyn Contender>>, BenchError> {
        let all = contenders();
        for wanted in &self.protocols {
            if !all.iter().any(|c| c.name() == wanted) {
                let known: Vec<_> = all.iter().map(|c| c.name()).collect();
                return Err(BenchError::Invalid(format!(
                    "unknown protocol {wanted:?}; registered: {known:?}"
                )));
            }
        }
        Ok(all
            .into_iter()
            .filter(|c| self.protocols.is_empty() || self.protocols.iter().any(|p| p == c.name()))
            .collect())
    }

    /// The number of measurements the plan makes.
    pub fn measurements(&self) -> Result<usize, BenchError> {
        Ok(self.contenders()?.len()
            * self.transports.len()
            * self.cluster_sizes.len()
            * self.concurrency.len())
    }

    /// Runs every measurement in order. `progress` counts acknowledged operations; its message
    /// names the measurement under way.
    pub async fn run(&self, progress: &ProgressBar) -> Result<Vec<Row>, BenchError> {
        let mut rows = Vec::new();
        let total = self.measurements()?;
        for contender in self.contenders()? {
            for &transport in &self.transports {
                for &nodes in &self.cluster_sizes {
                    for &concurrency in &self.concurrency {
                        progress.set_message(format!(
                            "[{}/{total}] {} over {}, {nodes} nodes, {concurrency} clients",
                            rows.len() + 1,
                            contender.name(),
                            transport.name(),
                        ));
                        let spec = ClusterSpec::new(nodes, transport, self.durable, self.seed);
                        let workload = Workload {
                            concurrency,
                            ..self.workload
                        };
                        rows.push(measure(contender.as_ref(), &spec, &workload, progress).await?);
                    }
                }
            }
        }
        Ok(rows)
    }
}

/// The findings of `rows`: every mismatch between measured and theoretical messages per
/// operation.
pub fn findings(rows: &[Row]) -> Vec<String> {
    rows.iter().filter_map(|r| r.finding.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contender::{command, COMMAND_BYTES};

    #[test]
    fn commands_are_distinct_and_fixed_size() {
        assert_eq!(command(1, 2).len(), COMMAND_BYTES);
        assert_ne!(command(1, 2), command(2, 1));
        assert_eq!(per_op(10, 0), 0.0);
        assert_eq!(per_op(10, 4), 2.5);
    }

    #[test]
    fn invalid_specs_and_workloads_are_refused() {
        let spec = ClusterSpec::new(0, TransportKind::Memory, false, 0);
        assert!(spec.validate().is_err());
        assert!(ClusterSpec { nodes: 3, ..spec }.validate().is_ok());
        assert_eq!(ClusterSpec { nodes: 3, ..spec }.members(), vec![1, 2, 3]);
        let workload = Workload {
            concurrency: 0,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            ops_max: None,
        };
        assert!(workload.validate().is_err());
        let endless = Workload {
            concurrency: 1,
            duration: Duration::ZERO,
            ..workload
        };
        assert!(endless.validate().is_err());
    }
}
