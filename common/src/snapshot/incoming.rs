//! Receiving a snapshot chunk by chunk: [`IncomingSnapshot`] and the sender's
//! [`SnapshotDigest`] it is checked against.

use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use super::stream::SnapshotWriter;
use super::{SnapshotError, SnapshotFile, SnapshotStore};

/// What the sender announces about a snapshot it streams: the receiver checks the bytes against
/// it before the snapshot becomes visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDigest {
    /// Total length in bytes.
    pub bytes: u64,
    /// CRC32C of all the bytes.
    pub crc32c: u32,
}

impl From<SnapshotFile> for SnapshotDigest {
    fn from(f: SnapshotFile) -> Self {
        Self {
            bytes: f.bytes,
            crc32c: f.crc32c,
        }
    }
}

/// Where a chunk left an [`IncomingSnapshot`].
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// More chunks are needed, starting at this offset.
    Partial(u64),
    /// Every byte arrived and matched the digest; the snapshot is durable in the store.
    Complete(SnapshotFile),
}

/// A snapshot being received chunk by chunk into the receiver's store.
///
/// Chunks must arrive in order; one at another offset is refused with
/// [`SnapshotError::OutOfOrder`] (the receiver answers with the offset it needs, and the sender
/// resumes there). The last byte checks the announced length and CRC32C; only a snapshot that
/// matches is finished. Dropping an incoming snapshot discards what arrived.
pub struct IncomingSnapshot {
    writer: SnapshotWriter,
    digest: SnapshotDigest,
}

impl Debug for IncomingSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingSnapshot")
            .field("digest", &self.digest)
            .field("received", &self.writer.bytes())
            .finish()
    }
}

impl IncomingSnapshot {
    /// Starts receiving a snapshot described by `digest` into `store`. A snapshot announced
    /// larger than `bytes_max` is refused before anything is written.
    pub fn start(
        store: &dyn SnapshotStore,
        digest: SnapshotDigest,
        bytes_max: u64,
    ) -> Result<Self, SnapshotError> {
        if digest.bytes > bytes_max {
            return Err(SnapshotError::TooLarge {
                bytes: digest.bytes,
                max: bytes_max,
            });
        }
        Ok(Self {
            writer: SnapshotWriter::create(store, digest.bytes)?,
            digest,
        })
    }

    /// The digest this snapshot must match.
    pub fn digest(&self) -> SnapshotDigest {
        self.digest
    }

    /// Bytes received so far: the offset the next chunk must start at.
    pub fn received(&self) -> u64 {
        self.writer.bytes()
    }

    /// Accepts the chunk `data` at `offset` and returns the offset the next chunk must start at.
    /// The part of a chunk already received is ignored (a duplicate changes nothing); a chunk
    /// past the current offset is out of order and changes nothing either. Any other error
    /// (a chunk past the announced length, a failed write) leaves the snapshot unusable: drop it.
    pub fn accept(&mut self, offset: u64, data: &[u8]) -> Result<u64, SnapshotError> {
        let at = self.writer.bytes();
        if offset > at {
            return Err(SnapshotError::OutOfOrder {
                expected: at,
                offset,
            });
        }
        let end = offset + data.len() as u64;
        if end > self.digest.bytes {
            return Err(SnapshotError::Corrupt {
                what: "received snapshot".into(),
                reason: format!(
                    "chunk ends at {end}, past the announced {} bytes",
                    self.digest.bytes
                ),
            });
        }
        if end > at {
            self.writer.append(&data[(at - offset) as usize..])?;
        }
        Ok(self.writer.bytes())
    }

    /// Whether every byte arrived.
    pub fn is_complete(&self) -> bool {
        self.writer.bytes() == self.digest.bytes
    }

    /// Checks the received bytes against the digest and finishes the file. On a mismatch the
    /// file is discarded and the error says why.
    pub fn finish(self) -> Result<SnapshotFile, SnapshotError> {
        if !self.is_complete() || self.writer.crc32c != self.digest.crc32c {
            return Err(SnapshotError::Corrupt {
                what: "received snapshot".into(),
                reason: format!(
                    "{} bytes with CRC32C {:#010x} received, {} bytes with {:#010x} announced",
                    self.writer.bytes(),
                    self.writer.crc32c,
                    self.digest.bytes,
                    self.digest.crc32c
                ),
            });
        }
        self.writer.finish()
    }
}
