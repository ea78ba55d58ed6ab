//! The participant's side of the skeleton: the decided-outcome cache ([`Decided`]) and
//! [`Ledger`], which holds the resource and applies what both protocols do alike: stage and lock
//! for a vote, finish a transaction with its outcome (durably, in the resource, counted,
//! published), replay outcomes, and re-take the locks of a voted transaction after a crash.
//! Which transactions are undecided, and how their outcome is learned, is the protocol's.

use std::collections::{BTreeMap, VecDeque};

use super::{AtomicCommit, Outcome, Resource, ResourceError, TxError, TxId, Vote, Write};
use crate::Outbox;

/// The outcomes of recent transactions, to answer duplicates and peers: at most a fixed number
/// of them, the oldest forgotten first. Serializable, for state machines that keep it in their
/// snapshots (`kv::shard`'s transaction table).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decided {
    outcomes: BTreeMap<TxId, Outcome>,
    order: VecDeque<TxId>,
    max: usize,
}

impl Decided {
    /// An empty cache remembering at most `max` outcomes.
    pub fn new(max: usize) -> Self {
        Self {
            outcomes: BTreeMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    /// The transactions remembered, oldest first.
    pub fn order(&self) -> &VecDeque<TxId> {
        &self.order
    }

    /// The remembered outcome of `tx`.
    pub fn get(&self, tx: TxId) -> Option<Outcome> {
        self.outcomes.get(&tx).copied()
    }

    /// The answer to a repeated request to vote on `tx`, if it was voted on here already: Yes
    /// again while it is `undecided` here (its vote is durable; the first Yes was lost or is
    /// late), No again if it was refused or aborted. A request to vote on a transaction
    /// committed here is out of place. `None`: not voted on here yet.
    pub fn vote_again(&self, tx: TxId, undecided: bool) -> Result<Option<Vote>, &'static str> {
        if undecided {
            return Ok(Some(Vote::Yes));
        }
        match self.get(tx) {
            Some(Outcome::Aborted) => Ok(Some(Vote::No)),
            Some(Outcome::Committed) => Err("request to vote after commit"),
            None => Ok(None),
        }
    }

    /// Remembers the outcome of `tx` (the first one given stays), forgetting the oldest beyond
    /// the bound.
    pub fn remember(&mut self, tx: TxId, outcome: Outcome) {
        if self.outcomes.insert(tx, outcome).is_none() {
            self.order.push_back(tx);
            while self.order.len() > self.max {
                if let Some(old) = self.order.pop_front() {
                    self.outcomes.remove(&old);
                }
            }
        }
    }
}

/// What every participant keeps whatever its protocol: its resource, the outcomes it
/// remembers, and its counters.
#[derive(Clone, Debug)]
pub struct Ledger<R> {
    /// The local resource manager (the participant's data).
    pub resource: R,
    /// Outcomes of recent transactions.
    pub decided: Decided,
    /// Transactions committed here.
    pub applied: u64,
    /// Transactions aborted here (or voted No).
    pub aborted: u64,
    /// Decisions received that contradicted one taken here.
    pub decision_conflicts: u64,
}

impl<R: Resource> Ledger<R> {
    /// A ledger over `resource` remembering up to `decided_remembered_max` outcomes.
    pub fn new(resource: R, decided_remembered_max: usize) -> Self {
        Self {
            resource,
            decided: Decided::new(decided_remembered_max),
            applied: 0,
            aborted: 0,
            decision_conflicts: 0,
        }
    }

    /// The answer to a repeated request to vote on `tx`: see [`Decided::vote_again`].
    pub fn vote_again(&self, tx: TxId, undecided: bool) -> Result<Option<Vote>, &'static str> {
        self.decided.vote_again(tx, undecided)
    }

    /// Stages and locks `writes` for `tx`; true if the transaction is prepared in the resource.
    /// On failure nothing of it is left in the resource.
    pub fn try_prepare(&mut self, tx: TxId, writes: Vec<Write>) -> bool {
        if self.resource.stage(tx, writes).is_err() || self.resource.prepare(tx).is_err() {
            self.resource.abort(tx);
            return false;
        }
        true
    }

    /// A participant that has not voted refuses (it may abort on its own): the refusal is
    /// remembered, so a duplicate request to vote gets the same answer, and counted.
    pub fn refuse(&mut self, tx: TxId) {
        self.decided.remember(tx, Outcome::Aborted);
        self.aborted += 1;
    }

    /// Applies the outcome of a transaction voted here (the caller has just removed it from its
    /// undecided ones). A commit's record is forced before anything the step sends (the Outbox
    /// rule), so an acknowledgement never precedes it; an abort's record goes out with nothing
    /// waiting on it. Then the resource applies or drops the writes, and the outcome is counted,
    /// remembered and published.
    pub fn finish<N: AtomicCommit>(&mut self, tx: TxId, outcome: Outcome, out: &mut Outbox<N>) {
        match outcome {
            Outcome::Committed => {
                out.persist(N::committed_record(tx));
                if self.resource.commit(tx).is_err() {
                    tracing::error!(%tx, "resource refused to commit a prepared transaction");
                }
                self.applied += 1;
            }
            Outcome::Aborted => {
                out.persist(N::aborted_record(tx));
                self.resource.abort(tx);
                self.aborted += 1;
            }
        }
        self.decided.remember(tx, outcome);
        out.emit(N::finished_event(tx, outcome));
    }

    /// Replays an outcome record: when `tx` was undecided here (`was_undecided`), its writes are
    /// applied or dropped again; either way the outcome is remembered.
    pub fn replay_outcome(
        &mut self,
        tx: TxId,
        outcome: Outcome,
        was_undecided: bool,
    ) -> Result<(), TxError> {
        if was_undecided {
            match outcome {
                Outcome::Committed => {
                    self.resource
                        .commit(tx)
                        .map_err(|e| TxError::Recovery(e.to_string()))?;
                    self.applied += 1;
                }
                Outcome::Aborted => self.resource.abort(tx),
            }
        }
        self.decided.remember(tx, outcome);
        Ok(())
    }

    /// Re-takes the locks of a transaction logged as voted Yes.
    ///
    /// A key may still be locked by an older transaction that the log shows voted and not
    /// finished. That older transaction was aborted: it must have released the key before this
    /// one could lock it (no-wait locking), and had it committed, its commit record would precede
    /// this one's vote record. Its abort record is missing because aborts are not forced, so the
    /// crash lost it. `release(holder)` drops it from the caller's undecided transactions (false
    /// if it was not there); it is then aborted here and remembered so.
    pub fn recover_locks(
        &mut self,
        tx: TxId,
        writes: Vec<Write>,
        mut release: impl FnMut(TxId) -> bool,
    ) -> Result<(), TxError> {
        for _ in 0..=writes.len() {
            match self.resource.recover_prepared(tx, writes.clone()) {
                Ok(()) => return Ok(()),
                Err(ResourceError::LockTaken { holder, .. }) if holder != tx && release(holder) => {
                    self.resource.abort(holder);
                    self.decided.remember(holder, Outcome::Aborted);
                }
                Err(e) => return Err(TxError::Recovery(e.to_string())),
            }
        }
        Err(TxError::Recovery(format!(
            "{tx}: could not re-take its locks"
        )))
    }
}

/// Sorts a participant's undecided transactions for its metrics: oldest first (by `age`), then
/// by id.
pub fn oldest_first<T>(items: &mut [T], key: impl Fn(&T) -> (u64, TxId)) {
    items.sort_by(|a, b| {
        let (age_a, tx_a) = key(a);
        let (age_b, tx_b) = key(b);
        age_b.cmp(&age_a).then(tx_a.cmp(&tx_b))
    });
}
