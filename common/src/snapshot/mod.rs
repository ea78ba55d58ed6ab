//! Snapshots of any size: written, stored, sent and installed as streams, never as one record,
//! one frame or one buffer.
//!
//! A replicated state machine's snapshot can be far larger than a log record (16 MiB) or a
//! network frame. So a snapshot lives in a [`SnapshotStore`] beside the log, as its own file:
//!
//! - **Writing.** [`SnapshotWriter`] (from [`SnapshotWriter::create`]) is an [`std::io::Write`]
//!   the state machine streams its state into. [`SnapshotWriter::finish`] makes the file durable
//!   and visible atomically (the file store writes a temporary file, fsyncs it, renames it and
//!   fsyncs the directory) and returns a [`SnapshotFile`]: the snapshot's id in the store, its
//!   length and its CRC32C. A crash before `finish` leaves nothing but a temporary file, which the
//!   store deletes when it opens.
//! - **Naming.** The core's checkpoint record holds the [`SnapshotFile`], not the bytes. A
//!   checkpoint is therefore small however large the state, and recovery opens the file it names.
//! - **Reading.** [`SnapshotReader`] streams a stored snapshot back, checking its length and
//!   CRC32C: a torn or corrupted file is an [`std::io::ErrorKind::InvalidData`] error carrying a
//!   [`SnapshotError::Corrupt`], never a wrong state.
//! - **Sending.** The sender reads chunks at offsets ([`SnapshotSource::read_at`]); the chunk size
//!   and how many chunks may be in flight are the core's configuration.
//! - **Receiving.** [`IncomingSnapshot`] accepts chunks in order into a new, unfinished file in
//!   the receiver's store, checks the total length and CRC32C announced by the sender, and only
//!   then finishes the file. A wrong chunk is a typed error; a half-received snapshot is never
//!   visible, let alone installed.
//! - **Deleting.** A snapshot file may go once a *durable* checkpoint names a newer one; the
//!   cores learn durability through [`crate::Node::checkpoints_durable`] and delete what no
//!   checkpoint needs. At recovery they delete every file but the one the checkpoint names
//!   (orphans of a crash between `finish` and the checkpoint's sync).
//!
//! Two stores exist: [`FileSnapshotStore`], a directory beside the write-ahead log (the WAL
//! exposes it through [`crate::Storage::snapshots`]), and [`MemSnapshotStore`] for tests, the
//! simulator and in-memory benchmarks. A user's own store (an object store, say) implements the
//! three small traits [`SnapshotStore`], [`SnapshotSink`] and [`SnapshotSource`], and runs the
//! conformance suite in `common::testing` (feature `testing`).
//!
//! # Layout
//!
//! This file holds the ids, the errors and the store traits; `stream.rs` the
//! [`SnapshotWriter`] and [`SnapshotReader`]; `incoming.rs` [`IncomingSnapshot`]; `mem.rs`
//! [`MemSnapshotStore`]; `file.rs` [`FileSnapshotStore`]; `retention.rs` [`SnapshotRetention`].

#[cfg(feature = "wal")]
mod file;
mod incoming;
mod mem;
mod retention;
mod stream;

use std::fmt::Debug;
use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[cfg(feature = "wal")]
#[cfg_attr(docsrs, doc(cfg(feature = "wal")))]
pub use file::FileSnapshotStore;
pub use incoming::{IncomingSnapshot, Received, SnapshotDigest};
pub use mem::MemSnapshotStore;
pub use retention::SnapshotRetention;
pub use stream::{SnapshotReader, SnapshotWriter};

/// A finished snapshot's id within its store. Ids are allocated in increasing order, so a larger
/// id is a more recently created snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SnapshotId(pub u64);

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "snapshot {}", self.0)
    }
}

/// A finished, durable snapshot: what a checkpoint record names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Where it is in the store.
    pub id: SnapshotId,
    /// Its length in bytes.
    pub bytes: u64,
    /// CRC32C of its bytes.
    pub crc32c: u32,
}

/// Why a snapshot could not be written, read, received or installed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The operating system reported an error.
    #[error("snapshot I/O error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The store holds no finished snapshot with this id.
    #[error("{0} is not in the store")]
    NotFound(SnapshotId),
    /// A stored or received snapshot does not match its description (length or checksum).
    #[error("{what} is corrupt: {reason}")]
    Corrupt {
        /// Which snapshot.
        what: String,
        /// What does not match.
        reason: String,
    },
    /// A received chunk does not continue the snapshot where it stands.
    #[error("snapshot chunk at offset {offset} out of order: expected offset {expected}")]
    OutOfOrder {
        /// Where the next chunk must start.
        expected: u64,
        /// Where the chunk started.
        offset: u64,
    },
    /// A snapshot is larger than the configured maximum.
    #[error("snapshot of {bytes} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Its announced or written length.
        bytes: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The state machine failed to write or read its snapshot.
    #[error("state machine: {0}")]
    StateMachine(#[from] crate::state_machine::StateMachineError),
}

impl From<SnapshotError> for io::Error {
    fn from(e: SnapshotError) -> io::Error {
        match e {
            SnapshotError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Where a node keeps its snapshot files. Shared between the node's core (which writes, reads
/// and deletes snapshots) and its storage (which hands it out), hence `&self` and `Sync`.
pub trait SnapshotStore: Send + Sync + 'static {
    /// Starts a new, unfinished snapshot under a fresh id, larger than every id handed out
    /// before by this store.
    fn create(&self) -> Result<Box<dyn SnapshotSink>, SnapshotError>;
    /// Opens a finished snapshot for reading.
    fn open(&self, id: SnapshotId) -> Result<Arc<dyn SnapshotSource>, SnapshotError>;
    /// The ids of every finished snapshot, oldest first.
    fn list(&self) -> Result<Vec<SnapshotId>, SnapshotError>;
    /// Deletes a finished snapshot. Readers opened before keep reading it. Deleting an id that
    /// is not there is not an error.
    fn remove(&self, id: SnapshotId) -> Result<(), SnapshotError>;
}

impl Debug for dyn SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotStore")
    }
}

/// An unfinished snapshot being written.
pub trait SnapshotSink: Send {
    /// The id it will have once finished.
    fn id(&self) -> SnapshotId;
    /// Appends bytes.
    fn write_all(&mut self, data: &[u8]) -> Result<(), SnapshotError>;
    /// Makes the snapshot durable and visible under its id, atomically: after a crash it is
    /// either wholly there or not at all. Dropping a sink without finishing it discards it.
    fn finish(self: Box<Self>) -> Result<SnapshotId, SnapshotError>;
}

/// A finished snapshot, read at offsets.
pub trait SnapshotSource: Send + Sync {
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads up to `buf.len()` bytes at `offset`; 0 at or past the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, SnapshotError>;
}

#[cfg(test)]
mod tests {
    use super::file::{snapshot_path, PARTIAL_SUFFIX};
    use super::*;
    use std::fs;
    use std::io::{Read, Write};

    fn write(store: &dyn SnapshotStore, data: &[u8]) -> SnapshotFile {
        let mut w = SnapshotWriter::create(store, u64::MAX).unwrap();
        for chunk in data.chunks(7) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    fn read(store: &dyn SnapshotStore, file: SnapshotFile) -> io::Result<Vec<u8>> {
        let mut r = SnapshotReader::open(store, file).map_err(io::Error::from)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    fn roundtrip(store: &dyn SnapshotStore) {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let file = write(store, &data);
        assert_eq!(file.bytes, data.len() as u64);
        assert_eq!(read(store, file).unwrap(), data);
        assert_eq!(store.list().unwrap(), vec![file.id]);
        store.remove(file.id).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(
            SnapshotReader::open(store, file),
            Err(SnapshotError::NotFound(_))
        ));
    }

    #[test]
    fn mem_store_roundtrips() {
        roundtrip(&MemSnapshotStore::new());
    }

    #[test]
    fn file_store_roundtrips_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSnapshotStore::open(dir.path().join("snaps")).unwrap();
        roundtrip(&store);
        let kept = write(&store, b"kept");
        // An unfinished snapshot left by a crash: dropped sinks delete their file, so leave one
        // by hand.
        fs::write(snapshot_path(store.dir(), 99, PARTIAL_SUFFIX), b"torn").unwrap();
        drop(store);
        let store = FileSnapshotStore::open(dir.path().join("snaps")).unwrap();
        assert_eq!(store.list().unwrap(), vec![kept.id]);
        assert_eq!(read(&store, kept).unwrap(), b"kept");
        assert!(!snapshot_path(store.dir(), 99, PARTIAL_SUFFIX).exists());
        // Ids keep growing past everything seen on disk.
        assert!(write(&store, b"next").id > SnapshotId(99));
    }

    #[test]
    fn unfinished_snapshot_is_invisible() {
        let store = MemSnapshotStore::new();
        let mut w = SnapshotWriter::create(&store, u64::MAX).unwrap();
        w.write_all(b"half").unwrap();
        drop(w);
        assert!(store.list().unwrap().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let files = FileSnapshotStore::open(dir.path()).unwrap();
        let mut w = SnapshotWriter::create(&files, u64::MAX).unwrap();
        w.write_all(b"half").unwrap();
        drop(w);
        assert!(files.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn corruption_and_truncation_are_typed_errors() {
        let store = MemSnapshotStore::new();
        let file = write(&store, b"0123456789");
        assert!(store.corrupt(file.id, 3, 0x10));
        let err = read(&store, file).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let inner = err
            .into_inner()
            .unwrap()
            .downcast::<SnapshotError>()
            .unwrap();
        assert!(matches!(*inner, SnapshotError::Corrupt { .. }));
        // A description with another length is refused on open.
        let short = SnapshotFile { bytes: 5, ..file };
        assert!(matches!(
            SnapshotReader::open(&store, short),
            Err(SnapshotError::Corrupt { .. })
        ));
    }

    #[test]
    fn writer_refuses_past_its_limit() {
        let store = MemSnapshotStore::new();
        let mut w = SnapshotWriter::create(&store, 4).unwrap();
        w.append(b"abcd").unwrap();
        assert!(matches!(
            w.append(b"e"),
            Err(SnapshotError::TooLarge { bytes: 5, max: 4 })
        ));
    }

    #[test]
    fn incoming_accepts_in_order_and_checks_the_digest() {
        let src = MemSnapshotStore::new();
        let data = vec![7u8; 100];
        let file = write(&src, &data);
        let dst = MemSnapshotStore::new();
        let mut inc = IncomingSnapshot::start(&dst, file.into(), 1000).unwrap();
        // A chunk from the future is out of order, and changes nothing.
        assert!(matches!(
            inc.accept(10, &data[10..20]),
            Err(SnapshotError::OutOfOrder {
                expected: 0,
                offset: 10
            })
        ));
        let mut offset = 0;
        while !inc.is_complete() {
            let end = (offset + 30).min(100);
            let next = inc
                .accept(offset, &data[offset as usize..end as usize])
                .unwrap();
            // A duplicate of the same chunk changes nothing.
            let again = inc
                .accept(offset, &data[offset as usize..end as usize])
                .unwrap();
            assert_eq!(next, again);
            offset = next;
        }
        let done = inc.finish().unwrap();
        assert_eq!(done.bytes, 100);
        assert_eq!(done.crc32c, file.crc32c);
        assert_eq!(read(&dst, done).unwrap(), data);

        // Same length, other bytes: refused at the end, and nothing becomes visible.
        let dst = MemSnapshotStore::new();
        let mut inc = IncomingSnapshot::start(&dst, file.into(), 1000).unwrap();
        inc.accept(0, &[8u8; 100]).unwrap();
        assert!(matches!(inc.finish(), Err(SnapshotError::Corrupt { .. })));
        assert!(dst.list().unwrap().is_empty());
        // Announced larger than allowed: refused before anything is written.
        assert!(matches!(
            IncomingSnapshot::start(&dst, file.into(), 99),
            Err(SnapshotError::TooLarge { .. })
        ));
    }

    #[test]
    fn retention_deletes_only_what_no_durable_checkpoint_needs() {
        let store = MemSnapshotStore::new();
        let a = write(&store, b"a").id;
        let orphan = write(&store, b"orphan").id;
        let mut r = SnapshotRetention::recovered(&store, Some(a));
        assert_eq!(store.list().unwrap(), vec![a]);
        let b = write(&store, b"b").id;
        r.checkpointed(Some(b));
        let c = write(&store, b"c").id;
        r.checkpointed(Some(c));
        // Nothing durable yet: a crash would recover from `a`.
        assert_eq!(store.list().unwrap(), vec![a, b, c]);
        r.durable(&store, 1);
        assert_eq!(store.list().unwrap(), vec![b, c]);
        r.durable(&store, 2);
        assert_eq!(store.list().unwrap(), vec![c]);
        // A checkpoint naming the same snapshot again keeps it.
        r.checkpointed(Some(c));
        r.durable(&store, 3);
        assert_eq!(store.list().unwrap(), vec![c]);
        // Two checkpoints durable at once: both older snapshots go.
        let d = write(&store, b"d").id;
        r.checkpointed(Some(d));
        let e = write(&store, b"e").id;
        r.checkpointed(Some(e));
        r.durable(&store, 5);
        assert_eq!(store.list().unwrap(), vec![e]);
        assert!(!store.list().unwrap().contains(&orphan));
    }
}
