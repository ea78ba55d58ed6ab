//! Taking a snapshot, compacting, and serving a lagging peer from it.

use super::*;

// Long: one scenario followed step by step, asserting each step's exact effects; split up,
// every part would have to rebuild the state the previous steps left.
#[test]
fn snapshot_checkpoints_compacts_and_serves_lagging_peers() {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = 2;
    cfg.eager_slots_max = 2;
    let (mut a, b) = leader_with(cfg);
    let mut out = Outbox::new();
    let session = Some(Session { client: 9, seq: 1 });
    a.handle_request(
        RequestId(1),
        Request::Propose {
            command: put("a", "1"),
            session,
        },
        &mut out,
    );
    a.handle_request(
        RequestId(2),
        Request::Propose {
            command: put("b", "2"),
            session: None,
        },
        &mut out,
    );
    out.take();
    a.handle_message(
        2,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 2,
        },
        &mut out,
    );
    let e = out.take();
    // Two applied slots reach the interval: a checkpoint, and the log is compacted.
    let checkpoint = e
        .records
        .iter()
        .find(|r| r.is_checkpoint())
        .map(|r| r.record().clone())
        .unwrap();
    assert!(matches!(
        checkpoint,
        Record::Snapshot {
            slot: 2,
            promised,
            decided: 2,
            ..
        } if promised == b
    ));
    assert_eq!(a.log_start(), 2);
    // A peer asking for slot 0 gets the snapshot file instead of values, in chunks.
    let mut net = Net::default();
    a.handle_message(3, M::CatchUpRequest { from_slot: 0 }, &mut out);
    net.collect(1, &mut out);
    assert!(matches!(
        net.queue.front(),
        Some((
            1,
            3,
            M::SnapshotChunk {
                slot: 2,
                offset: 0,
                ..
            }
        ))
    ));
    // The peer installs it: same state, same sessions (the retry is recognised), durably.
    let mut c = replica(3);
    net.run(&mut [&mut a, &mut c], &mut perfect);
    assert!(net.records[&3].iter().any(|r| r.is_checkpoint()));
    assert_eq!(c.state(), a.state());
    assert_eq!(c.metrics().snapshots_installed, 1);
    assert_eq!(c.decided(), 2);
    assert_eq!(
        c.learner.sessions.check(Session { client: 9, seq: 1 }),
        crate::state_machine::Dedup::Duplicate(Some(KvOutput::Value(None)))
    );
    assert!(
        a.snapshots.outgoing.is_empty(),
        "the sender heard the transfer is done"
    );
    // Recovery from the checkpoint and the snapshot store rebuilds the same replica.
    let cfg = || Config::new(1, vec![1, 2, 3]).into();
    let r = R::recover_with_snapshots(cfg(), vec![checkpoint.clone()], a.snapshots.store.clone())
        .unwrap();
    assert_eq!(r.state(), a.state());
    assert_eq!(r.metrics().promised, b);
    assert_eq!(r.metrics().sessions, 1);
    // Without the store that holds its file, the checkpoint does not recover.
    assert!(matches!(
        R::recover(cfg(), vec![checkpoint]),
        Err(PaxosError::SnapshotMissing { slot: 2, .. })
    ));
}

#[test]
fn undecodable_snapshot_is_rejected_and_changes_nothing() {
    let mut c = replica(3);
    let mut out = Outbox::new();
    // A replica with some state of its own.
    let learned = M::CatchUp {
        from_slot: 0,
        values: vec![batch(Ballot::new(1, 1), &[put("a", "1")])],
    };
    c.handle_message(1, learned, &mut out);
    out.take();
    let before = c.state().clone();
    // Bytes that match their digest but are no snapshot.
    let data = vec![0xff; 3];
    c.handle_message(
        1,
        M::SnapshotChunk {
            slot: 5,
            digest: digest_of(&data),
            offset: 0,
            data,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.records.is_empty());
    assert_eq!(
        e.messages,
        vec![(
            1,
            M::SnapshotAck {
                slot: 5,
                next_offset: 3,
                done: true
            }
        )]
    );
    assert_eq!(c.metrics().rejected, 1);
    assert_eq!(c.metrics().snapshots_rejected, 1);
    assert_eq!((c.decided(), c.metrics().applied), (1, 1));
    assert_eq!(c.state(), &before);
    assert!(
        c.snapshots.store.list().unwrap().is_empty(),
        "the file is deleted"
    );
}
