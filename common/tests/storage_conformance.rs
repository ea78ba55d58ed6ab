//! The conformance suites of `common::testing` (the same a user runs against their own storage),
//! run against every implementation here: `MemStorage` and the durable `Wal`, and both snapshot
//! stores. Each storage check is one generic function; the macro at the bottom instantiates all
//! of them per implementation.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use common::snapshot::{FileSnapshotStore, MemSnapshotStore};
use common::testing::StorageSubject;
use common::wal::{Wal, WalConfig};
use common::MemStorage;

/// The largest record the suite configures.
const MAX: usize = 1024;

#[derive(Default)]
struct Mem(Option<MemStorage>);

impl StorageSubject for Mem {
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
    fn record_bytes_max(&self) -> usize {
        MAX
    }
}

struct Disk(tempfile::TempDir);

impl Default for Disk {
    fn default() -> Self {
        Disk(tempfile::tempdir().unwrap())
    }
}

impl StorageSubject for Disk {
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
    fn record_bytes_max(&self) -> usize {
        MAX
    }
}

macro_rules! conformance {
    ($name:ident, $subject:ty) => {
        mod $name {
            use common::testing;
            #[test]
            fn empty_storage_loads_nothing() {
                testing::empty_storage_loads_nothing::<$subject>();
            }
            #[test]
            fn append_sync_load_in_order() {
                testing::append_sync_load_in_order::<$subject>();
            }
            #[test]
            fn reopen_keeps_synced_records() {
                testing::reopen_keeps_synced_records::<$subject>();
            }
            #[test]
            fn crash_loses_at_most_the_unsynced_suffix() {
                testing::crash_loses_at_most_the_unsynced_suffix::<$subject>();
            }
            #[test]
            fn checkpoint_supersedes_earlier_records() {
                testing::checkpoint_supersedes_earlier_records::<$subject>();
            }
            #[test]
            fn latest_checkpoint_wins() {
                testing::latest_checkpoint_wins::<$subject>();
            }
            #[test]
            fn unsynced_checkpoint_does_not_lose_its_predecessors() {
                testing::unsynced_checkpoint_does_not_lose_its_predecessors::<$subject>();
            }
            #[test]
            fn oversize_record_is_refused() {
                testing::oversize_record_is_refused::<$subject>();
            }
            #[test]
            fn finished_snapshots_survive_a_crash() {
                testing::finished_snapshots_survive_a_crash::<$subject>();
            }
        }
    };
}

conformance!(mem_storage, super::Mem);
conformance!(wal, super::Disk);

#[test]
fn mem_snapshot_store() {
    let store = MemSnapshotStore::new();
    common::testing::snapshot_store_suite(|| store.clone());
}

#[test]
fn file_snapshot_store() {
    let dir = tempfile::tempdir().unwrap();
    common::testing::snapshot_store_suite(|| FileSnapshotStore::open(dir.path()).unwrap());
}
