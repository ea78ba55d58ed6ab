//! The coordinator role: collects votes, decides, logs the decision, pushes it until acked.

use std::collections::{BTreeMap, BTreeSet};

use common::txn::{
    Backoff, Coordination, Outcome, Resource, Response, SendBudget, Tally, TxError, TxId, Vote,
    Write,
};
use common::{NodeId, Outbox, RequestId};

use crate::{Config, Message, Record, TwoPcNode};

/// Where a coordinated transaction stands.
#[derive(Clone, Debug)]
pub(crate) enum Phase {
    /// Prepare sent; collecting votes (`common::txn`'s rule: one No aborts, every Yes or
    /// ReadOnly commits).
    Voting { tally: Tally<NodeId> },
    /// One-phase commit sent to the only participant, which decides.
    OnePc { retries: u32 },
    /// Commit logged and sent; waiting for the acks of `pending`.
    Committing {
        pending: BTreeSet<NodeId>,
        retries: u32,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct CoordTx {
    /// The client waiting for the outcome (none after recovery).
    request: Option<RequestId>,
    /// Writes per participant. Kept while voting to resend Prepare; emptied afterwards.
    writes: BTreeMap<NodeId, Vec<Write>>,
    phase: Phase,
    age_ticks: u64,
    /// When the current phase's message is resent to the silent participants.
    resend: Backoff,
}

/// The coordinator half of a node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Coordinator {
    /// Numbering and decision counts, as every coordinator keeps them.
    pub(crate) book: Coordination,
    pub(crate) txs: BTreeMap<TxId, CoordTx>,
}

impl Coordinator {
    /// Replays one coordinator record. Returns false if the record is not a coordinator's.
    pub(crate) fn replay(&mut self, config: &Config, record: &Record) -> bool {
        match record {
            Record::Reserved { seq_limit } => self.book.ids.replay_reserved(*seq_limit),
            Record::CommitDecision { tx, participants } => {
                self.txs.insert(
                    *tx,
                    CoordTx {
                        request: None,
                        writes: BTreeMap::new(),
                        phase: Phase::Committing {
                            pending: participants.iter().copied().collect(),
                            retries: 0,
                        },
                        age_ticks: 0,
                        // Resend at the first tick after recovery.
                        resend: Backoff::due_now(
                            config.txn.resend_ticks,
                            config.txn.resend_ticks_max,
                        ),
                    },
                );
            }
            Record::End { tx } => {
                self.txs.remove(tx);
            }
            _ => return false,
        }
        true
    }

    /// Committed transactions still unacknowledged after `decision_retries_max` resends.
    pub(crate) fn unacknowledged(&self, config: &Config) -> usize {
        self.txs
            .values()
            .filter(|t| {
                matches!(t.phase, Phase::Committing { retries, .. } if retries >= config.decision_retries_max)
            })
            .count()
    }

    pub(crate) fn begin<R: Resource + Default>(
        &mut self,
        config: &Config,
        request: RequestId,
        writes: BTreeMap<NodeId, Vec<Write>>,
        out: &mut Outbox<TwoPcNode<R>>,
    ) {
        let open = self.txs.len();
        let Some(tx) = self.book.begin(&config.txn, open, request, &writes, out) else {
            return;
        };
        let one_phase = writes.len() == 1;
        let phase = if one_phase {
            Phase::OnePc { retries: 0 }
        } else {
            Phase::Voting {
                tally: Tally::new(writes.keys().copied()),
            }
        };
        let ctx = CoordTx {
            request: Some(request),
            writes,
            phase,
            age_ticks: 0,
            resend: Backoff::new(config.txn.resend_ticks, config.txn.resend_ticks_max),
        };
        send_phase_one(tx, &ctx, out);
        self.txs.insert(tx, ctx);
    }

    pub(crate) fn on_vote<R: Resource + Default>(
        &mut self,
        from: NodeId,
        tx: TxId,
        vote: Vote,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        let Some(ctx) = self.txs.get_mut(&tx) else {
            if vote == Vote::Yes {
                // Presumed abort: no record of the transaction means it did not commit.
                out.send(from, Message::Abort { tx });
            }
            return Err("vote for an unknown transaction");
        };
        match &mut ctx.phase {
            Phase::Voting { tally } => {
                match tally.record(from, vote).map_err(|e| e.as_str())? {
                    Some(Outcome::Aborted) => self.abort(tx, out),
                    Some(Outcome::Committed) => self.decide_commit(tx, out),
                    None => {}
                }
                Ok(())
            }
            Phase::Committing { pending, .. } => {
                if vote == Vote::Yes && pending.contains(&from) {
                    // The participant missed the Commit; save it a decision request.
                    out.send(from, Message::Commit { tx });
                }
                Err("vote after the decision")
            }
            Phase::OnePc { .. } => Err("vote in a one-phase commit"),
        }
    }

    fn decide_commit<R: Resource + Default>(&mut self, tx: TxId, out: &mut Outbox<TwoPcNode<R>>) {
        let Some(ctx) = self.txs.get_mut(&tx) else {
            return;
        };
        let Phase::Voting { tally } = &ctx.phase else {
            return;
        };
        let yes = tally.voted_yes();
        let request = ctx.request.take();
        self.book.decided(tx, Outcome::Committed, request, out);
        if yes.is_empty() {
            // Every participant was read-only: nothing to log, nobody to tell.
            self.txs.remove(&tx);
            return;
        }
        // Forced: the decision is durable before the first Commit (or the client's answer)
        // leaves, by the Outbox rule.
        out.persist(Record::CommitDecision {
            tx,
            participants: yes.clone(),
        });
        for &p in &yes {
            out.send(p, Message::Commit { tx });
        }
        ctx.writes.clear();
        ctx.phase = Phase::Committing {
            pending: yes.into_iter().collect(),
            retries: 0,
        };
        // A new phase: its first resend comes after the base interval again.
        ctx.resend.reset();
    }

    /// Aborts a voting transaction: tells every participant that may be prepared, answers the
    /// client and forgets it. Nothing is logged and nothing will be acked (presumed abort).
    fn abort<R: Resource + Default>(&mut self, tx: TxId, out: &mut Outbox<TwoPcNode<R>>) {
        let Some(ctx) = self.txs.remove(&tx) else {
            return;
        };
        if let Phase::Voting { tally } = &ctx.phase {
            for p in tally.may_be_prepared() {
                out.send(p, Message::Abort { tx });
            }
        }
        self.book.decided(tx, Outcome::Aborted, ctx.request, out);
    }

    pub(crate) fn on_one_phase_result<R: Resource + Default>(
        &mut self,
        from: NodeId,
        tx: TxId,
        outcome: Outcome,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        let Some(ctx) = self.txs.get(&tx) else {
            return Err("one-phase result for an unknown transaction");
        };
        if !matches!(ctx.phase, Phase::OnePc { .. }) || !ctx.writes.contains_key(&from) {
            return Err("one-phase result out of place");
        }
        let Some(ctx) = self.txs.remove(&tx) else {
            return Err("one-phase result for an unknown transaction");
        };
        self.book.decided(tx, outcome, ctx.request, out);
        Ok(())
    }

    pub(crate) fn on_ack<R: Resource + Default>(
        &mut self,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        let Some(ctx) = self.txs.get_mut(&tx) else {
            return Err("ack for an unknown transaction");
        };
        let Phase::Committing { pending, .. } = &mut ctx.phase else {
            return Err("ack before the decision");
        };
        if !pending.remove(&from) {
            return Err("duplicate ack or ack from a non-participant");
        }
        if pending.is_empty() {
            self.txs.remove(&tx);
            // Lazy: nothing waits for it. If it is lost, recovery resends Commit and the
            // participants ack again.
            out.persist(Record::End { tx });
        }
        Ok(())
    }

    pub(crate) fn on_decision_request<R: Resource + Default>(
        &mut self,
        from: NodeId,
        tx: TxId,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Result<(), &'static str> {
        match self.txs.get(&tx).map(|c| &c.phase) {
            // Presumed abort: no trace of the transaction means it did not commit.
            None => out.send(from, Message::Abort { tx }),
            Some(Phase::Committing { .. }) => out.send(from, Message::Commit { tx }),
            // Not decided yet: the decision will be sent when taken.
            Some(Phase::Voting { .. }) | Some(Phase::OnePc { .. }) => {
                return Err("decision request before the decision")
            }
        }
        Ok(())
    }

    /// One tick: the vote timeout, and resends paced by each transaction's [`Backoff`] within
    /// the node's per-tick [`SendBudget`] (a resend that does not fit stays due for a later
    /// tick).
    pub(crate) fn tick<R: Resource + Default>(
        &mut self,
        config: &Config,
        budget: &mut SendBudget,
        out: &mut Outbox<TwoPcNode<R>>,
    ) {
        let mut timed_out = Vec::new();
        let mut unknown = Vec::new();
        for (&tx, ctx) in self.txs.iter_mut() {
            match ctx.tick(tx, config, budget, out) {
                Some(Overdue::Votes) => timed_out.push(tx),
                Some(Overdue::OnePhaseResult) => unknown.push(tx),
                None => {}
            }
        }
        for tx in timed_out {
            self.abort(tx, out);
        }
        for tx in unknown {
            if let Some(ctx) = self.txs.remove(&tx) {
                if let Some(request) = ctx.request {
                    out.respond(request, Response::Failed(TxError::OutcomeUnknown(tx)));
                }
            }
        }
    }
}

/// What a transaction waited for in vain, found by its tick; the coordinator ends it once every
/// transaction has ticked.
enum Overdue {
    /// The votes, past the vote timeout: abort.
    Votes,
    /// The only participant's one-phase result, past the last retry: the outcome is unknown.
    OnePhaseResult,
}

impl CoordTx {
    /// One tick of transaction `tx`: ages it and, when its resend is due and fits in `budget`,
    /// resends its phase's message to the participants that have not answered.
    fn tick<R: Resource + Default>(
        &mut self,
        tx: TxId,
        config: &Config,
        budget: &mut SendBudget,
        out: &mut Outbox<TwoPcNode<R>>,
    ) -> Option<Overdue> {
        self.age_ticks += 1;
        let due = self.resend.tick();
        match &mut self.phase {
            Phase::Voting { tally } => {
                if self.age_ticks >= config.txn.vote_timeout_ticks {
                    return Some(Overdue::Votes);
                }
                let missing = tally.missing();
                let silent: Vec<(&NodeId, &Vec<Write>)> = self
                    .writes
                    .iter()
                    .filter(|(p, _)| missing.contains(p))
                    .collect();
                if due && budget.take(silent.len()) {
                    self.resend.sent();
                    let peers = writing_participants(&self.writes);
                    for (p, w) in silent {
                        out.send(
                            *p,
                            Message::Prepare {
                                tx,
                                writes: w.clone(),
                                peers: peers.clone(),
                            },
                        );
                    }
                }
            }
            Phase::OnePc { retries } => {
                if !due {
                    return None;
                }
                if *retries >= config.one_phase_retries_max {
                    return Some(Overdue::OnePhaseResult);
                }
                if budget.take(self.writes.len()) {
                    self.resend.sent();
                    *retries += 1;
                    for (p, w) in &self.writes {
                        out.send(
                            *p,
                            Message::OnePhaseCommit {
                                tx,
                                writes: w.clone(),
                            },
                        );
                    }
                }
            }
            Phase::Committing { pending, retries } => {
                // A commit cannot be forgotten before it is acked, so the coordinator never
                // stops resending; the backoff only slows it down (in-doubt participants
                // also pull the decision themselves).
                if due && budget.take(pending.len()) {
                    self.resend.sent();
                    *retries = retries.saturating_add(1);
                    for &p in pending.iter() {
                        out.send(p, Message::Commit { tx });
                    }
                }
            }
        }
        None
    }
}

fn writing_participants(writes: &BTreeMap<NodeId, Vec<Write>>) -> Vec<NodeId> {
    writes
        .iter()
        .filter(|(_, w)| !w.is_empty())
        .map(|(p, _)| *p)
        .collect()
}

fn send_phase_one<R: Resource + Default>(tx: TxId, ctx: &CoordTx, out: &mut Outbox<TwoPcNode<R>>) {
    match ctx.phase {
        Phase::OnePc { .. } => {
            for (p, w) in &ctx.writes {
                out.send(
                    *p,
                    Message::OnePhaseCommit {
                        tx,
                        writes: w.clone(),
                    },
                );
            }
        }
        _ => {
            let peers = writing_participants(&ctx.writes);
            for (p, w) in &ctx.writes {
                out.send(
                    *p,
                    Message::Prepare {
                        tx,
                        writes: w.clone(),
                        peers: peers.clone(),
                    },
                );
            }
        }
    }
}
