//! Raft on slow networks: how long a message may take before Raft stops electing leaders.
//!
//! The paper's timing requirement (§5.6) is `broadcastTime ≪ electionTimeout ≪ MTBF`: a
//! candidate must hear a majority of votes, and followers must hear the leader's heartbeats,
//! before an election timeout runs out. Raft does not adapt its timeouts; the operator sizes
//! `election_timeout_ticks_min` above the longest round trip. These simulations pin that rule
//! down on both sides:
//!
//! - with the default timeouts (10–20 ticks, heartbeat every 2), one-way delays up to
//!   [`DEFAULT_DELAY_TICKS_MAX`] ticks (a round trip of at most 8 ticks) elect a leader and
//!   decide commands in every seed;
//! - with message delays drawn up to 10× the heartbeat period (20 ticks one way, a 40-tick
//!   round trip) and election timeouts raised above twice that round trip (a pre-vote round
//!   and a vote round must fit in one timeout), the same holds;
//! - every run gives each node its own clock rate (up to 20 % slower, `tick_drift_max`) and
//!   jittered ticks, crashes the leader once in the middle and restarts it later, and checks
//!   the Figure 3 properties after every step (`install_all`).
//!
//! `SIM_SEED=n` replays seed `n`; `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use std::collections::BTreeMap;

use common::sim::{run_seeds, ClosedLoop, Fault, LinkConfig, Outcome, Sim, SimConfig, SimError};
use common::NodeId;
use raft::kv::KvCommand;
use raft::{Config, RaftError, Request, Response};
use sim_support::{install_all, stable_leader, N};

/// Seeds per test in the normal run.
const SEEDS: u64 = 500;
/// Virtual time per tick.
const TICK: u64 = 10;
/// The heartbeat period, in ticks (the default).
const HEARTBEAT_TICKS: u64 = 2;
/// Longest one-way delay, in ticks, that the default election timeouts are tested against.
const DEFAULT_DELAY_TICKS_MAX: u64 = 4;
/// The leader crashes at this time and comes back [`DOWN_FOR`] later.
const CRASH_AT: u64 = 10_000;
/// See [`CRASH_AT`].
const DOWN_FOR: u64 = 3_000;
/// The run ends here.
const END: u64 = 25_000;
/// Commands that must be applied before the crash, and again after it.
const APPLIED_MIN: usize = 3;

/// How one family of runs sets the network and the timeouts.
#[derive(Clone, Copy)]
struct Setup {
    /// Largest one-way delay, in ticks; delays are drawn from `0..=` it, or fixed at it on
    /// every third seed, or fixed at one tick on every third seed (the case that used to stall
    /// Multi-Paxos's election).
    delay_ticks_max: u64,
    /// Election timeout range, in ticks.
    election_timeout_ticks: (u64, u64),
}

fn link(seed: u64, setup: Setup) -> LinkConfig {
    match seed % 3 {
        0 => LinkConfig {
            latency_min: 0,
            latency_max: setup.delay_ticks_max * TICK,
            drop: 0.0,
            duplicate: 0.0,
        },
        1 => LinkConfig::fixed(setup.delay_ticks_max * TICK),
        _ => LinkConfig::fixed(TICK),
    }
}

/// One seeded run: elect, serve, lose the leader, elect again, serve again.
fn run(seed: u64, setup: Setup) -> Result<(), SimError> {
    let mut sim = build_sim(seed, setup)?;
    install_all(&mut sim);

    start_clients(&mut sim);

    sim.run_until(CRASH_AT)?;
    let applied = |sim: &Sim<N>, from: u64, to: u64| {
        sim.history()
            .iter()
            .filter(|op| op.completed_at.is_some_and(|t| (from..to).contains(&t)))
            .filter(|op| matches!(op.outcome, Outcome::Response(Response::Applied { .. })))
            .count()
    };
    let before = applied(&sim, 0, CRASH_AT);
    let Some(leader) = stable_leader(&sim.view()) else {
        return Err(sim.fail_now(format!("no stable leader by {CRASH_AT}")));
    };
    if before < APPLIED_MIN {
        return Err(sim.fail_now(format!(
            "{before} commands applied before {CRASH_AT}, expected at least {APPLIED_MIN}; {}",
            describe(&sim)
        )));
    }
    sim.crash(leader)?;
    sim.schedule_fault(CRASH_AT + DOWN_FOR, Fault::Restart(leader));
    sim.run_until(END)?;
    let after = applied(&sim, CRASH_AT, END);
    if after < APPLIED_MIN {
        let roles: Vec<String> = sim
            .view()
            .nodes()
            .map(|(id, n)| match n {
                Some(n) => format!(
                    "{id}: {:?} term {} commit {}",
                    n.role(),
                    n.term(),
                    n.commit_index()
                ),
                None => format!("{id}: down"),
            })
            .collect();
        return Err(sim.fail_now(format!(
            "{after} commands applied after the leader (node {leader}) crashed, expected at \
             least {APPLIED_MIN}; {roles:?}; {} requests in all",
            sim.history().len()
        )));
    }
    if stable_leader(&sim.view()).is_none() {
        return Err(sim.fail_now("no stable leader at the end".into()));
    }
    Ok(())
}

/// The simulator of one run: 3 or 5 nodes, drifting clocks, the seed's links, and the
/// election timeouts of `setup`.
fn build_sim(seed: u64, setup: Setup) -> Result<Sim<N>, SimError> {
    let n: u64 = if seed % 2 == 0 { 3 } else { 5 };
    let members: Vec<NodeId> = (1..=n).collect();
    let mut sc = SimConfig::new(seed, members.clone());
    sc.tick_interval = TICK;
    sc.tick_skew = 1;
    // Up to 20 % slower clocks, a fixed rate per node.
    sc.tick_drift_max = TICK / 5;
    sc.link = link(seed, setup);
    sc.sync_latency_max = 3;
    sc.hash_contents = false;
    let (min, max) = setup.election_timeout_ticks;
    Sim::new(sc, move |id| {
        let mut c = Config::new(id, members.clone());
        c.seed = seed;
        c.heartbeat_interval_ticks = HEARTBEAT_TICKS;
        c.election_timeout_ticks_min = min;
        c.election_timeout_ticks_max = max;
        c.into()
    })
}

/// Two closed-loop clients writing through whichever node they last heard is the leader.
fn start_clients(sim: &mut Sim<N>) {
    let mut hint: BTreeMap<u64, NodeId> = BTreeMap::new();
    let mut seq = 0u64;
    sim.closed_loop(
        ClosedLoop {
            clients: 2,
            start: 0,
            // A refused request (node down, not the leader) is retried after a think time, so
            // the budget lasts through an election.
            think_min: 20,
            think_max: 60,
            requests_max: 2_000,
            until: END,
            timeout: Some(1_500),
        },
        move |rng, ctx| {
            let node = hint.entry(ctx.client).or_insert(1);
            if let Some(last) = ctx.last {
                match last.outcome.response() {
                    Some(Response::Failed(
                        RaftError::NotLeader { leader: Some(l) }
                        | RaftError::LeadershipLost { leader: Some(l) },
                    )) => *node = *l,
                    Some(Response::Applied { .. }) => {}
                    _ => *node = ctx.nodes[rng.index(ctx.nodes.len()).unwrap_or(0)],
                }
            }
            seq += 1;
            let key = format!("k{}", rng.index(3).unwrap_or(0));
            let value = format!("{}.{seq}", ctx.client);
            Some((*node, Request::Propose(KvCommand::Put { key, value })))
        },
    );
}

/// Elections and client outcomes, for failure messages.
fn describe(sim: &Sim<N>) -> String {
    let elections: Vec<(u64, NodeId, u64)> = sim
        .events()
        .iter()
        .filter_map(|(t, node, e)| match e {
            raft::Event::LeaderChanged {
                term,
                leader: Some(l),
            } if l == node => Some((*t, *node, *term)),
            _ => None,
        })
        .collect();
    let outcomes: Vec<String> = sim
        .history()
        .iter()
        .map(|op| format!("{}@{}:{:?}", op.node, op.invoked_at, op.outcome))
        .collect();
    format!("elections (time, node, term) {elections:?}; requests {outcomes:?}")
}

fn check(setup: Setup) {
    if let Err(e) = run_seeds(SEEDS, |seed| run(seed, setup)) {
        panic!("{e}");
    }
}

/// The defaults hold up to a round trip just under the shortest election timeout.
#[test]
fn default_timeouts_elect_and_decide_with_round_trips_under_ten_ticks() {
    check(Setup {
        delay_ticks_max: DEFAULT_DELAY_TICKS_MAX,
        election_timeout_ticks: (
            raft::config::ELECTION_TIMEOUT_TICKS_MIN_DEFAULT,
            raft::config::ELECTION_TIMEOUT_TICKS_MAX_DEFAULT,
        ),
    });
}

/// Delays up to 10× the heartbeat period, with the election timeout sized above the longest
/// round trip (§5.6): a leader is elected, and re-elected after a crash, in every seed.
#[test]
fn timeouts_above_the_round_trip_elect_with_delays_of_ten_heartbeats() {
    let delay_ticks_max = 10 * HEARTBEAT_TICKS;
    check(Setup {
        delay_ticks_max,
        // Above twice the longest round trip (a pre-vote round, then a vote round), plus a
        // margin; the range is several one-way delays wide, so that two candidates rarely time
        // out within a message delay of each other and split the vote (§5.2, §9.3).
        election_timeout_ticks: (4 * delay_ticks_max + 10, 12 * delay_ticks_max + 20),
    });
}
