//! Identifiers shared by every protocol.

use serde::{Deserialize, Serialize};

/// Identifies one node (replica, acceptor, coordinator, participant) of a cluster.
///
/// A plain `u64`: every protocol in the workspace orders nodes by id (Paxos ballots break ties with
/// it, 3PC elects the lowest live id as backup coordinator), so ids must be totally ordered and
/// cheap to copy and encode.
pub type NodeId = u64;

/// Identifies one client request handed to a node through [`Node::handle_request`](crate::Node::handle_request).
///
/// The driver (or simulator) allocates it; the core answers the request by passing the same id to
/// [`Outbox::respond`](crate::Outbox::respond), possibly many steps later (a Raft proposal is
/// answered when its entry is applied).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "req#{}", self.0)
    }
}

/// Protocol tags carried in every frame's envelope, so that a node rejects a frame meant for
/// another protocol with a clear error instead of misreading it.
pub mod protocol {
    /// The demo broadcast counter in `common::demo` (feature `demo`).
    pub const DEMO: u16 = 1;
    /// The `raft` crate.
    pub const RAFT: u16 = 2;
    /// The `paxos` crate.
    pub const PAXOS: u16 = 3;
    /// The `twopc` crate.
    pub const TWOPC: u16 = 4;
    /// The `threepc` crate.
    pub const THREEPC: u16 = 5;
}
