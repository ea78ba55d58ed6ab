//! A full disk under a real replica: node 1's data directory is a small tmpfs, and large writes
//! fill it. The node must fail-stop on the write error (ENOSPC) rather than go on with a log it
//! could not write, while the other two replicas keep serving; once space returns (the file
//! system is enlarged) the restarted node recovers from its directory, with no corrupted log,
//! and catches up. No acknowledged write is lost.
//!
//! Needs permission to mount a tmpfs (root, as on the project's test machines); without it the
//! test fails with a message saying so.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

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
async fn a_full_disk_stops_the_node_and_it_recovers_when_space_returns() {
    let mut cluster = Cluster::prepared("raft");
    // Default snapshot settings: the log, not a snapshot file, is what fills the disk.
    std::fs::write(cluster.dir.path().join("node.toml"), "").unwrap();
    let disk = Tmpfs::mount(&cluster.data_dir(1), DISK_MIB);
    for id in 1..=NODES {
        cluster.start(id);
    }
    let mut probe = KvClient::new(0, cluster.clients.clone());
    for id in 1..=NODES {
        cluster.wait_serving(id, &mut probe).await;
    }
    cluster.leader(&mut probe).await;

    let log = cluster.dir.path().join("node-1.log");
    let full = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("No space left on device")
    };
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
    // Fail-stop: the log refused to go on, and the node stopped.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("wal: poisoned"), "{text}");
    // Node 1 stopped taking work: a write sent to it alone is not applied there.
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
        !matches!(refused, CallOutcome::Ok(_)),
        "{refused:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Space returns; the node restarts from its directory and catches up.
    disk.resize(512);
    if cluster.children.contains_key(&1) {
        cluster.kill(1);
    }
    cluster.start(1);
    cluster.wait_serving(1, &mut probe).await;
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
            "node 1 did not recover and catch up\n{}",
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
    cluster.kill_all();
}
