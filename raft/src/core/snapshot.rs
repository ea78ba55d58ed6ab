//! Log compaction (§7): snapshots of the state machine, persisted as checkpoints, and
//! InstallSnapshot, sent in chunks to followers that need compacted entries.

use std::sync::Arc;

use common::{NodeId, Outbox};

use super::RaftNode;
use crate::message::{Event, LogIndex, Message, Record, ReplicationState, Role, SnapshotMeta};
use crate::state_machine::StateMachine;

impl<S: StateMachine> RaftNode<S> {
    /// Takes a snapshot once the log holds more than `snapshot_log_entries_max` applied entries.
    pub(super) fn maybe_snapshot(&mut self, out: &mut Outbox<Self>) {
        let max = self.config.snapshot_log_entries_max;
        if max == 0 || self.applied_index - self.log.snapshot_index() <= max {
            return;
        }
        self.take_snapshot(out);
    }

    /// Snapshots the state machine at the applied index and compacts the log up to it.
    pub(super) fn take_snapshot(&mut self, out: &mut Outbox<Self>) {
        let index = self.applied_index;
        let Some(term) = self.log.term(index) else {
            return;
        };
        if index <= self.log.snapshot_index() {
            return;
        }
        let data = self.state_machine.snapshot();
        let membership = self.membership_at(index);
        let meta = SnapshotMeta {
            index,
            term,
            bytes: data.len() as u64,
            membership: membership.clone(),
        };
        self.log.compact(index, term);
        self.membership_compacted(index, membership);
        self.persist_snapshot(meta, data, out);
    }

    /// Persists the current snapshot as a checkpoint that holds everything recovery needs.
    fn persist_snapshot(&mut self, meta: SnapshotMeta, data: Vec<u8>, out: &mut Outbox<Self>) {
        let index = meta.index;
        out.checkpoint(Record::Snapshot {
            term: self.term,
            voted_for: self.voted_for,
            meta: meta.clone(),
            data: data.clone(),
            entries: self.log.entries_after(index),
        });
        self.snapshot = Some((meta, Arc::new(data)));
        out.emit(Event::Snapshot { index });
    }

    /// Switches `peer` to snapshot state and sends the first chunk.
    pub(super) fn start_snapshot(&mut self, peer: NodeId, out: &mut Outbox<Self>) {
        let Some((meta, _)) = &self.snapshot else {
            return;
        };
        let index = meta.index;
        if let Some(p) = self.progress.get_mut(&peer) {
            p.state = ReplicationState::Snapshot;
            p.inflight.clear();
            p.snapshot_index = index;
            p.snapshot_offset = 0;
        }
        self.send_snapshot_chunk(peer, out);
    }

    /// Sends the chunk at the peer's snapshot offset (stop-and-wait: one chunk in flight,
    /// re-sent on every heartbeat until answered).
    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId, out: &mut Outbox<Self>) {
        let Some((meta, data)) = &self.snapshot else {
            return;
        };
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        if p.snapshot_index != meta.index {
            // A newer snapshot replaced the one being sent: start over.
            p.snapshot_index = meta.index;
            p.snapshot_offset = 0;
        }
        let start = (p.snapshot_offset as usize).min(data.len());
        let end = start
            .saturating_add(self.config.snapshot_chunk_bytes_max)
            .min(data.len());
        out.send(
            peer,
            Message::InstallSnapshot {
                term: self.term,
                meta: meta.clone(),
                offset: start as u64,
                data: data[start..end].to_vec(),
                done: end == data.len(),
            },
        );
    }

    /// The follower side of InstallSnapshot.
    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
        out: &mut Outbox<Self>,
    ) {
        if self.role == Role::Leader {
            self.reject_invalid(from, "InstallSnapshot from another leader of this term");
            return;
        }
        if self.role != Role::Follower && self.role != Role::Learner || self.leader != Some(from) {
            self.become_follower(self.term, Some(from), out);
        }
        self.election_elapsed_ticks = 0;
        let end = offset.saturating_add(data.len() as u64);
        if meta.bytes > self.config.snapshot_bytes_max as u64
            || end > meta.bytes
            || (done && end != meta.bytes)
            || meta.term > self.term
        {
            self.reject_invalid(from, "InstallSnapshot chunk out of bounds");
            return;
        }
        let respond = |node: &Self, next_offset: u64, done: bool, out: &mut Outbox<Self>| {
            out.send(
                from,
                Message::InstallSnapshotResponse {
                    term: node.term,
                    index: meta.index,
                    next_offset,
                    done,
                },
            );
        };
        if meta.index <= self.commit_index {
            // Everything it covers is committed here already.
            respond(self, meta.bytes, true, out);
            return;
        }
        if offset == 0 {
            self.incoming_snapshot = Some((meta.clone(), Vec::new()));
        }
        let Some((incoming_meta, buf)) = &mut self.incoming_snapshot else {
            respond(self, 0, false, out);
            return;
        };
        if *incoming_meta != meta || buf.len() as u64 != offset {
            let expected = if *incoming_meta == meta {
                buf.len() as u64
            } else {
                0
            };
            respond(self, expected, false, out);
            return;
        }
        buf.extend_from_slice(&data);
        if !done {
            let next = buf.len() as u64;
            respond(self, next, false, out);
            return;
        }
        let Some((meta, data)) = self.incoming_snapshot.take() else {
            return;
        };
        let mut restored = S::default();
        if let Err(e) = restored.restore(&data) {
            self.reject_invalid(from, "InstallSnapshot data does not restore");
            tracing::warn!(node = self.config.id, error = %e, "snapshot rejected");
            respond(self, 0, false, out);
            return;
        }
        self.install_snapshot(meta.clone(), data, restored, out);
        respond(self, meta.bytes, true, out);
    }

    fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
        data: Vec<u8>,
        restored: S,
        out: &mut Outbox<Self>,
    ) {
        let index: LogIndex = meta.index;
        self.state_machine = restored;
        self.log.compact(index, meta.term);
        if self.log.last_index() == index {
            // Nothing after the snapshot survived: no configuration entry either.
            self.membership_history.clear();
        }
        self.membership_compacted(index, meta.membership.clone());
        self.commit_index = self.commit_index.max(index);
        self.applied_index = index;
        self.fail_proposals_through(index, out);
        self.persist_snapshot(meta, data, out);
        // Entries kept after the snapshot may be committed already.
        self.apply_committed(out);
    }

    /// The leader side: next chunk, or back to replication once installed.
    pub(super) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        next_offset: u64,
        done: bool,
        out: &mut Outbox<Self>,
    ) {
        if self.role != Role::Leader {
            return;
        }
        if index > self.log.last_index() {
            self.reject_invalid(from, "InstallSnapshotResponse past the leader's log");
            return;
        }
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        if done {
            if index > p.match_index {
                p.match_index = index;
            }
            if p.state == ReplicationState::Snapshot {
                p.next_index = p.match_index + 1;
                p.become_probe();
            }
            self.maybe_commit(out);
            self.send_append(from, false, out);
            return;
        }
        if p.state == ReplicationState::Snapshot && p.snapshot_index == index {
            p.snapshot_offset = next_offset;
            self.send_snapshot_chunk(from, out);
        }
    }
}
