//! A replicated key-value store: **one** state machine ([`KvMachine`]) that runs unchanged on
//! Raft and on Multi-Paxos, through the one state-machine trait both share
//! ([`common::StateMachine`]).
//!
//! # Guarantees
//!
//! - **Exactly-once writes.** Every command carries its client's id and a sequence number
//!   ([`KvCommand`]). The state machine keeps, per client, the last sequence number it applied
//!   and that command's output (a session table, as in the Raft thesis §6.3). A retried command
//!   (same client, same sequence number) is answered with the remembered output and **not
//!   applied again**; an older one is refused as [`KvOutput::Stale`]. Because the table is part
//!   of the replicated state (and of snapshots), every replica deduplicates the same way, and a
//!   retry sent to a new leader after a crash is still caught.
//! - **Deterministic.** Every replica applying the same commands in the same order reaches the
//!   same map and the same table, including which sessions are evicted when
//!   [`SESSIONS_MAX`] is reached (the least recently used, by a counter of applied commands).
//! - **Linearizable reads** come from the protocols ([`KvQuery`] is answered by the leader after
//!   it confirmed its leadership), not from this module.
//! - **The cluster's address book is replicated state.** Where each replica added at run time
//!   is reached ([`AddressBook`]) is written through the log by [`KvOp::Register`] and
//!   [`KvOp::Deregister`] (`kv-client member add` and `member remove`), so every replica, and
//!   every replica restarted or caught up by snapshot, knows the same peers. A removed id is
//!   never registered again. A watcher ([`KvMachine::with_book_watch`]) sees every change: the
//!   server uses it to add and drop transport peers.
//! - **Snapshots stream.** [`common::StateMachine::snapshot`] writes a header frame (sessions,
//!   counters) and then one frame per key into the snapshot file, so a store of any size is
//!   never one buffer; [`common::StateMachine::restore`] reads them back with a size limit per
//!   frame and reports a malformed or truncated snapshot as a typed error, never a panic, and
//!   without touching the state.
//!
//! ```
//! use kv::{KvCommand, KvMachine, KvOp, KvOutput};
//! use raft::StateMachine;
//!
//! let mut kv = KvMachine::default();
//! let put = KvCommand { client: 7, seq: 1, op: KvOp::Put { key: "x".into(), value: "1".into() } };
//! assert_eq!(kv.apply(1, &put), KvOutput::Value(None)); // the previous value
//! // The same request again (a retry after a lost answer): same answer, applied once.
//! assert_eq!(kv.apply(2, &put), KvOutput::Value(None));
//! let cas = KvCommand {
//!     client: 7,
//!     seq: 2,
//!     op: KvOp::Cas { key: "x".into(), expected: Some("1".into()), new: Some("2".into()) },
//! };
//! assert_eq!(kv.apply(3, &cas), KvOutput::Cas { swapped: true, current: Some("2".into()) });
//! assert_eq!(kv.get("x"), Some("2"));
//! ```
//!
//! # Where things are
//!
//! - `machine.rs`: [`KvMachine`], its session table and its streaming snapshot (unit tests in
//!   `machine/tests.rs`, with the machine replicated in process by both protocols);
//! - `command.rs`: the commands, queries and outputs ([`KvCommand`], [`KvQuery`], [`KvOutput`])
//!   and the limits on their sizes;
//! - `book.rs`: the replicated [`AddressBook`] and the [`BookWatch`] that publishes it;
//! - [`net`]: the client protocol, [`net::KvClient`] and the [`net::SharedConnections`] many
//!   clients share;
//! - [`server`]: one replica as a service (consensus node, client port, membership);
//! - [`config`]: the TOML file and its merge with the environment and the flags;
//! - [`metrics`]: the Prometheus metrics, the health check and the timed storage;
//! - [`load`]: the recorded load generator;
//! - [`shard`]: the store sharded over many Raft groups by the consistent-hash ring, with
//!   transactions across the groups (its own state machine, client and `kv-shard` binary).

pub mod config;
pub mod load;
pub mod metrics;
pub mod net;
pub mod server;
pub mod shard;

mod book;
mod command;
mod machine;

pub use book::{AddressBook, BookWatch, MemberAddrs, ADDRESS_BOOK_NODES_MAX, ADDRESS_BYTES_MAX};
pub use command::{
    KvCommand, KvOp, KvOutput, KvQuery, ITEM_BYTES_MAX, SCAN_BYTES_MAX, SCAN_LIMIT_MAX,
};
pub use machine::{KvMachine, SESSIONS_MAX};
