//! The small replicated key-value store of the crate's tutorial, simulations (their client
//! histories are checked for linearizability) and benchmarks: [`common::kv_store`], the same
//! one `paxos` uses, so tests and diagrams read alike on both protocols. Writes answer the
//! previous value, reads the current one.

pub use common::kv_store::{KvCommand, KvOutput, KvQuery, KvStore, KV_FRAME_BYTES_MAX};
