//! A money transfer across three participants with two-phase commit, run by the tokio driver over
//! the in-memory network.
//!
//! ```text
//! cargo run -p twopc --example bank_transfer
//! ```
//!
//! Node 1 coordinates; nodes 2, 3 and 4 each hold one account. A transfer debits one account,
//! credits another and appends to an audit log: all three writes happen, or none. Two transfers
//! that touch the same account at the same time conflict if their prepares overlap: no-wait
//! locking then aborts one of them instead of letting them wait for each other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use common::codec::Bincode;
use common::driver::{self, DriverConfig, Persistence};
use common::transport::memory::MemoryNetwork;
use common::{MemStorage, Node};
use twopc::{Config, TwoPcNode, TxClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let members = vec![1, 2, 3, 4];
    let network = MemoryNetwork::new(1);
    let config = DriverConfig {
        persistence: Persistence::Inline,
        ..DriverConfig::default()
    };
    let mut nodes = Vec::new();
    for &id in &members {
        let core: TwoPcNode = TwoPcNode::recover(Config::new(id, members.clone()), vec![])?;
        let handle = driver::spawn(core, network.join(id)?, MemStorage::new(), Bincode, config)?;
        nodes.push(TxClient::new(handle));
    }
    let bank = &nodes[0];

    let mut transfer = bank.begin();
    transfer
        .write(2, "alice", "90")
        .write(3, "bob", "110")
        .write(4, "audit/1", "alice->bob 10");
    println!("transfer 1: {}", transfer.commit().await?);

    // Two transfers from alice at once: if one is prepared at node 2 when the other's Prepare
    // arrives, the second finds alice's account locked and aborts (the client retries).
    let mut a = bank.begin();
    a.write(2, "alice", "80").write(3, "bob", "120");
    let mut b = bank.begin();
    b.write(2, "alice", "85")
        .write(4, "audit/2", "alice->carol 5");
    let (ra, rb) = tokio::join!(a.commit(), b.commit());
    println!("concurrent transfers: {} and {}", ra?, rb?);

    for node in &nodes {
        let m = node.handle().metrics().await?;
        let stats = node.handle().stats();
        println!(
            "node {}: {} applied, {} aborted, {} in doubt, {} messages sent",
            node.handle().id(),
            m.applied,
            m.aborted,
            m.in_doubt.len(),
            stats.messages_sent
        );
        node.handle().shutdown().await?;
    }
    Ok(())
}
