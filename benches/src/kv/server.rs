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
//!   an oversized or malformed frame closes that connection, and at most
//!   [`CLIENT_CONNECTIONS_MAX`] clients are served at once.
//! - **Honest answers.** A write the protocol may have applied but cannot confirm is answered
//!   [`ClientReply::Unknown`], never as refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use common::driver::{self, DriverConfig};
use common::transport::tcp::{TcpConfig, TcpTransport};
use common::wal::{Wal, WalConfig};
use common::NodeId;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::Framed;

use super::net::{client_codec, decode_request, encode_reply, ClientReply, ClientRequest};
use super::{KvMachine, KvQuery};

/// Client connections served at once; further ones wait in the accept backlog.
pub const CLIENT_CONNECTIONS_MAX: usize = 256;
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
    /// The other replicas: id to replica address.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The write-ahead log's directory.
    pub data_dir: PathBuf,
    /// The shared cluster key (at least 16 bytes).
    pub cluster_key: Vec<u8>,
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
}

#[derive(Clone)]
enum Backend {
    Raft(raft::RaftHandle<KvMachine>),
    Paxos(paxos::Handle<KvMachine>),
}

impl Backend {
    async fn serve(&self, request: ClientRequest) -> ClientReply {
        match self {
            Backend::Raft(h) => serve_raft(h, request).await,
            Backend::Paxos(h) => serve_paxos(h, request).await,
        }
    }
}

async fn serve_raft(h: &raft::RaftHandle<KvMachine>, request: ClientRequest) -> ClientReply {
    use raft::{ClientError, RaftError};
    let map_err = |e: ClientError| match e {
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
    };
    match request {
        ClientRequest::Write(command) => match h.propose(command).await {
            Ok((_, out)) => ClientReply::Output(out),
            Err(e) => map_err(e),
        },
        ClientRequest::Get { key } => match h.read(KvQuery::Get(key)).await {
            Ok(out) => ClientReply::Output(out),
            // A read changes nothing: any failure is a refusal.
            Err(e) => match map_err(e) {
                ClientReply::Unknown(why) => ClientReply::Refused(why),
                other => other,
            },
        },
        ClientRequest::Status => match h.metrics().await {
            Ok(m) => ClientReply::Status {
                id: m.id,
                is_leader: m.role == raft::Role::Leader,
                leader: m.leader,
            },
            Err(e) => ClientReply::Refused(e.to_string()),
        },
    }
}

async fn serve_paxos(h: &paxos::Handle<KvMachine>, request: ClientRequest) -> ClientReply {
    use paxos::{Error, HandleError};
    let map_err = |e: HandleError| match e {
        HandleError::Paxos(Error::NotLeader { leader }) => ClientReply::NotLeader { leader },
        HandleError::Paxos(e @ (Error::Busy | Error::Config(_))) => {
            ClientReply::Refused(e.to_string())
        }
        other => ClientReply::Unknown(other.to_string()),
    };
    match request {
        // Exactly-once is the state machine's session table (the same on both protocols), so
        // no paxos-level session is passed.
        ClientRequest::Write(command) => match h.propose(command, None).await {
            Ok(out) => ClientReply::Output(out),
            Err(e) => map_err(e),
        },
        ClientRequest::Get { key } => match h.read(KvQuery::Get(key)).await {
            Ok(out) => ClientReply::Output(out),
            Err(e) => match map_err(e) {
                ClientReply::Unknown(why) => ClientReply::Refused(why),
                other => other,
            },
        },
        ClientRequest::Status => match h.metrics().await {
            Ok(m) => ClientReply::Status {
                id: m.id,
                is_leader: m.is_leader,
                leader: m.leader,
            },
            Err(e) => ClientReply::Refused(e.to_string()),
        },
    }
}

/// Starts the replica and serves clients until the process ends. Prints
/// `kv-node <id> ready` on standard output once both ports are bound and the node runs.
pub async fn run(options: NodeOptions) -> Result<(), ServeError> {
    let mut members: Vec<NodeId> = options.peers.keys().copied().collect();
    members.push(options.id);
    members.sort_unstable();
    members.dedup();
    let peers: BTreeMap<NodeId, SocketAddr> = options
        .peers
        .iter()
        .filter(|(id, _)| **id != options.id)
        .map(|(id, a)| (*id, *a))
        .collect();
    let tcp = TcpConfig::new(
        options.id,
        CLUSTER_NAME,
        options.cluster_key.clone(),
        options.listen,
        peers,
    );
    let transport = TcpTransport::start(tcp).await?;
    let wal = Wal::open(WalConfig::new(&options.data_dir))?;
    let driver_config = DriverConfig::default();
    let backend = match options.protocol {
        Protocol::Raft => {
            let config = raft::Config::new(options.id, members);
            let h = driver::spawn_recovered::<raft::RaftNode<KvMachine>, _, _, _>(
                config,
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
            let config = paxos::Config::new(options.id, members);
            let h = paxos::Handle::spawn(config, transport, wal, driver_config)
                .await
                .map_err(|e| ServeError::Node(e.to_string()))?;
            Backend::Paxos(h)
        }
    };
    let listener = TcpListener::bind(options.client_listen).await?;
    println!("kv-node {} ready", options.id);
    let permits = Arc::new(Semaphore::new(CLIENT_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                continue;
            }
        };
        let backend = backend.clone();
        tokio::spawn(async move {
            if let Err(why) = serve_connection(stream, backend).await {
                tracing::info!(%peer, "client connection closed: {why}");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(stream: TcpStream, backend: Backend) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, client_codec());
    while let Some(frame) = framed.next().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let request = decode_request(&frame).map_err(|e| format!("bad request: {e}"))?;
        let reply = backend.serve(request).await;
        let bytes = encode_reply(&reply).map_err(|e| e.to_string())?;
        framed
            .send(bytes::Bytes::from(bytes))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
