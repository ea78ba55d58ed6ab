//! The shared foundation of the workspace's protocol crates.
//!
//! Every protocol (`raft`, `paxos`, `twopc`, `threepc`) is written as a **sans-IO core**: a pure,
//! deterministic state machine implementing [`Node`]. This crate holds what the cores share:
//!
//! - [`node`]: the [`Node`] trait, its [`Outbox`] of effects and the contract a driver follows;
//! - [`codec`]: the [`Codec`](codec::Codec) trait over serde formats and the versioned frame envelope;
//! - [`storage`]: the [`Storage`] trait for a node's records and an in-memory implementation;
//! - [`wal`]: the durable, segmented write-ahead log implementing [`Storage`];
//! - [`transport`]: the [`Transport`](transport::Transport) trait, an in-memory network with faults and TCP;
//! - [`driver`]: the tokio driver that runs any core over any transport and storage;
//! - [`demo`]: a tiny replicated counter that exercises all of the above;
//! - `sim` and `check` (feature `sim`): the deterministic simulator, history checkers and
//!   sequence diagrams;
//! - `pump` (feature `testing`): a cluster of any core pumped by hand, for tests and benches;
//! - [`retry`]: the leader-following retry policy every client shares;
//! - [`rng`]: seeded randomness for cores.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod codec;
pub mod demo;
pub mod driver;
pub mod id;
pub mod kv_store;
pub mod node;
#[cfg(feature = "testing")]
pub mod pump;
pub mod retry;
pub mod rng;
pub mod snapshot;
pub mod state_machine;
pub mod storage;
pub mod transport;
pub mod txn;
pub mod wal;

#[cfg(feature = "sim")]
pub mod check;
#[cfg(feature = "fuzz")]
pub mod fuzz;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "testing")]
pub mod testing;

pub use id::{protocol, NodeId, RequestId};
pub use node::{Effects, Node, Outbox, Persist};
pub use rng::DetRng;
pub use snapshot::{SnapshotError, SnapshotStore};
pub use state_machine::{Setup, StateMachine, StateMachineError};
pub use storage::{MemStorage, Storage, StorageError};
