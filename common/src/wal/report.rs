//! What a [`Wal`](super::Wal) reports: the [`RecoveryReport`] of its opening (with the
//! [`TornTail`] it truncated, if any), its running [`WalStats`], and the [`WalFailure`] that
//! poisoned it, if one did.

use std::io;
use std::path::PathBuf;

#[cfg(doc)]
use super::{Wal, WalConfig};

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
    /// Zeros after the last frame of the last segment, kept for the appends that follow:
    /// space the log wrote ahead ([`WalConfig::preallocate_bytes`]), or that a crash left when
    /// the file's new length reached the disk before its data. Zeros are not a torn tail: no
    /// frame is all zeros.
    pub preallocated_bytes: u64,
    /// The torn tail, if one was truncated.
    pub torn: Option<TornTail>,
    /// Segments before the latest checkpoint deleted by recovery (a compaction a crash
    /// interrupted).
    pub segments_deleted: usize,
}

/// Which kind of call poisoned a [`Wal`] ([`Wal::failure`]), with the operating system's error
/// kind. The log refuses all work after any of them; what differs is what reopening it can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalFailure {
    /// Writing frames to a segment, or creating a segment (its file and header), failed: the
    /// kernel refused those bytes, and whatever it accepted before is intact in the page cache.
    /// Reopening the log truncates the torn tail the refused write left.
    Write(io::ErrorKind),
    /// An fsync of a segment or of the directory failed. The kernel may have dropped the dirty
    /// pages and cleared the error ("fsyncgate"), so what the files read back as may not be what
    /// is on the device: only an operator can judge it.
    Fsync(io::ErrorKind),
    /// Deleting a segment that a durable checkpoint made obsolete failed.
    Remove(io::ErrorKind),
}

impl WalFailure {
    /// Whether a write was refused because the file system is full (`ENOSPC`) or the quota is
    /// spent (`EDQUOT`): the one failure that reopening the log cures once space returns.
    pub fn is_out_of_space_on_write(&self) -> bool {
        matches!(
            self,
            WalFailure::Write(io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        )
    }
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
    /// Zeros written ahead of the frames ([`WalConfig::preallocate_bytes`]).
    pub bytes_zero_filled: u64,
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
