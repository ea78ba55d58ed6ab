//! Shootout adapter for Raft ([`raft`]).
//!
//! Each operation proposes the shared 16-byte command ([`crate::command`]) to the node believed
//! to lead, follows "not the leader" hints, and completes when the entry is committed and applied
//! on the leader. The state machine only counts commands, so the figures are the protocol's and
//! the plumbing's, not the application's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::driver::DriverStats;
use common::NodeId;
use raft::{Config, RaftError, RaftNode, Request, Response, StateMachine};

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

    fn apply(&mut self, _command: &[u8; COMMAND_BYTES]) -> u64 {
        self.count += 1;
        self.count
    }

    fn query(&self, _: &()) -> u64 {
        self.count
    }

    fn snapshot(&self) -> Vec<u8> {
        self.count.to_le_bytes().to_vec()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot
            .try_into()
            .map_err(|_| format!("a counter snapshot is 8 bytes, not {}", snapshot.len()))?;
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
            c
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
        let deadline = Instant::now() + wait;
        loop {
            for (i, h) in self.nodes.handles.iter().enumerate() {
                if self.nodes.is_crashed(i) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransportKind;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_serves_operations_over_the_driver() {
        let spec = ClusterSpec {
            nodes: 3,
            transport: TransportKind::Memory,
            durable: false,
            seed: 1,
        };
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
