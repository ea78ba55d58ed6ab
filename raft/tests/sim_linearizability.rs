//! Linearizability (Raft paper §8, "Client interaction"; Ongaro's thesis §6.3–§6.4) of the
//! replicated KV store's client history, checked per key with `common::check` (porcupine).
//! Closed-loop clients follow "not the leader, try node N" hints; writes go through the log,
//! reads through ReadIndex or the leader's lease. Seeded simulations (`common::sim`) under
//! message loss, duplication, jittered delays that reorder, partitions, crash-restarts with
//! torn unsynced tails and group commit; election safety (§5.2) is checked after every step and
//! liveness once the faults are repaired.
//!
//! `SIM_SEED=n` replays seed `n` (every failure names its seed); `SIM_SEEDS=n` runs more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod sim_support;

use common::check::kv::{check_kv, KvInput, KvOutput as CheckOutput, Verdict};
use common::sim::Sim;
use raft::kv::KvCommand;
use raft::{Request, Response};
use sim_support::{check_seeds_then, history, install, linearizable, ElectionSafety, Scenario, N};

/// Seeds in the normal test run.
const SEEDS: u64 = 500;

#[test]
fn kv_history_is_linearizable_under_faults() {
    let scenario = Scenario {
        appends: false,
        ..Scenario::default()
    };
    let totals = check_seeds_then(
        SEEDS,
        &scenario,
        |sim| install(sim, ElectionSafety::default()),
        linearizable,
    );
    totals.assert_busy();
}

/// The checker is not vacuous: a read that misses an acknowledged write is reported.
#[test]
fn a_stale_read_is_reported() {
    let mut sim: Sim<N> = Sim::new(common::sim::SimConfig::new(1, vec![1, 2, 3]), |id| {
        raft::Config::new(id, vec![1, 2, 3]).into()
    })
    .unwrap();
    // Planted: a write acknowledged before a read that then returns nothing.
    sim.run_until(1_000).unwrap();
    let leader = sim_support::current_leader(&sim.view()).unwrap();
    let put = Request::Propose(KvCommand::Put {
        key: "k".into(),
        value: "v".into(),
    });
    let id = sim.submit(sim.now(), leader, put);
    sim.run_for(500).unwrap();
    let applied = sim.op(id).and_then(|op| op.outcome.response().cloned());
    assert!(
        matches!(applied, Some(Response::Applied { .. })),
        "{applied:?}"
    );
    assert!(matches!(
        check_kv(&history(&sim)),
        Ok(Verdict::Linearizable)
    ));
    let mut h = history(&sim);
    let read = common::check::HistoryEvent::Invoke {
        id: 1_000,
        client: 1_000,
        time: sim.now() + 1,
        wall_ns: None,
        input: KvInput::Get { key: "k".into() },
    };
    let answer = common::check::HistoryEvent::Ok {
        id: 1_000,
        time: sim.now() + 2,
        wall_ns: None,
        output: CheckOutput::Value { value: None },
    };
    h.events.push(read);
    h.events.push(answer);
    assert!(!matches!(check_kv(&h), Ok(Verdict::Linearizable)));
}
