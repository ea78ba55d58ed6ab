//! Unit tests of snapshot files, chunked catch-up, recovery from snapshots, retention and the
//! state-machine seam (batches, durable state machines).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use common::codec::{Bincode, Codec};
use common::snapshot::{MemSnapshotStore, SnapshotWriter};
use common::state_machine::{read_frame, write_frame, FRAME_BYTES_MAX};
use common::{DetRng, Node, Outbox, Persist, RequestId, Setup, StateMachineError};

use super::tests::{digest_of, perfect, put, replica, Flight, Net};
use super::*;
use crate::message::Command;
use crate::state_machine::{Dedup, KvCommand, KvStore};

type R = Replica<KvStore>;
type M = Message<KvCommand>;

/// Replica 1 of {1, 2, 3}, built from `setup` over `store`, made leader with ballot (1, 1) by
/// acceptor 2's empty promise.
fn lead<S: StateMachine>(
    setup: Setup<Config, S>,
    store: &MemSnapshotStore,
) -> (Replica<S>, Ballot) {
    let mut a =
        Replica::<S>::recover_with_snapshots(setup, vec![], Arc::new(store.clone())).unwrap();
    let b = Ballot::new(1, 1);
    let mut out = Outbox::new();
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    let promise = Message::Promise {
        ballot: b,
        decided: 0,
        accepted: vec![],
    };
    a.handle_message(2, promise, &mut out);
    assert!(a.is_leader());
    (a, b)
}

/// Has leader `a` (ballot `b`) decide `commands`, one slot each, with acceptor 2's help.
/// Returns every record it asked for.
fn decide<S: StateMachine>(
    a: &mut Replica<S>,
    b: Ballot,
    commands: Vec<(S::Command, Option<Session>)>,
) -> Vec<Persist<Record<S::Command>>> {
    let mut out = Outbox::new();
    let mut records = Vec::new();
    for (command, session) in commands {
        let slot = a.leader.as_ref().map(|l| l.next_slot).unwrap();
        let request = Request::Propose { command, session };
        a.handle_request(RequestId(100 + slot), request, &mut out);
        let accepted = Message::Accepted {
            ballot: b,
            slot,
            count: 1,
        };
        a.handle_message(2, accepted, &mut out);
        assert_eq!(a.decided(), slot + 1);
        records.extend(out.take().records);
    }
    records
}

/// What storage holds after `records`: the last checkpoint and everything after it.
fn stored<C: Clone>(records: &[Persist<Record<C>>]) -> Vec<Record<C>> {
    let from = records.iter().rposition(|r| r.is_checkpoint()).unwrap_or(0);
    records[from..].iter().map(|r| r.record().clone()).collect()
}

/// A KV leader (replica 1) over `store` that decided `puts` puts of `value_bytes` bytes each
/// (client 1, one session each) and took a snapshot of all of them; `tweak` configures it.
fn kv_leader(
    store: &MemSnapshotStore,
    puts: u64,
    value_bytes: usize,
    tweak: impl FnOnce(&mut Config),
) -> (R, Ballot, Vec<Persist<Record<KvCommand>>>) {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = puts;
    tweak(&mut cfg);
    let (mut a, b) = lead(cfg.into(), store);
    let commands = (0..puts)
        .map(|i| {
            let value = format!("{i}{}", "v".repeat(value_bytes));
            let session = Session {
                client: 1,
                seq: i + 1,
            };
            (put(&format!("k{i}"), &value), Some(session))
        })
        .collect();
    let records = decide(&mut a, b, commands);
    assert_eq!(a.log_start(), puts, "the leader compacted its log");
    (a, b, records)
}

/// Replica 3 learns from leader `a` that slots below `commit` are chosen, and asks it for them.
fn behind(a: &R, b: Ballot, net: &mut Net) -> R {
    let mut c = replica(3);
    let mut out = Outbox::new();
    let commit = M::Commit {
        ballot: b,
        commit: a.decided(),
    };
    c.handle_message(1, commit, &mut out);
    net.collect(3, &mut out);
    assert!(matches!(
        net.queue.front(),
        Some((3, 1, M::CatchUpRequest { from_slot: 0 }))
    ));
    c
}

/// Chunks the file of `a`'s latest snapshot takes at `a`'s chunk size.
fn chunks_of(a: &R) -> u64 {
    let bytes = a.latest.as_ref().map(|l| l.file.bytes).unwrap();
    bytes.div_ceil(a.config.snapshot_chunk_bytes_max as u64)
}

#[test]
fn chunked_catch_up_survives_loss_duplication_and_reordering() {
    let store = MemSnapshotStore::new();
    let (mut a, b, _) = kv_leader(&store, 20, 100, |c| {
        c.snapshot_chunk_bytes_max = 64;
        c.snapshot_chunks_in_flight_max = 4;
    });
    let chunks = chunks_of(&a);
    assert!(chunks > 30, "{chunks} chunks");
    for seed in 0..20 {
        let mut net = Net::default();
        let mut c = behind(&a, b, &mut net);
        let mut rng = DetRng::new(seed);
        let (mut lost, mut doubled, mut reordered) = (0, 0, 0);
        let mut faults = |f: Flight, queue: &mut VecDeque<Flight>| {
            if !matches!(f.2, M::SnapshotChunk { .. } | M::SnapshotAck { .. }) {
                return vec![f];
            }
            match rng.index(10) {
                Some(0 | 1) => {
                    lost += 1;
                    vec![]
                }
                Some(2 | 3) => {
                    doubled += 1;
                    vec![f.clone(), f]
                }
                Some(4 | 5) => {
                    reordered += 1;
                    queue.push_back(f);
                    vec![]
                }
                _ => vec![f],
            }
        };
        net.run(&mut [&mut a, &mut c], &mut faults);
        assert!(lost > 0 && doubled > 0 && reordered > 0, "seed {seed}");
        assert_eq!(c.state(), a.state(), "seed {seed}");
        assert_eq!(c.decided(), 20);
        let m = c.metrics();
        assert_eq!((m.snapshots_installed, m.snapshots_rejected), (1, 0));
        assert!(net.chunks as u64 > chunks, "seed {seed}: resends happened");
        // The session table came along: a retry of the last put is a duplicate.
        let last = Session { client: 1, seq: 20 };
        assert!(matches!(c.sessions.check(last), Dedup::Duplicate(Some(_))));
        // One checkpoint names the one file the receiver keeps; the sender is done.
        let checkpoints: Vec<_> = net.records[&3]
            .iter()
            .filter(|r| r.is_checkpoint())
            .collect();
        assert_eq!(checkpoints.len(), 1);
        assert_eq!(c.snapshots.list().unwrap().len(), 1);
        assert!(a.outgoing.is_empty(), "seed {seed}");
    }
}

#[test]
fn corrupted_chunk_is_refused_then_the_transfer_restarts() {
    let store = MemSnapshotStore::new();
    let (mut a, b, _) = kv_leader(&store, 8, 100, |c| {
        c.snapshot_chunk_bytes_max = 128;
    });
    let mut net = Net::default();
    let mut c = behind(&a, b, &mut net);
    // One byte of one chunk flips on the way; further catch-up requests are lost for now.
    let mut flipped = false;
    let mut faults = |mut f: Flight, _: &mut VecDeque<Flight>| {
        match &mut f.2 {
            M::SnapshotChunk { offset, data, .. } if *offset == 128 && !flipped => {
                data[5] ^= 0x40;
                flipped = true;
            }
            M::CatchUpRequest { .. } if flipped => return vec![],
            _ => {}
        }
        vec![f]
    };
    net.run(&mut [&mut a, &mut c], &mut faults);
    assert!(flipped);
    // Every byte arrived, but they do not match the digest: nothing is installed or kept.
    let m = c.metrics();
    assert_eq!((m.snapshots_installed, m.snapshots_rejected), (0, 1));
    assert_eq!((c.decided(), m.applied), (0, 0));
    assert!(c.state().data().is_empty());
    assert!(!net.records[&3].iter().any(|r| r.is_checkpoint()));
    assert!(c.snapshots.list().unwrap().is_empty());
    assert!(c.incoming.is_none());
    // The receiver's catch-up timer asks again: a new transfer from offset 0 installs it.
    net.run(&mut [&mut a, &mut c], &mut perfect);
    let m = c.metrics();
    assert_eq!((m.snapshots_installed, m.snapshots_rejected), (1, 1));
    assert_eq!(c.state(), a.state());
    assert_eq!(c.decided(), 8);
}

#[test]
fn snapshot_larger_than_a_frame_travels_in_chunks() {
    // 17 values of 1 MiB: a state larger than a log record or a transport frame (16 MiB).
    let store = MemSnapshotStore::new();
    let (mut a, b, records) = kv_leader(&store, 17, 1 << 20, |_| {});
    let file = a.latest.as_ref().unwrap().file;
    assert!(file.bytes > FRAME_BYTES_MAX as u64);
    assert!(file.bytes > common::storage::RECORD_BYTES_MAX as u64);
    // The checkpoint names the file: it is small however large the state.
    let checkpoint = records.iter().rfind(|r| r.is_checkpoint()).unwrap();
    assert!(Bincode.encode(checkpoint.record()).unwrap().len() < 1024);
    let mut net = Net::default();
    let mut c = behind(&a, b, &mut net);
    let chunk_max = a.config.snapshot_chunk_bytes_max;
    let mut largest = 0;
    let mut sizes = |f: Flight, _: &mut VecDeque<Flight>| {
        largest = largest.max(Bincode.encode(&f.2).unwrap().len());
        vec![f]
    };
    net.run(&mut [&mut a, &mut c], &mut sizes);
    assert_eq!(c.state(), a.state());
    assert_eq!(c.metrics().snapshots_installed, 1);
    assert_eq!(net.chunks as u64, chunks_of(&a));
    assert!(net.chunks >= 64, "{} chunks", net.chunks);
    // No message is larger than a chunk and its envelope.
    assert!(largest <= chunk_max + 1024, "largest message {largest}");
    // The receiver's checkpoint is as small, and its file is the sender's, byte for byte.
    for r in &net.records[&3] {
        assert!(Bincode.encode(r.record()).unwrap().len() < 1024);
    }
    let received = c.latest.as_ref().unwrap().file;
    assert_eq!((received.bytes, received.crc32c), (file.bytes, file.crc32c));
}

#[test]
fn recovery_from_a_missing_or_corrupt_snapshot_is_a_typed_error() {
    let store = MemSnapshotStore::new();
    let (a, _, records) = kv_leader(&store, 4, 10, |_| {});
    let file = a.latest.as_ref().unwrap().file;
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
        Err(Error::SnapshotMissing { slot: 4, id }) if id == file.id.0
    ));
    // Any byte flipped anywhere in the file (header, session table or state): corrupt.
    for offset in 0..file.bytes {
        assert!(store.corrupt(file.id, offset, 0x01));
        assert!(
            matches!(
                recover(records.clone()),
                Err(Error::SnapshotCorrupt { slot: 4, .. })
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
            Err(Error::SnapshotCorrupt { slot: 4, .. })
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
    let latest = a.latest.as_ref().unwrap().file.id;
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
    assert_eq!(a.latest.as_ref().unwrap().slot, 3);
    assert_eq!(disk.lock().unwrap().applies, vec![1, 2, 3, 4]);
    assert_eq!(disk.lock().unwrap().applied, 4);
    drop(a);

    // Restart from the checkpoint (slot 3) and the record of slot 3.
    let mut r =
        Replica::recover_with_snapshots(setup, stored(&records), Arc::new(store.clone())).unwrap();
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
        r.sessions.check(Session { client: 3, seq: 1 }),
        Dedup::Duplicate(Some(6))
    );
    assert_eq!(
        r.sessions.check(Session { client: 4, seq: 1 }),
        Dedup::Duplicate(None)
    );
    // A copy of that command decided again later is not applied again either, and a client
    // waiting for it is told its command's output is gone.
    r.pending.insert(4, (b, vec![RequestId(9)]));
    let again = Value::Batch {
        origin: b,
        commands: vec![Command {
            session: session(4),
            payload: 4,
        }],
    };
    let mut out = Outbox::new();
    let catch_up = Message::CatchUp {
        from_slot: 4,
        values: vec![again],
    };
    r.handle_message(2, catch_up, &mut out);
    let stale = Response::Failed(Error::SessionStale { client: 4, seq: 1 });
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
        Replica::recover_with_snapshots(
            durable_setup(cfg, &disk),
            stored(&records),
            Arc::new(store.clone())
        ),
        Err(Error::SnapshotCorrupt { slot: 3, .. })
    ));
    assert!(store.corrupt(file.id, file.bytes - 1, 0x01));

    // A state machine that starts empty (a lost database, say) is restored from the snapshot
    // and re-applies slot 3 only.
    *disk.lock().unwrap() = Disk::default();
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = 3;
    let r = Replica::recover_with_snapshots(
        durable_setup(cfg, &disk),
        stored(&records),
        Arc::new(store.clone()),
    )
    .unwrap();
    let disk = disk.lock().unwrap();
    assert_eq!((disk.restores, disk.total), (1, 10));
    assert_eq!(disk.applies, vec![4]);
    assert_eq!(
        r.sessions.check(Session { client: 4, seq: 1 }),
        Dedup::Duplicate(Some(10))
    );
}

/// A state machine that records the batches and positions it is given.
#[derive(Default)]
struct Recorder {
    batches: Vec<Vec<(u64, u64)>>,
    applied: Vec<u64>,
    total: u64,
}

impl StateMachine for Recorder {
    type Command = u64;
    type Query = ();
    type Output = u64;

    fn apply(&mut self, _: u64, _: &u64) -> u64 {
        unreachable!("the replica applies in batches")
    }

    fn apply_batch<'a, I>(&mut self, batch: I, outputs: &mut Vec<u64>)
    where
        I: Iterator<Item = (u64, &'a u64)>,
    {
        let mut seen = Vec::new();
        for (index, command) in batch {
            self.total += command;
            seen.push((index, *command));
            outputs.push(self.total);
        }
        self.batches.push(seen);
    }

    fn applied(&mut self, index: u64) {
        self.applied.push(index);
    }

    fn query(&self, _: &()) -> u64 {
        self.total
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        write_frame(out, &self.total)
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        self.total = read_frame(input, FRAME_BYTES_MAX)?.unwrap_or(0);
        Ok(())
    }
}

#[test]
fn one_step_applies_its_slots_in_one_batch_without_duplicates() {
    let mut c: Replica<Recorder> =
        Replica::recover(Config::new(3, vec![1, 2, 3]).into(), vec![]).unwrap();
    let origin = Ballot::new(1, 1);
    let cmd = |client, payload| Command {
        session: Some(Session { client, seq: 1 }),
        payload,
    };
    let values = vec![
        Value::Batch {
            origin,
            commands: vec![cmd(1, 10), cmd(2, 20)],
        },
        Value::Noop,
        // A retry of client 1's command, and a new one.
        Value::Batch {
            origin,
            commands: vec![cmd(1, 10), cmd(3, 30)],
        },
    ];
    // This replica created the last batch: its two requests wait for it.
    c.pending
        .insert(2, (origin, vec![RequestId(7), RequestId(8)]));
    let mut out = Outbox::new();
    c.handle_message(
        1,
        Message::CatchUp {
            from_slot: 0,
            values,
        },
        &mut out,
    );
    // One batch for the three slots (slot s at position s + 1), the retry left out; one
    // `applied` naming the first slot not applied.
    assert_eq!(c.state().batches, vec![vec![(1, 10), (1, 20), (3, 30)]]);
    assert_eq!(c.state().applied, vec![3]);
    assert_eq!(c.metrics().duplicates, 1);
    // The retry is answered with the first application's output, from the same batch.
    assert_eq!(
        out.take().responses,
        vec![
            (
                RequestId(7),
                Response::Applied {
                    slot: 2,
                    output: 10
                }
            ),
            (
                RequestId(8),
                Response::Applied {
                    slot: 2,
                    output: 60
                }
            ),
        ]
    );
    // A stop-sign ends a batch: the slots after it go in a second one.
    let values = vec![
        Value::Batch {
            origin,
            commands: vec![cmd(4, 1)],
        },
        Value::StopSign {
            epoch: 1,
            members: vec![1, 2, 3],
        },
        Value::Batch {
            origin,
            commands: vec![cmd(5, 2)],
        },
    ];
    c.handle_message(
        1,
        Message::CatchUp {
            from_slot: 3,
            values,
        },
        &mut out,
    );
    assert_eq!(c.state().batches[1..], [vec![(4, 1)], vec![(6, 2)]]);
    assert_eq!(c.state().applied, vec![3, 6]);
    assert_eq!(c.metrics().epoch, 1);
}

#[test]
fn stalled_transfers_resend_from_the_acknowledged_offset_then_give_up() {
    let store = MemSnapshotStore::new();
    let (mut a, b, _) = kv_leader(&store, 8, 100, |c| {
        c.snapshot_chunk_bytes_max = 100;
        c.snapshot_chunks_in_flight_max = 2;
    });
    let retransmit = a.config.retransmit_ticks;
    let mut out = Outbox::new();
    a.handle_message(3, M::CatchUpRequest { from_slot: 0 }, &mut out);
    let offsets = |out: &mut Outbox<R>| -> Vec<u64> {
        let e = out.take();
        e.messages
            .into_iter()
            .filter_map(|(_, m)| match m {
                M::SnapshotChunk { offset, .. } => Some(offset),
                _ => None,
            })
            .collect()
    };
    // A window of two chunks.
    assert_eq!(offsets(&mut out), vec![0, 100]);
    // The first is acknowledged: the window slides by one.
    let ack = |next_offset| M::SnapshotAck {
        slot: 8,
        next_offset,
        done: false,
    };
    a.handle_message(3, ack(100), &mut out);
    assert_eq!(offsets(&mut out), vec![200]);
    // The same offset again while later chunks are out (100 was lost): back to it, once.
    a.handle_message(3, ack(100), &mut out);
    assert_eq!(offsets(&mut out), vec![100, 200]);
    a.handle_message(3, ack(100), &mut out);
    assert_eq!(offsets(&mut out), Vec::<u64>::new());
    // A request crossing the transfer changes nothing.
    a.handle_message(3, M::CatchUpRequest { from_slot: 0 }, &mut out);
    assert_eq!(offsets(&mut out), Vec::<u64>::new());
    // Silence: every retransmission interval, the window again from the acknowledged offset;
    // after SNAPSHOT_SEND_TIMEOUTS_MAX intervals, the sender gives up.
    let mut resends = 0;
    for _ in 0..retransmit * (crate::config::SNAPSHOT_SEND_TIMEOUTS_MAX + 1) {
        a.transfer_tick(&mut out);
        match offsets(&mut out)[..] {
            [] => {}
            [100, 200] => resends += 1,
            ref other => panic!("{other:?}"),
        }
    }
    assert_eq!(resends, crate::config::SNAPSHOT_SEND_TIMEOUTS_MAX);
    assert!(a.outgoing.is_empty());
    // A late ack finds no transfer; a new request starts one from the beginning.
    a.handle_message(3, ack(300), &mut out);
    assert_eq!(offsets(&mut out), Vec::<u64>::new());
    a.handle_message(3, M::CatchUpRequest { from_slot: 0 }, &mut out);
    assert_eq!(offsets(&mut out), vec![0, 100]);

    // The receiver's side: one transfer at a time, and catch-up requests wait for it.
    let mut net = Net::default();
    let mut c = behind(&a, b, &mut net);
    net.queue.clear();
    a.outgoing.clear();
    a.handle_message(3, M::CatchUpRequest { from_slot: 0 }, &mut out);
    let chunk = out.take().messages.into_iter().next().unwrap().1;
    assert!(matches!(chunk, M::SnapshotChunk { offset: 0, .. }));
    c.handle_message(1, chunk.clone(), &mut out);
    assert_eq!(
        out.take().messages,
        vec![(1, ack(100))],
        "the receiver needs offset 100 next"
    );
    // A duplicate, or a chunk past a gap: nothing written, the same answer.
    let M::SnapshotChunk { digest, .. } = &chunk else {
        panic!("{chunk:?}")
    };
    let past_a_gap = M::SnapshotChunk {
        slot: 8,
        digest: *digest,
        offset: 200,
        data: vec![0; 100],
    };
    for again in [chunk.clone(), past_a_gap] {
        c.handle_message(1, again, &mut out);
        assert_eq!(out.take().messages, vec![(1, ack(100))]);
    }
    // Another peer's transfer is told to stop while ours progresses.
    let other = M::SnapshotChunk {
        slot: 9,
        digest: digest_of(b"another"),
        offset: 0,
        data: b"another".to_vec(),
    };
    c.handle_message(2, other, &mut out);
    let stop = M::SnapshotAck {
        slot: 9,
        next_offset: 7,
        done: true,
    };
    assert_eq!(out.take().messages, vec![(2, stop)]);
    assert_eq!(c.incoming.as_ref().map(|i| (i.from, i.slot)), Some((1, 8)));
    // A commit index from the leader: no catch-up request while the snapshot comes.
    let commit = M::Commit {
        ballot: b,
        commit: 9,
    };
    c.catch_up_cooldown = 0;
    c.handle_message(1, commit, &mut out);
    assert!(out.take().messages.is_empty());
    // Without progress, the receiver drops the transfer one interval after the sender gave up,
    // and asks again.
    let ticks = retransmit * (crate::config::SNAPSHOT_SEND_TIMEOUTS_MAX + 1);
    for _ in 0..ticks {
        c.transfer_tick(&mut out);
    }
    assert!(c.incoming.is_some());
    c.transfer_tick(&mut out);
    assert!(c.incoming.is_none());
    c.learner_tick(&mut out);
    assert!(matches!(
        out.take().messages[..],
        [(_, M::CatchUpRequest { from_slot: 0 })]
    ));
    assert!(c.snapshots.list().unwrap().is_empty());
}

#[test]
fn a_transfer_finishes_its_snapshot_although_a_newer_one_is_taken() {
    let store = MemSnapshotStore::new();
    let (mut a, b, _) = kv_leader(&store, 8, 100, |c| {
        c.snapshot_chunk_bytes_max = 100;
    });
    let mut net = Net::default();
    let mut c = behind(&a, b, &mut net);
    // The transfer of the snapshot of slot 8 starts: its first window is on the way...
    let (from, _, request) = net.queue.pop_front().unwrap();
    let mut out = Outbox::new();
    a.handle_message(from, request, &mut out);
    net.collect(1, &mut out);
    assert_eq!(a.outgoing[&3].slot, 8);
    // ...when the leader decides 8 more slots and takes a snapshot of slot 16, and tells the
    // receiver that slots below 16 are chosen.
    let more = (8..16)
        .map(|i| (put(&format!("k{i}"), "v"), None))
        .collect();
    decide(&mut a, b, more);
    assert_eq!(a.latest.as_ref().unwrap().slot, 16);
    assert_eq!(a.log_start(), 16);
    let commit = M::Commit {
        ballot: b,
        commit: 16,
    };
    net.queue.push_back((1, 3, commit));
    // The transfer goes on with the file of slot 8, which is installed; the receiver, still
    // behind the compacted log, then gets the snapshot of slot 16.
    net.run(&mut [&mut a, &mut c], &mut perfect);
    let installs: Vec<Slot> = net.records[&3]
        .iter()
        .filter_map(|r| match r.record() {
            Record::Snapshot { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect();
    assert_eq!(installs, vec![8, 16]);
    assert_eq!(c.state(), a.state());
    assert_eq!(c.decided(), 16);
}

#[test]
fn a_received_snapshot_is_restored_in_place_without_opening_another_state_machine() {
    let store = MemSnapshotStore::new();
    let (mut a, b, _) = kv_leader(&store, 4, 10, |_| {});
    let opened = Arc::new(Mutex::new(0));
    let counter = opened.clone();
    let setup = Setup::new(Config::new(3, vec![1, 2, 3]), move || {
        *counter.lock().unwrap() += 1;
        Ok(KvStore::default())
    });
    let mut c = R::recover(setup, vec![]).unwrap();
    assert_eq!(*opened.lock().unwrap(), 1);
    let mut out = Outbox::new();
    let commit = M::Commit {
        ballot: b,
        commit: 4,
    };
    c.handle_message(1, commit, &mut out);
    let mut net = Net::default();
    net.collect(3, &mut out);
    net.run(&mut [&mut a, &mut c], &mut perfect);
    assert_eq!(c.state(), a.state());
    assert_eq!(
        *opened.lock().unwrap(),
        1,
        "restored into the one instance (a database may not open twice)"
    );
}

#[test]
fn snapshots_past_the_size_limit_are_neither_taken_nor_accepted() {
    let store = MemSnapshotStore::new();
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = 2;
    cfg.snapshot_bytes_max = 100;
    let (mut a, b) = lead::<KvStore>(cfg.into(), &store);
    let big = |i: u64| (put(&format!("k{i}"), &"v".repeat(200)), None);
    let records = decide(&mut a, b, (0..2).map(big).collect());
    // The state does not fit: no snapshot, no checkpoint, the log stays, and nothing is left
    // in the store.
    assert_eq!(a.metrics().snapshot_failures, 1);
    assert!(!records.iter().any(|r| r.is_checkpoint()));
    assert_eq!(a.log_start(), 0);
    assert!(store.list().unwrap().is_empty());
    // The next attempt waits for another interval of slots (not every step).
    decide(&mut a, b, vec![big(2)]);
    assert_eq!(a.metrics().snapshot_failures, 1);
    decide(&mut a, b, vec![big(3)]);
    assert_eq!(a.metrics().snapshot_failures, 2);

    // A receiver refuses a snapshot announced larger than its limit before storing a byte.
    let mut cfg = Config::new(3, vec![1, 2, 3]);
    cfg.snapshot_bytes_max = 100;
    let mut c = R::recover(cfg.into(), vec![]).unwrap();
    let mut out = Outbox::new();
    let digest = common::snapshot::SnapshotDigest {
        bytes: 101,
        crc32c: 0,
    };
    let chunk = M::SnapshotChunk {
        slot: 4,
        digest,
        offset: 0,
        data: vec![0; 50],
    };
    c.handle_message(1, chunk, &mut out);
    let done = M::SnapshotAck {
        slot: 4,
        next_offset: 101,
        done: true,
    };
    assert_eq!(out.take().messages, vec![(1, done)]);
    assert_eq!(c.metrics().snapshots_rejected, 1);
    assert!(c.incoming.is_none());
}

#[test]
fn a_receiver_that_restarts_mid_transfer_gets_it_again_from_offset_zero() {
    let store = MemSnapshotStore::new();
    let (mut a, b, _) = kv_leader(&store, 8, 100, |c| {
        c.snapshot_chunk_bytes_max = 100;
        c.snapshot_chunks_in_flight_max = 2;
    });
    let mut net = Net::default();
    let mut c = behind(&a, b, &mut net);
    // Delivers the next message of the queue.
    let step = |net: &mut Net, a: &mut R, c: &mut R| {
        let (from, to, m) = net.queue.pop_front().unwrap();
        let mut out = Outbox::new();
        let node = if to == 1 { a } else { c };
        node.handle_message(from, m, &mut out);
        net.collect(to, &mut out);
    };
    step(&mut net, &mut a, &mut c); // the request: chunks 0 and 100 go out
    step(&mut net, &mut a, &mut c); // chunk 0 arrives
    assert!(matches!(
        net.queue.back(),
        Some((
            3,
            1,
            M::SnapshotAck {
                next_offset: 100,
                ..
            }
        ))
    ));
    // The receiver restarts: what it received is gone with its unfinished file.
    let snapshots = c.snapshots.clone();
    c = R::recover_with_snapshots(Config::new(3, vec![1, 2, 3]).into(), vec![], snapshots).unwrap();
    step(&mut net, &mut a, &mut c); // chunk 100 reaches the restarted receiver
    assert!(matches!(
        net.queue.back(),
        Some((
            3,
            1,
            M::SnapshotAck {
                next_offset: 0,
                done: false,
                ..
            }
        ))
    ));
    step(&mut net, &mut a, &mut c); // the ack of chunk 0: the window slides to 200
    step(&mut net, &mut a, &mut c); // "offset 0": the sender goes back there
    let offsets: Vec<u64> = net
        .queue
        .iter()
        .filter_map(|(_, _, m)| match m {
            M::SnapshotChunk { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect();
    assert_eq!(offsets, vec![200, 0, 100]);
    net.run(&mut [&mut a, &mut c], &mut perfect);
    assert_eq!(c.state(), a.state());
    assert_eq!(c.metrics().snapshots_installed, 1);
}

/// A key-value store whose next restore fails part-way (after clearing its state), as a state
/// machine over a failing disk would.
#[derive(Debug, Default)]
struct FailingRestore {
    kv: KvStore,
    fail_next: Arc<std::sync::atomic::AtomicBool>,
}

impl StateMachine for FailingRestore {
    type Command = KvCommand;
    type Query = crate::state_machine::KvQuery;
    type Output = crate::state_machine::KvOutput;

    fn apply(&mut self, index: u64, command: &KvCommand) -> Self::Output {
        self.kv.apply(index, command)
    }

    fn query(&self, query: &crate::state_machine::KvQuery) -> Self::Output {
        self.kv.query(query)
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        self.kv.snapshot(out)
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.kv = KvStore::default();
            return Err(StateMachineError::Malformed(
                "disk failed mid-restore".into(),
            ));
        }
        self.kv.restore(input)
    }
}

#[test]
fn a_restore_failing_part_way_stops_applying_until_a_snapshot_restores() {
    let store = MemSnapshotStore::new();
    let (mut a, b, _) = kv_leader(&store, 4, 10, |_| {});
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = fail.clone();
    let setup = Setup::new(Config::new(3, vec![1, 2, 3]), move || {
        Ok(FailingRestore {
            kv: KvStore::default(),
            fail_next: flag.clone(),
        })
    });
    let mut c: Replica<FailingRestore> = Replica::recover(setup, vec![]).unwrap();
    let mut out = Outbox::new();
    c.handle_message(
        1,
        Message::Commit {
            ballot: b,
            commit: a.decided(),
        },
        &mut out,
    );
    // Pump by hand: the two replicas have different state machine types.
    let mut to_a: VecDeque<Message<KvCommand>> = VecDeque::new();
    let mut to_c: VecDeque<Message<KvCommand>> = VecDeque::new();
    let mut pump = |a: &mut R, c: &mut Replica<FailingRestore>, out_c: &mut Outbox<_>| {
        for (to, m) in out_c.take().messages {
            if to == 1 {
                to_a.push_back(m);
            }
        }
        for _ in 0..10_000 {
            if let Some(m) = to_a.pop_front() {
                let mut o = Outbox::new();
                a.handle_message(3, m, &mut o);
                to_c.extend(
                    o.take()
                        .messages
                        .into_iter()
                        .filter(|(t, _)| *t == 3)
                        .map(|(_, m)| m),
                );
            } else if let Some(m) = to_c.pop_front() {
                let mut o: Outbox<Replica<FailingRestore>> = Outbox::new();
                c.handle_message(1, m, &mut o);
                to_a.extend(
                    o.take()
                        .messages
                        .into_iter()
                        .filter(|(t, _)| *t == 1)
                        .map(|(_, m)| m),
                );
            } else {
                break;
            }
        }
    };
    pump(&mut a, &mut c, &mut out);
    assert!(c.state_invalid, "the failed restore left an unknown state");
    assert!(c.metrics().snapshots_rejected >= 1);
    assert_eq!(c.applied, 0, "nothing applied on an unknown state");
    // The catch-up timer asks again; this time the restore succeeds.
    for _ in 0..200 {
        let mut o = Outbox::new();
        c.tick(&mut o);
        pump(&mut a, &mut c, &mut o);
        if !c.state_invalid && c.applied == a.applied {
            break;
        }
    }
    assert!(!c.state_invalid);
    assert_eq!(c.applied, a.applied);
    assert_eq!(c.state.kv, *a.state());
}

#[test]
fn the_log_is_compacted_by_bytes_as_well_as_by_slots() {
    let store = MemSnapshotStore::new();
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = 1_000_000;
    cfg.snapshot_log_bytes_max = 10_000;
    let (mut a, b) = lead::<KvStore>(cfg.into(), &store);
    let big = |i: u64| (put(&format!("k{i}"), &"v".repeat(3_000)), None);
    // Three commands of about 3 KB: under the limit, nothing compacted.
    let records = decide(&mut a, b, (0..3).map(big).collect());
    assert!(!records.iter().any(|r| r.is_checkpoint()));
    assert_eq!(a.log_start(), 0);
    // The fourth passes 10 000 bytes: a snapshot, and the log starts after it.
    let records = decide(&mut a, b, vec![big(3)]);
    assert_eq!(records.iter().filter(|r| r.is_checkpoint()).count(), 1);
    assert_eq!(a.log_start(), a.applied);
    assert_eq!(a.log_bytes, 0);
}
