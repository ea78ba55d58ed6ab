//! The durable, segmented write-ahead log: the [`Storage`] a node runs on in production
//! (feature `wal`, implied by `runtime`).
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
//!   [`Wal::failure`] says which kind of call failed: a write refused for lack of space
//!   ([`WalFailure::is_out_of_space_on_write`]) is cured by reopening once space returns (recovery
//!   truncates the torn tail it left); after a failed fsync an operator must judge the device.
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
//! The last segment may end in zeros after its last frame: the log writes
//! [`WalConfig::preallocate_bytes`] of them ahead of its frames and then writes the frames over
//! them, so that a sync rarely has to make a new file length durable. No frame is all zeros (its
//! header checksum would not match), so a reader knows where the frames stop.
//!
//! Every checkpoint starts a new segment (unless the current one holds no frame yet), so "the
//! records before the latest checkpoint" are always whole segments, and compaction is deleting
//! files. A segment is also closed when the next frame
//! would make it exceed [`WalConfig::segment_bytes_max`]. Closing a segment cuts off its zeros and
//! fsyncs it before the next one is created; creating one writes its header and zeros, fsyncs
//! them, then fsyncs the directory.
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
//! 3. In the last segment, only zeros from offset `x` to the end of the file are **the end of the
//!    frames**, not damage: zeros written ahead, or a crash that made the file's new length
//!    durable but not its data. They are kept for the appends that follow and reported in
//!    [`RecoveryReport::preallocated_bytes`].
//! 4. In the last segment, damage at offset `x` is a **torn tail** only if no intact frame
//!    starts anywhere after it: from `x + 1` when the header is damaged (its length cannot be
//!    trusted, so every offset is a candidate), from the end of the frame when only its payload
//!    is. A crash mid-write leaves garbage, zeros or nothing after the last complete frame, but
//!    never a complete frame after an incomplete one written earlier in the same file. If an
//!    intact frame follows, it is **corruption** at `x`, because accepting it would mean skipping
//!    a record in the middle of the log.
//! 5. A torn tail is truncated at `x` (zeros after it included), the truncation is fsynced and
//!    reported in [`Wal::recovery`] ([`RecoveryReport::torn`]), and appends continue from there
//!    (zero-filling ahead again). A last
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
//!   fsync when they close a segment (segment full, or a checkpoint starts a new one). Writing
//!   the buffer also writes the next [`WalConfig::preallocate_bytes`] of zeros once the frames
//!   have passed the end of the zeros written before.
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
//! Recycled segment files (no new file, zero-fill and directory fsync per segment, which today
//! every checkpoint pays); `O_DIRECT` with aligned writes; a sequence number
//! or epoch in each frame so that after a power loss unsynced frames can be told from synced ones
//! (removing the false corruption report above); a background thread that syncs while the next
//! batch is being appended; checksummed snapshots in separate files rather than records in the
//! log; repair tooling that can salvage the readable records of a corrupt log; and metrics of
//! fsync latency.

//!
//! # Layout
//!
//! This file holds [`Wal`] and its write path; `recovery.rs` opening and recovery;
//! `report.rs` [`RecoveryReport`] and [`WalStats`]; `format.rs` the byte layout; `config.rs`
//! the limits.

pub mod config;
pub mod format;
mod recovery;
mod report;

use recovery::{read_segment, scan_segment};

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::{
    WalConfig, PREALLOCATE_BYTES_DEFAULT, RECORD_BYTES_MAX_DEFAULT, SEGMENT_BYTES_MAX_DEFAULT,
    WRITE_BUFFER_BYTES_DEFAULT,
};
use format::{encode_frame, segment_header, FrameKind, SEGMENT_HEADER_BYTES};
pub use report::{RecoveryReport, TornTail, WalFailure, WalStats};

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

/// The write-ahead log. See the [module documentation](self).
pub struct Wal {
    config: WalConfig,
    /// Holds the exclusive lock on the data directory until dropped.
    _lock: File,
    /// Segment numbers on disk, oldest first; the last is `file`.
    segments: VecDeque<u64>,
    /// The segment being written, written at explicit offsets.
    file: File,
    /// Length of the current segment's frames, the buffered ones included.
    segment_len: u64,
    /// Length of the current segment's file: past the written frames it holds zeros written
    /// ahead ([`WalConfig::preallocate_bytes`]).
    file_len: u64,
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
    /// Which kind of call set `poisoned`.
    failure: Option<WalFailure>,
    recovery: RecoveryReport,
    stats: WalStats,
    /// The snapshot files, in [`SNAPSHOT_DIR_NAME`] under the data directory (covered by its
    /// lock).
    snapshots: Arc<FileSnapshotStore>,
    /// Test hook: the next fsync of a segment fails.
    #[cfg(test)]
    fail_next_fsync: bool,
    /// Test hook: the next write to a segment fails with this error (a full disk, say).
    #[cfg(test)]
    fail_next_write: Option<io::ErrorKind>,
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
            .field("failure", &self.failure)
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

/// Maps an I/O error on `path` to the [`WalFailure`] of its `kind` and a [`StorageError`].
fn failed(
    kind: fn(io::ErrorKind) -> WalFailure,
    path: &Path,
) -> impl FnOnce(io::Error) -> (WalFailure, StorageError) + '_ {
    move |e| (kind(e.kind()), io_error(path)(e))
}

/// Zeros written at a time when a segment is preallocated.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// How far a segment whose frames end at `end` is zero-filled ahead.
fn preallocated_len(config: &WalConfig, end: u64) -> u64 {
    end.saturating_add(config.preallocate_bytes)
        .min(config.segment_bytes_max)
        .max(end)
}

/// Creates segment `seq` with its header and preallocated zeros, fsyncs it and the directory,
/// and returns it with its file length. A failure says which kind of call failed.
fn create_segment(
    config: &WalConfig,
    seq: u64,
    stats: &mut WalStats,
) -> Result<(File, u64), (WalFailure, StorageError)> {
    let dir = &config.dir;
    let path = dir.join(segment_file_name(seq));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(failed(WalFailure::Write, &path))?;
    file.write_all_at(&segment_header(seq), 0)
        .map_err(failed(WalFailure::Write, &path))?;
    let header_end = SEGMENT_HEADER_BYTES as u64;
    let file_len = preallocated_len(config, header_end);
    write_zeros(&file, header_end, file_len).map_err(failed(WalFailure::Write, &path))?;
    file.sync_data().map_err(failed(WalFailure::Fsync, &path))?;
    fsync_dir(dir).map_err(failed(WalFailure::Fsync, dir))?;
    stats.fsyncs += 2;
    stats.segments_created += 1;
    stats.bytes_written += header_end;
    stats.bytes_zero_filled += file_len - header_end;
    Ok((file, file_len))
}

impl Wal {
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

    /// Which kind of call poisoned the log, if one did: whether reopening it once space returns
    /// is sound ([`WalFailure::is_out_of_space_on_write`]) or an operator must look first.
    pub fn failure(&self) -> Option<WalFailure> {
        self.failure
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
    fn poison(&mut self, failure: WalFailure, what: String) -> StorageError {
        tracing::error!(%what, "wal: poisoned");
        self.poisoned = Some(what.clone());
        self.failure = Some(failure);
        StorageError::Poisoned(what)
    }

    fn write_buffer(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // The buffer holds the frames after the written ones, up to `segment_len`.
        let end = self.segment_len;
        let at = end - self.buf.len() as u64;
        // Once the frames pass the end of the zeros written ahead, write the next stretch.
        let zero_to = if end > self.file_len {
            preallocated_len(&self.config, end)
        } else {
            end
        };
        #[cfg(test)]
        let result = match self.fail_next_write.take() {
            Some(kind) => Err(io::Error::from(kind)),
            None => self.file.write_all_at(&self.buf, at),
        };
        #[cfg(not(test))]
        let result = self.file.write_all_at(&self.buf, at);
        let result = result.and_then(|()| write_zeros(&self.file, end, zero_to));
        if let Err(e) = result {
            let path = self.segment_path(self.current_seq());
            let failure = WalFailure::Write(e.kind());
            return Err(self.poison(failure, format!("write to {} failed: {e}", path.display())));
        }
        self.stats.bytes_written += self.buf.len() as u64;
        if zero_to > end {
            self.stats.bytes_zero_filled += zero_to - end;
        }
        self.file_len = self.file_len.max(zero_to);
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
            let failure = WalFailure::Fsync(e.kind());
            return Err(self.poison(failure, format!("fsync of {} failed: {e}", path.display())));
        }
        self.stats.fsyncs += 1;
        Ok(())
    }

    /// Closes the current segment (written out and fsynced, so no later crash can tear it) and
    /// starts the next one.
    fn roll_over(&mut self) -> Result<(), StorageError> {
        self.write_buffer()?;
        // A closed segment ends with its last frame: recovery refuses anything else in a
        // segment that is not the last one.
        if self.file_len > self.segment_len {
            if let Err(e) = self.file.set_len(self.segment_len) {
                let path = self.segment_path(self.current_seq());
                let failure = WalFailure::Write(e.kind());
                let what = format!("cutting the zeros off {} failed: {e}", path.display());
                return Err(self.poison(failure, what));
            }
            self.file_len = self.segment_len;
            self.dirty = true;
        }
        if self.dirty {
            self.fsync_segment()?;
            self.dirty = false;
        }
        let seq = self.current_seq() + 1;
        match create_segment(&self.config, seq, &mut self.stats) {
            Ok((file, file_len)) => {
                self.file = file;
                self.segments.push_back(seq);
                self.segment_len = SEGMENT_HEADER_BYTES as u64;
                self.file_len = file_len;
                Ok(())
            }
            Err((failure, e)) => {
                Err(self.poison(failure, format!("creating segment {seq} failed: {e}")))
            }
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
                let failure = WalFailure::Remove(e.kind());
                return Err(
                    self.poison(failure, format!("deleting {} failed: {e}", path.display()))
                );
            }
            self.segments.pop_front();
            deleted += 1;
        }
        if deleted > 0 {
            if let Err(e) = fsync_dir(&self.config.dir) {
                let dir = self.config.dir.display().to_string();
                let failure = WalFailure::Fsync(e.kind());
                return Err(self.poison(failure, format!("fsync of directory {dir} failed: {e}")));
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
        let current = self.current_seq();
        for seq in seqs {
            let path = self.segment_path(seq);
            let last = seq == current;
            let (mut data, _) = read_segment(&path, self.config.segment_bytes_max, last)?;
            if last {
                // The zeros written ahead are not frames.
                data.truncate(self.segment_len as usize);
            }
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
    fn a_full_disk_is_told_from_a_failed_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open(dir.path());
        wal.append(b"a").unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.failure(), None);
        wal.append(b"b").unwrap();
        wal.fail_next_write = Some(io::ErrorKind::StorageFull);
        assert!(matches!(wal.sync(), Err(StorageError::Poisoned(_))));
        let failure = wal.failure().unwrap();
        assert_eq!(failure, WalFailure::Write(io::ErrorKind::StorageFull));
        assert!(failure.is_out_of_space_on_write());
        // Still fail-stop: the full disk does not make the log retry by itself.
        assert!(matches!(wal.append(b"c"), Err(StorageError::Poisoned(_))));
        drop(wal);
        // Reopened (space returned): the synced record is there, the refused one is not, and
        // the log goes on.
        let mut wal = open(dir.path());
        assert_eq!(wal.load().unwrap(), vec![b"a".to_vec()]);
        wal.append(b"d").unwrap();
        wal.sync().unwrap();
        drop(wal);
        assert_eq!(
            open(dir.path()).load().unwrap(),
            vec![b"a".to_vec(), b"d".to_vec()]
        );

        let mut wal = open(dir.path());
        wal.append(b"e").unwrap();
        wal.fail_next_fsync = true;
        assert!(wal.sync().is_err());
        let failure = wal.failure().unwrap();
        assert!(matches!(failure, WalFailure::Fsync(_)), "{failure:?}");
        assert!(!failure.is_out_of_space_on_write());
        // A full disk reported by the fsync is still an fsync failure.
        assert!(!WalFailure::Fsync(io::ErrorKind::StorageFull).is_out_of_space_on_write());
        assert!(WalFailure::Write(io::ErrorKind::QuotaExceeded).is_out_of_space_on_write());
        assert!(!WalFailure::Write(io::ErrorKind::PermissionDenied).is_out_of_space_on_write());
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
