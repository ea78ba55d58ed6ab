//! Bank transfers across shards with two-phase commit: the total balance never changes, whatever
//! crashes.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p twopc --example bank_transfer_2pc
//! ```
//!
//! Node 1 coordinates; nodes 2, 3 and 4 are participants, each holding a shard of the accounts
//! in a `Ledger` (writes are balance deltas). Every node runs under `common`'s tokio driver over
//! the in-memory network, with in-memory storage that keeps only what was synced when a node
//! crashes. Client tasks run concurrent transfers: one transaction debits one account and
//! credits another, possibly on two different shards. Mid-run a participant crashes and restarts from its log, then the coordinator does:
//! the prepared transfers it left open get their outcome from the restarted coordinator (or,
//! with no decision record, presumed abort).
//! Transfers caught by a crash end in doubt for their client, never half-applied: at the end
//! every participant is rebuilt from its durable log alone and the sum of all balances is
//! asserted to be what was deposited.
//!
//! The bank itself (`shared/bank.rs`) is written once for both atomic-commit crates; this file
//! only picks the protocol.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "shared/ledger.rs"]
mod ledger;

#[path = "shared/bank.rs"]
mod bank;

use common::NodeId;
use ledger::Ledger;
use twopc::{Config, TwoPcNode};

impl bank::Bank for TwoPcNode<Ledger> {
    fn config(id: NodeId, members: Vec<NodeId>) -> Config {
        Config::new(id, members)
    }
}

#[tokio::main]
async fn main() {
    bank::run::<TwoPcNode<Ledger>>().await;
}
