//! Wire messages, durable records and the values decided in slots.
//!
//! Everything here crosses the network or the disk, so a receiver treats every field as
//! untrusted: ballots may be stale or name a non-member, slots may lie far outside the window,
//! vectors may be longer than any honest sender would make them. The core checks each of these
//! before acting (see [`crate::Metrics::rejected`]).

use std::ops::Deref;
use std::sync::Arc;

use common::snapshot::{SnapshotDigest, SnapshotFile};
use common::NodeId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A position in the replicated log. Slot 0 is the first one.
pub type Slot = u64;

/// A ballot (the paper's "proposal number"), ordered first by `epoch`, then `round`, then
/// `leader`.
///
/// Two proposers never use the same ballot because the node id breaks ties, and a node never
/// reuses a round after a restart because its own acceptor durably promised every ballot it
/// led with before it sent anything under it. The `epoch` names the configuration (set of
/// acceptors) the ballot belongs to: every ballot of configuration `e + 1` is above every ballot
/// of configuration `e`, and an acceptor takes part only in ballots of the configuration it is
/// in (see the crate documentation, "Reconfiguration").
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The configuration the ballot belongs to, compared first.
    pub epoch: u64,
    /// The round, compared second.
    pub round: u64,
    /// The node that owns this ballot (the proposer/leader that may use it), compared last.
    pub leader: NodeId,
}

impl Ballot {
    /// The ballot below every real one: nothing was promised yet.
    pub const ZERO: Ballot = Ballot {
        epoch: 0,
        round: 0,
        leader: 0,
    };

    /// A ballot of `round` owned by `leader`, in the first configuration (epoch 0).
    pub const fn new(round: u64, leader: NodeId) -> Self {
        Ballot {
            epoch: 0,
            round,
            leader,
        }
    }

    /// A ballot of `round` owned by `leader` in configuration `epoch`.
    pub const fn in_epoch(epoch: u64, round: u64, leader: NodeId) -> Self {
        Ballot {
            epoch,
            round,
            leader,
        }
    }
}

// Written by hand so that ballots of the first configuration print as they always did (the
// committed sequence diagrams show them); later epochs print their epoch first.
impl std::fmt::Debug for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Ballot");
        if self.epoch != 0 {
            d.field("epoch", &self.epoch);
        }
        d.field("round", &self.round)
            .field("leader", &self.leader)
            .finish()
    }
}

impl std::fmt::Display for Ballot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.epoch == 0 {
            write!(f, "({}, {})", self.round, self.leader)
        } else {
            write!(f, "({}:{}, {})", self.epoch, self.round, self.leader)
        }
    }
}

/// A configuration: which acceptors decide the slots from `start` on.
///
/// Configuration 0 is [`crate::Config::members`] from slot 0. A [`Value::StopSign`] chosen in
/// slot `s` of configuration `e` ends it; configuration `e + 1` starts at slot `s + 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The configuration's number (the `epoch` of its ballots).
    pub epoch: u64,
    /// The first slot it decides.
    pub start: Slot,
    /// Its acceptors (every one also runs the election and learns).
    pub members: Vec<NodeId>,
}

impl Membership {
    /// How many acceptors form a majority of this configuration.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// Whether `node` is one of its acceptors.
    pub fn contains(&self, node: NodeId) -> bool {
        self.members.contains(&node)
    }
}

/// A client session: a client id and the client's sequence number for one command.
///
/// A client retries a command with the same session, so the replicated state machine can apply
/// it at most once and hand the retry the original output (integrity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Session {
    /// The client, unique among all clients of the cluster.
    pub client: u64,
    /// The client's sequence number for this command; a client numbers its commands 1, 2, ...
    pub seq: u64,
}

/// One client command as it is decided in a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command<C> {
    /// The client session, for at-most-once application; `None` for a command that needs no
    /// deduplication.
    pub session: Option<Session>,
    /// The state machine's command.
    pub payload: C,
}

/// What a slot decides: a batch of commands, a no-op that fills a hole, or a stop-sign that
/// ends the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value<C> {
    /// Fills a slot that a new leader found empty in every promise it gathered, so later slots
    /// can be applied.
    Noop,
    /// Commands batched into one slot by the leader that created the batch.
    Batch {
        /// The ballot of the leader that created this batch. A batch keeps this tag when a later
        /// leader re-proposes it, which lets the creator recognise its own batch when the slot is
        /// decided and answer its clients (and only its clients).
        origin: Ballot,
        /// The commands, applied in order. Shared, not copied: the leader's log, its in-flight
        /// list, its record and every follower's Accept hold the same list (on the wire and on
        /// disk it is encoded as a plain sequence, the same bytes as a `Vec`).
        commands: Arc<[Command<C>]>,
    },
    /// Ends the current configuration: once chosen in slot `s`, no later slot is decided by the
    /// current acceptors, and configuration `epoch` with `members` decides slots `s + 1 ..`.
    StopSign {
        /// The next configuration's number (the current one plus one).
        epoch: u64,
        /// The next configuration's acceptors.
        members: Vec<NodeId>,
    },
}

impl<C> Value<C> {
    /// The number of client commands in this value.
    pub fn commands_len(&self) -> usize {
        match self {
            Value::Noop | Value::StopSign { .. } => 0,
            Value::Batch { commands, .. } => commands.len(),
        }
    }
}

/// The values of a run of consecutive slots, one per slot, as [`Message::Accept`] and
/// [`Record::Accept`] carry them: a list that is cheap to clone, read as a `&[Value]` (it
/// derefs to one).
///
/// The leader's Accept and its record, and every follower's copy of the Accept, hold the same
/// run. A run of one value, what a leader sends while commands arrive one at a time, holds that
/// value inline, and a clone clones the value (for a batch, one reference count), so the run
/// allocates nothing of its own. A longer run shares one `Arc<[Value]>`.
///
/// Either way it is encoded as a plain sequence, the same bytes as a `Vec<Value>` or an
/// `Arc<[Value]>`, and decoded as a `Vec` is, with the same limits on what a length prefix may
/// claim. Two runs are equal when their values are, whatever form holds them.
#[derive(Clone)]
pub struct Values<C>(Held<C>);

/// How a [`Values`] holds its values.
#[derive(Clone)]
enum Held<C> {
    /// A run of one slot.
    One(Value<C>),
    /// A run of any other length (a leader never proposes an empty one, but a peer may send
    /// it), or one handed over already shared.
    Shared(Arc<[Value<C>]>),
}

impl<C> Deref for Values<C> {
    type Target = [Value<C>];

    fn deref(&self) -> &[Value<C>] {
        match &self.0 {
            Held::One(value) => std::slice::from_ref(value),
            Held::Shared(values) => values,
        }
    }
}

impl<C> From<Value<C>> for Values<C> {
    fn from(value: Value<C>) -> Self {
        Values(Held::One(value))
    }
}

impl<C> From<Arc<[Value<C>]>> for Values<C> {
    fn from(values: Arc<[Value<C>]>) -> Self {
        Values(Held::Shared(values))
    }
}

impl<C> From<Vec<Value<C>>> for Values<C> {
    fn from(values: Vec<Value<C>>) -> Self {
        match <[Value<C>; 1]>::try_from(values) {
            Ok([value]) => value.into(),
            Err(values) => Values(Held::Shared(values.into())),
        }
    }
}

impl<C: Clone> From<&[Value<C>]> for Values<C> {
    fn from(values: &[Value<C>]) -> Self {
        match values {
            [value] => value.clone().into(),
            _ => Values(Held::Shared(values.into())),
        }
    }
}

/// Collects into a `Vec` first; a run gathered in a list of its own converts from it.
impl<C> FromIterator<Value<C>> for Values<C> {
    fn from_iter<I: IntoIterator<Item = Value<C>>>(values: I) -> Self {
        values.into_iter().collect::<Vec<_>>().into()
    }
}

impl<C: PartialEq> PartialEq for Values<C> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<C: Eq> Eq for Values<C> {}

/// Printed as a list, as the slice it derefs to.
impl<C: std::fmt::Debug> std::fmt::Debug for Values<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<C: Serialize> Serialize for Values<C> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, C: Deserialize<'de>> Deserialize<'de> for Values<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through `Vec`'s own decoding, which never trusts the claimed length for its first
        // allocation.
        Vec::<Value<C>>::deserialize(deserializer).map(Values::from)
    }
}

/// One accepted entry reported in a promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromisedEntry<C> {
    /// The slot.
    pub slot: Slot,
    /// The ballot under which the acceptor accepted `value`.
    pub ballot: Ballot,
    /// The accepted value.
    pub value: Value<C>,
}

/// Messages between replicas.
///
/// Every replica plays all three roles of the paper (proposer, acceptor, learner) and runs the
/// leader election, so every message goes from one replica to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<C> {
    // ---- leader election (failure detection) ----
    /// Leader election: "are you there?", once per heartbeat round.
    Heartbeat {
        /// The sender's heartbeat round, echoed in the reply.
        round: u64,
    },
    /// Leader election: the answer to [`Message::Heartbeat`].
    HeartbeatReply {
        /// The round being answered.
        round: u64,
        /// The replier's own candidacy ballot.
        ballot: Ballot,
        /// Whether the replier heard a majority (itself included) in its last round.
        quorum_connected: bool,
        /// The leader the replier follows.
        leader: Ballot,
        /// Whether the replier heard that leader directly, quorum-connected, in its last round.
        leader_alive: bool,
        /// The replier's first undecided slot, so a lagging replica notices it must catch up.
        decided: Slot,
    },

    // ---- phase 1 ----
    /// Phase 1a: "promise not to accept ballots below `ballot`, and tell me what you accepted in
    /// slots `from_slot` and later".
    Prepare {
        /// The proposer's ballot.
        ballot: Ballot,
        /// The proposer's first undecided slot.
        from_slot: Slot,
    },
    /// Phase 1b: the promise, with every value the acceptor accepted from `from_slot` on.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// The acceptor's first undecided slot: entries below it are known to be chosen.
        decided: Slot,
        /// Accepted entries from the prepare's `from_slot` on, in slot order.
        accepted: Vec<PromisedEntry<C>>,
    },

    // ---- phase 2 ----
    /// Phase 2a: "accept `values` in slots `slot`, `slot + 1`, ... under `ballot`"; also carries
    /// the leader's commit index (every slot below `commit` is chosen).
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The first slot of the run.
        slot: Slot,
        /// One value per slot (shared with the leader's record and the other followers'
        /// copies; encoded as a plain sequence).
        values: Values<C>,
        /// The leader's commit index.
        commit: Slot,
    },
    /// Phase 2b: the acceptor accepted slots `slot .. slot + count` under `ballot`.
    Accepted {
        /// The ballot accepted.
        ballot: Ballot,
        /// The first slot.
        slot: Slot,
        /// How many consecutive slots.
        count: u64,
    },
    /// Decision: every slot below `commit` is chosen, and the values this leader proposed in
    /// them are the chosen ones.
    Commit {
        /// The leader's ballot.
        ballot: Ballot,
        /// The commit index.
        commit: Slot,
    },
    /// A prepare, accept or read probe under `ballot` was refused because the acceptor already
    /// promised the higher `promised`.
    Nack {
        /// The refused ballot.
        ballot: Ballot,
        /// The acceptor's promise.
        promised: Ballot,
    },

    // ---- linearizable reads ----
    /// "Do you still hold my ballot as your promise?" (one round confirms leadership for every
    /// read that arrived before it).
    ReadProbe {
        /// The leader's ballot.
        ballot: Ballot,
        /// The leader's read round.
        round: u64,
    },
    /// The acceptor's promise is still `ballot`.
    ReadAck {
        /// The confirmed ballot.
        ballot: Ballot,
        /// The read round being answered.
        round: u64,
    },

    // ---- catch-up ----
    /// "Send me the chosen values from `from_slot` on."
    CatchUpRequest {
        /// The requester's first undecided slot.
        from_slot: Slot,
    },
    /// Chosen values of slots `from_slot ..`.
    CatchUp {
        /// The first slot.
        from_slot: Slot,
        /// One chosen value per slot.
        values: Vec<Value<C>>,
    },
    /// Catch-up for a replica behind the sender's compacted prefix, by snapshot: bytes
    /// `offset .. offset + data.len()` of the sender's latest snapshot file, the state after
    /// applying every slot below `slot`. A snapshot travels as many chunks of at most
    /// [`Config::snapshot_chunk_bytes_max`](crate::Config::snapshot_chunk_bytes_max) bytes,
    /// with at most [`Config::snapshot_chunks_in_flight_max`](crate::Config::snapshot_chunks_in_flight_max)
    /// unacknowledged chunks in flight.
    SnapshotChunk {
        /// The first slot the snapshot does not cover.
        slot: Slot,
        /// The whole file's length and CRC32C, checked by the receiver before it installs it.
        digest: SnapshotDigest,
        /// Where in the file `data` starts.
        offset: u64,
        /// The bytes (encoded as one run of bytes, not byte by byte).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The receiver's answer to a [`Message::SnapshotChunk`]: where the sender must go on. A
    /// chunk lost, duplicated or reordered shows up as an offset the sender already sent, and
    /// it resends from there.
    SnapshotAck {
        /// The snapshot's slot (the chunk's).
        slot: Slot,
        /// The receiver holds every byte below this offset: the next chunk must start here.
        next_offset: u64,
        /// The receiver needs no more of this snapshot: it installed it, already knows every
        /// slot it covers, or refused it (it then asks for catch-up again later).
        done: bool,
    },
}

/// What a replica persists. Replayed, in order, by [`common::Node::recover`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<C> {
    /// The acceptor promised `ballot` (durable before the promise is sent).
    Promise(Ballot),
    /// The acceptor accepted `values` in slots `slot ..` under `ballot` (durable before the
    /// `Accepted` reply is sent).
    Accept {
        /// The ballot.
        ballot: Ballot,
        /// The first slot.
        slot: Slot,
        /// One value per slot (the Accept message's own run when it was accepted whole).
        values: Values<C>,
    },
    /// Every slot below `decided` is chosen and the log holds its chosen value. Written lazily,
    /// since nothing a replica sends claims it: with the replica's next record at most once a
    /// tick, at a tick when none rode since the one before, before a `Learn` record that
    /// extends the prefix, and at once when the prefix chose a stop-sign. A crash may lose the
    /// latest one; the replica then relearns that part of the chosen prefix from the leader.
    Commit {
        /// The first undecided slot.
        decided: Slot,
    },
    /// Chosen values learned from a peer (catch-up) for slots `from_slot ..`.
    Learn {
        /// The first slot.
        from_slot: Slot,
        /// One chosen value per slot.
        values: Vec<Value<C>>,
    },
    /// A checkpoint (written with [`common::Outbox::checkpoint`], so storage drops every record
    /// before it): everything the replica must remember, with the slots below `slot` compacted
    /// into a snapshot file in the replica's snapshot store ([`common::Storage::snapshots`]).
    /// The record names the file; it is as small as the state is large.
    Snapshot {
        /// The first slot the snapshot does not cover.
        slot: Slot,
        /// The snapshot file (configuration, session table and state machine at `slot`), with
        /// its length and checksum.
        file: SnapshotFile,
        /// The acceptor's promise.
        promised: Ballot,
        /// First slot not known to be chosen (at least `slot`).
        decided: Slot,
        /// Every entry the acceptor holds from `slot` on, with its ballot.
        accepted: Vec<PromisedEntry<C>>,
    },
}

#[cfg(test)]
mod tests {
    use common::codec::{Bincode, Codec, CodecError};

    use super::*;

    fn batch(commands: &[u64]) -> Value<u64> {
        Value::Batch {
            origin: Ballot::new(3, 2),
            commands: commands
                .iter()
                .map(|&payload| Command {
                    session: Some(Session {
                        client: 7,
                        seq: payload,
                    }),
                    payload,
                })
                .collect(),
        }
    }

    fn stop_sign() -> Value<u64> {
        Value::StopSign {
            epoch: 1,
            members: vec![1, 2, 4],
        }
    }

    /// Whichever form holds a run, its bytes are those of the same values in a `Vec` (and so of
    /// the `Arc<[Value]>` the field used to be), and they decode back to an equal run; a run of
    /// one value decodes to the inline form.
    #[test]
    fn a_run_encodes_as_a_plain_sequence_in_either_form() {
        let runs: Vec<Vec<Value<u64>>> = vec![
            vec![batch(&[1])],
            vec![batch(&[1, 2, 3])],
            vec![Value::Noop],
            vec![stop_sign()],
            vec![batch(&[1]), Value::Noop, batch(&[2, 3]), stop_sign()],
            vec![],
        ];
        for list in runs {
            let expected = Bincode.encode(&list).unwrap();
            let shared: Arc<[Value<u64>]> = list.clone().into();
            assert_eq!(Bincode.encode(&shared).unwrap(), expected);
            let forms = [
                Values::from(list.clone()),
                Values::from(shared),
                Values::from(list.as_slice()),
                list.iter().cloned().collect(),
            ];
            for run in forms {
                assert_eq!(*run, *list);
                assert_eq!(Bincode.encode(&run).unwrap(), expected, "{run:?}");
                let back: Values<u64> = Bincode.decode(&expected).unwrap();
                assert_eq!(back, run);
                assert_eq!(matches!(back.0, Held::One(_)), list.len() == 1);
            }
        }
    }

    /// The bytes themselves, written out: a length of one, then the value. A run held inline
    /// that forgot its length prefix, or wrote a second one, fails here.
    #[test]
    fn a_one_value_run_is_a_length_then_the_value() {
        let noop: Values<u64> = Value::Noop.into();
        assert!(matches!(noop.0, Held::One(_)));
        // Sequence length 1, variant 0 (`Noop`).
        assert_eq!(Bincode.encode(&noop).unwrap(), [1, 0]);
        let accept = Message::Accept {
            ballot: Ballot::new(1, 2),
            slot: 5,
            values: noop,
            commit: 4,
        };
        // Variant 4 (`Accept`), the ballot (epoch 0, round 1, leader 2), slot 5, the run, commit 4.
        let bytes = Bincode.encode(&accept).unwrap();
        assert_eq!(bytes, [4, 0, 1, 2, 5, 1, 0, 4]);
        assert_eq!(Bincode.decode::<Message<u64>>(&bytes).unwrap(), accept);
    }

    /// A length prefix claiming far more values than the input holds is refused with an error,
    /// as for a `Vec`, instead of allocating what it claims.
    #[test]
    fn a_hostile_length_prefix_is_refused() {
        // Varint: 0xfd, then the length as a little-endian u64 (2^34 values).
        let mut bytes = vec![0xfd];
        bytes.extend_from_slice(&(1u64 << 34).to_le_bytes());
        bytes.extend_from_slice(&[0, 0, 0]);
        let err = Bincode.decode::<Values<u64>>(&bytes).unwrap_err();
        assert!(matches!(err, CodecError::Decode(_)), "{err:?}");
        assert_eq!(
            Bincode.decode::<Vec<Value<u64>>>(&bytes).unwrap_err(),
            err,
            "the same error as a Vec"
        );
    }

    /// Equal values are equal runs whatever holds them, and a run prints as a list (the
    /// committed sequence diagrams show Accepts this way).
    #[test]
    fn a_run_compares_and_prints_as_its_values() {
        let inline: Values<u64> = batch(&[9]).into();
        let shared: Values<u64> = Arc::<[Value<u64>]>::from(vec![batch(&[9])]).into();
        assert_eq!(inline, shared);
        assert_ne!(inline, Values::from(Value::Noop));
        assert_eq!(format!("{inline:?}"), format!("{:?}", [batch(&[9])]));
        assert_eq!(format!("{:?}", Values::<u64>::from(Value::Noop)), "[Noop]");
    }
}
