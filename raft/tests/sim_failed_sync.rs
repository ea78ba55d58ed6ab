//! Failed syncs (a full disk, a failing device) in the simulator, on top of every fault of the
//! other sweeps: at seeded moments a node's sync fails (`Fault::FailSync`). Only part of that
//! batch reaches the disk, nothing else of it leaves the node, and the node stops (fail-stop,
//! as the driver does when the write-ahead log refuses a write); it restarts later from what
//! was durable. Every property of the paper's Figure 3 (§5.2–§5.4.3) is checked after every
//! step, and the client history must be linearizable (§8): a node that went on after a failed
//! write could acknowledge what no disk holds. Half the seeds run the leader's parallel append
//! (§10.2.1), where the leader's own write may fail after its followers got the entries.
//!
//! `SIM_SEED=n` replays seed `n`; `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use std::cell::Cell;

use common::sim::Fault;
use common::DetRng;
use sim_support::{check_seeds_then, install_all, linearizable, Scenario, FAULTS_START};

/// Seeds in the normal test run.
const SEEDS: u64 = 300;
/// Failed syncs planned per seed.
const FAILURES: usize = 3;

#[test]
fn nodes_stop_on_a_failed_sync_and_the_history_stays_linearizable() {
    let scenario = Scenario {
        appends: false,
        ..Scenario::default()
    };
    let faults_until = scenario.faults_until;
    let with_failures = Cell::new(0u64);
    let totals = check_seeds_then(
        SEEDS,
        &scenario,
        |sim| {
            install_all(sim);
            let mut rng = DetRng::new(sim.view().seed() ^ 0x4641_494c_5359_4e43);
            for _ in 0..FAILURES {
                // Nodes 1 to 3 exist in every run (3 or 5 voters).
                let node = rng.range_inclusive(1, 3);
                let at = rng.range_inclusive(FAULTS_START, faults_until - 400);
                sim.schedule_fault(at, Fault::FailSync(node));
                sim.schedule_fault(at + rng.range_inclusive(50, 300), Fault::Restart(node));
            }
            // A failure fires at the node's next write with records, which may come after its
            // planned restart, or only after the restart below when it was down meanwhile:
            // everyone is up again soon after the faults stop, whatever happened.
            for node in 1..=3 {
                sim.schedule_fault(faults_until, Fault::Restart(node));
                sim.schedule_fault(faults_until + 300, Fault::Restart(node));
            }
        },
        |sim| {
            with_failures.set(with_failures.get() + u64::from(sim.failed_syncs() > 0));
            linearizable(sim)
        },
    );
    totals.assert_busy();
    // A planned failure misses when its node is down or writes nothing before its restart.
    assert!(
        with_failures.get() * 10 >= totals.seeds * 8,
        "a sync failed in only {} of {} seeds: the faults missed",
        with_failures.get(),
        totals.seeds
    );
}
