//! The storage trait through which a driver persists a core's records.
//!
//! Storage holds opaque, already-encoded records (the driver encodes [`crate::Node::Record`]s with
//! the workspace [`Codec`](crate::codec::Codec)). Two implementations exist: [`MemStorage`] here,
//! for tests and benchmarks, and the durable, segmented write-ahead log in [`crate::wal`].
//!
//! # Contract
//!
//! - [`Storage::append`] and [`Storage::append_checkpoint`] add a record after all earlier ones.
//!   Nothing is durable until [`Storage::sync`] returns `Ok`; then everything appended before the
//!   call is. A driver appends the records of many steps and syncs once (group commit).
//! - [`Storage::load`] returns what recovery needs, oldest first: the latest durable checkpoint
//!   (if any) followed by every record appended after it.
//! - After a crash, every synced record survives; an unsynced suffix may be lost, but never a
//!   record in the middle.
//! - A checkpoint supersedes the records before it only once it is synced. A crash before that
//!   sync may lose the checkpoint (it is part of the unsynced suffix), and then the records it was
//!   meant to replace are still there.
//! - A record longer than the implementation's maximum is refused with
//!   [`StorageError::RecordTooLarge`] and nothing is appended.
//!
//! - [`Storage::snapshots`] is the store of the node's snapshot files ([`crate::snapshot`]), which
//!   live beside the log: what a checkpoint record names is found there after a restart.
//!
//! The conformance suite in `common/tests/storage_conformance.rs` checks every implementation
//! against this contract.

use std::sync::Arc;

use crate::snapshot::{MemSnapshotStore, SnapshotStore};

/// The largest record storage accepts by default (16 MiB).
pub const RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system reported an error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A record before the tail of the log fails its checksum or framing: the log is damaged and
    /// recovery refuses to guess.
    #[error("corrupt log: {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        file: String,
        /// Byte offset of the bad record in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record is larger than the configured maximum.
    #[error("record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// The record's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Another process holds the data directory.
    #[error("data directory {path} is locked by another process")]
    Locked {
        /// The data directory.
        path: String,
    },
    /// The storage's configuration is invalid.
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// A previous failure left the storage unusable (for instance a failed fsync, after which the
    /// state of the file is unknown); it must be reopened.
    #[error("storage is poisoned after an earlier failure: {0}")]
    Poisoned(String),
}

/// Durable (or, for tests, in-memory) storage of a node's records. See the module documentation.
pub trait Storage: Send + 'static {
    /// Appends `record`. Not durable until [`Storage::sync`].
    fn append(&mut self, record: &[u8]) -> Result<(), StorageError>;

    /// Appends `record` as a checkpoint: once durable, the records before it are not needed for
    /// recovery any more and may be deleted.
    fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError>;

    /// Makes every record appended so far durable.
    fn sync(&mut self) -> Result<(), StorageError>;

    /// The records recovery needs: the latest checkpoint (if any) and all records after it, in
    /// order, including records appended but not yet synced by this instance.
    fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError>;

    /// The store of this node's snapshot files. Finished snapshots in it are as durable as
    /// synced records: they survive every crash the records survive.
    fn snapshots(&self) -> Arc<dyn SnapshotStore>;
}

/// Storage in memory. `sync` is free; nothing survives the process. Used by tests, the simulator
/// and in-memory benchmarks.
///
/// It follows the same contract as the durable log, crashes included: [`MemStorage::crash`]
/// drops exactly the unsynced suffix, and a checkpoint only lets older records go once it is
/// synced (so a crash before that sync still finds the records the checkpoint was meant to
/// replace).
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    /// Records since (and including) the latest *synced* checkpoint, oldest first, each with
    /// whether it is a checkpoint.
    records: Vec<(bool, Vec<u8>)>,
    /// How many leading entries of `records` are synced.
    synced: usize,
    /// Index in `records` of the latest checkpoint, synced or not: where [`Storage::load`] starts.
    checkpoint: Option<usize>,
    /// Counts for reports.
    stats: MemStorageStats,
    /// Largest record accepted; 0 (from `Default`) means [`RECORD_BYTES_MAX`].
    record_bytes_max: usize,
    /// Snapshot files, shared by clones (a clone is the same disk).
    snapshots: MemSnapshotStore,
}

/// Counters kept by [`MemStorage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStorageStats {
    /// Records appended.
    pub appends: u64,
    /// Calls to `sync`.
    pub syncs: u64,
    /// Bytes appended.
    pub bytes: u64,
}

impl MemStorage {
    /// Empty storage accepting records up to [`RECORD_BYTES_MAX`].
    pub fn new() -> Self {
        Self::with_record_bytes_max(RECORD_BYTES_MAX)
    }

    /// Empty storage accepting records up to `record_bytes_max` bytes.
    pub fn with_record_bytes_max(record_bytes_max: usize) -> Self {
        Self {
            record_bytes_max,
            ..Self::default()
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> MemStorageStats {
        self.stats
    }

    /// Simulates a crash: the unsynced tail is dropped, unsynced checkpoints included. (The
    /// simulator uses its own, seeded model of partially torn tails.)
    pub fn crash(&mut self) {
        self.records.truncate(self.synced);
        self.checkpoint = self.records.iter().rposition(|(ck, _)| *ck);
    }

    /// Number of records [`Storage::load`] would return: the latest checkpoint (if any) and the
    /// records after it, synced or not.
    pub fn len(&self) -> usize {
        self.records.len() - self.checkpoint.unwrap_or(0)
    }

    /// Whether [`Storage::load`] would return nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_len(&self, record: &[u8]) -> Result<(), StorageError> {
        let max = if self.record_bytes_max == 0 {
            RECORD_BYTES_MAX
        } else {
            self.record_bytes_max
        };
        if record.len() > max {
            return Err(StorageError::RecordTooLarge {
                len: record.len(),
                max,
            });
        }
        Ok(())
    }

    fn push(&mut self, checkpoint: bool, record: &[u8]) -> Result<(), StorageError> {
        self.check_len(record)?;
        if checkpoint {
            self.checkpoint = Some(self.records.len());
        }
        self.records.push((checkpoint, record.to_vec()));
        self.stats.appends += 1;
        self.stats.bytes += record.len() as u64;
        Ok(())
    }
}

impl Storage for MemStorage {
    fn append(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.push(false, record)
    }

    fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.push(true, record)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.synced = self.records.len();
        // The latest checkpoint is durable now: what came before it is no longer needed.
        if let Some(at) = self.checkpoint {
            self.records.drain(..at);
            self.synced -= at;
            self.checkpoint = Some(0);
        }
        self.stats.syncs += 1;
        Ok(())
    }

    fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError> {
        let from = self.checkpoint.unwrap_or(0);
        Ok(self.records[from..]
            .iter()
            .map(|(_, r)| r.clone())
            .collect())
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        Arc::new(self.snapshots.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_supersedes_and_crash_drops_unsynced() {
        let mut s = MemStorage::new();
        s.append(b"a").unwrap();
        s.append(b"b").unwrap();
        s.sync().unwrap();
        s.append(b"c").unwrap();
        assert_eq!(
            s.load().unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        s.crash();
        assert_eq!(s.load().unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        s.append_checkpoint(b"ck").unwrap();
        s.append(b"d").unwrap();
        s.sync().unwrap();
        assert_eq!(s.load().unwrap(), vec![b"ck".to_vec(), b"d".to_vec()]);
        assert_eq!(s.stats().syncs, 2);
    }

    #[test]
    fn crash_before_checkpoint_is_synced_keeps_its_predecessors() {
        let mut s = MemStorage::new();
        s.append(b"a").unwrap();
        s.sync().unwrap();
        s.append_checkpoint(b"ck").unwrap();
        assert_eq!(s.load().unwrap(), vec![b"ck".to_vec()]);
        s.crash();
        assert_eq!(s.load().unwrap(), vec![b"a".to_vec()]);
    }

    #[test]
    fn oversize_record_is_refused() {
        let mut s = MemStorage::new();
        let big = vec![0u8; RECORD_BYTES_MAX + 1];
        assert!(matches!(
            s.append(&big),
            Err(StorageError::RecordTooLarge { .. })
        ));
        assert!(s.is_empty());
    }
}
