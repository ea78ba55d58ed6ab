//! Snapshots and log compaction, through the [`StateMachine`] trait.
//!
//! Every [`Config::snapshot_interval_slots`](crate::Config::snapshot_interval_slots) applied
//! slots, a replica encodes its state machine and session table, writes them in a
//! [`Record::Snapshot`] *checkpoint* together with the rest of its durable state (promise,
//! decided index, accepted entries from the snapshot on), and drops the log before it. Storage
//! may then delete every earlier record.
//!
//! A replica asking for slots below a peer's compacted prefix receives a
//! [`Message::Snapshot`] instead (catch-up by snapshot), installs it, checkpoints it the same
//! way, and continues with ordinary catch-up from there.

use common::codec::{Bincode, Codec};
use common::{NodeId, Outbox};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::message::{Membership, Message, PromisedEntry, Record, Slot};
use crate::state_machine::{Sessions, SessionsSnapshot, StateMachine};

use super::{Replica, Response};

/// What a snapshot's bytes hold.
#[derive(Serialize, Deserialize)]
struct SnapshotData<Snap, O> {
    state: Snap,
    sessions: SessionsSnapshot<O>,
    /// The configuration in force at the snapshot's slot (it is a function of the compacted
    /// log, so it must travel with the state).
    membership: Membership,
}

impl<S: StateMachine> Replica<S> {
    /// The current state machine and session table, encoded.
    fn encode_snapshot(&self) -> Option<Vec<u8>> {
        let data = SnapshotData {
            state: self.state.snapshot(),
            sessions: self.sessions.export(),
            membership: self.membership.clone(),
        };
        match Bincode.encode(&data) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::warn!(id = self.config.id, error = %e, "paxos: snapshot not encodable");
                None
            }
        }
    }

    /// Replaces the state machine and session table by a snapshot's (untrusted bytes), and
    /// returns the configuration it records (for the caller to adopt).
    pub(crate) fn restore_snapshot(
        &mut self,
        slot: Slot,
        data: &[u8],
    ) -> Result<Membership, Error> {
        let decoded: SnapshotData<S::Snapshot, S::Output> = Bincode
            .decode(data)
            .map_err(|e| Error::Corrupt(format!("snapshot at slot {slot}: {e}")))?;
        if decoded.membership.start > slot
            || crate::config::validate_members(&decoded.membership.members).is_err()
        {
            return Err(Error::Corrupt(format!(
                "snapshot at slot {slot}: invalid configuration {:?}",
                decoded.membership
            )));
        }
        self.state = S::restore(decoded.state);
        self.sessions = Sessions::import(decoded.sessions, self.config.sessions_max);
        self.applied = slot;
        Ok(decoded.membership)
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

    /// Takes a snapshot and compacts the log once enough applied slots accumulated.
    pub(crate) fn maybe_snapshot(&mut self, out: &mut Outbox<Self>) {
        let interval = self.config.snapshot_interval_slots;
        if interval == 0 || self.applied.saturating_sub(self.log.start()) < interval {
            return;
        }
        if let Some(data) = self.encode_snapshot() {
            self.checkpoint(data, out);
            self.log.compact(self.applied);
        }
    }

    /// Sends our current state to a peer behind our compacted prefix.
    pub(crate) fn send_snapshot(&mut self, to: NodeId, out: &mut Outbox<Self>) {
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
        let membership = match self.restore_snapshot(slot, &data) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(id = self.config.id, from, error = %e, "paxos: bad snapshot");
                self.reject("undecodable snapshot", from);
                return;
            }
        };
        self.adopt_membership(membership, out);
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
