//! Runtime membership with real processes on 127.0.0.1: under a running load, a three-replica
//! cluster grows to five (`member add`, then each new replica started with `--join`, Raft
//! learners promoted once caught up) and shrinks back to three (`member remove`), while its
//! leader is killed with SIGKILL and a follower is frozen with SIGSTOP in the middle of the
//! changes. Afterwards every acknowledged write must be readable and the recorded history must be
//! linearizable. The load's clients are told only of the first three replicas: they find
//! leaders added at run time through the membership the replicas answer with.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use common::NodeId;
use kv::load::Load;
use kv::net::{CallOutcome, KvClient, MembersInfo};
use support::*;

fn ok<T: std::fmt::Debug>(what: &str, outcome: CallOutcome<T>, cluster: &Cluster) -> T {
    match outcome {
        CallOutcome::Ok(v) => v,
        other => panic!("{what}: {other:?}\n{}", cluster.logs()),
    }
}

/// Waits (bounded) until node `id` has applied everything the leader had committed when the
/// wait began.
async fn wait_caught_up(cluster: &Cluster, probe: &mut KvClient, id: NodeId) {
    let leader = cluster.leader(probe).await;
    let target = probe
        .node_status(leader)
        .await
        .map_or(0, |s| s.commit_index);
    let deadline = Instant::now() + WAIT_MAX;
    while Instant::now() < deadline {
        if probe
            .node_status(id)
            .await
            .is_some_and(|s| s.applied_index >= target)
        {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("node {id} did not catch up to {target}\n{}", cluster.logs());
}

fn sorted(ids: &[NodeId]) -> Vec<NodeId> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

// Long on purpose: one scenario against real processes, read top to bottom, over one cluster.
async fn grow_and_shrink_under_load(protocol: &'static str) {
    let raft = protocol == "raft";
    let mut cluster = Cluster::with_spares(protocol, 2);
    let all: BTreeMap<NodeId, SocketAddr> = cluster
        .listen
        .keys()
        .map(|&id| (id, cluster.client_addr(id)))
        .collect();
    let mut probe = KvClient::new(0, all);
    for id in 1..=NODES {
        cluster.wait_serving(id, &mut probe).await;
    }
    cluster.leader(&mut probe).await;

    let (load, runner) = start_load(&cluster, 23, 1, "");
    let progress = |load: &Load, n: u64| load.completed.load(Ordering::SeqCst) + n;
    wait_completed(&load, progress(&load, 100), &cluster).await;

    // The administrator knows only the first three replicas, like the load's clients.
    let mut admin = KvClient::new(9_000_000, cluster.clients.clone()).with_deadline(WAIT_MAX);
    // A write of the address book as a plain client write is refused.
    let forged = admin.write(kv::KvOp::Deregister { id: 2 }).await;
    assert!(matches!(forged, CallOutcome::Failed(_)), "{forged:?}");

    // Grow: 3 → 5.
    for id in [NODES + 1, NODES + 2] {
        let peer = cluster.listen[&id].to_string();
        let client = cluster.client_addr(id).to_string();
        let info = ok("add", admin.add_member(id, &peer, &client).await, &cluster);
        if raft {
            assert!(info.learners.contains(&id), "{info:?}");
        } else {
            assert!(info.voters.contains(&id), "{info:?}");
        }
        assert!(info.nodes.iter().any(|n| n.id == id && n.peer == peer));
        // Adding again is answered the same, and changes nothing.
        let again = ok(
            "add again",
            admin.add_member(id, &peer, &client).await,
            &cluster,
        );
        assert_eq!(sorted(&again.voters), sorted(&info.voters));
        cluster.start_joining(id);
        cluster.wait_serving(id, &mut probe).await;
        if id == NODES + 1 {
            // SIGKILL the leader while the new replica catches up; it restarts from its
            // directory and learns the new member from its own log.
            let leader = cluster.leader(&mut probe).await;
            cluster.kill(leader);
            cluster.leader(&mut probe).await;
            wait_completed(&load, progress(&load, 60), &cluster).await;
            cluster.start(leader);
            cluster.wait_serving(leader, &mut probe).await;
        } else {
            // Freeze a follower of the first three while the change goes on.
            let leader = cluster.leader(&mut probe).await;
            let frozen = (1..=NODES).find(|&n| n != leader).unwrap();
            cluster.signal(frozen, "-STOP");
            wait_completed(&load, progress(&load, 60), &cluster).await;
            cluster.signal(frozen, "-CONT");
        }
        wait_caught_up(&cluster, &mut probe, id).await;
        if raft {
            let info = ok("promote", admin.promote_member(id).await, &cluster);
            assert!(info.voters.contains(&id), "{info:?}");
        }
        wait_completed(&load, progress(&load, 60), &cluster).await;
    }
    let grown = ok("list", admin.members().await, &cluster);
    assert_eq!(sorted(&grown.voters), vec![1, 2, 3, 4, 5], "{grown:?}");

    // Raft: make a new replica the leader, so shrinking removes the leader itself.
    if raft {
        let info = ok("transfer", admin.transfer_leader(NODES + 1).await, &cluster);
        assert_eq!(info.leader, Some(NODES + 1), "{info:?}");
        wait_completed(&load, progress(&load, 60), &cluster).await;
    } else {
        let refused = admin.transfer_leader(1).await;
        assert!(matches!(refused, CallOutcome::Failed(_)), "{refused:?}");
    }

    // Shrink: 5 → 3.
    for id in [NODES + 1, NODES + 2] {
        let info = ok("remove", admin.remove_member(id).await, &cluster);
        assert!(!info.voters.contains(&id), "{info:?}");
        assert!(info.removed.contains(&id), "{info:?}");
        assert_eq!(cluster.terminate(id).await, Some(0));
        wait_completed(&load, progress(&load, 60), &cluster).await;
    }
    let shrunk: MembersInfo = ok("list", admin.members().await, &cluster);
    assert_eq!(sorted(&shrunk.voters), vec![1, 2, 3], "{shrunk:?}");
    assert!(shrunk.learners.is_empty(), "{shrunk:?}");
    // A removed id is never used again.
    let reuse = admin
        .add_member(
            NODES + 1,
            &cluster.listen[&(NODES + 1)].to_string(),
            "127.0.0.1:1",
        )
        .await;
    assert!(
        !matches!(reuse, CallOutcome::Ok(_)),
        "a removed id was added again: {reuse:?}"
    );
    let after = ok("list", admin.members().await, &cluster);
    assert_eq!(sorted(&after.voters), vec![1, 2, 3], "{after:?}");
    assert!(after.nodes.iter().all(|n| n.id <= NODES), "{after:?}");

    wait_completed(&load, progress(&load, 100), &cluster).await;
    stop_and_check(&load, runner, &cluster, 8_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_grows_to_five_and_shrinks_back_under_load_and_faults() {
    grow_and_shrink_under_load("raft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paxos_grows_to_five_and_shrinks_back_under_load_and_faults() {
    grow_and_shrink_under_load("paxos").await;
}
