//! Stop-signs, configurations and the hand-over between them.

use super::*;

/// Asks `a` to change the acceptors to `members`, as request `id`.
fn reconfigure(a: &mut R, id: u64, members: &[NodeId], out: &mut Outbox<R>) {
    a.handle_request(
        RequestId(id),
        Request::Reconfigure {
            members: members.to_vec(),
        },
        out,
    );
}

// Long: one scenario followed step by step, asserting each step's exact effects; split up,
// every part would have to rebuild the state the previous steps left.
#[test]
fn stop_sign_ends_the_configuration_and_the_leader_carries_on_in_the_next() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    out.take();
    reconfigure(&mut a, 1, &[1, 2, 4], &mut out);
    let e = out.take();
    let ss = stop_sign(1, &[1, 2, 4]);
    let accept = M::Accept {
        ballot: b,
        slot: 0,
        values: vec![ss.clone()].into(),
        commit: 0,
    };
    assert_eq!(e.messages, vec![(2, accept.clone()), (3, accept)]);
    // A second change while one is in flight is refused; a command waits: nothing is proposed
    // after a stop-sign.
    reconfigure(&mut a, 2, &[1, 2], &mut out);
    a.handle_request(
        RequestId(3),
        Request::Propose {
            command: put("k", "v"),
            session: None,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.messages.is_empty());
    assert_eq!(
        e.responses,
        vec![(RequestId(2), Response::Failed(PaxosError::Busy))]
    );
    assert_eq!(a.metrics().queued, 1);
    // The stop-sign is chosen: the change took effect from slot 1 on.
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
    assert_eq!(
        e.responses,
        vec![(RequestId(1), Response::Reconfigured { epoch: 1, slot: 1 })]
    );
    let m = a.metrics();
    assert_eq!(
        (m.epoch, m.members.clone(), m.is_member),
        (1, vec![1, 2, 4], true)
    );
    // The old members hear that the stop-sign was chosen; the leader runs phase 1 again with a
    // ballot of the new epoch, among the new members only.
    let b1 = Ballot::in_epoch(1, 1, 1);
    assert!(e.messages.contains(&(
        3,
        M::Commit {
            ballot: b,
            commit: 1
        }
    )));
    let prepare = M::Prepare {
        ballot: b1,
        from_slot: 1,
    };
    assert!(e.messages.contains(&(2, prepare.clone())));
    assert!(e.messages.contains(&(4, prepare)));
    assert!(!e
        .messages
        .iter()
        .any(|(to, m)| *to == 3 && matches!(m, M::Prepare { .. })));
    assert_eq!(
        e.records,
        vec![
            Persist::Append(Record::Commit { decided: 1 }),
            Persist::Append(Record::Promise(b1)),
        ]
    );
    // Node 3 is no member any more: its messages are rejected and counted.
    let rejected = a.metrics().rejected;
    a.handle_message(
        3,
        M::Promise {
            ballot: b1,
            decided: 1,
            accepted: vec![],
        },
        &mut out,
    );
    assert_eq!(a.metrics().rejected, rejected + 1);
    assert!(!a.is_leader());
    // A majority of the new configuration (1 and 4) completes phase 1; the carried command is
    // proposed under the new ballot, after the stop-sign.
    a.handle_message(
        4,
        M::Promise {
            ballot: b1,
            decided: 1,
            accepted: vec![],
        },
        &mut out,
    );
    assert!(a.is_leader());
    let e = out.take();
    let accept = M::Accept {
        ballot: b1,
        slot: 1,
        values: vec![batch(b1, &[put("k", "v")])].into(),
        commit: 1,
    };
    assert!(e.messages.contains(&(4, accept)));
    // A member that shows it has not learned the configuration (its decided slot is below the
    // configuration's first) is sent the commit index, so it catches up even on an idle cluster.
    let round = a.election.round;
    a.handle_message(
        2,
        M::HeartbeatReply {
            round,
            ballot: Ballot::new(1, 2),
            quorum_connected: true,
            leader: b,
            leader_alive: true,
            decided: 0,
        },
        &mut out,
    );
    assert_eq!(
        out.take().messages,
        vec![(
            2,
            M::Commit {
                ballot: b1,
                commit: 1
            }
        )]
    );
}

// Long: one scenario followed step by step, asserting each step's exact effects; split up,
// every part would have to rebuild the state the previous steps left.
#[test]
fn removed_leader_steps_down_and_goes_passive() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    reconfigure(&mut a, 1, &[2, 3, 4], &mut out);
    a.handle_request(
        RequestId(2),
        Request::Propose {
            command: put("k", "v"),
            session: None,
        },
        &mut out,
    );
    out.take();
    a.handle_message(
        3,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 1,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(
        e.responses,
        vec![
            (RequestId(1), Response::Reconfigured { epoch: 1, slot: 1 }),
            (
                RequestId(2),
                Response::Failed(PaxosError::NotLeader { leader: None })
            ),
        ]
    );
    assert!(!a.is_leader());
    assert!(!a.metrics().is_member);
    // The new members hear that the stop-sign was chosen (4 learns it is in).
    assert!(e.messages.contains(&(
        4,
        M::Commit {
            ballot: b,
            commit: 1
        }
    )));
    // A removed replica runs no election; it only tells the new members, each heartbeat round,
    // until each showed it learned the new configuration.
    for _ in 0..2 {
        a.tick(&mut out);
    }
    let e = out.take();
    let mut told: Vec<_> = e.messages.iter().map(|(to, _)| *to).collect();
    told.sort();
    assert_eq!(told, vec![2, 3, 4]);
    assert!(e
        .messages
        .iter()
        .all(|(_, m)| matches!(m, M::Heartbeat { .. })));
    let round = match e.messages[0].1 {
        M::Heartbeat { round } => round,
        _ => unreachable!(),
    };
    for from in [2, 3, 4] {
        a.handle_message(
            from,
            M::HeartbeatReply {
                round,
                ballot: Ballot::in_epoch(1, 1, from),
                quorum_connected: true,
                leader: Ballot::in_epoch(1, 1, 2),
                leader_alive: true,
                decided: 1,
            },
            &mut out,
        );
    }
    out.take();
    for _ in 0..10 {
        a.tick(&mut out);
    }
    assert!(out.take().messages.is_empty());
    // ...and refuses requests.
    reconfigure(&mut a, 3, &[1, 2, 3], &mut out);
    assert!(matches!(
        out.take().responses[..],
        [(RequestId(3), Response::Failed(PaxosError::NotLeader { .. }))]
    ));
}

#[test]
fn acceptor_refuses_ballots_of_other_epochs_and_catches_up() {
    let mut b = replica(2);
    let mut out = Outbox::new();
    let later = Ballot::in_epoch(1, 1, 1);
    b.handle_message(
        1,
        M::Prepare {
            ballot: later,
            from_slot: 3,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.records.is_empty(), "no promise across configurations");
    assert_eq!(e.messages, vec![(1, M::CatchUpRequest { from_slot: 0 })]);
    assert_eq!(b.metrics().promised, Ballot::ZERO);
    assert_eq!(b.metrics().stale, 1);
    // It learns the stop-sign that moved the cluster on, and then takes part.
    b.handle_message(
        1,
        M::CatchUp {
            from_slot: 0,
            values: vec![Value::Noop, stop_sign(1, &[1, 2, 4])],
        },
        &mut out,
    );
    out.take();
    assert_eq!(b.metrics().epoch, 1);
    b.handle_message(
        1,
        M::Prepare {
            ballot: later,
            from_slot: 2,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(e.records, vec![Persist::Append(Record::Promise(later))]);
    // A ballot of the old configuration is refused now, although it is the same round.
    b.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(9, 1),
            slot: 2,
            values: vec![Value::Noop].into(),
            commit: 0,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.records.is_empty());
    assert!(e.messages.is_empty());
}

#[test]
fn joining_replica_learns_before_it_votes() {
    // Node 4 starts outside the first configuration {1, 2, 3}.
    let mut d = R::recover(Config::new(4, vec![1, 2, 3]).into(), vec![]).unwrap();
    let mut out = Outbox::new();
    assert!(!d.metrics().is_member);
    for _ in 0..10 {
        d.tick(&mut out);
    }
    assert!(out.take().messages.is_empty(), "a learner runs no election");
    // An accept of the first configuration is not for it to vote on.
    d.handle_message(
        1,
        M::Accept {
            ballot: Ballot::new(1, 1),
            slot: 0,
            values: vec![Value::Noop].into(),
            commit: 0,
        },
        &mut out,
    );
    assert!(out.take().records.is_empty());
    // The leader of the configuration that added it prepares: it asks for catch-up first...
    let b1 = Ballot::in_epoch(1, 2, 1);
    let prepare = M::Prepare {
        ballot: b1,
        from_slot: 2,
    };
    d.handle_message(1, prepare.clone(), &mut out);
    let e = out.take();
    assert!(e.records.is_empty());
    assert_eq!(e.messages, vec![(1, M::CatchUpRequest { from_slot: 0 })]);
    // ...learns the stop-sign (here by snapshot, the leader having compacted its log)...
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.snapshot_interval_slots = 2;
    let mut a = R::recover(
        cfg.into(),
        vec![
            Record::Accept {
                ballot: Ballot::new(1, 1),
                slot: 0,
                values: vec![Value::Noop, stop_sign(1, &[1, 2, 4])].into(),
            },
            Record::Commit { decided: 2 },
        ],
    )
    .unwrap();
    assert_eq!(a.metrics().epoch, 1, "recovery replays the stop-sign");
    // The snapshot the replayed slots call for is taken at the first step after recovery.
    assert_eq!(a.log_start(), 0);
    a.tick(&mut out);
    assert!(out.take().records.iter().any(|r| r.is_checkpoint()));
    assert_eq!(a.log_start(), 2);
    let mut net = Net::default();
    a.handle_message(4, M::CatchUpRequest { from_slot: 0 }, &mut out);
    net.collect(1, &mut out);
    assert!(matches!(
        net.queue.front(),
        Some((1, 4, M::SnapshotChunk { slot: 2, .. }))
    ));
    net.run(&mut [&mut a, &mut d], &mut perfect);
    let m = d.metrics();
    assert_eq!((m.epoch, m.is_member, m.decided), (1, true, 2));
    // ...and then promises.
    d.handle_message(1, prepare, &mut out);
    let e = out.take();
    assert_eq!(e.records, vec![Persist::Append(Record::Promise(b1))]);
    assert!(matches!(e.messages[..], [(1, M::Promise { .. })]));
}

#[test]
fn settling_stop_signs_voids_outlived_ones_and_cuts_after_standing_ones() {
    let b = |r| Ballot::new(r, 1);
    let mut chosen: BTreeMap<Slot, (Ballot, Value<KvCommand>)> = BTreeMap::new();
    chosen.insert(3, (b(2), stop_sign(1, &[1, 2])));
    chosen.insert(4, (b(3), Value::Noop)); // a later slot under a higher ballot: void
    chosen.insert(6, (b(4), stop_sign(1, &[1, 3])));
    chosen.insert(7, (b(1), Value::Noop)); // lower ballot after a standing stop-sign: dropped
    assert_eq!(
        crate::core::reconfig::settle_stop_signs(&mut chosen),
        Some(6)
    );
    assert_eq!(chosen.get(&3), Some(&(b(2), Value::Noop)));
    assert!(chosen.contains_key(&4));
    assert!(!chosen.contains_key(&7));
    let mut none: BTreeMap<Slot, (Ballot, Value<KvCommand>)> = BTreeMap::new();
    none.insert(0, (b(1), Value::Noop));
    assert_eq!(crate::core::reconfig::settle_stop_signs(&mut none), None);
}

#[test]
fn invalid_reconfiguration_is_refused() {
    let (mut a, _) = leader();
    let mut out = Outbox::new();
    out.take();
    for members in [vec![], vec![1, 1, 2]] {
        a.handle_request(RequestId(1), Request::Reconfigure { members }, &mut out);
        assert!(matches!(
            out.take().responses[..],
            [(RequestId(1), Response::Failed(PaxosError::Config(_)))]
        ));
    }
    // The same members: nothing to do.
    reconfigure(&mut a, 2, &[1, 2, 3], &mut out);
    assert_eq!(
        out.take().responses,
        vec![(RequestId(2), Response::Reconfigured { epoch: 0, slot: 0 })]
    );
}

/// A leader may learn its own stop-sign's configuration from a snapshot rather than by
/// applying the slot (it fell behind while the others compacted). The change it asked for is
/// answered then; left pending, it made the leader refuse every later change as `Busy`, in the
/// new configuration too (found by a reconfiguration sweep, seed 12629 of 30,000).
#[test]
fn a_change_learned_from_a_snapshot_is_answered_and_frees_the_next() {
    for (adopted, answer) in [
        (vec![1, 2, 4], Response::Reconfigured { epoch: 1, slot: 1 }),
        (
            vec![1, 2, 3, 5],
            Response::Failed(PaxosError::LeadershipLost),
        ),
    ] {
        let (mut a, _) = leader();
        let mut out = Outbox::new();
        out.take();
        reconfigure(&mut a, 1, &[1, 2, 4], &mut out);
        out.take();
        // What installing a snapshot of the next configuration does to the membership.
        a.adopt_membership(
            Membership {
                epoch: 1,
                start: 1,
                members: adopted.clone(),
            },
            &mut out,
        );
        let e = out.take();
        assert_eq!(
            e.responses,
            vec![(RequestId(1), answer)],
            "adopted {adopted:?}"
        );
        assert!(a.proposer.reconfig_pending.is_none());
    }
}
