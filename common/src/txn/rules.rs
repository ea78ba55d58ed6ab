//! The rules of atomic commit that do not depend on where its steps run: the no-wait lock
//! table ([`Locks`]) and the count of votes ([`Tally`]). `twopc` and `threepc` run them inside
//! their nodes, with messages between; `kv::shard` runs them inside Raft state machines and its
//! transaction driver, with log entries between. One copy of each rule serves all three.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Outcome, TxId, Vote};

/// A key another transaction holds: why [`Locks::lock_all`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockConflict {
    /// The contended key.
    pub key: String,
    /// The transaction holding its lock.
    pub holder: TxId,
}

/// A no-wait lock table (see "No-wait locking" in the module documentation): each key is
/// locked by at most one transaction, and a transaction that finds one of its keys locked by
/// another fails at once, taking nothing, instead of waiting. Nobody waits, so nobody
/// deadlocks.
///
/// ```
/// use common::txn::{Locks, TxId};
///
/// let (t1, t2) = (TxId::new(1, 0), TxId::new(1, 1));
/// let mut locks = Locks::default();
/// locks.lock_all(t1, ["x", "y"]).unwrap();
/// let refused = locks.lock_all(t2, ["a", "y"]).unwrap_err();
/// assert_eq!((refused.key.as_str(), refused.holder), ("y", t1));
/// assert_eq!(locks.holder("a"), None, "a refused transaction takes nothing");
/// locks.unlock_all(t1, ["x", "y"]);
/// assert!(locks.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Locks {
    held: BTreeMap<String, TxId>,
}

impl Locks {
    /// The transaction holding `key`'s lock.
    pub fn holder(&self, key: &str) -> Option<TxId> {
        self.held.get(key).copied()
    }

    /// The first of `keys` locked by a transaction other than `tx`.
    pub fn conflict<'k>(
        &self,
        tx: TxId,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Option<LockConflict> {
        keys.into_iter().find_map(|key| {
            self.holder(key)
                .filter(|holder| *holder != tx)
                .map(|holder| LockConflict {
                    key: key.to_string(),
                    holder,
                })
        })
    }

    /// Locks every one of `keys` for `tx` (keys it holds already stay held), or, if another
    /// transaction holds one of them, none.
    pub fn lock_all<'k, I>(&mut self, tx: TxId, keys: I) -> Result<(), LockConflict>
    where
        I: IntoIterator<Item = &'k str>,
        I::IntoIter: Clone,
    {
        let keys = keys.into_iter();
        if let Some(conflict) = self.conflict(tx, keys.clone()) {
            return Err(conflict);
        }
        for key in keys {
            self.held.insert(key.to_string(), tx);
        }
        Ok(())
    }

    /// Releases those of `keys` that `tx` holds (a key another transaction holds stays
    /// held).
    pub fn unlock_all<'k>(&mut self, tx: TxId, keys: impl IntoIterator<Item = &'k str>) {
        for key in keys {
            if self.holder(key) == Some(tx) {
                self.held.remove(key);
            }
        }
    }

    /// Whether no key is locked.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// How many keys are locked.
    pub fn len(&self) -> usize {
        self.held.len()
    }
}

/// Why [`Tally::record`] did not count a vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TallyError {
    /// The voter does not take part in the transaction.
    #[error("vote from a non-participant")]
    NotParticipant,
    /// The voter has voted already (its first vote stands).
    #[error("duplicate vote")]
    Duplicate,
}

impl TallyError {
    /// The error as a static string, for protocols that report refused messages so.
    pub fn as_str(self) -> &'static str {
        match self {
            TallyError::NotParticipant => "vote from a non-participant",
            TallyError::Duplicate => "duplicate vote",
        }
    }
}

/// The votes of one transaction's participants, and the rule that decides from them: one No
/// aborts at once; a Yes or ReadOnly from every participant commits. Participants are named by
/// whatever the protocol names them by (node ids in `twopc` and `threepc`, group ids in
/// `kv::shard`).
///
/// ```
/// use common::txn::{Outcome, Tally, Vote};
///
/// let mut tally = Tally::new([1u64, 2, 3]);
/// assert_eq!(tally.record(1, Vote::Yes), Ok(None));
/// assert_eq!(tally.record(3, Vote::ReadOnly), Ok(None));
/// assert_eq!(tally.missing(), vec![2]);
/// assert_eq!(tally.record(2, Vote::Yes), Ok(Some(Outcome::Committed)));
/// // Only the Yes voters hold anything and must learn the outcome.
/// assert_eq!(tally.voted_yes(), vec![1, 2]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally<P: Ord> {
    participants: BTreeSet<P>,
    votes: BTreeMap<P, Vote>,
}

impl<P: Ord + Copy> Tally<P> {
    /// A tally of no votes yet among `participants`.
    pub fn new(participants: impl IntoIterator<Item = P>) -> Self {
        Self {
            participants: participants.into_iter().collect(),
            votes: BTreeMap::new(),
        }
    }

    /// Counts `from`'s vote, and answers the outcome once the votes decide it: `Aborted` at the
    /// first No, `Committed` when every participant has voted Yes or ReadOnly.
    pub fn record(&mut self, from: P, vote: Vote) -> Result<Option<Outcome>, TallyError> {
        if !self.participants.contains(&from) {
            return Err(TallyError::NotParticipant);
        }
        if self.votes.contains_key(&from) {
            return Err(TallyError::Duplicate);
        }
        self.votes.insert(from, vote);
        Ok(self.outcome())
    }

    /// The outcome the votes so far decide, if they decide one.
    pub fn outcome(&self) -> Option<Outcome> {
        if self.votes.values().any(|v| *v == Vote::No) {
            Some(Outcome::Aborted)
        } else if self.votes.len() == self.participants.len() {
            Some(Outcome::Committed)
        } else {
            None
        }
    }

    /// The participants that voted Yes: they hold prepared state and must learn the outcome.
    /// Empty once every vote is in: the transaction wrote nothing anywhere.
    pub fn voted_yes(&self) -> Vec<P> {
        self.votes
            .iter()
            .filter(|(_, v)| **v == Vote::Yes)
            .map(|(p, _)| *p)
            .collect()
    }

    /// The participants that may hold prepared state when the transaction aborts: all but
    /// those that voted No or ReadOnly (which hold nothing).
    pub fn may_be_prepared(&self) -> Vec<P> {
        self.participants
            .iter()
            .filter(|p| !matches!(self.votes.get(p), Some(Vote::No | Vote::ReadOnly)))
            .copied()
            .collect()
    }

    /// The participants that have not voted yet.
    pub fn missing(&self) -> Vec<P> {
        self.participants
            .iter()
            .filter(|p| !self.votes.contains_key(p))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    fn t(seq: u64) -> TxId {
        TxId::new(7, seq)
    }

    #[test]
    fn lock_all_is_all_or_nothing_and_reentrant() {
        let mut locks = Locks::default();
        locks.lock_all(t(1), ["a", "b"]).unwrap();
        locks.lock_all(t(1), ["b", "c"]).unwrap();
        assert_eq!(locks.len(), 3, "a holder may lock its own keys again");
        assert_eq!(
            locks.lock_all(t(2), ["d", "c"]),
            Err(LockConflict {
                key: "c".into(),
                holder: t(1)
            })
        );
        assert_eq!(locks.holder("d"), None, "nothing is taken on a conflict");
        assert_eq!(locks.conflict(t(1), ["a", "b", "c"]), None);
    }

    #[test]
    fn unlock_all_releases_only_the_holders_keys() {
        let mut locks = Locks::default();
        locks.lock_all(t(1), ["a"]).unwrap();
        locks.lock_all(t(2), ["b"]).unwrap();
        locks.unlock_all(t(1), ["a", "b"]);
        assert_eq!(locks.holder("a"), None);
        assert_eq!(
            locks.holder("b"),
            Some(t(2)),
            "another's lock is not released"
        );
    }

    #[test]
    fn locks_serialize_as_a_plain_map() {
        let mut locks = Locks::default();
        locks.lock_all(t(1), ["a"]).unwrap();
        let mut map = BTreeMap::new();
        map.insert("a".to_string(), t(1));
        let codec = crate::codec::Bincode;
        assert_eq!(
            codec.encode(&locks).unwrap(),
            codec.encode(&map).unwrap(),
            "snapshots taken before the lock table had a type of its own still decode"
        );
    }

    #[test]
    fn one_no_aborts_at_once() {
        let mut tally = Tally::new([1u64, 2, 3]);
        assert_eq!(tally.record(1, Vote::Yes), Ok(None));
        assert_eq!(tally.record(2, Vote::No), Ok(Some(Outcome::Aborted)));
        assert_eq!(
            tally.may_be_prepared(),
            vec![1, 3],
            "3 may have prepared unheard"
        );
        assert_eq!(tally.outcome(), Some(Outcome::Aborted));
    }

    #[test]
    fn every_yes_or_read_only_commits() {
        let mut tally = Tally::new([1u64, 2]);
        assert_eq!(tally.record(1, Vote::ReadOnly), Ok(None));
        assert_eq!(
            tally.record(2, Vote::ReadOnly),
            Ok(Some(Outcome::Committed))
        );
        assert!(
            tally.voted_yes().is_empty(),
            "a read-only transaction: nobody to tell"
        );
    }

    #[test]
    fn strangers_and_duplicates_are_refused_and_change_nothing() {
        let mut tally = Tally::new([1u64, 2]);
        assert_eq!(tally.record(9, Vote::No), Err(TallyError::NotParticipant));
        assert_eq!(tally.record(1, Vote::Yes), Ok(None));
        assert_eq!(tally.record(1, Vote::No), Err(TallyError::Duplicate));
        assert_eq!(tally.outcome(), None, "the first vote stands");
        assert_eq!(tally.missing(), vec![2]);
    }
}
