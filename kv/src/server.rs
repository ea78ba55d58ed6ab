//! One replica of the KV store as a network service: the consensus node (Raft or Multi-Paxos)
//! over the TCP transport with a write-ahead log, and the client protocol ([`super::net`]) on a
//! second port. The `kv-node` binary is a command line around [`run`].
//!
//! # Guarantees
//!
//! - **Durable before acknowledged.** The node runs on the shared driver with a [`Wal`] in its
//!   data directory: nothing is acknowledged before its log records are fsynced, and a restart
//!   (after a `kill -9`, say) recovers the node from the directory.
//! - **Authenticated peers.** Replicas talk over [`TcpTransport`], which admits only configured
//!   peers proving the cluster key.
//! - **Bad clients cannot hurt the node.** Each client connection is served by its own task;
//!   an oversized or malformed frame closes that connection; a connection that completes no
//!   request within [`CLIENT_IDLE_TIMEOUT`] (idle, or trickling bytes) is closed; and at
//!   [`CLIENT_CONNECTIONS_MAX`] open connections, a new client takes the place of the one idle
//!   longest ([`ClientLimits`]), so idle sockets never lock new clients out.
//! - **Honest answers.** A write the protocol may have applied but cannot confirm is answered
//!   [`ClientReply::Unknown`], never as refused.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::driver::{self, DriverConfig};
use common::transport::tcp::{TcpConfig, TcpTransport};
use common::wal::{Wal, WalConfig};
use common::NodeId;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use common::driver::DriverStats;
use prometheus_client::metrics::gauge::Gauge;
use tracing::Instrument;

use super::config::FileConfig;
use super::metrics::{serve_http, Metrics, NodeView, TimedStorage};
use super::net::{
    client_codec, decode_request, encode_reply, CallOutcome, ClientReply, ClientRequest, KvClient,
    MemberInfo, MembersInfo,
};
use super::{AddressBook, KvCommand, KvMachine, KvOp, KvOutput, KvQuery};
use common::transport::tcp::TcpPeers;
use common::transport::tls::{secure, TlsConfig};
use tokio::sync::watch;

/// The cluster name in the transport handshake.
pub const CLUSTER_NAME: &str = "kv";

/// Which consensus protocol replicates the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Raft (`raft` crate).
    Raft,
    /// Multi-Paxos (`paxos` crate).
    Paxos,
}

/// Everything one replica needs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The protocol.
    pub protocol: Protocol,
    /// This replica's id.
    pub id: NodeId,
    /// Where replicas reach this one.
    pub listen: SocketAddr,
    /// Where clients reach this one.
    pub client_listen: SocketAddr,
    /// The other replicas: id to replica address (empty when joining).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// For a replica added at run time, instead of `peers`: client addresses (`host:port`) of
    /// members to learn the cluster from ([`ClientRequest::Members`]).
    pub join: Vec<String>,
    /// The write-ahead log's directory.
    pub data_dir: PathBuf,
    /// The shared cluster key (at least 16 bytes).
    pub cluster_key: Vec<u8>,
    /// Protocol timeouts, the driver's tick and the client port's limits (the `[driver]`,
    /// `[raft]`, `[paxos]` and `[client]` tables of the configuration file); the defaults where
    /// it is silent.
    pub tuning: FileConfig,
    /// Where to serve `GET /metrics` and `GET /health` ([`crate::metrics`]); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Mutual TLS on both ports (replicas and clients); `None`: plain TCP.
    pub tls: Option<TlsConfig>,
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport could not start (bad key, address in use…).
    #[error("transport: {0}")]
    Transport(#[from] common::transport::TransportError),
    /// The write-ahead log could not be opened.
    #[error("write-ahead log: {0}")]
    Storage(#[from] common::StorageError),
    /// The node could not be recovered or started.
    #[error("node: {0}")]
    Node(String),
    /// The client port could not be bound.
    #[error("client listener: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration is invalid (the message names the field).
    #[error("configuration: {0}")]
    Config(String),
}

#[derive(Clone)]
enum Backend {
    Raft(raft::RaftHandle<KvMachine>),
    Paxos(paxos::Handle<KvMachine>),
}

/// Longest a stopping leader waits for the follower it handed leadership to.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(3);
/// How often a stopping leader looks whether its successor took over.
const HANDOVER_POLL: Duration = Duration::from_millis(10);

impl Backend {
    /// Raft only: if this node leads, hands leadership to the most up-to-date follower and waits
    /// (at most [`HANDOVER_WAIT`]) until it no longer leads, so clients meet a new leader
    /// without waiting out an election timeout. Multi-Paxos has no transfer: its replicas elect
    /// a new leader a few heartbeat rounds after this one stops answering.
    async fn hand_over(&self) {
        let Backend::Raft(h) = self else { return };
        let Ok(m) = h.metrics().await else { return };
        if m.role != raft::Role::Leader {
            return;
        }
        let Some(target) = m
            .progress
            .iter()
            .max_by_key(|(_, p)| p.match_index)
            .map(|(&id, _)| id)
        else {
            return;
        };
        if let Err(e) = h.transfer_leadership(target).await {
            tracing::warn!("leadership transfer to node {target} failed: {e}");
            return;
        }
        let deadline = Instant::now() + HANDOVER_WAIT;
        while Instant::now() < deadline {
            match h.metrics().await {
                Ok(m) if m.role == raft::Role::Leader => {
                    tokio::time::sleep(HANDOVER_POLL).await;
                }
                _ => return,
            }
        }
        tracing::warn!("node {target} did not take over within {HANDOVER_WAIT:?}");
    }

    /// The node's state for the metrics, or `None` if it does not answer.
    async fn view(&self) -> Option<(NodeView, DriverStats)> {
        match self {
            Backend::Raft(h) => {
                let m = h.metrics().await.ok()?;
                let peer_lag = m
                    .progress
                    .iter()
                    .map(|(&peer, p)| (peer, m.commit_index.saturating_sub(p.match_index)))
                    .collect();
                Some((
                    NodeView {
                        is_leader: m.role == raft::Role::Leader,
                        leader: m.leader,
                        term: m.term,
                        commit_index: m.commit_index,
                        applied_index: m.applied_index,
                        peer_lag,
                    },
                    h.driver().stats(),
                ))
            }
            Backend::Paxos(h) => {
                let m = h.metrics().await.ok()?;
                Some((
                    NodeView {
                        is_leader: m.is_leader,
                        leader: m.leader,
                        term: m.ballot.round,
                        commit_index: m.decided,
                        applied_index: m.applied,
                        peer_lag: Vec::new(),
                    },
                    h.node().stats(),
                ))
            }
        }
    }

    /// Stops the node: it takes no new input, persists what its steps produced and fails the
    /// requests still waiting.
    async fn shutdown(&self) -> Result<(), String> {
        match self {
            Backend::Raft(h) => h.shutdown().await.map_err(|e| e.to_string()),
            Backend::Paxos(h) => h.shutdown().await.map_err(|e| e.to_string()),
        }
    }

    async fn serve(&self, dir: &Directory, request: ClientRequest) -> ClientReply {
        let result = match request {
            ClientRequest::Write(command) if command.op.is_membership() => {
                return ClientReply::Invalid(
                    "the address book changes only through `member add` and `member remove`".into(),
                )
            }
            ClientRequest::Members => self.members(dir).await,
            ClientRequest::AddMember(command) => self.add_member(dir, command).await,
            ClientRequest::PromoteMember(id) => self.promote_member(dir, id).await,
            ClientRequest::RemoveMember(command) => self.remove_member(dir, command).await,
            ClientRequest::TransferLeader(id) => self.transfer_leader(dir, id).await,
            other => {
                return match self {
                    Backend::Raft(h) => serve_raft(h, other).await,
                    Backend::Paxos(h) => serve_paxos(h, other).await,
                }
            }
        };
        match result {
            Ok(info) => ClientReply::Members(Box::new(info)),
            Err(reply) => reply,
        }
    }

    /// Proposes an address-book command through the log (exactly once per session).
    async fn record(&self, command: KvCommand) -> Result<(), ClientReply> {
        let out = match self {
            Backend::Raft(h) => h.propose(command).await.map(|(_, o)| o).map_err(raft_reply),
            Backend::Paxos(h) => h.propose(command, None).await.map_err(paxos_reply),
        }?;
        match out {
            // Applied as a refusal: the session holds this sequence number now, so the client
            // must not reuse it ("unknown" keeps it from doing so). Rare: the checks before
            // proposing catch the usual cases.
            KvOutput::Refused(why) => Err(ClientReply::Unknown(why)),
            KvOutput::Stale => Err(ClientReply::Output(KvOutput::Stale)),
            _ => Ok(()),
        }
    }

    /// The protocol's configuration: leader, voters, learners.
    async fn configuration(
        &self,
        dir: &Directory,
    ) -> Result<(Option<NodeId>, bool, Vec<NodeId>, Vec<NodeId>), ClientReply> {
        match self {
            Backend::Raft(h) => {
                let m = h.metrics().await.map_err(raft_reply)?;
                Ok((
                    m.leader,
                    m.role == raft::Role::Leader,
                    m.membership.voters.iter().copied().collect(),
                    m.membership.learners.iter().copied().collect(),
                ))
            }
            Backend::Paxos(h) => {
                let m = h.metrics().await.map_err(paxos_reply)?;
                // Registered replicas not (or not yet) in the configuration are its learners.
                let book = dir.book.borrow().clone();
                let learners = book
                    .nodes
                    .keys()
                    .filter(|id| !m.members.contains(id))
                    .copied()
                    .collect();
                Ok((m.leader, m.is_leader, m.members.clone(), learners))
            }
        }
    }

    /// The answer to [`ClientRequest::Members`].
    async fn members(&self, dir: &Directory) -> Result<MembersInfo, ClientReply> {
        let (leader, _, voters, learners) = self.configuration(dir).await?;
        Ok(dir.info(leader, voters, learners))
    }

    /// Leader only: `NotLeader` elsewhere.
    async fn require_leader(&self, dir: &Directory) -> Result<(), ClientReply> {
        let (leader, is_leader, _, _) = self.configuration(dir).await?;
        if is_leader {
            Ok(())
        } else {
            Err(ClientReply::NotLeader { leader })
        }
    }

    /// [`ClientRequest::AddMember`]: record the addresses, then join the configuration. A retry
    /// finds both done and answers the same.
    async fn add_member(
        &self,
        dir: &Directory,
        command: KvCommand,
    ) -> Result<MembersInfo, ClientReply> {
        let KvOp::Register { id, .. } = command.op else {
            return Err(ClientReply::Invalid(
                "add-member carries a registration".into(),
            ));
        };
        if id == 0 {
            return Err(ClientReply::Invalid("node id 0 is reserved".into()));
        }
        if dir.book.borrow().removed.contains(&id) {
            return Err(ClientReply::Invalid(format!(
                "node {id} was removed; a removed id is never used again"
            )));
        }
        self.require_leader(dir).await?;
        self.record(command).await?;
        let joined = async {
            match self {
                Backend::Raft(h) => {
                    let m = h.metrics().await.map_err(raft_reply)?;
                    if !m.membership.is_member(id) {
                        h.add_learner(id).await.map_err(raft_reply)?;
                    }
                }
                Backend::Paxos(h) => {
                    let m = h.metrics().await.map_err(paxos_reply)?;
                    if !m.members.contains(&id) {
                        let mut members = m.members.clone();
                        members.push(id);
                        h.reconfigure(members).await.map_err(paxos_reply)?;
                    }
                }
            }
            Ok(())
        };
        // The registration is applied: from here on a failure is not "nothing happened", and
        // the client must retry the same request (which finds the registration done).
        joined.await.map_err(|reply: ClientReply| match reply {
            ClientReply::NotLeader { leader } => ClientReply::Unknown(format!(
                "addresses recorded; leadership moved (to {leader:?}) before the replica joined"
            )),
            ClientReply::Refused(why) => {
                ClientReply::Unknown(format!("addresses recorded; joining failed: {why}"))
            }
            other => other,
        })?;
        self.members(dir).await
    }

    /// [`ClientRequest::PromoteMember`] (Raft): learner to voter.
    async fn promote_member(
        &self,
        dir: &Directory,
        id: NodeId,
    ) -> Result<MembersInfo, ClientReply> {
        let Backend::Raft(h) = self else {
            return Err(ClientReply::Invalid(
                "Multi-Paxos adds voting members directly; there is nothing to promote".into(),
            ));
        };
        let m = h.metrics().await.map_err(raft_reply)?;
        if m.membership.learners.contains(&id) {
            h.add_voter(id).await.map_err(raft_reply)?;
        } else if !m.membership.voters.contains(&id) {
            return Err(ClientReply::Invalid(format!(
                "node {id} is not a learner: add it first"
            )));
        }
        self.members(dir).await
    }

    /// [`ClientRequest::RemoveMember`]: leave the configuration, then the address book. A retry
    /// (at the new leader, if the leader removed itself) finds the first part done.
    async fn remove_member(
        &self,
        dir: &Directory,
        command: KvCommand,
    ) -> Result<MembersInfo, ClientReply> {
        let KvOp::Deregister { id } = command.op else {
            return Err(ClientReply::Invalid(
                "remove-member carries a deregistration".into(),
            ));
        };
        self.require_leader(dir).await?;
        match self {
            Backend::Raft(h) => {
                let m = h.metrics().await.map_err(raft_reply)?;
                if m.membership.is_member(id) {
                    if m.membership.voters.len() == 1 && m.membership.voters.contains(&id) {
                        return Err(ClientReply::Invalid(format!("node {id} is the last voter")));
                    }
                    h.remove_node(id).await.map_err(raft_reply)?;
                }
            }
            Backend::Paxos(h) => {
                let m = h.metrics().await.map_err(paxos_reply)?;
                if m.members.contains(&id) {
                    let members: Vec<NodeId> =
                        m.members.iter().copied().filter(|&n| n != id).collect();
                    if members.is_empty() {
                        return Err(ClientReply::Invalid(format!(
                            "node {id} is the last member"
                        )));
                    }
                    h.reconfigure(members).await.map_err(paxos_reply)?;
                }
            }
        }
        self.record(command).await?;
        self.members(dir).await
    }

    /// [`ClientRequest::TransferLeader`] (Raft): hands over and waits (at most
    /// [`HANDOVER_WAIT`]) until the target leads.
    async fn transfer_leader(
        &self,
        dir: &Directory,
        id: NodeId,
    ) -> Result<MembersInfo, ClientReply> {
        let Backend::Raft(h) = self else {
            return Err(ClientReply::Invalid(
                "Multi-Paxos has no leadership transfer: stop the leader's process (SIGTERM) \
                 and another replica takes over"
                    .into(),
            ));
        };
        let m = h.metrics().await.map_err(raft_reply)?;
        if m.leader == Some(id) {
            return self.members(dir).await;
        }
        if m.role != raft::Role::Leader {
            return Err(ClientReply::NotLeader { leader: m.leader });
        }
        h.transfer_leadership(id).await.map_err(raft_reply)?;
        let deadline = Instant::now() + HANDOVER_WAIT;
        while Instant::now() < deadline {
            let m = h.metrics().await.map_err(raft_reply)?;
            if m.leader == Some(id) {
                return self.members(dir).await;
            }
            tokio::time::sleep(HANDOVER_POLL).await;
        }
        Err(ClientReply::Refused(format!(
            "node {id} did not take over within {HANDOVER_WAIT:?}"
        )))
    }
}

/// What a node knows of where the replicas are: its configuration (or what it learned when it
/// joined) and the replicated address book.
#[derive(Clone)]
struct Directory {
    protocol: Protocol,
    id: NodeId,
    listen: SocketAddr,
    client_listen: SocketAddr,
    /// The replicas this node started with.
    peers: BTreeMap<NodeId, SocketAddr>,
    /// Multi-Paxos's first configuration.
    initial: Vec<NodeId>,
    book: watch::Receiver<AddressBook>,
}

impl Directory {
    fn info(
        &self,
        leader: Option<NodeId>,
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    ) -> MembersInfo {
        let book = self.book.borrow().clone();
        let mut nodes: BTreeMap<NodeId, MemberInfo> = self
            .peers
            .iter()
            .map(|(&id, addr)| {
                (
                    id,
                    MemberInfo {
                        id,
                        peer: addr.to_string(),
                        client: None,
                    },
                )
            })
            .collect();
        for (&id, a) in &book.nodes {
            nodes.insert(
                id,
                MemberInfo {
                    id,
                    peer: a.peer.clone(),
                    client: Some(a.client.clone()),
                },
            );
        }
        nodes.insert(
            self.id,
            MemberInfo {
                id: self.id,
                peer: self.listen.to_string(),
                client: Some(self.client_listen.to_string()),
            },
        );
        for id in &book.removed {
            nodes.remove(id);
        }
        MembersInfo {
            protocol: match self.protocol {
                Protocol::Raft => "raft".into(),
                Protocol::Paxos => "paxos".into(),
            },
            id: self.id,
            leader,
            voters,
            learners,
            initial: self.initial.clone(),
            nodes: nodes.into_values().collect(),
            removed: book.removed.iter().copied().collect(),
        }
    }
}

/// Keeps the transport's peers in step with the replicated address book: registered replicas
/// are added (their addresses resolved now), removed ones dropped. Ends with the node.
async fn follow_address_book(mut book: watch::Receiver<AddressBook>, peers: TcpPeers, me: NodeId) {
    loop {
        let current = book.borrow_and_update().clone();
        for (&id, addrs) in &current.nodes {
            if id == me || current.removed.contains(&id) {
                continue;
            }
            match tokio::net::lookup_host(addrs.peer.as_str()).await {
                Ok(mut found) => match found.next() {
                    Some(addr) => {
                        if let Err(e) = peers.add(id, addr) {
                            tracing::debug!("peer {id} not added: {e}");
                            return;
                        }
                    }
                    None => tracing::warn!("node {id}: `{}` has no address", addrs.peer),
                },
                Err(e) => tracing::warn!("node {id}: resolving `{}`: {e}", addrs.peer),
            }
        }
        for &id in &current.removed {
            peers.remove(id);
        }
        if book.changed().await.is_err() {
            return;
        }
    }
}

/// Most time a joining replica spends asking members about the cluster.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two rounds of asking.
const JOIN_RETRY: Duration = Duration::from_millis(200);

/// Who the cluster is as this node starts: from its configuration, or learned from a member.
struct Topology {
    peers: BTreeMap<NodeId, SocketAddr>,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
    /// Raft: nodes whose messages are accepted before a configuration names them.
    known: Vec<NodeId>,
    /// Multi-Paxos's first configuration.
    initial: Vec<NodeId>,
}

impl Topology {
    async fn learn(options: &NodeOptions) -> Result<Self, ServeError> {
        let me = options.id;
        if options.join.is_empty() {
            let peers: BTreeMap<NodeId, SocketAddr> = options
                .peers
                .iter()
                .filter(|(id, _)| **id != me)
                .map(|(id, a)| (*id, *a))
                .collect();
            let mut members: Vec<NodeId> = peers.keys().copied().collect();
            members.push(me);
            members.sort_unstable();
            return Ok(Topology {
                peers,
                voters: members.clone(),
                learners: Vec::new(),
                known: Vec::new(),
                initial: members,
            });
        }
        // The seeds' ids are unknown: number them from the top, where no replica's id is.
        let mut seeds = BTreeMap::new();
        for (i, addr) in options.join.iter().enumerate() {
            let addr = crate::config::resolve("join", addr).map_err(ServeError::Config)?;
            seeds.insert(NodeId::MAX - i as NodeId, addr);
        }
        let mut client = KvClient::new(0, seeds).with_deadline(JOIN_DEADLINE);
        if let Some(tls) = &options.tls {
            client = client.with_tls(tls.clone());
        }
        let deadline = Instant::now() + JOIN_DEADLINE;
        // A member that has not applied this node's registration yet answers without it: ask
        // again (the answer comes from the leader when it can be reached) until the deadline.
        let info = loop {
            let why = match client.members().await {
                CallOutcome::Ok(info) if info.nodes.iter().any(|n| n.id == me) => break info,
                CallOutcome::Ok(info) if info.removed.contains(&me) => break info,
                CallOutcome::Ok(_) => format!(
                    "node {me} is not registered: run `kv-client member add {me} PEER_ADDR \
                     CLIENT_ADDR` first"
                ),
                CallOutcome::Failed(why) | CallOutcome::Unknown(why) => {
                    format!("no member answered: {why}")
                }
            };
            if Instant::now() >= deadline {
                return Err(ServeError::Config(format!(
                    "join: {why} (tried for {JOIN_DEADLINE:?})"
                )));
            }
            tokio::time::sleep(JOIN_RETRY).await;
        };
        let protocol = match options.protocol {
            Protocol::Raft => "raft",
            Protocol::Paxos => "paxos",
        };
        if info.protocol != protocol {
            return Err(ServeError::Config(format!(
                "join: the cluster runs {}, this node is configured for {protocol}",
                info.protocol
            )));
        }
        if info.removed.contains(&me) {
            return Err(ServeError::Config(format!(
                "join: node {me} was removed from the cluster; a removed id is never used again"
            )));
        }
        let mut peers = BTreeMap::new();
        for node in info.nodes.iter().filter(|n| n.id != me) {
            let addr = crate::config::resolve(&format!("join: node {}", node.id), &node.peer)
                .map_err(ServeError::Config)?;
            peers.insert(node.id, addr);
        }
        let mut learners = info.learners.clone();
        if !info.voters.contains(&me) && !learners.contains(&me) {
            learners.push(me);
        }
        Ok(Topology {
            known: info.nodes.iter().map(|n| n.id).collect(),
            peers,
            voters: info.voters,
            learners,
            initial: info.initial,
        })
    }
}

/// The answer to a read: a read changes nothing, so a failure whose effect would otherwise be
/// unknown is a plain refusal.
fn read_reply(result: Result<KvOutput, ClientReply>) -> ClientReply {
    match result {
        Ok(out) => ClientReply::Output(out),
        Err(ClientReply::Unknown(why)) => ClientReply::Refused(why),
        Err(other) => other,
    }
}

/// A Raft error as the client's answer: refused when nothing was proposed, unknown otherwise.
fn raft_reply(e: raft::ClientError) -> ClientReply {
    use raft::{ClientError, RaftError};
    match e {
        ClientError::Raft(RaftError::NotLeader { leader })
        | ClientError::Raft(RaftError::LeadershipLost { leader }) => {
            ClientReply::NotLeader { leader }
        }
        ClientError::Raft(
            e @ (RaftError::Busy(_)
            | RaftError::TransferInProgress(_)
            | RaftError::Invalid(_)
            | RaftError::Dropped { .. }),
        ) => ClientReply::Refused(e.to_string()),
        other => ClientReply::Unknown(other.to_string()),
    }
}

/// A Multi-Paxos error as the client's answer.
fn paxos_reply(e: paxos::HandleError) -> ClientReply {
    use paxos::{Error, HandleError};
    match e {
        HandleError::Paxos(Error::NotLeader { leader }) => ClientReply::NotLeader { leader },
        HandleError::Paxos(e @ (Error::Busy | Error::Config(_))) => {
            ClientReply::Refused(e.to_string())
        }
        other => ClientReply::Unknown(other.to_string()),
    }
}

async fn serve_raft(h: &raft::RaftHandle<KvMachine>, request: ClientRequest) -> ClientReply {
    let map_err = raft_reply;
    match request {
        ClientRequest::Write(command) => match h.propose(command).await {
            Ok((_, out)) => ClientReply::Output(out),
            Err(e) => map_err(e),
        },
        ClientRequest::Get { key } => read_reply(h.read(KvQuery::Get(key)).await.map_err(map_err)),
        ClientRequest::Scan { prefix, limit } => read_reply(
            h.read(KvQuery::Scan { prefix, limit })
                .await
                .map_err(map_err),
        ),
        ClientRequest::Status => match h.metrics().await {
            Ok(m) => ClientReply::Status {
                id: m.id,
                is_leader: m.role == raft::Role::Leader,
                leader: m.leader,
                term: m.term,
                commit_index: m.commit_index,
                applied_index: m.applied_index,
            },
            Err(e) => ClientReply::Refused(e.to_string()),
        },
        membership => ClientReply::Refused(format!(
            "{} is answered by the node's membership service",
            membership.kind()
        )),
    }
}

async fn serve_paxos(h: &paxos::Handle<KvMachine>, request: ClientRequest) -> ClientReply {
    let map_err = paxos_reply;
    match request {
        // Exactly-once is the state machine's session table (the same on both protocols), so
        // no paxos-level session is passed.
        ClientRequest::Write(command) => match h.propose(command, None).await {
            Ok(out) => ClientReply::Output(out),
            Err(e) => map_err(e),
        },
        ClientRequest::Get { key } => read_reply(h.read(KvQuery::Get(key)).await.map_err(map_err)),
        ClientRequest::Scan { prefix, limit } => read_reply(
            h.read(KvQuery::Scan { prefix, limit })
                .await
                .map_err(map_err),
        ),
        ClientRequest::Status => match h.metrics().await {
            Ok(m) => ClientReply::Status {
                id: m.id,
                is_leader: m.is_leader,
                leader: m.leader,
                term: m.ballot.round,
                commit_index: m.decided,
                applied_index: m.applied,
            },
            Err(e) => ClientReply::Refused(e.to_string()),
        },
        membership => ClientReply::Refused(format!(
            "{} is answered by the node's membership service",
            membership.kind()
        )),
    }
}

/// Starts the replica and serves clients until SIGTERM or SIGINT, then shuts down gracefully:
/// no new work, leadership handed over (Raft), the node stopped with its records persisted.
/// Prints `kv-node <id> ready` on standard output once both ports are bound and the node runs,
/// and `kv-node <id> stopped` after a graceful shutdown.
pub async fn run(options: NodeOptions) -> Result<(), ServeError> {
    let topology = Topology::learn(&options).await?;
    let mut tcp = TcpConfig::new(
        options.id,
        CLUSTER_NAME,
        options.cluster_key.clone(),
        options.listen,
        topology.peers.clone(),
    );
    tcp.tls = options.tls.clone();
    let tuning = &options.tuning;
    let client_limits = tuning.client_limits().map_err(ServeError::Config)?;
    let mut driver_config = DriverConfig::default();
    if let Some(tick) = tuning.tick().map_err(ServeError::Config)? {
        driver_config.tick = tick;
    }
    let mut raft_config = raft::Config::new(options.id, topology.voters.clone());
    raft_config.learners = topology.learners.clone();
    raft_config.known_nodes = topology.known.clone();
    // The driver reports durability, so the leader may replicate while it writes.
    raft_config.parallel_append = true;
    tuning.tune_raft(&mut raft_config);
    let mut paxos_config = paxos::Config::new(options.id, topology.initial.clone());
    paxos_config.parallel_accept = true;
    tuning.tune_paxos(&mut paxos_config);
    // Check the configuration before binding anything, so a mistake is one clear error.
    match options.protocol {
        Protocol::Raft => raft_config
            .validate()
            .map_err(|e| ServeError::Config(format!("[raft] {e}")))?,
        Protocol::Paxos => paxos_config
            .validate()
            .map_err(|e| ServeError::Config(format!("[paxos] {e}")))?,
    }
    let transport = TcpTransport::start(tcp).await?;
    let (book_tx, book_rx) = watch::channel(AddressBook::default());
    tokio::spawn(follow_address_book(
        book_rx.clone(),
        transport.peers(),
        options.id,
    ));
    let directory = Directory {
        protocol: options.protocol,
        id: options.id,
        listen: transport.local_addr(),
        client_listen: options.client_listen,
        peers: topology.peers.clone(),
        initial: match options.protocol {
            Protocol::Raft => Vec::new(),
            Protocol::Paxos => topology.initial.clone(),
        },
        book: book_rx,
    };
    // Every state machine the node builds (at start, and to restore a snapshot) publishes its
    // address book to the same channel.
    let machine = move || Ok(KvMachine::with_book_watch(book_tx.clone()));
    let metrics = Metrics::new();
    let wal = TimedStorage::new(
        Wal::open(WalConfig::new(&options.data_dir))?,
        metrics.clone(),
    );
    let backend = match options.protocol {
        Protocol::Raft => {
            let h = driver::spawn_recovered::<raft::RaftNode<KvMachine>, _, _, _>(
                common::Setup::new(raft_config, machine),
                transport,
                wal,
                common::codec::Bincode,
                driver_config,
            )
            .await
            .map_err(|e| ServeError::Node(e.to_string()))?;
            Backend::Raft(raft::RaftHandle::new(h))
        }
        Protocol::Paxos => {
            let h = paxos::Handle::spawn_with(
                common::Setup::new(paxos_config, machine),
                transport,
                wal,
                driver_config,
            )
            .await
            .map_err(|e| ServeError::Node(e.to_string()))?;
            Backend::Paxos(h)
        }
    };
    let listener = TcpListener::bind(options.client_listen).await?;
    if let Some(addr) = options.metrics_listen {
        let http = TcpListener::bind(addr).await?;
        let backend = backend.clone();
        tokio::spawn(serve_http(http, metrics.clone(), move || {
            let backend = backend.clone();
            async move { backend.view().await }
        }));
    }
    println!("kv-node {} ready", options.id);
    let draining = Arc::new(AtomicBool::new(false));
    let id = options.id;
    let serving = serve_clients(
        listener,
        client_limits,
        options.tls.clone(),
        metrics.client_connections.clone(),
        {
            let backend = backend.clone();
            let draining = draining.clone();
            let latency = metrics.proposal_latency.clone();
            move |request: ClientRequest| {
                let backend = backend.clone();
                let directory = directory.clone();
                let draining = draining.load(Ordering::Relaxed);
                let latency = latency.clone();
                let span = tracing::debug_span!("request", node = id, kind = request.kind());
                async move {
                    if draining {
                        // Refused, so the client tries another node at once.
                        return ClientReply::Refused("the node is shutting down".into());
                    }
                    let started = Instant::now();
                    let is_write = matches!(request, ClientRequest::Write(_));
                    let reply = backend.serve(&directory, request).await;
                    if is_write {
                        latency.observe(started.elapsed().as_secs_f64());
                    }
                    reply
                }
                .instrument(span)
            }
        },
    );
    tokio::select! {
        () = serving => {}
        signal = stop_signal() => {
            let why = signal.map_err(ServeError::Io)?;
            tracing::info!("{why}: shutting down");
        }
    }
    // Graceful shutdown: accept nothing new (the accept loop is gone, open connections are
    // refused), hand leadership over, then stop the node, which persists what it produced and
    // fails what still waits.
    draining.store(true, Ordering::Relaxed);
    backend.hand_over().await;
    backend.shutdown().await.map_err(ServeError::Node)?;
    println!("kv-node {} stopped", options.id);
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C), naming it.
async fn stop_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// How the client port protects itself from idle, slow and too many clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Client connections open at once. When a new client arrives at the limit, the connection
    /// that has been idle longest (between requests) is closed to make room; if every
    /// connection is in the middle of a request, the new one is closed instead. Idle sockets
    /// therefore never lock new clients out.
    pub connections_max: usize,
    /// A connection that completes no request for this long is closed: an idle client, or one
    /// that trickles a request a byte at a time. The clock runs while nothing is in flight on
    /// the connection.
    pub idle_timeout: Duration,
    /// Requests one connection may have in flight (pipelined: sent before the answers to the
    /// earlier ones arrived; answers come back in request order). Past it the connection is not
    /// read until an answer goes out, so what one connection holds stays bounded.
    pub pipeline_max: usize,
}

/// Default for [`ClientLimits::connections_max`].
pub const CLIENT_CONNECTIONS_MAX: usize = 4_096;
/// Default for [`ClientLimits::idle_timeout`].
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`ClientLimits::pipeline_max`].
pub const CLIENT_PIPELINE_MAX: usize = 256;

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            connections_max: CLIENT_CONNECTIONS_MAX,
            idle_timeout: CLIENT_IDLE_TIMEOUT,
            pipeline_max: CLIENT_PIPELINE_MAX,
        }
    }
}

/// One open client connection, as the accept loop sees it.
struct Conn {
    /// When it last finished a request (or was accepted).
    idle_since: Instant,
    /// Whether it is serving a request now (never evicted then).
    busy: bool,
    /// Tells its task to close it.
    close: Arc<Notify>,
}

type Conns = Arc<Mutex<HashMap<u64, Conn>>>;

/// Serves the client protocol on `listener` with `handler`, within `limits`, until the
/// listener fails for good. Each connection is its own task; a malformed or oversized frame
/// closes that connection only.
pub async fn serve_clients<H, F>(
    listener: TcpListener,
    limits: ClientLimits,
    tls: Option<TlsConfig>,
    connections: Gauge,
    handler: H,
) where
    H: Fn(ClientRequest) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = ClientReply> + Send,
{
    let conns: Conns = Arc::new(Mutex::new(HashMap::new()));
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors, say: the accept backlog keeps the client waiting; pause
                // so a persistent error does not spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let close = Arc::new(Notify::new());
        {
            let mut open = conns.lock().unwrap_or_else(|e| e.into_inner());
            if open.len() >= limits.connections_max.max(1) {
                let oldest_idle = open
                    .iter()
                    .filter(|(_, c)| !c.busy)
                    .min_by_key(|(_, c)| c.idle_since)
                    .map(|(&id, _)| id);
                match oldest_idle.and_then(|id| open.remove(&id)) {
                    Some(evicted) => evicted.close.notify_one(),
                    None => {
                        tracing::warn!(%peer, "client refused: every connection is busy");
                        continue;
                    }
                }
            }
            open.insert(
                next_id,
                Conn {
                    idle_since: Instant::now(),
                    busy: false,
                    close: close.clone(),
                },
            );
            connections.set(i64::try_from(open.len()).unwrap_or(i64::MAX));
        }
        let id = next_id;
        next_id += 1;
        let conns = conns.clone();
        let handler = handler.clone();
        let connections = connections.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served =
                serve_connection(stream, tls.as_ref(), id, &conns, close, limits, handler).await;
            let mut open = conns.lock().unwrap_or_else(|e| e.into_inner());
            open.remove(&id);
            connections.set(i64::try_from(open.len()).unwrap_or(i64::MAX));
            drop(open);
            if let Err(why) = served {
                tracing::info!(%peer, "client connection closed: {why}");
            }
        });
    }
}

/// Pause after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

fn set_busy(conns: &Conns, id: u64, busy: bool) {
    if let Some(c) = conns.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id) {
        c.busy = busy;
        c.idle_since = Instant::now();
    }
}

async fn serve_connection<H, F>(
    stream: TcpStream,
    tls: Option<&TlsConfig>,
    id: u64,
    conns: &Conns,
    close: Arc<Notify>,
    limits: ClientLimits,
    handler: H,
) -> Result<(), String>
where
    H: Fn(ClientRequest) -> F,
    F: std::future::Future<Output = ClientReply>,
{
    use futures::stream::FuturesOrdered;
    use futures::FutureExt;
    use tokio_util::codec::{FramedRead, FramedWrite};

    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    // The TLS handshake (when configured) must finish within the idle timeout too, so a client
    // that connects and stays silent is closed like any idle one.
    let (read, write) =
        match tokio::time::timeout(limits.idle_timeout, secure(tls, read, write, false)).await {
            Ok(Ok(halves)) => halves,
            Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
            Err(_) => return Err(format!("no TLS handshake within {:?}", limits.idle_timeout)),
        };
    let mut requests = FramedRead::new(read, client_codec());
    let mut replies = FramedWrite::new(write, client_codec());
    // Requests being served, answered in the order they arrived (a client may pipeline: send
    // several before reading an answer). At most `pipeline_max`; past that the connection is not
    // read until an answer goes out, so TCP pushes back on the client.
    let mut in_flight = FuturesOrdered::new();
    let pipeline_max = limits.pipeline_max.max(1);
    // The idle clock runs only while nothing is in flight: it starts when the connection goes
    // quiet, and a request that arrives (whole) or an answer that goes out restarts it.
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            biased;
            () = close.notified() => return Err("closed to make room for a new client".into()),
            Some(reply) = in_flight.next(), if !in_flight.is_empty() => {
                // Send every answer that is ready with one write.
                let mut reply: ClientReply = reply;
                loop {
                    let bytes = encode_reply(&reply).map_err(|e| e.to_string())?;
                    replies
                        .feed(bytes::Bytes::from(bytes))
                        .await
                        .map_err(|e| e.to_string())?;
                    match in_flight.next().now_or_never() {
                        Some(Some(next)) => reply = next,
                        _ => break,
                    }
                }
                SinkExt::<bytes::Bytes>::flush(&mut replies).await.map_err(|e| e.to_string())?;
                if in_flight.is_empty() {
                    set_busy(conns, id, false);
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                }
            }
            next = requests.next(), if in_flight.len() < pipeline_max => {
                let frame = match next {
                    Some(frame) => frame.map_err(|e| e.to_string())?,
                    None if in_flight.is_empty() => return Ok(()),
                    // The client closed its side: answer what it sent, then close.
                    None => {
                        while let Some(reply) = in_flight.next().await {
                            let bytes = encode_reply(&reply).map_err(|e| e.to_string())?;
                            replies
                                .feed(bytes::Bytes::from(bytes))
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        SinkExt::<bytes::Bytes>::flush(&mut replies).await.map_err(|e| e.to_string())?;
                        return Ok(());
                    }
                };
                if in_flight.is_empty() {
                    set_busy(conns, id, true);
                }
                let request = decode_request(&frame).map_err(|e| format!("bad request: {e}"))?;
                in_flight.push_back(handler(request));
            }
            () = &mut idle, if in_flight.is_empty() => {
                return Err(format!("no request for {:?}", limits.idle_timeout));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{decode_reply, encode_request};
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Framed;

    /// Answers every request with who leads (nobody): enough to see a connection served.
    async fn serve(limits: ClientLimits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_clients(
            listener,
            limits,
            None,
            Gauge::default(),
            |_| async { ClientReply::NotLeader { leader: None } },
        ));
        addr
    }

    /// Sends one status request on a new connection and returns the reply.
    async fn status(stream: TcpStream) -> ClientReply {
        let mut framed = Framed::new(stream, client_codec());
        let request = encode_request(&ClientRequest::Status).unwrap();
        framed.send(bytes::Bytes::from(request)).await.unwrap();
        let frame = framed.next().await.unwrap().unwrap();
        decode_reply(&frame).unwrap()
    }

    /// Whether the server closed `stream` (reads end of file).
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(stream.read(&mut byte).await, Ok(0) | Err(_))
    }

    /// Bounds a wait so a regression fails the test instead of hanging it.
    async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .unwrap_or_else(|_| panic!("{what} did not happen"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_idle_sockets_do_not_lock_a_new_client_out() {
        let addr = serve(ClientLimits::default()).await;
        let mut idle = Vec::new();
        for _ in 0..1_000 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let fresh = TcpStream::connect(addr).await.unwrap();
        let reply = bounded("a reply to the new client", status(fresh)).await;
        assert_eq!(reply, ClientReply::NotLeader { leader: None });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_limit_the_longest_idle_connection_makes_room() {
        let limits = ClientLimits {
            connections_max: 4,
            ..ClientLimits::default()
        };
        let addr = serve(limits).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Each was accepted in turn; the fifth evicts the first.
        let fresh = TcpStream::connect(addr).await.unwrap();
        let reply = bounded("a reply to the fifth client", status(fresh)).await;
        assert_eq!(reply, ClientReply::NotLeader { leader: None });
        assert!(bounded("the oldest closed", closed(&mut idle[0])).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_or_trickling_connection_is_closed_after_the_idle_timeout() {
        let addr = serve(ClientLimits {
            idle_timeout: Duration::from_secs(5),
            ..ClientLimits::default()
        })
        .await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Half a frame: a length prefix announcing 100 bytes, then nothing more.
        let mut trickle = TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut trickle, &100u32.to_be_bytes())
            .await
            .unwrap();
        // The paused clock jumps to the idle timeout once everything waits (and to the bound
        // of `bounded` if the connections were never closed).
        assert!(bounded("the silent one closed", closed(&mut silent)).await);
        assert!(bounded("the trickling one closed", closed(&mut trickle)).await);
    }

    /// Serves `get KEY` with the answer `KEY` after `KEY` milliseconds, counting the requests
    /// being served; `gate` holds every answer back until it is opened.
    async fn serve_slow(
        limits: ClientLimits,
        started: Arc<std::sync::atomic::AtomicUsize>,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> (SocketAddr, Gauge) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Gauge::default();
        tokio::spawn(serve_clients(
            listener,
            limits,
            None,
            connections.clone(),
            move |request| {
                let started = started.clone();
                let gate = gate.clone();
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _open = gate.acquire().await.unwrap();
                    let ClientRequest::Get { key } = request else {
                        return ClientReply::Invalid("not a get".into());
                    };
                    let ms: u64 = key.parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ClientReply::Output(KvOutput::Value(Some(key)))
                }
            },
        ));
        (addr, connections)
    }

    fn get(key: &str) -> bytes::Bytes {
        bytes::Bytes::from(
            encode_request(&ClientRequest::Get {
                key: key.to_string(),
            })
            .unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_requests_are_answered_in_the_order_they_were_sent() {
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(1_000));
        let (addr, _) = serve_slow(ClientLimits::default(), started, gate).await;
        let mut framed = Framed::new(TcpStream::connect(addr).await.unwrap(), client_codec());
        // Later requests finish first; their answers still come back in request order.
        let keys = ["50", "40", "30", "20", "10", "0"];
        for key in keys {
            framed.feed(get(key)).await.unwrap();
        }
        SinkExt::<bytes::Bytes>::flush(&mut framed).await.unwrap();
        for key in keys {
            let frame = bounded("an answer", framed.next()).await.unwrap().unwrap();
            assert_eq!(
                decode_reply(&frame).unwrap(),
                ClientReply::Output(KvOutput::Value(Some(key.to_string())))
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_holds_at_most_pipeline_max_requests() {
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let limits = ClientLimits {
            pipeline_max: 2,
            ..ClientLimits::default()
        };
        let (addr, _) = serve_slow(limits, started.clone(), gate.clone()).await;
        let mut framed = Framed::new(TcpStream::connect(addr).await.unwrap(), client_codec());
        for _ in 0..5 {
            framed.feed(get("1")).await.unwrap();
        }
        SinkExt::<bytes::Bytes>::flush(&mut framed).await.unwrap();
        // Let the server read what it will: with every answer held back, it stops at two.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(started.load(Ordering::SeqCst), 2);
        gate.add_permits(5);
        for _ in 0..5 {
            let frame = bounded("an answer", framed.next()).await.unwrap().unwrap();
            assert_eq!(
                decode_reply(&frame).unwrap(),
                ClientReply::Output(KvOutput::Value(Some("1".into())))
            );
        }
        assert_eq!(started.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn clients_sharing_connections_each_get_their_own_answers() {
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(1_000));
        let (addr, connections) = serve_slow(ClientLimits::default(), started.clone(), gate).await;
        let nodes = BTreeMap::from([(1, addr)]);
        let shared = crate::net::SharedConnections::new(2);
        let mut calls = tokio::task::JoinSet::new();
        for c in 0..32u64 {
            let mut client =
                crate::net::KvClient::new(c, nodes.clone()).with_shared_connections(shared.clone());
            calls.spawn(async move {
                let mut answers = Vec::new();
                for n in 0..3 {
                    // Different delays, so answers on one connection finish out of order.
                    let key = ((c * 7 + n) % 13).to_string();
                    answers.push((key.clone(), client.get(&key).await));
                }
                answers
            });
        }
        while let Some(answers) = bounded("the calls", calls.join_next()).await {
            for (key, answer) in answers.unwrap() {
                assert_eq!(
                    answer,
                    crate::net::CallOutcome::Ok(KvOutput::Value(Some(key)))
                );
            }
        }
        assert_eq!(started.load(Ordering::SeqCst), 96);
        // Thirty-two clients, two sockets.
        assert_eq!(connections.get(), 2);
    }
}
