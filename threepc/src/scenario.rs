//! Named, seeded simulations of three-phase commit, shared by the tests and the trace diagrams
//! (feature `sim`).
//!
//! # `slow_network`: a slow link is taken for a crash
//!
//! No message is lost, no node crashes, the network never partitions; the links from the
//! coordinator to its participants merely become slow — slower than the termination timeout —
//! just before the PreCommits leave:
//!
//! | time | what happens |
//! |------|--------------|
//! | [`slow_network::SUBMIT_AT`] (100) | the client asks node 1 to commit writes at 2, 3 and 4 |
//! | 105 | CanCommit arrives (every link delays [`slow_network::LATENCY`] = 5) |
//! | [`slow_network::SLOW_AT`] (107) | links 1 → 2, 3, 4 slow to [`slow_network::SLOW_LATENCY`] = 1,000 (100 ticks) |
//! | 110 | the Yes votes arrive (participant → coordinator links are fast); PreCommit leaves, slowly |
//! | ~310 | coordinator: no PreCommit ack within `ack_timeout_ticks` (20); by 3PC's failure model the silent participants crashed, so it logs the commit and **tells the client Committed** |
//! | ~405 | participants: nothing from the coordinator for `termination_timeout_ticks` (30); by the same model it crashed. They elect 2 as backup; 2 finds everyone Uncertain and **aborts** at 2, 3 and 4 |
//! | ~1,110 | the PreCommits arrive, then the DoCommits: too late, each counts a decision conflict |
//!
//! Both sides followed the protocol; the client was told Committed and no participant applied
//! the writes ([`AtomicViolation::ReportContradicted`](common::check::atomic::AtomicViolation)).
//! A slow link is indistinguishable from a crashed node, exactly as a partition is: 3PC is safe
//! only on a synchronous network (see the crate documentation).
//!
//! ```
//! use common::txn::Outcome;
//! use threepc::scenario::slow_network;
//!
//! let (sim, tx, _) = slow_network::run(1).unwrap();
//! let told = slow_network::client_outcome(&sim);
//! assert_eq!(told, Some(Outcome::Committed));
//! for p in slow_network::PARTICIPANTS {
//!     assert!(sim.node(p).unwrap().resource().applied().is_empty(), "{tx} not applied at {p}");
//! }
//! ```

/// The slow-network anomaly (see the module documentation).
pub mod slow_network {
    use std::collections::BTreeMap;

    use common::sim::{Fault, LinkConfig, Outcome as SimOutcome, Sim, SimConfig, SimError};
    use common::txn::{Outcome, TxId, Write};
    use common::{NodeId, RequestId};

    use crate::{Config, Request, Response, ThreePcNode};

    /// The cluster: node 1 coordinates, 2, 3 and 4 take part.
    pub const MEMBERS: [NodeId; 4] = [1, 2, 3, 4];
    /// The coordinator.
    pub const COORDINATOR: NodeId = 1;
    /// The participants.
    pub const PARTICIPANTS: [NodeId; 3] = [2, 3, 4];
    /// One-way delay of every link at the start (virtual time; a tick is 10).
    pub const LATENCY: u64 = 5;
    /// When the client submits the transaction.
    pub const SUBMIT_AT: u64 = 100;
    /// When the coordinator's links to the participants slow down: after the CanCommits arrived
    /// (at `SUBMIT_AT + LATENCY`), before the votes are in and the PreCommits leave (at
    /// `SUBMIT_AT + 2 * LATENCY`).
    pub const SLOW_AT: u64 = SUBMIT_AT + LATENCY + 2;
    /// The slowed links' delay: 100 ticks, beyond the termination timeout (30 ticks) plus the
    /// backup's state round. No message is lost.
    pub const SLOW_LATENCY: u64 = 1_000;
    /// Long enough for the slow messages to arrive and the run to go quiet.
    pub const RUN_UNTIL: u64 = 3_000;

    /// The simulator configuration: fixed, reliable links of [`LATENCY`].
    pub fn sim_config(seed: u64) -> SimConfig {
        let mut cfg = SimConfig::new(seed, MEMBERS.to_vec());
        cfg.link = LinkConfig::fixed(LATENCY);
        cfg
    }

    /// Every node's configuration: the defaults.
    pub fn node_config(id: NodeId) -> Config {
        Config::new(id, MEMBERS.to_vec())
    }

    /// The transaction's writes: one key at each participant.
    pub fn writes() -> BTreeMap<NodeId, Vec<Write>> {
        PARTICIPANTS
            .iter()
            .map(|&p| (p, vec![Write::put(format!("k{p}"), "1")]))
            .collect()
    }

    /// Submits the transaction and schedules the slowdown on `sim` (built from [`sim_config`]
    /// and [`node_config`], possibly with tracing on). Returns the client request's id.
    pub fn schedule(sim: &mut Sim<ThreePcNode>) -> RequestId {
        let id = sim.submit(SUBMIT_AT, COORDINATOR, Request::Commit { writes: writes() });
        for p in PARTICIPANTS {
            sim.schedule_fault(
                SLOW_AT,
                Fault::Link {
                    from: COORDINATOR,
                    to: p,
                    link: LinkConfig::fixed(SLOW_LATENCY),
                },
            );
        }
        id
    }

    /// Builds, schedules and runs the scenario until [`RUN_UNTIL`]. Returns the simulation, the
    /// transaction's id and the client request's id.
    pub fn run(seed: u64) -> Result<(Sim<ThreePcNode>, TxId, RequestId), SimError> {
        let mut sim = Sim::new(sim_config(seed), node_config)?;
        let request = schedule(&mut sim);
        sim.run_until(RUN_UNTIL)?;
        Ok((sim, TxId::new(COORDINATOR, 0), request))
    }

    /// What the client was told, if it was answered.
    pub fn client_outcome(sim: &Sim<ThreePcNode>) -> Option<Outcome> {
        sim.history().iter().find_map(|op| match &op.outcome {
            SimOutcome::Response(Response::Outcome { outcome, .. }) => Some(*outcome),
            _ => None,
        })
    }
}
