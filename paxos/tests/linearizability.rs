//! Linearizability of a replicated KV store's client history (appends through the log,
//! reads through the quorum-confirmed read path), checked per key with porcupine after runs
//! with every fault of the simulator. An operation whose outcome a client never learned counts
//! as possibly applied at any time after its first invocation.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use common::sim::{run_seeds, SimError};
use support::*;

fn run(seed: u64) -> Result<(), SimError> {
    let n = if seed % 3 == 0 { 5 } else { 3 };
    let mut sim = sim(seed, n, |_| {})?;
    add_agreement(&mut sim);
    sim.schedule(random_faults(seed, n, 50, 1_500));
    let log = kv_workload(&mut sim, n, 4, 8, 30, 100_000, true);
    sim.run_until(1_500)?;
    if !sim.run_until_cond(6_000, |view| all_answered(view.history(), 4, 8))? {
        return Err(sim.fail_now("not every client operation completed after the faults".into()));
    }
    if let Some(e) = log.borrow().errors.first() {
        return Err(sim.fail_now(e.clone()));
    }
    check_linearizable(&sim).map_err(|e| sim.fail_now(e))
}

#[test]
fn kv_history_is_linearizable_under_every_fault() {
    let report = run_seeds(1_000, run).unwrap();
    assert!(report.seeds >= 1);
}
