//! Property: any sequence of appends, checkpoints, syncs, crashes and clean reopens loads exactly
//! the synced records, plus possibly a prefix of the unsynced ones, in order.
//!
//! The model is the full sequence of frames appended since the log was created, `log`, of which
//! the first `synced` are durable. What `load` must return for a surviving prefix of `k` frames
//! is that prefix from its latest checkpoint on. A crash (dropping the `Wal` without `sync`) may
//! keep any `k` with `synced <= k <= log.len()`; the test finds which one and continues from it.
//! `PROPTEST_CASES` raises the number of cases.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use common::wal::{Wal, WalConfig};
use common::Storage;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append(usize),
    Checkpoint(usize),
    Sync,
    /// Drop without sync, then reopen.
    Crash,
    /// Sync, drop, reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..300).prop_map(Op::Append),
        1 => (0usize..300).prop_map(Op::Checkpoint),
        3 => Just(Op::Sync),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

/// What `load` returns when the first `k` frames of `log` survive.
fn view(log: &[(bool, Vec<u8>)], k: usize) -> Vec<Vec<u8>> {
    let from = log[..k].iter().rposition(|(ck, _)| *ck).unwrap_or(0);
    log[from..k].iter().map(|(_, r)| r.clone()).collect()
}

fn run(ops: Vec<Op>, write_buffer_bytes: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = WalConfig::new(dir.path());
    cfg.record_bytes_max = 512;
    // Small segments so rollover happens often.
    cfg.segment_bytes_max = 1024;
    cfg.write_buffer_bytes = write_buffer_bytes;
    let mut wal = Wal::open(cfg.clone()).unwrap();
    let mut log: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut synced = 0usize;
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append(len) | Op::Checkpoint(len) => {
                // Unique contents, so the surviving prefix is unambiguous.
                let mut r = format!("{n}:").into_bytes();
                r.resize(r.len().max(len), n as u8);
                let ck = matches!(op, Op::Checkpoint(_));
                if ck {
                    wal.append_checkpoint(&r).unwrap();
                } else {
                    wal.append(&r).unwrap();
                }
                log.push((ck, r));
            }
            Op::Sync => {
                wal.sync().unwrap();
                synced = log.len();
            }
            Op::Reopen => {
                wal.close().unwrap();
                wal = Wal::open(cfg.clone()).unwrap();
                synced = log.len();
            }
            Op::Crash => {
                drop(wal);
                wal = Wal::open(cfg.clone()).unwrap();
                let loaded = wal.load().unwrap();
                let survived = (synced..=log.len())
                    .rev()
                    .find(|&k| view(&log, k) == loaded);
                let Some(k) = survived else {
                    return Err(TestCaseError::fail(format!(
                        "after a crash loaded {} records, which is no prefix between the {} \
                         synced and all {} appended frames",
                        loaded.len(),
                        synced,
                        log.len()
                    )));
                };
                log.truncate(k);
                synced = k;
            }
        }
        prop_assert_eq!(wal.load().unwrap(), view(&log, log.len()));
    }
    Ok(())
}

/// 32 cases by default; `PROPTEST_CASES` overrides.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_history_loads_the_synced_records(
        ops in prop::collection::vec(op(), 1..40),
        write_buffer_bytes in prop_oneof![Just(0usize), Just(100), Just(1 << 20)],
    ) {
        run(ops, write_buffer_bytes)?;
    }
}
