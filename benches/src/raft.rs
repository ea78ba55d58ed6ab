//! Shootout adapter for Raft ([`raft`]), and the Raft groups of the criterion suite and of the
//! `raft_load` example.
//!
//! Each shootout operation proposes the shared 16-byte command ([`crate::command`]) to the node
//! believed to lead, follows "not the leader" hints, and completes when the entry is committed and
//! applied on the leader. The state machine only counts commands, so the figures are the
//! protocol's and the plumbing's, not the application's.
//!
//! [`Group`] is the setup of the throughput and latency benchmarks that compare with other Raft
//! implementations: `n` nodes in one process on the shared driver, [`common::MemStorage`]
//! (persisted inline), the in-memory transport or TCP on 127.0.0.1, and the [`Empty`] state
//! machine, whose command is `()`; [`Group::closed_loop`] runs clients that each keep one
//! proposal in flight.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::driver::{DriverStats, NodeHandle};
use common::NodeId;
use raft::{Config, RaftError, RaftNode, Request, Response, StateMachine, StateMachineError};

use crate::{command, BenchError, Cluster, ClusterSpec, Contender, Nodes, Theory, COMMAND_BYTES};

/// How long [`Contender::start`] waits for a leader.
pub const LEADER_WAIT: Duration = Duration::from_secs(10);

/// A state machine that counts the commands applied to it.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Commands applied.
    pub count: u64,
}

impl StateMachine for Applied {
    type Command = [u8; COMMAND_BYTES];
    type Query = ();
    type Output = u64;

    fn apply(&mut self, _index: u64, _command: &[u8; COMMAND_BYTES]) -> u64 {
        self.count += 1;
        self.count
    }

    fn query(&self, _: &()) -> u64 {
        self.count
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        out.write_all(&self.count.to_le_bytes())?;
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        let mut bytes = [0u8; 8];
        input.read_exact(&mut bytes)?;
        if input.read(&mut [0u8; 1])? != 0 {
            return Err(StateMachineError::Malformed(
                "a counter snapshot is 8 bytes".into(),
            ));
        }
        self.count = u64::from_le_bytes(bytes);
        Ok(())
    }

    fn command_bytes(_: &[u8; COMMAND_BYTES]) -> usize {
        COMMAND_BYTES
    }
}

/// Raft as a shootout contender.
#[derive(Clone, Copy, Debug, Default)]
pub struct Raft;

/// A running Raft cluster.
pub struct RaftCluster {
    nodes: Nodes<RaftNode<Applied>>,
    /// Index (into the handles) of the node believed to lead.
    leader: AtomicUsize,
}

#[async_trait]
impl Contender for Raft {
    fn name(&self) -> &'static str {
        "raft"
    }

    fn theory(&self, nodes: usize) -> Theory {
        Theory::replicated_log(nodes)
    }

    async fn start(&self, spec: &ClusterSpec) -> Result<Arc<dyn Cluster>, BenchError> {
        let seed = spec.seed;
        let nodes = Nodes::start(spec, move |id, members| {
            let mut c = Config::new(id, members.to_vec());
            c.seed = seed;
            c.into()
        })
        .await?;
        let cluster = RaftCluster {
            nodes,
            leader: AtomicUsize::new(0),
        };
        let leader = cluster.wait_for_leader(LEADER_WAIT).await?;
        cluster.leader.store(leader, Ordering::Relaxed);
        Ok(Arc::new(cluster))
    }
}

impl RaftCluster {
    /// Waits until a live node reports itself leader; returns its index.
    async fn wait_for_leader(&self, wait: Duration) -> Result<usize, BenchError> {
        wait_for_leader(&self.nodes, wait).await
    }

    fn index_of(&self, id: Option<NodeId>) -> Option<usize> {
        id.and_then(|l| self.nodes.handles.iter().position(|h| h.id() == l))
            .filter(|&i| !self.nodes.is_crashed(i))
    }
}

#[async_trait]
impl Cluster for RaftCluster {
    async fn run_op(&self, client: usize, seq: u64) -> Result<(), BenchError> {
        let n = self.nodes.handles.len();
        let i = self.leader.load(Ordering::Relaxed) % n;
        let next = self.nodes.next_live(i);
        let answer = self.nodes.handles[i]
            .request(Request::Propose(command(client, seq)))
            .await;
        match answer {
            Ok(Response::Applied { .. }) => Ok(()),
            Ok(Response::Failed(RaftError::NotLeader { leader })) => {
                let to = self.index_of(leader).unwrap_or(next);
                self.leader.store(to, Ordering::Relaxed);
                Err(BenchError::Op("not the leader".into()))
            }
            Ok(Response::Failed(e)) => Err(BenchError::Op(e.to_string())),
            Ok(other) => Err(BenchError::Op(format!("unexpected answer {other:?}"))),
            Err(e) => {
                // The node is gone (crashed in the fault scenario): try the next live one.
                self.leader.store(next, Ordering::Relaxed);
                Err(BenchError::Driver(e))
            }
        }
    }

    fn stats(&self) -> DriverStats {
        self.nodes.stats()
    }

    async fn crash_leader(&self) -> Result<Option<NodeId>, BenchError> {
        let leader = self.wait_for_leader(LEADER_WAIT).await?;
        Ok(Some(self.nodes.crash(leader).await))
    }

    async fn shutdown(&self) -> Result<(), BenchError> {
        self.nodes.shutdown().await
    }
}

/// Waits until a live node of `nodes` reports itself leader; returns its index in
/// `nodes.handles`.
pub async fn wait_for_leader<S: StateMachine>(
    nodes: &Nodes<RaftNode<S>>,
    wait: Duration,
) -> Result<usize, BenchError> {
    let deadline = Instant::now() + wait;
    loop {
        for (i, h) in nodes.handles.iter().enumerate() {
            if nodes.is_crashed(i) {
                continue;
            }
            if let Ok(m) = h.metrics().await {
                if m.leader == Some(m.id) {
                    return Ok(i);
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(BenchError::NotReady("no leader elected".into()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The state machine of "empty requests": the command is `()`, applying it returns `()`. What is
/// measured is the protocol and the plumbing alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Empty;

impl StateMachine for Empty {
    type Command = ();
    type Query = ();
    type Output = ();

    fn apply(&mut self, _: u64, _: &()) {}

    fn query(&self, _: &()) {}

    fn snapshot(&self, _: &mut dyn Write) -> Result<(), StateMachineError> {
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        if input.read(&mut [0u8; 1])? == 0 {
            Ok(())
        } else {
            Err(StateMachineError::Malformed(
                "an empty snapshot has no bytes".into(),
            ))
        }
    }
}

/// A running Raft group for the throughput and latency benchmarks: the nodes and the one that
/// leads.
pub struct Group {
    /// The nodes, in id order.
    pub nodes: Nodes<RaftNode<Empty>>,
    /// Index of the leader in `nodes.handles` when the group started.
    leader: usize,
}

/// Results of one [`Group::closed_loop`].
#[derive(Clone, Copy, Debug)]
pub struct LoopResult {
    /// Proposals acknowledged (committed and applied on the leader).
    pub ops: u64,
    /// Wall time from the first proposal to the last acknowledgement.
    pub elapsed: Duration,
    /// What every node's driver did meanwhile, summed.
    pub stats: DriverStats,
}

impl LoopResult {
    /// Acknowledged proposals per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

impl Group {
    /// Starts `spec.nodes` nodes with `config` (each node's [`Config`] is built by
    /// `Config::new(id, members)` with `seed = spec.seed`, then given to `config` to adjust) and
    /// waits for a leader.
    pub async fn start(
        spec: &ClusterSpec,
        config: impl Fn(&mut Config) + Send + Sync,
    ) -> Result<Group, BenchError> {
        let seed = spec.seed;
        let nodes = Nodes::start(spec, |id, members| {
            let mut c = Config::new(id, members.to_vec());
            c.seed = seed;
            config(&mut c);
            c.into()
        })
        .await?;
        let leader = wait_for_leader(&nodes, LEADER_WAIT).await?;
        Ok(Group { nodes, leader })
    }

    /// The leader's handle.
    pub fn leader(&self) -> &NodeHandle<RaftNode<Empty>> {
        &self.nodes.handles[self.leader]
    }

    /// Runs `clients` clients, each proposing `()` to the leader and waiting for the answer
    /// before proposing again, until `ops` proposals in all were acknowledged, or, when `until`
    /// is given, until that much time has passed. Any failed proposal (the leader changed, the
    /// node is busy) is an error: the benchmark measures the steady state.
    pub async fn closed_loop(
        &self,
        clients: usize,
        ops: u64,
        until: Option<Duration>,
    ) -> Result<LoopResult, BenchError> {
        let clients = clients.max(1);
        let before = self.nodes.stats();
        let start = Instant::now();
        // A flag rather than a clock read per proposal: the loop should measure Raft, not the
        // clock.
        let stop = Arc::new(AtomicBool::new(false));
        let timer = until.map(|d| {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                stop.store(true, Ordering::Relaxed);
            })
        });
        let mut tasks = tokio::task::JoinSet::new();
        for client in 0..clients {
            // Spread `ops` over the clients.
            let share = ops / clients as u64 + u64::from((client as u64) < ops % clients as u64);
            let leader = self.leader().clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                let mut done = 0u64;
                while done < share && !stop.load(Ordering::Relaxed) {
                    match leader.request(Request::Propose(())).await {
                        Ok(Response::Applied { .. }) => done += 1,
                        Ok(other) => return Err(BenchError::Op(format!("{other:?}"))),
                        Err(e) => return Err(BenchError::Driver(e)),
                    }
                }
                Ok(done)
            });
        }
        let mut acknowledged = 0;
        while let Some(joined) = tasks.join_next().await {
            acknowledged += joined.map_err(|e| BenchError::Op(format!("client task: {e}")))??;
        }
        let elapsed = start.elapsed();
        if let Some(timer) = timer {
            timer.abort();
        }
        Ok(LoopResult {
            ops: acknowledged,
            elapsed,
            stats: self.nodes.stats() - before,
        })
    }

    /// Stops every node.
    pub async fn shutdown(&self) -> Result<(), BenchError> {
        self.nodes.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransportKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_serves_operations_over_the_driver() {
        let spec = ClusterSpec::new(3, TransportKind::Memory, false, 1);
        let cluster = Raft.start(&spec).await.unwrap();
        let mut ok = 0;
        for seq in 0..200 {
            if cluster.run_op((seq % 4) as usize, seq).await.is_ok() {
                ok += 1;
            }
        }
        assert!(ok >= 198, "only {ok} of 200 operations succeeded");
        assert!(cluster.stats().messages_sent > 0);
        cluster.shutdown().await.unwrap();
    }
}
