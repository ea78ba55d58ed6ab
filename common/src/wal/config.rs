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
}

impl WalConfig {
    /// A configuration for `dir` with default limits.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            write_buffer_bytes: WRITE_BUFFER_BYTES_DEFAULT,
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
