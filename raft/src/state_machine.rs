//! The application a Raft log drives.

use std::fmt::Debug;

use serde::{de::DeserializeOwned, Serialize};

/// A deterministic state machine replicated by Raft.
///
/// Every node applies the same committed commands in the same order (state machine safety,
/// §5.4.3), so every node's state machine goes through the same states. `apply` must therefore be
/// deterministic: no clocks, no randomness, no IO whose result can differ between nodes.
pub trait StateMachine: Default + Send + 'static {
    /// A command written to the log.
    type Command: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + 'static;
    /// A read-only query, answered without writing to the log.
    type Query: Clone + Debug + Send + 'static;
    /// What applying a command or answering a query returns.
    type Output: Clone + Debug + PartialEq + Send + 'static;

    /// Applies one committed command.
    fn apply(&mut self, command: &Self::Command) -> Self::Output;

    /// Answers a query from the current state.
    fn query(&self, query: &Self::Query) -> Self::Output;

    /// Serializes the whole state.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the state with a snapshot's. The bytes came from disk or the network: a
    /// malformed snapshot is an error, never a panic.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;

    /// The approximate size of a command in bytes, for the flow-control limits
    /// ([`crate::Config::append_bytes_max`], [`crate::Config::uncommitted_bytes_max`]).
    fn command_bytes(command: &Self::Command) -> usize {
        let _ = command;
        std::mem::size_of::<Self::Command>()
    }
}
