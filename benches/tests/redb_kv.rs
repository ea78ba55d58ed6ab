//! The redb-backed state machine: the state-machine conformance suite of `common::testing`, and
//! restarts of a Raft node over it (write-ahead log and snapshot files on disk) that neither
//! restore an older snapshot nor apply entries again.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use benches::redb_kv::{RedbCommand, RedbKv, RedbOutput, RedbQuery};
use common::codec::Bincode;
use common::driver::{self, DriverConfig};
use common::transport::memory::MemoryNetwork;
use common::wal::{Wal, WalConfig};
use common::Setup;
use raft::{Config, RaftHandle, RaftNode, Role};

const CACHE_BYTES: usize = 4 * 1024 * 1024;

fn put(i: u64) -> RedbCommand {
    RedbCommand::Put {
        key: format!("key-{:03}", i % 50),
        value: i.to_le_bytes().repeat(8),
    }
}

#[test]
fn redb_state_machine_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sm.redb");
    let mut commands: Vec<RedbCommand> = (0..60).map(put).collect();
    commands.push(RedbCommand::Delete {
        key: "key-007".into(),
    });
    common::testing::state_machine_suite(
        || RedbKv::open(&path, CACHE_BYTES),
        &commands,
        &RedbQuery::Len,
    );
}

/// Starts node 1 of a one-node Raft group over the WAL and database in `dir`.
async fn start(dir: &Path, net: &MemoryNetwork) -> RaftHandle<RedbKv> {
    let mut config = Config::new(1, vec![1]);
    config.snapshot_log_entries_max = 16;
    let path = dir.join("sm.redb");
    let setup = Setup::new(config, move || RedbKv::open(&path, CACHE_BYTES));
    let wal = Wal::open(WalConfig::new(dir.join("wal"))).unwrap();
    let h = driver::spawn_recovered::<RaftNode<RedbKv>, _, _, _>(
        setup,
        net.join(1).unwrap(),
        wal,
        Bincode,
        DriverConfig::default(),
    )
    .await
    .unwrap();
    let h = RaftHandle::new(h);
    for _ in 0..500 {
        if h.metrics().await.unwrap().role == Role::Leader {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node 1 did not lead its one-node group");
}

// On the real clock: a one-node group leads once its vote is on disk, which takes real time
// that a paused clock would skip past. The wait for it polls, bounded by a count.
#[tokio::test]
async fn restarts_without_replaying_what_the_database_applied() {
    let dir = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new(5);
    let h = start(dir.path(), &net).await;
    for i in 0..100 {
        h.propose(put(i)).await.unwrap();
    }
    assert_eq!(
        h.read(RedbQuery::Applies).await.unwrap(),
        RedbOutput::Count(100)
    );
    let before = h.metrics().await.unwrap();
    assert!(
        before.snapshot_index > 0,
        "snapshots were taken: {before:?}"
    );
    h.shutdown().await.unwrap();
    // The handle keeps the storage it got back (and with it the WAL's directory lock).
    drop(h);
    let snapshots = std::fs::read_dir(dir.path().join("wal").join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(snapshots, 1, "older snapshot files were deleted");

    // Restart from the same directory: the database reports where it was, and nothing is
    // applied a second time (the count of applies is in the database itself).
    let net = MemoryNetwork::new(6);
    let h = start(dir.path(), &net).await;
    let after = h.metrics().await.unwrap();
    assert!(after.applied_index >= before.applied_index, "{after:?}");
    h.propose(put(100)).await.unwrap();
    assert_eq!(
        h.read(RedbQuery::Applies).await.unwrap(),
        RedbOutput::Count(101),
        "no entry was applied twice across the restart"
    );
    assert_eq!(
        h.read(RedbQuery::Get("key-000".into())).await.unwrap(),
        RedbOutput::Value(Some(100u64.to_le_bytes().repeat(8)))
    );
    h.shutdown().await.unwrap();
}
