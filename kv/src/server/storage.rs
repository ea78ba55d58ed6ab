//! The replica's storage when it fails: the write-ahead log behind a guard that notes the first
//! failure and closes the log at once ([`GuardedStorage`]), what kind of failure it was
//! ([`StorageFault`]), and the probe that tells when a full data directory has room again
//! ([`probe`], paced by a [`ResumePolicy`]).
//!
//! Only a write refused for lack of space (`ENOSPC`, `EDQUOT`) lets the node resume by itself:
//! the kernel kept nothing it claimed to have written, and reopening the log truncates the torn
//! tail the refused write left. A failed fsync stays fail-stop until an operator restarts the
//! node: the kernel may have dropped the pages it was writing ("fsyncgate"), so the files may
//! read back as something the device does not hold. Every other failure (an I/O error, a
//! corrupt log) is for an operator too.

use std::io::Write;
use std::path::Path;

use common::wal::WalFailure;
use common::{SnapshotStore, Storage, StorageError};

use super::*;

/// Default first pause before probing a data directory whose disk filled up.
pub const PROBE_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// Default longest pause between two probes: the pause doubles after each failed probe, up to
/// this.
pub const PROBE_INTERVAL_MAX_DEFAULT: Duration = Duration::from_secs(10);
/// Default free space a probe requires before the node resumes: one write-ahead-log segment, so
/// that the node does not resume only to fill the disk again at once.
pub const RESUME_FREE_BYTES_DEFAULT: u64 = common::wal::SEGMENT_BYTES_MAX_DEFAULT;
/// The file a probe writes and fsyncs in the data directory, then removes (the log ignores it).
pub const PROBE_FILE_NAME: &str = "probe.tmp";
/// Bytes a probe writes.
const PROBE_BYTES: usize = 4096;

/// When a node whose disk filled up looks for room again, and how much it needs: the `[storage]`
/// table of the configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePolicy {
    /// The first pause before a probe.
    pub probe_interval: Duration,
    /// The longest pause between two probes (the pause doubles up to it).
    pub probe_interval_max: Duration,
    /// Free bytes the data directory's file system must have before the node resumes.
    pub free_bytes_min: u64,
}

impl Default for ResumePolicy {
    fn default() -> Self {
        Self {
            probe_interval: PROBE_INTERVAL_DEFAULT,
            probe_interval_max: PROBE_INTERVAL_MAX_DEFAULT,
            free_bytes_min: RESUME_FREE_BYTES_DEFAULT,
        }
    }
}

impl ResumePolicy {
    /// The pause after one of `pause`: doubled, at most [`ResumePolicy::probe_interval_max`].
    pub fn next_pause(&self, pause: Duration) -> Duration {
        pause.saturating_mul(2).min(self.probe_interval_max)
    }
}

/// Why the node's storage stopped it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageFault {
    /// The error, as the operator reads it.
    pub reason: String,
    /// Whether the node resumes by itself once the data directory has room (a write refused
    /// for lack of space); otherwise it waits for an operator's restart.
    pub resumable: bool,
}

/// Where a [`GuardedStorage`] leaves the first failure it saw (shared with the supervisor).
pub(super) type FaultSlot = Arc<Mutex<Option<StorageFault>>>;

/// How a guard tells a resumable failure of its storage from the others.
pub(super) type Classify<S> = fn(&S, &StorageError) -> StorageFault;

/// A [`Storage`] that, at its first failure, notes what kind it was in a [`FaultSlot`] and
/// closes the storage inside at once (for the write-ahead log: drops it, which is a crash for
/// what was not synced, and releases the data directory's lock), so that the node can be started
/// again from the directory while this storage's last owner still lingers. Every call after the
/// failure fails.
pub(super) struct GuardedStorage<S> {
    inner: Option<S>,
    snapshots: Arc<dyn SnapshotStore>,
    fault: FaultSlot,
    classify: Classify<S>,
}

impl<S: Storage> GuardedStorage<S> {
    /// Guards `inner`; its first failure goes to `fault`, as `classify` judges it.
    pub(super) fn new(inner: S, fault: FaultSlot, classify: Classify<S>) -> Self {
        Self {
            snapshots: inner.snapshots(),
            inner: Some(inner),
            fault,
            classify,
        }
    }

    fn guard<T>(
        &mut self,
        call: impl FnOnce(&mut S) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let Some(inner) = self.inner.as_mut() else {
            return Err(StorageError::Poisoned(
                "the storage was closed after an earlier failure".into(),
            ));
        };
        let result = call(inner);
        if let Err(e) = &result {
            let fault = (self.classify)(inner, e);
            self.fault
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(fault);
            self.inner = None;
        }
        result
    }
}

impl<S: Storage> Storage for GuardedStorage<S> {
    fn append(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.guard(|s| s.append(record))
    }

    fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError> {
        self.guard(|s| s.append_checkpoint(record))
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.guard(Storage::sync)
    }

    fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError> {
        self.guard(Storage::load)
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.snapshots.clone()
    }
}

/// The write-ahead log's failures: resumable only when a write was refused for lack of space.
pub(super) fn classify_wal(wal: &Wal, error: &StorageError) -> StorageFault {
    StorageFault {
        reason: error.to_string(),
        resumable: wal
            .failure()
            .is_some_and(|f: WalFailure| f.is_out_of_space_on_write()),
    }
}

/// Whether reopening the log failed for a reason that probing again may cure: still no space
/// (recovery writes a little), or the old log not closed yet. Anything else (corruption, an I/O
/// error, a failed fsync of what recovery found) stops the node until an operator restarts it.
pub(super) fn reopen_may_succeed_later(error: &StorageError) -> bool {
    match error {
        StorageError::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ),
        StorageError::Locked { .. } => true,
        _ => false,
    }
}

/// Whether `dir` can take the node again: a small file written and fsynced there (then removed),
/// and at least `free_bytes_min` bytes free on its file system. Blocks: run it off the runtime's
/// workers. The error says which part failed.
pub fn probe(dir: &Path, free_bytes_min: u64) -> Result<(), String> {
    let path = dir.join(PROBE_FILE_NAME);
    let written = std::fs::File::create(&path).and_then(|mut file| {
        file.write_all(&[0; PROBE_BYTES])?;
        file.sync_all()
    });
    // Removed whether or not the write went through; a leftover is harmless (the log ignores
    // it, and the next probe truncates it).
    let _ = std::fs::remove_file(&path);
    written.map_err(|e| format!("writing {}: {e}", path.display()))?;
    let free =
        fs4::available_space(dir).map_err(|e| format!("free space of {}: {e}", dir.display()))?;
    if free < free_bytes_min {
        return Err(format!(
            "{free} bytes free in {}, {free_bytes_min} needed to resume",
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::MemStorage;

    /// A storage whose appends fail with a full disk once `full` is set.
    struct FillingUp {
        inner: MemStorage,
        full: bool,
    }

    impl Storage for FillingUp {
        fn append(&mut self, record: &[u8]) -> Result<(), StorageError> {
            if self.full {
                return Err(StorageError::Io {
                    path: "segment".into(),
                    source: std::io::ErrorKind::StorageFull.into(),
                });
            }
            self.inner.append(record)
        }
        fn append_checkpoint(&mut self, record: &[u8]) -> Result<(), StorageError> {
            self.inner.append_checkpoint(record)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            self.inner.sync()
        }
        fn load(&mut self) -> Result<Vec<Vec<u8>>, StorageError> {
            self.inner.load()
        }
        fn snapshots(&self) -> Arc<dyn SnapshotStore> {
            self.inner.snapshots()
        }
    }

    fn full_disk_is_resumable(s: &FillingUp, e: &StorageError) -> StorageFault {
        StorageFault {
            reason: e.to_string(),
            resumable: s.full,
        }
    }

    #[test]
    fn the_first_failure_is_noted_and_closes_the_storage() {
        let slot = FaultSlot::default();
        let inner = FillingUp {
            inner: MemStorage::new(),
            full: false,
        };
        let mut guarded = GuardedStorage::new(inner, slot.clone(), full_disk_is_resumable);
        guarded.append(b"a").unwrap();
        guarded.sync().unwrap();
        assert!(slot.lock().unwrap().is_none());
        guarded.inner.as_mut().unwrap().full = true;
        assert!(guarded.append(b"b").is_err());
        let fault = slot.lock().unwrap().clone().unwrap();
        assert!(fault.resumable, "{fault:?}");
        assert!(fault.reason.contains("segment"), "{fault:?}");
        // Closed: nothing goes on, and a later failure does not replace the first.
        assert!(guarded.inner.is_none());
        assert!(matches!(guarded.sync(), Err(StorageError::Poisoned(_))));
        assert_eq!(slot.lock().unwrap().clone(), Some(fault));
    }

    #[test]
    fn only_a_write_refused_for_lack_of_space_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(WalConfig::new(dir.path())).unwrap();
        let fault = classify_wal(&wal, &StorageError::Poisoned("x".into()));
        assert!(
            !fault.resumable,
            "a log that is not poisoned by a full disk"
        );
        let full = StorageError::Io {
            path: "d".into(),
            source: std::io::ErrorKind::StorageFull.into(),
        };
        assert!(reopen_may_succeed_later(&full));
        assert!(reopen_may_succeed_later(&StorageError::Locked {
            path: "d".into()
        }));
        let eio = StorageError::Io {
            path: "d".into(),
            source: std::io::Error::other("EIO"),
        };
        assert!(!reopen_may_succeed_later(&eio));
        let corrupt = StorageError::Corrupt {
            file: "f".into(),
            offset: 0,
            reason: "bad".into(),
        };
        assert!(!reopen_may_succeed_later(&corrupt));
    }

    #[test]
    fn a_probe_writes_and_checks_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path(), 0).unwrap();
        assert!(!dir.path().join(PROBE_FILE_NAME).exists());
        let e = probe(dir.path(), u64::MAX).unwrap_err();
        assert!(e.contains("needed to resume"), "{e}");
        let e = probe(&dir.path().join("missing"), 0).unwrap_err();
        assert!(e.contains(PROBE_FILE_NAME), "{e}");
    }

    #[test]
    fn probes_back_off_up_to_the_limit() {
        let policy = ResumePolicy {
            probe_interval: Duration::from_millis(100),
            probe_interval_max: Duration::from_millis(350),
            free_bytes_min: 0,
        };
        let mut pause = policy.probe_interval;
        let mut pauses = Vec::new();
        for _ in 0..4 {
            pauses.push(pause.as_millis());
            pause = policy.next_pause(pause);
        }
        assert_eq!(pauses, [100, 200, 350, 350]);
    }
}
