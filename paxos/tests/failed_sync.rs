//! Failed syncs (a full disk, a failing device) in the simulator: on top of every network
//! fault, replicas' syncs fail at seeded moments (`Fault::FailSync`). Only part of that batch
//! reaches the disk, nothing else of it leaves the replica, and the replica stops (fail-stop);
//! it restarts later from what was durable. Agreement is checked after every step, and the
//! client history must be linearizable: a replica that went on after a failed write could
//! acknowledge what no disk holds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use common::sim::{run_seeds, Fault, SimError};
use common::DetRng;
use support::*;

fn run(seed: u64) -> Result<(), SimError> {
    let n = if seed % 3 == 0 { 5 } else { 3 };
    let mut sim = sim(seed, n, |_| {})?;
    add_agreement(&mut sim);
    sim.schedule(random_faults(seed, n, 50, 1_500));
    let mut rng = DetRng::new(seed ^ 0x5157_c0de);
    for _ in 0..3 {
        let node = rng.range_inclusive(1, n);
        let at = rng.range_inclusive(100, 1_200);
        sim.schedule_fault(at, Fault::FailSync(node));
        sim.schedule_fault(at + rng.range_inclusive(50, 300), Fault::Restart(node));
    }
    // Everyone is up again at the end, whatever the plans did.
    for node in 1..=n {
        sim.schedule_fault(1_600, Fault::Restart(node));
    }
    let log = kv_workload_with(&mut sim, n, 4, 8, 30, 100_000, true, Write::Put, 120);
    sim.run_until(1_600)?;
    if !sim.run_until_cond(8_000, |view| all_answered(view.history(), 4, 8))? {
        return Err(sim.fail_now("not every client operation completed after the faults".into()));
    }
    if let Some(e) = log.borrow().errors.first() {
        return Err(sim.fail_now(e.clone()));
    }
    check_kv_linearizable(&sim).map_err(|e| sim.fail_now(e))?;
    SEEDS_WITH_FAILED_SYNCS.fetch_add(u64::from(sim.failed_syncs() > 0), Ordering::Relaxed);
    Ok(())
}

/// Seeds in which at least one sync failed (a planned one can miss: its replica may be down).
static SEEDS_WITH_FAILED_SYNCS: AtomicU64 = AtomicU64::new(0);

#[test]
fn replicas_stop_on_a_failed_sync_and_the_history_stays_linearizable() {
    let report = run_seeds(300, run).unwrap();
    assert!(report.seeds >= 1);
    let hit = SEEDS_WITH_FAILED_SYNCS.load(Ordering::Relaxed);
    assert!(
        hit * 10 >= report.seeds * 8,
        "a sync failed in only {hit} of {} seeds: the faults missed",
        report.seeds
    );
}
