//! A three-node demo counter, run by the tokio driver over the in-memory network.
//!
//! ```text
//! cargo run -p common --example demo_cluster
//! ```
//!
//! Each node is a sans-IO [`DemoNode`] core; [`driver::spawn`] gives it a task, a transport
//! endpoint and storage, and hands back a [`NodeHandle`] to send it requests. Adds go to
//! different nodes; each is acknowledged once a majority holds it, and every node ends with the
//! same total.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use common::codec::Bincode;
use common::demo::{DemoConfig, DemoNode, DemoRequest, DemoResponse};
use common::driver::{self, DriverConfig, NodeHandle, Persistence};
use common::transport::memory::MemoryNetwork;
use common::{MemStorage, Node};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let members = vec![1, 2, 3];
    let network = MemoryNetwork::new(42);
    // MemStorage's sync is free, so the node task may call it directly.
    let config = DriverConfig {
        persistence: Persistence::Inline,
        ..DriverConfig::default()
    };

    let mut nodes: Vec<NodeHandle<DemoNode>> = Vec::new();
    for &id in &members {
        let core = DemoNode::recover(DemoConfig::new(id, members.clone()), vec![])?;
        let transport = network.join(id)?;
        nodes.push(driver::spawn(
            core,
            transport,
            MemStorage::new(),
            Bincode,
            config,
        )?);
    }

    for (i, amount) in [5, 10, 20, 40].into_iter().enumerate() {
        let node = &nodes[i % nodes.len()];
        match node.request(DemoRequest::Add(amount)).await? {
            DemoResponse::Total(total) => {
                println!(
                    "node {} acknowledged +{amount}: its total is {total}",
                    node.id()
                )
            }
            DemoResponse::Failed(e) => println!("node {} refused +{amount}: {e}", node.id()),
        }
    }

    // Acknowledged means "held by a majority"; the last node catches up a moment later.
    for _ in 0..100 {
        let mut totals = Vec::new();
        for node in &nodes {
            totals.push(node.metrics().await?.total);
        }
        if totals.iter().all(|&t| t == 75) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for node in &nodes {
        let stats = node.stats();
        println!(
            "node {}: total {}, {} messages sent, {} records persisted in {} syncs",
            node.id(),
            node.metrics().await?.total,
            stats.messages_sent,
            stats.records_persisted,
            stats.syncs
        );
        node.shutdown().await?;
    }
    Ok(())
}
