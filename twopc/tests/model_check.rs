//! Exhaustive model check of two-phase commit with `stateright` (the harness and its action set
//! are described in `tests/model/mod.rs`): the real `TwoPcNode` cores, three nodes (1
//! coordinates, 2 and 3 take part), messages delivered in any order, lost, and any node crashing
//! at any step and restarting from its records.
//!
//! Bounds (what keeps the state space finite), per check:
//!
//! | check | transactions | ticks | crashes | losses | actions per run |
//! |-------|--------------|-------|---------|--------|-----------------|
//! | `one_transaction_...` | 1 | 3 | 1 | 1 | 11 |
//! | `two_transactions_...` | 2 (same keys: the second may conflict) | 2 | 1 | 0 | 10 |
//!
//! Unlike 3PC's synchronous model, 2PC's lets time pass with messages in flight, and its state
//! space grows about sevenfold with every two more actions; so runs are also bounded in length
//! (every execution of at most that many actions is explored; a committing transaction takes 9).
//! Without the length bound the checks did not finish within minutes.
//!
//! Timeouts are scaled down so that timers fire within the tick bound: resend after 1 tick
//! (backing off to 2), vote timeout 2, in-doubt query after 1 tick.
//!
//! Property: atomicity, in every reachable state (no participant commits while another aborts, no
//! participant changes its mind, a client told an outcome is contradicted by no participant).
//! 2PC needs no timing assumption for it, so time advances freely, messages in flight or not.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod model;

use common::NodeId;
use model::{Bounds, CommitModel, Protocol};
use stateright::{Checker, Model};
use twopc::{Config, TwoPcNode};

struct TwoPc;

impl Protocol for TwoPc {
    type N = TwoPcNode;

    fn config(&self, id: NodeId) -> Config {
        let mut c = Config::new(id, vec![1, 2, 3]);
        model::scale_down_txn_timers(&mut c.txn);
        c.in_doubt_query_ticks = 1;
        c.one_phase_retries_max = 1;
        c.decision_retries_max = 1;
        c
    }
}

fn check(
    requests: usize,
    ticks_max: u32,
    crashes_max: u32,
    losses_max: u32,
    depth_max: usize,
) -> usize {
    let model = CommitModel {
        protocol: TwoPc,
        bounds: Bounds {
            nodes: 3,
            requests,
            ticks_max,
            crashes_max,
            losses_max,
            synchronous: false,
        },
    };
    let checker = model
        .checker()
        .target_max_depth(depth_max)
        .spawn_bfs()
        .join();
    checker.assert_properties();
    checker.unique_state_count()
}

#[test]
fn one_transaction_is_atomic_under_loss_reordering_and_crashes() {
    let states = check(1, 3, 1, 1, 11);
    assert!(
        states > 100_000,
        "only {states} states: the model did not run"
    );
}

#[test]
fn two_transactions_are_atomic_under_reordering_and_crashes() {
    let states = check(2, 2, 1, 0, 10);
    assert!(
        states > 100_000,
        "only {states} states: the model did not run"
    );
}
