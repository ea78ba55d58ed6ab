//! The slow-network storm scenario both commit protocols run (feature `sim`): four nodes,
//! random coordinators, a slow and lossy network with crash-restarts until [`SLOW_UNTIL`], then
//! a fast, reliable network with everyone up. Each crate's `tests/sim_storm.rs` drives it and
//! asserts what its protocol promises (bounded traffic and termination for both; atomicity for
//! 2PC at every step).

use std::collections::BTreeMap;

use crate::rng::DetRng;
use crate::sim::{Fault, FaultPlan, LinkConfig, OpenLoop, Sim};
use crate::NodeId;

use super::{AtomicCommit, Write};

/// The cluster.
pub const MEMBERS: [NodeId; 4] = [1, 2, 3, 4];
/// Keys each participant's writes spread over.
pub const KEYS: usize = 8;
/// Virtual time of the slow, lossy phase (the simulator's tick is 10 time units: 400 ticks).
pub const SLOW_UNTIL: u64 = 4_000;
/// After the network is fast again: by then everything must be decided.
pub const QUIET_DEADLINE: u64 = 12_000;
/// Transactions the workload opens at most.
pub const REQUESTS_MAX: u64 = 80;

/// The slow phase's links: 5 to 80 ticks per message, 10 % lost.
pub fn slow_link() -> LinkConfig {
    LinkConfig {
        latency_min: 50,
        latency_max: 800,
        drop: 0.1,
        duplicate: 0.0,
    }
}

/// Seeded crash-restarts during the slow phase, then a fast, reliable network with every node
/// up at [`SLOW_UNTIL`].
pub fn crash_plan(seed: u64) -> FaultPlan {
    let mut rng = DetRng::new(seed ^ 0x5707_3C4A);
    let mut plan = FaultPlan::new();
    let mut t = 100;
    loop {
        t += rng.range_inclusive(100, 600);
        if t >= SLOW_UNTIL {
            break;
        }
        let node = MEMBERS[rng.index(MEMBERS.len()).unwrap_or(0)];
        let back = (t + rng.range_inclusive(50, 500)).min(SLOW_UNTIL);
        plan.push(t, Fault::Crash(node));
        plan.push(back, Fault::Restart(node));
    }
    plan.push(SLOW_UNTIL, Fault::Latency { min: 1, max: 5 });
    plan.push(SLOW_UNTIL, Fault::Drop(0.0));
    for id in MEMBERS {
        plan.push(SLOW_UNTIL, Fault::Restart(id));
    }
    plan
}

/// An open loop of transactions at random coordinators, each writing at 2 or 3 of the others.
pub fn workload<N: AtomicCommit>(sim: &mut Sim<N>) {
    sim.open_loop(
        OpenLoop {
            start: 20,
            until: SLOW_UNTIL - 500,
            interval_min: 10,
            interval_max: 80,
            requests_max: REQUESTS_MAX,
            timeout: None,
        },
        |rng, _ctx| {
            let c = MEMBERS[rng.index(MEMBERS.len())?];
            let others: Vec<NodeId> = MEMBERS.iter().copied().filter(|&m| m != c).collect();
            let count = rng.range_inclusive(2, 3) as usize;
            let mut writes = BTreeMap::new();
            while writes.len() < count {
                let p = others[rng.index(others.len())?];
                let k = rng.index(KEYS)?;
                writes.insert(p, vec![Write::put(format!("k{k}"), vec![1])]);
            }
            Some((c, N::commit_request(writes)))
        },
    );
}
