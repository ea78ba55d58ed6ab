//! The participant role: votes, holds prepared transactions, applies the decision, and asks for
//! it when in doubt.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::txn::{Backoff, Outcome, Resource, ResourceError, SendBudget, TxId, Vote, Write};
use common::{NodeId, Outbox};

use crate::types::{Config, Event, InDoubt, Message, PeerStatus, Record};
use crate::{TwoPcError, TwoPcNode};

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
    pub(crate) resource: R,
    pub(crate) prepared: BTreeMap<TxId, PreparedTx>,
    /// Outcomes of recent transactions, to answer duplicates and peers (bounded by
    /// `Config::decided_remembered_max`, oldest forgotten first).
    decided: BTreeMap<TxId, Outcome>,
    decided_order: VecDeque<TxId>,
    pub(crate) applied: u64,
    pub(crate) aborted: u64,
    pub(crate) decision_conflicts: u64,
}

impl<R: Resource + Default> Participant<R> {
    pub(crate) fn new() -> Self {
        Self {
            resource: R::default(),
            prepared: BTreeMap::new(),
            decided: BTreeMap::new(),
            decided_order: VecDeque::new(),
            applied: 0,
            aborted: 0,
            decision_conflicts: 0,
        }
    }

    fn remember(&mut self, config: &Config, tx: TxId, outcome: Outcome) {
        if self.decided.insert(tx, outcome).is_none() {
            self.decided_order.push_back(tx);
            while self.decided_order.len() > config.decided_remembered_max {
                if let Some(old) = self.decided_order.pop_front() {
                    self.decided.remove(&old);
                }
            }
        }
    }

    /// Replays one participant record.
    pub(crate) fn replay(&mut self, config: &Config, record: Record) -> Result<(), TwoPcError> {
        match record {
            Record::Prepared {
                tx,
                coordinator,
                peers,
                writes,
            } => {
                self.recover_prepared(config, tx, writes)?;
                self.prepared.insert(
                    tx,
                    PreparedTx {
                        coordinator,
                        peers,
                        age_ticks: 0,
                        // Ask for the outcome at the first tick after recovery.
                        query: Backoff::due_now(
                            config.in_doubt_query_ticks,
                            config.resend_ticks_max,
                        ),
                        rounds: 0,
                        prepared_peers: BTreeSet::new(),
                        blocked: false,
                    },
                );
            }
            Record::Committed { tx } => {
                if self.prepared.remove(&tx).is_some() {
                    self.resource
                        .commit(tx)
                        .map_err(|e| TwoPcError::Recovery(e.to_string()))?;
                    self.applied += 1;
                }
                self.remember(config, tx, Outcome::Committed);
            }
            Record::Aborted { tx } => {
                if self.prepared.remove(&tx).is_some() {
                    self.resource.abort(tx);
                }
                self.remember(config, tx, Outcome::Aborted);
            }
            _ => {}
        }
        Ok(())
    }

    /// Re-takes the locks of a transaction logged as prepared.
    ///
    /// A key may still be locked by an older transaction that the log shows prepared and not
    /// finished. That older transaction was aborted: it must have released the key before this
    /// one could lock it (no-wait locking), and had it committed, its `Committed` record would
    /// precede this `Prepared` record. Its abort record is missing because aborts are not forced
    /// (presumed abort), so the crash lost it; it is released here.
    fn recover_prepared(
        &mut self,
        config: &Config,
        tx: TxId,
        writes: Vec<Write>,
    ) -> Result<(), TwoPcError> {
        for _ in 0..=writes.len() {
            match self.resource.recover_prepared(tx, writes.clone()) {
                Ok(()) => return Ok(()),
                Err(ResourceError::LockTaken { holder, .. })
                    if holder != tx && self.prepared.remove(&holder).is_some() =>
                {
                    self.resource.abort(holder);
                    self.remember(config, holder, Outcome::Aborted);
                }
                Err(e) => return Err(TwoPcError::Recovery(e.to_string())),
            }
        }
        Err(TwoPcError::Recovery(format!(
            "{tx}: could not re-take its locks"
        )))
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
        v.sort_by(|a, b| b.age_ticks.cmp(&a.age_ticks).then(a.tx.cmp(&b.tx)));
        v
    }

    /// Stages and locks; `Ok(())` if the transaction is prepared in the resource.
    fn try_prepare(&mut self, tx: TxId, writes: Vec<Write>) -> bool {
        if self.resource.stage(tx, writes).is_err() {
            self.resource.abort(tx);
            return false;
        }
        if self.resource.prepare(tx).is_err() {
            self.resource.abort(tx);
            return false;
        }
        true
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
        if self.prepared.contains_key(&tx) {
            // Our Yes was lost or is late: say it again (the Prepared record is durable).
            out.send(
                from,
                Message::Vote {
                    tx,
                    vote: Vote::Yes,
                },
            );
            return Ok(());
        }
        match self.decided.get(&tx) {
            Some(Outcome::Aborted) => {
                out.send(from, Message::Vote { tx, vote: Vote::No });
                return Ok(());
            }
            Some(Outcome::Committed) => return Err("prepare after commit"),
            None => {}
        }
        if writes.is_empty() {
            out.send(
                from,
                Message::Vote {
                    tx,
                    vote: Vote::ReadOnly,
                },
            );
            return Ok(());
        }
        let peers_valid = peers.len() <= config.participants_max
            && peers.contains(&config.id)
            && peers.iter().all(|p| config.members.contains(p));
        if !peers_valid
            || self.prepared.len() >= config.prepared_max
            || !self.try_prepare(tx, writes.clone())
        {
            // A participant that has not voted may abort on its own: it votes No. Remembered
            // (not logged) so a duplicate Prepare gets the same answer.
            self.remember(config, tx, Outcome::Aborted);
            self.aborted += 1;
            out.send(from, Message::Vote { tx, vote: Vote::No });
            return Ok(());
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
                query: Backoff::new(config.in_doubt_query_ticks, config.resend_ticks_max),
                rounds: 0,
                prepared_peers: BTreeSet::new(),
                blocked: false,
            },
        );
        out.send(
            from,
            Message::Vote {
                tx,
                vote: Vote::Yes,
            },
        );
        Ok(())
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
        if let Some(&outcome) = self.decided.get(&tx) {
            out.send(from, Message::OnePhaseResult { tx, outcome });
            return Ok(());
        }
        if self.prepared.contains_key(&tx) {
            return Err("one-phase commit of a prepared transaction");
        }
        let ok = self.prepared.len() < config.prepared_max && self.try_prepare(tx, writes.clone());
        // The participant decides a one-phase commit, so it logs its decision either way: a
        // duplicate arriving after a crash must get the same answer, not a second execution.
        let outcome = if ok {
            out.persist(Record::Prepared {
                tx,
                coordinator: from,
                peers: vec![config.id],
                writes,
            });
            out.persist(Record::Committed { tx });
            if self.resource.commit(tx).is_err() {
                return Err("resource refused to commit a prepared transaction");
            }
            self.applied += 1;
            Outcome::Committed
        } else {
            out.persist(Record::Aborted { tx });
            self.aborted += 1;
            Outcome::Aborted
        };
        self.remember(config, tx, outcome);
        out.emit(Event::Finished { tx, outcome });
        out.send(from, Message::OnePhaseResult { tx, outcome });
        Ok(())
    }

    /// Applies the outcome of a prepared transaction. Returns false if it was not prepared here.
    fn finish(
        &mut self,
        config: &Config,
        tx: TxId,
        outcome: Outcome,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> bool {
        if self.prepared.remove(&tx).is_none() {
            return false;
        }
        match outcome {
            Outcome::Committed => {
                // Forced before the Ack (Outbox rule).
                out.persist(Record::Committed { tx });
                if self.resource.commit(tx).is_err() {
                    tracing::error!(%tx, "resource refused to commit a prepared transaction");
                }
                self.applied += 1;
            }
            Outcome::Aborted => {
                // Presumed abort: the abort record is not forced. It goes out with no message
                // waiting on it (nothing is acked), and if a crash loses it, the Prepared record
                // makes us ask again after recovery: the answer is still abort.
                out.persist(Record::Aborted { tx });
                self.resource.abort(tx);
                self.aborted += 1;
            }
        }
        self.remember(config, tx, outcome);
        out.emit(Event::Finished { tx, outcome });
        true
    }

    pub(crate) fn on_commit(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        if tx.coordinator != from {
            return Err("commit from a node that is not the coordinator");
        }
        if self.finish(config, tx, Outcome::Committed, out) {
            out.send(from, Message::Ack { tx });
            return Ok(());
        }
        match self.decided.get(&tx) {
            Some(Outcome::Committed) => {
                out.send(from, Message::Ack { tx });
                Ok(())
            }
            Some(Outcome::Aborted) => {
                self.decision_conflicts += 1;
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
        config: &Config,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        if tx.coordinator != from {
            return Err("abort from a node that is not the coordinator");
        }
        if self.finish(config, tx, Outcome::Aborted, out) {
            return Ok(());
        }
        match self.decided.get(&tx) {
            // Legitimate and harmless: a coordinator that finished a commit and forgot it
            // answers a stale duplicate (a late Yes vote, an old decision request) with a
            // presumed Abort. The commit stands.
            Some(Outcome::Committed) => Err("stale presumed abort of a committed transaction"),
            Some(Outcome::Aborted) => Ok(()),
            None => {
                // The Abort overtook the Prepare: remember it so the Prepare is voted No.
                self.remember(config, tx, Outcome::Aborted);
                Ok(())
            }
        }
    }

    pub(crate) fn on_status_query(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        let status = if self.prepared.contains_key(&tx) {
            PeerStatus::Prepared
        } else {
            match self.decided.get(&tx) {
                Some(Outcome::Committed) => PeerStatus::Committed,
                Some(Outcome::Aborted) => PeerStatus::Aborted,
                None => {
                    // We have not voted (we write in this transaction, or we would not be
                    // asked). By answering "aborted" we give up our right to vote Yes, so the
                    // refusal is logged before the answer leaves: a Prepare arriving later,
                    // even after a crash, is voted No.
                    out.persist(Record::Aborted { tx });
                    self.remember(config, tx, Outcome::Aborted);
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
                self.finish(config, tx, Outcome::Committed, out);
            }
            PeerStatus::Aborted => {
                self.finish(config, tx, Outcome::Aborted, out);
            }
            PeerStatus::Prepared => {
                p.prepared_peers.insert(from);
                let others = p.peers.iter().filter(|&&q| q != config.id).count();
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
                p.peers.iter().filter(|q| **q != config.id).count()
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
                    if q != config.id {
                        out.send(q, Message::StatusQuery { tx });
                    }
                }
            }
        }
    }
}
