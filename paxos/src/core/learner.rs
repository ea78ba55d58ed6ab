//! The learner (the paper's step 5): learn which values are chosen, fetch what was missed, and
//! apply chosen slots in slot order.
//!
//! - A leader's commit index `c` under ballot `b` means "every slot below `c` is chosen, and in
//!   the slots I proposed, my value is the chosen one". So a slot whose entry was accepted under
//!   `b` is decided here at once; any other slot below `c` is fetched from a peer (catch-up).
//! - Decisions are durable (`Commit`/`Learn` records), so a restarted replica re-applies its
//!   chosen prefix without asking anyone.
//! - Slots are applied strictly in order; the session table makes a retried command apply at
//!   most once; the replica that proposed a batch answers its clients.

use std::collections::BTreeMap;

use common::{NodeId, Outbox, RequestId};

use crate::error::Error;
use crate::message::{Ballot, Message, Record, Session, Slot, Value};
use crate::state_machine::{Dedup, StateMachine};

use super::log::Entry;
use super::{Replica, Response};

impl<S: StateMachine> Replica<S> {
    /// Answers a command that was applied (or refused by the session table). The slot is
    /// chosen, so with [`crate::Config::parallel_accept`] the answer claims nothing of the
    /// records this batch still writes and goes at once.
    fn answer_applied(&self, id: RequestId, response: Response<S::Output>, out: &mut Outbox<Self>) {
        if self.config.parallel_accept {
            out.respond_early(id, response);
        } else {
            out.respond(id, response);
        }
    }

    /// A commit index arrived (from the leader, piggybacked or explicit, or from ourselves as
    /// leader).
    pub(crate) fn on_commit(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        commit: Slot,
        out: &mut Outbox<Self>,
    ) {
        if ballot.leader != from || ballot.round == 0 {
            self.reject("commit under another node's ballot", from);
            return;
        }
        self.commit_hint = self.commit_hint.max(commit);
        let first = self.log.decided;
        let mut decided = first;
        while decided < commit && self.log.get(decided).is_some_and(|e| e.ballot == ballot) {
            decided += 1;
        }
        if decided > first {
            self.log.decided = decided;
            out.persist(Record::Commit { decided });
            self.records_asked += 1;
            self.apply_decided(out);
        }
        if self.log.decided < commit && from != self.config.id {
            self.request_catch_up(from, out);
        }
    }

    /// Asks `peer` for the chosen values we miss, at most once per retransmission interval, and
    /// not while a snapshot is being received (see `transfer.rs`).
    pub(crate) fn request_catch_up(&mut self, peer: NodeId, out: &mut Outbox<Self>) {
        if self.catch_up_cooldown > 0 || peer == self.config.id || self.receiving_snapshot() {
            return;
        }
        self.catch_up_cooldown = self.config.retransmit_ticks;
        self.catch_up_asked = Some(peer);
        out.send(
            peer,
            Message::CatchUpRequest {
                from_slot: self.log.decided,
            },
        );
    }

    /// The learner's timer: keep asking while we know we are behind. Retries alternate between
    /// the peer that last told us it knows more and the other peers in turn, so an unreachable
    /// leader (partial connectivity) cannot starve catch-up.
    pub(crate) fn learner_tick(&mut self, out: &mut Outbox<Self>) {
        self.catch_up_cooldown = self.catch_up_cooldown.saturating_sub(1);
        if self.commit_hint > self.log.decided && self.catch_up_cooldown == 0 {
            self.catch_up_attempts = self.catch_up_attempts.wrapping_add(1);
            let n = self.peers.len() as u64;
            let peer = match self.catch_up_peer {
                Some(p) if self.catch_up_attempts % 2 == 0 => Some(p),
                _ if n > 0 => Some(self.peers[((self.catch_up_attempts / 2) % n) as usize]),
                _ => None,
            };
            if let Some(peer) = peer {
                self.request_catch_up(peer, out);
            }
        }
    }

    /// A peer asks for chosen values.
    pub(crate) fn on_catch_up_request(
        &mut self,
        from: NodeId,
        from_slot: Slot,
        out: &mut Outbox<Self>,
    ) {
        if from_slot >= self.log.decided {
            return; // nothing we know that it does not
        }
        if from_slot < self.log.start() {
            // Compacted away: the values live only in our snapshot.
            self.send_snapshot(from, out);
            return;
        }
        let end = self
            .log
            .decided
            .min(from_slot.saturating_add(self.config.catch_up_slots_max));
        let mut values = Vec::with_capacity((end - from_slot) as usize);
        for s in from_slot..end {
            match self.log.get(s) {
                Some(e) => values.push(e.value.clone()),
                None => break,
            }
        }
        if !values.is_empty() {
            out.send(from, Message::CatchUp { from_slot, values });
        }
    }

    /// Chosen values arrive from a peer.
    pub(crate) fn on_catch_up(
        &mut self,
        from: NodeId,
        from_slot: Slot,
        values: Vec<Value<S::Command>>,
        out: &mut Outbox<Self>,
    ) {
        if values.len() as u64 > self.config.catch_up_slots_max {
            self.reject("catch-up larger than the limit", from);
            return;
        }
        let first = self.log.decided;
        if from_slot > first {
            return; // would leave a gap; a later answer will fit
        }
        let skip = (first - from_slot) as usize;
        if skip >= values.len() {
            return; // nothing new
        }
        let learned: Vec<_> = values.into_iter().skip(skip).collect();
        for (i, value) in learned.iter().enumerate() {
            self.log.set(
                first + i as u64,
                Entry {
                    ballot: Ballot::ZERO,
                    value: value.clone(),
                },
            );
        }
        self.log.decided = first + learned.len() as u64;
        out.persist(Record::Learn {
            from_slot: first,
            values: learned,
        });
        self.records_asked += 1;
        self.apply_decided(out);
        if self.commit_hint > self.log.decided {
            self.catch_up_cooldown = 0;
            self.request_catch_up(from, out);
        }
    }

    /// Applies every chosen slot not yet applied, in slot order, answering the clients whose
    /// batch this replica created. The commands of every slot up to the next stop-sign go to the
    /// state machine in one [`StateMachine::apply_batch`]; [`StateMachine::applied`] follows once.
    pub(crate) fn apply_decided(&mut self, out: &mut Outbox<Self>) {
        if self.state_invalid {
            return;
        }
        let first = self.applied;
        loop {
            self.apply_run(out);
            // `apply_run` stops at the end of the chosen prefix, at a gap, or at a stop-sign.
            let slot = self.applied;
            if slot >= self.log.decided {
                break;
            }
            let Some(Value::StopSign { epoch, members }) = self.log.get(slot).map(|e| &e.value)
            else {
                break; // compacted: the snapshot already covers it
            };
            let (epoch, members) = (*epoch, members.clone());
            let mine = match self.pending.first_key_value() {
                Some((&s, _)) if s == slot => self.pending.remove(&slot),
                _ => None,
            };
            for id in mine.into_iter().flat_map(|(_, requests)| requests) {
                out.respond(id, Response::Failed(Error::LeadershipLost));
            }
            self.applied += 1;
            self.apply_stop_sign(slot, epoch, members, out);
        }
        if self.applied > first && self.applied >= self.sm_applied {
            self.state.applied(self.applied);
        }
        // Pending batches of slots below what we applied (installed by a snapshot) are lost.
        while let Some((&s, _)) = self.pending.first_key_value() {
            if s >= self.applied {
                break;
            }
            if let Some((_, requests)) = self.pending.remove(&s) {
                for id in requests {
                    out.respond(id, Response::Failed(Error::LeadershipLost));
                }
            }
        }
        self.answer_reads(out);
        self.maybe_snapshot(out);
        self.after_apply(out);
        // A new leader waits to have applied what was chosen before it (see `proposer.rs`).
        self.flush_queue(out);
    }

    /// Applies the chosen slots from `applied` on up to the next stop-sign (excluded), as one
    /// batch, and answers their clients.
    ///
    /// Three passes: the session table decides, command by command and in order, which commands
    /// are new (recording them, output to follow, so that eviction happens exactly where it
    /// would one command at a time); the new ones go to the state machine in one batch; then
    /// the outputs are recorded and the clients answered. Slots below `sm_applied` were applied
    /// by a durable state machine before a restart: only the session table sees them.
    fn apply_run(&mut self, out: &mut Outbox<Self>) {
        // The lists of the run are kept between runs (one run per step at one command in
        // flight: allocating them made most of a command's allocations).
        let mut scratch = std::mem::take(&mut self.apply_scratch);
        scratch.clear();
        self.apply_run_with(&mut scratch, out);
        scratch.clear();
        self.apply_scratch = scratch;
    }

    fn apply_run_with(&mut self, scratch: &mut ApplyScratch<S::Output>, out: &mut Outbox<Self>) {
        let ApplyScratch {
            plan,
            fates,
            batch,
            outputs,
        } = scratch;
        // New commands of this run by session, for retries of them later in the same run.
        let mut fresh: BTreeMap<Session, usize> = BTreeMap::new();
        while self.applied < self.log.decided {
            let slot = self.applied;
            let Some(entry) = self.log.get(slot) else {
                break;
            };
            if matches!(entry.value, Value::StopSign { .. }) {
                break;
            }
            let mine = match self.pending.first_key_value() {
                Some((&s, _)) if s == slot => self.pending.remove(&slot),
                _ => None,
            };
            match &entry.value {
                Value::Noop | Value::StopSign { .. } => {
                    for id in mine.into_iter().flat_map(|(_, requests)| requests) {
                        out.respond(id, Response::Failed(Error::LeadershipLost));
                    }
                }
                Value::Batch { origin, commands } => {
                    // Only the batch this replica created under this ballot answers its
                    // requests; anything else in the slot means ours was not chosen there.
                    let requests = match mine {
                        Some((ballot, requests))
                            if ballot == *origin && requests.len() == commands.len() =>
                        {
                            requests
                        }
                        Some((_, requests)) => {
                            for id in requests {
                                out.respond(id, Response::Failed(Error::LeadershipLost));
                            }
                            Vec::new()
                        }
                        None => Vec::new(),
                    };
                    let skip = slot < self.sm_applied;
                    let fates_before = fates.len();
                    for (i, command) in commands.iter().enumerate() {
                        self.log_bytes = self
                            .log_bytes
                            .saturating_add(S::command_bytes(&command.payload) as u64);
                        let mut apply = || {
                            batch.push((slot, i));
                            batch.len() - 1
                        };
                        let fate = match command.session {
                            None if skip => Fate::Unknown,
                            None => Fate::Applied(apply()),
                            Some(session) => match self.sessions.check(session) {
                                Dedup::Fresh => {
                                    self.sessions.record(session, None, slot);
                                    if skip {
                                        Fate::Unknown
                                    } else {
                                        let k = apply();
                                        fresh.insert(session, k);
                                        Fate::Applied(k)
                                    }
                                }
                                Dedup::Duplicate(output) => {
                                    self.counters.duplicates += 1;
                                    match (output, fresh.get(&session)) {
                                        (Some(output), _) => Fate::Known(output),
                                        (None, Some(&k)) => Fate::SameAs(k),
                                        (None, None) => Fate::Unknown,
                                    }
                                }
                                Dedup::Stale => Fate::Stale,
                            },
                        };
                        fates.push((command.session, fate));
                    }
                    plan.push(PlannedSlot {
                        slot,
                        requests,
                        fates: fates.len() - fates_before,
                    });
                }
            }
            self.applied += 1;
        }
        if plan.is_empty() {
            return;
        }
        if !batch.is_empty() {
            let log = &self.log;
            let commands =
                batch
                    .iter()
                    .filter_map(|&(slot, i)| match log.get(slot).map(|e| &e.value) {
                        Some(Value::Batch { commands, .. }) => {
                            commands.get(i).map(|c| (slot + 1, &c.payload))
                        }
                        _ => None,
                    });
            self.state.apply_batch(commands, outputs);
            if outputs.len() != batch.len() {
                // A state machine that breaks `apply_batch`'s contract: the commands without
                // an output are answered as if their outcome were unknown.
                tracing::error!(
                    id = self.config.id,
                    commands = batch.len(),
                    outputs = outputs.len(),
                    "paxos: apply_batch returned the wrong number of outputs"
                );
            }
        }
        let mut fates = fates.drain(..);
        for planned in plan.drain(..) {
            let slot = planned.slot;
            let mut requests = planned.requests.into_iter();
            for (session, fate) in fates.by_ref().take(planned.fates) {
                let result = match fate {
                    Fate::Applied(k) => {
                        let output = outputs.get(k).cloned();
                        if let (Some(session), Some(output)) = (session, &output) {
                            self.sessions.set_output(session, output.clone());
                        }
                        output.ok_or(Error::LeadershipLost)
                    }
                    Fate::SameAs(k) => outputs.get(k).cloned().ok_or(Error::LeadershipLost),
                    Fate::Known(output) => Ok(output),
                    // Not applied now, and no output to give: refused like a stale retry.
                    Fate::Unknown | Fate::Stale => Err(match session {
                        Some(s) => Error::SessionStale {
                            client: s.client,
                            seq: s.seq,
                        },
                        None => Error::LeadershipLost,
                    }),
                };
                if let Some(session) = session {
                    if let Some(leader) = self.leader.as_mut() {
                        leader.held.remove(&session);
                    }
                    for id in self.session_waiters.remove(&session).into_iter().flatten() {
                        let response = match &result {
                            Ok(output) => Response::Applied {
                                slot,
                                output: output.clone(),
                            },
                            Err(e) => Response::Failed(e.clone()),
                        };
                        self.answer_applied(id, response, out);
                    }
                }
                if let Some(id) = requests.next() {
                    let response = match result {
                        Ok(output) => Response::Applied { slot, output },
                        Err(e) => Response::Failed(e),
                    };
                    self.answer_applied(id, response, out);
                }
            }
        }
    }
}

/// What became of one command of a run being applied.
enum Fate<O> {
    /// New: applied, its output is the batch's `k`-th.
    Applied(usize),
    /// A retry of the batch's `k`-th command, applied earlier in the same run.
    SameAs(usize),
    /// A retry of a command applied before: its output, from the session table.
    Known(O),
    /// Applied before a restart by a durable state machine: its output is unknown here.
    Unknown,
    /// An older command of its session, or one of a forgotten session: not applied.
    Stale,
}

/// One slot of a run being applied.
struct PlannedSlot {
    slot: Slot,
    /// The client requests this replica answers for the slot's commands, in order.
    requests: Vec<RequestId>,
    /// How many fates of the run's list are this slot's (one per command, in order).
    fates: usize,
}

/// The lists `apply_run` fills, kept by the replica between runs; empty between runs.
pub(crate) struct ApplyScratch<O> {
    plan: Vec<PlannedSlot>,
    /// Each command's session and fate, slot after slot.
    fates: Vec<(Option<Session>, Fate<O>)>,
    /// (slot, index in the slot's batch) of every command the state machine applies.
    batch: Vec<(Slot, usize)>,
    /// The state machine's outputs for `batch`.
    outputs: Vec<O>,
}

impl<O> Default for ApplyScratch<O> {
    fn default() -> Self {
        Self {
            plan: Vec::new(),
            fates: Vec::new(),
            batch: Vec::new(),
            outputs: Vec::new(),
        }
    }
}

impl<O> ApplyScratch<O> {
    fn clear(&mut self) {
        self.plan.clear();
        self.fates.clear();
        self.batch.clear();
        self.outputs.clear();
    }
}
