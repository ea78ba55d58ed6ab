//! [`GroupSnapshots`]: one group's view of the process's shared snapshot store.
//!
//! A core deletes at recovery every snapshot file its checkpoint does not name (the orphans of
//! a crash between a snapshot's `finish` and its checkpoint's sync), so groups sharing one
//! store unchanged would delete each other's snapshots. Each file therefore starts with a
//! small header naming the group that wrote it, and each group sees only its own files: `list`
//! filters by the header, `open` refuses another group's file as not found, and readers see
//! the bytes after the header. The header is below the snapshot's own length and CRC32C (the
//! core's writer never sees it), so nothing in a core changes.
//!
//! A group removed at run time has its files deleted once its removal is durable; files a
//! crash left behind (between that and the deletion) belong to no hosted group, and the host's
//! recovery removes them ([`remove_orphans`]).
//!
//! Cost: `list` opens every file of the store and reads its 16-byte header, which recovery
//! does once per group (groups × files reads of 16 bytes). A store with a directory per group
//! would avoid it; the shared store keeps the storage layer unchanged.

use std::sync::Arc;

use super::GroupId;
use crate::snapshot::{SnapshotError, SnapshotId, SnapshotSink, SnapshotSource, SnapshotStore};

/// The magic that starts every group's snapshot file.
const MAGIC: [u8; 8] = *b"GRPSNAP1";
/// Header bytes: the magic, then the group id (little-endian).
pub const HEADER_BYTES: u64 = 16;

/// One group's snapshots inside a store the process's groups share.
pub struct GroupSnapshots {
    inner: Arc<dyn SnapshotStore>,
    group: GroupId,
}

impl GroupSnapshots {
    /// Group `group`'s view of `inner`.
    pub fn new(inner: Arc<dyn SnapshotStore>, group: GroupId) -> Self {
        Self { inner, group }
    }

    fn header(&self) -> [u8; HEADER_BYTES as usize] {
        let mut h = [0u8; HEADER_BYTES as usize];
        h[..8].copy_from_slice(&MAGIC);
        h[8..].copy_from_slice(&self.group.to_le_bytes());
        h
    }

    /// Opens `id` in the shared store if it is this group's file.
    fn open_own(&self, id: SnapshotId) -> Result<Option<Arc<dyn SnapshotSource>>, SnapshotError> {
        let source = self.inner.open(id)?;
        let mut h = [0u8; HEADER_BYTES as usize];
        let mut read = 0;
        while read < h.len() {
            let n = source.read_at(read as u64, &mut h[read..])?;
            if n == 0 {
                return Ok(None); // shorter than a header: no group's file
            }
            read += n;
        }
        Ok((h == self.header()).then_some(source))
    }
}

impl SnapshotStore for GroupSnapshots {
    fn create(&self) -> Result<Box<dyn SnapshotSink>, SnapshotError> {
        let mut sink = self.inner.create()?;
        sink.write_all(&self.header())?;
        Ok(sink)
    }

    fn open(&self, id: SnapshotId) -> Result<Arc<dyn SnapshotSource>, SnapshotError> {
        match self.open_own(id)? {
            Some(inner) => Ok(Arc::new(Headed { inner })),
            None => Err(SnapshotError::NotFound(id)),
        }
    }

    fn list(&self) -> Result<Vec<SnapshotId>, SnapshotError> {
        let mut own = Vec::new();
        for id in self.inner.list()? {
            match self.open_own(id) {
                Ok(Some(_)) => own.push(id),
                // Removed meanwhile by its own group: not ours either way.
                Ok(None) | Err(SnapshotError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(own)
    }

    fn remove(&self, id: SnapshotId) -> Result<(), SnapshotError> {
        match self.open_own(id) {
            Ok(Some(_)) => self.inner.remove(id),
            // Another group's file, or gone: removing what is not there is not an error.
            Ok(None) | Err(SnapshotError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The group whose header starts file `id` of `store`, if it starts with one (for checks and
/// tools that look into a process's shared store).
pub fn snapshot_group(
    store: &dyn SnapshotStore,
    id: SnapshotId,
) -> Result<Option<GroupId>, SnapshotError> {
    let source = store.open(id)?;
    let mut h = [0u8; HEADER_BYTES as usize];
    let mut read = 0;
    while read < h.len() {
        let n = source.read_at(read as u64, &mut h[read..])?;
        if n == 0 {
            return Ok(None);
        }
        read += n;
    }
    if h[..8] != MAGIC {
        return Ok(None);
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&h[8..]);
    Ok(Some(GroupId::from_le_bytes(g)))
}

/// Removes from the shared `store` every group's file whose group `hosted` says no: the files
/// of groups removed whose clean-up a crash interrupted. Files without a group header are
/// left alone. Returns how many were removed.
pub(super) fn remove_orphans(
    store: &dyn SnapshotStore,
    hosted: impl Fn(GroupId) -> bool,
) -> Result<usize, SnapshotError> {
    let mut removed = 0;
    for id in store.list()? {
        match snapshot_group(store, id) {
            Ok(Some(group)) if !hosted(group) => {
                store.remove(id)?;
                removed += 1;
            }
            Ok(_) | Err(SnapshotError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// A group's snapshot read past its header.
struct Headed {
    inner: Arc<dyn SnapshotSource>,
}

impl SnapshotSource for Headed {
    fn len(&self) -> u64 {
        self.inner.len().saturating_sub(HEADER_BYTES)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, SnapshotError> {
        match offset.checked_add(HEADER_BYTES) {
            Some(at) => self.inner.read_at(at, buf),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{MemSnapshotStore, SnapshotReader, SnapshotWriter};
    use std::io::Read;

    #[test]
    fn groups_see_only_their_own_snapshots() {
        let shared: Arc<dyn SnapshotStore> = Arc::new(MemSnapshotStore::new());
        let a = GroupSnapshots::new(shared.clone(), 1);
        let b = GroupSnapshots::new(shared.clone(), 2);
        let mut w = SnapshotWriter::create(&a, u64::MAX).unwrap();
        w.append(b"state of a").unwrap();
        let fa = w.finish().unwrap();
        let mut w = SnapshotWriter::create(&b, u64::MAX).unwrap();
        w.append(b"b").unwrap();
        let fb = w.finish().unwrap();
        assert_eq!(fa.bytes, 10);
        assert_eq!(a.list().unwrap(), vec![fa.id]);
        assert_eq!(b.list().unwrap(), vec![fb.id]);
        assert!(matches!(b.open(fa.id), Err(SnapshotError::NotFound(_))));
        // Removing another group's file through b is a no-op.
        b.remove(fa.id).unwrap();
        assert_eq!(shared.list().unwrap().len(), 2);
        let mut out = Vec::new();
        SnapshotReader::open(&a, fa)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"state of a");
        a.remove(fa.id).unwrap();
        assert_eq!(shared.list().unwrap(), vec![fb.id]);
    }
}
