//! What the benchmark adapters of the two atomic-commit protocols share.
//!
//! `twopc` and `threepc` expose the same shape of API (a node type, `Config`, `Request`,
//! `Response`, `TxClient`) without depending on each other, so their adapters differ only in
//! names and in the theory figures. One macro writes both, so a fix lands in both at once.

/// Writes the commit-protocol adapter items (core cluster, driver cluster, shootout contender)
/// into the calling module for protocol crate `$krate`.
macro_rules! commit_adapter {
    (
        krate: $krate:ident,
        node: $node:ident,
        contender: $contender:ident,
        cluster: $cluster:ident,
        name: $name:literal,
        rounds: $rounds:literal,
        per_participant: $per_participant:literal,
        theory_doc: $theory_doc:literal $(,)?
    ) => {
        use std::collections::{BTreeMap, VecDeque};
        use std::path::Path;
        use std::sync::Arc;

        use async_trait::async_trait;

        use common::codec::Bincode;
        use common::driver::{self, DriverConfig, DriverError, DriverStats, Persistence};
        use common::transport::memory::MemoryNetwork;
        use common::txn::{AtomicCommit, Outcome, Write};
        use common::wal::{Wal, WalConfig};
        use common::{MemStorage, Node, NodeId, Outbox, RequestId, Storage};
        use $krate::{$node, ClientError, Config, Message, Request, Response, TxClient};

        use $crate::{BenchError, Cluster, ClusterSpec, Contender, Nodes};

        #[doc = $theory_doc]
        pub const THEORY_MESSAGES_PER_PARTICIPANT: u64 = $per_participant;
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
            nodes: BTreeMap<NodeId, $node>,
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
                        $node::recover(Config::new(id, ids.clone()), vec![])
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
                let mut out: Outbox<$node> = Outbox::new();
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
            pub fn start_wal(
                participants: usize,
                seed: u64,
                dir: &Path,
            ) -> Result<Self, DriverError> {
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
                    let core = $node::recover(Config::new(id, ids.clone()), vec![])
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

        /// The protocol as a shootout contender (see the module documentation).
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $contender;

        /// A running cluster of the shootout.
        pub struct $cluster {
            nodes: Nodes<$node>,
        }

        #[async_trait]
        impl Contender for $contender {
            fn name(&self) -> &'static str {
                $name
            }

            fn theory(&self, nodes: usize) -> $crate::Theory {
                $crate::Theory::commit_rounds(nodes, $rounds)
            }

            async fn start(&self, spec: &ClusterSpec) -> Result<Arc<dyn Cluster>, BenchError> {
                if spec.nodes < 2 {
                    return Err(BenchError::Invalid(
                        "a commit protocol needs a coordinator and at least one participant".into(),
                    ));
                }
                let nodes =
                    Nodes::start(spec, |id, members| Config::new(id, members.to_vec())).await?;
                // No leader to wait for: the coordinator serves at once.
                Ok(Arc::new($cluster { nodes }))
            }
        }

        #[async_trait]
        impl Cluster for $cluster {
            async fn run_op(&self, client: usize, seq: u64) -> Result<(), BenchError> {
                let command = $crate::command(client, seq);
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
                    Response::Outcome { tx, outcome } => {
                        Err(BenchError::Op(format!("{tx} {outcome}")))
                    }
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
                let mut undecided = 0;
                for (i, handle) in self.nodes.handles.iter().enumerate() {
                    if self.nodes.is_crashed(i) {
                        continue;
                    }
                    let metrics = handle.metrics().await?;
                    undecided += <$node as AtomicCommit>::undecided(&metrics) as u64;
                }
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
                let mut conflicts = 0;
                for (i, handle) in self.nodes.handles.iter().enumerate() {
                    if self.nodes.is_crashed(i) {
                        continue;
                    }
                    let metrics = handle.metrics().await?;
                    conflicts += <$node as AtomicCommit>::decision_conflicts(&metrics);
                }
                Ok(Some(conflicts))
            }

            async fn shutdown(&self) -> Result<(), BenchError> {
                self.nodes.shutdown().await
            }
        }
    };
}

pub(crate) use commit_adapter;
