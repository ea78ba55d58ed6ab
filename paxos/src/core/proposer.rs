//! The proposer, in its multi-decree form: a stable leader (the paper's steps 1 and 3).
//!
//! - **Phase 1 once per leadership.** When the election makes this replica leader with ballot
//!   `b`, it sends one `Prepare(b, from_slot)` covering *every* slot from its first undecided one
//!   on, and waits for promises from a majority.
//! - **Re-propose what may have been chosen.** For each slot past the highest decided prefix any
//!   promise reported, the leader re-proposes the value accepted under the highest ballot; slots
//!   no promise mentions below the highest one mentioned are holes and get a no-op, so the log
//!   can be applied in order.
//! - **Phase 2 per command.** Afterwards each client command costs one round trip: it goes into
//!   the next free slot at once while fewer than [`Config::eager_slots_max`] slots are in flight;
//!   otherwise it waits for a slot to be chosen and shares the next one with the commands that
//!   waited too (at most [`Config::batch_commands_max`] per slot, at most
//!   [`Config::in_flight_slots_max`] slots in flight); each slot is sent as
//!   `Accept(b, slot, value)`. A slot is chosen once a majority answered `Accepted`; the commit index (every slot
//!   below it is chosen) rides on the next `Accept` or, when idle, on a `Commit`.
//! - **Linearizable reads** confirm leadership with one quorum round (`ReadProbe`) per batch of
//!   reads and are answered once every slot proposed before the read is applied (`reads.rs`).
//!
//! The leadership's own state and its per-phase bookkeeping are in `leader.rs`; this module
//! holds [`Proposer`] and the steps that send messages.
//!
//! [`Config::batch_commands_max`]: crate::Config::batch_commands_max
//! [`Config::eager_slots_max`]: crate::Config::eager_slots_max
//! [`Config::in_flight_slots_max`]: crate::Config::in_flight_slots_max

use std::collections::VecDeque;
use std::sync::Arc;

use common::{NodeId, Outbox, RequestId};

use crate::error::PaxosError;
use crate::message::{Ballot, Command, Message, PromisedEntry, Session, Slot, Value, Values};
use crate::state_machine::{Dedup, StateMachine};

use super::leader::{InFlight, Leader, Promised};
use super::learner::OwedRequests;
use super::{reconfig, PaxosNode, Response};

/// Most retries of one command waiting for the copy a leader already holds (a client retrying
/// faster than the cluster answers is refused with [`PaxosError::Busy`] beyond it).
pub const SESSION_WAITERS_MAX: usize = 16;

/// The proposer: what this replica holds as a leader, and the client requests that outlive one
/// leadership.
///
/// "Paxos Made Simple" §2.2: a proposer picks a number `n` and sends a prepare request to a
/// majority of acceptors (step 1(a)); with their promises, it proposes in `n` the value of the
/// highest-numbered proposal they reported, or any value if they reported none (step 2(a)).
/// §3 makes one proposer the distinguished leader of a sequence of instances and observes that
/// it may run phase 1 for every instance at once, with one short message, because the
/// acceptors' answers are the same for all the instances nothing was accepted in: a stable
/// leader pays phase 1 once and then only phase 2 per command. It fills the gaps phase 1
/// leaves with no-ops, so the log can be applied in order.
#[derive(Debug)]
pub(crate) struct Proposer<C, Q> {
    /// The current leadership, from phase 1 on (`None` on a follower).
    pub leader: Option<Leader<C, Q>>,
    /// A reconfiguration this replica proposed, answered when a stop-sign with these members is
    /// applied.
    pub reconfig_pending: Option<(RequestId, Vec<NodeId>)>,
    /// Set when a stop-sign was applied while this replica led: after the apply loop, it leads
    /// again in the new configuration (if elected there) and takes along `carried`.
    pub relead_after_apply: bool,
    /// Client commands and reads a leader held when its configuration ended, handed to its next
    /// leadership (or refused).
    pub carried: Option<reconfig::Carried<C, Q>>,
    /// The leader's own acceptances waiting for their records to be durable
    /// ([`Config::parallel_accept`](crate::Config::parallel_accept)): `(record, ballot, first
    /// slot, slots)`, oldest first.
    pub own_accepts: VecDeque<(u64, Ballot, Slot, u64)>,
    /// Lists `flush_queue` fills, kept between steps; empty between calls.
    pub scratch: RunScratch<C>,
    /// Set while [`common::Node::handle_requests`] takes a batch: its proposals are queued and
    /// go out together after it.
    pub batch_open: bool,
}

/// The values of a run of new slots and the commands of one batch, while a leader gathers them.
#[derive(Debug)]
pub(crate) struct RunScratch<C> {
    values: Vec<Value<C>>,
    commands: Vec<Command<C>>,
}

impl<C> Default for RunScratch<C> {
    fn default() -> Self {
        RunScratch {
            values: Vec::new(),
            commands: Vec::new(),
        }
    }
}

impl<C, Q> Default for Proposer<C, Q> {
    fn default() -> Self {
        Proposer {
            leader: None,
            reconfig_pending: None,
            relead_after_apply: false,
            carried: None,
            own_accepts: VecDeque::new(),
            scratch: RunScratch::default(),
            batch_open: false,
        }
    }
}

impl<S: StateMachine> PaxosNode<S> {
    /// Step 1 of the paper: prepare. Runs once per leadership, for every undecided slot.
    pub(crate) fn start_leading(&mut self, ballot: Ballot, out: &mut Outbox<Self>) {
        if self.proposer.leader.is_some() {
            self.step_down(out);
        }
        let from_slot = self.shared.log.decided;
        tracing::debug!(id = self.shared.config.id, %ballot, from_slot, "paxos: phase 1");
        let retransmit = self.shared.config.retransmit_ticks;
        self.proposer.leader = Some(Leader::new(ballot, from_slot, retransmit));
        // Our own acceptor promises first (durably, before the prepares leave).
        match self.prepare_locally(ballot, from_slot, out) {
            Some(Message::Promise {
                decided, accepted, ..
            }) => {
                let id = self.shared.config.id;
                self.on_promise(id, ballot, decided, accepted, out);
            }
            _ => {
                self.step_down(out);
                return;
            }
        }
        if self
            .proposer
            .leader
            .as_ref()
            .is_some_and(|l| !l.is_active())
        {
            let peers = self.shared.peers.clone();
            out.broadcast(peers, &Message::Prepare { ballot, from_slot });
        }
    }

    /// Stops leading: every request waiting here is answered.
    pub(crate) fn step_down(&mut self, out: &mut Outbox<Self>) {
        let Some(leader) = self.proposer.leader.take() else {
            return;
        };
        tracing::debug!(id = self.shared.config.id, ballot = %leader.ballot, "paxos: step down");
        let hint = self
            .election
            .leader_id()
            .filter(|&l| l != self.shared.config.id);
        for (id, _) in leader.queue {
            out.respond(id, Response::Failed(PaxosError::NotLeader { leader: hint }));
        }
        let reads = leader
            .reads_waiting
            .into_iter()
            .map(|(id, _)| id)
            .chain(
                leader
                    .read_probe
                    .into_iter()
                    .flat_map(|r| r.reads)
                    .map(|(id, _)| id),
            )
            .chain(leader.reads_ready.into_iter().map(|(_, id, _)| id));
        for id in reads {
            out.respond(id, Response::Failed(PaxosError::NotLeader { leader: hint }));
        }
        if let Some((id, _)) = self.proposer.reconfig_pending.take() {
            out.respond(id, Response::Failed(PaxosError::LeadershipLost));
        }
        for id in std::mem::take(&mut self.learner.session_waiters)
            .into_values()
            .flatten()
        {
            out.respond(id, Response::Failed(PaxosError::LeadershipLost));
        }
        // Proposed commands may still be chosen (a later leader re-proposes them): the outcome
        // is unknown to us, so the client must retry with its session.
        for id in self.learner.pending.take_all() {
            out.respond(id, Response::Failed(PaxosError::LeadershipLost));
        }
    }

    /// Phase 1b arrives at the leader.
    pub(crate) fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        decided: Slot,
        accepted: Vec<PromisedEntry<S::Command>>,
        out: &mut Outbox<Self>,
    ) {
        let window = self.shared.config.window_slots_max;
        let Some(leader) = self.proposer.leader.as_mut() else {
            return;
        };
        match leader.record_promise(from, ballot, decided, accepted, window) {
            Promised::Ignored => {}
            Promised::Malformed => self.shared.reject("malformed promise", from),
            Promised::Counted(n) if n >= self.shared.majority => self.finish_phase1(out),
            Promised::Counted(_) => {}
        }
    }

    /// Step 3 of the paper for every slot at once: choose what to propose from a majority of
    /// promises, then start phase 2.
    fn finish_phase1(&mut self, out: &mut Outbox<Self>) {
        let Some(leader) = self.proposer.leader.as_mut() else {
            return;
        };
        let Some((start, values)) = leader.complete_phase1() else {
            return;
        };
        let end = start + values.len() as u64;
        let ballot = leader.ballot;
        tracing::debug!(id = self.shared.config.id, %ballot, start, end, "paxos: phase 2");
        if self.shared.log.decided < start {
            self.learner.commit_hint = self.learner.commit_hint.max(start);
        }
        if !values.is_empty() {
            self.propose_run(start, values.into(), out);
        }
        // Reads and commands that arrived during phase 1.
        self.flush_queue(out);
        self.start_read_round(out);
    }

    /// Sends `values` for slots `first ..` (already in the in-flight window) to every acceptor.
    fn propose_run(&mut self, first: Slot, values: Values<S::Command>, out: &mut Outbox<Self>) {
        let Some(leader) = self.proposer.leader.as_ref() else {
            return;
        };
        let (ballot, commit) = (leader.ballot, leader.commit);
        let chunk = usize::try_from(self.shared.config.catch_up_slots_max).unwrap_or(usize::MAX);
        let mut slot = first;
        for part in values.chunks(chunk) {
            let len = part.len() as u64;
            // One run shared by every follower's message (and by this replica's own record,
            // below): the whole run when it fits one message, the usual case.
            let part = if part.len() == values.len() {
                values.clone()
            } else {
                part.into()
            };
            let msg = Message::Accept {
                ballot,
                slot,
                values: part,
                commit,
            };
            // With `parallel_accept` it goes before this replica's own acceptance is durable: it
            // claims nothing of it (the commit index it carries counts that acceptance only once
            // durable).
            let early = self.shared.config.parallel_accept;
            if let Some((&last, others)) = self.shared.peers.split_last() {
                for &peer in others {
                    if early {
                        out.send_early(peer, msg.clone());
                    } else {
                        out.send(peer, msg.clone());
                    }
                }
                if early {
                    out.send_early(last, msg);
                } else {
                    out.send(last, msg);
                }
            }
            slot += len;
        }
        if let Some(leader) = self.proposer.leader.as_mut() {
            leader.commit_sent = commit;
        }
        // Our own acceptor accepts too, unless the run lies beyond its window (it is far behind
        // and must learn first).
        let count = values.len() as u64;
        if first + count
            <= self
                .shared
                .log
                .decided
                .saturating_add(self.shared.config.window_slots_max)
        {
            let asked = self.shared.records_asked;
            if self.accept_locally(ballot, first, values, out) {
                if self.shared.config.parallel_accept && self.shared.records_asked > asked {
                    // Counted once its record is durable (`Node::records_durable`).
                    self.proposer.own_accepts.push_back((
                        self.shared.records_asked,
                        ballot,
                        first,
                        count,
                    ));
                } else {
                    let id = self.shared.config.id;
                    self.on_accepted(id, ballot, first, count, out);
                }
            } else {
                self.step_down(out);
            }
        }
    }

    /// A client proposal arrives.
    pub(crate) fn propose(
        &mut self,
        id: RequestId,
        command: S::Command,
        session: Option<Session>,
        out: &mut Outbox<Self>,
    ) {
        let queue_max = self.shared.config.queue_commands_max;
        let hint = self
            .election
            .leader_id()
            .filter(|&l| l != self.shared.config.id);
        if self.proposer.leader.is_none() {
            out.respond(id, Response::Failed(PaxosError::NotLeader { leader: hint }));
            return;
        }
        if session.is_some_and(|s| self.answer_retry(id, s, out)) {
            return;
        }
        let Some(leader) = self.proposer.leader.as_mut() else {
            return;
        };
        if leader.queue.len() >= queue_max {
            out.respond(id, Response::Failed(PaxosError::Busy));
            return;
        }
        if let Some(session) = session {
            leader.held.insert(session);
        }
        leader.queue.push_back((
            id,
            Command {
                session,
                payload: command,
            },
        ));
        // Under load, commands wait for the slot in flight to be chosen and then share the next
        // one (`flush_queue` runs again on every chosen slot); a lone command goes out at once.
        if !self.proposer.batch_open {
            self.flush_if_eager(out);
        }
    }

    /// Moves queued commands into slots if the rule of [`crate::Config::eager_slots_max`] says
    /// they go now: room for an eager slot, or a full batch waiting.
    pub(crate) fn flush_if_eager(&mut self, out: &mut Outbox<Self>) {
        let Some(leader) = self.proposer.leader.as_ref() else {
            return;
        };
        let eager = leader.in_flight() < self.shared.config.eager_slots_max
            || leader.queue.len() >= self.shared.config.batch_commands_max;
        if leader.is_active() && eager {
            self.flush_queue(out);
        }
    }

    /// A proposal that takes no new slot, answered here: a retry of a command already applied
    /// (from the session table) or stale, or a retry of a command this leadership already holds
    /// (it waits for that copy). Returns whether the proposal was answered or attached.
    fn answer_retry(&mut self, id: RequestId, session: Session, out: &mut Outbox<Self>) -> bool {
        let held = self
            .proposer
            .leader
            .as_ref()
            .is_some_and(|l| l.held.contains(&session));
        // A retry of a command already applied is answered from the session table without
        // taking a slot.
        match self.learner.sessions.check(session) {
            Dedup::Fresh => {
                // A retry of a command this leadership already holds (queued, or in a slot
                // it proposed or re-proposed after phase 1) takes no second slot: it is
                // answered when that copy is applied.
                if held {
                    let waiters = self.learner.session_waiters.entry(session).or_default();
                    if waiters.len() >= SESSION_WAITERS_MAX {
                        out.respond(id, Response::Failed(PaxosError::Busy));
                    } else {
                        waiters.push(id);
                        self.shared.counters.retries_attached += 1;
                    }
                    return true;
                }
            }
            Dedup::Duplicate(Some(output)) => {
                self.shared.counters.duplicates += 1;
                out.respond(
                    id,
                    Response::Applied {
                        slot: self.learner.applied,
                        output,
                    },
                );
                return true;
            }
            // Applied, by a durable state machine before a restart: its output is gone.
            Dedup::Duplicate(None) | Dedup::Stale => {
                out.respond(
                    id,
                    Response::Failed(PaxosError::SessionStale {
                        client: session.client,
                        seq: session.seq,
                    }),
                );
                return true;
            }
        }
        false
    }

    /// Moves queued commands into free slots (batching when the pipeline is full).
    pub(crate) fn flush_queue(&mut self, out: &mut Outbox<Self>) {
        let in_flight_max = self.shared.config.in_flight_slots_max;
        let batch_max = self.shared.config.batch_commands_max;
        let Proposer {
            leader, scratch, ..
        } = &mut self.proposer;
        let Some(leader) = leader.as_mut() else {
            return;
        };
        if !leader.is_active() || leader.stop_sign.is_some() {
            return; // nothing goes after a stop-sign: commands wait for the next configuration
        }
        let first = leader.next_slot;
        if leader.in_flight() < in_flight_max {
            if let Some(members) = leader.reconfig.take() {
                let value = leader.push_stop_sign(members);
                self.propose_run(first, value.into(), out);
                return;
            }
        }
        if self.learner.applied < leader.phase1_start {
            return; // catching up on what was chosen before us first (see `phase1_start`)
        }
        // The run's values and each batch's commands gather in lists kept between steps, then
        // move into one shared allocation each (a run of one value needs none, below).
        // Borrowed in place: moving the lists out and back through the stack cost more than the
        // rest of a one-command flush.
        let RunScratch { values, commands } = scratch;
        while !leader.queue.is_empty() && leader.in_flight() < in_flight_max {
            let n = leader.queue.len().min(batch_max);
            let mut requests = OwedRequests::with_capacity(n);
            for (id, c) in leader.queue.drain(..n) {
                // The session table may have learned this command since it was queued (chosen
                // before this leadership, applied while it caught up): answer, do not re-propose.
                if let Some(session) = c.session {
                    match self.learner.sessions.check(session) {
                        Dedup::Fresh => {}
                        Dedup::Duplicate(Some(output)) => {
                            self.shared.counters.duplicates += 1;
                            leader.held.remove(&session);
                            let slot = self.learner.applied;
                            out.respond(id, Response::Applied { slot, output });
                            continue;
                        }
                        Dedup::Duplicate(None) | Dedup::Stale => {
                            leader.held.remove(&session);
                            let (client, seq) = (session.client, session.seq);
                            out.respond(
                                id,
                                Response::Failed(PaxosError::SessionStale { client, seq }),
                            );
                            continue;
                        }
                    }
                }
                requests.push(id);
                commands.push(c);
            }
            if commands.is_empty() {
                continue;
            }
            let value = Value::Batch {
                origin: leader.ballot,
                commands: commands.drain(..).collect(),
            };
            self.learner
                .pending
                .insert(leader.next_slot, leader.ballot, requests);
            leader.in_flight.push_back(InFlight {
                acks: 0,
                value: value.clone(),
            });
            values.push(value);
            leader.next_slot += 1;
        }
        // Nothing to send is the common case (this runs after every commit): an empty `Arc`
        // slice still allocates its counts, so it is not built at all. One value, the usual
        // case with one command in flight, needs no list: the run holds it inline.
        let run: Option<Values<S::Command>> = match values.len() {
            0 => None,
            1 => values.pop().map(Values::from),
            _ => Some(values.drain(..).collect::<Arc<[_]>>().into()),
        };
        if let Some(run) = run {
            self.propose_run(first, run, out);
        }
    }

    /// Phase 2b arrives at the leader.
    pub(crate) fn on_accepted(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        slot: Slot,
        count: u64,
        out: &mut Outbox<Self>,
    ) {
        let Some(bit) = self.shared.bit(from) else {
            return;
        };
        let majority = self.shared.majority as u32;
        let Some(leader) = self.proposer.leader.as_mut() else {
            return;
        };
        if let Some(commit) = leader.record_accepted(bit, ballot, slot, count, majority) {
            let id = self.shared.config.id;
            self.on_commit(id, ballot, commit, out);
            self.flush_queue(out);
        }
    }

    /// An acceptor refused our ballot: someone promised higher. Step down and follow.
    pub(crate) fn on_nack(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        promised: Ballot,
        out: &mut Outbox<Self>,
    ) {
        if promised <= ballot || !self.shared.is_member(promised.leader) {
            self.shared.reject("malformed nack", from);
            return;
        }
        if self
            .proposer
            .leader
            .as_ref()
            .is_some_and(|l| l.ballot == ballot)
        {
            self.step_down(out);
        }
        if let Some(b) = self.election.observe(promised) {
            self.on_leader_change(b, out);
        }
    }

    /// The leader's timers: retransmissions and the idle commit.
    pub(crate) fn leader_tick(&mut self, out: &mut Outbox<Self>) {
        let retransmit_ticks = self.shared.config.retransmit_ticks;
        let chunk = self.shared.config.catch_up_slots_max;
        let Some(leader) = self.proposer.leader.as_mut() else {
            return;
        };
        let ballot = leader.ballot;
        // Followers learn a commit index within a tick even when no new command comes.
        if leader.is_active() && leader.commit_sent < leader.commit {
            leader.commit_sent = leader.commit;
            let msg = Message::Commit {
                ballot,
                commit: leader.commit,
            };
            for &peer in &self.shared.peers {
                out.send(peer, msg.clone());
            }
        }
        leader.retransmit_in = leader.retransmit_in.saturating_sub(1);
        if leader.retransmit_in > 0 {
            return;
        }
        leader.retransmit_in = retransmit_ticks;
        if let Some(promises) = &leader.promises {
            for &peer in &self.shared.peers {
                if !promises.by_acceptor.contains_key(&peer) {
                    out.send(
                        peer,
                        Message::Prepare {
                            ballot,
                            from_slot: leader.from_slot,
                        },
                    );
                }
            }
            return;
        }
        // Re-send, to each acceptor, the in-flight slots from the first it has not accepted.
        for (i, &peer) in self.shared.membership.members.iter().enumerate() {
            if peer == self.shared.config.id {
                continue;
            }
            let bit = 1u64 << i;
            let Some(first) = leader.in_flight.iter().position(|f| f.acks & bit == 0) else {
                continue;
            };
            let take = (leader.in_flight.len() - first).min(chunk as usize);
            let values: Values<_> = leader
                .in_flight
                .iter()
                .skip(first)
                .take(take)
                .map(|f| f.value.clone())
                .collect();
            out.send(
                peer,
                Message::Accept {
                    ballot,
                    slot: leader.commit + first as u64,
                    values,
                    commit: leader.commit,
                },
            );
        }
        if let Some(probe) = &leader.read_probe {
            for (i, &peer) in self.shared.membership.members.iter().enumerate() {
                if peer != self.shared.config.id && probe.acks & (1u64 << i) == 0 {
                    out.send(
                        peer,
                        Message::ReadProbe {
                            ballot,
                            round: probe.round,
                        },
                    );
                }
            }
        }
    }
}
