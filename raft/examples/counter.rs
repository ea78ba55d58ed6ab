//! A distributed counter on Raft: `add n` and `get` on a three-node cluster, the leader killed
//! mid-run, and the count still right.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p raft --example counter
//! ```
//!
//! Three nodes run under `common`'s tokio driver over the in-memory network. A client adds
//! `1, 2, …, ADDS` one after the other through [`RaftClient`], which finds the leader and
//! follows "not the leader, try node N" by itself. While it runs, the leader is stopped for good;
//! the two survivors elect a new leader and the client carries on with it.
//!
//! An `add` caught by the crash may already be in the log when its answer is lost, and the
//! client retries it on the new leader. So every add carries the client's id and a sequence
//! number, and the counter applies each (client, sequence) once: a retried add is acknowledged
//! without counting twice. At the end a linearizable `get` must read exactly
//! `1 + 2 + … + ADDS`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::driver::DriverConfig;
use common::transport::memory::MemoryNetwork;
use raft::state_machine::{read_frame, write_frame};
use raft::{spawn_memory_cluster, Config, RaftClient, StateMachine, StateMachineError};
use serde::{Deserialize, Serialize};

/// Adds made by the client.
const ADDS: u64 = 100;
/// The add after which the leader is killed.
const KILL_AFTER: u64 = 40;
/// Attempts of one add across leader changes.
const ATTEMPTS_MAX: usize = 20;

/// A counter command: add `amount`, once per (client, seq).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Add {
    client: u64,
    seq: u64,
    amount: u64,
}

/// The read of the counter.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Get;

/// The replicated counter, with the last sequence number applied per client (the session table
/// that makes retries exactly-once).
#[derive(Debug, Default)]
struct Counter {
    total: u64,
    last_seq: BTreeMap<u64, u64>,
}

impl StateMachine for Counter {
    type Command = Add;
    type Query = Get;
    type Output = u64;

    fn apply(&mut self, _index: u64, add: &Add) -> u64 {
        let last = self.last_seq.entry(add.client).or_default();
        // A client runs one add at a time, so anything at or below its last applied sequence
        // number is a retry of an add already counted.
        if add.seq > *last {
            *last = add.seq;
            self.total = self.total.wrapping_add(add.amount);
        }
        self.total
    }

    fn query(&self, _: &Get) -> u64 {
        self.total
    }

    // The total, then one frame per (client, last seq) pair: the state streams to the
    // snapshot file.
    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        write_frame(out, &self.total)?;
        for pair in &self.last_seq {
            write_frame(out, &pair)?;
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        const FRAME_MAX: usize = 64;
        let total = read_frame::<u64>(input, FRAME_MAX)?
            .ok_or_else(|| StateMachineError::Malformed("empty counter snapshot".into()))?;
        let mut last_seq = BTreeMap::new();
        while let Some((client, seq)) = read_frame::<(u64, u64)>(input, FRAME_MAX)? {
            last_seq.insert(client, seq);
        }
        self.total = total;
        self.last_seq = last_seq;
        Ok(())
    }
}

/// `add amount` as sequence number `seq` of client 1, retried across leader changes.
async fn add(client: &RaftClient<Counter>, seq: u64, amount: u64) -> u64 {
    let command = Add {
        client: 1,
        seq,
        amount,
    };
    let mut last_error = None;
    for _ in 0..ATTEMPTS_MAX {
        match client.propose(command.clone()).await {
            Ok((_, total)) => return total,
            Err(e) => {
                println!("  add {amount} (seq {seq}): {e}; retrying");
                last_error = Some(e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    panic!("add {amount} failed {ATTEMPTS_MAX} times: {last_error:?}");
}

async fn leader(client: &RaftClient<Counter>) -> Option<u64> {
    for node in client.nodes() {
        if let Ok(m) = node.metrics().await {
            if m.leader == Some(m.id) {
                return Some(m.id);
            }
        }
    }
    None
}

#[tokio::main]
async fn main() {
    let configs: Vec<Config> = (1..=3).map(|id| Config::new(id, vec![1, 2, 3])).collect();
    let network = MemoryNetwork::new(7);
    let client: RaftClient<Counter> =
        spawn_memory_cluster(configs, &network, DriverConfig::default()).unwrap();

    let mut expected = 0;
    let mut killed = None;
    for seq in 1..=ADDS {
        let total = if seq == KILL_AFTER {
            // Kill the leader while this add is in flight: its answer may be lost after its
            // entry was replicated, and the retry must not count it twice.
            let old = leader(&client).await.expect("a leader serves the adds");
            println!("add {seq} in flight (count {expected}): killing leader {old}");
            let (total, stopped) =
                tokio::join!(add(&client, seq, seq), client.node(old).unwrap().shutdown());
            stopped.unwrap();
            killed = Some(old);
            total
        } else {
            add(&client, seq, seq).await
        };
        expected += seq;
        assert_eq!(total, expected, "add {seq} returned a wrong total");
    }
    let count = client.read(Get).await.unwrap();
    let new_leader = leader(&client).await;
    println!("get -> {count} (expected {expected}); leader now {new_leader:?}");
    assert_eq!(count, expected);
    assert!(
        new_leader.is_some() && new_leader != killed,
        "a survivor leads"
    );
    for node in client.nodes().filter(|n| Some(n.id()) != killed) {
        node.shutdown().await.unwrap();
    }
}
