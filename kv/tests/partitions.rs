//! Network faults between real replica processes: every replica reaches the others through a
//! fault proxy per directed link (`support::proxy`), and a seeded nemesis runs one scenario after
//! another under a load: the leader isolated (links reset, or silently swallowing), a minority
//! cut off, one-way links (the leader cannot speak; the leader cannot hear), a chain (the leader
//! and one follower cannot talk, the third replica reaches both), flapping links, narrow links
//! (the leader's bandwidth throttled to 16–64 KiB/s, through which the load must keep going),
//! and slow links. After each scenario the network heals and the load must make progress again
//! within [`RECOVERY_MAX`]. The silent isolation lasts past the transport's idle timeout, which
//! must have dropped the silent connections. At the end every acknowledged write must be
//! readable and the history must be linearizable. Clients reach the replicas directly; only
//! replica links are faulted.
//!
//! `KV_SEED` picks the seed, `KV_NEMESIS_ROUNDS` the number of passes over the scenarios.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::rng::DetRng;
use common::NodeId;
use kv::load::Load;
use kv::net::KvClient;
use support::*;

/// Longest wait for the load to progress once the network healed.
const RECOVERY_MAX: Duration = Duration::from_secs(15);
/// Operations that count as progress after a heal.
const PROGRESS_OPS: u64 = 40;
/// How long the leader stays silently isolated: past the transport's idle timeout (3 s), the
/// only thing that notices a link swallowing every byte.
const SILENT_HOLD: Duration = Duration::from_secs(5);
/// What the transport logs when it drops a connection that went silent.
const IDLE_LOGGED: &str = "no frame for";

#[derive(Clone, Copy, Debug)]
enum Scenario {
    IsolateLeader,
    IsolateLeaderSilently,
    CutOffOne,
    LeaderCannotSpeak,
    LeaderCannotHear,
    Chain,
    Flapping,
    SlowLeader,
    NarrowLeader,
}

const SCENARIOS: [Scenario; 9] = [
    Scenario::IsolateLeader,
    Scenario::IsolateLeaderSilently,
    Scenario::CutOffOne,
    Scenario::LeaderCannotSpeak,
    Scenario::LeaderCannotHear,
    Scenario::Chain,
    Scenario::Flapping,
    Scenario::SlowLeader,
    Scenario::NarrowLeader,
];

/// Bandwidth of the leader's links in [`Scenario::NarrowLeader`]: a few dozen kilobytes per
/// second, far below what the load would use unchecked.
const NARROW_BYTES_PER_SEC: std::ops::RangeInclusive<u64> = 16 * 1024..=64 * 1024;
/// Operations the load must complete *while* the leader's links are narrow.
const NARROW_PROGRESS_OPS: u64 = 10;

/// Waits until the load progressed after `what` healed (bounded by [`RECOVERY_MAX`]).
async fn wait_progress(load: &Load, cluster: &Cluster, what: &str) {
    support::wait_progress(load, cluster, PROGRESS_OPS, RECOVERY_MAX, what).await;
}

// Long on purpose: one run against real processes, read top to bottom, over one cluster.
async fn nemesis(protocol: &'static str) {
    let seed = env_u64("KV_SEED", 3);
    let rounds = env_u64("KV_NEMESIS_ROUNDS", 1);
    let mut rng = DetRng::new(seed);
    let mut cluster = Cluster::with_proxies(protocol).await;
    let mut probe = KvClient::new(0, cluster.clients.clone());
    for id in 1..=NODES {
        cluster.wait_serving(id, &mut probe).await;
    }
    cluster.leader(&mut probe).await;
    let (load, runner) = start_load(&cluster, seed, 1, "");
    wait_progress(&load, &cluster, "the start").await;
    let first_leader = cluster.leader(&mut probe).await;
    let first_term = probe.node_status(first_leader).await.unwrap().term;
    let mut leaders = std::collections::BTreeSet::from([first_leader]);

    for _ in 0..rounds {
        for scenario in SCENARIOS {
            let leader = cluster.leader(&mut probe).await;
            let others: Vec<NodeId> = (1..=NODES).filter(|&n| n != leader).collect();
            let other = others[rng.range_inclusive(0, others.len() as u64 - 1) as usize];
            let hold = Duration::from_millis(rng.range_inclusive(300, 1_500));
            let hold = match scenario {
                Scenario::IsolateLeaderSilently => SILENT_HOLD,
                _ => hold,
            };
            let idle_drops = cluster.logged(IDLE_LOGGED);
            let net = cluster.net();
            match scenario {
                Scenario::IsolateLeader => net.partition(&[leader], &others, false),
                Scenario::IsolateLeaderSilently => net.partition(&[leader], &others, true),
                Scenario::CutOffOne => {
                    let any = rng.range_inclusive(1, NODES);
                    let rest: Vec<NodeId> = (1..=NODES).filter(|&n| n != any).collect();
                    net.partition(&[any], &rest, rng.range_inclusive(0, 1) == 1);
                }
                Scenario::LeaderCannotSpeak => {
                    for &o in &others {
                        net.cut(leader, o);
                    }
                }
                Scenario::LeaderCannotHear => {
                    for &o in &others {
                        net.cut(o, leader);
                    }
                }
                Scenario::Chain => net.partition(&[leader], &[other], false),
                Scenario::Flapping => {
                    let until = Instant::now() + hold;
                    while Instant::now() < until {
                        let a = rng.range_inclusive(1, NODES);
                        let b = (1..=NODES)
                            .filter(|&n| n != a)
                            .nth(rng.range_inclusive(0, 1) as usize);
                        net.cut(a, b.unwrap());
                        tokio::time::sleep(Duration::from_millis(rng.range_inclusive(20, 150)))
                            .await;
                        net.heal();
                    }
                }
                Scenario::SlowLeader => {
                    for &o in &others {
                        net.delay(leader, o, Duration::from_millis(rng.range_inclusive(5, 60)));
                    }
                }
                Scenario::NarrowLeader => {
                    let rate = rng.range_inclusive(
                        *NARROW_BYTES_PER_SEC.start(),
                        *NARROW_BYTES_PER_SEC.end(),
                    );
                    for &o in &others {
                        net.throttle(leader, o, rate);
                        net.throttle(o, leader, rate);
                    }
                    // A narrow link is slow, not down: the load goes on through it.
                    support::wait_progress(
                        &load,
                        &cluster,
                        NARROW_PROGRESS_OPS,
                        RECOVERY_MAX,
                        &format!("{scenario:?} at {rate} bytes/s, before the heal"),
                    )
                    .await;
                }
            }
            // The fault lasts a seeded while; nothing is asserted during it.
            tokio::time::sleep(hold).await;
            cluster.net().heal();
            wait_progress(&load, &cluster, &format!("{scenario:?}")).await;
            if matches!(scenario, Scenario::IsolateLeaderSilently) {
                assert!(
                    cluster.logged(IDLE_LOGGED) > idle_drops,
                    "no replica dropped a silent connection ({IDLE_LOGGED:?})\n{}",
                    cluster.logs()
                );
            }
            leaders.insert(cluster.leader(&mut probe).await);
        }
    }
    // The faults bit: connections were cut, bytes swallowed and delayed, and leadership moved.
    let stats = &cluster.net().stats;
    assert!(stats.connections_cut.load(Ordering::Relaxed) > 0);
    assert!(stats.bytes_swallowed.load(Ordering::Relaxed) > 0);
    assert!(stats.chunks_delayed.load(Ordering::Relaxed) > 0);
    assert!(stats.bytes_throttled.load(Ordering::Relaxed) > 0);
    let leader = cluster.leader(&mut probe).await;
    let term = probe.node_status(leader).await.unwrap().term;
    assert!(
        term > first_term && leaders.len() > 1,
        "leadership never moved: term {first_term} → {term}, leaders {leaders:?}"
    );
    stop_and_check(&load, runner, &cluster, 9_000_000).await;
    cluster.kill_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_survives_partitions_one_way_links_and_flapping_between_processes() {
    nemesis("raft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paxos_survives_partitions_one_way_links_and_flapping_between_processes() {
    nemesis("paxos").await;
}

/// Node `node` keeps links (both ways) only to `reach`.
fn connect_only(cluster: &Cluster, node: NodeId, reach: &[NodeId]) {
    for other in (1..=cluster.n).filter(|&o| o != node && !reach.contains(&o)) {
        cluster.net().partition(&[node], &[other], false);
    }
}

/// Waits (bounded) until node `id` leads and the load progressed under the fault.
async fn progress_led_by(
    load: &Load,
    cluster: &Cluster,
    probe: &mut KvClient,
    id: NodeId,
    what: &str,
) {
    wait_progress(load, cluster, what).await;
    let deadline = Instant::now() + RECOVERY_MAX;
    while !probe.status(id).await.is_some_and(|(leads, _)| leads) {
        assert!(
            Instant::now() < deadline,
            "{what}: node {id} did not take the lead\n{}",
            cluster.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The partial-connectivity scenarios Multi-Paxos's leader election is built to survive, on five
/// real processes (the simulated versions are in `paxos/tests/scenarios.rs`): quorum loss (the
/// leader and everyone else reach only replica C, which must take over), a constrained election
/// (C fell behind, then becomes the only replica a quorum can reach: it must lead, having caught
/// up in phase 1), and a chain. Progress is required *during* each fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paxos_makes_progress_in_quorum_loss_constrained_and_chained_partitions() {
    let n = 5;
    let mut cluster = Cluster::with_proxies_n("paxos", n).await;
    let mut probe = KvClient::new(0, cluster.clients.clone());
    for id in 1..=n {
        cluster.wait_serving(id, &mut probe).await;
    }
    let (load, runner) = start_load(&cluster, 29, 1, "");
    wait_progress(&load, &cluster, "the start").await;

    // Quorum loss.
    let a = cluster.leader(&mut probe).await;
    let c = 1 + a % n;
    for id in (1..=n).filter(|&id| id != c) {
        connect_only(&cluster, id, &[c]);
    }
    progress_led_by(&load, &cluster, &mut probe, c, "quorum loss").await;
    cluster.net().heal();
    wait_progress(&load, &cluster, "quorum loss").await;

    // Constrained election: C falls behind, then is the only replica a quorum reaches.
    let a = cluster.leader(&mut probe).await;
    let c = 1 + a % n;
    let others: Vec<NodeId> = (1..=n).filter(|&id| id != c).collect();
    cluster.net().partition(&[c], &others, false);
    wait_progress(&load, &cluster, "C cut off").await;
    cluster.net().heal();
    let rest: Vec<NodeId> = (1..=n).filter(|&id| id != a).collect();
    cluster.net().partition(&[a], &rest, false);
    for id in (1..=n).filter(|&id| id != a && id != c) {
        connect_only(&cluster, id, &[c]);
    }
    progress_led_by(&load, &cluster, &mut probe, c, "constrained election").await;
    cluster.net().heal();
    wait_progress(&load, &cluster, "constrained election").await;

    // Chain: the leader and one replica cannot talk; the others reach both.
    let a = cluster.leader(&mut probe).await;
    let b = 1 + a % n;
    cluster.net().partition(&[a], &[b], false);
    wait_progress(&load, &cluster, "chain").await;
    wait_progress(&load, &cluster, "chain").await;
    cluster.net().heal();

    stop_and_check(&load, runner, &cluster, 9_000_000).await;
    cluster.kill_all();
}
