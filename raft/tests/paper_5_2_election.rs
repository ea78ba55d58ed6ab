//! Raft paper §5.2 "Leader election": heartbeats, election timeouts, the candidate's round,
//! voting rules, and randomized timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use std::collections::BTreeSet;

use common::Node as _;
use harness::*;
use raft::testing::Cluster;
use raft::{Message, Payload, Record, Role};

/// §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to
/// all followers in order to maintain their authority."
#[test]
fn section_5_2_leader_broadcasts_heartbeats() {
    let mut l = node(1, 3);
    elect(&mut l, &[2, 3]);
    // Both followers acknowledge the no-op so they are in replicate state with nothing new.
    let term = l.term();
    recv(&mut l, 2, ack(term, 1));
    recv(&mut l, 3, ack(term, 1));
    assert!(tick(&mut l).messages.is_empty(), "one tick: not yet");
    let fx = tick(&mut l);
    let to: BTreeSet<_> = fx.messages.iter().map(|(to, _)| *to).collect();
    assert_eq!(to, BTreeSet::from([2, 3]));
    for (_, m) in &fx.messages {
        match m {
            Message::AppendEntries {
                entries,
                prev_log_index,
                leader_commit,
                ..
            } => {
                assert!(entries.is_empty());
                assert_eq!((*prev_log_index, *leader_commit), (1, 1));
            }
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }
}

/// §5.2: "If a follower receives no communication over a period of time called the election
/// timeout, then it ... begins an election": it increments its term, votes for itself, and
/// issues RequestVote RPCs in parallel to each of the other servers.
#[test]
fn section_5_2_follower_starts_election_on_timeout() {
    let mut f = node_with(config(1, 3), log_records(2, &[1, 2]));
    let (fx, ticks) = tick_until_active(&mut f, 100);
    assert!((10..=20).contains(&ticks), "timed out after {ticks} ticks");
    assert_eq!((f.role(), f.term()), (Role::Candidate, 3));
    assert_eq!(
        fx.records
            .iter()
            .map(|p| p.record().clone())
            .collect::<Vec<_>>(),
        vec![Record::HardState {
            term: 3,
            voted_for: Some(1)
        }]
    );
    let expected = Message::RequestVote {
        term: 3,
        last_log_index: 2,
        last_log_term: 2,
        transfer: false,
    };
    assert_eq!(fx.messages, vec![(2, expected.clone()), (3, expected)]);
}

/// §5.2: a candidate "wins an election if it receives votes from a majority of the servers",
/// else it stays a candidate (or reverts when a majority refused); a one-node cluster elects
/// itself as soon as its own vote is durable.
#[test]
fn section_5_2_one_round_election_outcomes() {
    // (cluster size, granted voters, refused voters, expected role)
    let cases: &[(u64, &[u64], &[u64], Role)] = &[
        (1, &[], &[], Role::Leader),
        (3, &[2], &[], Role::Leader),
        (3, &[], &[2], Role::Candidate),
        (3, &[], &[2, 3], Role::Follower),
        (5, &[2], &[], Role::Candidate),
        (5, &[2, 3], &[], Role::Leader),
        (5, &[2], &[3, 4], Role::Candidate),
        (5, &[], &[2, 3, 4], Role::Follower),
    ];
    for &(n, granted, refused, expected) in cases {
        let mut c = node(1, n);
        if n == 1 {
            // Alone, its own vote is the majority, counted once the record holding it is
            // durable: before that a crash could make it forget the term it led.
            let fx = (0..100)
                .map(|_| tick(&mut c))
                .find(|fx| !fx.records.is_empty())
                .expect("an election within 100 ticks");
            assert_eq!((c.role(), fx.records.len()), (Role::Candidate, 1));
            // A slow disk: it waits in the same term rather than starting the wait over.
            let term = c.term();
            for _ in 0..100 {
                assert!(tick(&mut c).records.is_empty());
            }
            assert_eq!((c.role(), c.term()), (Role::Candidate, term));
            c.records_durable(1, &mut common::Outbox::new());
            assert_eq!(c.role(), expected);
            continue;
        }
        tick_until_active(&mut c, 100);
        let term = c.term();
        for &v in granted {
            recv(
                &mut c,
                v,
                Message::RequestVoteResponse {
                    term,
                    granted: true,
                },
            );
        }
        for &v in refused {
            recv(
                &mut c,
                v,
                Message::RequestVoteResponse {
                    term,
                    granted: false,
                },
            );
        }
        assert_eq!(
            c.role(),
            expected,
            "n={n} granted={granted:?} refused={refused:?}"
        );
    }
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis"; the vote is persisted before the answer leaves.
#[test]
fn section_5_2_vote_once_per_term_first_come_first_served() {
    let mut f = node(1, 3);
    let ask = |from_term| Message::RequestVote {
        term: from_term,
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    };
    let fx = recv(&mut f, 2, ask(1));
    assert_eq!(
        fx.records[1].record(),
        &Record::HardState {
            term: 1,
            voted_for: Some(2)
        }
    );
    assert_eq!(
        fx.messages,
        vec![(
            2,
            Message::RequestVoteResponse {
                term: 1,
                granted: true
            }
        )]
    );
    let fx = recv(&mut f, 3, ask(1));
    assert_eq!(
        fx.messages,
        vec![(
            3,
            Message::RequestVoteResponse {
                term: 1,
                granted: false
            }
        )]
    );
    assert!(fx.records.is_empty());
    // The same candidate asking again (a duplicate) gets the same answer.
    let fx = recv(&mut f, 2, ask(1));
    assert_eq!(
        fx.messages,
        vec![(
            2,
            Message::RequestVoteResponse {
                term: 1,
                granted: true
            }
        )]
    );
    // A new term allows a new vote.
    let fx = recv(&mut f, 3, ask(2));
    assert_eq!(
        fx.messages,
        vec![(
            3,
            Message::RequestVoteResponse {
                term: 2,
                granted: true
            }
        )]
    );
}

/// §5.2: "If the AppendEntries RPC is from another server claiming to be leader whose term is
/// at least as large as the candidate's current term, then the candidate recognizes the leader
/// as legitimate and returns to follower state."
#[test]
fn section_5_2_candidate_falls_back_to_follower() {
    let mut c = node(1, 3);
    tick_until_active(&mut c, 100);
    let term = c.term();
    let fx = recv(
        &mut c,
        2,
        Message::AppendEntries {
            term,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![].into(),
            leader_commit: 0,
            read_seq: 1,
        },
    );
    assert_eq!(
        (c.role(), c.term(), c.leader()),
        (Role::Follower, term, Some(2))
    );
    assert!(matches!(
        fx.messages.as_slice(),
        [(2, Message::AppendEntriesResponse { success: true, .. })]
    ));
}

/// §5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed interval";
/// the draw is seeded, so the same seed gives the same timeout.
#[test]
fn section_5_2_election_timeouts_are_randomized() {
    let mut seen = BTreeSet::new();
    for seed in 0..200 {
        let mut c = config(1, 3);
        c.seed = seed;
        let mut n = node_with(c.clone(), vec![]);
        let (_, ticks) = tick_until_active(&mut n, 100);
        assert!((10..=20).contains(&ticks));
        let mut again = node_with(c, vec![]);
        assert_eq!(tick_until_active(&mut again, 100).1, ticks, "seeded");
        seen.insert(ticks);
    }
    assert!(
        seen.len() >= 9,
        "timeouts spread over the interval: {seen:?}"
    );
}

/// §5.2: randomized timeouts spread the servers out "so that in most cases only a single
/// server will time out": in most seeded 5-node clusters the first election is won in one
/// round, without a split vote.
#[test]
fn section_5_2_election_timeouts_rarely_conflict() {
    let mut single_round = 0;
    let runs = 200;
    for seed in 0..runs {
        let mut cluster = Cluster::<raft::kv::KvStore>::new(5, seed);
        let leader = cluster.run_until_leader(1_000).expect("a leader");
        let started: u64 = cluster
            .ids()
            .iter()
            .map(|&i| cluster.node(i).unwrap().metrics().elections_started)
            .sum();
        assert_eq!(cluster.node(leader).unwrap().id(), leader);
        if started == 1 {
            single_round += 1;
        }
    }
    assert!(
        single_round * 10 >= runs * 8,
        "only {single_round}/{runs} elections took one round"
    );
}

/// §5.2 with §8: the new leader's first entry is a no-op of its term, sent to every follower.
#[test]
fn section_5_2_new_leader_appends_a_noop() {
    let mut n = node(1, 3);
    let fx = elect(&mut n, &[2]);
    let appended: Vec<_> = fx
        .records
        .iter()
        .filter_map(|p| match p.record() {
            Record::Entries(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(appended.len(), 1);
    assert_eq!(appended[0][0].payload, Payload::Noop);
    assert_eq!(appended[0][0].term, n.term());
    let to: BTreeSet<_> = fx
        .messages
        .iter()
        .filter(|(_, m)| matches!(m, Message::AppendEntries { entries, .. } if entries.len() == 1))
        .map(|(to, _)| *to)
        .collect();
    assert_eq!(to, BTreeSet::from([2, 3]));
}
