//! The client side: [`ShardClient`] and the agents' loops over it.

use super::*;

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
    /// The coordinator number of this client's transaction ids (random: no other client picks
    /// it) and the next sequence number under it.
    tx_tag: u64,
    next_tx: AtomicU64,
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
                tx_tag: random_tag(),
                next_tx: AtomicU64::new(1),
            }),
        }
    }

    /// A transaction id no other client uses: this client's random coordinator number and
    /// its next sequence number.
    pub fn fresh_tx(&self) -> TxId {
        TxId::new(
            self.inner.tx_tag,
            self.inner.next_tx.fetch_add(1, Ordering::Relaxed),
        )
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

    /// Sets `key` to `value` through its partition's log, through `router`, exactly once: the
    /// write is a one-phase transaction with an id of its own ([`ShardClient::fresh_tx`]), so
    /// when an answer is lost and the write is sent again, a group that applied it answers
    /// "decided already" instead of applying it a second time (it remembers the last
    /// [`TX_FINISHED_REMEMBERED`](crate::shard::TX_FINISHED_REMEMBERED) transactions it
    /// finished). Asks again while a transaction holds the key.
    pub async fn put(&self, router: &mut Router, key: &str, value: &str) {
        let tx = self.fresh_tx();
        let command = Request::Propose(ShardCommand::Tx(TxCommand::OnePhase {
            tx,
            part: TxPart {
                writes: vec![TxWrite {
                    key: key.to_string(),
                    value: value.to_string(),
                }],
                ..TxPart::default()
            },
        }));
        loop {
            let answer = self.routed(router, key, command.clone()).await;
            let Some(GroupResponse::Group(
                g,
                Response::Applied {
                    output: ShardOutput::Tx(output),
                    ..
                },
            )) = answer
            else {
                continue;
            };
            match output {
                TxOutput::Decided {
                    outcome: common::txn::Outcome::Committed,
                    ..
                }
                | TxOutput::No(TxRefusal::Decided(_))
                    if g != MAP_GROUP =>
                {
                    return
                }
                // Locked by a transaction (nothing applied): again, after a pause.
                _ => tokio::time::sleep(RETRY_PAUSE).await,
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

/// A number no other client picks: a hash of the time and the process id under a randomly
/// keyed hasher.
fn random_tag() -> u64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()))
}
