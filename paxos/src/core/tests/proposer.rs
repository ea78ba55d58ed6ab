//! The proposer's steps: phase 1 once per leadership, phase 2 per slot, pipelining and
//! batching, retries held by the leader, reads, and stepping down.

use super::*;

// Long: one scenario followed step by step, asserting each step's exact effects; split up,
// every part would have to rebuild the state the previous steps left.
#[test]
fn phase1_reproposes_highest_ballot_values_and_fills_holes_with_noops() {
    let mut a = replica(1);
    let mut out = Outbox::new();
    let b = Ballot::new(3, 1);
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    out.take();
    let old = Ballot::new(1, 2);
    let newer = Ballot::new(2, 3);
    let v_old = batch(old, &[put("a", "old")]);
    let v_new = batch(newer, &[put("a", "new")]);
    let v2 = batch(old, &[put("b", "2")]);
    // Acceptor 2 reports slot 0 under `old` and slot 3 under `old`; acceptor 3 is not needed:
    // the leader itself and acceptor 2 form a majority.
    a.handle_message(
        2,
        M::Promise {
            ballot: b,
            decided: 0,
            accepted: vec![
                PromisedEntry {
                    slot: 0,
                    ballot: old,
                    value: v_old.clone(),
                },
                PromisedEntry {
                    slot: 3,
                    ballot: old,
                    value: v2.clone(),
                },
            ],
        },
        &mut out,
    );
    assert!(a.is_leader());
    let e = out.take();
    let sent: Vec<_> = e.messages.iter().filter(|(to, _)| *to == 2).collect();
    assert_eq!(
        sent,
        vec![&(
            2,
            M::Accept {
                ballot: b,
                slot: 0,
                values: vec![v_old.clone(), Value::Noop, Value::Noop, v2.clone()].into(),
                commit: 0
            }
        )]
    );
    // With a higher-ballot value from another promise, that one wins (fresh leader).
    let mut a = replica(1);
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    for (from, entry) in [(2, (old, v_old.clone())), (3, (newer, v_new.clone()))] {
        a.handle_message(
            from,
            M::Promise {
                ballot: b,
                decided: 0,
                accepted: vec![PromisedEntry {
                    slot: 0,
                    ballot: entry.0,
                    value: entry.1,
                }],
            },
            &mut out,
        );
    }
    let e = out.take();
    let accept = e
        .messages
        .iter()
        .find_map(|(_, m)| match m {
            M::Accept { values, .. } => Some(values.clone()),
            _ => None,
        })
        .unwrap();
    // Only acceptor 2's promise was needed for the majority; 3's came after phase 1 ended.
    assert_eq!(accept, vec![v_old].into());
}

#[test]
fn stable_leader_runs_only_phase2_per_command_and_answers_when_applied() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    out.take();
    a.handle_request(
        RequestId(7),
        Request::Propose {
            command: put("k", "v"),
            session: None,
        },
        &mut out,
    );
    let e = out.take();
    let v = batch(b, &[put("k", "v")]);
    assert_eq!(
        e.records,
        vec![Persist::Append(Record::Accept {
            ballot: b,
            slot: 0,
            values: vec![v.clone()].into()
        })]
    );
    let accept = M::Accept {
        ballot: b,
        slot: 0,
        values: vec![v].into(),
        commit: 0,
    };
    assert_eq!(e.messages, vec![(2, accept.clone()), (3, accept)]);
    assert!(e.responses.is_empty());
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
    // The decision is logged later, with the next record or at the next tick: nothing claims
    // it, and alone it would cost a sync of its own.
    assert!(e.records.is_empty(), "{:?}", e.records);
    assert_eq!(
        e.responses,
        vec![(
            RequestId(7),
            Response::Applied {
                slot: 0,
                output: KvOutput::Value(None)
            }
        )]
    );
    // The idle commit goes out on the next tick, and the decision is logged then.
    a.tick(&mut out);
    let e = out.take();
    assert_eq!(
        e.records,
        vec![Persist::Append(Record::Commit { decided: 1 })]
    );
    assert!(e.messages.contains(&(
        2,
        M::Commit {
            ballot: b,
            commit: 1
        }
    )));
}

/// Under steady load a Commit rides with the leader's next record once a tick, not beside
/// every Accept, and costs no write of its own: the first command after a decision carries it,
/// the next ones do not, and a tick after which one rode logs nothing alone; the tick after
/// that logs what is left.
#[test]
fn decisions_under_load_ride_with_one_record_a_tick() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    out.take();
    for slot in 0..3u64 {
        let key = format!("k{slot}");
        a.handle_request(
            RequestId(slot),
            Request::Propose {
                command: put(&key, "v"),
                session: None,
            },
            &mut out,
        );
        let accept = Persist::Append(Record::Accept {
            ballot: b,
            slot,
            values: vec![batch(b, &[put(&key, "v")])].into(),
        });
        let expected = if slot == 1 {
            vec![Persist::Append(Record::Commit { decided: 1 }), accept]
        } else {
            vec![accept]
        };
        assert_eq!(out.take().records, expected, "command {slot}");
        a.handle_message(
            2,
            M::Accepted {
                ballot: b,
                slot,
                count: 1,
            },
            &mut out,
        );
        let e = out.take();
        assert!(e.records.is_empty(), "{:?}", e.records);
        assert_eq!(e.responses.len(), 1, "command {slot} answered once chosen");
    }
    a.tick(&mut out);
    assert!(
        out.take().records.is_empty(),
        "a Commit rode since the last tick"
    );
    a.tick(&mut out);
    assert_eq!(
        out.take().records,
        vec![Persist::Append(Record::Commit { decided: 3 })]
    );
    a.tick(&mut out);
    assert!(out.take().records.is_empty(), "nothing new to log");
}

/// With `parallel_accept`, the leader's Accepts leave before its own acceptance is durable, and
/// that acceptance counts towards a majority only once the driver reports it durable (the rule
/// of Raft's §10.2.1 applied to phase 2).
#[test]
fn a_parallel_accept_goes_out_at_once_and_counts_the_leader_once_durable() {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.parallel_accept = true;
    let (mut a, b) = leader_with(cfg);
    let mut out = Outbox::new();
    // The promise of the election is durable.
    a.records_durable(u64::MAX, &mut out);
    out.take();
    a.handle_request(
        RequestId(7),
        Request::Propose {
            command: put("k", "v"),
            session: None,
        },
        &mut out,
    );
    let e = out.take();
    assert_eq!(e.records.len(), 1, "its own acceptance, to be written");
    assert!(e.messages.is_empty(), "nothing waits for the sync");
    let early: Vec<NodeId> = e
        .early
        .iter()
        .map(|(to, m)| {
            assert!(matches!(m, M::Accept { slot: 0, .. }), "{m:?}");
            *to
        })
        .collect();
    assert_eq!(early, vec![2, 3]);
    // One acceptor accepted durably; the leader's own acceptance is not durable yet.
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
    assert!(e.responses.is_empty() && e.early_responses.is_empty());
    assert_eq!(a.decided(), 0);
    // Its write is synced: two of three, chosen, applied and answered at once.
    a.records_durable(u64::MAX, &mut out);
    let e = out.take();
    assert_eq!(a.decided(), 1);
    assert!(e.responses.is_empty());
    assert_eq!(
        e.early_responses,
        vec![(
            RequestId(7),
            Response::Applied {
                slot: 0,
                output: KvOutput::Value(None)
            }
        )]
    );
}

#[test]
fn pipeline_is_bounded_and_backlog_is_batched() {
    let mut cfg = Config::new(1, vec![1, 2, 3]);
    cfg.in_flight_slots_max = 2;
    cfg.eager_slots_max = 2;
    let (mut a, b) = leader_with(cfg);
    let mut out = Outbox::new();
    for i in 0..5 {
        a.handle_request(
            RequestId(i),
            Request::Propose {
                command: put("k", &i.to_string()),
                session: None,
            },
            &mut out,
        );
    }
    assert_eq!(a.metrics().in_flight, 2);
    assert_eq!(a.metrics().queued, 3);
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
    // Both slots chosen; the three queued commands go out as one batch in slot 2.
    assert_eq!(e.responses.len(), 2);
    let batched = e.messages.iter().find_map(|(_, m)| match m {
        M::Accept { slot, values, .. } => Some((*slot, values[0].commands_len(), values.len())),
        _ => None,
    });
    assert_eq!(batched, Some((2, 3, 1)));
}

/// With the default `eager_slots_max` of one, a command arriving while a slot is in flight
/// waits; when that slot is chosen, everything that waited goes out in one slot (one Accept per
/// acceptor), and a lone command still goes out at once.
#[test]
fn commands_arriving_under_load_share_the_next_slot() {
    let cfg = Config::new(1, vec![1, 2, 3]);
    assert_eq!(cfg.eager_slots_max, 1);
    let (mut a, b) = leader_with(cfg);
    let mut out = Outbox::new();
    let propose = |a: &mut R, i: u64, out: &mut Outbox<R>| {
        a.handle_request(
            RequestId(i),
            Request::Propose {
                command: put("k", &i.to_string()),
                session: None,
            },
            out,
        )
    };
    // The first command goes out at once, alone in slot 0.
    propose(&mut a, 0, &mut out);
    let e = out.take();
    let accepts: Vec<_> = e
        .messages
        .iter()
        .filter_map(|(to, m)| match m {
            M::Accept { slot, values, .. } => Some((*to, *slot, values.len())),
            _ => None,
        })
        .collect();
    assert_eq!(accepts, vec![(2, 0, 1), (3, 0, 1)]);
    // Four more while slot 0 is in flight: they wait, nothing is sent.
    for i in 1..5 {
        propose(&mut a, i, &mut out);
    }
    let e = out.take();
    assert!(e.messages.is_empty(), "{:?}", e.messages);
    assert_eq!(a.metrics().in_flight, 1);
    assert_eq!(a.metrics().queued, 4);
    // Slot 0 is chosen: its client is answered and the four share slot 1.
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
    assert_eq!(e.responses.len(), 1);
    let batched: Vec<_> = e
        .messages
        .iter()
        .filter_map(|(to, m)| match m {
            M::Accept { slot, values, .. } => {
                Some((*to, *slot, values.len(), values[0].commands_len()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(batched, vec![(2, 1, 1, 4), (3, 1, 1, 4)]);
    assert_eq!(a.metrics().queued, 0);
}

#[test]
fn retry_of_a_command_found_in_phase1_attaches_to_its_slot() {
    let mut a = replica(1);
    let mut out = Outbox::new();
    let b = Ballot::new(3, 1);
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    // Phase 1 finds a copy of the client's command accepted under an older ballot (its leader
    // lost leadership before answering).
    let session = Some(Session { client: 8, seq: 4 });
    let old = Ballot::new(2, 2);
    let copy = Value::Batch {
        origin: old,
        commands: vec![Command {
            session,
            payload: put("a", "1"),
        }]
        .into(),
    };
    a.handle_message(
        2,
        M::Promise {
            ballot: b,
            decided: 0,
            accepted: vec![PromisedEntry {
                slot: 0,
                ballot: old,
                value: copy.clone(),
            }],
        },
        &mut out,
    );
    assert!(a.is_leader());
    out.take();
    // The retry reaches the new leader: it attaches to slot 0 instead of taking slot 1.
    a.handle_request(
        RequestId(9),
        Request::Propose {
            command: put("a", "1"),
            session,
        },
        &mut out,
    );
    let e = out.take();
    assert!(e.messages.is_empty(), "{:?}", e.messages);
    assert_eq!(a.metrics().in_flight, 1);
    a.handle_message(
        3,
        M::Accepted {
            ballot: b,
            slot: 0,
            count: 1,
        },
        &mut out,
    );
    assert_eq!(
        out.take().responses,
        vec![(
            RequestId(9),
            Response::Applied {
                slot: 0,
                output: KvOutput::Value(None)
            }
        )]
    );
    assert_eq!(a.decided_value(0), Some(&copy));
}

#[test]
fn new_leader_proposes_only_after_applying_what_was_chosen_before_it() {
    let mut a = replica(1);
    let mut out = Outbox::new();
    let b = Ballot::new(3, 1);
    a.election.ballot = b;
    a.election.leader = b;
    a.election.quorum_connected = true;
    a.reconcile_leadership(&mut out);
    // Acceptor 2 decided slots 0 and 1 already; this leader knows neither.
    a.handle_message(
        2,
        M::Promise {
            ballot: b,
            decided: 2,
            accepted: vec![],
        },
        &mut out,
    );
    assert!(a.is_leader());
    out.take();
    let session = Some(Session { client: 8, seq: 1 });
    a.handle_request(
        RequestId(1),
        Request::Propose {
            command: put("a", "1"),
            session,
        },
        &mut out,
    );
    let e = out.take();
    assert!(
        !e.messages
            .iter()
            .any(|(_, m)| matches!(m, M::Accept { .. })),
        "no proposal before the chosen prefix is applied"
    );
    // It catches up: slot 1 holds the very same command (chosen under an older leader).
    let chosen = Value::Batch {
        origin: Ballot::new(2, 2),
        commands: vec![Command {
            session,
            payload: put("a", "1"),
        }]
        .into(),
    };
    a.handle_message(
        2,
        M::CatchUp {
            from_slot: 0,
            values: vec![Value::Noop, chosen],
        },
        &mut out,
    );
    let e = out.take();
    // Answered from the session table: the command is not proposed a second time.
    assert_eq!(
        e.responses,
        vec![(
            RequestId(1),
            Response::Applied {
                slot: 2,
                output: KvOutput::Value(None)
            }
        )]
    );
    assert!(!e
        .messages
        .iter()
        .any(|(_, m)| matches!(m, M::Accept { .. })));
}

#[test]
fn follower_refuses_proposals_and_reads_with_a_hint() {
    let mut c = replica(3);
    let mut out = Outbox::new();
    c.handle_message(
        1,
        M::Prepare {
            ballot: Ballot::new(1, 1),
            from_slot: 0,
        },
        &mut out,
    );
    out.take();
    c.handle_request(
        RequestId(1),
        Request::Propose {
            command: put("a", "b"),
            session: None,
        },
        &mut out,
    );
    c.handle_request(
        RequestId(2),
        Request::Read(crate::KvQuery::Get("a".into())),
        &mut out,
    );
    let e = out.take();
    assert_eq!(
        e.responses,
        vec![
            (
                RequestId(1),
                Response::Failed(PaxosError::NotLeader { leader: Some(1) })
            ),
            (
                RequestId(2),
                Response::Failed(PaxosError::NotLeader { leader: Some(1) })
            )
        ]
    );
}

#[test]
fn read_waits_for_a_quorum_round() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    out.take();
    a.handle_request(
        RequestId(1),
        Request::Read(crate::KvQuery::Get("a".into())),
        &mut out,
    );
    let e = out.take();
    assert!(e.responses.is_empty());
    let probe = M::ReadProbe {
        ballot: b,
        round: 1,
    };
    assert_eq!(e.messages, vec![(2, probe.clone()), (3, probe)]);
    // A stale round does nothing; the current one completes the quorum.
    a.handle_message(
        3,
        M::ReadAck {
            ballot: b,
            round: 0,
        },
        &mut out,
    );
    assert!(out.take().responses.is_empty());
    a.handle_message(
        3,
        M::ReadAck {
            ballot: b,
            round: 1,
        },
        &mut out,
    );
    assert_eq!(
        out.take().responses,
        vec![(RequestId(1), Response::Read(KvOutput::Value(None)))]
    );
}

#[test]
fn leader_steps_down_on_nack_and_fails_pending() {
    let (mut a, b) = leader();
    let mut out = Outbox::new();
    a.handle_request(
        RequestId(1),
        Request::Propose {
            command: put("a", "b"),
            session: None,
        },
        &mut out,
    );
    out.take();
    a.handle_message(
        2,
        M::Nack {
            ballot: b,
            promised: Ballot::new(4, 3),
        },
        &mut out,
    );
    let e = out.take();
    assert!(!a.is_leader());
    assert_eq!(
        e.responses,
        vec![(RequestId(1), Response::Failed(PaxosError::LeadershipLost))]
    );
    assert_eq!(a.metrics().leader, Some(3));
}

#[test]
fn a_batch_of_proposals_goes_out_in_one_accept_round() {
    let propose = |command| Request::Propose {
        command,
        session: None,
    };
    let accepts = |fx: &common::Effects<R>| -> Vec<(NodeId, Vec<usize>)> {
        fx.messages
            .iter()
            .filter_map(|(to, m)| match m {
                M::Accept { values, .. } => {
                    Some((*to, values.iter().map(Value::commands_len).collect()))
                }
                _ => None,
            })
            .collect()
    };
    // One by one: the first command takes the eager slot at once; the others wait for it.
    let (mut a, _) = leader();
    let mut out = Outbox::new();
    out.take();
    for i in 0..3 {
        a.handle_request(RequestId(i), propose(put("k", &i.to_string())), &mut out);
    }
    let fx = out.take();
    assert_eq!(accepts(&fx), vec![(2, vec![1]), (3, vec![1])]);
    // Together: one slot of all three commands, in one Accept per peer.
    let (mut a, _) = leader();
    let requests = (0..3).map(|i| (RequestId(i), propose(put("k", &i.to_string()))));
    a.handle_requests(requests, &mut out);
    let fx = out.take();
    assert_eq!(accepts(&fx), vec![(2, vec![3]), (3, vec![3])]);
}
