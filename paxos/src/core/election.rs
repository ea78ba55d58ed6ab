//! Leader election and failure detection, a sub-protocol of its own.
//!
//! The design follows the *ballot leader election* of Omni-Paxos, because classic Multi-Paxos
//! (and Raft) elections can livelock or stall when the network is only partially connected:
//!
//! - Every replica has a *candidacy ballot* and runs heartbeat rounds: each round it asks every
//!   peer "are you there?"; a reply carries the peer's candidacy ballot, whether the peer is
//!   **quorum-connected** (it heard a majority, itself included, in its last round), which leader
//!   it follows and whether it hears that leader directly.
//! - At the end of a round, the leader is the highest ballot among quorum-connected replicas. A
//!   replica that is not connected to a quorum can never be chosen, so a leader always reaches a
//!   majority of acceptors (this is what makes the *quorum-loss* and *constrained election*
//!   scenarios progress).
//! - A replica raises its own ballot above the leader's only when it is quorum-connected and
//!   heard the leader neither directly nor through a quorum-connected peer that hears it. The
//!   indirect path stops a replica at the end of a *chain* from deposing a leader that a
//!   majority still follows (the chained scenario), which is where Raft livelocks.
//! - Candidates that raise at the same time pick the same round; the node id breaks the tie, so
//!   every replica converges on the same leader at the next round (duelling proposers converge).
//!   A seeded random delay of a few rounds before raising makes simultaneous raises rarer.
//! - Only ballots of the replica's own configuration (`epoch`) take part: a peer still in an
//!   older configuration is reachable (it counts for quorum connectivity) but cannot be elected
//!   until it catches up. A reconfiguration moves every ballot to the new epoch, keeping rounds,
//!   so a leader that stays a member usually stays leader.

use common::{DetRng, NodeId};

use crate::message::Ballot;

/// What a peer told us in its heartbeat reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeartbeatInfo {
    pub ballot: Ballot,
    pub quorum_connected: bool,
    pub leader: Ballot,
    pub leader_alive: bool,
}

/// The election state of one replica.
#[derive(Debug)]
pub(crate) struct Election {
    id: NodeId,
    /// The configuration whose ballots this election deals in.
    epoch: u64,
    majority: usize,
    heartbeat_ticks: u64,
    jitter_rounds_max: u64,
    /// This replica's candidacy ballot.
    pub ballot: Ballot,
    /// The leader this replica follows ([`Ballot::ZERO`]: none yet).
    pub leader: Ballot,
    /// Whether the last round heard a majority (this replica included).
    pub quorum_connected: bool,
    /// Whether the last round heard the leader directly (or this replica leads and is
    /// quorum-connected).
    pub leader_alive: bool,
    /// The current heartbeat round.
    pub round: u64,
    ticks: u64,
    replies: Vec<(NodeId, HeartbeatInfo)>,
    /// Rounds in a row without hearing the leader.
    missed_rounds: u64,
    /// Rounds to wait before raising this time (drawn at random).
    wait_rounds: u64,
    rng: DetRng,
}

/// What the end of a heartbeat round decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RoundOutcome {
    /// The new heartbeat round to broadcast.
    pub round: u64,
    /// The leader changed to this ballot.
    pub new_leader: Option<Ballot>,
}

impl Election {
    pub(crate) fn new(
        id: NodeId,
        majority: usize,
        heartbeat_ticks: u64,
        jitter_rounds_max: u64,
        promised: Ballot,
        seed: u64,
    ) -> Self {
        let mut rng = DetRng::for_node(seed, id);
        let wait_rounds = Self::draw_wait(&mut rng, jitter_rounds_max);
        Election {
            id,
            epoch: 0,
            majority,
            heartbeat_ticks,
            jitter_rounds_max,
            // Above anything this replica ever promised, hence above every ballot it ever led
            // with (it promises its own ballot before using it): a restarted leader never reuses
            // a ballot.
            ballot: Ballot::new(promised.round + 1, id),
            leader: Ballot::ZERO,
            quorum_connected: false,
            leader_alive: false,
            round: 0,
            ticks: 0,
            replies: Vec::new(),
            missed_rounds: 0,
            wait_rounds,
            rng,
        }
    }

    /// Rounds to tolerate without hearing the leader before raising: one full round (a reply
    /// can be one round late, and a new leader's quorum flag lags by a round) plus a random
    /// `0..=jitter` more.
    fn draw_wait(rng: &mut DetRng, jitter_rounds_max: u64) -> u64 {
        1 + rng.range_inclusive(0, jitter_rounds_max)
    }

    /// The leader this replica follows, if any.
    pub(crate) fn leader_id(&self) -> Option<NodeId> {
        (self.leader != Ballot::ZERO).then_some(self.leader.leader)
    }

    /// Moves the election to configuration `epoch` of `majority`: this replica's candidacy
    /// ballot moves to the new epoch with its round (and stays above `promised`), the leader
    /// followed does too if it is still a member (`leader_stays`), and the round's replies are
    /// dropped (they came from the old members).
    pub(crate) fn set_membership(
        &mut self,
        epoch: u64,
        majority: usize,
        leader_stays: bool,
        promised: Ballot,
    ) {
        if epoch < self.epoch {
            return;
        }
        self.epoch = epoch;
        self.majority = majority;
        self.ballot = Ballot::in_epoch(epoch, self.ballot.round, self.id);
        self.raise_above(promised);
        self.leader = if leader_stays && self.leader != Ballot::ZERO {
            Ballot::in_epoch(epoch, self.leader.round, self.leader.leader)
        } else {
            Ballot::ZERO
        };
        self.replies.clear();
        self.missed_rounds = 0;
    }

    /// A heartbeat reply of the current round arrived.
    pub(crate) fn on_reply(&mut self, from: NodeId, round: u64, info: HeartbeatInfo) {
        if round != self.round || self.replies.iter().any(|(p, _)| *p == from) {
            return; // late or duplicated
        }
        self.replies.push((from, info));
    }

    /// A ballot was seen in the replication protocol (a prepare or accept this replica's acceptor
    /// promised, or a rejection naming a higher promise). Returns the new leader if it changed.
    pub(crate) fn observe(&mut self, ballot: Ballot) -> Option<Ballot> {
        if ballot.epoch != self.epoch {
            return None; // another configuration's ballot: not a leader for us
        }
        if ballot > self.leader {
            self.leader = ballot;
            self.missed_rounds = 0;
            Some(ballot)
        } else {
            None
        }
    }

    /// Makes this replica's candidacy ballot exceed `ballot` (its acceptor promised `ballot`, so
    /// it could not lead with anything lower).
    pub(crate) fn raise_above(&mut self, ballot: Ballot) {
        if self.ballot <= ballot && ballot.epoch == self.epoch {
            self.ballot = Ballot::in_epoch(self.epoch, ballot.round + 1, self.id);
        }
    }

    /// One tick; at the end of a round, evaluates it and starts the next.
    pub(crate) fn tick(&mut self) -> Option<RoundOutcome> {
        self.ticks += 1;
        if self.ticks < self.heartbeat_ticks {
            return None;
        }
        self.ticks = 0;
        let new_leader = self.end_round();
        self.round += 1;
        Some(RoundOutcome {
            round: self.round,
            new_leader,
        })
    }

    fn end_round(&mut self) -> Option<Ballot> {
        let replies = std::mem::take(&mut self.replies);
        self.quorum_connected = replies.len() + 1 >= self.majority;
        let mut top = if self.quorum_connected {
            self.ballot
        } else {
            Ballot::ZERO
        };
        for (_, r) in &replies {
            if r.quorum_connected && r.ballot.epoch == self.epoch && r.ballot > top {
                top = r.ballot;
            }
        }
        let leader = self.leader;
        let direct = if leader.leader == self.id && leader == self.ballot {
            self.quorum_connected
        } else {
            replies
                .iter()
                .any(|(p, r)| *p == leader.leader && r.quorum_connected && r.ballot == leader)
        };
        let indirect = replies
            .iter()
            .any(|(_, r)| r.quorum_connected && r.leader == leader && r.leader_alive);
        self.leader_alive = direct;
        if top > leader {
            self.leader = top;
            self.missed_rounds = 0;
            return Some(top);
        }
        if direct || indirect || !self.quorum_connected {
            self.missed_rounds = 0;
            return None;
        }
        // The leader is gone as far as a quorum-connected replica can tell: after a random
        // number of extra rounds, become a candidate above it.
        self.missed_rounds += 1;
        if self.missed_rounds > self.wait_rounds {
            self.missed_rounds = 0;
            self.wait_rounds = Self::draw_wait(&mut self.rng, self.jitter_rounds_max);
            self.raise_above(leader);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ballot: Ballot, qc: bool, leader: Ballot, alive: bool) -> HeartbeatInfo {
        HeartbeatInfo {
            ballot,
            quorum_connected: qc,
            leader,
            leader_alive: alive,
        }
    }

    fn election(id: NodeId) -> Election {
        Election::new(id, 2, 1, 0, Ballot::ZERO, 7)
    }

    #[test]
    fn highest_quorum_connected_ballot_wins() {
        let mut e = election(1);
        e.tick(); // round 0 ends with no replies: not quorum-connected
        assert!(!e.quorum_connected);
        e.on_reply(2, 1, info(Ballot::new(1, 2), true, Ballot::ZERO, false));
        e.on_reply(3, 1, info(Ballot::new(5, 3), false, Ballot::ZERO, false));
        let out = e.tick().unwrap();
        // Node 3's ballot is higher but it is not quorum-connected, so node 2 wins.
        assert_eq!(out.new_leader, Some(Ballot::new(1, 2)));
        assert_eq!(e.leader_id(), Some(2));
    }

    #[test]
    fn raises_only_when_leader_unheard_and_quorum_connected() {
        let mut e = election(1);
        e.leader = Ballot::new(3, 2);
        // Heard a quorum (node 3) but not the leader, and node 3 does not hear it either.
        e.round = 4;
        e.on_reply(
            3,
            4,
            info(Ballot::new(1, 3), true, Ballot::new(3, 2), false),
        );
        assert_eq!(e.tick().unwrap().new_leader, None);
        assert_eq!(e.ballot, Ballot::new(1, 1), "one missed round is tolerated");
        e.on_reply(
            3,
            5,
            info(Ballot::new(1, 3), true, Ballot::new(3, 2), false),
        );
        assert_eq!(e.tick().unwrap().new_leader, None);
        assert_eq!(e.ballot, Ballot::new(4, 1), "raised above the dead leader");
        // Next round: our own ballot is the top quorum-connected one: we lead.
        e.on_reply(
            3,
            6,
            info(Ballot::new(1, 3), true, Ballot::new(3, 2), false),
        );
        assert_eq!(e.tick().unwrap().new_leader, Some(Ballot::new(4, 1)));
    }

    #[test]
    fn indirect_liveness_keeps_the_chain_stable() {
        let mut e = election(3);
        e.leader = Ballot::new(2, 1);
        let own = e.ballot;
        e.round = 1;
        // Node 2 hears leader 1 directly; node 3 does not hear node 1 at all.
        e.on_reply(2, 1, info(Ballot::new(1, 2), true, Ballot::new(2, 1), true));
        assert_eq!(e.tick().unwrap().new_leader, None);
        assert_eq!(
            e.ballot, own,
            "no raise while a quorum-connected peer hears the leader"
        );
    }

    #[test]
    fn isolated_replica_never_raises() {
        let mut e = election(1);
        e.leader = Ballot::new(2, 2);
        let own = e.ballot;
        for _ in 0..10 {
            e.tick();
        }
        assert_eq!(e.ballot, own);
        assert!(!e.quorum_connected);
    }

    #[test]
    fn starts_above_the_durable_promise() {
        let e = Election::new(1, 2, 1, 0, Ballot::new(9, 3), 0);
        assert_eq!(e.ballot, Ballot::new(10, 1));
    }
}
