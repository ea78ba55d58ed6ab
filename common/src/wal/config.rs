//! Configuration of the write-ahead log.

use std::path::PathBuf;

use super::format::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::storage::{StorageError, RECORD_BYTES_MAX};

/// Default for [`WalConfig::segment_bytes_max`]: 64 MiB.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default for [`WalConfig::record_bytes_max`]: the workspace-wide [`RECORD_BYTES_MAX`] (16 MiB).
pub const RECORD_BYTES_MAX_DEFAULT: usize = RECORD_BYTES_MAX;
/// Default for [`WalConfig::write_buffer_bytes`]: 1 MiB.
pub const WRITE_BUFFER_BYTES_DEFAULT: usize = 1024 * 1024;
/// Default for [`WalConfig::preallocate_bytes`]: 1 MiB.
pub const PREALLOCATE_BYTES_DEFAULT: u64 = 1024 * 1024;

/// Configuration of a [`Wal`](super::Wal). Plain data: build it with [`WalConfig::new`], adjust
/// fields, and [`Wal::open`](super::Wal::open) checks it with [`WalConfig::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// The data directory: segment files and the lock file live here. Created if missing.
    pub dir: PathBuf,
    /// A segment is closed and a new one started before it would grow past this many bytes.
    /// Also bounds how much of a file a reader loads at once. Must hold the largest record.
    pub segment_bytes_max: u64,
    /// Largest record accepted by `append`, and largest frame length believed when reading.
    pub record_bytes_max: usize,
    /// Appended frames are kept in memory and written to the file when this many bytes are
    /// pending, or at `sync`. Larger buffers make `append` cheaper; they do not change what is
    /// durable (only `sync` does that).
    pub write_buffer_bytes: usize,
    /// The segment being written is kept this many bytes longer than its frames, the excess
    /// written as zeros, so that most `fdatasync`s overwrite blocks the file already has and
    /// need not commit a new file size (or convert unwritten extents) through the file system's
    /// journal. On ext4 on the project's 2-core test machine, the `wal_preallocate` benchmark
    /// (`cargo bench -p benches --bench wal -- wal_preallocate`) measured one record appended
    /// and synced in 105 µs this way against 180 µs without. `fallocate` alone does not do it:
    /// writing into an allocated but unwritten extent is itself a metadata change. The zeros are written (not synced) when
    /// the frames reach the end of what was zeroed; the next sync carries them, so one sync per
    /// this many bytes pays for them. Never beyond [`WalConfig::segment_bytes_max`]; a segment
    /// is cut back to its frames when it is closed. 0 turns it off: the file then grows with
    /// every write.
    pub preallocate_bytes: u64,
}

impl WalConfig {
    /// A configuration for `dir` with default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            write_buffer_bytes: WRITE_BUFFER_BYTES_DEFAULT,
            preallocate_bytes: PREALLOCATE_BYTES_DEFAULT,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.dir.as_os_str().is_empty() {
            return Err(StorageError::Config("dir must not be empty".into()));
        }
        if self.record_bytes_max == 0 {
            return Err(StorageError::Config(
                "record_bytes_max must be at least 1".into(),
            ));
        }
        if self.record_bytes_max > u32::MAX as usize {
            return Err(StorageError::Config(format!(
                "record_bytes_max {} exceeds the frame format's limit of {} bytes",
                self.record_bytes_max,
                u32::MAX
            )));
        }
        let smallest = (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + self.record_bytes_max) as u64;
        if self.segment_bytes_max < smallest {
            return Err(StorageError::Config(format!(
                "segment_bytes_max {} cannot hold a record of record_bytes_max {} bytes \
                 (needs at least {smallest})",
                self.segment_bytes_max, self.record_bytes_max
            )));
        }
        if usize::try_from(self.segment_bytes_max).is_err() {
            return Err(StorageError::Config(format!(
                "segment_bytes_max {} does not fit in memory on this platform",
                self.segment_bytes_max
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_limits_are_explained() {
        let c = WalConfig::new("/tmp/x");
        c.validate().unwrap();
        let mut bad = c.clone();
        bad.segment_bytes_max = 100;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("segment_bytes_max"), "{err}");
        let mut bad = c.clone();
        bad.record_bytes_max = 0;
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.dir = PathBuf::new();
        assert!(bad.validate().is_err());
    }
}
