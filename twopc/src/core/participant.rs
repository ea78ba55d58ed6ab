//! The participant role: votes, holds prepared transactions, applies the decision, and asks for
//! it when in doubt.

use std::collections::{BTreeMap, BTreeSet};

use common::txn::{
    oldest_first, Backoff, Ledger, Outcome, Resource, SendBudget, TxError, TxId, Vote, Write,
};
use common::{NodeId, Outbox};

use crate::{Config, Event, InDoubt, Message, PeerStatus, Record, TwoPcNode};

/// A prepared transaction: durable, locked, waiting for the outcome.
#[derive(Clone, Debug)]
pub(crate) struct PreparedTx {
    coordinator: NodeId,
    peers: Vec<NodeId>,
    age_ticks: u64,
    /// Pacing of the query rounds: every `in_doubt_query_ticks` at first, doubling up to
    /// `resend_ticks_max`.
    query: Backoff,
    /// Query rounds sent so far without learning the outcome.
    rounds: u32,
    /// Peers that answered "prepared too" in the current round.
    prepared_peers: BTreeSet<NodeId>,
    blocked: bool,
}

/// The participant half of a node.
#[derive(Clone, Debug)]
pub(crate) struct Participant<R> {
    /// The resource, the outcomes remembered (bounded by
    /// `TxnConfig::decided_remembered_max`, oldest forgotten first) and the counters.
    pub(crate) ledger: Ledger<R>,
    pub(crate) prepared: BTreeMap<TxId, PreparedTx>,
}

impl<R: Resource + Default> Participant<R> {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            ledger: Ledger::new(R::default(), config.txn.decided_remembered_max),
            prepared: BTreeMap::new(),
        }
    }

    /// Replays one participant record.
    pub(crate) fn replay(&mut self, config: &Config, record: Record) -> Result<(), TxError> {
        match record {
            Record::Prepared {
                tx,
                coordinator,
                peers,
                writes,
            } => {
                let prepared = &mut self.prepared;
                self.ledger
                    .recover_locks(tx, writes, |holder| prepared.remove(&holder).is_some())?;
                self.prepared.insert(
                    tx,
                    PreparedTx {
                        coordinator,
                        peers,
                        age_ticks: 0,
                        // Ask for the outcome at the first tick after recovery.
                        query: Backoff::due_now(
                            config.in_doubt_query_ticks,
                            config.txn.resend_ticks_max,
                        ),
                        rounds: 0,
                        prepared_peers: BTreeSet::new(),
                        blocked: false,
                    },
                );
            }
            Record::Committed { tx } => {
                let was_prepared = self.prepared.remove(&tx).is_some();
                self.ledger
                    .replay_outcome(tx, Outcome::Committed, was_prepared)?;
            }
            Record::Aborted { tx } => {
                let was_prepared = self.prepared.remove(&tx).is_some();
                self.ledger
                    .replay_outcome(tx, Outcome::Aborted, was_prepared)?;
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn in_doubt(&self) -> Vec<InDoubt> {
        let mut v: Vec<InDoubt> = self
            .prepared
            .iter()
            .map(|(tx, p)| InDoubt {
                tx: *tx,
                age_ticks: p.age_ticks,
                blocked: p.blocked,
            })
            .collect();
        oldest_first(&mut v, |d| (d.age_ticks, d.tx));
        v
    }

    pub(crate) fn on_prepare(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        writes: Vec<Write>,
        peers: Vec<NodeId>,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        if tx.coordinator != from {
            return Err("prepare from a node that is not the transaction's coordinator");
        }
        let vote = match self
            .ledger
            .vote_again(tx, self.prepared.contains_key(&tx))?
        {
            Some(again) => again,
            // Nothing to write: nothing to do whatever the outcome, so it leaves now.
            None if writes.is_empty() => Vote::ReadOnly,
            None => self.vote(config, from, tx, writes, peers, out),
        };
        out.send(from, Message::Vote { tx, vote });
        Ok(())
    }

    /// Votes on a new transaction with writes here: No if it cannot take part (invalid peers, a
    /// full prepared table, a conflict), otherwise Yes once prepared and logged.
    fn vote(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        writes: Vec<Write>,
        peers: Vec<NodeId>,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Vote {
        if !config.txn.valid_peer_list(&peers)
            || self.prepared.len() >= config.txn.prepared_max
            || !self.ledger.try_prepare(tx, writes.clone())
        {
            // A participant that has not voted may abort on its own: it votes No. Remembered
            // (not logged) so a duplicate Prepare gets the same answer.
            self.ledger.refuse(tx);
            return Vote::No;
        }
        // Forced: the writes are durable before the Yes leaves (Outbox rule).
        out.persist(Record::Prepared {
            tx,
            coordinator: from,
            peers: peers.clone(),
            writes,
        });
        self.prepared.insert(
            tx,
            PreparedTx {
                coordinator: from,
                peers,
                age_ticks: 0,
                query: Backoff::new(config.in_doubt_query_ticks, config.txn.resend_ticks_max),
                rounds: 0,
                prepared_peers: BTreeSet::new(),
                blocked: false,
            },
        );
        Vote::Yes
    }

    pub(crate) fn on_one_phase(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        writes: Vec<Write>,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        if tx.coordinator != from {
            return Err("one-phase commit from a node that is not the coordinator");
        }
        if let Some(outcome) = self.ledger.decided.get(tx) {
            out.send(from, Message::OnePhaseResult { tx, outcome });
            return Ok(());
        }
        if self.prepared.contains_key(&tx) {
            return Err("one-phase commit of a prepared transaction");
        }
        let ok = self.prepared.len() < config.txn.prepared_max
            && self.ledger.try_prepare(tx, writes.clone());
        // The participant decides a one-phase commit, so it logs its decision either way: a
        // duplicate arriving after a crash must get the same answer, not a second execution.
        let outcome = if ok {
            out.persist(Record::Prepared {
                tx,
                coordinator: from,
                peers: vec![config.txn.id],
                writes,
            });
            out.persist(Record::Committed { tx });
            if self.ledger.resource.commit(tx).is_err() {
                return Err("resource refused to commit a prepared transaction");
            }
            self.ledger.applied += 1;
            Outcome::Committed
        } else {
            out.persist(Record::Aborted { tx });
            self.ledger.aborted += 1;
            Outcome::Aborted
        };
        self.ledger.decided.remember(tx, outcome);
        out.emit(Event::Finished { tx, outcome });
        out.send(from, Message::OnePhaseResult { tx, outcome });
        Ok(())
    }

    /// Applies the outcome of a prepared transaction: a commit's record is forced before the
    /// Ack; an abort's is not (presumed abort: nothing is acked, and if a crash loses it, the
    /// Prepared record makes us ask again after recovery, and the answer is still abort). Returns
    /// false if it was not prepared here.
    fn finish(&mut self, tx: TxId, outcome: Outcome, out: &mut Outbox<TwoPcNode<R>>) -> bool {
        if self.prepared.remove(&tx).is_none() {
            return false;
        }
        self.ledger.finish(tx, outcome, out);
        true
    }

    pub(crate) fn on_commit(
        &mut self,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        if tx.coordinator != from {
            return Err("commit from a node that is not the coordinator");
        }
        if self.finish(tx, Outcome::Committed, out) {
            out.send(from, Message::Ack { tx });
            return Ok(());
        }
        match self.ledger.decided.get(tx) {
            Some(Outcome::Committed) => {
                out.send(from, Message::Ack { tx });
                Ok(())
            }
            Some(Outcome::Aborted) => {
                self.ledger.decision_conflicts += 1;
                tracing::error!(%tx, "commit received for a transaction aborted here");
                Err("commit of an aborted transaction")
            }
            None => {
                // Committed here and forgotten since (decided memory is bounded): the ack is
                // what the coordinator needs to finish.
                out.send(from, Message::Ack { tx });
                Err("commit for an unknown transaction")
            }
        }
    }

    pub(crate) fn on_abort(
        &mut self,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        if tx.coordinator != from {
            return Err("abort from a node that is not the coordinator");
        }
        if self.finish(tx, Outcome::Aborted, out) {
            return Ok(());
        }
        match self.ledger.decided.get(tx) {
            // Legitimate and harmless: a coordinator that finished a commit and forgot it
            // answers a stale duplicate (a late Yes vote, an old decision request) with a
            // presumed Abort. The commit stands.
            Some(Outcome::Committed) => Err("stale presumed abort of a committed transaction"),
            Some(Outcome::Aborted) => Ok(()),
            None => {
                // The Abort overtook the Prepare: remember it so the Prepare is voted No.
                self.ledger.decided.remember(tx, Outcome::Aborted);
                Ok(())
            }
        }
    }

    pub(crate) fn on_status_query(
        &mut self,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        let status = if self.prepared.contains_key(&tx) {
            PeerStatus::Prepared
        } else {
            match self.ledger.decided.get(tx) {
                Some(Outcome::Committed) => PeerStatus::Committed,
                Some(Outcome::Aborted) => PeerStatus::Aborted,
                None => {
                    // We have not voted (we write in this transaction, or we would not be
                    // asked). By answering "aborted" we give up our right to vote Yes, so the
                    // refusal is logged before the answer leaves: a Prepare arriving later,
                    // even after a crash, is voted No.
                    out.persist(Record::Aborted { tx });
                    self.ledger.decided.remember(tx, Outcome::Aborted);
                    PeerStatus::Aborted
                }
            }
        };
        out.send(from, Message::StatusReply { tx, status });
        Ok(())
    }

    pub(crate) fn on_status_reply(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        status: PeerStatus,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        let Some(p) = self.prepared.get_mut(&tx) else {
            return Err("status reply for a transaction not in doubt here");
        };
        if !p.peers.contains(&from) {
            return Err("status reply from a non-participant");
        }
        match status {
            PeerStatus::Committed => {
                self.finish(tx, Outcome::Committed, out);
            }
            PeerStatus::Aborted => {
                self.finish(tx, Outcome::Aborted, out);
            }
            PeerStatus::Prepared => {
                p.prepared_peers.insert(from);
                let others = p.peers.iter().filter(|&&q| q != config.txn.id).count();
                if p.prepared_peers.len() >= others && !p.blocked {
                    p.blocked = true;
                    out.emit(Event::Blocked { tx });
                }
            }
        }
        Ok(())
    }

    /// One tick: in-doubt transactions ask for their outcome, in rounds paced by a [`Backoff`]
    /// within the node's per-tick [`SendBudget`].
    pub(crate) fn tick(
        &mut self,
        config: &Config,
        budget: &mut SendBudget,
        out: &mut Outbox<TwoPcNode<R>>,
    ) {
        for (&tx, p) in self.prepared.iter_mut() {
            p.age_ticks += 1;
            if !p.query.tick() {
                continue;
            }
            let peers = if config.cooperative_termination {
                p.peers.iter().filter(|q| **q != config.txn.id).count()
            } else {
                0
            };
            if !budget.take(1 + peers) {
                // Deferred: still due at the next tick.
                continue;
            }
            p.query.sent();
            // A whole round passed without an answer that decides: nobody reachable knows.
            if p.rounds > 0 && !p.blocked {
                p.blocked = true;
                out.emit(Event::Blocked { tx });
            }
            p.rounds = p.rounds.saturating_add(1);
            p.prepared_peers.clear();
            // A prepared participant never decides alone: it asks.
            out.send(p.coordinator, Message::DecisionRequest { tx });
            if config.cooperative_termination {
                for &q in &p.peers {
                    if q != config.txn.id {
                        out.send(q, Message::StatusQuery { tx });
                    }
                }
            }
        }
    }
}
