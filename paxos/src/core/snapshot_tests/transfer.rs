//! Catch-up by snapshot in chunks: loss, duplication, reordering, corruption, stalls,
//! size limits and restarts mid-transfer.

use super::*;

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
        assert!(matches!(
            c.learner.sessions.check(last),
            Dedup::Duplicate(Some(_))
        ));
        // One checkpoint names the one file the receiver keeps; the sender is done.
        let checkpoints: Vec<_> = net.records[&3]
            .iter()
            .filter(|r| r.is_checkpoint())
            .collect();
        assert_eq!(checkpoints.len(), 1);
        assert_eq!(c.snapshots.store.list().unwrap().len(), 1);
        assert!(a.snapshots.outgoing.is_empty(), "seed {seed}");
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
    assert!(c.snapshots.store.list().unwrap().is_empty());
    assert!(c.snapshots.incoming.is_none());
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
    let file = a.snapshots.latest.as_ref().unwrap().file;
    assert!(file.bytes > FRAME_BYTES_MAX as u64);
    assert!(file.bytes > common::storage::RECORD_BYTES_MAX as u64);
    // The checkpoint names the file: it is small however large the state.
    let checkpoint = records.iter().rfind(|r| r.is_checkpoint()).unwrap();
    assert!(Bincode.encode(checkpoint.record()).unwrap().len() < 1024);
    let mut net = Net::default();
    let mut c = behind(&a, b, &mut net);
    let chunk_max = a.shared.config.snapshot_chunk_bytes_max;
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
    let received = c.snapshots.latest.as_ref().unwrap().file;
    assert_eq!((received.bytes, received.crc32c), (file.bytes, file.crc32c));
}

// Long: one scenario followed step by step, asserting each step's exact effects; split up,
// every part would have to rebuild the state the previous steps left.
#[test]
fn stalled_transfers_resend_from_the_acknowledged_offset_then_give_up() {
    let store = MemSnapshotStore::new();
    let (mut a, b, _) = kv_leader(&store, 8, 100, |c| {
        c.snapshot_chunk_bytes_max = 100;
        c.snapshot_chunks_in_flight_max = 2;
    });
    let retransmit = a.shared.config.retransmit_ticks;
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
    assert!(a.snapshots.outgoing.is_empty());
    // A late ack finds no transfer; a new request starts one from the beginning.
    a.handle_message(3, ack(300), &mut out);
    assert_eq!(offsets(&mut out), Vec::<u64>::new());
    a.handle_message(3, M::CatchUpRequest { from_slot: 0 }, &mut out);
    assert_eq!(offsets(&mut out), vec![0, 100]);

    // The receiver's side: one transfer at a time, and catch-up requests wait for it.
    let mut net = Net::default();
    let mut c = behind(&a, b, &mut net);
    net.queue.clear();
    a.snapshots.outgoing.clear();
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
    assert_eq!(
        c.snapshots.incoming.as_ref().map(|i| (i.from, i.slot)),
        Some((1, 8))
    );
    // A commit index from the leader: no catch-up request while the snapshot comes.
    let commit = M::Commit {
        ballot: b,
        commit: 9,
    };
    c.learner.catch_up.cooldown = 0;
    c.handle_message(1, commit, &mut out);
    assert!(out.take().messages.is_empty());
    // Without progress, the receiver drops the transfer one interval after the sender gave up,
    // and asks again.
    let ticks = retransmit * (crate::config::SNAPSHOT_SEND_TIMEOUTS_MAX + 1);
    for _ in 0..ticks {
        c.transfer_tick(&mut out);
    }
    assert!(c.snapshots.incoming.is_some());
    c.transfer_tick(&mut out);
    assert!(c.snapshots.incoming.is_none());
    c.learner_tick(&mut out);
    assert!(matches!(
        out.take().messages[..],
        [(_, M::CatchUpRequest { from_slot: 0 })]
    ));
    assert!(c.snapshots.store.list().unwrap().is_empty());
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
    assert_eq!(a.snapshots.outgoing[&3].slot, 8);
    // ...when the leader decides 8 more slots and takes a snapshot of slot 16, and tells the
    // receiver that slots below 16 are chosen.
    let more = (8..16)
        .map(|i| (put(&format!("k{i}"), "v"), None))
        .collect();
    decide(&mut a, b, more);
    assert_eq!(a.snapshots.latest.as_ref().unwrap().slot, 16);
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
    assert!(c.snapshots.incoming.is_none());
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
    let snapshots = c.snapshots.store.clone();
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
