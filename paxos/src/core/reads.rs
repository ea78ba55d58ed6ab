//! Linearizable reads at the leader: a batch of reads waits for one quorum round confirming
//! the leader's ballot (`ReadProbe`, answered by acceptors in `acceptor.rs`), then for every
//! slot proposed before the reads arrived to be applied.

use common::{NodeId, Outbox, RequestId};

use crate::error::PaxosError;
use crate::message::{Ballot, Message};
use crate::state_machine::StateMachine;

use super::leader::ReadRound;
use super::{PaxosNode, Response};

impl<S: StateMachine> PaxosNode<S> {
    /// A linearizable read arrives.
    pub(crate) fn read(&mut self, id: RequestId, query: S::Query, out: &mut Outbox<Self>) {
        let reads_max = self.shared.config.reads_pending_max;
        let hint = self
            .election
            .leader_id()
            .filter(|&l| l != self.shared.config.id);
        let Some(leader) = self.proposer.leader.as_mut() else {
            out.respond(id, Response::Failed(PaxosError::NotLeader { leader: hint }));
            return;
        };
        let pending = leader.reads_waiting.len()
            + leader.reads_ready.len()
            + leader.read_probe.as_ref().map_or(0, |r| r.reads.len());
        if pending >= reads_max {
            out.respond(id, Response::Failed(PaxosError::Busy));
            return;
        }
        leader.reads_waiting.push((id, query));
        self.start_read_round(out);
    }

    /// Starts a leadership-confirming round for the waiting reads, if none is running.
    pub(crate) fn start_read_round(&mut self, out: &mut Outbox<Self>) {
        let own = self.shared.bit(self.shared.config.id).unwrap_or(0);
        let Some(leader) = self.proposer.leader.as_mut() else {
            return;
        };
        if !leader.is_active() || leader.read_probe.is_some() || leader.reads_waiting.is_empty() {
            return;
        }
        leader.read_round += 1;
        let round = leader.read_round;
        let ballot = leader.ballot;
        leader.read_probe = Some(ReadRound {
            round,
            // Every slot that could have been chosen before the read arrived is below
            // `next_slot`: phase 1 put all of them in this leader's log.
            read_slot: leader.next_slot,
            acks: own,
            reads: std::mem::take(&mut leader.reads_waiting),
        });
        let peers = self.shared.peers.clone();
        out.broadcast(peers, &Message::ReadProbe { ballot, round });
        let id = self.shared.config.id;
        self.on_read_ack(id, ballot, round, out);
    }

    /// An acceptor confirms it still holds our ballot.
    pub(crate) fn on_read_ack(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        round: u64,
        out: &mut Outbox<Self>,
    ) {
        let Some(bit) = self.shared.bit(from) else {
            return;
        };
        let majority = self.shared.majority as u32;
        let Some(leader) = self.proposer.leader.as_mut() else {
            return;
        };
        if leader.record_read_ack(bit, ballot, round, majority) {
            self.answer_reads(out);
            self.start_read_round(out);
        }
    }

    /// Answers confirmed reads whose slot is applied.
    pub(crate) fn answer_reads(&mut self, out: &mut Outbox<Self>) {
        let applied = self.learner.applied;
        if self.learner.state_invalid {
            return;
        }
        let Some(leader) = self.proposer.leader.as_mut() else {
            return;
        };
        if leader.reads_ready.is_empty() {
            return;
        }
        let state = &self.learner.state;
        leader.reads_ready.retain(|(slot, id, q)| {
            if *slot <= applied {
                out.respond(*id, Response::Read(state.query(q)));
                false
            } else {
                true
            }
        });
    }
}
