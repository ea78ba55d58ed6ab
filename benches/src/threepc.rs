//! Three-phase commit for the benchmarks and the shootout: an in-process cluster of cores pumped
//! by hand (the protocol's own cost and its message count) and a cluster on the shared driver over
//! the in-memory network (end to end); and the shootout contender [`ThreePc`].
//!
//! In the shootout, node 1 coordinates and every other node is a participant. Client `c`'s
//! operation is one transaction writing its command to key `c{c}` at every participant (each
//! client has its own keys, so concurrent transactions never conflict); it completes when the
//! coordinator answers Committed. Theory: 6 messages per participant
//! ([`THEORY_MESSAGES_PER_PARTICIPANT`]), so `6 * (nodes - 1)` per operation.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use common::codec::Bincode;
use common::driver::{self, DriverConfig, DriverError, DriverStats, Persistence};
use common::transport::memory::MemoryNetwork;
use common::txn::{Outcome, Write};
use common::wal::{Wal, WalConfig};
use common::{MemStorage, Node, NodeId, Outbox, RequestId, Storage};
use threepc::{ClientError, Config, Message, Request, Response, ThreePcNode, TxClient};

use crate::{BenchError, Cluster, ClusterSpec, Contender, Nodes};

/// Messages per participant of a committing transaction, in theory: CanCommit, Vote, PreCommit,
/// PreCommitAck, DoCommit, HaveCommitted.
pub const THEORY_MESSAGES_PER_PARTICIPANT: u64 = 6;
/// Keys each participant cycles through, so the stores stay small however long a bench runs.
pub const KEYS_PER_PARTICIPANT: u64 = 1024;
/// The coordinator's id; participants are `2..=participants + 1`.
pub const COORDINATOR: NodeId = 1;

/// The member ids of a cluster with `participants` participants.
pub fn members(participants: usize) -> Vec<NodeId> {
    (1..=participants as NodeId + 1).collect()
}

/// Transaction number `i`: one write at every participant, on a key no concurrent transaction
/// of the same stream touches.
pub fn writes_for(participants: usize, i: u64) -> BTreeMap<NodeId, Vec<Write>> {
    (2..=participants as NodeId + 1)
        .map(|p| {
            let key = format!("k{}", i % KEYS_PER_PARTICIPANT);
            (p, vec![Write::put(key, i.to_le_bytes().to_vec())])
        })
        .collect()
}

/// Cores in one process, messages moved by hand, nothing persisted: what the protocol itself
/// costs, and how many messages it sends.
pub struct CoreCluster {
    nodes: BTreeMap<NodeId, ThreePcNode>,
    participants: usize,
    next_request: u64,
    /// Messages delivered so far.
    pub messages: u64,
}

impl CoreCluster {
    /// A coordinator and `participants` participants.
    pub fn new(participants: usize) -> Self {
        let ids = members(participants);
        let nodes = ids
            .iter()
            .filter_map(|&id| {
                ThreePcNode::recover(Config::new(id, ids.clone()), vec![])
                    .ok()
                    .map(|n| (id, n))
            })
            .collect();
        Self {
            nodes,
            participants,
            next_request: 0,
            messages: 0,
        }
    }

    /// Runs transaction `i` to the end; returns its outcome (if the client got one) and the
    /// messages it took.
    pub fn commit(&mut self, i: u64) -> (Option<Outcome>, u64) {
        let before = self.messages;
        let mut out: Outbox<ThreePcNode> = Outbox::new();
        self.next_request += 1;
        let req = Request::Commit {
            writes: writes_for(self.participants, i),
        };
        if let Some(c) = self.nodes.get_mut(&COORDINATOR) {
            c.handle_request(RequestId(self.next_request), req, &mut out);
        }
        let mut outcome = None;
        let mut queue: VecDeque<(NodeId, NodeId, Message)> = VecDeque::new();
        let mut from = COORDINATOR;
        loop {
            let effects = out.take();
            for (_, r) in effects.responses {
                if let Response::Outcome { outcome: o, .. } = r {
                    outcome = Some(o);
                }
            }
            queue.extend(effects.messages.into_iter().map(|(to, m)| (from, to, m)));
            let Some((src, to, msg)) = queue.pop_front() else {
                break;
            };
            self.messages += 1;
            from = to;
            if let Some(n) = self.nodes.get_mut(&to) {
                n.handle_message(src, msg, &mut out);
            }
        }
        (outcome, self.messages - before)
    }
}

/// A cluster on the shared driver over the in-memory network, with in-memory or WAL storage.
pub struct DriverCluster {
    /// One client per node; the first is the coordinator's.
    pub clients: Vec<TxClient>,
    participants: usize,
}

impl DriverCluster {
    /// Starts a coordinator and `participants` participants with in-memory storage. Must run
    /// inside a tokio runtime.
    pub fn start(participants: usize, seed: u64) -> Result<Self, DriverError> {
        let config = DriverConfig {
            persistence: Persistence::Inline,
            ..DriverConfig::default()
        };
        Self::start_with(participants, seed, config, |_| Ok(MemStorage::new()))
    }

    /// Starts the same cluster with each node's log in a write-ahead log (fsync per batch) under
    /// `dir`. Must run inside a tokio runtime.
    pub fn start_wal(participants: usize, seed: u64, dir: &Path) -> Result<Self, DriverError> {
        let config = DriverConfig {
            persistence: Persistence::Background,
            ..DriverConfig::default()
        };
        Self::start_with(participants, seed, config, |id| {
            Wal::open(WalConfig::new(dir.join(format!("node-{id}"))))
                .map_err(|e| DriverError::Config(e.to_string()))
        })
    }

    fn start_with<S: Storage>(
        participants: usize,
        seed: u64,
        config: DriverConfig,
        storage: impl Fn(NodeId) -> Result<S, DriverError>,
    ) -> Result<Self, DriverError> {
        let network = MemoryNetwork::new(seed);
        let ids = members(participants);
        let mut clients = Vec::new();
        for &id in &ids {
            let core = ThreePcNode::recover(Config::new(id, ids.clone()), vec![])
                .map_err(|e| DriverError::Config(e.to_string()))?;
            let transport = network
                .join(id)
                .map_err(|e| DriverError::Config(e.to_string()))?;
            clients.push(TxClient::new(driver::spawn(
                core,
                transport,
                storage(id)?,
                Bincode,
                config,
            )?));
        }
        Ok(Self {
            clients,
            participants,
        })
    }

    /// Runs transaction `i` through the coordinator.
    pub async fn commit(&self, i: u64) -> Result<Outcome, ClientError> {
        let mut tx = self.clients[0].begin();
        for (p, writes) in writes_for(self.participants, i) {
            for w in writes {
                match w.value {
                    Some(v) => tx.write(p, w.key, v),
                    None => tx.delete(p, w.key),
                };
            }
        }
        tx.commit().await
    }

    /// Stops every node.
    pub async fn shutdown(&self) {
        for c in &self.clients {
            let _ = c.handle().shutdown().await;
        }
    }
}

/// 3PC as a shootout contender (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreePc;

/// A running cluster of the shootout.
pub struct ThreePcCluster {
    nodes: Nodes<ThreePcNode>,
}

#[async_trait]
impl Contender for ThreePc {
    fn name(&self) -> &'static str {
        "3pc"
    }

    fn theory(&self, nodes: usize) -> crate::Theory {
        crate::Theory::commit_rounds(nodes, 3)
    }

    async fn start(&self, spec: &ClusterSpec) -> Result<Arc<dyn Cluster>, BenchError> {
        if spec.nodes < 2 {
            return Err(BenchError::Invalid(
                "a commit protocol needs a coordinator and at least one participant".into(),
            ));
        }
        let nodes = Nodes::start(spec, |id, members| Config::new(id, members.to_vec())).await?;
        // No leader to wait for: the coordinator serves at once.
        Ok(Arc::new(ThreePcCluster { nodes }))
    }
}

#[async_trait]
impl Cluster for ThreePcCluster {
    async fn run_op(&self, client: usize, seq: u64) -> Result<(), BenchError> {
        let command = crate::command(client, seq);
        let writes: BTreeMap<NodeId, Vec<Write>> = (2..=self.nodes.handles.len() as NodeId)
            .map(|p| (p, vec![Write::put(format!("c{client}"), command.to_vec())]))
            .collect();
        match self.nodes.handles[0]
            .request(Request::Commit { writes })
            .await?
        {
            Response::Outcome {
                outcome: Outcome::Committed,
                ..
            } => Ok(()),
            Response::Outcome { tx, outcome } => Err(BenchError::Op(format!("{tx} {outcome}"))),
            Response::Failed(e) => Err(BenchError::Op(e.to_string())),
        }
    }

    fn stats(&self) -> DriverStats {
        self.nodes.stats()
    }

    /// Crashes the coordinator (node 1) for good. Nothing takes its place: a blocked
    /// transaction waits for it, which is the scenario's point.
    async fn crash_leader(&self) -> Result<Option<NodeId>, BenchError> {
        Ok(Some(self.nodes.crash(0).await))
    }

    async fn shutdown(&self) -> Result<(), BenchError> {
        self.nodes.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committing_transaction_costs_six_messages_per_participant() {
        for n in [1usize, 3, 5] {
            let mut cluster = CoreCluster::new(n);
            let (outcome, messages) = cluster.commit(0);
            assert_eq!(outcome, Some(Outcome::Committed));
            assert_eq!(
                messages,
                THEORY_MESSAGES_PER_PARTICIPANT * n as u64,
                "{n} participants"
            );
        }
    }

    #[tokio::test]
    async fn the_contender_commits_with_the_theoretical_message_count() {
        let spec = ClusterSpec {
            nodes: 4,
            transport: crate::TransportKind::Memory,
            durable: false,
            seed: 5,
        };
        let cluster = ThreePc.start(&spec).await.unwrap();
        let ops = 20u64;
        for seq in 0..ops {
            cluster.run_op((seq % 3) as usize, seq).await.unwrap();
        }
        cluster.shutdown().await.unwrap();
        // Acks may still be in flight when the last answer arrives; after shutdown every node's
        // counters are final. 6 messages per participant, 3 participants.
        let sent = cluster.stats().messages_sent;
        assert!(
            sent <= ops * 6 * 3,
            "{sent} messages for {ops} transactions"
        );
        assert!(
            sent >= (ops - 1) * 6 * 3,
            "{sent} messages for {ops} transactions"
        );
    }
}
