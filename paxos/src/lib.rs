//! The `paxos` crate (to be written).
