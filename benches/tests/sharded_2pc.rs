//! The "2pc-raft" contender (`benches::sharded`): transactions across two partitions commit,
//! and after the crash of the process leading the most groups the others serve again and the
//! background resolver finishes what a vanished coordinator left prepared. The bench tests
//! run on the real clock, so every wait here is a bounded poll.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use benches::sharded::ShardedCluster;
use benches::{Cluster, ClusterSpec, TransportKind};

/// Operations before the crash.
const OPS: u64 = 20;
/// Clients the operations are spread over.
const CLIENTS: usize = 4;
/// Bound on the polls after the crash, of [`POLL`] each: far above an election timeout plus
/// the resolver's delay.
const POLLS_MAX: u32 = 300;
const POLL: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_the_resolver_finishes_what_a_crash_leaves() {
    let spec = ClusterSpec::new(3, TransportKind::Memory, false, 7);
    let cluster = ShardedCluster::start(&spec).await.unwrap();
    let mut ok = 0;
    for seq in 0..OPS {
        if cluster.run_op(seq as usize % CLIENTS, seq).await.is_ok() {
            ok += 1;
        }
    }
    // Every step retries until answered, so only a stall of the machine longer than the
    // resolver's delay (it then aborts a slow transaction) could fail one.
    assert!(ok >= OPS - 2, "only {ok} of {OPS} transactions committed");
    let stats = cluster.stats();
    assert!(stats.messages_sent > 0 && stats.records_persisted > 0);
    assert_eq!(cluster.undecided().await.unwrap(), Some(0));

    // A coordinator that vanishes between the votes and the decision: both parts stay
    // prepared until the resolver decides.
    cluster.prepare_and_abandon(CLIENTS).await.unwrap();
    let left = cluster.undecided().await.unwrap().unwrap();
    assert!(left >= 1, "nothing prepared was left");

    let crashed = cluster.crash_leader().await.unwrap();
    assert!(crashed.is_some());
    // The others elect leaders for the crashed process's groups and serve again.
    let mut after = 0;
    for poll in 0..POLLS_MAX {
        if cluster
            .run_op(poll as usize % CLIENTS, OPS + u64::from(poll))
            .await
            .is_ok()
        {
            after += 1;
            if after >= 3 {
                break;
            }
        } else {
            tokio::time::sleep(POLL).await;
        }
    }
    assert!(after >= 3, "no transaction committed after the crash");
    // The resolver finishes the abandoned transaction, and any the crash cut short.
    let mut undecided = None;
    for _ in 0..POLLS_MAX {
        undecided = cluster.undecided().await.unwrap();
        if undecided == Some(0) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(undecided, Some(0), "still undecided after the crash");
    let resolved = cluster.resolver_stats();
    assert!(resolved.decisions >= 1, "{resolved:?}");
    assert_eq!(cluster.decision_conflicts().await.unwrap(), Some(0));
    cluster.shutdown().await.unwrap();
}
