//! The replicated state machine: the workspace's one seam ([`common::StateMachine`], re-exported
//! here as [`StateMachine`]), the at-most-once session table the replicas keep beside it, and two
//! small state machines used by the tests, benches and the crate's tutorial ([`KvStore`],
//! [`Counter`]).
//!
//! # How a replica drives its state machine
//!
//! - **Built by a factory.** A replica's [`common::Node::Config`] is a
//!   [`Setup<Config, S>`](common::Setup): the protocol's [`Config`](crate::Config) and a factory
//!   that opens the state machine at start, after every restart, and for each snapshot received
//!   from a peer (restored into the new instance, which replaces the current one only once the
//!   whole snapshot loaded). `Config::new(..).into()` uses `S::default()`;
//!   [`Setup::new`](common::Setup::new) takes any factory.
//! - **Log positions.** Slots start at 0; the state machine's log positions start at 1, so the
//!   command of slot `s` is applied at position `s + 1`, and [`StateMachine::applied`]`(n)` and
//!   [`StateMachine::applied_index`]` = n` both mean "every slot below `n` is applied" (the
//!   replica's [`Metrics::applied`](crate::Metrics::applied)).
//! - **Batches.** Every chosen slot a step applies goes to [`StateMachine::apply_batch`] at once
//!   (the commands of several slots in one call; a stop-sign ends a batch), minus the retries the
//!   session table recognises; then [`StateMachine::applied`] names the first slot not applied.
//! - **Snapshots stream** ([`StateMachine::snapshot`], [`StateMachine::restore`]) into and out of
//!   a snapshot file, after the replica's own header (configuration and session table): see the
//!   crate documentation, "The state machine, snapshots and catch-up".
//! - **Durable state machines.** One whose [`StateMachine::applied_index`] is `n` when opened
//!   is not restored from a snapshot of a slot at or below `n` and is not given the commands of
//!   slots below `n` again. The replica still replays those slots through its session table
//!   (which lives in its snapshots and log, not in the state machine); the outputs of the
//!   commands it so skips are unknown, so a retry of one of them is refused with
//!   [`PaxosError::SessionStale`](crate::PaxosError::SessionStale) instead of being answered with its
//!   output.
//!
//! # Snapshot formats of the two state machines here
//!
//! Both write [`common::state_machine::write_frame`] frames: [`KvStore`] (the workspace's
//! [`common::kv_store`], the same one `raft` uses) one `(key, value)` frame per pair, in key
//! order; [`Counter`] one frame with its total. Restoring reads frames
//! with a size limit ([`common::state_machine::FRAME_BYTES_MAX`]); a cut or undecodable stream
//! is a [`StateMachineError`], never a panic.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use common::state_machine::{read_frame, write_frame, FRAME_BYTES_MAX};
pub use common::state_machine::{Setup, StateMachine, StateMachineError};

use crate::message::{Session, Slot};

/// What the session table remembers of one client.
#[derive(Clone, Debug, PartialEq)]
struct SessionEntry<O> {
    seq: u64,
    /// The output of the command `seq`; `None` while the batch it is in is being applied, or
    /// for good when a durable state machine applied it before a restart (see the module
    /// documentation).
    output: Option<O>,
    slot: Slot,
}

/// The outcome of offering a command to the session table.
#[derive(Debug, PartialEq)]
pub(crate) enum Dedup<O> {
    /// A new command: apply it.
    Fresh,
    /// The same command was applied already: here is its output, if known.
    Duplicate(Option<O>),
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

/// One client's entry as it is written in a snapshot: (client, last sequence number, its
/// output if known, slot applied).
pub(crate) type SessionRecord<O> = (u64, u64, Option<O>, Slot);

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

    /// Records that `session`'s command was applied in `slot`. The output may follow with
    /// [`Sessions::set_output`] once the batch is applied: eviction, which must happen at the
    /// same point on every replica, does not depend on it.
    pub(crate) fn record(&mut self, session: Session, output: Option<O>, slot: Slot) {
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

    /// The output of `session`'s command, recorded without it by [`Sessions::record`] (nothing
    /// happens if the session was evicted or moved on meanwhile).
    pub(crate) fn set_output(&mut self, session: Session, output: O) {
        if let Some(e) = self.clients.get_mut(&session.client) {
            if e.seq == session.seq {
                e.output = Some(output);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }

    /// Sessions remembered, then evicted clients: what a snapshot holds.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.clients.len() as u64, self.evicted.len() as u64)
    }

    /// The table's entries as plain data, in client order (for a snapshot).
    pub(crate) fn entries(&self) -> impl Iterator<Item = SessionRecord<O>> + '_ {
        self.clients
            .iter()
            .map(|(&c, e)| (c, e.seq, e.output.clone(), e.slot))
    }

    /// The evicted clients and their last sequence numbers, in client order (for a snapshot).
    pub(crate) fn evicted(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.evicted.iter().map(|(&c, &s)| (c, s))
    }

    /// Adds an entry read from a snapshot (beyond the capacity, entries are dropped).
    pub(crate) fn import_entry(&mut self, (client, seq, output, slot): SessionRecord<O>) {
        if self.clients.len() < self.capacity {
            self.clients
                .insert(client, SessionEntry { seq, output, slot });
        }
    }

    /// Adds an evicted client read from a snapshot (beyond the capacity, they are dropped).
    pub(crate) fn import_evicted(&mut self, client: u64, seq: u64) {
        if self.evicted.len() < self.capacity {
            self.evicted.insert(client, seq);
        }
    }
}

pub use common::kv_store::{KvCommand, KvOutput, KvQuery, KvStore};

/// A counter: the smallest state machine, used by the benchmarks (each command adds to it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// The sum of every applied command.
    pub total: u64,
}

impl StateMachine for Counter {
    type Command = u64;
    type Query = ();
    type Output = u64;

    fn apply(&mut self, _index: u64, command: &u64) -> u64 {
        self.total = self.total.wrapping_add(*command);
        self.total
    }

    fn query(&self, _: &()) -> u64 {
        self.total
    }

    /// One frame: the total.
    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        write_frame(out, &self.total)
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        let total = read_frame::<u64>(input, FRAME_BYTES_MAX)?
            .ok_or_else(|| StateMachineError::Malformed("empty counter snapshot".into()))?;
        if read_frame::<u64>(input, FRAME_BYTES_MAX)?.is_some() {
            return Err(StateMachineError::Malformed(
                "counter snapshot holds more than one frame".into(),
            ));
        }
        self.total = total;
        Ok(())
    }

    fn command_bytes(_: &u64) -> usize {
        8
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
        t.record(s(1, 1), Some(10), 0);
        assert_eq!(t.check(s(1, 1)), Dedup::Duplicate(Some(10)));
        assert_eq!(t.check(s(1, 0)), Dedup::Stale);
        assert_eq!(t.check(s(1, 2)), Dedup::Fresh);
        t.record(s(2, 1), None, 1);
        assert_eq!(t.check(s(2, 1)), Dedup::Duplicate(None));
        t.set_output(s(2, 1), 20);
        assert_eq!(t.check(s(2, 1)), Dedup::Duplicate(Some(20)));
        t.record(s(3, 1), Some(30), 2); // evicts client 1 (oldest slot)
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
        assert_eq!(kv.apply(1, &put), KvOutput::Value(None));
        let app = KvCommand::Append {
            key: "a".into(),
            value: "2".into(),
        };
        assert_eq!(kv.apply(2, &app), KvOutput::Value(Some("1".into())));
        assert_eq!(
            kv.query(&KvQuery::Get("a".into())),
            KvOutput::Value(Some("12".into()))
        );
    }

    #[test]
    fn kv_and_counter_snapshots_round_trip_and_refuse_bad_input() {
        let mut kv = KvStore::default();
        for i in 0..50 {
            kv.apply(
                i as u64 + 1,
                &KvCommand::Put {
                    key: format!("k{i}"),
                    value: "v".repeat(i),
                },
            );
        }
        let mut bytes = Vec::new();
        kv.snapshot(&mut bytes).unwrap();
        let mut back = KvStore::default();
        back.apply(
            1,
            &KvCommand::Put {
                key: "stale".into(),
                value: "gone".into(),
            },
        );
        back.restore(&mut &bytes[..]).unwrap();
        assert_eq!(back, kv);
        // Cut anywhere but at a frame boundary: an error, never a panic.
        let mut errors = 0;
        for cut in 1..bytes.len() {
            if KvStore::default().restore(&mut &bytes[..cut]).is_err() {
                errors += 1;
            }
        }
        assert_eq!(errors, bytes.len() - 1 - (kv.data().len() - 1));
        assert!(matches!(
            KvStore::default().restore(&mut &[0xff, 0xff, 0xff, 0xff, 1][..]),
            Err(StateMachineError::Malformed(_))
        ));

        let c = Counter { total: 42 };
        let mut bytes = Vec::new();
        c.snapshot(&mut bytes).unwrap();
        let mut back = Counter::default();
        back.restore(&mut &bytes[..]).unwrap();
        assert_eq!(back, c);
        assert!(Counter::default().restore(&mut &[][..]).is_err());
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        assert!(Counter::default().restore(&mut &twice[..]).is_err());
    }
}
