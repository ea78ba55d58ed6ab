//! Raft paper §5.3 "Log replication": the leader appends and replicates, commits once a
//! majority stores an entry, carries the commit index to followers, and repairs inconsistent
//! follower logs with the consistency check (Figure 7).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use common::RequestId;
use harness::*;
use raft::kv::{KvCommand, KvOutput, KvStore};
use raft::testing::Cluster;
use raft::{Entry, Message, Payload, Record, Response};

/// §5.3: "The leader appends the command to its log as a new entry, then issues AppendEntries
/// RPCs in parallel to each of the other servers to replicate the entry." The entry is in the
/// step's records, so it is durable before the messages leave.
#[test]
fn section_5_3_leader_starts_replication() {
    let mut l = node(1, 3);
    elect(&mut l, &[2]);
    let term = l.term();
    recv(&mut l, 2, ack(term, 1));
    recv(&mut l, 3, ack(term, 1));
    let fx = propose(&mut l, 7, cmd(2));
    let entry = Entry {
        term,
        index: 2,
        payload: Payload::Command(cmd(2)),
    };
    assert_eq!(
        fx.records
            .iter()
            .map(|p| p.record().clone())
            .collect::<Vec<_>>(),
        vec![Record::Entries(vec![entry.clone()].into())]
    );
    let expected = Message::AppendEntries {
        term,
        prev_log_index: 1,
        prev_log_term: term,
        entries: vec![entry].into(),
        leader_commit: 1,
        read_seq: 1,
    };
    assert_eq!(fx.messages, vec![(2, expected.clone()), (3, expected)]);
    assert!(
        fx.responses.is_empty(),
        "not answered before it is committed"
    );
}

/// §5.3: "A log entry is committed once the leader that created the entry has replicated it on
/// a majority of the servers"; "the leader ... applies the entry to its state machine and
/// returns the result of that execution to the client".
#[test]
fn section_5_3_commit_on_majority_and_answer_the_client() {
    for n in [3u64, 5] {
        let mut l = node(1, n);
        elect(&mut l, &(2..=n / 2 + 1).collect::<Vec<_>>());
        let term = l.term();
        propose(&mut l, 9, cmd(2));
        let majority = n / 2 + 1;
        for (acks, follower) in (2..=n).enumerate() {
            let fx = recv(&mut l, follower, ack(term, 2));
            let acks = acks as u64 + 2; // the leader counts itself
            if acks < majority {
                assert_eq!(
                    l.commit_index(),
                    0,
                    "n={n}: {acks} copies are not a majority"
                );
                assert!(fx.responses.is_empty());
            } else if acks == majority {
                assert_eq!(l.commit_index(), 2, "n={n}");
                assert_eq!(
                    fx.responses,
                    vec![(
                        RequestId(9),
                        Response::Applied {
                            index: 2,
                            // The key was absent: a write answers the previous value.
                            output: KvOutput::Value(None)
                        }
                    )]
                );
            }
        }
    }
}

/// §5.3: "The leader keeps track of the highest index it knows to be committed, and it includes
/// that index in future AppendEntries RPCs ... Once a follower learns that a log entry is
/// committed, it applies the entry to its state machine."
#[test]
fn section_5_3_followers_learn_and_apply_commits() {
    let mut f = node(2, 3);
    let e = entries(&[1, 1]);
    let fx = recv(
        &mut f,
        1,
        Message::AppendEntries {
            term: 1,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: e.clone().into(),
            leader_commit: 0,
            read_seq: 1,
        },
    );
    assert_eq!(
        fx.records.last().unwrap().record(),
        &Record::Entries(e.clone().into())
    );
    assert_eq!(f.applied_index(), 0);
    recv(
        &mut f,
        1,
        Message::AppendEntries {
            term: 1,
            prev_log_index: 2,
            prev_log_term: 1,
            entries: vec![].into(),
            leader_commit: 1,
            read_seq: 2,
        },
    );
    assert_eq!((f.commit_index(), f.applied_index()), (1, 1));
    assert_eq!(f.state_machine().get("k"), Some("1"));
}

/// §5.3: "When the leader commits an entry it also commits all preceding entries in its log."
#[test]
fn section_5_3_preceding_entries_are_committed() {
    let mut l = node(1, 3);
    elect(&mut l, &[2]);
    let term = l.term();
    for i in 0..3 {
        propose(&mut l, i, cmd(i));
    }
    let fx = recv(&mut l, 2, ack(term, 4));
    assert_eq!(l.commit_index(), 4);
    let ids: Vec<_> = fx.responses.iter().map(|(id, _)| id.0).collect();
    assert_eq!(ids, vec![0, 1, 2], "answered in log order");
}

/// §5.3: the consistency check: "If the follower does not find an entry in its log with the
/// same index and term, then it refuses the new entries", with a hint for fast backtracking.
#[test]
fn section_5_3_follower_consistency_check() {
    let mut f = node_with(config(2, 3), log_records(3, &[1, 2, 2, 3]));
    let ae = |prev_log_index, prev_log_term| Message::AppendEntries {
        term: 3,
        prev_log_index,
        prev_log_term,
        entries: vec![].into(),
        leader_commit: 0,
        read_seq: 1,
    };
    // Matching entry.
    let fx = recv(&mut f, 1, ae(3, 2));
    assert!(matches!(
        fx.messages.as_slice(),
        [(
            1,
            Message::AppendEntriesResponse {
                success: true,
                index: 3,
                ..
            }
        )]
    ));
    // Wrong term at the index: the follower's term there and its first index of that term.
    let fx = recv(&mut f, 1, ae(3, 3));
    assert_eq!(
        fx.messages,
        vec![(
            1,
            Message::AppendEntriesResponse {
                term: 3,
                success: false,
                index: 3,
                conflict: Some((2, 2)),
                last_log_index: 4,
                read_seq: 1
            }
        )]
    );
    // Past the end of the log.
    let fx = recv(&mut f, 1, ae(7, 3));
    assert_eq!(
        fx.messages,
        vec![(
            1,
            Message::AppendEntriesResponse {
                term: 3,
                success: false,
                index: 7,
                conflict: None,
                last_log_index: 4,
                read_seq: 1
            }
        )]
    );
    assert!(fx.records.is_empty());
}

/// §5.3: "If an existing entry conflicts with a new one (same index but different terms),
/// delete the existing entry and all that follow it" — recorded as a truncation; entries already
/// present are not rewritten (a stale, shorter AppendEntries does not truncate).
#[test]
fn section_5_3_follower_replaces_conflicting_suffix_only() {
    let mut f = node_with(config(2, 3), log_records(3, &[1, 1, 2, 2]));
    let new = Entry {
        term: 3,
        index: 3,
        payload: Payload::Command(cmd(30)),
    };
    let fx = recv(
        &mut f,
        1,
        Message::AppendEntries {
            term: 3,
            prev_log_index: 2,
            prev_log_term: 1,
            entries: vec![new.clone()].into(),
            leader_commit: 0,
            read_seq: 1,
        },
    );
    assert_eq!(
        fx.records
            .iter()
            .map(|p| p.record().clone())
            .collect::<Vec<_>>(),
        vec![
            Record::Truncate { from: 3 },
            Record::Entries(vec![new.clone()].into())
        ]
    );
    assert_eq!(log_terms(&f), vec![1, 1, 3]);
    // A reordered, older AppendEntries holding only a prefix changes nothing.
    let fx = recv(
        &mut f,
        1,
        Message::AppendEntries {
            term: 3,
            prev_log_index: 1,
            prev_log_term: 1,
            entries: entries(&[1, 1])[1..].into(),
            leader_commit: 0,
            read_seq: 1,
        },
    );
    assert!(fx.records.is_empty());
    assert_eq!(log_terms(&f), vec![1, 1, 3]);
}

/// The leader's log of Figure 7 (term 8 leader; entries 1..=10).
const FIGURE_7_LEADER: &[u64] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];

/// §5.3, Figure 7: followers (a)–(f) with missing and extraneous entries are all brought to
/// the leader's log ("the leader handles inconsistencies by forcing the followers' logs to
/// duplicate its own").
#[test]
fn section_5_3_figure_7_log_repair() {
    let followers: &[(&str, &[u64])] = &[
        ("a", &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        ("b", &[1, 1, 1, 4]),
        ("c", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        ("d", &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        ("e", &[1, 1, 1, 4, 4, 4, 4]),
        ("f", &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    ];
    for &(name, log) in followers {
        let mut leader_cfg = config(1, 3);
        leader_cfg.election_timeout_ticks_min = 3;
        leader_cfg.election_timeout_ticks_max = 3;
        leader_cfg.heartbeat_interval_ticks = 1;
        let slow = |id| {
            let mut c = config(id, 3);
            c.election_timeout_ticks_min = 1_000;
            c.election_timeout_ticks_max = 1_000;
            c.heartbeat_interval_ticks = 1;
            c
        };
        let mut cluster = Cluster::<KvStore>::with_disks(
            vec![
                (leader_cfg, log_records(7, FIGURE_7_LEADER)),
                (slow(2), log_records(7, log)),
                (slow(3), log_records(7, FIGURE_7_LEADER)),
            ],
            1,
        );
        let leader = cluster.run_until_leader(100).unwrap();
        assert_eq!(leader, 1, "case ({name})");
        assert_eq!(cluster.node(1).unwrap().term(), 8);
        for _ in 0..50 {
            cluster.deliver_all(10_000);
            cluster.tick_all();
        }
        let l = cluster.node(1).unwrap();
        let f = cluster.node(2).unwrap();
        let mut expected = FIGURE_7_LEADER.to_vec();
        expected.push(8); // the term-8 leader's no-op
        assert_eq!(log_terms(l), expected, "case ({name}): leader log");
        assert_eq!(
            log_terms(f),
            expected,
            "case ({name}): follower log repaired"
        );
        for i in 1..=expected.len() as u64 {
            assert_eq!(l.entry(i), f.entry(i), "case ({name}) entry {i}");
        }
        assert_eq!(f.commit_index(), 11, "case ({name})");
    }
}

/// §5.3 (end): fast backtracking takes one round trip per conflicting term, not per entry:
/// follower (f) of Figure 7 is repaired with at most three rejections.
#[test]
fn section_5_3_fast_backtracking_skips_whole_terms() {
    let mut l = node_with(config(1, 3), log_records(7, FIGURE_7_LEADER));
    let elected = elect(&mut l, &[3]);
    let mut f = node_with(
        config(2, 3),
        log_records(7, &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
    );
    // Take the leader's first AppendEntries to node 2 and pump the exchange by hand.
    let mut to_f: Vec<Message<KvCommand>> = vec![];
    to_f.extend(
        elected
            .messages
            .into_iter()
            .filter(|(to, _)| *to == 2)
            .map(|(_, m)| m),
    );
    let mut rejections = 0;
    for _ in 0..20 {
        let Some(m) = to_f.pop() else { break };
        let fx = recv(&mut f, 1, m);
        for (_, reply) in fx.messages {
            if matches!(reply, Message::AppendEntriesResponse { success: false, .. }) {
                rejections += 1;
            }
            let back = recv(&mut l, 2, reply);
            to_f.extend(
                back.messages
                    .into_iter()
                    .filter(|(to, _)| *to == 2)
                    .map(|(_, m)| m),
            );
        }
    }
    assert_eq!(log_terms(&f), log_terms(&l));
    assert!(rejections <= 3, "{rejections} rejections");
}
