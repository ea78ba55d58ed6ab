//! The atomic-commit skeleton shared by `twopc` and `threepc`: everything but their phases and
//! termination rules.
//!
//! Both protocols decide one thing: whether every participant of a transaction applies its writes
//! or none does. What a transaction, a participant's resource, a client's request and the
//! bookkeeping around them *are* does not depend on the protocol, so it lives here:
//!
//! - [`TxId`]: a globally unique transaction id (the coordinator's node id plus a sequence number
//!   the coordinator never reuses, even across crashes), allocated by [`TxIds`], which reserves
//!   blocks of sequence numbers durably (`coordinator.rs`);
//! - [`Write`]: one staged write, and [`Vote`] / [`Outcome`]: what participants answer and what
//!   is decided;
//! - [`Request`], [`Response`] and [`TxError`]: what a client asks a coordinator and what it
//!   hears back, and [`AtomicCommit`]: what a protocol plugs into the shared code (its records,
//!   events and metrics) (`protocol.rs`);
//! - [`TxnConfig`]: the settings every node has, their checks, and participant validation
//!   (`config.rs`);
//! - [`Coordination`]: admitting a client's transaction and announcing decisions
//!   (`coordinator.rs`);
//! - [`Ledger`] and [`Decided`]: a participant's resource, the decided-outcome cache, finishing a
//!   transaction, replay and lock recovery (`participant.rs`);
//! - [`replay_records`] and [`reject`]: routing records to a node's roles at recovery, and
//!   counting and logging refused messages (`node.rs`);
//! - [`Locks`] and [`Tally`]: the no-wait lock table and the count of votes, the two rules that
//!   do not depend on where the protocol's steps run (`rules.rs`; `kv::shard` runs them inside
//!   Raft state machines);
//! - [`Resource`]: the local resource manager a participant drives (stage, prepare = validate and
//!   lock, commit, abort, re-take the locks of a prepared transaction after a crash);
//! - [`MemKv`]: an in-memory key-value resource with **no-wait locking**;
//! - [`Backoff`] and [`SendBudget`]: how often an unanswered message is resent, and how many
//!   resends one tick may carry (shared so both protocols pace retransmissions alike);
//! - [`TxClient`]: the async client of a coordinator running under the driver, for any protocol
//!   that implements [`AtomicCommit`] (`client.rs`, the only async module);
//! - `storm` and `suite` (feature `sim`): the simulations and tests both protocols run.
//!
//! # No-wait locking
//!
//! A prepare locks every key the transaction writes. If one of them is already locked by another
//! prepared transaction, the prepare does not wait: it fails, and the participant votes No. Waits
//! are what make deadlocks possible, so a resource that never waits never deadlocks; the price is
//! that conflicting transactions abort and the client retries. Production engines that keep
//! waiting (with deadlock detection or wound-wait) trade the other way.
//!
//! ```
//! use common::txn::{MemKv, PrepareError, Resource, TxId, Write};
//!
//! let mut kv = MemKv::default();
//! let (t1, t2) = (TxId::new(1, 0), TxId::new(1, 1));
//! kv.stage(t1, vec![Write::put("x", "1")]).unwrap();
//! kv.stage(t2, vec![Write::put("x", "2")]).unwrap();
//! kv.prepare(t1).unwrap();
//! // t2 conflicts with the prepared t1 on "x": no waiting, it fails at once.
//! assert_eq!(kv.prepare(t2), Err(PrepareError::Conflict { key: "x".into(), holder: t1 }));
//! kv.commit(t1).unwrap();
//! assert_eq!(kv.get("x"), Some(&b"1"[..]));
//! assert_eq!(kv.applied(), &[t1]);
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NodeId;

mod backoff;
#[cfg(feature = "runtime")]
mod client;
mod config;
mod coordinator;
mod node;
mod participant;
mod protocol;
mod rules;
#[cfg(feature = "sim")]
pub mod storm;
#[cfg(feature = "sim")]
pub mod suite;

pub use backoff::{Backoff, SendBudget};
#[cfg(feature = "runtime")]
pub use client::{ClientError, Transaction, TxClient};
pub use config::TxnConfig;
pub use coordinator::{Coordination, TxIds, SEQ_BLOCK};
pub use node::{reject, replay_records};
pub use participant::{oldest_first, Decided, Ledger};
pub use protocol::{AtomicCommit, Counters, Request, Response, TxError};
pub use rules::{LockConflict, Locks, Tally, TallyError};

/// A globally unique transaction id: the coordinator that started it and a sequence number that
/// coordinator never hands out twice (it reserves blocks of sequence numbers durably before using
/// them, so a restarted coordinator continues past every number it may have used).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxId {
    /// The coordinator's node id.
    pub coordinator: NodeId,
    /// The coordinator's sequence number for this transaction.
    pub seq: u64,
}

impl TxId {
    /// The id of transaction `seq` of `coordinator`.
    pub fn new(coordinator: NodeId, seq: u64) -> Self {
        Self { coordinator, seq }
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx{}.{}", self.coordinator, self.seq)
    }
}

/// One write of a transaction at one participant: set `key` to `value`, or delete it when
/// `value` is `None`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Write {
    /// The key written.
    pub key: String,
    /// The new value, or `None` to delete the key.
    pub value: Option<Vec<u8>>,
}

impl Write {
    /// A write setting `key` to `value`.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// A write deleting `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: None,
        }
    }
}

/// A participant's answer to "can you commit?".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Vote {
    /// Prepared: the writes are durable and locked; the participant will commit if told to and
    /// may no longer abort on its own.
    Yes,
    /// The participant refuses (conflict, invalid writes, out of room); the transaction aborts.
    No,
    /// The participant has nothing to write for this transaction: whatever the outcome, it has
    /// nothing to do, so it leaves the protocol now and gets no decision.
    ReadOnly,
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Every participant applies its writes.
    Committed,
    /// No participant applies any write.
    Aborted,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Committed => f.write_str("committed"),
            Outcome::Aborted => f.write_str("aborted"),
        }
    }
}

/// Why [`Resource::stage`] refused writes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// The transaction is already prepared or finished here: its writes can no longer change.
    #[error("{0} is already prepared or finished")]
    NotActive(TxId),
    /// The transaction writes more keys than the resource accepts.
    #[error("{tx} writes {writes} keys, more than the limit of {limit}")]
    TooManyWrites {
        /// The transaction.
        tx: TxId,
        /// How many writes it would have.
        writes: usize,
        /// [`MemKvLimits::writes_per_tx_max`].
        limit: usize,
    },
    /// A key or value is larger than the resource accepts.
    #[error("{tx}: a key or value exceeds {limit} bytes")]
    TooLarge {
        /// The transaction.
        tx: TxId,
        /// The size limit in bytes.
        limit: usize,
    },
    /// Too many transactions are staged or prepared at once.
    #[error("too many open transactions (limit {limit})")]
    Busy {
        /// [`MemKvLimits::open_txs_max`].
        limit: usize,
    },
}

/// Why [`Resource::prepare`] failed: the participant votes No.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// Nothing was staged for the transaction.
    #[error("{0} has nothing staged")]
    Unknown(TxId),
    /// A key is locked by another prepared transaction (no-wait locking: no waiting, vote No).
    #[error("key {key:?} is locked by {holder}")]
    Conflict {
        /// The contended key.
        key: String,
        /// The transaction holding its lock.
        holder: TxId,
    },
}

/// Why [`Resource::commit`] or [`Resource::recover_prepared`] failed. Either means the caller
/// broke the protocol (committing what was never prepared, re-locking a taken key), which a
/// participant reports instead of panicking.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The transaction is not prepared here.
    #[error("{0} is not prepared")]
    NotPrepared(TxId),
    /// Recovery found a key locked twice, which a correct log never contains.
    #[error("recovering {tx}: key {key:?} is already locked by {holder}")]
    LockTaken {
        /// The transaction being recovered.
        tx: TxId,
        /// The key.
        key: String,
        /// Its current holder.
        holder: TxId,
    },
}

/// The local resource manager a participant drives (the XA "RM"): it holds the participant's data
/// and knows nothing of the protocol. The participant calls it in this order for each
/// transaction: [`stage`](Resource::stage) (any number of times), then
/// [`prepare`](Resource::prepare), then exactly one of [`commit`](Resource::commit) or
/// [`abort`](Resource::abort). `abort` may also come before `prepare`.
///
/// Durability is the participant's job, not the resource's: the participant logs the staged
/// writes of a prepared transaction and, after a crash, rebuilds a fresh resource by replaying
/// committed transactions ([`Resource::recover_prepared`] then [`Resource::commit`]) and re-taking
/// the locks of those still in doubt ([`Resource::recover_prepared`]).
pub trait Resource: Send + 'static {
    /// Adds writes to transaction `tx` (not yet visible, not locked).
    fn stage(&mut self, tx: TxId, writes: Vec<Write>) -> Result<(), StageError>;

    /// Validates and locks everything `tx` writes; on success the transaction is prepared and
    /// holds its locks until `commit` or `abort`. Never waits: a conflicting lock fails at once.
    fn prepare(&mut self, tx: TxId) -> Result<(), PrepareError>;

    /// Applies a prepared transaction's writes and releases its locks.
    fn commit(&mut self, tx: TxId) -> Result<(), ResourceError>;

    /// Drops `tx`'s staged writes and releases its locks, if any. Unknown transactions are
    /// ignored (presumed abort).
    fn abort(&mut self, tx: TxId);

    /// Re-creates a prepared transaction from its logged writes (after a crash), taking its locks.
    fn recover_prepared(&mut self, tx: TxId, writes: Vec<Write>) -> Result<(), ResourceError>;

    /// The writes staged or prepared for `tx`, if it is open here.
    fn staged(&self, tx: TxId) -> Option<&[Write]>;

    /// Whether `tx` is prepared (holds its locks) here.
    fn is_prepared(&self, tx: TxId) -> bool;
}

/// Default for [`MemKvLimits::writes_per_tx_max`].
pub const WRITES_PER_TX_MAX_DEFAULT: usize = 1024;
/// Default for [`MemKvLimits::open_txs_max`].
pub const OPEN_TXS_MAX_DEFAULT: usize = 4096;
/// Default for [`MemKvLimits::item_bytes_max`].
pub const ITEM_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Default for [`MemKvLimits::applied_history_max`].
pub const APPLIED_HISTORY_MAX_DEFAULT: usize = 1 << 20;

/// Limits of a [`MemKv`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemKvLimits {
    /// Most writes one transaction may stage.
    pub writes_per_tx_max: usize,
    /// Most transactions staged or prepared at once.
    pub open_txs_max: usize,
    /// Largest key or value, in bytes.
    pub item_bytes_max: usize,
    /// How many applied transaction ids [`MemKv::applied`] remembers (oldest forgotten first).
    pub applied_history_max: usize,
}

impl Default for MemKvLimits {
    fn default() -> Self {
        Self {
            writes_per_tx_max: WRITES_PER_TX_MAX_DEFAULT,
            open_txs_max: OPEN_TXS_MAX_DEFAULT,
            item_bytes_max: ITEM_BYTES_MAX_DEFAULT,
            applied_history_max: APPLIED_HISTORY_MAX_DEFAULT,
        }
    }
}

#[derive(Clone, Debug)]
struct OpenTx {
    writes: Vec<Write>,
    prepared: bool,
}

/// An in-memory key-value [`Resource`] with no-wait locking (see the module documentation).
///
/// Besides the data it keeps the ids of the transactions it applied, in order
/// ([`MemKv::applied`]): that is its commit history, which the atomic-commit checker reads to
/// verify that every committed transaction is applied exactly once.
#[derive(Clone, Debug, Default)]
pub struct MemKv {
    limits: MemKvLimits,
    data: BTreeMap<String, Vec<u8>>,
    open: BTreeMap<TxId, OpenTx>,
    locks: Locks,
    applied: VecDeque<TxId>,
}

impl MemKv {
    /// An empty store with the given limits.
    pub fn with_limits(limits: MemKvLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The committed value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
    }

    /// Every committed key and value.
    pub fn data(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.data
    }

    /// The transactions applied here, oldest first (at most
    /// [`MemKvLimits::applied_history_max`] of them).
    pub fn applied(&self) -> &VecDeque<TxId> {
        &self.applied
    }

    /// The holder of `key`'s lock, if any.
    pub fn lock_holder(&self, key: &str) -> Option<TxId> {
        self.locks.holder(key)
    }

    /// Transactions staged or prepared here.
    pub fn open_txs(&self) -> usize {
        self.open.len()
    }

    fn lock_all(&mut self, tx: TxId, writes: &[Write]) -> Result<(), LockConflict> {
        self.locks
            .lock_all(tx, writes.iter().map(|w| w.key.as_str()))
    }

    fn unlock_all(&mut self, tx: TxId, writes: &[Write]) {
        self.locks
            .unlock_all(tx, writes.iter().map(|w| w.key.as_str()));
    }

    fn record_applied(&mut self, tx: TxId) {
        self.applied.push_back(tx);
        while self.applied.len() > self.limits.applied_history_max {
            self.applied.pop_front();
        }
    }
}

impl Resource for MemKv {
    fn stage(&mut self, tx: TxId, writes: Vec<Write>) -> Result<(), StageError> {
        let limit = self.limits.item_bytes_max;
        if writes
            .iter()
            .any(|w| w.key.len() > limit || w.value.as_ref().is_some_and(|v| v.len() > limit))
        {
            return Err(StageError::TooLarge { tx, limit });
        }
        if !self.open.contains_key(&tx) && self.open.len() >= self.limits.open_txs_max {
            return Err(StageError::Busy {
                limit: self.limits.open_txs_max,
            });
        }
        let open = self.open.entry(tx).or_insert_with(|| OpenTx {
            writes: Vec::new(),
            prepared: false,
        });
        if open.prepared {
            return Err(StageError::NotActive(tx));
        }
        let total = open.writes.len() + writes.len();
        if total > self.limits.writes_per_tx_max {
            return Err(StageError::TooManyWrites {
                tx,
                writes: total,
                limit: self.limits.writes_per_tx_max,
            });
        }
        open.writes.extend(writes);
        Ok(())
    }

    fn prepare(&mut self, tx: TxId) -> Result<(), PrepareError> {
        let Some(open) = self.open.get(&tx) else {
            return Err(PrepareError::Unknown(tx));
        };
        if open.prepared {
            return Ok(());
        }
        let writes = open.writes.clone();
        self.lock_all(tx, &writes)
            .map_err(|LockConflict { key, holder }| PrepareError::Conflict { key, holder })?;
        if let Some(open) = self.open.get_mut(&tx) {
            open.prepared = true;
        }
        Ok(())
    }

    fn commit(&mut self, tx: TxId) -> Result<(), ResourceError> {
        match self.open.get(&tx) {
            Some(open) if open.prepared => {}
            _ => return Err(ResourceError::NotPrepared(tx)),
        }
        let Some(open) = self.open.remove(&tx) else {
            return Err(ResourceError::NotPrepared(tx));
        };
        self.unlock_all(tx, &open.writes);
        for w in open.writes {
            match w.value {
                Some(v) => {
                    self.data.insert(w.key, v);
                }
                None => {
                    self.data.remove(&w.key);
                }
            }
        }
        self.record_applied(tx);
        Ok(())
    }

    fn abort(&mut self, tx: TxId) {
        if let Some(open) = self.open.remove(&tx) {
            if open.prepared {
                self.unlock_all(tx, &open.writes);
            }
        }
    }

    fn recover_prepared(&mut self, tx: TxId, writes: Vec<Write>) -> Result<(), ResourceError> {
        self.lock_all(tx, &writes)
            .map_err(|LockConflict { key, holder }| ResourceError::LockTaken { tx, key, holder })?;
        self.open.insert(
            tx,
            OpenTx {
                writes,
                prepared: true,
            },
        );
        Ok(())
    }

    fn staged(&self, tx: TxId) -> Option<&[Write]> {
        self.open.get(&tx).map(|o| o.writes.as_slice())
    }

    fn is_prepared(&self, tx: TxId) -> bool {
        self.open.get(&tx).is_some_and(|o| o.prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seq: u64) -> TxId {
        TxId::new(9, seq)
    }

    #[test]
    fn commit_applies_and_releases_locks() {
        let mut kv = MemKv::default();
        kv.stage(t(1), vec![Write::put("a", "1"), Write::delete("b")])
            .unwrap();
        assert!(!kv.is_prepared(t(1)));
        assert_eq!(kv.lock_holder("a"), None, "staging takes no lock");
        kv.prepare(t(1)).unwrap();
        assert!(kv.is_prepared(t(1)));
        assert_eq!(kv.lock_holder("a"), Some(t(1)));
        assert_eq!(kv.get("a"), None, "prepared writes are not visible");
        kv.commit(t(1)).unwrap();
        assert_eq!(kv.get("a"), Some(&b"1"[..]));
        assert_eq!(kv.lock_holder("a"), None);
        assert_eq!(kv.applied(), &[t(1)]);
        assert_eq!(kv.open_txs(), 0);
    }

    #[test]
    fn conflicting_prepare_fails_without_waiting_and_abort_frees() {
        let mut kv = MemKv::default();
        kv.stage(t(1), vec![Write::put("a", "1")]).unwrap();
        kv.stage(t(2), vec![Write::put("a", "2")]).unwrap();
        kv.prepare(t(1)).unwrap();
        assert_eq!(
            kv.prepare(t(2)),
            Err(PrepareError::Conflict {
                key: "a".into(),
                holder: t(1)
            })
        );
        assert!(!kv.is_prepared(t(2)), "a failed prepare takes no lock");
        kv.abort(t(1));
        assert_eq!(kv.lock_holder("a"), None);
        kv.prepare(t(2)).unwrap();
        kv.commit(t(2)).unwrap();
        assert_eq!(kv.get("a"), Some(&b"2"[..]));
        assert_eq!(kv.applied(), &[t(2)]);
    }

    #[test]
    fn commit_of_unprepared_is_an_error_not_a_panic() {
        let mut kv = MemKv::default();
        assert_eq!(kv.commit(t(1)), Err(ResourceError::NotPrepared(t(1))));
        kv.stage(t(1), vec![Write::put("a", "1")]).unwrap();
        assert_eq!(kv.commit(t(1)), Err(ResourceError::NotPrepared(t(1))));
        assert!(kv.applied().is_empty());
    }

    #[test]
    fn recover_prepared_retakes_locks() {
        let mut kv = MemKv::default();
        kv.recover_prepared(t(1), vec![Write::put("a", "1")])
            .unwrap();
        assert_eq!(kv.lock_holder("a"), Some(t(1)));
        assert_eq!(
            kv.recover_prepared(t(2), vec![Write::put("a", "2")]),
            Err(ResourceError::LockTaken {
                tx: t(2),
                key: "a".into(),
                holder: t(1)
            })
        );
        kv.stage(t(3), vec![Write::put("a", "3")]).unwrap();
        assert!(kv.prepare(t(3)).is_err());
        kv.commit(t(1)).unwrap();
        assert_eq!(kv.get("a"), Some(&b"1"[..]));
    }

    #[test]
    fn limits_are_enforced() {
        let mut kv = MemKv::with_limits(MemKvLimits {
            writes_per_tx_max: 1,
            open_txs_max: 1,
            item_bytes_max: 4,
            applied_history_max: 1,
        });
        assert!(matches!(
            kv.stage(t(1), vec![Write::put("a", "1"), Write::put("b", "2")]),
            Err(StageError::TooManyWrites { .. })
        ));
        assert!(matches!(
            kv.stage(t(1), vec![Write::put("abcde", "1")]),
            Err(StageError::TooLarge { .. })
        ));
        kv.stage(t(1), vec![Write::put("a", "1")]).unwrap();
        assert!(matches!(
            kv.stage(t(2), vec![Write::put("b", "1")]),
            Err(StageError::Busy { .. })
        ));
        kv.prepare(t(1)).unwrap();
        assert!(matches!(
            kv.stage(t(1), vec![]),
            Err(StageError::NotActive(_))
        ));
        kv.commit(t(1)).unwrap();
        kv.stage(t(2), vec![Write::put("b", "1")]).unwrap();
        kv.prepare(t(2)).unwrap();
        kv.commit(t(2)).unwrap();
        assert_eq!(kv.applied(), &[t(2)], "history keeps only the newest");
    }
}
