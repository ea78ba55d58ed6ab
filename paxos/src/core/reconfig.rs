//! Reconfiguration: changing the set of acceptors with a **stop-sign** (after Vertical Paxos and
//! Omni-Paxos), adapted to a slot log where every slot is its own Paxos instance.
//!
//! # The method
//!
//! The slots are split into consecutive *configurations* (epochs). Configuration 0 is
//! [`Config::members`](crate::Config::members) from slot 0. The leader of configuration `e`
//! ends it by proposing a [`Value::StopSign`] naming the next members in its next free slot `s`,
//! and proposes nothing after it. Once the stop-sign is chosen (by a majority of `e`, like any
//! value), every replica that applies it moves to configuration `e + 1`, which decides the slots
//! `s + 1 ..` with its own majorities. Ballots carry their epoch ([`Ballot::epoch`], compared
//! first), so every ballot of `e + 1` is above every ballot of `e`, and an acceptor takes part
//! only in ballots of the configuration it is in: a replica that has not applied the stop-sign
//! yet asks for catch-up instead, and a replica that has refuses ballots of the old one.
//!
//! Why a stop-sign and not "a change decided in slot `s` takes effect at slot `s + α`": with a
//! window, a new leader's phase 1 has to gather promises from several configurations at once
//! (one per slot range) and must know every configuration up to `α` slots past what it has
//! learned; with a stop-sign every leadership lives inside one configuration and one majority,
//! and the hand-over is an ordinary chosen value.
//!
//! # Why two configurations never decide different values for one slot
//!
//! Slot `t` is decided by configuration `e + 1` only if the stop-sign of `e` was chosen in some
//! slot `s < t`. So it suffices that, **in configuration `e`, once a stop-sign is chosen in `s`,
//! nothing is ever chosen in a slot after `s`**. Three rules give that:
//!
//! 1. A leader proposes a fresh stop-sign only in its next free slot, after every slot it
//!    learned in phase 1, and proposes nothing after a stop-sign (its own or re-proposed).
//! 2. In phase 1, for each slot the leader takes the value accepted under the highest ballot
//!    (the paper's rule). A stop-sign so found in slot `s` under ballot `b` is *void* if some
//!    promise reports, in a later slot, a value accepted under a ballot above `b`; a void
//!    stop-sign is replaced by a no-op. Otherwise it is re-proposed and every later slot is
//!    dropped.
//! 3. Only ballots of epoch `e` take part in configuration `e` (promises ignore entries of
//!    older epochs: those slots were never chosen in their own configuration, which had ended).
//!
//! Suppose the stop-sign is chosen in `s` under ballot `b_s` and a value `v` in `t > s` under
//! `b_t`. By induction on ballots, no leader with a ballot at least `b_s` proposes after `s`:
//! its phase-1 majority meets the one that chose the stop-sign, so (Paxos) the highest value it
//! finds in `s` is that stop-sign, under a ballot `≥ b_s`; a later slot accepted under a higher
//! ballot would have been proposed by an earlier leader of ballot `> b_s`, which by induction did
//! not propose after `s`; so the stop-sign is not void and the leader stops at `s` (rules 1, 2).
//! Hence `b_t < b_s`. Then the leader that first proposed the stop-sign, under some
//! `b_0 ≤ b_s`, had a phase-1 majority meeting the one that chose `v`; if `b_t < b_0`, an
//! acceptor reported slot `t` and the stop-sign went after it (rule 1), a contradiction; if
//! `b_0 ≤ b_t < b_s`, a leader of ballot `b_t` proposed after `s` although a stop-sign was in
//! `s` under `b_0 ≤ b_t`: by the same argument as above it found the stop-sign not void, hence
//! stopped at `s`, a contradiction. A void stop-sign may safely become a no-op: a later slot
//! accepted under a higher ballot proves (by the same induction) that the stop-sign was not
//! chosen under any ballot up to that one, and no value of a ballot in between was reported.
//!
//! # Joining, leaving, restarting
//!
//! - A **new replica** starts with the same [`Config::members`](crate::Config::members) as
//!   everyone (the first configuration), in which it is not listed: it is a passive learner that
//!   runs no election and accepts nothing. When a leader of a configuration that includes it
//!   sends it a prepare or a heartbeat, it asks that leader for catch-up (values, or a snapshot
//!   behind a compacted prefix), applies the stop-sign that added it, and only then promises and
//!   accepts: it never votes on slots it has not learned.
//! - A **removed replica** (the leader included) applies the stop-sign, steps down, and stops
//!   running the election; the members elect a leader among themselves (the old leader, if it
//!   stays, keeps leading in the new epoch after one phase 1).
//! - **Durability**: the configuration is a function of the chosen log, which is durable
//!   ([`Record`](crate::Record)s), and of the snapshot, which records it; recovery replays both
//!   and ends in the same configuration.
//! - Messages from replicas outside the configuration are rejected and counted
//!   ([`crate::Metrics::rejected`]), except catch-up, which is served to anyone (chosen values are
//!   not secret), and catch-up answers from the peer this replica asked.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::{NodeId, Outbox, RequestId};

use crate::config::validate_members;
use crate::error::PaxosError;
use crate::message::{Ballot, Command, Membership, Message, Slot, Value};
use crate::state_machine::StateMachine;

use super::{PaxosNode, Response};

/// What a leader held when its configuration ended: handed to its next leadership.
#[derive(Debug)]
pub(crate) struct Carried<C, Q> {
    pub queue: VecDeque<(RequestId, Command<C>)>,
    pub reads: Vec<(RequestId, Q)>,
}

/// Rule 2 of the module documentation, on the values a new leader chose from its promises
/// (slot -> highest ballot and its value): voids stop-signs followed by a higher-ballot slot,
/// and drops every slot after the first stop-sign that stands. Returns that stop-sign's slot.
pub(crate) fn settle_stop_signs<C>(
    chosen: &mut BTreeMap<Slot, (Ballot, Value<C>)>,
) -> Option<Slot> {
    let stop_signs: Vec<(Slot, Ballot)> = chosen
        .iter()
        .filter(|(_, (_, v))| matches!(v, Value::StopSign { .. }))
        .map(|(&s, (b, _))| (s, *b))
        .collect();
    for (slot, ballot) in stop_signs {
        let void = chosen.range(slot + 1..).any(|(_, (b, _))| *b > ballot);
        if void {
            if let Some(entry) = chosen.get_mut(&slot) {
                entry.1 = Value::Noop;
            }
        } else {
            let after: Vec<Slot> = chosen.range(slot + 1..).map(|(&s, _)| s).collect();
            for s in after {
                chosen.remove(&s);
            }
            return Some(slot);
        }
    }
    None
}

impl<S: StateMachine> PaxosNode<S> {
    /// A message from a replica outside our configuration: catch-up traffic passes, anything
    /// else is rejected and counted, and prompts a catch-up request when it shows the sender is
    /// in a later configuration than ours (or could be: a heartbeat).
    pub(crate) fn accepts_from_non_member(
        &mut self,
        from: NodeId,
        msg: &Message<S::Command>,
        out: &mut Outbox<Self>,
    ) -> bool {
        match msg {
            Message::CatchUpRequest { .. } | Message::SnapshotAck { .. } => return true,
            Message::CatchUp { .. } | Message::SnapshotChunk { .. }
                if self.learner.catch_up.asked == Some(from) =>
            {
                return true
            }
            _ => {}
        }
        self.shared
            .reject("sender is not a member of this configuration", from);
        let ahead = match msg {
            Message::Heartbeat { round } => {
                // Not counted in our election, but answered: our decided slot tells a replica
                // still in an older configuration (one that was removed, for instance) to
                // catch up and learn where it stands.
                self.on_heartbeat(from, *round, out);
                true
            }
            Message::Prepare { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Commit { ballot, .. } => ballot.epoch > self.shared.membership.epoch,
            _ => false,
        };
        if ahead {
            self.request_catch_up(from, out);
        }
        false
    }

    /// Whether an acceptor message under `ballot` belongs to our configuration. A ballot of a
    /// later one means we missed a stop-sign: ask the sender for catch-up. Either way a ballot of
    /// another configuration is refused (and counted as stale).
    pub(crate) fn ballot_in_epoch(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        out: &mut Outbox<Self>,
    ) -> bool {
        if ballot.epoch == self.shared.membership.epoch
            && self.shared.is_member(self.shared.config.id)
        {
            return true;
        }
        self.shared.counters.stale += 1;
        if ballot.epoch > self.shared.membership.epoch {
            self.learner.commit_hint = self.learner.commit_hint.max(self.shared.log.decided + 1);
            self.request_catch_up(from, out);
        }
        false
    }

    /// A client asks to change the acceptors.
    pub(crate) fn reconfigure(
        &mut self,
        id: RequestId,
        members: Vec<NodeId>,
        out: &mut Outbox<Self>,
    ) {
        let hint = self
            .election
            .leader_id()
            .filter(|&l| l != self.shared.config.id);
        if self.proposer.leader.is_none() {
            out.respond(id, Response::Failed(PaxosError::NotLeader { leader: hint }));
            return;
        }
        if let Err(e) = validate_members(&members) {
            out.respond(id, Response::Failed(e));
            return;
        }
        if members == self.shared.membership.members {
            out.respond(
                id,
                Response::Reconfigured {
                    epoch: self.shared.membership.epoch,
                    slot: self.shared.membership.start,
                },
            );
            return;
        }
        let busy = self.proposer.reconfig_pending.is_some()
            || self
                .proposer
                .leader
                .as_ref()
                .is_some_and(|l| l.stop_sign.is_some() || l.reconfig.is_some());
        if busy {
            out.respond(id, Response::Failed(PaxosError::Busy));
            return;
        }
        self.proposer.reconfig_pending = Some((id, members.clone()));
        if let Some(leader) = self.proposer.leader.as_mut() {
            leader.reconfig = Some(members);
        }
        self.flush_queue(out);
    }

    /// Applies a chosen stop-sign in `slot` (called by the learner, in slot order, with
    /// `applied` already past `slot`).
    pub(crate) fn apply_stop_sign(
        &mut self,
        slot: Slot,
        epoch: u64,
        members: Vec<NodeId>,
        out: &mut Outbox<Self>,
    ) {
        if epoch != self.shared.membership.epoch + 1 || validate_members(&members).is_err() {
            // Cannot happen for a stop-sign proposed by a correct leader; every replica applies
            // the same chosen value and skips it the same way, like a no-op.
            tracing::warn!(
                id = self.shared.config.id,
                slot,
                epoch,
                "paxos: stop-sign ignored"
            );
            return;
        }
        self.adopt_membership(
            Membership {
                epoch,
                start: slot + 1,
                members,
            },
            out,
        );
        // The decision that chose it is logged at once, not with the next record: a replica
        // restarted from its log should know the configuration it last learned (a removed
        // one, that it was removed).
        self.shared.log_commit(out);
    }

    /// Moves this replica to configuration `m` (from a stop-sign or a snapshot).
    pub(crate) fn adopt_membership(&mut self, m: Membership, out: &mut Outbox<Self>) {
        if m.epoch < self.shared.membership.epoch || m == self.shared.membership {
            return;
        }
        tracing::debug!(id = self.shared.config.id, epoch = m.epoch, members = ?m.members, "paxos: configuration");
        // The change this replica asked for is answered whichever way the configuration came:
        // by its stop-sign, or in a snapshot when the replica fell behind its own stop-sign.
        // Left pending, it would refuse every later change as `Busy`.
        if let Some((request, wanted)) = self.proposer.reconfig_pending.take() {
            if wanted == m.members {
                out.respond(
                    request,
                    Response::Reconfigured {
                        epoch: m.epoch,
                        slot: m.start,
                    },
                );
            } else {
                out.respond(request, Response::Failed(PaxosError::LeadershipLost));
            }
        }
        let id = self.shared.config.id;
        let old_leader = self.election.leader;
        let leader_stays = m.contains(old_leader.leader);
        let was_leading = self.proposer.leader.is_some() && old_leader.leader == id;
        // The old leadership ends with its configuration; its commands and reads go along to
        // the next one.
        let mut final_commit = None;
        if let Some(leader) = self.proposer.leader.take() {
            if leader.is_active() {
                final_commit = Some(Message::Commit {
                    ballot: leader.ballot,
                    commit: leader.commit,
                });
            }
            let mut reads = leader.reads_waiting;
            reads.extend(leader.read_probe.into_iter().flat_map(|r| r.reads));
            reads.extend(leader.reads_ready.into_iter().map(|(_, id, q)| (id, q)));
            self.proposer.carried = Some(Carried {
                queue: leader.queue,
                reads,
            });
        }
        // Proposals after the stop-sign were never chosen in the old configuration.
        for r in self.learner.pending.take_all() {
            out.respond(r, Response::Failed(PaxosError::LeadershipLost));
        }
        // The old leader tells the old members and the new ones that the stop-sign was chosen:
        // new members learn they are in (they ask for catch-up), removed ones that they are out.
        if let Some(commit) = final_commit {
            let to: BTreeSet<NodeId> = self
                .shared
                .peers
                .iter()
                .chain(m.members.iter())
                .copied()
                .filter(|&p| p != id)
                .collect();
            out.broadcast(to, &commit);
        }
        self.announced.clear();
        self.election
            .set_membership(m.epoch, &m.members, leader_stays, self.acceptor.promised);
        self.shared.set_membership(m);
        self.proposer.relead_after_apply = was_leading && self.shared.is_member(id);
        if !self.proposer.relead_after_apply {
            self.refuse_carried(out);
        }
        if let Some(b) = Some(self.election.leader).filter(|b| *b != Ballot::ZERO) {
            out.emit(super::Event::LeaderChanged {
                leader: Some(b.leader),
                ballot: b,
            });
        }
    }

    /// A replica outside its configuration that knows of it from a stop-sign (it was removed)
    /// sends each heartbeat round a heartbeat to the members that have not shown they learned
    /// the configuration: a member answers with its decided slot, and a new member that has not
    /// learned the stop-sign asks this replica for catch-up. Without it, a configuration of new
    /// replicas only (every old member removed at once) would never hear that it exists, if the
    /// old leader's final commit were lost. It stops once every member is caught up.
    pub(crate) fn announce_membership(&mut self, round: u64, out: &mut Outbox<Self>) {
        if self.shared.membership.epoch == 0 {
            return; // a replica that never was a member has nothing to announce
        }
        let to: Vec<NodeId> = self
            .shared
            .membership
            .members
            .iter()
            .copied()
            .filter(|m| *m != self.shared.config.id && !self.announced.contains(m))
            .collect();
        out.broadcast(to, &Message::Heartbeat { round });
    }

    /// After an apply loop that crossed a stop-sign while leading: lead again in the new
    /// configuration, with what the old leadership held.
    pub(crate) fn after_apply(&mut self, out: &mut Outbox<Self>) {
        if !std::mem::take(&mut self.proposer.relead_after_apply) {
            return;
        }
        self.reconcile_leadership(out);
        let Some(carried) = self.proposer.carried.take() else {
            return;
        };
        match self.proposer.leader.as_mut() {
            Some(leader) => {
                leader
                    .held
                    .extend(carried.queue.iter().filter_map(|(_, c)| c.session));
                leader.queue.extend(carried.queue);
                leader.reads_waiting.extend(carried.reads);
                let active = leader.is_active();
                if active {
                    self.flush_queue(out);
                    self.start_read_round(out);
                }
            }
            None => {
                self.proposer.carried = Some(carried);
                self.refuse_carried(out);
            }
        }
    }

    /// Answers what a former leader carried: not the leader any more.
    fn refuse_carried(&mut self, out: &mut Outbox<Self>) {
        let hint = self
            .election
            .leader_id()
            .filter(|&l| l != self.shared.config.id);
        // Retries attached to commands of the ended leadership: those commands were either
        // applied already (and these answered) or are refused with them.
        for id in std::mem::take(&mut self.learner.session_waiters)
            .into_values()
            .flatten()
        {
            out.respond(id, Response::Failed(PaxosError::NotLeader { leader: hint }));
        }
        let Some(carried) = self.proposer.carried.take() else {
            return;
        };
        let ids = carried
            .queue
            .into_iter()
            .map(|(id, _)| id)
            .chain(carried.reads.into_iter().map(|(id, _)| id));
        for id in ids {
            out.respond(id, Response::Failed(PaxosError::NotLeader { leader: hint }));
        }
    }
}
