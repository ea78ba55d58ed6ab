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
//!   sequence number, so the replicated session table applies it once ([`crate::KvMachine`]).
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
//!
//! This file holds the wire messages and their encoding; `client.rs` the [`KvClient`];
//! `shared.rs` the [`SharedConnections`] many clients share.

mod client;
mod shared;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::codec::{Bincode, Codec, CodecError};
use common::NodeId;
use serde::{Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

use crate::{KvCommand, KvOutput};

pub use client::{Answer, CallOutcome, KvClient};
pub use shared::{SharedConnections, SHARED_PIPELINE_MAX};

/// Largest client frame accepted either way (a request carries at most two items of
/// [`crate::ITEM_BYTES_MAX`]).
pub const CLIENT_FRAME_BYTES_MAX: usize = 4 * crate::ITEM_BYTES_MAX;
/// How long [`KvClient`] waits for one node's answer before trying another.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long [`KvClient`] keeps retrying one call before giving up.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// The first pause before retrying when no node knows a leader (an election is under way) or a
/// node refused; consecutive pauses grow, with jitter, by the workspace's retry policy
/// ([`common::retry::FollowLeader`]), up to [`NO_LEADER_BACKOFF_MAX`].
pub const NO_LEADER_BACKOFF: Duration = Duration::from_millis(20);
/// The longest pause between two attempts of one call (before jitter).
pub const NO_LEADER_BACKOFF_MAX: Duration = Duration::from_millis(100);

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
    /// Adds a replica (leader only): the command's [`KvOp::Register`](crate::KvOp::Register)
    /// records its addresses through the log (exactly once per client session), then the replica
    /// joins the protocol's configuration (Raft: as a learner; Multi-Paxos: as a member).
    /// Answered [`ClientReply::Members`].
    AddMember(KvCommand),
    /// Makes a Raft learner a voter (leader only). Answered [`ClientReply::Members`].
    PromoteMember(NodeId),
    /// Removes a replica (leader only): it leaves the protocol's configuration, then the
    /// command's [`KvOp::Deregister`](crate::KvOp::Deregister) drops it from the address book
    /// and every transport. Answered [`ClientReply::Members`].
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
    /// This node serves nothing for now: its storage failed (a full disk, say), and the text
    /// says why and whether it resumes by itself. Nothing was applied here; another node may
    /// serve the request. (Last among the variants, so that the others keep their encoding.)
    Unavailable(String),
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
