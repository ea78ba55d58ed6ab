//! The sans-IO replica: one [`Replica`] plays the paper's three roles and runs the leader
//! election. Each role lives in its own module and adds its handlers to [`Replica`]:
//!
//! - [`acceptor`]: promises and accepts (phase 1b, phase 2b), durable through [`Record`]s;
//! - [`proposer`]: the leader's side (phase 1a once per leadership, phase 2a per slot,
//!   pipelining, batching, commit index, linearizable reads);
//! - [`learner`]: decisions, catch-up, applying chosen slots in order, answering clients;
//! - [`election`]: heartbeats, ballots and the choice of leader;
//! - [`reconfig`]: stop-signs, configurations (epochs) and the hand-over between them.
//!
//! [`Replica`] itself only routes inputs to the roles and validates what it cannot trust.

use std::collections::BTreeMap;
use std::sync::Arc;

use common::snapshot::{MemSnapshotStore, SnapshotFile, SnapshotRetention, SnapshotStore};
use common::{protocol, Node, NodeId, Outbox, RequestId, Setup};

use crate::config::Config;
use crate::error::Error;
use crate::message::{Ballot, Membership, Message, Record, Session, Slot, Value};
use crate::state_machine::{Sessions, StateMachine};

pub(crate) mod acceptor;
pub(crate) mod election;
pub(crate) mod learner;
pub(crate) mod log;
pub(crate) mod proposer;
pub(crate) mod reconfig;
pub(crate) mod snapshot;
pub(crate) mod transfer;

use election::Election;
use log::{Entry, SlotLog};
use proposer::Leader;

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
    /// The request failed (see [`Error`] for which failures leave the outcome unknown).
    Failed(Error),
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
    /// Heartbeat rounds in a row that did not hear a majority (0 while connected; always 0 on a
    /// replica outside the configuration, which takes no part in the election).
    pub rounds_without_quorum: u64,
    /// The longest heartbeat round trip this replica measured since it started, in its ticks
    /// (0 before the first reply).
    pub rtt_ticks_max: u64,
}

/// Counters of rejected input.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub rejected: u64,
    pub stale: u64,
    pub duplicates: u64,
    pub retries_attached: u64,
    pub snapshots_installed: u64,
    pub snapshots_rejected: u64,
    pub snapshot_failures: u64,
}

/// One Multi-Paxos replica over state machine `S`. See the crate documentation for the
/// protocol and [`common::node`] for how a driver calls it.
pub struct Replica<S: StateMachine> {
    pub(crate) config: Config,
    /// The configuration in force for the slots from `membership.start` on (changed by applying
    /// a stop-sign or installing a snapshot).
    pub(crate) membership: Membership,
    /// Majority of `membership`.
    pub(crate) majority: usize,
    /// Peers (every member of `membership` but this one), in member order.
    pub(crate) peers: Vec<NodeId>,
    // ---- acceptor (durable) ----
    /// The highest ballot promised.
    pub(crate) promised: Ballot,
    /// Accepted and chosen values per slot.
    pub(crate) log: SlotLog<S::Command>,
    // ---- learner ----
    pub(crate) state: S,
    pub(crate) sessions: Sessions<S::Output>,
    /// First slot not yet applied.
    pub(crate) applied: Slot,
    /// First slot the state machine has not applied: above `applied` only after a restart with
    /// a durable state machine ([`StateMachine::applied_index`]), while the apply loop brings
    /// the session table up to it without applying those slots again.
    pub(crate) sm_applied: Slot,
    /// Set while [`Node::recover`] replays the log (no checkpoint may be asked for then: the
    /// driver would never see it).
    pub(crate) recovering: bool,
    /// Set when restoring a received snapshot into the state machine failed part-way: its
    /// state is unknown, so nothing is applied, read or snapshotted until a snapshot restores
    /// cleanly.
    pub(crate) state_invalid: bool,
    /// Approximate bytes of the commands applied since the log was last compacted
    /// ([`StateMachine::command_bytes`]): compaction's trigger by size.
    pub(crate) log_bytes: u64,
    // ---- snapshots ----
    /// Where snapshot files live (the driver's [`common::Storage::snapshots`]).
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    /// Which snapshot files checkpoints still need.
    pub(crate) retention: SnapshotRetention,
    /// Records asked for since recovery (what [`Node::records_durable`] counts).
    pub(crate) records_asked: u64,
    /// The leader's own acceptances waiting for their records to be durable
    /// ([`Config::parallel_accept`]): `(record, ballot, first slot, slots)`, oldest first.
    pub(crate) own_accepts: std::collections::VecDeque<(u64, Ballot, Slot, u64)>,
    /// The snapshot the latest checkpoint names, opened.
    pub(crate) latest: Option<snapshot::LocalSnapshot>,
    /// After a failed snapshot, the next is not attempted before this slot is applied.
    pub(crate) snapshot_retry_at: Slot,
    /// Snapshots being sent to peers behind our compacted prefix.
    pub(crate) outgoing: BTreeMap<NodeId, transfer::Outgoing>,
    /// The snapshot being received, if any.
    pub(crate) incoming: Option<transfer::Incoming>,
    /// Highest commit index heard of (slots below are chosen somewhere).
    pub(crate) commit_hint: Slot,
    /// Ticks until the next catch-up request may be sent.
    pub(crate) catch_up_cooldown: u64,
    /// Catch-up requests sent by the timer (rotates the peer asked).
    pub(crate) catch_up_attempts: u64,
    /// The peer that last told us it decided more than we did.
    pub(crate) catch_up_peer: Option<NodeId>,
    /// The last peer a catch-up request went to: its answer is accepted even if it is not a
    /// member of our configuration (we may be behind a reconfiguration that added it).
    pub(crate) catch_up_asked: Option<NodeId>,
    /// A reconfiguration this replica proposed, answered when a stop-sign with these members is
    /// applied.
    pub(crate) reconfig_pending: Option<(RequestId, Vec<NodeId>)>,
    /// Set when a stop-sign was applied while this replica led: after the apply loop, it leads
    /// again in the new configuration (if elected there) and takes along `carried`.
    pub(crate) relead_after_apply: bool,
    /// Members of the current configuration that this replica, being outside it, knows to have
    /// learned it (see `reconfig.rs`: a removed replica tells the new members until they have).
    pub(crate) announced: std::collections::BTreeSet<NodeId>,
    /// Client commands and reads a leader held when its configuration ended, handed to its next
    /// leadership (or refused).
    pub(crate) carried: Option<reconfig::Carried<S::Command, S::Query>>,
    /// Client proposals answered when their slot is applied: slot -> (batch origin, requests).
    pub(crate) pending: BTreeMap<Slot, (Ballot, Vec<RequestId>)>,
    /// Retries attached to a copy of their command the leader already holds, answered when a
    /// command of that session is applied (see `proposer.rs`).
    pub(crate) session_waiters: BTreeMap<Session, Vec<RequestId>>,
    // ---- proposer ----
    pub(crate) leader: Option<Leader<S::Command, S::Query>>,
    // ---- election ----
    pub(crate) election: Election,
    pub(crate) counters: Counters,
    /// Reused by `apply_run` (see `learner.rs`).
    pub(crate) apply_scratch: learner::ApplyScratch<S::Output>,
}

impl<S: StateMachine> Replica<S> {
    /// The bit of `node` in a 64-bit acknowledgement set, if `node` is a member.
    pub(crate) fn bit(&self, node: NodeId) -> Option<u64> {
        self.membership
            .members
            .iter()
            .position(|&m| m == node)
            .map(|i| 1u64 << i)
    }

    pub(crate) fn is_member(&self, node: NodeId) -> bool {
        self.membership.contains(node)
    }

    pub(crate) fn reject(&mut self, why: &'static str, from: NodeId) {
        self.counters.rejected += 1;
        tracing::debug!(id = self.config.id, from, why, "paxos: input rejected");
    }

    /// The state machine (for tests and observers; it reflects applied slots only).
    pub fn state(&self) -> &S {
        &self.state
    }

    /// First slot not known to be chosen here: slots below it are chosen.
    pub fn decided(&self) -> Slot {
        self.log.decided
    }

    /// The chosen value of `slot`, if this replica knows it and did not compact it away.
    pub fn decided_value(&self, slot: Slot) -> Option<&Value<S::Command>> {
        if slot >= self.log.decided {
            return None;
        }
        self.log.get(slot).map(|e| &e.value)
    }

    /// The first slot still held in the log (slots below were compacted into a snapshot).
    pub fn log_start(&self) -> Slot {
        self.log.start()
    }

    /// Whether this replica leads (phase 2 running).
    pub fn is_leader(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| l.is_active())
    }

    /// The configuration this replica is in.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Follows a change of leader seen in the replication protocol (a higher ballot promised or
    /// named in a rejection).
    pub(crate) fn on_leader_change(&mut self, ballot: Ballot, out: &mut Outbox<Self>) {
        out.emit(Event::LeaderChanged {
            leader: self.election.leader_id(),
            ballot,
        });
        if ballot.leader != self.config.id && self.leader.is_some() {
            self.step_down(out);
        }
    }

    /// After each election round: lead exactly when the election chose this replica and it is
    /// quorum-connected. A leader that no longer hears a majority cannot commit anything, so it
    /// stops claiming leadership and clients go elsewhere (a quorum-connected replica takes over).
    pub(crate) fn reconcile_leadership(&mut self, out: &mut Outbox<Self>) {
        if !self.is_member(self.config.id) {
            self.step_down(out);
            return;
        }
        let e = &self.election;
        let elected = e.leader.leader == self.config.id && e.leader == e.ballot;
        let ballot = e.leader;
        if elected && e.quorum_connected {
            if self.leader.as_ref().is_some_and(|l| l.ballot == ballot) {
                return;
            }
            if ballot <= self.promised {
                // Our own acceptor promised something at least as high: we could not lead with
                // this ballot. Raise; the next round elects us with the higher one.
                self.election.raise_above(self.promised);
                if self.leader.is_some() {
                    self.step_down(out);
                }
                return;
            }
            self.start_leading(ballot, out);
        } else if self.leader.is_some() {
            self.step_down(out);
        }
    }
}

impl<S: StateMachine> Node for Replica<S> {
    type Config = Setup<Config, S>;
    type Message = Message<S::Command>;
    type Request = Request<S::Command, S::Query>;
    type Response = Response<S::Output>;
    type Event = Event;
    type Record = Record<S::Command>;
    type Metrics = Metrics;
    type Error = Error;

    const PROTOCOL: u16 = protocol::PAXOS;
    /// 2: snapshots travel in chunks ([`Message::SnapshotChunk`], [`Message::SnapshotAck`]).
    const WIRE_VERSION: u16 = 2;

    /// [`Node::recover_with_snapshots`] with a new, empty [`MemSnapshotStore`]: for a replica
    /// whose records name no snapshot (a checkpoint's file would be missing).
    fn recover(setup: Setup<Config, S>, records: Vec<Record<S::Command>>) -> Result<Self, Error> {
        Self::recover_with_snapshots(setup, records, Arc::new(MemSnapshotStore::new()))
    }

    fn recover_with_snapshots(
        setup: Setup<Config, S>,
        records: Vec<Record<S::Command>>,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> Result<Self, Error> {
        let Setup {
            config,
            state_machine: factory,
        } = setup;
        config.validate()?;
        let mut promised = Ballot::ZERO;
        let mut log = SlotLog::new();
        let mut snapshot: Option<(Slot, SnapshotFile)> = None;
        for record in records {
            match record {
                Record::Snapshot {
                    slot,
                    file,
                    promised: p,
                    decided,
                    accepted,
                } => {
                    // A checkpoint restates everything: start over from it.
                    promised = promised.max(p);
                    log = SlotLog::new();
                    log.install(slot);
                    for e in accepted {
                        log.set(
                            e.slot,
                            Entry {
                                ballot: e.ballot,
                                value: e.value,
                            },
                        );
                    }
                    if decided > slot {
                        if (slot..decided).any(|s| log.get(s).is_none()) {
                            return Err(Error::Corrupt(format!(
                                "snapshot decided up to {decided} without the entries"
                            )));
                        }
                        log.decided = decided;
                    }
                    snapshot = Some((slot, file));
                }
                Record::Promise(b) => promised = promised.max(b),
                Record::Accept {
                    ballot,
                    slot,
                    values,
                } => {
                    promised = promised.max(ballot);
                    for (i, value) in values.into_iter().enumerate() {
                        let s = slot + i as u64;
                        if s >= log.decided {
                            log.set(s, Entry { ballot, value });
                        }
                    }
                }
                Record::Commit { decided } => {
                    if decided > log.decided {
                        if (log.decided..decided).any(|s| log.get(s).is_none()) {
                            return Err(Error::Corrupt(format!(
                                "commit up to slot {decided} but a slot below it has no entry"
                            )));
                        }
                        log.decided = decided;
                    }
                }
                Record::Learn { from_slot, values } => {
                    if from_slot > log.decided {
                        return Err(Error::Corrupt(format!(
                            "learned slots from {from_slot} beyond the decided prefix {}",
                            log.decided
                        )));
                    }
                    for (i, value) in values.into_iter().enumerate() {
                        let s = from_slot + i as u64;
                        if s >= log.decided {
                            log.set(
                                s,
                                Entry {
                                    ballot: Ballot::ZERO,
                                    value,
                                },
                            );
                            log.decided = s + 1;
                        }
                    }
                }
            }
        }
        let membership = Membership {
            epoch: 0,
            start: 0,
            members: config.members.clone(),
        };
        let majority = membership.majority();
        let peers = membership
            .members
            .iter()
            .copied()
            .filter(|&m| m != config.id)
            .collect();
        let election = Election::new(
            config.id,
            majority,
            config.heartbeat_ticks,
            config.heartbeat_ticks_max,
            config.election_jitter_rounds_max,
            promised,
            config.seed,
        );
        let state = factory().map_err(|e| Error::StateMachine(e.to_string()))?;
        let sm_position = state.applied_index();
        let mut replica = Replica {
            membership,
            sessions: Sessions::new(config.sessions_max),
            config,
            majority,
            peers,
            promised,
            commit_hint: log.decided,
            log,
            state,
            applied: 0,
            sm_applied: 0,
            recovering: true,
            state_invalid: false,
            log_bytes: 0,
            snapshots,
            retention: SnapshotRetention::default(),
            records_asked: 0,
            own_accepts: std::collections::VecDeque::new(),
            latest: None,
            snapshot_retry_at: 0,
            outgoing: BTreeMap::new(),
            incoming: None,
            catch_up_cooldown: 0,
            catch_up_attempts: 0,
            catch_up_peer: None,
            catch_up_asked: None,
            reconfig_pending: None,
            relead_after_apply: false,
            announced: std::collections::BTreeSet::new(),
            carried: None,
            pending: BTreeMap::new(),
            session_waiters: BTreeMap::new(),
            leader: None,
            election,
            counters: Counters::default(),
            apply_scratch: learner::ApplyScratch::default(),
        };
        let mut scratch = Outbox::new();
        if let Some((slot, file)) = snapshot {
            replica.recover_snapshot(slot, file, &mut scratch)?;
        }
        // Every other snapshot file is older than the checkpoint's, or an orphan of a crash
        // before its checkpoint was durable.
        replica.retention =
            SnapshotRetention::recovered(&*replica.snapshots, snapshot.map(|(_, f)| f.id));
        replica.sm_applied = sm_position.max(replica.applied);
        // Re-apply the chosen prefix (stop-signs in it bring the replica to its latest
        // configuration); slots a durable state machine applied before only go through the
        // session table.
        replica.apply_decided(&mut scratch);
        replica.recovering = false;
        Ok(replica)
    }

    fn checkpoints_durable(&mut self, count: u64) {
        self.retention.durable(&*self.snapshots, count);
    }

    fn records_durable(&mut self, count: u64, out: &mut Outbox<Self>) {
        let id = self.config.id;
        while let Some(&(record, ballot, first, slots)) = self.own_accepts.front() {
            if record > count {
                break;
            }
            self.own_accepts.pop_front();
            // Ignored if the leadership it was for is gone.
            self.on_accepted(id, ballot, first, slots, out);
        }
    }

    fn id(&self) -> NodeId {
        self.config.id
    }

    fn handle_message(&mut self, from: NodeId, msg: Message<S::Command>, out: &mut Outbox<Self>) {
        if from == self.config.id {
            self.reject("message from this replica's own id", from);
            return;
        }
        if !self.is_member(from) && !self.accepts_from_non_member(from, &msg, out) {
            return;
        }
        match msg {
            Message::Heartbeat { round } => self.on_heartbeat(from, round, out),
            Message::HeartbeatReply {
                round,
                ballot,
                quorum_connected,
                leader,
                leader_alive,
                decided,
            } => self.on_heartbeat_reply(
                from,
                round,
                election::HeartbeatInfo {
                    ballot,
                    quorum_connected,
                    leader,
                    leader_alive,
                },
                decided,
                out,
            ),
            Message::Prepare { ballot, from_slot } => self.on_prepare(from, ballot, from_slot, out),
            Message::Promise {
                ballot,
                decided,
                accepted,
            } => self.on_promise(from, ballot, decided, accepted, out),
            Message::Accept {
                ballot,
                slot,
                values,
                commit,
            } => self.on_accept(from, ballot, slot, values, commit, out),
            Message::Accepted {
                ballot,
                slot,
                count,
            } => self.on_accepted(from, ballot, slot, count, out),
            Message::Commit { ballot, commit } => self.on_commit(from, ballot, commit, out),
            Message::Nack { ballot, promised } => self.on_nack(from, ballot, promised, out),
            Message::ReadProbe { ballot, round } => self.on_read_probe(from, ballot, round, out),
            Message::ReadAck { ballot, round } => self.on_read_ack(from, ballot, round, out),
            Message::CatchUpRequest { from_slot } => self.on_catch_up_request(from, from_slot, out),
            Message::CatchUp { from_slot, values } => {
                self.on_catch_up(from, from_slot, values, out)
            }
            Message::SnapshotChunk {
                slot,
                digest,
                offset,
                data,
            } => self.on_snapshot_chunk(
                from,
                transfer::Chunk {
                    slot,
                    digest,
                    offset,
                    data,
                },
                out,
            ),
            Message::SnapshotAck {
                slot,
                next_offset,
                done,
            } => self.on_snapshot_ack(from, slot, next_offset, done, out),
        }
    }

    fn handle_request(
        &mut self,
        id: RequestId,
        req: Request<S::Command, S::Query>,
        out: &mut Outbox<Self>,
    ) {
        match req {
            Request::Propose { command, session } => self.propose(id, command, session, out),
            Request::Read(query) => self.read(id, query, out),
            Request::Reconfigure { members } => self.reconfigure(id, members, out),
        }
    }

    fn tick(&mut self, out: &mut Outbox<Self>) {
        // Only acceptors of the current configuration run the election; a joining or removed
        // replica is a passive learner.
        let member = self.is_member(self.config.id);
        let round_ended = self.election.tick();
        if let (Some(round), false) = (round_ended, member) {
            self.announce_membership(round.round, out);
        }
        if let Some(round) = round_ended.filter(|_| member) {
            let peers = self.peers.clone();
            out.broadcast(peers, &Message::Heartbeat { round: round.round });
            if let Some(ballot) = round.new_leader {
                out.emit(Event::LeaderChanged {
                    leader: self.election.leader_id(),
                    ballot,
                });
            }
            if round.rounds_without_quorum.is_power_of_two() {
                // The first round without a quorum, then each time the count doubles: enough to
                // tell an operator, without one event per round during a long outage.
                let e = &self.election;
                let event = Event::QuorumNotReached {
                    rounds: round.rounds_without_quorum,
                    rtt_ticks_max: e.streak_rtt_ticks_max,
                    round_ticks: e.round_ticks,
                };
                tracing::warn!(id = self.config.id, "paxos: {event}");
                out.emit(event);
            }
            self.reconcile_leadership(out);
        }
        self.leader_tick(out);
        self.learner_tick(out);
        self.transfer_tick(out);
        // A snapshot due when recovery replayed the log is taken at the first tick.
        self.maybe_snapshot(out);
    }

    fn metrics(&self) -> Metrics {
        Metrics {
            id: self.config.id,
            leader: self.election.leader_id(),
            is_leader: self.is_leader(),
            ballot: self.election.leader,
            promised: self.promised,
            decided: self.log.decided,
            applied: self.applied,
            in_flight: self.leader.as_ref().map_or(0, |l| l.in_flight()),
            queued: self.leader.as_ref().map_or(0, |l| l.queued()),
            sessions: self.sessions.len(),
            rejected: self.counters.rejected,
            stale: self.counters.stale,
            duplicates: self.counters.duplicates,
            retries_attached: self.counters.retries_attached,
            snapshots_installed: self.counters.snapshots_installed,
            snapshots_rejected: self.counters.snapshots_rejected,
            snapshot_failures: self.counters.snapshot_failures,
            log_start: self.log.start(),
            snapshot_bytes: self.latest.as_ref().map_or(0, |l| l.file.bytes),
            epoch: self.membership.epoch,
            members: self.membership.members.clone(),
            is_member: self.is_member(self.config.id),
            round_ticks: self.election.round_ticks,
            rounds_without_quorum: if self.is_member(self.config.id) {
                self.election.rounds_without_quorum
            } else {
                0
            },
            rtt_ticks_max: self.election.rtt_ticks_max.unwrap_or(0),
        }
    }
}

impl<S: StateMachine> Replica<S> {
    pub(crate) fn on_heartbeat(&mut self, from: NodeId, round: u64, out: &mut Outbox<Self>) {
        let e = &self.election;
        out.send(
            from,
            Message::HeartbeatReply {
                round,
                ballot: e.ballot,
                quorum_connected: e.quorum_connected,
                leader: e.leader,
                leader_alive: e.leader_alive,
                decided: self.log.decided,
            },
        );
    }

    fn on_heartbeat_reply(
        &mut self,
        from: NodeId,
        round: u64,
        info: election::HeartbeatInfo,
        decided: Slot,
        out: &mut Outbox<Self>,
    ) {
        if info.ballot.leader != from {
            self.reject("candidacy ballot of another node", from);
            return;
        }
        self.election.on_reply(from, round, info);
        if decided >= self.membership.start {
            self.announced.insert(from);
        } else if let Some(leader) = self.leader.as_ref().filter(|l| l.is_active()) {
            // A member that has not learned the stop-sign that made this configuration (a new
            // member that missed it, on an idle cluster): our commit index sends it to catch-up.
            let msg = Message::Commit {
                ballot: leader.ballot,
                commit: leader.commit,
            };
            out.send(from, msg);
        } else if !self.is_member(self.config.id) && self.membership.epoch > 0 {
            // A removed replica announcing its configuration to a new member that has not
            // learned the stop-sign: that member still counts this replica as one of its own
            // (an older configuration), so the heartbeat alone tells it nothing. Our decided
            // slot, as a commit index, sends it to catch up from us (every slot below it is
            // chosen, so this claims nothing that is not true).
            let ballot = Ballot::in_epoch(
                self.membership.epoch,
                self.election.ballot.round.max(1),
                self.config.id,
            );
            let msg = Message::Commit {
                ballot,
                commit: self.log.decided,
            };
            out.send(from, msg);
        }
        if decided > self.log.decided {
            // The peer knows more chosen slots than we do: fetch them.
            self.commit_hint = self.commit_hint.max(decided);
            self.catch_up_peer = Some(from);
            self.request_catch_up(from, out);
        }
    }
}

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
