//! Transactions across partitions, the state-machine side: two-phase commit whose every step
//! is a command in a group's Raft log. [`TxTable`] is what a partition's group keeps of the
//! transactions it takes part in: the locks, the prepared parts, and, in the transaction's
//! coordinator group, its record.
//!
//! # The protocol
//!
//! A transaction is a set of *parts*, one per partition it touches; each part has reads,
//! compare conditions (a key must hold a value, or be absent) and writes. The group of the first
//! partition, in partition order, is the transaction's *coordinator group*; it takes part too.
//!
//! 1. **Prepare, coordinator first.** [`TxCommand::Prepare`] at the coordinator group checks
//!    its part's compares, locks every key the part reads, compares or writes (no waiting: a
//!    key locked by another transaction refuses the prepare), answers the values read, holds
//!    the writes, and creates the
//!    transaction's *record*, pending. Then each other participant prepares its part the same
//!    way, naming the coordinator group. A prepared part answers the log index it was prepared
//!    at.
//! 2. **Decide in the coordinator's log.** [`TxCommand::Decide`] with `Committed` (when every
//!    part voted yes, with their prepare indexes) turns a pending record into a committed one
//!    and applies the coordinator's own part in the same entry. With `Aborted`, or when the
//!    record is not pending, the answer is `Aborted`: **presumed abort**, an aborted
//!    transaction leaves no record, and no record means aborted. The decision is a Raft entry,
//!    so no single crash loses it, and the first decision in the log wins: a driver deciding
//!    commit and a resolver deciding abort cannot both succeed. A committed record is
//!    forgotten once every part finished (step 4), but the outcome stays in the group's
//!    bounded outcome cache ([`TX_FINISHED_REMEMBERED`]): a decision asked again afterwards
//!    (a driver whose answer was lost while a resolver finished the transaction) is answered
//!    `Committed` from it. Past that bound, such a late question would hear the presumed
//!    abort.
//! 3. **Finish.** [`TxCommand::Finish`] tells each other participant the outcome, with the
//!    index its part was prepared at: the part applies its writes (commit) or drops them
//!    (abort) and releases its locks. A part prepared again by a stale duplicate message, at
//!    another index, is dropped, never committed.
//! 4. **Forget.** Once every participant has finished, [`TxCommand::Forget`] drops the
//!    committed record.
//!
//! A transaction that touches one partition commits in one entry ([`TxCommand::OnePhase`]):
//! compares checked, reads answered, writes applied, no locks, no record (**one-phase
//! commit**). A transaction that only reads and compares (**read-only**) keeps no record:
//! once every part is prepared, [`TxCommand::EndReadOnly`] at the coordinator checks that its
//! record is still pending (so no resolver released any part: a resolver aborts at the
//! coordinator before it releases a part) and drops it; what the transaction read is then
//! consistent, and the other parts are released with [`TxCommand::Finish`] `Aborted`.
//!
//! Whoever sends these commands holds nothing the logs do not: a driver that stops anywhere
//! leaves prepared parts that a *resolver* finds ([`TxInDoubt`]), and resolves by deciding
//! abort in the coordinator's log (which answers the real outcome if the transaction was
//! decided already) and finishing the parts with it.
//!
//! # Isolation: strictly serializable
//!
//! Every key a transaction compares or writes is locked from its prepare until its outcome is
//! applied at that partition, and single-key reads and writes of a locked key are refused
//! ([`Refusal::Locked`](super::Refusal::Locked)) rather than served: strict two-phase locking
//! over the keys, with the lock point after the last prepare. So committed transactions and
//! single-key operations are conflict-serializable in an order that respects real time; a
//! compare is checked while its key is locked, so what a transaction compared still holds when
//! it commits. No-wait locking never deadlocks; conflicting transactions abort and retry.
//! `kv/tests/shard_txn_sim.rs` checks it on every seed: the committed transactions'
//! serialization graph, with real-time edges, has no cycle.
//!
//! # What comes from `common::txn`
//!
//! The rules shared with `twopc` and `threepc` are their code, not a copy: the no-wait lock
//! table is [`Locks`](common::txn::Locks), a repeated prepare is answered by
//! [`Decided::vote_again`](common::txn::Decided::vote_again) over the same bounded outcome
//! cache, and the driver counts votes with [`Tally`](common::txn::Tally).
//!
//! Why parts that only compare are not let go at their vote, as `twopc`'s read-only
//! participants are: `twopc` runs its operations before the commit protocol starts, so every
//! lock is taken before any vote. Here locks are taken *by* the prepares, so a part released
//! at its vote could let a conflicting transaction in before a later part locks its keys:
//! T1 compares x at A and writes y at B, T2 writes x at A and compares y at B; if each
//! compare-only part let go at once, both could commit, each having seen the other's old
//! value (write skew). So compare-only parts hold their locks to the outcome like the others.

use std::collections::BTreeMap;

use common::groups::GroupId;
use common::kv_store::{KvCommand, KvStore};
use common::txn::{Decided, Locks, Outcome, TxId, Vote};
use common::StateMachine;
use serde::{Deserialize, Serialize};

/// Most partitions one transaction may touch.
pub const TX_PARTS_MAX: usize = 16;
/// Most keys one part may compare and write together.
pub const TX_KEYS_PER_PART_MAX: usize = 64;
/// Most prepared parts one group holds at once; more prepares are refused.
pub const TX_PREPARED_MAX: usize = 1_024;
/// Most transaction records one coordinator group holds at once; more are refused.
pub const TX_RECORDS_MAX: usize = 1_024;
/// How many finished transactions a group remembers the outcome of (for duplicates, and for
/// checking atomicity).
pub const TX_FINISHED_REMEMBERED: usize = 4_096;

/// A compare condition: `key` holds `value` (`None`: `key` is absent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key.
    pub key: String,
    /// The value it must hold, or `None` for absent.
    pub value: Option<String>,
}

/// One write of a transaction: set `key` to `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxWrite {
    /// The key.
    pub key: String,
    /// Its new value.
    pub value: String,
}

/// A key and the value a transaction read there (`None`: absent).
pub type ReadValue = (String, Option<String>);

/// A transaction's share in one partition: what it reads, compares and writes there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxPart {
    /// Keys read at the prepare (and locked like the others, so the values stay true until the
    /// outcome).
    #[serde(default)]
    pub reads: Vec<String>,
    /// Conditions checked at the prepare.
    pub compares: Vec<Compare>,
    /// Writes applied at the commit.
    pub writes: Vec<TxWrite>,
}

impl TxPart {
    /// Every key the part reads, compares or writes, once each, in order.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .reads
            .iter()
            .map(String::as_str)
            .chain(self.compares.iter().map(|c| c.key.as_str()))
            .chain(self.writes.iter().map(|w| w.key.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// A step of a transaction, as a command in one group's log (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxCommand {
    /// Check the part's compares, lock its keys and hold its writes. At the coordinator group
    /// (`coordinator` is this group) it also creates the pending record listing
    /// `participants`.
    Prepare {
        /// The transaction.
        tx: TxId,
        /// This group's part.
        part: TxPart,
        /// The coordinator group.
        coordinator: GroupId,
        /// Every participant group, the coordinator first.
        participants: Vec<GroupId>,
    },
    /// Coordinator group: decide. `Committed` needs a pending record and names where every
    /// other participant prepared its part; anything else decides abort. A transaction already
    /// decided is answered its outcome: from its committed record, or from the outcome cache
    /// once the record is forgotten.
    Decide {
        /// The transaction.
        tx: TxId,
        /// The outcome asked for.
        outcome: Outcome,
        /// Every other participant's prepare index (for a commit).
        prepared: Vec<(GroupId, u64)>,
    },
    /// Participant: apply the outcome to the part prepared at `prepared_at` (a commit of a
    /// part prepared elsewhere in the log is an abort of that part: it is a stale duplicate).
    Finish {
        /// The transaction.
        tx: TxId,
        /// The outcome.
        outcome: Outcome,
        /// Where the committed part was prepared (`None` for an abort).
        prepared_at: Option<u64>,
    },
    /// Coordinator group, for a transaction that writes nothing: if its record is still
    /// pending (no resolver aborted it, so every part still holds its locks), drop the record
    /// and release the coordinator's part, answering `Committed` (what the transaction read is
    /// consistent); otherwise `Aborted`. The other parts are then released with
    /// [`TxCommand::Finish`] `Aborted`; no record is kept and nothing needs forgetting.
    EndReadOnly {
        /// The transaction.
        tx: TxId,
    },
    /// Coordinator group: drop the committed record once every participant has finished.
    Forget {
        /// The transaction.
        tx: TxId,
    },
    /// A transaction of one partition: compares checked and writes applied in one entry.
    OnePhase {
        /// The transaction.
        tx: TxId,
        /// Its part.
        part: TxPart,
    },
}

/// What a [`TxCommand`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxOutput {
    /// Prepare: the part is prepared at this log index (the first prepare's index, for a
    /// duplicate).
    Prepared {
        /// The index.
        at: u64,
        /// The values of the part's reads, under its locks.
        reads: Vec<ReadValue>,
    },
    /// Prepare or one-phase commit: refused, nothing held; the transaction aborts.
    No(TxRefusal),
    /// Decide (and a one-phase commit): the outcome, and for a commit every other
    /// participant's prepare index.
    Decided {
        /// The outcome.
        outcome: Outcome,
        /// Every other participant's prepare index (empty for an abort).
        prepared: Vec<(GroupId, u64)>,
        /// A one-phase commit's reads (empty otherwise).
        reads: Vec<ReadValue>,
    },
    /// Finish or Forget: done (or nothing to do).
    Done,
}

impl TxOutput {
    /// A decision with nothing prepared or read to report.
    fn decided(outcome: Outcome) -> Self {
        TxOutput::Decided {
            outcome,
            prepared: Vec::new(),
            reads: Vec::new(),
        }
    }
}

/// Why a part was not prepared (or a one-phase transaction not committed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TxRefusal {
    /// A compare failed.
    #[error("{key:?} does not hold {expected:?}")]
    CompareFailed {
        /// The key.
        key: String,
        /// What the compare expected.
        expected: Option<String>,
    },
    /// A key is locked by another transaction (no-wait locking).
    #[error("{key:?} is locked by {holder}")]
    Locked {
        /// The key.
        key: String,
        /// The transaction holding it.
        holder: TxId,
    },
    /// The transaction finished here already, or its record says it is decided. To a
    /// one-phase commit, only ever said of a commit (an abort is answered as such).
    #[error("{0} is decided already")]
    Decided(TxId),
    /// A limit was hit (parts, keys, prepared parts, records).
    #[error("limit: {0}")]
    Limit(String),
    /// The command does not fit the transaction (a coordinator that is not a participant,
    /// ...).
    #[error("malformed: {0}")]
    Malformed(String),
}

/// A prepared part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// The coordinator group.
    pub coordinator: GroupId,
    /// The log index it was prepared at.
    pub at: u64,
    /// The writes it applies at commit.
    pub writes: Vec<TxWrite>,
    /// The keys it locks.
    pub locked: Vec<String>,
}

/// A coordinator group's record of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxRecord {
    /// Prepared at the coordinator; no decision yet.
    Pending {
        /// Every participant group.
        participants: Vec<GroupId>,
    },
    /// Decided commit; the coordinator's part is applied.
    Committed {
        /// Every other participant's prepare index.
        prepared: Vec<(GroupId, u64)>,
    },
}

/// One transaction a group holds undecided or unfinished, as a resolver sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxInDoubt {
    /// A part prepared here, of a transaction coordinated by `coordinator`.
    Prepared {
        /// The transaction.
        tx: TxId,
        /// Its coordinator group.
        coordinator: GroupId,
        /// Where it was prepared.
        at: u64,
    },
    /// A committed record whose participants may not all have finished.
    Committed {
        /// The transaction.
        tx: TxId,
        /// Every other participant's prepare index.
        prepared: Vec<(GroupId, u64)>,
    },
}

/// What a partition's group keeps of transactions: locks, prepared parts, records as
/// coordinator, and the outcomes of recent ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxTable {
    /// `common::txn`'s no-wait lock table, as `twopc` and `threepc` participants lock.
    locks: Locks,
    prepared: BTreeMap<TxId, Prepared>,
    records: BTreeMap<TxId, TxRecord>,
    /// The outcomes of the transactions that finished here (`common::txn`'s bounded cache,
    /// as `twopc` and `threepc` participants keep it).
    finished: Decided,
}

impl Default for TxTable {
    fn default() -> Self {
        Self {
            locks: Locks::default(),
            prepared: BTreeMap::new(),
            records: BTreeMap::new(),
            finished: Decided::new(TX_FINISHED_REMEMBERED),
        }
    }
}

impl TxTable {
    /// The transaction holding `key`'s lock.
    pub fn lock_holder(&self, key: &str) -> Option<TxId> {
        self.locks.holder(key)
    }

    /// The outcome of a transaction that finished here, if remembered.
    pub fn finished(&self, tx: TxId) -> Option<Outcome> {
        self.finished.get(tx)
    }

    /// The transactions whose outcomes are remembered, oldest first (an observer can read
    /// what is new since it last looked).
    pub fn finished_log(&self) -> &std::collections::VecDeque<TxId> {
        self.finished.order()
    }

    /// Every remembered outcome.
    pub fn outcomes(&self) -> impl Iterator<Item = (TxId, Outcome)> + '_ {
        self.finished
            .order()
            .iter()
            .filter_map(|t| Some((*t, self.finished.get(*t)?)))
    }

    /// Prepared parts and committed records: what a resolver may have to finish.
    pub fn in_doubt(&self) -> Vec<TxInDoubt> {
        let mut v: Vec<TxInDoubt> = self
            .prepared
            .iter()
            .map(|(tx, p)| TxInDoubt::Prepared {
                tx: *tx,
                coordinator: p.coordinator,
                at: p.at,
            })
            .collect();
        v.extend(self.records.iter().filter_map(|(tx, r)| match r {
            TxRecord::Committed { prepared } => Some(TxInDoubt::Committed {
                tx: *tx,
                prepared: prepared.clone(),
            }),
            TxRecord::Pending { .. } => None,
        }));
        v
    }

    /// Whether nothing is locked, prepared or recorded.
    pub fn is_quiet(&self) -> bool {
        self.locks.is_empty() && self.prepared.is_empty() && self.records.is_empty()
    }

    fn remember(&mut self, tx: TxId, outcome: Outcome) {
        self.finished.remember(tx, outcome);
    }

    /// The first key of `keys` locked by a transaction other than `tx`.
    fn conflict(&self, tx: TxId, keys: &[&str]) -> Option<TxRefusal> {
        self.locks
            .conflict(tx, keys.iter().copied())
            .map(|c| TxRefusal::Locked {
                key: c.key,
                holder: c.holder,
            })
    }

    fn check(part: &TxPart, store: &KvStore) -> Result<(), TxRefusal> {
        if part.keys().len() > TX_KEYS_PER_PART_MAX {
            return Err(TxRefusal::Limit("keys per part".into()));
        }
        for c in &part.compares {
            if store.get(&c.key) != c.value.as_deref() {
                return Err(TxRefusal::CompareFailed {
                    key: c.key.clone(),
                    expected: c.value.clone(),
                });
            }
        }
        Ok(())
    }

    /// The values of the part's reads.
    fn read(part: &TxPart, store: &KvStore) -> Vec<ReadValue> {
        part.reads
            .iter()
            .map(|k| (k.clone(), store.get(k).map(str::to_string)))
            .collect()
    }

    fn apply_writes(store: &mut KvStore, index: u64, writes: &[TxWrite]) {
        for w in writes {
            store.apply(
                index,
                &KvCommand::Put {
                    key: w.key.clone(),
                    value: w.value.clone(),
                },
            );
        }
    }

    fn release(&mut self, tx: TxId, p: &Prepared) {
        self.locks
            .unlock_all(tx, p.locked.iter().map(String::as_str));
    }

    /// Applies a transaction command at log `index`, over the partition's `store`; `group` is
    /// this group. The caller has checked that every key of a part belongs to this partition.
    pub fn apply(
        &mut self,
        group: GroupId,
        index: u64,
        command: &TxCommand,
        store: &mut KvStore,
    ) -> TxOutput {
        match command {
            TxCommand::Prepare {
                tx,
                part,
                coordinator,
                participants,
            } => self.prepare(group, index, *tx, part, *coordinator, participants, store),
            TxCommand::Decide {
                tx,
                outcome,
                prepared,
            } => self.decide(index, *tx, *outcome, prepared, store),
            TxCommand::Finish {
                tx,
                outcome,
                prepared_at,
            } => {
                self.finish(index, *tx, *outcome, *prepared_at, store);
                TxOutput::Done
            }
            TxCommand::EndReadOnly { tx } => {
                let pending = matches!(self.records.get(tx), Some(TxRecord::Pending { .. }));
                let writes_nothing = self.prepared.get(tx).is_some_and(|p| p.writes.is_empty());
                self.records.remove(tx);
                if let Some(p) = self.prepared.remove(tx) {
                    self.release(*tx, &p);
                }
                let outcome = if pending && writes_nothing {
                    Outcome::Committed
                } else {
                    Outcome::Aborted
                };
                // Nothing was applied here, whatever the answer: remembered as the other parts
                // remember their release.
                self.remember(*tx, Outcome::Aborted);
                TxOutput::decided(outcome)
            }
            TxCommand::Forget { tx } => {
                if matches!(self.records.get(tx), Some(TxRecord::Committed { .. })) {
                    self.records.remove(tx);
                }
                TxOutput::Done
            }
            TxCommand::OnePhase { tx, part } => {
                match self.finished.get(*tx) {
                    // An earlier copy of this one-phase commit applied (its answer was lost):
                    // "decided already", which the client reads as its commit.
                    Some(Outcome::Committed) => return TxOutput::No(TxRefusal::Decided(*tx)),
                    // Remembered as aborted here: said so, so that "decided already" only ever
                    // stands for a commit.
                    Some(Outcome::Aborted) => return TxOutput::decided(Outcome::Aborted),
                    None => {}
                }
                if let Some(refusal) = self.conflict(*tx, &part.keys()) {
                    return TxOutput::No(refusal);
                }
                if let Err(refusal) = Self::check(part, store) {
                    return TxOutput::No(refusal);
                }
                let reads = Self::read(part, store);
                Self::apply_writes(store, index, &part.writes);
                self.remember(*tx, Outcome::Committed);
                TxOutput::Decided {
                    outcome: Outcome::Committed,
                    prepared: Vec::new(),
                    reads,
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &mut self,
        group: GroupId,
        index: u64,
        tx: TxId,
        part: &TxPart,
        coordinator: GroupId,
        participants: &[GroupId],
        store: &KvStore,
    ) -> TxOutput {
        // A repeated prepare gets the first one's answer (`common::txn`'s rule, as `twopc`
        // participants answer a repeated Prepare): yes again while the part is prepared, no
        // once the transaction finished here.
        match self
            .finished
            .vote_again(tx, self.prepared.contains_key(&tx))
        {
            Ok(Some(Vote::Yes)) => {
                if let Some(p) = self.prepared.get(&tx) {
                    // The keys are still locked by it: the values read are the same again.
                    return TxOutput::Prepared {
                        at: p.at,
                        reads: Self::read(part, store),
                    };
                }
            }
            Ok(Some(_)) | Err(_) => return TxOutput::No(TxRefusal::Decided(tx)),
            Ok(None) => {}
        }
        if self.records.contains_key(&tx) {
            return TxOutput::No(TxRefusal::Decided(tx));
        }
        if participants.len() > TX_PARTS_MAX {
            return TxOutput::No(TxRefusal::Limit("parts per transaction".into()));
        }
        if participants.first() != Some(&coordinator) || !participants.contains(&group) {
            return TxOutput::No(TxRefusal::Malformed(
                "the coordinator must be the first participant, and this group one of them".into(),
            ));
        }
        if self.prepared.len() >= TX_PREPARED_MAX {
            return TxOutput::No(TxRefusal::Limit("prepared parts".into()));
        }
        if group == coordinator && self.records.len() >= TX_RECORDS_MAX {
            return TxOutput::No(TxRefusal::Limit("transaction records".into()));
        }
        let keys = part.keys();
        if let Some(refusal) = self.conflict(tx, &keys) {
            return TxOutput::No(refusal);
        }
        if let Err(refusal) = Self::check(part, store) {
            return TxOutput::No(refusal);
        }
        if let Err(c) = self.locks.lock_all(tx, keys.iter().copied()) {
            // Not reached: the conflict check above found every key free.
            return TxOutput::No(TxRefusal::Locked {
                key: c.key,
                holder: c.holder,
            });
        }
        self.prepared.insert(
            tx,
            Prepared {
                coordinator,
                at: index,
                writes: part.writes.clone(),
                locked: keys.iter().map(|k| (*k).to_string()).collect(),
            },
        );
        if group == coordinator {
            self.records.insert(
                tx,
                TxRecord::Pending {
                    participants: participants.to_vec(),
                },
            );
        }
        TxOutput::Prepared {
            at: index,
            reads: Self::read(part, store),
        }
    }

    fn decide(
        &mut self,
        index: u64,
        tx: TxId,
        outcome: Outcome,
        prepared: &[(GroupId, u64)],
        store: &mut KvStore,
    ) -> TxOutput {
        match self.records.get(&tx) {
            Some(TxRecord::Committed { prepared }) => {
                return TxOutput::Decided {
                    outcome: Outcome::Committed,
                    prepared: prepared.clone(),
                    reads: Vec::new(),
                }
            }
            Some(TxRecord::Pending { participants }) => {
                let others: Vec<GroupId> = participants.iter().skip(1).copied().collect();
                let named: Vec<GroupId> = prepared.iter().map(|(g, _)| *g).collect();
                if outcome == Outcome::Committed && named == others {
                    let own = self.prepared.remove(&tx);
                    if let Some(p) = &own {
                        Self::apply_writes(store, index, &p.writes);
                        self.release(tx, p);
                    }
                    self.records.insert(
                        tx,
                        TxRecord::Committed {
                            prepared: prepared.to_vec(),
                        },
                    );
                    self.remember(tx, Outcome::Committed);
                    return TxOutput::Decided {
                        outcome: Outcome::Committed,
                        prepared: prepared.to_vec(),
                        reads: Vec::new(),
                    };
                }
            }
            // No record: aborted (presumed abort), or committed and forgotten once every part
            // finished. A driver whose answer to its decision was lost asks again, possibly
            // after a resolver finished and forgot the transaction: it must hear the commit,
            // which the outcome cache still holds, not report an abort to its client.
            None if self.finished.get(tx) == Some(Outcome::Committed) => {
                return TxOutput::decided(Outcome::Committed);
            }
            None => {}
        }
        // Abort: asked for, or a commit without a pending record (presumed abort), or one
        // that does not name every other participant.
        self.records.remove(&tx);
        if let Some(p) = self.prepared.remove(&tx) {
            self.release(tx, &p);
            self.remember(tx, Outcome::Aborted);
        }
        TxOutput::decided(Outcome::Aborted)
    }

    fn finish(
        &mut self,
        index: u64,
        tx: TxId,
        outcome: Outcome,
        prepared_at: Option<u64>,
        store: &mut KvStore,
    ) {
        let Some(p) = self.prepared.remove(&tx) else {
            return; // finished already, or never prepared here: nothing to do
        };
        self.release(tx, &p);
        if outcome == Outcome::Committed && prepared_at == Some(p.at) {
            Self::apply_writes(store, index, &p.writes);
            self.remember(tx, Outcome::Committed);
        } else if outcome == Outcome::Aborted {
            self.remember(tx, Outcome::Aborted);
        }
        // A commit of a part prepared at another index: this part is a stale duplicate's,
        // dropped without remembering anything.
    }
}

#[cfg(test)]
mod tests;
