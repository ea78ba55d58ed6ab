//! The fault scenarios: a closed loop during which the leader or coordinator crashes for good
//! ([`Fault::Crash`]) or its outgoing links turn slow ([`Fault::SlowLinks`]); [`measure_fault`]
//! reports the window of unavailability and the operations blocked or failed in it as a
//! [`FaultRow`], with the acknowledgements counted window by window ([`windows`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::NodeId;
use indicatif::ProgressBar;
use tokio::task::JoinSet;

use crate::{BenchError, Cluster, ClusterSpec, Contender, Plan, TransportKind, Workload};

impl Plan {
    /// Runs the fault scenarios ([`measure_fault`]: the crash, and the slow links over the
    /// in-memory transport) for every selected protocol and cluster size, over the first
    /// transport, with the largest concurrency level. Protocols whose adapter does not support
    /// a scenario are left out of it (only the commit protocols slow their coordinator's links).
    pub async fn run_faults(&self, progress: &ProgressBar) -> Result<Vec<FaultRow>, BenchError> {
        let mut rows = Vec::new();
        if self.fault_duration.is_zero() {
            return Ok(rows);
        }
        let transport = self
            .transports
            .first()
            .copied()
            .unwrap_or(TransportKind::Memory);
        let concurrency = self.concurrency.iter().copied().max().unwrap_or(1);
        for contender in self.contenders()? {
            for &nodes in &self.cluster_sizes {
                progress.set_message(format!(
                    "crash scenario: {} over {}, {nodes} nodes, {concurrency} clients",
                    contender.name(),
                    transport.name()
                ));
                let spec = ClusterSpec::new(nodes, transport, self.durable, self.seed);
                for fault in [Fault::Crash, SLOW_LINKS] {
                    // The slow links need the in-memory network's fault controls.
                    if fault != Fault::Crash && transport != TransportKind::Memory {
                        continue;
                    }
                    let row = measure_fault(
                        contender.as_ref(),
                        &spec,
                        fault,
                        concurrency,
                        self.fault_duration,
                        progress,
                    )
                    .await?;
                    if row.crashed.is_some() {
                        rows.push(row);
                    }
                }
            }
        }
        Ok(rows)
    }
}

/// Longest an operation may take in the fault scenario before it counts as failed (a request
/// stuck at a crashed node must not stall the closed loop).
pub const FAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of the crash scenario for one protocol and cluster size: the leader (or
/// coordinator) is crashed a third of the way into a closed-loop run and stays down.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FaultRow {
    /// The protocol ([`Contender::name`]).
    pub protocol: String,
    /// The transport.
    pub transport: TransportKind,
    /// Cluster size.
    pub nodes: usize,
    /// Clients in the closed loop.
    pub concurrency: usize,
    /// The fault injected ([`Fault::name`]).
    pub scenario: String,
    /// The node crashed (or whose links were slowed); `None` when the adapter does not support
    /// the scenario.
    pub crashed: Option<NodeId>,
    /// Operations acknowledged before the crash.
    pub ops_before: u64,
    /// Operations acknowledged after the cluster recovered.
    pub ops_after: u64,
    /// Milliseconds from the crash until the first acknowledgement of an operation issued after
    /// it; `None` when the cluster did not recover before the run ended.
    pub unavailable_ms: Option<f64>,
    /// Operations in flight across the outage that were acknowledged only once it ended.
    pub blocked: u64,
    /// Operations that failed (error or [`FAULT_OP_TIMEOUT`]) between the crash and the recovery
    /// (or the end of the run).
    pub failed: u64,
    /// Atomic commit only ([`Cluster::undecided`]): transactions the surviving participants still
    /// hold undecided, with their locks, at the end of the run. Two-phase commit leaves here
    /// what the crashed coordinator had prepared; three-phase commit's termination protocol
    /// decides it without the coordinator.
    pub undecided_at_end: Option<u64>,
    /// Atomic commit only ([`Cluster::decision_conflicts`]): decisions that contradicted one a
    /// participant had already taken, at the end of the run: transactions decided both ways.
    pub conflicts_at_end: Option<u64>,
    /// What happened, in words.
    pub note: String,
    /// When the fault hit, in milliseconds from the start of the run.
    pub fault_at_ms: f64,
    /// Operations acknowledged in each [`FAULT_WINDOW`] of the run, from its start: the
    /// throughput around the fault, window by window.
    pub acks_per_window: Vec<u64>,
}

/// Width of the windows of [`FaultRow::acks_per_window`].
pub const FAULT_WINDOW: Duration = Duration::from_millis(10);

/// Counts the acknowledgements at `acked` (offsets from the start of a run) in consecutive
/// windows of `window`, from the start to the end of the run, `span` (or to the last
/// acknowledgement, if later). There are at most `windows_max` windows: acknowledgements past
/// the last one are left out, so that a run far longer than planned cannot make the list grow
/// without bound.
pub fn windows(
    acked: &[Duration],
    span: Duration,
    window: Duration,
    windows_max: usize,
) -> Vec<u64> {
    let width = window.as_nanos().max(1);
    let index = |d: Duration| usize::try_from(d.as_nanos() / width).unwrap_or(usize::MAX);
    let mut counts: Vec<u64> = vec![0; index(span).min(windows_max)];
    for &at in acked {
        let i = index(at);
        if i >= windows_max {
            continue;
        }
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] += 1;
    }
    counts
}

/// Most windows of [`FaultRow::acks_per_window`]: 100 s of 10 ms windows.
pub const FAULT_WINDOWS_MAX: usize = 10_000;

/// A fault the fault scenarios inject a third of the way into a closed-loop run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The leader or coordinator crashes and stays down.
    Crash,
    /// Every link from the leader or coordinator to the others becomes slow: each frame sent
    /// during `window` takes `delay` to arrive. Nothing is lost and nobody crashes.
    SlowLinks {
        /// One-way delay of a frame sent in the window.
        delay: Duration,
        /// How long the links stay slow.
        window: Duration,
    },
}

impl Fault {
    /// The scenario's name in tables.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::SlowLinks { .. } => "slow links",
        }
    }
}

/// Quiet time after a slow-link fault's delay, before the participants are asked.
pub const SLOW_LINKS_SETTLE: Duration = Duration::from_secs(1);

/// The slow-link scenario of the shootout: 1 s per frame from the coordinator for half a
/// second, far beyond 3PC's ack (200 ms) and termination (300 ms) timeouts with the driver's
/// 10 ms tick.
pub const SLOW_LINKS: Fault = Fault::SlowLinks {
    delay: Duration::from_secs(1),
    window: Duration::from_millis(500),
};

/// Runs the crash scenario: `concurrency` clients in a closed loop for `duration`; a third of the
/// way in, [`Cluster::crash_leader`] crashes the leader or coordinator for good.
pub async fn measure_crash(
    contender: &dyn Contender,
    spec: &ClusterSpec,
    concurrency: usize,
    duration: Duration,
    progress: &ProgressBar,
) -> Result<FaultRow, BenchError> {
    measure_fault(
        contender,
        spec,
        Fault::Crash,
        concurrency,
        duration,
        progress,
    )
    .await
}

/// Runs a fault scenario: `concurrency` clients in a closed loop for `duration`; a third of the
/// way in, `fault` hits the leader or coordinator. After a slow-link fault the cluster is left
/// quiet for [`SLOW_LINKS_SETTLE`] more than the delay, so every late frame has arrived before
/// the participants are asked what they decided.
pub async fn measure_fault(
    contender: &dyn Contender,
    spec: &ClusterSpec,
    fault: Fault,
    concurrency: usize,
    duration: Duration,
    progress: &ProgressBar,
) -> Result<FaultRow, BenchError> {
    spec.validate()?;
    Workload {
        concurrency,
        warmup: Duration::ZERO,
        duration,
        ops_max: None,
    }
    .validate()?;
    let cluster = contender.start(spec).await?;
    let start = Instant::now();
    let mut clients = spawn_clients(&cluster, concurrency, start + duration, progress);
    tokio::time::sleep(duration / 3).await;
    let (crashed, crash_at) = inject(cluster.as_ref(), fault).await;
    let mut ops = Vec::new();
    while let Some(joined) = clients.join_next().await {
        ops.extend(joined.map_err(|e| BenchError::Op(format!("a client task failed: {e}")))?);
    }
    if let Fault::SlowLinks { delay, .. } = fault {
        tokio::time::sleep(delay + SLOW_LINKS_SETTLE).await;
    }
    let undecided_at_end = cluster.undecided().await;
    let conflicts_at_end = cluster.decision_conflicts().await;
    let stopped = cluster.shutdown().await;
    let crashed = crashed?;
    let undecided_at_end = undecided_at_end?;
    let conflicts_at_end = conflicts_at_end?;
    stopped?;
    let outage = Outage::of(&ops, crash_at);
    Ok(FaultRow {
        scenario: fault.name().to_string(),
        conflicts_at_end,
        protocol: contender.name().to_string(),
        transport: spec.transport,
        nodes: spec.nodes,
        concurrency,
        crashed,
        ops_before: outage.ops_before,
        ops_after: outage.ops_after,
        unavailable_ms: outage.unavailable_ms,
        blocked: outage.blocked,
        failed: outage.failed,
        note: note(
            fault,
            crashed,
            outage.unavailable_ms,
            undecided_at_end,
            conflicts_at_end,
        ),
        undecided_at_end,
        fault_at_ms: crash_at.duration_since(start).as_secs_f64() * 1e3,
        acks_per_window: windows(
            &ops.iter()
                .filter(|(_, _, ok)| *ok)
                .map(|&(_, answered, _)| answered.duration_since(start))
                .collect::<Vec<_>>(),
            duration,
            FAULT_WINDOW,
            FAULT_WINDOWS_MAX,
        ),
    })
}

/// One operation of the fault scenario: when it was issued, when it was answered, and whether
/// it was acknowledged.
type Op = (Instant, Instant, bool);

/// Starts `concurrency` clients, each running operations back to back (each bounded by
/// [`FAULT_OP_TIMEOUT`], retried after 1 ms on failure) until `deadline`; each returns every
/// operation it ran.
fn spawn_clients(
    cluster: &Arc<dyn Cluster>,
    concurrency: usize,
    deadline: Instant,
    progress: &ProgressBar,
) -> JoinSet<Vec<Op>> {
    let mut clients = JoinSet::new();
    for client in 0..concurrency {
        let cluster = cluster.clone();
        let progress = progress.clone();
        clients.spawn(async move {
            let mut ops: Vec<Op> = Vec::new();
            for seq in 0.. {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                let ok = matches!(
                    tokio::time::timeout(FAULT_OP_TIMEOUT, cluster.run_op(client, seq)).await,
                    Ok(Ok(()))
                );
                ops.push((t0, Instant::now(), ok));
                if ok {
                    progress.inc(1);
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            ops
        });
    }
    clients
}

/// Injects `fault` and returns the node it hit and when the outage started: once the crashed
/// node has stopped (operations it answered while stopping were served), or as soon as the
/// links slow down (the call returns when they heal).
async fn inject(
    cluster: &dyn Cluster,
    fault: Fault,
) -> (Result<Option<NodeId>, BenchError>, Instant) {
    match fault {
        Fault::Crash => {
            let crashed = cluster.crash_leader().await;
            (crashed, Instant::now())
        }
        Fault::SlowLinks { delay, window } => {
            let at = Instant::now();
            (cluster.slow_leader_links(delay, window).await, at)
        }
    }
}

/// What the operations of a fault scenario say about the outage that started at `crash_at`.
struct Outage {
    ops_before: u64,
    ops_after: u64,
    unavailable_ms: Option<f64>,
    blocked: u64,
    failed: u64,
}

impl Outage {
    /// The outage ends at the first acknowledgement of an operation issued after it started
    /// (or now, when there is none).
    fn of(ops: &[Op], crash_at: Instant) -> Self {
        let recovered_at = ops
            .iter()
            .filter(|(issued, _, ok)| *ok && *issued >= crash_at)
            .map(|&(_, answered, _)| answered)
            .min();
        let end = recovered_at.unwrap_or_else(Instant::now);
        let count = |f: &dyn Fn(&Op) -> bool| ops.iter().filter(|op| f(op)).count() as u64;
        Outage {
            ops_before: count(&|&(_, answered, ok)| ok && answered < crash_at),
            ops_after: count(&|&(_, answered, ok)| {
                ok && recovered_at.is_some_and(|r| answered >= r)
            }),
            blocked: count(&|&(issued, answered, ok)| ok && issued < crash_at && answered >= end),
            failed: count(&|&(_, answered, ok)| !ok && answered >= crash_at && answered <= end),
            unavailable_ms: recovered_at.map(|r| r.duration_since(crash_at).as_secs_f64() * 1e3),
        }
    }
}

/// What happened in a fault scenario, in words.
fn note(
    fault: Fault,
    crashed: Option<NodeId>,
    unavailable_ms: Option<f64>,
    undecided_at_end: Option<u64>,
    conflicts_at_end: Option<u64>,
) -> String {
    let mut note = match (fault, crashed, unavailable_ms) {
        (_, None, _) => format!("the adapter does not support the {} scenario", fault.name()),
        (Fault::SlowLinks { delay, window }, Some(id), _) => format!(
            "node {id}'s links delayed every frame by {} ms for {} ms",
            delay.as_millis(),
            window.as_millis()
        ),
        (Fault::Crash, Some(id), Some(ms)) => {
            format!("node {id} crashed; a new leader served again after {ms:.0} ms")
        }
        (Fault::Crash, Some(id), None) => format!(
            "node {id} crashed; no operation completed afterwards: nothing takes over from a \
             crashed coordinator (it does not restart in this scenario), so no new transaction \
             starts"
        ),
    };
    match undecided_at_end {
        // Said of no role: in 3PC the participants decide what the crashed coordinator left
        // open; in 2PC over Raft groups the groups' new leaders do.
        Some(0) if fault == Fault::Crash => note
            .push_str("; every transaction open at the crash was decided without the crashed node"),
        Some(0) => note.push_str("; nothing is left undecided"),
        Some(n) => note.push_str(&format!(
            "; {n} transaction(s) stay undecided at the participants, holding their locks \
             until the coordinator returns"
        )),
        None => {}
    }
    match conflicts_at_end {
        Some(0) | None => {}
        Some(n) => note.push_str(&format!(
            "; {n} decision(s) reached a participant that had decided the other way: \
             transactions decided both ways"
        )),
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_acknowledgements_over_the_whole_run() {
        let ms = Duration::from_millis;
        let acked = [ms(1), ms(3), ms(12), ms(35)];
        assert_eq!(windows(&acked, ms(50), ms(10), 100), vec![2, 1, 0, 1, 0]);
        // A late acknowledgement extends the list; the cap bounds it.
        assert_eq!(windows(&acked, ms(20), ms(10), 100), vec![2, 1, 0, 1]);
        assert_eq!(windows(&acked, ms(50), ms(10), 2), vec![2, 1]);
        assert!(windows(&[], Duration::ZERO, ms(10), 10).is_empty());
    }
}
