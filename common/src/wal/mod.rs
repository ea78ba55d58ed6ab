//! The durable, segmented write-ahead log: the [`Storage`] a node runs on in production.
//!
//! # Guarantees first
//!
//! - **Durability.** When [`Storage::sync`] returns `Ok`, every record appended before the call is
//!   on stable storage (`fdatasync` of the segment, `fsync` of the directory whenever a segment
//!   was created or removed) and survives a process crash or a power loss.
//! - **Prefix semantics.** After any crash, [`Wal::open`] finds every synced record and, possibly,
//!   some of the unsynced ones after them, in order, never a later one without all earlier ones.
//! - **No silent loss.** A damaged frame that cannot be explained by a crash mid-write (see
//!   [the recovery rule](#the-recovery-rule)) is [`StorageError::Corrupt`] naming the file and the
//!   offset; nothing is skipped. Bytes from disk are never trusted: no panic, no allocation
//!   beyond the configured limits.
//! - **Fail-stop.** A failed `fsync` (or any failed write) poisons the log: every later call
//!   returns [`StorageError::Poisoned`]. After a failed fsync the kernel may have dropped the dirty
//!   pages and cleared the error, so retrying and reporting success would be a lie (the
//!   "fsyncgate" lesson from PostgreSQL). The node must stop and reopen, which re-reads the files.
//! - **One owner.** The data directory is locked exclusively (`flock` on a `LOCK` file); a second
//!   opener gets [`StorageError::Locked`].
//!
//! # A tour
//!
//! ```
//! use common::wal::{Wal, WalConfig};
//! use common::Storage;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut wal = Wal::open(WalConfig::new(dir.path())).unwrap();
//! // Group commit: append the records of many steps, then make them durable with one sync.
//! wal.append(b"x=1").unwrap();
//! wal.append(b"x=2").unwrap();
//! wal.sync().unwrap();
//! // A checkpoint summarizes everything before it; once synced, older segments are deleted.
//! wal.append_checkpoint(b"snapshot: x=2").unwrap();
//! wal.append(b"x=3").unwrap();
//! wal.sync().unwrap();
//! assert_eq!(wal.stats().records_synced, 4);
//! drop(wal);
//!
//! // Open = recover: the latest checkpoint and everything after it.
//! let mut wal = Wal::open(WalConfig::new(dir.path())).unwrap();
//! assert_eq!(wal.load().unwrap(), vec![b"snapshot: x=2".to_vec(), b"x=3".to_vec()]);
//! assert_eq!(wal.recovery().truncated_bytes, 0);
//! // The directory is ours while `wal` lives.
//! assert!(matches!(
//!     Wal::open(WalConfig::new(dir.path())),
//!     Err(common::StorageError::Locked { .. })
//! ));
//! ```
//!
//! # On-disk format
//!
//! The data directory holds a `LOCK` file and segment files named by a 20-digit decimal segment
//! number, `00000000000000000000.wal`, `00000000000000000001.wal`, …, contiguous (a gap is
//! corruption). Only the last segment is ever written to. All integers are little-endian.
//!
//! A segment starts with a 24-byte header:
//!
//! | bytes  | field                                              |
//! | ------ | -------------------------------------------------- |
//! | 0..8   | magic `DPWALSEG`                                   |
//! | 8..12  | format version (`u32`, currently 1)                |
//! | 12..20 | segment number (`u64`, must match the file name)   |
//! | 20..24 | CRC32C of bytes 0..20                              |
//!
//! followed by frames, one per record:
//!
//! | bytes     | field                                                      |
//! | --------- | ---------------------------------------------------------- |
//! | 0..4      | payload length `len` (`u32`)                               |
//! | 4         | kind: 1 = record, 2 = checkpoint                           |
//! | 5..9      | CRC32C of the payload                                      |
//! | 9..13     | CRC32C of bytes 0..9 (the *header checksum*)               |
//! | 13..13+len| payload: the record's bytes                                |
//!
//! The header checksum lets a reader trust `len` and `kind` before it reads the payload: a length
//! is compared with [`WalConfig::record_bytes_max`] only once its checksum matched, and a length
//! over the limit is refused without reading or allocating anything. It also makes the search for
//! "is there an intact frame after this damage?" cheap (9 bytes hashed per candidate offset).
//!
//! Every checkpoint starts a new segment (unless the current one holds no frame yet), so "the
//! records before the latest checkpoint" are always whole segments, and compaction is deleting
//! files. A segment is also closed when the next frame
//! would make it exceed [`WalConfig::segment_bytes_max`]. Closing a segment fsyncs it before the
//! next one is created; creating one writes and fsyncs its header, then fsyncs the directory.
//!
//! # The recovery rule
//!
//! [`Wal::open`] reads every segment in order and validates every frame. When a frame is damaged
//! (a short or checksum-failing header, a payload that runs past the end of the file, a payload
//! checksum mismatch) it decides between *torn tail* and *corruption*:
//!
//! 1. Damage in any segment but the last is **corruption**: a segment is fsynced before its
//!    successor is created, so no crash can leave it partly written.
//! 2. A frame whose header is intact but impossible (unknown kind, length over the limit) is
//!    **corruption** wherever it is: a torn write cannot produce a matching header checksum.
//! 3. In the last segment, damage at offset `x` is a **torn tail** only if no intact frame
//!    starts anywhere after it: from `x + 1` when the header is damaged (its length cannot be
//!    trusted, so every offset is a candidate), from the end of the frame when only its payload
//!    is. A crash mid-write leaves garbage, zeros or nothing after the last complete frame, but
//!    never a complete frame after an incomplete one written earlier in the same file. If an
//!    intact frame follows, it is **corruption** at `x`, because accepting it would mean skipping
//!    a record in the middle of the log.
//! 4. A torn tail is truncated at `x`, the truncation is fsynced and reported in
//!    [`Wal::recovery`] ([`RecoveryReport::torn`]), and appends continue from there. A last
//!    segment whose own header is torn (its creation was interrupted) is reset to a fresh header
//!    when it holds no intact frame. Bytes of the last segment beyond
//!    [`WalConfig::segment_bytes_max`] are never read (the log never writes there) and are part
//!    of the torn tail; any other segment over the limit is corruption.
//!
//! After recovery, the last segment and the directory are fsynced: what a crashed process left in
//! the page cache becomes durable before anything is built on it. Then segments before the latest
//! checkpoint are deleted (compaction interrupted by the crash is finished).
//!
//! The rule can be wrong in one, safe, direction: after a power loss, a file system that writes
//! unsynced pages out of order could leave an intact *unsynced* frame after a torn one; that is
//! reported as corruption although no synced record was harmed. It never accepts damage before
//! an intact frame, so it never skips a synced record.
//!
//! # Durability contract
//!
//! - [`Storage::append`] and [`Storage::append_checkpoint`] only copy into a memory buffer of
//!   [`WalConfig::write_buffer_bytes`] (written to the file when full, without fsync). They may
//!   fsync when they close a segment (segment full, or a checkpoint starts a new one).
//! - [`Storage::sync`] writes the buffer, `fdatasync`s the segment, and after a checkpoint became
//!   durable deletes older segments (then fsyncs the directory). One sync covers any number of
//!   appends: that is group commit; [`WalStats::records_per_sync`] shows how well it works.
//! - Dropping a [`Wal`] without `sync` is a crash for the unsynced records: the memory buffer is
//!   discarded (part of it may already be in the file). Call [`Wal::close`] to sync and drop.
//! - [`Storage::load`] reads the files again (after writing the buffer, not fsyncing it): the
//!   latest checkpoint, synced or not, and every record after it.
//!
//! # What a production system would add
//!
//! Preallocated, recycled segment files (`fallocate`, so `fdatasync` need not update the file
//! size, and no directory fsync per segment); `O_DIRECT` with aligned writes; a sequence number
//! or epoch in each frame so that after a power loss unsynced frames can be told from synced ones
//! (removing the false corruption report above); a background thread that syncs while the next
//! batch is being appended; checksummed snapshots in separate files rather than records in the
//! log; repair tooling that can salvage the readable records of a corrupt log; and metrics of
//! fsync latency.

pub mod config;
pub mod format;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fs4::fs_std::FileExt;

pub use config::{
    WalConfig, RECORD_BYTES_MAX_DEFAULT, SEGMENT_BYTES_MAX_DEFAULT, WRITE_BUFFER_BYTES_DEFAULT,
};
use format::{
    encode_frame, find_intact_frame, parse_frame, parse_segment_header, segment_header, FrameKind,
    HeaderError, Parse, SEGMENT_HEADER_BYTES,
};

use crate::snapshot::{FileSnapshotStore, SnapshotStore};
use crate::storage::{Storage, StorageError};

/// The subdirectory of the data directory that holds snapshot files ([`Storage::snapshots`]).
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";

/// Name of the lock file in the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";
/// File name suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Digits of the segment number in a segment file's name.
const SEGMENT_NAME_DIGITS: usize = 20;

/// The file name of segment `seq`.
pub fn segment_file_name(seq: u64) -> String {
    format!("{seq:0width$}{SEGMENT_SUFFIX}", width = SEGMENT_NAME_DIGITS)
}

fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A torn tail found and truncated by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file (always the last one).
    pub file: PathBuf,
    /// Where the damaged frame started; the file now ends here.
    pub offset: u64,
    /// What was wrong with the frame at `offset`.
    pub reason: String,
}

/// What [`Wal::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files found.
    pub segments: usize,
    /// Intact frames read, across all segments.
    pub records: u64,
    /// Bytes cut off the end of the last segment (0 if it ended cleanly).
    pub truncated_bytes: u64,
    /// The torn tail, if one was truncated.
    pub torn: Option<TornTail>,
    /// Segments before the latest checkpoint deleted by recovery (a compaction a crash
    /// interrupted).
    pub segments_deleted: usize,
}

/// Counters of a [`Wal`] since it was opened, for reports and benches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records appended (checkpoints included).
    pub appends: u64,
    /// Checkpoints appended.
    pub checkpoints: u64,
    /// Payload bytes appended.
    pub bytes_appended: u64,
    /// Bytes written to segment files (frames and segment headers).
    pub bytes_written: u64,
    /// Calls to `sync`.
    pub sync_calls: u64,
    /// Calls to `sync` that had records to make durable (each one `fdatasync`).
    pub syncs: u64,
    /// Records made durable by those syncs.
    pub records_synced: u64,
    /// Largest number of records one sync made durable.
    pub records_per_sync_max: u64,
    /// Every fsync of a file or directory (syncs, segment closes and creations, deletions).
    pub fsyncs: u64,
    /// Segment files created.
    pub segments_created: u64,
    /// Segment files deleted by compaction.
    pub segments_deleted: u64,
}

impl WalStats {
    /// Average number of records made durable per sync: the group commit factor.
    pub fn records_per_sync(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.records_synced as f64 / self.syncs as f64
        }
    }
}

/// The write-ahead log. See the [module documentation](self).
pub struct Wal {
    config: WalConfig,
    /// Holds the exclusive lock on the data directory until dropped.
    _lock: File,
    /// Segment numbers on disk, oldest first; the last is `file`.
    segments: VecDeque<u64>,
    /// The segment being written, opened for appending.
    file: File,
    /// Length of the current segment including the buffered frames.
    segment_len: u64,
    /// Frames appended but not yet written to `file`.
    buf: Vec<u8>,
    /// Whether the current segment holds bytes (written or buffered) not yet fsynced.
    dirty: bool,
    /// Records appended since the last sync.
    unsynced_records: u64,
    /// Segment number and offset of the latest checkpoint, synced or not.
    checkpoint: Option<(u64, u64)>,
    /// Set by the first failed write or fsync; the log refuses all work afterwards.
    poisoned: Option<String>,
    recovery: RecoveryReport,
    stats: WalStats,
    /// The snapshot files, in [`SNAPSHOT_DIR_NAME`] under the data directory (covered by its
    /// lock).
    snapshots: Arc<FileSnapshotStore>,
    /// Test hook: the next fsync of a segment fails.
    #[cfg(test)]
    fail_next_fsync: bool,
}

impl std::fmt::Debug for Wal {
    // By hand: the derived form would print the whole write buffer.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.config.dir)
            .field("segments", &self.segments)
            .field("segment_len", &self.segment_len)
            .field("buffered_bytes", &self.buf.len())
            .field("unsynced_records", &self.unsynced_records)
            .field("checkpoint", &self.checkpoint)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        file: path.display().to_string(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a segment and returns its bytes and the file's length. A segment larger than any this
/// configuration writes is refused, except the last one: a crash can leave junk past the end of
/// the last segment (a torn tail), so of that one only the first `segment_bytes_max` bytes are
/// read. Nothing past them can be a frame the log wrote.
fn read_segment(
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
enum ScanEnd {
    /// Every byte belongs to an intact frame; the segment is `len` bytes.
    Clean { len: usize },
    /// A torn tail starts at `offset` (last segment only).
    Torn { offset: usize, reason: String },
    /// The segment header itself is torn and no intact frame follows (last segment only).
    HeaderTorn { reason: String },
}

/// Validates segment `seq` (already read into `data`), calling `on_frame(offset, kind, payload)`
/// for every intact frame, and applies the recovery rule of the module docs. With `last` false,
/// any damage is corruption.
fn scan_segment(
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

/// Creates segment `seq` with its header, fsyncs it and the directory.
fn create_segment(dir: &Path, seq: u64, stats: &mut WalStats) -> Result<File, StorageError> {
    let path = dir.join(segment_file_name(seq));
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(io_error(&path))?;
    file.write_all(&segment_header(seq))
        .map_err(io_error(&path))?;
    file.sync_data().map_err(io_error(&path))?;
    fsync_dir(dir).map_err(io_error(dir))?;
    stats.fsyncs += 2;
    stats.segments_created += 1;
    stats.bytes_written += SEGMENT_HEADER_BYTES as u64;
    Ok(file)
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
    /// [the recovery rule](self#the-recovery-rule). The records are then available from
    /// [`Storage::load`], and what recovery did from [`Wal::recovery`].
    pub fn open(config: WalConfig) -> Result<Wal, StorageError> {
        config.validate()?;
        let dir = config.dir.clone();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_error(&dir))?;
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

        let mut stats = WalStats::default();
        let mut report = RecoveryReport::default();
        let mut checkpoint = None;
        let mut seqs: VecDeque<u64> = list_segments(&dir)?.into();
        report.segments = seqs.len();
        let mut last_len = 0u64;
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
                ScanEnd::Clean { len } if (len as u64) < file_len => ScanEnd::Torn {
                    offset: len,
                    reason: format!(
                        "{} bytes past the end of the last frame, beyond segment_bytes_max",
                        file_len - len as u64
                    ),
                },
                end => end,
            };
            match end {
                ScanEnd::Clean { len } => last_len = len as u64,
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
                    last_len = offset as u64;
                }
                ScanEnd::HeaderTorn { reason } => {
                    let mut file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_error(&path))?;
                    file.set_len(0).map_err(io_error(&path))?;
                    file.write_all(&segment_header(seq))
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
                    last_len = SEGMENT_HEADER_BYTES as u64;
                }
            }
        }

        let file = match seqs.back() {
            Some(&seq) => {
                let path = dir.join(segment_file_name(seq));
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                // A crashed process's writes may still be only in the page cache: make what we
                // recovered durable before building on it (and before compaction relies on it).
                file.sync_data().map_err(io_error(&path))?;
                fsync_dir(&dir).map_err(io_error(&dir))?;
                stats.fsyncs += 2;
                file
            }
            None => {
                seqs.push_back(0);
                last_len = SEGMENT_HEADER_BYTES as u64;
                create_segment(&dir, 0, &mut stats)?
            }
        };

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
            buf: Vec::new(),
            dirty: false,
            unsynced_records: 0,
            checkpoint,
            poisoned: None,
            recovery: report,
            stats,
            #[cfg(test)]
            fail_next_fsync: false,
        };
        let deleted_before = wal.stats.segments_deleted;
        wal.compact()?;
        wal.recovery.segments_deleted = (wal.stats.segments_deleted - deleted_before) as usize;
        tracing::debug!(dir = %wal.config.dir.display(), report = ?wal.recovery, "wal: opened");
        Ok(wal)
    }

    /// What recovery found when this log was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Counters since this log was opened.
    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &WalConfig {
        &self.config
    }

    /// Paths of the segment files, oldest first; the last one is being written.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments
            .iter()
            .map(|&seq| self.segment_path(seq))
            .collect()
    }

    /// Whether an earlier failure poisoned the log (it must be dropped and reopened).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Syncs, then releases the directory.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.sync()
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.config.dir.join(segment_file_name(seq))
    }

    fn current_seq(&self) -> u64 {
        self.segments.back().copied().unwrap_or(0)
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(why) => Err(StorageError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Records the first failure that leaves the files in an unknown state, and returns the
    /// error to hand to the caller.
    fn poison(&mut self, what: String) -> StorageError {
        tracing::error!(%what, "wal: poisoned");
        self.poisoned = Some(what.clone());
        StorageError::Poisoned(what)
    }

    fn write_buffer(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            let path = self.segment_path(self.current_seq());
            return Err(self.poison(format!("write to {} failed: {e}", path.display())));
        }
        self.stats.bytes_written += self.buf.len() as u64;
        self.buf.clear();
        // A huge record must not pin a huge buffer for the rest of the log's life.
        if self.buf.capacity() > 2 * self.config.write_buffer_bytes {
            self.buf.shrink_to(self.config.write_buffer_bytes);
        }
        Ok(())
    }

    fn fsync_segment(&mut self) -> Result<(), StorageError> {
        #[cfg(test)]
        let result = if std::mem::take(&mut self.fail_next_fsync) {
            Err(io::Error::other("injected fsync failure"))
        } else {
            self.file.sync_data()
        };
        #[cfg(not(test))]
        let result = self.file.sync_data();
        if let Err(e) = result {
            let path = self.segment_path(self.current_seq());
            return Err(self.poison(format!("fsync of {} failed: {e}", path.display())));
        }
        self.stats.fsyncs += 1;
        Ok(())
    }

    /// Closes the current segment (written out and fsynced, so no later crash can tear it) and
    /// starts the next one.
    fn roll_over(&mut self) -> Result<(), StorageError> {
        self.write_buffer()?;
        if self.dirty {
            self.fsync_segment()?;
            self.dirty = false;
        }
        let seq = self.current_seq() + 1;
        match create_segment(&self.config.dir, seq, &mut self.stats) {
            Ok(file) => {
                self.file = file;
                self.segments.push_back(seq);
                self.segment_len = SEGMENT_HEADER_BYTES as u64;
                Ok(())
            }
            Err(e) => Err(self.poison(format!("creating segment {seq} failed: {e}"))),
        }
    }

    /// Deletes the segments before the latest checkpoint's. Only called once that checkpoint is
    /// durable. Oldest first, so a crash in between leaves a contiguous run of segments.
    fn compact(&mut self) -> Result<(), StorageError> {
        let Some((keep_from, _)) = self.checkpoint else {
            return Ok(());
        };
        let mut deleted = 0;
        while let Some(&oldest) = self.segments.front() {
            if oldest >= keep_from {
                break;
            }
            let path = self.segment_path(oldest);
            if let Err(e) = fs::remove_file(&path) {
                return Err(self.poison(format!("deleting {} failed: {e}", path.display())));
            }
            self.segments.pop_front();
            deleted += 1;
        }
        if deleted > 0 {
            if let Err(e) = fsync_dir(&self.config.dir) {
                let dir = self.config.dir.display().to_string();
                return Err(self.poison(format!("fsync of directory {dir} failed: {e}")));
            }
            self.stats.fsyncs += 1;
            self.stats.segments_deleted += deleted;
        }
        Ok(())
    }

    fn append_frame(&mut self, kind: FrameKind, record: &[u8]) -> Result<(), StorageError> {
        self.check_usable()?;
        if record.len() > self.config.record_bytes_max {
            return Err(StorageError::RecordTooLarge {
                len: record.len(),
                max: self.config.record_bytes_max,
            });
        }
        let frame_len = (format::FRAME_HEADER_BYTES + record.len()) as u64;
        let has_frames = self.segment_len > SEGMENT_HEADER_BYTES as u64;
        let full = self.segment_len + frame_len > self.config.segment_bytes_max;
        if has_frames && (full || kind == FrameKind::Checkpoint) {
            self.roll_over()?;
        }
        if kind == FrameKind::Checkpoint {
            self.checkpoint = Some((self.current_seq(), self.segment_len));
            self.stats.checkpoints += 1;
        }
        encode_frame(kind, record, &mut self.buf);
        self.segment_len += frame_len;
        self.dirty = true;
        self.unsynced_records += 1;
        self.stats.appends += 1;
        self.stats.bytes_appended += record.len() as u64;
        if self.buf.len() >= self.config.write_buffer_bytes {
            self.write_buffer()?;
        }
        Ok(())
    }
}

impl Storage for Wal {
    fn append(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.append_frame(FrameKind::Record, record)
    }

    fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.append_frame(FrameKind::Checkpoint, record)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        self.stats.sync_calls += 1;
        if self.dirty {
            self.write_buffer()?;
            self.fsync_segment()?;
            self.dirty = false;
            self.stats.syncs += 1;
            self.stats.records_synced += self.unsynced_records;
            self.stats.records_per_sync_max =
                self.stats.records_per_sync_max.max(self.unsynced_records);
        }
        // Records appended before a segment closed were fsynced then; count them here, once.
        self.unsynced_records = 0;
        self.compact()
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.snapshots.clone()
    }

    fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError> {
        self.check_usable()?;
        self.write_buffer()?;
        let (from_seq, from_offset) = self
            .checkpoint
            .unwrap_or((self.segments.front().copied().unwrap_or(0), 0));
        let mut records = Vec::new();
        let seqs: Vec<u64> = self
            .segments
            .iter()
            .copied()
            .filter(|&s| s >= from_seq)
            .collect();
        for seq in seqs {
            let path = self.segment_path(seq);
            let (data, _) = read_segment(&path, self.config.segment_bytes_max, false)?;
            // Everything up to the buffer's end was written by this process: any damage now is
            // corruption, wherever it is.
            scan_segment(
                &path,
                seq,
                &data,
                false,
                self.config.record_bytes_max,
                |offset, _, payload| {
                    if seq > from_seq || offset as u64 >= from_offset {
                        records.push(payload.to_vec());
                    }
                },
            )?;
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Wal {
        Wal::open(WalConfig::new(dir)).unwrap()
    }

    #[test]
    fn failed_fsync_poisons_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open(dir.path());
        wal.append(b"a").unwrap();
        wal.fail_next_fsync = true;
        assert!(matches!(wal.sync(), Err(StorageError::Poisoned(_))));
        assert!(wal.is_poisoned());
        // No retry that pretends: every later call fails too.
        assert!(matches!(wal.sync(), Err(StorageError::Poisoned(_))));
        assert!(matches!(wal.append(b"b"), Err(StorageError::Poisoned(_))));
        assert!(matches!(wal.load(), Err(StorageError::Poisoned(_))));
        drop(wal);
        // Reopening re-reads the files: the record reached the file (the write succeeded), so it
        // is recovered, and recovery's own fsync makes it durable.
        let mut wal = open(dir.path());
        assert_eq!(wal.load().unwrap(), vec![b"a".to_vec()]);
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(7), "00000000000000000007.wal");
        assert_eq!(parse_segment_file_name(&segment_file_name(7)), Some(7));
        assert_eq!(parse_segment_file_name("7.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.wal"), None);
    }

    #[test]
    fn segments_roll_over_and_checkpoint_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = WalConfig::new(dir.path());
        cfg.record_bytes_max = 100;
        cfg.segment_bytes_max = 200;
        let mut wal = Wal::open(cfg.clone()).unwrap();
        for i in 0..20u8 {
            wal.append(&[i; 50]).unwrap();
        }
        wal.sync().unwrap();
        let before = wal.segment_paths().len();
        assert!(before >= 5, "{before} segments");
        wal.append_checkpoint(b"ck").unwrap();
        wal.append(b"after").unwrap();
        // Not synced yet: nothing is deleted.
        assert_eq!(wal.segment_paths().len(), before + 1);
        wal.sync().unwrap();
        assert_eq!(wal.segment_paths().len(), 1);
        assert_eq!(wal.stats().segments_deleted, before as u64);
        drop(wal);
        let mut wal = Wal::open(cfg).unwrap();
        assert_eq!(wal.load().unwrap(), vec![b"ck".to_vec(), b"after".to_vec()]);
    }
}
