//! Agreement (Paxos Made Simple, section 2.1: "only a single value is chosen"), checked after
//! every step of thousands of seeded runs with every fault of the simulator: crashes with torn
//! tails and restarts, symmetric, one-way and partial partitions, loss, duplication, reordering
//! and latency spikes. After the faults stop, every client operation must complete (liveness).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use common::sim::run_seeds;
use support::*;

fn run(seed: u64) -> Result<(), common::sim::SimError> {
    let n = if seed % 3 == 0 { 5 } else { 3 };
    let mut sim = sim(seed, n, |_| {})?;
    add_agreement(&mut sim);
    add_durable_decision(&mut sim, n);
    sim.schedule(random_faults(seed, n, 50, 1_500));
    let log = kv_workload(&mut sim, n, 3, 6, 30, 100_000, true);
    sim.run_until(1_500)?;
    if !sim.run_until_cond(6_000, |view| all_answered(view.history(), 3, 6))? {
        return Err(sim.fail_now("not every client operation completed after the faults".into()));
    }
    if let Some(e) = log.borrow().errors.first() {
        return Err(sim.fail_now(e.clone()));
    }
    Ok(())
}

#[test]
fn agreement_under_every_fault() {
    let report = run_seeds(2_000, run).unwrap();
    assert!(report.seeds >= 1);
}
