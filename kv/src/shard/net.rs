//! The sharded store over TCP: the client protocol of a `kv-shard` process, the server side
//! that forwards it to the process's [`ShardHost`], and [`ShardClient`], which runs the
//! sans-IO agents ([`Router`], [`Mover`], [`TxDriver`], [`Resolver`]) against real processes.
//!
//! # Protocol
//!
//! A client sends the requests the agents name ([`ShardRequest`]) to the process the agents
//! name, and the process answers with what its groups host answered ([`ShardResponse`]). On
//! the wire both are serde mirrors, one variant per variant: [`WireRequest`] (a group's
//! propose, read, leadership transfer and membership changes, and the host's add and remove of
//! a group) and [`WireResponse`] (applied, read, membership changed, failed with a mirror of
//! [`RaftError`], and the host's answers: added, removed, unknown group, already hosted,
//! removal pending, abandoned, too many groups, bad spec). One more answer,
//! [`WireResponse::Unavailable`], says the process could not hand the request to its node (the
//! node stopped, its storage failed) or the node did not answer within [`SERVE_TIMEOUT`]; the
//! client reports it as no answer, like a timeout.
//!
//! Every message is one frame of tokio-util's `LengthDelimitedCodec` (4-byte big-endian
//! length) of at most [`FRAME_BYTES_MAX`] bytes, holding a [`Frame`]: a request id chosen by
//! the client and the body, encoded with the workspace's [`Bincode`] codec (which caps what a
//! decode may allocate). The server answers each request with a frame of the same id; answers
//! may come in any order, so a slow request (a proposal waiting for its commit) does not hold
//! up a fast one (a read) on the same connection.
//!
//! # Limits
//!
//! - A frame above [`FRAME_BYTES_MAX`], or one that does not decode, closes that connection
//!   (logged); the process keeps serving every other connection, and nothing panics.
//! - At most [`IN_FLIGHT_MAX`] requests of one connection are being served at once; past it
//!   the server stops reading that connection until an answer goes out, and the client queues
//!   further calls (at most [`CALL_QUEUE_MAX`]).
//! - At most [`CONNECTIONS_MAX`] connections per process; one more is closed at once.
//! - A connection with nothing in flight that sends nothing for [`IDLE_TIMEOUT`] is closed.
//! - A client call gives up after [`CALL_TIMEOUT`] (connecting included): the call answers
//!   `None`, as a timeout does in the simulator, and the agents try again or elsewhere.
//!
//! # Delivery
//!
//! A call that answers `None` may or may not have taken effect. The agents are built for that:
//! every step of a move and of a transaction is idempotent, and the resolver keeps nothing a
//! retry could contradict. [`ShardClient::put`] is the exception: a put retried after a lost
//! answer is applied again (last writer wins, so only a concurrent writer to the same key can
//! tell). Use a transaction ([`ShardClient::run_tx`]) where that matters.
//!
//! # Not there
//!
//! No TLS and no authentication of clients: anyone who reaches a client port can read, write
//! and move partitions. The processes authenticate one another (the TCP transport's
//! cluster-key handshake), but the client port must stay on a trusted network. No metrics.
//! A client learns nothing of processes it was not given the address of.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::codec::{Bincode, Codec};
use common::driver::NodeHandle;
use common::groups::{GroupId, GroupResponse, GroupsRequest};
use common::kv_store::{KvCommand, KvOutput, KvQuery};
use common::NodeId;
use futures::{SinkExt, StreamExt};
use raft::message::Membership;
use raft::{RaftError, Request, Response};
use serde::{Deserialize, Serialize};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::layout::MAP_GROUP;
use super::machine::{Refusal, ShardCommand, ShardOutput, ShardQuery, MAP_BYTES_MAX};
use super::mover::Mover;
use super::router::{Next, Router, ShardRequest, ShardResponse};
use super::setup::ShardHost;
use super::txn::TxRefusal;
use super::txn_client::{Resolver, ResolverStats, TxDriver, TxResult};

/// Largest frame either way: room for a shard map of [`MAP_BYTES_MAX`] and then some.
pub const FRAME_BYTES_MAX: usize = MAP_BYTES_MAX + 1024 * 1024;
/// Requests of one connection served at once (the client's calls in flight on it, too).
pub const IN_FLIGHT_MAX: usize = 64;
/// Calls a client queues for one connection beyond those in flight.
pub const CALL_QUEUE_MAX: usize = 1_024;
/// Client connections a process serves at once.
pub const CONNECTIONS_MAX: usize = 1_024;
/// A connection with nothing in flight that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server waits for its node's answer to one request before answering
/// [`WireResponse::Unavailable`] (its client gave up long before, at [`CALL_TIMEOUT`]).
pub const SERVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client call waits for its answer, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client waits for a TCP connection to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The pause before asking again after an answer that did not advance an agent (a failure, a
/// refusal, no answer), so a loop against a process that refuses at once does not spin.
pub const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// The pause between two scans of the resolver (one group each).
pub const RESOLVER_SCAN_PAUSE: Duration = Duration::from_millis(20);
/// The pause after a failed `accept`, so a persistent error does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Every message: the request id the client chose (echoed by the answer) and the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame<T> {
    /// Matches an answer to its request.
    pub id: u64,
    /// The request or answer.
    pub body: T,
}

/// The wire form of [`ShardQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireQuery {
    /// [`ShardQuery::Kv`] of [`KvQuery::Get`].
    Get(String),
    /// [`ShardQuery::Map`].
    Map,
    /// [`ShardQuery::InDoubt`].
    InDoubt,
}

/// The wire form of [`ShardRequest`]: one variant per variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireRequest {
    /// A group's [`Request::Propose`].
    Propose {
        /// The group.
        group: GroupId,
        /// The command.
        command: ShardCommand,
    },
    /// A group's [`Request::Read`].
    Read {
        /// The group.
        group: GroupId,
        /// The query.
        query: WireQuery,
    },
    /// A group's [`Request::TransferLeadership`].
    TransferLeadership {
        /// The group.
        group: GroupId,
        /// The new leader.
        to: NodeId,
    },
    /// A group's [`Request::AddLearner`].
    AddLearner {
        /// The group.
        group: GroupId,
        /// The learner.
        node: NodeId,
    },
    /// A group's [`Request::AddVoter`].
    AddVoter {
        /// The group.
        group: GroupId,
        /// The voter.
        node: NodeId,
    },
    /// A group's [`Request::RemoveNode`].
    RemoveNode {
        /// The group.
        group: GroupId,
        /// The member removed.
        node: NodeId,
    },
    /// A group's [`Request::ChangeVoters`].
    ChangeVoters {
        /// The group.
        group: GroupId,
        /// The new voters.
        voters: BTreeSet<NodeId>,
    },
    /// [`GroupsRequest::AddGroup`].
    AddGroup {
        /// The group.
        group: GroupId,
        /// What its configuration is built from.
        spec: Vec<u8>,
    },
    /// [`GroupsRequest::RemoveGroup`].
    RemoveGroup {
        /// The group.
        group: GroupId,
    },
}

/// The wire form of [`RaftError`]: one variant per variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireRaftError {
    /// [`RaftError::NotLeader`].
    NotLeader {
        /// The leader the process knows of.
        leader: Option<NodeId>,
    },
    /// [`RaftError::Dropped`].
    Dropped {
        /// Where the proposal had been appended.
        index: u64,
    },
    /// [`RaftError::Busy`], with its reason.
    Busy(String),
    /// [`RaftError::TransferInProgress`].
    TransferInProgress(NodeId),
    /// [`RaftError::Invalid`].
    Invalid(String),
    /// [`RaftError::Indeterminate`].
    Indeterminate {
        /// Where the proposal had been appended.
        index: u64,
    },
    /// [`RaftError::TransferTimedOut`].
    TransferTimedOut {
        /// The intended leader.
        target: NodeId,
    },
    /// [`RaftError::LeadershipLost`].
    LeadershipLost {
        /// The leader the process knows of.
        leader: Option<NodeId>,
    },
}

/// The wire form of [`ShardResponse`]: one variant per variant, and
/// [`WireResponse::Unavailable`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireResponse {
    /// A group's [`Response::Applied`].
    Applied {
        /// The group.
        group: GroupId,
        /// Where the entry sits in the group's log.
        index: u64,
        /// What it answered.
        output: ShardOutput,
    },
    /// A group's [`Response::Read`].
    Read {
        /// The group.
        group: GroupId,
        /// What it answered.
        output: ShardOutput,
    },
    /// A group's [`Response::TransferStarted`].
    TransferStarted {
        /// The group.
        group: GroupId,
    },
    /// A group's [`Response::MembershipChanged`].
    MembershipChanged {
        /// The group.
        group: GroupId,
        /// Where the configuration entry sits.
        index: u64,
        /// The configuration now in force.
        membership: Membership,
    },
    /// A group's [`Response::Failed`].
    Failed {
        /// The group.
        group: GroupId,
        /// Why.
        error: WireRaftError,
    },
    /// [`GroupResponse::UnknownGroup`].
    UnknownGroup(GroupId),
    /// [`GroupResponse::Abandoned`].
    Abandoned(GroupId),
    /// [`GroupResponse::Added`].
    Added(GroupId),
    /// [`GroupResponse::Removed`].
    Removed(GroupId),
    /// [`GroupResponse::AlreadyHosted`].
    AlreadyHosted(GroupId),
    /// [`GroupResponse::RemovalPending`].
    RemovalPending(GroupId),
    /// [`GroupResponse::TooManyGroups`].
    TooManyGroups {
        /// The group.
        group: GroupId,
        /// The limit.
        max: u64,
    },
    /// [`GroupResponse::BadSpec`].
    BadSpec {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// The process could not hand the request to its node, or the node did not answer in
    /// time: the request may or may not have taken effect. A client reports it as no answer.
    Unavailable(String),
}

/// The reasons of [`RaftError::Busy`] the Raft crate gives; a reason read from the wire is
/// matched against them, since the error holds a `&'static str`.
const BUSY_REASONS: [&str; 6] = [
    "too many pending reads",
    "too many pending proposals",
    "too many uncommitted bytes",
    "a membership change is in progress",
    "the learner has not caught up",
    "the leader has not committed an entry of its term yet",
];
/// The reason of a busy answer whose reason this client does not know.
const BUSY_UNKNOWN: &str = "busy (a reason this client does not know)";

impl From<RaftError> for WireRaftError {
    fn from(e: RaftError) -> Self {
        match e {
            RaftError::NotLeader { leader } => WireRaftError::NotLeader { leader },
            RaftError::Dropped { index } => WireRaftError::Dropped { index },
            RaftError::Busy(reason) => WireRaftError::Busy(reason.to_string()),
            RaftError::TransferInProgress(n) => WireRaftError::TransferInProgress(n),
            RaftError::Invalid(s) => WireRaftError::Invalid(s),
            RaftError::Indeterminate { index } => WireRaftError::Indeterminate { index },
            RaftError::TransferTimedOut { target } => WireRaftError::TransferTimedOut { target },
            RaftError::LeadershipLost { leader } => WireRaftError::LeadershipLost { leader },
        }
    }
}

impl From<WireRaftError> for RaftError {
    fn from(e: WireRaftError) -> Self {
        match e {
            WireRaftError::NotLeader { leader } => RaftError::NotLeader { leader },
            WireRaftError::Dropped { index } => RaftError::Dropped { index },
            WireRaftError::Busy(reason) => RaftError::Busy(
                BUSY_REASONS
                    .iter()
                    .find(|r| **r == reason)
                    .copied()
                    .unwrap_or(BUSY_UNKNOWN),
            ),
            WireRaftError::TransferInProgress(n) => RaftError::TransferInProgress(n),
            WireRaftError::Invalid(s) => RaftError::Invalid(s),
            WireRaftError::Indeterminate { index } => RaftError::Indeterminate { index },
            WireRaftError::TransferTimedOut { target } => RaftError::TransferTimedOut { target },
            WireRaftError::LeadershipLost { leader } => RaftError::LeadershipLost { leader },
        }
    }
}

impl From<&ShardRequest> for WireRequest {
    fn from(request: &ShardRequest) -> Self {
        match request {
            GroupsRequest::Group(group, r) => {
                let group = *group;
                match r {
                    Request::Propose(command) => WireRequest::Propose {
                        group,
                        command: command.clone(),
                    },
                    Request::Read(query) => WireRequest::Read {
                        group,
                        query: match query {
                            ShardQuery::Kv(KvQuery::Get(key)) => WireQuery::Get(key.clone()),
                            ShardQuery::Map => WireQuery::Map,
                            ShardQuery::InDoubt => WireQuery::InDoubt,
                        },
                    },
                    Request::TransferLeadership(to) => {
                        WireRequest::TransferLeadership { group, to: *to }
                    }
                    Request::AddLearner(node) => WireRequest::AddLearner { group, node: *node },
                    Request::AddVoter(node) => WireRequest::AddVoter { group, node: *node },
                    Request::RemoveNode(node) => WireRequest::RemoveNode { group, node: *node },
                    Request::ChangeVoters(voters) => WireRequest::ChangeVoters {
                        group,
                        voters: voters.clone(),
                    },
                }
            }
            GroupsRequest::AddGroup { group, spec } => WireRequest::AddGroup {
                group: *group,
                spec: spec.clone(),
            },
            GroupsRequest::RemoveGroup { group } => WireRequest::RemoveGroup { group: *group },
        }
    }
}

impl From<WireRequest> for ShardRequest {
    fn from(request: WireRequest) -> Self {
        let group = |g: GroupId, r| GroupsRequest::Group(g, r);
        match request {
            WireRequest::Propose { group: g, command } => group(g, Request::Propose(command)),
            WireRequest::Read { group: g, query } => group(
                g,
                Request::Read(match query {
                    WireQuery::Get(key) => ShardQuery::Kv(KvQuery::Get(key)),
                    WireQuery::Map => ShardQuery::Map,
                    WireQuery::InDoubt => ShardQuery::InDoubt,
                }),
            ),
            WireRequest::TransferLeadership { group: g, to } => {
                group(g, Request::TransferLeadership(to))
            }
            WireRequest::AddLearner { group: g, node } => group(g, Request::AddLearner(node)),
            WireRequest::AddVoter { group: g, node } => group(g, Request::AddVoter(node)),
            WireRequest::RemoveNode { group: g, node } => group(g, Request::RemoveNode(node)),
            WireRequest::ChangeVoters { group: g, voters } => {
                group(g, Request::ChangeVoters(voters))
            }
            WireRequest::AddGroup { group, spec } => GroupsRequest::AddGroup { group, spec },
            WireRequest::RemoveGroup { group } => GroupsRequest::RemoveGroup { group },
        }
    }
}

impl From<ShardResponse> for WireResponse {
    fn from(response: ShardResponse) -> Self {
        match response {
            GroupResponse::Group(group, r) => match r {
                Response::Applied { index, output } => WireResponse::Applied {
                    group,
                    index,
                    output,
                },
                Response::Read(output) => WireResponse::Read { group, output },
                Response::TransferStarted => WireResponse::TransferStarted { group },
                Response::MembershipChanged { index, membership } => {
                    WireResponse::MembershipChanged {
                        group,
                        index,
                        membership: *membership,
                    }
                }
                Response::Failed(e) => WireResponse::Failed {
                    group,
                    error: e.into(),
                },
            },
            GroupResponse::UnknownGroup(g) => WireResponse::UnknownGroup(g),
            GroupResponse::Abandoned(g) => WireResponse::Abandoned(g),
            GroupResponse::Added(g) => WireResponse::Added(g),
            GroupResponse::Removed(g) => WireResponse::Removed(g),
            GroupResponse::AlreadyHosted(g) => WireResponse::AlreadyHosted(g),
            GroupResponse::RemovalPending(g) => WireResponse::RemovalPending(g),
            GroupResponse::TooManyGroups { group, max } => WireResponse::TooManyGroups {
                group,
                max: u64::try_from(max).unwrap_or(u64::MAX),
            },
            GroupResponse::BadSpec { group, reason } => WireResponse::BadSpec { group, reason },
        }
    }
}

impl WireResponse {
    /// The answer it stands for; `None` for [`WireResponse::Unavailable`] (no answer).
    pub fn into_response(self) -> Option<ShardResponse> {
        let group = |g: GroupId, r| Some(GroupResponse::Group(g, r));
        match self {
            WireResponse::Applied {
                group: g,
                index,
                output,
            } => group(g, Response::Applied { index, output }),
            WireResponse::Read { group: g, output } => group(g, Response::Read(output)),
            WireResponse::TransferStarted { group: g } => group(g, Response::TransferStarted),
            WireResponse::MembershipChanged {
                group: g,
                index,
                membership,
            } => group(
                g,
                Response::MembershipChanged {
                    index,
                    membership: Box::new(membership),
                },
            ),
            WireResponse::Failed { group: g, error } => group(g, Response::Failed(error.into())),
            WireResponse::UnknownGroup(g) => Some(GroupResponse::UnknownGroup(g)),
            WireResponse::Abandoned(g) => Some(GroupResponse::Abandoned(g)),
            WireResponse::Added(g) => Some(GroupResponse::Added(g)),
            WireResponse::Removed(g) => Some(GroupResponse::Removed(g)),
            WireResponse::AlreadyHosted(g) => Some(GroupResponse::AlreadyHosted(g)),
            WireResponse::RemovalPending(g) => Some(GroupResponse::RemovalPending(g)),
            WireResponse::TooManyGroups { group, max } => Some(GroupResponse::TooManyGroups {
                group,
                max: usize::try_from(max).unwrap_or(usize::MAX),
            }),
            WireResponse::BadSpec { group, reason } => {
                Some(GroupResponse::BadSpec { group, reason })
            }
            WireResponse::Unavailable(_) => None,
        }
    }
}

/// The framing of the protocol, with its limit.
pub fn shard_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(FRAME_BYTES_MAX)
        .new_codec()
}

/// Encodes one frame, refusing one above [`FRAME_BYTES_MAX`].
pub fn encode_frame<T: Serialize>(frame: &Frame<T>) -> Result<Bytes, String> {
    let bytes = Bincode.encode(frame).map_err(|e| e.to_string())?;
    if bytes.len() > FRAME_BYTES_MAX {
        return Err(format!(
            "a frame of {} bytes, above the limit of {FRAME_BYTES_MAX}",
            bytes.len()
        ));
    }
    Ok(Bytes::from(bytes))
}

/// Decodes a request frame from untrusted bytes.
pub fn decode_request(bytes: &[u8]) -> Result<Frame<WireRequest>, String> {
    Bincode.decode(bytes).map_err(|e| e.to_string())
}

/// Decodes an answer frame from untrusted bytes.
pub fn decode_response(bytes: &[u8]) -> Result<Frame<WireResponse>, String> {
    Bincode.decode(bytes).map_err(|e| e.to_string())
}

// ----- the server -----

/// Serves the client protocol on `listener`, forwarding every request to `handle`, until the
/// task is dropped. Each connection is a task of its own; a bad frame closes that connection
/// only.
pub async fn serve(listener: TcpListener, handle: NodeHandle<ShardHost>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "client refused: {CONNECTIONS_MAX} connections open");
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match serve_connection(stream, handle).await {
                Ok(()) => tracing::debug!(%peer, "client connection closed"),
                Err(e) => tracing::error!(%peer, "client connection closed: {e}"),
            }
        });
    }
}

/// One connection: reads requests while fewer than [`IN_FLIGHT_MAX`] are in flight, serves
/// each in a task of its own, and writes the answers as they come.
async fn serve_connection(stream: TcpStream, handle: NodeHandle<ShardHost>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut requests = FramedRead::new(read, shard_codec());
    let (answers, queue) = mpsc::channel::<Bytes>(IN_FLIGHT_MAX);
    let writer = tokio::spawn(write_answers(FramedWrite::new(write, shard_codec()), queue));
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let result = loop {
        // Not read while the connection has its share in flight: the client waits.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break Ok(());
        };
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, requests.next()).await {
            Err(_) if in_flight.available_permits() + 1 < IN_FLIGHT_MAX => continue,
            Err(_) => break Ok(()),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(format!("a bad frame: {e}")),
            Ok(Some(Ok(frame))) => frame,
        };
        let request = match decode_request(&frame) {
            Ok(request) => request,
            Err(e) => break Err(format!("a request that does not decode: {e}")),
        };
        let handle = handle.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let body = match tokio::time::timeout(
                SERVE_TIMEOUT,
                handle.request(request.body.into()),
            )
            .await
            {
                Ok(Ok(response)) => WireResponse::from(response),
                Ok(Err(e)) => WireResponse::Unavailable(e.to_string()),
                Err(_) => WireResponse::Unavailable("the node did not answer in time".into()),
            };
            let bytes = encode_frame(&Frame {
                id: request.id,
                body,
            })
            .or_else(|e| {
                encode_frame(&Frame {
                    id: request.id,
                    body: WireResponse::Unavailable(format!("the answer could not be sent: {e}")),
                })
            });
            match bytes {
                Ok(bytes) => {
                    // The writer is gone only if the connection failed: nothing to tell then.
                    let _ = answers.send(bytes).await;
                }
                Err(e) => tracing::error!("an answer could not be encoded: {e}"),
            }
            drop(permit);
        });
    };
    drop(answers);
    if result.is_err() {
        // The stream cannot be trusted past a bad frame: close it now.
        writer.abort();
    } else {
        // A client that closed its side still gets the answers in flight.
        let _ = writer.await;
    }
    result
}

/// Writes the answers of one connection as they come, with one flush per burst.
async fn write_answers(
    mut sink: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    mut queue: mpsc::Receiver<Bytes>,
) {
    while let Some(bytes) = queue.recv().await {
        if let Err(e) = sink.feed(bytes).await {
            tracing::debug!("writing an answer failed: {e}");
            return;
        }
        while let Ok(more) = queue.try_recv() {
            if let Err(e) = sink.feed(more).await {
                tracing::debug!("writing an answer failed: {e}");
                return;
            }
        }
        if let Err(e) = SinkExt::<Bytes>::flush(&mut sink).await {
            tracing::debug!("writing an answer failed: {e}");
            return;
        }
    }
}

// ----- the client -----

/// One call handed to a connection's task.
struct Call {
    id: u64,
    bytes: Bytes,
    answer: oneshot::Sender<WireResponse>,
}

/// An open connection: the queue of its task.
#[derive(Clone)]
struct Conn {
    calls: mpsc::Sender<Call>,
}

/// Where a connection lives once opened; callers wait on it while one of them opens it.
type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;

struct ClientInner {
    addrs: BTreeMap<NodeId, SocketAddr>,
    slots: std::sync::Mutex<BTreeMap<NodeId, Slot>>,
    next_id: AtomicU64,
    timeout: Duration,
}

/// A client of the processes of a sharded store: one connection per process, opened when
/// first needed and again after it failed, shared by every clone and every concurrent call.
///
/// [`ShardClient::call`] sends one request and waits at most [`CALL_TIMEOUT`] for the answer;
/// the other methods loop an agent to completion. Those loops never give up by themselves:
/// callers bound them (`tokio::time::timeout`), and since the agents keep their state in the
/// value the caller owns, a loop cut short can be run again from where it stopped.
#[derive(Clone)]
pub struct ShardClient {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for ShardClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardClient")
            .field("addrs", &self.inner.addrs)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl ShardClient {
    /// A client of the processes at `addrs` (their client ports), with [`CALL_TIMEOUT`].
    pub fn new(addrs: BTreeMap<NodeId, SocketAddr>) -> Self {
        Self::with_timeout(addrs, CALL_TIMEOUT)
    }

    /// A client whose calls wait at most `timeout`.
    pub fn with_timeout(addrs: BTreeMap<NodeId, SocketAddr>, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(ClientInner {
                addrs,
                slots: std::sync::Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
                timeout,
            }),
        }
    }

    /// The processes it knows, the seeds to give agents.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.inner.addrs.keys().copied().collect()
    }

    /// Sends `request` to process `node` and waits for its answer: `None` if none came in time,
    /// the connection failed, the process is unknown or answered
    /// [`WireResponse::Unavailable`]. The request may have taken effect all the same.
    pub async fn call(&self, node: NodeId, request: ShardRequest) -> Option<ShardResponse> {
        let addr = *self.inner.addrs.get(&node)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = match encode_frame(&Frame {
            id,
            body: WireRequest::from(&request),
        }) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(node, "a request could not be sent: {e}");
                return None;
            }
        };
        let exchange = async {
            let conn = self.connection(node, addr).await?;
            let (answer, reply) = oneshot::channel();
            conn.calls.send(Call { id, bytes, answer }).await.ok()?;
            reply.await.ok()
        };
        let wire = tokio::time::timeout(self.inner.timeout, exchange)
            .await
            .ok()??;
        wire.into_response()
    }

    /// The open connection to `node`, opening it if there is none.
    async fn connection(&self, node: NodeId, addr: SocketAddr) -> Option<Conn> {
        let slot = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.calls.is_closed()) {
            return Some(conn.clone());
        }
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(node, %addr, "connect failed: {e}");
                return None;
            }
            Err(_) => {
                tracing::debug!(node, %addr, "connect timed out");
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let (calls, queue) = mpsc::channel(CALL_QUEUE_MAX);
        let (read, write) = stream.into_split();
        tokio::spawn(run_connection(node, read, write, queue));
        let conn = Conn { calls };
        *slot = Some(conn.clone());
        Some(conn)
    }

    /// Runs `mover` until every partition is in place.
    pub async fn run_mover(&self, mover: &mut Mover) {
        while let Some((node, request)) = mover.next_request() {
            let answer = self.call(node, request).await;
            let retries = mover.stats().retries;
            mover.observe(node, answer.as_ref());
            if mover.stats().retries > retries {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// Runs the transaction `driver` began until it ends, and says how. A driver with nothing
    /// begun (or a transaction of no keys) answers aborted as malformed.
    pub async fn run_tx(&self, driver: &mut TxDriver) -> TxResult {
        loop {
            if let Some(result) = driver.result() {
                return result.clone();
            }
            let Some((node, request)) = driver.next_request() else {
                return TxResult::Aborted(Some(TxRefusal::Malformed(
                    "no transaction of any key under way".into(),
                )));
            };
            let answer = self.call(node, request.clone()).await;
            driver.observe(node, &request, answer.as_ref());
            if !advanced(node, answer.as_ref()) {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// The value of `key` (`None`: absent), read linearizably from its partition's leader
    /// through `router`; asks again while a transaction holds the key.
    pub async fn get(&self, router: &mut Router, key: &str) -> Option<String> {
        let query = Request::Read(ShardQuery::Kv(KvQuery::Get(key.to_string())));
        loop {
            let answer = self.routed(router, key, query.clone()).await;
            if let Some(GroupResponse::Group(
                g,
                Response::Read(ShardOutput::Kv(KvOutput::Value(value))),
            )) = answer
            {
                if g != MAP_GROUP {
                    return value;
                }
            }
        }
    }

    /// Sets `key` to `value` through its partition's log, through `router`; asks again while a
    /// transaction holds the key. Retried after a lost answer, so it may apply twice (see the
    /// module documentation).
    pub async fn put(&self, router: &mut Router, key: &str, value: &str) {
        let command = Request::Propose(ShardCommand::Kv(KvCommand::Put {
            key: key.to_string(),
            value: value.to_string(),
        }));
        loop {
            let answer = self.routed(router, key, command.clone()).await;
            if let Some(GroupResponse::Group(
                g,
                Response::Applied {
                    output: ShardOutput::Kv(_),
                    ..
                },
            )) = answer
            {
                if g != MAP_GROUP {
                    return;
                }
            }
        }
    }

    /// One request of `key` (or the map read the router needs first), the router told of the
    /// answer; pauses after an answer that did not advance.
    async fn routed(
        &self,
        router: &mut Router,
        key: &str,
        request: Request<ShardCommand, ShardQuery>,
    ) -> Option<ShardResponse> {
        let (group, node, request) = match router.next(key) {
            Next::ReadMap(node) => (MAP_GROUP, node, Router::map_request()),
            Next::Send { group, node } => (group, node, GroupsRequest::Group(group, request)),
        };
        let answer = self.call(node, request).await;
        router.observe(group, node, answer.as_ref());
        if !advanced(node, answer.as_ref()) {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        answer
    }

    /// Runs `resolver` until `stop` turns true or its sender is dropped, pausing
    /// [`RESOLVER_SCAN_PAUSE`] between scans; answers what it did. Its clock is milliseconds
    /// since the loop began, so build it with `resolve_after` in milliseconds.
    pub async fn run_resolver(
        &self,
        mut resolver: Resolver,
        mut stop: watch::Receiver<bool>,
    ) -> ResolverStats {
        let began = Instant::now();
        while !*stop.borrow() {
            let scanning = resolver.is_idle();
            let (node, request) = resolver.next_request();
            let answer = tokio::select! {
                answer = self.call(node, request.clone()) => answer,
                _ = stop.changed() => break,
            };
            let now = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
            resolver.observe(now, node, &request, answer.as_ref());
            let pause = if !advanced(node, answer.as_ref()) {
                RETRY_PAUSE
            } else if scanning {
                RESOLVER_SCAN_PAUSE
            } else {
                Duration::ZERO
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
        }
        resolver.stats().clone()
    }
}

/// Whether an answer from `node` moves an agent on without a pause: an output other than a
/// refusal, or a redirect to another process.
fn advanced(node: NodeId, answer: Option<&ShardResponse>) -> bool {
    match answer {
        Some(GroupResponse::Group(
            _,
            Response::Applied {
                output: ShardOutput::Refused(Refusal::Locked { .. }),
                ..
            }
            | Response::Read(ShardOutput::Refused(Refusal::Locked { .. })),
        )) => false,
        Some(GroupResponse::Group(
            _,
            Response::Applied { .. } | Response::Read(_) | Response::MembershipChanged { .. },
        )) => true,
        Some(GroupResponse::Group(
            _,
            Response::Failed(
                RaftError::NotLeader { leader: Some(l) }
                | RaftError::LeadershipLost { leader: Some(l) },
            ),
        )) => *l != node,
        Some(GroupResponse::Added(_) | GroupResponse::Removed(_)) => true,
        _ => false,
    }
}

/// A client connection's task: writes the calls it is handed and hands each answer to the call
/// of its id, until the connection fails or every handle of it is gone. Calls in flight when
/// it ends see their answer channel closed (no answer).
async fn run_connection(
    node: NodeId,
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Call>,
) {
    let mut answers = FramedRead::new(read, shard_codec());
    let mut requests = FramedWrite::new(write, shard_codec());
    let mut waiting: HashMap<u64, oneshot::Sender<WireResponse>> = HashMap::new();
    loop {
        if waiting.len() >= IN_FLIGHT_MAX {
            // Calls that timed out leave their room.
            waiting.retain(|_, answer| !answer.is_closed());
        }
        tokio::select! {
            frame = answers.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        tracing::warn!(node, "closing the connection: a bad frame: {e}");
                        return;
                    }
                    None => return,
                };
                match decode_response(&frame) {
                    Ok(answer) => {
                        // A call that timed out is gone: its answer is dropped.
                        if let Some(call) = waiting.remove(&answer.id) {
                            let _ = call.send(answer.body);
                        }
                    }
                    Err(e) => {
                        tracing::error!(node, "closing the connection: an answer that does not decode: {e}");
                        return;
                    }
                }
            }
            call = queue.recv(), if waiting.len() < IN_FLIGHT_MAX => {
                let Some(call) = call else { return };
                if call.answer.is_closed() {
                    continue;
                }
                if let Err(e) = requests.send(call.bytes).await {
                    tracing::debug!(node, "closing the connection: {e}");
                    return;
                }
                waiting.insert(call.id, call.answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{MapCommand, TxCommand, TxOutput};
    use common::txn::TxId;

    fn round_trip_request(request: ShardRequest) {
        let bytes = encode_frame(&Frame {
            id: 7,
            body: WireRequest::from(&request),
        })
        .unwrap();
        let back = decode_request(&bytes).unwrap();
        assert_eq!(back.id, 7);
        assert_eq!(ShardRequest::from(back.body), request);
    }

    fn round_trip_response(response: ShardResponse) {
        let bytes = encode_frame(&Frame {
            id: 9,
            body: WireResponse::from(response.clone()),
        })
        .unwrap();
        let back = decode_response(&bytes).unwrap();
        assert_eq!(back.id, 9);
        assert_eq!(back.body.into_response(), Some(response));
    }

    #[test]
    fn every_request_the_agents_send_survives_the_wire() {
        let g = |r| GroupsRequest::Group(3, r);
        round_trip_request(g(Request::Propose(ShardCommand::Map(
            MapCommand::AddProcess(4),
        ))));
        round_trip_request(g(Request::Propose(ShardCommand::Tx(TxCommand::Forget {
            tx: TxId::new(1, 2),
        }))));
        round_trip_request(g(Request::Read(ShardQuery::Kv(KvQuery::Get("k".into())))));
        round_trip_request(g(Request::Read(ShardQuery::Map)));
        round_trip_request(g(Request::Read(ShardQuery::InDoubt)));
        round_trip_request(g(Request::TransferLeadership(2)));
        round_trip_request(g(Request::AddLearner(4)));
        round_trip_request(g(Request::AddVoter(4)));
        round_trip_request(g(Request::RemoveNode(1)));
        round_trip_request(g(Request::ChangeVoters([1, 2, 4].into())));
        round_trip_request(GroupsRequest::AddGroup {
            group: 5,
            spec: vec![1, 2, 3],
        });
        round_trip_request(GroupsRequest::RemoveGroup { group: 5 });
    }

    #[test]
    fn every_answer_survives_the_wire_and_unavailable_is_no_answer() {
        let g = |r| GroupResponse::Group(2, r);
        round_trip_response(g(Response::Applied {
            index: 4,
            output: ShardOutput::Tx(TxOutput::Done),
        }));
        round_trip_response(g(Response::Read(ShardOutput::Kv(KvOutput::Value(None)))));
        round_trip_response(g(Response::TransferStarted));
        round_trip_response(g(Response::MembershipChanged {
            index: 9,
            membership: Box::new(Membership {
                voters: [1, 2].into(),
                learners: [4].into(),
                voters_outgoing: None,
            }),
        }));
        for e in [
            RaftError::NotLeader { leader: Some(2) },
            RaftError::Dropped { index: 3 },
            RaftError::Busy("the learner has not caught up"),
            RaftError::TransferInProgress(2),
            RaftError::Invalid("no such member".into()),
            RaftError::Indeterminate { index: 5 },
            RaftError::TransferTimedOut { target: 3 },
            RaftError::LeadershipLost { leader: None },
        ] {
            round_trip_response(g(Response::Failed(e)));
        }
        for r in [
            GroupResponse::UnknownGroup(1),
            GroupResponse::Abandoned(1),
            GroupResponse::Added(1),
            GroupResponse::Removed(1),
            GroupResponse::AlreadyHosted(1),
            GroupResponse::RemovalPending(1),
            GroupResponse::TooManyGroups { group: 1, max: 8 },
            GroupResponse::BadSpec {
                group: 1,
                reason: "no".into(),
            },
        ] {
            round_trip_response(r);
        }
        assert_eq!(WireResponse::Unavailable("x".into()).into_response(), None);
        // A busy reason this client does not know still reads as busy.
        let unknown: RaftError = WireRaftError::Busy("something new".into()).into();
        assert_eq!(unknown, RaftError::Busy(BUSY_UNKNOWN));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_request(&[]).is_err());
        assert!(decode_request(&[0xff; 32]).is_err());
        assert!(decode_response(&[0x01, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    /// A one-process store (one partition, one replica) serving the protocol on loopback.
    async fn one_process() -> (SocketAddr, NodeHandle<ShardHost>) {
        use crate::shard::{Layout, ShardConfig};
        use common::driver::{self, DriverConfig, Persistence};
        use common::transport::memory::MemoryNetwork;
        use common::MemStorage;

        let config = ShardConfig {
            id: 1,
            layout: Layout::new(1, 1).unwrap(),
            map_group: vec![1],
            initial_processes: [1].into(),
            raft: raft::Config::new(1, vec![1]),
        };
        let net = MemoryNetwork::new(1);
        let handle = driver::spawn_recovered::<ShardHost, _, _, _>(
            config.groups_config().unwrap(),
            net.join(1).unwrap(),
            MemStorage::new(),
            Bincode,
            DriverConfig {
                persistence: Persistence::Inline,
                ..DriverConfig::default()
            },
        )
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, handle.clone()));
        (addr, handle)
    }

    #[tokio::test]
    async fn a_client_reads_and_writes_and_a_bad_frame_closes_only_its_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (addr, handle) = one_process().await;
        let client = ShardClient::new([(1, addr)].into());
        let mut router = Router::new(vec![1]);
        let put = tokio::time::timeout(Duration::from_secs(20), client.put(&mut router, "k", "v"));
        put.await.unwrap();
        let get = tokio::time::timeout(Duration::from_secs(20), client.get(&mut router, "k"));
        assert_eq!(get.await.unwrap().as_deref(), Some("v"));

        // A frame that does not decode: the server closes that connection (read sees EOF).
        let mut raw = TcpStream::connect(addr).await.unwrap();
        raw.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection stays open after garbage");
        // A frame above the limit: closed too.
        let mut raw = TcpStream::connect(addr).await.unwrap();
        let too_long = u32::try_from(FRAME_BYTES_MAX + 1).unwrap().to_be_bytes();
        raw.write_all(&too_long).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection stays open after an oversized frame");
        // Everyone else is still served.
        let get = tokio::time::timeout(Duration::from_secs(20), client.get(&mut router, "k"));
        assert_eq!(get.await.unwrap().as_deref(), Some("v"));
        handle.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_beyond_the_in_flight_limit_wait_their_turn_on_one_connection() {
        let (addr, handle) = one_process().await;
        let client = ShardClient::with_timeout([(1, addr)].into(), Duration::from_secs(20));
        // Wait for the map group's leader, then send four times the limit at once.
        let mut router = Router::new(vec![1]);
        let warm = tokio::time::timeout(Duration::from_secs(20), client.get(&mut router, "k"));
        assert_eq!(warm.await.unwrap(), None);
        let calls: Vec<_> = (0..4 * IN_FLIGHT_MAX)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.call(1, Router::map_request()).await })
            })
            .collect();
        for call in calls {
            let answer = call.await.unwrap();
            assert!(
                matches!(
                    answer,
                    Some(GroupResponse::Group(
                        MAP_GROUP,
                        Response::Read(ShardOutput::Map(_))
                    ))
                ),
                "{answer:?}"
            );
        }
        handle.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_dead_or_unknown_process_is_no_answer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = ShardClient::new([(1, addr)].into());
        assert_eq!(client.call(1, Router::map_request()).await, None);
        assert_eq!(client.call(9, Router::map_request()).await, None);
    }
}
