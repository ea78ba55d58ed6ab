//! [`KvClient`]: one client of a cluster, with one request in flight, that follows leader
//! hints and retries a write with the same sequence number until it knows the outcome.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::retry::{FollowLeader, Retry, RetryLimits};
use common::transport::tls::{secure, MaybeTlsRead, MaybeTlsWrite, TlsConfig};
use common::NodeId;
use futures::{SinkExt, StreamExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::shared::SharedRoute;
use super::*;
use crate::{KvCommand, KvOp, KvOutput};

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
    shared: Option<SharedRoute>,
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
pub(super) enum Attempt {
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
        self.shared = Some(SharedRoute::new(connections));
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
        // What went wrong with the latest attempt (every attempt that does not return sets it).
        let mut last: String;
        if self.nodes.is_empty() {
            return CallOutcome::Failed("no nodes".into());
        }
        // The workspace's one retry policy, built only once the first attempt, at the leader
        // this client last knew, did not answer: most calls need no retry, and the policy
        // costs a list of the members and a backoff each. This client bounds a call by its
        // deadline instead of a number of attempts.
        let mut policy: Option<FollowLeader> = None;
        let mut target = self.leader;
        loop {
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
            let policy = policy.get_or_insert_with(|| {
                let limits = RetryLimits {
                    attempts_max: usize::MAX,
                    backoff_min: NO_LEADER_BACKOFF,
                    backoff_max: NO_LEADER_BACKOFF_MAX,
                };
                FollowLeader::new(self.nodes.keys().copied().collect(), target, limits)
            });
            let next = match reply {
                Attempt::Reply(ClientReply::NotLeader { leader }) => {
                    last = format!("node {target}: not the leader");
                    self.learn_leader(target, leader, policy).await;
                    policy.redirected(leader)
                }
                Attempt::Reply(ClientReply::Invalid(why)) => {
                    return CallOutcome::Failed(format!("node {target}: {why}"));
                }
                // Nothing was applied there; the next node may serve it.
                Attempt::Reply(ClientReply::Refused(why) | ClientReply::Unavailable(why)) => {
                    last = format!("node {target}: {why}");
                    policy.failed()
                }
                Attempt::Reply(ClientReply::Unknown(why)) => {
                    maybe_applied = true;
                    last = format!("node {target}: {why}");
                    policy.lost()
                }
                Attempt::Reply(other) => {
                    last = format!("node {target}: unexpected reply {other:?}");
                    policy.lost()
                }
                Attempt::Lost(why) => {
                    maybe_applied = true;
                    last = format!("node {target}: {why}");
                    policy.lost()
                }
                Attempt::NotSent(why) => {
                    last = format!("node {target}: {why}");
                    policy.failed()
                }
            };
            let Retry::After { target: next, wait } = next else {
                break;
            };
            target = next;
            self.leader = target;
            let left = self.deadline.saturating_sub(started.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(left)).await;
            }
            if started.elapsed() >= self.deadline {
                break;
            }
        }
        if is_write && maybe_applied {
            CallOutcome::Unknown(last)
        } else {
            CallOutcome::Failed(last)
        }
    }

    /// After "not the leader" from `target` naming `leader`, a node this client does not know
    /// (added at run time): asks `target` where the members are reached, and lets `policy`
    /// follow the hint.
    async fn learn_leader(
        &mut self,
        target: NodeId,
        leader: Option<NodeId>,
        policy: &mut FollowLeader,
    ) {
        if leader.is_some_and(|l| !self.nodes.contains_key(&l)) {
            if let Attempt::Reply(ClientReply::Members(info)) =
                self.attempt(target, &ClientRequest::Members).await
            {
                self.learn(&info);
            }
        }
        for id in self.nodes.keys() {
            policy.learn(*id);
        }
    }

    async fn attempt(&mut self, target: NodeId, request: &ClientRequest) -> Attempt {
        let Some(addr) = self.nodes.get(&target).copied() else {
            return Attempt::NotSent(format!("unknown node {target}"));
        };
        if let Some(shared) = &mut self.shared {
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
