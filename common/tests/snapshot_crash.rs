//! Real crashes while snapshot files are written and received: a child process writes snapshot
//! after snapshot into the WAL's snapshot store (every other one chunk by chunk through
//! `IncomingSnapshot`, the receiving side of a transfer), appends a checkpoint naming each one,
//! syncs, deletes what the durable checkpoint no longer needs (`SnapshotRetention`), and
//! acknowledges on stdout. The parent kills it with SIGKILL right after a random acknowledgement,
//! which lands in the middle of writing the next snapshot, then reopens everything and checks:
//! the latest checkpoint names a snapshot that is there and reads back intact (length, CRC32C
//! and every byte), it is at least the acknowledged one, no unfinished file is left, and older
//! snapshots were deleted.
//!
//! The child is this test binary again (`--exact snapshot_crash_child --ignored`), as in
//! `wal_crash.rs`. `SNAPSHOT_CRASH_KILLS` sets the number of kills (default 10).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::codec::{Bincode, Codec};
use common::snapshot::{
    IncomingSnapshot, SnapshotDigest, SnapshotFile, SnapshotReader, SnapshotRetention,
    SnapshotWriter,
};
use common::wal::{Wal, WalConfig, SNAPSHOT_DIR_NAME};
use common::{DetRng, Storage};

const CHILD_DIR_ENV: &str = "SNAPSHOT_CRASH_CHILD_DIR";
const KILLS_ENV: &str = "SNAPSHOT_CRASH_KILLS";
const KILLS_DEFAULT: u64 = 10;
const SEED: u64 = 0x5AA9_5407;
/// Most acknowledgements the parent waits for before a kill.
const ACKS_BEFORE_KILL_MAX: u64 = 4;
/// Size of every snapshot: large enough that writing one takes many writes.
const SNAPSHOT_BYTES: usize = 8 * 1024 * 1024;
/// Bytes per write (and per received chunk).
const PIECE_BYTES: usize = 64 * 1024;
/// Bound on the child's work, in case the parent never kills it.
const GENERATIONS_MAX: u64 = 10_000;
const ACK_PREFIX: &str = "ACK ";
const SIGKILL: i32 = 9;

/// The bytes of snapshot `generation`.
fn content(generation: u64) -> Vec<u8> {
    let mut rng = DetRng::new(generation);
    (0..SNAPSHOT_BYTES / 8)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect()
}

/// The latest checkpoint's `(generation, file)`, if any.
fn recovered(wal: &mut Wal) -> Option<(u64, SnapshotFile)> {
    wal.load()
        .unwrap()
        .last()
        .map(|r| Bincode.decode::<(u64, SnapshotFile)>(r).unwrap())
}

#[test]
#[ignore = "child process of sigkill_mid_snapshot_leaves_a_recoverable_snapshot"]
fn snapshot_crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let mut wal = Wal::open(WalConfig::new(&dir)).unwrap();
    let store = wal.snapshots();
    let last = recovered(&mut wal);
    let mut retention = SnapshotRetention::recovered(&*store, last.map(|(_, f)| f.id));
    let mut generation = last.map_or(0, |(g, _)| g + 1);
    let mut durable = 0;
    let mut out = std::io::stdout().lock();
    let mut data = content(generation);
    while generation < GENERATIONS_MAX {
        let file = if generation % 2 == 0 {
            // Written by the local state machine.
            let mut w = SnapshotWriter::create(&*store, u64::MAX).unwrap();
            for piece in data.chunks(PIECE_BYTES) {
                w.write_all(piece).unwrap();
            }
            w.finish().unwrap()
        } else {
            // Received from a peer, chunk by chunk, checked against the sender's digest.
            let digest = SnapshotDigest {
                bytes: data.len() as u64,
                crc32c: crc32c::crc32c(&data),
            };
            let mut incoming = IncomingSnapshot::start(&*store, digest, u64::MAX).unwrap();
            for (i, piece) in data.chunks(PIECE_BYTES).enumerate() {
                incoming.accept((i * PIECE_BYTES) as u64, piece).unwrap();
            }
            incoming.finish().unwrap()
        };
        wal.append_checkpoint(&Bincode.encode(&(generation, file)).unwrap())
            .unwrap();
        retention.checkpointed(Some(file.id));
        wal.sync().unwrap();
        durable += 1;
        retention.durable(&*store, durable);
        // The next snapshot's bytes first, so that right after the acknowledgement the child
        // is writing a snapshot file.
        data = content(generation + 1);
        writeln!(out, "{ACK_PREFIX}{generation}").unwrap();
        out.flush().unwrap();
        generation += 1;
    }
}

/// Starts the child on the WAL in `dir`, its stdout piped.
fn spawn_child(exe: &Path, dir: &Path) -> Child {
    Command::new(exe)
        .args([
            "--exact",
            "snapshot_crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads the child's acknowledgements until `target` of them or its end; each must be above
/// `acked`, the last acknowledgement of any run (updated). Returns how many it read.
fn read_acks(stdout: &mut impl BufRead, target: u64, acked: &mut Option<u64>) -> u64 {
    let mut seen = 0;
    let mut line = String::new();
    while seen < target {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(at) = line.find(ACK_PREFIX) {
            let generation: u64 = line[at + ACK_PREFIX.len()..].trim().parse().unwrap();
            if let Some(prev) = *acked {
                assert!(generation > prev, "ack {generation} after {prev}");
            }
            *acked = Some(generation);
            seen += 1;
        }
    }
    seen
}

/// How many files in `snapshots` end with `suffix`.
fn files_ending(snapshots: &Path, suffix: &str) -> usize {
    std::fs::read_dir(snapshots)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(suffix)
        })
        .count()
}

/// Waits (at most 2 s) until `snapshots` holds an unfinished file: right after an
/// acknowledgement the child is writing the next snapshot, but on a busy machine it may finish
/// before this process runs again.
fn wait_for_unfinished(snapshots: &Path) {
    let unfinished = || {
        std::fs::read_dir(snapshots).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        })
    };
    let waited = std::time::Instant::now();
    while !unfinished() && waited.elapsed() < std::time::Duration::from_secs(2) {
        std::thread::yield_now();
    }
}

/// Reopens the WAL in `dir` after round `round`'s kill and checks that the checkpoint's
/// snapshot is there, whole and right, at least the `acked` one, and that no unfinished or old
/// snapshot is left.
fn check_recovery(dir: &Path, round: u64, acked: u64) {
    let snapshots = dir.join(SNAPSHOT_DIR_NAME);
    let mut wal = Wal::open(WalConfig::new(dir)).unwrap();
    let (generation, file) = recovered(&mut wal).expect("a checkpoint");
    assert!(
        generation >= acked,
        "round {round}: acknowledged snapshot {acked} lost, recovered {generation}",
    );
    let mut bytes = Vec::new();
    SnapshotReader::open(&*wal.snapshots(), file)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    assert!(
        bytes == content(generation),
        "round {round}: snapshot {generation} damaged"
    );
    assert_eq!(
        files_ending(&snapshots, ".tmp"),
        0,
        "opening the store deletes unfinished snapshots"
    );
    // The durable checkpoint's snapshot, and at most the one written after it.
    assert!(
        files_ending(&snapshots, ".bin") <= 2,
        "round {round}: old snapshots were not deleted"
    );
}

#[test]
fn sigkill_mid_snapshot_leaves_a_recoverable_snapshot() {
    let kills = std::env::var(KILLS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(KILLS_DEFAULT);
    let mut rng = DetRng::new(SEED);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let snapshots = dir.path().join(SNAPSHOT_DIR_NAME);
    let mut acked: Option<u64> = None;
    let mut torn = 0;
    for round in 0..kills {
        let target = rng.range_inclusive(1, ACKS_BEFORE_KILL_MAX);
        let mut child = spawn_child(&exe, dir.path());
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let seen = read_acks(&mut stdout, target, &mut acked);
        assert_eq!(seen, target, "round {round}: the child stopped by itself");
        // Kill it once an unfinished file is seen (bounded; the kill lands anyway when the
        // bound is reached).
        wait_for_unfinished(&snapshots);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        drop(stdout);
        assert_eq!(status.signal(), Some(SIGKILL), "round {round}: {status}");
        torn += files_ending(&snapshots, ".tmp");
        check_recovery(dir.path(), round, acked.unwrap());
    }
    assert!(
        torn > 0,
        "no kill landed while a snapshot was being written: the test proves nothing"
    );
}
