//! The TCP transport over turmoil's simulated network: the same code as on real sockets
//! (`TcpTransport<TurmoilSockets>`), under seeded partitions, repairs and a host crash and
//! restart, in virtual time.
//!
//! Three echo hosts answer every frame; a client host pings each of them every 50 ms and counts
//! the answers. The scenario checks that a partition (symmetric, then one-way) stops delivery,
//! that a repair lets it resume (the transport notices the dead connection through its idle
//! timeout and redials with backoff), that a crashed host's peers carry on and that the
//! restarted host is reached again. The whole run is a function of the seed: two runs of one
//! seed produce the same trace.
//!
//! The second part runs the demo protocol through the tokio driver over the same transport
//! (partition of one node from the majority, repair, crash and restart from its storage) and
//! checks progress and the demo's guarantee: every acknowledged add is durable on a majority and
//! no node applies an update twice.
#![cfg(feature = "turmoil")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::transport::tcp::{TcpConfig, TcpTransport, TurmoilSockets};
use common::transport::Transport;
use common::NodeId;
use rand_08::SeedableRng;

const PORT: u16 = 7000;
const ECHO_HOSTS: [(&str, NodeId); 3] = [("n1", 1), ("n2", 2), ("n3", 3)];
const CLIENT: (&str, NodeId) = ("client", 100);
const KEY: &[u8] = b"turmoil-scenario-cluster-key-32b";

fn everyone() -> Vec<(&'static str, NodeId)> {
    let mut all = ECHO_HOSTS.to_vec();
    all.push(CLIENT);
    all
}

/// The configuration of node `id`; resolves host names, so it runs inside the simulation.
fn config(id: NodeId) -> TcpConfig {
    let addrs: BTreeMap<NodeId, SocketAddr> = everyone()
        .into_iter()
        .map(|(name, n)| (n, SocketAddr::new(turmoil::lookup(name), PORT)))
        .collect();
    let listen = SocketAddr::from(([0, 0, 0, 0], PORT));
    let mut c = TcpConfig::new(id, "turmoil", KEY.to_vec(), listen, addrs);
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(400);
    c.handshake_timeout = Duration::from_millis(300);
    c.keepalive_interval = Duration::from_millis(100);
    c.idle_timeout = Duration::from_millis(500);
    c
}

/// What the client saw: answers per echo host, and the trace of (virtual ms, host) answers.
#[derive(Default)]
struct Seen {
    answers: BTreeMap<NodeId, u64>,
    trace: Vec<(u128, NodeId)>,
}

fn answers(seen: &Mutex<Seen>, id: NodeId) -> u64 {
    seen.lock().unwrap().answers.get(&id).copied().unwrap_or(0)
}

/// Steps the simulation for `span` of virtual time, or until `until` holds; returns whether it
/// held.
fn run_for(sim: &mut turmoil::Sim<'_>, span: Duration, until: impl Fn() -> bool) -> bool {
    let end = sim.elapsed() + span;
    while sim.elapsed() < end {
        if until() {
            return true;
        }
        sim.step().unwrap();
    }
    until()
}

/// Serializes the scenarios of this file and aligns tokio's task-id counter before each one.
///
/// Why: tokio numbers tasks from one process-wide counter, and a runtime that is dropped (which
/// is how turmoil crashes a host) drops its tasks in an order derived from those numbers
/// (`id % 4` picks a shard). Socket drops send segments whose latency turmoil draws from the
/// seeded generator, so that order must not depend on how many tasks ran before in the process.
/// Running one scenario at a time, each starting at a multiple of 4, makes a seed replay exactly.
fn replay_guard() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        loop {
            let id = tokio::spawn(async { tokio::task::id() }).await.unwrap();
            let id: u64 = id.to_string().parse().unwrap();
            if id % 4 == 3 {
                break; // the next task gets a multiple of 4
            }
        }
    });
    guard
}

/// The simulation of one scenario: 120 s of virtual time at most, 1 to 10 ms per message, every
/// random choice drawn from `seed`.
fn simulation(seed: u64) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(120))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .build_with_rng(Box::new(rand_08::rngs::SmallRng::seed_from_u64(seed)))
}

/// Adds the echo hosts: each answers every frame to its sender.
fn add_echo_hosts(sim: &mut turmoil::Sim<'_>) {
    for (name, id) in ECHO_HOSTS {
        sim.host(name, move || async move {
            let mut t = TcpTransport::<TurmoilSockets>::bind(config(id)).await?;
            while let Some(inbound) = t.recv().await {
                // Best effort, like any protocol message: a full queue drops the answer.
                let _ = t.send(inbound.from, inbound.frame);
            }
            Ok(())
        });
    }
}

/// Adds the client host: it pings every echo host every 50 ms and records the answers in
/// `seen`, until `stop` is set.
fn add_pinging_client(sim: &mut turmoil::Sim<'_>, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    sim.client(CLIENT.0, async move {
        let mut t = TcpTransport::<TurmoilSockets>::bind(config(CLIENT.1)).await?;
        let mut ping = tokio::time::interval(Duration::from_millis(50));
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tokio::select! {
                // Fixed polling order: tokio would otherwise pick a branch at random, from an
                // unseeded source, and a seeded simulation (turmoil) would not replay.
                biased;
                _ = ping.tick() => {
                    for (_, id) in ECHO_HOSTS {
                        seq += 1;
                        let _ = t.send(id, Bytes::from(seq.to_le_bytes().to_vec()));
                    }
                }
                Some(inbound) = t.recv() => {
                    let mut s = seen.lock().unwrap();
                    *s.answers.entry(inbound.from).or_default() += 1;
                    s.trace.push((turmoil::elapsed().as_millis(), inbound.from));
                }
            }
        }
        t.shutdown().await;
        Ok(())
    });
}

/// Stops the client and steps the simulation until it has finished (at most 10 000 steps).
fn stop_client(sim: &mut turmoil::Sim<'_>, stop: &AtomicBool, seed: u64) {
    stop.store(true, Ordering::Relaxed);
    let mut finished = false;
    for _ in 0..10_000 {
        if sim.step().unwrap() {
            finished = true;
            break;
        }
    }
    assert!(finished, "seed {seed}: the client stops");
}

/// Runs the whole scenario for `seed` and returns the client's trace.
// Long on purpose: one scenario read top to bottom; each fault starts from the counts the
// previous step left.
fn scenario(seed: u64) -> Vec<(u128, NodeId)> {
    let _serial = replay_guard();
    let mut sim = simulation(seed);
    add_echo_hosts(&mut sim);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    add_pinging_client(&mut sim, Arc::clone(&seen), Arc::clone(&stop));

    let all_answer = |seen: &Mutex<Seen>| ECHO_HOSTS.iter().all(|&(_, id)| answers(seen, id) >= 3);
    assert!(
        run_for(&mut sim, Duration::from_secs(5), || all_answer(&seen)),
        "seed {seed}: every host answers at start"
    );

    // Partition the client from n1: n1's answers stop, the others' continue.
    sim.partition(CLIENT.0, "n1");
    run_for(&mut sim, Duration::from_millis(300), || false); // frames already on the wire land
    let (n1, n2) = (answers(&seen, 1), answers(&seen, 2));
    run_for(&mut sim, Duration::from_secs(2), || false);
    assert_eq!(
        answers(&seen, 1),
        n1,
        "seed {seed}: nothing crosses the partition"
    );
    assert!(answers(&seen, 2) > n2 + 10, "seed {seed}: n2 unaffected");

    // Repair: the dead connection is noticed (idle timeout) and redialed with backoff.
    sim.repair(CLIENT.0, "n1");
    assert!(
        run_for(&mut sim, Duration::from_secs(10), || answers(&seen, 1)
            > n1 + 5),
        "seed {seed}: delivery to n1 resumes after repair"
    );

    // One-way partition: the client's frames to n3 are lost, n3's frames still arrive. The
    // answers stop (there is nothing to answer); n3's keepalives keep arriving, so it is n3's
    // idle timeout that closes the connection, and the client redials until the repair.
    sim.partition_oneway(CLIENT.0, "n3");
    run_for(&mut sim, Duration::from_millis(300), || false);
    let (n3, n1) = (answers(&seen, 3), answers(&seen, 1));
    run_for(&mut sim, Duration::from_secs(2), || false);
    assert_eq!(
        answers(&seen, 3),
        n3,
        "seed {seed}: nothing crosses the cut direction"
    );
    assert!(answers(&seen, 1) > n1 + 10, "seed {seed}: n1 unaffected");
    sim.repair_oneway(CLIENT.0, "n3");
    assert!(
        run_for(&mut sim, Duration::from_secs(10), || answers(&seen, 3)
            > n3 + 5),
        "seed {seed}: delivery to n3 resumes after the one-way repair"
    );

    // Crash n2: its answers stop; n1 and n3 carry on.
    sim.crash("n2");
    run_for(&mut sim, Duration::from_millis(300), || false);
    let (n2, n3) = (answers(&seen, 2), answers(&seen, 3));
    run_for(&mut sim, Duration::from_secs(2), || false);
    assert_eq!(
        answers(&seen, 2),
        n2,
        "seed {seed}: a crashed host answers nothing"
    );
    assert!(
        answers(&seen, 3) > n3 + 10,
        "seed {seed}: n3 unaffected by the crash"
    );

    // Restart n2: it binds again, the client redials and the answers resume.
    sim.bounce("n2");
    assert!(
        run_for(&mut sim, Duration::from_secs(10), || answers(&seen, 2)
            > n2 + 5),
        "seed {seed}: the restarted host is reached again"
    );

    stop_client(&mut sim, &stop, seed);
    let trace = std::mem::take(&mut seen.lock().unwrap().trace);
    trace
}

#[test]
fn partition_repair_crash_restart() {
    for seed in [1, 2, 3] {
        let trace = scenario(seed);
        assert!(trace.len() > 100, "seed {seed}: {} answers", trace.len());
    }
}

#[test]
fn same_seed_same_run() {
    assert_eq!(scenario(7), scenario(7));
}

// ---------------------------------------------------------------------------------------------
// The demo protocol, run by the tokio driver over the TCP transport, under turmoil.

mod demo {
    use super::*;
    use common::codec::{Bincode, Codec};
    use common::demo::{DemoConfig, DemoNode, DemoRecord, DemoRequest, DemoResponse};
    use common::driver::{self, DriverConfig, Persistence};
    use common::{MemStorage, Node, Storage, StorageError};
    use std::sync::atomic::AtomicU64;

    const NODES: [(&str, NodeId); 3] = ECHO_HOSTS;

    /// A node's storage that outlives the host's software: a turmoil crash drops the runtime,
    /// the records stay (minus the unsynced tail, dropped by [`SharedStorage::crash`]).
    #[derive(Clone, Default)]
    struct SharedStorage(Arc<Mutex<MemStorage>>);

    impl SharedStorage {
        fn lock(&self) -> std::sync::MutexGuard<'_, MemStorage> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
        fn crash(&self) {
            self.lock().crash();
        }
        fn records(&self) -> Vec<DemoRecord> {
            let raw = self.lock().load().unwrap();
            raw.iter().map(|r| Bincode.decode(r).unwrap()).collect()
        }
    }

    impl Storage for SharedStorage {
        fn append(&mut self, record: &[u8]) -> Result<(), StorageError> {
            self.lock().append(record)
        }
        fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError> {
            self.lock().append_checkpoint(record)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            self.lock().sync()
        }
        fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError> {
            self.lock().load()
        }

        fn snapshots(&self) -> std::sync::Arc<dyn common::SnapshotStore> {
            self.lock().snapshots()
        }
    }

    fn tcp_config(id: NodeId) -> TcpConfig {
        let addrs: BTreeMap<NodeId, SocketAddr> = NODES
            .into_iter()
            .map(|(name, n)| (n, SocketAddr::new(turmoil::lookup(name), PORT)))
            .collect();
        let mut c = config(id);
        c.peers = addrs;
        c
    }

    /// What the colocated clients saw: acknowledged adds `(origin, amount)` and failures.
    #[derive(Default)]
    struct Clients {
        acked: Vec<(NodeId, u64)>,
        failed: u64,
    }

    fn acked_by(clients: &Mutex<Clients>, id: NodeId) -> usize {
        clients
            .lock()
            .unwrap()
            .acked
            .iter()
            .filter(|(o, _)| *o == id)
            .count()
    }

    /// Boots (or reboots, after a crash) node `id`: recover the core from its storage, start
    /// the transport and the driver, then act as a client of the node, adding a fresh amount
    /// every 50 ms and recording what was acknowledged.
    async fn boot(
        id: NodeId,
        storage: SharedStorage,
        next_amount: Arc<AtomicU64>,
        clients: Arc<Mutex<Clients>>,
    ) -> turmoil::Result {
        let records = storage.records();
        let node = DemoNode::recover(DemoConfig::new(id, NODES.map(|(_, n)| n).to_vec()), records)?;
        let transport = TcpTransport::<TurmoilSockets>::bind(tcp_config(id)).await?;
        let config = DriverConfig {
            persistence: Persistence::Inline,
            ..DriverConfig::default()
        };
        let handle = driver::spawn(node, transport, storage, Bincode, config)?;
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            every.tick().await;
            // Amounts are unique across the run, so the check can find each add's records.
            let amount = id * 1_000_000 + next_amount.fetch_add(1, Ordering::Relaxed);
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                handle.request(DemoRequest::Add(amount)),
            )
            .await;
            let mut c = clients.lock().unwrap();
            match answer {
                Ok(Ok(DemoResponse::Total(_))) => c.acked.push((id, amount)),
                _ => c.failed += 1,
            }
        }
    }

    /// Adds the nodes to `sim`, each booted by [`boot`] with its clients recording into
    /// `clients`; returns their storages, which outlive crashes.
    fn add_nodes(
        sim: &mut turmoil::Sim<'_>,
        clients: &Arc<Mutex<Clients>>,
    ) -> BTreeMap<NodeId, SharedStorage> {
        let storages: BTreeMap<NodeId, SharedStorage> = NODES
            .iter()
            .map(|&(_, id)| (id, SharedStorage::default()))
            .collect();
        for (name, id) in NODES {
            let storage = storages[&id].clone();
            let clients = Arc::clone(clients);
            let next_amount = Arc::new(AtomicU64::new(0));
            sim.host(name, move || {
                boot(
                    id,
                    storage.clone(),
                    Arc::clone(&next_amount),
                    Arc::clone(&clients),
                )
            });
        }
        storages
    }

    /// Runs the scenario for `seed`; returns how many adds were acknowledged.
    fn scenario(seed: u64) -> usize {
        let _serial = replay_guard();
        let mut sim = simulation(seed);
        let clients = Arc::new(Mutex::new(Clients::default()));
        let storages = add_nodes(&mut sim, &clients);
        let acked = |id| acked_by(&clients, id);

        assert!(
            run_for(&mut sim, Duration::from_secs(5), || NODES
                .iter()
                .all(|&(_, id)| acked(id) >= 3)),
            "seed {seed}: every node makes progress at start"
        );

        // Cut n1 off from the majority: its adds cannot reach a majority, the others' can.
        sim.partition("n1", "n2");
        sim.partition("n1", "n3");
        run_for(&mut sim, Duration::from_millis(300), || false);
        let (n1, n2) = (acked(1), acked(2));
        run_for(&mut sim, Duration::from_secs(3), || false);
        assert_eq!(acked(1), n1, "seed {seed}: a minority acknowledges nothing");
        assert!(acked(2) > n2 + 5, "seed {seed}: the majority keeps going");

        sim.repair("n1", "n2");
        sim.repair("n1", "n3");
        assert!(
            run_for(&mut sim, Duration::from_secs(10), || acked(1) > n1 + 3),
            "seed {seed}: n1 makes progress again after the repair"
        );

        // Crash n2 (its unsynced tail is lost); n1 and n3 still form a majority.
        sim.crash("n2");
        storages[&2].crash();
        run_for(&mut sim, Duration::from_millis(300), || false);
        let (n2, n3) = (acked(2), acked(3));
        run_for(&mut sim, Duration::from_secs(2), || false);
        assert_eq!(
            acked(2),
            n2,
            "seed {seed}: a crashed node acknowledges nothing"
        );
        assert!(acked(3) > n3 + 5, "seed {seed}: the survivors keep going");

        // Restart n2 from its storage: it serves again.
        sim.bounce("n2");
        assert!(
            run_for(&mut sim, Duration::from_secs(10), || acked(2) > n2 + 3),
            "seed {seed}: the restarted node makes progress"
        );
        for (name, _) in NODES {
            sim.crash(name); // stop the software so the storages can be read as they are
        }
        check_guarantee(seed, &storages, &clients.lock().unwrap());
        let acked = clients.lock().unwrap().acked.len();
        acked
    }

    /// The demo's guarantee, checked on the stopped nodes' `storages`: an add acknowledged to
    /// `clients` is durable on a majority, and every node applies each update at most once;
    /// and recovery rebuilds n2 from exactly what it had persisted.
    fn check_guarantee(seed: u64, storages: &BTreeMap<NodeId, SharedStorage>, c: &Clients) {
        let records: BTreeMap<NodeId, Vec<DemoRecord>> =
            storages.iter().map(|(&id, s)| (id, s.records())).collect();
        for (id, recs) in &records {
            let mut seen = std::collections::BTreeSet::new();
            for DemoRecord::Applied {
                origin,
                seq,
                amount,
            } in recs
            {
                assert!(
                    seen.insert((*origin, *seq)),
                    "seed {seed}: node {id} applied ({origin}, {seq}) twice"
                );
                assert!(
                    *amount / 1_000_000 == *origin,
                    "seed {seed}: node {id} holds an update its origin never made"
                );
            }
        }
        for &(origin, amount) in &c.acked {
            let holders = records
                .values()
                .filter(|recs| {
                    recs.iter()
                        .any(|DemoRecord::Applied { amount: a, .. }| *a == amount)
                })
                .count();
            assert!(
                holders >= 2,
                "seed {seed}: add {amount} from node {origin} was acknowledged but is durable on {holders} node(s)"
            );
        }
        // Recovery rebuilt n2 from exactly what it had persisted.
        let n2_node = DemoNode::recover(
            DemoConfig::new(2, NODES.map(|(_, n)| n).to_vec()),
            records[&2].clone(),
        )
        .unwrap();
        assert_eq!(n2_node.metrics().applied, records[&2].len() as u64);
    }

    #[test]
    fn demo_over_driver_and_tcp_survives_partition_and_crash() {
        for seed in [11, 12] {
            let acked = scenario(seed);
            assert!(acked > 50, "seed {seed}: only {acked} adds acknowledged");
        }
    }
}
