//! The `raft` crate (to be written).
