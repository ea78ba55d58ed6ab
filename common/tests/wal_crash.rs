//! Real crashes: a child process appends records and acknowledges each one on stdout only after
//! `sync` returned; the parent kills it with SIGKILL after a random number of acknowledgements,
//! reopens the log and checks that every acknowledged record is there, in order, without gaps.
//!
//! The child is this same test binary, re-executed with `--exact crash_child --ignored` and the
//! data directory in `WAL_CRASH_CHILD_DIR` (`crash_child` is ignored in normal runs, and does
//! nothing without that variable).
//! `WAL_CRASH_KILLS` sets the number of kills (default 10), `WAL_CRASH_SEED` the seed.
//!
//! SIGKILL ends the process, not the machine: the page cache survives, so this proves the
//! process-crash half of the durability contract (no acknowledged record lost, recovery of
//! half-written frames and segments, compaction interrupted at any point). Power loss is
//! modelled by the torn-tail tests in `wal_recovery.rs`.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::wal::{Wal, WalConfig};
use common::{DetRng, Storage};

const CHILD_DIR_ENV: &str = "WAL_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "WAL_CRASH_CHILD_SEED";
const KILLS_ENV: &str = "WAL_CRASH_KILLS";
const SEED_ENV: &str = "WAL_CRASH_SEED";
const KILLS_DEFAULT: u64 = 10;
const SEED_DEFAULT: u64 = 0x5EED_C0DE;
/// Most acknowledgements the parent waits for before a kill.
const ACKS_BEFORE_KILL_MAX: u64 = 40;
/// Most records the child appends per sync.
const BATCH_MAX: u64 = 8;
/// Every this many records, the child writes a checkpoint instead (exercising compaction).
const CHECKPOINT_EVERY: u64 = 37;
/// Bound on the child's work, in case the parent never kills it.
const CHILD_RECORDS_MAX: u64 = 1_000_000;
const ACK_PREFIX: &str = "ACK ";
/// The signal `Child::kill` sends on unix.
const SIGKILL: i32 = 9;
const SEGMENT_BYTES: u64 = 16 * 1024;

fn config(dir: &Path) -> WalConfig {
    let mut cfg = WalConfig::new(dir);
    cfg.record_bytes_max = 4096;
    // Small segments and a write buffer of a few records: kills land in rollovers, in syncs and
    // between buffer writes.
    cfg.segment_bytes_max = SEGMENT_BYTES;
    cfg.write_buffer_bytes = 4096;
    cfg
}

/// Record `seq`: a tag (`R` record, `C` checkpoint summarizing everything up to `seq`), the
/// sequence number, and padding of varied length derived from `seq`.
fn encode(seq: u64, checkpoint: bool) -> Vec<u8> {
    let mut r = vec![if checkpoint { b'C' } else { b'R' }];
    r.extend_from_slice(&seq.to_le_bytes());
    let pad = (seq * 131 % 1500) as usize;
    r.extend((0..pad).map(|i| (seq as usize + i) as u8));
    r
}

/// The sequence number of a record, after checking all of its bytes.
fn decode(r: &[u8]) -> (u64, bool) {
    assert!(r.len() >= 9, "record of {} bytes", r.len());
    let seq = u64::from_le_bytes(r[1..9].try_into().unwrap());
    let checkpoint = match r[0] {
        b'C' => true,
        b'R' => false,
        t => panic!("bad tag {t}"),
    };
    assert_eq!(
        r,
        encode(seq, checkpoint).as_slice(),
        "record {seq} damaged"
    );
    (seq, checkpoint)
}

/// The segment file with the highest number in `dir`, if the child got to create one.
fn last_segment(dir: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Checks the recovered log: an optional leading checkpoint, then consecutive records, reaching
/// at least `acked`. Returns the last sequence number.
fn verify(records: &[Vec<u8>], acked: Option<u64>) -> Option<u64> {
    let mut last: Option<u64> = None;
    for (i, r) in records.iter().enumerate() {
        let (seq, checkpoint) = decode(r);
        if checkpoint {
            assert_eq!(i, 0, "checkpoint {seq} is not the first record loaded");
        }
        if let Some(prev) = last {
            assert_eq!(seq, prev + 1, "gap or reordering after record {prev}");
        } else if !checkpoint {
            // Without a checkpoint, the log must start at the very first record.
            assert_eq!(seq, 0, "log starts at {seq} without a checkpoint");
        }
        last = Some(seq);
    }
    if let Some(acked) = acked {
        let last = last.expect("acknowledged records but the log is empty");
        assert!(
            last >= acked,
            "acknowledged record {acked} lost: log ends at {last}"
        );
    }
    last
}

/// The child: appends and syncs batches, acknowledging each record after its sync, until killed.
/// Ignored in normal runs; the parent runs it with `--ignored`.
#[test]
#[ignore = "child process of sigkill_loses_no_acknowledged_record"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let mut rng = DetRng::new(env_u64(CHILD_SEED_ENV, 0));
    let mut wal = Wal::open(config(Path::new(&dir))).unwrap();
    let recovered = wal.load().unwrap();
    let mut next = verify(&recovered, None).map_or(0, |s| s + 1);
    let mut out = std::io::stdout().lock();
    while next < CHILD_RECORDS_MAX {
        let first = next;
        for _ in 0..rng.range_inclusive(1, BATCH_MAX) {
            if next % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
                wal.append_checkpoint(&encode(next, true)).unwrap();
            } else {
                wal.append(&encode(next, false)).unwrap();
            }
            next += 1;
        }
        wal.sync().unwrap();
        for seq in first..next {
            writeln!(out, "{ACK_PREFIX}{seq}").unwrap();
        }
        out.flush().unwrap();
    }
}

/// Starts the child on the log in `dir`, its batches drawn from `seed`, its stdout piped.
fn spawn_child(exe: &Path, dir: &Path, seed: u64) -> Child {
    Command::new(exe)
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads the child's acknowledgements until `target` of them (0: until its first line) or its
/// end, checking their order against `acked`, the last acknowledgement of any run (updated),
/// and `recovered_last`, the last record the previous recovery found. Returns how many it read.
fn read_acks(
    stdout: &mut impl BufRead,
    target: u64,
    acked: &mut Option<u64>,
    recovered_last: Option<u64>,
) -> u64 {
    let mut seen = 0u64;
    let mut line = String::new();
    while seen < target || (target == 0 && line.is_empty()) {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(at) = line.find(ACK_PREFIX) {
            let seq: u64 = line[at + ACK_PREFIX.len()..].trim().parse().unwrap();
            // Within one run acks are consecutive; across runs they continue after whatever
            // the previous run left durable.
            match (*acked, seen) {
                (Some(prev), 0) => assert!(seq > prev, "ack {seq} after {prev}"),
                (Some(prev), _) => assert_eq!(seq, prev + 1, "acks out of order"),
                (None, _) => assert_eq!(seq, seen, "first run must ack from 0"),
            }
            if seen == 0 {
                // The child resumed right after the records the last recovery found.
                assert_eq!(Some(seq), recovered_last.map_or(Some(0), |s| Some(s + 1)));
            }
            *acked = Some(seq);
            seen += 1;
        }
    }
    seen
}

/// In some rounds (drawn from `rng`), leaves garbage at the end of the last segment file in
/// `dir` (after the last frame and any zeros written ahead), as a torn write of a record that was
/// never synced would after a power loss. Returns how
/// many bytes it wrote.
fn maybe_tear_tail(dir: &Path, rng: &mut DetRng) -> u64 {
    let last = last_segment(dir);
    if let Some(last) = last.filter(|_| rng.chance(0.5)) {
        let len = rng.range_inclusive(1, 300) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Zeros alone would be a clean end (preallocated space), not a torn tail.
        bytes[0] |= 1;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        file.write_all(&bytes).unwrap();
        len as u64
    } else {
        0
    }
}

/// Reopens the log in `dir` after round `round`'s kill and checks it: recovery cut at least
/// the `garbage` bytes, every acknowledged record up to `acked` is there in order, and
/// compaction kept the log short. Returns the last record recovered.
fn check_recovery(dir: &Path, round: u64, garbage: u64, acked: Option<u64>) -> Option<u64> {
    let mut wal = Wal::open(config(dir)).unwrap();
    assert!(
        wal.recovery().truncated_bytes >= garbage,
        "round {round}: {garbage} bytes of garbage, {} truncated",
        wal.recovery().truncated_bytes
    );
    if garbage > 0 {
        assert!(wal.recovery().torn.is_some());
    }
    let records = wal.load().unwrap();
    let recovered_last = verify(&records, acked);
    // Compaction keeps the log short: at most the segments written since the latest
    // durable checkpoint (plus the one holding it and a fresh one).
    let record_max = 13 + encode(1499, false).len() as u64;
    let segments_max = (CHECKPOINT_EVERY + BATCH_MAX) * record_max / SEGMENT_BYTES + 3;
    let segments = wal.segment_paths().len() as u64;
    assert!(segments <= segments_max, "{segments} segments left");
    recovered_last
}

#[test]
fn sigkill_loses_no_acknowledged_record() {
    let kills = env_u64(KILLS_ENV, KILLS_DEFAULT);
    let mut rng = DetRng::new(env_u64(SEED_ENV, SEED_DEFAULT));
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Option<u64> = None;
    let mut recovered_last: Option<u64> = None;
    for round in 0..kills {
        // 0 means: kill as soon as the child says anything, usually during its recovery.
        let target = rng.range_inclusive(0, ACKS_BEFORE_KILL_MAX);
        let mut child = spawn_child(&exe, dir.path(), rng.next_u64());
        // The pipe stays open until the child is dead: closing it first would kill the child
        // with EPIPE at its next acknowledgement instead of with SIGKILL at a random point.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let seen = read_acks(&mut stdout, target, &mut acked, recovered_last);
        assert!(
            seen >= target,
            "round {round}: the child stopped after {seen} acks (see its stderr above)"
        );
        child.kill().unwrap();
        let status = child.wait().unwrap();
        drop(stdout);
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "round {round}: the child ended by itself ({status}), not by the kill"
        );

        let garbage = maybe_tear_tail(dir.path(), &mut rng);
        recovered_last = check_recovery(dir.path(), round, garbage, acked);
    }
    let acked = acked.expect("no record was acknowledged in any round");
    assert!(acked > 0);
}
