//! Election safety (Raft paper §5.2, Figure 3): "at most one leader can be elected in a given
//! term." Checked after every step of seeded simulations (`common::sim`) of 3- and 5-node
//! clusters under message loss, duplication, jittered delays that reorder, symmetric and
//! one-way partitions, crash-restarts with torn unsynced tails, and group commit; once the
//! faults are repaired, a leader must be elected and a final proposal applied.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names its seed); `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use common::sim::{Sim, SimConfig, SimErrorKind};
use raft::Config;
use sim_support::{
    check_seeds, elect, install, node_with_log, synced, ElectionSafety, Invariant, Scenario, N,
};

/// Seeds in the normal test run.
const SEEDS: u64 = 750;

#[test]
fn election_safety_holds_under_faults() {
    let totals = check_seeds(SEEDS, &Scenario::default(), |sim| {
        install(sim, ElectionSafety::default())
    });
    totals.assert_busy();
}

/// The checker is not vacuous: two nodes that each won an election in the same term are
/// reported.
#[test]
fn two_leaders_in_one_term_are_reported() {
    let mut a = node_with_log(1, 3, 4, &[]);
    let mut b = node_with_log(2, 3, 4, &[]);
    elect(&mut a, 3);
    elect(&mut b, 3);
    assert_eq!(a.term(), b.term(), "both campaigned from term 4");
    let mut check = ElectionSafety::default();
    let err = check.check(&synced(&[&a, &b])).unwrap_err();
    assert_eq!(
        err,
        format!("two leaders in term {}: node 1 and node 2", a.term())
    );

    // Across steps too: a leader seen once is remembered after it is gone.
    let mut check = ElectionSafety::default();
    check.check(&synced(&[&a])).unwrap();
    assert!(check.check(&synced(&[&b])).is_err());
}

/// Wired into the simulator, a violation stops the run at the step it happens and the error
/// names the seed to replay.
#[test]
fn a_violation_stops_the_run_and_names_the_seed() {
    // Seeds of its own, not `run_seeds`'s: a sweep's `SIM_SEED_FIRST` must not move them.
    let err = (0..3)
        .try_for_each(|seed| {
            let mut sim: Sim<N> = Sim::new(SimConfig::new(seed, vec![1, 2, 3]), move |id| {
                let mut c = Config::new(id, vec![1, 2, 3]);
                c.seed = seed;
                c.into()
            })?;
            // Planted: node 99 "led" every term, so the first real leader is a second one.
            let mut planted = ElectionSafety::default();
            planted.leaders.extend((0..1_000).map(|t| (t, 99)));
            install(&mut sim, planted);
            sim.run_until(5_000)
        })
        .unwrap_err();
    assert_eq!(err.seed, 0, "the first seed fails, and the error names it");
    match &err.kind {
        SimErrorKind::Invariant { name, message } => {
            assert_eq!(name, "election safety (§5.2)");
            assert!(message.starts_with("two leaders in term"), "{message}");
        }
        other => panic!("unexpected failure {other:?}"),
    }
    assert!(err.to_string().contains("SIM_SEED=0"), "{err}");
}
