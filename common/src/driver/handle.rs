//! [`NodeHandle`]: how clients talk to a running node, and how the node task's end is
//! reported to them.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};

#[cfg(doc)]
use super::config::METRICS_QUEUE_CAPACITY;
use super::stats::{add, Counters, DriverStats};
use super::DriverError;
#[cfg(doc)]
use super::{spawn, spawn_recovered};
use crate::{Node, NodeId, Storage};

/// Whether the node task still runs.
#[derive(Clone, Debug)]
pub(super) enum Status {
    Running,
    /// Stopped: `None` after a clean shutdown, the cause otherwise.
    Stopped(Option<DriverError>),
}

pub(super) type Reply<N> = oneshot::Sender<Result<<N as Node>::Response, DriverError>>;

/// A client request and where to send its answer.
pub(super) struct Command<N: Node>(pub(super) N::Request, pub(super) Reply<N>);

/// A handle to a running node. Cheap to clone; every clone talks to the same node. When the
/// last handle is dropped the node shuts down.
pub struct NodeHandle<N: Node> {
    pub(super) id: NodeId,
    pub(super) commands: mpsc::Sender<Command<N>>,
    pub(super) metrics: mpsc::Sender<oneshot::Sender<N::Metrics>>,
    pub(super) request_queue_capacity: usize,
    pub(super) events: broadcast::Sender<N::Event>,
    pub(super) counters: Arc<Counters>,
    pub(super) shutdown: Arc<Notify>,
    pub(super) status: watch::Receiver<Status>,
    pub(super) storage: Arc<Mutex<Option<Box<dyn Any + Send>>>>,
}

impl<N: Node> Clone for NodeHandle<N> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            commands: self.commands.clone(),
            metrics: self.metrics.clone(),
            request_queue_capacity: self.request_queue_capacity,
            events: self.events.clone(),
            counters: self.counters.clone(),
            shutdown: self.shutdown.clone(),
            status: self.status.clone(),
            storage: self.storage.clone(),
        }
    }
}

impl<N: Node> std::fmt::Debug for NodeHandle<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("id", &self.id)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl<N: Node> NodeHandle<N> {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Hands `req` to the node and waits for the core's answer, which is delivered only after the
    /// records of the step that produced it are durable.
    ///
    /// Backpressure: when the request queue is full, waits for room instead of failing (the
    /// caller slows down to the node's pace; [`NodeHandle::try_request`] is the form that fails
    /// at once). Fails with the node's stop cause if it is or becomes stopped before answering,
    /// including while waiting for room.
    pub async fn request(&self, req: N::Request) -> Result<N::Response, DriverError> {
        match self.try_hand_over(req) {
            Ok(answer) => answer.await,
            // Boxed: a future is as large as its largest await, and every request's future
            // would otherwise carry (and copy with each move) room for this rare wait.
            Err(Unsent::Full(req)) => Box::pin(self.hand_over_when_room(req)).await?.await,
            Err(Unsent::Stopped(cause)) => Err(cause),
        }
    }

    /// [`NodeHandle::request`] without waiting for room: fails at once with
    /// [`DriverError::Busy`] when the request queue is full (the request is dropped), for callers
    /// that would rather shed load than queue it.
    pub async fn try_request(&self, req: N::Request) -> Result<N::Response, DriverError> {
        match self.try_hand_over(req) {
            Ok(answer) => answer.await,
            Err(Unsent::Full(_)) => {
                add(&self.counters.requests_busy.0, 1);
                Err(DriverError::Busy {
                    capacity: self.request_queue_capacity,
                })
            }
            Err(Unsent::Stopped(cause)) => Err(cause),
        }
    }

    /// [`NodeHandle::request`], with `req` handed to the node now, at the call, rather than at
    /// the future's first poll; the returned [`Answer`] resolves exactly as `request`'s future
    /// would. For a caller that keeps many requests in flight (a server answering pipelined
    /// clients, say): requests reach the node in the order of the calls, and each one waiting
    /// costs a small future (a channel end and the node's status) instead of an `async` state
    /// machine. Answers may be awaited in any order, or not at all.
    ///
    /// When the request queue is full, the request takes its place in the line of senders
    /// waiting for room at once, and a task of its own (spawned on the current tokio runtime,
    /// which must exist) puts it on the queue when its turn comes: backpressure is the same as
    /// `request`'s, and order is kept.
    pub fn submit(&self, req: N::Request) -> Answer<N> {
        match self.try_hand_over(req) {
            Ok(answer) => answer,
            Err(Unsent::Full(req)) => {
                let (reply, answer) = oneshot::channel();
                let commands = self.commands.clone();
                // Should the node stop first, `reply` is dropped unanswered and the answer
                // reports the stop cause.
                let mut send = Box::pin(async move {
                    let _ = commands.send(Command(req, reply)).await;
                });
                // Polled once here, which puts it in the line; its task re-registers the waker.
                if send
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                    .is_pending()
                {
                    tokio::spawn(send);
                }
                Answer::waiting(answer, self.status.clone())
            }
            Err(Unsent::Stopped(cause)) => Answer::done(Err(cause)),
        }
    }

    /// Puts `req` on the request queue if it has room, without waiting.
    fn try_hand_over(&self, req: N::Request) -> Result<Answer<N>, Unsent<N::Request>> {
        let (reply, answer) = oneshot::channel();
        // Room in the queue is the common case, and takes no waiting. Tokio's queue hands freed
        // room to waiting senders first, so this cannot overtake a caller already waiting.
        match self.commands.try_send(Command(req, reply)) {
            Ok(()) => Ok(Answer::waiting(answer, self.status.clone())),
            Err(mpsc::error::TrySendError::Full(Command(req, _))) => Err(Unsent::Full(req)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Unsent::Stopped(self.stop_cause())),
        }
    }

    /// Puts `req` on the request queue, waiting for room.
    async fn hand_over_when_room(&self, req: N::Request) -> Result<Answer<N>, DriverError> {
        let (reply, answer) = oneshot::channel();
        match self.commands.send(Command(req, reply)).await {
            Ok(()) => Ok(Answer::waiting(answer, self.status.clone())),
            Err(_) => Err(self.stop_cause()),
        }
    }

    /// Subscribes to the node's events (published after their records are durable). A
    /// subscriber sees events published after it subscribed.
    pub fn subscribe(&self) -> broadcast::Receiver<N::Event> {
        self.events.subscribe()
    }

    /// The core's current metrics (its in-memory state, which may be ahead of what is durable).
    /// Queries have their own small queue ([`METRICS_QUEUE_CAPACITY`]), served even while the
    /// node is saturated with requests; a full queue makes this wait rather than fail.
    pub async fn metrics(&self) -> Result<N::Metrics, DriverError> {
        let (reply, answer) = oneshot::channel();
        if self.metrics.send(reply).await.is_err() {
            return Err(self.stop_cause());
        }
        answer.await.map_err(|_| self.stop_cause())
    }

    /// Requests sent to the node that it has not taken from its queue yet (at most the
    /// configured `request_queue_capacity`), read without waiting for the node.
    pub fn queued_requests(&self) -> usize {
        self.commands.max_capacity() - self.commands.capacity()
    }

    /// The driver's counters, read without waiting for the node.
    pub fn stats(&self) -> DriverStats {
        self.counters.snapshot()
    }

    /// Whether the node task is still running.
    pub fn is_running(&self) -> bool {
        matches!(*self.status.borrow(), Status::Running)
    }

    /// Waits until the node stops, and says why: `Ok(())` after a clean shutdown, the error that
    /// stopped it otherwise.
    pub async fn stopped(&self) -> Result<(), DriverError> {
        wait_stopped(self.status.clone()).await
    }

    /// Shuts the node down gracefully and waits until it has stopped: it takes no new input,
    /// persists and releases what its steps already produced, fails the requests still waiting,
    /// shuts the transport down and hands the storage back (see
    /// [`NodeHandle::shutdown_and_take_storage`]). Returns the error that stopped the node, if
    /// one did before.
    pub async fn shutdown(&self) -> Result<(), DriverError> {
        self.shutdown.notify_one();
        self.stopped().await
    }

    /// Like [`NodeHandle::shutdown`], then takes the node's storage back (for instance to
    /// restart the node from it with [`spawn_recovered`]). `S` must be the storage type given to
    /// [`spawn`]; the storage can be taken once.
    pub async fn shutdown_and_take_storage<S: Storage>(&self) -> Result<S, DriverError> {
        self.shutdown().await?;
        let mut slot = self
            .storage
            .lock()
            .map_err(|_| DriverError::StorageUnavailable)?;
        let boxed = slot.take().ok_or(DriverError::StorageUnavailable)?;
        match boxed.downcast::<S>() {
            Ok(storage) => Ok(*storage),
            Err(other) => {
                *slot = Some(other);
                Err(DriverError::StorageUnavailable)
            }
        }
    }

    fn stop_cause(&self) -> DriverError {
        match &*self.status.borrow() {
            Status::Stopped(Some(e)) => e.clone(),
            _ => DriverError::Stopped,
        }
    }
}

/// Waits until `status` says the node stopped, and says why (see [`NodeHandle::stopped`]).
async fn wait_stopped(mut status: watch::Receiver<Status>) -> Result<(), DriverError> {
    let result = status
        .wait_for(|s| matches!(s, Status::Stopped(_)))
        .await
        .map(|s| s.clone());
    match result {
        Ok(Status::Stopped(None)) => Ok(()),
        Ok(Status::Stopped(Some(e))) => Err(e),
        // The node task ended without reporting (it panicked).
        Ok(Status::Running) | Err(_) => Err(DriverError::Stopped),
    }
}

/// Why a request was not put on the node's queue.
enum Unsent<R> {
    /// The queue is full; the request comes back.
    Full(R),
    /// The node is stopped, for this reason.
    Stopped(DriverError),
}

/// The answer to a request handed to the node by [`NodeHandle::submit`]: a future resolving to
/// what [`NodeHandle::request`] would. Small and `Unpin`, so a caller can keep many of them in a
/// plain queue. Dropping it abandons the answer, not the request (the node has it already).
#[must_use = "the request is on its way to the node either way; the answer is lost if dropped"]
pub struct Answer<N: Node> {
    state: AnswerState<N>,
}

type BoxedAnswer<N> =
    Pin<Box<dyn Future<Output = Result<<N as Node>::Response, DriverError>> + Send>>;

enum AnswerState<N: Node> {
    /// On the queue: the node answers through `reply`; `status` says why if it stops first.
    Waiting {
        reply: oneshot::Receiver<Result<N::Response, DriverError>>,
        status: watch::Receiver<Status>,
    },
    /// The node dropped the request unanswered: waiting for its status to say why (rare, so
    /// boxed to keep the common case small).
    Stopping(BoxedAnswer<N>),
    /// Known before the first poll (the node was stopped, say); taken by that poll.
    Done(Option<Result<N::Response, DriverError>>),
}

impl<N: Node> Answer<N> {
    /// This answer, turned into a `T` by `f` when it resolves: how a protocol's handle gives its
    /// own typed answer (Raft's `Proposal`, say) without a future of its own. `f` is a plain
    /// function, so the mapped answer stays as small as the answer.
    pub fn map<T>(self, f: fn(Result<N::Response, DriverError>) -> T) -> MappedAnswer<N, T> {
        MappedAnswer { answer: self, f }
    }

    fn waiting(
        reply: oneshot::Receiver<Result<N::Response, DriverError>>,
        status: watch::Receiver<Status>,
    ) -> Self {
        Answer {
            state: AnswerState::Waiting { reply, status },
        }
    }

    fn done(result: Result<N::Response, DriverError>) -> Self {
        Answer {
            state: AnswerState::Done(Some(result)),
        }
    }
}

// No field is pinned in place: the channel ends are `Unpin`, the rare future is boxed, and a
// result waiting in `Done` is only ever moved out.
impl<N: Node> Unpin for Answer<N> {}

impl<N: Node> Future for Answer<N> {
    type Output = Result<N::Response, DriverError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = &mut self.state;
        match state {
            AnswerState::Waiting { reply, status } => match Pin::new(reply).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => {
                    // Dropped unanswered: the node task ended abnormally (a clean stop answers
                    // every waiting request). Its final status says why, and is set right after
                    // it ends.
                    let status = status.clone();
                    let mut stopped = Box::pin(async move {
                        Err(wait_stopped(status)
                            .await
                            .err()
                            .unwrap_or(DriverError::Stopped))
                    });
                    let poll = stopped.as_mut().poll(cx);
                    *state = AnswerState::Stopping(stopped);
                    poll
                }
                Poll::Pending => Poll::Pending,
            },
            AnswerState::Stopping(future) => future.as_mut().poll(cx),
            AnswerState::Done(result) => {
                // Polled again after it resolved (a misuse): it has nothing more to say.
                Poll::Ready(result.take().unwrap_or(Err(DriverError::Stopped)))
            }
        }
    }
}

/// An [`Answer`] turned into a `T` when it resolves ([`Answer::map`]).
#[must_use = "the request is on its way to the node either way; the answer is lost if dropped"]
pub struct MappedAnswer<N: Node, T> {
    answer: Answer<N>,
    f: fn(Result<N::Response, DriverError>) -> T,
}

impl<N: Node, T> Future for MappedAnswer<N, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let f = self.f;
        Pin::new(&mut self.answer).poll(cx).map(f)
    }
}

impl<N: Node, T> std::fmt::Debug for MappedAnswer<N, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MappedAnswer").field(&self.answer).finish()
    }
}

impl<N: Node> std::fmt::Debug for Answer<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            AnswerState::Waiting { .. } => "waiting",
            AnswerState::Stopping(_) => "stopping",
            AnswerState::Done(_) => "done",
        };
        f.debug_struct("Answer").field("state", &state).finish()
    }
}

/// Reports how the node task ended, including a panic of the core, which would otherwise leave
/// the handles believing the node runs.
pub(super) fn report_end(
    id: NodeId,
    task: tokio::task::JoinHandle<Option<DriverError>>,
    status_tx: watch::Sender<Status>,
) {
    tokio::spawn(async move {
        let status = match task.await {
            Ok(cause) => Status::Stopped(cause),
            Err(join) => {
                let reason = if join.is_panic() {
                    let payload = join.into_panic();
                    payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".to_string())
                } else {
                    "the task was cancelled (the runtime shut down)".to_string()
                };
                tracing::error!(node = id, %reason, "node task ended abnormally");
                Status::Stopped(Some(DriverError::Panicked(reason)))
            }
        };
        status_tx.send_replace(status);
    });
}
