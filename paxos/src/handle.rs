//! The async API: replicas run by the workspace's tokio driver ([`common::driver`]).
//!
//! - [`PaxosHandle`] talks to one replica: [`PaxosHandle::propose`] answers once the command is chosen
//!   and applied *on that replica* (it must lead), [`PaxosHandle::read`] is a linearizable read
//!   (confirmed by a quorum round), [`PaxosHandle::reconfigure`] changes the set of acceptors and
//!   answers once the change took effect, [`PaxosHandle::metrics`] shows the leader, ballot, decided
//!   and applied slots, slots in flight and the configuration (epoch and members).
//!   [`PaxosHandle::submit`] and [`PaxosHandle::submit_read`] hand a command or read to the
//!   replica at the call and return a small future, for servers that keep many in flight.
//! - [`PaxosClient`] talks to a whole cluster: it follows "not the leader" hints, and retries a
//!   command whose outcome it did not learn with the same [`Session`], so a command is applied
//!   at most once however often it is retried (at most [`CLIENT_RETRIES_MAX`] attempts, by the
//!   workspace's one retry policy, [`common::retry::FollowLeader`]: a named leader at once,
//!   otherwise the next replica after a wait that starts at [`CLIENT_RETRY_BACKOFF`] and grows).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::codec::Bincode;
use common::driver::{self, DriverConfig, DriverError, MappedAnswer, NodeHandle};
use common::retry::{FollowLeader, Retry, RetryLimits};
use common::transport::Transport;
use common::{NodeId, Setup, Storage};

use crate::{Config, Metrics, PaxosError, PaxosNode, Request, Response, Session, StateMachine};

/// Most attempts of one [`PaxosClient`] operation before it gives up, by default.
pub const CLIENT_RETRIES_MAX: usize = 200;
/// The first pause of a [`PaxosClient`] after an attempt that found no leader (the pauses then
/// grow, by the workspace's retry policy, [`common::retry`]).
pub const CLIENT_RETRY_BACKOFF: Duration = Duration::from_millis(10);

/// Why an operation through a [`PaxosHandle`] or [`PaxosClient`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The driver could not deliver the request or the node stopped.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
    /// The replica refused or could not complete the request.
    #[error("paxos: {0}")]
    Paxos(#[from] PaxosError),
    /// A [`PaxosClient`] exhausted its retries.
    #[error("gave up after {0} attempts")]
    GaveUp(usize),
    /// The replica answered with a response of the wrong kind (a bug).
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

fn applied<O: std::fmt::Debug>(response: Response<O>) -> Result<O, ClientError> {
    match response {
        Response::Applied { output, .. } => Ok(output),
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

/// A proposal handed to a replica by [`PaxosHandle::submit`]: resolves like
/// [`PaxosHandle::propose`], with the state machine's output.
pub type Proposal<S> = MappedAnswer<PaxosNode<S>, Result<<S as StateMachine>::Output, ClientError>>;

/// A read handed to a replica by [`PaxosHandle::submit_read`]: resolves like
/// [`PaxosHandle::read`].
pub type ReadAnswer<S> =
    MappedAnswer<PaxosNode<S>, Result<<S as StateMachine>::Output, ClientError>>;

/// One replica run by the tokio driver.
pub struct PaxosHandle<S: StateMachine> {
    node: NodeHandle<PaxosNode<S>>,
}

impl<S: StateMachine> Clone for PaxosHandle<S> {
    fn clone(&self) -> Self {
        PaxosHandle {
            node: self.node.clone(),
        }
    }
}

impl<S: StateMachine> PaxosHandle<S> {
    /// Starts a replica over `transport`, recovering it from `storage` (records encoded with the
    /// workspace's [`Bincode`] codec, snapshot files in [`Storage::snapshots`]), with a state
    /// machine built by `S::default()`. Must be called inside a tokio runtime.
    pub async fn spawn<T: Transport, St: Storage>(
        config: Config,
        transport: T,
        storage: St,
        driver_config: DriverConfig,
    ) -> Result<Self, ClientError>
    where
        S: Default,
    {
        Self::spawn_with(config.into(), transport, storage, driver_config).await
    }

    /// [`PaxosHandle::spawn`] with a state machine built by `setup`'s factory (one that opens a
    /// database, say).
    pub async fn spawn_with<T: Transport, St: Storage>(
        setup: Setup<Config, S>,
        transport: T,
        storage: St,
        driver_config: DriverConfig,
    ) -> Result<Self, ClientError> {
        let node = driver::spawn_recovered::<PaxosNode<S>, T, St, Bincode>(
            setup,
            transport,
            storage,
            Bincode,
            driver_config,
        )
        .await?;
        Ok(PaxosHandle { node })
    }

    /// Wraps a driver handle started elsewhere.
    pub fn from_node(node: NodeHandle<PaxosNode<S>>) -> Self {
        PaxosHandle { node }
    }

    /// The driver's handle (events, counters, storage).
    pub fn node(&self) -> &NodeHandle<PaxosNode<S>> {
        &self.node
    }

    /// Proposes `command` (with an optional session for at-most-once retries) and returns its
    /// output once it is chosen and applied. Only the leader accepts proposals. When the
    /// replica's request queue is full, waits for room (backpressure).
    pub async fn propose(
        &self,
        command: S::Command,
        session: Option<Session>,
    ) -> Result<S::Output, ClientError> {
        applied(
            self.node
                .request(Request::Propose { command, session })
                .await?,
        )
    }

    /// [`PaxosHandle::propose`] that fails at once with the driver's `Busy` error
    /// ([`common::driver::DriverError::Busy`]) when the replica's request queue is full, instead
    /// of waiting: for callers that shed load.
    pub async fn try_propose(
        &self,
        command: S::Command,
        session: Option<Session>,
    ) -> Result<S::Output, ClientError> {
        applied(
            self.node
                .try_request(Request::Propose { command, session })
                .await?,
        )
    }

    /// A linearizable read on the leader.
    pub async fn read(&self, query: S::Query) -> Result<S::Output, ClientError> {
        read_output(self.node.request(Request::Read(query)).await?)
    }

    /// [`PaxosHandle::propose`], with the command handed to the replica now, at the call,
    /// rather than at the future's first poll (see [`NodeHandle::submit`]). For a server that
    /// keeps many proposals in flight: each waits as a small [`Proposal`], and they reach the
    /// replica in the order of the calls. Backpressure is `propose`'s: on a full queue the
    /// proposal waits for room.
    pub fn submit(&self, command: S::Command, session: Option<Session>) -> Proposal<S> {
        self.node
            .submit(Request::Propose { command, session })
            .map(|answer| applied(answer?))
    }

    /// [`PaxosHandle::read`], handed to the replica at the call, like [`PaxosHandle::submit`].
    pub fn submit_read(&self, query: S::Query) -> ReadAnswer<S> {
        self.node
            .submit(Request::Read(query))
            .map(|answer| read_output(answer?))
    }

    /// Changes the set of acceptors to `members` (see [`Request::Reconfigure`]) and returns the
    /// new configuration's epoch once the change took effect: the stop-sign is chosen and applied
    /// on this replica, which must lead, and `members` decide every later slot. A replica being
    /// added must be running (started with the same [`Config::members`] as everyone); it catches
    /// up before it votes.
    pub async fn reconfigure(&self, members: Vec<common::NodeId>) -> Result<u64, ClientError> {
        match self.node.request(Request::Reconfigure { members }).await? {
            Response::Reconfigured { epoch, .. } => Ok(epoch),
            Response::Failed(e) => Err(e.into()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The replica's metrics: leader, ballot, decided and applied slots, slots in flight, and
    /// the configuration (epoch and members).
    pub async fn metrics(&self) -> Result<Metrics, ClientError> {
        Ok(self.node.metrics().await?)
    }

    /// Stops the replica.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        Ok(self.node.shutdown().await?)
    }
}

/// A client of a whole cluster: finds the leader and retries safely.
pub struct PaxosClient<S: StateMachine> {
    replicas: Vec<PaxosHandle<S>>,
    /// The replica believed to lead.
    leader: AtomicU64,
    /// The limits of the retry policy.
    retry: RetryLimits,
    /// This client's id in sessions.
    client_id: u64,
    /// The last sequence number used.
    seq: AtomicU64,
}

impl<S: StateMachine> PaxosClient<S> {
    /// A client of `replicas` with session id `client_id` (unique among the cluster's clients).
    pub fn new(client_id: u64, replicas: Vec<PaxosHandle<S>>) -> Self {
        PaxosClient {
            leader: AtomicU64::new(replicas.first().map_or(0, |h| h.node.id())),
            retry: RetryLimits {
                attempts_max: CLIENT_RETRIES_MAX,
                backoff_min: CLIENT_RETRY_BACKOFF,
                ..RetryLimits::default()
            },
            client_id,
            seq: AtomicU64::new(0),
            replicas,
        }
    }

    /// The same client with other retry limits.
    pub fn with_retry(mut self, retry: RetryLimits) -> Self {
        self.retry = retry;
        self
    }

    /// Applies `command` exactly once (unless it gives up, in which case it was applied at most
    /// once) and returns its output.
    pub async fn propose(&self, command: S::Command) -> Result<S::Output, ClientError> {
        let session = Session {
            client: self.client_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        };
        self.retry(|h| {
            let command = command.clone();
            async move { h.propose(command, Some(session)).await }
        })
        .await
    }

    /// A linearizable read, on whichever replica leads.
    pub async fn read(&self, query: S::Query) -> Result<S::Output, ClientError> {
        self.retry(|h| {
            let query = query.clone();
            async move { h.read(query).await }
        })
        .await
    }

    /// Changes the set of acceptors to `members` on whichever replica leads (see
    /// [`PaxosHandle::reconfigure`]) and returns the new configuration's epoch. Retrying is safe: a
    /// retry after the change took effect finds the members in place and returns at once.
    pub async fn reconfigure(&self, members: Vec<common::NodeId>) -> Result<u64, ClientError> {
        self.retry(|h| {
            let members = members.clone();
            async move { h.reconfigure(members).await }
        })
        .await
    }

    async fn retry<T, F, Fut>(&self, op: F) -> Result<T, ClientError>
    where
        F: Fn(PaxosHandle<S>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let ids: Vec<NodeId> = self.replicas.iter().map(|h| h.node.id()).collect();
        let first = self.leader.load(Ordering::Relaxed);
        let mut policy = FollowLeader::new(ids, first, self.retry);
        loop {
            let target = policy.target();
            let Some(handle) = self.replicas.iter().find(|h| h.node.id() == target) else {
                return Err(ClientError::GaveUp(0));
            };
            let next = match op(handle.clone()).await {
                Ok(output) => {
                    self.leader.store(target, Ordering::Relaxed);
                    return Ok(output);
                }
                Err(ClientError::Paxos(PaxosError::NotLeader { leader })) => {
                    policy.redirected(leader)
                }
                Err(ClientError::Paxos(
                    e @ (PaxosError::SessionStale { .. } | PaxosError::Config(_)),
                )) => return Err(e.into()),
                Err(_) => policy.failed(),
            };
            match next {
                Retry::After { target, wait } => {
                    self.leader.store(target, Ordering::Relaxed);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Retry::GiveUp => return Err(ClientError::GaveUp(policy.attempts())),
            }
        }
    }
}
