//! Unit tests of snapshots: compaction by entries and by bytes, snapshot files named by
//! checkpoints, InstallSnapshot in chunks under loss and corruption, and retries after failures.

use super::*;

#[test]
fn snapshot_compacts_the_log_and_installs_in_chunks() {
    let mut c = cfg(1, 3);
    c.snapshot_log_entries_max = 3;
    c.snapshot_chunk_bytes_max = 8;
    let mut l = leader(c, 3);
    let mut checkpoints = Vec::new();
    for i in 0..4 {
        request(&mut l, i, Request::Propose(put(&format!("v{i}"))));
        let fx = recv(&mut l, 2, ack(1, 2 + i, 1));
        checkpoints.extend(fx.records.into_iter().filter(Persist::is_checkpoint));
    }
    assert_eq!(
        checkpoints.len(),
        1,
        "one snapshot once 4 entries were applied"
    );
    assert!(l.first_log_index() > 1, "the log was compacted");
    // Node 3 never answered: it needs the compacted entries, so it gets the snapshot.
    let mut f = node(cfg(3, 3));
    let mut out = Outbox::new();
    l.tick(&mut out);
    l.tick(&mut out);
    let mut msgs: Vec<Message<KvCommand>> = out
        .take()
        .messages
        .into_iter()
        .filter(|(to, _)| *to == 3)
        .map(|(_, m)| m)
        .collect();
    let mut chunks = 0;
    for _ in 0..100 {
        let Some(m) = msgs.pop() else { break };
        if matches!(m, Message::InstallSnapshot { .. }) {
            chunks += 1;
        }
        for (_, reply) in recv(&mut f, 1, m).messages {
            msgs.extend(
                recv(&mut l, 3, reply)
                    .messages
                    .into_iter()
                    .filter(|(to, _)| *to == 3)
                    .map(|(_, m)| m),
            );
        }
    }
    assert!(chunks >= 2, "{chunks} chunks");
    assert_eq!(f.state_machine().get("k"), Some("v3"));
    assert_eq!(f.last_log_index(), l.last_log_index());
    assert_eq!(l.metrics().progress[&3].match_index, l.last_log_index());
}

/// A leader with entries 2..=5 putting `v0..v3` and a snapshot at index 4, and the leader's
/// checkpoint record.
fn leader_with_snapshot(chunk: usize) -> (N, Vec<Persist<crate::message::Record<KvCommand>>>) {
    let mut c = cfg(1, 3);
    c.snapshot_log_entries_max = 3;
    c.snapshot_chunk_bytes_max = chunk;
    let mut l = leader(c, 3);
    let mut checkpoints = Vec::new();
    for i in 0..4 {
        request(&mut l, i, Request::Propose(put(&format!("v{i}"))));
        let fx = recv(&mut l, 2, ack(1, 2 + i, 1));
        checkpoints.extend(fx.records.into_iter().filter(Persist::is_checkpoint));
    }
    (l, checkpoints)
}

/// Pumps messages between leader `l` and follower `f` (node 3), passing each message from the
/// leader through `tamper` first (which may lose it, change it or repeat it). Messages waiting
/// are delivered newest first, so several in flight arrive reordered. Returns how many
/// InstallSnapshot chunks reached `f`.
fn pump_snapshot(
    l: &mut N,
    f: &mut N,
    mut tamper: impl FnMut(Message<KvCommand>) -> Vec<Message<KvCommand>>,
) -> usize {
    let mut out = Outbox::new();
    l.tick(&mut out);
    l.tick(&mut out);
    let to_3 = |fx: Fx| -> Vec<Message<KvCommand>> {
        fx.messages
            .into_iter()
            .filter(|(to, _)| *to == 3)
            .map(|(_, m)| m)
            .collect()
    };
    let mut msgs = to_3(out.take());
    let mut chunks = 0;
    for _ in 0..1000 {
        let Some(m) = msgs.pop() else { break };
        for m in tamper(m) {
            if matches!(m, Message::InstallSnapshot { .. }) {
                chunks += 1;
            }
            for (_, reply) in recv(f, 1, m).messages {
                msgs.extend(to_3(recv(l, 3, reply)));
            }
        }
        if msgs.is_empty() && f.last_log_index() < l.last_log_index() {
            // A refused transfer restarts on the leader's next heartbeat.
            msgs.extend(to_3(ticks(l, 2)));
        }
    }
    chunks
}

#[test]
fn snapshot_is_a_file_that_the_checkpoint_names() {
    let (l, checkpoints) = leader_with_snapshot(8);
    assert_eq!(checkpoints.len(), 1);
    let Record::Snapshot { meta, file, .. } = checkpoints[0].record() else {
        panic!("{checkpoints:?}");
    };
    assert_eq!(l.snapshots.list().unwrap(), vec![file.id]);
    assert_eq!((meta.bytes, meta.crc32c), (file.bytes, file.crc32c));
    // The file holds the state machine's stream, not a copy inside the record.
    let mut stored = Vec::new();
    std::io::Read::read_to_end(
        &mut common::snapshot::SnapshotReader::open(&*l.snapshots, *file).unwrap(),
        &mut stored,
    )
    .unwrap();
    let mut restored = KvStore::default();
    crate::StateMachine::restore(&mut restored, &mut &stored[..]).unwrap();
    // It covers index 4: the no-op and `v0..v2`.
    assert_eq!(meta.index, 4);
    assert_eq!(restored.get("k"), Some("v2"));
}

#[test]
fn a_corrupted_chunk_is_refused_and_the_transfer_starts_over() {
    let (mut l, _) = leader_with_snapshot(8);
    let mut f = node(cfg(3, 3));
    let mut corrupted = 0;
    let chunks = pump_snapshot(&mut l, &mut f, |m| match m {
        Message::InstallSnapshot {
            term,
            meta,
            offset,
            mut data,
            done,
        } if corrupted == 0 && !data.is_empty() => {
            corrupted += 1;
            data[0] ^= 0x40;
            vec![Message::InstallSnapshot {
                term,
                meta,
                offset,
                data,
                done,
            }]
        }
        m => vec![m],
    });
    assert_eq!(corrupted, 1);
    assert_eq!(f.metrics().rejected.invalid, 1, "the checksum caught it");
    assert!(chunks >= 4, "sent again from the start: {chunks} chunks");
    assert_eq!(f.state_machine().get("k"), Some("v3"));
    assert_eq!(f.last_log_index(), l.last_log_index());
    // Only the good copy is in the follower's store; the damaged one never became visible.
    assert_eq!(f.snapshots.list().unwrap().len(), 1);
}

#[test]
fn lost_duplicated_and_reordered_chunks_still_install_the_snapshot() {
    let (mut l, _) = leader_with_snapshot(3);
    let mut f = node(cfg(3, 3));
    // Every third chunk is lost; every other one arrives twice, with the chunk before it
    // replayed after it (late and out of order).
    let mut seen = 0;
    let mut previous: Option<Message<KvCommand>> = None;
    let chunks = pump_snapshot(&mut l, &mut f, |m| {
        if !matches!(m, Message::InstallSnapshot { .. }) {
            return vec![m];
        }
        seen += 1;
        if seen % 3 == 0 {
            return vec![];
        }
        let mut deliver = vec![m.clone(), m.clone()];
        deliver.extend(previous.replace(m));
        deliver
    });
    assert!(chunks > 6, "{chunks}");
    assert_eq!(f.state_machine().get("k"), Some("v3"));
    assert_eq!(f.last_log_index(), l.last_log_index());
    assert_eq!(f.snapshots.list().unwrap().len(), 1);
}

#[test]
fn recovery_refuses_a_missing_or_corrupted_snapshot_file() {
    let (l, checkpoints) = leader_with_snapshot(8);
    let records = vec![checkpoints[0].record().clone()];
    let Record::Snapshot { file, .. } = &records[0] else {
        panic!()
    };
    // The store it names is not there.
    let empty = std::sync::Arc::new(common::snapshot::MemSnapshotStore::new());
    assert!(matches!(
        N::recover_with_snapshots(cfg(1, 3).into(), records.clone(), empty),
        Err(RecoverError::Snapshot(common::SnapshotError::NotFound(_)))
    ));
    // A byte flipped on disk: the checksum refuses it.
    let store = common::snapshot::MemSnapshotStore::new();
    let copy = {
        let mut w = common::snapshot::SnapshotWriter::create(&store, u64::MAX).unwrap();
        let source = l.snapshots.open(file.id).unwrap();
        let mut buf = vec![0u8; file.bytes as usize];
        source.read_at(0, &mut buf).unwrap();
        std::io::Write::write_all(&mut w, &buf).unwrap();
        w.finish().unwrap()
    };
    assert_eq!((copy.bytes, copy.crc32c), (file.bytes, file.crc32c));
    let records = vec![Record::Snapshot {
        term: 1,
        voted_for: Some(1),
        meta: match &records[0] {
            Record::Snapshot { meta, .. } => meta.clone(),
            _ => unreachable!(),
        },
        file: copy,
        entries: vec![],
    }];
    let store = std::sync::Arc::new(store);
    // Intact, it recovers.
    let n = N::recover_with_snapshots(cfg(1, 3).into(), records.clone(), store.clone()).unwrap();
    assert_eq!(n.state_machine().get("k"), Some("v2"));
    assert!(store.corrupt(copy.id, 2, 0x01));
    assert!(matches!(
        N::recover_with_snapshots(cfg(1, 3).into(), records, store),
        Err(RecoverError::Snapshot(_))
    ));
}

#[test]
fn checkpoints_made_durable_delete_the_snapshots_they_replace() {
    let mut c = cfg(1, 3);
    c.snapshot_log_entries_max = 2;
    let mut l = leader(c, 3);
    let mut checkpoints = 0;
    for i in 0..12 {
        request(&mut l, i, Request::Propose(put(&format!("v{i}"))));
        let fx = recv(&mut l, 2, ack(1, 2 + i, 1));
        checkpoints += fx.records.iter().filter(|p| p.is_checkpoint()).count() as u64;
    }
    assert!(checkpoints >= 3, "{checkpoints}");
    // Nothing durable yet: every snapshot may still be the one a crash recovers from.
    assert_eq!(l.snapshots.list().unwrap().len() as u64, checkpoints);
    l.checkpoints_durable(checkpoints);
    assert_eq!(
        l.snapshots.list().unwrap().len(),
        1,
        "only the newest is kept"
    );
}

#[test]
fn the_log_is_compacted_by_bytes_as_well_as_by_entries() {
    let mut c = cfg(1, 3);
    c.snapshot_log_entries_max = 1_000;
    // Each put below counts 1 + 100 + 8 bytes.
    c.snapshot_log_bytes_max = 300;
    let mut l = leader(c, 3);
    let mut checkpoints = 0;
    for i in 0..3 {
        request(&mut l, i, Request::Propose(put(&"x".repeat(100))));
        let fx = recv(&mut l, 2, ack(1, 2 + i, 1));
        checkpoints += fx.records.iter().filter(|p| p.is_checkpoint()).count();
    }
    assert_eq!(checkpoints, 1, "the third put passed 300 bytes");
    assert_eq!(l.first_log_index(), 5, "compacted through the third put");
}

/// A snapshot store whose `create` fails while `fail` is set (a full disk), counting tries.
struct FailingStore {
    inner: common::snapshot::MemSnapshotStore,
    fail: std::sync::atomic::AtomicBool,
    tries: std::sync::atomic::AtomicU64,
}

impl common::SnapshotStore for FailingStore {
    fn create(&self) -> Result<Box<dyn common::snapshot::SnapshotSink>, common::SnapshotError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.tries.fetch_add(1, SeqCst);
        if self.fail.load(SeqCst) {
            return Err(common::SnapshotError::Io {
                path: "snapshots".into(),
                source: std::io::Error::other("No space left on device"),
            });
        }
        self.inner.create()
    }
    fn open(
        &self,
        id: common::snapshot::SnapshotId,
    ) -> Result<std::sync::Arc<dyn common::snapshot::SnapshotSource>, common::SnapshotError> {
        self.inner.open(id)
    }
    fn list(&self) -> Result<Vec<common::snapshot::SnapshotId>, common::SnapshotError> {
        self.inner.list()
    }
    fn remove(&self, id: common::snapshot::SnapshotId) -> Result<(), common::SnapshotError> {
        self.inner.remove(id)
    }
}

#[test]
fn a_failing_snapshot_is_retried_after_a_doubling_wait_not_after_every_entry() {
    use std::sync::atomic::Ordering::SeqCst;
    let store = std::sync::Arc::new(FailingStore {
        inner: common::snapshot::MemSnapshotStore::new(),
        fail: true.into(),
        tries: 0.into(),
    });
    let mut c = cfg(1, 3);
    c.pre_vote = false;
    c.snapshot_log_entries_max = 2;
    let n = N::recover_with_snapshots(c.into(), vec![], store.clone()).unwrap();
    let mut l = elect(n, 3);
    let mut index = 1;
    let mut propose = |l: &mut N, count: u64| {
        let mut checkpoints = 0;
        for _ in 0..count {
            request(l, index, Request::Propose(put("v")));
            index += 1;
            let fx = recv(l, 2, ack(1, index, 1));
            checkpoints += fx.records.iter().filter(|p| p.is_checkpoint()).count();
        }
        checkpoints
    };
    // 60 entries past the trigger with the disk full: tries at waits of 1, 2, 4, 8, 16 and 32
    // entries, not 60 of them, and no checkpoint.
    assert_eq!(propose(&mut l, 62), 0);
    let tries = store.tries.load(SeqCst);
    assert!((5..=7).contains(&tries), "{tries} tries");
    // Space returns: the next try (within the current wait) succeeds and compacts.
    store.fail.store(false, SeqCst);
    assert_eq!(
        propose(&mut l, 64),
        64 / 3,
        "then one checkpoint per 3 entries"
    );
}
