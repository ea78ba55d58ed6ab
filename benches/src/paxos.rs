//! Shootout adapter: paxos (to be written).
