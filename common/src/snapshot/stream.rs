//! Streaming a snapshot into a store ([`SnapshotWriter`]) and back out of it
//! ([`SnapshotReader`]), with its length and CRC32C checked.

use std::io::{self, Read, Write};
use std::sync::Arc;

use super::{SnapshotError, SnapshotFile, SnapshotSink, SnapshotSource, SnapshotStore};

/// Writes a new snapshot into a store, counting its length and CRC32C as it goes: the
/// [`std::io::Write`] a state machine streams its state into.
pub struct SnapshotWriter {
    sink: Box<dyn SnapshotSink>,
    bytes: u64,
    pub(super) crc32c: u32,
    bytes_max: u64,
}

impl SnapshotWriter {
    /// Starts a new snapshot in `store`, refusing to grow past `bytes_max` bytes.
    pub fn create(store: &dyn SnapshotStore, bytes_max: u64) -> Result<Self, SnapshotError> {
        Ok(Self {
            sink: store.create()?,
            bytes: 0,
            crc32c: 0,
            bytes_max,
        })
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends bytes (the typed form of [`Write::write_all`]).
    pub fn append(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        let bytes = self.bytes + data.len() as u64;
        if bytes > self.bytes_max {
            return Err(SnapshotError::TooLarge {
                bytes,
                max: self.bytes_max,
            });
        }
        self.sink.write_all(data)?;
        self.crc32c = crc32c::crc32c_append(self.crc32c, data);
        self.bytes = bytes;
        Ok(())
    }

    /// Makes the snapshot durable and visible; see [`SnapshotSink::finish`].
    pub fn finish(self) -> Result<SnapshotFile, SnapshotError> {
        let (bytes, crc32c) = (self.bytes, self.crc32c);
        let id = self.sink.finish()?;
        Ok(SnapshotFile { id, bytes, crc32c })
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams a stored snapshot back, verifying it against its [`SnapshotFile`]: reading past the
/// last byte checks the CRC32C, and a mismatch (or a file of the wrong length) is an
/// [`io::ErrorKind::InvalidData`] error whose inner error is a [`SnapshotError::Corrupt`].
pub struct SnapshotReader {
    source: Arc<dyn SnapshotSource>,
    file: SnapshotFile,
    offset: u64,
    pub(super) crc32c: u32,
}

impl SnapshotReader {
    /// Opens `file` in `store`. A length that differs from the file's description is refused
    /// here already.
    pub fn open(store: &dyn SnapshotStore, file: SnapshotFile) -> Result<Self, SnapshotError> {
        let source = store.open(file.id)?;
        Self::new(source, file)
    }

    /// Reads `file` from an already opened source.
    pub fn new(source: Arc<dyn SnapshotSource>, file: SnapshotFile) -> Result<Self, SnapshotError> {
        if source.len() != file.bytes {
            return Err(SnapshotError::Corrupt {
                what: file.id.to_string(),
                reason: format!("{} bytes stored, {} expected", source.len(), file.bytes),
            });
        }
        Ok(Self {
            source,
            file,
            offset: 0,
            crc32c: 0,
        })
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.source.read_at(self.offset, buf)?;
        if n == 0 {
            if self.offset != self.file.bytes || self.crc32c != self.file.crc32c {
                return Err(SnapshotError::Corrupt {
                    what: self.file.id.to_string(),
                    reason: format!(
                        "read {} bytes with CRC32C {:#010x}, expected {} bytes with {:#010x}",
                        self.offset, self.crc32c, self.file.bytes, self.file.crc32c
                    ),
                }
                .into());
            }
            return Ok(0);
        }
        self.crc32c = crc32c::crc32c_append(self.crc32c, &buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}
