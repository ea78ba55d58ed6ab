//! Configuration of a replica: a plain struct with public fields, named defaults and
//! [`Config::validate`].

use std::collections::BTreeSet;

use common::NodeId;

use crate::PaxosError;

/// Most acceptors in one configuration (acknowledgements are tracked in a 64-bit set).
pub const MEMBERS_MAX: usize = 64;
/// Default for [`Config::heartbeat_ticks`].
pub const HEARTBEAT_TICKS_DEFAULT: u64 = 2;
/// Default for [`Config::heartbeat_ticks_max`]: 64 rounds of the default length (128 ticks).
/// Rounds grow to twice the longest round trip seen, up to this cap, so the election makes
/// progress with its defaults as long as heartbeat round trips stay below 128 ticks.
pub const HEARTBEAT_TICKS_MAX_DEFAULT: u64 = 64 * HEARTBEAT_TICKS_DEFAULT;
/// Default for [`Config::election_jitter_rounds_max`].
pub const ELECTION_JITTER_ROUNDS_MAX_DEFAULT: u64 = 2;
/// Default for [`Config::retransmit_ticks`].
pub const RETRANSMIT_TICKS_DEFAULT: u64 = 4;
/// Default for [`Config::in_flight_slots_max`].
pub const IN_FLIGHT_SLOTS_MAX_DEFAULT: u64 = 128;
/// Default for [`Config::eager_slots_max`].
pub const EAGER_SLOTS_MAX_DEFAULT: u64 = 1;
/// Default for [`Config::batch_commands_max`].
pub const BATCH_COMMANDS_MAX_DEFAULT: usize = 64;
/// Default for [`Config::queue_commands_max`].
pub const QUEUE_COMMANDS_MAX_DEFAULT: usize = 16_384;
/// Default for [`Config::window_slots_max`].
pub const WINDOW_SLOTS_MAX_DEFAULT: u64 = 4_096;
/// Default for [`Config::catch_up_slots_max`].
pub const CATCH_UP_SLOTS_MAX_DEFAULT: u64 = 256;
/// Default for [`Config::sessions_max`].
pub const SESSIONS_MAX_DEFAULT: usize = 65_536;
/// Default for [`Config::snapshot_interval_slots`].
pub const SNAPSHOT_INTERVAL_SLOTS_DEFAULT: u64 = 4_096;
/// Default for [`Config::snapshot_log_bytes_max`]: 64 MiB.
pub const SNAPSHOT_LOG_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Default for [`Config::snapshot_bytes_max`]: 64 GiB.
pub const SNAPSHOT_BYTES_MAX_DEFAULT: u64 = 64 << 30;
/// Default for [`Config::snapshot_chunk_bytes_max`]: 256 KiB.
pub const SNAPSHOT_CHUNK_BYTES_MAX_DEFAULT: usize = 256 * 1024;
/// The largest allowed [`Config::snapshot_chunk_bytes_max`] (8 MiB): a chunk and its message
/// must stay well inside a transport frame (16 MiB by default).
pub const SNAPSHOT_CHUNK_BYTES_LIMIT: usize = 8 * 1024 * 1024;
/// Default for [`Config::snapshot_chunks_in_flight_max`].
pub const SNAPSHOT_CHUNKS_IN_FLIGHT_MAX_DEFAULT: u64 = 4;
/// A replica sending a snapshot resends from the last acknowledged offset every
/// [`Config::retransmit_ticks`] without an acknowledgement that moves it on, and gives up after
/// this many such intervals in a row (the receiver asks again when it still needs it). A
/// receiver drops a transfer that made no progress for one interval more.
pub const SNAPSHOT_SEND_TIMEOUTS_MAX: u64 = 8;
/// Default for [`Config::reads_pending_max`].
pub const READS_PENDING_MAX_DEFAULT: usize = 4_096;

/// Configuration of one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This replica.
    pub id: NodeId,
    /// The first configuration's acceptors (configuration 0, from slot 0): the same list on
    /// every replica, for the cluster's whole life. At most [`MEMBERS_MAX`]. A replica started
    /// later to join the cluster keeps this list and is simply not in it: it stays a passive
    /// learner until it learns a chosen configuration that includes it (see
    /// [`crate::Request::Reconfigure`]).
    pub members: Vec<NodeId>,
    /// Seed of the replica's random source (election jitter).
    pub seed: u64,
    /// Ticks per heartbeat round of the leader election at the start, and the shortest round:
    /// each replica lengthens its rounds when heartbeat replies come back late and shortens
    /// them again when they come back early, between this and [`Config::heartbeat_ticks_max`]
    /// (see the crate documentation, "Limitations"). A reply counts only within the round that
    /// asked for it, so on links that stay fast this bounds how soon a failed leader is noticed
    /// (see [`Config::election_jitter_rounds_max`]).
    pub heartbeat_ticks: u64,
    /// The longest heartbeat round: a replica whose round trips reach this many ticks cannot
    /// count any peer as connected and reports [`crate::Event::QuorumNotReached`]. Must be at
    /// least [`Config::heartbeat_ticks`]. Raising it lets the election work on slower links;
    /// rounds only grow that long where round trips need it.
    pub heartbeat_ticks_max: u64,
    /// A replica declares the leader dead after two heartbeat rounds without hearing it (a
    /// reply may be a round late) plus a random number of extra rounds in
    /// `0..=election_jitter_rounds_max`, then raises its own ballot; the jitter makes
    /// simultaneous candidates rarer (ties are broken by node id in any case). Rounds have the
    /// replica's current length, so on slow links the leader is declared dead later.
    pub election_jitter_rounds_max: u64,
    /// Ticks between retransmissions of unanswered prepares, accepts, read probes and catch-up
    /// requests.
    pub retransmit_ticks: u64,
    /// Pipelining bound: most slots a leader has proposed but not yet seen chosen.
    pub in_flight_slots_max: u64,
    /// Slots a leader fills as soon as a command arrives. With this many or more in flight, a
    /// new command waits in the queue until a slot is chosen (or a full batch of
    /// [`Config::batch_commands_max`] waits), and then goes out with the others in one slot: one
    /// Accept round for many commands under load, no added delay for a lone client. At most
    /// [`Config::in_flight_slots_max`]; set it equal to pipeline every command at once.
    pub eager_slots_max: u64,
    /// Batching bound: most client commands a leader puts into one slot.
    pub batch_commands_max: usize,
    /// The leader sends its Accepts while its own acceptor writes the same values, instead of
    /// after (the rule of Raft's §10.2.1, applied to phase 2): its own acceptance counts towards
    /// a majority only once its driver reported it durable
    /// ([`common::Node::records_durable`]), and an applied command is answered at once. Needs a
    /// driver that reports durability (the workspace's driver and simulator do); a pump that
    /// never reports it leaves the leader's acceptor out of every majority. Off by default.
    pub parallel_accept: bool,
    /// Most client commands waiting at the leader for a slot; more are refused with
    /// [`PaxosError::Busy`].
    pub queue_commands_max: usize,
    /// An acceptor refuses slots at or beyond its first undecided slot plus this window (a
    /// sender that far ahead is lying or this acceptor must catch up first). Must be at least
    /// [`Config::in_flight_slots_max`].
    pub window_slots_max: u64,
    /// Most chosen values sent in one catch-up message.
    pub catch_up_slots_max: u64,
    /// Most client sessions remembered for deduplication; the least recently used one is
    /// forgotten first (a retry of a forgotten session's command is refused, never re-applied).
    pub sessions_max: usize,
    /// Most reads waiting at the leader for a quorum round; more are refused with
    /// [`PaxosError::Busy`].
    pub reads_pending_max: usize,
    /// Take a snapshot (and compact the log before it) once this many applied slots are held
    /// in the log; 0 never compacts.
    pub snapshot_interval_slots: u64,
    /// Also take a snapshot once the commands applied since the last one add up to this many
    /// bytes ([`StateMachine::command_bytes`](crate::StateMachine::command_bytes)): a slot holds
    /// a whole batch of commands, so a count of slots alone does not bound the log's memory.
    /// 0 disables this trigger.
    pub snapshot_log_bytes_max: u64,
    /// The largest snapshot this replica writes or accepts from a peer, in bytes. A snapshot
    /// that would grow past it is not taken (the log is not compacted; counted in
    /// [`Metrics::snapshot_failures`](crate::Metrics::snapshot_failures)); one announced larger
    /// is refused before any byte is stored.
    pub snapshot_bytes_max: u64,
    /// Most bytes of a snapshot sent in one [`crate::Message::SnapshotChunk`]. At most
    /// [`SNAPSHOT_CHUNK_BYTES_LIMIT`].
    pub snapshot_chunk_bytes_max: usize,
    /// Most chunks of a snapshot in flight to one peer (sent and not acknowledged): a transfer
    /// has at most `snapshot_chunks_in_flight_max * snapshot_chunk_bytes_max` bytes on the way.
    pub snapshot_chunks_in_flight_max: u64,
}

impl Config {
    /// A configuration with default timeouts and limits, seeded with `id`.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Self {
        Config {
            id,
            members,
            seed: id,
            heartbeat_ticks: HEARTBEAT_TICKS_DEFAULT,
            heartbeat_ticks_max: HEARTBEAT_TICKS_MAX_DEFAULT,
            election_jitter_rounds_max: ELECTION_JITTER_ROUNDS_MAX_DEFAULT,
            retransmit_ticks: RETRANSMIT_TICKS_DEFAULT,
            in_flight_slots_max: IN_FLIGHT_SLOTS_MAX_DEFAULT,
            eager_slots_max: EAGER_SLOTS_MAX_DEFAULT,
            parallel_accept: false,
            batch_commands_max: BATCH_COMMANDS_MAX_DEFAULT,
            queue_commands_max: QUEUE_COMMANDS_MAX_DEFAULT,
            window_slots_max: WINDOW_SLOTS_MAX_DEFAULT,
            catch_up_slots_max: CATCH_UP_SLOTS_MAX_DEFAULT,
            sessions_max: SESSIONS_MAX_DEFAULT,
            reads_pending_max: READS_PENDING_MAX_DEFAULT,
            snapshot_interval_slots: SNAPSHOT_INTERVAL_SLOTS_DEFAULT,
            snapshot_log_bytes_max: SNAPSHOT_LOG_BYTES_MAX_DEFAULT,
            snapshot_bytes_max: SNAPSHOT_BYTES_MAX_DEFAULT,
            snapshot_chunk_bytes_max: SNAPSHOT_CHUNK_BYTES_MAX_DEFAULT,
            snapshot_chunks_in_flight_max: SNAPSHOT_CHUNKS_IN_FLIGHT_MAX_DEFAULT,
        }
    }

    /// Checks the configuration and explains what is wrong.
    pub fn validate(&self) -> Result<(), PaxosError> {
        let bad = |why: String| Err(PaxosError::Config(why));
        validate_members(&self.members)?;
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat_ticks must be at least 1".into());
        }
        if self.heartbeat_ticks_max < self.heartbeat_ticks {
            return bad(format!(
                "heartbeat_ticks_max ({}) must be at least heartbeat_ticks ({})",
                self.heartbeat_ticks_max, self.heartbeat_ticks
            ));
        }
        if self.retransmit_ticks == 0 {
            return bad("retransmit_ticks must be at least 1".into());
        }
        if self.in_flight_slots_max == 0 {
            return bad("in_flight_slots_max must be at least 1".into());
        }
        if self.eager_slots_max == 0 || self.eager_slots_max > self.in_flight_slots_max {
            return bad(format!(
                "eager_slots_max ({}) must be between 1 and in_flight_slots_max ({})",
                self.eager_slots_max, self.in_flight_slots_max
            ));
        }
        if self.batch_commands_max == 0 {
            return bad("batch_commands_max must be at least 1".into());
        }
        if self.queue_commands_max == 0 {
            return bad("queue_commands_max must be at least 1".into());
        }
        if self.window_slots_max < self.in_flight_slots_max {
            return bad(format!(
                "window_slots_max ({}) must be at least in_flight_slots_max ({})",
                self.window_slots_max, self.in_flight_slots_max
            ));
        }
        if self.catch_up_slots_max == 0 {
            return bad("catch_up_slots_max must be at least 1".into());
        }
        if self.sessions_max == 0 {
            return bad("sessions_max must be at least 1".into());
        }
        if self.reads_pending_max == 0 {
            return bad("reads_pending_max must be at least 1".into());
        }
        if self.snapshot_chunk_bytes_max == 0
            || self.snapshot_chunk_bytes_max > SNAPSHOT_CHUNK_BYTES_LIMIT
        {
            return bad(format!(
                "snapshot_chunk_bytes_max ({}) must be between 1 and {SNAPSHOT_CHUNK_BYTES_LIMIT}",
                self.snapshot_chunk_bytes_max
            ));
        }
        if self.snapshot_chunks_in_flight_max == 0 {
            return bad("snapshot_chunks_in_flight_max must be at least 1".into());
        }
        Ok(())
    }

    /// How many acceptors form a majority of the first configuration.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

/// Checks a list of acceptors: not empty, no duplicates, at most [`MEMBERS_MAX`].
pub fn validate_members(members: &[NodeId]) -> Result<(), PaxosError> {
    let bad = |why: String| Err(PaxosError::Config(why));
    if members.is_empty() {
        return bad("members must not be empty".into());
    }
    let distinct: BTreeSet<_> = members.iter().collect();
    if distinct.len() != members.len() {
        return bad(format!("members {members:?} contain duplicates"));
    }
    if members.len() > MEMBERS_MAX {
        return bad(format!(
            "{} members; at most {MEMBERS_MAX} are supported (acknowledgements are tracked in a 64-bit set)",
            members.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_errors_explain() {
        assert!(Config::new(1, vec![1, 2, 3]).validate().is_ok());
        // A replica outside the first configuration may start (it joins later).
        assert!(Config::new(4, vec![1, 2, 3]).validate().is_ok());
        let e = Config::new(1, vec![1, 1, 2]).validate().unwrap_err();
        assert!(e.to_string().contains("duplicates"), "{e}");
        assert!(Config::new(1, vec![]).validate().is_err());
        assert!(Config::new(1, (1..=65).collect()).validate().is_err());
        let mut c = Config::new(1, vec![1, 2, 3]);
        c.window_slots_max = 1;
        assert!(c.validate().unwrap_err().to_string().contains("window"));
        for eager in [0, IN_FLIGHT_SLOTS_MAX_DEFAULT + 1] {
            let mut c = Config::new(1, vec![1, 2, 3]);
            c.eager_slots_max = eager;
            assert!(c
                .validate()
                .unwrap_err()
                .to_string()
                .contains("eager_slots_max"));
        }
        let mut c = Config::new(1, vec![1, 2, 3]);
        c.heartbeat_ticks = 0;
        assert!(c.validate().is_err());
        let mut c = Config::new(1, vec![1, 2, 3]);
        c.heartbeat_ticks = HEARTBEAT_TICKS_MAX_DEFAULT + 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("heartbeat_ticks_max"));
        c.heartbeat_ticks_max = c.heartbeat_ticks;
        assert!(c.validate().is_ok());
        assert_eq!(Config::new(1, vec![1, 2, 3, 4, 5]).majority(), 3);
        for chunk in [0, SNAPSHOT_CHUNK_BYTES_LIMIT + 1] {
            let mut c = Config::new(1, vec![1, 2, 3]);
            c.snapshot_chunk_bytes_max = chunk;
            assert!(c
                .validate()
                .unwrap_err()
                .to_string()
                .contains("snapshot_chunk_bytes_max"));
        }
        let mut c = Config::new(1, vec![1, 2, 3]);
        c.snapshot_chunks_in_flight_max = 0;
        assert!(c.validate().is_err());
    }
}
