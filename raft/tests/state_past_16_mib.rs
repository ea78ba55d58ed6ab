//! A state larger than any record or frame (§7 with snapshots as files): three nodes whose state
//! machine holds 64 KiB per command, compacting every 100 entries, keep serving past 16 MiB of
//! state (the size of the largest record and frame), and a node that was away catches up by a
//! snapshot of more than 16 MiB sent in chunks.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use common::driver::DriverConfig;
use common::transport::memory::MemoryNetwork;
use raft::kv::{KvCommand, KvOutput, KvQuery, KvStore};
use raft::{spawn_memory_cluster, Config, RaftClient, Role};

/// Bytes per value.
const VALUE_BYTES: usize = 64 * 1024;
/// Writes: 320 × 64 KiB = 20 MiB of state, past the 16 MiB record and frame limits.
const WRITES: usize = 320;
/// The largest record storage and the largest frame the transport accept by default.
const SIXTEEN_MIB: u64 = 16 * 1024 * 1024;

/// Write `i`'s value: its number, padded to [`VALUE_BYTES`].
fn value(i: usize) -> String {
    let mut v = format!("{i}:");
    v.extend(std::iter::repeat_n('x', VALUE_BYTES - v.len()));
    v
}

async fn leader(client: &RaftClient<KvStore>) -> u64 {
    for _ in 0..1_000 {
        for h in client.nodes() {
            if let Ok(m) = h.metrics().await {
                if m.role == Role::Leader {
                    return m.id;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader elected");
}

// On tokio's paused clock: the waits below poll in virtual time, bounded by a count.
#[tokio::test(start_paused = true)]
async fn serves_past_sixteen_mib_of_state_and_installs_a_larger_snapshot() {
    let net = MemoryNetwork::new(7);
    let configs: Vec<Config> = (1..=3)
        .map(|id| {
            let mut c = Config::new(id, vec![1, 2, 3]);
            c.snapshot_log_entries_max = 100;
            c
        })
        .collect();
    let client: RaftClient<KvStore> =
        spawn_memory_cluster(configs, &net, DriverConfig::default()).unwrap();
    let first = leader(&client).await;
    // One follower is cut off for the whole run: it can only catch up by snapshot.
    let away = (1..=3).find(|&id| id != first).unwrap();
    net.faults().isolate(away);
    for i in 0..WRITES {
        let (_, out) = client
            .propose(KvCommand::Put {
                key: format!("key-{i:04}"),
                value: value(i),
            })
            .await
            .unwrap_or_else(|e| panic!("write {i} of {WRITES}: {e}"));
        assert_eq!(out, KvOutput::Value(None), "a new key: no previous value");
    }
    let node = |id: u64| client.node(id).unwrap().clone();
    let lead = leader(&client).await;
    let m = node(lead).metrics().await.unwrap();
    assert!(m.snapshot_index >= 300, "compacted: {m:?}");
    net.faults().heal();
    // The node that was away installs the leader's snapshot, far past 16 MiB, chunk by chunk.
    let mut caught_up = None;
    for _ in 0..3_000 {
        let f = node(away).metrics().await.unwrap();
        if f.applied_index >= m.applied_index {
            caught_up = Some(f);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let f = caught_up.expect("the node that was away caught up");
    assert!(f.snapshot_index >= 300, "it caught up by snapshot: {f:?}");
    assert!(
        f.snapshot_bytes > SIXTEEN_MIB,
        "snapshot of {} bytes",
        f.snapshot_bytes
    );
    let read = client.read(KvQuery::Get("key-0000".into())).await.unwrap();
    assert_eq!(read, KvOutput::Value(Some(value(0))));
    client.shutdown().await.unwrap();
}
