//! The async API over the real driver, in-memory network and write-ahead log: a cluster commits
//! commands, every replica stops, and a new cluster recovered from the same log directories
//! still holds every committed command (durable acceptor and learner state, restart from the
//! WAL).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use common::driver::{DriverConfig, Persistence};
use common::transport::memory::MemoryNetwork;
use common::wal::{Wal, WalConfig};
use paxos::{Config, KvCommand, KvOutput, KvQuery, KvStore, PaxosClient, PaxosHandle};

async fn start(dir: &std::path::Path, seed: u64) -> Vec<PaxosHandle<KvStore>> {
    start_n(dir, seed, 3).await
}

/// Replicas `1..=n`, all with the first configuration {1, 2, 3}.
async fn start_n(dir: &std::path::Path, seed: u64, n: u64) -> Vec<PaxosHandle<KvStore>> {
    let members = vec![1, 2, 3];
    let network = MemoryNetwork::new(seed);
    let driver = DriverConfig {
        persistence: Persistence::Background,
        ..DriverConfig::default()
    };
    let mut replicas = Vec::new();
    for id in 1..=n {
        let wal = Wal::open(WalConfig::new(dir.join(format!("node-{id}")))).unwrap();
        let mut config = Config::new(id, members.clone());
        config.snapshot_interval_slots = 8;
        replicas.push(
            PaxosHandle::<KvStore>::spawn(config, network.join(id).unwrap(), wal, driver)
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
    let client = PaxosClient::new(1, replicas.clone());
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
    // Snapshots are files beside each log; once a checkpoint naming a newer one was durable,
    // the older ones were deleted (20 commands, a snapshot every 8 slots).
    let mut files = Vec::new();
    for id in 1..=3 {
        let snapshots = dir
            .path()
            .join(format!("node-{id}"))
            .join(common::wal::SNAPSHOT_DIR_NAME);
        let store = common::snapshot::FileSnapshotStore::open(snapshots).unwrap();
        files.push(common::SnapshotStore::list(&store).unwrap().len());
    }
    assert!(files.iter().all(|&n| n <= 1), "{files:?}");
    assert!(files.contains(&1), "{files:?}");

    let replicas = start(dir.path(), 2).await;
    let client = PaxosClient::new(2, replicas.clone());
    let value = client
        .read(KvQuery::Get("k".into()))
        .await
        .unwrap()
        .into_value()
        .unwrap();
    let expected: String = (0..20).map(|i| format!("{i};")).collect();
    assert_eq!(value, expected);
    // And the recovered cluster keeps serving.
    let append = KvCommand::Append {
        key: "k".into(),
        value: "20;".into(),
    };
    assert_eq!(
        client.propose(append).await.unwrap(),
        KvOutput::Value(Some(expected))
    );
    // The non-waiting form serves as well when the leader's queue has room.
    let mut leader = None;
    for r in &replicas {
        if r.metrics().await.unwrap().is_leader {
            leader = Some(r.clone());
        }
    }
    let leader = leader.expect("a leader answered the proposal above");
    let append = KvCommand::Append {
        key: "k".into(),
        value: "21;".into(),
    };
    let before = leader.try_propose(append, None).await.unwrap();
    assert!(
        before.value().is_some_and(|v| v.ends_with("20;")),
        "{before:?}"
    );
    for r in &replicas {
        r.shutdown().await.unwrap();
    }
}

/// The configuration survives a restart: it is rebuilt from the chosen log and the checkpoints
/// in the write-ahead logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_survives_a_restart_from_the_write_ahead_logs() {
    let dir = tempfile::tempdir().unwrap();
    let replicas = start_n(dir.path(), 3, 4).await;
    let client = PaxosClient::new(1, replicas.clone());
    for i in 0..10 {
        let append = KvCommand::Append {
            key: "k".into(),
            value: format!("{i};"),
        };
        client.propose(append).await.unwrap();
    }
    // Replica 4 joins, replica 1 leaves.
    assert_eq!(client.reconfigure(vec![1, 2, 3, 4]).await.unwrap(), 1);
    assert_eq!(client.reconfigure(vec![2, 3, 4]).await.unwrap(), 2);
    let append = KvCommand::Append {
        key: "k".into(),
        value: "10;".into(),
    };
    client.propose(append).await.unwrap();
    // Every replica, the removed one included, learns the last configuration (bounded wait).
    let mut learned = false;
    for _ in 0..2_000 {
        let mut epochs = Vec::new();
        for r in &replicas {
            epochs.push(r.metrics().await.unwrap().epoch);
        }
        if epochs.iter().all(|&e| e == 2) {
            learned = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(learned, "not every replica learned configuration 2");
    for r in &replicas {
        let wal: Wal = r.node().shutdown_and_take_storage().await.unwrap();
        drop(wal);
    }
    drop(client);
    drop(replicas);

    let replicas = start_n(dir.path(), 4, 4).await;
    for r in &replicas[1..] {
        let m = r.metrics().await.unwrap();
        assert_eq!(
            (m.epoch, m.members.clone(), m.is_member),
            (2, vec![2, 3, 4], true)
        );
    }
    let m = replicas[0].metrics().await.unwrap();
    assert!(!m.is_member, "replica 1 recovered as removed: {m:?}");
    let client = PaxosClient::new(2, replicas.clone());
    let value = client
        .read(KvQuery::Get("k".into()))
        .await
        .unwrap()
        .into_value()
        .unwrap();
    let expected: String = (0..=10).map(|i| format!("{i};")).collect();
    assert_eq!(value, expected);
    for r in &replicas {
        r.shutdown().await.unwrap();
    }
}
