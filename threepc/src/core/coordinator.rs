//! The coordinator role: votes, pre-commit, commit.

use std::collections::{BTreeMap, BTreeSet};

use common::txn::{Backoff, Coordination, Outcome, Resource, SendBudget, Tally, TxId, Vote, Write};
use common::{NodeId, Outbox, RequestId};

use crate::{Config, Event, Message, Record, ThreePcNode};

#[derive(Clone, Debug)]
pub(crate) enum Phase {
    /// CanCommit sent; collecting votes (`common::txn`'s rule: one No aborts, every Yes
    /// commits; 3PC has no read-only votes).
    Voting { tally: Tally<NodeId> },
    /// PreCommit logged and sent; waiting for these acks.
    PreCommitting { pending: BTreeSet<NodeId> },
    /// Commit logged and sent; waiting for these HaveCommitted.
    Committing { pending: BTreeSet<NodeId> },
    /// Recovered with a PreCommit record and no decision: the participants' termination protocol
    /// decides; the coordinator only asks what it was.
    Learning,
}

#[derive(Clone, Debug)]
pub(crate) struct CoordTx {
    request: Option<RequestId>,
    writes: BTreeMap<NodeId, Vec<Write>>,
    participants: Vec<NodeId>,
    phase: Phase,
    phase_ticks: u64,
    /// Paces the resends of this phase's message to the participants that did not answer.
    resend: Backoff,
}

/// The coordinator half of a three-phase-commit node: its transactions in progress, with the
/// numbering and the decision counts that every coordinator keeps.
#[derive(Clone, Debug, Default)]
pub(crate) struct Coordinator {
    pub(crate) txs: BTreeMap<TxId, CoordTx>,
    pub(crate) book: Coordination,
    /// Participants that answered this coordinator's commit with their abort.
    pub(crate) commits_refused: u64,
}

impl Coordinator {
    /// Replays one record; false if it is not a coordinator's. A pre-commit decision without a
    /// commit decision leaves the transaction to be learned from the participants.
    pub(crate) fn replay(&mut self, config: &Config, record: &Record) -> bool {
        let mut insert = |tx: TxId, participants: &[NodeId], phase| {
            self.txs.insert(
                tx,
                CoordTx {
                    request: None,
                    writes: BTreeMap::new(),
                    participants: participants.to_vec(),
                    phase,
                    phase_ticks: 0,
                    // Nothing was sent since the restart: resend at the first tick.
                    resend: Backoff::due_now(config.txn.resend_ticks, config.txn.resend_ticks_max),
                },
            );
        };
        match record {
            Record::End { tx } => {
                self.txs.remove(tx);
            }
            Record::Reserved { seq_limit } => self.book.ids.replay_reserved(*seq_limit),
            Record::PreCommitDecision { tx, participants } => {
                insert(*tx, participants, Phase::Learning);
            }
            Record::CommitDecision { tx, participants } => insert(
                *tx,
                participants,
                Phase::Committing {
                    pending: participants.iter().copied().collect(),
                },
            ),
            _ => return false,
        }
        true
    }

    /// A client's transaction: admitted and named by the shared [`Coordination`], then asked of
    /// every participant (CanCommit).
    pub(crate) fn begin<R: Resource + Default>(
        &mut self,
        config: &Config,
        request: RequestId,
        writes: BTreeMap<NodeId, Vec<Write>>,
        out: &mut Outbox<ThreePcNode<R>>,
    ) {
        let in_progress = self.txs.len();
        let Some(tx) = self
            .book
            .begin(&config.txn, in_progress, request, &writes, out)
        else {
            return;
        };
        let participants: Vec<NodeId> = writes.keys().copied().collect();
        for (p, w) in &writes {
            out.send(
                *p,
                Message::CanCommit {
                    tx,
                    writes: w.clone(),
                    participants: participants.clone(),
                },
            );
        }
        let tally = Tally::new(participants.iter().copied());
        self.txs.insert(
            tx,
            CoordTx {
                request: Some(request),
                writes,
                participants,
                phase: Phase::Voting { tally },
                phase_ticks: 0,
                resend: Backoff::new(config.txn.resend_ticks, config.txn.resend_ticks_max),
            },
        );
    }

    pub(crate) fn on_vote<R: Resource + Default>(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        vote: Vote,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        let Some(ctx) = self.txs.get_mut(&tx) else {
            return Err("vote for an unknown transaction");
        };
        if !ctx.participants.contains(&from) {
            return Err("vote from a non-participant");
        }
        let Phase::Voting { tally } = &mut ctx.phase else {
            return Err("vote after the votes were counted");
        };
        // 3PC has no read-only participants: a ReadOnly vote counts as No.
        let vote = if vote == Vote::Yes {
            Vote::Yes
        } else {
            Vote::No
        };
        let decided = tally.record(from, vote).map_err(|e| e.as_str())?;
        if decided == Some(Outcome::Aborted) {
            self.abort(tx, out);
            return Ok(());
        }
        if decided == Some(Outcome::Committed) {
            // Forced before any PreCommit leaves: a recovered coordinator must know it may have
            // pre-committed someone.
            out.persist(Record::PreCommitDecision {
                tx,
                participants: ctx.participants.clone(),
            });
            for &p in &ctx.participants {
                out.send(p, Message::PreCommit { tx });
            }
            ctx.writes.clear();
            ctx.phase = Phase::PreCommitting {
                pending: ctx.participants.iter().copied().collect(),
            };
            ctx.phase_ticks = 0;
            ctx.resend = Backoff::new(config.txn.resend_ticks, config.txn.resend_ticks_max);
        }
        Ok(())
    }

    fn abort<R: Resource + Default>(&mut self, tx: TxId, out: &mut Outbox<ThreePcNode<R>>) {
        let Some(ctx) = self.txs.remove(&tx) else {
            return;
        };
        // No PreCommit was sent, so no participant can be PreCommitted and the termination
        // protocol can only abort too: the coordinator's abort needs no record.
        for &p in &ctx.participants {
            out.send(p, Message::Abort { tx });
        }
        self.book.decided(tx, Outcome::Aborted, ctx.request, out);
    }

    fn commit<R: Resource + Default>(
        &mut self,
        config: &Config,
        tx: TxId,
        out: &mut Outbox<ThreePcNode<R>>,
    ) {
        let Some(ctx) = self.txs.get_mut(&tx) else {
            return;
        };
        out.persist(Record::CommitDecision {
            tx,
            participants: ctx.participants.clone(),
        });
        for &p in &ctx.participants {
            out.send(p, Message::DoCommit { tx });
        }
        let waiting = ctx.request.take();
        self.book.decided(tx, Outcome::Committed, waiting, out);
        ctx.phase = Phase::Committing {
            pending: ctx.participants.iter().copied().collect(),
        };
        ctx.phase_ticks = 0;
        ctx.resend = Backoff::new(config.txn.resend_ticks, config.txn.resend_ticks_max);
    }

    pub(crate) fn on_pre_commit_ack<R: Resource + Default>(
        &mut self,
        config: &Config,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        let Some(ctx) = self.txs.get_mut(&tx) else {
            return Err("pre-commit ack for an unknown transaction");
        };
        let Phase::PreCommitting { pending } = &mut ctx.phase else {
            return Err("pre-commit ack out of place");
        };
        if !pending.remove(&from) {
            return Err("duplicate pre-commit ack");
        }
        if pending.is_empty() {
            self.commit(config, tx, out);
        }
        Ok(())
    }

    pub(crate) fn on_have_committed<R: Resource + Default>(
        &mut self,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        let Some(ctx) = self.txs.get_mut(&tx) else {
            return Err("commit ack for an unknown transaction");
        };
        match &mut ctx.phase {
            Phase::Committing { pending, .. } => {
                if !pending.remove(&from) {
                    return Err("duplicate commit ack");
                }
                if pending.is_empty() {
                    self.txs.remove(&tx);
                    out.persist(Record::End { tx });
                }
                Ok(())
            }
            // The termination protocol committed without us: learning is enough.
            Phase::Learning => {
                self.learned(tx, Outcome::Committed, out);
                Ok(())
            }
            _ => Err("commit ack out of place"),
        }
    }

    fn learned<R: Resource + Default>(
        &mut self,
        tx: TxId,
        outcome: Outcome,
        out: &mut Outbox<ThreePcNode<R>>,
    ) {
        if self.txs.remove(&tx).is_some() {
            out.persist(Record::End { tx });
            out.emit(Event::Decided { tx, outcome });
        }
    }

    /// A participant's decision: the answer to this coordinator's DecisionRequest after a
    /// restart, or a participant's abort of a transaction this coordinator committed.
    pub(crate) fn on_decision<R: Resource + Default>(
        &mut self,
        from: NodeId,
        tx: TxId,
        outcome: Outcome,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        let Some(ctx) = self.txs.get_mut(&tx) else {
            return Err("decision not asked for");
        };
        match (&mut ctx.phase, outcome) {
            (Phase::Learning, _) => {
                self.learned(tx, outcome, out);
                Ok(())
            }
            // The participant's termination protocol aborted while this coordinator, taking its
            // silence for a crash, committed: the split that 3PC allows when messages take
            // longer than its timeouts (the crate documentation). Its abort is durable, so it
            // will never acknowledge the commit; waiting for it would resend DoCommit forever.
            (Phase::Committing { pending }, Outcome::Aborted) if pending.contains(&from) => {
                pending.remove(&from);
                let done = pending.is_empty();
                self.commits_refused += 1;
                tracing::error!(
                    %tx,
                    participant = from,
                    "a participant aborted a transaction this coordinator committed"
                );
                if done {
                    self.txs.remove(&tx);
                    out.persist(Record::End { tx });
                }
                Ok(())
            }
            _ => Err("decision not asked for"),
        }
    }

    /// A participant that recovered asks what was decided.
    pub(crate) fn on_decision_request<R: Resource + Default>(
        &mut self,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<ThreePcNode<R>>,
    ) -> Result<(), &'static str> {
        let Some(ctx) = self.txs.get(&tx) else {
            // No record: this coordinator never decided commit (a commit is only forgotten
            // once every participant has it). No presumption either way: the participants'
            // termination protocol decides.
            out.send(from, Message::NoDecision { tx });
            return Ok(());
        };
        if !ctx.participants.contains(&from) {
            return Err("decision request from a non-participant");
        }
        // Answer with the current phase's message: it tells a recovered participant both that
        // the coordinator is alive and what to do.
        match &ctx.phase {
            Phase::Voting { .. } => {
                if let Some(w) = ctx.writes.get(&from) {
                    out.send(
                        from,
                        Message::CanCommit {
                            tx,
                            writes: w.clone(),
                            participants: ctx.participants.clone(),
                        },
                    );
                }
            }
            Phase::PreCommitting { .. } => out.send(from, Message::PreCommit { tx }),
            Phase::Committing { .. } => out.send(from, Message::DoCommit { tx }),
            Phase::Learning => out.send(from, Message::NoDecision { tx }),
        }
        Ok(())
    }

    /// One tick: phase timeouts, and resends paced by each transaction's [`Backoff`] within the
    /// node's per-tick [`SendBudget`] (a resend that does not fit stays due for a later tick).
    pub(crate) fn tick<R: Resource + Default>(
        &mut self,
        config: &Config,
        budget: &mut SendBudget,
        out: &mut Outbox<ThreePcNode<R>>,
    ) {
        let mut to_abort = Vec::new();
        let mut to_commit = Vec::new();
        for (&tx, ctx) in self.txs.iter_mut() {
            ctx.phase_ticks += 1;
            let due = ctx.resend.tick();
            match &ctx.phase {
                Phase::Voting { tally } => {
                    if ctx.phase_ticks >= config.txn.vote_timeout_ticks {
                        to_abort.push(tx);
                        continue;
                    }
                    let missing = tally.missing();
                    let silent: Vec<(&NodeId, &Vec<Write>)> = ctx
                        .writes
                        .iter()
                        .filter(|(p, _)| missing.contains(p))
                        .collect();
                    if due && budget.take(silent.len()) {
                        ctx.resend.sent();
                        for (p, w) in silent {
                            out.send(
                                *p,
                                Message::CanCommit {
                                    tx,
                                    writes: w.clone(),
                                    participants: ctx.participants.clone(),
                                },
                            );
                        }
                    }
                }
                Phase::PreCommitting { pending } => {
                    if ctx.phase_ticks >= config.ack_timeout_ticks {
                        // Silent participants are taken as crashed (3PC's failure model): they
                        // learn the commit when they recover. This is where a slow link breaks
                        // atomicity: see the crate documentation.
                        to_commit.push(tx);
                    } else if due && budget.take(pending.len()) {
                        ctx.resend.sent();
                        for &p in pending {
                            out.send(p, Message::PreCommit { tx });
                        }
                    }
                }
                Phase::Committing { pending } => {
                    // A commit cannot be forgotten before every participant has it, so the
                    // coordinator never stops resending; the backoff only slows it down.
                    if due && budget.take(pending.len()) {
                        ctx.resend.sent();
                        for &p in pending {
                            out.send(p, Message::DoCommit { tx });
                        }
                    }
                }
                Phase::Learning => {
                    if due && budget.take(ctx.participants.len()) {
                        ctx.resend.sent();
                        for &p in &ctx.participants {
                            out.send(p, Message::DecisionRequest { tx });
                        }
                    }
                }
            }
        }
        for tx in to_abort {
            self.abort(tx, out);
        }
        for tx in to_commit {
            self.commit(config, tx, out);
        }
    }
}
