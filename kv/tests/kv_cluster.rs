//! A real cluster of `kv-node` processes on 127.0.0.1: a load generator runs while the leader
//! is killed with SIGKILL again and again and restarted from its data directory; afterwards
//! every replica is killed at once and restarted, every acknowledged write must be readable and
//! the recorded history must be linearizable. The nodes snapshot every [`SNAPSHOT_EVERY`]
//! entries (slots), so kills also land while a snapshot file is being written or installed, and
//! restarts recover from snapshot files.
//!
//! `KV_KILLS` raises the number of kills (default 10) for a soak; `KV_SEED` picks the seed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use common::check::{check_kv, KvInput};
use common::rng::DetRng;
use kv::load::{to_check_output, Load, SHARED_KEYS};
use kv::net::{CallOutcome, KvClient};

mod support;

use support::*;

// Long on purpose: one scenario against real processes, read top to bottom, over one cluster.
async fn kill_the_leader_again_and_again(protocol: &'static str) {
    let kills = env_u64("KV_KILLS", 10);
    let seed = env_u64("KV_SEED", 7);
    let mut rng = DetRng::new(seed);
    let mut cluster = Cluster::new(protocol);
    let mut probe = KvClient::new(0, cluster.clients.clone());
    for id in 1..=NODES {
        cluster.wait_serving(id, &mut probe).await;
    }
    cluster.leader(&mut probe).await;
    send_garbage(cluster.clients[&1]).await;
    assert!(
        probe.status(1).await.is_some(),
        "node 1 stopped serving after garbage"
    );

    // The four clients share two connections per node, pipelined: a killed leader fails
    // several clients' calls at once, on one socket.
    let load = Load::new().with_shared_connections(2);
    let (load, runner) = start_load_with(load, &cluster, seed, 1, "");

    for _ in 0..kills {
        // A random moment: after a seeded number of further operations.
        let target = load.completed.load(Ordering::SeqCst) + rng.range_inclusive(10, 60);
        wait_completed(&load, target, &cluster).await;
        let leader = cluster.leader(&mut probe).await;
        cluster.kill(leader);
        // The survivors elect another leader and keep serving without it.
        // (`leader` only asks the running nodes.)
        cluster.leader(&mut probe).await;
        let target = load.completed.load(Ordering::SeqCst) + rng.range_inclusive(1, 10);
        wait_completed(&load, target, &cluster).await;
        cluster.start(leader);
        cluster.wait_serving(leader, &mut probe).await;
    }
    let target = load.completed.load(Ordering::SeqCst) + 20;
    wait_completed(&load, target, &cluster).await;
    load.stop();
    tokio::time::timeout(WAIT_MAX, runner)
        .await
        .expect("load generator stops")
        .unwrap();

    // Every replica killed at once and restarted: what was acknowledged must come back from
    // the replicas' own directories, with no survivor to learn it from.
    cluster.kill_all();
    for id in 1..=NODES {
        cluster.start(id);
    }
    for id in 1..=NODES {
        cluster.wait_serving(id, &mut probe).await;
    }
    cluster.leader(&mut probe).await;

    // Read everything back through the cluster, recording the shared keys' reads too.
    let mut reader = KvClient::new(1_000_000, cluster.clients.clone());
    for k in 0..SHARED_KEYS {
        let key = format!("k{k}");
        let op = load
            .recorder
            .invoke(reader.id(), KvInput::Get { key: key.clone() });
        match reader.get(&key).await {
            CallOutcome::Ok(out) => load.recorder.ok(op, to_check_output(true, out).unwrap()),
            other => panic!("final read of {key}: {other:?}\n{}", cluster.logs()),
        }
    }
    let acked = load.acked_writes.lock().unwrap().clone();
    assert!(!acked.is_empty(), "no write to an own key was acknowledged");
    for (key, value) in &acked {
        match reader.get(key).await {
            CallOutcome::Ok(kv::KvOutput::Value(Some(v))) => {
                assert_eq!(&v, value, "acknowledged write to {key} lost or changed")
            }
            other => panic!("acknowledged write to {key} missing: {other:?}"),
        }
    }
    let history = load.recorder.history();
    let acknowledged = load.acknowledged.load(Ordering::SeqCst);
    assert!(
        acknowledged > kills * 10,
        "only {acknowledged} operations acknowledged"
    );
    let verdict = check_kv(&history).unwrap();
    assert!(
        verdict.is_linearizable(),
        "{protocol} history is not linearizable: {verdict:?}"
    );
    client_binary_works(&cluster);
    // Snapshots were taken (as files beside each node's log) all along the run.
    for id in 1..=NODES {
        let snapshots = std::fs::read_dir(cluster.data_dir(id).join("snapshots"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".bin"))
            .count();
        assert!(snapshots >= 1, "node {id} holds no snapshot file");
    }
}

/// The `kv-client` command line against the cluster: put, get, cas, and a short recorded load.
fn client_binary_works(cluster: &Cluster) {
    let nodes = cluster
        .clients
        .iter()
        .map(|(id, a)| format!("{id}={a}"))
        .collect::<Vec<_>>()
        .join(",");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kv-client"))
            .arg("--nodes")
            .arg(&nodes)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "kv-client {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["--client-id", "2000000", "put", "cli", "1"]);
    assert_eq!(run(&["--client-id", "2000001", "get", "cli"]).trim(), "1");
    assert_eq!(
        run(&["--client-id", "2000002", "cas", "cli", "1", "2"]).trim(),
        "swapped; now 2"
    );
    assert_eq!(
        run(&["--client-id", "2000003", "--output", "json", "get", "cli"]).trim(),
        r#"{"value":"2"}"#
    );
    run(&["--client-id", "2000004", "put", "cli/b", "x"]);
    run(&["--client-id", "2000005", "put", "cli/a", "y"]);
    assert_eq!(
        run(&["--client-id", "2000006", "scan", "cli/"]).trim(),
        "cli/a\ty\ncli/b\tx"
    );
    assert_eq!(
        run(&["--client-id", "2000007", "scan", "cli/", "--limit", "1"]).trim(),
        "cli/a\ty\n(more keys match; raise --limit)"
    );
    run(&["--client-id", "2000008", "delete", "cli/a"]);
    assert_eq!(
        run(&["--client-id", "2000009", "get", "cli/a"]).trim(),
        "(absent)"
    );
    let status = run(&["--client-id", "2000010", "status"]);
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines.len(), 1 + cluster.clients.len(), "{status}");
    assert_eq!(
        lines[1..].iter().filter(|l| l.contains(" leader ")).count(),
        1,
        "exactly one node leads: {status}"
    );
    let history = cluster.dir.path().join("history.jsonl");
    let summary = run(&[
        "--client-id",
        "3000000",
        "load",
        "--clients",
        "2",
        "--ops",
        "20",
        "--history",
        history.to_str().unwrap(),
    ]);
    assert!(summary.contains("linearizable: true"), "{summary}");
    assert!(summary.contains("acknowledged ops/s"), "{summary}");
    assert!(summary.contains("latency ms: p50"), "{summary}");
    let text = std::fs::read_to_string(&history).unwrap();
    let recorded: common::check::History<KvInput, common::check::KvOutput> =
        common::check::History::from_json_lines(&text).unwrap();
    assert_eq!(recorded.operations().unwrap().len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_cluster_survives_leader_kills_with_a_linearizable_history() {
    kill_the_leader_again_and_again("raft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paxos_cluster_survives_leader_kills_with_a_linearizable_history() {
    kill_the_leader_again_and_again("paxos").await;
}

/// The operator's path: three replicas started from TOML files that name each other by host
/// name (`localhost`), with the cluster key in a key file and tuned protocol timeouts; a client
/// writes and reads through them. A configuration mistake stops a node at once with exit code 2
/// and one error naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Long on purpose: one scenario against real processes, read top to bottom, over one cluster.
async fn a_cluster_starts_from_config_files_with_host_names() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_addrs(3 * NODES as usize);
    let port = |i: u64| addrs[i as usize - 1].port();
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let mut children = Vec::new();
    let mut clients = BTreeMap::new();
    for id in 1..=NODES {
        let peers: String = (1..=NODES)
            .filter(|&p| p != id)
            .map(|p| format!("{p} = \"localhost:{}\"\n", port(p)))
            .collect();
        let text = format!(
            "protocol = \"raft\"\nid = {id}\nlisten = \"localhost:{}\"\n\
             client_listen = \"localhost:{}\"\nmetrics_listen = \"127.0.0.1:{}\"\n\
             data_dir = \"{}\"\nkey_file = \"{}\"\nworker_threads = 1\n\
             [peers]\n{peers}\n[raft]\nelection_timeout_ticks_min = 15\n\
             election_timeout_ticks_max = 30\n[client]\nidle_timeout_secs = 60\n",
            port(id),
            port(NODES + id),
            port(2 * NODES + id),
            dir.path().join(format!("node-{id}")).display(),
            key_file.display(),
        );
        let path = dir.path().join(format!("node-{id}.toml"));
        std::fs::write(&path, text).unwrap();
        clients.insert(id, addrs[(NODES + id) as usize - 1]);
        children.push(
            Command::new(env!("CARGO_BIN_EXE_kv-node"))
                .arg("--config")
                .arg(&path)
                .env_remove("KV_CLUSTER_KEY")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    // The client follows leader hints and retries until its deadline: the election happens
    // while it waits.
    let mut client = KvClient::new(4_000_000, clients).with_deadline(WAIT_MAX);
    let outcome = client
        .write(kv::KvOp::Put {
            key: "configured".into(),
            value: "yes".into(),
        })
        .await;
    let read = client.get("configured").await;
    // Every node serves its metrics and its health.
    let mut scraped = Vec::new();
    for id in 1..=NODES {
        let addr = addrs[(2 * NODES + id) as usize - 1];
        scraped.push((
            http_get(addr, "/metrics").await,
            http_get(addr, "/health").await,
        ));
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(matches!(outcome, CallOutcome::Ok(_)), "{outcome:?}");
    assert_eq!(
        read,
        CallOutcome::Ok(kv::KvOutput::Value(Some("yes".into())))
    );
    for (metrics, health) in &scraped {
        assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
        for name in [
            "kv_is_leader",
            "kv_term",
            "kv_applied_index",
            "kv_fsync_latency_seconds_count",
            "kv_client_connections",
            "kv_messages_sent_total",
        ] {
            assert!(metrics.contains(name), "{name} missing:\n{metrics}");
        }
        assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
    }
    let leaders: usize = scraped
        .iter()
        .filter(|(m, _)| m.lines().any(|l| l == "kv_is_leader 1"))
        .count();
    assert_eq!(leaders, 1, "exactly one node reports itself leader");
    let writes_timed: u64 = scraped
        .iter()
        .flat_map(|(m, _)| m.lines())
        .filter_map(|l| l.strip_prefix("kv_proposal_latency_seconds_count "))
        .map(|n| n.trim().parse::<u64>().unwrap())
        .sum();
    assert!(writes_timed >= 1, "the write was timed");

    // A misspelt field, or a value out of range: exit code 2, the field named.
    let bad = dir.path().join("bad.toml");
    for (text, named) in [
        (
            "protocol = \"raft\"\nelecton_timeout = 3\n",
            "electon_timeout",
        ),
        ("worker_threads = 0\n", "worker_threads = 0"),
    ] {
        std::fs::write(&bad, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kv-node"))
            .arg("--config")
            .arg(&bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{stderr}");
    }
    // A missing setting says where to give it.
    let out = Command::new(env!("CARGO_BIN_EXE_kv-node"))
        .args(["--protocol", "raft", "--id", "1"])
        .env_remove("KV_LISTEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--listen") && stderr.contains("KV_LISTEN"),
        "{stderr}"
    );
}

/// What a Raft replica logs (at debug level) when a leadership transfer makes it campaign.
const TRANSFER_LOGGED: &str = "leadership transfer: starting election";

/// SIGTERM drains a node: it stops taking work, hands leadership over (Raft: a follower was
/// told to campaign at once, as its log shows), persists and exits 0; the cluster keeps
/// serving, the node restarts from its directory, and no acknowledged write is lost.
async fn sigterm_drains(protocol: &'static str) {
    let mut cluster = Cluster::prepared(protocol);
    cluster.log_filter = Some("warn,raft=debug".into());
    for id in 1..=NODES {
        cluster.start(id);
    }
    let mut probe = KvClient::new(0, cluster.clients.clone());
    for id in 1..=NODES {
        cluster.wait_serving(id, &mut probe).await;
    }
    let (load, runner) = start_load(&cluster, 11, 5_000_000, "drain/");
    for round in 0..2 {
        let target = load.completed.load(Ordering::SeqCst) + 40;
        wait_completed(&load, target, &cluster).await;
        let leader = cluster.leader(&mut probe).await;
        assert_eq!(
            cluster.terminate(leader).await,
            Some(0),
            "round {round}: node {leader} did not exit cleanly\n{}",
            cluster.logs()
        );
        if protocol == "raft" {
            assert!(
                cluster.logged(TRANSFER_LOGGED) > round,
                "round {round}: node {leader} stopped without handing leadership over\n{}",
                cluster.logs()
            );
        }
        cluster.leader(&mut probe).await;
        let target = load.completed.load(Ordering::SeqCst) + 20;
        wait_completed(&load, target, &cluster).await;
        cluster.start(leader);
        cluster.wait_serving(leader, &mut probe).await;
    }
    stop_and_check(&load, runner, &cluster, 6_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_node_drains_on_sigterm() {
    sigterm_drains("raft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paxos_node_drains_on_sigterm() {
    sigterm_drains("paxos").await;
}

/// What a replica logs when a connection's length prefix is over the frame limit.
const OVERSIZE_LOGGED: &str = "frame size too big";

/// Opens `n` TCP connections to `addr` and keeps them open without a byte sent.
async fn idle_sockets(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        if let Ok(Ok(s)) =
            tokio::time::timeout(WAIT_MAX, tokio::net::TcpStream::connect(addr)).await
        {
            open.push(s);
        }
    }
    open
}

/// 1,000 idle connections and garbage on both ports of the leader, under load: the cluster keeps
/// serving, a fresh client is served at once, a follower restarted during the flood is admitted
/// again on the leader's replica port and catches up, no acknowledged write is lost and the
/// history is linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_idle_and_garbage_connections_on_both_ports_lock_nobody_out() {
    let mut cluster = Cluster::new("raft");
    let mut probe = KvClient::new(0, cluster.clients.clone());
    for id in 1..=NODES {
        cluster.wait_serving(id, &mut probe).await;
    }
    let leader = cluster.leader(&mut probe).await;
    let (load, runner) = start_load(&cluster, 17, 7_000_000, "flood/");
    let target = load.completed.load(Ordering::SeqCst) + 50;
    wait_completed(&load, target, &cluster).await;

    let peer_port = cluster.listen[&leader];
    let client_port = cluster.clients[&leader];
    // Before the flood fills its connections: the replica port refuses an oversized length
    // prefix for its size, at once (a handshake that waited for the 4 GiB would end at the
    // handshake timeout, for another reason).
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(peer_port).await.unwrap();
        let _ = s.write_all(&u32::MAX.to_be_bytes()).await;
    }
    let log = cluster.dir.path().join(format!("node-{leader}.log"));
    let deadline = std::time::Instant::now() + WAIT_MAX;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(OVERSIZE_LOGGED)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "node {leader} did not refuse the oversized frame on its replica port\n{}",
            cluster.logs()
        );
        tokio::time::sleep(POLL).await;
    }
    let idle_peer = idle_sockets(peer_port, 1_000).await;
    let idle_client = idle_sockets(client_port, 1_000).await;
    send_garbage(client_port).await;
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(peer_port).await.unwrap();
        let _ = s.write_all(&u32::MAX.to_be_bytes()).await;
        let mut s = tokio::net::TcpStream::connect(peer_port).await.unwrap();
        let _ = s.write_all(b"\x00\x00\x00\x05hello").await;
    }
    // A fresh client is served at once.
    let mut fresh = KvClient::new(7_500_000, BTreeMap::from([(leader, client_port)]))
        .with_deadline(std::time::Duration::from_secs(2));
    let served = fresh.get("flood/none").await;
    assert!(matches!(served, CallOutcome::Ok(_)), "{served:?}");
    // A follower restarted now must be admitted by the flooded leader again.
    let follower = (1..=NODES).find(|&n| n != leader).unwrap();
    cluster.kill(follower);
    let target = load.completed.load(Ordering::SeqCst) + 50;
    wait_completed(&load, target, &cluster).await;
    cluster.start(follower);
    cluster.wait_serving(follower, &mut probe).await;
    let commit = probe.node_status(leader).await.unwrap().commit_index;
    let deadline = std::time::Instant::now() + WAIT_MAX;
    while probe
        .node_status(follower)
        .await
        .is_none_or(|s| s.applied_index < commit)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "node {follower} did not catch up through the flooded leader\n{}",
            cluster.logs()
        );
        tokio::time::sleep(POLL).await;
    }
    let target = load.completed.load(Ordering::SeqCst) + 50;
    wait_completed(&load, target, &cluster).await;
    drop((idle_peer, idle_client));
    stop_and_check(&load, runner, &cluster, 7_600_000).await;
}

/// `kv-client load` against a cluster that is not there stops once nothing has been
/// acknowledged for `--stall-secs`, and fails, instead of waiting out every operation's
/// deadline (here that would be 2,000 calls of ten seconds each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_against_no_cluster_stops_and_fails() {
    // Nothing listens there: the address is released before the load starts.
    let addr = free_addrs(1)[0];
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_kv-client"))
        .args(["--nodes", &format!("1={addr}"), "load"])
        .args([
            "--clients",
            "2",
            "--ops",
            "1000",
            "--stall-secs",
            "1",
            "--no-check",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the load stops by itself")
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no operation acknowledged for 1 s"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 acknowledged"),
        "{out:?}"
    );
}
