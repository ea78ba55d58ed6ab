//! What a protocol implements to enter the shootout: [`Contender`] starts a cluster of it,
//! [`Cluster`] runs one operation on that cluster (and, optionally, the fault scenarios' hooks),
//! and [`Theory`] states what its paper says an operation costs. [`command`] is the payload
//! every replicated-log protocol carries; [`contenders`] lists every registered protocol.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::driver::DriverStats;
use common::NodeId;

use crate::{demo, paxos, raft, sharded, threepc, twopc, BenchError, ClusterSpec};

/// A protocol taking part in the shootout. See the crate documentation for how to add one.
#[async_trait]
pub trait Contender: Send + Sync {
    /// The protocol's name in tables ("raft", "2pc", ...).
    fn name(&self) -> &'static str;

    /// What the protocol's paper states an operation costs on a cluster of `nodes` nodes.
    fn theory(&self, nodes: usize) -> Theory;

    /// Starts a cluster of this protocol and returns once it can serve operations.
    async fn start(&self, spec: &ClusterSpec) -> Result<Arc<dyn Cluster>, BenchError>;
}

/// A running cluster of one protocol.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Runs one operation for client `client` (`0..concurrency`), its `seq`-th, and returns once
    /// the protocol acknowledged it (committed, decided, applied).
    async fn run_op(&self, client: usize, seq: u64) -> Result<(), BenchError>;

    /// The driver counters of every node, summed.
    fn stats(&self) -> DriverStats;

    /// Crashes (stops for good) the node that leads or coordinates, for the fault scenario;
    /// returns its id, or `None` when the adapter does not support the scenario. Later
    /// operations must avoid the crashed node where the protocol allows it.
    async fn crash_leader(&self) -> Result<Option<NodeId>, BenchError> {
        Ok(None)
    }

    /// Transactions that the live participants voted on and whose outcome they still do not
    /// know (each holds its locks), summed over the nodes; `None` for protocols without
    /// participants. After the coordinator's crash this is atomic commit's blocked work.
    async fn undecided(&self) -> Result<Option<u64>, BenchError> {
        Ok(None)
    }

    /// Slows every link from the leader or coordinator to the others to `delay` for `window`,
    /// then heals them; returns the slowed node, or `None` when the adapter does not support
    /// the scenario.
    async fn slow_leader_links(
        &self,
        delay: Duration,
        window: Duration,
    ) -> Result<Option<NodeId>, BenchError> {
        let _ = (delay, window);
        Ok(None)
    }

    /// Atomic commit only: decisions that reached a participant contradicting one it had
    /// already taken, summed over the live nodes (each a transaction decided both ways).
    async fn decision_conflicts(&self) -> Result<Option<u64>, BenchError> {
        Ok(None)
    }

    /// Stops every node that is still running.
    async fn shutdown(&self) -> Result<(), BenchError>;
}

/// What a protocol's paper states one operation costs in the steady state, without batching.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Theory {
    /// One-way message delays from the node receiving the request (leader, coordinator) until
    /// it can answer.
    pub message_delays: u32,
    /// Messages sent by all nodes per operation.
    pub messages_per_op: f64,
}

impl Theory {
    /// A replicated log with a stable leader (Raft, Multi-Paxos phase 2): the leader sends the
    /// entry to the `n - 1` others and each answers: 2 message delays, `2(n - 1)` messages.
    pub fn replicated_log(nodes: usize) -> Theory {
        Theory {
            message_delays: 2,
            messages_per_op: 2.0 * nodes.saturating_sub(1) as f64,
        }
    }

    /// An atomic commitment protocol with one coordinator and `nodes - 1` participants that
    /// exchanges `rounds` request/answer rounds with each participant (2PC: 2 rounds, 4 delays,
    /// 4 messages per participant; 3PC: 3 rounds, 6 delays, 6 messages per participant).
    pub fn commit_rounds(nodes: usize, rounds: u32) -> Theory {
        Theory {
            message_delays: 2 * rounds,
            messages_per_op: 2.0 * rounds as f64 * nodes.saturating_sub(1) as f64,
        }
    }
}

/// Bytes of the command every replicated-log protocol (Raft, Multi-Paxos) proposes per operation.
pub const COMMAND_BYTES: usize = 16;

/// The command of client `client`'s `seq`-th operation: [`COMMAND_BYTES`] bytes, the client and
/// the sequence number in little endian, so every command is distinct and every protocol carries
/// the same payload.
pub fn command(client: usize, seq: u64) -> [u8; COMMAND_BYTES] {
    let mut bytes = [0u8; COMMAND_BYTES];
    bytes[..8].copy_from_slice(&(client as u64).to_le_bytes());
    bytes[8..].copy_from_slice(&seq.to_le_bytes());
    bytes
}

/// Every protocol registered in the shootout.
pub fn contenders() -> Vec<Box<dyn Contender>> {
    vec![
        Box::new(demo::Demo),
        Box::new(raft::Raft),
        Box::new(paxos::MultiPaxos),
        Box::new(twopc::TwoPc),
        Box::new(threepc::ThreePc),
        Box::new(sharded::ShardedTwoPc),
    ]
}
