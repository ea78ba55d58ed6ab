//! Raft paper §5.1 "Raft basics": servers start as followers; terms act as a logical clock; a
//! server that sees a larger term adopts it and reverts to follower; a request with a stale term
//! is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use common::Node as _;
use harness::*;
use raft::{Message, Record, Role};

/// §5.1: "When servers start up, they begin as followers."
#[test]
fn section_5_1_servers_start_as_followers() {
    let n = node(1, 3);
    assert_eq!(n.role(), Role::Follower);
    assert_eq!(n.term(), 0);
    assert_eq!(n.leader(), None);
}

fn higher_term_heartbeat() -> Message<raft::kv::KvCommand> {
    Message::AppendEntries {
        term: 9,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![].into(),
        leader_commit: 0,
        read_seq: 0,
    }
}

/// §5.1: "If a candidate or leader discovers that its term is out of date, it immediately
/// reverts to follower state", and every server updates its current term to the larger value.
#[test]
fn section_5_1_larger_term_turns_every_role_into_follower() {
    // Follower.
    let mut f = node(1, 3);
    let fx = recv(&mut f, 2, higher_term_heartbeat());
    assert_eq!(
        (f.role(), f.term(), f.leader()),
        (Role::Follower, 9, Some(2))
    );
    assert_eq!(
        fx.records[0].record(),
        &Record::HardState {
            term: 9,
            voted_for: None
        },
        "the new term is persisted before the answer leaves"
    );
    // Candidate.
    let mut c = node(1, 3);
    tick_until_active(&mut c, 100);
    assert_eq!(c.role(), Role::Candidate);
    recv(&mut c, 2, higher_term_heartbeat());
    assert_eq!((c.role(), c.term()), (Role::Follower, 9));
    // Leader.
    let mut l = node(1, 3);
    elect(&mut l, &[2]);
    recv(
        &mut l,
        3,
        Message::RequestVoteResponse {
            term: 9,
            granted: false,
        },
    );
    assert_eq!((l.role(), l.term(), l.leader()), (Role::Follower, 9, None));
}

/// §5.1: "If a server receives a request with a stale term number, it rejects the request."
#[test]
fn section_5_1_stale_term_requests_are_rejected() {
    let mut n = node_with(config(1, 3), log_records(5, &[1, 5]));
    let fx = recv(
        &mut n,
        2,
        Message::AppendEntries {
            term: 4,
            prev_log_index: 2,
            prev_log_term: 5,
            entries: entries(&[1, 5, 5])[2..].into(),
            leader_commit: 3,
            read_seq: 7,
        },
    );
    assert!(fx.records.is_empty(), "nothing appended");
    assert_eq!(n.last_log_index(), 2);
    assert_eq!(
        fx.messages,
        vec![(
            2,
            Message::AppendEntriesResponse {
                term: 5,
                success: false,
                index: 0,
                conflict: None,
                last_log_index: 2,
                read_seq: 7
            }
        )],
        "the stale leader learns the current term"
    );
    let fx = recv(
        &mut n,
        3,
        Message::RequestVote {
            term: 3,
            last_log_index: 9,
            last_log_term: 3,
            transfer: false,
        },
    );
    assert_eq!(
        fx.messages,
        vec![(
            3,
            Message::RequestVoteResponse {
                term: 5,
                granted: false
            }
        )]
    );
    assert_eq!(n.metrics().rejected.stale_term, 2);
}
