//! Real crashes: a child process appends records and acknowledges each one on stdout only after
//! `sync` returned; the parent kills it with SIGKILL after a random number of acknowledgements,
//! reopens the log and checks that every acknowledged record is there, in order, without gaps.
//!
//! The child is this same test binary, re-executed with `--exact crash_child` and the data
//! directory in `WAL_CRASH_CHILD_DIR`; without that variable `crash_child` does nothing.
//! `WAL_CRASH_KILLS` sets the number of kills (default 10), `WAL_CRASH_SEED` the seed.
//!
//! SIGKILL ends the process, not the machine: the page cache survives, so this proves the
//! process-crash half of the durability contract (no acknowledged record lost, recovery of
//! half-written frames and segments, compaction interrupted at any point). Power loss is
//! modelled by the torn-tail tests in `wal_recovery.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

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
#[test]
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
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_SEED_ENV, rng.next_u64().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = 0u64;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(at) = line.find(ACK_PREFIX) {
                let seq: u64 = line[at + ACK_PREFIX.len()..].trim().parse().unwrap();
                // Within one run acks are consecutive; across runs they continue after whatever
                // the previous run left durable.
                match (acked, seen) {
                    (Some(prev), 0) => assert!(seq > prev, "ack {seq} after {prev}"),
                    (Some(prev), _) => assert_eq!(seq, prev + 1, "acks out of order"),
                    (None, _) => assert_eq!(seq, seen, "first run must ack from 0"),
                }
                if seen == 0 {
                    // The child resumed right after the records the last recovery found.
                    assert_eq!(Some(seq), recovered_last.map_or(Some(0), |s| Some(s + 1)));
                }
                acked = Some(seq);
                seen += 1;
            }
            if seen >= target {
                break;
            }
        }
        assert!(
            seen >= target,
            "round {round}: the child stopped after {seen} acks (see its stderr above)"
        );
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the child was not killed");

        let mut wal = Wal::open(config(dir.path())).unwrap();
        let records = wal.load().unwrap();
        recovered_last = verify(&records, acked);
        // Compaction keeps the log short: at most the segments written since the latest
        // durable checkpoint (plus the one holding it and a fresh one).
        let record_max = 13 + encode(1499, false).len() as u64;
        let segments_max = (CHECKPOINT_EVERY + BATCH_MAX) * record_max / SEGMENT_BYTES + 3;
        let segments = wal.segment_paths().len() as u64;
        assert!(segments <= segments_max, "{segments} segments left");
    }
    let acked = acked.expect("no record was acknowledged in any round");
    assert!(acked > 0);
}
