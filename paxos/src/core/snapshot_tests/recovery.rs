//! Recovery from a snapshot (missing or corrupt files), retention of snapshot files, and
//! durable state machines that are ahead of the snapshot.

use super::*;

#[test]
fn recovery_from_a_missing_or_corrupt_snapshot_is_a_typed_error() {
    let store = MemSnapshotStore::new();
    let (a, _, records) = kv_leader(&store, 4, 10, |_| {});
    let file = a.snapshots.latest.as_ref().unwrap().file;
    let records = stored(&records);
    let setup = || Config::new(1, vec![1, 2, 3]).into();
    let recover = |records: Vec<Record<KvCommand>>| {
        R::recover_with_snapshots(setup(), records, Arc::new(store.clone()))
    };
    // Intact: the same state.
    assert_eq!(recover(records.clone()).unwrap().state(), a.state());
    // The file is not in the store.
    assert!(matches!(
        R::recover(setup(), records.clone()),
        Err(PaxosError::SnapshotMissing { slot: 4, id }) if id == file.id.0
    ));
    // Any byte flipped anywhere in the file (header, session table or state): corrupt.
    for offset in 0..file.bytes {
        assert!(store.corrupt(file.id, offset, 0x01));
        assert!(
            matches!(
                recover(records.clone()),
                Err(PaxosError::SnapshotCorrupt { slot: 4, .. })
            ),
            "byte {offset}"
        );
        assert!(store.corrupt(file.id, offset, 0x01)); // flipped back
    }
    // A checkpoint whose description does not match the file: corrupt as well.
    let described = |f: common::snapshot::SnapshotFile| {
        let mut records = records.clone();
        if let Record::Snapshot { file, .. } = &mut records[0] {
            *file = f;
        }
        records
    };
    for other in [
        common::snapshot::SnapshotFile {
            bytes: file.bytes - 1,
            ..file
        },
        common::snapshot::SnapshotFile {
            crc32c: file.crc32c ^ 1,
            ..file
        },
    ] {
        assert!(matches!(
            recover(described(other)),
            Err(PaxosError::SnapshotCorrupt { slot: 4, .. })
        ));
    }
    assert_eq!(recover(records).unwrap().state(), a.state());
}

#[test]
fn retention_keeps_only_what_a_durable_checkpoint_needs() {
    let store = MemSnapshotStore::new();
    let (mut a, b) = lead(
        {
            let mut cfg = Config::new(1, vec![1, 2, 3]);
            cfg.snapshot_interval_slots = 2;
            cfg.into()
        },
        &store,
    );
    let commands = (0..6).map(|i| (put("k", &i.to_string()), None)).collect();
    let records = decide(&mut a, b, commands);
    assert_eq!(records.iter().filter(|r| r.is_checkpoint()).count(), 3);
    // Three snapshots taken; none may go before the driver reports a checkpoint durable.
    assert_eq!(store.list().unwrap().len(), 3);
    a.checkpoints_durable(1);
    assert_eq!(store.list().unwrap().len(), 3);
    a.checkpoints_durable(3);
    let latest = a.snapshots.latest.as_ref().unwrap().file.id;
    assert_eq!(store.list().unwrap(), vec![latest]);
    // A file left by a crash before its checkpoint was durable goes at recovery.
    let mut orphan = SnapshotWriter::create(&store, u64::MAX).unwrap();
    orphan.write_all(b"orphan").unwrap();
    orphan.finish().unwrap();
    let r = R::recover_with_snapshots(
        Config::new(1, vec![1, 2, 3]).into(),
        stored(&records),
        Arc::new(store.clone()),
    )
    .unwrap();
    assert_eq!(r.state(), a.state());
    assert_eq!(store.list().unwrap(), vec![latest]);
}

/// What a [`Durable`] state machine keeps across restarts, like a database would.
#[derive(Debug, Default)]
struct Disk {
    total: u64,
    /// The position committed by `applied`.
    applied: u64,
    /// Every position a command was applied at, in order.
    applies: Vec<u64>,
    /// Restores from a snapshot.
    restores: u64,
}

/// A counter over a [`Disk`] that survives restarts and reports its applied position.
struct Durable {
    disk: Arc<Mutex<Disk>>,
    opened_at: u64,
}

impl Durable {
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.disk.lock().unwrap()
    }
}

impl StateMachine for Durable {
    type Command = u64;
    type Query = ();
    type Output = u64;

    fn apply(&mut self, index: u64, command: &u64) -> u64 {
        let mut disk = self.disk();
        disk.total += command;
        disk.applies.push(index);
        disk.total
    }

    fn applied(&mut self, index: u64) {
        self.disk().applied = index;
    }

    fn applied_index(&self) -> u64 {
        self.opened_at
    }

    fn query(&self, _: &()) -> u64 {
        self.disk().total
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        write_frame(out, &self.disk().total)
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        let total = read_frame(input, FRAME_BYTES_MAX)?
            .ok_or_else(|| StateMachineError::Malformed("empty".into()))?;
        let mut disk = self.disk();
        disk.total = total;
        disk.restores += 1;
        Ok(())
    }
}

fn durable_setup(cfg: Config, disk: &Arc<Mutex<Disk>>) -> Setup<Config, Durable> {
    let disk = disk.clone();
    Setup::new(cfg, move || {
        let opened_at = disk.lock().unwrap().applied;
        Ok(Durable {
            disk: disk.clone(),
            opened_at,
        })
    })
}

// Long: one scenario followed step by step, asserting each step's exact effects; split up,
// every part would have to rebuild the state the previous steps left.
#[test]
fn durable_state_machine_past_the_snapshot_is_neither_restored_nor_applied_again() {
    let store = MemSnapshotStore::new();
    let disk = Arc::new(Mutex::new(Disk::default()));
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = 3;
    let setup = durable_setup(cfg, &disk);
    let (mut a, b) = lead(setup.clone(), &store);
    // Client `i` sends command `i`, in slot `i - 1`.
    let session = |client| Some(Session { client, seq: 1 });
    let commands = (1..=4).map(|i| (i, session(i))).collect();
    let records = decide(&mut a, b, commands);
    // A snapshot of slots 0..3, then slot 3 on top; the disk committed position 4.
    assert_eq!(a.snapshots.latest.as_ref().unwrap().slot, 3);
    assert_eq!(disk.lock().unwrap().applies, vec![1, 2, 3, 4]);
    assert_eq!(disk.lock().unwrap().applied, 4);
    drop(a);

    // Restart from the checkpoint (slot 3) and the record of slot 3.
    let mut r = PaxosNode::recover_with_snapshots(setup, stored(&records), Arc::new(store.clone()))
        .unwrap();
    {
        let disk = disk.lock().unwrap();
        assert_eq!(disk.restores, 0, "the state machine is past the snapshot");
        assert_eq!(disk.applies, vec![1, 2, 3, 4], "nothing applied again");
        assert_eq!(disk.total, 10);
    }
    assert_eq!(r.metrics().applied, 4);
    // The session table is whole: the snapshot's sessions keep their outputs; the one of
    // slot 3, applied before the restart by the state machine alone, has no output to give.
    assert_eq!(
        r.learner.sessions.check(Session { client: 3, seq: 1 }),
        Dedup::Duplicate(Some(6))
    );
    assert_eq!(
        r.learner.sessions.check(Session { client: 4, seq: 1 }),
        Dedup::Duplicate(None)
    );
    // A copy of that command decided again later is not applied again either, and a client
    // waiting for it is told its command's output is gone.
    r.learner.pending.insert(4, b, vec![RequestId(9)].into());
    let again = Value::Batch {
        origin: b,
        commands: vec![Command {
            session: session(4),
            payload: 4,
        }]
        .into(),
    };
    let mut out = Outbox::new();
    let catch_up = Message::CatchUp {
        from_slot: 4,
        values: vec![again],
    };
    r.handle_message(2, catch_up, &mut out);
    let stale = Response::Failed(PaxosError::SessionStale { client: 4, seq: 1 });
    assert_eq!(out.take().responses, vec![(RequestId(9), stale)]);
    assert_eq!(r.metrics().applied, 5);
    assert_eq!(r.metrics().duplicates, 1);
    assert_eq!(disk.lock().unwrap().applies, vec![1, 2, 3, 4]);
    assert_eq!(disk.lock().unwrap().applied, 5);

    // Although it is not restored, the snapshot is read whole and checked: a corrupt file
    // stops the restart.
    drop(r);
    let file = records
        .iter()
        .rev()
        .find_map(|r| match r.record() {
            Record::Snapshot { file, .. } => Some(*file),
            _ => None,
        })
        .unwrap();
    assert!(store.corrupt(file.id, file.bytes - 1, 0x01));
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = 3;
    assert!(matches!(
        PaxosNode::recover_with_snapshots(
            durable_setup(cfg, &disk),
            stored(&records),
            Arc::new(store.clone())
        ),
        Err(PaxosError::SnapshotCorrupt { slot: 3, .. })
    ));
    assert!(store.corrupt(file.id, file.bytes - 1, 0x01));

    // A state machine that starts empty (a lost database, say) is restored from the snapshot
    // and re-applies slot 3 only.
    *disk.lock().unwrap() = Disk::default();
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = 3;
    let r = PaxosNode::recover_with_snapshots(
        durable_setup(cfg, &disk),
        stored(&records),
        Arc::new(store.clone()),
    )
    .unwrap();
    let disk = disk.lock().unwrap();
    assert_eq!((disk.restores, disk.total), (1, 10));
    assert_eq!(disk.applies, vec![4]);
    assert_eq!(
        r.learner.sessions.check(Session { client: 4, seq: 1 }),
        Dedup::Duplicate(Some(10))
    );
}
