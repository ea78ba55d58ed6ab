//! Raft consensus (Ongaro and Ousterhout, "In Search of an Understandable Consensus
//! Algorithm", 2014, and Ongaro's thesis, 2014) as a sans-IO core.
//!
//! # Guarantees
//!
//! - **Election safety** (§5.2): at most one leader per term.
//! - **Log matching** (§5.3): two logs holding an entry with the same index and term are
//!   identical up to it.
//! - **Leader completeness** (§5.4): a committed entry is in the log of every later leader.
//! - **State machine safety** (§5.4.3): every node applies the same command at a given index.
//! - A proposal is answered [`Response::Applied`] only once its entry is committed and applied;
//!   nothing is acknowledged before it is durable (the records of a step are synced before its
//!   messages and responses leave, the contract of [`common::Node`]).
//! - Reads ([`Request::Read`]) are linearizable: ReadIndex, or a lease under a documented clock
//!   assumption (see [`Config::lease_reads`]).
//!
//! # Using the core
//!
//! [`RaftNode`] implements [`common::Node`]: feed it messages, client requests and ticks, and
//! release the effects it puts in an [`common::Outbox`]: first make its records durable, then
//! send its messages and deliver its responses. The [`testing::Cluster`] harness does exactly
//! that in memory:
//!
//! ```
//! use raft::kv::{KvCommand, KvOutput, KvStore};
//! use raft::testing::Cluster;
//! use raft::{Request, Response};
//!
//! // Three nodes, seeded: the same seed gives the same run.
//! let mut cluster = Cluster::<KvStore>::new(3, 42);
//! let leader = cluster.run_until_leader(1_000).expect("a leader is elected");
//!
//! let put = KvCommand::Put { key: "x".into(), value: "1".into() };
//! let response = cluster.request(leader, Request::Propose(put), 1_000);
//! assert!(matches!(response, Some(Response::Applied { output: KvOutput::Value(Some(_)), .. })));
//! ```

pub mod config;
pub mod core;
pub mod error;
pub mod kv;
pub mod message;
pub mod state_machine;
pub mod testing;

pub use crate::config::Config;
pub use crate::core::RaftNode;
pub use crate::error::{RaftError, RecoverError};
pub use crate::message::{
    Entry, Event, LogIndex, Message, Metrics, Payload, PeerProgress, Record, Rejected,
    ReplicationState, Request, Response, Role, SnapshotMeta, Term,
};
pub use crate::state_machine::StateMachine;
