//! The driver persists records by kind (append or checkpoint), in step order, and publishes
//! events only once they are durable; shown with a tiny register core written for the test.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::codec::{Bincode, Codec};
use common::driver::{self, DriverConfig, DriverError, Persistence};
use common::transport::memory::MemoryNetwork;
use common::{MemStorage, Node, NodeId, Outbox, RequestId, Storage, StorageError};

/// A register on one node: `Set(v)` appends `v`; every `CHECKPOINT_EVERY` sets, it writes a
/// checkpoint holding the whole history instead.
struct Register {
    id: NodeId,
    history: Vec<u64>,
}

const CHECKPOINT_EVERY: usize = 4;
/// A value the register panics on, standing for a bug in a core.
const PANIC_VALUE: u64 = 666;

#[derive(Debug, thiserror::Error)]
#[error("never fails")]
struct Never;

impl Node for Register {
    type Config = NodeId;
    type Message = ();
    type Request = u64;
    type Response = usize;
    type Event = u64;
    type Record = Vec<u64>;
    type Metrics = Vec<u64>;
    type Error = Never;

    const PROTOCOL: u16 = 900;
    const WIRE_VERSION: u16 = 1;

    fn recover(id: NodeId, records: Vec<Vec<u64>>) -> Result<Self, Never> {
        Ok(Register {
            id,
            history: records.into_iter().flatten().collect(),
        })
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn handle_message(&mut self, _: NodeId, _: (), _: &mut Outbox<Self>) {}

    fn handle_request(&mut self, id: RequestId, value: u64, out: &mut Outbox<Self>) {
        assert_ne!(
            value, PANIC_VALUE,
            "the register refuses to store {PANIC_VALUE}"
        );
        self.history.push(value);
        if self.history.len() % CHECKPOINT_EVERY == 0 {
            out.checkpoint(self.history.clone());
        } else {
            out.persist(vec![value]);
        }
        out.emit(value);
        out.respond(id, self.history.len());
    }

    fn tick(&mut self, _: &mut Outbox<Self>) {}

    fn metrics(&self) -> Vec<u64> {
        self.history.clone()
    }
}

/// MemStorage shared with the test, counting records appended (`.1`) and records synced (`.2`).
#[derive(Clone)]
struct Shared(Arc<Mutex<MemStorage>>, Arc<AtomicUsize>, Arc<AtomicUsize>);

impl Storage for Shared {
    fn append(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.lock().unwrap().append(record)
    }
    fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.lock().unwrap().append_checkpoint(record)
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.0.lock().unwrap().sync()?;
        self.2
            .store(self.1.load(Ordering::SeqCst), Ordering::SeqCst);
        Ok(())
    }
    fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError> {
        self.0.lock().unwrap().load()
    }

    fn snapshots(&self) -> std::sync::Arc<dyn common::SnapshotStore> {
        self.0.lock().unwrap().snapshots()
    }
}

async fn records_and_events(persistence: Persistence) {
    let network = MemoryNetwork::new(1);
    let storage = Shared(Arc::default(), Arc::default(), Arc::default());
    let config = DriverConfig {
        persistence,
        ..DriverConfig::default()
    };
    let node = Register::recover(1, vec![]).unwrap();
    let handle = driver::spawn(
        node,
        network.join(1).unwrap(),
        storage.clone(),
        Bincode,
        config,
    )
    .unwrap();
    let mut events = handle.subscribe();
    let synced = storage.2.clone();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(value) = events.recv().await {
            // Set `v` writes the `v`-th record; its event comes only after that record's sync.
            assert!(
                synced.load(Ordering::SeqCst) >= value as usize,
                "event before sync"
            );
            seen.push(value);
            if seen.len() == 10 {
                break;
            }
        }
        seen
    });
    for v in 1..=10u64 {
        assert_eq!(handle.request(v).await.unwrap(), v as usize);
    }
    assert_eq!(watcher.await.unwrap(), (1..=10).collect::<Vec<_>>());
    assert_eq!(handle.stats().events, 10);

    // The latest checkpoint (after 8 sets) and the two appends after it.
    let stored: Vec<Vec<u64>> = storage
        .0
        .lock()
        .unwrap()
        .load()
        .unwrap()
        .iter()
        .map(|r| Bincode.decode(r).unwrap())
        .collect();
    assert_eq!(stored, vec![(1..=8).collect(), vec![9], vec![10]]);

    let back: Shared = handle.shutdown_and_take_storage().await.unwrap();
    let handle = driver::spawn_recovered::<Register, _, _, _>(
        1,
        network.join(1).unwrap(),
        back,
        Bincode,
        config,
    )
    .await
    .unwrap();
    assert_eq!(
        handle.metrics().await.unwrap(),
        (1..=10).collect::<Vec<_>>()
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn checkpoints_and_appends_persist_in_order_and_events_follow_sync_inline() {
    records_and_events(Persistence::Inline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_appends_persist_in_order_and_events_follow_sync_background() {
    records_and_events(Persistence::Background).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_core_stops_the_node_and_callers_get_an_error() {
    let network = MemoryNetwork::new(1);
    let config = DriverConfig {
        persistence: Persistence::Inline,
        ..DriverConfig::default()
    };
    let node = Register::recover(1, vec![]).unwrap();
    let handle = driver::spawn(
        node,
        network.join(1).unwrap(),
        MemStorage::new(),
        Bincode,
        config,
    )
    .unwrap();
    assert_eq!(handle.request(1).await.unwrap(), 1);
    let err = handle.request(PANIC_VALUE).await.unwrap_err();
    assert!(
        matches!(&err, DriverError::Panicked(m) if m.contains("refuses")),
        "{err}"
    );
    assert!(matches!(
        handle.stopped().await,
        Err(DriverError::Panicked(_))
    ));
    assert!(!handle.is_running());
    assert!(matches!(
        handle.request(2).await,
        Err(DriverError::Panicked(_))
    ));
}
