//! The async API: replicas run by the workspace's tokio driver ([`common::driver`]).
//!
//! - [`Handle`] talks to one replica: [`Handle::propose`] answers once the command is chosen
//!   and applied *on that replica* (it must lead), [`Handle::read`] is a linearizable read
//!   (confirmed by a quorum round), [`Handle::reconfigure`] changes the set of acceptors and
//!   answers once the change took effect, [`Handle::metrics`] shows the leader, ballot, decided
//!   and applied slots, slots in flight and the configuration (epoch and members).
//! - [`Client`] talks to a whole cluster: it follows "not the leader" hints, and retries a
//!   command whose outcome it did not learn with the same [`Session`], so a command is applied
//!   at most once however often it is retried (at most [`CLIENT_RETRIES_MAX`] times, with
//!   [`CLIENT_RETRY_BACKOFF`] between rounds).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::codec::Bincode;
use common::driver::{self, DriverConfig, DriverError, NodeHandle};
use common::transport::Transport;
use common::{Setup, Storage};

use crate::{Config, Error, Metrics, Replica, Request, Response, Session, StateMachine};

/// Most attempts of one [`Client`] operation before it gives up.
pub const CLIENT_RETRIES_MAX: u32 = 200;
/// Pause of a [`Client`] after trying every replica without success.
pub const CLIENT_RETRY_BACKOFF: Duration = Duration::from_millis(10);

/// Why an operation through a [`Handle`] or [`Client`] failed.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The driver could not deliver the request or the node stopped.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
    /// The replica refused or could not complete the request.
    #[error("paxos: {0}")]
    Paxos(#[from] Error),
    /// A [`Client`] exhausted its retries.
    #[error("gave up after {0} attempts")]
    GaveUp(u32),
    /// The replica answered with a response of the wrong kind (a bug).
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

/// One replica run by the tokio driver.
pub struct Handle<S: StateMachine> {
    node: NodeHandle<Replica<S>>,
}

impl<S: StateMachine> Clone for Handle<S> {
    fn clone(&self) -> Self {
        Handle {
            node: self.node.clone(),
        }
    }
}

impl<S: StateMachine> Handle<S> {
    /// Starts a replica over `transport`, recovering it from `storage` (records encoded with the
    /// workspace's [`Bincode`] codec, snapshot files in [`Storage::snapshots`]), with a state
    /// machine built by `S::default()`. Must be called inside a tokio runtime.
    pub async fn spawn<T: Transport, St: Storage>(
        config: Config,
        transport: T,
        storage: St,
        driver_config: DriverConfig,
    ) -> Result<Self, HandleError>
    where
        S: Default,
    {
        Self::spawn_with(config.into(), transport, storage, driver_config).await
    }

    /// [`Handle::spawn`] with a state machine built by `setup`'s factory (one that opens a
    /// database, say).
    pub async fn spawn_with<T: Transport, St: Storage>(
        setup: Setup<Config, S>,
        transport: T,
        storage: St,
        driver_config: DriverConfig,
    ) -> Result<Self, HandleError> {
        let node = driver::spawn_recovered::<Replica<S>, T, St, Bincode>(
            setup,
            transport,
            storage,
            Bincode,
            driver_config,
        )
        .await?;
        Ok(Handle { node })
    }

    /// Wraps a driver handle started elsewhere.
    pub fn from_node(node: NodeHandle<Replica<S>>) -> Self {
        Handle { node }
    }

    /// The driver's handle (events, counters, storage).
    pub fn node(&self) -> &NodeHandle<Replica<S>> {
        &self.node
    }

    /// Proposes `command` (with an optional session for at-most-once retries) and returns its
    /// output once it is chosen and applied. Only the leader accepts proposals. When the
    /// replica's request queue is full, waits for room (backpressure).
    pub async fn propose(
        &self,
        command: S::Command,
        session: Option<Session>,
    ) -> Result<S::Output, HandleError> {
        Self::applied(
            self.node
                .request(Request::Propose { command, session })
                .await?,
        )
    }

    /// [`Handle::propose`] that fails at once with the driver's `Busy` error
    /// ([`common::driver::DriverError::Busy`]) when the replica's request queue is full, instead
    /// of waiting: for callers that shed load.
    pub async fn try_propose(
        &self,
        command: S::Command,
        session: Option<Session>,
    ) -> Result<S::Output, HandleError> {
        Self::applied(
            self.node
                .try_request(Request::Propose { command, session })
                .await?,
        )
    }

    fn applied(response: Response<S::Output>) -> Result<S::Output, HandleError> {
        match response {
            Response::Applied { output, .. } => Ok(output),
            Response::Failed(e) => Err(e.into()),
            other => Err(HandleError::Unexpected(format!("{other:?}"))),
        }
    }

    /// A linearizable read on the leader.
    pub async fn read(&self, query: S::Query) -> Result<S::Output, HandleError> {
        match self.node.request(Request::Read(query)).await? {
            Response::Read(output) => Ok(output),
            Response::Failed(e) => Err(e.into()),
            other => Err(HandleError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Changes the set of acceptors to `members` (see [`Request::Reconfigure`]) and returns the
    /// new configuration's epoch once the change took effect: the stop-sign is chosen and applied
    /// on this replica, which must lead, and `members` decide every later slot. A replica being
    /// added must be running (started with the same [`Config::members`] as everyone); it catches
    /// up before it votes.
    pub async fn reconfigure(&self, members: Vec<common::NodeId>) -> Result<u64, HandleError> {
        match self.node.request(Request::Reconfigure { members }).await? {
            Response::Reconfigured { epoch, .. } => Ok(epoch),
            Response::Failed(e) => Err(e.into()),
            other => Err(HandleError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The replica's metrics: leader, ballot, decided and applied slots, slots in flight, and
    /// the configuration (epoch and members).
    pub async fn metrics(&self) -> Result<Metrics, HandleError> {
        Ok(self.node.metrics().await?)
    }

    /// Stops the replica.
    pub async fn shutdown(&self) -> Result<(), HandleError> {
        Ok(self.node.shutdown().await?)
    }
}

/// A client of a whole cluster: finds the leader and retries safely.
pub struct Client<S: StateMachine> {
    replicas: Vec<Handle<S>>,
    /// Index of the replica believed to lead.
    leader: AtomicUsize,
    /// This client's id in sessions.
    client_id: u64,
    /// The last sequence number used.
    seq: AtomicU64,
}

impl<S: StateMachine> Client<S> {
    /// A client of `replicas` with session id `client_id` (unique among the cluster's clients).
    pub fn new(client_id: u64, replicas: Vec<Handle<S>>) -> Self {
        Client {
            replicas,
            leader: AtomicUsize::new(0),
            client_id,
            seq: AtomicU64::new(0),
        }
    }

    /// Applies `command` exactly once (unless it gives up, in which case it was applied at most
    /// once) and returns its output.
    pub async fn propose(&self, command: S::Command) -> Result<S::Output, HandleError> {
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
    pub async fn read(&self, query: S::Query) -> Result<S::Output, HandleError> {
        self.retry(|h| {
            let query = query.clone();
            async move { h.read(query).await }
        })
        .await
    }

    /// Changes the set of acceptors to `members` on whichever replica leads (see
    /// [`Handle::reconfigure`]) and returns the new configuration's epoch. Retrying is safe: a
    /// retry after the change took effect finds the members in place and returns at once.
    pub async fn reconfigure(&self, members: Vec<common::NodeId>) -> Result<u64, HandleError> {
        self.retry(|h| {
            let members = members.clone();
            async move { h.reconfigure(members).await }
        })
        .await
    }

    async fn retry<T, F, Fut>(&self, op: F) -> Result<T, HandleError>
    where
        F: Fn(Handle<S>) -> Fut,
        Fut: std::future::Future<Output = Result<T, HandleError>>,
    {
        let n = self.replicas.len().max(1);
        for attempt in 0..CLIENT_RETRIES_MAX {
            let i = self.leader.load(Ordering::Relaxed) % n;
            let Some(handle) = self.replicas.get(i) else {
                return Err(HandleError::GaveUp(0));
            };
            match op(handle.clone()).await {
                Ok(output) => return Ok(output),
                Err(HandleError::Paxos(Error::NotLeader { leader: Some(l) })) => {
                    let next = self
                        .replicas
                        .iter()
                        .position(|h| h.node.id() == l)
                        .unwrap_or((i + 1) % n);
                    self.leader.store(next, Ordering::Relaxed);
                }
                Err(HandleError::Paxos(e @ (Error::SessionStale { .. } | Error::Config(_)))) => {
                    return Err(e.into())
                }
                Err(_) => self.leader.store((i + 1) % n, Ordering::Relaxed),
            }
            if (attempt as usize + 1) % n == 0 {
                tokio::time::sleep(CLIENT_RETRY_BACKOFF).await;
            }
        }
        Err(HandleError::GaveUp(CLIENT_RETRIES_MAX))
    }
}
