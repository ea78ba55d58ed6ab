//! The sans-IO replica. A [`PaxosNode`] composes the paper's three roles and the leader election,
//! each a struct owning its own state, beside the little they share:
//!
//! - [`acceptor::Acceptor`]: the durable promise; phase 1b and phase 2b ("Paxos Made Simple"
//!   §2.2);
//! - [`proposer::Proposer`]: the leader's volatile state; phase 1a once per leadership and
//!   phase 2a per slot (§2.2 and §3), pipelining, batching, the commit index, linearizable
//!   reads;
//! - [`learner::Learner`]: the state machine and what applying needs; learning chosen values
//!   (§2.3), catch-up, applying chosen slots in order and answering clients;
//! - [`election::Election`]: heartbeats, ballots and the choice of leader (§2.4 asks for a
//!   distinguished proposer and leaves how to elect one open);
//! - [`Shared`]: what every role reads — the configuration, the slot log, counters — passed to
//!   the roles explicitly.
//!
//! Around them: [`reconfig`] (stop-signs and the hand-over between configurations),
//! [`snapshot`] and [`transfer`] (snapshots, compaction, catch-up in chunks), [`recovery`]
//! (replaying persisted records), [`heartbeat`] (the election's messages) and [`node`] (the
//! driver's entry points). `PaxosNode`'s own methods route an input to the roles it concerns and
//! carry what one role's step means for another (a chosen slot is applied; an applied stop-sign
//! ends the leadership); they validate what they cannot trust.
//!
//! The sans-IO boundary is checked, not only promised: clippy denies here the clocks, sleeps,
//! files, sockets, unseeded randomness and tokio that the workspace's `clippy.toml` lists.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeSet;

use common::{Node, NodeId, Outbox};

use crate::config::Config;
use crate::message::{Ballot, Membership, Record, Slot, Value};
use crate::state_machine::StateMachine;

pub(crate) mod acceptor;
mod api;
mod apply;
pub(crate) mod election;
mod heartbeat;
pub(crate) mod leader;
pub(crate) mod learner;
pub(crate) mod log;
mod node;
pub(crate) mod proposer;
mod reads;
pub(crate) mod reconfig;
pub(crate) mod recovery;
pub(crate) mod snapshot;
pub(crate) mod transfer;

pub use api::{Event, Metrics, Request, Response};

use acceptor::Acceptor;
use election::Election;
use learner::Learner;
use log::SlotLog;
use proposer::Proposer;
use snapshot::Snapshots;

/// Election rounds in a row a leader keeps leading without hearing a majority, before it steps
/// down (each round's end reconciles leadership with the election's view). A follower likewise
/// waits at least one missed round, and up to [`Config::election_jitter_rounds_max`] more,
/// before it stands against a leader it no longer hears.
pub const LEADER_QUORUM_GRACE_ROUNDS: u64 = 2;

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

/// What every role reads and some write: the protocol's configuration, the configuration of
/// acceptors in force, the slot log, the counters and the count of records asked for. The roles
/// get it as an explicit argument.
#[derive(Debug)]
pub(crate) struct Shared<C> {
    pub config: Config,
    /// The configuration in force for the slots from `membership.start` on (changed by applying
    /// a stop-sign or installing a snapshot).
    pub membership: Membership,
    /// Majority of `membership`.
    pub majority: usize,
    /// Peers (every member of `membership` but this one), in member order.
    pub peers: Vec<NodeId>,
    /// Accepted and chosen values per slot: the acceptor writes accepted entries, the learner
    /// the chosen prefix, snapshots compact it.
    pub log: SlotLog<C>,
    pub counters: Counters,
    /// Records asked for since recovery (what [`common::Node::records_durable`] counts).
    pub records_asked: u64,
    /// A decided prefix not yet written as a [`Record::Commit`]: it rides with the replica's
    /// next record once a tick, or goes at a tick ([`Shared::tick_commit`]), and always before
    /// a [`Record::Learn`] that extends it.
    pub commit_unlogged: Option<Slot>,
    /// Whether a Commit rode with another record since the last tick.
    pub commit_rode: bool,
}

impl<C> Shared<C> {
    pub(crate) fn new(config: Config, membership: Membership, log: SlotLog<C>) -> Self {
        let mut shared = Shared {
            config,
            membership: Membership {
                epoch: 0,
                start: 0,
                members: Vec::new(),
            },
            majority: 0,
            peers: Vec::new(),
            log,
            counters: Counters::default(),
            records_asked: 0,
            commit_unlogged: None,
            commit_rode: false,
        };
        shared.set_membership(membership);
        shared
    }

    /// Moves to configuration `m`: its majority and this replica's peers in it.
    pub(crate) fn set_membership(&mut self, m: Membership) {
        let id = self.config.id;
        self.majority = m.majority();
        self.peers = m.members.iter().copied().filter(|&p| p != id).collect();
        self.membership = m;
    }

    /// This replica's id.
    pub(crate) fn id(&self) -> NodeId {
        self.config.id
    }

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

    /// Counts an input rejected as malformed or from an unknown sender.
    pub(crate) fn reject(&mut self, why: &'static str, from: NodeId) {
        self.counters.rejected += 1;
        tracing::debug!(id = self.config.id, from, why, "paxos: input rejected");
    }

    /// Asks for `record` to be appended (durable before this step's messages leave) and counts
    /// it. A decided prefix not yet logged goes before it if none rode since the last tick
    /// (see [`Shared::note_commit`]), and always before a [`Record::Learn`]: that extends the
    /// logged chosen prefix, which recovery requires to have no gap.
    pub(crate) fn persist<N: Node<Record = Record<C>>>(
        &mut self,
        record: Record<C>,
        out: &mut Outbox<N>,
    ) {
        let learn = matches!(record, Record::Learn { .. });
        if self.commit_unlogged.is_some() && (learn || !self.commit_rode) {
            self.log_commit(out);
            self.commit_rode = true;
        }
        out.persist(record);
        self.records_asked += 1;
    }

    /// Notes that every slot below `decided` is chosen, to be logged as a [`Record::Commit`]
    /// later rather than now: with the replica's next record, at most once a tick, or at a
    /// tick when none rode since the one before (a prefix that chose a stop-sign is logged once
    /// the stop-sign is applied, and a [`Record::Learn`] always takes the prefix before it).
    ///
    /// Nothing this replica sends claims its Commit records: a decision is a fact about a
    /// majority's durable acceptances, not about this replica's log, and recovery relearns a
    /// decided prefix that a crash cut short (a leader by its Prepare round, which chooses every
    /// accepted value again; a follower from the leader's commit index). So the record need not
    /// be durable before anything leaves. Logged at once, it cost a sync of its own whenever no
    /// other record was in the batch: with one client, one extra `fdatasync` per command on the
    /// leader, which the next command's Accept then waited behind.
    ///
    /// Nor does it ride with every record, as it first did: under steady load that wrote a
    /// Commit beside every Accept, two records per command on each replica where one carries
    /// the data. Logged only at the tick, it was a sync of its own each tick. Riding once a
    /// tick costs neither; the decided prefix a crash can lose is then at most what two ticks
    /// decide, which a follower decides again from the leader's next commit index (its
    /// accepted entries are there already) and a new leader chooses again in its Prepare
    /// round.
    pub(crate) fn note_commit(&mut self, decided: Slot) {
        self.commit_unlogged = Some(decided);
    }

    /// At a tick: logs the decided prefix on its own unless a Commit rode with another record
    /// since the last tick (what was decided after that one waits for the next record, or
    /// the next tick at the latest).
    pub(crate) fn tick_commit<N: Node<Record = Record<C>>>(&mut self, out: &mut Outbox<N>) {
        if !std::mem::take(&mut self.commit_rode) {
            self.log_commit(out);
        }
    }

    /// Logs the decided prefix noted by [`Shared::note_commit`], if any.
    pub(crate) fn log_commit<N: Node<Record = Record<C>>>(&mut self, out: &mut Outbox<N>) {
        if let Some(decided) = self.commit_unlogged.take() {
            out.persist(Record::Commit { decided });
            self.records_asked += 1;
        }
    }
}

/// One Multi-Paxos replica over state machine `S`. See the crate documentation for the
/// protocol and [`common::node`] for how a driver calls it.
pub struct PaxosNode<S: StateMachine> {
    /// The configuration, the slot log and the counters every role reads.
    pub(crate) shared: Shared<S::Command>,
    /// Phase 1b and 2b: the durable promise.
    pub(crate) acceptor: Acceptor,
    /// Phase 1a and 2a: the leader's state, while leading.
    pub(crate) proposer: Proposer<S::Command, S::Query>,
    /// Learning, catch-up and applying: the state machine and the session table.
    pub(crate) learner: Learner<S>,
    /// Heartbeats, ballots and the choice of leader.
    pub(crate) election: Election,
    /// The snapshot store, the latest snapshot and the transfers in progress.
    pub(crate) snapshots: Snapshots,
    /// Members of the current configuration that this replica, being outside it, knows to have
    /// learned it (see `reconfig.rs`: a removed replica tells the new members until they have).
    pub(crate) announced: BTreeSet<NodeId>,
}

impl<S: StateMachine> PaxosNode<S> {
    /// The state machine (for tests and observers; it reflects applied slots only).
    pub fn state(&self) -> &S {
        &self.learner.state
    }

    /// First slot not known to be chosen here: slots below it are chosen.
    pub fn decided(&self) -> Slot {
        self.shared.log.decided
    }

    /// The chosen value of `slot`, if this replica knows it and did not compact it away.
    pub fn decided_value(&self, slot: Slot) -> Option<&Value<S::Command>> {
        if slot >= self.shared.log.decided {
            return None;
        }
        self.shared.log.get(slot).map(|e| &e.value)
    }

    /// The first slot still held in the log (slots below were compacted into a snapshot).
    pub fn log_start(&self) -> Slot {
        self.shared.log.start()
    }

    /// Whether this replica leads (phase 2 running).
    pub fn is_leader(&self) -> bool {
        self.proposer.leader.as_ref().is_some_and(|l| l.is_active())
    }

    /// The configuration this replica is in.
    pub fn membership(&self) -> &Membership {
        &self.shared.membership
    }

    /// Follows a change of leader seen in the replication protocol (a higher ballot promised or
    /// named in a rejection).
    pub(crate) fn on_leader_change(&mut self, ballot: Ballot, out: &mut Outbox<Self>) {
        out.emit(Event::LeaderChanged {
            leader: self.election.leader_id(),
            ballot,
        });
        if ballot.leader != self.shared.config.id && self.proposer.leader.is_some() {
            self.step_down(out);
        }
    }

    /// After each election round: start leading when the election chose this replica and it is
    /// quorum-connected. A leader that no longer hears a majority cannot commit anything, so
    /// after [`LEADER_QUORUM_GRACE_ROUNDS`] more rounds without one it stops claiming leadership
    /// and clients go elsewhere (a quorum-connected replica takes over). It does not stop at the
    /// first such round: on a busy machine the heartbeat replies of one round can come back
    /// late while the Accepteds still flow, and a leader that stepped down then would start
    /// again with a higher ballot a few rounds later, stalling every client in between.
    pub(crate) fn reconcile_leadership(&mut self, out: &mut Outbox<Self>) {
        if !self.shared.is_member(self.shared.config.id) {
            self.step_down(out);
            return;
        }
        let e = &self.election;
        let elected = e.leader.leader == self.shared.config.id && e.leader == e.ballot;
        let ballot = e.leader;
        if elected && e.quorum_connected {
            if self
                .proposer
                .leader
                .as_ref()
                .is_some_and(|l| l.ballot == ballot)
            {
                return;
            }
            if ballot <= self.acceptor.promised {
                // Our own acceptor promised something at least as high: we could not lead with
                // this ballot. Raise; the next round elects us with the higher one.
                self.election.raise_above(self.acceptor.promised);
                if self.proposer.leader.is_some() {
                    self.step_down(out);
                }
                return;
            }
            self.start_leading(ballot, out);
        } else if self.proposer.leader.is_some()
            && (!elected || e.rounds_without_quorum > LEADER_QUORUM_GRACE_ROUNDS)
        {
            self.step_down(out);
        }
    }
}

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
