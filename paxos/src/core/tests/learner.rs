//! The learner's steps: deciding on a commit index, catch-up, applying once, and replaying
//! the records on recovery.

use super::*;

/// Replica 3 with slot 1 accepted under leader 1's ballot `b` and slot 0 never received, told
/// by the leader that both are chosen (commit index 2). Returns the replica, the outbox holding
/// what that commit index produced, and slot 0's and slot 1's chosen values.
fn gap_before_an_accepted_slot() -> (R, Outbox<R>, Value<KvCommand>, Value<KvCommand>) {
    let mut c = replica(3);
    let mut out = Outbox::new();
    let b = Ballot::new(2, 1);
    let v0 = batch(Ballot::new(1, 1), &[put("a", "1")]);
    let v1 = batch(b, &[put("a", "2")]);
    let accept = M::Accept {
        ballot: b,
        slot: 1,
        values: vec![v1.clone()].into(),
        commit: 0,
    };
    c.handle_message(1, accept, &mut out);
    out.take();
    c.handle_message(
        1,
        M::Commit {
            ballot: b,
            commit: 2,
        },
        &mut out,
    );
    (c, out, v0, v1)
}

#[test]
fn learner_decides_matching_ballot_and_catches_up_the_rest() {
    let (mut c, mut out, v0, v1) = gap_before_an_accepted_slot();
    let e = out.take();
    assert!(
        e.records.is_empty(),
        "slot 0 is unknown: nothing decided yet"
    );
    assert_eq!(e.messages, vec![(1, M::CatchUpRequest { from_slot: 0 })]);
    c.handle_message(
        1,
        M::CatchUp {
            from_slot: 0,
            values: vec![v0.clone(), v1.clone()],
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(
        e.records,
        vec![Persist::Append(Record::Learn {
            from_slot: 0,
            values: vec![v0, v1]
        })]
    );
    assert_eq!(c.decided(), 2);
    assert_eq!(c.metrics().applied, 2);
    assert_eq!(c.state().get("a"), Some("2"));
}

#[test]
fn retried_command_is_applied_once() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    let session = Some(Session { client: 5, seq: 1 });
    let append = KvCommand::Append {
        key: "k".into(),
        value: "x".into(),
    };
    for id in [1, 2] {
        a.handle_request(
            RequestId(id),
            Request::Propose {
                command: append.clone(),
                session,
            },
            &mut out,
        );
    }
    let e = out.take();
    // The retry arrived while the first copy was in flight: it takes no second slot.
    let accepts: Vec<_> = e
        .messages
        .iter()
        .filter(|(to, m)| *to == 2 && matches!(m, M::Accept { .. }))
        .collect();
    assert_eq!(accepts.len(), 1);
    assert_eq!(a.metrics().in_flight, 1);
    assert_eq!(a.metrics().retries_attached, 1);
    a.handle_message(
        2,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 1,
        },
        &mut out,
    );
    let e = out.take();
    // Both requests are answered by the one application.
    let applied = Response::Applied {
        slot: 0,
        output: KvOutput::Value(Some(String::new())),
    };
    assert_eq!(
        e.responses,
        vec![(RequestId(2), applied.clone()), (RequestId(1), applied)]
    );
    assert_eq!(a.state().get("k"), Some("x"));
    assert_eq!(a.metrics().duplicates, 0);
    // A third retry is answered from the session table without a slot.
    a.handle_request(
        RequestId(3),
        Request::Propose {
            command: append,
            session,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.messages.is_empty());
    assert_eq!(
        e.responses,
        vec![(
            RequestId(3),
            Response::Applied {
                slot: 1,
                output: KvOutput::Value(Some(String::new()))
            }
        )]
    );
}

#[test]
fn recover_rebuilds_promise_log_and_state() {
    let b = Ballot::new(2, 1);
    let v = batch(b, &[put("a", "1")]);
    let records = vec![
        Record::Promise(b),
        Record::Accept {
            ballot: b,
            slot: 0,
            values: vec![v.clone(), Value::Noop].into(),
        },
        Record::Commit { decided: 1 },
    ];
    let r = R::recover(Config::new(2, vec![1, 2, 3]).into(), records).unwrap();
    assert_eq!(r.metrics().promised, b);
    assert_eq!(r.decided(), 1);
    assert_eq!(r.state().get("a"), Some("1"));
    assert_eq!(r.decided_value(0), Some(&v));
    // A restarted replica's candidacy ballot is above anything it promised.
    assert!(r.election.ballot > b);
    // Contradictory records are refused.
    let bad = vec![Record::Commit { decided: 3 }];
    assert!(matches!(
        R::recover(Config::new(2, vec![1, 2, 3]).into(), bad),
        Err(PaxosError::Corrupt(_))
    ));
}

#[test]
fn a_decision_not_yet_logged_is_relearned_after_a_restart() {
    // A follower accepts slot 0 and learns that it is chosen: it applies it at once, but logs
    // the decision only with its next record or at its next tick (nothing it sends claims it).
    let config = || Config::new(3, vec![1, 2, 3]);
    let mut c = replica(3);
    let mut out = Outbox::new();
    let b = Ballot::new(2, 1);
    let v0 = batch(b, &[put("a", "1")]);
    let accept = M::Accept {
        ballot: b,
        slot: 0,
        values: vec![v0].into(),
        commit: 0,
    };
    c.handle_message(1, accept, &mut out);
    let mut records: Vec<Record<KvCommand>> = out
        .take()
        .records
        .iter()
        .map(|r| r.record().clone())
        .collect();
    let commit = M::Commit {
        ballot: b,
        commit: 1,
    };
    c.handle_message(1, commit.clone(), &mut out);
    let e = out.take();
    assert!(e.records.is_empty(), "{:?}", e.records);
    assert_eq!(c.state().get("a"), Some("1"));
    // A crash now loses the decision but not the accepted value: the restarted replica holds
    // slot 0 undecided, and relearns it from the leader's commit index.
    let mut r = R::recover(config().into(), records.clone()).unwrap();
    assert_eq!((r.decided(), r.state().get("a")), (0, None));
    r.handle_message(1, commit, &mut out);
    out.take();
    assert_eq!((r.decided(), r.state().get("a")), (1, Some("1")));
    // Without a crash, the next tick logs it, and a restart finds it.
    c.tick(&mut out);
    let logged = out.take().records;
    assert_eq!(logged, vec![Persist::Append(Record::Commit { decided: 1 })]);
    records.extend(logged.iter().map(|r| r.record().clone()));
    let r = R::recover(config().into(), records).unwrap();
    assert_eq!((r.decided(), r.state().get("a")), (1, Some("1")));
}

#[test]
fn slots_after_a_gap_are_decided_once_catch_up_fills_it() {
    // The peer asked knows slot 0 only (its own decided prefix ends there): once slot 0 arrives,
    // slot 1 is decided from the commit index already heard, without waiting for the leader to
    // send it again.
    let (mut c, mut out, v0, v1) = gap_before_an_accepted_slot();
    let e = out.take();
    assert_eq!(e.messages, vec![(1, M::CatchUpRequest { from_slot: 0 })]);
    assert_eq!(c.decided(), 0);
    c.handle_message(
        2,
        M::CatchUp {
            from_slot: 0,
            values: vec![v0],
        },
        &mut out,
    );
    out.take();
    assert_eq!(c.decided(), 2);
    assert_eq!(c.decided_value(1), Some(&v1));
    assert_eq!(c.state().get("a"), Some("2"));
}
