//! Membership change (paper §6, thesis §4): single-server additions and removals, learners and
//! their promotion, joint consensus for arbitrary changes, and removal of the leader.
//!
//! A configuration is a log entry ([`Payload::Membership`]) that takes effect on a node as soon
//! as the node appends it; a truncation reverts to the previous one. The leader allows one
//! uncommitted configuration at a time, and only once it has committed an entry of its own term
//! (the fix to single-server changes from the raft-dev list, thesis §4.1 errata). A joint
//! configuration needs majorities of the old and new voters for elections and commits; once
//! committed, the leader appends the new configuration on its own. A leader that is not a voter
//! of the configuration it commits steps down (thesis §4.2.2).
//!
//! A learner is promoted to voter only once it has caught up (thesis §4.2.1; etcd's
//! ErrLearnerNotReady): it has answered this leader and is at most
//! [`Config::promote_lag_entries_max`] entries behind the commit index; otherwise the promotion
//! is refused as busy. A node that is not a learner may still be added as a voter at once.
//!
//! [`Config::promote_lag_entries_max`]: crate::Config::promote_lag_entries_max

use std::collections::BTreeSet;

use common::{NodeId, Outbox, RequestId};

use super::apply::Proposal;
use super::RaftNode;
use crate::error::RaftError;
use crate::message::{Entry, LogIndex, Membership, Payload, Response, Role};
use crate::state_machine::StateMachine;

impl<S: StateMachine> RaftNode<S> {
    /// A configuration entry was appended at `index`: it takes effect now.
    pub(super) fn membership_appended(
        &mut self,
        index: LogIndex,
        m: Membership,
        out: &mut Outbox<Self>,
    ) {
        self.membership_history.push((index, m.clone()));
        self.known.extend(m.members());
        self.membership = m;
        self.membership_refresh(out);
    }

    /// Entries from `from` on were removed: configurations among them no longer apply.
    pub(super) fn membership_truncated(&mut self, from: LogIndex) {
        self.membership_history.retain(|(i, _)| *i < from);
        self.membership = self
            .membership_history
            .last()
            .map_or_else(|| self.snapshot_membership.clone(), |(_, m)| m.clone());
        self.membership_role();
    }

    /// The log was compacted (or replaced) up to `index`.
    pub(super) fn membership_compacted(&mut self, index: LogIndex, at_snapshot: Membership) {
        self.known.extend(at_snapshot.members());
        self.snapshot_membership = at_snapshot;
        self.membership_history.retain(|(i, _)| *i > index);
        self.membership = self
            .membership_history
            .last()
            .map_or_else(|| self.snapshot_membership.clone(), |(_, m)| m.clone());
        self.membership_role();
    }

    /// The configuration in force at `index` (at or after the snapshot).
    pub(super) fn membership_at(&self, index: LogIndex) -> Membership {
        self.membership_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or_else(|| self.snapshot_membership.clone(), |(_, m)| m.clone())
    }

    /// Followers become learners when they lose their vote, and the other way round.
    fn membership_role(&mut self) {
        let voter = self.is_voter(self.config.id);
        match self.role {
            Role::Learner if voter => self.role = Role::Follower,
            Role::Follower | Role::PreCandidate | Role::Candidate if !voter => {
                self.role = Role::Learner
            }
            _ => {}
        }
    }

    /// Adapts roles and the leader's replication targets to the configuration in force.
    fn membership_refresh(&mut self, out: &mut Outbox<Self>) {
        self.membership_role();
        if self.role != Role::Leader {
            return;
        }
        let peers = self.peers();
        self.progress.retain(|id, _| peers.contains(id));
        let next = self.log.last_index() + 1;
        let mut added = Vec::new();
        for p in peers {
            if self
                .progress
                .insert_if_absent(p, super::Progress::new(next))
            {
                added.push(p);
            }
        }
        for p in added {
            self.send_append(p, true, out);
        }
    }

    /// A configuration entry was committed and applied. Returns whether this leader stepped
    /// down because the configuration removed it.
    pub(super) fn membership_committed(
        &mut self,
        index: LogIndex,
        m: &Membership,
        joint_request: Option<RequestId>,
        out: &mut Outbox<Self>,
    ) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let latest = self.membership_history.last().map(|(i, _)| *i) == Some(index);
        if !latest {
            return false;
        }
        if let Some(_old) = &m.voters_outgoing {
            // Joint consensus, second step: the new configuration alone.
            let new = Membership {
                voters: m.voters.clone(),
                learners: m.learners.clone(),
                voters_outgoing: None,
            };
            self.append_membership(new, joint_request, out);
            return false;
        }
        if !m.is_voter(self.config.id) {
            tracing::debug!(
                node = self.config.id,
                "removed from the voters: stepping down"
            );
            self.become_follower(self.term, None, out);
            return true;
        }
        false
    }

    /// A leader whose latest configuration is a committed joint one (committed under an
    /// earlier leader) finishes the change by appending the new configuration.
    pub(super) fn maybe_finish_joint(&mut self, out: &mut Outbox<Self>) {
        if self.role != Role::Leader || self.log.term(self.commit_index) != Some(self.term) {
            return;
        }
        let Some((index, m)) = self.membership_history.last() else {
            return;
        };
        if *index > self.commit_index || m.voters_outgoing.is_none() {
            return;
        }
        let new = Membership {
            voters: m.voters.clone(),
            learners: m.learners.clone(),
            voters_outgoing: None,
        };
        self.append_membership(new, None, out);
    }

    fn append_membership(
        &mut self,
        m: Membership,
        request: Option<RequestId>,
        out: &mut Outbox<Self>,
    ) {
        let index = self.log.last_index() + 1;
        if let Some(request) = request {
            self.add_proposal(Proposal {
                index,
                term: self.term,
                request,
                bytes: 0,
            });
        }
        let entry = Entry {
            term: self.term,
            index,
            payload: Payload::Membership(Box::new(m)),
        };
        self.append_as_leader(entry, out);
    }

    /// Whether this node may start a configuration change now; answers `id` if not.
    fn membership_change_allowed(&mut self, id: RequestId, out: &mut Outbox<Self>) -> bool {
        let refuse = |e: RaftError, out: &mut Outbox<Self>| {
            out.respond(id, Response::Failed(e));
            false
        };
        if self.role != Role::Leader {
            return refuse(
                RaftError::NotLeader {
                    leader: self.leader,
                },
                out,
            );
        }
        if let Some(t) = &self.transfer {
            return refuse(RaftError::TransferInProgress(t.target), out);
        }
        if self.log.term(self.commit_index) != Some(self.term) {
            return refuse(
                RaftError::Busy("the leader has not committed an entry of its term yet"),
                out,
            );
        }
        let pending = self
            .membership_history
            .last()
            .is_some_and(|(i, _)| *i > self.commit_index);
        if pending {
            return refuse(RaftError::Busy("a membership change is in progress"), out);
        }
        true
    }

    fn propose_membership(&mut self, id: RequestId, m: Membership, out: &mut Outbox<Self>) {
        if m.voters.is_empty() {
            out.respond(
                id,
                Response::Failed(RaftError::Invalid("no voter would remain".into())),
            );
            return;
        }
        self.append_membership(m, Some(id), out);
    }

    pub(super) fn handle_add_learner(
        &mut self,
        id: RequestId,
        node: NodeId,
        out: &mut Outbox<Self>,
    ) {
        if !self.membership_change_allowed(id, out) {
            return;
        }
        if self.membership.is_member(node) {
            out.respond(
                id,
                Response::Failed(RaftError::Invalid(format!(
                    "node {node} is already a member"
                ))),
            );
            return;
        }
        let mut m = self.membership.clone();
        m.learners.insert(node);
        self.propose_membership(id, m, out);
    }

    pub(super) fn handle_add_voter(&mut self, id: RequestId, node: NodeId, out: &mut Outbox<Self>) {
        if !self.membership_change_allowed(id, out) {
            return;
        }
        if self.membership.voters.contains(&node) {
            out.respond(
                id,
                Response::Failed(RaftError::Invalid(format!(
                    "node {node} is already a voter"
                ))),
            );
            return;
        }
        if self.membership.learners.contains(&node) && !self.learner_caught_up(node) {
            out.respond(
                id,
                Response::Failed(RaftError::Busy("the learner has not caught up")),
            );
            return;
        }
        let mut m = self.membership.clone();
        m.learners.remove(&node);
        m.voters.insert(node);
        self.propose_membership(id, m, out);
    }

    /// Whether the learner `node` may be promoted ([`Config::promote_lag_entries_max`]): it
    /// has acknowledged an entry or a snapshot to this leader (its match index, which starts
    /// at 0 with every leadership, is above 0) and its match index is at most
    /// `promote_lag_entries_max` entries behind the commit index.
    ///
    /// [`Config::promote_lag_entries_max`]: crate::Config::promote_lag_entries_max
    fn learner_caught_up(&self, node: NodeId) -> bool {
        let floor = self
            .commit_index
            .saturating_sub(self.config.promote_lag_entries_max);
        self.progress
            .get(&node)
            .is_some_and(|p| p.match_index > 0 && p.match_index >= floor)
    }

    pub(super) fn handle_remove_node(
        &mut self,
        id: RequestId,
        node: NodeId,
        out: &mut Outbox<Self>,
    ) {
        if !self.membership_change_allowed(id, out) {
            return;
        }
        if !self.membership.is_member(node) {
            out.respond(
                id,
                Response::Failed(RaftError::Invalid(format!("node {node} is not a member"))),
            );
            return;
        }
        let mut m = self.membership.clone();
        m.voters.remove(&node);
        m.learners.remove(&node);
        self.propose_membership(id, m, out);
    }

    pub(super) fn handle_change_voters(
        &mut self,
        id: RequestId,
        voters: BTreeSet<NodeId>,
        out: &mut Outbox<Self>,
    ) {
        if !self.membership_change_allowed(id, out) {
            return;
        }
        if voters.is_empty() {
            out.respond(
                id,
                Response::Failed(RaftError::Invalid("no voter would remain".into())),
            );
            return;
        }
        let old = self.membership.voters.clone();
        let learners = self
            .membership
            .learners
            .difference(&voters)
            .copied()
            .collect();
        let joint = Membership {
            voters,
            learners,
            voters_outgoing: Some(old),
        };
        self.propose_membership(id, joint, out);
    }
}
