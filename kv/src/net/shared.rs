//! [`SharedConnections`]: a few pipelined connections per node that many [`KvClient`]s share,
//! each driven by a task that matches answers to calls in order.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::transport::tls::{secure, MaybeTlsRead, MaybeTlsWrite, TlsConfig};
use common::NodeId;
use futures::{SinkExt, StreamExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::client::Attempt;
use super::*;

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

    /// The open connection `client` uses to `target`, opened when it is not.
    async fn mux(
        &self,
        target: NodeId,
        addr: SocketAddr,
        client: usize,
        timeout: Duration,
    ) -> Result<Mux, Attempt> {
        let key = (target, client % self.per_node);
        let slot = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        // The usual case, the connection open and nobody opening it, takes no timer.
        let open = slot
            .try_lock()
            .ok()
            .and_then(|slot| slot.as_ref().filter(|m| !m.calls.is_closed()).cloned());
        if let Some(mux) = open {
            return Ok(mux);
        }
        let mut slot = match tokio::time::timeout(timeout, slot.lock()).await {
            Ok(slot) => slot,
            Err(_) => return Err(Attempt::NotSent("connect timed out".into())),
        };
        if let Some(mux) = slot.as_ref().filter(|m| !m.calls.is_closed()) {
            return Ok(mux.clone());
        }
        let mux = self.connect(addr, timeout).await?;
        *slot = Some(mux.clone());
        Ok(mux)
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

/// One client's use of [`SharedConnections`]: the connections, and the one it last used,
/// which its next call to the same node takes straight away while it stays open (no look-up
/// under the lock all the clients share).
#[derive(Clone)]
pub(super) struct SharedRoute {
    connections: SharedConnections,
    last: Option<(NodeId, Mux)>,
}

impl SharedRoute {
    pub(super) fn new(connections: SharedConnections) -> Self {
        Self {
            connections,
            last: None,
        }
    }

    /// Sends `request` on `client`'s connection to `target` and waits for its answer, for at
    /// most `timeout`.
    pub(super) async fn call(
        &mut self,
        target: NodeId,
        addr: SocketAddr,
        client: usize,
        request: &ClientRequest,
        timeout: Duration,
    ) -> Attempt {
        let bytes = match encode_request(request) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => return Attempt::NotSent(format!("encode: {e}")),
        };
        let usable = |last: &Option<(NodeId, Mux)>| {
            last.as_ref()
                .is_some_and(|(t, mux)| *t == target && !mux.calls.is_closed())
        };
        if !usable(&self.last) {
            self.last = None;
            match self.connections.mux(target, addr, client, timeout).await {
                Ok(mux) => self.last = Some((target, mux)),
                Err(attempt) => return attempt,
            }
        }
        let Some((_, mux)) = &self.last else {
            return Attempt::NotSent("no connection".into());
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
                let mut yielded = false;
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
                        // Once, when others already wait for answers on this connection: the
                        // clients answered together are about to send their next calls, and
                        // letting them run first turns their calls into this write rather than
                        // a write (a system call, and the receiver's work on loopback) each.
                        Err(_) if !yielded && waiting.len() > 1 => {
                            yielded = true;
                            tokio::task::yield_now().await;
                            match queue.try_recv() {
                                Ok(next) => call = next,
                                Err(_) => break,
                            }
                        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;

    use super::*;
    use crate::net::{decode_request, encode_reply, CallOutcome, KvClient};
    use crate::KvOutput;

    /// A node that answers `n` requests on its `n`th connection (1, 2, …), each answer naming
    /// the connection, and then closes it.
    async fn closing_node() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for n in 1u32.. {
                let (stream, _) = listener.accept().await.unwrap();
                let mut framed = Framed::new(stream, client_codec());
                for _ in 0..n {
                    let Some(Ok(frame)) = framed.next().await else {
                        break;
                    };
                    assert!(matches!(
                        decode_request(&frame),
                        Ok(ClientRequest::Get { .. })
                    ));
                    let reply = ClientReply::Output(KvOutput::Value(Some(n.to_string())));
                    let bytes = bytes::Bytes::from(encode_reply(&reply).unwrap());
                    framed.send(bytes).await.unwrap();
                }
            }
        });
        addr
    }

    /// A client keeps the shared connection it used; once the node has closed it, the client's
    /// next call notices, opens another and is answered there.
    #[tokio::test(start_paused = true)]
    async fn a_client_follows_its_shared_connection_to_a_new_one_when_it_closes() {
        let addr = closing_node().await;
        let shared = SharedConnections::new(1);
        let mut client =
            KvClient::new(1, BTreeMap::from([(1, addr)])).with_shared_connections(shared.clone());
        let value = |n: &str| CallOutcome::Ok(KvOutput::Value(Some(n.to_string())));
        assert_eq!(client.get("k").await, value("1"));
        // The first connection is closed now: the call is lost on it and retried on the next.
        assert_eq!(client.get("k").await, value("2"));
        // Another client sharing the connections takes the one opened last from their table.
        let mut other =
            KvClient::new(2, BTreeMap::from([(1, addr)])).with_shared_connections(shared);
        assert_eq!(other.get("k").await, value("2"));
        // That one is closed too now; both clients move on to the next.
        assert_eq!(other.get("k").await, value("3"));
        assert_eq!(client.get("k").await, value("3"));
    }
}
