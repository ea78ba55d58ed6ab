//! The replicated state machine: the trait an application implements, the at-most-once session
//! table the replicas keep beside it, and a small key-value store used by the tests, benches and
//! the crate's tutorial.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::message::{Session, Slot};

/// An application replicated by Multi-Paxos. Every replica applies the same commands in slot
/// order, so `apply` must be deterministic.
pub trait StateMachine: Default + Send + 'static {
    /// A command that changes the state; it crosses the network and the disk.
    type Command: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + 'static;
    /// What applying a command or running a query returns. Serializable because the session
    /// table (which remembers the last output of every client) is part of snapshots.
    type Output: Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + 'static;
    /// A read-only question, answered by [`StateMachine::query`] on the leader after a quorum
    /// confirms its leadership (linearizable reads).
    type Query: Debug + Send + 'static;
    /// The state machine's snapshot: it crosses the network and the disk.
    type Snapshot: Clone + Debug + Serialize + DeserializeOwned + Send + 'static;

    /// Applies one decided command.
    fn apply(&mut self, command: &Self::Command) -> Self::Output;

    /// Answers a read without changing the state.
    fn query(&self, query: &Self::Query) -> Self::Output;

    /// The state as a snapshot, so the log before it can be compacted and a replica that fell
    /// behind the compacted prefix can be brought up to date.
    fn snapshot(&self) -> Self::Snapshot;

    /// Rebuilds the state from a snapshot.
    fn restore(snapshot: Self::Snapshot) -> Self;
}

/// What the session table remembers of one client.
#[derive(Clone, Debug, PartialEq)]
struct SessionEntry<O> {
    seq: u64,
    output: O,
    slot: Slot,
}

/// The outcome of offering a command to the session table.
#[derive(Debug, PartialEq)]
pub(crate) enum Dedup<O> {
    /// A new command: apply it.
    Fresh,
    /// The same command was applied already: here is its output.
    Duplicate(O),
    /// An older command, or one of a forgotten session: refuse it.
    Stale,
}

/// The at-most-once table: for each client, the last sequence number applied and its output.
///
/// It is part of the replicated state (every replica applies the same slots, so every replica
/// keeps and evicts the same sessions), which is what makes a retried command safe: whichever
/// slot a retry lands in, every replica sees it as a duplicate.
#[derive(Clone, Debug)]
pub(crate) struct Sessions<O> {
    clients: BTreeMap<u64, SessionEntry<O>>,
    /// The highest slot at which a session was evicted; a client not in the table is stale for
    /// sequence numbers it might have used before that (we cannot tell, so we refuse seq ≤ the
    /// evicted seq, which we remember per client only while it fits).
    evicted: BTreeMap<u64, u64>,
    capacity: usize,
}

impl<O: Clone> Sessions<O> {
    pub(crate) fn new(capacity: usize) -> Self {
        Sessions {
            clients: BTreeMap::new(),
            evicted: BTreeMap::new(),
            capacity,
        }
    }

    pub(crate) fn check(&self, session: Session) -> Dedup<O> {
        match self.clients.get(&session.client) {
            Some(e) if session.seq == e.seq => Dedup::Duplicate(e.output.clone()),
            Some(e) if session.seq < e.seq => Dedup::Stale,
            Some(_) => Dedup::Fresh,
            None => match self.evicted.get(&session.client) {
                Some(&seq) if session.seq <= seq => Dedup::Stale,
                _ => Dedup::Fresh,
            },
        }
    }

    pub(crate) fn record(&mut self, session: Session, output: O, slot: Slot) {
        self.evicted.remove(&session.client);
        self.clients.insert(
            session.client,
            SessionEntry {
                seq: session.seq,
                output,
                slot,
            },
        );
        if self.clients.len() > self.capacity {
            // Evict the least recently used session. Deterministic: every replica applies the
            // same slots, so every replica evicts the same client.
            let oldest = self
                .clients
                .iter()
                .min_by_key(|(client, e)| (e.slot, **client))
                .map(|(client, e)| (*client, e.seq));
            if let Some((client, seq)) = oldest {
                self.clients.remove(&client);
                // Remember the evicted client's last sequence number so a late retry is refused
                // instead of applied twice; this map is bounded by the same capacity.
                self.evicted.insert(client, seq);
                if self.evicted.len() > self.capacity {
                    if let Some((&c, _)) = self.evicted.iter().next() {
                        self.evicted.remove(&c);
                    }
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    /// The table as plain data for a snapshot.
    pub(crate) fn export(&self) -> SessionsSnapshot<O> {
        SessionsSnapshot {
            clients: self
                .clients
                .iter()
                .map(|(&c, e)| (c, e.seq, e.output.clone(), e.slot))
                .collect(),
            evicted: self.evicted.iter().map(|(&c, &s)| (c, s)).collect(),
        }
    }

    /// Rebuilds the table from a snapshot (bounded by the capacity: extra entries are dropped).
    pub(crate) fn import(snapshot: SessionsSnapshot<O>, capacity: usize) -> Self {
        Sessions {
            clients: snapshot
                .clients
                .into_iter()
                .take(capacity)
                .map(|(c, seq, output, slot)| (c, SessionEntry { seq, output, slot }))
                .collect(),
            evicted: snapshot.evicted.into_iter().take(capacity).collect(),
            capacity,
        }
    }
}

/// The session table as plain data (part of a snapshot).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SessionsSnapshot<O> {
    /// (client, last sequence number, its output, slot applied).
    clients: Vec<(u64, u64, O, Slot)>,
    /// (client, last sequence number) of evicted sessions.
    evicted: Vec<(u64, u64)>,
}

/// A command of [`KvStore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`; outputs the previous value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Appends `value` to `key`'s value; outputs the previous value.
    Append {
        /// The key.
        key: String,
        /// The suffix.
        value: String,
    },
    /// Reads `key` through the log (a read ordered like a write).
    Get {
        /// The key.
        key: String,
    },
}

/// A query of [`KvStore`]: the value of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvQuery {
    /// The key.
    pub key: String,
}

/// A small replicated map from strings to strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    /// The map.
    pub map: BTreeMap<String, String>,
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Output = Option<String>;
    type Query = KvQuery;
    type Snapshot = BTreeMap<String, String>;

    fn apply(&mut self, command: &KvCommand) -> Option<String> {
        match command {
            KvCommand::Put { key, value } => self.map.insert(key.clone(), value.clone()),
            KvCommand::Append { key, value } => {
                let entry = self.map.entry(key.clone()).or_default();
                let before = entry.clone();
                entry.push_str(value);
                Some(before)
            }
            KvCommand::Get { key } => self.map.get(key).cloned(),
        }
    }

    fn query(&self, query: &KvQuery) -> Option<String> {
        self.map.get(&query.key).cloned()
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        self.map.clone()
    }

    fn restore(map: BTreeMap<String, String>) -> Self {
        KvStore { map }
    }
}

/// A counter: the smallest state machine, used by the benchmarks (each command adds to it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// The sum of every applied command.
    pub total: u64,
}

impl StateMachine for Counter {
    type Command = u64;
    type Output = u64;
    type Query = ();
    type Snapshot = u64;

    fn apply(&mut self, command: &u64) -> u64 {
        self.total = self.total.wrapping_add(*command);
        self.total
    }

    fn query(&self, _: &()) -> u64 {
        self.total
    }

    fn snapshot(&self) -> u64 {
        self.total
    }

    fn restore(total: u64) -> Self {
        Counter { total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(client: u64, seq: u64) -> Session {
        Session { client, seq }
    }

    #[test]
    fn sessions_dedup_and_evict() {
        let mut t: Sessions<u32> = Sessions::new(2);
        assert_eq!(t.check(s(1, 1)), Dedup::Fresh);
        t.record(s(1, 1), 10, 0);
        assert_eq!(t.check(s(1, 1)), Dedup::Duplicate(10));
        assert_eq!(t.check(s(1, 0)), Dedup::Stale);
        assert_eq!(t.check(s(1, 2)), Dedup::Fresh);
        t.record(s(2, 1), 20, 1);
        t.record(s(3, 1), 30, 2); // evicts client 1 (oldest slot)
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.check(s(1, 1)),
            Dedup::Stale,
            "an evicted session never re-applies"
        );
        assert_eq!(t.check(s(1, 2)), Dedup::Fresh);
    }

    #[test]
    fn kv_applies() {
        let mut kv = KvStore::default();
        let put = KvCommand::Put {
            key: "a".into(),
            value: "1".into(),
        };
        assert_eq!(kv.apply(&put), None);
        let app = KvCommand::Append {
            key: "a".into(),
            value: "2".into(),
        };
        assert_eq!(kv.apply(&app), Some("1".into()));
        assert_eq!(kv.query(&KvQuery { key: "a".into() }), Some("12".into()));
    }
}
