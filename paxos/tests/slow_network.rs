//! Leader election and progress on slow networks: message delays far above the heartbeat period.
//!
//! The election is Omni-Paxos's ballot leader election (BLE; Ng, Haridi, Carbone, "Omni-Paxos:
//! Breaking the Barriers of Partial Connectivity", EuroSys 2023, the section on Ballot Leader
//! Election): a replica is *quorum-connected* when it hears a majority within one heartbeat
//! round. Counting only the replies of the round that asked for them keeps stale news out, but
//! with fixed rounds a network whose round trip reaches the round length connects nobody, and
//! no leader is ever elected. Each replica therefore sizes its own rounds from the round trips
//! it measures (`core/election.rs`).
//!
//! The four sweeps: three or five replicas; message delays drawn per message up to ten
//! heartbeat periods (`heartbeat_ticks * tick_interval`), or one fixed delay per seed in the same
//! range; per-node tick rates that differ by up to 20 %; a closed-loop client workload of
//! appends and linearizable reads. In every seed a leader is elected and every client operation
//! is decided and answered, while agreement, validity, integrity and "decided at most once" are
//! checked after every step. 1,000 seeds each (`SIM_SEEDS` changes it, `SIM_SEED` replays one).
//!
//! Named cases: the one-tick delay that stalled fixed rounds (the regression test), round trips
//! just below and beyond the cap [`paxos::Config::heartbeat_ticks_max`], fail-over on a slow
//! network, and rounds shrinking back (with quick fail-over) once the network is fast again.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use common::sim::{run_seeds, Fault, LinkConfig, Sim, SimConfig, SimError};
use common::{Node, NodeId};
use paxos::{Config, Event};
use support::*;

/// Virtual time per tick.
const TICK: u64 = 10;
/// Virtual time per heartbeat round at the default `heartbeat_ticks`.
const PERIOD: u64 = paxos::config::HEARTBEAT_TICKS_DEFAULT * TICK;
/// The longest one-way delay: ten heartbeat periods.
const DELAY_MAX: u64 = 10 * PERIOD;
/// Clients and operations per client of the workload.
const CLIENTS: u64 = 3;
const OPS: u64 = 10;
/// Seeds per configuration (`SIM_SEEDS` overrides).
const SEEDS: u64 = 1_000;

/// How the links delay messages.
#[derive(Clone, Copy, Debug)]
enum Delay {
    /// Each message draws its delay from `0..=DELAY_MAX`.
    Drawn,
    /// Every message takes the same delay, drawn once per seed from `0..=DELAY_MAX`.
    Fixed,
}

fn slow_sim(seed: u64, n: u64, delay: Delay) -> Result<Sim<Kv>, SimError> {
    let members: Vec<NodeId> = (1..=n).collect();
    let mut config = SimConfig::new(seed, members.clone());
    config.tick_interval = TICK;
    // Nodes' ticks come every TICK to TICK * 1.2: their rounds drift apart.
    config.tick_drift_max = TICK / 5;
    config.link = match delay {
        Delay::Drawn => LinkConfig {
            latency_min: 0,
            latency_max: DELAY_MAX,
            ..LinkConfig::default()
        },
        Delay::Fixed => {
            config.tick_skew = 0;
            LinkConfig::fixed(common::DetRng::new(seed).range_inclusive(0, DELAY_MAX))
        }
    };
    config.sync_latency_max = 3;
    config.record_events = false;
    config.hash_contents = false;
    let mut sim = Sim::new(config, move |id| {
        let mut c = Config::new(id, members.clone());
        c.seed = seed;
        c.into()
    })?;
    add_agreement(&mut sim);
    add_validity(&mut sim);
    add_integrity(&mut sim);
    add_decided_once(&mut sim);
    Ok(sim)
}

/// One seed: a leader is elected and every client operation is decided and answered.
fn run(seed: u64, n: u64, delay: Delay) -> Result<(), SimError> {
    let mut sim = slow_sim(seed, n, delay)?;
    // A client waits for several worst-case round trips before it tries another replica.
    let timeout = 10 * DELAY_MAX;
    let log = kv_workload_with(
        &mut sim,
        n,
        CLIENTS,
        OPS,
        0,
        u64::MAX,
        true,
        Write::Append,
        timeout,
    );
    let deadline = 2_000 * PERIOD;
    if !sim.run_until_cond(deadline, |view| all_answered(view.history(), CLIENTS, OPS))? {
        let state: Vec<_> = (1..=n)
            .map(|id| sim.node(id).map(|r| r.metrics()))
            .collect();
        return Err(sim.fail_now(format!(
            "{delay:?} delays: not every operation decided by {deadline}; replicas: {state:?}"
        )));
    }
    if let Some(e) = log.borrow().errors.first() {
        return Err(sim.fail_now(e.clone()));
    }
    Ok(())
}

#[test]
fn three_replicas_drawn_delays_up_to_ten_heartbeat_periods() {
    run_seeds(SEEDS, |seed| run(seed, 3, Delay::Drawn)).unwrap();
}

#[test]
fn five_replicas_drawn_delays_up_to_ten_heartbeat_periods() {
    run_seeds(SEEDS, |seed| run(seed, 5, Delay::Drawn)).unwrap();
}

#[test]
fn three_replicas_fixed_delay_up_to_ten_heartbeat_periods() {
    run_seeds(SEEDS, |seed| run(seed, 3, Delay::Fixed)).unwrap();
}

#[test]
fn five_replicas_fixed_delay_up_to_ten_heartbeat_periods() {
    run_seeds(SEEDS, |seed| run(seed, 5, Delay::Fixed)).unwrap();
}

/// The case that stalled with fixed rounds: three replicas, default configuration, every
/// message takes exactly one tick, ticks in lockstep. A heartbeat's reply then arrives exactly
/// when its two-tick round ends, and a reply counted only within its round never counted.
#[test]
fn one_tick_delay_elects_a_leader_and_decides() {
    for seed in 0..10 {
        let n = 3;
        let members: Vec<NodeId> = (1..=n).collect();
        let mut config = SimConfig::new(seed, members.clone());
        config.tick_interval = TICK;
        config.tick_skew = 0;
        config.link = LinkConfig::fixed(TICK);
        let mut sim = Sim::new(config, move |id| Config::new(id, members.clone()).into()).unwrap();
        add_agreement(&mut sim);
        let log = kv_workload(&mut sim, n, CLIENTS, OPS, 0, u64::MAX, false);
        let done = sim
            .run_until_cond(100 * PERIOD, |view| {
                all_answered(view.history(), CLIENTS, OPS)
            })
            .unwrap();
        assert!(done, "seed {seed}: operations not decided");
        assert!(log.borrow().errors.is_empty());
        let leaders = (1..=n)
            .filter(|&id| sim.node(id).is_some_and(|r| r.is_leader()))
            .count();
        assert_eq!(leaders, 1, "seed {seed}");
        // Every replica's rounds grew just enough: twice the two-tick round trip.
        for id in 1..=n {
            let m = sim.node(id).unwrap().metrics();
            assert_eq!((m.round_ticks, m.rtt_ticks_max), (4, 2), "seed {seed}");
            assert_eq!(m.rounds_without_quorum, 0);
        }
    }
}

/// With its defaults the election copes with round trips up to just below
/// `heartbeat_ticks_max` (128 ticks): here 120.
#[test]
fn round_trips_just_below_the_cap_still_elect_a_leader() {
    let n = 3;
    let members: Vec<NodeId> = (1..=n).collect();
    let mut config = SimConfig::new(1, members.clone());
    config.tick_interval = TICK;
    config.tick_skew = 0;
    config.link = LinkConfig::fixed(60 * TICK);
    let mut sim = Sim::new(config, move |id| Config::new(id, members.clone()).into()).unwrap();
    add_agreement(&mut sim);
    kv_workload(&mut sim, n, 1, 2, 0, u64::MAX, false);
    let done = sim
        .run_until_cond(2_000 * PERIOD, |view| all_answered(view.history(), 1, 2))
        .unwrap();
    assert!(done);
    for id in 1..=n {
        let m = sim.node(id).unwrap().metrics();
        assert_eq!(m.round_ticks, paxos::config::HEARTBEAT_TICKS_MAX_DEFAULT);
    }
}

/// Beyond the cap nobody is ever quorum-connected, and each replica says why: an event at the
/// first round without a quorum and each time the count doubles, naming the round trip.
#[test]
fn round_trips_beyond_the_cap_are_reported() {
    let n = 3;
    let members: Vec<NodeId> = (1..=n).collect();
    let mut config = SimConfig::new(1, members.clone());
    config.tick_interval = TICK;
    config.tick_skew = 0;
    config.link = LinkConfig::fixed(10 * TICK);
    config.record_events = true;
    let mut sim: Sim<Kv> = Sim::new(config, move |id| {
        let mut c = Config::new(id, members.clone());
        c.heartbeat_ticks_max = 16; // round trips of 20 ticks never fit
        c.into()
    })
    .unwrap();
    sim.run_until(300 * PERIOD).unwrap();
    assert!((1..=n).all(|id| !sim.node(id).unwrap().is_leader()));
    let m = sim.node(1).unwrap().metrics();
    // Ten ticks each way; a reply that arrives at the same instant as a tick may be handled
    // before it, so the replica measures 19 or 20 of its ticks.
    let rtt = m.rtt_ticks_max;
    assert!((19..=20).contains(&rtt), "{m:?}");
    assert_eq!(m.round_ticks, 16);
    assert!(m.rounds_without_quorum > 16);
    let reports: Vec<(u64, String)> = sim
        .events()
        .iter()
        .filter_map(|(_, id, e)| match e {
            Event::QuorumNotReached { rounds, .. } if *id == 1 => {
                Some((rounds.to_owned(), e.to_string()))
            }
            _ => None,
        })
        .collect();
    let counts: Vec<u64> = reports.iter().map(|(r, _)| *r).collect();
    let expected: Vec<u64> = (0..counts.len() as u32).map(|i| 1 << i).collect();
    assert_eq!(counts, expected, "rate-limited: 1, 2, 4, 8, ... rounds");
    assert!(counts.len() >= 5);
    assert_eq!(
        reports[4].1,
        format!("quorum not reached in 16 rounds; longest round trip seen {rtt} ticks (rounds of 16 ticks)")
    );
}

/// On a slow network a crashed leader is still replaced; it takes more (longer) rounds than on a
/// fast one, which is the price of the adaptation.
#[test]
fn a_crashed_leader_is_replaced_on_a_slow_network() {
    for seed in 0..200 {
        let n = 3;
        let mut sim = slow_sim(seed, n, Delay::Drawn).unwrap();
        let leader =
            |sim: &Sim<Kv>| (1..=n).find(|&id| sim.node(id).is_some_and(|r| r.is_leader()));
        assert!(sim
            .run_until_cond(400 * PERIOD, |v| (1..=n)
                .any(|id| v.node(id).is_some_and(|r| r.is_leader())))
            .unwrap());
        let first = leader(&sim).unwrap();
        sim.apply(Fault::Crash(first)).unwrap();
        let t = sim.now();
        let replaced = sim
            .run_until_cond(t + 400 * PERIOD, move |v| {
                (1..=n).any(|id| id != first && v.node(id).is_some_and(|r| r.is_leader()))
            })
            .unwrap();
        assert!(replaced, "seed {seed}");
        let now = sim.now();
        let log = kv_workload(&mut sim, n, 1, 2, now, u64::MAX, false);
        let t = sim.now();
        assert!(sim
            .run_until_cond(t + 400 * PERIOD, |v| all_answered(v.history(), 1, 2))
            .unwrap());
        assert!(log.borrow().errors.is_empty());
    }
}

/// Rounds come back down when the network speeds up again, and with them quick fail-over: after
/// a slow period, a crashed leader is replaced as fast as on a network that was never slow
/// (the bound of `scenarios.rs`'s `leader_crash_and_recovery`).
#[test]
fn rounds_shrink_back_after_a_slow_period_and_fail_over_stays_quick() {
    for seed in 0..200 {
        let n = 3;
        let mut sim = sim(seed, n, |_| {}).unwrap();
        add_agreement(&mut sim);
        // Slow: every delay up to ten heartbeat periods.
        sim.apply(Fault::Latency {
            min: 0,
            max: DELAY_MAX,
        })
        .unwrap();
        let log = kv_workload(&mut sim, n, 2, 3, 0, u64::MAX, false);
        assert!(sim
            .run_until_cond(400 * PERIOD, |v| all_answered(v.history(), 2, 3))
            .unwrap());
        assert!(log.borrow().errors.is_empty());
        let grown = (1..=n)
            .map(|id| sim.node(id).unwrap().metrics().round_ticks)
            .max();
        assert!(
            grown > Some(paxos::config::HEARTBEAT_TICKS_DEFAULT),
            "seed {seed}"
        );
        // Fast again: every replica's rounds return to `heartbeat_ticks`.
        sim.apply(Fault::ResetNetwork).unwrap();
        let t = sim.now();
        let short = sim
            .run_until_cond(t + 400 * PERIOD, move |v| {
                (1..=n).all(|id| {
                    v.node(id).is_some_and(|r| {
                        r.metrics().round_ticks == paxos::config::HEARTBEAT_TICKS_DEFAULT
                    })
                })
            })
            .unwrap();
        assert!(short, "seed {seed}: rounds did not shrink back");
        let Some(first) = (1..=n).find(|&id| sim.node(id).is_some_and(|r| r.is_leader())) else {
            panic!("seed {seed}: no leader");
        };
        sim.apply(Fault::Crash(first)).unwrap();
        let t = sim.now();
        let replaced = sim
            .run_until_cond(t + 400, move |v| {
                (1..=n).any(|id| id != first && v.node(id).is_some_and(|r| r.is_leader()))
            })
            .unwrap();
        assert!(
            replaced,
            "seed {seed}: slow fail-over after the network sped up"
        );
    }
}
