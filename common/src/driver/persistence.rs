//! Where a batch's records are made durable: in the node task ([`Persistence::Inline`]) or on
//! a dedicated thread that owns the storage ([`Persistence::Background`]), and the node task's
//! side of it (flushing the open batch, counting what was synced).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

#[cfg(doc)]
use super::config::Persistence;
use super::config::{DriverConfig, INLINE_FLUSH_ROUNDS_MAX};
use super::runner::Runner;
use super::stats::add;
use super::DriverError;
use crate::codec::Codec;
use crate::transport::Transport;
use crate::{Effects, Node, NodeId, Persist, Storage, StorageError};

/// One batch of encoded records on its way to the persistence thread: `(is_checkpoint, bytes)`.
pub(super) type EncodedBatch = Vec<(bool, Vec<u8>)>;

/// What the persistence thread reports for each batch, in order.
pub(super) type BatchResult = Result<PersistedBatch, StorageError>;

/// What one synced batch held.
pub(super) struct PersistedBatch {
    pub(super) records: u64,
    pub(super) bytes: u64,
    /// How many of the records were checkpoints.
    pub(super) checkpoints: u64,
}

/// Where storage calls run.
pub(super) enum Stage<S: Storage> {
    /// In the node task. `None` only after the storage was handed back.
    Inline(Option<S>),
    /// In a dedicated thread.
    Background {
        /// Batches to persist; `None` once closed for shutdown.
        batches: Option<std::sync::mpsc::SyncSender<EncodedBatch>>,
        /// One result per batch, in order.
        results: mpsc::Receiver<BatchResult>,
        /// The storage, when the thread exits.
        storage: Option<oneshot::Receiver<S>>,
    },
}

impl<S: Storage> Stage<S> {
    pub(super) fn background(
        id: NodeId,
        storage: S,
        config: &DriverConfig,
    ) -> Result<Self, DriverError> {
        let (batch_tx, batch_rx) =
            std::sync::mpsc::sync_channel::<EncodedBatch>(config.persist_batches_in_flight_max);
        let (result_tx, results) = mpsc::channel(config.persist_batches_in_flight_max);
        let (storage_tx, storage_rx) = oneshot::channel();
        let spin = config.persist_spin;
        std::thread::Builder::new()
            .name(format!("persist-{id}"))
            .spawn(move || persistence_thread(storage, batch_rx, result_tx, storage_tx, spin))
            .map_err(|e| DriverError::Spawn(e.to_string()))?;
        Ok(Stage::Background {
            batches: Some(batch_tx),
            results,
            storage: Some(storage_rx),
        })
    }
}

/// Appends and syncs the batches it receives, in order, reporting each result. Exits after the
/// first failure (the storage's state is then unknown) or when the node closes the channel, and
/// hands the storage back. Waits for a batch as [`next_batch`] says.
fn persistence_thread<S: Storage>(
    mut storage: S,
    batches: std::sync::mpsc::Receiver<EncodedBatch>,
    results: mpsc::Sender<BatchResult>,
    storage_back: oneshot::Sender<S>,
    spin: Duration,
) {
    while let Some(batch) = next_batch(&batches, spin) {
        let result = persist_batch(&mut storage, batch.iter().map(|(c, b)| (*c, b.as_slice())));
        let failed = result.is_err();
        if results.blocking_send(result).is_err() || failed {
            break;
        }
    }
    // The node may be gone already; then nobody wants the storage back.
    let _ = storage_back.send(storage);
}

/// The next batch, or `None` once the node closed the channel. Checks for one, yielding the
/// CPU between checks, for up to `spin` ([`DriverConfig::persist_spin`]), then sleeps until one
/// comes.
fn next_batch(
    batches: &std::sync::mpsc::Receiver<EncodedBatch>,
    spin: Duration,
) -> Option<EncodedBatch> {
    use std::sync::mpsc::TryRecvError;
    if !spin.is_zero() {
        let start = Instant::now();
        loop {
            match batches.try_recv() {
                Ok(batch) => return Some(batch),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) if start.elapsed() >= spin => break,
                Err(TryRecvError::Empty) => std::thread::yield_now(),
            }
        }
    }
    batches.recv().ok()
}

/// Appends every record, then syncs once.
fn persist_batch<'a, S: Storage>(
    storage: &mut S,
    records: impl Iterator<Item = (bool, &'a [u8])>,
) -> Result<PersistedBatch, StorageError> {
    let mut done = PersistedBatch {
        records: 0,
        bytes: 0,
        checkpoints: 0,
    };
    for (checkpoint, bytes) in records {
        done.checkpoints += u64::from(checkpoint);
        if checkpoint {
            storage.append_checkpoint(bytes)?;
        } else {
            storage.append(bytes)?;
        }
        done.records += 1;
        done.bytes += bytes.len() as u64;
    }
    storage.sync()?;
    Ok(done)
}

/// Waits for the next persistence result, or forever when persistence is inline.
pub(super) async fn next_result(
    results: Option<&mut mpsc::Receiver<BatchResult>>,
) -> Option<BatchResult> {
    match results {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<N, T, S, C> Runner<N, T, S, C>
where
    N: Node,
    T: Transport,
    S: Storage,
    C: Codec,
{
    /// [`Self::flush_once`], again while persisting inline left new effects behind (the
    /// [`Node::records_durable`] step that follows each inline sync), a bounded number of times;
    /// whatever remains is flushed after the next input.
    pub(super) fn flush(&mut self) -> Result<(), DriverError> {
        for _ in 0..INLINE_FLUSH_ROUNDS_MAX {
            self.flush_once()?;
            if self.outbox.is_empty() || !matches!(self.stage, Stage::Inline(_)) {
                break;
            }
        }
        Ok(())
    }

    /// Hands the open batch on: released at once when it has no records and nothing waits
    /// before it, persisted inline, or sent to the persistence thread. While the thread is
    /// already busy with as many batches as allowed, the open batch stays open and keeps growing.
    pub(super) fn flush_once(&mut self) -> Result<(), DriverError> {
        self.deliver_requests();
        // Even when the batch must stay open (storage is busy), its early messages go now.
        self.send_early();
        if self.outbox.is_empty() {
            self.open_steps = 0;
            self.open_requests = 0;
            return Ok(());
        }
        if self.in_flight.len() >= self.config.persist_batches_in_flight_max {
            return Ok(());
        }
        let mut effects = self.outbox.take();
        self.open_steps = 0;
        self.open_requests = 0;
        if effects.records.is_empty() {
            match self.in_flight.back_mut() {
                // Nothing to wait for: release now, no thread hop.
                None => self.release(effects),
                // Must not overtake the batches before it; it needs no sync of its own, so it
                // rides along with the newest one.
                Some(last) => {
                    last.messages.append(&mut effects.messages);
                    last.responses.append(&mut effects.responses);
                    last.events.append(&mut effects.events);
                }
            }
            return Ok(());
        }
        let records = std::mem::take(&mut effects.records);
        match self.stage {
            Stage::Inline(_) => self.persist_inline(&records, effects),
            Stage::Background { .. } => self.send_to_thread(&records, effects),
        }
    }

    /// Appends and syncs `records` in the node task, then releases the batch's `effects`.
    fn persist_inline(
        &mut self,
        records: &[Persist<N::Record>],
        effects: Effects<N>,
    ) -> Result<(), DriverError> {
        let Stage::Inline(Some(storage)) = &mut self.stage else {
            return Err(DriverError::Stopped);
        };
        let mut done = PersistedBatch {
            records: 0,
            bytes: 0,
            checkpoints: 0,
        };
        for record in records {
            self.record_buf.clear();
            self.codec
                .encode_into(record.record(), &mut self.record_buf)
                .map_err(DriverError::Codec)?;
            let appended = if record.is_checkpoint() {
                storage.append_checkpoint(&self.record_buf)
            } else {
                storage.append(&self.record_buf)
            };
            appended.map_err(|e| DriverError::StorageFailed(Arc::new(e)))?;
            done.checkpoints += u64::from(record.is_checkpoint());
            done.records += 1;
            done.bytes += self.record_buf.len() as u64;
        }
        storage
            .sync()
            .map_err(|e| DriverError::StorageFailed(Arc::new(e)))?;
        self.count_persisted(&done);
        self.release(effects);
        Ok(())
    }

    /// Encodes `records` and hands them to the persistence thread; `effects` wait in
    /// `in_flight` until the thread reports the batch synced.
    fn send_to_thread(
        &mut self,
        records: &[Persist<N::Record>],
        effects: Effects<N>,
    ) -> Result<(), DriverError> {
        let encoded = records
            .iter()
            .map(|r| {
                self.codec
                    .encode(r.record())
                    .map(|bytes| (matches!(r, Persist::Checkpoint(_)), bytes))
            })
            .collect::<Result<EncodedBatch, _>>()
            .map_err(DriverError::Codec)?;
        let Stage::Background {
            batches: Some(sender),
            ..
        } = &self.stage
        else {
            return Err(DriverError::Stopped);
        };
        // Never blocks: the channel holds `persist_batches_in_flight_max` batches and
        // fewer than that are in flight.
        if sender.try_send(encoded).is_err() {
            return Err(DriverError::StorageFailed(Arc::new(
                StorageError::Poisoned("the persistence thread is gone".into()),
            )));
        }
        self.in_flight.push_back(effects);
        Ok(())
    }

    /// Counts a synced batch and tells the core what is durable now.
    pub(super) fn count_persisted(&mut self, done: &PersistedBatch) {
        add(&self.counters.records_persisted, done.records);
        add(&self.counters.bytes_persisted, done.bytes);
        add(&self.counters.syncs, 1);
        if done.checkpoints > 0 {
            self.checkpoints_durable += done.checkpoints;
            self.node.checkpoints_durable(self.checkpoints_durable);
        }
        if done.records > 0 {
            // A step of its own: what it produces joins the open batch.
            self.deliver_requests();
            self.records_durable += done.records;
            add(&self.counters.steps, 1);
            self.open_steps += 1;
            self.node
                .records_durable(self.records_durable, &mut self.outbox);
        }
    }
}
