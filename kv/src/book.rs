//! The cluster's address book: where each replica added at run time is reached, and the ids
//! removed for good. It is replicated state inside [`KvMachine`](crate::KvMachine); the
//! [`BookWatch`] hook publishes each change to the node's own server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::NodeId;
use serde::{Deserialize, Serialize};

/// Longest address (`host:port`) the address book records.
pub const ADDRESS_BYTES_MAX: usize = 256;
/// Most replicas the address book records (registered and removed ones together).
pub const ADDRESS_BOOK_NODES_MAX: usize = 1_024;

/// Where one replica is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddrs {
    /// Where the other replicas reach it (`host:port`, resolved by each node when used).
    pub peer: String,
    /// Where clients reach it (`host:port`).
    pub client: String,
}

/// The replicas added at run time and where they are reached, plus the ids removed for good.
/// The replicas a cluster starts with are in each node's configuration instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressBook {
    /// Registered replicas.
    pub nodes: BTreeMap<NodeId, MemberAddrs>,
    /// Replicas removed for good: never registered again, and dropped from every transport.
    pub removed: BTreeSet<NodeId>,
}

/// Where [`KvMachine`](crate::KvMachine) publishes its address book after each change (not
/// replicated state: each node's own hook). Clones share the channel.
#[derive(Clone, Default)]
pub struct BookWatch(pub(crate) Option<Arc<tokio::sync::watch::Sender<AddressBook>>>);

impl BookWatch {
    pub(crate) fn publish(&self, book: &AddressBook) {
        if let Some(tx) = &self.0 {
            tx.send_replace(book.clone());
        }
    }
}

impl std::fmt::Debug for BookWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BookWatch(on)"
        } else {
            "BookWatch(off)"
        })
    }
}

/// Every machine's watch is equal: it is not part of the replicated state.
impl PartialEq for BookWatch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for BookWatch {}
