//! The replica as a [`Node`]: the driver's entry points, each routed to the role it concerns
//! (messages and requests), or run for every role in turn (ticks).

use std::sync::Arc;

use common::snapshot::{MemSnapshotStore, SnapshotStore};
use common::{protocol, Node, NodeId, Outbox, RequestId, Setup};

use crate::config::Config;
use crate::error::PaxosError;
use crate::message::{Message, Record};
use crate::state_machine::StateMachine;

use super::{
    election, transfer, Event, Metrics, PaxosNode, Request, Response, LEADER_QUORUM_GRACE_ROUNDS,
};

impl<S: StateMachine> Node for PaxosNode<S> {
    type Config = Setup<Config, S>;
    type Message = Message<S::Command>;
    type Request = Request<S::Command, S::Query>;
    type Response = Response<S::Output>;
    type Event = Event;
    type Record = Record<S::Command>;
    type Metrics = Metrics;
    type Error = PaxosError;

    const PROTOCOL: u16 = protocol::PAXOS;
    /// 2: snapshots travel in chunks ([`Message::SnapshotChunk`], [`Message::SnapshotAck`]).
    const WIRE_VERSION: u16 = 2;

    /// [`Node::recover_with_snapshots`] with a new, empty [`MemSnapshotStore`]: for a replica
    /// whose records name no snapshot (a checkpoint's file would be missing).
    fn recover(
        setup: Setup<Config, S>,
        records: Vec<Record<S::Command>>,
    ) -> Result<Self, PaxosError> {
        Self::recover_with_snapshots(setup, records, Arc::new(MemSnapshotStore::new()))
    }

    fn recover_with_snapshots(
        setup: Setup<Config, S>,
        records: Vec<Record<S::Command>>,
        snapshots: Arc<dyn SnapshotStore>,
    ) -> Result<Self, PaxosError> {
        Self::recover_from(setup, records, snapshots)
    }

    fn checkpoints_durable(&mut self, count: u64) {
        self.snapshots
            .retention
            .durable(&*self.snapshots.store, count);
    }

    fn records_durable(&mut self, count: u64, out: &mut Outbox<Self>) {
        let id = self.shared.config.id;
        while let Some(&(record, ballot, first, slots)) = self.proposer.own_accepts.front() {
            if record > count {
                break;
            }
            self.proposer.own_accepts.pop_front();
            // Ignored if the leadership it was for is gone.
            self.on_accepted(id, ballot, first, slots, out);
        }
    }

    fn id(&self) -> NodeId {
        self.shared.config.id
    }

    fn handle_message(&mut self, from: NodeId, msg: Message<S::Command>, out: &mut Outbox<Self>) {
        if from == self.shared.config.id {
            self.shared
                .reject("message from this replica's own id", from);
            return;
        }
        if !self.shared.is_member(from) && !self.accepts_from_non_member(from, &msg, out) {
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

    /// The proposals of the batch are queued, then go out together: one Accept round for all
    /// of them (in slots of up to [`crate::Config::batch_commands_max`] commands), rather than
    /// an eager slot for the first and another round for the rest once it is chosen.
    fn handle_requests<I>(&mut self, requests: I, out: &mut Outbox<Self>)
    where
        I: IntoIterator<Item = (RequestId, Request<S::Command, S::Query>)>,
    {
        self.proposer.batch_open = true;
        for (id, req) in requests {
            self.handle_request(id, req, out);
        }
        self.proposer.batch_open = false;
        self.flush_if_eager(out);
    }

    fn tick(&mut self, out: &mut Outbox<Self>) {
        // The decided prefix no record carried since the last tick is logged (see
        // `Shared::note_commit`).
        self.shared.tick_commit(out);
        // Only acceptors of the current configuration run the election; a joining or removed
        // replica is a passive learner.
        let member = self.shared.is_member(self.shared.config.id);
        let round_ended = self.election.tick();
        if let (Some(round), false) = (round_ended, member) {
            self.announce_membership(round.round, out);
        }
        if let Some(round) = round_ended.filter(|_| member) {
            let peers = self.shared.peers.clone();
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
                // A round or two without a quorum happens under load (replies queued behind
                // large batches) and changes nothing: a leader rides it out (see
                // `LEADER_QUORUM_GRACE_ROUNDS`). Past the grace it is worth an operator's eye.
                let id = self.shared.config.id;
                if round.rounds_without_quorum > LEADER_QUORUM_GRACE_ROUNDS {
                    tracing::warn!(id, "paxos: {event}");
                } else {
                    tracing::debug!(id, "paxos: {event}");
                }
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
        // A replica outside the configuration takes no part in the election.
        let is_member = self.shared.is_member(self.shared.config.id);
        Metrics {
            id: self.shared.config.id,
            leader: self.election.leader_id(),
            is_leader: self.is_leader(),
            ballot: self.election.leader,
            promised: self.acceptor.promised,
            decided: self.shared.log.decided,
            applied: self.learner.applied,
            in_flight: self.proposer.leader.as_ref().map_or(0, |l| l.in_flight()),
            queued: self.proposer.leader.as_ref().map_or(0, |l| l.queued()),
            sessions: self.learner.sessions.len(),
            rejected: self.shared.counters.rejected,
            stale: self.shared.counters.stale,
            duplicates: self.shared.counters.duplicates,
            retries_attached: self.shared.counters.retries_attached,
            snapshots_installed: self.shared.counters.snapshots_installed,
            snapshots_rejected: self.shared.counters.snapshots_rejected,
            snapshot_failures: self.shared.counters.snapshot_failures,
            log_start: self.shared.log.start(),
            snapshot_bytes: self.snapshots.latest.as_ref().map_or(0, |l| l.file.bytes),
            epoch: self.shared.membership.epoch,
            members: self.shared.membership.members.clone(),
            is_member,
            round_ticks: self.election.round_ticks,
            quorum_connected: is_member && self.election.quorum_connected,
            rounds_without_quorum: if is_member {
                self.election.rounds_without_quorum
            } else {
                0
            },
            rtt_ticks_max: self.election.rtt_ticks_max.unwrap_or(0),
        }
    }
}
