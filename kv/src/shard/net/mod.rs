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
//! retry could contradict. [`ShardClient::put`] is a one-phase transaction with an id of its
//! own, so a put sent again after a lost answer is applied once: the group remembers the
//! transactions it finished and answers the copy "decided already".
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
use common::kv_store::{KvOutput, KvQuery};
use common::txn::TxId;
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
use super::txn::{TxCommand, TxOutput, TxPart, TxRefusal, TxWrite};
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

mod client;
mod server;
#[cfg(test)]
mod tests;
mod wire;

pub use client::ShardClient;
pub use server::serve;
pub use wire::{
    decode_request, decode_response, encode_frame, shard_codec, Frame, WireQuery, WireRaftError,
    WireRequest, WireResponse,
};
