//! Catch-up by snapshot, in chunks: a replica asking for slots below a peer's compacted prefix
//! receives the peer's latest snapshot file, however large, as a stream of
//! [`Message::SnapshotChunk`]s, and installs it only once every byte arrived and matched the
//! digest the sender announced.
//!
//! # The sender
//!
//! - A [`Message::CatchUpRequest`] for a slot below the log's start starts a transfer of the
//!   latest snapshot (the file the latest checkpoint names, kept open: retention may delete the
//!   file meanwhile without disturbing it). One transfer per peer; a transfer keeps its file to
//!   the end even when a newer snapshot is taken meanwhile, so a newer snapshot does not restart
//!   it.
//! - Chunks are read with [`SnapshotSource::read_at`], at most
//!   [`Config::snapshot_chunk_bytes_max`](crate::Config::snapshot_chunk_bytes_max) bytes each,
//!   with at most [`Config::snapshot_chunks_in_flight_max`](crate::Config::snapshot_chunks_in_flight_max)
//!   chunks sent and not acknowledged (a window, go-back-N).
//! - Each [`Message::SnapshotAck`] says which offset the receiver needs next. An ack that moves
//!   it on slides the window; one that goes back (the receiver lost what it had) resends from
//!   there; one that repeats it while later chunks are out (a chunk was lost or overtaken)
//!   resends from it, once per offset. Without progress for
//!   [`Config::retransmit_ticks`](crate::Config::retransmit_ticks), the sender resends from the
//!   acknowledged offset; after [`SNAPSHOT_SEND_TIMEOUTS_MAX`] such intervals in a row it gives
//!   up (the receiver asks again if it still needs the snapshot).
//!
//! # The receiver
//!
//! - Chunks go into an [`IncomingSnapshot`] in the receiver's own store (at most
//!   [`Config::snapshot_bytes_max`](crate::Config::snapshot_bytes_max) bytes announced), strictly
//!   in order: a chunk past the offset it needs, or one it already has, is not written and is
//!   answered with the offset it needs. So loss, duplication and reordering only cost resends.
//! - One transfer at a time. While it makes progress, the receiver asks nobody else for
//!   catch-up and answers chunks of other transfers from other peers with "done"; a transfer
//!   without progress for [`SNAPSHOT_SEND_TIMEOUTS_MAX`]` + 1` retransmission intervals is
//!   dropped with what it received.
//! - Once every byte arrived, [`IncomingSnapshot::finish`] checks the length and CRC32C. A
//!   mismatch (a chunk corrupted on the way, say) discards the file, is counted
//!   in [`Metrics::snapshots_rejected`](crate::Metrics::snapshots_rejected), and the receiver
//!   answers "done": its catch-up timer asks again (the same peer or another), which starts a
//!   new transfer from offset 0. A matching file is installed (`snapshot.rs`): a new state
//!   machine restored from it, its configuration and session table adopted, and a checkpoint
//!   naming it. Nothing is installed from a partial or mismatching file.

use std::sync::Arc;

use common::snapshot::{
    IncomingSnapshot, SnapshotDigest, SnapshotFile, SnapshotSource, SnapshotStore,
};
use common::{NodeId, Outbox};

use crate::config::{MEMBERS_MAX, SNAPSHOT_SEND_TIMEOUTS_MAX};
use crate::message::{Message, Slot};
use crate::state_machine::StateMachine;

use super::PaxosNode;

/// A snapshot being sent to one peer.
pub(crate) struct Outgoing {
    /// The snapshot's slot.
    pub(crate) slot: Slot,
    /// The file (its length and checksum announced in every chunk).
    file: SnapshotFile,
    /// The file, opened.
    source: Arc<dyn SnapshotSource>,
    /// The receiver holds every byte below this.
    acked: u64,
    /// The next byte to send.
    next: u64,
    /// Ticks since `acked` last moved on (or since the transfer started).
    idle_ticks: u64,
    /// Retransmission intervals in a row without progress.
    timeouts: u64,
    /// The acknowledged offset the sender last went back to on a repeated ack.
    rewound_at: Option<u64>,
}

/// A snapshot being received.
pub(crate) struct Incoming {
    /// The peer whose chunks move it on.
    pub(crate) from: NodeId,
    /// The snapshot's slot.
    pub(crate) slot: Slot,
    /// What the sender announced.
    digest: SnapshotDigest,
    /// The bytes so far, in an unfinished file of this replica's store.
    snapshot: IncomingSnapshot,
    /// Ticks since a chunk last added bytes.
    idle_ticks: u64,
}

impl<S: StateMachine> PaxosNode<S> {
    /// Ticks without progress after which a transfer is given up (sender) or dropped
    /// (receiver, one interval later).
    fn transfer_timeout_ticks(&self) -> u64 {
        self.shared
            .config
            .retransmit_ticks
            .saturating_mul(SNAPSHOT_SEND_TIMEOUTS_MAX + 1)
    }

    /// Whether a snapshot is being received (a stalled transfer is dropped by the timer):
    /// catch-up requests wait meanwhile.
    pub(crate) fn receiving_snapshot(&self) -> bool {
        self.snapshots.incoming.is_some()
    }

    /// Starts sending our latest snapshot to `to` (a peer behind our compacted prefix), or
    /// resumes a stalled transfer from the acknowledged offset.
    pub(crate) fn send_snapshot(&mut self, to: NodeId, out: &mut Outbox<Self>) {
        let Some(latest) = &self.snapshots.latest else {
            return;
        };
        let retransmit = self.shared.config.retransmit_ticks;
        match self.snapshots.outgoing.get_mut(&to) {
            // In progress: this request crossed our chunks.
            Some(send) if send.idle_ticks < retransmit => return,
            // Stalled, and there is a newer snapshot: send that one instead.
            Some(send) if send.slot < latest.slot => {
                *send = Outgoing::new(latest.slot, latest.file, latest.source.clone());
            }
            Some(send) => send.rewind(),
            None => {
                if self.snapshots.outgoing.len() >= MEMBERS_MAX {
                    return;
                }
                let send = Outgoing::new(latest.slot, latest.file, latest.source.clone());
                self.snapshots.outgoing.insert(to, send);
            }
        }
        self.pump_snapshot(to, out);
    }

    /// Sends chunks to `to` until its window is full or the file is all sent.
    fn pump_snapshot(&mut self, to: NodeId, out: &mut Outbox<Self>) {
        let chunk_max = self.shared.config.snapshot_chunk_bytes_max as u64;
        let window = self
            .shared
            .config
            .snapshot_chunks_in_flight_max
            .saturating_mul(chunk_max);
        let Some(send) = self.snapshots.outgoing.get_mut(&to) else {
            return;
        };
        let total = send.file.bytes;
        while send.next < total && send.next - send.acked < window {
            let len = chunk_max.min(total - send.next);
            let mut data = vec![0u8; len as usize];
            if let Err(e) = read_fully(&*send.source, send.next, &mut data) {
                tracing::warn!(id = self.shared.config.id, to, error = %e, "paxos: snapshot not readable");
                self.snapshots.outgoing.remove(&to);
                return;
            }
            out.send(
                to,
                Message::SnapshotChunk {
                    slot: send.slot,
                    digest: send.file.into(),
                    offset: send.next,
                    data,
                },
            );
            send.next += len;
        }
    }

    /// The receiver says where it stands.
    pub(crate) fn on_snapshot_ack(
        &mut self,
        from: NodeId,
        slot: Slot,
        next_offset: u64,
        done: bool,
        out: &mut Outbox<Self>,
    ) {
        let Some(send) = self.snapshots.outgoing.get_mut(&from) else {
            return; // no transfer to it (finished, given up, or never started)
        };
        if send.slot != slot {
            return; // about another snapshot
        }
        if next_offset > send.file.bytes {
            self.shared.reject("snapshot ack past the end", from);
            return;
        }
        if done {
            self.snapshots.outgoing.remove(&from);
            return;
        }
        if next_offset > send.acked {
            send.acked = next_offset;
            send.next = send.next.max(next_offset);
            send.idle_ticks = 0;
            send.timeouts = 0;
        } else if next_offset < send.acked {
            // The receiver lost what it had received (it restarted, or dropped the transfer).
            send.acked = next_offset;
            send.next = next_offset;
            send.rewound_at = None;
        } else if send.next > send.acked && send.rewound_at != Some(send.acked) {
            // The offset it needs again, while later chunks are out: the chunk there was lost
            // or overtaken. Go back once per offset (the timer covers the rest).
            send.rewound_at = Some(send.acked);
            send.next = send.acked;
        }
        self.pump_snapshot(from, out);
    }

    /// A chunk of a peer's snapshot arrives.
    pub(crate) fn on_snapshot_chunk(&mut self, from: NodeId, chunk: Chunk, out: &mut Outbox<Self>) {
        let Chunk {
            slot,
            digest,
            offset,
            data,
        } = chunk;
        let ack = |out: &mut Outbox<Self>, next_offset: u64, done: bool| {
            snapshot_ack(out, from, slot, next_offset, done);
        };
        if slot <= self.shared.log.decided {
            // We know every slot it covers (installed it, or learned them meanwhile).
            if self
                .snapshots
                .incoming
                .as_ref()
                .is_some_and(|i| i.slot <= self.shared.log.decided)
            {
                self.snapshots.incoming = None;
            }
            ack(out, digest.bytes, true);
            return;
        }
        if !self.admit_transfer(from, slot, digest, out) {
            return;
        }
        let Some(mut incoming) = self.snapshots.incoming.take() else {
            return;
        };
        incoming.from = from;
        let at = incoming.snapshot.received();
        let end = offset.saturating_add(data.len() as u64);
        if offset > at || end <= at {
            // A gap (a chunk before it was lost or is late) or a duplicate: nothing to write.
            self.snapshots.incoming = Some(incoming);
            ack(out, at, false);
            return;
        }
        match incoming.snapshot.accept(offset, &data) {
            Ok(next) if !incoming.snapshot.is_complete() => {
                incoming.idle_ticks = 0;
                self.snapshots.incoming = Some(incoming);
                ack(out, next, false);
            }
            Ok(_) => match incoming.snapshot.finish() {
                Ok(file) => {
                    ack(out, digest.bytes, true);
                    self.install(from, slot, file, out);
                }
                Err(e) => self.refuse_transfer(from, slot, digest, &e, out),
            },
            Err(e) => self.refuse_transfer(from, slot, digest, &e, out),
        }
    }

    /// Makes the snapshot of `slot` announced as `digest` the one being received from `from`:
    /// continues the current transfer, or starts one. `false` if the chunk is dropped (answered
    /// as it needs: another peer's transfer is told to stop, a snapshot the store refuses too).
    fn admit_transfer(
        &mut self,
        from: NodeId,
        slot: Slot,
        digest: SnapshotDigest,
        out: &mut Outbox<Self>,
    ) -> bool {
        let timeout = self.transfer_timeout_ticks();
        let current = match &self.snapshots.incoming {
            Some(i) if i.slot == slot && i.digest == digest => true,
            // While ours progresses, another peer's transfer is told to stop, and a late chunk
            // of an older snapshot of our sender is ignored.
            Some(i) if i.idle_ticks < timeout && (i.from != from || slot < i.slot) => {
                if i.from != from {
                    snapshot_ack(out, from, slot, digest.bytes, true);
                }
                return false;
            }
            // None yet, or our sender moved on to a newer snapshot, or ours stalled.
            _ => false,
        };
        if !current {
            let store: &dyn SnapshotStore = &*self.snapshots.store;
            match IncomingSnapshot::start(store, digest, self.shared.config.snapshot_bytes_max) {
                Ok(snapshot) => {
                    self.snapshots.incoming = Some(Incoming {
                        from,
                        slot,
                        digest,
                        snapshot,
                        idle_ticks: 0,
                    });
                }
                Err(e) => {
                    tracing::debug!(id = self.shared.config.id, from, error = %e, "paxos: snapshot refused");
                    self.snapshots.incoming = None;
                    self.shared.counters.snapshots_rejected += 1;
                    self.shared.reject("snapshot refused", from);
                    snapshot_ack(out, from, slot, digest.bytes, true);
                    return false;
                }
            }
        }
        true
    }

    /// A received snapshot does not match what its sender announced: nothing is installed, the
    /// partial file is gone (dropped or discarded by `finish`), and the sender stops; the
    /// catch-up timer asks again, which starts a new transfer.
    fn refuse_transfer(
        &mut self,
        from: NodeId,
        slot: Slot,
        digest: SnapshotDigest,
        e: &common::SnapshotError,
        out: &mut Outbox<Self>,
    ) {
        tracing::debug!(id = self.shared.config.id, from, slot, error = %e, "paxos: snapshot refused");
        self.shared.counters.snapshots_rejected += 1;
        self.shared
            .reject("snapshot does not match its digest", from);
        self.snapshots.incoming = None;
        out.send(
            from,
            Message::SnapshotAck {
                slot,
                next_offset: digest.bytes,
                done: true,
            },
        );
    }

    /// The transfers' timers: a sender without progress resends from the acknowledged offset,
    /// and gives up after [`SNAPSHOT_SEND_TIMEOUTS_MAX`] intervals; a receiver drops a transfer
    /// without progress for one interval more.
    pub(crate) fn transfer_tick(&mut self, out: &mut Outbox<Self>) {
        let retransmit = self.shared.config.retransmit_ticks;
        let mut resend = Vec::new();
        self.snapshots.outgoing.retain(|&to, send| {
            send.idle_ticks += 1;
            if send.idle_ticks < retransmit {
                return true;
            }
            send.timeouts += 1;
            if send.timeouts > SNAPSHOT_SEND_TIMEOUTS_MAX {
                return false;
            }
            send.rewind();
            resend.push(to);
            true
        });
        for to in resend {
            self.pump_snapshot(to, out);
        }
        let timeout = self.transfer_timeout_ticks();
        if let Some(incoming) = self.snapshots.incoming.as_mut() {
            incoming.idle_ticks += 1;
            if incoming.idle_ticks > timeout {
                tracing::debug!(
                    id = self.shared.config.id,
                    from = incoming.from,
                    "paxos: snapshot transfer stalled"
                );
                self.snapshots.incoming = None;
            }
        }
    }
}

/// The fields of a [`Message::SnapshotChunk`].
pub(crate) struct Chunk {
    pub slot: Slot,
    pub digest: SnapshotDigest,
    pub offset: u64,
    pub data: Vec<u8>,
}

impl Outgoing {
    fn new(slot: Slot, file: SnapshotFile, source: Arc<dyn SnapshotSource>) -> Self {
        Outgoing {
            slot,
            file,
            source,
            acked: 0,
            next: 0,
            idle_ticks: 0,
            timeouts: 0,
            rewound_at: None,
        }
    }

    /// Sends again from the acknowledged offset.
    fn rewind(&mut self) {
        self.next = self.acked;
        self.idle_ticks = 0;
        self.rewound_at = None;
    }
}

/// Reads `buf.len()` bytes at `offset` (a source may return fewer per call).
fn read_fully(
    source: &dyn SnapshotSource,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), common::SnapshotError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = source.read_at(offset + filled as u64, &mut buf[filled..])?;
        if n == 0 {
            return Err(common::SnapshotError::Corrupt {
                what: "local snapshot".into(),
                reason: format!("ends at {} bytes", offset + filled as u64),
            });
        }
        filled += n;
    }
    Ok(())
}

/// Tells `to` which byte of the snapshot of `slot` this replica needs next, or that it needs
/// no more of it (`done`).
fn snapshot_ack<S: StateMachine>(
    out: &mut Outbox<PaxosNode<S>>,
    to: NodeId,
    slot: Slot,
    next_offset: u64,
    done: bool,
) {
    let ack = Message::SnapshotAck {
        slot,
        next_offset,
        done,
    };
    out.send(to, ack);
}
