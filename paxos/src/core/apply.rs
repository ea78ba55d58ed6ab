//! The learner's apply pipeline: the chosen slots from `applied` up to the next stop-sign
//! (excluded) go to the state machine as one batch, in three stages.
//!
//! 1. **Deduplicate** ([`Learner::deduplicate_run`]): slot by slot and command by command, in
//!    order, the session table decides each command's [`Fate`]: new (recorded, output to
//!    follow, so that eviction happens exactly where it would one command at a time), a retry
//!    of a command applied before or earlier in the run, or stale. Slots below `sm_applied`
//!    were applied by a durable state machine before a restart: only the session table sees
//!    them.
//! 2. **Apply** ([`Learner::apply_commands`]): the new commands go to
//!    [`StateMachine::apply_batch`] together.
//! 3. **Respond** ([`Learner::respond_run`]): the outputs are recorded in the session table,
//!    and the clients answered: the requests of the batches this replica proposed, and the
//!    retries attached to a command's session.
//!
//! A stop-sign never enters a run: [`Learner::deduplicate_run`] stops in front of it, and
//! `PaxosNode::apply_decided` applies it on its own (it ends the configuration).

use std::collections::{BTreeMap, BTreeSet};

use common::{Outbox, RequestId};

use crate::error::PaxosError;
use crate::message::{Ballot, Command, Session, Slot, Value};
use crate::state_machine::{Dedup, StateMachine};

use super::learner::{fail_all, Learner, OwedRequests};
use super::log::SlotLog;
use super::{PaxosNode, Response, Shared};

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
    requests: OwedRequests,
    /// How many fates of the run's list are this slot's (one per command, in order).
    fates: usize,
}

/// The lists `apply_run` fills, kept by the learner between runs; empty between runs.
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

/// Answers a command that was applied (or refused by the session table). The slot is chosen,
/// so with [`crate::Config::parallel_accept`] (`early`) the answer claims nothing of the
/// records this batch still writes and goes at once.
fn answer<S: StateMachine>(
    early: bool,
    id: RequestId,
    response: Response<S::Output>,
    out: &mut Outbox<PaxosNode<S>>,
) {
    if early {
        out.respond_early(id, response);
    } else {
        out.respond(id, response);
    }
}

impl<S: StateMachine> Learner<S> {
    /// Applies the chosen slots from `applied` on up to the next stop-sign (excluded), as one
    /// batch, and answers their clients (the module documentation has the three stages).
    /// `held` is the leader's set of sessions it holds a copy of, if this replica leads: an
    /// applied command is no longer held.
    pub(crate) fn apply_run(
        &mut self,
        shared: &mut Shared<S::Command>,
        held: Option<&mut BTreeSet<Session>>,
        out: &mut Outbox<PaxosNode<S>>,
    ) {
        // The lists of the run are kept between runs (one run per step at one command in
        // flight: allocating them made most of a command's allocations).
        let mut scratch = self.apply_scratch.take().unwrap_or_default();
        scratch.clear();
        self.deduplicate_run(shared, &mut scratch, out);
        if !scratch.plan.is_empty() {
            self.apply_commands(shared, &mut scratch);
            self.respond_run(shared.config.parallel_accept, held, &mut scratch, out);
        }
        scratch.clear();
        self.apply_scratch = Some(scratch);
    }

    /// Stage 1: walks the chosen slots from `applied` on, up to a stop-sign, a gap or the end
    /// of the chosen prefix, and plans each command's fate.
    fn deduplicate_run(
        &mut self,
        shared: &mut Shared<S::Command>,
        scratch: &mut ApplyScratch<S::Output>,
        out: &mut Outbox<PaxosNode<S>>,
    ) {
        let Shared { log, counters, .. } = shared;
        // New commands of this run by session, for retries of them later in the same run.
        let mut fresh: BTreeMap<Session, usize> = BTreeMap::new();
        while self.applied < log.decided {
            let slot = self.applied;
            let Some(entry) = log.get(slot) else {
                break;
            };
            let (origin, commands) = match &entry.value {
                // Not part of a run: the caller applies it on its own.
                Value::StopSign { .. } => break,
                Value::Noop => {
                    if let Some((_, requests)) = self.take_owed(slot) {
                        fail_all(requests, out);
                    }
                    self.applied += 1;
                    continue;
                }
                Value::Batch { origin, commands } => (*origin, commands),
            };
            let requests = self.requests_answered(slot, origin, commands.len(), out);
            let fates_before = scratch.fates.len();
            for (i, command) in commands.iter().enumerate() {
                self.log_bytes = self
                    .log_bytes
                    .saturating_add(S::command_bytes(&command.payload) as u64);
                let fate = self.fate(slot, i, command, scratch, &mut fresh, counters);
                scratch.fates.push((command.session, fate));
            }
            scratch.plan.push(PlannedSlot {
                slot,
                requests,
                fates: scratch.fates.len() - fates_before,
            });
            self.applied += 1;
        }
    }

    /// The requests this replica answers for the batch chosen in `slot`: only the batch it
    /// created under this ballot (`origin`, with as many commands) answers its requests;
    /// anything else in the slot means ours was not chosen there, and they fail.
    fn requests_answered(
        &mut self,
        slot: Slot,
        origin: Ballot,
        commands: usize,
        out: &mut Outbox<PaxosNode<S>>,
    ) -> OwedRequests {
        match self.take_owed(slot) {
            Some((ballot, requests)) if ballot == origin && requests.len() == commands => requests,
            Some((_, requests)) => {
                fail_all(requests, out);
                OwedRequests::new()
            }
            None => OwedRequests::new(),
        }
    }

    /// The fate of the `i`-th command of the batch chosen in `slot`, from the session table
    /// (which records a new command, output to follow). A command to apply joins the batch.
    fn fate(
        &mut self,
        slot: Slot,
        i: usize,
        command: &Command<S::Command>,
        scratch: &mut ApplyScratch<S::Output>,
        fresh: &mut BTreeMap<Session, usize>,
        counters: &mut super::Counters,
    ) -> Fate<S::Output> {
        // Applied by a durable state machine before a restart: the session table only.
        let skip = slot < self.sm_applied;
        let mut apply = || {
            scratch.batch.push((slot, i));
            scratch.batch.len() - 1
        };
        let Some(session) = command.session else {
            return if skip {
                Fate::Unknown
            } else {
                Fate::Applied(apply())
            };
        };
        match self.sessions.check(session) {
            Dedup::Fresh => {
                self.sessions.record(session, None, slot);
                if skip {
                    return Fate::Unknown;
                }
                let k = apply();
                fresh.insert(session, k);
                Fate::Applied(k)
            }
            Dedup::Duplicate(output) => {
                counters.duplicates += 1;
                match (output, fresh.get(&session)) {
                    (Some(output), _) => Fate::Known(output),
                    (None, Some(&k)) => Fate::SameAs(k),
                    (None, None) => Fate::Unknown,
                }
            }
            Dedup::Stale => Fate::Stale,
        }
    }

    /// Stage 2: the run's new commands go to the state machine in one batch.
    fn apply_commands(
        &mut self,
        shared: &Shared<S::Command>,
        scratch: &mut ApplyScratch<S::Output>,
    ) {
        let ApplyScratch { batch, outputs, .. } = scratch;
        if batch.is_empty() {
            return;
        }
        let log: &SlotLog<S::Command> = &shared.log;
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
                id = shared.config.id,
                commands = batch.len(),
                outputs = outputs.len(),
                "paxos: apply_batch returned the wrong number of outputs"
            );
        }
    }

    /// Stage 3: records the outputs in the session table and answers, slot by slot and command
    /// by command, the requests of this replica's batches and the retries attached to each
    /// command's session.
    fn respond_run(
        &mut self,
        early: bool,
        mut held: Option<&mut BTreeSet<Session>>,
        scratch: &mut ApplyScratch<S::Output>,
        out: &mut Outbox<PaxosNode<S>>,
    ) {
        let ApplyScratch {
            plan,
            fates,
            outputs,
            ..
        } = scratch;
        let mut fates = fates.drain(..);
        for planned in plan.drain(..) {
            let slot = planned.slot;
            let mut requests = planned.requests.into_iter();
            for (session, fate) in fates.by_ref().take(planned.fates) {
                let result = self.outcome(session, fate, outputs);
                if let Some(session) = session {
                    if let Some(held) = held.as_deref_mut() {
                        held.remove(&session);
                    }
                    self.answer_waiters(early, session, slot, &result, out);
                }
                if let Some(id) = requests.next() {
                    let response = match result {
                        Ok(output) => Response::Applied { slot, output },
                        Err(e) => Response::Failed(e),
                    };
                    answer(early, id, response, out);
                }
            }
        }
    }

    /// What a command's client is told: its output (recorded in the session table if it was
    /// applied now), or why there is none.
    fn outcome(
        &mut self,
        session: Option<Session>,
        fate: Fate<S::Output>,
        outputs: &[S::Output],
    ) -> Result<S::Output, PaxosError> {
        match fate {
            Fate::Applied(k) => {
                let output = outputs.get(k).cloned();
                if let (Some(session), Some(output)) = (session, &output) {
                    self.sessions.set_output(session, output.clone());
                }
                output.ok_or(PaxosError::LeadershipLost)
            }
            Fate::SameAs(k) => outputs.get(k).cloned().ok_or(PaxosError::LeadershipLost),
            Fate::Known(output) => Ok(output),
            // Not applied now, and no output to give: refused like a stale retry.
            Fate::Unknown | Fate::Stale => Err(match session {
                Some(s) => PaxosError::SessionStale {
                    client: s.client,
                    seq: s.seq,
                },
                None => PaxosError::LeadershipLost,
            }),
        }
    }

    /// Answers the retries attached to `session` with the result of its command.
    fn answer_waiters(
        &mut self,
        early: bool,
        session: Session,
        slot: Slot,
        result: &Result<S::Output, PaxosError>,
        out: &mut Outbox<PaxosNode<S>>,
    ) {
        for id in self.session_waiters.remove(&session).into_iter().flatten() {
            let response = match result {
                Ok(output) => Response::Applied {
                    slot,
                    output: output.clone(),
                },
                Err(e) => Response::Failed(e.clone()),
            };
            answer(early, id, response, out);
        }
    }
}
