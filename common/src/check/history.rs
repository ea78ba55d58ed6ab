//! Histories of client operations: events, JSON lines, pairing into operations, and a recorder
//! for real clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::sim::{ClientOp, Outcome};
use crate::Node;

/// Longest JSON line [`History::read_json_lines`] accepts (1 MiB): a history file is input, and
/// a line without an end must not grow a buffer without bound.
pub const HISTORY_LINE_BYTES_MAX: usize = 1024 * 1024;

/// One event of a history, in the vocabulary of Jepsen: an operation is *invoked*, then ends
/// *ok* (it took effect, with this output), *fail* (it certainly did not take effect) or *info*
/// (unknown: the client timed out, the node crashed); an invocation with no end at all counts
/// as *info*.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HistoryEvent<I, O> {
    /// A client sent a request.
    Invoke {
        /// Operation id, unique within the history; the completion carries the same id.
        id: u64,
        /// The client (one client has at most one operation in flight).
        client: u64,
        /// Timestamp (virtual time in a simulation, monotonic nanoseconds in a real cluster).
        time: u64,
        /// Wall-clock time in nanoseconds since the Unix epoch, when recorded from a real
        /// cluster (for lining events up with logs; the checker uses `time`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wall_ns: Option<u64>,
        /// What the client asked.
        input: I,
    },
    /// The operation took effect and returned `output`.
    Ok {
        /// The operation's id.
        id: u64,
        /// Timestamp of the answer.
        time: u64,
        /// Wall-clock time, if recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wall_ns: Option<u64>,
        /// What the system answered.
        output: O,
    },
    /// The operation certainly did not take effect (rejected, node down before it was sent).
    Fail {
        /// The operation's id.
        id: u64,
        /// Timestamp of the answer.
        time: u64,
        /// Wall-clock time, if recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wall_ns: Option<u64>,
    },
    /// The client does not know whether the operation took effect (timeout, crash). It may take
    /// effect at any time after its invocation, even after this event.
    Info {
        /// The operation's id.
        id: u64,
        /// Timestamp at which the client gave up.
        time: u64,
        /// Wall-clock time, if recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wall_ns: Option<u64>,
    },
}

impl<I, O> HistoryEvent<I, O> {
    /// The operation id the event belongs to.
    pub fn id(&self) -> u64 {
        match self {
            HistoryEvent::Invoke { id, .. }
            | HistoryEvent::Ok { id, .. }
            | HistoryEvent::Fail { id, .. }
            | HistoryEvent::Info { id, .. } => *id,
        }
    }

    /// The event's timestamp.
    pub fn time(&self) -> u64 {
        match self {
            HistoryEvent::Invoke { time, .. }
            | HistoryEvent::Ok { time, .. }
            | HistoryEvent::Fail { time, .. }
            | HistoryEvent::Info { time, .. } => *time,
        }
    }
}

/// Why a history could not be read or is malformed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A line is not a valid event.
    #[error("line {line}: {message}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A line is longer than [`HISTORY_LINE_BYTES_MAX`].
    #[error("line {line} is longer than {limit} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Two invocations share an id.
    #[error("operation {0} is invoked twice")]
    DuplicateInvoke(u64),
    /// A completion has no earlier invocation.
    #[error("operation {0} completes but was never invoked")]
    CompletionWithoutInvoke(u64),
    /// An operation completes twice.
    #[error("operation {0} completes twice")]
    DuplicateCompletion(u64),
    /// A completion is timestamped before its invocation.
    #[error("operation {id} completes at {completed} before its invocation at {invoked}")]
    CompletionBeforeInvoke {
        /// The operation.
        id: u64,
        /// Invocation time.
        invoked: u64,
        /// Completion time.
        completed: u64,
    },
}

/// A history: events in the order they were recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<I, O> {
    /// The events.
    pub events: Vec<HistoryEvent<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        Self { events: Vec::new() }
    }
}

/// One operation of a history, its invocation paired with its completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The operation's id.
    pub id: u64,
    /// The client.
    pub client: u64,
    /// Invocation time.
    pub call: u64,
    /// Completion time; `None` when the outcome is unknown (the operation may take effect at
    /// any point after `call`, forever).
    pub ret: Option<u64>,
    /// What the client asked.
    pub input: I,
    /// What the system answered; `None` when unknown.
    pub output: Option<O>,
}

/// How the caller of [`History::from_sim`] classifies a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion<O> {
    /// The operation took effect with this output.
    Ok(O),
    /// The operation certainly did not take effect (e.g. "not the leader, not applied").
    Fail,
    /// The response does not say whether it took effect.
    Unknown,
}

impl<I, O> History<I, O> {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pairs invocations with completions. Operations that failed are left out (they did not
    /// happen); operations that ended with `info`, or never ended, are open-ended.
    pub fn operations(&self) -> Result<Vec<Operation<I, O>>, HistoryError>
    where
        I: Clone,
        O: Clone,
    {
        let mut ops: Vec<Option<Operation<I, O>>> = Vec::new();
        let mut index: BTreeMap<u64, usize> = BTreeMap::new();
        let mut done: BTreeSet<u64> = BTreeSet::new();
        for e in &self.events {
            match e {
                HistoryEvent::Invoke {
                    id,
                    client,
                    time,
                    input,
                    ..
                } => {
                    if index.contains_key(id) {
                        return Err(HistoryError::DuplicateInvoke(*id));
                    }
                    index.insert(*id, ops.len());
                    ops.push(Some(Operation {
                        id: *id,
                        client: *client,
                        call: *time,
                        ret: None,
                        input: input.clone(),
                        output: None,
                    }));
                }
                HistoryEvent::Ok { id, time, .. }
                | HistoryEvent::Fail { id, time, .. }
                | HistoryEvent::Info { id, time, .. } => {
                    let Some(&i) = index.get(id) else {
                        return Err(HistoryError::CompletionWithoutInvoke(*id));
                    };
                    if !done.insert(*id) {
                        return Err(HistoryError::DuplicateCompletion(*id));
                    }
                    let slot = &mut ops[i];
                    let Some(op) = slot.as_mut() else {
                        return Err(HistoryError::DuplicateCompletion(*id));
                    };
                    if *time < op.call {
                        return Err(HistoryError::CompletionBeforeInvoke {
                            id: *id,
                            invoked: op.call,
                            completed: *time,
                        });
                    }
                    match e {
                        HistoryEvent::Ok { output, .. } => {
                            op.ret = Some(*time);
                            op.output = Some(output.clone());
                        }
                        HistoryEvent::Fail { .. } => *slot = None,
                        _ => {} // info: stays open-ended
                    }
                }
            }
        }
        Ok(ops.into_iter().flatten().collect())
    }

    /// Builds a history from a simulation's client history. `input` maps a request to the
    /// checker's input (`None` leaves the operation out, e.g. a request the model does not
    /// cover); `output` classifies a response. Crashed, timed-out and pending requests become
    /// `info` (unknown), requests sent to a down node become `fail`.
    pub fn from_sim<N, FI, FO>(ops: &[ClientOp<N>], mut input: FI, mut output: FO) -> Self
    where
        N: Node,
        FI: FnMut(&N::Request) -> Option<I>,
        FO: FnMut(&N::Request, &N::Response) -> Completion<O>,
    {
        // Events in time order: invocations and completions interleaved.
        let mut timed: Vec<(u64, u8, usize, HistoryEvent<I, O>)> = Vec::new();
        for (seq, op) in ops.iter().enumerate() {
            let Some(i) = input(&op.request) else {
                continue;
            };
            let id = op.id.0;
            timed.push((
                op.invoked_at,
                0,
                seq,
                HistoryEvent::Invoke {
                    id,
                    client: op.client,
                    time: op.invoked_at,
                    wall_ns: None,
                    input: i,
                },
            ));
            let end = op.completed_at.unwrap_or(op.invoked_at);
            let completion = match &op.outcome {
                Outcome::Response(r) => match output(&op.request, r) {
                    Completion::Ok(o) => Some(HistoryEvent::Ok {
                        id,
                        time: end,
                        wall_ns: None,
                        output: o,
                    }),
                    Completion::Fail => Some(HistoryEvent::Fail {
                        id,
                        time: end,
                        wall_ns: None,
                    }),
                    Completion::Unknown => Some(HistoryEvent::Info {
                        id,
                        time: end,
                        wall_ns: None,
                    }),
                },
                Outcome::NodeDown => Some(HistoryEvent::Fail {
                    id,
                    time: end,
                    wall_ns: None,
                }),
                Outcome::Crashed | Outcome::TimedOut => Some(HistoryEvent::Info {
                    id,
                    time: end,
                    wall_ns: None,
                }),
                Outcome::Pending => None,
            };
            if let Some(c) = completion {
                timed.push((end, 1, seq, c));
            }
        }
        timed.sort_by_key(|(t, kind, seq, _)| (*t, *kind, *seq));
        Self {
            events: timed.into_iter().map(|(_, _, _, e)| e).collect(),
        }
    }
}

impl<I: Serialize, O: Serialize> History<I, O> {
    /// Writes the history as JSON lines (one event per line).
    pub fn write_json_lines<W: Write>(&self, mut w: W) -> Result<(), HistoryError> {
        for e in &self.events {
            serde_json::to_writer(&mut w, e).map_err(|e| HistoryError::Parse {
                line: 0,
                message: e.to_string(),
            })?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The history as JSON lines.
    pub fn to_json_lines(&self) -> String {
        let mut buf = Vec::new();
        // Writing to a Vec cannot fail, and serializing plain data cannot either.
        let _ = self.write_json_lines(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl<I: DeserializeOwned, O: DeserializeOwned> History<I, O> {
    /// Reads a history from JSON lines. Blank lines are skipped; a malformed line is an error
    /// naming its number.
    pub fn read_json_lines<R: BufRead>(r: R) -> Result<Self, HistoryError> {
        let mut events = Vec::new();
        let mut r = r;
        // A line of exactly the limit is accepted; one byte more is refused.
        let mut line = Vec::new();
        let mut number = 0usize;
        loop {
            line.clear();
            number += 1;
            // Read at most the limit plus one byte, so an endless line is refused, not buffered.
            let mut limited = std::io::Read::take(&mut r, HISTORY_LINE_BYTES_MAX as u64 + 1);
            let read = limited.read_until(b'\n', &mut line)?;
            if read == 0 {
                break;
            }
            let content = line.len() - usize::from(line.last() == Some(&b'\n'));
            if content > HISTORY_LINE_BYTES_MAX {
                return Err(HistoryError::LineTooLong {
                    line: number,
                    limit: HISTORY_LINE_BYTES_MAX,
                });
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let e = serde_json::from_str(text).map_err(|e| HistoryError::Parse {
                line: number,
                message: e.to_string(),
            })?;
            events.push(e);
        }
        Ok(Self { events })
    }

    /// Reads a history from a string of JSON lines.
    pub fn from_json_lines(text: &str) -> Result<Self, HistoryError> {
        Self::read_json_lines(text.as_bytes())
    }
}

struct RecorderInner<I, O> {
    history: History<I, O>,
    next_id: u64,
}

/// Records a history from a real cluster: call [`Recorder::invoke`] just before sending a
/// request and [`Recorder::ok`], [`Recorder::fail`] or [`Recorder::info`] when its outcome is
/// known. Clones share one history, so concurrent clients (threads or tasks) can each hold one.
/// Timestamps are monotonic nanoseconds since the recorder was created; wall-clock time is kept
/// alongside.
pub struct Recorder<I, O> {
    start: Instant,
    inner: Arc<Mutex<RecorderInner<I, O>>>,
}

impl<I, O> Clone for Recorder<I, O> {
    fn clone(&self) -> Self {
        Self {
            start: self.start,
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<I, O> Default for Recorder<I, O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I, O> Recorder<I, O> {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            inner: Arc::new(Mutex::new(RecorderInner {
                history: History::new(),
                next_id: 1,
            })),
        }
    }

    fn stamp(&self) -> (u64, Option<u64>) {
        let time = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok());
        (time, wall)
    }

    fn with<T>(&self, f: impl FnOnce(&mut RecorderInner<I, O>) -> T) -> T {
        // A poisoned lock only means another client panicked mid-push; the history is still a
        // list of whole events.
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Records that `client` sends `input`; returns the operation's id.
    pub fn invoke(&self, client: u64, input: I) -> u64 {
        let (time, wall_ns) = self.stamp();
        self.with(|inner| {
            let id = inner.next_id;
            inner.next_id += 1;
            inner.history.events.push(HistoryEvent::Invoke {
                id,
                client,
                time,
                wall_ns,
                input,
            });
            id
        })
    }

    /// Records that operation `id` took effect with `output`.
    pub fn ok(&self, id: u64, output: O) {
        let (time, wall_ns) = self.stamp();
        self.with(|inner| {
            inner.history.events.push(HistoryEvent::Ok {
                id,
                time,
                wall_ns,
                output,
            })
        });
    }

    /// Records that operation `id` certainly did not take effect.
    pub fn fail(&self, id: u64) {
        let (time, wall_ns) = self.stamp();
        self.with(|inner| {
            inner
                .history
                .events
                .push(HistoryEvent::Fail { id, time, wall_ns })
        });
    }

    /// Records that the outcome of operation `id` is unknown (timeout, connection lost).
    pub fn info(&self, id: u64) {
        let (time, wall_ns) = self.stamp();
        self.with(|inner| {
            inner
                .history
                .events
                .push(HistoryEvent::Info { id, time, wall_ns })
        });
    }

    /// A copy of the history recorded so far.
    pub fn history(&self) -> History<I, O>
    where
        I: Clone,
        O: Clone,
    {
        self.with(|inner| inner.history.clone())
    }
}
