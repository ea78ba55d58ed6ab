//! History checkers (feature `sim`).
//!
//! # Guarantees
//!
//! - [`check_kv`] says whether a key-value history (get, put, delete, compare-and-set) is
//!   **linearizable**: whether every operation can be given one instant between its invocation
//!   and its completion such that, in that order, every answer is what a single register per key
//!   would give. Keys are independent, so the history is split by key and each sub-history is
//!   searched on its own (by `porcupine-rs`, a port of Porcupine, the checker etcd uses). When a
//!   key fails, the verdict carries that key's sub-history and the longest prefix that could be
//!   linearized.
//! - Operations whose outcome is unknown (the client timed out, the node crashed, no answer at
//!   all) are **open-ended**: they may take effect at any instant after their invocation, or
//!   never. Operations that certainly failed are left out.
//! - The checker is exact (no false alarms, no missed violations) for histories whose
//!   timestamps order the events; operations whose times touch count as concurrent.
//!
//! # The history format: JSON lines
//!
//! A history is a file with one event per line, in the vocabulary of Jepsen (see
//! [`HistoryEvent`]): `invoke` when a client sends a request, then exactly one of `ok` (took
//! effect, with an output), `fail` (certainly did not take effect) or `info` (unknown); an
//! invocation without a completion counts as `info`. Fields: `id` (the operation, unique),
//! `client` (on `invoke`), `time` (any monotonic unit: virtual time in a simulation, nanoseconds
//! in a real cluster), optional `wall_ns` (Unix-epoch nanoseconds, for lining up with logs),
//! `input` (on `invoke`) and `output` (on `ok`). Key-value inputs and outputs carry their kind
//! in `f`:
//!
//! ```text
//! {"type":"invoke","id":1,"client":1,"time":0,"input":{"f":"put","key":"x","value":"1"}}
//! {"type":"invoke","id":2,"client":2,"time":1,"input":{"f":"get","key":"x"}}
//! {"type":"ok","id":1,"time":5,"output":{"f":"done"}}
//! {"type":"ok","id":2,"time":6,"output":{"f":"value","value":"1"}}
//! {"type":"invoke","id":3,"client":1,"time":7,"input":{"f":"cas","key":"x","expected":"1","new":"2"}}
//! {"type":"info","id":3,"time":20}
//! ```
//!
//! ```
//! use common::check::{check_kv, History, KvInput, KvOutput};
//!
//! let text = r#"
//! {"type":"invoke","id":1,"client":1,"time":0,"input":{"f":"put","key":"x","value":"1"}}
//! {"type":"ok","id":1,"time":5,"output":{"f":"done"}}
//! {"type":"invoke","id":2,"client":2,"time":6,"input":{"f":"get","key":"x"}}
//! {"type":"ok","id":2,"time":8,"output":{"f":"value","value":null}}
//! "#;
//! let history: History<KvInput, KvOutput> = History::from_json_lines(text).unwrap();
//! // The read started after the write ended, yet saw nothing: a stale read.
//! let verdict = check_kv(&history).unwrap();
//! assert!(!verdict.is_linearizable());
//! ```
//!
//! # Checking a history from a real cluster
//!
//! Give every client a clone of one [`Recorder`]: call [`Recorder::invoke`] right before
//! sending a request, and [`Recorder::ok`] with the answer, [`Recorder::fail`] when the
//! system says the request was not applied (e.g. "not the leader", before it was proposed) or
//! [`Recorder::info`] on a timeout or a lost connection (never `fail` then: the request may
//! still be applied). Timestamps come from one monotonic clock, so clients in one process give a
//! sound history; with clients on several machines, record them in one process or widen each
//! operation's interval by the clocks' error bound. Then check it, or save it as JSON lines and
//! check it later:
//!
//! ```
//! use common::check::{check_kv, History, KvInput, KvOutput, Recorder};
//!
//! let recorder: Recorder<KvInput, KvOutput> = Recorder::new();
//! let id = recorder.invoke(1, KvInput::Put { key: "x".into(), value: "1".into() });
//! // ... send it to the cluster, wait for the answer ...
//! recorder.ok(id, KvOutput::Done);
//! let lost = recorder.invoke(2, KvInput::Put { key: "x".into(), value: "2".into() });
//! recorder.info(lost); // timed out: maybe applied
//!
//! let mut file = Vec::new(); // a std::fs::File in practice
//! recorder.history().write_json_lines(&mut file).unwrap();
//! let history: History<KvInput, KvOutput> = History::read_json_lines(&file[..]).unwrap();
//! assert!(check_kv(&history).unwrap().is_linearizable());
//! ```
//!
//! A simulation's client history converts with [`History::from_sim`].
//!
//! # Where `porcupine-rs` 0.3 falls short, and what this module does about it
//!
//! - It has no notion of an operation that never returned; such operations are given the
//!   return time `i64::MAX` (after every other event), which its search treats correctly.
//! - Checking several partitions at once spawns one OS thread per partition, all at once (a
//!   history with thousands of keys would start thousands of threads); this module splits by key
//!   itself and checks the keys one after another on the calling thread.
//! - Its event-based entry points panic on a completion without an invocation; this module pairs
//!   events itself ([`History::operations`]) and reports malformed histories as
//!   [`HistoryError`]s.
//! - Its time limit is wall-clock (a verdict that depends on the machine); it is opt-in here
//!   ([`CheckOptions::timeout_per_key`]).
//! - It declares criterion, crossbeam, rand 0.10, regex and paste as normal dependencies, which
//!   anyone enabling the `sim` feature compiles; acceptable for a test-only feature.

pub mod atomic;
pub mod history;
pub mod kv;

pub use history::{
    Completion, History, HistoryError, HistoryEvent, Operation, Recorder, HISTORY_LINE_BYTES_MAX,
};
pub use kv::{
    check_kv, check_kv_with, CheckOptions, KvInput, KvModel, KvOutput, KvStep, KvViolation, Verdict,
};
