//! Applying committed entries and answering the proposals made through this node: the
//! proposal queue, client commands on the leader, the state machine's batches and the
//! answers they produce (§5.3).

use common::{Outbox, RequestId};

use super::RaftNode;
use crate::error::RaftError;
use crate::message::{Entry, LogIndex, Membership, Payload, Response, Role, Term};
use crate::state_machine::StateMachine;

/// A proposal waiting to be applied.
#[derive(Debug)]
pub(super) struct Proposal {
    /// Where the entry was appended.
    pub(super) index: LogIndex,
    /// The term the entry was appended in: if the entry applied at its index has another term,
    /// the proposal was replaced.
    pub(super) term: Term,
    pub(super) request: RequestId,
    pub(super) bytes: usize,
}

/// What applying one entry produced.
enum Applied<O> {
    Noop,
    Output(O),
    Membership(Membership),
}

impl<S: StateMachine> RaftNode<S> {
    /// Applies committed entries to the state machine, in order, answering the proposals made
    /// here (§5.3: "once an entry is committed, the leader applies it and returns the result").
    pub(super) fn apply_committed(&mut self, out: &mut Outbox<Self>) {
        if self.state_machine_invalid {
            // Its state is unknown until a snapshot restores: no applies, no reads.
            return;
        }
        if self.applying {
            // Called from the walk of `apply_batch` below: a committed joint configuration made
            // this leader append the new one and commit it alone. The state machine has already
            // taken the batch the walk is in; applying from `applied_index + 1` now would apply
            // its later commands twice. The loop below applies what was committed meanwhile.
            return;
        }
        self.applying = true;
        while self.applied_index < self.commit_index && !self.state_machine_invalid {
            let before = self.applied_index;
            self.apply_batch(out);
            if self.applied_index == before {
                break; // an entry is missing (logged in `apply_batch`): never skip one
            }
        }
        self.applying = false;
        self.advance_reads(out);
        self.maybe_snapshot(out);
    }

    /// Applies the entries from `applied_index + 1` to `commit_index`.
    fn apply_batch(&mut self, out: &mut Outbox<Self>) {
        // The state machine takes every command committed by this step as one batch; the
        // bookkeeping below then walks the same entries, taking their outputs in order.
        let first = self.applied_index + 1;
        let last = self.commit_index;
        self.outputs.clear();
        let mut commands = 0usize;
        let mut command_bytes = 0u64;
        let batch = self
            .log
            .range(first, last)
            .filter_map(|e| match &e.payload {
                Payload::Command(c) => {
                    commands += 1;
                    command_bytes = command_bytes.saturating_add(S::command_bytes(c) as u64);
                    Some((e.index, c))
                }
                _ => None,
            });
        self.state_machine.apply_batch(batch, &mut self.outputs);
        self.state_machine.applied(last);
        self.log_bytes = self.log_bytes.saturating_add(command_bytes);
        let held = self.log.snapshot_index() < first && last <= self.log.last_index();
        if self.role != Role::Leader
            && held
            && self.outputs.len() == commands
            && self.proposals.front().is_none_or(|p| p.index > last)
        {
            // Nothing to answer and no configuration to act on (only a leader acts on a
            // committed one, in `membership_committed`): the walk below would only count.
            self.applied_index = last;
            return;
        }
        let mut outputs = std::mem::take(&mut self.outputs);
        let mut outputs_iter = outputs.drain(..);
        while self.applied_index < last {
            let index = self.applied_index + 1;
            let Some(entry) = self.log.entry(index) else {
                // Unreachable: commit_index never passes the log's end and applied_index never
                // falls below the snapshot. Stop rather than skip an entry.
                tracing::error!(
                    node = self.config.id,
                    index,
                    "committed entry missing from the log"
                );
                debug_assert!(false, "committed entry {index} missing");
                return;
            };
            let term = entry.term;
            let applied = match &entry.payload {
                Payload::Noop => Applied::Noop,
                Payload::Command(_) => match outputs_iter.next() {
                    Some(output) => Applied::Output(output),
                    None => {
                        debug_assert!(false, "the state machine returned too few outputs");
                        tracing::error!(
                            node = self.config.id,
                            index,
                            "the state machine returned no output for a command"
                        );
                        Applied::Noop
                    }
                },
                Payload::Membership(m) => Applied::Membership(Membership::clone(m)),
            };
            self.applied_index = index;
            let joint_request = self.answer_proposals(index, term, &applied, out);
            if let Applied::Membership(m) = applied {
                if self.membership_committed(index, &m, joint_request, out) {
                    // Stepped down: a removed leader stops applying as leader; the loop goes
                    // on as a follower.
                    continue;
                }
            }
        }
        drop(outputs_iter);
        self.outputs = outputs;
    }

    /// Answers the proposals made here up to `index`, the entry just applied (of `term`, which
    /// produced `applied`). Returns the request of a joint configuration change: its answer
    /// waits for the new configuration, appended once the joint one is committed.
    fn answer_proposals(
        &mut self,
        index: LogIndex,
        term: Term,
        applied: &Applied<S::Output>,
        out: &mut Outbox<Self>,
    ) -> Option<RequestId> {
        let mut joint_request = None;
        while let Some(p) = self.pop_proposal_through(index) {
            let at = p.index;
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(p.bytes);
            let same = at == index && p.term == term;
            let response = match (applied, same) {
                (Applied::Output(output), true) => Response::Applied {
                    index,
                    output: output.clone(),
                },
                (Applied::Membership(m), true) if m.voters_outgoing.is_some() => {
                    // The joint configuration is committed; the answer waits for the new
                    // one (appended below).
                    joint_request = Some(p.request);
                    continue;
                }
                (Applied::Membership(m), true) => Response::MembershipChanged {
                    index,
                    membership: Box::new(m.clone()),
                },
                _ => Response::Failed(RaftError::Dropped { index: at }),
            };
            if self.config.parallel_append {
                // The entry is committed, so a majority holds it durably (this node
                // counted itself only once durable): the answer claims nothing of the
                // records this batch still writes.
                out.respond_early(p.request, response);
            } else {
                out.respond(p.request, response);
            }
        }
        joint_request
    }

    /// Queues a proposal. Proposals are only made by a leader, at the end of its log, and a
    /// leader that steps down answers all of its own (`step_down_leader`), so each one comes
    /// after those queued.
    pub(super) fn add_proposal(&mut self, proposal: Proposal) {
        let in_order = self
            .proposals
            .back()
            .is_none_or(|last| last.index < proposal.index);
        debug_assert!(in_order, "proposal at {} out of order", proposal.index);
        if in_order {
            self.proposals.push_back(proposal);
            return;
        }
        // Unreachable; should it happen, keep the queue sorted rather than lose an answer.
        tracing::error!(
            node = self.config.id,
            index = proposal.index,
            "proposal out of index order"
        );
        let at = self
            .proposals
            .partition_point(|p| p.index <= proposal.index);
        self.proposals.insert(at, proposal);
    }

    /// The oldest proposal, if its index is at most `index`.
    pub(super) fn pop_proposal_through(&mut self, index: LogIndex) -> Option<Proposal> {
        if self.proposals.front()?.index > index {
            return None;
        }
        self.proposals.pop_front()
    }

    /// A client's command: appended to the leader's log and answered once applied.
    pub(super) fn handle_propose(
        &mut self,
        id: RequestId,
        command: S::Command,
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
        if let Some(t) = &self.transfer {
            out.respond(
                id,
                Response::Failed(RaftError::TransferInProgress(t.target)),
            );
            return;
        }
        if self.proposals.len() >= self.config.proposals_pending_max {
            out.respond(
                id,
                Response::Failed(RaftError::Busy("too many pending proposals")),
            );
            return;
        }
        let bytes = S::command_bytes(&command);
        if self.uncommitted_bytes.saturating_add(bytes) > self.config.uncommitted_bytes_max {
            out.respond(
                id,
                Response::Failed(RaftError::Busy("too many uncommitted bytes")),
            );
            return;
        }
        self.uncommitted_bytes += bytes;
        let index = self.log.last_index() + 1;
        let entry = Entry {
            term: self.term,
            index,
            payload: Payload::Command(command),
        };
        self.add_proposal(Proposal {
            index,
            term: self.term,
            request: id,
            bytes,
        });
        self.append_as_leader(entry, out);
    }

    /// Fails every pending proposal at `from` or after with `error` (used when a snapshot jumps
    /// past them and their fate is unknown).
    pub(super) fn fail_proposals_through(&mut self, through: LogIndex, out: &mut Outbox<Self>) {
        while let Some(p) = self.pop_proposal_through(through) {
            let index = p.index;
            out.respond(
                p.request,
                Response::Failed(RaftError::Indeterminate { index }),
            );
        }
    }
}
