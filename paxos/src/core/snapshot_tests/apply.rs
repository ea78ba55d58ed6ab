//! The state-machine seam: batches per step, restoring in place, a restore failing part-way,
//! and compaction by bytes.

use super::*;

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

// Long: one scenario followed step by step, asserting each step's exact effects; split up,
// every part would have to rebuild the state the previous steps left.
#[test]
fn one_step_applies_its_slots_in_one_batch_without_duplicates() {
    let mut c: PaxosNode<Recorder> =
        PaxosNode::recover(Config::new(3, vec![1, 2, 3]).into(), vec![]).unwrap();
    let origin = Ballot::new(1, 1);
    let cmd = |client, payload| Command {
        session: Some(Session { client, seq: 1 }),
        payload,
    };
    let values = vec![
        Value::Batch {
            origin,
            commands: vec![cmd(1, 10), cmd(2, 20)].into(),
        },
        Value::Noop,
        // A retry of client 1's command, and a new one.
        Value::Batch {
            origin,
            commands: vec![cmd(1, 10), cmd(3, 30)].into(),
        },
    ];
    // This replica created the last batch: its two requests wait for it.
    c.learner
        .pending
        .insert(2, origin, vec![RequestId(7), RequestId(8)].into());
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
            commands: vec![cmd(4, 1)].into(),
        },
        Value::StopSign {
            epoch: 1,
            members: vec![1, 2, 3],
        },
        Value::Batch {
            origin,
            commands: vec![cmd(5, 2)].into(),
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
    let mut c: PaxosNode<FailingRestore> = PaxosNode::recover(setup, vec![]).unwrap();
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
    let mut pump = |a: &mut R, c: &mut PaxosNode<FailingRestore>, out_c: &mut Outbox<_>| {
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
                let mut o: Outbox<PaxosNode<FailingRestore>> = Outbox::new();
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
    assert!(
        c.learner.state_invalid,
        "the failed restore left an unknown state"
    );
    assert!(c.metrics().snapshots_rejected >= 1);
    assert_eq!(c.learner.applied, 0, "nothing applied on an unknown state");
    // The catch-up timer asks again; this time the restore succeeds.
    for _ in 0..200 {
        let mut o = Outbox::new();
        c.tick(&mut o);
        pump(&mut a, &mut c, &mut o);
        if !c.learner.state_invalid && c.learner.applied == a.learner.applied {
            break;
        }
    }
    assert!(!c.learner.state_invalid);
    assert_eq!(c.learner.applied, a.learner.applied);
    assert_eq!(c.learner.state.kv, *a.state());
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
    assert_eq!(a.log_start(), a.learner.applied);
    assert_eq!(a.learner.log_bytes, 0);
}
