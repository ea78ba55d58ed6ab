//! The driver running the demo protocol on in-process clusters.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::codec::{encode_frame, Bincode, Codec, Header};
use common::demo::{DemoConfig, DemoMessage, DemoNode, DemoRecord, DemoRequest, DemoResponse};
use common::driver::{self, DriverConfig, DriverError, NodeHandle, Persistence};
use common::transport::memory::MemoryNetwork;
use common::transport::Transport;
use common::{protocol, MemStorage, Node, NodeId, Storage, StorageError};

/// Storage whose `sync` fails once `fail` is set.
struct FailingStorage {
    inner: MemStorage,
    fail: Arc<AtomicBool>,
}

impl Storage for FailingStorage {
    fn append(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.inner.append(record)
    }
    fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.inner.append_checkpoint(record)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned("injected sync failure".into()));
        }
        self.inner.sync()
    }
    fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError> {
        self.inner.load()
    }

    fn snapshots(&self) -> std::sync::Arc<dyn common::SnapshotStore> {
        self.inner.snapshots()
    }
}

const MEMBERS: [NodeId; 3] = [1, 2, 3];

fn inline() -> DriverConfig {
    DriverConfig {
        persistence: Persistence::Inline,
        ..DriverConfig::default()
    }
}

fn demo_config(id: NodeId) -> DemoConfig {
    let mut config = DemoConfig::new(id, MEMBERS.to_vec());
    // Tests on a real clock must not time out on a loaded machine.
    config.retries_max = 10_000;
    config
}

fn demo(id: NodeId) -> DemoNode {
    DemoNode::recover(demo_config(id), vec![]).unwrap()
}

/// A cluster of one: it acknowledges its own updates.
fn single(id: NodeId) -> DemoNode {
    DemoNode::recover(DemoConfig::new(id, vec![id]), vec![]).unwrap()
}

/// Node 1 of three, alone on `net`: its updates are never acknowledged, so its requests stay
/// pending. It takes one request at a time, and `queue` more wait in its queue.
fn spawn_unacknowledged(net: &MemoryNetwork, queue: usize) -> NodeHandle<DemoNode> {
    let config = DriverConfig {
        request_queue_capacity: queue,
        requests_pending_max: 1,
        ..inline()
    };
    driver::spawn(
        demo(1),
        net.join(1).unwrap(),
        MemStorage::new(),
        Bincode,
        config,
    )
    .unwrap()
}

/// Node 1 alone on `net`, on `config`, with memory storage.
fn spawn_single(net: &MemoryNetwork, config: DriverConfig) -> NodeHandle<DemoNode> {
    driver::spawn(
        single(1),
        net.join(1).unwrap(),
        MemStorage::new(),
        Bincode,
        config,
    )
    .unwrap()
}

fn background() -> DriverConfig {
    DriverConfig::default()
}

fn cluster(net: &MemoryNetwork, config: DriverConfig) -> Vec<NodeHandle<DemoNode>> {
    MEMBERS
        .iter()
        .map(|&id| {
            driver::spawn(
                demo(id),
                net.join(id).unwrap(),
                MemStorage::new(),
                Bincode,
                config,
            )
            .unwrap()
        })
        .collect()
}

/// Runs a wait loop, failing the test if it does not end within a (virtual, when paused) minute.
async fn bounded(wait: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("the awaited condition never came true");
}

/// Waits (in virtual time when the clock is paused) until every node's total is `expected`.
async fn converge(nodes: &[NodeHandle<DemoNode>], expected: u64) {
    for _ in 0..1000 {
        let mut all = true;
        for n in nodes {
            all &= n.metrics().await.unwrap().total == expected;
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut totals = Vec::new();
    for n in nodes {
        totals.push(n.metrics().await.unwrap().total);
    }
    panic!("no convergence to {expected}: totals {totals:?}");
}

async fn add_many(nodes: &[NodeHandle<DemoNode>], count: u64) -> u64 {
    let mut tasks = Vec::new();
    for i in 0..count {
        let node = nodes[(i % nodes.len() as u64) as usize].clone();
        tasks.push(tokio::spawn(async move {
            node.request(DemoRequest::Add(i + 1)).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(matches!(r, Ok(DemoResponse::Total(_))), "{r:?}");
    }
    count * (count + 1) / 2
}

async fn adds_are_acknowledged_and_converge(config: DriverConfig) {
    let net = MemoryNetwork::new(7);
    let nodes = cluster(&net, config);
    let expected = add_many(&nodes, 60).await;
    converge(&nodes, expected).await;
    for n in &nodes {
        // Shutdown persists what the node's steps produced: the counters are final after it.
        n.shutdown().await.unwrap();
        let s = n.stats();
        assert!(s.messages_sent > 0 && s.messages_received > 0 && s.bytes_sent > 0);
        assert_eq!(s.frames_rejected, 0);
        assert_eq!(
            s.records_persisted, 60,
            "each node persists every update once"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn three_nodes_acknowledge_adds_and_converge_inline() {
    adds_are_acknowledged_and_converge(inline()).await;
}

// Background persistence runs on a real thread: under a paused clock tokio would advance time
// while the node waits for it, so these tests run on the real clock (with generous timeouts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_acknowledge_adds_and_converge_background() {
    adds_are_acknowledged_and_converge(background()).await;
}

#[tokio::test(start_paused = true)]
async fn group_commit_syncs_less_often_than_it_steps() {
    let net = MemoryNetwork::new(7);
    let nodes = cluster(&net, inline());
    let expected = add_many(&nodes, 300).await;
    converge(&nodes, expected).await;
    for n in &nodes {
        let s = n.stats();
        assert!(
            s.syncs < s.records_persisted && s.syncs < s.steps,
            "no group commit: {s:?}"
        );
    }
}

/// Storage that takes real time to sync, as a disk does, so batches pile up behind it.
struct SlowStorage(MemStorage);

impl Storage for SlowStorage {
    fn append(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.0.append(record)
    }
    fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.0.append_checkpoint(record)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        // Models an fsync: the persistence thread is busy while the node keeps stepping.
        std::thread::sleep(Duration::from_millis(2));
        self.0.sync()
    }
    fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError> {
        self.0.load()
    }

    fn snapshots(&self) -> std::sync::Arc<dyn common::SnapshotStore> {
        self.0.snapshots()
    }
}

async fn groups_steps_behind_a_slow_sync(config: DriverConfig) {
    let net = MemoryNetwork::new(7);
    let nodes: Vec<_> = MEMBERS
        .iter()
        .map(|&id| {
            let storage = SlowStorage(MemStorage::new());
            driver::spawn(demo(id), net.join(id).unwrap(), storage, Bincode, config).unwrap()
        })
        .collect();
    let expected = add_many(&nodes, 200).await;
    converge(&nodes, expected).await;
    let mut storage: SlowStorage = nodes[0].shutdown_and_take_storage().await.unwrap();
    assert_eq!(storage.0.len(), 200, "every update is in node 1's storage");
    // Batches reach storage in step order: node 1's own updates in sequence order.
    let own: Vec<u64> = storage
        .load()
        .unwrap()
        .iter()
        .map(|r| Bincode.decode::<DemoRecord>(r).unwrap())
        .filter_map(|DemoRecord::Applied { origin, seq, .. }| (origin == 1).then_some(seq))
        .collect();
    assert!(!own.is_empty());
    assert!(own.windows(2).all(|w| w[0] < w[1]), "{own:?}");
    for n in &nodes[1..] {
        n.shutdown().await.unwrap();
    }
    let stats: Vec<_> = nodes.iter().map(|n| n.stats()).collect();
    let records: u64 = stats.iter().map(|s| s.records_persisted).sum();
    let syncs: u64 = stats.iter().map(|s| s.syncs).sum();
    assert_eq!(records, 600);
    assert!(syncs < records, "no group commit: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_persistence_groups_steps_behind_a_slow_sync() {
    groups_steps_behind_a_slow_sync(DriverConfig {
        persist_batches_in_flight_max: 1,
        ..background()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_persistence_with_several_batches_in_flight_keeps_order() {
    groups_steps_behind_a_slow_sync(DriverConfig {
        persist_batches_in_flight_max: 3,
        ..background()
    })
    .await;
}

/// A persistence thread that checks for the next batch before it sleeps (longer than a sync
/// here, so batches are taken while it checks as well as after it slept) persists the same
/// batches in the same order, and ends when the node stops, checking or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_persistence_that_checks_before_sleeping_keeps_order_and_stops() {
    groups_steps_behind_a_slow_sync(DriverConfig {
        persist_spin: Duration::from_millis(5),
        ..background()
    })
    .await;
}

async fn failed_sync_stops_the_node_before_anything_of_the_batch_leaves(config: DriverConfig) {
    let net = MemoryNetwork::new(7);
    let fail = Arc::new(AtomicBool::new(false));
    let storage = FailingStorage {
        inner: MemStorage::new(),
        fail: fail.clone(),
    };
    let n1 = driver::spawn(demo(1), net.join(1).unwrap(), storage, Bincode, config).unwrap();
    let n2 = driver::spawn(
        demo(2),
        net.join(2).unwrap(),
        MemStorage::new(),
        Bincode,
        config,
    )
    .unwrap();
    let n3 = driver::spawn(
        demo(3),
        net.join(3).unwrap(),
        MemStorage::new(),
        Bincode,
        config,
    )
    .unwrap();
    assert_eq!(
        n1.request(DemoRequest::Add(1)).await.unwrap(),
        DemoResponse::Total(1)
    );
    converge(&[n1.clone(), n2.clone(), n3.clone()], 1).await;
    let before = n1.stats();
    let mut events = n1.subscribe();

    fail.store(true, Ordering::SeqCst);
    let err = n1.request(DemoRequest::Add(10)).await.unwrap_err();
    assert!(matches!(err, DriverError::StorageFailed(_)), "{err}");
    assert!(matches!(
        n1.stopped().await,
        Err(DriverError::StorageFailed(_))
    ));
    let after = n1.stats();
    assert_eq!(after.messages_sent, before.messages_sent, "no update left");
    assert_eq!(after.responses, before.responses);
    assert_eq!(after.events, before.events);
    assert!(events.try_recv().is_err(), "no event was published");
    // The peers never heard of the failed update.
    for peer in [&n2, &n3] {
        assert_eq!(peer.metrics().await.unwrap().total, 1);
    }
    assert!(matches!(
        n1.request(DemoRequest::Get).await,
        Err(DriverError::StorageFailed(_))
    ));
    n2.shutdown().await.unwrap();
    n3.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failed_sync_stops_the_node_inline() {
    failed_sync_stops_the_node_before_anything_of_the_batch_leaves(inline()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sync_stops_the_node_background() {
    failed_sync_stops_the_node_before_anything_of_the_batch_leaves(background()).await;
}

#[tokio::test(start_paused = true)]
async fn bad_frames_are_rejected_and_counted_while_the_node_serves() {
    let net = MemoryNetwork::new(7);
    let nodes = cluster(&net, inline());
    // A rogue endpoint on the network: the transport authenticates it as node 99.
    let rogue = net.join(99).unwrap();
    let update = DemoMessage::Update {
        origin: 2,
        seq: 99,
        amount: 1000,
    };
    let header = |protocol, version, from, to| Header {
        protocol,
        version,
        from,
        to,
    };
    let bad = [
        // Garbage.
        Bytes::from_static(&[0xff; 7]),
        // A hostile length prefix.
        Bytes::from(vec![253u8, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        // Another protocol.
        encode_frame(&Bincode, &header(protocol::RAFT, 1, 99, 1), &update).unwrap(),
        // Another wire version.
        encode_frame(&Bincode, &header(protocol::DEMO, 7, 99, 1), &update).unwrap(),
        // A header that claims another sender than the authenticated one.
        encode_frame(&Bincode, &header(protocol::DEMO, 1, 2, 1), &update).unwrap(),
        // Meant for another node.
        encode_frame(&Bincode, &header(protocol::DEMO, 1, 99, 3), &update).unwrap(),
        // A valid header with a truncated payload.
        {
            let mut f = Bincode.encode(&header(protocol::DEMO, 1, 99, 1)).unwrap();
            f.push(0);
            Bytes::from(f)
        },
    ];
    let count = bad.len() as u64;
    for frame in bad {
        rogue.send(1, frame).unwrap();
    }
    assert_eq!(
        nodes[0].request(DemoRequest::Add(5)).await.unwrap(),
        DemoResponse::Total(5)
    );
    assert_eq!(nodes[0].stats().frames_rejected, count);
    // Both acks arrive (the second possibly after the answer); rejected frames are not counted
    // as received.
    bounded(async {
        while nodes[0].stats().messages_received < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(nodes[0].stats().messages_received, 2, "two acks");
    converge(&nodes, 5).await;
    // A well-formed frame from the non-member passes the driver and is refused by the core.
    let frame = encode_frame(&Bincode, &header(protocol::DEMO, 1, 99, 1), &update).unwrap();
    rogue.send(1, frame).unwrap();
    bounded(async {
        while nodes[0].metrics().await.unwrap().rejected == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(nodes[0].stats().frames_rejected, count);
    converge(&nodes, 5).await;
}

#[tokio::test(start_paused = true)]
async fn restarted_node_recovers_from_its_storage_and_continues() {
    let net = MemoryNetwork::new(7);
    let mut nodes = cluster(&net, inline());
    let expected = add_many(&nodes, 20).await;
    converge(&nodes, expected).await;

    let storage: MemStorage = nodes[0].shutdown_and_take_storage().await.unwrap();
    assert!(
        nodes[0].request(DemoRequest::Get).await.is_err(),
        "a stopped node answers with an error"
    );
    assert!(matches!(
        nodes[0].shutdown_and_take_storage::<MemStorage>().await,
        Err(DriverError::StorageUnavailable)
    ));
    nodes[0] = driver::spawn_recovered::<DemoNode, _, _, _>(
        demo_config(1),
        net.join(1).unwrap(),
        storage,
        Bincode,
        inline(),
    )
    .await
    .unwrap();
    assert_eq!(
        nodes[0].request(DemoRequest::Get).await.unwrap(),
        DemoResponse::Total(expected)
    );
    assert_eq!(
        nodes[0].request(DemoRequest::Add(1000)).await.unwrap(),
        DemoResponse::Total(expected + 1000)
    );
    converge(&nodes, expected + 1000).await;
}

#[tokio::test(start_paused = true)]
async fn full_request_queue_makes_callers_wait_or_busy_and_stop_fails_them() {
    let net = MemoryNetwork::new(7);
    let n1 = spawn_unacknowledged(&net, 2);
    let first = tokio::spawn({
        let n = n1.clone();
        async move { n.request(DemoRequest::Add(1)).await }
    });
    bounded(async {
        while n1.metrics().await.unwrap().pending == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let n = n1.clone();
            tokio::spawn(async move { n.request(DemoRequest::Get).await })
        })
        .collect();
    bounded(async {
        while n1.queued_requests() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(matches!(
        n1.try_request(DemoRequest::Get).await,
        Err(DriverError::Busy { capacity: 2 })
    ));
    assert_eq!(n1.stats().requests_busy, 1);
    assert_eq!(
        n1.stats().requests,
        1,
        "the node took one; two wait in its queue"
    );
    assert_eq!(n1.queued_requests(), 2);
    // The waiting form is not refused: it waits for room (backpressure), and is still waiting
    // when the node stops, which answers it with the stop cause.
    let waiting = tokio::spawn({
        let n = n1.clone();
        async move { n.request(DemoRequest::Get).await }
    });
    // Paused clock: the runtime advances time only once every task is idle, so after this the
    // waiting request has run as far as it can.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "request() waits for room in the queue"
    );
    assert_eq!(n1.stats().requests_busy, 1, "and is not counted as refused");

    n1.shutdown().await.unwrap();
    assert!(matches!(first.await.unwrap(), Err(DriverError::Stopped)));
    for q in queued {
        assert!(matches!(q.await.unwrap(), Err(DriverError::Stopped)));
    }
    assert!(matches!(waiting.await.unwrap(), Err(DriverError::Stopped)));
}

/// Backpressure: many more callers than the queue holds all get their answer, none is refused.
#[tokio::test(start_paused = true)]
async fn callers_beyond_the_queue_wait_for_room_and_are_all_answered() {
    let net = MemoryNetwork::new(8);
    let config = DriverConfig {
        request_queue_capacity: 2,
        requests_pending_max: 1,
        ..inline()
    };
    let n1 = spawn_single(&net, config);
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let n = n1.clone();
            tokio::spawn(async move { n.request(DemoRequest::Add(1)).await })
        })
        .collect();
    for c in callers {
        assert!(matches!(c.await.unwrap(), Ok(DemoResponse::Total(_))));
    }
    assert_eq!(n1.stats().requests_busy, 0);
    assert_eq!(
        n1.request(DemoRequest::Get).await.unwrap(),
        DemoResponse::Total(50)
    );
    n1.shutdown().await.unwrap();
}

/// `submit` hands each request over at the call, in call order, also past a full queue (where
/// the rest wait in line for room, each in a task of its own), whatever order the answers are
/// awaited in.
#[tokio::test(start_paused = true)]
async fn submitted_requests_reach_the_node_in_call_order_past_a_full_queue() {
    let net = MemoryNetwork::new(10);
    let config = DriverConfig {
        request_queue_capacity: 2,
        requests_pending_max: 1,
        ..inline()
    };
    let n1 = spawn_single(&net, config);
    // Distinct powers of two: each answer's total says which adds were taken before it.
    let answers: Vec<_> = (0..20)
        .map(|i| n1.submit(DemoRequest::Add(1 << i)))
        .collect();
    assert_eq!(n1.queued_requests(), 2, "two fit; the rest wait for room");
    let mut totals = Vec::new();
    for answer in answers.into_iter().rev() {
        totals.push(answer.await.unwrap());
    }
    totals.reverse();
    let expected: Vec<_> = (0..20)
        .map(|i| DemoResponse::Total((1u64 << (i + 1)) - 1))
        .collect();
    assert_eq!(totals, expected);
    assert_eq!(n1.stats().requests_busy, 0, "none was refused");
    n1.shutdown().await.unwrap();
}

/// A submitted request the node never answers learns the stop cause, whether it was taken by
/// the node, queued, or still waiting for room; one submitted to a stopped node fails at once.
#[tokio::test(start_paused = true)]
async fn submitted_requests_learn_the_stop_cause() {
    let net = MemoryNetwork::new(11);
    let n1 = spawn_unacknowledged(&net, 1);
    let answers: Vec<_> = (0..4).map(|_| n1.submit(DemoRequest::Add(1))).collect();
    // Let the node task and the two senders waiting for room run as far as they can: a bounded
    // number of turns of this single-threaded runtime.
    for _ in 0..1_000 {
        if n1.stats().requests == 1 && n1.queued_requests() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(n1.stats().requests, 1, "the node took one");
    assert_eq!(n1.queued_requests(), 1, "one is queued, two wait for room");
    n1.shutdown().await.unwrap();
    for answer in answers {
        assert!(matches!(answer.await, Err(DriverError::Stopped)));
    }
    assert!(matches!(
        n1.submit(DemoRequest::Get).await,
        Err(DriverError::Stopped)
    ));
}

/// Requests waiting together are taken into a batch several at a time: every one is answered
/// once, none is refused, and they share batches (no more steps than the limit allows per
/// batch on average).
#[tokio::test(start_paused = true)]
async fn requests_taken_together_respect_the_batch_and_pending_limits() {
    const CALLERS: u64 = 500;
    let net = MemoryNetwork::new(9);
    let config = DriverConfig {
        request_queue_capacity: 400,
        requests_pending_max: 70,
        batch_steps_max: 45,
        ..inline()
    };
    let n1 = spawn_single(&net, config);
    // Queued before the node task runs (the clock is paused and nothing has yielded yet), so
    // the node finds hundreds waiting at once.
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let n = n1.clone();
            tokio::spawn(async move { n.request(DemoRequest::Add(i + 1)).await })
        })
        .collect();
    let mut totals = Vec::new();
    for c in callers {
        match c.await.unwrap() {
            Ok(DemoResponse::Total(t)) => totals.push(t),
            other => panic!("{other:?}"),
        }
    }
    totals.sort_unstable();
    totals.dedup();
    assert_eq!(
        totals.len() as u64,
        CALLERS,
        "each add answered with its own total"
    );
    assert_eq!(*totals.last().unwrap(), CALLERS * (CALLERS + 1) / 2);
    let s = n1.stats();
    assert_eq!(
        (s.requests, s.responses, s.requests_busy),
        (CALLERS, CALLERS, 0)
    );
    assert!(
        s.batches * 45 >= s.steps,
        "at least one batch per 45 steps: {} steps in {} batches",
        s.steps,
        s.batches
    );
    assert!(s.batches < CALLERS / 10, "requests shared batches: {s:?}");
    n1.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_configuration_is_refused() {
    let net = MemoryNetwork::new(7);
    let zero = DriverConfig {
        batch_steps_max: 0,
        ..DriverConfig::default()
    };
    assert!(matches!(
        driver::spawn(
            demo(1),
            net.join(1).unwrap(),
            MemStorage::new(),
            Bincode,
            zero
        ),
        Err(DriverError::Config(_))
    ));
    assert!(matches!(
        driver::spawn(
            demo(1),
            net.join(2).unwrap(),
            MemStorage::new(),
            Bincode,
            inline()
        ),
        Err(DriverError::Config(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_shuts_the_node_down() {
    let net = MemoryNetwork::new(7);
    let handle = driver::spawn(
        demo(1),
        net.join(1).unwrap(),
        MemStorage::new(),
        Bincode,
        inline(),
    )
    .unwrap();
    let other = handle.clone();
    drop(handle);
    assert_eq!(
        other.request(DemoRequest::Get).await.unwrap(),
        DemoResponse::Total(0)
    );
    assert!(net.running().contains(&1));
    drop(other);
    // The node task notices, shuts its transport down and leaves the network.
    bounded(async {
        while net.running().contains(&1) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}
