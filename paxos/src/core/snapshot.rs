//! Snapshots and log compaction, through the [`StateMachine`] trait.
//!
//! Every [`Config::snapshot_interval_slots`](crate::Config::snapshot_interval_slots) applied
//! slots, a replica writes a snapshot of its state, writes it in a [`Record::Snapshot`]
//! *checkpoint* together with the rest of its durable state (promise, decided index, accepted
//! entries from the snapshot on), and drops the log before it. Storage may then delete every
//! earlier record.
//!
//! A snapshot is a stream of [`write_frame`] frames: a header (format, slot, the configuration
//! in force at the slot), the at-most-once session table (one frame per client, then one per
//! evicted client), then the state machine's own stream ([`StateMachine::snapshot`]). The
//! membership and the session table are part of the replicated state: they are functions of the
//! compacted log, so they must travel with the state machine.
//!
//! A replica asking for slots below a peer's compacted prefix receives a
//! [`Message::Snapshot`] instead (catch-up by snapshot), installs it, checkpoints it the same
//! way, and continues with ordinary catch-up from there.

use std::io::{Read, Write};

use common::state_machine::{read_frame, write_frame, StateMachineError, FRAME_BYTES_MAX};
use common::{NodeId, Outbox};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::message::{Membership, Message, PromisedEntry, Record, Slot};
use crate::state_machine::{SessionRecord, Sessions, StateMachine};

use super::{Replica, Response};

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

impl<S: StateMachine> Replica<S> {
    /// The current state (at `applied`), encoded.
    fn encode_snapshot(&self) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        match write_snapshot(
            &mut bytes,
            self.applied,
            &self.membership,
            &self.sessions,
            &self.state,
        ) {
            Ok(()) => Some(bytes),
            Err(e) => {
                tracing::warn!(id = self.config.id, error = %e, "paxos: snapshot not encodable");
                None
            }
        }
    }

    /// Decodes a snapshot of slot `slot` (untrusted bytes) into a new state machine built by
    /// the factory, the session table and the configuration it records. Nothing of this replica
    /// changes: the caller installs the result.
    pub(crate) fn decode_snapshot(
        &self,
        slot: Slot,
        mut data: &[u8],
    ) -> Result<(S, Replicated<S::Output>), Error> {
        let corrupt =
            |e: StateMachineError| Error::Corrupt(format!("snapshot at slot {slot}: {e}"));
        let replicated =
            read_replicated(&mut data, slot, self.config.sessions_max).map_err(corrupt)?;
        let mut state = (self.factory)().map_err(|e| Error::StateMachine(e.to_string()))?;
        state.restore(&mut data).map_err(corrupt)?;
        Ok((state, replicated))
    }

    /// Writes a checkpoint of everything durable, with the applied prefix as a snapshot.
    fn checkpoint(&mut self, data: Vec<u8>, out: &mut Outbox<Self>) {
        let slot = self.applied;
        let accepted = self
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
            data,
            promised: self.promised,
            decided: self.log.decided,
            accepted,
        });
    }

    /// Takes a snapshot and compacts the log once enough applied slots accumulated. Not while
    /// recovering (the checkpoint would go nowhere; the first step after recovery takes it) nor
    /// while a durable state machine is ahead of the session table (its state is not the state
    /// at `applied`).
    pub(crate) fn maybe_snapshot(&mut self, out: &mut Outbox<Self>) {
        let interval = self.config.snapshot_interval_slots;
        if interval == 0
            || self.recovering
            || self.applied < self.sm_applied
            || self.applied.saturating_sub(self.log.start()) < interval
        {
            return;
        }
        if let Some(data) = self.encode_snapshot() {
            self.checkpoint(data, out);
            self.log.compact(self.applied);
        }
    }

    /// Sends our current state to a peer behind our compacted prefix.
    pub(crate) fn send_snapshot(&mut self, to: NodeId, out: &mut Outbox<Self>) {
        if self.applied < self.sm_applied {
            return; // the state machine is not at `applied` yet (see `maybe_snapshot`)
        }
        if let Some(data) = self.encode_snapshot() {
            out.send(
                to,
                Message::Snapshot {
                    slot: self.applied,
                    data,
                },
            );
        }
    }

    /// A peer's snapshot arrives: install it if it takes us further.
    pub(crate) fn on_snapshot(
        &mut self,
        from: NodeId,
        slot: Slot,
        data: Vec<u8>,
        out: &mut Outbox<Self>,
    ) {
        if slot <= self.log.decided {
            return; // we know all of it already
        }
        let (state, replicated) = match self.decode_snapshot(slot, &data) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::debug!(id = self.config.id, from, error = %e, "paxos: bad snapshot");
                self.reject("undecodable snapshot", from);
                return;
            }
        };
        self.state = state;
        self.state.applied(slot);
        self.sessions = replicated.sessions;
        self.applied = slot;
        self.sm_applied = slot;
        self.adopt_membership(replicated.membership, out);
        self.log.install(slot);
        self.counters.snapshots_installed += 1;
        self.checkpoint(data, out);
        // Proposals of ours in the covered slots: their fate is unknown to us now.
        let covered: Vec<Slot> = self.pending.range(..slot).map(|(&s, _)| s).collect();
        for s in covered {
            if let Some((_, requests)) = self.pending.remove(&s) {
                for id in requests {
                    out.respond(id, Response::Failed(Error::LeadershipLost));
                }
            }
        }
        self.apply_decided(out);
        if self.commit_hint > self.log.decided {
            self.catch_up_cooldown = 0;
            self.request_catch_up(from, out);
        }
    }
}
