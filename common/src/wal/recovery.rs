//! Opening a log: locking the directory, reading and validating every segment, and applying
//! [the recovery rule](super#the-recovery-rule) (truncate a torn tail, refuse corruption).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fs4::fs_std::FileExt;

use super::format::{
    find_intact_frame, parse_frame, parse_segment_header, segment_header, FrameKind, HeaderError,
    Parse, SEGMENT_HEADER_BYTES,
};
use super::{
    corrupt, create_segment, fsync_dir, io_error, parse_segment_file_name, segment_file_name,
    RecoveryReport, TornTail, Wal, WalConfig, WalStats, LOCK_FILE_NAME, SNAPSHOT_DIR_NAME,
};
use crate::snapshot::FileSnapshotStore;
#[cfg(doc)]
use crate::storage::Storage;
use crate::storage::StorageError;

/// Reads a segment and returns its bytes and the file's length. A segment larger than any this
/// configuration writes is refused, except the last one: a crash can leave junk past the end of
/// the last segment (a torn tail), so of that one only the first `segment_bytes_max` bytes are
/// read. Nothing past them can be a frame the log wrote.
pub(super) fn read_segment(
    path: &Path,
    segment_bytes_max: u64,
    last: bool,
) -> Result<(Vec<u8>, u64), StorageError> {
    let len = fs::metadata(path).map_err(io_error(path))?.len();
    if len <= segment_bytes_max {
        return Ok((fs::read(path).map_err(io_error(path))?, len));
    }
    if !last {
        return Err(corrupt(
            path,
            0,
            format!(
                "segment is {len} bytes, over segment_bytes_max {segment_bytes_max} \
                 (written with a larger limit?)"
            ),
        ));
    }
    let mut data = Vec::new();
    File::open(path)
        .and_then(|f| f.take(segment_bytes_max).read_to_end(&mut data))
        .map_err(io_error(path))?;
    Ok((data, len))
}

/// How the scan of one segment ended.
#[derive(Debug)]
pub(super) enum ScanEnd {
    /// Every byte belongs to an intact frame; the segment is `len` bytes.
    Clean { len: usize },
    /// The frames end at `len` and only zeros follow (last segment only): space the log wrote
    /// ahead, not damage.
    Zeroed { len: usize },
    /// A torn tail starts at `offset` (last segment only).
    Torn { offset: usize, reason: String },
    /// The segment header itself is torn and no intact frame follows (last segment only).
    HeaderTorn { reason: String },
}

/// Validates segment `seq` (already read into `data`), calling `on_frame(offset, kind, payload)`
/// for every intact frame, and applies the recovery rule of the module docs. With `last` false,
/// any damage is corruption.
pub(super) fn scan_segment(
    path: &Path,
    seq: u64,
    data: &[u8],
    last: bool,
    record_bytes_max: usize,
    mut on_frame: impl FnMut(usize, FrameKind, &[u8]),
) -> Result<ScanEnd, StorageError> {
    match parse_segment_header(data) {
        Ok(found) if found == seq => {}
        Ok(found) => {
            return Err(corrupt(
                path,
                0,
                format!("segment header names segment {found}, file name says {seq}"),
            ))
        }
        Err(HeaderError::Invalid(reason)) => return Err(corrupt(path, 0, reason)),
        Err(HeaderError::Torn(reason)) => {
            return match (last, find_intact_frame(data, 0, record_bytes_max)) {
                (true, None) => Ok(ScanEnd::HeaderTorn { reason }),
                (true, Some(at)) => Err(corrupt(
                    path,
                    0,
                    format!("{reason}; an intact frame follows at offset {at}"),
                )),
                (false, _) => Err(corrupt(path, 0, reason)),
            };
        }
    }
    let mut at = SEGMENT_HEADER_BYTES;
    loop {
        // Where to look for an intact frame after damage, when the damage might be a torn tail.
        let (reason, search_from) = match parse_frame(data, at, record_bytes_max) {
            Parse::Frame {
                kind,
                payload,
                next,
            } => {
                on_frame(at, kind, payload);
                at = next;
                continue;
            }
            Parse::End => return Ok(ScanEnd::Clean { len: at }),
            // No frame is all zeros (its header checksum could not match), so zeros to the end
            // are where the frames stop, not a frame torn by a crash.
            _ if last && data[at..].iter().all(|&b| b == 0) => {
                return Ok(ScanEnd::Zeroed { len: at })
            }
            Parse::Invalid(reason) => return Err(corrupt(path, at, reason)),
            // Nothing can follow a frame that runs to the end of the file.
            Parse::Truncated(reason) => (reason, data.len()),
            Parse::BadHeader(reason) => (reason, at + 1),
            Parse::BadPayload { reason, next } => (reason, next),
        };
        if !last {
            return Err(corrupt(
                path,
                at,
                format!("{reason} in a segment that is not the last one"),
            ));
        }
        if let Some(found) = find_intact_frame(data, search_from, record_bytes_max) {
            return Err(corrupt(
                path,
                at,
                format!("{reason}; an intact frame follows at offset {found}"),
            ));
        }
        return Ok(ScanEnd::Torn { offset: at, reason });
    }
}

/// Lists the segment numbers in `dir`, sorted, and checks that they are contiguous.
fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    for pair in seqs.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = dir.join(segment_file_name(pair[0] + 1));
            return Err(corrupt(
                &missing,
                0,
                format!(
                    "segment missing: found segments {} and {} but nothing between",
                    pair[0], pair[1]
                ),
            ));
        }
    }
    Ok(seqs)
}

impl Wal {
    /// Opens (creating if needed) the log in `config.dir`, locks the directory and recovers: see
    /// [the recovery rule](crate::wal#the-recovery-rule). The records are then available from
    /// [`Storage::load`], and what recovery did from [`Wal::recovery`].
    pub fn open(config: WalConfig) -> Result<Wal, StorageError> {
        config.validate()?;
        let dir = config.dir.clone();
        let lock = lock_dir(&dir)?;
        let mut stats = WalStats::default();
        let mut report = RecoveryReport::default();
        let Recovered {
            mut seqs,
            checkpoint,
            mut last_len,
            mut last_file_len,
        } = recover_segments(&dir, &config, &mut stats, &mut report)?;
        let file = open_last_segment(
            &config,
            &mut seqs,
            &mut last_len,
            &mut last_file_len,
            &mut stats,
        )?;

        let snapshot_dir = dir.join(SNAPSHOT_DIR_NAME);
        let snapshots = FileSnapshotStore::open(&snapshot_dir).map_err(|e| StorageError::Io {
            path: snapshot_dir.display().to_string(),
            source: e.into(),
        })?;
        let mut wal = Wal {
            snapshots: Arc::new(snapshots),
            config,
            _lock: lock,
            segments: seqs,
            file,
            segment_len: last_len,
            file_len: last_file_len,
            buf: Vec::new(),
            dirty: false,
            unsynced_records: 0,
            checkpoint,
            poisoned: None,
            failure: None,
            recovery: report,
            stats,
            #[cfg(test)]
            fail_next_fsync: false,
            #[cfg(test)]
            fail_next_write: None,
        };
        let deleted_before = wal.stats.segments_deleted;
        wal.compact()?;
        wal.recovery.segments_deleted = (wal.stats.segments_deleted - deleted_before) as usize;
        tracing::debug!(dir = %wal.config.dir.display(), report = ?wal.recovery, "wal: opened");
        Ok(wal)
    }
}

/// Creates the data directory if needed (durably) and locks it exclusively; the returned file
/// holds the lock until dropped.
fn lock_dir(dir: &Path) -> Result<File, StorageError> {
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        // The new directory's entry must be durable too, or a power loss could lose the
        // whole log along with it.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent).map_err(io_error(parent))?;
        }
    }
    let lock_path = dir.join(LOCK_FILE_NAME);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    // Fully qualified: std's `File` has lock methods of its own since Rust 1.89.
    if !FileExt::try_lock_exclusive(&lock).map_err(io_error(&lock_path))? {
        return Err(StorageError::Locked {
            path: dir.display().to_string(),
        });
    }
    Ok(lock)
}

/// What the scan of every segment found.
struct Recovered {
    /// Segment numbers on disk, oldest first.
    seqs: VecDeque<u64>,
    /// Segment number and offset of the latest checkpoint.
    checkpoint: Option<(u64, u64)>,
    /// Length of the last segment's frames after any truncation.
    last_len: u64,
    /// Length of the last segment's file: `last_len` and any zeros after it.
    last_file_len: u64,
}

/// Reads and validates every segment in order, counting records and finding the latest
/// checkpoint, and repairs a torn tail of the last segment.
fn recover_segments(
    dir: &Path,
    config: &WalConfig,
    stats: &mut WalStats,
    report: &mut RecoveryReport,
) -> Result<Recovered, StorageError> {
    let mut checkpoint = None;
    let seqs: VecDeque<u64> = list_segments(dir)?.into();
    report.segments = seqs.len();
    let (mut last_len, mut last_file_len) = (0u64, 0u64);
    for (i, &seq) in seqs.iter().enumerate() {
        let last = i + 1 == seqs.len();
        let path = dir.join(segment_file_name(seq));
        let (data, file_len) = read_segment(&path, config.segment_bytes_max, last)?;
        let end = scan_segment(
            &path,
            seq,
            &data,
            last,
            config.record_bytes_max,
            |offset, kind, _| {
                report.records += 1;
                if kind == FrameKind::Checkpoint {
                    checkpoint = Some((seq, offset as u64));
                }
            },
        )?;
        let end = match end {
            // Only the first `segment_bytes_max` bytes were read: the rest is junk.
            ScanEnd::Clean { len } | ScanEnd::Zeroed { len } if (data.len() as u64) < file_len => {
                ScanEnd::Torn {
                    offset: len,
                    reason: format!(
                        "{} bytes past the end of the last frame, beyond segment_bytes_max",
                        file_len - len as u64
                    ),
                }
            }
            end => end,
        };
        (last_len, last_file_len) = repair_tail(path, seq, end, file_len, stats, report)?;
    }
    Ok(Recovered {
        seqs,
        checkpoint,
        last_len,
        last_file_len,
    })
}

/// Applies the end of a segment's scan: nothing to do for a clean end or zeros after the
/// frames; a torn tail is truncated and a torn segment header reset, durably, and reported.
/// Returns the length of the segment's frames and of its file afterwards.
fn repair_tail(
    path: PathBuf,
    seq: u64,
    end: ScanEnd,
    file_len: u64,
    stats: &mut WalStats,
    report: &mut RecoveryReport,
) -> Result<(u64, u64), StorageError> {
    match end {
        ScanEnd::Clean { len } => Ok((len as u64, file_len)),
        ScanEnd::Zeroed { len } => {
            report.preallocated_bytes = file_len - len as u64;
            Ok((len as u64, file_len))
        }
        ScanEnd::Torn { offset, reason } => {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_error(&path))?;
            file.set_len(offset as u64).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
            stats.fsyncs += 1;
            report.truncated_bytes = file_len - offset as u64;
            tracing::warn!(file = %path.display(), offset, %reason, bytes = report.truncated_bytes, "wal: torn tail truncated");
            report.torn = Some(TornTail {
                file: path,
                offset: offset as u64,
                reason,
            });
            Ok((offset as u64, offset as u64))
        }
        ScanEnd::HeaderTorn { reason } => {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_error(&path))?;
            file.set_len(0).map_err(io_error(&path))?;
            file.write_all_at(&segment_header(seq), 0)
                .map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
            stats.fsyncs += 1;
            report.truncated_bytes = file_len;
            tracing::warn!(file = %path.display(), %reason, "wal: torn segment header reset");
            report.torn = Some(TornTail {
                file: path,
                offset: 0,
                reason,
            });
            let len = SEGMENT_HEADER_BYTES as u64;
            Ok((len, len))
        }
    }
}

/// Opens the last segment for writing and makes what recovery found durable, or creates the
/// first segment of an empty log.
fn open_last_segment(
    config: &WalConfig,
    seqs: &mut VecDeque<u64>,
    last_len: &mut u64,
    last_file_len: &mut u64,
    stats: &mut WalStats,
) -> Result<File, StorageError> {
    let dir = &config.dir;
    Ok(match seqs.back() {
        Some(&seq) => {
            let path = dir.join(segment_file_name(seq));
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_error(&path))?;
            // A crashed process's writes may still be only in the page cache: make what we
            // recovered durable before building on it (and before compaction relies on it).
            file.sync_data().map_err(io_error(&path))?;
            fsync_dir(dir).map_err(io_error(dir))?;
            stats.fsyncs += 2;
            file
        }
        None => {
            seqs.push_back(0);
            *last_len = SEGMENT_HEADER_BYTES as u64;
            let (file, file_len) = create_segment(config, 0, stats).map_err(|(_, e)| e)?;
            *last_file_len = file_len;
            file
        }
    })
}
