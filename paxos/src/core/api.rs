//! What drivers and clients see of a replica: [`Request`]s, [`Response`]s, [`Event`]s and
//! [`Metrics`].

use common::NodeId;

use crate::error::PaxosError;
use crate::message::{Ballot, Session, Slot};

/// A client request to a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<C, Q> {
    /// Replicate `command`; answered with [`Response::Applied`] once its slot is chosen and
    /// applied here. Only the leader accepts proposals.
    Propose {
        /// The command.
        command: C,
        /// The client session for at-most-once application across retries; `None` to skip
        /// deduplication.
        session: Option<Session>,
    },
    /// A linearizable read, answered by the leader after a quorum confirms its leadership and
    /// its state machine has applied every slot proposed before the read arrived.
    Read(Q),
    /// Changes the set of acceptors to `members` (adding, removing or replacing any, this
    /// leader included) with a stop-sign; answered with [`Response::Reconfigured`] once the
    /// stop-sign is chosen and applied here, that is once `members` decide every later slot.
    /// Only the leader accepts it, one change at a time.
    Reconfigure {
        /// The next configuration's acceptors.
        members: Vec<NodeId>,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response<O> {
    /// The command was chosen in `slot` and applied; `output` is what applying it returned (for
    /// a retried command: what applying it returned the first time).
    Applied {
        /// The slot the command was applied in (for a retry answered from the session table
        /// without taking a slot: the first slot not yet applied at that moment).
        slot: Slot,
        /// The state machine's output.
        output: O,
    },
    /// The answer to a [`Request::Read`].
    Read(O),
    /// The answer to a [`Request::Reconfigure`]: the stop-sign was chosen in `slot - 1` and
    /// configuration `epoch` decides every slot from `slot` on.
    Reconfigured {
        /// The new configuration's number.
        epoch: u64,
        /// The first slot the new configuration decides.
        slot: Slot,
    },
    /// The request failed (see [`PaxosError`] for which failures leave the outcome unknown).
    Failed(PaxosError),
}

/// Notifications for observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This replica now follows (or is) a different leader.
    LeaderChanged {
        /// The leader, if any.
        leader: Option<NodeId>,
        /// Its ballot.
        ballot: Ballot,
    },
    /// This replica's heartbeat rounds have not heard a majority (itself included) for
    /// `rounds` rounds in a row, so it cannot lead and cannot depose a leader. Emitted after the
    /// first such round, then each time `rounds` doubles. Peers are down or cut off, or their
    /// round trips exceed even the longest round
    /// ([`Config::heartbeat_ticks_max`](crate::Config::heartbeat_ticks_max)): compare
    /// `rtt_ticks_max` with `round_ticks`.
    QuorumNotReached {
        /// Rounds in a row without a quorum.
        rounds: u64,
        /// The longest round trip of a heartbeat measured during those rounds (`None`: no
        /// reply at all).
        rtt_ticks_max: Option<u64>,
        /// The length of this replica's rounds now.
        round_ticks: u64,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::LeaderChanged {
                leader: Some(leader),
                ballot,
            } => write!(f, "leader is now {leader} (ballot {ballot})"),
            Event::LeaderChanged {
                leader: None,
                ballot,
            } => write!(f, "no leader (ballot {ballot})"),
            Event::QuorumNotReached {
                rounds,
                rtt_ticks_max,
                round_ticks,
            } => {
                let plural = if *rounds == 1 { "" } else { "s" };
                write!(f, "quorum not reached in {rounds} round{plural}; ")?;
                match rtt_ticks_max {
                    Some(rtt) => write!(f, "longest round trip seen {rtt} ticks")?,
                    None => write!(f, "no heartbeat reply seen")?,
                }
                write!(f, " (rounds of {round_ticks} ticks)")
            }
        }
    }
}

/// A snapshot of a replica's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// This replica.
    pub id: NodeId,
    /// The leader this replica follows, if any.
    pub leader: Option<NodeId>,
    /// Whether this replica leads (phase 1 completed, phase 2 running).
    pub is_leader: bool,
    /// The ballot of the leader this replica follows.
    pub ballot: Ballot,
    /// The highest ballot this replica's acceptor promised.
    pub promised: Ballot,
    /// First slot not known to be chosen here.
    pub decided: Slot,
    /// First slot not yet applied here.
    pub applied: Slot,
    /// Slots the leader proposed and has not seen chosen (0 on followers).
    pub in_flight: u64,
    /// Commands waiting at the leader for a slot.
    pub queued: usize,
    /// Client sessions remembered for deduplication.
    pub sessions: usize,
    /// Inputs rejected as malformed or from unknown senders.
    pub rejected: u64,
    /// Messages refused because their ballot was stale.
    pub stale: u64,
    /// Commands recognised as retries of an applied command and not applied again.
    pub duplicates: u64,
    /// Retries a leader attached to the copy of their command it already held, instead of
    /// proposing the command again.
    pub retries_attached: u64,
    /// Snapshots received from peers and installed (catch-up behind a compacted prefix).
    pub snapshots_installed: u64,
    /// Snapshots received from peers and refused: they did not match the digest the sender
    /// announced, or did not load. Nothing of them was installed.
    pub snapshots_rejected: u64,
    /// Snapshots this replica failed to write (the store, the state machine or
    /// [`Config::snapshot_bytes_max`](crate::Config::snapshot_bytes_max) refused); the log
    /// stays uncompacted until the next one succeeds.
    pub snapshot_failures: u64,
    /// The first slot still in the log (slots below were compacted into a snapshot).
    pub log_start: Slot,
    /// Size in bytes of the latest snapshot's file (0 without a snapshot).
    pub snapshot_bytes: u64,
    /// The configuration this replica is in (its number, the epoch of its ballots).
    pub epoch: u64,
    /// The acceptors of that configuration.
    pub members: Vec<NodeId>,
    /// Whether this replica is one of them (a joining or removed replica is a passive learner).
    pub is_member: bool,
    /// The length of this replica's heartbeat rounds now, between
    /// [`Config::heartbeat_ticks`](crate::Config::heartbeat_ticks) and
    /// [`Config::heartbeat_ticks_max`](crate::Config::heartbeat_ticks_max).
    pub round_ticks: u64,
    /// Whether this replica's last heartbeat round heard a majority, itself included (false
    /// before its first round ends, and on a replica outside the configuration). A
    /// quorum-connected replica follows the highest ballot it heard among quorum-connected
    /// replicas, its own included: once every replica is quorum-connected and follows the same
    /// leader, no replica's ballot is above that leader's, so none takes over until one stops
    /// hearing the leader or restarts (a restarted replica's ballot is above all it promised).
    pub quorum_connected: bool,
    /// Heartbeat rounds in a row that did not hear a majority (0 while connected; always 0 on a
    /// replica outside the configuration, which takes no part in the election).
    pub rounds_without_quorum: u64,
    /// The longest heartbeat round trip this replica measured since it started, in its ticks
    /// (0 before the first reply).
    pub rtt_ticks_max: u64,
}
