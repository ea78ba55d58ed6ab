//! The sans-IO Raft core: [`RaftNode`].
//!
//! The core is split by sub-protocol, the way the paper presents them:
//!
//! - `election`: terms, timeouts, pre-vote, votes, check-quorum and leadership transfer (§5.2);
//! - `replication`: AppendEntries, the consistency check, fast backtracking, flow control and
//!   the commit rule (§5.3, §5.4);
//! - `read`: linearizable reads through ReadIndex or a lease (thesis §6.4);
//! - `snapshot`: log compaction and InstallSnapshot (§7);
//! - `membership`: learners, single-server changes and joint consensus (§6; thesis §4);
//! - `apply`: client proposals, applying committed entries and answering the proposals;
//! - `recovery`: rebuilding a node from its persisted records;
//! - `log`: the in-memory log.
//!
//! This file holds the node's state, its accessors, the routing of inputs to those parts, and
//! the rejection of bad input.
//!
//! The sans-IO boundary is checked, not only promised: clippy denies here the clocks, sleeps,
//! files, sockets, unseeded randomness and tokio that the workspace's `clippy.toml` lists.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod apply;
mod election;
pub(crate) mod log;
mod membership;
mod read;
mod recovery;
mod replication;
mod snapshot;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use common::snapshot::{
    IncomingSnapshot, MemSnapshotStore, SnapshotFile, SnapshotRetention, SnapshotSource,
    SnapshotStore,
};
use common::{protocol, DetRng, Node, NodeId, Outbox, RequestId, Setup};

use crate::config::Config;
use crate::error::RecoverError;
use crate::message::{
    Entry, Event, LogIndex, Membership, Message, Metrics, Record, Rejected, Request, Response,
    Role, SnapshotMeta, Term,
};
use crate::state_machine::StateMachine;
use apply::Proposal;
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
    /// Records reported durable since recovery ([`Node::records_durable`]).
    records_durable: u64,
    /// A candidate that is its configuration's only voter waits for its own vote, this record,
    /// to be durable before it leads (see `campaign`).
    own_vote_record: Option<u64>,

    // Leader state.
    progress: Peers,
    /// Reused by `for_each_peer` for the ids it visits (it runs for every proposal).
    peers_scratch: Vec<NodeId>,
    /// Set while [`Node::handle_requests`] takes a batch: new entries are sent once, after it.
    replication_deferred: bool,
    /// Set while [`Node::handle_requests`] takes a proposal of its batch: the record of the
    /// entry it appends may wait for the end of the batch (`persist_deferred_entries`).
    record_deferrable: bool,
    /// The first of the entries appended in this batch of requests whose record waits for its
    /// end; they run to the end of the log.
    entries_deferred_from: Option<LogIndex>,
    /// The last AppendEntries list built, shared with the next follower that needs the same.
    append_cache: replication::AppendCache<S::Command>,
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
    /// Set while [`Self::apply_committed`] runs: applying a committed joint configuration can
    /// append and commit the new one (a leader that is its only voter), which asks to apply
    /// again from inside the walk; that call returns and the running one applies the rest.
    applying: bool,
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
        debug_assert!(
            self.entries_deferred_from.is_none(),
            "a record asked for before the deferred entries'"
        );
        self.records_asked += 1;
        out.persist(Record::HardState {
            term: self.term,
            voted_for: self.voted_for,
        });
    }

    /// Counts a record just asked for that makes the log durable up to `index`.
    pub(super) fn asked_durable_through(&mut self, index: LogIndex) {
        debug_assert!(
            self.entries_deferred_from.is_none(),
            "a record asked for before the deferred entries'"
        );
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
        Self::recover_from(setup, records, snapshots)
    }

    fn checkpoints_durable(&mut self, count: u64) {
        self.retention.durable(&*self.snapshots, count);
    }

    fn records_durable(&mut self, count: u64, out: &mut Outbox<Self>) {
        self.records_durable = self.records_durable.max(count);
        self.lead_alone_once_durable(out);
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

    /// The proposals of the batch are appended one by one, and each follower then gets one
    /// AppendEntries for all of them (within its flow-control limits), rather than one for the
    /// first proposal and another for the rest once that is acknowledged. The leader's own
    /// record of them is asked for last, from the same list when the followers were sent
    /// exactly these entries: one list of the batch's entries, not two.
    fn handle_requests<I>(&mut self, requests: I, out: &mut Outbox<Self>)
    where
        I: IntoIterator<Item = (RequestId, RequestOf<S>)>,
    {
        self.replication_deferred = true;
        for (id, req) in requests {
            match req {
                Request::Propose(command) => {
                    self.record_deferrable = true;
                    self.handle_propose(id, command, out);
                    self.record_deferrable = false;
                }
                req => {
                    // Anything else may ask for records of its own: the deferred entries'
                    // comes first.
                    self.persist_deferred_entries(out);
                    self.handle_request(id, req, out);
                }
            }
        }
        self.replication_deferred = false;
        if self.role == Role::Leader {
            // Sending asks for no record, so the deferred entries' record may come after it.
            self.send_new_entry(out);
        }
        self.persist_deferred_entries(out);
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
    fn emit_leader(&self, out: &mut Outbox<Self>) {
        out.emit(Event::LeaderChanged {
            term: self.term,
            leader: self.leader,
        });
    }
}

#[cfg(test)]
mod tests;
