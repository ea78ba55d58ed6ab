//! Unit tests of recovery: the log, term and vote rebuilt from records, and a durable state
//! machine neither restored nor replayed past what it had applied.

use super::*;

#[test]
fn recover_rebuilds_term_vote_and_log_and_refuses_gaps() {
    let e = |term, index| Entry {
        term,
        index,
        payload: Payload::Command(put(&index.to_string())),
    };
    let records = vec![
        Record::HardState {
            term: 3,
            voted_for: Some(2),
        },
        Record::Entries(vec![e(1, 1), e(2, 2), e(2, 3)].into()),
        Record::Truncate { from: 3 },
        Record::Entries(vec![e(3, 3)].into()),
    ];
    let n = N::recover(cfg(1, 3).into(), records).unwrap();
    assert_eq!(
        (n.term(), n.last_log_index(), n.entry_term(3)),
        (3, 3, Some(3))
    );
    assert_eq!(n.voted_for, Some(2));
    assert_eq!(n.commit_index(), 0, "the commit index is volatile");
    let gap = vec![Record::Entries(vec![e(1, 2)].into())];
    assert!(matches!(
        N::recover(cfg(1, 3).into(), gap),
        Err(RecoverError::Corrupt(_))
    ));
    let back = vec![
        Record::HardState {
            term: 3,
            voted_for: None,
        },
        Record::HardState {
            term: 2,
            voted_for: None,
        },
    ];
    assert!(matches!(
        N::recover(cfg(1, 3).into(), back),
        Err(RecoverError::Corrupt(_))
    ));
}

/// A state machine that persists its state and applied index in a shared "database", the way
/// one over an embedded database would: it reopens with what it had applied.
#[derive(Debug)]
struct Durable {
    db: std::sync::Arc<std::sync::Mutex<(KvStore, u64)>>,
    kv: KvStore,
    applied: u64,
    applies: std::sync::Arc<std::sync::atomic::AtomicU64>,
    restores: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl crate::StateMachine for Durable {
    type Command = KvCommand;
    type Query = KvQuery;
    type Output = KvOutput;

    fn apply(&mut self, index: u64, command: &KvCommand) -> KvOutput {
        self.applies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.kv.apply(index, command)
    }

    fn applied(&mut self, index: u64) {
        self.applied = index;
        *self.db.lock().unwrap() = (self.kv.clone(), index);
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn query(&self, query: &KvQuery) -> KvOutput {
        self.kv.query(query)
    }

    fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<(), common::StateMachineError> {
        self.kv.snapshot(out)
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), common::StateMachineError> {
        self.restores
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.kv.restore(input)
    }
}

#[test]
fn a_durable_state_machine_is_neither_restored_nor_replayed_past_its_applied_index() {
    use crate::StateMachine as _;
    use std::sync::atomic::Ordering;
    let db = std::sync::Arc::new(std::sync::Mutex::new((KvStore::default(), 0)));
    let applies = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let restores = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let setup = {
        let (db, applies, restores) = (db.clone(), applies.clone(), restores.clone());
        common::Setup::new(cfg(1, 3), move || {
            let (kv, applied) = db.lock().unwrap().clone();
            Ok(Durable {
                db: db.clone(),
                kv,
                applied,
                applies: applies.clone(),
                restores: restores.clone(),
            })
        })
    };
    type D = RaftNode<Durable>;
    let store = std::sync::Arc::new(common::snapshot::MemSnapshotStore::new());
    let mut n = D::recover_with_snapshots(setup.clone(), vec![], store.clone()).unwrap();
    let mut records = Vec::new();
    let mut out = Outbox::new();
    let entries: Vec<Entry<KvCommand>> = (1..=6)
        .map(|i| Entry {
            term: 1,
            index: i,
            payload: Payload::Command(put(&format!("v{i}"))),
        })
        .collect();
    n.handle_message(
        2,
        Message::AppendEntries {
            term: 1,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: entries.into(),
            leader_commit: 6,
            read_seq: 0,
        },
        &mut out,
    );
    records.extend(out.take().records.into_iter().map(|p| p.record().clone()));
    assert_eq!(n.applied_index(), 6);
    assert_eq!(applies.load(Ordering::Relaxed), 6);
    assert_eq!(
        db.lock().unwrap().1,
        6,
        "applied() reported the batch's end"
    );

    // Restart: the state machine reopens at 6 and nothing is applied again.
    let n = D::recover_with_snapshots(setup, records, store).unwrap();
    assert_eq!(n.applied_index(), 6);
    assert_eq!(n.state_machine().applied_index(), 6);
    assert_eq!(applies.load(Ordering::Relaxed), 6);
    assert_eq!(restores.load(Ordering::Relaxed), 0);
    assert_eq!(
        n.state_machine().query(&KvQuery::Get("k".into())),
        KvOutput::Value(Some("v6".into()))
    );
}
