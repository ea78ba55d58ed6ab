//! Integrity (Paxos Made Moderately Complex, section 2: a command is executed at most once):
//! clients retry every operation whose outcome they did not learn (crash, timeout, lost
//! leadership) with the same session, and each replica applies each command at most once.
//! Checked after every step of thousands of seeded runs with every fault of the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use common::sim::{run_seeds, SimError};
use support::*;

fn run(seed: u64) -> Result<(), SimError> {
    let n = if seed % 3 == 0 { 5 } else { 3 };
    let mut sim = sim(seed, n, |_| {})?;
    add_integrity(&mut sim);
    sim.schedule(random_faults(seed, n, 50, 1_500));
    let log = kv_workload(&mut sim, n, 3, 6, 30, 100_000, false);
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
fn integrity_under_every_fault() {
    let report = run_seeds(2_000, run).unwrap();
    assert!(report.seeds >= 1);
}
