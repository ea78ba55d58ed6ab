//! The driver on the durable log, end to end: a three-node demo cluster whose nodes each persist
//! to a `Wal` in their own data directory is shut down entirely, reopened from those directories,
//! and continues where it was: totals preserved, new adds applied once.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::codec::Bincode;
use common::demo::{DemoConfig, DemoNode, DemoRequest, DemoResponse};
use common::driver::{self, DriverConfig, NodeHandle};
use common::transport::memory::MemoryNetwork;
use common::wal::{Wal, WalConfig};
use common::{NodeId, StorageError};

const MEMBERS: [NodeId; 3] = [1, 2, 3];
/// Restarts of the whole cluster.
const RESTARTS: u64 = 2;
/// Adds per run of the cluster.
const ADDS_PER_RUN: u64 = 30;

fn demo_config(id: NodeId) -> DemoConfig {
    let mut config = DemoConfig::new(id, MEMBERS.to_vec());
    // The test runs on the real clock: never time out on a loaded machine.
    config.retries_max = 10_000;
    config
}

fn wal_config(dir: &Path) -> WalConfig {
    let mut config = WalConfig::new(dir);
    // Small segments, so the cluster's logs span several.
    config.segment_bytes_max = 64 * 1024;
    config.record_bytes_max = 4096;
    config
}

/// Starts every node from its data directory (empty the first time).
async fn start(net: &MemoryNetwork, dirs: &[PathBuf]) -> Vec<NodeHandle<DemoNode>> {
    let mut nodes = Vec::new();
    for (&id, dir) in MEMBERS.iter().zip(dirs) {
        let wal = Wal::open(wal_config(dir)).unwrap();
        assert_eq!(
            wal.recovery().truncated_bytes,
            0,
            "a clean shutdown leaves no torn tail"
        );
        let node = driver::spawn_recovered::<DemoNode, _, _, _>(
            demo_config(id),
            net.join(id).unwrap(),
            wal,
            Bincode,
            DriverConfig::default(),
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    nodes
}

async fn totals(nodes: &[NodeHandle<DemoNode>]) -> Vec<u64> {
    let mut totals = Vec::new();
    for n in nodes {
        totals.push(n.metrics().await.unwrap().total);
    }
    totals
}

/// Waits until every node's total is `expected` (bounded: about a minute on the real clock).
async fn converge(nodes: &[NodeHandle<DemoNode>], expected: u64) {
    for _ in 0..6000 {
        if totals(nodes).await.iter().all(|&t| t == expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no convergence to {expected}: totals {:?}",
        totals(nodes).await
    );
}

/// Sends `ADDS_PER_RUN` adds spread over the nodes, all concurrently; returns their sum.
async fn add_many(nodes: &[NodeHandle<DemoNode>], run: u64) -> u64 {
    let mut tasks = Vec::new();
    let mut sum = 0;
    for i in 0..ADDS_PER_RUN {
        let amount = run * 1000 + i + 1;
        sum += amount;
        let node = nodes[(i % nodes.len() as u64) as usize].clone();
        tasks.push(tokio::spawn(async move {
            node.request(DemoRequest::Add(amount)).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(matches!(r, Ok(DemoResponse::Total(_))), "{r:?}");
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_restarted_from_its_data_directories_continues() {
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = MEMBERS
        .iter()
        .map(|id| root.path().join(format!("node-{id}")))
        .collect();
    let mut expected = 0;
    for run in 0..=RESTARTS {
        // A fresh network each time, as after restarting every process.
        let net = MemoryNetwork::new(run);
        let nodes = start(&net, &dirs).await;
        // Every node recovered the total it had, from its own log, before hearing from anyone.
        assert_eq!(totals(&nodes).await, vec![expected; 3], "run {run}");
        // The data directories are held while the nodes run.
        assert!(matches!(
            Wal::open(wal_config(&dirs[0])),
            Err(StorageError::Locked { .. })
        ));

        expected += add_many(&nodes, run).await;
        converge(&nodes, expected).await;

        for n in &nodes {
            let wal: Wal = n.shutdown_and_take_storage().await.unwrap();
            let stats = wal.stats();
            assert_eq!(
                stats.records_synced, ADDS_PER_RUN,
                "each node durably applied every update of this run once"
            );
            assert!(stats.syncs <= stats.records_synced);
        }
    }
}
