//! Shared code of the benchmarks and the `shootout` binary.

pub mod demo;
pub mod hashring;
pub mod paxos;
pub mod raft;
pub mod threepc;
pub mod twopc;
