//! Validity (Paxos Made Simple, section 2.1: "only a value that has been proposed may be
//! chosen"): every decided command was submitted by a client, and every other decided slot is a
//! no-op. Checked after every step of thousands of seeded runs with every fault of the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use common::sim::{run_seeds, SimError};
use support::*;

fn run(seed: u64) -> Result<(), SimError> {
    let n = if seed % 3 == 0 { 5 } else { 3 };
    let mut sim = sim(seed, n, |_| {})?;
    add_validity(&mut sim);
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
fn validity_under_every_fault() {
    let report = run_seeds(2_000, run).unwrap();
    assert!(report.seeds >= 1);
}
