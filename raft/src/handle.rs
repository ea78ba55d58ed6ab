//! The async API on the shared tokio driver ([`common::driver`]): [`RaftHandle`] for one node,
//! [`RaftClient`] for a cluster (it follows "not the leader, try node N" hints), and
//! [`spawn_memory_cluster`] to start an in-process cluster over the in-memory network.
//! [`RaftHandle::submit`] and [`RaftHandle::submit_read`] hand a command or read to the node at
//! the call and return a small future, for servers that keep many in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use common::codec::Bincode;
use common::driver::{self, DriverConfig, DriverError, MappedAnswer, NodeHandle, Persistence};
use common::retry::{FollowLeader, Retry, RetryLimits};
use common::transport::memory::MemoryNetwork;
use common::transport::TransportError;
use common::{MemStorage, Node, NodeId, Setup, Storage};
use tokio::sync::broadcast;

use crate::config::Config;
use crate::core::RaftNode;
use crate::error::{RaftError, RecoverError};
use crate::message::{Event, LogIndex, Membership, Metrics, Request, Response};
use crate::state_machine::StateMachine;

/// How many attempts [`RaftClient`] makes on one request before giving up, by default.
pub const CLIENT_RETRIES_MAX: usize = common::retry::ATTEMPTS_MAX_DEFAULT;

/// Why a request through the async API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Raft refused or could not complete the request (for instance "not the leader, try node
    /// N").
    #[error(transparent)]
    Raft(#[from] RaftError),
    /// The driver could not deliver the request or its answer (queue full, node stopped).
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// Starting a node or its transport failed.
    #[error("setup failed: {0}")]
    Setup(String),
    /// The node answered with a response of another kind (a bug).
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The leader this error points to, if any ("try node N").
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            ClientError::Raft(RaftError::NotLeader { leader })
            | ClientError::Raft(RaftError::LeadershipLost { leader }) => *leader,
            _ => None,
        }
    }
}

impl From<RecoverError> for ClientError {
    fn from(e: RecoverError) -> Self {
        ClientError::Setup(e.to_string())
    }
}

impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> Self {
        ClientError::Setup(e.to_string())
    }
}

fn applied<O: std::fmt::Debug>(response: Response<O>) -> Result<(LogIndex, O), ClientError> {
    match response {
        Response::Applied { index, output } => Ok((index, output)),
        Response::Failed(e) => Err(e.into()),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

fn read_output<O: std::fmt::Debug>(response: Response<O>) -> Result<O, ClientError> {
    match response {
        Response::Read(output) => Ok(output),
        Response::Failed(e) => Err(e.into()),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// A proposal handed to the node by [`RaftHandle::submit`]: resolves like
/// [`RaftHandle::propose`], with the entry's log index and the state machine's output.
pub type Proposal<S> =
    MappedAnswer<RaftNode<S>, Result<(LogIndex, <S as StateMachine>::Output), ClientError>>;

/// A read handed to the node by [`RaftHandle::submit_read`]: resolves like
/// [`RaftHandle::read`].
pub type ReadAnswer<S> =
    MappedAnswer<RaftNode<S>, Result<<S as StateMachine>::Output, ClientError>>;

/// A running Raft node: typed calls over the driver's [`NodeHandle`].
pub struct RaftHandle<S: StateMachine> {
    inner: NodeHandle<RaftNode<S>>,
}

impl<S: StateMachine> Clone for RaftHandle<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: StateMachine> RaftHandle<S>
where
    S::Command: Clone,
{
    /// Wraps a driver handle.
    pub fn new(inner: NodeHandle<RaftNode<S>>) -> Self {
        Self { inner }
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id()
    }

    /// The driver handle underneath (stats, shutdown, raw requests).
    pub fn driver(&self) -> &NodeHandle<RaftNode<S>> {
        &self.inner
    }

    /// Proposes `command`; resolves once it is committed and applied, with its log index and
    /// the state machine's output. On a follower: [`RaftError::NotLeader`] naming the leader.
    /// When the node's request queue is full, waits for room (backpressure).
    pub async fn propose(&self, command: S::Command) -> Result<(LogIndex, S::Output), ClientError> {
        applied(self.inner.request(Request::Propose(command)).await?)
    }

    /// [`RaftHandle::propose`] that fails at once with a driver `Busy` error
    /// ([`common::driver::DriverError::Busy`]) when the node's request queue is full, instead of
    /// waiting: for callers that shed load.
    pub async fn try_propose(
        &self,
        command: S::Command,
    ) -> Result<(LogIndex, S::Output), ClientError> {
        applied(self.inner.try_request(Request::Propose(command)).await?)
    }

    /// A linearizable read (ReadIndex or lease, as configured), answered by the leader.
    pub async fn read(&self, query: S::Query) -> Result<S::Output, ClientError> {
        read_output(self.inner.request(Request::Read(query)).await?)
    }

    /// [`RaftHandle::propose`], with the command handed to the node now, at the call, rather
    /// than at the future's first poll (see [`NodeHandle::submit`]). For a server that keeps
    /// many proposals in flight: each waits as a small [`Proposal`], and they reach the node in
    /// the order of the calls. Backpressure is `propose`'s: on a full queue the proposal waits
    /// for room.
    pub fn submit(&self, command: S::Command) -> Proposal<S> {
        self.inner
            .submit(Request::Propose(command))
            .map(|answer| applied(answer?))
    }

    /// [`RaftHandle::read`], handed to the node at the call, like [`RaftHandle::submit`].
    pub fn submit_read(&self, query: S::Query) -> ReadAnswer<S> {
        self.inner
            .submit(Request::Read(query))
            .map(|answer| read_output(answer?))
    }

    /// Hands leadership to `target` (call on the leader); resolves once the target was told
    /// to start its election.
    pub async fn transfer_leadership(&self, target: NodeId) -> Result<(), ClientError> {
        match self
            .inner
            .request(Request::TransferLeadership(target))
            .await?
        {
            Response::TransferStarted => Ok(()),
            Response::Failed(e) => Err(e.into()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Changes the membership (call on the leader): resolves once the new configuration is
    /// committed, with the configuration now in force.
    pub async fn change_membership(
        &self,
        request: Request<S::Command, S::Query>,
    ) -> Result<Membership, ClientError> {
        match self.inner.request(request).await? {
            Response::MembershipChanged { membership, .. } => Ok(*membership),
            Response::Failed(e) => Err(e.into()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Adds `node` as a learner (non-voting member).
    pub async fn add_learner(&self, node: NodeId) -> Result<Membership, ClientError> {
        self.change_membership(Request::AddLearner(node)).await
    }

    /// Makes `node` a voter (promotes a learner, or adds a new node). The leader refuses to
    /// promote a learner that has not caught up ([`RaftError::Busy`]; see
    /// [`Config::promote_lag_entries_max`](crate::Config::promote_lag_entries_max)): ask again.
    pub async fn add_voter(&self, node: NodeId) -> Result<Membership, ClientError> {
        self.change_membership(Request::AddVoter(node)).await
    }

    /// Removes `node` (the leader itself included).
    pub async fn remove_node(&self, node: NodeId) -> Result<Membership, ClientError> {
        self.change_membership(Request::RemoveNode(node)).await
    }

    /// Replaces the voters through joint consensus.
    pub async fn change_voters(
        &self,
        voters: std::collections::BTreeSet<NodeId>,
    ) -> Result<Membership, ClientError> {
        self.change_membership(Request::ChangeVoters(voters)).await
    }

    /// Role, term, leader, commit and applied index, and per-peer replication progress.
    pub async fn metrics(&self) -> Result<Metrics, ClientError> {
        Ok(self.inner.metrics().await?)
    }

    /// Leader changes and snapshots, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.subscribe()
    }

    /// Stops the node.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        Ok(self.inner.shutdown().await?)
    }
}

/// A client of a whole cluster: sends each request to the node it believes leads, and follows
/// "not the leader, try node N" answers by the workspace's one retry policy
/// ([`common::retry::FollowLeader`]: a named leader at once, otherwise the next node after a
/// growing wait, up to [`CLIENT_RETRIES_MAX`] attempts; [`RaftClient::with_retry`] changes the
/// limits).
pub struct RaftClient<S: StateMachine> {
    nodes: BTreeMap<NodeId, RaftHandle<S>>,
    leader: AtomicU64,
    retry: RetryLimits,
}

impl<S: StateMachine> RaftClient<S>
where
    S::Command: Clone,
    S::Query: Clone,
{
    /// A client of the given nodes.
    pub fn new(nodes: Vec<RaftHandle<S>>) -> Self {
        let first = nodes.first().map_or(0, RaftHandle::id);
        Self {
            nodes: nodes.into_iter().map(|h| (h.id(), h)).collect(),
            leader: AtomicU64::new(first),
            retry: RetryLimits::default(),
        }
    }

    /// The same client with other retry limits.
    pub fn with_retry(mut self, retry: RetryLimits) -> Self {
        self.retry = retry;
        self
    }

    /// The nodes' handles.
    pub fn nodes(&self) -> impl Iterator<Item = &RaftHandle<S>> {
        self.nodes.values()
    }

    /// The handle of node `id`.
    pub fn node(&self, id: NodeId) -> Option<&RaftHandle<S>> {
        self.nodes.get(&id)
    }

    async fn with_leader<T, F, Fut>(&self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(RaftHandle<S>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let first = self.leader.load(Ordering::Relaxed);
        let mut policy = FollowLeader::new(ids, first, self.retry);
        loop {
            let target = policy.target();
            let Some(h) = self.nodes.get(&target).cloned() else {
                return Err(ClientError::Setup(format!("no node {target}")));
            };
            let e = match f(h).await {
                Ok(v) => {
                    self.leader.store(target, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => e,
            };
            let next = match &e {
                ClientError::Raft(
                    RaftError::NotLeader { .. }
                    | RaftError::LeadershipLost { .. }
                    | RaftError::TransferInProgress(_),
                ) => policy.redirected(e.leader_hint()),
                ClientError::Driver(DriverError::Stopped) => policy.failed(),
                _ => return Err(e),
            };
            match next {
                Retry::After { target, wait } => {
                    self.leader.store(target, Ordering::Relaxed);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Retry::GiveUp => return Err(e),
            }
        }
    }

    /// Proposes `command` to the leader; see [`RaftHandle::propose`].
    pub async fn propose(&self, command: S::Command) -> Result<(LogIndex, S::Output), ClientError> {
        self.with_leader(|h| {
            let c = command.clone();
            async move { h.propose(c).await }
        })
        .await
    }

    /// A linearizable read at the leader; see [`RaftHandle::read`].
    pub async fn read(&self, query: S::Query) -> Result<S::Output, ClientError> {
        self.with_leader(|h| {
            let q = query.clone();
            async move { h.read(q).await }
        })
        .await
    }

    /// Asks the leader to hand leadership to `target`.
    pub async fn transfer_leadership(&self, target: NodeId) -> Result<(), ClientError> {
        self.with_leader(|h| async move { h.transfer_leadership(target).await })
            .await
    }

    /// Changes the membership through the leader; see [`RaftHandle::change_membership`].
    pub async fn change_membership(
        &self,
        request: Request<S::Command, S::Query>,
    ) -> Result<Membership, ClientError> {
        self.with_leader(|h| {
            let r = request.clone();
            async move { h.change_membership(r).await }
        })
        .await
    }

    /// The leader the client currently believes in.
    pub fn leader_guess(&self) -> NodeId {
        self.leader.load(Ordering::Relaxed)
    }

    /// Stops every node.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        for h in self.nodes.values() {
            h.shutdown().await?;
        }
        Ok(())
    }
}

/// Starts `configs.len()` nodes over one in-memory network with in-memory storage (its `sync`
/// is free, so the driver persists inline), and returns a client of the cluster. Must be called
/// within a tokio runtime.
pub fn spawn_memory_cluster<S: StateMachine + Default>(
    configs: Vec<Config>,
    network: &MemoryNetwork,
    driver_config: DriverConfig,
) -> Result<RaftClient<S>, ClientError> {
    spawn_memory_cluster_with(
        configs.into_iter().map(Setup::from).collect(),
        network,
        driver_config,
    )
}

/// [`spawn_memory_cluster`] with state machines built by the factories in `setups` (which need
/// not be `Default`).
pub fn spawn_memory_cluster_with<S: StateMachine>(
    setups: Vec<Setup<Config, S>>,
    network: &MemoryNetwork,
    driver_config: DriverConfig,
) -> Result<RaftClient<S>, ClientError> {
    let mut handles = Vec::new();
    for setup in setups {
        let id = setup.config.id;
        let storage = MemStorage::new();
        let core = RaftNode::<S>::recover_with_snapshots(setup, vec![], storage.snapshots())?;
        let transport = network.join(id)?;
        let config = DriverConfig {
            persistence: Persistence::Inline,
            ..driver_config
        };
        let h = driver::spawn(core, transport, storage, Bincode, config)?;
        handles.push(RaftHandle::new(h));
    }
    Ok(RaftClient::new(handles))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvCommand, KvOutput, KvQuery, KvStore};
    use crate::message::Role;

    fn configs(n: u64) -> Vec<Config> {
        (1..=n)
            .map(|id| Config::new(id, (1..=n).collect()))
            .collect()
    }

    async fn wait_leader(client: &RaftClient<KvStore>) -> NodeId {
        for _ in 0..1_000 {
            for h in client.nodes() {
                let m = h.metrics().await.unwrap();
                if m.role == Role::Leader {
                    return m.id;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no leader elected");
    }

    #[tokio::test(start_paused = true)]
    async fn propose_read_and_not_leader_hint_through_the_driver() {
        let net = MemoryNetwork::new(1);
        let client: RaftClient<KvStore> =
            spawn_memory_cluster(configs(3), &net, DriverConfig::default()).unwrap();
        let leader = wait_leader(&client).await;
        let put = KvCommand::Put {
            key: "a".into(),
            value: "1".into(),
        };
        let (index, out) = client.propose(put.clone()).await.unwrap();
        assert!(index >= 2);
        assert_eq!(
            out,
            KvOutput::Value(None),
            "a put answers the previous value"
        );
        assert_eq!(
            client.read(KvQuery::Get("a".into())).await.unwrap(),
            KvOutput::Value(Some("1".into()))
        );
        let follower = client.nodes().find(|h| h.id() != leader).unwrap();
        let err = follower.propose(put).await.unwrap_err();
        assert_eq!(err.leader_hint(), Some(leader));
        assert_eq!(
            err.to_string(),
            format!("not the leader, try node {leader}")
        );
        // The non-waiting form serves as well when the queue has room.
        let b = KvCommand::Put {
            key: "b".into(),
            value: "2".into(),
        };
        let (b_index, _) = client.node(leader).unwrap().try_propose(b).await.unwrap();
        assert!(b_index > index);
        let m = client.node(leader).unwrap().metrics().await.unwrap();
        assert_eq!(m.commit_index, m.applied_index);
        assert_eq!(m.progress.len(), 2);
        client.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn submitted_proposals_and_reads_are_answered_like_awaited_ones() {
        let net = MemoryNetwork::new(4);
        let client: RaftClient<KvStore> =
            spawn_memory_cluster(configs(3), &net, DriverConfig::default()).unwrap();
        let leader = wait_leader(&client).await;
        let h = client.node(leader).unwrap();
        // Handed over at the call, in call order, whatever order the answers are awaited in.
        let puts: Vec<_> = ["1", "2"]
            .into_iter()
            .map(|v| {
                h.submit(KvCommand::Put {
                    key: "a".into(),
                    value: v.into(),
                })
            })
            .collect();
        let read = h.submit_read(KvQuery::Get("a".into()));
        let mut outputs = Vec::new();
        for put in puts.into_iter().rev() {
            outputs.push(put.await.unwrap());
        }
        let ((second, after_first), (first, before)) = (outputs[0].clone(), outputs[1].clone());
        assert!(second > first, "the puts reached the log in call order");
        assert_eq!(
            (before, after_first),
            (KvOutput::Value(None), KvOutput::Value(Some("1".into())))
        );
        // The read ran concurrently with the puts: it sees none, the first, or both.
        let seen = read.await.unwrap();
        assert!(
            [None, Some("1"), Some("2")]
                .into_iter()
                .any(|v| seen == KvOutput::Value(v.map(String::from))),
            "{seen:?}"
        );
        assert_eq!(
            h.submit_read(KvQuery::Get("a".into())).await.unwrap(),
            KvOutput::Value(Some("2".into())),
            "a read after both answers sees both"
        );
        // A follower's answers carry the leader hint, as `propose`'s do.
        let follower = client.nodes().find(|h| h.id() != leader).unwrap();
        let err = follower.submit(KvCommand::Nop).await.unwrap_err();
        assert_eq!(err.leader_hint(), Some(leader));
        let err = follower
            .submit_read(KvQuery::Get("a".into()))
            .await
            .unwrap_err();
        assert_eq!(err.leader_hint(), Some(leader));
        client.shutdown().await.unwrap();
        // A stopped node fails what is submitted to it, with the stop cause.
        assert!(matches!(
            h.submit(KvCommand::Nop).await,
            Err(ClientError::Driver(DriverError::Stopped))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn membership_changes_through_the_driver() {
        // Node 4 starts outside the cluster (a learner in its own eyes) and joins.
        let mut cs = configs(3);
        for c in &mut cs {
            c.known_nodes = vec![4];
        }
        let mut four = Config::new(4, vec![1, 2, 3]);
        four.learners = vec![4];
        cs.push(four);
        let net = MemoryNetwork::new(3);
        let client: RaftClient<KvStore> =
            spawn_memory_cluster(cs, &net, DriverConfig::default()).unwrap();
        wait_leader(&client).await;
        client.propose(KvCommand::Nop).await.unwrap();
        let m = client
            .change_membership(Request::AddLearner(4))
            .await
            .unwrap();
        assert!(m.learners.contains(&4));
        // The leader promotes the learner only once it has caught up; until then it answers
        // Busy, and the caller asks again.
        let mut promoted = None;
        for _ in 0..100 {
            match client.change_membership(Request::AddVoter(4)).await {
                Ok(m) => {
                    promoted = Some(m);
                    break;
                }
                Err(ClientError::Raft(RaftError::Busy(_))) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => panic!("promotion failed: {e}"),
            }
        }
        let m = promoted.expect("the learner was never promoted");
        assert_eq!(m.voters.len(), 4);
        let m = client
            .change_membership(Request::ChangeVoters([2, 3, 4].into_iter().collect()))
            .await
            .unwrap();
        assert_eq!(
            (m.voters.into_iter().collect::<Vec<_>>(), m.voters_outgoing),
            (vec![2, 3, 4], None)
        );
        // Node 1 is out (it may have been the leader); the cluster still commits.
        client.propose(KvCommand::Nop).await.unwrap();
        let m4 = client.node(4).unwrap().metrics().await.unwrap();
        assert!(m4.membership.voters.contains(&4));
        client.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_transfer_through_the_driver() {
        let net = MemoryNetwork::new(2);
        let client: RaftClient<KvStore> =
            spawn_memory_cluster(configs(3), &net, DriverConfig::default()).unwrap();
        let leader = wait_leader(&client).await;
        let target = if leader == 1 { 2 } else { 1 };
        // Make sure the target has the no-op before the transfer.
        client.propose(KvCommand::Nop).await.unwrap();
        client.transfer_leadership(target).await.unwrap();
        let mut now = 0;
        for _ in 0..1_000 {
            let m = client.node(target).unwrap().metrics().await.unwrap();
            if m.role == Role::Leader {
                now = m.id;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(now, target);
        // The client finds the new leader by itself.
        client.propose(KvCommand::Nop).await.unwrap();
        client.shutdown().await.unwrap();
    }
}
