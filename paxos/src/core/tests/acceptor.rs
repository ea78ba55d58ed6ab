//! The acceptor's steps: promises (phase 1b), accepts (phase 2b), and what it refuses.

use super::*;

// Long: one scenario followed step by step, asserting each step's exact effects; split up,
// every part would have to rebuild the state the previous steps left.
#[test]
fn acceptor_promises_durably_and_reports_highest_accepted() {
    let mut b = replica(2);
    let mut out = Outbox::new();
    let b1 = Ballot::new(1, 1);
    let v = batch(b1, &[put("x", "1")]);
    b.handle_message(
        1,
        M::Accept {
            ballot: b1,
            slot: 0,
            values: vec![v.clone()].into(),
            commit: 0,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(
        e.records,
        vec![
            Persist::Append(Record::Promise(b1)),
            Persist::Append(Record::Accept {
                ballot: b1,
                slot: 0,
                values: vec![v.clone()].into()
            })
        ]
    );
    assert_eq!(
        e.messages,
        vec![(
            1,
            M::Accepted {
                ballot: b1,
                slot: 0,
                count: 1
            }
        )]
    );
    // A higher prepare: promise it, and report slot 0 accepted under b1.
    let b2 = Ballot::new(2, 3);
    b.handle_message(
        3,
        M::Prepare {
            ballot: b2,
            from_slot: 0,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(e.records, vec![Persist::Append(Record::Promise(b2))]);
    assert_eq!(
        e.messages,
        vec![(
            3,
            M::Promise {
                ballot: b2,
                decided: 0,
                accepted: vec![PromisedEntry {
                    slot: 0,
                    ballot: b1,
                    value: v
                }]
            }
        )]
    );
    // Now an accept under the lower b1 is refused, naming the promise; nothing is persisted.
    b.handle_message(
        1,
        M::Accept {
            ballot: b1,
            slot: 1,
            values: vec![Value::Noop].into(),
            commit: 0,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.records.is_empty());
    assert_eq!(
        e.messages,
        vec![(
            1,
            M::Nack {
                ballot: b1,
                promised: b2
            }
        )]
    );
    // And so is a prepare below the promise.
    b.handle_message(
        1,
        M::Prepare {
            ballot: b1,
            from_slot: 0,
        },
        &mut out,
    );
    assert_eq!(
        out.take().messages,
        vec![(
            1,
            M::Nack {
                ballot: b1,
                promised: b2
            }
        )]
    );
    assert_eq!(b.metrics().promised, b2);
    assert_eq!(b.metrics().stale, 2);
}

#[test]
fn bad_input_is_rejected_counted_and_leaves_the_promise_alone() {
    let mut b = replica(2);
    let mut out = Outbox::new();
    // Unknown sender.
    b.handle_message(
        9,
        M::Prepare {
            ballot: Ballot::new(5, 9),
            from_slot: 0,
        },
        &mut out,
    );
    // A ballot owned by someone other than the sender.
    b.handle_message(
        1,
        M::Prepare {
            ballot: Ballot::new(5, 3),
            from_slot: 0,
        },
        &mut out,
    );
    // Round 0 is not a real ballot.
    b.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(0, 1),
            slot: 0,
            values: vec![Value::Noop].into(),
            commit: 0,
        },
        &mut out,
    );
    // A slot far outside the window.
    b.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(5, 1),
            slot: 1 << 40,
            values: vec![Value::Noop].into(),
            commit: 0,
        },
        &mut out,
    );
    // An overflowing slot range.
    b.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(5, 1),
            slot: u64::MAX,
            values: vec![Value::Noop, Value::Noop].into(),
            commit: 0,
        },
        &mut out,
    );
    // An empty accept.
    b.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(5, 1),
            slot: 0,
            values: vec![].into(),
            commit: 0,
        },
        &mut out,
    );
    // An oversized catch-up.
    b.handle_message(
        1,
        M::CatchUp {
            from_slot: 0,
            values: vec![Value::Noop; 10_000],
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.records.is_empty(), "no durable change: {:?}", e.records);
    assert_eq!(b.metrics().promised, Ballot::ZERO);
    assert_eq!(b.metrics().rejected, 7);
    assert_eq!(b.decided(), 0);
}
