//! [`MemSnapshotStore`]: snapshots in memory, for tests, the simulator and in-memory
//! benchmarks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{SnapshotError, SnapshotId, SnapshotSink, SnapshotSource, SnapshotStore};

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
