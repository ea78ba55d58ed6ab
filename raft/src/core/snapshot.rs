//! Log compaction (§7): snapshots of the state machine, persisted as checkpoints, and
//! InstallSnapshot, sent in chunks to followers that need compacted entries.

use common::snapshot::{
    IncomingSnapshot, SnapshotDigest, SnapshotError, SnapshotFile, SnapshotReader, SnapshotWriter,
};
use common::{NodeId, Outbox};

use super::{CurrentSnapshot, RaftNode};
use crate::message::{Event, LogIndex, Message, Record, ReplicationState, Role, SnapshotMeta};
use crate::state_machine::StateMachine;

/// Where a chunk of InstallSnapshot left the snapshot being received.
enum Chunk {
    /// Every byte arrived: the file is ready to be finished.
    Complete(IncomingSnapshot),
    /// Answer with this offset, the next one wanted.
    Want(u64),
    /// Nothing to answer.
    Ignored,
}

impl<S: StateMachine> RaftNode<S> {
    /// Takes a snapshot once the log holds more than `snapshot_log_entries_max` applied entries,
    /// or once the commands applied since the last one add up to `snapshot_log_bytes_max`.
    pub(super) fn maybe_snapshot(&mut self, out: &mut Outbox<Self>) {
        let held = self.applied_index.saturating_sub(self.log.snapshot_index());
        let max = self.config.snapshot_log_entries_max;
        let bytes_max = self.config.snapshot_log_bytes_max;
        let by_entries = max != 0 && held > max;
        let by_bytes = bytes_max != 0 && held > 0 && self.log_bytes >= bytes_max;
        if (by_entries || by_bytes) && self.applied_index >= self.snapshot_retry_at {
            self.take_snapshot(out);
        }
    }

    /// A snapshot could not be written or read back: wait longer before the next try.
    fn snapshot_failed(&mut self, index: LogIndex, what: &str, error: &SnapshotError) {
        self.snapshot_backoff = self
            .snapshot_backoff
            .saturating_mul(2)
            .clamp(1, crate::config::SNAPSHOT_RETRY_BACKOFF_ENTRIES_MAX);
        self.snapshot_retry_at = index.saturating_add(self.snapshot_backoff);
        tracing::error!(
            node = self.config.id,
            index,
            %error,
            retry_at = self.snapshot_retry_at,
            "{what}"
        );
    }

    /// Snapshots the state machine at the applied index into a new file and compacts the log up
    /// to it. If the file cannot be written (a full disk, say), the log stays as it is and a
    /// later applied batch tries again, after a wait that doubles with every failure (see
    /// [`crate::config::SNAPSHOT_RETRY_BACKOFF_ENTRIES_MAX`]).
    pub(super) fn take_snapshot(&mut self, out: &mut Outbox<Self>) {
        let index = self.applied_index;
        let Some(term) = self.log.term(index) else {
            return;
        };
        if index <= self.log.snapshot_index() || self.state_machine_invalid {
            return;
        }
        let written =
            SnapshotWriter::create(&*self.snapshots, self.config.snapshot_bytes_max as u64)
                .and_then(|mut w| {
                    self.state_machine.snapshot(&mut w)?;
                    w.finish()
                });
        let file = match written {
            Ok(file) => file,
            Err(e) => {
                self.snapshot_failed(index, "snapshot not written", &e);
                return;
            }
        };
        let source = match self.snapshots.open(file.id) {
            Ok(source) => source,
            Err(e) => {
                self.snapshot_failed(index, "snapshot not readable", &e);
                return;
            }
        };
        self.snapshot_retry_at = 0;
        self.snapshot_backoff = 0;
        let membership = self.membership_at(index);
        let meta = SnapshotMeta {
            index,
            term,
            bytes: file.bytes,
            crc32c: file.crc32c,
            membership: membership.clone(),
        };
        self.log.compact(index, term);
        self.log_bytes = 0;
        self.membership_compacted(index, membership);
        self.persist_snapshot(CurrentSnapshot { meta, file, source }, out);
    }

    /// Persists a checkpoint that names the snapshot file and holds everything else recovery
    /// needs, and makes the snapshot the current one.
    fn persist_snapshot(&mut self, snapshot: CurrentSnapshot, out: &mut Outbox<Self>) {
        let index = snapshot.meta.index;
        out.checkpoint(Record::Snapshot {
            term: self.term,
            voted_for: self.voted_for,
            meta: Box::new(snapshot.meta.clone()),
            file: snapshot.file,
            entries: self.log.entries_after(index),
        });
        // It holds the whole log: the snapshot and every entry after it.
        self.asked_durable_through(self.log.last_index());
        self.retention.checkpointed(Some(snapshot.file.id));
        self.snapshot = Some(snapshot);
        out.emit(Event::Snapshot { index });
    }

    /// Switches `peer` to snapshot state and sends the first chunk.
    pub(super) fn start_snapshot(&mut self, peer: NodeId, out: &mut Outbox<Self>) {
        let Some(current) = &self.snapshot else {
            return;
        };
        let index = current.meta.index;
        if let Some(p) = self.progress.get_mut(&peer) {
            p.state = ReplicationState::Snapshot;
            p.inflight.clear();
            p.snapshot_index = index;
            p.snapshot_offset = 0;
        }
        self.send_snapshot_chunk(peer, out);
    }

    /// Sends the chunk at the peer's snapshot offset (stop-and-wait: one chunk in flight; a
    /// lost one is sent again when the answer to a heartbeat's probe names its offset).
    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId, out: &mut Outbox<Self>) {
        self.send_snapshot_message(peer, false, out);
    }

    /// On a heartbeat while a snapshot is being sent: an empty chunk at the current offset. It
    /// keeps the follower's election timer quiet, and its answer names the offset the follower
    /// needs, which sends the next real chunk (or again one that was lost). Re-sending a whole
    /// chunk on every heartbeat instead would pile copies up behind a follower busy restoring.
    pub(super) fn send_snapshot_probe(&mut self, peer: NodeId, out: &mut Outbox<Self>) {
        self.send_snapshot_message(peer, true, out);
    }

    fn send_snapshot_message(&mut self, peer: NodeId, probe: bool, out: &mut Outbox<Self>) {
        let Some(current) = &self.snapshot else {
            return;
        };
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        let meta = &current.meta;
        if p.snapshot_index != meta.index {
            // A newer snapshot replaced the one being sent: start over.
            p.snapshot_index = meta.index;
            p.snapshot_offset = 0;
        }
        let start = p.snapshot_offset.min(meta.bytes);
        let len = if probe {
            0
        } else {
            (meta.bytes - start).min(self.config.snapshot_chunk_bytes_max as u64) as usize
        };
        let mut data = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match current
                .source
                .read_at(start + filled as u64, &mut data[filled..])
            {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    tracing::error!(node = self.config.id, peer, error = %e, "snapshot chunk not readable");
                    return;
                }
            }
        }
        if filled < len {
            tracing::error!(
                node = self.config.id,
                peer,
                "snapshot file shorter than its description"
            );
            return;
        }
        let end = start + len as u64;
        out.send(
            peer,
            Message::InstallSnapshot {
                term: self.term,
                meta: Box::new(meta.clone()),
                offset: start,
                data,
                done: !probe && end == meta.bytes,
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
        let snapshot_index = meta.index;
        let respond = |node: &Self, next_offset: u64, done: bool, out: &mut Outbox<Self>| {
            out.send(
                from,
                Message::InstallSnapshotResponse {
                    term: node.term,
                    index: snapshot_index,
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
        let incoming = match self.receive_chunk(from, &meta, offset, &data, done) {
            Chunk::Complete(incoming) => incoming,
            Chunk::Want(next_offset) => {
                respond(self, next_offset, false, out);
                return;
            }
            Chunk::Ignored => return,
        };
        let file = match incoming.finish() {
            Ok(file) => file,
            Err(e) => {
                // The bytes do not match the leader's checksum: damaged on the way. Start over.
                self.reject_invalid(from, "InstallSnapshot data does not match its checksum");
                tracing::warn!(node = self.config.id, error = %e, "snapshot discarded");
                respond(self, 0, false, out);
                return;
            }
        };
        match self.install_snapshot(meta.clone(), file, out) {
            Ok(()) => respond(self, meta.bytes, true, out),
            Err(e) => {
                self.reject_invalid(from, "InstallSnapshot data does not restore");
                tracing::warn!(node = self.config.id, error = %e, "snapshot not installed");
                respond(self, 0, false, out);
            }
        }
    }

    /// Takes one chunk of the snapshot `meta` describes into the file being received (a chunk
    /// of another snapshot starts over).
    fn receive_chunk(
        &mut self,
        from: NodeId,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> Chunk {
        // A chunk of another snapshot than the one being received starts over (the partial
        // file is discarded when the old receiver is dropped).
        if self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|(m, _)| m != meta)
        {
            self.incoming_snapshot = None;
        }
        if self.incoming_snapshot.is_none() {
            if offset != 0 {
                return Chunk::Want(0);
            }
            let digest = SnapshotDigest {
                bytes: meta.bytes,
                crc32c: meta.crc32c,
            };
            match IncomingSnapshot::start(
                &*self.snapshots,
                digest,
                self.config.snapshot_bytes_max as u64,
            ) {
                Ok(incoming) => self.incoming_snapshot = Some((meta.clone(), incoming)),
                Err(e) => {
                    tracing::error!(node = self.config.id, error = %e, "snapshot not receivable");
                    return Chunk::Want(0);
                }
            }
        }
        let Some((_, mut incoming)) = self.incoming_snapshot.take() else {
            return Chunk::Ignored;
        };
        match incoming.accept(offset, data) {
            Ok(_) => {}
            Err(SnapshotError::OutOfOrder { expected, .. }) => {
                // A chunk from past a lost one: ask for the missing part again.
                self.incoming_snapshot = Some((meta.clone(), incoming));
                return Chunk::Want(expected);
            }
            Err(e) => {
                self.reject_invalid(from, "InstallSnapshot chunk refused");
                tracing::warn!(node = self.config.id, error = %e, "snapshot chunk refused");
                return Chunk::Want(0);
            }
        }
        if !done || !incoming.is_complete() {
            let next = incoming.received();
            self.incoming_snapshot = Some((meta.clone(), incoming));
            return Chunk::Want(next);
        }
        Chunk::Complete(incoming)
    }

    /// Replaces the state machine's state by the received snapshot's and the log's prefix by
    /// the snapshot. If the state machine cannot restore it, its state is unknown: the node
    /// applies and reads nothing until a snapshot restores cleanly.
    fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
        file: SnapshotFile,
        out: &mut Outbox<Self>,
    ) -> Result<(), SnapshotError> {
        let restored = self.snapshots.open(file.id).and_then(|source| {
            let mut reader = SnapshotReader::new(source.clone(), file)?;
            self.state_machine.restore(&mut reader)?;
            Ok(source)
        });
        let source = match restored {
            Ok(source) => source,
            Err(e) => {
                self.state_machine_invalid = true;
                self.retention.discard(&*self.snapshots, file.id);
                return Err(e);
            }
        };
        self.state_machine_invalid = false;
        let index: LogIndex = meta.index;
        // Entries up to the commit index are the same in the log the snapshot leaves (committed
        // entries never change); past it, what was durable may not be this log's any more.
        self.durable_only_through(self.commit_index);
        self.log.compact(index, meta.term);
        self.log_bytes = 0;
        if self.log.last_index() == index {
            // Nothing after the snapshot survived: no configuration entry either.
            self.membership_history.clear();
        }
        self.membership_compacted(index, meta.membership.clone());
        self.commit_index = self.commit_index.max(index);
        self.applied_index = index;
        self.fail_proposals_through(index, out);
        self.persist_snapshot(CurrentSnapshot { meta, file, source }, out);
        // Entries kept after the snapshot may be committed already.
        self.apply_committed(out);
        Ok(())
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
