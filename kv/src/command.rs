//! The store's vocabulary: the operations ([`KvOp`]) a client's command ([`KvCommand`]) carries,
//! the queries ([`KvQuery`]), the outputs ([`KvOutput`]), and the limits on their sizes.

use common::NodeId;
use serde::{Deserialize, Serialize};

use crate::book::ADDRESS_BYTES_MAX;

/// Longest key or value accepted, in bytes; longer writes are refused ([`KvOutput::TooLarge`]).
pub const ITEM_BYTES_MAX: usize = 64 * 1024;

/// One change to the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Sets `key` to `value`; outputs the previous value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Removes `key`; outputs the previous value.
    Delete {
        /// The key.
        key: String,
    },
    /// Compare-and-set: if `key`'s value is `expected` (`None`: absent), sets it to `new`
    /// (`None`: delete). Outputs whether it swapped and the value after.
    Cas {
        /// The key.
        key: String,
        /// The value the key must have.
        expected: Option<String>,
        /// The value to set.
        new: Option<String>,
    },
    /// Records where replica `id` is reached, in the [`AddressBook`](crate::AddressBook);
    /// outputs the previous peer address. Refused ([`KvOutput::Refused`]) for an id removed
    /// before. Written by `member add`; a node refuses it as a plain client write.
    Register {
        /// The replica.
        id: NodeId,
        /// Where the other replicas reach it (`host:port`).
        peer: String,
        /// Where clients reach it (`host:port`).
        client: String,
    },
    /// Forgets replica `id` for good (its id is never registered again); outputs its previous
    /// peer address. Written by `member remove`; a node refuses it as a plain client write.
    Deregister {
        /// The replica.
        id: NodeId,
    },
}

impl KvOp {
    /// The key the operation changes (empty for the address book's operations).
    pub fn key(&self) -> &str {
        match self {
            KvOp::Put { key, .. } | KvOp::Delete { key } | KvOp::Cas { key, .. } => key,
            KvOp::Register { .. } | KvOp::Deregister { .. } => "",
        }
    }

    /// Whether this changes the address book rather than the data.
    pub fn is_membership(&self) -> bool {
        matches!(self, KvOp::Register { .. } | KvOp::Deregister { .. })
    }

    pub(crate) fn too_large(&self) -> bool {
        let big = |s: &str| s.len() > ITEM_BYTES_MAX;
        match self {
            KvOp::Put { key, value } => big(key) || big(value),
            KvOp::Delete { key } => big(key),
            KvOp::Cas { key, expected, new } => {
                big(key) || expected.as_deref().is_some_and(big) || new.as_deref().is_some_and(big)
            }
            KvOp::Register { peer, client, .. } => {
                peer.len() > ADDRESS_BYTES_MAX || client.len() > ADDRESS_BYTES_MAX
            }
            KvOp::Deregister { .. } => false,
        }
    }
}

/// A client's request: `op`, as sequence number `seq` of client `client`. A client numbers its
/// requests 1, 2, 3, … and has one in flight at a time; a retry reuses the number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    /// The client's id, unique among clients.
    pub client: u64,
    /// The request's sequence number (from 1).
    pub seq: u64,
    /// What to do.
    pub op: KvOp,
}

/// A read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvQuery {
    /// The value of one key.
    Get(String),
    /// The keys starting with `prefix`, in order, at most `limit` of them (capped at
    /// [`SCAN_LIMIT_MAX`]).
    Scan {
        /// The keys' common prefix (empty: every key).
        prefix: String,
        /// Most entries returned.
        limit: usize,
    },
}

/// Most entries one scan returns, whatever its limit.
pub const SCAN_LIMIT_MAX: usize = 1_000;
/// Most key and value bytes one scan returns (one entry at least): with the frame's overhead
/// the answer stays within a client frame (`net::CLIENT_FRAME_BYTES_MAX`).
pub const SCAN_BYTES_MAX: usize = 2 * ITEM_BYTES_MAX;

/// What a command or query returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutput {
    /// A value: the previous one for put and delete, the current one for a read.
    Value(Option<String>),
    /// The result of a compare-and-set.
    Cas {
        /// Whether the value matched and was replaced.
        swapped: bool,
        /// The value after the operation.
        current: Option<String>,
    },
    /// The sequence number is older than the client's last applied one (or its session was
    /// forgotten): the request was not applied now. Its original answer is lost.
    Stale,
    /// A key or value exceeds [`ITEM_BYTES_MAX`]; nothing was applied.
    TooLarge,
    /// The state machine refused the command, for the reason given; nothing was applied.
    Refused(String),
    /// The answer to a scan: entries in key order, and whether more keys match.
    Entries {
        /// `(key, value)` pairs.
        entries: Vec<(String, String)>,
        /// More keys match than were returned.
        more: bool,
    },
}
