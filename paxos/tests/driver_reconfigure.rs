//! `PaxosHandle::reconfigure` through the real driver and the in-memory network: a fourth replica,
//! started outside the first configuration, is added; then the leader removes itself; the
//! cluster keeps serving, the new member holds every command, and the metrics show the
//! configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use common::driver::{DriverConfig, Persistence};
use common::transport::memory::MemoryNetwork;
use common::{MemStorage, NodeId};
use paxos::{Config, KvCommand, KvQuery, KvStore, Metrics, PaxosClient, PaxosHandle};

/// Polls `check` on every replica's metrics until it holds (bounded: the test fails after
/// `POLLS_MAX` rounds).
const POLLS_MAX: u32 = 2_000;

async fn metrics(replicas: &[PaxosHandle<KvStore>]) -> Vec<Metrics> {
    let mut all = Vec::new();
    for r in replicas {
        all.push(r.metrics().await.unwrap());
    }
    all
}

async fn wait_for(
    replicas: &[PaxosHandle<KvStore>],
    what: &str,
    check: impl Fn(&[Metrics]) -> bool,
) {
    for _ in 0..POLLS_MAX {
        if check(&metrics(replicas).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "{what}: not reached; metrics: {:?}",
        metrics(replicas).await
    );
}

async fn leader(replicas: &[PaxosHandle<KvStore>]) -> usize {
    wait_for(replicas, "a leader", |m| m.iter().any(|m| m.is_leader)).await;
    metrics(replicas)
        .await
        .iter()
        .position(|m| m.is_leader)
        .unwrap()
}

fn append(i: u32) -> KvCommand {
    KvCommand::Append {
        key: "k".into(),
        value: format!("{i};"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_reconfigure_adds_a_replica_and_removes_the_leader() {
    let first: Vec<NodeId> = vec![1, 2, 3];
    let network = MemoryNetwork::new(3);
    let driver = DriverConfig {
        persistence: Persistence::Inline,
        ..DriverConfig::default()
    };
    let mut replicas = Vec::new();
    for id in 1..=4 {
        // Every replica gets the first configuration; replica 4 is not in it.
        let mut config = Config::new(id, first.clone());
        config.snapshot_interval_slots = 4;
        let transport = network.join(id).unwrap();
        replicas.push(
            PaxosHandle::<KvStore>::spawn(config, transport, MemStorage::new(), driver)
                .await
                .unwrap(),
        );
    }
    let client = PaxosClient::new(1, replicas.clone());
    for i in 0..10 {
        client.propose(append(i)).await.unwrap();
    }
    assert!(!replicas[3].metrics().await.unwrap().is_member);

    // Add replica 4: it catches up (by snapshot: the others compacted) before it votes.
    let l = leader(&replicas).await;
    let epoch = replicas[l].reconfigure(vec![1, 2, 3, 4]).await.unwrap();
    assert_eq!(epoch, 1);
    let m = replicas[l].metrics().await.unwrap();
    assert_eq!((m.epoch, m.members.clone()), (1, vec![1, 2, 3, 4]));
    for i in 10..15 {
        client.propose(append(i)).await.unwrap();
    }

    // The leader removes itself; the others elect a new leader and carry on.
    let l = leader(&replicas).await;
    let removed = l as NodeId + 1;
    let rest: Vec<NodeId> = (1..=4).filter(|&id| id != removed).collect();
    assert_eq!(replicas[l].reconfigure(rest.clone()).await.unwrap(), 2);
    for i in 15..20 {
        client.propose(append(i)).await.unwrap();
    }
    let read = client.read(KvQuery::Get("k".into())).await.unwrap();
    let expected: String = (0..20).map(|i| format!("{i};")).collect();
    assert_eq!(read.value(), Some(expected.as_str()));
    let l = leader(&replicas).await;
    assert_ne!(l as NodeId + 1, removed);
    wait_for(&replicas, "every replica in epoch 2", |m| {
        m.iter().all(|m| m.epoch == 2 && m.members == rest)
    })
    .await;
    let m = metrics(&replicas).await;
    assert!(!m[removed as usize - 1].is_member);
    assert!(m[3].is_member);
    // Replica 4 applied everything, although it joined late.
    let decided = m[l].decided;
    wait_for(&replicas, "replica 4 caught up", move |m| {
        m[3].applied >= decided
    })
    .await;
    for r in &replicas {
        r.shutdown().await.unwrap();
    }
}

// A paused clock: no election timeout fires while the answers wait, so the leader stays.
#[tokio::test(start_paused = true)]
async fn submitted_proposals_and_reads_are_answered_like_awaited_ones() {
    let network = MemoryNetwork::new(5);
    let driver = DriverConfig {
        persistence: Persistence::Inline,
        ..DriverConfig::default()
    };
    let mut replicas = Vec::new();
    for id in 1..=3 {
        let transport = network.join(id).unwrap();
        let config = Config::new(id, vec![1, 2, 3]);
        replicas.push(
            PaxosHandle::<KvStore>::spawn(config, transport, MemStorage::new(), driver)
                .await
                .unwrap(),
        );
    }
    // Through the client first, so a leader is elected and known.
    PaxosClient::new(1, replicas.clone())
        .propose(append(0))
        .await
        .unwrap();
    let l = leader(&replicas).await;
    // Handed over at the call, in call order: answers awaited last-first still show the appends
    // in the order of the calls.
    let appends: Vec<_> = (1..10)
        .map(|i| replicas[l].submit(append(i), None))
        .collect();
    let read = replicas[l].submit_read(KvQuery::Get("k".into()));
    let mut outputs = Vec::new();
    for answer in appends.into_iter().rev() {
        outputs.push(answer.await.unwrap());
    }
    outputs.reverse();
    // An append answers the value before it.
    for (i, out) in (1..10).zip(&outputs) {
        let before: String = (0..i).map(|j| format!("{j};")).collect();
        assert_eq!(out.value(), Some(before.as_str()), "append {i}");
    }
    // The read ran concurrently with the appends: it sees some prefix of them.
    let seen = read.await.unwrap().value().unwrap_or_default().to_string();
    assert!(
        (1..=10).any(|n| seen == (0..n).map(|j| format!("{j};")).collect::<String>()),
        "{seen:?}"
    );
    // A follower refuses, naming the leader, as `propose` does.
    let follower = (l + 1) % 3;
    let err = replicas[follower]
        .submit(append(99), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            paxos::ClientError::Paxos(paxos::PaxosError::NotLeader { .. })
        ),
        "{err}"
    );
    for r in &replicas {
        r.shutdown().await.unwrap();
    }
}
