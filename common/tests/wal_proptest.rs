//! Property: any sequence of appends, checkpoints, syncs, crashes and clean reopens loads exactly
//! the synced records, plus possibly a prefix of the unsynced ones, in order.
//!
//! The model is the full sequence of frames appended since the log was created, `log`, of which
//! the first `synced` are durable. What `load` must return for a surviving prefix of `k` frames
//! is that prefix from its latest checkpoint on. A crash (dropping the `Wal` without `sync`) may
//! keep any `k` with `synced <= k <= log.len()`; the test finds which one and continues from it.
//! A second property damages logs at random and checks recovery never skips a record.
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

/// Writes `payloads` as segment 0 directly (no `Wal`, no fsync) and returns the bytes and the
/// offset of every frame, plus the end.
fn segment_bytes(payloads: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    use common::wal::format::{encode_frame, segment_header, FrameKind};
    let mut data = segment_header(0).to_vec();
    let mut offsets = Vec::new();
    for p in payloads {
        offsets.push(data.len());
        encode_frame(FrameKind::Record, p, &mut data);
    }
    offsets.push(data.len());
    (data, offsets)
}

/// Damages a one-segment log with byte flips and an optional cut; recovery must either keep
/// exactly the records before the first damaged frame (a torn tail) or report corruption at that
/// frame, and damage confined to the last frame is always a torn tail. Never a panic, never a
/// record skipped.
fn check_damage(
    payloads: Vec<Vec<u8>>,
    flips: Vec<(prop::sample::Index, u8)>,
    cut: Option<prop::sample::Index>,
) -> Result<(), TestCaseError> {
    use common::wal::format::SEGMENT_HEADER_BYTES;
    use common::wal::segment_file_name;
    use common::StorageError;

    let (mut data, offsets) = segment_bytes(&payloads);
    let mut damaged_at = Vec::new();
    let mut flipped = std::collections::BTreeSet::new();
    for (index, xor) in flips {
        let at = index.index(data.len());
        if flipped.insert(at) {
            data[at] ^= xor;
            damaged_at.push(at);
        }
    }
    if let Some(cut) = cut {
        let at = cut.index(data.len());
        data.truncate(at);
        damaged_at.push(at);
    }
    let first = *damaged_at.iter().min().unwrap();
    // The damaged frame: the last one starting at or before the first damaged byte.
    let j = if first < SEGMENT_HEADER_BYTES {
        0
    } else {
        offsets.iter().rposition(|&o| o <= first).unwrap()
    };
    let n = payloads.len();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(0));
    std::fs::write(&path, &data).unwrap();
    let mut cfg = WalConfig::new(dir.path());
    cfg.record_bytes_max = 512;
    cfg.segment_bytes_max = 64 * 1024;
    match Wal::open(cfg) {
        Ok(mut wal) => {
            let loaded = wal.load().unwrap();
            prop_assert_eq!(loaded, payloads[..j.min(n)].to_vec());
        }
        Err(StorageError::Corrupt { offset, file, .. }) => {
            prop_assert!(
                j + 1 < n,
                "damage only in the last frame must be a torn tail"
            );
            let expected = if first < SEGMENT_HEADER_BYTES {
                0
            } else {
                offsets[j]
            };
            prop_assert_eq!(offset as usize, expected);
            prop_assert_eq!(std::path::PathBuf::from(file), path);
        }
        Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases() * 4))]

    #[test]
    fn damaged_log_is_torn_tail_or_corruption_never_a_skip(
        sizes in prop::collection::vec(0usize..200, 2..8),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        prop_assume!(!flips.is_empty() || cut.is_some());
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|b| (b * 7 + i) as u8).collect())
            .collect();
        check_damage(payloads, flips, cut)?;
    }
}
