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

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

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

impl SnapshotError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
        move |source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        }
    }
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

/// Writes a new snapshot into a store, counting its length and CRC32C as it goes: the
/// [`std::io::Write`] a state machine streams its state into.
pub struct SnapshotWriter {
    sink: Box<dyn SnapshotSink>,
    bytes: u64,
    crc32c: u32,
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
    crc32c: u32,
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

/// Snapshots held in memory: `finish` is instant, nothing survives the process. Clones share the
/// same snapshots, so a simulated node that restarts finds the snapshots it finished before
/// (finished snapshots are durable; unfinished ones vanish with their sink).
#[derive(Clone, Debug, Default)]
pub struct MemSnapshotStore {
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Debug, Default)]
struct MemInner {
    next_id: u64,
    finished: BTreeMap<SnapshotId, Arc<MemSource>>,
}

#[derive(Debug)]
struct MemSource(Vec<u8>);

impl SnapshotSource for MemSource {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, SnapshotError> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

struct MemSink {
    id: SnapshotId,
    data: Vec<u8>,
    store: Arc<Mutex<MemInner>>,
}

impl SnapshotSink for MemSink {
    fn id(&self) -> SnapshotId {
        self.id
    }

    fn write_all(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        self.data.extend_from_slice(data);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<SnapshotId, SnapshotError> {
        let mut inner = lock(&self.store);
        inner
            .finished
            .insert(self.id, Arc::new(MemSource(self.data)));
        Ok(self.id)
    }
}

/// A poisoned lock only means another thread panicked while holding it; the map it guards is
/// still consistent (every update is a single insert or remove).
fn lock(m: &Mutex<MemInner>) -> std::sync::MutexGuard<'_, MemInner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemSnapshotStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes of the finished snapshots held.
    pub fn bytes(&self) -> u64 {
        lock(&self.inner).finished.values().map(|s| s.len()).sum()
    }

    /// Test hook: flips the bits of `mask` in the byte at `offset` of a finished snapshot, as a
    /// disk fault would. Returns whether there was such a byte.
    pub fn corrupt(&self, id: SnapshotId, offset: u64, mask: u8) -> bool {
        let mut inner = lock(&self.inner);
        let Some(source) = inner.finished.get(&id) else {
            return false;
        };
        let mut data = source.0.clone();
        let Some(byte) = usize::try_from(offset).ok().and_then(|o| data.get_mut(o)) else {
            return false;
        };
        *byte ^= mask.max(1);
        inner.finished.insert(id, Arc::new(MemSource(data)));
        true
    }
}

impl SnapshotStore for MemSnapshotStore {
    fn create(&self) -> Result<Box<dyn SnapshotSink>, SnapshotError> {
        let mut inner = lock(&self.inner);
        inner.next_id += 1;
        Ok(Box::new(MemSink {
            id: SnapshotId(inner.next_id),
            data: Vec::new(),
            store: self.inner.clone(),
        }))
    }

    fn open(&self, id: SnapshotId) -> Result<Arc<dyn SnapshotSource>, SnapshotError> {
        let inner = lock(&self.inner);
        match inner.finished.get(&id) {
            Some(s) => Ok(s.clone()),
            None => Err(SnapshotError::NotFound(id)),
        }
    }

    fn list(&self) -> Result<Vec<SnapshotId>, SnapshotError> {
        Ok(lock(&self.inner).finished.keys().copied().collect())
    }

    fn remove(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        lock(&self.inner).finished.remove(&id);
        Ok(())
    }
}

/// Snapshot files in a directory (beside the write-ahead log: `<wal dir>/snapshots`).
///
/// A snapshot with id `n` is the file `snap-<n>.bin` (`n` zero-padded to 20 digits); an
/// unfinished one is `snap-<n>.tmp`, written, fsynced and renamed by `finish`, after which the
/// directory is fsynced. Opening the store deletes every `.tmp` file (a crash interrupted them).
#[derive(Debug)]
pub struct FileSnapshotStore {
    dir: PathBuf,
    next_id: AtomicU64,
}

const SNAPSHOT_PREFIX: &str = "snap-";
const SNAPSHOT_SUFFIX: &str = ".bin";
const PARTIAL_SUFFIX: &str = ".tmp";
/// Write buffer of a snapshot file: one `write` call per this many bytes.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

fn snapshot_path(dir: &Path, id: u64, suffix: &str) -> PathBuf {
    dir.join(format!("{SNAPSHOT_PREFIX}{id:020}{suffix}"))
}

fn parse_name(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix(SNAPSHOT_PREFIX)?;
    if let Some(n) = rest.strip_suffix(SNAPSHOT_SUFFIX) {
        return n.parse().ok().map(|n| (n, true));
    }
    rest.strip_suffix(PARTIAL_SUFFIX)?
        .parse()
        .ok()
        .map(|n| (n, false))
}

fn fsync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SnapshotError::io(dir))
}

impl FileSnapshotStore {
    /// Opens (creating if needed) the store in `dir`, deleting unfinished snapshots a crash left.
    /// The caller holds whatever lock keeps other processes out of `dir` (the WAL's lock covers
    /// its `snapshots` subdirectory).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, SnapshotError> {
        let dir = dir.into();
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(SnapshotError::io(&dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        let mut max = 0;
        for entry in fs::read_dir(&dir).map_err(SnapshotError::io(&dir))? {
            let entry = entry.map_err(SnapshotError::io(&dir))?;
            let Some((id, finished)) = entry.file_name().to_str().and_then(parse_name) else {
                continue;
            };
            max = max.max(id);
            if !finished {
                fs::remove_file(entry.path()).map_err(SnapshotError::io(&entry.path()))?;
            }
        }
        Ok(Self {
            dir,
            next_id: AtomicU64::new(max + 1),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

struct FileSink {
    id: SnapshotId,
    dir: PathBuf,
    tmp: PathBuf,
    out: io::BufWriter<File>,
    finished: bool,
}

impl SnapshotSink for FileSink {
    fn id(&self) -> SnapshotId {
        self.id
    }

    fn write_all(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        self.out
            .write_all(data)
            .map_err(SnapshotError::io(&self.tmp))
    }

    fn finish(mut self: Box<Self>) -> Result<SnapshotId, SnapshotError> {
        self.out.flush().map_err(SnapshotError::io(&self.tmp))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(SnapshotError::io(&self.tmp))?;
        let path = snapshot_path(&self.dir, self.id.0, SNAPSHOT_SUFFIX);
        fs::rename(&self.tmp, &path).map_err(SnapshotError::io(&path))?;
        self.finished = true;
        fsync_dir(&self.dir)?;
        Ok(self.id)
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if !self.finished {
            // Best effort: an unfinished file left behind is deleted when the store reopens.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

struct FileSource {
    file: File,
    len: u64,
    path: PathBuf,
}

impl SnapshotSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, SnapshotError> {
        use std::os::unix::fs::FileExt;
        if offset >= self.len {
            return Ok(0);
        }
        let want = buf.len().min((self.len - offset) as usize);
        self.file
            .read_at(&mut buf[..want], offset)
            .map_err(SnapshotError::io(&self.path))
    }
}

impl SnapshotStore for FileSnapshotStore {
    fn create(&self) -> Result<Box<dyn SnapshotSink>, SnapshotError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tmp = snapshot_path(&self.dir, id, PARTIAL_SUFFIX);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(SnapshotError::io(&tmp))?;
        Ok(Box::new(FileSink {
            id: SnapshotId(id),
            dir: self.dir.clone(),
            tmp,
            out: io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            finished: false,
        }))
    }

    fn open(&self, id: SnapshotId) -> Result<Arc<dyn SnapshotSource>, SnapshotError> {
        let path = snapshot_path(&self.dir, id.0, SNAPSHOT_SUFFIX);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::NotFound(id))
            }
            Err(e) => return Err(SnapshotError::io(&path)(e)),
        };
        let len = file.metadata().map_err(SnapshotError::io(&path))?.len();
        Ok(Arc::new(FileSource { file, len, path }))
    }

    fn list(&self) -> Result<Vec<SnapshotId>, SnapshotError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(SnapshotError::io(&self.dir))? {
            let entry = entry.map_err(SnapshotError::io(&self.dir))?;
            if let Some((id, true)) = entry.file_name().to_str().and_then(parse_name) {
                ids.push(SnapshotId(id));
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn remove(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        let path = snapshot_path(&self.dir, id.0, SNAPSHOT_SUFFIX);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SnapshotError::io(&path)(e)),
        }
    }
}

/// Which snapshot files a core still needs, and which it may delete.
///
/// A core registers each checkpoint it asks for ([`SnapshotRetention::checkpointed`], with the
/// snapshot the checkpoint names, if any) and hears from its driver how many of its checkpoints
/// are durable ([`SnapshotRetention::durable`]). A snapshot is deleted once a durable checkpoint
/// names a newer one: until then, a crash would recover from a checkpoint that names it.
#[derive(Debug, Default)]
pub struct SnapshotRetention {
    /// Checkpoints asked for and not yet known durable: `(sequence number, snapshot named)`.
    pending: std::collections::VecDeque<(u64, Option<SnapshotId>)>,
    /// Checkpoints asked for since recovery.
    asked: u64,
    /// The snapshot named by the latest durable checkpoint.
    durable: Option<SnapshotId>,
}

impl SnapshotRetention {
    /// Retention after recovery from a checkpoint naming `recovered` (if any). Deletes every other
    /// finished snapshot in `store`: each is either older than the checkpoint's or an orphan of a
    /// crash before its checkpoint was synced.
    pub fn recovered(store: &dyn SnapshotStore, recovered: Option<SnapshotId>) -> Self {
        match store.list() {
            Ok(ids) => {
                for id in ids.into_iter().filter(|&id| Some(id) != recovered) {
                    if let Err(e) = store.remove(id) {
                        tracing::warn!(%id, error = %e, "could not delete an unneeded snapshot");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list snapshots"),
        }
        Self {
            durable: recovered,
            ..Self::default()
        }
    }

    /// The core asked for a checkpoint naming `snapshot` (or none).
    pub fn checkpointed(&mut self, snapshot: Option<SnapshotId>) {
        self.asked += 1;
        self.pending.push_back((self.asked, snapshot));
    }

    /// The first `count` checkpoints asked for since recovery are durable: delete the snapshots
    /// that only older checkpoints named. (A snapshot still being sent to a follower is read
    /// through a file opened before, which deletion does not disturb.)
    pub fn durable(&mut self, store: &dyn SnapshotStore, count: u64) {
        let mut named = Vec::new();
        let mut newest = None;
        while let Some(&(seq, snapshot)) = self.pending.front() {
            if seq > count {
                break;
            }
            self.pending.pop_front();
            if let Some(Some(previous)) = newest.replace(snapshot) {
                named.push(previous);
            }
        }
        let Some(snapshot) = newest else {
            return;
        };
        named.extend(std::mem::replace(&mut self.durable, snapshot));
        for old in named {
            let still_named =
                self.durable == Some(old) || self.pending.iter().any(|&(_, s)| s == Some(old));
            if !still_named {
                if let Err(e) = store.remove(old) {
                    tracing::warn!(id = %old, error = %e, "could not delete an old snapshot");
                }
            }
        }
    }

    /// Forgets a snapshot that never got a checkpoint (a failed install): delete it.
    pub fn discard(&mut self, store: &dyn SnapshotStore, id: SnapshotId) {
        if self.durable != Some(id) && !self.pending.iter().any(|&(_, s)| s == Some(id)) {
            let _ = store.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
