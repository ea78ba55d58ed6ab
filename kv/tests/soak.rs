//! The soak: everything at once on five real replicas, for as long as asked. A seeded nemesis
//! keeps drawing faults under a load: network partitions of every shape through the fault proxy
//! (isolation, silent blackholes, one-way links, chains, slow links), `kill -9` and restart of
//! any replica, SIGSTOP and SIGCONT, and floods of idle connections. After each fault the
//! network heals and the load must progress again within a bound; at the end every acknowledged
//! write must read back and the history must be linearizable.
//!
//! Opt-in, and ignored by the normal test run:
//!
//! ```text
//! SOAK_SECS=3600 cargo test --release -p kv --test soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_PROTOCOL` picks `raft` (default) or `paxos`; `KV_SEED` the seed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::rng::DetRng;
use common::NodeId;
use kv::net::KvClient;
use support::*;

/// Longest wait for the load to progress once a fault is repaired.
const RECOVERY_MAX: Duration = Duration::from_secs(30);

async fn progressed(load: &kv::load::Load, cluster: &Cluster, ops: u64, what: &str) {
    wait_progress(load, cluster, ops, RECOVERY_MAX, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "opt-in soak: SOAK_SECS=N cargo test -p kv --test soak -- --ignored"]
async fn soak_everything_at_once_on_five_replicas() {
    let secs = env_u64("SOAK_SECS", 60);
    let seed = env_u64("KV_SEED", 1);
    let protocol: &'static str = match std::env::var("SOAK_PROTOCOL").as_deref() {
        Ok("paxos") => "paxos",
        _ => "raft",
    };
    let n = 5;
    let mut rng = DetRng::new(seed);
    let mut cluster = Cluster::with_proxies_n(protocol, n).await;
    let mut probe = KvClient::new(0, cluster.clients.clone());
    for id in 1..=n {
        cluster.wait_serving(id, &mut probe).await;
    }
    let (load, runner) = start_load(&cluster, seed, 1, "");
    progressed(&load, &cluster, 50, "the start").await;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut faults = 0u64;
    while Instant::now() < end {
        let victim: NodeId = rng.range_inclusive(1, n);
        let others: Vec<NodeId> = (1..=n).filter(|&x| x != victim).collect();
        let hold = Duration::from_millis(rng.range_inclusive(200, 2_000));
        let what = match rng.range_inclusive(0, 6) {
            0 => {
                cluster.net().partition(&[victim], &others, false);
                "a replica cut off"
            }
            1 => {
                cluster.net().partition(&[victim], &others, true);
                "a replica silently cut off"
            }
            2 => {
                for &o in &others {
                    cluster.net().cut(victim, o);
                }
                "a replica that cannot speak"
            }
            3 => {
                let (a, b) = others.split_at(2);
                cluster.net().partition(a, b, false);
                "a minority and a majority split"
            }
            4 => {
                for &o in &others {
                    cluster.net().delay(
                        victim,
                        o,
                        Duration::from_millis(rng.range_inclusive(5, 80)),
                    );
                }
                "slow links"
            }
            5 => {
                cluster.kill(victim);
                tokio::time::sleep(hold).await;
                cluster.start(victim);
                "a replica killed and restarted"
            }
            _ => {
                cluster.signal(victim, "-STOP");
                tokio::time::sleep(hold).await;
                cluster.signal(victim, "-CONT");
                "a replica frozen"
            }
        };
        tokio::time::sleep(hold).await;
        cluster.net().heal();
        progressed(&load, &cluster, 20, what).await;
        faults += 1;
    }
    stop_and_check(&load, runner, &cluster, 9_000_000).await;
    println!(
        "soak: {protocol}, {secs} s, {faults} faults, {} operations, {} acknowledged",
        load.completed.load(Ordering::SeqCst),
        load.acknowledged.load(Ordering::SeqCst)
    );
    cluster.kill_all();
}
