//! Configuration of a Raft node: a plain struct with public fields, named defaults and
//! [`Config::validate`].

use std::collections::BTreeSet;

use common::NodeId;

use crate::error::RecoverError;

/// Default for [`Config::promote_lag_entries_max`].
pub const PROMOTE_LAG_ENTRIES_MAX_DEFAULT: u64 = 64;
/// Default for [`Config::election_timeout_ticks_min`].
pub const ELECTION_TIMEOUT_TICKS_MIN_DEFAULT: u64 = 10;
/// Default for [`Config::election_timeout_ticks_max`].
pub const ELECTION_TIMEOUT_TICKS_MAX_DEFAULT: u64 = 20;
/// Default for [`Config::heartbeat_interval_ticks`].
pub const HEARTBEAT_INTERVAL_TICKS_DEFAULT: u64 = 2;
/// Default for [`Config::append_entries_max`].
pub const APPEND_ENTRIES_MAX_DEFAULT: usize = 256;
/// Default for [`Config::append_bytes_max`] (1 MiB).
pub const APPEND_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Default for [`Config::inflight_max`].
pub const INFLIGHT_MAX_DEFAULT: usize = 8;
/// Default for [`Config::uncommitted_bytes_max`] (64 MiB).
pub const UNCOMMITTED_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
/// Default for [`Config::proposals_pending_max`].
pub const PROPOSALS_PENDING_MAX_DEFAULT: usize = 65_536;
/// Default for [`Config::reads_pending_max`].
pub const READS_PENDING_MAX_DEFAULT: usize = 65_536;
/// Default for [`Config::snapshot_log_entries_max`].
pub const SNAPSHOT_LOG_ENTRIES_MAX_DEFAULT: u64 = 100_000;
/// Default for [`Config::snapshot_log_bytes_max`] (64 MiB).
pub const SNAPSHOT_LOG_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default for [`Config::snapshot_chunk_bytes_max`] (256 KiB).
pub const SNAPSHOT_CHUNK_BYTES_MAX_DEFAULT: usize = 256 * 1024;
/// The largest [`Config::snapshot_chunk_bytes_max`] accepted (8 MiB): half the transport's
/// default frame limit, which an InstallSnapshot message must fit in.
pub const SNAPSHOT_CHUNK_BYTES_LIMIT: usize = 8 * 1024 * 1024;
/// Default for [`Config::snapshot_bytes_max`] (1 GiB).
pub const SNAPSHOT_BYTES_MAX_DEFAULT: usize = 1024 * 1024 * 1024;
/// After a snapshot could not be written (a full disk, say), the next try waits for this many
/// more applied entries at most: the wait starts at one entry and doubles after every failure,
/// so a lasting failure costs a try (and an error line) per this many entries, not per entry.
pub const SNAPSHOT_RETRY_BACKOFF_ENTRIES_MAX: u64 = 4_096;

/// Configuration of one Raft node.
///
/// Time is in logical ticks (calls to [`common::Node::tick`]); the driver decides how long a
/// tick is. Every node of a cluster should use the same timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// The voting members of the initial configuration, this node included when it votes.
    pub voters: Vec<NodeId>,
    /// Non-voting members of the initial configuration: they receive the log but neither vote
    /// nor count towards a majority.
    pub learners: Vec<NodeId>,
    /// Nodes that may join the cluster later: messages from them are accepted even before a
    /// configuration naming them reaches this node (which would otherwise reject them as
    /// unknown senders). Nodes named by any configuration this node has seen are always known.
    pub known_nodes: Vec<NodeId>,
    /// How far behind a learner may be and still be promoted to voter. A leader asked to make a
    /// learner a voter ([`crate::Request::AddVoter`] naming a learner) does so only once the
    /// learner has caught up: the learner has acknowledged an entry or a snapshot to this leader
    /// (the leader's match index for it is above 0; progress starts over at every election),
    /// and that match index is at least the leader's commit index minus this many entries
    /// (saturating at 0). Otherwise the promotion is refused with [`crate::RaftError::Busy`],
    /// nothing is appended, and the caller retries later, as etcd refuses a learner that is
    /// not in sync. A new voter that still has most of the log to fetch would count towards
    /// majorities before it can help make them (Ongaro's thesis §4.2.1). 0 asks for every
    /// committed entry; `u64::MAX` only for an answer. Adding a node that is not a learner
    /// directly as a voter is not checked: add it as a learner first for this guarantee.
    pub promote_lag_entries_max: u64,
    /// The shortest election timeout. A follower that hears nothing from a leader for a
    /// randomized timeout in `[min, max]` starts an election (§5.2).
    pub election_timeout_ticks_min: u64,
    /// The longest election timeout.
    pub election_timeout_ticks_max: u64,
    /// How often a leader sends AppendEntries to idle followers. Must be well below the
    /// election timeout.
    pub heartbeat_interval_ticks: u64,
    /// Send heartbeats on the ticks that are a multiple of `heartbeat_interval_ticks` since
    /// this node started, instead of every `heartbeat_interval_ticks` from its election. Many
    /// groups ticked together in one process ([`common::groups::Groups`]) then send their
    /// heartbeats on the same ticks, which go to each peer process in one message, not in as
    /// many as there are phases among the leaders. Each node counts its own ticks, so cores
    /// started together share the phase; one started later has a phase of its own. The
    /// interval between heartbeats is the same; only the first after an election may come
    /// sooner. Off by default.
    pub heartbeat_aligned: bool,
    /// Run a pre-vote round before a real election, so a node that was partitioned away cannot
    /// disrupt a healthy cluster by bumping the term (Ongaro's thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within an election timeout steps down, and
    /// followers that hear from a leader ignore vote requests (thesis §6.2).
    pub check_quorum: bool,
    /// Serve reads from the leader's lease instead of a ReadIndex round. Requires
    /// `check_quorum`, and assumes ticks on all nodes advance at the same rate within a factor of
    /// `election_timeout_ticks_min / (election_timeout_ticks_min - lease_margin_ticks)`.
    pub lease_reads: bool,
    /// Ticks subtracted from the lease to absorb clock-rate differences between nodes.
    pub lease_margin_ticks: u64,
    /// Seed of the node's random source (election timeouts).
    pub seed: u64,
    /// Most entries in one AppendEntries message.
    pub append_entries_max: usize,
    /// Most command bytes (as measured by [`crate::StateMachine::command_bytes`]) in one
    /// AppendEntries message; at least one entry is always sent.
    pub append_bytes_max: usize,
    /// Most AppendEntries messages in flight to one follower in the replicate state.
    pub inflight_max: usize,
    /// The leader sends AppendEntries while it writes the same entries to its own log, instead
    /// of after (Ongaro's thesis, §10.2.1): a commit waits for the slower of its own write and
    /// a follower's round trip with the follower's write, not for the sum. The leader counts
    /// itself towards a majority only for entries its driver reported durable
    /// ([`common::Node::records_durable`]), so this needs a driver that reports durability: the
    /// workspace's driver and simulator do; a hand-written pump that never reports it leaves
    /// the leader out of every majority (a single voter then never commits). Off by default.
    pub parallel_append: bool,
    /// Most bytes of proposals appended by this leader and not yet committed; more proposals
    /// are refused with [`crate::RaftError::Busy`].
    pub uncommitted_bytes_max: usize,
    /// Most proposals waiting to be applied on this node.
    pub proposals_pending_max: usize,
    /// Most reads waiting for confirmation on this node.
    pub reads_pending_max: usize,
    /// Take a snapshot and compact the log when it holds more than this many applied entries
    /// (0 disables snapshots).
    pub snapshot_log_entries_max: u64,
    /// Also take a snapshot once the commands applied since the last one add up to this many
    /// bytes ([`StateMachine::command_bytes`](crate::StateMachine::command_bytes)), so large
    /// commands do not hold the log's memory at `snapshot_log_entries_max` of them (0: no
    /// trigger by size).
    pub snapshot_log_bytes_max: u64,
    /// Most snapshot bytes in one InstallSnapshot message.
    pub snapshot_chunk_bytes_max: usize,
    /// Largest snapshot a follower accepts.
    pub snapshot_bytes_max: usize,
}

impl Config {
    /// A configuration with default timeouts and limits for node `id` of a cluster of `voters`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Self {
            id,
            voters,
            learners: Vec::new(),
            known_nodes: Vec::new(),
            promote_lag_entries_max: PROMOTE_LAG_ENTRIES_MAX_DEFAULT,
            election_timeout_ticks_min: ELECTION_TIMEOUT_TICKS_MIN_DEFAULT,
            election_timeout_ticks_max: ELECTION_TIMEOUT_TICKS_MAX_DEFAULT,
            heartbeat_interval_ticks: HEARTBEAT_INTERVAL_TICKS_DEFAULT,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            lease_margin_ticks: 2,
            seed: id,
            append_entries_max: APPEND_ENTRIES_MAX_DEFAULT,
            append_bytes_max: APPEND_BYTES_MAX_DEFAULT,
            inflight_max: INFLIGHT_MAX_DEFAULT,
            parallel_append: false,
            heartbeat_aligned: false,
            uncommitted_bytes_max: UNCOMMITTED_BYTES_MAX_DEFAULT,
            proposals_pending_max: PROPOSALS_PENDING_MAX_DEFAULT,
            reads_pending_max: READS_PENDING_MAX_DEFAULT,
            snapshot_log_entries_max: SNAPSHOT_LOG_ENTRIES_MAX_DEFAULT,
            snapshot_log_bytes_max: SNAPSHOT_LOG_BYTES_MAX_DEFAULT,
            snapshot_chunk_bytes_max: SNAPSHOT_CHUNK_BYTES_MAX_DEFAULT,
            snapshot_bytes_max: SNAPSHOT_BYTES_MAX_DEFAULT,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), RecoverError> {
        let err = |s: String| Err(RecoverError::Config(s));
        let voters: BTreeSet<_> = self.voters.iter().collect();
        if voters.len() != self.voters.len() {
            return err(format!("voters {:?} contain duplicates", self.voters));
        }
        if voters.is_empty() {
            return err("voters must not be empty".into());
        }
        let learners: BTreeSet<_> = self.learners.iter().collect();
        if learners.len() != self.learners.len() {
            return err(format!("learners {:?} contain duplicates", self.learners));
        }
        if let Some(both) = voters.intersection(&learners).next() {
            return err(format!("node {both} is both a voter and a learner"));
        }
        if !voters.contains(&self.id) && !learners.contains(&self.id) {
            return err(format!(
                "this node {} is neither among the voters {:?} nor the learners {:?}",
                self.id, self.voters, self.learners
            ));
        }
        if self.heartbeat_interval_ticks == 0 {
            return err("heartbeat_interval_ticks must be at least 1".into());
        }
        if self.election_timeout_ticks_min <= self.heartbeat_interval_ticks {
            return err(format!(
                "election_timeout_ticks_min ({}) must exceed heartbeat_interval_ticks ({})",
                self.election_timeout_ticks_min, self.heartbeat_interval_ticks
            ));
        }
        if self.election_timeout_ticks_max < self.election_timeout_ticks_min {
            return err(format!(
                "election_timeout_ticks_max ({}) is below election_timeout_ticks_min ({})",
                self.election_timeout_ticks_max, self.election_timeout_ticks_min
            ));
        }
        if self.lease_reads && !self.check_quorum {
            return err("lease_reads requires check_quorum".into());
        }
        if self.lease_reads && self.lease_margin_ticks >= self.election_timeout_ticks_min {
            return err("lease_margin_ticks must be below election_timeout_ticks_min".into());
        }
        if self.append_entries_max == 0 || self.append_bytes_max == 0 {
            return err("append_entries_max and append_bytes_max must be at least 1".into());
        }
        if self.inflight_max == 0 {
            return err("inflight_max must be at least 1".into());
        }
        if self.proposals_pending_max == 0 || self.reads_pending_max == 0 {
            return err("proposals_pending_max and reads_pending_max must be at least 1".into());
        }
        if self.uncommitted_bytes_max == 0 {
            return err("uncommitted_bytes_max must be at least 1".into());
        }
        if self.snapshot_chunk_bytes_max == 0
            || self.snapshot_chunk_bytes_max > SNAPSHOT_CHUNK_BYTES_LIMIT
        {
            return err(format!(
                "snapshot_chunk_bytes_max must be between 1 and {SNAPSHOT_CHUNK_BYTES_LIMIT} \
                 (a chunk travels in one frame)"
            ));
        }
        Ok(())
    }
}
