//! The one adapter both atomic-commit protocols run through: an in-process cluster of cores
//! pumped by hand ([`CoreCluster`]: the protocol's own cost and its message count), a cluster on
//! the shared driver over the in-memory network ([`DriverCluster`]: end to end), and the shootout
//! contender (every [`CommitProtocol`] is a [`Contender`]).
//!
//! `twopc` and `threepc` implement the same [`AtomicCommit`] skeleton from `common::txn` (the
//! same request, answer, client and metrics counters), so the adapter is written once over it;
//! a protocol only names its node type, its configuration and its theory figures
//! ([`CommitProtocol`]). `benches::twopc` and `benches::threepc` are those instantiations; their
//! tests run the shared checks of the `checks` module (test builds only), each with the
//! protocol's own expected message counts.
//!
//! In the shootout, node 1 coordinates and every other node is a participant. Client `c`'s
//! operation is one transaction writing its command to key `c{c}` at every participant (each
//! client has its own keys, so concurrent transactions never conflict); it completes when the
//! coordinator answers Committed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use common::codec::Bincode;
use common::driver::{self, DriverConfig, DriverError, DriverStats, Persistence};
use common::transport::memory::MemoryNetwork;
use common::txn::{AtomicCommit, ClientError, MemKv, Outcome, Request, Response, TxClient, Write};
use common::wal::{Wal, WalConfig};
use common::{pump, MemStorage, Node, NodeId, Storage};

use crate::{BenchError, Cluster, ClusterSpec, Contender, Nodes, Theory};

/// Keys each participant cycles through, so the stores stay small however long a bench runs.
pub const KEYS_PER_PARTICIPANT: u64 = 1024;
/// The coordinator's id; participants are `2..=participants + 1`.
pub const COORDINATOR: NodeId = 1;

/// An atomic-commit protocol as the benchmarks and the shootout see it.
pub trait CommitProtocol: Copy + Default + Send + Sync + 'static {
    /// The protocol's node, over the in-memory key-value resource.
    type Node: AtomicCommit<Resource = MemKv>;
    /// The protocol's name in tables (`"2pc"`, `"3pc"`).
    const NAME: &'static str;
    /// Round trips from the coordinator to the participants of a committing transaction.
    const ROUNDS: u32;
    /// Messages per participant of a committing transaction, in theory.
    const MESSAGES_PER_PARTICIPANT: u64;

    /// The default configuration of node `id` of `members`.
    fn config(id: NodeId, members: Vec<NodeId>) -> <Self::Node as Node>::Config;
}

/// Names this module's generic types for one protocol, in that protocol's module:
/// `CoreCluster`, `DriverCluster` and the shootout cluster (named by the second argument).
macro_rules! protocol_types {
    ($protocol:ident, $cluster:ident) => {
        #[doc = concat!("Cores of [`", stringify!($protocol), "`] in one process, pumped by hand.")]
        pub type CoreCluster = $crate::commit::CoreCluster<$protocol>;
        #[doc = concat!("A [`", stringify!($protocol), "`] cluster on the shared driver.")]
        pub type DriverCluster = $crate::commit::DriverCluster<$protocol>;
        #[doc = concat!("A running shootout cluster of [`", stringify!($protocol), "`].")]
        pub type $cluster = $crate::commit::CommitCluster<$protocol>;
    };
}
pub(crate) use protocol_types;

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

/// A coordinator and its participants pumped by hand in one thread ([`common::pump`]): no
/// driver, no codec, records counted durable but not kept. Messages are delivered in FIFO
/// order until none is in flight.
pub struct CoreCluster<P: CommitProtocol> {
    cluster: pump::Cluster<P::Node>,
    participants: usize,
    /// Messages delivered so far.
    pub messages: u64,
}

impl<P: CommitProtocol> CoreCluster<P> {
    /// A coordinator and `participants` participants.
    pub fn new(participants: usize) -> Self {
        let ids = members(participants);
        let mut cluster = pump::Cluster::new(
            ids.iter()
                .map(|&id| (id, P::config(id, ids.clone()), Vec::new())),
            0,
        );
        cluster.keep_records = false;
        Self {
            cluster,
            participants,
            messages: 0,
        }
    }

    /// Runs transaction `i` to the end; returns its outcome (if the client got one) and the
    /// messages it took.
    pub fn commit(&mut self, i: u64) -> (Option<Outcome>, u64) {
        let before = self.cluster.delivered;
        let req = Request::Commit {
            writes: writes_for(self.participants, i),
        };
        let rid = self.cluster.submit(COORDINATOR, req);
        while self.cluster.deliver_one() {}
        let outcome = match self.cluster.take_response(rid) {
            Some(Response::Outcome { outcome, .. }) => Some(outcome),
            _ => None,
        };
        let messages = self.cluster.delivered - before;
        self.messages += messages;
        (outcome, messages)
    }
}

/// A cluster on the shared driver over the in-memory network, with in-memory or WAL storage.
pub struct DriverCluster<P: CommitProtocol> {
    /// One client per node; the first is the coordinator's.
    pub clients: Vec<TxClient<P::Node>>,
    participants: usize,
}

impl<P: CommitProtocol> DriverCluster<P> {
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
            let core = P::Node::recover(P::config(id, ids.clone()), vec![])
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

/// A running shootout cluster of protocol `P`.
pub struct CommitCluster<P: CommitProtocol> {
    nodes: Nodes<P::Node>,
}

#[async_trait]
impl<P: CommitProtocol> Contender for P {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn theory(&self, nodes: usize) -> Theory {
        Theory::commit_rounds(nodes, P::ROUNDS)
    }

    async fn start(&self, spec: &ClusterSpec) -> Result<Arc<dyn Cluster>, BenchError> {
        if spec.nodes < 2 {
            return Err(BenchError::Invalid(
                "a commit protocol needs a coordinator and at least one participant".into(),
            ));
        }
        let nodes = Nodes::start(spec, |id, members| P::config(id, members.to_vec())).await?;
        // No leader to wait for: the coordinator serves at once.
        Ok(Arc::new(CommitCluster::<P> { nodes }))
    }
}

impl<P: CommitProtocol> CommitCluster<P> {
    /// The shared counters of every live node, summed by `pick`.
    async fn sum_live(
        &self,
        pick: impl Fn(&<P::Node as Node>::Metrics) -> u64,
    ) -> Result<u64, BenchError> {
        let mut total = 0;
        for (i, handle) in self.nodes.handles.iter().enumerate() {
            if self.nodes.is_crashed(i) {
                continue;
            }
            total += pick(&handle.metrics().await?);
        }
        Ok(total)
    }
}

#[async_trait]
impl<P: CommitProtocol> Cluster for CommitCluster<P> {
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

    async fn undecided(&self) -> Result<Option<u64>, BenchError> {
        let undecided = self.sum_live(|m| P::Node::undecided(m) as u64).await?;
        Ok(Some(undecided))
    }

    /// Slows the coordinator's (node 1's) links to the participants.
    async fn slow_leader_links(
        &self,
        delay: std::time::Duration,
        window: std::time::Duration,
    ) -> Result<Option<NodeId>, BenchError> {
        if !self.nodes.slow_links_from(COORDINATOR, delay) {
            return Ok(None);
        }
        tokio::time::sleep(window).await;
        self.nodes.heal_links();
        Ok(Some(COORDINATOR))
    }

    async fn decision_conflicts(&self) -> Result<Option<u64>, BenchError> {
        let conflicts = self.sum_live(P::Node::decision_conflicts).await?;
        Ok(Some(conflicts))
    }

    async fn shutdown(&self) -> Result<(), BenchError> {
        self.nodes.shutdown().await
    }
}

/// Checks every protocol's benchmark adapter passes, each called from the protocol's own test
/// with what it expects.
#[cfg(test)]
pub(crate) mod checks {
    use super::*;
    use crate::TransportKind;

    /// One committing transaction on the hand-pumped cores, with 1, 3 and 5 participants,
    /// commits and takes `expected(participants)` messages.
    pub(crate) fn core_commit_costs<P: CommitProtocol>(expected: impl Fn(usize) -> u64) {
        for n in [1usize, 3, 5] {
            let mut cluster = CoreCluster::<P>::new(n);
            let (outcome, messages) = cluster.commit(0);
            assert_eq!(outcome, Some(Outcome::Committed));
            assert_eq!(messages, expected(n), "{n} participants");
        }
    }

    /// The shootout contender, with a coordinator and 3 participants, commits 20 transactions
    /// with [`CommitProtocol::MESSAGES_PER_PARTICIPANT`] messages per participant each.
    pub(crate) async fn contender_commits_with_theory_messages<P: CommitProtocol>() {
        let spec = ClusterSpec::new(4, TransportKind::Memory, false, 5);
        let cluster = P::default().start(&spec).await.unwrap();
        let ops = 20u64;
        for seq in 0..ops {
            cluster.run_op((seq % 3) as usize, seq).await.unwrap();
        }
        cluster.shutdown().await.unwrap();
        // Acks may still be in flight when the last answer arrives; after shutdown every node's
        // counters are final. 3 participants.
        let per_op = P::MESSAGES_PER_PARTICIPANT * 3;
        let sent = cluster.stats().messages_sent;
        assert!(
            sent <= ops * per_op,
            "{sent} messages for {ops} transactions"
        );
        assert!(
            sent >= (ops - 1) * per_op,
            "{sent} messages for {ops} transactions"
        );
    }
}
