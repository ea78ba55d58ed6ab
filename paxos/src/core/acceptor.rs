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

use crate::message::{Ballot, Message, PromisedEntry, Record, Slot, Value};
use crate::state_machine::StateMachine;

use super::log::Entry;
use super::Replica;

impl<S: StateMachine> Replica<S> {
    /// Checks a ballot a peer claims to lead with: it must be owned by the sender (only the owner
    /// of a ballot proposes under it) and be a real ballot.
    fn ballot_is_well_formed(&self, from: NodeId, ballot: Ballot) -> bool {
        ballot.leader == from && ballot.round > 0
    }

    /// Raises the durable promise to `ballot` (persisted before any message of this step).
    pub(crate) fn promise(&mut self, ballot: Ballot, out: &mut Outbox<Self>) {
        debug_assert!(ballot > self.promised);
        self.promised = ballot;
        out.persist(Record::Promise(ballot));
        self.records_asked += 1;
    }

    /// Phase 1b: the acceptor's answer to a prepare. Returns the promise message, or `None` if
    /// the prepare was refused (a `Nack` was queued instead).
    pub(crate) fn on_prepare(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        from_slot: Slot,
        out: &mut Outbox<Self>,
    ) {
        if !self.ballot_is_well_formed(from, ballot) {
            self.reject("malformed ballot in prepare", from);
            return;
        }
        if !self.ballot_in_epoch(from, ballot, out) {
            return;
        }
        if let Some(promise) = self.prepare_locally(ballot, from_slot, out) {
            out.send(from, promise);
        } else {
            self.counters.stale += 1;
            out.send(
                from,
                Message::Nack {
                    ballot,
                    promised: self.promised,
                },
            );
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
        if ballot < self.promised {
            return None;
        }
        if ballot > self.promised {
            self.promise(ballot, out);
            if ballot.leader != self.config.id {
                if let Some(b) = self.election.observe(ballot) {
                    self.on_leader_change(b, out);
                }
            }
        }
        // Everything accepted from the proposer's first undecided slot on, except our chosen
        // prefix (the leader learns that through `decided`). The window bounds how many slots
        // past our decided prefix we ever accepted, so the promise is bounded too.
        // Entries of older configurations are left out: they were never chosen (their
        // configuration ended before these slots).
        let epoch = self.membership.epoch;
        let accepted = self
            .log
            .iter_from(from_slot.max(self.log.decided))
            .filter(|(_, e)| e.ballot.epoch == epoch)
            .map(|(slot, e)| PromisedEntry {
                slot,
                ballot: e.ballot,
                value: e.value.clone(),
            })
            .collect();
        Some(Message::Promise {
            ballot,
            decided: self.log.decided,
            accepted,
        })
    }

    /// Phase 2b.
    pub(crate) fn on_accept(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        slot: Slot,
        values: Vec<Value<S::Command>>,
        commit: Slot,
        out: &mut Outbox<Self>,
    ) {
        if !self.ballot_is_well_formed(from, ballot) {
            self.reject("malformed ballot in accept", from);
            return;
        }
        if !self.ballot_in_epoch(from, ballot, out) {
            return;
        }
        let count = values.len() as u64;
        let window_end = self
            .log
            .decided
            .saturating_add(self.config.window_slots_max);
        if count == 0 || slot.checked_add(count).is_none_or(|end| end > window_end) {
            // Far outside the window: either a lie or we are too far behind to accept before
            // catching up. The commit index still tells us to catch up.
            self.reject("accept outside the window", from);
            if ballot >= self.promised {
                self.commit_hint = self.commit_hint.max(commit.min(window_end));
                self.request_catch_up(from, out);
            }
            return;
        }
        match self.accept_locally(ballot, slot, values, out) {
            true => {
                out.send(
                    from,
                    Message::Accepted {
                        ballot,
                        slot,
                        count,
                    },
                );
                self.on_commit(from, ballot, commit, out);
            }
            false => {
                self.counters.stale += 1;
                out.send(
                    from,
                    Message::Nack {
                        ballot,
                        promised: self.promised,
                    },
                );
            }
        }
    }

    /// The acceptor's side of phase 2 for any proposer, this replica included. `false` if
    /// `ballot` is below the promise.
    pub(crate) fn accept_locally(
        &mut self,
        ballot: Ballot,
        slot: Slot,
        values: Vec<Value<S::Command>>,
        out: &mut Outbox<Self>,
    ) -> bool {
        if ballot < self.promised {
            return false;
        }
        if ballot > self.promised {
            // Accepting b implies promising b (a missed prepare).
            self.promise(ballot, out);
            if ballot.leader != self.config.id {
                if let Some(b) = self.election.observe(ballot) {
                    self.on_leader_change(b, out);
                }
            }
        }
        // Slots already chosen here keep their value (by Paxos safety it is the same one).
        let decided = self.log.decided;
        let skip = usize::try_from(decided.saturating_sub(slot)).unwrap_or(usize::MAX);
        if skip >= values.len() {
            return true;
        }
        let first = slot.max(decided);
        let kept: Vec<Value<S::Command>> = values.into_iter().skip(skip).collect();
        for (i, value) in kept.iter().enumerate() {
            self.log.set(
                first + i as u64,
                Entry {
                    ballot,
                    value: value.clone(),
                },
            );
        }
        out.persist(Record::Accept {
            ballot,
            slot: first,
            values: kept,
        });
        self.records_asked += 1;
        true
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
            self.reject("malformed ballot in read probe", from);
            return;
        }
        if !self.ballot_in_epoch(from, ballot, out) {
            return;
        }
        if ballot == self.promised {
            out.send(from, Message::ReadAck { ballot, round });
        } else if ballot < self.promised {
            self.counters.stale += 1;
            out.send(
                from,
                Message::Nack {
                    ballot,
                    promised: self.promised,
                },
            );
        } else {
            // A leader cannot hold a ballot we never promised (it needed our promise or
            // another majority's; either way it will get a Nack or an ack from others).
            self.reject("read probe above the promise", from);
        }
    }
}
