//! Recovery: a node rebuilt from its persisted records, the replay of each record, and the
//! restore of the state machine from the snapshot the last checkpoint names.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use common::snapshot::{SnapshotFile, SnapshotReader, SnapshotRetention, SnapshotStore};
use common::{DetRng, Setup};

use super::log::RaftLog;
use super::replication::{AppendCache, Peers};
use super::{CurrentSnapshot, RaftNode, RecordOf};
use crate::config::Config;
use crate::error::RecoverError;
use crate::message::{Entry, Membership, Payload, Record, Rejected, Role, SnapshotMeta};
use crate::state_machine::StateMachine;

impl<S: StateMachine> RaftNode<S> {
    /// Rebuilds a node from its persisted records (the body of [`common::Node::recover_with_snapshots`]).
    pub(super) fn recover_from(
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
        let mut node = Self::new(config, membership, role, state_machine, snapshots);
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

    /// A node in its initial state (term 0, empty log), before any record is replayed.
    fn new(
        config: Config,
        membership: Membership,
        role: Role,
        state_machine: S,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> Self {
        RaftNode {
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
            append_cache: AppendCache::new(),
            replication_deferred: false,
            record_deferrable: false,
            entries_deferred_from: None,
            records_asked: 0,
            durable_pending: VecDeque::new(),
            durable_index: 0,
            records_durable: 0,
            own_vote_record: None,
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
            applying: false,
            outputs: Vec::new(),
            log_bytes: 0,
            snapshot_retry_at: 0,
            snapshot_backoff: 0,
            rejected: Rejected::default(),
            elections_started: 0,
            config,
        }
    }

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
            Record::Entries(entries) => self.replay_entries(entries.into_vec())?,
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
                self.replay_snapshot(&meta, entries)?;
                return Ok(Some((*meta, file)));
            }
        }
        Ok(None)
    }

    /// Replays a record of entries: appended, or replacing the log from the first one's index
    /// (a leader overwrote an uncommitted suffix).
    fn replay_entries(&mut self, entries: Vec<Entry<S::Command>>) -> Result<(), RecoverError> {
        for e in entries {
            if e.index == 0 || e.index > self.log.last_index() + 1 {
                return Err(RecoverError::Corrupt(format!(
                    "entry {} after a log ending at {}",
                    e.index,
                    self.log.last_index()
                )));
            }
            if e.index <= self.log.snapshot_index() {
                continue;
            }
            if e.index <= self.log.last_index() {
                self.log.truncate_from(e.index);
                self.membership_truncated(e.index);
            }
            self.push_recovered(e);
        }
        Ok(())
    }

    /// Replays a checkpoint: the log restarts at the snapshot `meta` describes, followed by the
    /// checkpoint's `entries`.
    fn replay_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        entries: Vec<Entry<S::Command>>,
    ) -> Result<(), RecoverError> {
        self.log = RaftLog::new();
        self.log.compact(meta.index, meta.term);
        self.snapshot_membership = meta.membership.clone();
        self.membership = meta.membership.clone();
        self.known.extend(meta.membership.members());
        self.membership_history.clear();
        for e in entries {
            if e.index != self.log.last_index() + 1 {
                return Err(RecoverError::Corrupt(format!(
                    "snapshot entries have a gap at {}",
                    e.index
                )));
            }
            self.push_recovered(e);
        }
        self.commit_index = meta.index;
        self.applied_index = meta.index;
        Ok(())
    }

    /// Appends a recovered entry; a configuration takes effect as it is appended.
    fn push_recovered(&mut self, e: Entry<S::Command>) {
        if let Payload::Membership(m) = &e.payload {
            self.membership_history
                .push((e.index, Membership::clone(m)));
            self.membership = Membership::clone(m);
            self.known.extend(m.members());
        }
        self.log.push(e);
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
}
