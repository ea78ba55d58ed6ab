//! What crosses the network ([`Message`]), what reaches the disk ([`Record`]), and what clients
//! and observers exchange with a node ([`Request`], [`Response`], [`Event`], [`Metrics`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::Arc;

use common::NodeId;
use serde::{Deserialize, Serialize};

use crate::error::RaftError;

/// A term (§5.1): a logical clock that numbers leaderships.
pub type Term = u64;
/// The position of an entry in the log; the first entry has index 1, index 0 means "none".
pub type LogIndex = u64;

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<C> {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
    /// What it carries.
    pub payload: Payload<C>,
}

/// The entries of a [`Record::Entries`]: a list of the record's own, which a leader extends with
/// every proposal of one step, or a list shared with an AppendEntries, kept as it is rather than
/// copied (on a follower, the list the message brought; on a leader, the list it sent its
/// followers for the entries of a batch of proposals). Either way it reads as a slice and is
/// encoded as a plain sequence (the same bytes as a `Vec<Entry>`).
#[derive(Clone)]
pub struct EntryList<C>(Entries<C>);

#[derive(Clone)]
enum Entries<C> {
    Owned(Vec<Entry<C>>),
    Shared(Arc<[Entry<C>]>),
}

impl<C: Clone> EntryList<C> {
    /// Appends `entry` (a shared list is copied first: only a leader extends its own record).
    pub fn push(&mut self, entry: Entry<C>) {
        if let Entries::Shared(shared) = &self.0 {
            self.0 = Entries::Owned(shared.to_vec());
        }
        if let Entries::Owned(entries) = &mut self.0 {
            entries.push(entry);
        }
    }

    /// The list's own entries, when it is not shared: a leader extends those in place.
    pub(crate) fn owned_mut(&mut self) -> Option<&mut Vec<Entry<C>>> {
        match &mut self.0 {
            Entries::Owned(entries) => Some(entries),
            Entries::Shared(_) => None,
        }
    }

    /// The entries as a vector of their own (moved when the list is not shared).
    pub fn into_vec(self) -> Vec<Entry<C>> {
        match self.0 {
            Entries::Owned(entries) => entries,
            Entries::Shared(shared) => shared.to_vec(),
        }
    }
}

impl<C> Deref for EntryList<C> {
    type Target = [Entry<C>];

    fn deref(&self) -> &[Entry<C>] {
        match &self.0 {
            Entries::Owned(entries) => entries,
            Entries::Shared(shared) => shared,
        }
    }
}

impl<C> From<Vec<Entry<C>>> for EntryList<C> {
    fn from(entries: Vec<Entry<C>>) -> Self {
        EntryList(Entries::Owned(entries))
    }
}

impl<C> FromIterator<Entry<C>> for EntryList<C> {
    fn from_iter<I: IntoIterator<Item = Entry<C>>>(entries: I) -> Self {
        EntryList(Entries::Owned(entries.into_iter().collect()))
    }
}

impl<C> From<Arc<[Entry<C>]>> for EntryList<C> {
    fn from(entries: Arc<[Entry<C>]>) -> Self {
        EntryList(Entries::Shared(entries))
    }
}

impl<C: PartialEq> PartialEq for EntryList<C> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<C: Eq> Eq for EntryList<C> {}

impl<C: std::fmt::Debug> std::fmt::Debug for EntryList<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<C: Serialize> Serialize for EntryList<C> {
    fn serialize<Z: serde::Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de, C: Deserialize<'de>> Deserialize<'de> for EntryList<C> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Entry<C>>::deserialize(deserializer).map(EntryList::from)
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload<C> {
    /// The empty entry a new leader appends at the start of its term, so entries of earlier
    /// terms get committed through it (§5.4.2, §8).
    Noop,
    /// A client command for the state machine.
    Command(C),
    /// A new cluster configuration. It takes effect on each node as soon as the node appends
    /// it, committed or not (thesis §4.1); a truncation reverts it.
    ///
    /// Boxed: configurations are rare, and inline they would make every entry as large as
    /// three sets (an `Entry<u64>` of 88 bytes instead of 32), which every clone, move and
    /// buffer of entries on the hot path pays for. The encoding is the same either way.
    Membership(Box<Membership>),
}

/// Voter groups up to this size have their quorum computed without allocating
/// ([`Membership::quorum_value`]); larger ones work too, through a heap buffer.
pub const QUORUM_GROUP_INLINE_MAX: usize = 16;

/// A cluster configuration: who votes, who only learns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The voting members.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log but do not vote.
    pub learners: BTreeSet<NodeId>,
    /// During joint consensus (§6), the voters of the old configuration: elections and commits
    /// then need a majority of `voters` *and* a majority of these.
    pub voters_outgoing: Option<BTreeSet<NodeId>>,
}

impl Membership {
    /// Whether `id` votes (in either half of a joint configuration).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
            || self
                .voters_outgoing
                .as_ref()
                .is_some_and(|o| o.contains(&id))
    }

    /// Whether `id` is a member at all.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all: BTreeSet<NodeId> = self.voters.union(&self.learners).copied().collect();
        if let Some(o) = &self.voters_outgoing {
            all.extend(o.iter().copied());
        }
        all
    }

    /// The voter groups that must each reach a majority: one, or two during joint consensus.
    pub fn groups(&self) -> Vec<&BTreeSet<NodeId>> {
        let mut g = vec![&self.voters];
        if let Some(o) = &self.voters_outgoing {
            g.push(o);
        }
        g
    }

    /// Whether `granted` holds a majority of every voter group.
    pub fn quorum(&self, granted: &BTreeSet<NodeId>) -> bool {
        self.groups()
            .iter()
            .all(|g| g.iter().filter(|v| granted.contains(v)).count() > g.len() / 2)
    }

    /// Whether `refused` makes a majority impossible in some voter group.
    pub fn quorum_impossible(&self, refused: &BTreeSet<NodeId>) -> bool {
        self.groups()
            .iter()
            .any(|g| g.iter().filter(|v| refused.contains(v)).count() > g.len() - (g.len() / 2 + 1))
    }

    /// The highest value a majority of every voter group has reached, given each voter's value:
    /// the commit rule's "replicated on a majority", generalized to joint consensus.
    pub fn quorum_value(&self, value_of: impl Fn(NodeId) -> u64) -> u64 {
        // Runs on every acknowledgement: groups of up to `QUORUM_GROUP_INLINE_MAX` voters are
        // sorted on the stack.
        let group_value = |g: &BTreeSet<NodeId>| {
            let majority_rank = g.len() / 2;
            if g.len() <= QUORUM_GROUP_INLINE_MAX {
                let mut vals = [0u64; QUORUM_GROUP_INLINE_MAX];
                for (slot, &v) in vals.iter_mut().zip(g) {
                    *slot = value_of(v);
                }
                let vals = &mut vals[..g.len()];
                vals.sort_unstable_by(|a, b| b.cmp(a));
                vals.get(majority_rank).copied().unwrap_or(0)
            } else {
                let mut vals: Vec<u64> = g.iter().map(|&v| value_of(v)).collect();
                vals.sort_unstable_by(|a, b| b.cmp(a));
                vals.get(majority_rank).copied().unwrap_or(0)
            }
        };
        let joint = self.voters_outgoing.as_ref().map(group_value);
        let new = group_value(&self.voters);
        joint.map_or(new, |old| old.min(new))
    }
}

/// Describes the state a snapshot captures: everything up to and including `index`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// Total size of the snapshot data in bytes.
    pub bytes: u64,
    /// CRC32C of the snapshot data: the follower checks the received bytes against it before
    /// installing them.
    pub crc32c: u32,
    /// The configuration as of `index`.
    pub membership: Membership,
}

/// Messages between Raft nodes. Every message carries the sender's current term (§5.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<C> {
    /// Would you vote for me in `term`? Sent before a real election, without bumping the
    /// sender's term (pre-vote, thesis §9.6). `term` is the term the sender would use.
    PreVote {
        /// The term the sender would campaign in (its current term + 1).
        term: Term,
        /// Index of the sender's last log entry.
        last_log_index: LogIndex,
        /// Term of the sender's last log entry.
        last_log_term: Term,
    },
    /// The answer to [`Message::PreVote`].
    PreVoteResponse {
        /// The pre-vote's term when granted, else the responder's current term.
        term: Term,
        /// Whether the responder would vote.
        granted: bool,
    },
    /// RequestVote RPC (§5.2).
    RequestVote {
        /// The candidate's term.
        term: Term,
        /// Index of the candidate's last log entry (§5.4.1).
        last_log_index: LogIndex,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// The election was triggered by a leadership transfer: voters may not ignore it because
        /// they heard from the current leader recently.
        transfer: bool,
    },
    /// The answer to [`Message::RequestVote`].
    RequestVoteResponse {
        /// The responder's current term.
        term: Term,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries RPC (§5.3): replicates entries and serves as heartbeat.
    AppendEntries {
        /// The leader's term.
        term: Term,
        /// Index of the entry just before `entries`.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// The entries to store (empty for a heartbeat). Shared: a leader sends one list to
        /// every follower at the same point, and the follower's record keeps it (encoded as a
        /// plain sequence).
        entries: Arc<[Entry<C>]>,
        /// The leader's commit index.
        leader_commit: LogIndex,
        /// Sequence number of the leader's heartbeat round, echoed back; used to confirm
        /// leadership for reads.
        read_seq: u64,
    },
    /// The answer to [`Message::AppendEntries`].
    AppendEntriesResponse {
        /// The responder's current term.
        term: Term,
        /// Whether the consistency check passed and the entries are stored (durably: the
        /// response leaves only after the records are synced).
        success: bool,
        /// On success, the index of the last entry known to match the leader's log. On
        /// failure, the `prev_log_index` that was rejected.
        index: LogIndex,
        /// On failure: a hint for fast backtracking. `Some((term, first_index))`: the follower
        /// holds entries of `term` at `prev_log_index`, starting at `first_index`. `None` with
        /// `last_log_index`: the follower's log is too short.
        conflict: Option<(Term, LogIndex)>,
        /// On failure, the follower's last log index.
        last_log_index: LogIndex,
        /// The `read_seq` of the AppendEntries answered.
        read_seq: u64,
    },
    /// One chunk of a snapshot, for a follower that needs entries the leader has compacted.
    InstallSnapshot {
        /// The leader's term.
        term: Term,
        /// The snapshot being sent (boxed, like the other rare large parts of messages, records
        /// and responses, so that the frequent ones stay small: every message, record and
        /// answer is moved through the outbox and the driver's buffers at its enum's size).
        meta: Box<SnapshotMeta>,
        /// Where this chunk starts in the snapshot data.
        offset: u64,
        /// The chunk (encoded as one run of bytes, not byte by byte).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// The answer to [`Message::InstallSnapshot`].
    InstallSnapshotResponse {
        /// The responder's current term.
        term: Term,
        /// The snapshot's last index.
        index: LogIndex,
        /// The offset the follower expects next (the data length when done).
        next_offset: u64,
        /// Whether the follower has installed the snapshot (or already had its entries).
        done: bool,
    },
    /// Start an election now, skipping pre-vote and the election timeout: the leader is
    /// handing its leadership over (thesis §3.10).
    TimeoutNow {
        /// The leader's term.
        term: Term,
    },
}

impl<C> Message<C> {
    /// The term the message carries.
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::RequestVote { term, .. }
            | Message::RequestVoteResponse { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendEntriesResponse { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotResponse { term, .. }
            | Message::TimeoutNow { term } => *term,
        }
    }
}

/// What a node persists. Replaying the records in order into [`common::Node::recover`] rebuilds
/// its durable state (§5: current term, vote, log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<C> {
    /// The current term and the vote cast in it.
    HardState {
        /// The current term.
        term: Term,
        /// The candidate voted for in `term`, if any.
        voted_for: Option<NodeId>,
    },
    /// Entries appended to the log; the first one's index is at most the log's last index + 1
    /// (a truncation record comes first when entries were replaced).
    Entries(EntryList<C>),
    /// Every entry at `from` and after was removed (a follower's log repair, §5.3).
    Truncate {
        /// The first removed index.
        from: LogIndex,
    },
    /// A checkpoint (persisted with [`common::Outbox::checkpoint`]): the snapshot, the hard
    /// state and every log entry after the snapshot.
    Snapshot {
        /// The current term.
        term: Term,
        /// The vote in `term`.
        voted_for: Option<NodeId>,
        /// What the snapshot covers (boxed: see [`Message::InstallSnapshot`]).
        meta: Box<SnapshotMeta>,
        /// The file in the node's snapshot store holding the state machine's state.
        file: common::snapshot::SnapshotFile,
        /// The log entries after `meta.index`.
        entries: Vec<Entry<C>>,
    },
}

/// Client requests to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<C, Q> {
    /// Append `command` to the log; answered with [`Response::Applied`] once applied.
    Propose(C),
    /// A linearizable read: answered with [`Response::Read`] once the leader has confirmed its
    /// leadership (ReadIndex, or its lease) and applied up to the read point.
    Read(Q),
    /// Hand leadership over to the given voter (leader only); answered with
    /// [`Response::TransferStarted`] once the target was told to start an election.
    TransferLeadership(NodeId),
    /// Add a non-voting member (leader only). Answered with [`Response::MembershipChanged`]
    /// once the configuration entry is committed.
    AddLearner(NodeId),
    /// Make a node a voter: promotes a learner, or adds a new node (single-server change,
    /// thesis §4.1). A learner is promoted only once it has caught up
    /// ([`Config::promote_lag_entries_max`](crate::Config::promote_lag_entries_max)); until
    /// then the leader answers [`RaftError::Busy`] and appends nothing.
    AddVoter(NodeId),
    /// Remove a voter or learner (single-server change). Removing the leader is allowed: it
    /// leads until the new configuration is committed, then steps down.
    RemoveNode(NodeId),
    /// Replace the voters with any new set through joint consensus (§6): first a joint
    /// configuration, then the new one; answered once the new one is committed.
    ChangeVoters(BTreeSet<NodeId>),
}

/// Answers to [`Request`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response<O> {
    /// The proposal was committed and applied at `index`; `output` is the state machine's answer.
    Applied {
        /// Where the entry sits in the log.
        index: LogIndex,
        /// What the state machine returned.
        output: O,
    },
    /// The answer to a linearizable read.
    Read(O),
    /// The transfer target was told to start an election.
    TransferStarted,
    /// The configuration entry at `index` was committed.
    MembershipChanged {
        /// Where the entry sits in the log.
        index: LogIndex,
        /// The configuration now in force (boxed: see [`Message::InstallSnapshot`]).
        membership: Box<Membership>,
    },
    /// The request failed; see [`RaftError`].
    Failed(RaftError),
}

/// Notifications for observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The node learnt of a new term or leader.
    LeaderChanged {
        /// The node's current term.
        term: Term,
        /// The leader of `term`, if known.
        leader: Option<NodeId>,
    },
    /// The node took or installed a snapshot.
    Snapshot {
        /// What it covers.
        index: LogIndex,
    },
}

/// The role of a node (§5.1, plus the pre-candidate of pre-vote).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asking for pre-votes before starting an election.
    PreCandidate,
    /// Asking for votes in its term.
    Candidate,
    /// Leads its term.
    Leader,
    /// Receives the log but does not vote.
    Learner,
}

/// How a leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Searching for the last matching entry: one AppendEntries at a time.
    Probe,
    /// Streaming: up to `inflight_max` AppendEntries in flight.
    Replicate,
    /// Sending a snapshot.
    Snapshot,
}

/// A leader's view of one follower's replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// Highest index known to be replicated on the follower.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Probe, replicate or snapshot.
    pub state: ReplicationState,
    /// AppendEntries messages in flight.
    pub inflight: usize,
}

/// Counters of messages a node rejected, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejected {
    /// From nodes that are not members.
    pub unknown_sender: u64,
    /// Carrying a term older than the node's.
    pub stale_term: u64,
    /// Impossible content: indexes past the end of a log, entries out of order, a follower
    /// claiming to hold entries the leader never had, a conflict below the commit index.
    pub invalid: u64,
}

/// A snapshot of a node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: LogIndex,
    /// Highest index applied to the state machine.
    pub applied_index: LogIndex,
    /// Last index in the log.
    pub last_log_index: LogIndex,
    /// Term of the last entry.
    pub last_log_term: Term,
    /// Last index covered by the snapshot.
    pub snapshot_index: LogIndex,
    /// Size in bytes of the latest snapshot's file (0 without a snapshot).
    pub snapshot_bytes: u64,
    /// Replication progress of each peer (leader only).
    pub progress: BTreeMap<NodeId, PeerProgress>,
    /// Messages rejected, by reason.
    pub rejected: Rejected,
    /// Elections this node started.
    pub elections_started: u64,
    /// Proposals waiting to be applied.
    pub proposals_pending: usize,
    /// The configuration in force on this node (the latest in its log).
    pub membership: Membership,
}
