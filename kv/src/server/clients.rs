//! The client port: the accept loop with its connection limit ([`ClientLimits`]), and one task
//! per connection that reads pipelined requests and answers them in order.

use std::collections::VecDeque;

use common::transport::tls::{MaybeTlsRead, MaybeTlsWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::*;

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
///
/// `handler` is called as each request arrives. The future it returns is polled only once it
/// is the oldest on its connection: answers go out in request order, and waiting on the oldest
/// alone costs one wake per batch of answers where polling them all would cost one per answer.
/// So a handler that wants a connection's requests served at the same time starts each at the
/// call (`kv-node` hands puts, gets and scans to its node then); a future that does its work
/// only when polled is served in turn.
pub async fn serve_clients<H, F>(
    listener: TcpListener,
    limits: ClientLimits,
    tls: Option<TlsConfig>,
    connections: Gauge,
    handler: H,
) where
    H: Fn(ClientRequest) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = ClientReply> + Send + Unpin,
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
    F: std::future::Future<Output = ClientReply> + Unpin,
{
    use futures::FutureExt;
    use tokio_util::codec::{FramedRead, FramedWrite};

    let (read, write) = handshake(stream, tls, limits.idle_timeout).await?;
    let mut requests = FramedRead::new(read, client_codec());
    let mut replies = FramedWrite::new(write, client_codec());
    // Requests being served, answered in the order they arrived (a client may pipeline: send
    // several before reading an answer). At most `pipeline_max`; past that the connection is not
    // read until an answer goes out, so TCP pushes back on the client.
    let mut in_flight = VecDeque::new();
    let pipeline_max = limits.pipeline_max.max(1);
    // The idle clock runs only while nothing is in flight: it starts when the connection goes
    // quiet, and a request that arrives (whole) or an answer that goes out restarts it.
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            biased;
            () = close.notified() => return Err("closed to make room for a new client".into()),
            Some(reply) = oldest_answer(&mut in_flight), if !in_flight.is_empty() => {
                // Send every answer that is ready with one write.
                let mut reply: ClientReply = reply;
                loop {
                    feed_reply(&mut replies, &reply).await?;
                    match oldest_answer(&mut in_flight).now_or_never() {
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
                        while let Some(reply) = oldest_answer(&mut in_flight).await {
                            feed_reply(&mut replies, &reply).await?;
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

/// The answer to the oldest request in flight, once it is ready; `None` when nothing is in
/// flight. Answers go out in request order, so only the oldest is waited on (and only its
/// answer wakes the connection); the later ones are looked at once it has gone out. A request
/// is handed to the node when it arrives, not when it becomes the oldest, so they are all
/// served meanwhile.
fn oldest_answer<F>(in_flight: &mut VecDeque<F>) -> impl Future<Output = Option<F::Output>> + '_
where
    F: Future + Unpin,
{
    std::future::poll_fn(move |cx| {
        let Some(oldest) = in_flight.front_mut() else {
            return Poll::Ready(None);
        };
        let answer = std::task::ready!(Pin::new(oldest).poll(cx));
        in_flight.pop_front();
        Poll::Ready(Some(answer))
    })
}

/// The connection's halves, after the TLS handshake when `tls` is set. The handshake must
/// finish within the idle timeout too, so a client that connects and stays silent is closed like
/// any idle one.
async fn handshake(
    stream: TcpStream,
    tls: Option<&TlsConfig>,
    idle_timeout: Duration,
) -> Result<
    (
        MaybeTlsRead<OwnedReadHalf, OwnedWriteHalf>,
        MaybeTlsWrite<OwnedReadHalf, OwnedWriteHalf>,
    ),
    String,
> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    match tokio::time::timeout(idle_timeout, secure(tls, read, write, false)).await {
        Ok(Ok(halves)) => Ok(halves),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Err(_) => Err(format!("no TLS handshake within {idle_timeout:?}")),
    }
}

/// Queues `reply` on the connection, without flushing.
async fn feed_reply<W>(replies: &mut W, reply: &ClientReply) -> Result<(), String>
where
    W: futures::Sink<bytes::Bytes> + Unpin,
    W::Error: std::fmt::Display,
{
    let bytes = encode_reply(reply).map_err(|e| e.to_string())?;
    replies
        .feed(bytes::Bytes::from(bytes))
        .await
        .map_err(|e| e.to_string())
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
            |_| std::future::ready(ClientReply::NotLeader { leader: None }),
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
                // Started at the call, as the handler's contract asks: a task of its own.
                let serving = tokio::spawn(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _open = gate.acquire().await.unwrap();
                    let ClientRequest::Get { key } = request else {
                        return ClientReply::Invalid("not a get".into());
                    };
                    let ms: u64 = key.parse().unwrap();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ClientReply::Output(KvOutput::Value(Some(key)))
                });
                futures::FutureExt::map(serving, |served| served.unwrap())
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
