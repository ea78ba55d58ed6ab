//! The node task: takes inputs (frames, ticks, client requests, metrics queries, persistence
//! results), runs the core's steps into a batch, and releases each batch's effects once its
//! records are durable; then stops cleanly, answering every waiting caller.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::FutureExt;

use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio::time::Interval;

use super::config::{DriverConfig, REJECTIONS_LOGGED_FIRST, REQUESTS_TAKEN_AT_ONCE};
use super::handle::{Command, Reply};
use super::persistence::{next_result, BatchResult, Stage};
#[cfg(doc)]
use super::stats::DriverStats;
use super::stats::{add, Counters};
use super::DriverError;
use crate::codec::{decode_frame, encode_frame, Codec, Header};
use crate::transport::{Inbound, Transport, TryRecvError};
use crate::{Effects, Node, NodeId, Outbox, RequestId, Storage, StorageError};

/// One input taken by the node task.
pub(super) enum Input<N: Node> {
    Frame(Option<Inbound>),
    Tick,
    Command(Option<Command<N>>),
    Metrics(oneshot::Sender<N::Metrics>),
    Persisted(Option<BatchResult>),
    Shutdown,
}

/// The node task's state.
pub(super) struct Runner<N: Node, T, S: Storage, C> {
    pub(super) node: N,
    pub(super) transport: T,
    pub(super) codec: C,
    pub(super) config: DriverConfig,
    pub(super) stage: Stage<S>,
    pub(super) commands: mpsc::Receiver<Command<N>>,
    pub(super) metrics: mpsc::Receiver<oneshot::Sender<N::Metrics>>,
    pub(super) tick: Interval,
    /// Effects of the open batch: steps run but not yet handed to storage.
    pub(super) outbox: Outbox<N>,
    /// Steps in the open batch.
    pub(super) open_steps: usize,
    /// Client requests among them.
    pub(super) open_requests: usize,
    /// Batches handed to the persistence thread, oldest first, with their records taken out:
    /// what they release once synced.
    pub(super) in_flight: VecDeque<Effects<N>>,
    /// Requests taken by the core and not answered yet.
    pub(super) pending: HashMap<RequestId, Reply<N>, BuildHasherDefault<RequestIdHasher>>,
    pub(super) next_request: u64,
    pub(super) events: broadcast::Sender<N::Event>,
    pub(super) counters: Arc<Counters>,
    pub(super) shutdown: Arc<Notify>,
    /// Reused buffer for encoding records when persisting inline.
    pub(super) record_buf: Vec<u8>,
    pub(super) storage_slot: Arc<Mutex<Option<Box<dyn Any + Send>>>>,
    /// Checkpoints made durable since the node was spawned ([`Node::checkpoints_durable`]).
    pub(super) checkpoints_durable: u64,
    /// Records made durable since the node was spawned ([`Node::records_durable`]).
    pub(super) records_durable: u64,
    /// Requests taken into the open batch and not yet handed to the core (see
    /// [`Runner::deliver_requests`]); at most the batch's steps.
    pub(super) requests: Vec<(RequestId, N::Request)>,
    /// Reused buffer for requests taken from the queue together ([`Runner::take_ready_requests`]).
    pub(super) commands_buf: Vec<Command<N>>,
    /// Reused buffers for early messages and answers.
    pub(super) early_buf: Vec<(NodeId, N::Message)>,
    pub(super) early_answers_buf: Vec<(RequestId, N::Response)>,
}

/// Hashes the driver's own request ids for the pending-request map, which sees an insert and a
/// removal per request. The ids are a counter this driver assigns, never chosen by a peer or a
/// client, so the hash needs no protection against chosen collisions (the job of the default
/// SipHash): one multiplication by 2^64 / φ (Fibonacci hashing) spreads consecutive ids over
/// every bit, the high ones included, which the map's probing uses. Written by hand because it
/// is two lines and the workspace has no hashing crate for it.
#[derive(Default)]
pub(super) struct RequestIdHasher(u64);

impl std::hash::Hasher for RequestIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `RequestId` (it hashes one u64), but correct for any input.
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Whether the `rejected`-th rejected frame is logged at `warn`: the first
/// [`REJECTIONS_LOGGED_FIRST`], then only at powers of two, so a peer flooding garbage cannot
/// flood the log. Every rejection is counted in [`DriverStats::frames_rejected`].
pub(super) fn log_rejection(rejected: u64) -> bool {
    rejected <= REJECTIONS_LOGGED_FIRST || rejected.is_power_of_two()
}

impl<N, T, S, C> Runner<N, T, S, C>
where
    N: Node,
    T: Transport,
    S: Storage,
    C: Codec,
{
    pub(super) async fn run(mut self) -> Option<DriverError> {
        let cause = self.serve().await;
        self.stop(cause).await
    }

    /// Serves inputs until shutdown (`None`) or a fatal error. The select of the inputs stays
    /// beside what each one does; what ends a turn is [`fill_and_flush`](Self::fill_and_flush).
    pub(super) async fn serve(&mut self) -> Option<DriverError> {
        // Registered once: a `Notified` made afresh on every turn would be added to and removed
        // from the `Notify`'s waiter list (a lock each) on every turn.
        let shutdown = Arc::clone(&self.shutdown);
        let shutdown = shutdown.notified();
        tokio::pin!(shutdown);
        loop {
            // The open batch may take more steps while it is under its limit.
            let can_step = self.open_steps < self.config.batch_steps_max;
            let can_take_request =
                can_step && self.pending.len() < self.config.requests_pending_max;
            let waiting_storage = !self.in_flight.is_empty();
            let results = match &mut self.stage {
                Stage::Background { results, .. } => Some(results),
                Stage::Inline(_) => None,
            };
            // `biased`: branches are polled in this order, not in an order drawn by tokio from
            // an unseeded source, so a seeded run (turmoil) replays exactly. The order is fair:
            // shutdown and the storage results are rare and come first; a tick is ready once per
            // `tick` and so cannot starve anything after it, and would itself be starved by a
            // steady stream of frames if it came later (a leader under load would stop ticking);
            // metrics queries are rare and bounded. Frames and requests come last, and after
            // the first input `gather_ready` takes both kinds in turn, so neither starves the
            // other.
            let input = tokio::select! {
                biased;
                _ = &mut shutdown => Input::Shutdown,
                r = next_result(results), if waiting_storage => Input::Persisted(r),
                _ = self.tick.tick(), if can_step => Input::Tick,
                Some(m) = self.metrics.recv() => Input::Metrics(m),
                f = self.transport.recv(), if can_step => Input::Frame(f),
                c = self.commands.recv(), if can_take_request => Input::Command(c),
            };
            match input {
                Input::Shutdown => return None,
                Input::Persisted(Some(Ok(done))) => {
                    self.count_persisted(&done);
                    if let Some(effects) = self.in_flight.pop_front() {
                        self.release(effects);
                    }
                }
                Input::Persisted(Some(Err(e))) => {
                    tracing::error!(error = %e, "storage failed; stopping the node");
                    return Some(DriverError::StorageFailed(Arc::new(e)));
                }
                Input::Persisted(None) => {
                    tracing::error!("persistence thread ended; stopping the node");
                    return Some(DriverError::StorageFailed(Arc::new(
                        StorageError::Poisoned("the persistence thread ended unexpectedly".into()),
                    )));
                }
                Input::Frame(None) => return Some(DriverError::TransportClosed),
                Input::Frame(Some(inbound)) => self.on_frame(inbound),
                Input::Tick => self.on_tick(),
                // Every handle is gone: nobody can ask anything any more.
                Input::Command(None) => return None,
                Input::Command(Some(command)) => self.on_command(command),
                Input::Metrics(reply) => {
                    // The caller may have given up waiting; that is fine.
                    let _ = reply.send(self.node.metrics());
                    continue;
                }
            }
            if let Err(e) = self.fill_and_flush().await {
                return Some(e);
            }
        }
    }

    /// Ends a turn of [`serve`](Self::serve) that took a step: adds to the open batch what else
    /// is ready (after letting other tasks run first when that is worth it), then flushes it.
    async fn fill_and_flush(&mut self) -> Result<(), DriverError> {
        self.gather_ready()?;
        if self.worth_waiting_for_more() {
            // Other clients are likely runnable right now, about to send their next request
            // (they were just answered in a bulk release). Letting them run first turns their
            // requests into one batch: one sync, one AppendEntries, one release, instead of a
            // turn each. `yield_now` puts this task behind the tasks that are ready, and costs
            // one reschedule when none is.
            tokio::task::yield_now().await;
            self.gather_ready()?;
        }
        self.flush()
    }

    /// Whether the open batch should wait one scheduling round for more input before it is
    /// flushed: only when it is not full, and more requests are waiting for answers than the
    /// batch took (several clients are active, so more requests are probably on their way).
    /// With one client this is never true, so its latency pays nothing.
    pub(super) fn worth_waiting_for_more(&self) -> bool {
        self.open_steps < self.config.batch_steps_max
            && self.open_requests > 0
            && self.pending.len() > self.open_requests
    }

    /// Takes inputs that are ready now, without waiting, until the batch is full or none is.
    /// Inputs that are not steps (rejected frames) count against the same limit, so a peer
    /// flooding garbage cannot keep the node task from yielding.
    pub(super) fn gather_ready(&mut self) -> Result<(), DriverError> {
        let mut taken = 0;
        while self.open_steps < self.config.batch_steps_max && taken < self.config.batch_steps_max {
            taken += 1;
            let mut took = self.take_ready_requests();
            match self.transport.try_recv() {
                Ok(inbound) => {
                    self.on_frame(inbound);
                    took = true;
                }
                Err(TryRecvError::Closed) => return Err(DriverError::TransportClosed),
                Err(TryRecvError::Empty) => {}
            }
            if !took {
                break;
            }
        }
        Ok(())
    }

    /// Takes up to [`REQUESTS_TAKEN_AT_ONCE`] waiting requests into the open batch, within its
    /// room and the pending limit; whether it took any. Taken together, not one by one: tokio's
    /// bounded channel takes a lock to hand back each freed slot, once per call here.
    fn take_ready_requests(&mut self) -> bool {
        let room = (self.config.batch_steps_max.saturating_sub(self.open_steps))
            .min(
                self.config
                    .requests_pending_max
                    .saturating_sub(self.pending.len()),
            )
            .min(REQUESTS_TAKEN_AT_ONCE);
        if room == 0 || self.commands.is_empty() {
            return false;
        }
        let mut taken = std::mem::take(&mut self.commands_buf);
        // Ready (the queue is not empty), so this completes at once; a closed, empty queue
        // gives 0 and the select in `serve` sees it next.
        let _ = self.commands.recv_many(&mut taken, room).now_or_never();
        let took = !taken.is_empty();
        for command in taken.drain(..) {
            self.on_command(command);
        }
        self.commands_buf = taken;
        took
    }

    pub(super) fn on_frame(&mut self, inbound: Inbound) {
        self.deliver_requests();
        let len = inbound.frame.len() as u64;
        let me = self.node.id();
        match decode_frame::<C, N::Message>(
            &self.codec,
            N::PROTOCOL,
            N::WIRE_VERSION,
            &inbound.frame,
        ) {
            Ok((header, msg)) if header.from == inbound.from && header.to == me => {
                add(&self.counters.messages_received, 1);
                add(&self.counters.bytes_received, len);
                add(&self.counters.steps, 1);
                self.open_steps += 1;
                self.node
                    .handle_message(inbound.from, msg, &mut self.outbox);
            }
            Ok((header, _)) => {
                let rejected = self.count_rejected();
                if log_rejection(rejected) {
                    tracing::warn!(
                        peer = inbound.from,
                        claimed_from = header.from,
                        claimed_to = header.to,
                        rejected,
                        "frame rejected: its header does not match the authenticated sender and this node"
                    );
                }
            }
            Err(error) => {
                let rejected = self.count_rejected();
                if log_rejection(rejected) {
                    tracing::warn!(peer = inbound.from, bytes = len, %error, rejected, "frame rejected");
                }
            }
        }
    }

    /// Counts one rejected frame; returns how many were rejected so far.
    pub(super) fn count_rejected(&self) -> u64 {
        self.counters
            .frames_rejected
            .fetch_add(1, Ordering::Relaxed)
            + 1
    }

    pub(super) fn on_tick(&mut self) {
        self.deliver_requests();
        add(&self.counters.ticks, 1);
        add(&self.counters.steps, 1);
        self.open_steps += 1;
        self.node.tick(&mut self.outbox);
    }

    /// Takes a request into the open batch. The core gets the requests taken together in one
    /// [`Node::handle_requests`], before its next other input or the batch's flush.
    pub(super) fn on_command(&mut self, Command(req, reply): Command<N>) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.pending.insert(id, reply);
        add(&self.counters.requests, 1);
        add(&self.counters.steps, 1);
        self.open_steps += 1;
        self.open_requests += 1;
        self.requests.push((id, req));
    }

    /// Hands the requests taken since the core's last input to the core, in order.
    pub(super) fn deliver_requests(&mut self) {
        if !self.requests.is_empty() {
            self.node
                .handle_requests(self.requests.drain(..), &mut self.outbox);
        }
    }

    /// Encodes and sends one message, counting it.
    pub(super) fn send(&mut self, to: NodeId, msg: &N::Message) {
        let header = Header {
            protocol: N::PROTOCOL,
            version: N::WIRE_VERSION,
            from: self.node.id(),
            to,
        };
        let frame = match encode_frame(&self.codec, &header, msg) {
            Ok(frame) => frame,
            Err(error) => {
                add(&self.counters.send_failures, 1);
                tracing::error!(to, %error, "message could not be encoded; dropped");
                return;
            }
        };
        let len = frame.len() as u64;
        match self.transport.send(to, frame) {
            Ok(()) => {
                add(&self.counters.messages_sent, 1);
                add(&self.counters.bytes_sent, len);
            }
            Err(error) => {
                add(&self.counters.send_failures, 1);
                tracing::debug!(to, %error, "message not sent");
            }
        }
    }

    /// Sends the open batch's early messages ([`Outbox::send_early`]) now: they claim nothing
    /// its records hold, so they need not wait for its sync.
    pub(super) fn send_early(&mut self) {
        if !self.outbox.has_early() {
            return;
        }
        let mut early = std::mem::take(&mut self.early_buf);
        let mut answers = std::mem::take(&mut self.early_answers_buf);
        self.outbox.take_early_into(&mut early, &mut answers);
        self.node.coalesce(&mut early);
        for (to, msg) in early.drain(..) {
            self.send(to, &msg);
        }
        for (id, response) in answers.drain(..) {
            self.answer(id, response);
        }
        self.early_buf = early;
        self.early_answers_buf = answers;
    }

    /// Hands `response` to the caller waiting for request `id`.
    pub(super) fn answer(&mut self, id: RequestId, response: N::Response) {
        match self.pending.remove(&id) {
            Some(reply) => {
                add(&self.counters.responses, 1);
                // The caller may have given up waiting; that is fine.
                let _ = reply.send(Ok(response));
            }
            None => tracing::warn!(%id, "the core answered a request that is not pending"),
        }
    }

    /// Lets a batch's effects leave the node. Only called once its records are durable.
    pub(super) fn release(&mut self, mut effects: Effects<N>) {
        add(&self.counters.batches, 1);
        self.node.coalesce(&mut effects.messages);
        for (to, msg) in effects.messages {
            self.send(to, &msg);
        }
        self.node.coalesce(&mut effects.early);
        for (to, msg) in effects.early {
            // Early messages normally left when the batch was taken; any that remain (a batch
            // released without records) go now.
            self.send(to, &msg);
        }
        for (id, response) in effects.early_responses.into_iter().chain(effects.responses) {
            self.answer(id, response);
        }
        for event in effects.events {
            add(&self.counters.events, 1);
            // No subscriber is not an error.
            let _ = self.events.send(event);
        }
    }

    /// Ends the node: after a clean shutdown (`cause` is `None`) the steps already run are
    /// persisted and released; after a failure nothing more leaves. Then waiting callers get an
    /// error, the transport shuts down and the storage is handed back.
    pub(super) async fn stop(mut self, mut cause: Option<DriverError>) -> Option<DriverError> {
        if cause.is_none() {
            cause = self.drain().await.err();
        }
        if let Some(e) = &cause {
            tracing::error!(error = %e, "node stopped");
            // Whatever is still held was never made durable: it must not leave.
            self.in_flight.clear();
            drop(self.outbox.take());
        }
        let error = cause.clone().unwrap_or(DriverError::Stopped);
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(error.clone()));
        }
        self.commands.close();
        while let Ok(Command(_, reply)) = self.commands.try_recv() {
            let _ = reply.send(Err(error.clone()));
        }
        self.transport.shutdown().await;
        let storage = match &mut self.stage {
            Stage::Inline(storage) => storage.take(),
            Stage::Background {
                batches, storage, ..
            } => {
                // Closing the channel lets the thread finish and hand the storage back.
                batches.take();
                match storage.take() {
                    Some(rx) => rx.await.ok(),
                    None => None,
                }
            }
        };
        if let (Some(storage), Ok(mut slot)) = (storage, self.storage_slot.lock()) {
            *slot = Some(Box::new(storage));
        }
        cause
    }

    /// Persists and releases everything the core produced so far.
    pub(super) async fn drain(&mut self) -> Result<(), DriverError> {
        loop {
            self.flush()?;
            if self.in_flight.is_empty() && self.outbox.is_empty() {
                return Ok(());
            }
            let Stage::Background { results, .. } = &mut self.stage else {
                return Ok(());
            };
            match results.recv().await {
                Some(Ok(done)) => {
                    self.count_persisted(&done);
                    if let Some(effects) = self.in_flight.pop_front() {
                        self.release(effects);
                    }
                }
                Some(Err(e)) => return Err(DriverError::StorageFailed(Arc::new(e))),
                None => return Err(DriverError::Stopped),
            }
        }
    }
}
