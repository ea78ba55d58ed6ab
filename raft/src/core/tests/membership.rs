//! Unit tests of membership change: learners and their promotion once caught up, one change at
//! a time, joint consensus, truncated configurations, and removed nodes that still campaign.

use super::*;

fn set(ids: &[NodeId]) -> std::collections::BTreeSet<NodeId> {
    ids.iter().copied().collect()
}

fn membership_response(fx: &Fx, id: u64) -> Option<crate::message::Membership> {
    fx.responses.iter().find_map(|(r, resp)| match resp {
        Response::MembershipChanged { membership, .. } if r.0 == id => Some(*membership.clone()),
        _ => None,
    })
}

#[test]
fn add_learner_then_promote_it() {
    let mut l = leader(cfg(1, 3), 3);
    let fx = request(&mut l, 1, Request::AddLearner(4));
    let appended = records(&fx);
    assert!(matches!(
        appended.as_slice(),
        [Record::Entries(e)] if matches!(&e[0].payload, Payload::Membership(m) if m.learners == set(&[4]))
    ));
    assert!(
        fx.messages.iter().any(|(to, _)| *to == 4),
        "the learner is replicated to at once"
    );
    assert_eq!(l.membership().learners, set(&[4]), "in force once appended");
    let fx = recv(&mut l, 2, ack(1, 2, 1));
    assert_eq!(membership_response(&fx, 1).unwrap().learners, set(&[4]));
    // The learner has not answered yet: not promoted, although the commit index (2) is within
    // the allowed lag.
    let fx = request(&mut l, 2, Request::AddVoter(4));
    assert_eq!(fx.responses, vec![(RequestId(2), not_caught_up())]);
    assert!(fx.records.is_empty());
    recv(&mut l, 4, ack(1, 2, 1));
    // Promotion: now four voters, three needed.
    request(&mut l, 3, Request::AddVoter(4));
    let fx = recv(&mut l, 2, ack(1, 3, 1));
    assert!(
        fx.responses.is_empty(),
        "two of four voters are not a majority"
    );
    let fx = recv(&mut l, 4, ack(1, 3, 1));
    let m = membership_response(&fx, 3).unwrap();
    assert_eq!((m.voters, m.learners), (set(&[1, 2, 3, 4]), set(&[])));
}

fn not_caught_up() -> Response<KvOutput> {
    Response::Failed(RaftError::Busy("the learner has not caught up"))
}

/// A leader of voters {1, 2, 3} (configured by `c`) with learner 4 added (index 2) and then
/// `k` proposals (indexes 3..=2 + k), all committed by node 2. Node 4 has not answered.
fn leader_with_learner(c: Config, k: u64) -> N {
    let mut l = leader(c, 3);
    request(&mut l, 1, Request::AddLearner(4));
    recv(&mut l, 2, ack(1, 2, 1));
    for i in 0..k {
        request(&mut l, 100 + i, Request::Propose(put(&format!("v{i}"))));
    }
    recv(&mut l, 2, ack(1, 2 + k, 1));
    assert_eq!(l.commit_index(), 2 + k);
    assert_eq!(l.membership().learners, set(&[4]));
    l
}

/// Delivers the messages of `fx` for node 4 to the learner `f`, its answers to the leader
/// `l`, and so on until no message is left.
fn pump_learner(l: &mut N, f: &mut N, fx: Fx) {
    let to_4 = |fx: Fx| -> Vec<Message<KvCommand>> {
        fx.messages
            .into_iter()
            .filter(|(to, _)| *to == 4)
            .map(|(_, m)| m)
            .collect()
    };
    let mut msgs = to_4(fx);
    for _ in 0..1000 {
        let Some(m) = msgs.pop() else { return };
        for (_, reply) in recv(f, 1, m).messages {
            msgs.extend(to_4(recv(l, 4, reply)));
        }
    }
    panic!("the messages between the leader and the learner never ended");
}

/// Ongaro's thesis §4.2.1: a new server catches up before it counts towards majorities. A
/// learner far behind the commit index is not promoted (nothing is appended, the caller may
/// retry); once messages have brought it up to date, it is.
#[test]
fn a_learner_is_promoted_only_once_it_has_caught_up() {
    let lag = crate::config::PROMOTE_LAG_ENTRIES_MAX_DEFAULT;
    let mut l = leader_with_learner(cfg(1, 3), lag + 8);
    let last = l.last_log_index();
    let fx = request(&mut l, 2, Request::AddVoter(4));
    assert_eq!(fx.responses, vec![(RequestId(2), not_caught_up())]);
    assert!(fx.records.is_empty(), "nothing is appended");
    assert_eq!(l.last_log_index(), last);
    assert_eq!(l.membership().learners, set(&[4]));
    assert_eq!(l.metrics().progress[&4].match_index, 0);

    // The learner (node 4 in its own configuration) catches up from the next heartbeat on.
    let mut c = Config::new(4, vec![1, 2, 3]);
    c.learners = vec![4];
    let mut f = node(c);
    let fx = ticks(&mut l, 2);
    pump_learner(&mut l, &mut f, fx);
    assert_eq!(f.last_log_index(), last);
    assert_eq!(l.metrics().progress[&4].match_index, last);

    let fx = request(&mut l, 3, Request::AddVoter(4));
    assert!(fx.responses.is_empty(), "{:?}", fx.responses);
    assert!(matches!(
        records(&fx).as_slice(),
        [Record::Entries(e)] if e[0].index == last + 1
            && matches!(&e[0].payload, Payload::Membership(m) if m.voters == set(&[1, 2, 3, 4]))
    ));
    recv(&mut l, 2, ack(1, last + 1, 1));
    let fx = recv(&mut l, 3, ack(1, last + 1, 1));
    let m = membership_response(&fx, 3).unwrap();
    assert_eq!((m.voters, m.learners), (set(&[1, 2, 3, 4]), set(&[])));
}

/// The learner holds index 2 and the commit index is 2 + 20: a lag of 20 entries allows the
/// promotion, a lag of 19 does not.
#[test]
fn promote_lag_entries_max_sets_how_far_behind_a_learner_may_be() {
    for (lag, allowed) in [(19, false), (20, true), (u64::MAX, true)] {
        let mut c = cfg(1, 3);
        c.promote_lag_entries_max = lag;
        let mut l = leader(c, 3);
        request(&mut l, 1, Request::AddLearner(4));
        recv(&mut l, 2, ack(1, 2, 1));
        recv(&mut l, 4, ack(1, 2, 1));
        for i in 0..20 {
            request(&mut l, 100 + i, Request::Propose(put(&format!("v{i}"))));
        }
        recv(&mut l, 2, ack(1, 22, 1));
        assert_eq!(l.commit_index(), 22);
        assert_eq!(l.metrics().progress[&4].match_index, 2);
        let fx = request(&mut l, 2, Request::AddVoter(4));
        if allowed {
            assert!(fx.responses.is_empty(), "lag {lag}: {:?}", fx.responses);
            assert_eq!(l.last_log_index(), 23, "lag {lag}");
            assert_eq!(l.membership().voters, set(&[1, 2, 3, 4]), "lag {lag}");
        } else {
            assert_eq!(
                fx.responses,
                vec![(RequestId(2), not_caught_up())],
                "lag {lag}"
            );
            assert!(fx.records.is_empty(), "lag {lag}");
            assert_eq!(l.last_log_index(), 22, "lag {lag}");
        }
    }
}

/// The check is on promotions: a node that is not a member may still be added as a voter at
/// once (a single-server change, thesis §4.1), however far behind it is.
#[test]
fn a_node_that_is_not_a_learner_is_still_added_as_a_voter_at_once() {
    let mut c = cfg(1, 3);
    c.promote_lag_entries_max = 0;
    let mut l = leader(c, 3);
    for i in 0..5 {
        request(&mut l, 100 + i, Request::Propose(put(&format!("v{i}"))));
    }
    recv(&mut l, 2, ack(1, 6, 1));
    let fx = request(&mut l, 1, Request::AddVoter(4));
    assert!(fx.responses.is_empty(), "{:?}", fx.responses);
    assert_eq!(l.membership().voters, set(&[1, 2, 3, 4]));
    assert_eq!(l.last_log_index(), 7);
}

#[test]
fn one_membership_change_at_a_time() {
    let mut l = leader(cfg(1, 3), 3);
    request(&mut l, 1, Request::AddLearner(4));
    let fx = request(&mut l, 2, Request::AddLearner(5));
    assert!(matches!(
        fx.responses.as_slice(),
        [(RequestId(2), Response::Failed(RaftError::Busy(_)))]
    ));
    let fx = request(&mut l, 3, Request::RemoveNode(9));
    assert!(matches!(
        fx.responses.as_slice(),
        [(RequestId(3), Response::Failed(_))]
    ));
}

#[test]
fn removed_leader_steps_down_once_the_change_commits() {
    let mut l = leader(cfg(1, 3), 3);
    request(&mut l, 1, Request::RemoveNode(1));
    assert_eq!(
        l.role(),
        Role::Leader,
        "leads until the new configuration commits"
    );
    // One follower is not a majority of the new voters {2, 3}: the leader does not count itself.
    let fx = recv(&mut l, 2, ack(1, 2, 1));
    assert!(fx.responses.is_empty());
    let fx = recv(&mut l, 3, ack(1, 2, 1));
    assert_eq!(membership_response(&fx, 1).unwrap().voters, set(&[2, 3]));
    assert_eq!(l.role(), Role::Learner);
    // It no longer campaigns.
    assert!(ticks(&mut l, 50).messages.is_empty());
}

#[test]
fn joint_consensus_needs_both_majorities_then_finishes_by_itself() {
    let mut l = leader(cfg(1, 3), 3);
    // From {1, 2, 3} to {1, 4, 5}.
    let fx = request(&mut l, 1, Request::ChangeVoters(set(&[1, 4, 5])));
    let joint = l.membership().clone();
    assert_eq!(joint.voters_outgoing, Some(set(&[1, 2, 3])));
    assert!(fx.messages.iter().any(|(to, _)| *to == 4));
    // Old majority only (1, 2, 3): not committed.
    recv(&mut l, 2, ack(1, 2, 1));
    recv(&mut l, 3, ack(1, 2, 1));
    assert_eq!(l.commit_index(), 1);
    // New majority too (1, 4): the joint entry commits and the leader appends the new
    // configuration on its own.
    let fx = recv(&mut l, 4, ack(1, 2, 1));
    assert_eq!(l.commit_index(), 2);
    assert!(
        fx.responses.is_empty(),
        "answered when the new configuration commits"
    );
    assert_eq!(l.membership().voters_outgoing, None);
    assert_eq!(l.last_log_index(), 3);
    let fx = recv(&mut l, 5, ack(1, 3, 1));
    assert_eq!(membership_response(&fx, 1).unwrap().voters, set(&[1, 4, 5]));
    assert_eq!(
        l.metrics().progress.keys().copied().collect::<Vec<_>>(),
        vec![4, 5]
    );
}

/// Seed 4018 of the membership sweep (`SIM_SEEDS=6000`). A leader whose joint configuration
/// leaves it the only new voter commits the joint entry and a command after it in one step.
/// Applying the joint entry appends the new configuration, which the leader commits on its own
/// at once; that commit must not apply the command a second time while the first pass is
/// still walking the entries (it did: the command's effect twice, and state machine safety
/// broken between the leader and a follower that applied the same log once).
#[test]
fn a_commit_made_while_applying_does_not_apply_an_entry_twice() {
    let mut c = cfg(1, 3);
    c.parallel_append = false;
    let mut l = leader(c, 3);
    // From {1, 2, 3} to {1}: the joint entry at 2, then a command at 3.
    request(&mut l, 1, Request::ChangeVoters(set(&[1])));
    assert_eq!(l.membership().voters_outgoing, Some(set(&[1, 2, 3])));
    let append = KvCommand::Append {
        key: "k".into(),
        value: "x,".into(),
    };
    request(&mut l, 2, Request::Propose(append));
    // Node 2 holds both: the old majority (1, 2) and the new one (1) commit 2 and 3 at once.
    let fx = recv(&mut l, 2, ack(1, 3, 1));
    // The new configuration went to 4 and the leader committed it alone.
    assert_eq!(l.membership().voters, set(&[1]));
    assert_eq!(l.membership().voters_outgoing, None);
    assert_eq!((l.commit_index(), l.applied_index()), (4, 4));
    assert_eq!(l.state_machine().get("k"), Some("x,"), "applied once");
    // Each request answered once: the command, then the change when the new one committed.
    let answered: Vec<u64> = fx.responses.iter().map(|(r, _)| r.0).collect();
    assert_eq!(answered, vec![2, 1], "{:?}", fx.responses);
    assert_eq!(membership_response(&fx, 1).unwrap().voters, set(&[1]));
}

#[test]
fn truncation_reverts_an_uncommitted_configuration() {
    let mut f = node(cfg(2, 3));
    let m = crate::message::Membership {
        voters: set(&[1, 2, 3, 4]),
        learners: set(&[]),
        voters_outgoing: None,
    };
    let ae = |entries: Vec<Entry<KvCommand>>, term| Message::AppendEntries {
        term,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: entries.into(),
        leader_commit: 0,
        read_seq: 1,
    };
    recv(
        &mut f,
        1,
        ae(
            vec![Entry {
                term: 1,
                index: 1,
                payload: Payload::Membership(Box::new(m.clone())),
            }],
            1,
        ),
    );
    assert_eq!(f.membership(), &m);
    recv(
        &mut f,
        3,
        ae(
            vec![Entry {
                term: 2,
                index: 1,
                payload: Payload::Noop,
            }],
            2,
        ),
    );
    assert_eq!(f.membership().voters, set(&[1, 2, 3]));
    // And recovery from the records agrees.
    let records = vec![
        Record::Entries(
            vec![Entry {
                term: 1,
                index: 1,
                payload: Payload::Membership(Box::new(m)),
            }]
            .into(),
        ),
        Record::Truncate { from: 1 },
    ];
    let r = N::recover(cfg(2, 3).into(), records).unwrap();
    assert_eq!(r.membership().voters, set(&[1, 2, 3]));
}

/// Ongaro's thesis §4.1: "a server that is not part of its own latest configuration should
/// still start new elections, as it might still be needed until the C_new entry is committed".
/// Leader 1 of voters {1, 2} appends C_new = {2} (removing itself), loses contact with node 2
/// before C_new reaches it, and check-quorum makes it step down. Node 2 still runs C_old and
/// needs node 1's vote, which node 1 refuses (its log is longer): only node 1 can lead again,
/// with the vote of a majority of C_new, and commit C_new.
#[test]
fn removed_leader_still_campaigns_until_its_removal_commits() {
    let mut l = leader(cfg(1, 2), 2);
    let fx = request(&mut l, 1, Request::RemoveNode(1));
    assert!(
        fx.responses.is_empty(),
        "C_new is appended, not yet committed"
    );
    assert_eq!(l.membership().voters, set(&[2]));
    assert_eq!(l.commit_index(), 1, "C_new at index 2 is not committed");
    // Node 2 is silent: check-quorum makes node 1 step down within an election timeout.
    ticks(&mut l, 20);
    assert_ne!(l.role(), Role::Leader);
    // Node 1 still campaigns (pre-vote is off in `leader`): it asks node 2 for its vote.
    let fx = ticks(&mut l, 40);
    let asks_2 = fx.messages.iter().any(|(to, m)| {
        *to == 2 && matches!(m, Message::RequestVote { .. } | Message::PreVote { .. })
    });
    assert!(asks_2, "node 1 ({:?}) never asked node 2", l.role());
    // Node 2's vote, a majority of C_new, makes it leader again, to commit C_new.
    let term = l.term();
    recv(
        &mut l,
        2,
        Message::RequestVoteResponse {
            term,
            granted: true,
        },
    );
    assert_eq!(l.role(), Role::Leader);
}

/// The same rule after a restart. Node 3 joined voters {1, 2} later (its `Config` lists it as
/// a learner), led term 2, and appended C_new = {1, 2} removing itself; then it crashed before
/// C_new committed. Recovered from its records, it must still campaign: the other nodes may
/// hold C_old = {1, 2, 3} and a shorter log, and need it to elect anyone. Today its commit
/// index restarts at 0, `may_campaign` looks up the configuration at index 0 (the initial one,
/// where node 3 is a learner) and node 3 never campaigns. Found by `tests/sim_membership.rs`
/// (`SIM_SEEDS=3000`, seed 2024): node 5 removed itself as leader of {2, 5}, stepped down by
/// check-quorum while node 2 was down, crashed, and after the restart neither node could be
/// elected (node 2 needs node 5's vote; node 5 refuses it, its log being longer, and never
/// campaigns).
#[test]
fn removed_node_still_campaigns_after_a_restart_until_its_removal_commits() {
    let mut c = Config::new(3, vec![1, 2]);
    c.learners = vec![3];
    c.pre_vote = false;
    c.election_timeout_ticks_min = 10;
    c.election_timeout_ticks_max = 10;
    let membership = |voters: &[NodeId]| {
        Payload::Membership(Box::new(crate::message::Membership {
            voters: set(voters),
            ..Default::default()
        }))
    };
    let entries = vec![
        Entry {
            term: 1,
            index: 1,
            payload: membership(&[1, 2, 3]),
        },
        Entry {
            term: 2,
            index: 2,
            payload: Payload::Noop,
        },
        Entry {
            term: 2,
            index: 3,
            payload: membership(&[1, 2]),
        },
    ];
    let records = vec![
        Record::HardState {
            term: 2,
            voted_for: Some(3),
        },
        Record::Entries(entries.into()),
    ];
    let mut n = N::recover(c.into(), records).unwrap();
    assert_eq!(n.membership().voters, set(&[1, 2]), "C_new is in force");
    let fx = ticks(&mut n, 40);
    let asks = fx
        .messages
        .iter()
        .any(|(_, m)| matches!(m, Message::RequestVote { .. } | Message::PreVote { .. }));
    assert!(asks, "node 3 ({:?}) never campaigned", n.role());
}
