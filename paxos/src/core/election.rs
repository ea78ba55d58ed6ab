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
//!
//! # Adaptive round length
//!
//! Omni-Paxos counts a reply only within the round that asked for it, so a link whose round
//! trip reaches the round length never counts as connected, and with fixed rounds a cluster on
//! such links elects nobody at all. Here each replica sizes its own rounds:
//!
//! - A round starts at [`Config::heartbeat_ticks`](crate::Config::heartbeat_ticks) ticks. The
//!   starts of the last [`ROUND_HISTORY_MAX`] rounds are remembered, so every reply, even one
//!   that arrives after its round ended, yields a round trip in this replica's ticks.
//! - A round trip at least as long as the current round means the round is too short for that
//!   link: at the end of the round, the round grows to twice the longest round trip it saw (so
//!   the same reply would come back within half a round), at most
//!   [`Config::heartbeat_ticks_max`](crate::Config::heartbeat_ticks_max).
//! - After [`CALM_ROUNDS_TO_SHRINK`] rounds in a row that reached a quorum with every reply
//!   back within a quarter of the round, the round shrinks to twice the longest of those round
//!   trips (not below `heartbeat_ticks`). The quarter is the hysteresis: right after either
//!   change every reply takes up to half a round, so a constant delay never shrinks what it
//!   made grow, and the round settles instead of oscillating.
//! - A round without a quorum does not grow the round by itself: a silent peer (crashed, cut
//!   off) says nothing about delays, and a replica that backed off blindly while partitioned
//!   would detect a failed leader slowly long after the partition healed. Slow peers always
//!   answer eventually, and their answers are measured.
//! - Leader failure detection counts rounds, so it scales with the round length: a cluster on
//!   fast links keeps short rounds and quick fail-over; slow links buy progress with slower
//!   fail-over.

use std::collections::VecDeque;

use common::{DetRng, NodeId};

use crate::message::Ballot;

/// How many recent rounds' start ticks are remembered to measure late replies. A reply to an
/// older round still counts as late, with the age of the oldest remembered round as a lower
/// bound of its round trip.
pub(crate) const ROUND_HISTORY_MAX: usize = 64;
/// Calm rounds in a row (quorum reached, every reply back within a quarter of the round) before
/// the round shrinks.
pub(crate) const CALM_ROUNDS_TO_SHRINK: u64 = 4;

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
    /// The shortest round ([`Config::heartbeat_ticks`](crate::Config::heartbeat_ticks)).
    round_ticks_min: u64,
    /// The longest round
    /// ([`Config::heartbeat_ticks_max`](crate::Config::heartbeat_ticks_max)).
    round_ticks_max: u64,
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
    /// Ticks elapsed in the current round.
    ticks: u64,
    /// Length of the current round (adapted to the round trips seen, see the module doc).
    pub round_ticks: u64,
    /// Ticks since this replica started: the clock round trips are measured with.
    ticks_total: u64,
    /// `(round, ticks_total at its start)` of the recent rounds, oldest first.
    round_starts: VecDeque<(u64, u64)>,
    /// Longest round trip measured during the current round (late replies included).
    round_rtt_ticks_max: Option<u64>,
    /// Calm rounds in a row, and the longest round trip among them.
    calm_rounds: u64,
    calm_rtt_ticks_max: u64,
    /// Rounds in a row that did not hear a majority (the first round, which sends no
    /// heartbeats, does not count).
    pub rounds_without_quorum: u64,
    /// Longest round trip measured since the last round that heard a majority.
    pub streak_rtt_ticks_max: Option<u64>,
    /// Longest round trip ever measured.
    pub rtt_ticks_max: Option<u64>,
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
    /// Rounds in a row, the one that ended included, that did not hear a majority.
    pub rounds_without_quorum: u64,
}

impl Election {
    /// `heartbeat_ticks..=heartbeat_ticks_max` bounds the round length (validated by
    /// [`Config::validate`](crate::Config::validate); a maximum below the minimum is raised to
    /// it).
    pub(crate) fn new(
        id: NodeId,
        majority: usize,
        heartbeat_ticks: u64,
        heartbeat_ticks_max: u64,
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
            round_ticks_min: heartbeat_ticks.max(1),
            round_ticks_max: heartbeat_ticks_max.max(heartbeat_ticks).max(1),
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
            round_ticks: heartbeat_ticks.max(1),
            ticks_total: 0,
            round_starts: VecDeque::from([(0, 0)]),
            round_rtt_ticks_max: None,
            calm_rounds: 0,
            calm_rtt_ticks_max: 0,
            rounds_without_quorum: 0,
            streak_rtt_ticks_max: None,
            rtt_ticks_max: None,
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

    /// Moves the election to configuration `epoch` of `members`: this replica's candidacy
    /// ballot moves to the new epoch with its round (and stays above `promised`), the leader
    /// followed does too if it is still a member (`leader_stays`), and the round's replies from
    /// replicas outside the new configuration are dropped. Replies from the members that stay
    /// still count for quorum connectivity: they arrived in this round, and dropping them would
    /// leave a leader that stays without a quorum at the end of the round, stepping down for
    /// nothing (the longer the round, the likelier; their old-epoch ballots are not candidates).
    pub(crate) fn set_membership(
        &mut self,
        epoch: u64,
        members: &[NodeId],
        leader_stays: bool,
        promised: Ballot,
    ) {
        if epoch < self.epoch {
            return;
        }
        self.epoch = epoch;
        self.majority = members.len() / 2 + 1;
        self.ballot = Ballot::in_epoch(epoch, self.ballot.round, self.id);
        self.raise_above(promised);
        self.leader = if leader_stays && self.leader != Ballot::ZERO {
            Ballot::in_epoch(epoch, self.leader.round, self.leader.leader)
        } else {
            Ballot::ZERO
        };
        self.replies.retain(|(p, _)| members.contains(p));
        self.missed_rounds = 0;
    }

    /// A heartbeat reply arrived. Every reply measures a round trip; only a reply of the
    /// current round counts for this round's view (quorum connectivity, the leader's liveness),
    /// as in Omni-Paxos: a late reply may describe a peer that has changed since.
    pub(crate) fn on_reply(&mut self, from: NodeId, round: u64, info: HeartbeatInfo) {
        if round > self.round {
            // Not a round of this incarnation (a reply to a heartbeat sent before a restart):
            // it measures nothing.
            return;
        }
        let started = match self.round_starts.iter().find(|(r, _)| *r == round) {
            Some(&(_, start)) => start,
            // Older than every remembered round: it started before the oldest one, so its
            // round trip is at least that old.
            None => self.round_starts.front().map_or(0, |&(_, start)| start),
        };
        self.measure(self.ticks_total.saturating_sub(started));
        if round != self.round || self.replies.iter().any(|(p, _)| *p == from) {
            return; // late or duplicated
        }
        self.replies.push((from, info));
    }

    fn measure(&mut self, rtt_ticks: u64) {
        let longest = |seen: Option<u64>| Some(seen.map_or(rtt_ticks, |s| s.max(rtt_ticks)));
        self.round_rtt_ticks_max = longest(self.round_rtt_ticks_max);
        self.streak_rtt_ticks_max = longest(self.streak_rtt_ticks_max);
        self.rtt_ticks_max = longest(self.rtt_ticks_max);
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
        self.ticks_total += 1;
        self.ticks += 1;
        if self.ticks < self.round_ticks {
            return None;
        }
        self.ticks = 0;
        let new_leader = self.end_round();
        self.adapt_round_ticks();
        self.round += 1;
        if self.round_starts.len() >= ROUND_HISTORY_MAX {
            self.round_starts.pop_front();
        }
        self.round_starts.push_back((self.round, self.ticks_total));
        Some(RoundOutcome {
            round: self.round,
            new_leader,
            rounds_without_quorum: self.rounds_without_quorum,
        })
    }

    /// Sizes the next round from the round trips the ending one measured (see the module doc).
    fn adapt_round_ticks(&mut self) {
        let rtt = self.round_rtt_ticks_max.take();
        let round_ticks = self.round_ticks;
        let calm = |rtt: u64| rtt.saturating_mul(4) <= round_ticks;
        match rtt {
            Some(rtt) if rtt >= self.round_ticks => {
                // A reply came back after its round had ended (or would have, had it been
                // sent in this round): grow so that it comes back within half a round.
                self.round_ticks = rtt
                    .saturating_mul(2)
                    .clamp(self.round_ticks_min, self.round_ticks_max);
                self.calm_rounds = 0;
                self.calm_rtt_ticks_max = 0;
            }
            _ if self.quorum_connected
                && self.round_ticks > self.round_ticks_min
                && rtt.is_none_or(calm) =>
            {
                self.calm_rounds += 1;
                self.calm_rtt_ticks_max = self.calm_rtt_ticks_max.max(rtt.unwrap_or(0));
                if self.calm_rounds >= CALM_ROUNDS_TO_SHRINK {
                    // Every reply of these rounds took at most a quarter of the round: halve it
                    // at least, and keep twice the longest of them.
                    self.round_ticks = self
                        .calm_rtt_ticks_max
                        .saturating_mul(2)
                        .clamp(self.round_ticks_min, self.round_ticks_max);
                    self.calm_rounds = 0;
                    self.calm_rtt_ticks_max = 0;
                }
            }
            _ => {
                self.calm_rounds = 0;
                self.calm_rtt_ticks_max = 0;
            }
        }
    }

    fn end_round(&mut self) -> Option<Ballot> {
        let replies = std::mem::take(&mut self.replies);
        self.quorum_connected = replies.len() + 1 >= self.majority;
        if self.quorum_connected {
            self.rounds_without_quorum = 0;
            self.streak_rtt_ticks_max = None;
        } else if self.round > 0 {
            // Round 0 sent no heartbeats: it could not hear anyone.
            self.rounds_without_quorum += 1;
        }
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
        Election::new(id, 2, 1, 1, 0, Ballot::ZERO, 7)
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
        let e = Election::new(1, 2, 1, 1, 0, Ballot::new(9, 3), 0);
        assert_eq!(e.ballot, Ballot::new(10, 1));
    }

    // ---- adaptive round length ----

    /// Node 1 of three, with rounds between `min` and `max` ticks.
    fn adaptive(min: u64, max: u64) -> Election {
        Election::new(1, 2, min, max, 0, Ballot::ZERO, 7)
    }

    /// Peers 2 and 3 of node 1, answering its heartbeats after a delay, and node 1's clock.
    #[derive(Default)]
    struct Peers {
        now: u64,
        /// Replies on their way: (arrival tick, peer, round).
        in_flight: Vec<(u64, NodeId, u64)>,
    }

    impl Peers {
        /// Drives `e` for `rounds` rounds: peer `p` answers the heartbeat of round `r` after
        /// `rtt(p, r)` of node 1's ticks (`None`: never). Returns the round length after each
        /// round and whether that round heard a quorum.
        fn drive(
            &mut self,
            e: &mut Election,
            rounds: usize,
            rtt: impl Fn(NodeId, u64) -> Option<u64>,
        ) -> Vec<(u64, bool)> {
            let mut after = Vec::new();
            while after.len() < rounds {
                self.now += 1;
                let now = self.now;
                if let Some(out) = e.tick() {
                    after.push((e.round_ticks, e.quorum_connected));
                    for peer in [2, 3] {
                        if let Some(d) = rtt(peer, out.round) {
                            self.in_flight.push((now + d, peer, out.round));
                        }
                    }
                }
                self.in_flight.retain(|&(at, peer, round)| {
                    let due = at <= now;
                    if due {
                        let ballot = Ballot::new(1, peer);
                        e.on_reply(peer, round, info(ballot, true, Ballot::ZERO, false));
                    }
                    !due
                });
            }
            after
        }
    }

    fn drive(
        e: &mut Election,
        rounds: usize,
        rtt: impl Fn(NodeId, u64) -> Option<u64>,
    ) -> Vec<(u64, bool)> {
        Peers::default().drive(e, rounds, rtt)
    }

    #[test]
    fn a_late_reply_grows_the_round_to_twice_the_round_trip() {
        let mut e = adaptive(2, 128);
        // A round trip of exactly one round: every reply misses its round.
        let after = drive(&mut e, 4, |_, _| Some(2));
        assert_eq!(after[0], (2, false), "round 0 sends no heartbeat");
        assert_eq!(
            after[1],
            (2, false),
            "round 1's replies arrive after it ended..."
        );
        assert_eq!(
            after[2],
            (4, false),
            "...so the round that measured them grows..."
        );
        assert_eq!(
            after[3],
            (4, true),
            "...and they come back within half a round"
        );
        assert_eq!(e.rtt_ticks_max, Some(2));
    }

    #[test]
    fn a_constant_delay_settles_without_oscillating() {
        for rtt in 0..=60 {
            let mut e = adaptive(2, 128);
            let after = drive(&mut e, 200, |_, _| Some(rtt));
            let settled = (2 * rtt).max(2);
            // The round only ever grows under a constant delay, reaches twice the round trip
            // within a few rounds, and from then on every round hears the quorum.
            assert!(after.windows(2).all(|w| w[0].0 <= w[1].0), "rtt {rtt}");
            let first = after.iter().position(|&(len, _)| len == settled);
            let first = first.unwrap_or_else(|| panic!("rtt {rtt}: {after:?}"));
            // The first reply arrives `rtt` ticks after round 1 started, in rounds of 2 ticks.
            assert!(
                first as u64 <= rtt / 2 + 3,
                "rtt {rtt}: settled after {first} rounds"
            );
            assert!(
                after[first + 1..].iter().all(|&a| a == (settled, true)),
                "rtt {rtt}"
            );
            assert_eq!(e.rounds_without_quorum, 0);
        }
    }

    #[test]
    fn early_replies_shrink_the_round_back() {
        let mut e = adaptive(2, 128);
        let mut peers = Peers::default();
        let after = peers.drive(&mut e, 15, |_, _| Some(20));
        assert_eq!(after.last(), Some(&(40, true)));
        // The links become fast. The round in flight still has slow replies; then, after a few
        // calm rounds, the round goes back to the shortest at once.
        let after = peers.drive(&mut e, 10, |_, _| Some(1));
        let calm = CALM_ROUNDS_TO_SHRINK as usize;
        assert!(after[..calm].iter().all(|&a| a == (40, true)), "{after:?}");
        assert!(after[calm..].iter().all(|&a| a == (2, true)), "{after:?}");
    }

    #[test]
    fn a_moderate_speed_up_shrinks_to_twice_the_new_round_trip() {
        let mut e = adaptive(2, 128);
        let mut peers = Peers::default();
        peers.drive(&mut e, 25, |_, _| Some(40));
        assert_eq!(e.round_ticks, 80);
        let after = peers.drive(&mut e, 20, |_, _| Some(15));
        assert_eq!(after.last(), Some(&(30, true)));
        // A round trip of half the round is not calm: the round stays.
        assert!(after.iter().all(|&(len, _)| len == 80 || len == 30));
    }

    #[test]
    fn the_round_never_exceeds_the_cap() {
        let mut e = adaptive(2, 16);
        let after = drive(&mut e, 60, |_, _| Some(40));
        assert!(after.iter().all(|&(len, _)| (2..=16).contains(&len)));
        assert_eq!(e.round_ticks, 16);
        // Replies never make it within a round: no quorum, and the election says why.
        assert!(after.iter().all(|&(_, quorum)| !quorum));
        assert_eq!(e.rounds_without_quorum, 59, "round 0 does not count");
        assert_eq!(e.streak_rtt_ticks_max, Some(40));
    }

    #[test]
    fn a_reply_older_than_the_history_still_grows_the_round() {
        let mut e = adaptive(2, 1_000);
        // Round trips of 200 ticks: replies to rounds long forgotten.
        let after = drive(&mut e, 150, |_, _| Some(200));
        assert!(
            after.last().is_some_and(|&(len, q)| len >= 200 && q),
            "{after:?}"
        );
    }

    #[test]
    fn a_silent_peer_does_not_grow_the_round() {
        // Node 3 is down; node 2 answers at once: a quorum every round, short rounds, so a
        // failed leader is still noticed after a few short rounds.
        let mut e = adaptive(2, 128);
        let after = drive(&mut e, 50, |peer, _| (peer == 2).then_some(0));
        assert!(after[1..].iter().all(|&a| a == (2, true)));
        // No reply at all (a partitioned replica): no quorum, and the round stays short too.
        let mut e = adaptive(2, 128);
        let after = drive(&mut e, 50, |_, _| None);
        assert!(after.iter().all(|&a| a == (2, false)));
        assert_eq!(e.rounds_without_quorum, 49);
        assert_eq!(e.streak_rtt_ticks_max, None);
    }

    #[test]
    fn a_slow_peer_grows_the_round_and_quorum_resets_the_count() {
        let mut e = adaptive(2, 128);
        // Node 2 down, node 3 slow: no quorum until the round covers node 3's round trip.
        let after = drive(&mut e, 10, |peer, _| (peer == 3).then_some(9));
        assert_eq!(after.last(), Some(&(18, true)));
        assert_eq!(e.rounds_without_quorum, 0);
        assert_eq!(e.streak_rtt_ticks_max, None);
        assert_eq!(e.rtt_ticks_max, Some(9));
    }

    #[test]
    fn replies_from_a_previous_incarnation_measure_nothing() {
        let mut e = adaptive(2, 128);
        e.on_reply(2, 40, info(Ballot::new(1, 2), true, Ballot::ZERO, false));
        assert_eq!(e.rtt_ticks_max, None);
    }

    #[test]
    fn a_reconfiguration_keeps_the_replies_of_members_that_stay() {
        // Leader 1 of {1, 2, 3}; replicas 2 and 3 answered this round, then a stop-sign moves
        // the cluster to {1, 2, 4, 5} before the round ends.
        let mut e = election(1);
        e.tick();
        let lead = Ballot::new(e.ballot.round, 1);
        e.leader = lead;
        e.on_reply(2, 1, info(Ballot::new(1, 2), true, lead, true));
        e.on_reply(3, 1, info(Ballot::new(1, 3), true, lead, true));
        e.set_membership(1, &[1, 2, 4, 5], true, Ballot::ZERO);
        // Replica 2's answer still counts, replica 3's does not: with replica 4's, a majority
        // of four. The leader stays quorum-connected instead of stepping down for one round.
        e.on_reply(4, 1, info(Ballot::new(1, 4), false, Ballot::ZERO, false));
        e.tick();
        assert!(e.quorum_connected);
        assert_eq!(e.leader, Ballot::in_epoch(1, lead.round, 1));
        // Without replica 4, replica 2's answer alone is not a majority of four.
        let mut e = election(1);
        e.tick();
        e.on_reply(2, 1, info(Ballot::new(1, 2), true, Ballot::ZERO, false));
        e.on_reply(3, 1, info(Ballot::new(1, 3), true, Ballot::ZERO, false));
        e.set_membership(1, &[1, 2, 4, 5], false, Ballot::ZERO);
        e.tick();
        assert!(!e.quorum_connected);
    }
}
