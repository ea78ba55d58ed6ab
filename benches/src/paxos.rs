//! Shootout adapter for Multi-Paxos ([`paxos`]).
//!
//! Each operation proposes the shared 16-byte command ([`crate::command`]) to the replica
//! believed to lead, follows "not the leader" hints, and completes when the command is chosen
//! and applied on the leader. The replicated state machine only counts commands, so the figures
//! are the protocol's and the plumbing's, not the application's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::driver::DriverStats;
use common::state_machine::{read_frame, write_frame, FRAME_BYTES_MAX};
use paxos::{Config, PaxosError, PaxosNode, Request, Response, StateMachine, StateMachineError};

use crate::{command, BenchError, Cluster, ClusterSpec, Contender, Nodes, COMMAND_BYTES};

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

    fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<(), StateMachineError> {
        write_frame(out, &self.count)
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), StateMachineError> {
        self.count = read_frame(input, FRAME_BYTES_MAX)?
            .ok_or_else(|| StateMachineError::Malformed("empty snapshot".into()))?;
        Ok(())
    }

    fn command_bytes(_: &[u8; COMMAND_BYTES]) -> usize {
        COMMAND_BYTES
    }
}

/// Multi-Paxos as a shootout contender.
#[derive(Clone, Copy, Debug, Default)]
pub struct MultiPaxos;

/// A running Multi-Paxos cluster.
pub struct PaxosCluster {
    nodes: Nodes<PaxosNode<Applied>>,
    /// Index (into the handles) of the replica believed to lead.
    leader: AtomicUsize,
}

#[async_trait]
impl Contender for MultiPaxos {
    fn name(&self) -> &'static str {
        "multi-paxos"
    }

    fn theory(&self, nodes: usize) -> crate::Theory {
        crate::Theory::replicated_log(nodes)
    }

    async fn start(&self, spec: &ClusterSpec) -> Result<Arc<dyn Cluster>, BenchError> {
        let seed = spec.seed;
        let nodes = Nodes::start(spec, move |id, members| {
            let mut c = Config::new(id, members.to_vec());
            c.seed = seed;
            c.into()
        })
        .await?;
        let leader = stable_leader(&nodes, LEADER_WAIT).await?;
        Ok(Arc::new(PaxosCluster {
            nodes,
            leader: AtomicUsize::new(leader),
        }))
    }
}

/// Waits for the steady state: every live replica is quorum-connected and follows the same
/// leader, and that replica leads (its phase 1 is done). Returns the leader's index.
///
/// The first replica to say it leads is not enough. At start every replica is a candidate with
/// a ballot of the same round, and the election settles on the highest node id only once that
/// replica has heard a majority; a load sent to a replica that led before that meets the
/// hand-over. Once every replica is quorum-connected and follows one leader, none holds a
/// higher ballot ([`paxos::Metrics::quorum_connected`]).
async fn stable_leader(
    nodes: &Nodes<PaxosNode<Applied>>,
    wait: Duration,
) -> Result<usize, BenchError> {
    let deadline = Instant::now() + wait;
    loop {
        let mut followed = Vec::new();
        let mut leading = Vec::new();
        let mut connected = true;
        for (i, h) in nodes.handles.iter().enumerate() {
            if nodes.is_crashed(i) {
                continue;
            }
            if let Ok(metrics) = h.metrics().await {
                followed.push(metrics.leader);
                connected &= metrics.quorum_connected;
                if metrics.is_leader {
                    leading.push(i);
                }
            }
        }
        if let [leader] = leading[..] {
            let id = nodes.handles[leader].id();
            if connected && !followed.is_empty() && followed.iter().all(|&l| l == Some(id)) {
                return Ok(leader);
            }
        }
        if Instant::now() >= deadline {
            return Err(BenchError::NotReady("no leader elected".into()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[async_trait]
impl Cluster for PaxosCluster {
    async fn run_op(&self, client: usize, seq: u64) -> Result<(), BenchError> {
        let n = self.nodes.handles.len();
        let i = self.leader.load(Ordering::Relaxed) % n;
        let next = self.nodes.next_live(i);
        let request = Request::Propose {
            command: command(client, seq),
            session: None,
        };
        match self.nodes.handles[i].request(request).await {
            Ok(Response::Applied { .. }) => Ok(()),
            Ok(Response::Failed(PaxosError::NotLeader { leader })) => {
                let to = leader
                    .and_then(|l| self.nodes.handles.iter().position(|h| h.id() == l))
                    .filter(|&j| !self.nodes.is_crashed(j))
                    .unwrap_or(next);
                self.leader.store(to, Ordering::Relaxed);
                Err(BenchError::Op("not the leader".into()))
            }
            Ok(Response::Failed(e)) => Err(BenchError::Op(e.to_string())),
            Ok(Response::Read(_) | Response::Reconfigured { .. }) => {
                Err(BenchError::Op("unexpected answer to a proposal".into()))
            }
            Err(e) => {
                // The replica is gone (crashed in the fault scenario): try the next live one.
                self.leader.store(next, Ordering::Relaxed);
                Err(BenchError::Driver(e))
            }
        }
    }

    fn stats(&self) -> DriverStats {
        self.nodes.stats()
    }

    async fn crash_leader(&self) -> Result<Option<common::NodeId>, BenchError> {
        let leader = stable_leader(&self.nodes, LEADER_WAIT).await?;
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
        let spec = ClusterSpec::new(3, TransportKind::Memory, false, 1);
        let cluster = MultiPaxos.start(&spec).await.unwrap();
        let mut ok = 0;
        for seq in 0..200 {
            if cluster.run_op((seq % 4) as usize, seq).await.is_ok() {
                ok += 1;
            }
        }
        // At most a redirect or two while the client learns who leads.
        assert!(ok >= 198, "only {ok} of 200 operations succeeded");
        assert!(cluster.stats().messages_sent > 0);
        cluster.shutdown().await.unwrap();
    }
}
