//! Linearizable reads without writing to the log (thesis §6.4): ReadIndex, and lease reads.
//!
//! **ReadIndex.** The leader notes its commit index as the read's index, then confirms it is
//! still the leader by hearing from a majority in a heartbeat round started after the read
//! arrived; once its state machine has applied the read index, it answers from it. Before the
//! leader has committed an entry of its own term it does not know the latest commit index, so
//! reads wait for its no-op entry to commit.
//!
//! **Lease reads.** With check-quorum, a follower that heard from the leader ignores vote
//! requests for `election_timeout_ticks_min` ticks, so no other leader can be elected until
//! that many ticks after the start of the latest round a majority answered. The leader answers
//! reads locally until then, minus `lease_margin_ticks`. Clock assumption: every node's ticks
//! advance at the same rate, within the margin over one election timeout. A leadership transfer
//! bypasses the followers' rule, so the lease ends when a transfer starts.

use common::{Outbox, RequestId};

use super::RaftNode;
use crate::error::RaftError;
use crate::message::{LogIndex, Response, Role};
use crate::state_machine::StateMachine;

/// Bound on remembered heartbeat rounds for the lease (older rounds cannot extend it).
const READ_ROUNDS_REMEMBERED_MAX: usize = 64;

/// A read waiting for its confirmation and for the state machine to catch up.
#[derive(Debug)]
pub(crate) struct PendingRead<Q> {
    request: RequestId,
    query: Q,
    /// The heartbeat round a majority must answer.
    read_seq: u64,
    /// The commit index to apply before answering (`None` until the leader has committed an
    /// entry of its term).
    read_index: Option<LogIndex>,
}

impl<S: StateMachine> RaftNode<S> {
    /// Starts a new heartbeat round.
    pub(super) fn start_read_round(&mut self) {
        self.read_round_wanted = false;
        self.read_seq += 1;
        self.read_seq_ticks.push_back((self.read_seq, self.ticks));
        while self.read_seq_ticks.len() > READ_ROUNDS_REMEMBERED_MAX {
            self.read_seq_ticks.pop_front();
        }
    }

    fn committed_in_term(&self) -> bool {
        self.log.term(self.commit_index) == Some(self.term)
    }

    pub(super) fn handle_read(&mut self, id: RequestId, query: S::Query, out: &mut Outbox<Self>) {
        if self.role != Role::Leader {
            out.respond(
                id,
                Response::Failed(RaftError::NotLeader {
                    leader: self.leader,
                }),
            );
            return;
        }
        if self.reads.len() >= self.config.reads_pending_max {
            out.respond(
                id,
                Response::Failed(RaftError::Busy("too many pending reads")),
            );
            return;
        }
        let read_index = self.committed_in_term().then_some(self.commit_index);
        if self.config.lease_reads && self.ticks < self.lease_until_tick {
            if let Some(read_index) = read_index {
                if self.applied_index >= read_index {
                    let output = self.state_machine.query(&query);
                    out.respond(id, Response::Read(output));
                    return;
                }
            }
        }
        let lone = self.quorum(&std::collections::BTreeSet::from([self.config.id]));
        // A single voter confirms itself; otherwise a round started after this read arrived
        // must be answered. With no round in flight, one starts now. With one in flight (it
        // started before this read), the read waits for the next: it starts as soon as the one
        // in flight is answered, or at the next heartbeat, and confirms every read that arrived
        // meanwhile. At most one round is in flight, however many reads come.
        let read_seq = if lone {
            self.read_seq
        } else if self.confirmed_read_seq() >= self.read_seq {
            self.start_read_round();
            self.send_read_round(out);
            self.read_seq
        } else {
            self.read_round_wanted = true;
            self.read_seq + 1
        };
        self.reads.push_back(PendingRead {
            request: id,
            query,
            read_seq,
            read_index,
        });
        self.advance_reads(out);
    }

    /// Sends every peer the current round's heartbeat.
    fn send_read_round(&mut self, out: &mut Outbox<Self>) {
        self.for_each_peer(|_| true, |node, peer| node.send_append(peer, true, out));
    }

    /// The highest heartbeat round a majority of voters (the leader included) answered.
    fn confirmed_read_seq(&self) -> u64 {
        let me = self.config.id;
        self.membership.quorum_value(|v| {
            if v == me {
                self.read_seq
            } else {
                self.progress.get(&v).map_or(0, |p| p.read_seq_acked)
            }
        })
    }

    /// Answers the reads that are confirmed and applied; renews the lease.
    pub(super) fn advance_reads(&mut self, out: &mut Outbox<Self>) {
        if self.role != Role::Leader || (self.reads.is_empty() && !self.config.lease_reads) {
            return;
        }
        let mut confirmed = self.confirmed_read_seq();
        if self.read_round_wanted && confirmed >= self.read_seq {
            // The round in flight is answered; reads that arrived during it need the next.
            self.start_read_round();
            self.send_read_round(out);
            confirmed = self.confirmed_read_seq();
        }
        if self.config.lease_reads && self.transfer.is_none() {
            if let Some(&(_, tick)) = self
                .read_seq_ticks
                .iter()
                .rev()
                .find(|(s, _)| *s <= confirmed)
            {
                let until =
                    tick + self.config.election_timeout_ticks_min - self.config.lease_margin_ticks;
                self.lease_until_tick = self.lease_until_tick.max(until);
            }
        }
        if self.reads.is_empty() {
            return;
        }
        let in_term = self.committed_in_term();
        let commit = self.commit_index;
        for r in self.reads.iter_mut() {
            if r.read_index.is_none() && in_term {
                r.read_index = Some(commit);
            }
        }
        while let Some(r) = self.reads.front() {
            let ready =
                r.read_seq <= confirmed && r.read_index.is_some_and(|i| i <= self.applied_index);
            if !ready {
                break;
            }
            if let Some(r) = self.reads.pop_front() {
                let output = self.state_machine.query(&r.query);
                out.respond(r.request, Response::Read(output));
            }
        }
    }

    /// Fails every pending read (leadership lost).
    pub(super) fn fail_reads(&mut self, out: &mut Outbox<Self>) {
        self.read_round_wanted = false;
        for r in self.reads.drain(..) {
            out.respond(
                r.request,
                Response::Failed(RaftError::LeadershipLost {
                    leader: self.leader,
                }),
            );
        }
    }
}
