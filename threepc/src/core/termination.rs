//! Three-phase commit's termination protocol: how the operational participants finish a
//! transaction whose coordinator they take as crashed, and how a participant that crashed
//! itself learns, or at last decides, the outcome.
//!
//! # Skeen's rules, as this crate applies them
//!
//! Skeen ("Nonblocking commit protocols", SIGMOD 1981) states, as his fundamental nonblocking
//! theorem, when a commit protocol lets the operational sites finish without a failed one: no
//! site's state may be adjacent both to a commit and to an abort state, and no state from which a
//! site cannot yet commit may be adjacent to a commit state. Two-phase commit fails both (its
//! prepared state is next to commit and to abort); three-phase commit inserts PreCommitted
//! between Uncertain and Committed so that it holds. The same paper, and Skeen and Stonebraker
//! ("A formal model of crash recovery in a distributed system", IEEE TSE, 1983), give the
//! termination protocol the operational sites run when the coordinator fails, with a backup
//! coordinator that gathers their states and decides from them. In our words, and as this crate
//! applies it:
//!
//! 1. **Detect.** A participant in Uncertain or PreCommitted that hears nothing from its
//!    coordinator for `termination_timeout_ticks` takes it as crashed (3PC's model: silence means
//!    a crash) and elects a backup coordinator: the lowest participant id it does not suspect.
//! 2. **Collect.** The backup asks every participant it does not suspect for its state
//!    ([`Message::StateRequest`]); those silent for `state_timeout_ticks` are taken as crashed.
//! 3. **Decide** on the collected states: any Aborted ⇒ abort; any Committed ⇒ commit; any
//!    PreCommitted ⇒ first move the Uncertain ones to PreCommitted (so that no operational site is
//!    left in a state adjacent to abort), then commit; all Uncertain ⇒ abort (none can have
//!    committed: the coordinator commits only once the PreCommit reached every participant it
//!    does not take as crashed, and those would be PreCommitted).
//! 4. **Re-elect.** If the backup falls silent, the followers suspect it and elect the next
//!    lowest id, which runs the rules again. Whatever a backup that died mid-way had done shows
//!    in the states it left (PreCommitted, Committed or Aborted participants), and the rules lead
//!    the next backup to the same decision.
//! 5. **Recover.** A participant that crashed and restarted does not trust its own, possibly
//!    stale, state to the others: it asks what was decided ([`Message::DecisionRequest`]). It
//!    applies the rules itself only with a complete view (every participant recovered and
//!    undecided, and the coordinator answering that it never decided commit); short of that it
//!    waits: after a total failure 3PC blocks too, until the sites that may know are back.
//!
//! All of this rests on the synchronous assumption: a timeout fires only when its peer has
//! crashed. A delay or a partition beyond the timeouts breaks it (see the crate documentation).

use std::collections::{BTreeMap, BTreeSet};

use common::txn::{Backoff, Outcome, Resource, SendBudget, TxId};
use common::{NodeId, Outbox};

use super::participant::{Participant, Undecided};
use crate::config::REELECTION_WAIT_FACTOR_MAX;
use crate::{Config, Event, Message, Record, State, ThreePcNode};

/// The backup coordinator's current round.
#[derive(Clone, Debug)]
pub(super) enum Round {
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
pub(super) struct Term {
    /// Participants taken as crashed (silent past a timeout).
    pub(super) suspected: BTreeSet<NodeId>,
    /// Ticks without hearing from the current backup (when it is someone else).
    pub(super) backup_silent_ticks: u64,
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
    pub(super) fn new(config: &Config) -> Self {
        Self {
            suspected: BTreeSet::new(),
            backup_silent_ticks: 0,
            reelect_after: config.termination_timeout_ticks,
            backup: None,
            round: None,
            resend: Backoff::new(config.txn.resend_ticks, config.txn.resend_ticks_max),
        }
    }
}

/// What a tick or a reply leads a backup (or a recovering participant) to do.
pub(super) enum Decide {
    Commit,
    Abort,
    PreCommitFirst,
    Wait,
}

impl<R: Resource + Default> Participant<R> {
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
        if let Some(outcome) = self.ledger.decided.get(tx) {
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
                self.finish(tx, outcome, out);
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

    /// One tick of a transaction whose coordinator may be gone (not recovering here): once the
    /// coordinator has been silent for `termination_timeout_ticks` it is taken as crashed (rule
    /// 1 of the module documentation) and a backup is elected, the lowest participant not
    /// suspected; this node then follows that backup or, elected itself, leads a round.
    pub(super) fn tick_terminating(
        config: &Config,
        tx: TxId,
        u: &mut Undecided,
        budget: &mut SendBudget,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Decide {
        let me = config.txn.id;
        if u.term.is_none() {
            if u.silent_ticks < config.termination_timeout_ticks {
                return Decide::Wait;
            }
            // The coordinator is silent: taken as crashed. Elect a backup and terminate.
            u.term = Some(Term::new(config));
            out.emit(Event::TerminationStarted { tx });
        }
        let Some(term) = u.term.as_mut() else {
            return Decide::Wait;
        };
        let backup = u
            .participants
            .iter()
            .copied()
            .filter(|p| *p == me || !term.suspected.contains(p))
            .min()
            .unwrap_or(me);
        if backup != me {
            Self::follow(config, tx, term, backup, budget, out);
            return Decide::Wait;
        }
        term.backup = None;
        let alive: Vec<NodeId> = u
            .participants
            .iter()
            .copied()
            .filter(|p| *p != me && !term.suspected.contains(p))
            .collect();
        Self::lead(config, tx, u.state, term, &alive, budget, out)
    }

    /// A follower of backup `backup`: tells it the coordinator is gone, and re-elects when the
    /// backup itself stays silent (rule 4).
    fn follow(
        config: &Config,
        tx: TxId,
        term: &mut Term,
        backup: NodeId,
        budget: &mut SendBudget,
        out: &mut Outbox<ThreePcNode<R>>,
    ) {
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
    }

    /// This node is the backup: collect the states of the `alive` participants (rule 2), then
    /// decide by the rules (rule 3), or finish pre-committing the Uncertain ones before a commit.
    #[allow(clippy::too_many_arguments)] // the pieces of one participant's state, borrowed apart
    fn lead(
        config: &Config,
        tx: TxId,
        state: State,
        term: &mut Term,
        alive: &[NodeId],
        budget: &mut SendBudget,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Decide {
        let me = config.txn.id;
        let due = term.resend.tick();
        match term.round.as_mut() {
            None => {
                term.round = Some(Round::Collecting {
                    replies: BTreeMap::from([(me, (state, false))]),
                    ticks: 0,
                });
                // A round's first requests are not resends: they go out now, unbudgeted
                // (one round per election, and elections back off).
                term.resend = Backoff::new(config.txn.resend_ticks, config.txn.resend_ticks_max);
                for &p in alive {
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
        }
    }

    /// A recovering participant asks everyone; it decides as backup only with a complete view:
    /// every other participant answered, all recovering and undecided, the coordinator said it
    /// never decided commit, and it has the lowest id. Then every state that exists is known, and
    /// nobody has decided, so the termination rules apply to all of them. (Short of that it
    /// waits: after a total failure 3PC blocks too, until enough nodes are back.)
    pub(super) fn tick_recovering(
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
            .filter(|p| *p != config.txn.id)
            .collect();
        let complete = others.iter().all(|p| {
            u.recovery_replies
                .get(p)
                .is_some_and(|(_, recovering)| *recovering)
        });
        let lowest = u.participants.iter().all(|p| *p >= config.txn.id);
        let decision = if complete && lowest && u.coordinator_undecided {
            let mut view = u.recovery_replies.clone();
            view.insert(config.txn.id, (u.state, true));
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

    pub(super) fn apply(
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
                let me = config.txn.id;
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
                term.resend = Backoff::new(config.txn.resend_ticks, config.txn.resend_ticks_max);
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
            .filter(|p| *p != config.txn.id)
            .collect();
        let coordinator = u.coordinator;
        self.finish(tx, outcome, out);
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
