//! The participant role: vote, pre-commit, commit; and the termination protocol that finishes a
//! transaction when its coordinator has crashed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::txn::{Backoff, Outcome, Resource, ResourceError, SendBudget, TxId, Vote, Write};
use common::{NodeId, Outbox};

use crate::types::{Config, Event, InDoubt, Message, Record, State, REELECTION_WAIT_FACTOR_MAX};
use crate::{ThreePcError, ThreePcNode};

/// The backup coordinator's current round.
#[derive(Clone, Debug)]
enum Round {
    /// Collecting states: replies so far as `(state, recovering)`.
    Collecting {
        replies: BTreeMap<NodeId, (State, bool)>,
        ticks: u64,
    },
    /// Sent PreCommit to the Uncertain; waiting for their acks before committing.
    PreCommitting {
        pending: BTreeSet<NodeId>,
        ticks: u64,
    },
}

/// The termination protocol's state at one participant.
#[derive(Clone, Debug)]
struct Term {
    /// Participants taken as crashed (silent past a timeout).
    suspected: BTreeSet<NodeId>,
    /// Ticks without hearing from the current backup (when it is someone else).
    backup_silent_ticks: u64,
    /// Ticks of silence after which the current backup is taken as crashed: starts at
    /// `termination_timeout_ticks` and doubles after each re-election, up to
    /// `REELECTION_WAIT_FACTOR_MAX` times that. Waiting longer is the safe side (a slow backup is
    /// not replaced as readily), and repeated re-elections on a slow network do not each start a
    /// new round of state requests at a fixed rate.
    reelect_after: u64,
    /// The backup currently elected (when it is someone else), to notice a change.
    backup: Option<NodeId>,
    /// The round this node runs as backup.
    round: Option<Round>,
    /// Pacing of this node's resends (TerminationStart to the backup, or as backup its state
    /// requests and pre-commits).
    resend: Backoff,
}

impl Term {
    fn new(config: &Config) -> Self {
        Self {
            suspected: BTreeSet::new(),
            backup_silent_ticks: 0,
            reelect_after: config.termination_timeout_ticks,
            backup: None,
            round: None,
            resend: Backoff::new(config.resend_ticks, config.resend_ticks_max),
        }
    }
}

/// A transaction voted Yes here and not yet decided.
#[derive(Clone, Debug)]
pub(crate) struct Undecided {
    coordinator: NodeId,
    participants: Vec<NodeId>,
    state: State,
    /// Restarted since voting: its state may be stale for the others, so it does not take part
    /// in an operational termination round; it asks what was decided.
    recovering: bool,
    age_ticks: u64,
    /// Ticks without a protocol message from the coordinator.
    silent_ticks: u64,
    term: Option<Term>,
    /// Recovering only: what the others answered this round.
    recovery_replies: BTreeMap<NodeId, (State, bool)>,
    /// Recovering only: the coordinator said it has not decided commit and never will.
    coordinator_undecided: bool,
    /// Recovering only: pacing of the decision requests.
    query: Backoff,
}

/// The participant half of a node.
#[derive(Clone, Debug)]
pub(crate) struct Participant<R> {
    pub(crate) resource: R,
    pub(crate) undecided: BTreeMap<TxId, Undecided>,
    decided: BTreeMap<TxId, Outcome>,
    decided_order: VecDeque<TxId>,
    pub(crate) applied: u64,
    pub(crate) aborted: u64,
    pub(crate) terminated_as_backup: u64,
    pub(crate) decision_conflicts: u64,
}

enum Decide {
    Commit,
    Abort,
    PreCommitFirst,
    Wait,
}

impl<R: Resource + Default> Participant<R> {
    pub(crate) fn new() -> Self {
        Self {
            resource: R::default(),
            undecided: BTreeMap::new(),
            decided: BTreeMap::new(),
            decided_order: VecDeque::new(),
            applied: 0,
            aborted: 0,
            terminated_as_backup: 0,
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

    pub(crate) fn replay(&mut self, config: &Config, record: Record) -> Result<(), ThreePcError> {
        match record {
            Record::Voted {
                tx,
                coordinator,
                participants,
                writes,
            } => {
                self.recover_locks(config, tx, writes)?;
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
                        query: Backoff::due_now(config.resend_ticks, config.resend_ticks_max),
                    },
                );
            }
            Record::PreCommitted { tx } => {
                if let Some(u) = self.undecided.get_mut(&tx) {
                    u.state = State::PreCommitted;
                }
            }
            Record::Committed { tx } => {
                if self.undecided.remove(&tx).is_some() {
                    self.resource
                        .commit(tx)
                        .map_err(|e| ThreePcError::Recovery(e.to_string()))?;
                    self.applied += 1;
                }
                self.remember(config, tx, Outcome::Committed);
            }
            Record::Aborted { tx } => {
                if self.undecided.remove(&tx).is_some() {
                    self.resource.abort(tx);
                    self.aborted += 1;
                }
                self.remember(config, tx, Outcome::Aborted);
            }
            _ => {}
        }
        Ok(())
    }

    /// Re-takes the locks of a voted transaction. A key still held by an older undecided
    /// transaction means that one finished before this one locked the key (no-wait locking);
    /// it cannot have committed (its record would come first), so it aborted.
    fn recover_locks(
        &mut self,
        config: &Config,
        tx: TxId,
        writes: Vec<Write>,
    ) -> Result<(), ThreePcError> {
        for _ in 0..=writes.len() {
            match self.resource.recover_prepared(tx, writes.clone()) {
                Ok(()) => return Ok(()),
                Err(ResourceError::LockTaken { holder, .. })
                    if holder != tx && self.undecided.remove(&holder).is_some() =>
                {
                    self.resource.abort(holder);
                    self.remember(config, holder, Outcome::Aborted);
                }
                Err(e) => return Err(ThreePcError::Recovery(e.to_string())),
            }
        }
        Err(ThreePcError::Recovery(format!(
            "{tx}: could not re-take its locks"
        )))
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
        v.sort_by(|a, b| b.age_ticks.cmp(&a.age_ticks).then(a.tx.cmp(&b.tx)));
        v
    }

    fn state_of(&self, tx: TxId) -> Option<State> {
        if let Some(u) = self.undecided.get(&tx) {
            return Some(u.state);
        }
        self.decided.get(&tx).map(|o| match o {
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
            u.silent_ticks = 0;
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
            Some(Outcome::Committed) => return Err("CanCommit after commit"),
            None => {}
        }
        let valid = participants.len() <= config.participants_max
            && participants.contains(&config.id)
            && participants
                .iter()
                .all(|p| config.members.contains(p) && *p != from);
        let ok = valid
            && self.undecided.len() < config.prepared_max
            && self.resource.stage(tx, writes.clone()).is_ok()
            && self.resource.prepare(tx).is_ok();
        if !ok {
            // Initial → Aborted: a participant that has not voted may abort alone.
            self.resource.abort(tx);
            self.remember(config, tx, Outcome::Aborted);
            self.aborted += 1;
            out.send(from, Message::Vote { tx, vote: Vote::No });
            return Ok(());
        }
        // Forced before the Yes: Initial → Uncertain.
        out.persist(Record::Voted {
            tx,
            coordinator: from,
            participants: participants.clone(),
            writes,
        });
        self.undecided.insert(
            tx,
            Undecided {
                coordinator: from,
                participants,
                state: State::Uncertain,
                recovering: false,
                age_ticks: 0,
                silent_ticks: 0,
                term: None,
                recovery_replies: BTreeMap::new(),
                coordinator_undecided: false,
                query: Backoff::new(config.resend_ticks, config.resend_ticks_max),
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

    /// Whether `from` may send decisions and pre-commits for `tx`: its coordinator or one of its
    /// participants (acting as backup).
    fn may_direct(&self, tx: TxId, from: NodeId) -> bool {
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
            if let Some(&outcome) = self.decided.get(&tx) {
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

    /// Applies the decision for `tx` here. Returns false if `tx` was not undecided here.
    fn finish(
        &mut self,
        config: &Config,
        tx: TxId,
        outcome: Outcome,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> bool {
        if self.undecided.remove(&tx).is_none() {
            return false;
        }
        match outcome {
            Outcome::Committed => {
                out.persist(Record::Committed { tx });
                if self.resource.commit(tx).is_err() {
                    tracing::error!(%tx, "resource refused to commit a voted transaction");
                }
                self.applied += 1;
            }
            Outcome::Aborted => {
                out.persist(Record::Aborted { tx });
                self.resource.abort(tx);
                self.aborted += 1;
            }
        }
        self.remember(config, tx, outcome);
        out.emit(Event::Finished { tx, outcome });
        true
    }

    /// A decision arrived (DoCommit, Abort or Decision) from `from`.
    pub(crate) fn on_decision(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        outcome: Outcome,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        if !self.may_direct(tx, from) {
            return Err("decision from outside the transaction");
        }
        let ack = outcome == Outcome::Committed && from == tx.coordinator;
        if self.finish(config, tx, outcome, out) {
            if ack {
                out.send(from, Message::HaveCommitted { tx });
            }
            return Ok(());
        }
        match self.decided.get(&tx) {
            Some(o) if *o == outcome => {
                if ack {
                    out.send(from, Message::HaveCommitted { tx });
                }
                Ok(())
            }
            Some(_) => {
                self.decision_conflicts += 1;
                tracing::error!(%tx, %outcome, "decision contradicts the one taken here");
                Err("decision contradicting the one taken here")
            }
            None => {
                if outcome == Outcome::Aborted {
                    // The abort overtook the CanCommit: remember it so the vote is No.
                    self.remember(config, tx, Outcome::Aborted);
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
        config: &Config,
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
                    self.remember(config, tx, Outcome::Aborted);
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

    /// The coordinator answered a recovering participant: no commit decision, and there never
    /// will be one from it.
    pub(crate) fn on_no_decision(&mut self, from: NodeId, tx: TxId) -> Result<(), &'static str> {
        match self.undecided.get_mut(&tx) {
            Some(u) if u.coordinator == from => {
                u.coordinator_undecided = true;
                Ok(())
            }
            _ => Err("no-decision answer out of place"),
        }
    }

    /// A participant takes the coordinator as crashed and this node as the backup.
    pub(crate) fn on_termination_start(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        if !self.may_direct(tx, from) {
            return Err("termination request from outside the transaction");
        }
        if let Some(&outcome) = self.decided.get(&tx) {
            out.send(from, Message::Decision { tx, outcome });
            return Ok(());
        }
        let Some(u) = self.undecided.get_mut(&tx) else {
            return Err("termination request for an unknown transaction");
        };
        if u.recovering {
            // A recovering participant does not lead an operational round.
            return Err("termination request to a recovering participant");
        }
        if u.term.is_none() {
            // Under 3PC's failure model the sender's timeout is proof enough that the
            // coordinator crashed: join the termination protocol now.
            u.term = Some(Term::new(config));
            out.emit(Event::TerminationStarted { tx });
        }
        Ok(())
    }

    pub(crate) fn on_state_reply(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        state: State,
        recovering: bool,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        let Some(u) = self.undecided.get_mut(&tx) else {
            return Err("state reply for a transaction not undecided here");
        };
        if !u.participants.contains(&from) {
            return Err("state reply from a non-participant");
        }
        let decided = match state {
            State::Committed => Some(Decide::Commit),
            State::Aborted => Some(Decide::Abort),
            _ => None,
        };
        if let Some(decision) = decided {
            if u.term.is_some() {
                // As backup: the rule "any Committed / any Aborted" decides, for everyone.
                self.apply(config, tx, decision, out);
            } else {
                let outcome = match decision {
                    Decide::Commit => Outcome::Committed,
                    _ => Outcome::Aborted,
                };
                self.finish(config, tx, outcome, out);
            }
            return Ok(());
        }
        if u.recovering {
            u.recovery_replies.insert(from, (state, recovering));
            return Ok(());
        }
        if let Some(term) = u.term.as_mut() {
            term.suspected.remove(&from);
            if let Some(Round::Collecting { replies, .. }) = term.round.as_mut() {
                replies.insert(from, (state, recovering));
            }
        }
        Ok(())
    }

    pub(crate) fn on_pre_commit_ack(&mut self, from: NodeId, tx: TxId) -> Result<(), &'static str> {
        let Some(u) = self.undecided.get_mut(&tx) else {
            return Err("pre-commit ack for a transaction not undecided here");
        };
        match u.term.as_mut().and_then(|t| t.round.as_mut()) {
            Some(Round::PreCommitting { pending, .. }) => {
                pending.remove(&from);
                Ok(())
            }
            _ => Err("pre-commit ack while not pre-committing as backup"),
        }
    }

    /// The termination rules, applied by a backup to the states it collected.
    fn rules(replies: &BTreeMap<NodeId, (State, bool)>, complete_view: bool) -> Decide {
        if replies.values().any(|(s, _)| *s == State::Aborted) {
            return Decide::Abort;
        }
        if replies.values().any(|(s, _)| *s == State::Committed) {
            return Decide::Commit;
        }
        // An operational backup ignores the undecided states of recovering participants (stale
        // for all it knows); with a complete view of recovered participants, all states count.
        let counted = |(_, recovering): &&(State, bool)| complete_view || !*recovering;
        if replies
            .values()
            .filter(counted)
            .any(|(s, _)| *s == State::PreCommitted)
        {
            return Decide::PreCommitFirst;
        }
        Decide::Abort
    }

    /// One tick: timeouts, and resends paced by [`Backoff`]s within the node's per-tick
    /// [`SendBudget`].
    pub(crate) fn tick(
        &mut self,
        config: &Config,
        budget: &mut SendBudget,
        out: &mut Outbox<ThreePcNode<R>>,
    ) {
        let me = config.id;
        let txs: Vec<TxId> = self.undecided.keys().copied().collect();
        for tx in txs {
            let Some(u) = self.undecided.get_mut(&tx) else {
                continue;
            };
            u.age_ticks += 1;
            u.silent_ticks += 1;
            if u.recovering {
                let decision = Self::tick_recovering(config, tx, u, budget, out);
                self.apply(config, tx, decision, out);
                continue;
            }
            if u.term.is_none() {
                if u.silent_ticks < config.termination_timeout_ticks {
                    continue;
                }
                // The coordinator is silent: taken as crashed. Elect a backup and terminate.
                u.term = Some(Term::new(config));
                out.emit(Event::TerminationStarted { tx });
            }
            let Some(term) = u.term.as_mut() else {
                continue;
            };
            let backup = u
                .participants
                .iter()
                .copied()
                .filter(|p| *p == me || !term.suspected.contains(p))
                .min()
                .unwrap_or(me);
            if backup != me {
                term.round = None;
                if term.backup != Some(backup) {
                    // A new backup: tell it promptly, whatever the backoff reached for the last.
                    term.backup = Some(backup);
                    term.resend.reset();
                }
                if term.resend.tick() && budget.take(1) {
                    // Tell the backup the coordinator is gone, in case its own timer has not
                    // fired yet (it may have heard from the coordinator later than we did).
                    term.resend.sent();
                    out.send(backup, Message::TerminationStart { tx });
                }
                term.backup_silent_ticks += 1;
                if term.backup_silent_ticks >= term.reelect_after {
                    // The backup crashed: re-election (the next lowest live id).
                    term.suspected.insert(backup);
                    term.backup_silent_ticks = 0;
                    term.reelect_after = term.reelect_after.saturating_mul(2).min(
                        config
                            .termination_timeout_ticks
                            .saturating_mul(REELECTION_WAIT_FACTOR_MAX),
                    );
                }
                continue;
            }
            term.backup = None;
            let due = term.resend.tick();
            let alive: Vec<NodeId> = u
                .participants
                .iter()
                .copied()
                .filter(|p| *p != me && !term.suspected.contains(p))
                .collect();
            let decision = match term.round.as_mut() {
                None => {
                    term.round = Some(Round::Collecting {
                        replies: BTreeMap::from([(me, (u.state, false))]),
                        ticks: 0,
                    });
                    // A round's first requests are not resends: they go out now, unbudgeted
                    // (one round per election, and elections back off).
                    term.resend = Backoff::new(config.resend_ticks, config.resend_ticks_max);
                    for &p in &alive {
                        out.send(p, Message::StateRequest { tx });
                    }
                    Decide::Wait
                }
                Some(Round::Collecting { replies, ticks }) => {
                    *ticks += 1;
                    let missing: Vec<NodeId> = alive
                        .iter()
                        .copied()
                        .filter(|p| !replies.contains_key(p))
                        .collect();
                    if missing.is_empty() || *ticks >= config.state_timeout_ticks {
                        term.suspected.extend(missing);
                        Self::rules(replies, false)
                    } else {
                        if due && budget.take(missing.len()) {
                            term.resend.sent();
                            for p in missing {
                                out.send(p, Message::StateRequest { tx });
                            }
                        }
                        Decide::Wait
                    }
                }
                Some(Round::PreCommitting { pending, ticks }) => {
                    *ticks += 1;
                    pending.retain(|p| !term.suspected.contains(p));
                    if pending.is_empty() || *ticks >= config.state_timeout_ticks {
                        term.suspected.extend(pending.iter().copied());
                        Decide::Commit
                    } else {
                        if due && budget.take(pending.len()) {
                            term.resend.sent();
                            for &p in pending.iter() {
                                out.send(p, Message::PreCommit { tx });
                            }
                        }
                        Decide::Wait
                    }
                }
            };
            self.apply(config, tx, decision, out);
        }
    }

    /// A recovering participant asks everyone; it decides as backup only with a complete view:
    /// every other participant answered, all recovering and undecided, the coordinator said it
    /// never decided commit, and it has the lowest id. Then every state that exists is known, and
    /// nobody has decided, so the termination rules apply to all of them. (Short of that it
    /// waits: after a total failure 3PC blocks too, until enough nodes are back.)
    fn tick_recovering(
        config: &Config,
        tx: TxId,
        u: &mut Undecided,
        budget: &mut SendBudget,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Decide {
        if let Some(Term {
            round: Some(Round::PreCommitting { pending, ticks }),
            resend,
            ..
        }) = u.term.as_mut()
        {
            *ticks += 1;
            let due = resend.tick();
            if pending.is_empty() || *ticks >= config.state_timeout_ticks {
                return Decide::Commit;
            }
            if due && budget.take(pending.len()) {
                resend.sent();
                for &p in pending.iter() {
                    out.send(p, Message::PreCommit { tx });
                }
            }
            return Decide::Wait;
        }
        if !u.query.tick() {
            return Decide::Wait;
        }
        let others: Vec<NodeId> = u
            .participants
            .iter()
            .copied()
            .filter(|p| *p != config.id)
            .collect();
        let complete = others.iter().all(|p| {
            u.recovery_replies
                .get(p)
                .is_some_and(|(_, recovering)| *recovering)
        });
        let lowest = u.participants.iter().all(|p| *p >= config.id);
        let decision = if complete && lowest && u.coordinator_undecided {
            let mut view = u.recovery_replies.clone();
            view.insert(config.id, (u.state, true));
            Self::rules(&view, true)
        } else {
            Decide::Wait
        };
        if matches!(decision, Decide::Wait) {
            // A new round of questions; one that does not fit this tick's budget stays due
            // (and the answers gathered so far are kept for it).
            if !budget.take(others.len() + 1) {
                return Decide::Wait;
            }
            u.query.sent();
            u.recovery_replies.clear();
            out.send(u.coordinator, Message::DecisionRequest { tx });
            for p in others {
                out.send(p, Message::DecisionRequest { tx });
            }
        }
        decision
    }

    fn apply(
        &mut self,
        config: &Config,
        tx: TxId,
        decision: Decide,
        out: &mut Outbox<ThreePcNode<R>>,
    ) {
        let outcome = match decision {
            Decide::Wait => return,
            Decide::Commit => Outcome::Committed,
            Decide::Abort => Outcome::Aborted,
            Decide::PreCommitFirst => {
                let Some(u) = self.undecided.get_mut(&tx) else {
                    return;
                };
                if u.state == State::Uncertain {
                    out.persist(Record::PreCommitted { tx });
                    u.state = State::PreCommitted;
                }
                let me = config.id;
                let term = u.term.get_or_insert_with(|| Term::new(config));
                let pending: BTreeSet<NodeId> = u
                    .participants
                    .iter()
                    .copied()
                    .filter(|p| *p != me && !term.suspected.contains(p))
                    .collect();
                for &p in &pending {
                    out.send(p, Message::PreCommit { tx });
                }
                term.round = Some(Round::PreCommitting { pending, ticks: 0 });
                term.resend = Backoff::new(config.resend_ticks, config.resend_ticks_max);
                return;
            }
        };
        let Some(u) = self.undecided.get(&tx) else {
            return;
        };
        let others: Vec<NodeId> = u
            .participants
            .iter()
            .copied()
            .filter(|p| *p != config.id)
            .collect();
        let coordinator = u.coordinator;
        self.finish(config, tx, outcome, out);
        self.terminated_as_backup += 1;
        out.emit(Event::TerminatedAsBackup { tx, outcome });
        let msg = match outcome {
            Outcome::Committed => Message::DoCommit { tx },
            Outcome::Aborted => Message::Abort { tx },
        };
        for p in others {
            out.send(p, msg.clone());
        }
        // A recovered coordinator may be learning the outcome.
        out.send(coordinator, Message::Decision { tx, outcome });
    }
}
