//! The sans-IO Raft core: [`RaftNode`].
//!
//! The core is split by sub-protocol, the way the paper presents them:
//!
//! - `election`: terms, timeouts, pre-vote, votes, check-quorum and leadership transfer (§5.2);
//! - `replication`: AppendEntries, the consistency check, fast backtracking, flow control and
//!   the commit rule (§5.3, §5.4);
//! - `read`: linearizable reads through ReadIndex or a lease (thesis §6.4);
//! - `snapshot`: log compaction and InstallSnapshot (§7);
//! - `log`: the in-memory log.
//!
//! This file holds the node's state, the routing of inputs to those parts, recovery, applying
//! committed entries, and the rejection of bad input.

mod election;
pub(crate) mod log;
mod membership;
mod read;
mod replication;
mod snapshot;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use common::snapshot::{
    IncomingSnapshot, MemSnapshotStore, SnapshotFile, SnapshotReader, SnapshotRetention,
    SnapshotSource, SnapshotStore,
};
use common::{protocol, DetRng, Node, NodeId, Outbox, RequestId, Setup};

use crate::config::Config;
use crate::error::{RaftError, RecoverError};
use crate::message::{
    Entry, Event, LogIndex, Membership, Message, Metrics, Payload, Record, Rejected, Request,
    Response, Role, SnapshotMeta, Term,
};
use crate::state_machine::StateMachine;
use log::RaftLog;
use read::PendingRead;
use replication::{Peers, Progress};

/// The wire message type of a [`RaftNode`] over state machine `S`.
pub type MessageOf<S> = Message<<S as StateMachine>::Command>;
/// The request type of a [`RaftNode`] over state machine `S`.
pub type RequestOf<S> = Request<<S as StateMachine>::Command, <S as StateMachine>::Query>;
/// The response type of a [`RaftNode`] over state machine `S`.
pub type ResponseOf<S> = Response<<S as StateMachine>::Output>;
/// The record type of a [`RaftNode`] over state machine `S`.
pub type RecordOf<S> = Record<<S as StateMachine>::Command>;

/// A proposal waiting to be applied.
#[derive(Debug)]
struct Proposal {
    /// Where the entry was appended.
    index: LogIndex,
    /// The term the entry was appended in: if the entry applied at its index has another term,
    /// the proposal was replaced.
    term: Term,
    request: RequestId,
    bytes: usize,
}

/// What applying one entry produced.
enum Applied<O> {
    Noop,
    Output(O),
    Membership(Membership),
}

/// The latest snapshot this node holds.
struct CurrentSnapshot {
    meta: SnapshotMeta,
    file: SnapshotFile,
    /// Opened once; chunks are read from it at offsets.
    source: Arc<dyn SnapshotSource>,
}

/// A leadership transfer in progress.
#[derive(Debug)]
struct Transfer {
    target: NodeId,
    /// The request to answer once TimeoutNow is sent (`None` once answered).
    request: Option<RequestId>,
    elapsed_ticks: u64,
}

/// One Raft node: a deterministic state machine implementing [`common::Node`], with the
/// replicated state machine `S` inside.
///
/// Inputs: [`Node::handle_message`], [`Node::handle_request`], [`Node::tick`]. Effects go to the
/// [`Outbox`]; the driver persists the records before anything else leaves (the Outbox rule),
/// which is what lets a single step both append entries and send them, or vote and answer.
pub struct RaftNode<S: StateMachine> {
    config: Config,
    /// The configuration in force: the latest in the log (or the snapshot's, or the initial
    /// one from [`Config`]).
    membership: Membership,
    /// Configuration entries in the log after the snapshot, oldest first, to revert to on
    /// truncation.
    membership_history: Vec<(LogIndex, Membership)>,
    /// The configuration as of the snapshot (the initial one before any).
    snapshot_membership: Membership,
    /// Every node this node accepts messages from: [`Config::known_nodes`] and every node named
    /// by a configuration it has seen. Anyone else is an unknown sender.
    known: BTreeSet<NodeId>,
    rng: DetRng,

    // Persistent state (§5, Figure 2), mirrored by the records.
    term: Term,
    voted_for: Option<NodeId>,
    log: RaftLog<S::Command>,

    // Volatile state.
    role: Role,
    leader: Option<NodeId>,
    commit_index: LogIndex,
    applied_index: LogIndex,
    state_machine: S,
    /// Ticks since the last valid message from a leader (followers) or since the election
    /// started (candidates).
    election_elapsed_ticks: u64,
    /// This round's randomized election timeout, drawn from
    /// `[election_timeout_ticks_min, election_timeout_ticks_max]`.
    election_timeout_ticks: u64,
    /// Votes (or pre-votes) granted to this node in the current election, itself included.
    votes_granted: BTreeSet<NodeId>,
    /// Votes refused in the current election.
    votes_refused: BTreeSet<NodeId>,
    /// All ticks since recovery; the leader's clock for leases.
    ticks: u64,

    /// Records asked for since recovery (what [`Node::records_durable`] counts).
    records_asked: u64,
    /// `(record, index)`: once the first `record` records are durable, so is every entry of
    /// the current log up to `index`. Oldest first.
    durable_pending: VecDeque<(u64, LogIndex)>,
    /// Every entry of the current log up to here is durable on this node (a lower bound).
    durable_index: LogIndex,

    // Leader state.
    progress: Peers,
    /// Reused by `for_each_peer` for the ids it visits (it runs for every proposal).
    peers_scratch: Vec<NodeId>,
    heartbeat_elapsed_ticks: u64,
    check_quorum_elapsed_ticks: u64,
    /// The current heartbeat round; peers echo it back.
    read_seq: u64,
    /// Reads wait for a round that has not started yet (one was in flight when they came).
    read_round_wanted: bool,
    /// When each recent round was started, for the lease: `(read_seq, tick)`.
    read_seq_ticks: VecDeque<(u64, u64)>,
    /// The leader may answer reads locally until this tick (lease reads).
    lease_until_tick: u64,
    reads: VecDeque<PendingRead<S::Query>>,
    transfer: Option<Transfer>,
    uncommitted_bytes: usize,

    /// Proposals made through this node, waiting to be applied, in index order: a queue rather
    /// than a map, so a proposal costs no tree node or rebalancing (see `add_proposal`).
    proposals: VecDeque<Proposal>,

    /// Where snapshot files live (beside the log).
    snapshots: Arc<dyn SnapshotStore>,
    /// Which snapshot files are still needed.
    retention: SnapshotRetention,
    /// The latest snapshot: its description, its file, and the file opened for sending chunks.
    snapshot: Option<CurrentSnapshot>,
    /// A snapshot being received in chunks, into a new file.
    incoming_snapshot: Option<(SnapshotMeta, IncomingSnapshot)>,
    /// Set when restoring a received snapshot failed: the state machine's state is unknown, so
    /// nothing is applied or read until a snapshot restores cleanly.
    state_machine_invalid: bool,
    /// Reused buffer for the outputs of one applied batch.
    outputs: Vec<S::Output>,
    /// Approximate bytes of the commands applied since the last snapshot
    /// ([`StateMachine::command_bytes`]): compaction's trigger by size.
    log_bytes: u64,
    /// After a failed snapshot: no new try before this applied index (0: no wait).
    snapshot_retry_at: LogIndex,
    /// The current wait after failed snapshots, in applied entries (0 after a success).
    snapshot_backoff: u64,

    rejected: Rejected,
    elections_started: u64,
}

impl<S: StateMachine> RaftNode<S> {
    /// The replicated state machine (for inspection; it holds every applied command).
    pub fn state_machine(&self) -> &S {
        &self.state_machine
    }

    /// The node's current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The node's current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The highest index known committed.
    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    /// The highest index applied to the state machine.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The log entry at `index`, if held (not compacted, not past the end).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry<S::Command>> {
        self.log.entry(index)
    }

    /// The term of the entry at `index` (also known for the snapshot's last index).
    pub fn entry_term(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }

    /// The first index still held in the log (after the snapshot).
    pub fn first_log_index(&self) -> LogIndex {
        self.log.snapshot_index() + 1
    }

    /// The last index in the log.
    pub fn last_log_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The configuration in force on this node.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    fn is_voter(&self, id: NodeId) -> bool {
        self.membership.is_voter(id)
    }

    /// Whether `granted` holds a majority of every voter group.
    fn quorum(&self, granted: &BTreeSet<NodeId>) -> bool {
        self.membership.quorum(granted)
    }

    /// Every member but this node.
    fn peers(&self) -> Vec<NodeId> {
        self.membership
            .members()
            .into_iter()
            .filter(|&p| p != self.config.id)
            .collect()
    }

    fn persist_hard_state(&mut self, out: &mut Outbox<Self>) {
        self.records_asked += 1;
        out.persist(Record::HardState {
            term: self.term,
            voted_for: self.voted_for,
        });
    }

    /// Counts a record just asked for that makes the log durable up to `index`.
    pub(super) fn asked_durable_through(&mut self, index: LogIndex) {
        self.records_asked += 1;
        self.durable_pending.push_back((self.records_asked, index));
    }

    /// The log was cut or replaced after `index`: what was durable beyond it is no longer
    /// this log's.
    pub(super) fn durable_only_through(&mut self, index: LogIndex) {
        self.durable_index = self.durable_index.min(index);
        for (_, pending) in &mut self.durable_pending {
            *pending = (*pending).min(index);
        }
    }

    /// Applies committed entries to the state machine, in order, answering the proposals made
    /// here (§5.3: "once an entry is committed, the leader applies it and returns the result").
    fn apply_committed(&mut self, out: &mut Outbox<Self>) {
        if self.state_machine_invalid {
            // Its state is unknown until a snapshot restores: no applies, no reads.
            return;
        }
        if self.applied_index < self.commit_index {
            self.apply_batch(out);
        }
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
            let mut joint_request = None;
            while let Some(p) = self.pop_proposal_through(index) {
                let at = p.index;
                self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(p.bytes);
                let same = at == index && p.term == term;
                let response = match (&applied, same) {
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

    /// Queues a proposal. Proposals are only made by a leader, at the end of its log, and a
    /// leader that steps down answers all of its own (`step_down_leader`), so each one comes
    /// after those queued.
    fn add_proposal(&mut self, proposal: Proposal) {
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
    fn pop_proposal_through(&mut self, index: LogIndex) -> Option<Proposal> {
        if self.proposals.front()?.index > index {
            return None;
        }
        self.proposals.pop_front()
    }

    fn reject_unknown(&mut self, from: NodeId) {
        self.rejected.unknown_sender += 1;
        tracing::debug!(
            node = self.config.id,
            from,
            "message from a non-member rejected"
        );
    }

    fn reject_invalid(&mut self, from: NodeId, why: &str) {
        self.rejected.invalid += 1;
        tracing::warn!(node = self.config.id, from, why, "invalid message rejected");
    }

    fn handle_propose(&mut self, id: RequestId, command: S::Command, out: &mut Outbox<Self>) {
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
}

impl<S: StateMachine> Node for RaftNode<S> {
    type Config = Setup<Config, S>;
    type Message = MessageOf<S>;
    type Request = RequestOf<S>;
    type Response = ResponseOf<S>;
    type Event = Event;
    type Record = RecordOf<S>;
    type Metrics = Metrics;
    type Error = RecoverError;

    const PROTOCOL: u16 = protocol::RAFT;
    // 2: snapshots carry a CRC32C in their description.
    const WIRE_VERSION: u16 = 2;

    fn recover(setup: Setup<Config, S>, records: Vec<RecordOf<S>>) -> Result<Self, RecoverError> {
        Self::recover_with_snapshots(setup, records, Arc::new(MemSnapshotStore::new()))
    }

    fn recover_with_snapshots(
        setup: Setup<Config, S>,
        records: Vec<RecordOf<S>>,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> Result<Self, RecoverError> {
        let config = setup.config;
        config.validate()?;
        let state_machine = (setup.state_machine)()?;
        let membership = Membership {
            voters: config.voters.iter().copied().collect(),
            learners: config.learners.iter().copied().collect(),
            voters_outgoing: None,
        };
        let role = if membership.is_voter(config.id) {
            Role::Follower
        } else {
            Role::Learner
        };
        let mut node = RaftNode {
            rng: DetRng::for_node(config.seed, config.id),
            snapshot_membership: membership.clone(),
            known: membership
                .members()
                .into_iter()
                .chain(config.known_nodes.iter().copied())
                .collect(),
            membership,
            membership_history: Vec::new(),
            term: 0,
            voted_for: None,
            log: RaftLog::new(),
            role,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            state_machine,
            election_elapsed_ticks: 0,
            election_timeout_ticks: config.election_timeout_ticks_min,
            votes_granted: BTreeSet::new(),
            votes_refused: BTreeSet::new(),
            ticks: 0,
            progress: Peers::default(),
            peers_scratch: Vec::new(),
            records_asked: 0,
            durable_pending: VecDeque::new(),
            durable_index: 0,
            heartbeat_elapsed_ticks: 0,
            check_quorum_elapsed_ticks: 0,
            read_seq: 0,
            read_round_wanted: false,
            read_seq_ticks: VecDeque::new(),
            lease_until_tick: 0,
            reads: VecDeque::new(),
            transfer: None,
            uncommitted_bytes: 0,
            proposals: VecDeque::new(),
            snapshots,
            retention: SnapshotRetention::default(),
            snapshot: None,
            incoming_snapshot: None,
            state_machine_invalid: false,
            outputs: Vec::new(),
            log_bytes: 0,
            snapshot_retry_at: 0,
            snapshot_backoff: 0,
            rejected: Rejected::default(),
            elections_started: 0,
            config,
        };
        let mut snapshot = None;
        for record in records {
            if let Some(named) = node.replay(record)? {
                snapshot = Some(named);
            }
        }
        node.restore_recovered(snapshot)?;
        // Everything recovered was read back from storage.
        node.durable_index = node.log.last_index();
        node.role = if node.is_voter(node.config.id) {
            Role::Follower
        } else {
            Role::Learner
        };
        node.reset_election_timer();
        Ok(node)
    }

    fn checkpoints_durable(&mut self, count: u64) {
        self.retention.durable(&*self.snapshots, count);
    }

    fn records_durable(&mut self, count: u64, out: &mut Outbox<Self>) {
        let before = self.durable_index;
        while let Some(&(record, index)) = self.durable_pending.front() {
            if record > count {
                break;
            }
            self.durable_index = self.durable_index.max(index);
            self.durable_pending.pop_front();
        }
        if self.durable_index > before && self.config.parallel_append {
            // The leader's own copy may complete a majority now.
            self.maybe_commit(out);
        }
    }

    fn id(&self) -> NodeId {
        self.config.id
    }

    fn handle_message(&mut self, from: NodeId, msg: MessageOf<S>, out: &mut Outbox<Self>) {
        if from == self.config.id || !self.known.contains(&from) {
            self.reject_unknown(from);
            return;
        }
        if !self.observe_term(from, &msg, out) {
            return;
        }
        match msg {
            Message::PreVote {
                term,
                last_log_index,
                last_log_term,
            } => self.handle_pre_vote(from, term, last_log_index, last_log_term, out),
            Message::PreVoteResponse { term, granted } => {
                self.handle_pre_vote_response(from, term, granted, out)
            }
            Message::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => self.handle_request_vote(from, last_log_index, last_log_term, out),
            Message::RequestVoteResponse { granted, .. } => {
                self.handle_request_vote_response(from, granted, out)
            }
            Message::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
                ..
            } => self.handle_append_entries(
                from,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
                out,
            ),
            Message::AppendEntriesResponse {
                success,
                index,
                conflict,
                last_log_index,
                read_seq,
                ..
            } => self.handle_append_entries_response(
                from,
                success,
                index,
                conflict,
                last_log_index,
                read_seq,
                out,
            ),
            Message::InstallSnapshot {
                meta,
                offset,
                data,
                done,
                ..
            } => self.handle_install_snapshot(from, *meta, offset, data, done, out),
            Message::InstallSnapshotResponse {
                index,
                next_offset,
                done,
                ..
            } => self.handle_install_snapshot_response(from, index, next_offset, done, out),
            Message::TimeoutNow { .. } => self.handle_timeout_now(from, out),
        }
    }

    fn handle_request(&mut self, id: RequestId, req: RequestOf<S>, out: &mut Outbox<Self>) {
        match req {
            Request::Propose(command) => self.handle_propose(id, command, out),
            Request::Read(query) => self.handle_read(id, query, out),
            Request::TransferLeadership(target) => self.handle_transfer(id, target, out),
            Request::AddLearner(node) => self.handle_add_learner(id, node, out),
            Request::AddVoter(node) => self.handle_add_voter(id, node, out),
            Request::RemoveNode(node) => self.handle_remove_node(id, node, out),
            Request::ChangeVoters(voters) => self.handle_change_voters(id, voters, out),
        }
    }

    fn tick(&mut self, out: &mut Outbox<Self>) {
        self.ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader(out);
        } else {
            self.tick_election(out);
        }
    }

    fn metrics(&self) -> Metrics {
        Metrics {
            id: self.config.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit_index: self.commit_index,
            applied_index: self.applied_index,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            snapshot_index: self.log.snapshot_index(),
            snapshot_bytes: self.snapshot.as_ref().map_or(0, |s| s.meta.bytes),
            progress: self
                .progress
                .iter()
                .map(|(&id, p)| (id, p.metrics()))
                .collect(),
            rejected: self.rejected.clone(),
            elections_started: self.elections_started,
            proposals_pending: self.proposals.len(),
            membership: self.membership.clone(),
        }
    }
}

impl<S: StateMachine> RaftNode<S> {
    /// Replays one persisted record during recovery. A checkpoint's snapshot is not restored
    /// here but returned, so that only the last one is read (by [`Self::restore_recovered`]).
    fn replay(
        &mut self,
        record: RecordOf<S>,
    ) -> Result<Option<(SnapshotMeta, SnapshotFile)>, RecoverError> {
        let corrupt = |s: String| Err(RecoverError::Corrupt(s));
        match record {
            Record::HardState { term, voted_for } => {
                if term < self.term {
                    return corrupt(format!("term goes back from {} to {term}", self.term));
                }
                self.term = term;
                self.voted_for = voted_for;
            }
            Record::Entries(entries) => {
                for e in entries {
                    if e.index == 0 || e.index > self.log.last_index() + 1 {
                        return corrupt(format!(
                            "entry {} after a log ending at {}",
                            e.index,
                            self.log.last_index()
                        ));
                    }
                    if e.index <= self.log.snapshot_index() {
                        continue;
                    }
                    if e.index <= self.log.last_index() {
                        self.log.truncate_from(e.index);
                        self.membership_truncated(e.index);
                    }
                    if let Payload::Membership(m) = &e.payload {
                        self.membership_history
                            .push((e.index, Membership::clone(m)));
                        self.membership = Membership::clone(m);
                        self.known.extend(m.members());
                    }
                    self.log.push(e);
                }
            }
            Record::Truncate { from } => {
                if from <= self.log.snapshot_index() {
                    return corrupt(format!(
                        "truncation from {from} reaches into the snapshot ending at {}",
                        self.log.snapshot_index()
                    ));
                }
                self.log.truncate_from(from);
                self.membership_truncated(from);
            }
            Record::Snapshot {
                term,
                voted_for,
                meta,
                file,
                entries,
            } => {
                self.term = term;
                self.voted_for = voted_for;
                self.log = RaftLog::new();
                self.log.compact(meta.index, meta.term);
                self.snapshot_membership = meta.membership.clone();
                self.membership = meta.membership.clone();
                self.known.extend(meta.membership.members());
                self.membership_history.clear();
                for e in entries {
                    if e.index != self.log.last_index() + 1 {
                        return corrupt(format!("snapshot entries have a gap at {}", e.index));
                    }
                    if let Payload::Membership(m) = &e.payload {
                        self.membership_history
                            .push((e.index, Membership::clone(m)));
                        self.membership = Membership::clone(m);
                        self.known.extend(m.members());
                    }
                    self.log.push(e);
                }
                self.commit_index = meta.index;
                self.applied_index = meta.index;
                return Ok(Some((*meta, file)));
            }
        }
        Ok(None)
    }

    /// The end of recovery: opens the snapshot the last checkpoint names and restores the state
    /// machine from it, unless the state machine had applied that far already (a durable one).
    /// Then deletes every snapshot file no checkpoint names.
    fn restore_recovered(
        &mut self,
        snapshot: Option<(SnapshotMeta, SnapshotFile)>,
    ) -> Result<(), RecoverError> {
        let sm_applied = self.state_machine.applied_index();
        if let Some((meta, file)) = snapshot {
            let source = self.snapshots.open(file.id)?;
            if sm_applied < meta.index {
                let mut reader = SnapshotReader::new(source.clone(), file)?;
                self.state_machine
                    .restore(&mut reader)
                    .map_err(common::SnapshotError::from)?;
            }
            self.retention = SnapshotRetention::recovered(&*self.snapshots, Some(file.id));
            self.snapshot = Some(CurrentSnapshot { meta, file, source });
        } else {
            self.retention = SnapshotRetention::recovered(&*self.snapshots, None);
        }
        if sm_applied > self.applied_index {
            // A durable state machine applied entries past the snapshot before the crash:
            // they were committed, and are not applied again. (If the log lost some of them
            // to an unsynced tail, the leader sends them again and they are skipped: applying
            // only ever moves past `applied_index`.)
            self.applied_index = sm_applied;
            self.commit_index = self.commit_index.max(sm_applied.min(self.log.last_index()));
        }
        Ok(())
    }

    /// Fails every pending proposal at `from` or after with `error` (used when a snapshot jumps
    /// past them and their fate is unknown).
    fn fail_proposals_through(&mut self, through: LogIndex, out: &mut Outbox<Self>) {
        while let Some(p) = self.pop_proposal_through(through) {
            let index = p.index;
            out.respond(
                p.request,
                Response::Failed(RaftError::Indeterminate { index }),
            );
        }
    }

    fn emit_leader(&self, out: &mut Outbox<Self>) {
        out.emit(Event::LeaderChanged {
            term: self.term,
            leader: self.leader,
        });
    }
}

#[cfg(test)]
mod tests;
