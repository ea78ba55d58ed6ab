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
}

/// Storage in memory. `sync` is free; nothing survives the process. Used by tests, the simulator
/// and in-memory benchmarks.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    /// Records since (and including) the latest checkpoint.
    records: Vec<Vec<u8>>,
    /// How many leading records of `records` are synced.
    synced: usize,
    /// Counts for reports.
    stats: MemStorageStats,
    /// Largest record accepted.
    record_bytes_max: usize,
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
        Self {
            record_bytes_max: RECORD_BYTES_MAX,
            ..Self::default()
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> MemStorageStats {
        self.stats
    }

    /// Simulates a crash: the unsynced tail is dropped. (The simulator uses its own, seeded model
    /// of partially torn tails.)
    pub fn crash(&mut self) {
        self.records.truncate(self.synced);
    }

    /// Number of records since the latest checkpoint, synced or not.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
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
}

impl Storage for MemStorage {
    fn append(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.check_len(record)?;
        self.records.push(record.to_vec());
        self.stats.appends += 1;
        self.stats.bytes += record.len() as u64;
        Ok(())
    }

    fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.check_len(record)?;
        // Simplification: in memory the checkpoint replaces older records at once. A crash before
        // the next sync could then lose the checkpoint *and* its predecessors; MemStorage is only
        // used where crashes are modelled elsewhere (the simulator) or not at all.
        self.records.clear();
        self.synced = 0;
        self.records.push(record.to_vec());
        self.stats.appends += 1;
        self.stats.bytes += record.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.synced = self.records.len();
        self.stats.syncs += 1;
        Ok(())
    }

    fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError> {
        Ok(self.records.clone())
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
