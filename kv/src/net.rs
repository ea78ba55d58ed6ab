//! The KV store's client protocol over TCP, shared by `kv-node` (server side) and `kv-client`
//! (the [`KvClient`] library and the load generator).
//!
//! # Guarantees
//!
//! - **Bounded frames.** Every message is one length-delimited frame (tokio-util's
//!   `LengthDelimitedCodec`, 4-byte big-endian length) of at most [`CLIENT_FRAME_BYTES_MAX`]
//!   bytes, carrying a [`ClientRequest`] or [`ClientReply`] encoded with the workspace's
//!   [`Bincode`] codec (itself capped at decode time). A frame above the limit or that does not
//!   decode closes that connection only; the node keeps serving everyone else.
//! - **Exactly-once writes across retries.** [`KvClient`] numbers its writes and sends a retry
//!   (after a timeout, a lost connection or "not the leader") with the *same* client id and
//!   sequence number, so the replicated session table applies it once ([`super::KvMachine`]).
//! - **Honest outcomes.** A call ends in [`CallOutcome::Ok`] (applied, with the answer),
//!   [`CallOutcome::Failed`] (certainly not applied: no node accepted it) or
//!   [`CallOutcome::Unknown`] (it may have been applied): exactly the three endings a
//!   linearizability history needs ([`common::check`]).
//!
//! ```
//! use kv::net::{decode_request, encode_request, ClientRequest};
//!
//! let bytes = encode_request(&ClientRequest::Get { key: "x".into() }).unwrap();
//! assert_eq!(decode_request(&bytes).unwrap(), ClientRequest::Get { key: "x".into() });
//! // Bytes from the network are never trusted: garbage is a typed error, not a panic.
//! assert!(decode_request(&[0xff, 0xff, 0xff]).is_err());
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::codec::{Bincode, Codec, CodecError};
use common::transport::tls::{secure, MaybeTlsRead, MaybeTlsWrite, TlsConfig};
use common::NodeId;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec};

use super::{KvCommand, KvOp, KvOutput};

/// Largest client frame accepted either way (a request carries at most two items of
/// [`super::ITEM_BYTES_MAX`]).
pub const CLIENT_FRAME_BYTES_MAX: usize = 4 * super::ITEM_BYTES_MAX;
/// How long [`KvClient`] waits for one node's answer before trying another.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long [`KvClient`] keeps retrying one call before giving up.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// Pause before retrying when no node knows a leader (an election is under way).
pub const NO_LEADER_BACKOFF: Duration = Duration::from_millis(20);

/// A request from a client to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// A write, applied through the log (exactly once per client and sequence number).
    Write(KvCommand),
    /// A linearizable read of one key.
    Get {
        /// The key.
        key: String,
    },
    /// Who leads, as this node knows it (for operators and tests).
    Status,
    /// A linearizable read of the keys starting with `prefix`, in order.
    Scan {
        /// The keys' common prefix.
        prefix: String,
        /// Most entries returned (capped at [`crate::SCAN_LIMIT_MAX`]).
        limit: usize,
    },
    /// The cluster's members and where they are reached, as this node knows them; answered
    /// [`ClientReply::Members`] by any node.
    Members,
    /// Adds a replica (leader only): the command's [`KvOp::Register`] records its addresses
    /// through the log (exactly once per client session), then the replica joins the protocol's
    /// configuration (Raft: as a learner; Multi-Paxos: as a member). Answered
    /// [`ClientReply::Members`].
    AddMember(KvCommand),
    /// Makes a Raft learner a voter (leader only). Answered [`ClientReply::Members`].
    PromoteMember(NodeId),
    /// Removes a replica (leader only): it leaves the protocol's configuration, then the
    /// command's [`KvOp::Deregister`] drops it from the address book and every transport.
    /// Answered [`ClientReply::Members`].
    RemoveMember(KvCommand),
    /// Hands leadership to a voter (Raft; the leader runs it). Answered [`ClientReply::Members`]
    /// once the target leads.
    TransferLeader(NodeId),
}

impl ClientRequest {
    /// A short name of the request's kind, for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientRequest::Write(_) => "write",
            ClientRequest::Get { .. } => "get",
            ClientRequest::Status => "status",
            ClientRequest::Scan { .. } => "scan",
            ClientRequest::Members => "members",
            ClientRequest::AddMember(_) => "add-member",
            ClientRequest::PromoteMember(_) => "promote-member",
            ClientRequest::RemoveMember(_) => "remove-member",
            ClientRequest::TransferLeader(_) => "transfer-leader",
        }
    }
}

/// A node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    /// The request was applied (or read) with this output.
    Output(KvOutput),
    /// This node does not lead; `leader` is the one it knows of. Nothing was applied here.
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// Refused before anything was proposed (busy, shutting down); nothing was applied, and
    /// another node (or a later try) may accept it.
    Refused(String),
    /// The request can never succeed as given (a removed id, a change Multi-Paxos does not
    /// have); nothing was applied. Clients do not retry it.
    Invalid(String),
    /// The request was proposed but its fate is unknown (leadership lost); retry it with the
    /// same sequence number.
    Unknown(String),
    /// The answer to [`ClientRequest::Status`].
    Status {
        /// The answering node.
        id: NodeId,
        /// Whether it is the leader.
        is_leader: bool,
        /// The leader it knows of.
        leader: Option<NodeId>,
        /// Raft's term, or Multi-Paxos's ballot round.
        term: u64,
        /// See [`NodeStatus::commit_index`].
        commit_index: u64,
        /// See [`NodeStatus::applied_index`].
        applied_index: u64,
    },
    /// The answer to [`ClientRequest::Members`] and to membership changes.
    Members(Box<MembersInfo>),
}

/// The cluster's membership as one node knows it: the answer to [`ClientRequest::Members`] and
/// to membership changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersInfo {
    /// `raft` or `paxos`.
    pub protocol: String,
    /// The answering node.
    pub id: NodeId,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The voting members.
    pub voters: Vec<NodeId>,
    /// Raft's learners: they receive the log and do not vote.
    pub learners: Vec<NodeId>,
    /// Multi-Paxos's first configuration (every replica must start with the same one); empty
    /// for Raft.
    pub initial: Vec<NodeId>,
    /// Every replica this node can reach or has been told of, with its addresses where known.
    pub nodes: Vec<MemberInfo>,
    /// Ids removed for good.
    pub removed: Vec<NodeId>,
}

/// Where one replica is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The replica.
    pub id: NodeId,
    /// Where replicas reach it.
    pub peer: String,
    /// Where clients reach it, when known (replicas added at run time register it; the
    /// answering node knows its own).
    pub client: Option<String>,
}

/// One node's answer to a status request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub id: NodeId,
    /// Whether it leads.
    pub is_leader: bool,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Raft's term, or Multi-Paxos's ballot round.
    pub term: u64,
    /// How far the log is committed: Raft's commit index, Multi-Paxos's first undecided slot.
    pub commit_index: u64,
    /// How far it is applied to the store: Raft's applied index, Multi-Paxos's first
    /// unapplied slot.
    pub applied_index: u64,
}

/// Encodes a request.
pub fn encode_request(request: &ClientRequest) -> Result<Vec<u8>, CodecError> {
    Bincode.encode(request)
}

/// Decodes a request from untrusted bytes.
pub fn decode_request(bytes: &[u8]) -> Result<ClientRequest, CodecError> {
    Bincode.decode(bytes)
}

/// Encodes a reply.
pub fn encode_reply(reply: &ClientReply) -> Result<Vec<u8>, CodecError> {
    Bincode.encode(reply)
}

/// Decodes a reply from untrusted bytes.
pub fn decode_reply(bytes: &[u8]) -> Result<ClientReply, CodecError> {
    Bincode.decode(bytes)
}

/// The framing of the client protocol, with its limit.
pub fn client_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(CLIENT_FRAME_BYTES_MAX)
        .new_codec()
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome<T = KvOutput> {
    /// Applied (or read) with this output.
    Ok(T),
    /// Certainly not applied.
    Failed(String),
    /// Maybe applied.
    Unknown(String),
}

/// A client of a cluster over the client protocol: one request in flight, follows leader hints,
/// retries writes with the same sequence number.
pub struct KvClient {
    client: u64,
    seq: u64,
    nodes: BTreeMap<NodeId, SocketAddr>,
    leader: NodeId,
    conn: Option<(NodeId, Framed<ClientStream, LengthDelimitedCodec>)>,
    /// When set, requests go over these connections (shared with other clients) instead of
    /// a connection of this client's own.
    shared: Option<SharedConnections>,
    tls: Option<TlsConfig>,
    attempt_timeout: Duration,
    deadline: Duration,
}

/// The final answers a call waits for: [`KvOutput`] for reads and writes, [`MembersInfo`] for
/// membership requests.
pub trait Answer: Sized {
    /// The answer in `reply`, or the reply back if it is not one.
    fn from_reply(reply: ClientReply) -> Result<Self, ClientReply>;
}

impl Answer for KvOutput {
    fn from_reply(reply: ClientReply) -> Result<Self, ClientReply> {
        match reply {
            ClientReply::Output(out) => Ok(out),
            other => Err(other),
        }
    }
}

impl Answer for MembersInfo {
    fn from_reply(reply: ClientReply) -> Result<Self, ClientReply> {
        match reply {
            ClientReply::Members(info) => Ok(*info),
            other => Err(other),
        }
    }
}

/// A client connection, plain or inside TLS.
type ClientStream = tokio::io::Join<
    MaybeTlsRead<OwnedReadHalf, OwnedWriteHalf>,
    MaybeTlsWrite<OwnedReadHalf, OwnedWriteHalf>,
>;

/// Why one attempt at one node did not produce a final answer.
enum Attempt {
    Reply(ClientReply),
    /// No connection or no answer: the request may or may not have arrived.
    Lost(String),
    /// Could not connect: the request certainly was not delivered.
    NotSent(String),
}

impl KvClient {
    /// A client with id `client` (unique among clients, never reused: it names the session)
    /// of the nodes `nodes` (node id to client address).
    pub fn new(client: u64, nodes: BTreeMap<NodeId, SocketAddr>) -> Self {
        let leader = nodes.keys().next().copied().unwrap_or(0);
        Self {
            client,
            seq: 0,
            nodes,
            leader,
            conn: None,
            shared: None,
            tls: None,
            attempt_timeout: ATTEMPT_TIMEOUT,
            deadline: CALL_DEADLINE,
        }
    }

    /// Talks to the nodes over mutual TLS (their client ports must have it too).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sends this client's requests over `connections`, which other clients share (each
    /// connection carries several clients' requests at once), instead of a connection of its
    /// own. The session (id and sequence numbers) stays this client's.
    pub fn with_shared_connections(mut self, connections: SharedConnections) -> Self {
        self.shared = Some(connections);
        self
    }

    /// Changes how long one call keeps retrying before it gives up.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The client's id.
    pub fn id(&self) -> u64 {
        self.client
    }

    /// Runs a write (put, delete, compare-and-set) exactly once.
    pub async fn write(&mut self, op: KvOp) -> CallOutcome {
        let command = self.next_command(op);
        let outcome = self.call(ClientRequest::Write(command), true).await;
        self.settle(outcome)
    }

    /// The next command of this client's session.
    fn next_command(&mut self, op: KvOp) -> KvCommand {
        self.seq += 1;
        KvCommand {
            client: self.client,
            seq: self.seq,
            op,
        }
    }

    /// A write that certainly was not applied gives its sequence number back: the session
    /// expects the numbers it applies to follow each other.
    fn settle<T>(&mut self, outcome: CallOutcome<T>) -> CallOutcome<T> {
        if matches!(outcome, CallOutcome::Failed(_)) {
            self.seq -= 1;
        }
        outcome
    }

    /// A linearizable read of `key`.
    pub async fn get(&mut self, key: &str) -> CallOutcome {
        self.call(
            ClientRequest::Get {
                key: key.to_string(),
            },
            false,
        )
        .await
    }

    /// Asks node `id` who leads: `Some((is_leader, leader))`, or `None` if it does not answer.
    pub async fn status(&mut self, id: NodeId) -> Option<(bool, Option<NodeId>)> {
        self.node_status(id).await.map(|s| (s.is_leader, s.leader))
    }

    /// Node `id`'s view of the cluster, or `None` if it does not answer.
    pub async fn node_status(&mut self, id: NodeId) -> Option<NodeStatus> {
        match self.attempt(id, &ClientRequest::Status).await {
            Attempt::Reply(ClientReply::Status {
                id,
                is_leader,
                leader,
                term,
                commit_index,
                applied_index,
            }) => Some(NodeStatus {
                id,
                is_leader,
                leader,
                term,
                commit_index,
                applied_index,
            }),
            _ => None,
        }
    }

    /// A linearizable read of up to `limit` keys starting with `prefix`, in order.
    pub async fn scan(&mut self, prefix: &str, limit: usize) -> CallOutcome {
        self.call(
            ClientRequest::Scan {
                prefix: prefix.to_string(),
                limit,
            },
            false,
        )
        .await
    }

    /// The membership as the leader knows it; when no leader answers, as the first node that
    /// does (a follower's view may lag the latest change).
    pub async fn members(&mut self) -> CallOutcome<MembersInfo> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let mut last = String::from("no nodes");
        let mut fallback = None;
        for id in ids {
            let info = match self.attempt(id, &ClientRequest::Members).await {
                Attempt::Reply(ClientReply::Members(info)) => info,
                Attempt::Reply(other) => {
                    last = format!("node {id}: {other:?}");
                    continue;
                }
                Attempt::Lost(why) | Attempt::NotSent(why) => {
                    last = format!("node {id}: {why}");
                    continue;
                }
            };
            self.learn(&info);
            match info.leader {
                Some(leader) if leader == info.id => return CallOutcome::Ok(*info),
                Some(leader) => {
                    if let Attempt::Reply(ClientReply::Members(from_leader)) =
                        self.attempt(leader, &ClientRequest::Members).await
                    {
                        if from_leader.leader == Some(leader) {
                            self.learn(&from_leader);
                            return CallOutcome::Ok(*from_leader);
                        }
                    }
                }
                None => {}
            }
            fallback.get_or_insert(info);
        }
        match fallback {
            Some(info) => CallOutcome::Ok(*info),
            None => CallOutcome::Failed(last),
        }
    }

    /// Adds replica `id` (replica address `peer`, client address `client`): Raft as a learner
    /// (promote it once it caught up), Multi-Paxos as a member. Exactly once, like a write.
    pub async fn add_member(
        &mut self,
        id: NodeId,
        peer: &str,
        client: &str,
    ) -> CallOutcome<MembersInfo> {
        let command = self.next_command(KvOp::Register {
            id,
            peer: peer.to_string(),
            client: client.to_string(),
        });
        let outcome = self.call(ClientRequest::AddMember(command), true).await;
        self.settle(outcome)
    }

    /// Makes Raft learner `id` a voter.
    pub async fn promote_member(&mut self, id: NodeId) -> CallOutcome<MembersInfo> {
        self.call(ClientRequest::PromoteMember(id), true).await
    }

    /// Removes replica `id` for good.
    pub async fn remove_member(&mut self, id: NodeId) -> CallOutcome<MembersInfo> {
        let command = self.next_command(KvOp::Deregister { id });
        let outcome = self.call(ClientRequest::RemoveMember(command), true).await;
        self.settle(outcome)
    }

    /// Hands leadership to voter `id` (Raft).
    pub async fn transfer_leader(&mut self, id: NodeId) -> CallOutcome<MembersInfo> {
        self.call(ClientRequest::TransferLeader(id), true).await
    }

    /// Adds the client addresses `info` names to the nodes this client tries, so that a leader
    /// added at run time can be followed.
    fn learn(&mut self, info: &MembersInfo) {
        for node in &info.nodes {
            if self.nodes.contains_key(&node.id) || info.removed.contains(&node.id) {
                continue;
            }
            let Some(client) = &node.client else { continue };
            if let Ok(addr) = crate::config::resolve(&format!("node {}", node.id), client) {
                self.nodes.insert(node.id, addr);
            }
        }
    }

    async fn call<T: Answer>(&mut self, request: ClientRequest, is_write: bool) -> CallOutcome<T> {
        let started = Instant::now();
        // Whether the request may have reached a node that could apply it.
        let mut maybe_applied = false;
        let mut last = String::from("no attempt");
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        if ids.is_empty() {
            return CallOutcome::Failed("no nodes".into());
        }
        let mut rotate = 0usize;
        while started.elapsed() < self.deadline {
            let target = self.leader;
            let next_in_turn = |rotate: &mut usize| {
                *rotate += 1;
                ids[*rotate % ids.len()]
            };
            let reply = match self.attempt(target, &request).await {
                Attempt::Reply(ClientReply::Output(KvOutput::Stale)) => {
                    // Our own earlier attempt was applied and a later one superseded it: cannot
                    // happen with one request in flight, but never claim an answer we lack.
                    return CallOutcome::Unknown("stale".into());
                }
                Attempt::Reply(reply) => match T::from_reply(reply) {
                    Ok(answer) => return CallOutcome::Ok(answer),
                    Err(reply) => Attempt::Reply(reply),
                },
                other => other,
            };
            match reply {
                Attempt::Reply(ClientReply::NotLeader { leader }) => {
                    last = format!("node {target}: not the leader");
                    if leader.is_some_and(|l| !self.nodes.contains_key(&l)) {
                        // A leader added at run time: ask this node where it is.
                        if let Attempt::Reply(ClientReply::Members(info)) =
                            self.attempt(target, &ClientRequest::Members).await
                        {
                            self.learn(&info);
                        }
                    }
                    match leader.filter(|l| self.nodes.contains_key(l) && *l != target) {
                        Some(l) => self.leader = l,
                        None => {
                            self.leader = next_in_turn(&mut rotate);
                            tokio::time::sleep(NO_LEADER_BACKOFF).await;
                        }
                    }
                }
                Attempt::Reply(ClientReply::Invalid(why)) => {
                    return CallOutcome::Failed(format!("node {target}: {why}"));
                }
                Attempt::Reply(ClientReply::Refused(why)) => {
                    last = format!("node {target}: {why}");
                    self.leader = next_in_turn(&mut rotate);
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                }
                Attempt::Reply(ClientReply::Unknown(why)) => {
                    maybe_applied = true;
                    last = format!("node {target}: {why}");
                    self.leader = next_in_turn(&mut rotate);
                }
                Attempt::Reply(other) => {
                    last = format!("node {target}: unexpected reply {other:?}");
                    self.leader = next_in_turn(&mut rotate);
                }
                Attempt::Lost(why) => {
                    maybe_applied = true;
                    last = format!("node {target}: {why}");
                    self.leader = next_in_turn(&mut rotate);
                }
                Attempt::NotSent(why) => {
                    last = format!("node {target}: {why}");
                    self.leader = next_in_turn(&mut rotate);
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                }
            }
        }
        if is_write && maybe_applied {
            CallOutcome::Unknown(last)
        } else {
            CallOutcome::Failed(last)
        }
    }

    async fn attempt(&mut self, target: NodeId, request: &ClientRequest) -> Attempt {
        let Some(addr) = self.nodes.get(&target).copied() else {
            return Attempt::NotSent(format!("unknown node {target}"));
        };
        if let Some(shared) = &self.shared {
            let slot = usize::try_from(self.client).unwrap_or(0);
            return shared
                .call(target, addr, slot, request, self.attempt_timeout)
                .await;
        }
        if self.conn.as_ref().map(|(id, _)| *id) != Some(target) {
            self.conn = None;
            let stream =
                match tokio::time::timeout(self.attempt_timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Attempt::NotSent(format!("connect: {e}")),
                    Err(_) => return Attempt::NotSent("connect timed out".into()),
                };
            let _ = stream.set_nodelay(true);
            let (read, write) = stream.into_split();
            let (read, write) = match tokio::time::timeout(
                self.attempt_timeout,
                secure(self.tls.as_ref(), read, write, true),
            )
            .await
            {
                Ok(Ok(halves)) => halves,
                Ok(Err(e)) => return Attempt::NotSent(format!("TLS handshake: {e}")),
                Err(_) => return Attempt::NotSent("TLS handshake timed out".into()),
            };
            let stream = tokio::io::join(read, write);
            self.conn = Some((target, Framed::new(stream, client_codec())));
        }
        let bytes = match encode_request(request) {
            Ok(b) => b,
            Err(e) => return Attempt::NotSent(format!("encode: {e}")),
        };
        let Some((_, framed)) = self.conn.as_mut() else {
            return Attempt::NotSent("no connection".into());
        };
        let exchange = async {
            framed
                .send(bytes::Bytes::from(bytes))
                .await
                .map_err(|e| e.to_string())?;
            match framed.next().await {
                Some(Ok(frame)) => decode_reply(&frame).map_err(|e| e.to_string()),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("connection closed".into()),
            }
        };
        match tokio::time::timeout(self.attempt_timeout, exchange).await {
            Ok(Ok(reply)) => Attempt::Reply(reply),
            Ok(Err(e)) => {
                self.conn = None;
                Attempt::Lost(e)
            }
            Err(_) => {
                self.conn = None;
                Attempt::Lost("timed out".into())
            }
        }
    }
}

/// Requests one shared connection has in flight at most (the servers' default
/// [`crate::server::CLIENT_PIPELINE_MAX`]): past it, callers wait for room.
pub const SHARED_PIPELINE_MAX: usize = 256;
/// Calls queued for one shared connection beyond those in flight.
const SHARED_QUEUE_MAX: usize = 1_024;

/// A few connections per node that many [`KvClient`]s share: each carries the requests of
/// several clients at once, pipelined (sent before earlier answers arrive; the node answers in
/// order), so a node serves many clients with few sockets and few system calls. A client's
/// calls still wait for their own answers, and its session (id and sequence numbers) is its
/// own, so every guarantee of [`KvClient`] holds unchanged.
///
/// Client `c` uses connection `c % per_node` of the node it talks to. A connection that fails
/// fails the calls in flight on it (their outcome is unknown, as with a lost connection of
/// one's own) and is opened again by the next call.
#[derive(Clone)]
pub struct SharedConnections {
    per_node: usize,
    tls: Option<TlsConfig>,
    /// One slot per (node, connection): the clients that share a connection wait on its slot
    /// while one of them opens it, so a crowd starting at once opens one socket, not one each.
    open: Arc<Mutex<HashMap<(NodeId, usize), MuxSlot>>>,
}

/// Where a shared connection lives once opened.
type MuxSlot = Arc<tokio::sync::Mutex<Option<Mux>>>;

/// One call handed to a shared connection's task: the encoded request and where its answer
/// goes.
struct MuxCall {
    request: bytes::Bytes,
    answer: oneshot::Sender<Result<ClientReply, String>>,
}

/// A shared connection: the sending side of its task's queue.
#[derive(Clone)]
struct Mux {
    calls: mpsc::Sender<MuxCall>,
}

impl SharedConnections {
    /// `per_node` connections (at least one) to each node, opened when first used.
    pub fn new(per_node: usize) -> Self {
        Self {
            per_node: per_node.max(1),
            tls: None,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Opens the connections with mutual TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    async fn call(
        &self,
        target: NodeId,
        addr: SocketAddr,
        client: usize,
        request: &ClientRequest,
        timeout: Duration,
    ) -> Attempt {
        let key = (target, client % self.per_node);
        let bytes = match encode_request(request) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => return Attempt::NotSent(format!("encode: {e}")),
        };
        let slot = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        let mux = {
            let mut slot = match tokio::time::timeout(timeout, slot.lock()).await {
                Ok(slot) => slot,
                Err(_) => return Attempt::NotSent("connect timed out".into()),
            };
            match slot.as_ref().filter(|m| !m.calls.is_closed()) {
                Some(mux) => mux.clone(),
                None => match self.connect(addr, timeout).await {
                    Ok(mux) => {
                        *slot = Some(mux.clone());
                        mux
                    }
                    Err(attempt) => return attempt,
                },
            }
        };
        let (answer, reply) = oneshot::channel();
        let exchange = async {
            if mux
                .calls
                .send(MuxCall {
                    request: bytes,
                    answer,
                })
                .await
                .is_err()
            {
                return Attempt::NotSent("connection closed".into());
            }
            match reply.await {
                Ok(Ok(reply)) => Attempt::Reply(reply),
                Ok(Err(e)) => Attempt::Lost(e),
                Err(_) => Attempt::Lost("connection closed".into()),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(attempt) => attempt,
            // The answer, if it comes, is dropped by the connection's task.
            Err(_) => Attempt::Lost("timed out".into()),
        }
    }

    async fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<Mux, Attempt> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(Attempt::NotSent(format!("connect: {e}"))),
            Err(_) => return Err(Attempt::NotSent("connect timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (read, write) =
            match tokio::time::timeout(timeout, secure(self.tls.as_ref(), read, write, true)).await
            {
                Ok(Ok(halves)) => halves,
                Ok(Err(e)) => return Err(Attempt::NotSent(format!("TLS handshake: {e}"))),
                Err(_) => return Err(Attempt::NotSent("TLS handshake timed out".into())),
            };
        let (calls, queue) = mpsc::channel(SHARED_QUEUE_MAX);
        tokio::spawn(run_mux(
            FramedRead::new(read, client_codec()),
            FramedWrite::new(write, client_codec()),
            queue,
        ));
        Ok(Mux { calls })
    }
}

/// A shared connection's task: writes the calls it is handed (every one queued, with one
/// flush), and hands each answer to the oldest call waiting, until the connection fails or
/// every [`Mux`] is gone.
async fn run_mux(
    mut answers: FramedRead<MaybeTlsRead<OwnedReadHalf, OwnedWriteHalf>, LengthDelimitedCodec>,
    mut requests: FramedWrite<MaybeTlsWrite<OwnedReadHalf, OwnedWriteHalf>, LengthDelimitedCodec>,
    mut queue: mpsc::Receiver<MuxCall>,
) {
    let mut waiting: VecDeque<oneshot::Sender<Result<ClientReply, String>>> = VecDeque::new();
    let failure = loop {
        tokio::select! {
            biased;
            frame = answers.next(), if !waiting.is_empty() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => break e.to_string(),
                    None => break "connection closed".to_string(),
                };
                let reply = decode_reply(&frame).map_err(|e| format!("bad reply: {e}"));
                let bad = reply.is_err();
                if let Some(call) = waiting.pop_front() {
                    // The caller may have timed out and gone: nothing to do then.
                    let _ = call.send(reply);
                }
                if bad {
                    // The stream cannot be trusted past a reply that does not decode.
                    break "a reply did not decode".to_string();
                }
            }
            call = queue.recv(), if waiting.len() < SHARED_PIPELINE_MAX => {
                let Some(mut call) = call else { return };
                let mut failed = None;
                loop {
                    if let Err(e) = requests.feed(call.request).await {
                        let _ = call.answer.send(Err(e.to_string()));
                        failed = Some(e.to_string());
                        break;
                    }
                    waiting.push_back(call.answer);
                    if waiting.len() >= SHARED_PIPELINE_MAX {
                        break;
                    }
                    match queue.try_recv() {
                        Ok(next) => call = next,
                        Err(_) => break,
                    }
                }
                if let Some(e) = failed {
                    break e;
                }
                if let Err(e) = SinkExt::<bytes::Bytes>::flush(&mut requests).await {
                    break e.to_string();
                }
            }
        }
    };
    for call in waiting {
        let _ = call.send(Err(failure.clone()));
    }
}

/// Parses `id=addr,id=addr,...`.
pub fn parse_nodes(text: &str) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
    let mut nodes = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected id=addr"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|e| format!("`{part}`: bad node id: {e}"))?;
        let addr = crate::config::resolve(&format!("node {id}"), addr.trim())?;
        if nodes.insert(id, addr).is_some() {
            return Err(format!("node {id} named twice"));
        }
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse_and_bad_ones_are_refused() {
        let nodes = parse_nodes("1=127.0.0.1:7001, 2=127.0.0.1:7002").unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[&2], "127.0.0.1:7002".parse().unwrap());
        assert!(parse_nodes("1=127.0.0.1:7001,1=127.0.0.1:7002").is_err());
        assert!(parse_nodes("x=127.0.0.1:7001").is_err());
        assert!(parse_nodes("1:127.0.0.1").is_err());
        assert!(parse_nodes("1=nowhere").is_err());
    }

    #[test]
    fn replies_round_trip_and_garbage_is_an_error() {
        let reply = ClientReply::NotLeader { leader: Some(3) };
        assert_eq!(decode_reply(&encode_reply(&reply).unwrap()).unwrap(), reply);
        assert!(decode_reply(&[]).is_err());
        assert!(decode_request(&[0xff; 16]).is_err());
    }
}
