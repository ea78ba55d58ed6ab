//! Unit tests of elections: pre-vote, votes, check-quorum and leadership transfer.

use super::*;

#[test]
fn pre_vote_keeps_the_term_until_a_majority_agrees() {
    let mut n = node(cfg(1, 3));
    let fx = ticks(&mut n, 10);
    assert_eq!((n.role(), n.term()), (Role::PreCandidate, 0));
    assert!(fx.records.is_empty(), "a pre-vote persists nothing");
    let pv = Message::PreVote {
        term: 1,
        last_log_index: 0,
        last_log_term: 0,
    };
    assert_eq!(fx.messages, vec![(2, pv.clone()), (3, pv)]);
    let fx = recv(
        &mut n,
        2,
        Message::PreVoteResponse {
            term: 1,
            granted: true,
        },
    );
    assert_eq!((n.role(), n.term()), (Role::Candidate, 1));
    assert_eq!(
        records(&fx),
        vec![Record::HardState {
            term: 1,
            voted_for: Some(1)
        }]
    );
    let rv = Message::RequestVote {
        term: 1,
        last_log_index: 0,
        last_log_term: 0,
        transfer: false,
    };
    assert_eq!(fx.messages, vec![(2, rv.clone()), (3, rv)]);
}

#[test]
fn pre_vote_and_vote_refused_while_the_leader_is_alive() {
    let mut f = node(cfg(2, 3));
    ticks(&mut f, 10); // past the start-up quiet period
    recv(&mut f, 1, heartbeat(1, 1));
    let fx = recv(
        &mut f,
        3,
        Message::PreVote {
            term: 2,
            last_log_index: 5,
            last_log_term: 1,
        },
    );
    assert_eq!(
        fx.messages,
        vec![(
            3,
            Message::PreVoteResponse {
                term: 1,
                granted: false
            }
        )]
    );
    let rv = |transfer| Message::RequestVote {
        term: 2,
        last_log_index: 5,
        last_log_term: 1,
        transfer,
    };
    let fx = recv(&mut f, 3, rv(false));
    assert!(fx.is_empty(), "ignored: the leader was heard from");
    assert_eq!(f.term(), 1);
    let fx = recv(&mut f, 3, rv(true));
    assert_eq!(
        fx.messages,
        vec![(
            3,
            Message::RequestVoteResponse {
                term: 2,
                granted: true
            }
        )],
        "a transfer election overrides the lease"
    );
}

#[test]
fn pre_vote_granted_after_the_leader_went_quiet() {
    let mut f = node(cfg(2, 3));
    ticks(&mut f, 3);
    recv(&mut f, 1, heartbeat(1, 1));
    // Not a voter's own timeout yet (10), but the lease (10 ticks) has run out at tick 10.
    let mut out = Outbox::new();
    for _ in 0..9 {
        f.tick(&mut out);
    }
    let fx = recv(
        &mut f,
        3,
        Message::PreVote {
            term: 2,
            last_log_index: 0,
            last_log_term: 0,
        },
    );
    assert_eq!(
        fx.messages,
        vec![(
            3,
            Message::PreVoteResponse {
                term: 1,
                granted: false
            }
        )],
        "9 ticks after the heartbeat the leader may still be alive"
    );
    f.tick(&mut out);
    let fx = recv(
        &mut f,
        3,
        Message::PreVote {
            term: 2,
            last_log_index: 0,
            last_log_term: 0,
        },
    );
    assert!(matches!(
        fx.messages.as_slice(),
        [(
            3,
            Message::PreVoteResponse {
                term: 2,
                granted: true
            }
        )]
    ));
    assert_eq!(f.term(), 1, "granting a pre-vote changes no term");
}

#[test]
fn check_quorum_leader_steps_down_without_a_majority() {
    let mut l = leader(cfg(1, 3), 3);
    // Heard from node 2 in this round: stays.
    ticks(&mut l, 5);
    recv(&mut l, 2, ack(1, 1, 1));
    ticks(&mut l, 5);
    assert_eq!(l.role(), Role::Leader);
    // Silence for a full round: steps down, same term.
    let fx = ticks(&mut l, 10);
    assert_eq!((l.role(), l.term(), l.leader()), (Role::Follower, 1, None));
    assert!(fx.records.is_empty(), "stepping down persists nothing");
}

#[test]
fn leadership_transfer_sends_timeout_now_once_the_target_caught_up() {
    let mut l = leader(cfg(1, 3), 3);
    request(&mut l, 1, Request::Propose(put("a")));
    let fx = request(&mut l, 2, Request::TransferLeadership(3));
    assert!(fx.responses.is_empty(), "node 3 lacks entry 2");
    // Proposals are refused during the transfer.
    let fx = request(&mut l, 3, Request::Propose(put("b")));
    assert_eq!(
        fx.responses,
        vec![(
            RequestId(3),
            Response::Failed(RaftError::TransferInProgress(3))
        )]
    );
    let fx = recv(&mut l, 3, ack(1, 2, 1));
    assert_eq!(
        fx.responses,
        vec![
            (
                RequestId(1),
                Response::Applied {
                    index: 2,
                    output: KvOutput::Value(None)
                }
            ),
            (RequestId(2), Response::TransferStarted)
        ]
    );
    assert!(fx.messages.contains(&(3, Message::TimeoutNow { term: 1 })));
    // The target starts a transfer election at once.
    let mut t = node(cfg(3, 3));
    recv(&mut t, 1, heartbeat(1, 1));
    let fx = recv(&mut t, 1, Message::TimeoutNow { term: 1 });
    assert_eq!((t.role(), t.term()), (Role::Candidate, 2));
    assert!(fx.messages.iter().all(|(_, m)| matches!(
        m,
        Message::RequestVote {
            transfer: true,
            term: 2,
            ..
        }
    )));
    // A transfer to a non-member is refused.
    let mut l = leader(cfg(1, 3), 3);
    let fx = request(&mut l, 9, Request::TransferLeadership(7));
    assert!(matches!(
        fx.responses.as_slice(),
        [(RequestId(9), Response::Failed(RaftError::Invalid(_)))]
    ));
}
