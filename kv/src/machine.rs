//! [`KvMachine`], the replicated state machine: the map, the session table that makes writes
//! exactly-once, the address book, and the streaming snapshot of all three.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::sync::Arc;

use common::state_machine::{read_frame, write_frame, StateMachineError};
use serde::{Deserialize, Serialize};

use crate::book::{AddressBook, BookWatch, MemberAddrs, ADDRESS_BOOK_NODES_MAX};
use crate::command::{KvCommand, KvOp, KvOutput, KvQuery, SCAN_BYTES_MAX, SCAN_LIMIT_MAX};

/// Clients remembered by the session table at most; beyond it the least recently used is
/// forgotten. Its later requests are refused as stale rather than risk applying one twice; the
/// one hole left is a retry of a forgotten client's *first* request, which is applied again (a
/// production store registers sessions through the log and expires them explicitly, Raft thesis
/// §6.3).
pub const SESSIONS_MAX: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    seq: u64,
    output: KvOutput,
    /// The value of [`KvMachine::applied`] when this session last applied: orders eviction.
    used_at: u64,
}

/// The store's keys and values: a hash table for the point reads and writes, with the keys
/// also kept in order for scans and snapshots (one allocation per key, shared by both).
///
/// A `BTreeMap` of the strings alone cost a lookup a dozen key comparisons, each reading
/// another key's heap buffer; on a replica whose caches the other processes on its CPU keep
/// evicting, those reads were most of the time a put took to apply (kv/README.md, "How
/// fast").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Map {
    values: HashMap<Arc<str>, String>,
    /// The keys of `values`, in order.
    keys: BTreeSet<Arc<str>>,
}

impl Map {
    fn get(&self, key: &str) -> Option<&String> {
        self.values.get(key)
    }

    /// Sets `key` to `value`, returning the previous value. An existing key keeps its stored
    /// copy and place in the order: only the value is replaced.
    fn put(&mut self, key: &str, value: &str) -> Option<String> {
        if let Some(stored) = self.values.get_mut(key) {
            return Some(std::mem::replace(stored, value.to_owned()));
        }
        let key: Arc<str> = Arc::from(key);
        self.keys.insert(key.clone());
        self.values.insert(key, value.to_owned())
    }

    /// Puts a pair read from a snapshot, whose strings are owned already (a key met twice
    /// keeps the later value, as `put` would).
    fn restore(&mut self, key: String, value: String) {
        let key: Arc<str> = Arc::from(key);
        if self.values.insert(key.clone(), value).is_none() {
            self.keys.insert(key);
        }
    }

    fn remove(&mut self, key: &str) -> Option<String> {
        let value = self.values.remove(key)?;
        self.keys.remove(key);
        Some(value)
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    /// The keys from `first` on, in order, with their values.
    fn range_from(&self, first: &str) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.keys
            .range::<str, _>((std::ops::Bound::Included(first), std::ops::Bound::Unbounded))
            .filter_map(|k| Some((&**k, self.values.get(k)?.as_str())))
    }
}

/// The replicated store: the map, the session table and the address book.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvMachine {
    map: Map,
    /// By client. A hash table for the same reason as the map's; the snapshot writes it in
    /// the clients' order.
    sessions: HashMap<u64, Session>,
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

    /// Every key and its value, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.map.range_from("")
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Commands applied, duplicates not counted.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies `command` once per (client, seq); see the module's guarantees.
    pub fn apply_command(&mut self, command: &KvCommand) -> KvOutput {
        // A known client's session is checked and updated where it is (the common case: one
        // look-up).
        if let Some(session) = self.sessions.get_mut(&command.client) {
            if command.seq == session.seq {
                return session.output.clone();
            }
            if command.seq < session.seq {
                return KvOutput::Stale;
            }
            let output = apply_op(&mut self.map, &mut self.book, &self.watch, &command.op);
            self.applied += 1;
            session.seq = command.seq;
            session.output.clone_from(&output);
            session.used_at = self.applied;
            return output;
        }
        // A client starts at 1; an unknown client further on had its session forgotten, and
        // this may be a retry of a command already applied: refuse it.
        if command.seq != 1 {
            return KvOutput::Stale;
        }
        let output = apply_op(&mut self.map, &mut self.book, &self.watch, &command.op);
        self.applied += 1;
        if self.sessions.len() >= SESSIONS_MAX {
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

    fn answer(&self, query: &KvQuery) -> KvOutput {
        match query {
            KvQuery::Get(key) => KvOutput::Value(self.map.get(key).cloned()),
            KvQuery::Scan { prefix, limit } => {
                let limit = (*limit).min(SCAN_LIMIT_MAX);
                // The map is ordered: the keys with a prefix are one contiguous range from it.
                let matching = self
                    .map
                    .range_from(prefix)
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
                    entries.push((k.to_owned(), v.to_owned()));
                }
                KvOutput::Entries { entries, more }
            }
        }
    }
}

/// Applies `op` to the map or the address book (publishing the book to `watch` when it
/// changes). The session table is the caller's: separate arguments let it keep the session it
/// looked up while this runs.
fn apply_op(map: &mut Map, book: &mut AddressBook, watch: &BookWatch, op: &KvOp) -> KvOutput {
    if op.too_large() {
        return KvOutput::TooLarge;
    }
    match op {
        KvOp::Put { key, value } => KvOutput::Value(map.put(key, value)),
        KvOp::Delete { key } => KvOutput::Value(map.remove(key)),
        KvOp::Register { id, peer, client } => {
            if book.removed.contains(id) {
                return KvOutput::Refused(format!(
                    "node {id} was removed; a removed id is never used again"
                ));
            }
            if !book.nodes.contains_key(id)
                && book.nodes.len() + book.removed.len() >= ADDRESS_BOOK_NODES_MAX
            {
                return KvOutput::Refused(format!(
                    "the address book holds {ADDRESS_BOOK_NODES_MAX} nodes, its limit"
                ));
            }
            let addrs = MemberAddrs {
                peer: peer.clone(),
                client: client.clone(),
            };
            let previous = book.nodes.insert(*id, addrs).map(|a| a.peer);
            watch.publish(book);
            KvOutput::Value(previous)
        }
        KvOp::Deregister { id } => {
            if !book.removed.contains(id)
                && book.nodes.len() + book.removed.len() >= ADDRESS_BOOK_NODES_MAX
                && !book.nodes.contains_key(id)
            {
                return KvOutput::Refused(format!(
                    "the address book holds {ADDRESS_BOOK_NODES_MAX} nodes, its limit"
                ));
            }
            let previous = book.nodes.remove(id).map(|a| a.peer);
            book.removed.insert(*id);
            watch.publish(book);
            KvOutput::Value(previous)
        }
        KvOp::Cas { key, expected, new } => {
            if map.get(key) != expected.as_ref() {
                return KvOutput::Cas {
                    swapped: false,
                    current: map.get(key).cloned(),
                };
            }
            match new {
                Some(v) => {
                    map.put(key, v);
                }
                None => {
                    map.remove(key);
                }
            }
            KvOutput::Cas {
                swapped: true,
                current: new.clone(),
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
            sessions: {
                // In the clients' order: replicas with the same state write the same bytes.
                let mut sessions: Vec<_> =
                    self.sessions.iter().map(|(c, s)| (*c, s.clone())).collect();
                sessions.sort_unstable_by_key(|(c, _)| *c);
                sessions
            },
            book: self.book.clone(),
            keys: self.map.len() as u64,
        };
        write_frame(out, &header)?;
        for pair in self.map.range_from("") {
            write_frame(out, &pair)?;
        }
        Ok(())
    }

    /// Reads a snapshot written by [`KvMachine::write_snapshot`]; the state is replaced only
    /// once the whole stream has been read and checked.
    fn read_snapshot(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        let header: SnapshotHeader = read_frame(input, SNAPSHOT_FRAME_BYTES_MAX)?
            .ok_or_else(|| StateMachineError::Malformed("empty kv snapshot".into()))?;
        let mut map = Map::default();
        while let Some((k, v)) = read_frame::<(String, String)>(input, SNAPSHOT_FRAME_BYTES_MAX)? {
            map.restore(k, v);
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
mod tests;
