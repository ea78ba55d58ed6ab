//! [`FileSnapshotStore`]: snapshot files in a directory beside the write-ahead log, finished
//! atomically (temporary file, fsync, rename, directory fsync).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{SnapshotError, SnapshotId, SnapshotSink, SnapshotSource, SnapshotStore};

impl SnapshotError {
    /// Maps an I/O error on `path` to [`SnapshotError::Io`].
    pub(super) fn io(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
        move |source| SnapshotError::Io {
            path: path.display().to_string(),
            source,
        }
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
pub(super) const PARTIAL_SUFFIX: &str = ".tmp";
/// Write buffer of a snapshot file: one `write` call per this many bytes.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

pub(super) fn snapshot_path(dir: &Path, id: u64, suffix: &str) -> PathBuf {
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
