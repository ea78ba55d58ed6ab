//! A replicated key-value store: **one** state machine ([`KvMachine`]) that runs unchanged on
//! Raft and on Multi-Paxos, through the one state-machine trait both share
//! ([`common::StateMachine`]).
//!
//! # Guarantees
//!
//! - **Exactly-once writes.** Every command carries its client's id and a sequence number
//!   ([`KvCommand`]). The state machine keeps, per client, the last sequence number it applied
//!   and that command's output (a session table, as in the Raft thesis §6.3). A retried command
//!   (same client, same sequence number) is answered with the remembered output and **not
//!   applied again**; an older one is refused as [`KvOutput::Stale`]. Because the table is part
//!   of the replicated state (and of snapshots), every replica deduplicates the same way, and a
//!   retry sent to a new leader after a crash is still caught.
//! - **Deterministic.** Every replica applying the same commands in the same order reaches the
//!   same map and the same table, including which sessions are evicted when
//!   [`SESSIONS_MAX`] is reached (the least recently used, by a counter of applied commands).
//! - **Linearizable reads** come from the protocols ([`KvQuery`] is answered by the leader after
//!   it confirmed its leadership), not from this module.
//! - **The cluster's address book is replicated state.** Where each replica added at run time
//!   is reached ([`AddressBook`]) is written through the log by [`KvOp::Register`] and
//!   [`KvOp::Deregister`] (`kv-client member add` and `member remove`), so every replica, and
//!   every replica restarted or caught up by snapshot, knows the same peers. A removed id is
//!   never registered again. A watcher ([`KvMachine::with_book_watch`]) sees every change: the
//!   server uses it to add and drop transport peers.
//! - **Snapshots stream.** [`common::StateMachine::snapshot`] writes a header frame (sessions,
//!   counters) and then one frame per key into the snapshot file, so a store of any size is
//!   never one buffer; [`common::StateMachine::restore`] reads them back with a size limit per
//!   frame and reports a malformed or truncated snapshot as a typed error, never a panic, and
//!   without touching the state.
//!
//! ```
//! use kv::{KvCommand, KvMachine, KvOp, KvOutput};
//! use raft::StateMachine;
//!
//! let mut kv = KvMachine::default();
//! let put = KvCommand { client: 7, seq: 1, op: KvOp::Put { key: "x".into(), value: "1".into() } };
//! assert_eq!(kv.apply(1, &put), KvOutput::Value(None)); // the previous value
//! // The same request again (a retry after a lost answer): same answer, applied once.
//! assert_eq!(kv.apply(2, &put), KvOutput::Value(None));
//! let cas = KvCommand {
//!     client: 7,
//!     seq: 2,
//!     op: KvOp::Cas { key: "x".into(), expected: Some("1".into()), new: Some("2".into()) },
//! };
//! assert_eq!(kv.apply(3, &cas), KvOutput::Cas { swapped: true, current: Some("2".into()) });
//! assert_eq!(kv.get("x"), Some("2"));
//! ```

pub mod config;
pub mod load;
pub mod metrics;
pub mod net;
pub mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::Arc;

use common::NodeId;

use common::state_machine::{read_frame, write_frame, StateMachineError};
use serde::{Deserialize, Serialize};

/// Clients remembered by the session table at most; beyond it the least recently used is
/// forgotten. Its later requests are refused as stale rather than risk applying one twice; the
/// one hole left is a retry of a forgotten client's *first* request, which is applied again (a
/// production store registers sessions through the log and expires them explicitly, Raft thesis
/// §6.3).
pub const SESSIONS_MAX: usize = 10_000;
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
    /// Records where replica `id` is reached, in the [`AddressBook`]; outputs the previous
    /// peer address. Refused ([`KvOutput::Refused`]) for an id removed before. Written by
    /// `member add`; a node refuses it as a plain client write.
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

    fn too_large(&self) -> bool {
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

/// Where [`KvMachine`] publishes its address book after each change (not replicated state: each
/// node's own hook). Clones share the channel.
#[derive(Clone, Default)]
pub struct BookWatch(Option<Arc<tokio::sync::watch::Sender<AddressBook>>>);

impl BookWatch {
    fn publish(&self, book: &AddressBook) {
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    seq: u64,
    output: KvOutput,
    /// The value of [`KvMachine::applied`] when this session last applied: orders eviction.
    used_at: u64,
}

/// The replicated store: the map, the session table and the address book.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvMachine {
    map: BTreeMap<String, String>,
    sessions: BTreeMap<u64, Session>,
    /// Commands applied (not counting duplicates): a deterministic clock for eviction.
    applied: u64,
    book: AddressBook,
    watch: BookWatch,
}

impl KvMachine {
    /// An empty store that publishes its address book to `watch` after every change to it
    /// (registration, removal, snapshot restored).
    pub fn with_book_watch(watch: tokio::sync::watch::Sender<AddressBook>) -> Self {
        KvMachine {
            watch: BookWatch(Some(Arc::new(watch))),
            ..KvMachine::default()
        }
    }

    /// The replicas registered at run time and the ids removed for good.
    pub fn address_book(&self) -> &AddressBook {
        &self.book
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// Every key and value.
    pub fn data(&self) -> &BTreeMap<String, String> {
        &self.map
    }

    /// Commands applied, duplicates not counted.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies `command` once per (client, seq); see the module's guarantees.
    pub fn apply_command(&mut self, command: &KvCommand) -> KvOutput {
        match self.sessions.get(&command.client) {
            Some(session) if command.seq == session.seq => return session.output.clone(),
            Some(session) if command.seq < session.seq => return KvOutput::Stale,
            Some(_) => {}
            // A client starts at 1; an unknown client further on had its session forgotten,
            // and this may be a retry of a command already applied: refuse it.
            None if command.seq != 1 => return KvOutput::Stale,
            None => {}
        }
        let output = self.apply_op(&command.op);
        self.applied += 1;
        if !self.sessions.contains_key(&command.client) && self.sessions.len() >= SESSIONS_MAX {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(client, s)| (s.used_at, **client))
                .map(|(client, _)| *client);
            if let Some(oldest) = oldest {
                self.sessions.remove(&oldest);
            }
        }
        self.sessions.insert(
            command.client,
            Session {
                seq: command.seq,
                output: output.clone(),
                used_at: self.applied,
            },
        );
        output
    }

    fn apply_op(&mut self, op: &KvOp) -> KvOutput {
        if op.too_large() {
            return KvOutput::TooLarge;
        }
        match op {
            KvOp::Put { key, value } => {
                KvOutput::Value(self.map.insert(key.clone(), value.clone()))
            }
            KvOp::Delete { key } => KvOutput::Value(self.map.remove(key)),
            KvOp::Register { id, peer, client } => {
                if self.book.removed.contains(id) {
                    return KvOutput::Refused(format!(
                        "node {id} was removed; a removed id is never used again"
                    ));
                }
                if !self.book.nodes.contains_key(id)
                    && self.book.nodes.len() + self.book.removed.len() >= ADDRESS_BOOK_NODES_MAX
                {
                    return KvOutput::Refused(format!(
                        "the address book holds {ADDRESS_BOOK_NODES_MAX} nodes, its limit"
                    ));
                }
                let addrs = MemberAddrs {
                    peer: peer.clone(),
                    client: client.clone(),
                };
                let previous = self.book.nodes.insert(*id, addrs).map(|a| a.peer);
                self.watch.publish(&self.book);
                KvOutput::Value(previous)
            }
            KvOp::Deregister { id } => {
                if !self.book.removed.contains(id)
                    && self.book.nodes.len() + self.book.removed.len() >= ADDRESS_BOOK_NODES_MAX
                    && !self.book.nodes.contains_key(id)
                {
                    return KvOutput::Refused(format!(
                        "the address book holds {ADDRESS_BOOK_NODES_MAX} nodes, its limit"
                    ));
                }
                let previous = self.book.nodes.remove(id).map(|a| a.peer);
                self.book.removed.insert(*id);
                self.watch.publish(&self.book);
                KvOutput::Value(previous)
            }
            KvOp::Cas { key, expected, new } => {
                if self.map.get(key) != expected.as_ref() {
                    return KvOutput::Cas {
                        swapped: false,
                        current: self.map.get(key).cloned(),
                    };
                }
                match new {
                    Some(v) => {
                        self.map.insert(key.clone(), v.clone());
                    }
                    None => {
                        self.map.remove(key);
                    }
                }
                KvOutput::Cas {
                    swapped: true,
                    current: new.clone(),
                }
            }
        }
    }

    fn answer(&self, query: &KvQuery) -> KvOutput {
        match query {
            KvQuery::Get(key) => KvOutput::Value(self.map.get(key).cloned()),
            KvQuery::Scan { prefix, limit } => {
                let limit = (*limit).min(SCAN_LIMIT_MAX);
                // The map is ordered: the keys with a prefix are one contiguous range from it.
                let matching = self
                    .map
                    .range::<str, _>((
                        std::ops::Bound::Included(prefix.as_str()),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(|(k, _)| k.starts_with(prefix.as_str()));
                let mut entries: Vec<(String, String)> = Vec::new();
                let mut bytes = 0usize;
                let mut more = false;
                for (k, v) in matching {
                    let size = k.len() + v.len();
                    if entries.len() == limit
                        || (!entries.is_empty() && bytes + size > SCAN_BYTES_MAX)
                    {
                        more = true;
                        break;
                    }
                    bytes += size;
                    entries.push((k.clone(), v.clone()));
                }
                KvOutput::Entries { entries, more }
            }
        }
    }
}

/// The snapshot's first frame: everything but the map.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    applied: u64,
    sessions: Vec<(u64, Session)>,
    book: AddressBook,
    keys: u64,
}

/// Largest frame of a snapshot: the header holds at most [`SESSIONS_MAX`] sessions, each with
/// an output of at most a scan's size; a pair is at most two items.
const SNAPSHOT_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

impl KvMachine {
    /// Writes the state as a stream: a header frame, then one frame per key (so a snapshot is
    /// never one buffer, whatever the store's size).
    fn write_snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        let header = SnapshotHeader {
            applied: self.applied,
            sessions: self.sessions.iter().map(|(c, s)| (*c, s.clone())).collect(),
            book: self.book.clone(),
            keys: self.map.len() as u64,
        };
        write_frame(out, &header)?;
        for pair in &self.map {
            write_frame(out, &pair)?;
        }
        Ok(())
    }

    /// Reads a snapshot written by [`KvMachine::write_snapshot`]; the state is replaced only
    /// once the whole stream has been read and checked.
    fn read_snapshot(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        let header: SnapshotHeader = read_frame(input, SNAPSHOT_FRAME_BYTES_MAX)?
            .ok_or_else(|| StateMachineError::Malformed("empty kv snapshot".into()))?;
        let mut map = BTreeMap::new();
        while let Some((k, v)) = read_frame::<(String, String)>(input, SNAPSHOT_FRAME_BYTES_MAX)? {
            map.insert(k, v);
        }
        if map.len() as u64 != header.keys {
            return Err(StateMachineError::Malformed(format!(
                "kv snapshot announces {} keys and holds {}",
                header.keys,
                map.len()
            )));
        }
        *self = KvMachine {
            map,
            sessions: header.sessions.into_iter().collect(),
            applied: header.applied,
            book: header.book,
            watch: self.watch.clone(),
        };
        self.watch.publish(&self.book);
        Ok(())
    }
}

/// One implementation serves both protocols: `raft::StateMachine` and `paxos::StateMachine` are
/// the same trait, [`common::StateMachine`].
impl common::StateMachine for KvMachine {
    type Command = KvCommand;
    type Query = KvQuery;
    type Output = KvOutput;

    fn apply(&mut self, _index: u64, command: &KvCommand) -> KvOutput {
        self.apply_command(command)
    }

    fn query(&self, query: &KvQuery) -> KvOutput {
        self.answer(query)
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        self.write_snapshot(out)
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        self.read_snapshot(input)
    }

    fn command_bytes(command: &KvCommand) -> usize {
        let op = &command.op;
        let len = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        16 + match op {
            KvOp::Put { key, value } => key.len() + value.len(),
            KvOp::Delete { key } => key.len(),
            KvOp::Cas { key, expected, new } => key.len() + len(expected) + len(new),
            KvOp::Register { peer, client, .. } => 8 + peer.len() + client.len(),
            KvOp::Deregister { .. } => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(client: u64, seq: u64, op: KvOp) -> KvCommand {
        KvCommand { client, seq, op }
    }

    fn put(key: &str, value: &str) -> KvOp {
        KvOp::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_retried_command_is_applied_once_and_answered_the_same() {
        let mut kv = KvMachine::default();
        let cas = cmd(
            1,
            1,
            KvOp::Cas {
                key: "k".into(),
                expected: None,
                new: Some("a".into()),
            },
        );
        let first = kv.apply_command(&cas);
        assert_eq!(
            first,
            KvOutput::Cas {
                swapped: true,
                current: Some("a".into())
            }
        );
        // Applied again, a CAS expecting "absent" would now fail; the retry gets the first answer.
        assert_eq!(kv.apply_command(&cas), first);
        assert_eq!(kv.applied(), 1);
        // An older request is refused, a newer one applies.
        kv.apply_command(&cmd(1, 2, put("k", "b")));
        assert_eq!(kv.apply_command(&cmd(1, 1, put("k", "z"))), KvOutput::Stale);
        assert_eq!(kv.get("k"), Some("b"));
        // Other clients have their own numbering.
        assert_eq!(
            kv.apply_command(&cmd(2, 1, KvOp::Delete { key: "k".into() })),
            KvOutput::Value(Some("b".into()))
        );
        assert_eq!(kv.get("k"), None);
    }

    #[test]
    fn cas_compares_and_deletes() {
        let mut kv = KvMachine::default();
        kv.apply_command(&cmd(1, 1, put("k", "a")));
        let miss = kv.apply_command(&cmd(
            1,
            2,
            KvOp::Cas {
                key: "k".into(),
                expected: Some("x".into()),
                new: Some("y".into()),
            },
        ));
        assert_eq!(
            miss,
            KvOutput::Cas {
                swapped: false,
                current: Some("a".into())
            }
        );
        let delete = kv.apply_command(&cmd(
            1,
            3,
            KvOp::Cas {
                key: "k".into(),
                expected: Some("a".into()),
                new: None,
            },
        ));
        assert_eq!(
            delete,
            KvOutput::Cas {
                swapped: true,
                current: None
            }
        );
        assert!(kv.data().is_empty());
    }

    #[test]
    fn oversized_writes_are_refused_and_sessions_are_bounded() {
        let mut kv = KvMachine::default();
        let big = "x".repeat(ITEM_BYTES_MAX + 1);
        assert_eq!(
            kv.apply_command(&cmd(1, 1, put("k", &big))),
            KvOutput::TooLarge
        );
        assert!(kv.data().is_empty());
        kv.apply_command(&cmd(1, 2, put("k", "v")));
        for client in 0..(SESSIONS_MAX as u64 + 5) {
            kv.apply_command(&cmd(client + 10, 1, put("k", "v")));
        }
        assert_eq!(kv.sessions.len(), SESSIONS_MAX);
        // The least recently used session went first: client 1's retry is refused, not
        // applied a second time.
        assert!(!kv.sessions.contains_key(&1));
        assert_eq!(kv.apply_command(&cmd(1, 2, put("k", "w"))), KvOutput::Stale);
        assert_eq!(kv.get("k"), Some("v"));
    }

    #[test]
    fn scans_return_the_prefix_range_in_order_within_their_limits() {
        let mut kv = KvMachine::default();
        for (i, key) in ["b/2", "a", "b/1", "b/3", "c", "b"].iter().enumerate() {
            kv.apply_command(&cmd(1, i as u64 + 1, put(key, key)));
        }
        let scan = |prefix: &str, limit| {
            kv.answer(&KvQuery::Scan {
                prefix: prefix.into(),
                limit,
            })
        };
        let entries = |keys: &[&str]| {
            keys.iter()
                .map(|k| (k.to_string(), k.to_string()))
                .collect()
        };
        assert_eq!(
            scan("b/", 10),
            KvOutput::Entries {
                entries: entries(&["b/1", "b/2", "b/3"]),
                more: false
            }
        );
        assert_eq!(
            scan("b/", 2),
            KvOutput::Entries {
                entries: entries(&["b/1", "b/2"]),
                more: true
            }
        );
        assert_eq!(
            scan("", 100),
            KvOutput::Entries {
                entries: entries(&["a", "b", "b/1", "b/2", "b/3", "c"]),
                more: false
            }
        );
        assert_eq!(
            scan("z", 5),
            KvOutput::Entries {
                entries: vec![],
                more: false
            }
        );
        assert_eq!(
            scan("b", 0),
            KvOutput::Entries {
                entries: vec![],
                more: true
            }
        );
        // A huge limit is capped; large values stop a scan at the byte bound, one entry at least.
        let mut big = KvMachine::default();
        let value = "v".repeat(ITEM_BYTES_MAX - 8);
        for i in 0..5u64 {
            big.apply_command(&cmd(2, i + 1, put(&format!("k{i}"), &value)));
        }
        match big.answer(&KvQuery::Scan {
            prefix: "k".into(),
            limit: usize::MAX,
        }) {
            KvOutput::Entries { entries, more } => {
                assert_eq!(entries.len(), 2, "two entries fit in SCAN_BYTES_MAX");
                assert!(more);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snapshots_round_trip_and_bad_bytes_are_errors() {
        use raft::StateMachine as _;
        let mut kv = KvMachine::default();
        kv.apply_command(&cmd(1, 1, put("a", "1")));
        kv.apply_command(&cmd(2, 1, put("b", "2")));
        let mut snap = Vec::new();
        kv.snapshot(&mut snap).unwrap();
        let mut copy = KvMachine::default();
        copy.restore(&mut &snap[..]).unwrap();
        assert_eq!(copy, kv);
        // The session table travels with the snapshot: the retry is still caught.
        assert_eq!(
            copy.apply_command(&cmd(1, 1, put("a", "2"))),
            KvOutput::Value(None)
        );
        assert_eq!(copy.get("a"), Some("1"));
        assert!(copy.restore(&mut &b"\xff not a snapshot"[..]).is_err());
        assert_eq!(copy.get("a"), Some("1"), "a failed restore changes nothing");
        // Cut anywhere: an error, never a silent partial state.
        for cut in 0..snap.len() {
            assert!(copy.restore(&mut &snap[..cut]).is_err(), "cut at {cut}");
            assert_eq!(copy.get("b"), Some("2"));
        }
    }

    #[test]
    fn the_address_book_is_replicated_state_and_removed_ids_stay_removed() {
        use raft::StateMachine as _;
        let (tx, mut rx) = tokio::sync::watch::channel(AddressBook::default());
        let mut kv = KvMachine::with_book_watch(tx);
        let register = |seq, id| {
            cmd(
                9,
                seq,
                KvOp::Register {
                    id,
                    peer: format!("node-{id}:7000"),
                    client: format!("node-{id}:8000"),
                },
            )
        };
        assert_eq!(kv.apply_command(&register(1, 4)), KvOutput::Value(None));
        assert!(rx.has_changed().unwrap(), "a registration is published");
        assert_eq!(rx.borrow_and_update().nodes[&4].client, "node-4:8000");
        assert_eq!(kv.apply_command(&register(2, 5)), KvOutput::Value(None));
        assert_eq!(
            kv.apply_command(&cmd(9, 3, KvOp::Deregister { id: 4 })),
            KvOutput::Value(Some("node-4:7000".into()))
        );
        assert!(rx.borrow_and_update().removed.contains(&4));
        // A removed id is never registered again.
        assert!(matches!(
            kv.apply_command(&register(4, 4)),
            KvOutput::Refused(_)
        ));
        let too_long = cmd(
            9,
            5,
            KvOp::Register {
                id: 6,
                peer: "p".repeat(ADDRESS_BYTES_MAX + 1),
                client: "c:1".into(),
            },
        );
        assert_eq!(kv.apply_command(&too_long), KvOutput::TooLarge);
        // The book travels with snapshots, and a restored machine publishes it.
        let mut snap = Vec::new();
        kv.snapshot(&mut snap).unwrap();
        let (tx2, mut rx2) = tokio::sync::watch::channel(AddressBook::default());
        let mut copy = KvMachine::with_book_watch(tx2);
        copy.restore(&mut &snap[..]).unwrap();
        assert_eq!(copy, kv);
        assert!(rx2.has_changed().unwrap());
        let book = rx2.borrow_and_update().clone();
        assert_eq!(book.nodes.keys().copied().collect::<Vec<_>>(), [5]);
        assert_eq!(book.removed.iter().copied().collect::<Vec<_>>(), [4]);
    }

    /// The same machine replicated by both protocols, in process (tokio driver, in-memory
    /// network): a leader is stopped with a request in flight, the client retries with the same
    /// sequence number elsewhere, and every write counts once.
    mod replicated {
        use std::time::Duration;

        use common::codec::Bincode;
        use common::driver::{self, DriverConfig, NodeHandle, Persistence};
        use common::transport::memory::MemoryNetwork;
        use common::{MemStorage, Node as _, NodeId};

        use super::super::*;

        const WRITES: u64 = 20;
        const STOP_AT: u64 = 8;
        const ATTEMPTS_MAX: usize = 400;

        /// A chain of compare-and-sets on one key: write `seq` expects `seq - 1`. Applied twice,
        /// a write would be refused (the value moved on); applied once, every one swaps.
        fn write(seq: u64) -> KvCommand {
            KvCommand {
                client: 1,
                seq,
                op: KvOp::Cas {
                    key: "chain".into(),
                    expected: (seq > 1).then(|| (seq - 1).to_string()),
                    new: Some(seq.to_string()),
                },
            }
        }

        fn swapped(seq: u64) -> KvOutput {
            KvOutput::Cas {
                swapped: true,
                current: Some(seq.to_string()),
            }
        }

        #[tokio::test]
        async fn on_raft() {
            use raft::{spawn_memory_cluster, Config, RaftClient};
            let configs: Vec<Config> = (1..=3).map(|id| Config::new(id, vec![1, 2, 3])).collect();
            let network = MemoryNetwork::new(3);
            let client: RaftClient<KvMachine> =
                spawn_memory_cluster(configs, &network, DriverConfig::default()).unwrap();
            let propose = |seq: u64| {
                let client = &client;
                async move {
                    for _ in 0..ATTEMPTS_MAX {
                        match client.propose(write(seq)).await {
                            Ok((_, out)) => return out,
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                    panic!("write {seq} never answered");
                }
            };
            let mut stopped = None;
            for seq in 1..=WRITES {
                let out = if seq == STOP_AT {
                    let mut leader = None;
                    for node in client.nodes() {
                        let m = node.metrics().await.unwrap();
                        if m.leader == Some(m.id) {
                            leader = Some(node.clone());
                        }
                    }
                    let leader = leader.expect("a leader answered the first writes");
                    stopped = Some(leader.id());
                    let (out, stop) = tokio::join!(propose(seq), leader.shutdown());
                    stop.unwrap();
                    out
                } else {
                    propose(seq).await
                };
                assert_eq!(out, swapped(seq), "write {seq}");
            }
            // An explicit retry of the last write: the remembered answer, not a second apply.
            assert_eq!(propose(WRITES).await, swapped(WRITES));
            assert_eq!(client.propose(write(3)).await.unwrap().1, KvOutput::Stale);
            let read = client.read(KvQuery::Get("chain".into())).await.unwrap();
            assert_eq!(read, KvOutput::Value(Some(WRITES.to_string())));
            for node in client.nodes().filter(|n| Some(n.id()) != stopped) {
                node.shutdown().await.unwrap();
            }
        }

        type Replica = paxos::Replica<KvMachine>;

        /// Sends `request` to the replicas in turn, following leader hints, until one answers
        /// with something other than "not the leader" or a stopped node.
        async fn paxos_request(
            nodes: &[NodeHandle<Replica>],
            request: paxos::Request<KvCommand, KvQuery>,
        ) -> KvOutput {
            let mut target = 0;
            for _ in 0..ATTEMPTS_MAX {
                let node = &nodes[target % nodes.len()];
                match node.request(request.clone()).await {
                    Ok(paxos::Response::Applied { output, .. })
                    | Ok(paxos::Response::Read(output)) => return output,
                    Ok(paxos::Response::Failed(paxos::Error::NotLeader { leader: Some(l) }))
                        if l != node.id() =>
                    {
                        target = nodes.iter().position(|n| n.id() == l).unwrap_or(target + 1);
                        continue;
                    }
                    _ => {
                        target += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            panic!("{request:?} never answered");
        }

        #[tokio::test]
        async fn on_multi_paxos() {
            let members: Vec<NodeId> = vec![1, 2, 3];
            let network = MemoryNetwork::new(5);
            let mut nodes = Vec::new();
            for &id in &members {
                let core = Replica::recover(paxos::Config::new(id, members.clone()).into(), vec![])
                    .unwrap();
                let config = DriverConfig {
                    persistence: Persistence::Inline,
                    ..DriverConfig::default()
                };
                let transport = network.join(id).unwrap();
                nodes.push(
                    driver::spawn(core, transport, MemStorage::new(), Bincode, config).unwrap(),
                );
            }
            // No session at the Paxos layer: deduplication here is the state machine's own.
            let propose = |seq: u64| paxos::Request::Propose {
                command: write(seq),
                session: None,
            };
            let mut stopped = None;
            for seq in 1..=WRITES {
                let out = if seq == STOP_AT {
                    let mut leader = None;
                    for node in &nodes {
                        if node.metrics().await.unwrap().leader == Some(node.id()) {
                            leader = Some(node.clone());
                        }
                    }
                    let leader = leader.expect("a leader answered the first writes");
                    stopped = Some(leader.id());
                    let (out, stop) =
                        tokio::join!(paxos_request(&nodes, propose(seq)), leader.shutdown());
                    stop.unwrap();
                    out
                } else {
                    paxos_request(&nodes, propose(seq)).await
                };
                assert_eq!(out, swapped(seq), "write {seq}");
            }
            assert_eq!(
                paxos_request(&nodes, propose(WRITES)).await,
                swapped(WRITES)
            );
            let read =
                paxos_request(&nodes, paxos::Request::Read(KvQuery::Get("chain".into()))).await;
            assert_eq!(read, KvOutput::Value(Some(WRITES.to_string())));
            for node in nodes.iter().filter(|n| Some(n.id()) != stopped) {
                node.shutdown().await.unwrap();
            }
        }
    }
}
