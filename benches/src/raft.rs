//! Shootout adapter: raft (to be written).
