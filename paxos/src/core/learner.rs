//! The learner (the paper's step 5): learn which values are chosen, fetch what was missed, and
//! apply chosen slots in slot order.
//!
//! - A leader's commit index `c` under ballot `b` means "every slot below `c` is chosen, and in
//!   the slots I proposed, my value is the chosen one". So a slot whose entry was accepted under
//!   `b` is decided here at once; any other slot below `c` is fetched from a peer (catch-up),
//!   and once catch-up has filled it, the slots after it accepted under `b` are decided from
//!   the `c` already heard (the latest ballot's is kept), not only when `c` is heard again.
//! - Decisions are logged (`Learn` records at once; `Commit` records with the replica's next
//!   record or at its next tick, since nothing it sends claims them), so a restarted replica
//!   re-applies the chosen prefix it logged without asking anyone, and relearns the rest.
//! - Slots are applied strictly in order; the session table makes a retried command apply at
//!   most once; the replica that proposed a batch answers its clients (the pipeline that does
//!   so is in `apply.rs`).

use std::collections::{BTreeMap, VecDeque};

use common::{NodeId, Outbox, RequestId};

use crate::error::PaxosError;
use crate::message::{Ballot, Message, Record, Session, Slot, Value};
use crate::state_machine::{Sessions, StateMachine};

use super::apply::ApplyScratch;
use super::log::{Entry, SlotLog};
use super::{PaxosNode, Response};

/// The learner: the state machine, the session table, how far this replica applied, and who
/// waits for which slot.
///
/// "Paxos Made Simple" §2.3: a learner must find out that a proposal was accepted by a
/// majority. The paper's cheapest scheme sends every acceptance to one distinguished learner,
/// which tells the others; here the leader is that learner, and its commit index ("every slot
/// below `c` is chosen") rides on its next accept or commit message. Since a learner may miss
/// it, §2.3 lets a learner ask for the chosen value: that is catch-up, with whole snapshots for
/// what peers compacted away. §3 applies the chosen commands in slot order, waiting at a gap.
pub(crate) struct Learner<S: StateMachine> {
    pub state: S,
    pub sessions: Sessions<S::Output>,
    /// First slot not yet applied.
    pub applied: Slot,
    /// First slot the state machine has not applied: above `applied` only after a restart with
    /// a durable state machine ([`StateMachine::applied_index`]), while the apply loop brings
    /// the session table up to it without applying those slots again.
    pub sm_applied: Slot,
    /// Set while [`common::Node::recover`] replays the log (no checkpoint may be asked for then:
    /// the driver would never see it).
    pub recovering: bool,
    /// Set when restoring a received snapshot into the state machine failed part-way: its
    /// state is unknown, so nothing is applied, read or snapshotted until a snapshot restores
    /// cleanly.
    pub state_invalid: bool,
    /// Approximate bytes of the commands applied since the log was last compacted
    /// ([`StateMachine::command_bytes`]): compaction's trigger by size.
    pub log_bytes: u64,
    /// Highest commit index heard of (slots below are chosen somewhere).
    pub commit_hint: Slot,
    /// The latest leader's ballot a commit index was heard under, with the highest index heard
    /// under it: kept so that the slots accepted under that ballot can still be decided once
    /// catch-up has filled a gap before them (see [`PaxosNode::decide_after_gap`]).
    pub commit_known: Option<(Ballot, Slot)>,
    /// Whom to ask for missed values, and when.
    pub catch_up: CatchUp,
    /// Client proposals answered when their slot is applied.
    pub pending: Owed,
    /// Retries attached to a copy of their command the leader already holds, answered when a
    /// command of that session is applied (see `proposer.rs`).
    pub session_waiters: BTreeMap<Session, Vec<RequestId>>,
    /// Reused by `apply_run` (see `apply.rs`). Boxed so that taking it out for a run and
    /// putting it back moves a pointer, not four lists (moving those through the stack cost
    /// more than the rest of a one-command run's bookkeeping).
    pub apply_scratch: Option<Box<ApplyScratch<S::Output>>>,
}

/// The requests one slot owes answers to, in command order. With one or two commands per batch
/// (a lightly loaded leader) they stay inline: no allocation per command.
pub(crate) type OwedRequests = smallvec::SmallVec<[RequestId; 2]>;

/// The client requests a replica answers when a slot it proposed is applied: `(slot, ballot of
/// the batch, requests)`, in slot order. A queue, not a map: a leader proposes in increasing
/// slots, and a leadership that ends takes every entry with it, so new entries go at the back
/// (`insert` still keeps the order if one ever does not).
#[derive(Debug, Default)]
pub(crate) struct Owed {
    slots: VecDeque<(Slot, Ballot, OwedRequests)>,
}

impl Owed {
    /// Owes `requests` the outcome of the batch proposed under `ballot` in `slot` (replacing
    /// what was owed for `slot`, if anything).
    pub(crate) fn insert(&mut self, slot: Slot, ballot: Ballot, requests: OwedRequests) {
        match self.slots.back() {
            Some(&(last, ..)) if last >= slot => {
                let at = self.slots.partition_point(|&(s, ..)| s < slot);
                match self.slots.get_mut(at) {
                    Some(owed) if owed.0 == slot => *owed = (slot, ballot, requests),
                    _ => self.slots.insert(at, (slot, ballot, requests)),
                }
            }
            _ => self.slots.push_back((slot, ballot, requests)),
        }
    }

    /// What is owed for `slot`, if `slot` is the first slot owed anything.
    pub(crate) fn take(&mut self, slot: Slot) -> Option<(Ballot, OwedRequests)> {
        match self.slots.front() {
            Some(&(first, ..)) if first == slot => {
                self.slots.pop_front().map(|(_, b, requests)| (b, requests))
            }
            _ => None,
        }
    }

    /// The requests of the first slot owed anything, if it is below `slot`.
    pub(crate) fn take_below(&mut self, slot: Slot) -> Option<OwedRequests> {
        match self.slots.front() {
            Some(&(first, ..)) if first < slot => self.slots.pop_front().map(|(.., r)| r),
            _ => None,
        }
    }

    /// Every request owed anything, slot after slot; nothing is owed afterwards.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = RequestId> {
        std::mem::take(&mut self.slots)
            .into_iter()
            .flat_map(|(.., requests)| requests)
    }
}

/// The catch-up timer and whom it asks.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    /// Ticks until the next catch-up request may be sent.
    pub cooldown: u64,
    /// Catch-up requests sent by the timer (rotates the peer asked).
    pub attempts: u64,
    /// The peer that last told us it decided more than we did.
    pub peer: Option<NodeId>,
    /// The last peer a catch-up request went to: its answer is accepted even if it is not a
    /// member of our configuration (we may be behind a reconfiguration that added it).
    pub asked: Option<NodeId>,
}

impl<S: StateMachine> Learner<S> {
    /// A learner over `state` that has applied nothing yet (recovery re-applies the chosen
    /// prefix, which ends below `commit_hint`).
    pub(crate) fn new(state: S, sessions_max: usize, commit_hint: Slot) -> Self {
        Learner {
            state,
            sessions: Sessions::new(sessions_max),
            applied: 0,
            sm_applied: 0,
            recovering: true,
            state_invalid: false,
            log_bytes: 0,
            commit_hint,
            commit_known: None,
            catch_up: CatchUp::default(),
            pending: Owed::default(),
            session_waiters: BTreeMap::new(),
            apply_scratch: None,
        }
    }

    /// Takes the requests owed for `slot` if it is the first slot with any.
    pub(crate) fn take_owed(&mut self, slot: Slot) -> Option<(Ballot, OwedRequests)> {
        self.pending.take(slot)
    }

    /// The stop-sign in the first slot not yet applied, if that slot is chosen and holds one
    /// (the apply loop stops there: it ends the configuration).
    fn stop_sign_next(&self, log: &SlotLog<S::Command>) -> Option<(Slot, u64, Vec<NodeId>)> {
        let slot = self.applied;
        if slot >= log.decided {
            return None;
        }
        match log.get(slot).map(|e| &e.value) {
            Some(Value::StopSign { epoch, members }) => Some((slot, *epoch, members.clone())),
            // Compacted: the snapshot already covers it; or nothing left to apply.
            _ => None,
        }
    }

    /// After an apply loop that started at `first`: tells the state machine how far it got,
    /// and fails the proposals of slots a snapshot covered (their fate is unknown here).
    fn finish_apply(&mut self, first: Slot, out: &mut Outbox<PaxosNode<S>>) {
        if self.applied > first && self.applied >= self.sm_applied {
            self.state.applied(self.applied);
        }
        while let Some(requests) = self.pending.take_below(self.applied) {
            fail_all(requests, out);
        }
    }
}

/// Answers every request in `requests`: the leadership that proposed them cannot tell whether
/// they were chosen.
pub(crate) fn fail_all<S: StateMachine>(
    requests: impl IntoIterator<Item = RequestId>,
    out: &mut Outbox<PaxosNode<S>>,
) {
    for id in requests {
        out.respond(id, Response::Failed(PaxosError::LeadershipLost));
    }
}

/// Routing: decisions and catch-up messages, and what applying means for the other roles.
impl<S: StateMachine> PaxosNode<S> {
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
            self.shared
                .reject("commit under another node's ballot", from);
            return;
        }
        self.learner.commit_hint = self.learner.commit_hint.max(commit);
        self.learner.commit_known = match self.learner.commit_known {
            Some((b, c)) if b > ballot || (b == ballot && c >= commit) => Some((b, c)),
            _ => Some((ballot, commit)),
        };
        self.decide_under(ballot, commit, out);
        if self.shared.log.decided < commit && from != self.shared.config.id {
            self.request_catch_up(from, out);
        }
    }

    /// Decides the slots from the first undecided one on that hold a value accepted under
    /// `ballot`, below `ballot`'s commit index `commit`, and applies them.
    fn decide_under(&mut self, ballot: Ballot, commit: Slot, out: &mut Outbox<Self>) {
        let first = self.shared.log.decided;
        let mut decided = first;
        while decided < commit
            && self
                .shared
                .log
                .get(decided)
                .is_some_and(|e| e.ballot == ballot)
        {
            decided += 1;
        }
        if decided > first {
            self.shared.log.decided = decided;
            self.shared.note_commit(decided);
            self.apply_decided(out);
        }
    }

    /// Asks `peer` for the chosen values we miss, at most once per retransmission interval, and
    /// not while a snapshot is being received (see `transfer.rs`).
    pub(crate) fn request_catch_up(&mut self, peer: NodeId, out: &mut Outbox<Self>) {
        if self.learner.catch_up.cooldown > 0
            || peer == self.shared.config.id
            || self.receiving_snapshot()
        {
            return;
        }
        self.learner.catch_up.cooldown = self.shared.config.retransmit_ticks;
        self.learner.catch_up.asked = Some(peer);
        out.send(
            peer,
            Message::CatchUpRequest {
                from_slot: self.shared.log.decided,
            },
        );
    }

    /// The learner's timer: keep asking while we know we are behind. Retries alternate between
    /// the peer that last told us it knows more and the other peers in turn, so an unreachable
    /// leader (partial connectivity) cannot starve catch-up.
    pub(crate) fn learner_tick(&mut self, out: &mut Outbox<Self>) {
        self.learner.catch_up.cooldown = self.learner.catch_up.cooldown.saturating_sub(1);
        // A gap may also have been filled by a snapshot.
        self.decide_after_gap(out);
        if self.learner.commit_hint > self.shared.log.decided && self.learner.catch_up.cooldown == 0
        {
            self.learner.catch_up.attempts = self.learner.catch_up.attempts.wrapping_add(1);
            let n = self.shared.peers.len() as u64;
            let peer = match self.learner.catch_up.peer {
                Some(p) if self.learner.catch_up.attempts % 2 == 0 => Some(p),
                _ if n > 0 => {
                    Some(self.shared.peers[((self.learner.catch_up.attempts / 2) % n) as usize])
                }
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
        if from_slot >= self.shared.log.decided {
            return; // nothing we know that it does not
        }
        if from_slot < self.shared.log.start() {
            // Compacted away: the values live only in our snapshot.
            self.send_snapshot(from, out);
            return;
        }
        let end = self
            .shared
            .log
            .decided
            .min(from_slot.saturating_add(self.shared.config.catch_up_slots_max));
        let mut values = Vec::with_capacity((end - from_slot) as usize);
        for s in from_slot..end {
            match self.shared.log.get(s) {
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
        if values.len() as u64 > self.shared.config.catch_up_slots_max {
            self.shared.reject("catch-up larger than the limit", from);
            return;
        }
        let first = self.shared.log.decided;
        if from_slot > first {
            return; // would leave a gap; a later answer will fit
        }
        let skip = (first - from_slot) as usize;
        if skip >= values.len() {
            return; // nothing new
        }
        let learned: Vec<_> = values.into_iter().skip(skip).collect();
        for (i, value) in learned.iter().enumerate() {
            self.shared.log.set(
                first + i as u64,
                Entry {
                    ballot: Ballot::ZERO,
                    value: value.clone(),
                },
            );
        }
        self.shared.log.decided = first + learned.len() as u64;
        let record = Record::Learn {
            from_slot: first,
            values: learned,
        };
        self.shared.persist(record, out);
        self.decide_after_gap(out);
        self.apply_decided(out);
        if self.learner.commit_hint > self.shared.log.decided {
            self.learner.catch_up.cooldown = 0;
            self.request_catch_up(from, out);
        }
    }

    /// Decides what the latest commit index heard allows, once more. A commit index `c` under
    /// ballot `b` decides the slots accepted under `b` only from the first undecided slot on,
    /// and stops at a slot held under another ballot or not at all: one chosen before `b`'s
    /// phase 1, which proposes only from the highest decided prefix an acceptor reported and
    /// leaves the slots below it to catch-up. Once catch-up (or a snapshot) has filled such a
    /// gap, the slots after it under `b` are decided here. Without this, in a run of the
    /// reconfiguration simulation (seed 2857 of 3,000), the leader and its followers all held
    /// a stop-sign after such a gap under the leader's ballot, all knew it chosen, and none
    /// could decide it: catch-up asked peers that had not decided it either. The leader then
    /// refused every later reconfiguration as busy.
    pub(crate) fn decide_after_gap(&mut self, out: &mut Outbox<Self>) {
        if let Some((ballot, commit)) = self.learner.commit_known {
            if commit > self.shared.log.decided {
                self.decide_under(ballot, commit, out);
            }
        }
    }

    /// Applies every chosen slot not yet applied, in slot order, answering the clients whose
    /// batch this replica created. The commands of every slot up to the next stop-sign go to the
    /// state machine in one [`StateMachine::apply_batch`] (`apply.rs`); a stop-sign is applied
    /// on its own and moves the replica to the next configuration; [`StateMachine::applied`]
    /// follows once. Then the other roles catch up with what was applied: reads waiting for it
    /// are answered, a snapshot may be due, a leader that crossed a stop-sign leads again, and
    /// a new leader may now propose.
    pub(crate) fn apply_decided(&mut self, out: &mut Outbox<Self>) {
        if self.learner.state_invalid {
            return;
        }
        let first = self.learner.applied;
        loop {
            let held = self.proposer.leader.as_mut().map(|l| &mut l.held);
            self.learner.apply_run(&mut self.shared, held, out);
            // `apply_run` stops at the end of the chosen prefix, at a gap, or at a stop-sign.
            let Some((slot, epoch, members)) = self.learner.stop_sign_next(&self.shared.log) else {
                break;
            };
            if let Some((_, requests)) = self.learner.take_owed(slot) {
                fail_all(requests, out);
            }
            self.learner.applied += 1;
            self.apply_stop_sign(slot, epoch, members, out);
        }
        self.learner.finish_apply(first, out);
        self.answer_reads(out);
        self.maybe_snapshot(out);
        self.after_apply(out);
        // A new leader waits to have applied what was chosen before it (see `proposer.rs`).
        self.flush_queue(out);
    }
}

#[cfg(test)]
mod owed_tests {
    use smallvec::smallvec;

    use super::*;

    fn b(round: u64) -> Ballot {
        Ballot {
            epoch: 0,
            round,
            leader: 1,
        }
    }

    #[test]
    fn owed_requests_come_out_in_slot_order_whatever_order_they_went_in() {
        let mut owed = Owed::default();
        owed.insert(5, b(1), smallvec![RequestId(5)]);
        owed.insert(7, b(1), smallvec![RequestId(7)]);
        owed.insert(6, b(1), smallvec![RequestId(6)]);
        owed.insert(6, b(2), smallvec![RequestId(60)]);
        assert_eq!(owed.take(6), None, "only the first slot owed is taken");
        assert_eq!(owed.take(5), Some((b(1), smallvec![RequestId(5)])));
        assert_eq!(
            owed.take(6),
            Some((b(2), smallvec![RequestId(60)])),
            "replaced"
        );
        owed.insert(9, b(2), smallvec![RequestId(9), RequestId(10)]);
        assert_eq!(owed.take_below(7), None);
        assert_eq!(owed.take_below(8), Some(smallvec![RequestId(7)]));
        owed.insert(11, b(2), smallvec![RequestId(11)]);
        let all: Vec<_> = owed.take_all().collect();
        assert_eq!(all, vec![RequestId(9), RequestId(10), RequestId(11)]);
        assert_eq!(owed.take(11), None);
    }
}
