//! Linearizability of a replicated KV store's client history (puts through the log, reads
//! through the quorum-confirmed read path), checked per key by `common::check::kv::check_kv`
//! (porcupine) after runs with every fault of the simulator. All attempts of one session are
//! one operation; an operation whose outcome a client never learned may take effect at any time
//! after its first invocation, or never. A put whose answer arrived is checked as a
//! compare-and-set from the value it replaced, so every write's view is checked too.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use common::check::kv::{check_kv, KvOutput};
use common::check::HistoryEvent;
use common::sim::{run_seeds, SimError};
use support::*;

fn run(seed: u64) -> Result<(), SimError> {
    let n = if seed % 3 == 0 { 5 } else { 3 };
    let mut sim = sim(seed, n, |_| {})?;
    add_agreement(&mut sim);
    sim.schedule(random_faults(seed, n, 50, 1_500));
    let log = kv_workload_with(&mut sim, n, 4, 8, 30, 100_000, true, Write::Put, 120);
    sim.run_until(1_500)?;
    if !sim.run_until_cond(6_000, |view| all_answered(view.history(), 4, 8))? {
        return Err(sim.fail_now("not every client operation completed after the faults".into()));
    }
    if let Some(e) = log.borrow().errors.first() {
        return Err(sim.fail_now(e.clone()));
    }
    check_kv_linearizable(&sim).map_err(|e| sim.fail_now(e))
}

#[test]
fn kv_history_is_linearizable_under_every_fault() {
    let report = run_seeds(1_000, run).unwrap();
    assert!(report.seeds >= 1);
}

/// The check has teeth: the same history with one read answer changed to a value nobody wrote
/// is refused.
#[test]
fn a_falsified_read_is_caught() {
    let mut sim = sim(4, 3, |_| {}).unwrap();
    kv_workload_with(&mut sim, 3, 4, 8, 30, 100_000, true, Write::Put, 120);
    assert!(sim
        .run_until_cond(6_000, |view| all_answered(view.history(), 4, 8))
        .unwrap());
    let mut history = kv_history(&sim).unwrap();
    assert!(check_kv(&history).unwrap().is_linearizable());
    let read = history
        .events
        .iter_mut()
        .find_map(|e| match e {
            HistoryEvent::Ok {
                output: output @ KvOutput::Value { .. },
                ..
            } => Some(output),
            _ => None,
        })
        .expect("the workload reads");
    *read = KvOutput::Value {
        value: Some("never written".into()),
    };
    assert!(!check_kv(&history).unwrap().is_linearizable());
}
