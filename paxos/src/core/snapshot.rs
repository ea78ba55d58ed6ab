//! Snapshots and log compaction, through the [`StateMachine`] trait and the replica's
//! snapshot store ([`common::snapshot`]).
//!
//! # Taking a snapshot
//!
//! Every [`Config::snapshot_interval_slots`](crate::Config::snapshot_interval_slots) applied
//! slots, a replica streams its state into a new file of its store with a [`SnapshotWriter`]
//! (at most [`Config::snapshot_bytes_max`](crate::Config::snapshot_bytes_max) bytes), asks for a
//! [`Record::Snapshot`] *checkpoint* naming the [`SnapshotFile`] together with the rest of its
//! durable state (promise, decided index, accepted entries from the snapshot on), and drops the
//! log before it. Storage may then delete every earlier record; [`SnapshotRetention`] deletes
//! the previous file once the driver reports the checkpoint durable
//! ([`common::Node::checkpoints_durable`]). A snapshot is never taken while recovering (its
//! checkpoint would reach no driver): one due then is taken at the first step after recovery.
//!
//! # The file
//!
//! A stream of [`write_frame`] frames: a header (format, slot, the configuration in force at the
//! slot, how many session frames follow), the at-most-once session table (one frame per client,
//! then one per evicted client), then the state machine's own stream
//! ([`StateMachine::snapshot`]). The configuration and the session table are part of the
//! replicated state: functions of the compacted log, they travel with the state machine.
//!
//! # Recovery
//!
//! Recovery opens the file the latest checkpoint names with a [`SnapshotReader`], reads the
//! header and session table, restores the state machine from the rest, and reads to the end so
//! the length and CRC32C are checked whatever the state machine read. A durable state machine
//! whose [`StateMachine::applied_index`] is at or past the snapshot's slot is not restored (the
//! header is still read and the whole file still checked). A missing file is
//! [`PaxosError::SnapshotMissing`], one that does not match its checksum or does not decode
//! [`PaxosError::SnapshotCorrupt`], one that cannot be read [`PaxosError::SnapshotIo`]: recovery fails,
//! it never panics or starts from a wrong state. Every other file in the store is deleted
//! ([`SnapshotRetention::recovered`]).
//!
//! [`SnapshotRetention`]: common::snapshot::SnapshotRetention
//! [`SnapshotRetention::recovered`]: common::snapshot::SnapshotRetention::recovered
//!
//! # Installing a received snapshot
//!
//! A replica behind a peer's compacted prefix receives the peer's latest file in chunks
//! (`transfer.rs`) into its own store. Once the file matched the announced digest, its header
//! is read and the whole file checked again (a file that does not check changes nothing and is
//! deleted); then the state machine restores from it in place (one over a database may not be
//! opened twice), the session table and configuration are adopted, the log before the slot is
//! dropped, and a checkpoint names the file. If the state machine fails part-way, its state is
//! unknown: the replica applies, answers and snapshots nothing until a later snapshot restores
//! cleanly.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use common::snapshot::{
    SnapshotError, SnapshotFile, SnapshotReader, SnapshotRetention, SnapshotSource, SnapshotStore,
    SnapshotWriter,
};
use common::state_machine::{read_frame, write_frame, StateMachineError, FRAME_BYTES_MAX};
use common::{NodeId, Outbox};
use serde::{Deserialize, Serialize};

use crate::error::PaxosError;
use crate::message::{Membership, PromisedEntry, Record, Slot};
use crate::state_machine::{SessionRecord, Sessions, StateMachine};

use super::{transfer, PaxosNode, Response};

/// The version of the snapshot format below.
const SNAPSHOT_FORMAT: u32 = 1;
/// The largest header frame accepted (64 members and a few numbers fit many times over).
const HEADER_BYTES_MAX: usize = 64 * 1024;

/// The first frame of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// [`SNAPSHOT_FORMAT`].
    format: u32,
    /// The first slot the snapshot does not cover.
    slot: Slot,
    /// The configuration in force at `slot`.
    membership: Membership,
    /// Session frames that follow.
    sessions: u64,
    /// Evicted-client frames that follow the sessions.
    evicted: u64,
}

/// What a snapshot holds besides the state machine's own stream.
pub(crate) struct Replicated<O> {
    pub membership: Membership,
    pub sessions: Sessions<O>,
}

/// Writes a replica's snapshot of slot `slot` to `out`: header, session table, state machine.
pub(crate) fn write_snapshot<S: StateMachine>(
    out: &mut dyn Write,
    slot: Slot,
    membership: &Membership,
    sessions: &Sessions<S::Output>,
    state: &S,
) -> Result<(), StateMachineError> {
    let (n_sessions, n_evicted) = sessions.counts();
    write_frame(
        out,
        &Header {
            format: SNAPSHOT_FORMAT,
            slot,
            membership: membership.clone(),
            sessions: n_sessions,
            evicted: n_evicted,
        },
    )?;
    for entry in sessions.entries() {
        write_frame(out, &entry)?;
    }
    for entry in sessions.evicted() {
        write_frame(out, &entry)?;
    }
    state.snapshot(out)
}

/// Reads the header and session table of a snapshot that must be of slot `slot`, leaving
/// `input` at the start of the state machine's stream. The bytes are untrusted: anything that
/// does not decode or contradicts itself is [`StateMachineError::Malformed`].
pub(crate) fn read_replicated<O: Clone + serde::de::DeserializeOwned>(
    input: &mut dyn Read,
    slot: Slot,
    sessions_max: usize,
) -> Result<Replicated<O>, StateMachineError> {
    let malformed = |why: String| StateMachineError::Malformed(why);
    let header: Header =
        read_frame(input, HEADER_BYTES_MAX)?.ok_or_else(|| malformed("empty snapshot".into()))?;
    if header.format != SNAPSHOT_FORMAT {
        return Err(malformed(format!(
            "snapshot format {} (this replica reads {SNAPSHOT_FORMAT})",
            header.format
        )));
    }
    if header.slot != slot {
        return Err(malformed(format!(
            "snapshot of slot {} where slot {slot} was expected",
            header.slot
        )));
    }
    if header.membership.start > slot
        || crate::config::validate_members(&header.membership.members).is_err()
    {
        return Err(malformed(format!(
            "invalid configuration {:?}",
            header.membership
        )));
    }
    let mut sessions = Sessions::new(sessions_max);
    for _ in 0..header.sessions {
        let entry: SessionRecord<O> = read_frame(input, FRAME_BYTES_MAX)?
            .ok_or_else(|| malformed("snapshot ends inside the session table".into()))?;
        sessions.import_entry(entry);
    }
    for _ in 0..header.evicted {
        let (client, seq): (u64, u64) = read_frame(input, HEADER_BYTES_MAX)?
            .ok_or_else(|| malformed("snapshot ends inside the session table".into()))?;
        sessions.import_evicted(client, seq);
    }
    Ok(Replicated {
        membership: header.membership,
        sessions,
    })
}

/// The replica's latest snapshot: the one its latest checkpoint names (or is about to), kept
/// open so that catch-up reads it even after retention deleted the file.
pub(crate) struct LocalSnapshot {
    /// The first slot it does not cover.
    pub slot: Slot,
    /// The file in the store.
    pub file: SnapshotFile,
    /// The file, opened.
    pub source: Arc<dyn SnapshotSource>,
}

/// The replica's snapshots: where they are stored, the latest one, and the transfers to and
/// from peers.
pub(crate) struct Snapshots {
    /// Where snapshot files live (the driver's [`common::Storage::snapshots`]).
    pub store: Arc<dyn SnapshotStore>,
    /// Which snapshot files checkpoints still need.
    pub retention: SnapshotRetention,
    /// The snapshot the latest checkpoint names, opened.
    pub latest: Option<LocalSnapshot>,
    /// After a failed snapshot, the next is not attempted before this slot is applied.
    pub retry_at: Slot,
    /// Snapshots being sent to peers behind our compacted prefix.
    pub outgoing: BTreeMap<NodeId, transfer::Outgoing>,
    /// The snapshot being received, if any.
    pub incoming: Option<transfer::Incoming>,
}

impl Snapshots {
    /// No snapshot yet, in `store`.
    pub(crate) fn new(store: Arc<dyn SnapshotStore>) -> Self {
        Snapshots {
            store,
            retention: SnapshotRetention::default(),
            latest: None,
            retry_at: 0,
            outgoing: BTreeMap::new(),
            incoming: None,
        }
    }
}

/// Where reading a stored snapshot failed, for the error it becomes.
enum ReadFailure {
    /// The file is not in the store.
    Missing,
    /// Its length or checksum does not match, or its content does not decode.
    Corrupt(String),
    /// The store could not be read.
    Io(String),
    /// The state machine refused it for a reason of its own.
    StateMachine(String),
}

impl ReadFailure {
    fn from_snapshot(e: SnapshotError) -> Self {
        match e {
            SnapshotError::NotFound(_) => ReadFailure::Missing,
            SnapshotError::Io { .. } => ReadFailure::Io(e.to_string()),
            SnapshotError::StateMachine(e) => ReadFailure::from_state_machine(e),
            other => ReadFailure::Corrupt(other.to_string()),
        }
    }

    fn from_state_machine(e: StateMachineError) -> Self {
        match e {
            // A checksum or length mismatch found by the reader surfaces as invalid data.
            StateMachineError::Io(e) => ReadFailure::from_io(e),
            StateMachineError::Malformed(why) => ReadFailure::Corrupt(why),
            StateMachineError::Other(e) => ReadFailure::StateMachine(e.to_string()),
        }
    }

    fn from_io(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                ReadFailure::Corrupt(e.to_string())
            }
            _ => ReadFailure::Io(e.to_string()),
        }
    }

    /// The recovery error for the snapshot `file` of slot `slot`.
    fn into_error(self, slot: Slot, file: SnapshotFile) -> PaxosError {
        match self {
            ReadFailure::Missing => PaxosError::SnapshotMissing {
                slot,
                id: file.id.0,
            },
            ReadFailure::Corrupt(reason) => PaxosError::SnapshotCorrupt { slot, reason },
            ReadFailure::Io(reason) => PaxosError::SnapshotIo { slot, reason },
            ReadFailure::StateMachine(why) => PaxosError::StateMachine(why),
        }
    }
}

/// A stored snapshot's header and the opened file.
type Loaded<O> = (Replicated<O>, Arc<dyn SnapshotSource>);

/// Reads the snapshot `file` of slot `slot` from `store`: its header and session table, then
/// (with `state`) restores the state machine from the rest, then reads to the end so the
/// checksum is checked whatever the state machine read. Returns what the header holds and the
/// opened file.
fn read_snapshot_file<S: StateMachine>(
    store: &dyn SnapshotStore,
    slot: Slot,
    file: SnapshotFile,
    sessions_max: usize,
    state: Option<&mut S>,
) -> Result<Loaded<S::Output>, ReadFailure> {
    let source = store.open(file.id).map_err(ReadFailure::from_snapshot)?;
    let mut reader =
        SnapshotReader::new(source.clone(), file).map_err(ReadFailure::from_snapshot)?;
    let replicated = read_replicated(&mut reader, slot, sessions_max)
        .map_err(ReadFailure::from_state_machine)?;
    if let Some(state) = state {
        state
            .restore(&mut reader)
            .map_err(ReadFailure::from_state_machine)?;
    }
    io::copy(&mut reader, &mut io::sink()).map_err(ReadFailure::from_io)?;
    Ok((replicated, source))
}

impl<S: StateMachine> PaxosNode<S> {
    /// Recovery: loads the snapshot `file` of slot `slot` that the checkpoint names. The state
    /// machine is restored from it unless it is durable and already at or past `slot`; the
    /// header (configuration and session table) is read either way, and the whole file is
    /// checked against its checksum. A missing, corrupt or unreadable file is an error: the
    /// state it holds exists nowhere else on this replica.
    pub(crate) fn recover_snapshot(
        &mut self,
        slot: Slot,
        file: SnapshotFile,
        out: &mut Outbox<Self>,
    ) -> Result<(), PaxosError> {
        let restore = self.learner.state.applied_index() < slot;
        let (replicated, source) = read_snapshot_file(
            &*self.snapshots.store,
            slot,
            file,
            self.shared.config.sessions_max,
            restore.then_some(&mut self.learner.state),
        )
        .map_err(|f| f.into_error(slot, file))?;
        if restore {
            self.learner.state.applied(slot);
        }
        self.learner.sessions = replicated.sessions;
        self.learner.applied = slot;
        self.adopt_membership(replicated.membership, out);
        self.snapshots.latest = Some(LocalSnapshot { slot, file, source });
        Ok(())
    }

    /// Writes the current state (at `applied`) into a new snapshot file.
    fn write_snapshot_file(&self) -> Result<LocalSnapshot, SnapshotError> {
        let store = &*self.snapshots.store;
        let mut writer = SnapshotWriter::create(store, self.shared.config.snapshot_bytes_max)?;
        write_snapshot(
            &mut writer,
            self.learner.applied,
            &self.shared.membership,
            &self.learner.sessions,
            &self.learner.state,
        )?;
        let file = writer.finish()?;
        match store.open(file.id) {
            Ok(source) => Ok(LocalSnapshot {
                slot: self.learner.applied,
                file,
                source,
            }),
            Err(e) => {
                let _ = store.remove(file.id);
                Err(e)
            }
        }
    }

    /// Asks for a checkpoint of everything durable, naming `snapshot` (of slot `applied`), and
    /// makes it the snapshot catch-up serves.
    fn checkpoint(&mut self, snapshot: LocalSnapshot, out: &mut Outbox<Self>) {
        debug_assert_eq!(snapshot.slot, self.learner.applied);
        let slot = snapshot.slot;
        let accepted = self
            .shared
            .log
            .iter_from(slot)
            .map(|(s, e)| PromisedEntry {
                slot: s,
                ballot: e.ballot,
                value: e.value.clone(),
            })
            .collect();
        out.checkpoint(Record::Snapshot {
            slot,
            file: snapshot.file,
            promised: self.acceptor.promised,
            decided: self.shared.log.decided,
            accepted,
        });
        // The checkpoint holds the decided prefix.
        self.shared.commit_unlogged = None;
        self.shared.records_asked += 1;
        self.snapshots
            .retention
            .checkpointed(Some(snapshot.file.id));
        self.snapshots.latest = Some(snapshot);
    }

    /// Takes a snapshot and compacts the log once enough applied slots accumulated. Not while
    /// recovering (the checkpoint would go nowhere; the first step after recovery takes it) nor
    /// while a durable state machine is ahead of the session table (its state is not the state
    /// at `applied`). After a failure (the store, the size limit or the state machine), the
    /// next attempt waits for another interval of slots.
    pub(crate) fn maybe_snapshot(&mut self, out: &mut Outbox<Self>) {
        let interval = self.shared.config.snapshot_interval_slots;
        let held = self.learner.applied.saturating_sub(self.shared.log.start());
        let by_slots = interval != 0 && held >= interval;
        let bytes_max = self.shared.config.snapshot_log_bytes_max;
        let by_bytes = bytes_max != 0 && held > 0 && self.learner.log_bytes >= bytes_max;
        if !(by_slots || by_bytes)
            || self.learner.recovering
            || self.learner.state_invalid
            || self.learner.applied < self.learner.sm_applied
            || self.learner.applied < self.snapshots.retry_at
        {
            return;
        }
        match self.write_snapshot_file() {
            Ok(snapshot) => {
                self.checkpoint(snapshot, out);
                self.shared.log.compact(self.learner.applied);
                self.learner.log_bytes = 0;
            }
            Err(e) => {
                self.shared.counters.snapshot_failures += 1;
                self.snapshots.retry_at = self.learner.applied.saturating_add(interval.max(1));
                tracing::warn!(id = self.shared.config.id, slot = self.learner.applied, error = %e, "paxos: snapshot failed");
            }
        }
    }

    /// Installs the received, finished snapshot `file` of slot `slot`: checks it, restores the
    /// state machine from it in place, adopts its session table and configuration, and
    /// checkpoints it. If the file does not check, nothing of this replica changes and the file
    /// is deleted; if the state machine fails part-way through restoring it, its state is
    /// unknown and the replica applies, answers and snapshots nothing until a later snapshot
    /// restores cleanly.
    pub(crate) fn install(
        &mut self,
        from: NodeId,
        slot: Slot,
        file: SnapshotFile,
        out: &mut Outbox<Self>,
    ) {
        if slot <= self.shared.log.decided {
            self.snapshots
                .retention
                .discard(&*self.snapshots.store, file.id);
            return; // we learned all of it meanwhile
        }
        // The file matched its sender's checksum on arrival; read its header and check it
        // whole once more before touching anything.
        let store = &*self.snapshots.store;
        let checked =
            read_snapshot_file::<S>(store, slot, file, self.shared.config.sessions_max, None)
                .and_then(|_| {
                    // Restore in place: a state machine may own files (a database) that only
                    // one instance can open at a time.
                    read_snapshot_file(
                        store,
                        slot,
                        file,
                        self.shared.config.sessions_max,
                        Some(&mut self.learner.state),
                    )
                    .inspect_err(|_| self.learner.state_invalid = true)
                });
        let (replicated, source) = match checked {
            Ok(loaded) => loaded,
            Err(failure) => {
                let e = failure.into_error(slot, file);
                tracing::debug!(id = self.shared.config.id, from, error = %e, "paxos: bad snapshot");
                self.shared.counters.snapshots_rejected += 1;
                self.shared.reject("snapshot does not load", from);
                self.snapshots
                    .retention
                    .discard(&*self.snapshots.store, file.id);
                return;
            }
        };
        self.learner.state_invalid = false;
        self.learner.state.applied(slot);
        self.learner.sessions = replicated.sessions;
        self.learner.applied = slot;
        self.learner.sm_applied = slot;
        self.adopt_membership(replicated.membership, out);
        self.shared.log.install(slot);
        self.learner.log_bytes = 0;
        self.shared.counters.snapshots_installed += 1;
        self.checkpoint(LocalSnapshot { slot, file, source }, out);
        // Proposals of ours in the covered slots: their fate is unknown to us now.
        while let Some(requests) = self.learner.pending.take_below(slot) {
            for id in requests {
                out.respond(id, Response::Failed(PaxosError::LeadershipLost));
            }
        }
        self.apply_decided(out);
        if self.learner.commit_hint > self.shared.log.decided {
            self.learner.catch_up.cooldown = 0;
            self.request_catch_up(from, out);
        }
    }
}
