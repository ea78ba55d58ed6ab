//! The participant role of three-phase commit: vote (Initial → Uncertain), pre-commit
//! (→ PreCommitted), apply the decision, and answer the questions of backups and recovering
//! peers. When the coordinator falls silent, the termination protocol (`termination.rs`) takes
//! over.

use std::collections::BTreeMap;

use common::txn::{
    oldest_first, Backoff, Ledger, Outcome, Resource, SendBudget, TxError, TxId, Vote, Write,
};
use common::{NodeId, Outbox};

use super::termination::Term;
use crate::{Config, InDoubt, Message, Record, State, ThreePcNode};

/// A transaction voted Yes here and not yet decided.
#[derive(Clone, Debug)]
pub(crate) struct Undecided {
    pub(super) coordinator: NodeId,
    pub(super) participants: Vec<NodeId>,
    pub(super) state: State,
    /// Restarted since voting: its state may be stale for the others, so it does not take part
    /// in an operational termination round; it asks what was decided.
    pub(super) recovering: bool,
    pub(super) age_ticks: u64,
    /// Ticks without a protocol message from the coordinator.
    pub(super) silent_ticks: u64,
    pub(super) term: Option<Term>,
    /// Recovering only: what the others answered this round.
    pub(super) recovery_replies: BTreeMap<NodeId, (State, bool)>,
    /// Recovering only: the coordinator said it has not decided commit and never will.
    pub(super) coordinator_undecided: bool,
    /// Recovering only: pacing of the decision requests.
    pub(super) query: Backoff,
}

/// The participant half of a node.
#[derive(Clone, Debug)]
pub(crate) struct Participant<R> {
    /// The resource, the outcomes remembered (bounded by
    /// `TxnConfig::decided_remembered_max`, oldest forgotten first) and the counters.
    pub(crate) ledger: Ledger<R>,
    pub(crate) undecided: BTreeMap<TxId, Undecided>,
    pub(crate) terminated_as_backup: u64,
}

impl<R: Resource + Default> Participant<R> {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            ledger: Ledger::new(R::default(), config.txn.decided_remembered_max),
            undecided: BTreeMap::new(),
            terminated_as_backup: 0,
        }
    }

    pub(crate) fn replay(&mut self, config: &Config, record: Record) -> Result<(), TxError> {
        match record {
            Record::Voted {
                tx,
                coordinator,
                participants,
                writes,
            } => {
                let undecided = &mut self.undecided;
                self.ledger
                    .recover_locks(tx, writes, |holder| undecided.remove(&holder).is_some())?;
                self.undecided.insert(
                    tx,
                    Undecided {
                        coordinator,
                        participants,
                        state: State::Uncertain,
                        recovering: true,
                        age_ticks: 0,
                        silent_ticks: 0,
                        term: None,
                        recovery_replies: BTreeMap::new(),
                        coordinator_undecided: false,
                        // Ask at the first tick.
                        query: Backoff::due_now(
                            config.txn.resend_ticks,
                            config.txn.resend_ticks_max,
                        ),
                    },
                );
            }
            Record::PreCommitted { tx } => {
                if let Some(u) = self.undecided.get_mut(&tx) {
                    u.state = State::PreCommitted;
                }
            }
            Record::Committed { tx } => {
                let voted = self.undecided.remove(&tx).is_some();
                self.ledger.replay_outcome(tx, Outcome::Committed, voted)?;
            }
            Record::Aborted { tx } => {
                let voted = self.undecided.remove(&tx).is_some();
                self.ledger.replay_outcome(tx, Outcome::Aborted, voted)?;
                // A replayed abort of a voted transaction counts here, as it did before the crash.
                self.ledger.aborted += u64::from(voted);
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn in_doubt(&self) -> Vec<InDoubt> {
        let mut v: Vec<InDoubt> = self
            .undecided
            .iter()
            .map(|(tx, u)| InDoubt {
                tx: *tx,
                state: u.state,
                age_ticks: u.age_ticks,
                terminating: u.term.is_some(),
                recovering: u.recovering,
            })
            .collect();
        oldest_first(&mut v, |d| (d.age_ticks, d.tx));
        v
    }

    fn state_of(&self, tx: TxId) -> Option<State> {
        if let Some(u) = self.undecided.get(&tx) {
            return Some(u.state);
        }
        self.ledger.decided.get(tx).map(|o| match o {
            Outcome::Committed => State::Committed,
            Outcome::Aborted => State::Aborted,
        })
    }

    pub(crate) fn on_can_commit(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        writes: Vec<Write>,
        participants: Vec<NodeId>,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        if tx.coordinator != from {
            return Err("CanCommit from a node that is not the coordinator");
        }
        if let Some(u) = self.undecided.get_mut(&tx) {
            // A CanCommit again: the coordinator is alive.
            u.silent_ticks = 0;
        }
        let undecided = self.undecided.contains_key(&tx);
        let vote = match self.ledger.vote_again(tx, undecided)? {
            Some(again) => again,
            None => self.vote(config, from, tx, writes, participants, out),
        };
        out.send(from, Message::Vote { tx, vote });
        Ok(())
    }

    /// Votes on a new transaction: No if it cannot take part (Initial → Aborted), otherwise Yes
    /// once its locks are taken and its vote is logged (Initial → Uncertain).
    fn vote(
        &mut self,
        config: &Config,
        coordinator: NodeId,
        tx: TxId,
        writes: Vec<Write>,
        participants: Vec<NodeId>,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Vote {
        // The coordinator is not among the participants (it never votes on its own transaction).
        let valid =
            config.txn.valid_peer_list(&participants) && !participants.contains(&coordinator);
        let ok = valid
            && self.undecided.len() < config.txn.prepared_max
            && self.ledger.try_prepare(tx, writes.clone());
        if !ok {
            // A participant that has not voted may abort alone.
            self.ledger.refuse(tx);
            return Vote::No;
        }
        // Forced before the Yes.
        out.persist(Record::Voted {
            tx,
            coordinator,
            participants: participants.clone(),
            writes,
        });
        self.undecided.insert(
            tx,
            Undecided {
                coordinator,
                participants,
                state: State::Uncertain,
                recovering: false,
                age_ticks: 0,
                silent_ticks: 0,
                term: None,
                recovery_replies: BTreeMap::new(),
                coordinator_undecided: false,
                query: Backoff::new(config.txn.resend_ticks, config.txn.resend_ticks_max),
            },
        );
        Vote::Yes
    }

    /// Whether `from` may send decisions and pre-commits for `tx`: its coordinator or one of its
    /// participants (acting as backup).
    pub(super) fn may_direct(&self, tx: TxId, from: NodeId) -> bool {
        match self.undecided.get(&tx) {
            Some(u) => from == u.coordinator || u.participants.contains(&from),
            None => true,
        }
    }

    fn heard_from(&mut self, tx: TxId, from: NodeId) {
        if let Some(u) = self.undecided.get_mut(&tx) {
            if from == u.coordinator {
                u.silent_ticks = 0;
            }
            if let Some(term) = u.term.as_mut() {
                term.suspected.remove(&from);
                term.backup_silent_ticks = 0;
            }
        }
    }

    pub(crate) fn on_pre_commit(
        &mut self,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        if !self.may_direct(tx, from) {
            return Err("PreCommit from outside the transaction");
        }
        self.heard_from(tx, from);
        let Some(u) = self.undecided.get_mut(&tx) else {
            if let Some(outcome) = self.ledger.decided.get(tx) {
                // A backup that did not know we decided: tell it, so it does not take our
                // silence for a crash.
                out.send(from, Message::Decision { tx, outcome });
                return Ok(());
            }
            return Err("PreCommit for a transaction not undecided here");
        };
        if u.state == State::Uncertain {
            // Forced before the ack: Uncertain → PreCommitted.
            out.persist(Record::PreCommitted { tx });
            u.state = State::PreCommitted;
        }
        out.send(from, Message::PreCommitAck { tx });
        Ok(())
    }

    /// Applies the decision for `tx` here, each outcome's record forced before what the step
    /// sends. Returns false if `tx` was not undecided here.
    pub(super) fn finish(
        &mut self,
        tx: TxId,
        outcome: Outcome,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> bool {
        if self.undecided.remove(&tx).is_none() {
            return false;
        }
        self.ledger.finish(tx, outcome, out);
        true
    }

    /// A decision arrived (DoCommit, Abort or Decision) from `from`.
    pub(crate) fn on_decision(
        &mut self,
        from: NodeId,
        tx: TxId,
        outcome: Outcome,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        if !self.may_direct(tx, from) {
            return Err("decision from outside the transaction");
        }
        let ack = outcome == Outcome::Committed && from == tx.coordinator;
        if self.finish(tx, outcome, out) {
            if ack {
                out.send(from, Message::HaveCommitted { tx });
            }
            return Ok(());
        }
        match self.ledger.decided.get(tx) {
            Some(o) if o == outcome => {
                if ack {
                    out.send(from, Message::HaveCommitted { tx });
                }
                Ok(())
            }
            Some(taken) => {
                self.ledger.decision_conflicts += 1;
                tracing::error!(%tx, %outcome, "decision contradicts the one taken here");
                if ack {
                    // The coordinator committed what the termination protocol aborted here (the
                    // split of a network slower than the timeouts) and resends DoCommit until
                    // every participant has it. This one never will: it says what it took, so
                    // that the coordinator can stop.
                    out.send(from, Message::Decision { tx, outcome: taken });
                }
                Err("decision contradicting the one taken here")
            }
            None => {
                if outcome == Outcome::Aborted {
                    // The abort overtook the CanCommit: remember it so the vote is No.
                    self.ledger.decided.remember(tx, Outcome::Aborted);
                    Ok(())
                } else if ack {
                    // Committed here and forgotten since: the ack is what the coordinator needs.
                    out.send(from, Message::HaveCommitted { tx });
                    Err("commit for an unknown transaction")
                } else {
                    Err("commit for an unknown transaction")
                }
            }
        }
    }

    /// StateRequest (from a backup) or DecisionRequest (from anyone in the transaction).
    pub(crate) fn on_query(
        &mut self,
        from: NodeId,
        tx: TxId,
        from_backup: bool,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        if !self.may_direct(tx, from) {
            return Err("query from outside the transaction");
        }
        if from_backup {
            self.heard_from(tx, from);
        }
        let reply = match self.state_of(tx) {
            Some(state @ (State::Uncertain | State::PreCommitted)) => {
                let recovering = self.undecided.get(&tx).is_some_and(|u| u.recovering);
                Message::StateReply {
                    tx,
                    state,
                    recovering,
                }
            }
            Some(State::Committed) => Message::Decision {
                tx,
                outcome: Outcome::Committed,
            },
            Some(State::Aborted) | Some(State::Initial) | None => {
                if self.state_of(tx).is_none() {
                    // Initial: we never voted. Answering "aborted" gives up the right to vote
                    // Yes, so it is logged before the answer leaves.
                    out.persist(Record::Aborted { tx });
                    self.ledger.decided.remember(tx, Outcome::Aborted);
                }
                Message::Decision {
                    tx,
                    outcome: Outcome::Aborted,
                }
            }
        };
        let reply = match (from_backup, reply) {
            (true, Message::Decision { tx, outcome }) => Message::StateReply {
                tx,
                state: match outcome {
                    Outcome::Committed => State::Committed,
                    Outcome::Aborted => State::Aborted,
                },
                recovering: false,
            },
            (_, r) => r,
        };
        out.send(from, reply);
        Ok(())
    }

    /// One tick: timeouts, and resends paced by [`Backoff`]s within the node's per-tick
    /// [`SendBudget`]. A recovering transaction asks what was decided; the others wait for their
    /// coordinator and, once it is silent too long, run the termination protocol.
    pub(crate) fn tick(
        &mut self,
        config: &Config,
        budget: &mut SendBudget,
        out: &mut Outbox<ThreePcNode<R>>,
    ) {
        let txs: Vec<TxId> = self.undecided.keys().copied().collect();
        for tx in txs {
            let Some(u) = self.undecided.get_mut(&tx) else {
                continue;
            };
            u.age_ticks += 1;
            u.silent_ticks += 1;
            let decision = if u.recovering {
                Self::tick_recovering(config, tx, u, budget, out)
            } else {
                Self::tick_terminating(config, tx, u, budget, out)
            };
            self.apply(config, tx, decision, out);
        }
    }
}
