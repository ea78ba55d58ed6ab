//! Leader election (§5.2), pre-vote (thesis §9.6), check-quorum (thesis §6.2) and leadership
//! transfer (thesis §3.10).

use common::{NodeId, Outbox, RequestId};

use super::{RaftNode, Transfer};
use crate::error::RaftError;
use crate::message::{Entry, LogIndex, Message, Payload, Response, Role, Term};
use crate::state_machine::StateMachine;

impl<S: StateMachine> RaftNode<S> {
    /// Draws a new randomized election timeout and restarts the count (§5.2: "election timeouts
    /// are chosen randomly from a fixed interval" so split votes are rare).
    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed_ticks = 0;
        self.election_timeout_ticks = self.rng.range_inclusive(
            self.config.election_timeout_ticks_min,
            self.config.election_timeout_ticks_max,
        );
    }

    /// Whether this node heard from a live leader recently enough to ignore vote requests
    /// (check-quorum's "leader lease" on the follower side), or leads itself.
    fn in_lease(&self) -> bool {
        self.config.check_quorum
            && (self.role == Role::Leader
                // Just restarted: this node may have acknowledged a leader's heartbeat before
                // the crash, and that leader's lease counts on it.
                || self.ticks < self.config.election_timeout_ticks_min
                || (self.leader.is_some()
                    && self.election_elapsed_ticks < self.config.election_timeout_ticks_min))
    }

    /// Applies the term rules every message obeys (§5.1): a newer term makes this node a
    /// follower of that term; an older term is answered with the current one or dropped.
    /// Returns whether the message should be processed further.
    pub(super) fn observe_term(
        &mut self,
        from: NodeId,
        msg: &Message<S::Command>,
        out: &mut Outbox<Self>,
    ) -> bool {
        let term = msg.term();
        if term > self.term {
            match msg {
                // A pre-vote does not change anyone's term: that is its point.
                Message::PreVote { .. } => return true,
                Message::PreVoteResponse { granted: true, .. } => return true,
                Message::RequestVote {
                    transfer: false, ..
                } if self.in_lease() => {
                    // A node that cannot reach the leader must not depose it (thesis §4.2.3).
                    tracing::debug!(
                        node = self.config.id,
                        from,
                        "vote request ignored: leader is alive"
                    );
                    return false;
                }
                Message::AppendEntries { .. }
                | Message::InstallSnapshot { .. }
                | Message::TimeoutNow { .. } => self.become_follower(term, Some(from), out),
                _ => self.become_follower(term, None, out),
            }
            return true;
        }
        if term < self.term {
            self.rejected.stale_term += 1;
            match msg {
                // Tell a deposed leader about the newer term, so it steps down even when it
                // would never receive a vote request (pre-vote and check-quorum keep those away).
                Message::AppendEntries { read_seq, .. } => out.send(
                    from,
                    Message::AppendEntriesResponse {
                        term: self.term,
                        success: false,
                        index: 0,
                        conflict: None,
                        last_log_index: self.log.last_index(),
                        read_seq: *read_seq,
                    },
                ),
                Message::InstallSnapshot { .. } => out.send(
                    from,
                    Message::AppendEntriesResponse {
                        term: self.term,
                        success: false,
                        index: 0,
                        conflict: None,
                        last_log_index: self.log.last_index(),
                        read_seq: 0,
                    },
                ),
                Message::PreVote { .. } => out.send(
                    from,
                    Message::PreVoteResponse {
                        term: self.term,
                        granted: false,
                    },
                ),
                Message::RequestVote { .. } => out.send(
                    from,
                    Message::RequestVoteResponse {
                        term: self.term,
                        granted: false,
                    },
                ),
                _ => {}
            }
            return false;
        }
        true
    }

    /// Becomes a follower (or stays a learner) in `term`, persisting the new term if it changed.
    pub(super) fn become_follower(
        &mut self,
        term: Term,
        leader: Option<NodeId>,
        out: &mut Outbox<Self>,
    ) {
        let changed = term != self.term || leader != self.leader;
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.persist_hard_state(out);
        }
        if self.role == Role::Leader {
            self.step_down_leader(out);
        }
        self.role = if self.is_voter(self.config.id) {
            Role::Follower
        } else {
            Role::Learner
        };
        self.leader = leader;
        self.votes_granted.clear();
        self.votes_refused.clear();
        self.reset_election_timer();
        if changed {
            self.emit_leader(out);
        }
    }

    /// Drops the leader-only state.
    fn step_down_leader(&mut self, out: &mut Outbox<Self>) {
        self.progress.clear();
        self.append_cache.clear();
        self.lease_until_tick = 0;
        self.uncommitted_bytes = 0;
        if let Some(t) = self.transfer.take() {
            if let Some(req) = t.request {
                out.respond(
                    req,
                    Response::Failed(RaftError::NotLeader {
                        leader: self.leader,
                    }),
                );
            }
        }
        self.fail_reads(out);
        // The fate of the entries proposed here is decided by the next leader; this node may
        // never learn it (it may have been removed), so the callers are told now.
        self.fail_proposals_through(LogIndex::MAX, out);
    }

    /// Followers, learners and candidates count towards their election timeout.
    pub(super) fn tick_election(&mut self, out: &mut Outbox<Self>) {
        self.election_elapsed_ticks += 1;
        if !self.may_campaign() {
            return;
        }
        if self.election_elapsed_ticks >= self.election_timeout_ticks {
            if self.role == Role::Candidate && self.own_vote_record.is_some() {
                // A lone candidate whose vote is still being written has nobody to hear from:
                // a new term would only start the wait over (a slow disk must not keep it
                // from ever leading).
                self.reset_election_timer();
                return;
            }
            if self.config.pre_vote {
                self.start_pre_vote(out);
            } else {
                self.campaign(false, out);
            }
        }
    }

    /// Voters campaign; so does a node that its latest configuration removed while that
    /// configuration is not known to be committed: until it is, the configuration before may
    /// still need this node to elect a leader (thesis §4.2.2). Its own vote then does not count.
    ///
    /// "The configuration before" is the one preceding the latest configuration entry, not the
    /// one at the commit index: after a restart the commit index starts over at the snapshot,
    /// where this node may not have been a voter yet, although every configuration since the
    /// snapshot needs it. A removed node whose removal did commit may thus campaign in vain;
    /// pre-vote and the members' leader stickiness keep that from disturbing them.
    fn may_campaign(&self) -> bool {
        let me = self.config.id;
        if self.is_voter(me) {
            return true;
        }
        match self.membership_history.last() {
            Some(&(latest, _)) if latest > self.commit_index => {
                self.membership_at(latest - 1).is_voter(me)
            }
            _ => false,
        }
    }

    fn start_pre_vote(&mut self, out: &mut Outbox<Self>) {
        let had_leader = self.leader.is_some();
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes_granted.clear();
        self.votes_refused.clear();
        self.votes_granted.insert(self.config.id);
        self.reset_election_timer();
        if had_leader {
            self.emit_leader(out);
        }
        if self.quorum(&self.votes_granted) {
            self.campaign(false, out);
            return;
        }
        let msg = Message::PreVote {
            term: self.term + 1,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        let voters: Vec<NodeId> = self.other_voters();
        out.broadcast(voters, &msg);
    }

    fn other_voters(&self) -> Vec<NodeId> {
        let me = self.config.id;
        self.membership
            .members()
            .into_iter()
            .filter(|&v| v != me && self.membership.is_voter(v))
            .collect()
    }

    /// Starts an election (§5.2): a new term, a vote for itself, RequestVote to every voter.
    pub(super) fn campaign(&mut self, transfer: bool, out: &mut Outbox<Self>) {
        self.term += 1;
        self.voted_for = Some(self.config.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.elections_started += 1;
        self.votes_granted.clear();
        self.votes_refused.clear();
        self.votes_granted.insert(self.config.id);
        self.own_vote_record = None;
        self.reset_election_timer();
        self.persist_hard_state(out);
        self.emit_leader(out);
        if self.quorum(&self.votes_granted) {
            // The only voter: its own vote is the majority, and it counts once durable. With
            // other voters it always is by the time their votes arrive (the RequestVote that
            // asks for them waits for it); alone, a node that led at once could crash before
            // the record was written, come back in the term before, and vote for another
            // candidate in the term it had led: two leaders of one term (§5.2).
            self.own_vote_record = Some(self.records_asked);
            self.lead_alone_once_durable(out);
            return;
        }
        let msg = Message::RequestVote {
            term: self.term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        let voters = self.other_voters();
        out.broadcast(voters, &msg);
    }

    /// The election restriction (§5.4.1): the candidate's log is at least as up-to-date as ours.
    fn log_up_to_date(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        (last_log_term, last_log_index) >= (self.log.last_term(), self.log.last_index())
    }

    pub(super) fn handle_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
        out: &mut Outbox<Self>,
    ) {
        // Whether this node votes is the candidate's configuration's business: a node that has
        // not yet learnt that it was added must still be able to help elect a leader (thesis
        // §4.1), so its own view of its membership is not consulted.
        let granted = term > self.term
            && !self.in_lease()
            && self.log_up_to_date(last_log_index, last_log_term);
        out.send(
            from,
            Message::PreVoteResponse {
                term: if granted { term } else { self.term },
                granted,
            },
        );
    }

    pub(super) fn handle_pre_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
        out: &mut Outbox<Self>,
    ) {
        if self.role != Role::PreCandidate || !self.is_voter(from) {
            return;
        }
        if granted && term == self.term + 1 {
            self.votes_granted.insert(from);
            if self.quorum(&self.votes_granted) {
                self.campaign(false, out);
            }
        } else if !granted {
            self.votes_refused.insert(from);
            if self.membership.quorum_impossible(&self.votes_refused) {
                self.become_follower(self.term, None, out);
            }
        }
    }

    pub(super) fn handle_request_vote(
        &mut self,
        from: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
        out: &mut Outbox<Self>,
    ) {
        // §5.2: at most one vote per term, first-come-first-served; §5.4.1: only for an
        // up-to-date log.
        let can_vote =
            self.voted_for == Some(from) || (self.voted_for.is_none() && self.leader.is_none());
        // As for pre-votes, this node's own view of its membership is not consulted.
        let granted = can_vote && self.log_up_to_date(last_log_index, last_log_term);
        if granted && self.voted_for != Some(from) {
            self.voted_for = Some(from);
            self.persist_hard_state(out);
        }
        if granted {
            self.reset_election_timer();
        }
        out.send(
            from,
            Message::RequestVoteResponse {
                term: self.term,
                granted,
            },
        );
    }

    pub(super) fn handle_request_vote_response(
        &mut self,
        from: NodeId,
        granted: bool,
        out: &mut Outbox<Self>,
    ) {
        if self.role != Role::Candidate || !self.is_voter(from) {
            return;
        }
        if granted {
            self.votes_granted.insert(from);
            if self.quorum(&self.votes_granted) {
                self.become_leader(out);
            }
        } else {
            self.votes_refused.insert(from);
            if self.membership.quorum_impossible(&self.votes_refused) {
                self.become_follower(self.term, None, out);
            }
        }
    }

    /// Leads once the vote of a candidate that is its configuration's only voter is durable
    /// (see `campaign`).
    pub(super) fn lead_alone_once_durable(&mut self, out: &mut Outbox<Self>) {
        let Some(record) = self.own_vote_record else {
            return;
        };
        if self.role != Role::Candidate {
            self.own_vote_record = None;
        } else if self.records_durable >= record {
            self.own_vote_record = None;
            if self.quorum(&self.votes_granted) {
                self.become_leader(out);
            }
        }
    }

    /// Wins the election (§5.2): takes the lead, appends the no-op entry of its term (§8) and
    /// sends AppendEntries to everyone at once.
    fn become_leader(&mut self, out: &mut Outbox<Self>) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.heartbeat_elapsed_ticks = 0;
        self.check_quorum_elapsed_ticks = 0;
        self.uncommitted_bytes = 0;
        self.lease_until_tick = 0;
        self.transfer = None;
        let next = self.log.last_index() + 1;
        self.progress = self
            .peers()
            .into_iter()
            .map(|p| (p, super::Progress::new(next)))
            .collect();
        self.emit_leader(out);
        tracing::debug!(node = self.config.id, term = self.term, "became leader");
        let entry = Entry {
            term: self.term,
            index: next,
            payload: Payload::Noop,
        };
        self.start_read_round();
        self.append_as_leader(entry, out);
    }

    /// The leader's clock: heartbeats, check-quorum, transfer timeout.
    pub(super) fn tick_leader(&mut self, out: &mut Outbox<Self>) {
        self.heartbeat_elapsed_ticks += 1;
        self.check_quorum_elapsed_ticks += 1;
        if let Some(t) = &mut self.transfer {
            t.elapsed_ticks += 1;
            if t.elapsed_ticks >= self.config.election_timeout_ticks_max {
                let target = t.target;
                if let Some(req) = t.request.take() {
                    out.respond(
                        req,
                        Response::Failed(RaftError::TransferTimedOut { target }),
                    );
                }
                self.transfer = None;
            }
        }
        if self.config.check_quorum
            && self.check_quorum_elapsed_ticks >= self.config.election_timeout_ticks_min
        {
            self.check_quorum_elapsed_ticks = 0;
            let me = self.config.id;
            let mut active: std::collections::BTreeSet<NodeId> = self
                .progress
                .iter()
                .filter(|(_, p)| p.recent_active)
                .map(|(&id, _)| id)
                .collect();
            active.insert(me);
            for p in self.progress.values_mut() {
                p.recent_active = false;
            }
            if !self.quorum(&active) {
                tracing::debug!(
                    node = me,
                    term = self.term,
                    "check-quorum: no majority heard, stepping down"
                );
                self.become_follower(self.term, None, out);
                return;
            }
        }
        let due = if self.config.heartbeat_aligned {
            // On the node's own clock, which every group of a host shares (see the config).
            self.ticks % self.config.heartbeat_interval_ticks.max(1) == 0
        } else {
            self.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks
        };
        if due {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat(out);
        }
    }

    /// Starts a leadership transfer to `target` (thesis §3.10): once the target's log is
    /// complete, it is told to start an election at once.
    pub(super) fn handle_transfer(
        &mut self,
        id: RequestId,
        target: NodeId,
        out: &mut Outbox<Self>,
    ) {
        if self.role != Role::Leader {
            out.respond(
                id,
                Response::Failed(RaftError::NotLeader {
                    leader: self.leader,
                }),
            );
            return;
        }
        if target == self.config.id || !self.is_voter(target) {
            out.respond(
                id,
                Response::Failed(RaftError::Invalid(format!(
                    "node {target} is not another voter"
                ))),
            );
            return;
        }
        if let Some(t) = &self.transfer {
            out.respond(
                id,
                Response::Failed(RaftError::TransferInProgress(t.target)),
            );
            return;
        }
        self.transfer = Some(Transfer {
            target,
            request: Some(id),
            elapsed_ticks: 0,
        });
        // Leases rest on followers ignoring vote requests; the target's transfer election
        // overrides that, so this leader stops answering reads from its lease.
        self.lease_until_tick = 0;
        self.maybe_send_timeout_now(out);
        if self.transfer.as_ref().is_some_and(|t| t.request.is_some()) {
            self.send_append(target, true, out);
        }
    }

    /// Sends TimeoutNow once the transfer target has every entry.
    pub(super) fn maybe_send_timeout_now(&mut self, out: &mut Outbox<Self>) {
        let Some(t) = &mut self.transfer else { return };
        if t.request.is_none() {
            return;
        }
        let caught_up = self
            .progress
            .get(&t.target)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            let target = t.target;
            if let Some(req) = t.request.take() {
                out.respond(req, Response::TransferStarted);
            }
            out.send(target, Message::TimeoutNow { term: self.term });
        }
    }

    pub(super) fn handle_timeout_now(&mut self, from: NodeId, out: &mut Outbox<Self>) {
        if self.role == Role::Leader || !self.is_voter(self.config.id) {
            self.reject_invalid(from, "TimeoutNow to a leader or non-voter");
            return;
        }
        tracing::debug!(
            node = self.config.id,
            from,
            "leadership transfer: starting election"
        );
        self.campaign(true, out);
    }
}
