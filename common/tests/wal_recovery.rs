//! Recovery of damaged logs: torn tails are truncated, damage before the tail is corruption
//! named by file and offset, zeros after the last frame are kept as preallocated space, and the
//! directory lock keeps a second opener out.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};

use common::wal::format::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use common::wal::{segment_file_name, Wal, WalConfig};
use common::{Storage, StorageError};

/// Small limits, and no zeros written ahead: the segment files hold exactly their frames, so the
/// tests can cut and damage them at known offsets.
fn config(dir: &Path) -> WalConfig {
    let mut cfg = WalConfig::new(dir);
    cfg.record_bytes_max = 1024;
    cfg.segment_bytes_max = 64 * 1024;
    cfg.preallocate_bytes = 0;
    cfg
}

/// [`config`] with `bytes` of zeros written ahead of the frames.
fn preallocating(dir: &Path, bytes: u64) -> WalConfig {
    let mut cfg = config(dir);
    cfg.preallocate_bytes = bytes;
    cfg
}

/// Distinct records of varied sizes.
fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut r = format!("record-{i}-").into_bytes();
            r.extend(std::iter::repeat_n(i as u8, 7 * i % 90));
            r
        })
        .collect()
}

/// Offset in its segment of frame `i`, when all `records` are in one segment.
fn frame_offset(records: &[Vec<u8>], i: usize) -> usize {
    SEGMENT_HEADER_BYTES
        + records[..i]
            .iter()
            .map(|r| FRAME_HEADER_BYTES + r.len())
            .sum::<usize>()
}

/// Writes `records` (synced) into a fresh log in `dir` and returns the single segment's path.
fn write_log(dir: &Path, records: &[Vec<u8>]) -> PathBuf {
    let mut wal = Wal::open(config(dir)).unwrap();
    for r in records {
        wal.append(r).unwrap();
    }
    wal.close().unwrap();
    let path = dir.join(segment_file_name(0));
    assert_eq!(
        fs::metadata(&path).unwrap().len() as usize,
        frame_offset(records, records.len())
    );
    path
}

fn expect_corrupt(result: Result<Wal, StorageError>, file: &Path, offset: usize) {
    match result {
        Err(StorageError::Corrupt {
            file: f,
            offset: o,
            reason,
        }) => {
            assert_eq!(Path::new(&f), file, "file ({reason})");
            assert_eq!(o, offset as u64, "offset ({reason})");
        }
        Err(e) => panic!("expected Corrupt at {offset}, got {e}"),
        Ok(_) => panic!("expected Corrupt at {offset}, got a log"),
    }
}

/// Opens a copy of `bytes` as segment 0 of a fresh directory, checks that the records before the
/// last survive and that the rest was truncated and reported, then that appending works.
fn check_torn(bytes: &[u8], records: &[Vec<u8>], last_at: usize) {
    check_torn_with(bytes, records, last_at, 0);
}

/// [`check_torn`], appending afterwards with `preallocate` bytes of zeros written ahead.
fn check_torn_with(bytes: &[u8], records: &[Vec<u8>], last_at: usize, preallocate: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_file_name(0));
    fs::write(&path, bytes).unwrap();
    let config = |dir: &Path| preallocating(dir, preallocate);
    let mut wal = Wal::open(config(dir.path())).unwrap();
    let kept = &records[..records.len() - 1];
    assert_eq!(wal.load().unwrap(), kept, "cut at {}", bytes.len());
    let report = wal.recovery().clone();
    assert_eq!(report.truncated_bytes as usize, bytes.len() - last_at);
    if bytes.len() > last_at {
        let torn = report.torn.as_ref().expect("a torn tail is reported");
        assert_eq!(torn.offset as usize, last_at);
        assert_eq!(torn.file, path);
    } else {
        assert!(report.torn.is_none());
    }
    assert_eq!(fs::metadata(&path).unwrap().len() as usize, last_at);
    assert_eq!(report.preallocated_bytes, 0);
    wal.append(b"after recovery").unwrap();
    wal.sync().unwrap();
    drop(wal);
    let mut wal = Wal::open(config(dir.path())).unwrap();
    let mut expected = kept.to_vec();
    expected.push(b"after recovery".to_vec());
    assert_eq!(wal.load().unwrap(), expected);
    assert_eq!(wal.recovery().truncated_bytes, 0);
}

#[test]
fn torn_tail_cut_at_every_offset_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let records = records(6);
    let path = write_log(dir.path(), &records);
    let bytes = fs::read(&path).unwrap();
    let last_at = frame_offset(&records, records.len() - 1);
    for cut in last_at..bytes.len() {
        check_torn(&bytes[..cut], &records, last_at);
    }
}

#[test]
fn torn_tail_with_garbage_after_the_cut_is_truncated() {
    // A crash can also leave the file at its full length with the unwritten part zeroed (the
    // size reached the disk, the data did not) or holding junk.
    let dir = tempfile::tempdir().unwrap();
    let records = records(6);
    let path = write_log(dir.path(), &records);
    let bytes = fs::read(&path).unwrap();
    let last_at = frame_offset(&records, records.len() - 1);
    for cut in last_at..bytes.len() {
        for fill in [0x00u8, 0xA5] {
            if cut == last_at && fill == 0 {
                // The last frame whole gone, zeros after the one before: a clean end, below.
                continue;
            }
            let mut damaged = bytes.clone();
            damaged[cut..].fill(fill);
            check_torn(&damaged, &records, last_at);
        }
    }
}

#[test]
fn zeros_after_the_last_frame_are_kept_and_written_over() {
    // What the log itself leaves when it writes zeros ahead, and what a crash leaves when the
    // file's new length reached the disk but none of its new data did.
    let dir = tempfile::tempdir().unwrap();
    let records = records(6);
    let path = write_log(dir.path(), &records);
    let frames_end = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes.resize(bytes.len() + 5000, 0);
    fs::write(&path, &bytes).unwrap();
    let mut wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.load().unwrap(), records);
    let report = wal.recovery().clone();
    assert_eq!(report.torn, None);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.preallocated_bytes, 5000);
    assert_eq!(fs::metadata(&path).unwrap().len(), frames_end + 5000);
    // The next frames go over the zeros, right after the last frame.
    wal.append(b"after").unwrap();
    wal.close().unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), frames_end + 5000);
    let mut wal = Wal::open(config(dir.path())).unwrap();
    let mut expected = records.clone();
    expected.push(b"after".to_vec());
    assert_eq!(wal.load().unwrap(), expected);
    assert_eq!(
        wal.recovery().preallocated_bytes,
        5000 - (FRAME_HEADER_BYTES + 5) as u64
    );
}

#[test]
fn a_new_segment_is_zero_filled_ahead_and_recovers_at_every_cut() {
    let dir = tempfile::tempdir().unwrap();
    let records = records(6);
    let cfg = preallocating(dir.path(), 4096);
    let mut wal = Wal::open(cfg.clone()).unwrap();
    for r in &records {
        wal.append(r).unwrap();
        wal.sync().unwrap();
    }
    // The zeros were written once, with the segment; the frames went over them.
    assert_eq!(wal.stats().bytes_zero_filled, 4096);
    wal.close().unwrap();
    let path = dir.path().join(segment_file_name(0));
    let bytes = fs::read(&path).unwrap();
    // The header, then 4096 bytes of zeros that the frames were written over.
    assert_eq!(bytes.len(), SEGMENT_HEADER_BYTES + 4096);
    let frames_end = frame_offset(&records, records.len());
    assert!(bytes[frames_end..].iter().all(|&b| b == 0));
    let mut wal = Wal::open(cfg).unwrap();
    assert_eq!(wal.load().unwrap(), records);
    assert_eq!(
        wal.recovery().preallocated_bytes,
        (bytes.len() - frames_end) as u64
    );
    assert_eq!(wal.recovery().torn, None);
    drop(wal);
    // A crash mid-write of the last frame leaves part of it before the zeros, or junk anywhere
    // in them: a torn tail, truncated; the log then zero-fills again as it appends.
    let last_at = frame_offset(&records, records.len() - 1);
    for cut in last_at + 1..frames_end {
        let mut damaged = bytes.clone();
        damaged[cut..frames_end].fill(0);
        check_torn_with(&damaged, &records, last_at, 4096);
    }
    let mut damaged = bytes[..frames_end - 1].to_vec();
    damaged.resize(bytes.len(), 0);
    damaged[bytes.len() - 7] = 0xA5;
    check_torn_with(&damaged, &records, last_at, 4096);
}

#[test]
fn closed_segments_end_with_their_last_frame() {
    // Zeros are only ever left in the last segment: in an earlier one they would be damage.
    let dir = tempfile::tempdir().unwrap();
    let cfg = {
        let mut cfg = preallocating(dir.path(), 1024);
        cfg.segment_bytes_max = 2048;
        cfg
    };
    let mut wal = Wal::open(cfg.clone()).unwrap();
    let records = records(80);
    for r in &records {
        wal.append(r).unwrap();
    }
    wal.close().unwrap();
    let mut wal = Wal::open(cfg.clone()).unwrap();
    assert_eq!(wal.load().unwrap(), records);
    let paths = wal.segment_paths();
    assert!(paths.len() >= 3, "{} segments", paths.len());
    for path in &paths[..paths.len() - 1] {
        let bytes = fs::read(path).unwrap();
        assert_ne!(bytes.last(), Some(&0), "{} ends in zeros", path.display());
    }
    assert!(wal.stats().bytes_zero_filled == 0 && wal.recovery().preallocated_bytes > 0);
    // A checkpoint closes the segment early, and compaction keeps working.
    wal.append_checkpoint(b"ck").unwrap();
    wal.sync().unwrap();
    assert!(wal.stats().bytes_zero_filled > 0);
    drop(wal);
    let mut wal = Wal::open(cfg).unwrap();
    assert_eq!(wal.load().unwrap(), vec![b"ck".to_vec()]);
    assert_eq!(wal.segment_paths().len(), 1);
}

#[test]
fn bit_flip_in_an_earlier_record_is_corruption_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let records = records(6);
    let path = write_log(dir.path(), &records);
    let bytes = fs::read(&path).unwrap();
    for victim in 0..records.len() - 1 {
        let at = frame_offset(&records, victim);
        // A bit in the header (length), in the header checksum, and in the payload.
        for flip in [0, 10, FRAME_HEADER_BYTES + 3] {
            for bit in [0u8, 7] {
                let mut damaged = bytes.clone();
                damaged[at + flip] ^= 1 << bit;
                fs::write(&path, &damaged).unwrap();
                expect_corrupt(Wal::open(config(dir.path())), &path, at);
                // The damaged file is left alone: nothing synced is thrown away.
                assert_eq!(fs::read(&path).unwrap(), damaged);
            }
        }
    }
}

#[test]
fn bit_flip_in_the_last_record_is_a_torn_tail() {
    // The last frame of the last segment with a bad checksum is indistinguishable from a write
    // the crash interrupted: recovery truncates it (it was never acknowledged if never synced).
    let dir = tempfile::tempdir().unwrap();
    let records = records(4);
    let path = write_log(dir.path(), &records);
    let mut bytes = fs::read(&path).unwrap();
    let last_at = frame_offset(&records, records.len() - 1);
    bytes[last_at + FRAME_HEADER_BYTES] ^= 0x10;
    check_torn(&bytes, &records, last_at);
}

#[test]
fn damage_in_an_earlier_segment_is_corruption_even_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes_max = 2048;
    let mut wal = Wal::open(cfg.clone()).unwrap();
    for r in records(60) {
        wal.append(&r).unwrap();
    }
    wal.close().unwrap();
    let first = dir.path().join(segment_file_name(0));
    let mut bytes = fs::read(&first).unwrap();
    assert!(dir.path().join(segment_file_name(1)).exists());
    // Cut the first segment in the middle of its last frame: not the log's tail.
    let len = bytes.len();
    bytes.truncate(len - 3);
    fs::write(&first, &bytes).unwrap();
    match Wal::open(cfg) {
        Err(StorageError::Corrupt { file, reason, .. }) => {
            assert_eq!(Path::new(&file), first);
            assert!(reason.contains("not the last"), "{reason}");
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes_max = 2048;
    let mut wal = Wal::open(cfg.clone()).unwrap();
    for r in records(80) {
        wal.append(&r).unwrap();
    }
    wal.close().unwrap();
    let gap = dir.path().join(segment_file_name(1));
    assert!(dir.path().join(segment_file_name(2)).exists());
    fs::remove_file(&gap).unwrap();
    expect_corrupt(Wal::open(cfg), &gap, 0);
}

#[test]
fn length_over_the_limit_is_refused_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let records = vec![vec![1u8; 10], vec![2u8; 900], vec![3u8; 10]];
    let path = write_log(dir.path(), &records);
    let mut small = config(dir.path());
    small.record_bytes_max = 100;
    match Wal::open(small) {
        Err(StorageError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(Path::new(&file), path);
            assert_eq!(offset as usize, frame_offset(&records, 1));
            assert!(reason.contains("record_bytes_max"), "{reason}");
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn torn_segment_header_of_a_new_segment_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let records = records(3);
    write_log(dir.path(), &records);
    // A crash while creating the next segment left part of its header.
    let next = dir.path().join(segment_file_name(1));
    fs::write(&next, &b"DPWAL"[..]).unwrap();
    let mut wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.load().unwrap(), records);
    assert_eq!(wal.recovery().truncated_bytes, 5);
    wal.append(b"x").unwrap();
    wal.close().unwrap();
    let mut wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.load().unwrap().last().unwrap(), b"x");
}

#[test]
fn other_files_in_the_directory_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    fs::write(dir.path().join("7.wal"), b"not a segment name").unwrap();
    let mut wal = Wal::open(config(dir.path())).unwrap();
    wal.append(b"a").unwrap();
    wal.close().unwrap();
    assert_eq!(
        Wal::open(config(dir.path())).unwrap().load().unwrap(),
        vec![b"a".to_vec()]
    );
}

#[test]
fn second_open_is_locked_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Wal::open(config(dir.path())).unwrap();
    first.append(b"a").unwrap();
    first.sync().unwrap();
    match Wal::open(config(dir.path())) {
        Err(StorageError::Locked { path }) => assert_eq!(Path::new(&path), dir.path()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    // The refused opener touched nothing.
    assert_eq!(first.load().unwrap(), vec![b"a".to_vec()]);
    drop(first);
    let mut again = Wal::open(config(dir.path())).unwrap();
    assert_eq!(again.load().unwrap(), vec![b"a".to_vec()]);
}

#[test]
fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes_max = 10;
    assert!(matches!(Wal::open(cfg), Err(StorageError::Config(_))));
}

#[test]
fn compaction_interrupted_by_a_crash_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(config(dir.path())).unwrap();
    wal.append(b"old").unwrap();
    wal.sync().unwrap();
    wal.append_checkpoint(b"ck").unwrap();
    wal.append(b"new").unwrap();
    wal.sync().unwrap();
    drop(wal);
    // Put back an old segment as if the crash came between the sync and the deletion.
    let seg0 = dir.path().join(segment_file_name(0));
    assert!(!seg0.exists());
    let mut old = Wal::open(config(&dir.path().join("elsewhere"))).unwrap();
    old.append(b"old").unwrap();
    old.close().unwrap();
    fs::copy(
        dir.path().join("elsewhere").join(segment_file_name(0)),
        &seg0,
    )
    .unwrap();
    let mut wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.recovery().segments_deleted, 1);
    assert!(!seg0.exists());
    assert_eq!(wal.load().unwrap(), vec![b"ck".to_vec(), b"new".to_vec()]);
}

#[test]
fn junk_past_the_segment_limit_in_the_last_segment_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let records = records(4);
    let path = write_log(dir.path(), &records);
    let clean = fs::metadata(&path).unwrap().len();
    let limit = config(dir.path()).segment_bytes_max;
    // A crash that extended the file with junk beyond anything the log would write.
    let mut bytes = fs::read(&path).unwrap();
    bytes.resize(limit as usize + 1000, 0xEE);
    fs::write(&path, &bytes).unwrap();
    let mut wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.load().unwrap(), records);
    assert_eq!(wal.recovery().truncated_bytes, bytes.len() as u64 - clean);
    assert_eq!(fs::metadata(&path).unwrap().len(), clean);
}

#[test]
fn an_earlier_segment_over_the_limit_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment_bytes_max = 2048;
    let mut wal = Wal::open(cfg.clone()).unwrap();
    for r in records(40) {
        wal.append(&r).unwrap();
    }
    wal.close().unwrap();
    let first = dir.path().join(segment_file_name(0));
    let mut bytes = fs::read(&first).unwrap();
    bytes.resize(4096, 0);
    fs::write(&first, &bytes).unwrap();
    expect_corrupt(Wal::open(cfg), &first, 0);
}
