//! The shared foundation of the workspace's protocol crates.
//!
//! Every protocol (`raft`, `paxos`, `twopc`, `threepc`) is written as a **sans-IO core**: a pure,
//! deterministic state machine implementing [`Node`]. This crate holds what the cores share:
//!
//! - [`node`]: the [`Node`] trait, its [`Outbox`] of effects and the contract a driver follows;
//! - [`id`]: node and request ids and the protocol tags carried in every frame;
//! - [`codec`]: the [`Codec`](codec::Codec) trait over serde formats and the versioned frame envelope;
//! - [`storage`]: the [`Storage`] trait for a node's records and an in-memory implementation;
//! - [`snapshot`]: snapshot files of any size, streamed: the [`SnapshotStore`] trait, the
//!   writer and reader (`stream.rs`), receiving chunks (`incoming.rs`), the in-memory store
//!   (`mem.rs`), the file store (`file.rs`, feature `wal`) and retention (`retention.rs`);
//! - [`state_machine`] and [`kv_store`]: the state machine the consensus crates run, and the
//!   small key-value one they share;
//! - [`txn`]: what the atomic-commit protocols share (the async `TxClient` needs `runtime`);
//! - [`groups`]: many groups of one protocol in one process, as one [`Node`]: coalesced
//!   messages, one shared log with compaction, per-group snapshots;
//! - [`retry`]: the leader-following retry policy every client shares;
//! - [`rng`]: seeded randomness for cores;
//! - [`wal`] (feature `wal`, implied by `runtime`): the durable, segmented write-ahead log
//!   implementing [`Storage`]: the log and its write path (`mod.rs`), opening and recovery
//!   (`recovery.rs`), its reports (`report.rs`), the byte layout (`format.rs`) and its limits
//!   (`config.rs`);
//! - [`transport`] (feature `runtime`): the [`Transport`](transport::Transport) trait, an
//!   in-memory network with faults (`memory.rs`), mutual TLS (`tls.rs`) and TCP (`tcp/`: its
//!   configuration, counters, handshake, socket layer, and the inbound and outbound sides);
//! - [`driver`] (feature `runtime`): the tokio driver that runs any core over any transport and
//!   storage: its configuration, counters, the [`NodeHandle`](driver::NodeHandle) clients use,
//!   the node task (`runner.rs`) and where records are made durable (`persistence.rs`);
//! - `demo` (feature `demo`): a tiny replicated counter that exercises all of the above;
//! - `sim` and `check` (feature `sim`): the deterministic simulator (`sim/`: configuration,
//!   event loop, workload, faults, network, invariant view, seed runner, trace and sequence
//!   diagrams) and the history checkers;
//! - `testing` (feature `testing`, implies `runtime`): conformance suites for storage,
//!   snapshot stores, state machines and transports;
//! - `pump` (feature `pump`): a cluster of any core pumped by hand, for tests and benches;
//! - `fuzz` (feature `fuzz`): what the fuzz targets share.
//!
//! # Features
//!
//! | feature    | default | what it adds                                                       |
//! | ---------- | ------- | ------------------------------------------------------------------ |
//! | `runtime`  | yes     | `driver`, `transport`, `txn::TxClient`, and `wal`; tokio, sockets   |
//! | `wal`      | via `runtime` | `wal` and `snapshot::FileSnapshotStore` (sync file I/O, no tokio) |
//! | `demo`     | no      | `demo`, the replicated counter                                     |
//! | `sim`      | no      | `sim` and `check`                                                  |
//! | `postcard` | no      | `codec::Postcard`                                                  |
//! | `turmoil`  | no      | the TCP transport over turmoil's network (implies `runtime`)       |
//! | `fuzz`     | no      | `fuzz`                                                             |
//! | `pump`     | no      | `pump`, the hand-pumped cluster (sans-IO, no tokio)                |
//! | `testing`  | no      | `testing`, TLS test certificates (implies `runtime` and `pump`)    |
//!
//! With `default-features = false` the crate is the sans-IO foundation alone: a core, its
//! codec, the simulator and the checkers build without tokio, sockets or file I/O.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod codec;
#[cfg(feature = "demo")]
#[cfg_attr(docsrs, doc(cfg(feature = "demo")))]
pub mod demo;
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub mod driver;
pub mod groups;
pub mod id;
pub mod kv_store;
pub mod node;
#[cfg(feature = "pump")]
#[cfg_attr(docsrs, doc(cfg(feature = "pump")))]
pub mod pump;
pub mod retry;
pub mod rng;
pub mod snapshot;
pub mod state_machine;
pub mod storage;
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub mod transport;
pub mod txn;
#[cfg(feature = "wal")]
#[cfg_attr(docsrs, doc(cfg(feature = "wal")))]
pub mod wal;

#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod check;
#[cfg(feature = "fuzz")]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzz")))]
pub mod fuzz;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod sim;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use id::{protocol, NodeId, RequestId};
pub use node::{Effects, Node, Outbox, Persist};
pub use rng::DetRng;
pub use snapshot::{SnapshotError, SnapshotStore};
pub use state_machine::{Setup, StateMachine, StateMachineError};
pub use storage::{MemStorage, Storage, StorageError};
