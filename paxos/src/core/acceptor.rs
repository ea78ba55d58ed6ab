//! The acceptor (the paper's steps 2 and 4).
//!
//! - **Promise** (phase 1b): on `Prepare(b)` with `b` above every ballot promised so far, promise
//!   `b` — durably, before the reply leaves (the Outbox rule) — and report every value accepted
//!   from the proposer's first undecided slot on, with the ballot it was accepted under.
//! - **Accept** (phase 2b): on `Accept(b, slot, v)` with `b` at least the promise, accept `v` in
//!   `slot` — durably, before the reply — and answer `Accepted`.
//! - Anything under a lower ballot is refused with a `Nack` naming the promise, so a deposed
//!   proposer learns it must step down. A refused or malformed message never touches the durable
//!   promise.

use common::{NodeId, Outbox};

use crate::message::{Ballot, Message, PromisedEntry, Record, Slot, Values};
use crate::state_machine::StateMachine;

use super::log::Entry;
use super::{PaxosNode, Shared};

/// The acceptor: the one piece of state Paxos needs to survive a crash besides the accepted
/// values in the slot log ([`Shared::log`]), and the two answers it gives.
///
/// The paper's acceptor ("Paxos Made Simple", §2.2) answers a prepare request numbered `n`
/// with a promise never to accept a proposal numbered below `n`, together with the
/// highest-numbered proposal it accepted (step 1(b)); it accepts a proposal numbered `n` unless
/// it has promised a higher number (step 2(b)). In Multi-Paxos one promise covers every slot
/// from the proposer's first undecided one on (§3), so the promise is a single ballot and the
/// answer lists the accepted value of each of those slots. Both the promise and the accepted
/// values are persisted before the answer leaves.
#[derive(Debug)]
pub(crate) struct Acceptor {
    /// The highest ballot promised.
    pub promised: Ballot,
}

impl Acceptor {
    /// Raises the durable promise to `ballot` (persisted before any message of this step).
    fn promise<S: StateMachine>(
        &mut self,
        shared: &mut Shared<S::Command>,
        ballot: Ballot,
        out: &mut Outbox<PaxosNode<S>>,
    ) {
        debug_assert!(ballot > self.promised);
        self.promised = ballot;
        shared.persist(Record::Promise(ballot), out);
    }

    /// Step 1(b), for any proposer, this replica included: promises `ballot` and reports what
    /// was accepted from `from_slot` on. `None` if `ballot` is below the promise.
    pub(crate) fn prepare<S: StateMachine>(
        &mut self,
        shared: &mut Shared<S::Command>,
        ballot: Ballot,
        from_slot: Slot,
        out: &mut Outbox<PaxosNode<S>>,
    ) -> Option<Message<S::Command>> {
        if ballot < self.promised {
            return None;
        }
        if ballot > self.promised {
            self.promise(shared, ballot, out);
        }
        // Everything accepted from the proposer's first undecided slot on, except our chosen
        // prefix (the leader learns that through `decided`). The window bounds how many slots
        // past our decided prefix we ever accepted, so the promise is bounded too.
        // Entries of older configurations are left out: they were never chosen (their
        // configuration ended before these slots).
        let epoch = shared.membership.epoch;
        let log = &shared.log;
        let accepted = log
            .iter_from(from_slot.max(log.decided))
            .filter(|(_, e)| e.ballot.epoch == epoch)
            .map(|(slot, e)| PromisedEntry {
                slot,
                ballot: e.ballot,
                value: e.value.clone(),
            })
            .collect();
        Some(Message::Promise {
            ballot,
            decided: log.decided,
            accepted,
        })
    }

    /// Step 2(b), for any proposer, this replica included: accepts `values` in the slots from
    /// `slot` on under `ballot`. `false` if `ballot` is below the promise.
    pub(crate) fn accept<S: StateMachine>(
        &mut self,
        shared: &mut Shared<S::Command>,
        ballot: Ballot,
        slot: Slot,
        values: Values<S::Command>,
        out: &mut Outbox<PaxosNode<S>>,
    ) -> bool {
        if ballot < self.promised {
            return false;
        }
        if ballot > self.promised {
            // Accepting b implies promising b (a missed prepare).
            self.promise(shared, ballot, out);
        }
        // Slots already chosen here keep their value (by Paxos safety it is the same one).
        let decided = shared.log.decided;
        let skip = usize::try_from(decided.saturating_sub(slot)).unwrap_or(usize::MAX);
        if skip >= values.len() {
            return true;
        }
        let first = slot.max(decided);
        // The message's own list is the record's when all of it is new (the usual case).
        let kept: Values<S::Command> = if skip == 0 {
            values
        } else {
            values[skip..].into()
        };
        for (i, value) in kept.iter().enumerate() {
            shared.log.set(
                first + i as u64,
                Entry {
                    ballot,
                    value: value.clone(),
                },
            );
        }
        let record = Record::Accept {
            ballot,
            slot: first,
            values: kept,
        };
        shared.persist(record, out);
        true
    }

    /// The refusal of a message under `ballot`, naming the promise that outranks it.
    pub(crate) fn nack<C>(&self, ballot: Ballot) -> Message<C> {
        Message::Nack {
            ballot,
            promised: self.promised,
        }
    }
}

/// Routing: the acceptor's messages, checked, handed to [`Acceptor`], and what a promise means
/// for the election.
impl<S: StateMachine> PaxosNode<S> {
    /// Checks a ballot a peer claims to lead with: it must be owned by the sender (only the owner
    /// of a ballot proposes under it) and be a real ballot.
    fn ballot_is_well_formed(&self, from: NodeId, ballot: Ballot) -> bool {
        ballot.leader == from && ballot.round > 0
    }

    /// After the acceptor raised its promise from `before` to another node's ballot: the
    /// election follows that ballot's owner.
    fn follow_promise(&mut self, before: Ballot, out: &mut Outbox<Self>) {
        let ballot = self.acceptor.promised;
        if ballot > before && ballot.leader != self.shared.id() {
            if let Some(b) = self.election.observe(ballot) {
                self.on_leader_change(b, out);
            }
        }
    }

    /// Phase 1b: the acceptor's answer to a prepare: a promise, or a `Nack` if the prepare was
    /// refused.
    pub(crate) fn on_prepare(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        from_slot: Slot,
        out: &mut Outbox<Self>,
    ) {
        if !self.ballot_is_well_formed(from, ballot) {
            self.shared.reject("malformed ballot in prepare", from);
            return;
        }
        if !self.ballot_in_epoch(from, ballot, out) {
            return;
        }
        if let Some(promise) = self.prepare_locally(ballot, from_slot, out) {
            out.send(from, promise);
        } else {
            self.shared.counters.stale += 1;
            out.send(from, self.acceptor.nack(ballot));
        }
    }

    /// The acceptor's side of phase 1 for any proposer, this replica included. `None` if
    /// `ballot` is below the promise.
    pub(crate) fn prepare_locally(
        &mut self,
        ballot: Ballot,
        from_slot: Slot,
        out: &mut Outbox<Self>,
    ) -> Option<Message<S::Command>> {
        let before = self.acceptor.promised;
        let promise = self
            .acceptor
            .prepare(&mut self.shared, ballot, from_slot, out)?;
        self.follow_promise(before, out);
        Some(promise)
    }

    /// Phase 2b.
    pub(crate) fn on_accept(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        slot: Slot,
        values: Values<S::Command>,
        commit: Slot,
        out: &mut Outbox<Self>,
    ) {
        if !self.ballot_is_well_formed(from, ballot) {
            self.shared.reject("malformed ballot in accept", from);
            return;
        }
        if !self.ballot_in_epoch(from, ballot, out) {
            return;
        }
        let count = values.len() as u64;
        let window_end = self
            .shared
            .log
            .decided
            .saturating_add(self.shared.config.window_slots_max);
        if count == 0 || slot.checked_add(count).is_none_or(|end| end > window_end) {
            // Far outside the window: either a lie or we are too far behind to accept before
            // catching up. The commit index still tells us to catch up.
            self.shared.reject("accept outside the window", from);
            if ballot >= self.acceptor.promised {
                self.learner.commit_hint = self.learner.commit_hint.max(commit.min(window_end));
                self.request_catch_up(from, out);
            }
            return;
        }
        if self.accept_locally(ballot, slot, values, out) {
            let accepted = Message::Accepted {
                ballot,
                slot,
                count,
            };
            out.send(from, accepted);
            self.on_commit(from, ballot, commit, out);
        } else {
            self.shared.counters.stale += 1;
            out.send(from, self.acceptor.nack(ballot));
        }
    }

    /// The acceptor's side of phase 2 for any proposer, this replica included. `false` if
    /// `ballot` is below the promise.
    pub(crate) fn accept_locally(
        &mut self,
        ballot: Ballot,
        slot: Slot,
        values: Values<S::Command>,
        out: &mut Outbox<Self>,
    ) -> bool {
        let before = self.acceptor.promised;
        let accepted = self
            .acceptor
            .accept(&mut self.shared, ballot, slot, values, out);
        self.follow_promise(before, out);
        accepted
    }

    /// A leader's read probe: confirm we still hold its ballot as our promise.
    pub(crate) fn on_read_probe(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        round: u64,
        out: &mut Outbox<Self>,
    ) {
        if !self.ballot_is_well_formed(from, ballot) {
            self.shared.reject("malformed ballot in read probe", from);
            return;
        }
        if !self.ballot_in_epoch(from, ballot, out) {
            return;
        }
        let promised = self.acceptor.promised;
        if ballot == promised {
            out.send(from, Message::ReadAck { ballot, round });
        } else if ballot < promised {
            self.shared.counters.stale += 1;
            out.send(from, self.acceptor.nack(ballot));
        } else {
            // A leader cannot hold a ballot we never promised (it needed our promise or
            // another majority's; either way it will get a Nack or an ack from others).
            self.shared.reject("read probe above the promise", from);
        }
    }
}
