//! Raft paper §5.4 "Safety": the election restriction (§5.4.1) and committing entries from
//! previous terms (§5.4.2, Figure 8).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use harness::*;
use raft::{Message, Payload, Role};

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
/// candidate": later last term wins; with equal last terms, the longer log wins.
#[test]
fn section_5_4_1_vote_only_for_an_up_to_date_log() {
    // The voter's log: terms [1, 2, 2] (last term 2, last index 3).
    let cases: &[(u64, u64, bool)] = &[
        // (candidate last_log_term, candidate last_log_index, granted)
        (1, 5, false), // older last term, however long
        (2, 2, false), // same last term, shorter
        (2, 3, true),  // identical
        (2, 4, true),  // same last term, longer
        (3, 1, true),  // newer last term, however short
    ];
    for &(last_log_term, last_log_index, granted) in cases {
        let mut v = node_with(config(1, 3), log_records(2, &[1, 2, 2]));
        let fx = recv(
            &mut v,
            2,
            Message::RequestVote {
                term: 3,
                last_log_index,
                last_log_term,
                transfer: false,
            },
        );
        assert_eq!(
            fx.messages,
            vec![(2, Message::RequestVoteResponse { term: 3, granted })],
            "candidate ({last_log_term}, {last_log_index})"
        );
    }
}

/// §5.4.2, Figure 8: "Raft never commits log entries from previous terms by counting replicas.
/// Only log entries from the leader's current term are committed by counting replicas; once an
/// entry from the current term has been committed in this way, then all prior entries are
/// committed indirectly."
#[test]
fn section_5_4_2_figure_8_old_terms_are_not_committed_by_counting() {
    // S1 in Figure 8 (c): its log holds (1, t1), (2, t2); it becomes leader of term 4.
    let mut s1 = node_with(config(1, 5), log_records(3, &[1, 2]));
    elect(&mut s1, &[2, 3]);
    assert_eq!(s1.term(), 4);
    assert_eq!(s1.entry(3).unwrap().payload, Payload::Noop);
    // Entry 2 (term 2) reaches a majority (S1, S2, S3): still not committed.
    recv(&mut s1, 2, ack(4, 2));
    recv(&mut s1, 3, ack(4, 2));
    assert_eq!(
        s1.commit_index(),
        0,
        "entry 2 of term 2 is not committed by counting"
    );
    // The current term's entry reaches a majority: it and everything before are committed.
    recv(&mut s1, 2, ack(4, 3));
    assert_eq!(
        s1.commit_index(),
        0,
        "two copies of entry 3 are not a majority of five"
    );
    recv(&mut s1, 3, ack(4, 3));
    assert_eq!(s1.commit_index(), 3);
    assert_eq!(s1.applied_index(), 3);
}

/// §5.4.2, Figure 8 (d): the entry of term 2 that S1 had replicated to a majority in term 4
/// without committing it may be overwritten by S5, elected with votes from S2, S3 and S4 on a
/// log whose last term (3) is newer. The test plays the whole figure between real cores.
#[test]
fn section_5_4_2_figure_8_uncommitted_old_entry_can_be_overwritten() {
    // (c): S1 leads term 4 with [1, 2, 4]; S2 and S3 hold [1, 2]; S4 holds [1]; S5 holds [1, 3]
    // from its own short leadership of term 3.
    let mut s1 = node_with(config(1, 5), log_records(3, &[1, 2]));
    elect(&mut s1, &[2, 3]);
    recv(&mut s1, 2, ack(4, 2));
    recv(&mut s1, 3, ack(4, 2));
    assert_eq!(s1.commit_index(), 0);
    // (d): S1 crashes; S5 (log [1, 3]) wins term 5 with votes from S2, S3, S4 because its last
    // term 3 is newer than their last term 2 — legal only because entry 2 was never committed.
    for (voter, log) in [(2u64, &[1u64, 2][..]), (3, &[1, 2]), (4, &[1])] {
        let mut v = node_with(config(voter, 5), log_records(4, log));
        let fx = recv(
            &mut v,
            5,
            Message::RequestVote {
                term: 5,
                last_log_index: 2,
                last_log_term: 3,
                transfer: false,
            },
        );
        assert_eq!(
            fx.messages,
            vec![(
                5,
                Message::RequestVoteResponse {
                    term: 5,
                    granted: true
                }
            )]
        );
    }
    // S5 gets there by its own timeout (term 4 → 5) and the three votes.
    let mut s5_records = log_records(4, &[1, 3]);
    s5_records.truncate(2);
    let mut s5 = node_with(config(5, 5), s5_records);
    elect(&mut s5, &[2, 3, 4]);
    assert_eq!((s5.role(), s5.term()), (Role::Leader, 5));
    // S5 repairs S2: entry 2 of term 2 is replaced by S5's entry 2 of term 3.
    let mut s2 = node_with(config(2, 5), log_records(5, &[1, 2]));
    let fx = recv(
        &mut s2,
        5,
        Message::AppendEntries {
            term: 5,
            prev_log_index: 1,
            prev_log_term: 1,
            entries: (2..=s5.last_log_index())
                .map(|i| s5.entry(i).unwrap().clone())
                .collect(),
            leader_commit: 0,
            read_seq: 1,
        },
    );
    assert!(matches!(
        fx.messages.as_slice(),
        [(
            5,
            Message::AppendEntriesResponse {
                success: true,
                index: 3,
                ..
            }
        )]
    ));
    assert_eq!(log_terms(&s2), vec![1, 3, 5]);
}
