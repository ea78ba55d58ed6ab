//! A full disk under a real replica: node 1's data directory is a small tmpfs, and large writes
//! fill it. The node must fail-stop on the write error (ENOSPC) rather than go on with a log it
//! could not write, while the other two replicas keep serving. Its process stays up: `/health`
//! and the metrics say the storage failed, and clients sent to it get the typed "storage
//! unavailable" answer (writes and reads alike). Once space returns (the file system is enlarged)
//! the same process resumes by itself: it reopens its log (no corrupted log), serves again and
//! catches up, and reads through it return every acknowledged write. No acknowledged write is
//! lost, and a restart afterwards recovers from the directory.
//!
//! Needs permission to mount a tmpfs (root, as on the project's test machines); without it the
//! test fails with a message saying so.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kv::net::{CallOutcome, KvClient};
use support::*;

/// The small file system's size.
const DISK_MIB: u64 = 8;
/// Bytes per value (below the store's 64 KiB item limit).
const VALUE_BYTES: usize = 60 * 1024;
/// Most writes tried: several times what fills the small disk.
const WRITES_MAX: usize = 600;
/// Node 1's probes of its full disk: short pauses keep the test short.
const STORAGE_TABLE: &str = "[storage]\nprobe_interval_ms = 100\nprobe_interval_max_ms = 400\n";

/// Polls node 1's `/health` at `addr` until it contains `want` (bounded); the answer.
async fn wait_health(addr: SocketAddr, want: &str, cluster: &Cluster) -> String {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let health = http_get(addr, "/health").await;
        if health.contains(want) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "/health never said {want:?}; last: {health}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Whether node 1's metrics at `addr` carry every line of `want`.
async fn assert_metrics(addr: SocketAddr, want: &[&str]) {
    let metrics = http_get(addr, "/metrics").await;
    for line in want {
        assert!(
            metrics.lines().any(|l| l == *line),
            "missing {line:?} in\n{metrics}"
        );
    }
}

/// Asserts that node 1's process is still the one started first: alive, same pid.
fn assert_same_process(cluster: &mut Cluster, pid: u32) {
    let child = cluster.children.get_mut(&1).unwrap();
    assert_eq!(child.id(), pid);
    let status = child.try_wait().unwrap();
    assert!(status.is_none(), "node 1 exited: {status:?}");
}

/// A mounted tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs at {} failed (this test needs permission to mount): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    fn resize(&self, mib: u64) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remounting {} failed", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Long on purpose: one scenario against real processes, read top to bottom, over one cluster.
async fn a_full_disk_stops_the_node_and_it_resumes_when_space_returns() {
    let mut cluster = Cluster::prepared("raft");
    // Default snapshot settings: the log, not a snapshot file, is what fills the disk.
    std::fs::write(cluster.dir.path().join("node.toml"), STORAGE_TABLE).unwrap();
    let disk = Tmpfs::mount(&cluster.data_dir(1), DISK_MIB);
    let metrics = free_addrs(1)[0];
    cluster.extra_args = vec!["--metrics-listen".into(), metrics.to_string()];
    cluster.start(1);
    cluster.extra_args.clear();
    for id in 2..=NODES {
        cluster.start(id);
    }
    let pid = cluster.children[&1].id();
    let mut probe = KvClient::new(0, cluster.clients.clone());
    for id in 1..=NODES {
        cluster.wait_serving(id, &mut probe).await;
    }
    cluster.leader(&mut probe).await;
    wait_health(metrics, "ok: leader", &cluster).await;

    let log = cluster.dir.path().join("node-1.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let full = || read_log().contains("No space left on device");
    let mut writer = KvClient::new(1, cluster.clients.clone()).with_deadline(WAIT_MAX);
    let value = "x".repeat(VALUE_BYTES);
    let mut acked = Vec::new();
    let mut written = 0;
    while written < WRITES_MAX && (!full() || acked.len() < written + 20) {
        let key = format!("big/{written}");
        let outcome = writer
            .write(kv::KvOp::Put {
                key: key.clone(),
                value: value.clone(),
            })
            .await;
        assert!(
            matches!(outcome, CallOutcome::Ok(_)),
            "write {written} failed: {outcome:?}\n{}",
            cluster.logs()
        );
        acked.push(key);
        written += 1;
        if full() && acked.len() >= written {
            // Twenty more writes after the disk filled, served by the other two replicas.
            for extra in 0..20 {
                let key = format!("more/{extra}");
                let outcome = writer
                    .write(kv::KvOp::Put {
                        key: key.clone(),
                        value: "after".into(),
                    })
                    .await;
                assert!(matches!(outcome, CallOutcome::Ok(_)), "{outcome:?}");
                acked.push(key);
            }
            break;
        }
    }
    assert!(full(), "node 1 never hit the full disk\n{}", cluster.logs());
    // Fail-stop: the log refused to go on, and the node stopped...
    let text = read_log();
    assert!(text.contains("wal: poisoned"), "{text}");
    // ...but not the process: it says why on /health, in its metrics and in its log.
    let health = wait_health(metrics, "storage unavailable", &cluster).await;
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("resumes by itself"),
        "{health}"
    );
    assert_same_process(&mut cluster, pid);
    assert_metrics(
        metrics,
        &["kv_storage_failed 1", "kv_storage_failures_total 1"],
    )
    .await;
    assert!(
        read_log().contains("storage failed (disk full)"),
        "{}",
        read_log()
    );
    // Node 1 takes no work: a write or a read sent to it alone gets the typed answer, and
    // nothing was applied (the write certainly failed, it is not "unknown").
    let mut only_one = KvClient::new(
        2,
        std::collections::BTreeMap::from([(1, cluster.clients[&1])]),
    )
    .with_deadline(Duration::from_secs(1));
    let refused = only_one
        .write(kv::KvOp::Put {
            key: "to-the-full-node".into(),
            value: "no".into(),
        })
        .await;
    assert!(
        matches!(&refused, CallOutcome::Failed(why) if why.contains("storage unavailable")),
        "{refused:?}\n{}",
        read_log()
    );
    let refused = only_one.get("big/0").await;
    assert!(
        matches!(&refused, CallOutcome::Failed(why) if why.contains("storage unavailable")),
        "{refused:?}"
    );
    // The other two serve, and clients that know all three move past node 1.
    for extra in 0..5 {
        let key = format!("while-down/{extra}");
        let outcome = writer
            .write(kv::KvOp::Put {
                key: key.clone(),
                value: "down".into(),
            })
            .await;
        assert!(matches!(outcome, CallOutcome::Ok(_)), "{outcome:?}");
        acked.push(key);
    }
    // Still full: the probes fail and node 1 stays down.
    assert!(http_get(metrics, "/health")
        .await
        .contains("storage unavailable"));

    // Space returns: the same process resumes from its directory and catches up.
    disk.resize(512);
    let health = wait_health(metrics, "ok: leader", &cluster).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert_same_process(&mut cluster, pid);
    assert_metrics(
        metrics,
        &[
            "kv_storage_failed 0",
            "kv_storage_failures_total 1",
            "kv_storage_resumes_total 1",
        ],
    )
    .await;
    assert!(read_log().contains("the node resumed"), "{}", read_log());
    let leader = cluster.leader(&mut probe).await;
    let commit = probe.node_status(leader).await.unwrap().commit_index;
    let deadline = Instant::now() + WAIT_MAX;
    while probe
        .node_status(1)
        .await
        .is_none_or(|s| s.applied_index < commit)
    {
        assert!(
            Instant::now() < deadline,
            "node 1 did not resume and catch up\n{}",
            cluster.logs()
        );
        tokio::time::sleep(POLL).await;
    }
    let mut reader = KvClient::new(3, cluster.clients.clone());
    for key in &acked {
        match reader.get(key).await {
            CallOutcome::Ok(kv::KvOutput::Value(Some(_))) => {}
            other => panic!("acknowledged write to {key} missing: {other:?}"),
        }
    }
    // Reads through node 1 itself (leading now) return every acknowledged write.
    let moved = probe.transfer_leader(1).await;
    assert!(
        matches!(moved, CallOutcome::Ok(_)),
        "{moved:?}\n{}",
        cluster.logs()
    );
    let mut through_one = KvClient::new(
        4,
        std::collections::BTreeMap::from([(1, cluster.clients[&1])]),
    );
    for key in &acked {
        match through_one.get(key).await {
            CallOutcome::Ok(kv::KvOutput::Value(Some(_))) => {}
            other => panic!("node 1 misses acknowledged write to {key}: {other:?}"),
        }
    }
    assert_same_process(&mut cluster, pid);
    // The log it wrote across the episode recovers cleanly on a restart too.
    assert_eq!(cluster.terminate(1).await, Some(0), "{}", cluster.logs());
    cluster.start(1);
    cluster.wait_serving(1, &mut probe).await;
    cluster.kill_all();
}
