//! The election's messages: answering heartbeats, and feeding replies to [`Election`], with
//! what a reply tells the learner (a peer that decided more) and the reconfiguration (a member
//! that has not learned the configuration yet).
//!
//! [`Election`]: super::election::Election

use common::{NodeId, Outbox};

use crate::message::{Ballot, Message, Slot};
use crate::state_machine::StateMachine;

use super::{election, PaxosNode};

impl<S: StateMachine> PaxosNode<S> {
    pub(crate) fn on_heartbeat(&mut self, from: NodeId, round: u64, out: &mut Outbox<Self>) {
        let e = &self.election;
        out.send(
            from,
            Message::HeartbeatReply {
                round,
                ballot: e.ballot,
                quorum_connected: e.quorum_connected,
                leader: e.leader,
                leader_alive: e.leader_alive,
                decided: self.shared.log.decided,
            },
        );
    }

    pub(crate) fn on_heartbeat_reply(
        &mut self,
        from: NodeId,
        round: u64,
        info: election::HeartbeatInfo,
        decided: Slot,
        out: &mut Outbox<Self>,
    ) {
        if info.ballot.leader != from {
            self.shared.reject("candidacy ballot of another node", from);
            return;
        }
        self.election.on_reply(from, round, info);
        if decided >= self.shared.membership.start {
            self.announced.insert(from);
        } else if let Some(leader) = self.proposer.leader.as_ref().filter(|l| l.is_active()) {
            // A member that has not learned the stop-sign that made this configuration (a new
            // member that missed it, on an idle cluster): our commit index sends it to catch-up.
            let msg = Message::Commit {
                ballot: leader.ballot,
                commit: leader.commit,
            };
            out.send(from, msg);
        } else if !self.shared.is_member(self.shared.config.id) && self.shared.membership.epoch > 0
        {
            // A removed replica announcing its configuration to a new member that has not
            // learned the stop-sign: that member still counts this replica as one of its own
            // (an older configuration), so the heartbeat alone tells it nothing. Our decided
            // slot, as a commit index, sends it to catch up from us (every slot below it is
            // chosen, so this claims nothing that is not true).
            let ballot = Ballot::in_epoch(
                self.shared.membership.epoch,
                self.election.ballot.round.max(1),
                self.shared.config.id,
            );
            let msg = Message::Commit {
                ballot,
                commit: self.shared.log.decided,
            };
            out.send(from, msg);
        }
        if decided > self.shared.log.decided {
            // The peer knows more chosen slots than we do: fetch them.
            self.learner.commit_hint = self.learner.commit_hint.max(decided);
            self.learner.catch_up.peer = Some(from);
            self.request_catch_up(from, out);
        }
    }
}
