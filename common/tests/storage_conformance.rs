//! The conformance suite of the `Storage` trait, run against every implementation: `MemStorage`
//! and the durable `Wal`. Each check is one generic function; the macro at the bottom
//! instantiates all of them per implementation, so a new implementation gets the whole suite by
//! adding one line.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use common::wal::{Wal, WalConfig};
use common::{MemStorage, Storage, StorageError};

/// The largest record the suite configures.
const MAX: usize = 1024;

/// Opens an implementation and simulates crashes of it.
trait Subject {
    type S: Storage;
    /// Opens the storage: empty the first time, recovered afterwards.
    fn open(&mut self) -> Self::S;
    /// Crashes `s`: whatever is not synced may be lost (a prefix of it may survive).
    fn crash(&mut self, s: Self::S);
}

#[derive(Default)]
struct Mem(Option<MemStorage>);

impl Subject for Mem {
    type S = MemStorage;
    fn open(&mut self) -> MemStorage {
        self.0
            .take()
            .unwrap_or_else(|| MemStorage::with_record_bytes_max(MAX))
    }
    fn crash(&mut self, mut s: MemStorage) {
        s.crash();
        self.0 = Some(s);
    }
}

struct Disk(tempfile::TempDir);

impl Default for Disk {
    fn default() -> Self {
        Disk(tempfile::tempdir().unwrap())
    }
}

impl Subject for Disk {
    type S = Wal;
    fn open(&mut self) -> Wal {
        let mut cfg = WalConfig::new(self.0.path());
        cfg.record_bytes_max = MAX;
        // Small segments, so the suite also crosses segment boundaries.
        cfg.segment_bytes_max = 4096;
        Wal::open(cfg).unwrap()
    }
    fn crash(&mut self, s: Wal) {
        drop(s);
    }
}

fn v(items: &[&[u8]]) -> Vec<Vec<u8>> {
    items.iter().map(|r| r.to_vec()).collect()
}

/// `loaded` must be `synced` followed by a prefix of `unsynced`.
fn assert_synced_plus_prefix(loaded: &[Vec<u8>], synced: &[&[u8]], unsynced: &[&[u8]]) {
    assert!(
        loaded.len() >= synced.len() && loaded.len() <= synced.len() + unsynced.len(),
        "loaded {} records, synced {}, unsynced {}",
        loaded.len(),
        synced.len(),
        unsynced.len()
    );
    let expected: Vec<&[u8]> = synced.iter().chain(unsynced).copied().collect();
    for (i, r) in loaded.iter().enumerate() {
        assert_eq!(r.as_slice(), expected[i], "record {i}");
    }
}

fn empty_storage_loads_nothing<T: Subject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    assert!(s.load().unwrap().is_empty());
    s.sync().unwrap();
    assert!(s.load().unwrap().is_empty());
    t.crash(s);
    assert!(t.open().load().unwrap().is_empty());
}

fn append_sync_load_in_order<T: Subject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append(b"a").unwrap();
    s.append(b"bb").unwrap();
    s.append(b"").unwrap();
    // Unsynced records are part of what this instance loads.
    assert_eq!(s.load().unwrap(), v(&[b"a", b"bb", b""]));
    s.sync().unwrap();
    s.append(b"ccc").unwrap();
    assert_eq!(s.load().unwrap(), v(&[b"a", b"bb", b"", b"ccc"]));
    s.sync().unwrap();
    // A sync with nothing new is harmless.
    s.sync().unwrap();
    assert_eq!(s.load().unwrap(), v(&[b"a", b"bb", b"", b"ccc"]));
}

fn reopen_keeps_synced_records<T: Subject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    let records: Vec<Vec<u8>> = (0..100u32)
        .map(|i| i.to_le_bytes().repeat(i as usize % 40))
        .collect();
    for r in &records {
        s.append(r).unwrap();
    }
    s.sync().unwrap();
    t.crash(s);
    let mut s = t.open();
    assert_eq!(s.load().unwrap(), records);
    // Appending continues after the recovered records.
    s.append(b"more").unwrap();
    s.sync().unwrap();
    t.crash(s);
    let loaded = t.open().load().unwrap();
    assert_eq!(loaded.len(), 101);
    assert_eq!(loaded[100], b"more");
}

fn crash_loses_at_most_the_unsynced_suffix<T: Subject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append(b"a").unwrap();
    s.append(b"b").unwrap();
    s.sync().unwrap();
    s.append(b"c").unwrap();
    s.append(b"d").unwrap();
    t.crash(s);
    let mut s = t.open();
    let loaded = s.load().unwrap();
    assert_synced_plus_prefix(&loaded, &[b"a", b"b"], &[b"c", b"d"]);
    // Whatever survived recovery is the new base.
    s.append(b"e").unwrap();
    s.sync().unwrap();
    t.crash(s);
    let mut expected = loaded;
    expected.push(b"e".to_vec());
    assert_eq!(t.open().load().unwrap(), expected);
}

fn checkpoint_supersedes_earlier_records<T: Subject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append(b"a").unwrap();
    s.append(b"b").unwrap();
    s.sync().unwrap();
    s.append_checkpoint(b"ck").unwrap();
    s.append(b"c").unwrap();
    // Even unsynced, the latest checkpoint is where loading starts for this instance.
    assert_eq!(s.load().unwrap(), v(&[b"ck", b"c"]));
    s.sync().unwrap();
    assert_eq!(s.load().unwrap(), v(&[b"ck", b"c"]));
    t.crash(s);
    let mut s = t.open();
    assert_eq!(s.load().unwrap(), v(&[b"ck", b"c"]));
    s.append(b"d").unwrap();
    s.sync().unwrap();
    assert_eq!(s.load().unwrap(), v(&[b"ck", b"c", b"d"]));
}

fn latest_checkpoint_wins<T: Subject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append_checkpoint(b"ck1").unwrap();
    s.append(b"x").unwrap();
    s.append_checkpoint(b"ck2").unwrap();
    s.append_checkpoint(b"ck3").unwrap();
    s.append(b"y").unwrap();
    s.sync().unwrap();
    assert_eq!(s.load().unwrap(), v(&[b"ck3", b"y"]));
    t.crash(s);
    assert_eq!(t.open().load().unwrap(), v(&[b"ck3", b"y"]));
}

fn unsynced_checkpoint_does_not_lose_its_predecessors<T: Subject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append(b"a").unwrap();
    s.sync().unwrap();
    s.append_checkpoint(b"ck").unwrap();
    t.crash(s);
    let loaded = t.open().load().unwrap();
    // Either the checkpoint survived (and supersedes "a"), or "a" is still there.
    assert!(
        loaded == v(&[b"a"]) || loaded == v(&[b"ck"]),
        "loaded {loaded:?}"
    );
}

fn oversize_record_is_refused<T: Subject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append(b"keep").unwrap();
    let big = vec![7u8; MAX + 1];
    match s.append(&big) {
        Err(StorageError::RecordTooLarge { len, max }) => {
            assert_eq!((len, max), (MAX + 1, MAX));
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(matches!(
        s.append_checkpoint(&big),
        Err(StorageError::RecordTooLarge { .. })
    ));
    // Nothing was appended, and the storage still works; exactly the maximum is fine.
    let exact = vec![9u8; MAX];
    s.append(&exact).unwrap();
    s.sync().unwrap();
    t.crash(s);
    assert_eq!(t.open().load().unwrap(), vec![b"keep".to_vec(), exact]);
}

macro_rules! conformance {
    ($name:ident, $subject:ty) => {
        mod $name {
            #[test]
            fn empty_storage_loads_nothing() {
                super::empty_storage_loads_nothing::<$subject>();
            }
            #[test]
            fn append_sync_load_in_order() {
                super::append_sync_load_in_order::<$subject>();
            }
            #[test]
            fn reopen_keeps_synced_records() {
                super::reopen_keeps_synced_records::<$subject>();
            }
            #[test]
            fn crash_loses_at_most_the_unsynced_suffix() {
                super::crash_loses_at_most_the_unsynced_suffix::<$subject>();
            }
            #[test]
            fn checkpoint_supersedes_earlier_records() {
                super::checkpoint_supersedes_earlier_records::<$subject>();
            }
            #[test]
            fn latest_checkpoint_wins() {
                super::latest_checkpoint_wins::<$subject>();
            }
            #[test]
            fn unsynced_checkpoint_does_not_lose_its_predecessors() {
                super::unsynced_checkpoint_does_not_lose_its_predecessors::<$subject>();
            }
            #[test]
            fn oversize_record_is_refused() {
                super::oversize_record_is_refused::<$subject>();
            }
        }
    };
}

conformance!(mem_storage, super::Mem);
conformance!(wal, super::Disk);
