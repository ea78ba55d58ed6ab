//! Our consensus cores against their peers, pumped the same way in one thread (the `peers`
//! feature).
//!
//! Four implementations of a replicated log take part ([`Implementation`]): omnipaxos's sequence
//! paxos, TiKV's raft-rs, and the workspace's own [`paxos`] and [`raft`] cores. Each one sits
//! behind the same small trait, [`Pump`], and [`prepare`] and [`run`] drive every pump the same
//! way, so what differs between two figures is the implementation alone:
//!
//! - **One thread, no IO.** Messages go into one FIFO queue and are delivered synchronously, one
//!   at a time, oldest first; nothing is encoded (no codec, no serialization).
//! - **Records in memory.** Each node keeps what it persists in an in-memory `Vec`: our cores'
//!   durable records are released from their outbox into a `Vec` per node (a checkpoint replaces
//!   the records before it, as storage would); omnipaxos writes to its own `MemoryStorage`;
//!   raft-rs to its own `MemStorage`. Nothing syncs. Our Raft checkpoints every 100 000 entries
//!   by default (`snapshot_log_entries_max`), and the pump then frees the records before the
//!   checkpoint inside the measured run; the peers are never asked to compact, so their logs
//!   only grow.
//! - **A leader first.** [`prepare`] ticks every node and delivers until one leader is followed
//!   by all and ready for proposals; the election is not measured.
//! - **Rounds of W proposals.** [`run`] hands `in_flight` (W) commands to the leader, one
//!   request each, and only then releases the leader's effects (as a driver's loop does with the
//!   requests it found waiting); then it delivers messages until none is in flight, and checks
//!   that the leader applied all W before the next round starts. A round that stalls gets ticks
//!   (counted, and bounded by [`ROUND_TICKS_MAX`]). Every implementation gets the same W
//!   commands at once, so each has the same chance to batch them.
//! - **Applied at the leader.** The figure is commands applied at the leader per second: our
//!   cores' `Applied` answers, the entries omnipaxos reports decided (read back from its log, as
//!   an application would), raft-rs's committed entries from its `Ready`. Every implementation
//!   applies the same command, a `u64` added to a sum; [`run`] checks the sum at the end.
//!
//! Each implementation runs with its own defaults, except two of raft-rs's, so that it can batch
//! as the others do: `max_size_per_msg` (its default of 0 caps an append at one entry) is 1 MiB
//! as in TiKV, and `batch_append` is on (merges the appends a `Ready` holds for one follower).

mod omnipaxos;
mod ours;
mod raftrs;

use std::time::{Duration, Instant};

use common::NodeId;

use crate::BenchError;

pub use self::omnipaxos::OmniPaxosPump;
pub use self::ours::{OurCore, OurPump};
pub use self::raftrs::RaftRsPump;

/// Most ticks [`prepare`] gives a cluster to elect a leader.
pub const ELECTION_TICKS_MAX: u64 = 2_000;
/// Most ticks one round of [`run`] may need before its commands are applied.
pub const ROUND_TICKS_MAX: u64 = 1_000;
/// Most messages delivered by one [`Pump::deliver_until_quiet`]: far above what a round of
/// [`IN_FLIGHT_MAX`] commands needs on [`REPLICAS_MAX`] replicas, so reaching it means a
/// message storm.
pub const DELIVERIES_MAX: u64 = 10_000_000;
/// Most commands kept in flight at the leader.
pub const IN_FLIGHT_MAX: u64 = 100_000;
/// Most replicas of one cluster.
pub const REPLICAS_MAX: u64 = 9;

/// One implementation of a replicated log, driven by hand in one thread.
///
/// Call order: [`Pump::tick_all`] and [`Pump::deliver_until_quiet`] until
/// [`Pump::find_leader`] answers (that is [`prepare`]); then any number of rounds of
/// [`Pump::propose`] followed by [`Pump::deliver_until_quiet`] (that is [`run`]).
///
/// Every step's effects are released right after it (records stored, messages queued, answers
/// read), except in [`Pump::propose`], which releases once after all its requests: that is
/// where an implementation gets the chance to put many commands in one message.
pub trait Pump {
    /// The implementation's name in tables.
    fn name(&self) -> &'static str;

    /// One tick of logical time on every node, and the release of what each tick produced.
    fn tick_all(&mut self) -> Result<(), BenchError>;

    /// Delivers queued messages, oldest first, releasing every step's effects at once, until no
    /// message is in flight (at most [`DELIVERIES_MAX`]); returns how many commands the leader
    /// applied meanwhile.
    fn deliver_until_quiet(&mut self) -> Result<u64, BenchError>;

    /// The node every node follows, once there is one and it accepts proposals. From the first
    /// answer on, [`Pump::propose`] goes to that node.
    fn find_leader(&mut self) -> Option<NodeId>;

    /// Proposes every command of `commands` at the leader, one request each, then releases the
    /// effects of all of them at once (queues the messages, delivers none): one pass of a
    /// driver's loop that found these requests waiting.
    fn propose(&mut self, commands: &[u64]) -> Result<(), BenchError>;

    /// The sum of every command the leader applied, wrapping.
    fn applied_sum(&self) -> u64;

    /// Messages delivered so far.
    fn delivered(&self) -> u64;
}

/// The implementations taking part.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Implementation {
    /// omnipaxos 0.2: sequence paxos with ballot leader election.
    Omnipaxos,
    /// raft-rs 0.7 (`RawNode` and `Ready`).
    RaftRs,
    /// The workspace's Multi-Paxos core ([`paxos::PaxosNode`]).
    OurPaxos,
    /// The workspace's Raft core ([`raft::RaftNode`]).
    OurRaft,
}

impl Implementation {
    /// Every implementation, peers first.
    pub const ALL: [Implementation; 4] = [
        Implementation::Omnipaxos,
        Implementation::RaftRs,
        Implementation::OurPaxos,
        Implementation::OurRaft,
    ];

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Implementation::Omnipaxos => "omnipaxos",
            Implementation::RaftRs => "raft-rs",
            Implementation::OurPaxos => "our paxos",
            Implementation::OurRaft => "our raft",
        }
    }

    /// Whether this is one of the workspace's cores (rather than a peer).
    pub fn is_ours(self) -> bool {
        matches!(self, Implementation::OurPaxos | Implementation::OurRaft)
    }

    /// A cluster of `replicas` nodes (ids `1..=replicas`), before any election.
    pub fn build(self, replicas: u64) -> Result<Box<dyn Pump>, BenchError> {
        if !(2..=REPLICAS_MAX).contains(&replicas) {
            return Err(BenchError::Invalid(format!(
                "{replicas} replicas is not between 2 and {REPLICAS_MAX}"
            )));
        }
        Ok(match self {
            Implementation::Omnipaxos => Box::new(OmniPaxosPump::new(replicas)?),
            Implementation::RaftRs => Box::new(RaftRsPump::new(replicas)?),
            Implementation::OurPaxos => {
                Box::new(OurPump::<paxos::PaxosNode<paxos::Counter>>::new(replicas)?)
            }
            Implementation::OurRaft => {
                Box::new(OurPump::<raft::RaftNode<paxos::Counter>>::new(replicas)?)
            }
        })
    }
}

/// One measured setup: cluster size and commands in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Setup {
    /// Replicas in the cluster.
    pub replicas: u64,
    /// Commands proposed at once at the leader (W).
    pub in_flight: u64,
}

impl Setup {
    /// A short label: `3 replicas, W = 100`.
    pub fn label(&self) -> String {
        format!("{} replicas, W = {}", self.replicas, self.in_flight)
    }
}

/// The setups of the comparison.
pub const SETUPS: [Setup; 3] = [
    Setup {
        replicas: 3,
        in_flight: 1,
    },
    Setup {
        replicas: 3,
        in_flight: 100,
    },
    Setup {
        replicas: 5,
        in_flight: 100,
    },
];

/// Builds `implementation`'s cluster of `replicas` nodes and elects a leader (not measured).
pub fn prepare(implementation: Implementation, replicas: u64) -> Result<Box<dyn Pump>, BenchError> {
    let mut pump = implementation.build(replicas)?;
    for _ in 0..ELECTION_TICKS_MAX {
        let applied = pump.deliver_until_quiet()?;
        if applied != 0 {
            return Err(BenchError::Op(format!(
                "{}: {applied} commands applied before any was proposed",
                pump.name()
            )));
        }
        if pump.find_leader().is_some() {
            return Ok(pump);
        }
        pump.tick_all()?;
    }
    Err(BenchError::NotReady(format!(
        "{}: no leader after {ELECTION_TICKS_MAX} ticks",
        pump.name()
    )))
}

/// What one [`run`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Run {
    /// Commands applied at the leader.
    pub commands: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Messages delivered.
    pub messages: u64,
    /// Ticks that stalled rounds needed (0 when every round completed by messages alone).
    pub ticks: u64,
}

impl Run {
    /// Commands applied at the leader per second.
    pub fn commands_per_sec(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Runs rounds of `in_flight` commands at the leader of a [`prepare`]d pump until `commands`
/// were applied there; the last round is shorter when `in_flight` does not divide `commands`.
///
/// Each round proposes its commands, then delivers until quiet; a round whose commands are not
/// all applied then gets one tick at a time (at most [`ROUND_TICKS_MAX`]). A leader that applies
/// more than was proposed, or a sum of applied commands that differs from the sum proposed, is an
/// error.
pub fn run(pump: &mut dyn Pump, in_flight: u64, commands: u64) -> Result<Run, BenchError> {
    if in_flight == 0 || in_flight > IN_FLIGHT_MAX {
        return Err(BenchError::Invalid(format!(
            "{in_flight} commands in flight is not between 1 and {IN_FLIGHT_MAX}"
        )));
    }
    let name = pump.name();
    let sum_before = pump.applied_sum();
    let messages_before = pump.delivered();
    let mut applied = 0u64;
    let mut proposed_sum = 0u64;
    let mut ticks = 0u64;
    let mut batch: Vec<u64> = Vec::with_capacity(in_flight as usize);
    let start = Instant::now();
    while applied < commands {
        let round = in_flight.min(commands - applied);
        batch.clear();
        // Distinct, non-zero commands: the sum check then catches a lost or doubled one.
        batch.extend((applied + 1)..=(applied + round));
        for &command in &batch {
            proposed_sum = proposed_sum.wrapping_add(command);
        }
        pump.propose(&batch)?;
        let mut done = pump.deliver_until_quiet()?;
        let mut round_ticks = 0;
        while done < round {
            if round_ticks == ROUND_TICKS_MAX {
                return Err(BenchError::Op(format!(
                    "{name}: {done} of {round} commands applied after {ROUND_TICKS_MAX} ticks"
                )));
            }
            pump.tick_all()?;
            round_ticks += 1;
            done += pump.deliver_until_quiet()?;
        }
        if done > round {
            return Err(BenchError::Op(format!(
                "{name}: {done} commands applied in a round of {round}"
            )));
        }
        ticks += round_ticks;
        applied += done;
    }
    let elapsed = start.elapsed();
    let sum = pump.applied_sum().wrapping_sub(sum_before);
    if sum != proposed_sum {
        return Err(BenchError::Op(format!(
            "{name}: the applied commands sum to {sum}, the proposed ones to {proposed_sum}"
        )));
    }
    Ok(Run {
        commands: applied,
        elapsed,
        messages: pump.delivered() - messages_before,
        ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implementation_applies_every_setup() {
        for implementation in Implementation::ALL {
            for setup in SETUPS {
                let mut pump = prepare(implementation, setup.replicas)
                    .unwrap_or_else(|e| panic!("{implementation:?}: {e}"));
                let run = run(pump.as_mut(), setup.in_flight, 1_000)
                    .unwrap_or_else(|e| panic!("{implementation:?} {setup:?}: {e}"));
                assert_eq!(run.commands, 1_000);
                assert!(run.messages > 0);
            }
        }
    }

    #[test]
    fn invalid_runs_are_refused() {
        assert!(Implementation::OurRaft.build(1).is_err());
        let Ok(mut pump) = prepare(Implementation::OurRaft, 3) else {
            panic!("our raft elects a leader");
        };
        assert!(run(pump.as_mut(), 0, 10).is_err());
        assert!(run(pump.as_mut(), IN_FLIGHT_MAX + 1, 10).is_err());
    }
}
