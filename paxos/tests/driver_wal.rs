//! The async API over the real driver, in-memory network and write-ahead log: a cluster commits
//! commands, every replica stops, and a new cluster recovered from the same log directories
//! still holds every committed command (durable acceptor and learner state, restart from the
//! WAL).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use common::driver::{DriverConfig, Persistence};
use common::transport::memory::MemoryNetwork;
use common::wal::{Wal, WalConfig};
use paxos::{Client, Config, Handle, KvCommand, KvQuery, KvStore};

async fn start(dir: &std::path::Path, seed: u64) -> Vec<Handle<KvStore>> {
    let members = vec![1, 2, 3];
    let network = MemoryNetwork::new(seed);
    let driver = DriverConfig {
        persistence: Persistence::Background,
        ..DriverConfig::default()
    };
    let mut replicas = Vec::new();
    for &id in &members {
        let wal = Wal::open(WalConfig::new(dir.join(format!("node-{id}")))).unwrap();
        let mut config = Config::new(id, members.clone());
        config.snapshot_interval_slots = 8;
        replicas.push(
            Handle::<KvStore>::spawn(config, network.join(id).unwrap(), wal, driver)
                .await
                .unwrap(),
        );
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_restarts_from_its_write_ahead_logs() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = start(dir.path(), 1).await;
    let client = Client::new(1, replicas.clone());
    for i in 0..20 {
        let append = KvCommand::Append {
            key: "k".into(),
            value: format!("{i};"),
        };
        client.propose(append).await.unwrap();
    }
    // Stop every replica and release its log (the WAL locks its directory while open).
    for r in &replicas {
        let wal: Wal = r.node().shutdown_and_take_storage().await.unwrap();
        drop(wal);
    }
    drop(client);
    drop(replicas);

    let replicas = start(dir.path(), 2).await;
    let client = Client::new(2, replicas.clone());
    let value = client
        .read(KvQuery { key: "k".into() })
        .await
        .unwrap()
        .unwrap();
    let expected: String = (0..20).map(|i| format!("{i};")).collect();
    assert_eq!(value, expected);
    // And the recovered cluster keeps serving.
    let append = KvCommand::Append {
        key: "k".into(),
        value: "20;".into(),
    };
    assert_eq!(client.propose(append).await.unwrap(), Some(expected));
    for r in &replicas {
        r.shutdown().await.unwrap();
    }
}
