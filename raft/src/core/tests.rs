//! Unit tests of the core: each asserts the exact effects (records, messages, responses) of a
//! step.

use common::{Effects, Node, NodeId, Outbox, Persist, RequestId};

use super::RaftNode;
use crate::config::Config;
use crate::error::{RaftError, RecoverError};
use crate::kv::{KvCommand, KvOutput, KvQuery, KvStore};
use crate::message::{Entry, Message, Payload, Record, ReplicationState, Request, Response, Role};

type N = RaftNode<KvStore>;
type Fx = Effects<N>;

fn cfg(id: NodeId, n: u64) -> Config {
    let mut c = Config::new(id, (1..=n).collect());
    c.election_timeout_ticks_min = 10;
    c.election_timeout_ticks_max = 10;
    c.heartbeat_interval_ticks = 2;
    c
}

fn node(c: Config) -> N {
    N::recover(c.into(), vec![]).unwrap()
}

fn step(n: &mut N, f: impl FnOnce(&mut N, &mut Outbox<N>)) -> Fx {
    let mut out = Outbox::new();
    f(n, &mut out);
    out.take()
}

fn recv(n: &mut N, from: NodeId, m: Message<KvCommand>) -> Fx {
    step(n, |n, o| n.handle_message(from, m, o))
}

fn tick(n: &mut N) -> Fx {
    step(n, |n, o| n.tick(o))
}

fn ticks(n: &mut N, k: u64) -> Fx {
    let mut all = Fx::default();
    for _ in 0..k {
        let fx = tick(n);
        all.records.extend(fx.records);
        all.messages.extend(fx.messages);
        all.responses.extend(fx.responses);
        all.events.extend(fx.events);
    }
    all
}

fn request(n: &mut N, id: u64, r: Request<KvCommand, KvQuery>) -> Fx {
    step(n, |n, o| n.handle_request(RequestId(id), r, o))
}

fn put(v: &str) -> KvCommand {
    KvCommand::Put {
        key: "k".into(),
        value: v.into(),
    }
}

fn records(fx: &Fx) -> Vec<Record<KvCommand>> {
    fx.records.iter().map(|p| p.record().clone()).collect()
}

/// A leader of term 1 over `n` nodes whose followers all acknowledged the no-op (so they are
/// in replicate state).
fn leader(mut c: Config, n: u64) -> N {
    c.pre_vote = false;
    elect(node(c), n)
}

/// Makes the fresh node `l` (configured without pre-vote) the leader of term 1 over `n` nodes.
fn elect(mut l: N, n: u64) -> N {
    ticks(&mut l, 10);
    assert_eq!(l.role(), Role::Candidate);
    for v in 2..=n {
        recv(
            &mut l,
            v,
            Message::RequestVoteResponse {
                term: 1,
                granted: true,
            },
        );
    }
    assert_eq!(l.role(), Role::Leader);
    for v in 2..=n {
        recv(&mut l, v, ack(1, 1, 1));
    }
    assert_eq!(l.commit_index(), 1);
    l
}

fn ack(term: u64, index: u64, read_seq: u64) -> Message<KvCommand> {
    Message::AppendEntriesResponse {
        term,
        success: true,
        index,
        conflict: None,
        last_log_index: index,
        read_seq,
    }
}

fn heartbeat(term: u64, read_seq: u64) -> Message<KvCommand> {
    Message::AppendEntries {
        term,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![],
        leader_commit: 0,
        read_seq,
    }
}

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
fn replicate_state_pipelines_up_to_inflight_max() {
    let mut c = cfg(1, 3);
    c.inflight_max = 2;
    c.append_entries_max = 1;
    let mut l = leader(c, 3);
    let mut to_2 = 0;
    for i in 0..5 {
        let fx = request(&mut l, i, Request::Propose(put(&i.to_string())));
        to_2 += fx.messages.iter().filter(|(to, _)| *to == 2).count();
    }
    assert_eq!(to_2, 2, "two AppendEntries in flight, no more");
    let p = &l.metrics().progress[&2];
    assert_eq!(
        (p.state, p.inflight, p.next_index),
        (ReplicationState::Replicate, 2, 4)
    );
    // One answer frees one slot: exactly one more message, carrying the next entry.
    let fx = recv(&mut l, 2, ack(1, 2, 1));
    let sent: Vec<_> = fx
        .messages
        .iter()
        .filter(|(to, _)| *to == 2)
        .map(|(_, m)| match m {
            Message::AppendEntries { entries, .. } => entries.iter().map(|e| e.index).collect(),
            _ => vec![],
        })
        .collect();
    assert_eq!(sent, vec![vec![4u64]]);
}

#[test]
fn probe_state_sends_one_message_until_answered() {
    let mut c = cfg(1, 3);
    c.pre_vote = false;
    let mut l = node(c);
    ticks(&mut l, 10);
    recv(
        &mut l,
        2,
        Message::RequestVoteResponse {
            term: 1,
            granted: true,
        },
    );
    assert_eq!(l.role(), Role::Leader);
    // No follower answered yet: both are probed with the no-op, and proposals wait.
    let fx = request(&mut l, 1, Request::Propose(put("a")));
    assert!(fx.messages.is_empty());
    assert_eq!(l.metrics().progress[&3].state, ReplicationState::Probe);
    // A heartbeat re-probes.
    let fx = ticks(&mut l, 2);
    assert_eq!(fx.messages.iter().filter(|(to, _)| *to == 3).count(), 1);
}

#[test]
fn append_entries_respects_the_byte_cap() {
    let mut c = cfg(1, 3);
    c.append_bytes_max = 20;
    c.inflight_max = 1;
    let mut l = leader(c, 3);
    recv(&mut l, 2, ack(1, 1, 1));
    // Fill the single in-flight slot, then queue three 10-byte commands.
    request(&mut l, 0, Request::Propose(put("x")));
    for i in 1..4 {
        request(&mut l, i, Request::Propose(put("yy")));
    }
    let fx = recv(&mut l, 2, ack(1, 2, 1));
    let sizes: Vec<usize> = fx
        .messages
        .iter()
        .filter(|(to, _)| *to == 2)
        .map(|(_, m)| match m {
            Message::AppendEntries { entries, .. } => entries.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(sizes, vec![1], "11 bytes per entry, 20 allowed: one entry");
}

#[test]
fn bad_input_is_rejected_and_counted() {
    let mut f = node(cfg(2, 3));
    // Unknown sender.
    assert!(recv(&mut f, 9, heartbeat(1, 1)).is_empty());
    // Entries out of order.
    let bad = Message::AppendEntries {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![Entry {
            term: 1,
            index: 5,
            payload: Payload::Noop,
        }],
        leader_commit: 0,
        read_seq: 1,
    };
    let fx = recv(&mut f, 1, bad);
    assert!(fx
        .records
        .iter()
        .all(|p| !matches!(p.record(), Record::Entries(_))));
    assert!(fx.messages.is_empty());
    // Entries of a future term.
    let future = Message::AppendEntries {
        term: 1,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![Entry {
            term: 7,
            index: 1,
            payload: Payload::Noop,
        }],
        leader_commit: 0,
        read_seq: 1,
    };
    assert!(recv(&mut f, 1, future).messages.is_empty());
    // A leader hearing of an index past its log.
    let mut l = leader(cfg(1, 3), 3);
    assert!(recv(&mut l, 2, ack(1, 99, 1)).is_empty());
    assert_eq!(l.metrics().progress[&2].match_index, 1);
    let m = f.metrics();
    assert_eq!(
        (m.rejected.unknown_sender, m.rejected.invalid),
        (1, 2),
        "{m:?}"
    );
    assert_eq!(l.metrics().rejected.invalid, 1);
    assert_eq!(f.last_log_index(), 0, "the log is untouched");
}

#[test]
fn recover_rebuilds_term_vote_and_log_and_refuses_gaps() {
    let e = |term, index| Entry {
        term,
        index,
        payload: Payload::Command(put(&index.to_string())),
    };
    let records = vec![
        Record::HardState {
            term: 3,
            voted_for: Some(2),
        },
        Record::Entries(vec![e(1, 1), e(2, 2), e(2, 3)]),
        Record::Truncate { from: 3 },
        Record::Entries(vec![e(3, 3)]),
    ];
    let n = N::recover(cfg(1, 3).into(), records).unwrap();
    assert_eq!(
        (n.term(), n.last_log_index(), n.entry_term(3)),
        (3, 3, Some(3))
    );
    assert_eq!(n.voted_for, Some(2));
    assert_eq!(n.commit_index(), 0, "the commit index is volatile");
    let gap = vec![Record::Entries(vec![e(1, 2)])];
    assert!(matches!(
        N::recover(cfg(1, 3).into(), gap),
        Err(RecoverError::Corrupt(_))
    ));
    let back = vec![
        Record::HardState {
            term: 3,
            voted_for: None,
        },
        Record::HardState {
            term: 2,
            voted_for: None,
        },
    ];
    assert!(matches!(
        N::recover(cfg(1, 3).into(), back),
        Err(RecoverError::Corrupt(_))
    ));
}

#[test]
fn propose_to_a_follower_names_the_leader() {
    let mut f = node(cfg(2, 3));
    recv(&mut f, 1, heartbeat(1, 1));
    let fx = request(&mut f, 5, Request::Propose(put("a")));
    let expected = Response::Failed(RaftError::NotLeader { leader: Some(1) });
    assert_eq!(fx.responses, vec![(RequestId(5), expected)]);
    assert_eq!(
        RaftError::NotLeader { leader: Some(1) }.to_string(),
        "not the leader, try node 1"
    );
    assert!(fx.records.is_empty() && fx.messages.is_empty());
}

#[test]
fn read_index_waits_for_a_majority_round_and_the_apply_point() {
    let mut l = leader(cfg(1, 3), 3);
    request(&mut l, 1, Request::Propose(put("a")));
    let fx = request(&mut l, 2, Request::Read(KvQuery::Get("k".into())));
    assert!(fx.responses.is_empty());
    let seq = match &fx.messages[0].1 {
        Message::AppendEntries { read_seq, .. } => *read_seq,
        m => panic!("{m:?}"),
    };
    assert_eq!(fx.messages.len(), 2, "a round to both followers");
    // An answer to an older round does not confirm it.
    let fx = recv(&mut l, 2, ack(1, 1, seq - 1));
    assert!(fx.responses.is_empty());
    // A majority answered this round, but the read point (the commit index at the time, 1)
    // is applied: the read is answered without the uncommitted write.
    let fx = recv(&mut l, 2, ack(1, 1, seq));
    assert_eq!(
        fx.responses,
        vec![(RequestId(2), Response::Read(KvOutput::Value(None)))]
    );
}

#[test]
fn reads_wait_for_the_leaders_first_commit() {
    let mut c = cfg(1, 3);
    c.pre_vote = false;
    let mut l = node(c);
    ticks(&mut l, 10);
    let fx = recv(
        &mut l,
        2,
        Message::RequestVoteResponse {
            term: 1,
            granted: true,
        },
    );
    let elected_seq = match &fx.messages[0].1 {
        Message::AppendEntries { read_seq, .. } => *read_seq,
        m => panic!("{m:?}"),
    };
    // The new leader's first round is in flight: the read waits for the next one.
    let fx = request(&mut l, 7, Request::Read(KvQuery::Get("k".into())));
    assert!(fx.messages.is_empty() && fx.responses.is_empty());
    // The round in flight is answered (the no-op not yet): the next round starts at once.
    let fx = recv(
        &mut l,
        2,
        Message::AppendEntriesResponse {
            term: 1,
            success: true,
            index: 0,
            conflict: None,
            last_log_index: 0,
            read_seq: elected_seq,
        },
    );
    assert!(fx.responses.is_empty());
    let seq = match &fx.messages[0].1 {
        Message::AppendEntries { read_seq, .. } => *read_seq,
        m => panic!("{m:?}"),
    };
    assert_eq!(seq, elected_seq + 1);
    // Confirmed round, but the no-op is not committed yet: no answer.
    let fx = recv(
        &mut l,
        2,
        Message::AppendEntriesResponse {
            term: 1,
            success: true,
            index: 0,
            conflict: None,
            last_log_index: 0,
            read_seq: seq,
        },
    );
    assert!(fx.responses.is_empty());
    let fx = recv(&mut l, 2, ack(1, 1, seq));
    assert_eq!(
        fx.responses,
        vec![(RequestId(7), Response::Read(KvOutput::Value(None)))]
    );
}

#[test]
fn lease_reads_answer_locally_within_the_lease_only() {
    let mut c = cfg(1, 3);
    c.lease_reads = true;
    c.lease_margin_ticks = 2;
    let mut l = leader(c, 3);
    // The no-op round (started at tick 10) was acknowledged: lease until 10 + 10 - 2 = 18.
    let fx = request(&mut l, 1, Request::Read(KvQuery::Get("k".into())));
    assert_eq!(fx.responses.len(), 1, "answered from the lease");
    assert!(fx.messages.is_empty(), "no round needed");
    // Let the lease run out without acknowledgements.
    let mut out = Outbox::new();
    for _ in 0..8 {
        l.tick(&mut out);
    }
    let in_flight = out
        .messages()
        .iter()
        .filter_map(|(_, m)| match m {
            Message::AppendEntries { read_seq, .. } => Some(*read_seq),
            _ => None,
        })
        .max()
        .unwrap();
    let fx = request(&mut l, 2, Request::Read(KvQuery::Get("k".into())));
    assert!(fx.responses.is_empty(), "lease expired: a ReadIndex round");
    // The heartbeat round in flight started before the read: once it is answered, the read's
    // own round starts.
    assert!(fx.messages.is_empty());
    let fx = recv(&mut l, 2, ack(1, 1, in_flight));
    assert!(fx.responses.is_empty());
    assert_eq!(fx.messages.len(), 2, "the read's round, to both followers");
}

/// Reads that arrive while a round is in flight share the next round: one heartbeat per
/// follower per round trip, not per read.
#[test]
fn reads_arriving_during_a_round_share_the_next_one() {
    let mut l = leader(cfg(1, 3), 3);
    let fx = request(&mut l, 1, Request::Read(KvQuery::Get("k".into())));
    assert_eq!(fx.messages.len(), 2, "no round in flight: one starts");
    let seq = match &fx.messages[0].1 {
        Message::AppendEntries { read_seq, .. } => *read_seq,
        m => panic!("{m:?}"),
    };
    for id in 2..12 {
        let fx = request(&mut l, id, Request::Read(KvQuery::Get("k".into())));
        assert!(fx.messages.is_empty(), "read {id} waits for the next round");
    }
    // The first round is answered: read 1 is, and one round starts for the ten others.
    let fx = recv(&mut l, 2, ack(1, 1, seq));
    assert_eq!(fx.responses.len(), 1);
    assert_eq!(fx.messages.len(), 2);
    let fx = recv(&mut l, 3, ack(1, 1, seq + 1));
    assert_eq!(fx.responses.len(), 10);
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

#[test]
fn snapshot_compacts_the_log_and_installs_in_chunks() {
    let mut c = cfg(1, 3);
    c.snapshot_log_entries_max = 3;
    c.snapshot_chunk_bytes_max = 8;
    let mut l = leader(c, 3);
    let mut checkpoints = Vec::new();
    for i in 0..4 {
        request(&mut l, i, Request::Propose(put(&format!("v{i}"))));
        let fx = recv(&mut l, 2, ack(1, 2 + i, 1));
        checkpoints.extend(fx.records.into_iter().filter(Persist::is_checkpoint));
    }
    assert_eq!(
        checkpoints.len(),
        1,
        "one snapshot once 4 entries were applied"
    );
    assert!(l.first_log_index() > 1, "the log was compacted");
    // Node 3 never answered: it needs the compacted entries, so it gets the snapshot.
    let mut f = node(cfg(3, 3));
    let mut out = Outbox::new();
    l.tick(&mut out);
    l.tick(&mut out);
    let mut msgs: Vec<Message<KvCommand>> = out
        .take()
        .messages
        .into_iter()
        .filter(|(to, _)| *to == 3)
        .map(|(_, m)| m)
        .collect();
    let mut chunks = 0;
    for _ in 0..100 {
        let Some(m) = msgs.pop() else { break };
        if matches!(m, Message::InstallSnapshot { .. }) {
            chunks += 1;
        }
        for (_, reply) in recv(&mut f, 1, m).messages {
            msgs.extend(
                recv(&mut l, 3, reply)
                    .messages
                    .into_iter()
                    .filter(|(to, _)| *to == 3)
                    .map(|(_, m)| m),
            );
        }
    }
    assert!(chunks >= 2, "{chunks} chunks");
    assert_eq!(f.state_machine().get("k"), Some("v3"));
    assert_eq!(f.last_log_index(), l.last_log_index());
    assert_eq!(l.metrics().progress[&3].match_index, l.last_log_index());
}

/// A leader with entries 2..=5 putting `v0..v3` and a snapshot at index 4, and the leader's
/// checkpoint record.
fn leader_with_snapshot(chunk: usize) -> (N, Vec<Persist<crate::message::Record<KvCommand>>>) {
    let mut c = cfg(1, 3);
    c.snapshot_log_entries_max = 3;
    c.snapshot_chunk_bytes_max = chunk;
    let mut l = leader(c, 3);
    let mut checkpoints = Vec::new();
    for i in 0..4 {
        request(&mut l, i, Request::Propose(put(&format!("v{i}"))));
        let fx = recv(&mut l, 2, ack(1, 2 + i, 1));
        checkpoints.extend(fx.records.into_iter().filter(Persist::is_checkpoint));
    }
    (l, checkpoints)
}

/// Pumps messages between leader `l` and follower `f` (node 3), passing each message from the
/// leader through `tamper` first (which may lose it, change it or repeat it). Messages waiting
/// are delivered newest first, so several in flight arrive reordered. Returns how many
/// InstallSnapshot chunks reached `f`.
fn pump_snapshot(
    l: &mut N,
    f: &mut N,
    mut tamper: impl FnMut(Message<KvCommand>) -> Vec<Message<KvCommand>>,
) -> usize {
    let mut out = Outbox::new();
    l.tick(&mut out);
    l.tick(&mut out);
    let to_3 = |fx: Fx| -> Vec<Message<KvCommand>> {
        fx.messages
            .into_iter()
            .filter(|(to, _)| *to == 3)
            .map(|(_, m)| m)
            .collect()
    };
    let mut msgs = to_3(out.take());
    let mut chunks = 0;
    for _ in 0..1000 {
        let Some(m) = msgs.pop() else { break };
        for m in tamper(m) {
            if matches!(m, Message::InstallSnapshot { .. }) {
                chunks += 1;
            }
            for (_, reply) in recv(f, 1, m).messages {
                msgs.extend(to_3(recv(l, 3, reply)));
            }
        }
        if msgs.is_empty() && f.last_log_index() < l.last_log_index() {
            // A refused transfer restarts on the leader's next heartbeat.
            msgs.extend(to_3(ticks(l, 2)));
        }
    }
    chunks
}

#[test]
fn snapshot_is_a_file_that_the_checkpoint_names() {
    let (l, checkpoints) = leader_with_snapshot(8);
    assert_eq!(checkpoints.len(), 1);
    let Record::Snapshot { meta, file, .. } = checkpoints[0].record() else {
        panic!("{checkpoints:?}");
    };
    assert_eq!(l.snapshots.list().unwrap(), vec![file.id]);
    assert_eq!((meta.bytes, meta.crc32c), (file.bytes, file.crc32c));
    // The file holds the state machine's stream, not a copy inside the record.
    let mut stored = Vec::new();
    std::io::Read::read_to_end(
        &mut common::snapshot::SnapshotReader::open(&*l.snapshots, *file).unwrap(),
        &mut stored,
    )
    .unwrap();
    let mut restored = KvStore::default();
    crate::StateMachine::restore(&mut restored, &mut &stored[..]).unwrap();
    // It covers index 4: the no-op and `v0..v2`.
    assert_eq!(meta.index, 4);
    assert_eq!(restored.get("k"), Some("v2"));
}

#[test]
fn a_corrupted_chunk_is_refused_and_the_transfer_starts_over() {
    let (mut l, _) = leader_with_snapshot(8);
    let mut f = node(cfg(3, 3));
    let mut corrupted = 0;
    let chunks = pump_snapshot(&mut l, &mut f, |m| match m {
        Message::InstallSnapshot {
            term,
            meta,
            offset,
            mut data,
            done,
        } if corrupted == 0 && !data.is_empty() => {
            corrupted += 1;
            data[0] ^= 0x40;
            vec![Message::InstallSnapshot {
                term,
                meta,
                offset,
                data,
                done,
            }]
        }
        m => vec![m],
    });
    assert_eq!(corrupted, 1);
    assert_eq!(f.metrics().rejected.invalid, 1, "the checksum caught it");
    assert!(chunks >= 4, "sent again from the start: {chunks} chunks");
    assert_eq!(f.state_machine().get("k"), Some("v3"));
    assert_eq!(f.last_log_index(), l.last_log_index());
    // Only the good copy is in the follower's store; the damaged one never became visible.
    assert_eq!(f.snapshots.list().unwrap().len(), 1);
}

#[test]
fn lost_duplicated_and_reordered_chunks_still_install_the_snapshot() {
    let (mut l, _) = leader_with_snapshot(3);
    let mut f = node(cfg(3, 3));
    // Every third chunk is lost; every other one arrives twice, with the chunk before it
    // replayed after it (late and out of order).
    let mut seen = 0;
    let mut previous: Option<Message<KvCommand>> = None;
    let chunks = pump_snapshot(&mut l, &mut f, |m| {
        if !matches!(m, Message::InstallSnapshot { .. }) {
            return vec![m];
        }
        seen += 1;
        if seen % 3 == 0 {
            return vec![];
        }
        let mut deliver = vec![m.clone(), m.clone()];
        deliver.extend(previous.replace(m));
        deliver
    });
    assert!(chunks > 6, "{chunks}");
    assert_eq!(f.state_machine().get("k"), Some("v3"));
    assert_eq!(f.last_log_index(), l.last_log_index());
    assert_eq!(f.snapshots.list().unwrap().len(), 1);
}

#[test]
fn recovery_refuses_a_missing_or_corrupted_snapshot_file() {
    let (l, checkpoints) = leader_with_snapshot(8);
    let records = vec![checkpoints[0].record().clone()];
    let Record::Snapshot { file, .. } = &records[0] else {
        panic!()
    };
    // The store it names is not there.
    let empty = std::sync::Arc::new(common::snapshot::MemSnapshotStore::new());
    assert!(matches!(
        N::recover_with_snapshots(cfg(1, 3).into(), records.clone(), empty),
        Err(RecoverError::Snapshot(common::SnapshotError::NotFound(_)))
    ));
    // A byte flipped on disk: the checksum refuses it.
    let store = common::snapshot::MemSnapshotStore::new();
    let copy = {
        let mut w = common::snapshot::SnapshotWriter::create(&store, u64::MAX).unwrap();
        let source = l.snapshots.open(file.id).unwrap();
        let mut buf = vec![0u8; file.bytes as usize];
        source.read_at(0, &mut buf).unwrap();
        std::io::Write::write_all(&mut w, &buf).unwrap();
        w.finish().unwrap()
    };
    assert_eq!((copy.bytes, copy.crc32c), (file.bytes, file.crc32c));
    let records = vec![Record::Snapshot {
        term: 1,
        voted_for: Some(1),
        meta: match &records[0] {
            Record::Snapshot { meta, .. } => meta.clone(),
            _ => unreachable!(),
        },
        file: copy,
        entries: vec![],
    }];
    let store = std::sync::Arc::new(store);
    // Intact, it recovers.
    let n = N::recover_with_snapshots(cfg(1, 3).into(), records.clone(), store.clone()).unwrap();
    assert_eq!(n.state_machine().get("k"), Some("v2"));
    assert!(store.corrupt(copy.id, 2, 0x01));
    assert!(matches!(
        N::recover_with_snapshots(cfg(1, 3).into(), records, store),
        Err(RecoverError::Snapshot(_))
    ));
}

/// A state machine that persists its state and applied index in a shared "database", the way
/// one over an embedded database would: it reopens with what it had applied.
#[derive(Debug)]
struct Durable {
    db: std::sync::Arc<std::sync::Mutex<(KvStore, u64)>>,
    kv: KvStore,
    applied: u64,
    applies: std::sync::Arc<std::sync::atomic::AtomicU64>,
    restores: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl crate::StateMachine for Durable {
    type Command = KvCommand;
    type Query = KvQuery;
    type Output = KvOutput;

    fn apply(&mut self, index: u64, command: &KvCommand) -> KvOutput {
        self.applies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.kv.apply(index, command)
    }

    fn applied(&mut self, index: u64) {
        self.applied = index;
        *self.db.lock().unwrap() = (self.kv.clone(), index);
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    fn query(&self, query: &KvQuery) -> KvOutput {
        self.kv.query(query)
    }

    fn snapshot(&self, out: &mut dyn std::io::Write) -> Result<(), common::StateMachineError> {
        self.kv.snapshot(out)
    }

    fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), common::StateMachineError> {
        self.restores
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.kv.restore(input)
    }
}

#[test]
fn a_durable_state_machine_is_neither_restored_nor_replayed_past_its_applied_index() {
    use crate::StateMachine as _;
    use std::sync::atomic::Ordering;
    let db = std::sync::Arc::new(std::sync::Mutex::new((KvStore::default(), 0)));
    let applies = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let restores = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let setup = {
        let (db, applies, restores) = (db.clone(), applies.clone(), restores.clone());
        common::Setup::new(cfg(1, 3), move || {
            let (kv, applied) = db.lock().unwrap().clone();
            Ok(Durable {
                db: db.clone(),
                kv,
                applied,
                applies: applies.clone(),
                restores: restores.clone(),
            })
        })
    };
    type D = RaftNode<Durable>;
    let store = std::sync::Arc::new(common::snapshot::MemSnapshotStore::new());
    let mut n = D::recover_with_snapshots(setup.clone(), vec![], store.clone()).unwrap();
    let mut records = Vec::new();
    let mut out = Outbox::new();
    let entries: Vec<Entry<KvCommand>> = (1..=6)
        .map(|i| Entry {
            term: 1,
            index: i,
            payload: Payload::Command(put(&format!("v{i}"))),
        })
        .collect();
    n.handle_message(
        2,
        Message::AppendEntries {
            term: 1,
            prev_log_index: 0,
            prev_log_term: 0,
            entries,
            leader_commit: 6,
            read_seq: 0,
        },
        &mut out,
    );
    records.extend(out.take().records.into_iter().map(|p| p.record().clone()));
    assert_eq!(n.applied_index(), 6);
    assert_eq!(applies.load(Ordering::Relaxed), 6);
    assert_eq!(
        db.lock().unwrap().1,
        6,
        "applied() reported the batch's end"
    );

    // Restart: the state machine reopens at 6 and nothing is applied again.
    let n = D::recover_with_snapshots(setup, records, store).unwrap();
    assert_eq!(n.applied_index(), 6);
    assert_eq!(n.state_machine().applied_index(), 6);
    assert_eq!(applies.load(Ordering::Relaxed), 6);
    assert_eq!(restores.load(Ordering::Relaxed), 0);
    assert_eq!(
        n.state_machine().query(&KvQuery::Get("k".into())),
        KvOutput::Value(Some("v6".into()))
    );
}

#[test]
fn checkpoints_made_durable_delete_the_snapshots_they_replace() {
    let mut c = cfg(1, 3);
    c.snapshot_log_entries_max = 2;
    let mut l = leader(c, 3);
    let mut checkpoints = 0;
    for i in 0..12 {
        request(&mut l, i, Request::Propose(put(&format!("v{i}"))));
        let fx = recv(&mut l, 2, ack(1, 2 + i, 1));
        checkpoints += fx.records.iter().filter(|p| p.is_checkpoint()).count() as u64;
    }
    assert!(checkpoints >= 3, "{checkpoints}");
    // Nothing durable yet: every snapshot may still be the one a crash recovers from.
    assert_eq!(l.snapshots.list().unwrap().len() as u64, checkpoints);
    l.checkpoints_durable(checkpoints);
    assert_eq!(
        l.snapshots.list().unwrap().len(),
        1,
        "only the newest is kept"
    );
}

#[test]
fn the_log_is_compacted_by_bytes_as_well_as_by_entries() {
    let mut c = cfg(1, 3);
    c.snapshot_log_entries_max = 1_000;
    // Each put below counts 1 + 100 + 8 bytes.
    c.snapshot_log_bytes_max = 300;
    let mut l = leader(c, 3);
    let mut checkpoints = 0;
    for i in 0..3 {
        request(&mut l, i, Request::Propose(put(&"x".repeat(100))));
        let fx = recv(&mut l, 2, ack(1, 2 + i, 1));
        checkpoints += fx.records.iter().filter(|p| p.is_checkpoint()).count();
    }
    assert_eq!(checkpoints, 1, "the third put passed 300 bytes");
    assert_eq!(l.first_log_index(), 5, "compacted through the third put");
}

/// A snapshot store whose `create` fails while `fail` is set (a full disk), counting tries.
struct FailingStore {
    inner: common::snapshot::MemSnapshotStore,
    fail: std::sync::atomic::AtomicBool,
    tries: std::sync::atomic::AtomicU64,
}

impl common::SnapshotStore for FailingStore {
    fn create(&self) -> Result<Box<dyn common::snapshot::SnapshotSink>, common::SnapshotError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.tries.fetch_add(1, SeqCst);
        if self.fail.load(SeqCst) {
            return Err(common::SnapshotError::Io {
                path: "snapshots".into(),
                source: std::io::Error::other("No space left on device"),
            });
        }
        self.inner.create()
    }
    fn open(
        &self,
        id: common::snapshot::SnapshotId,
    ) -> Result<std::sync::Arc<dyn common::snapshot::SnapshotSource>, common::SnapshotError> {
        self.inner.open(id)
    }
    fn list(&self) -> Result<Vec<common::snapshot::SnapshotId>, common::SnapshotError> {
        self.inner.list()
    }
    fn remove(&self, id: common::snapshot::SnapshotId) -> Result<(), common::SnapshotError> {
        self.inner.remove(id)
    }
}

#[test]
fn a_failing_snapshot_is_retried_after_a_doubling_wait_not_after_every_entry() {
    use std::sync::atomic::Ordering::SeqCst;
    let store = std::sync::Arc::new(FailingStore {
        inner: common::snapshot::MemSnapshotStore::new(),
        fail: true.into(),
        tries: 0.into(),
    });
    let mut c = cfg(1, 3);
    c.pre_vote = false;
    c.snapshot_log_entries_max = 2;
    let n = N::recover_with_snapshots(c.into(), vec![], store.clone()).unwrap();
    let mut l = elect(n, 3);
    let mut index = 1;
    let mut propose = |l: &mut N, count: u64| {
        let mut checkpoints = 0;
        for _ in 0..count {
            request(l, index, Request::Propose(put("v")));
            index += 1;
            let fx = recv(l, 2, ack(1, index, 1));
            checkpoints += fx.records.iter().filter(|p| p.is_checkpoint()).count();
        }
        checkpoints
    };
    // 60 entries past the trigger with the disk full: tries at waits of 1, 2, 4, 8, 16 and 32
    // entries, not 60 of them, and no checkpoint.
    assert_eq!(propose(&mut l, 62), 0);
    let tries = store.tries.load(SeqCst);
    assert!((5..=7).contains(&tries), "{tries} tries");
    // Space returns: the next try (within the current wait) succeeds and compacts.
    store.fail.store(false, SeqCst);
    assert_eq!(
        propose(&mut l, 64),
        64 / 3,
        "then one checkpoint per 3 entries"
    );
}

#[test]
fn config_validate_explains() {
    let mut c = Config::new(1, vec![1, 2, 2]);
    assert!(c.validate().unwrap_err().to_string().contains("duplicates"));
    c = Config::new(4, vec![1, 2, 3]);
    assert!(c.validate().is_err());
    c = Config::new(1, vec![1, 2, 3]);
    c.election_timeout_ticks_min = 2;
    assert!(c.validate().unwrap_err().to_string().contains("heartbeat"));
    c = Config::new(1, vec![1, 2, 3]);
    c.check_quorum = false;
    c.lease_reads = true;
    assert!(c.validate().is_err());
    assert!(Config::new(1, vec![1, 2, 3]).validate().is_ok());
}

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
    // Promotion: now four voters, three needed.
    request(&mut l, 2, Request::AddVoter(4));
    let fx = recv(&mut l, 2, ack(1, 3, 1));
    assert!(
        fx.responses.is_empty(),
        "two of four voters are not a majority"
    );
    let fx = recv(&mut l, 4, ack(1, 3, 1));
    let m = membership_response(&fx, 2).unwrap();
    assert_eq!((m.voters, m.learners), (set(&[1, 2, 3, 4]), set(&[])));
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
        entries,
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
        Record::Entries(vec![Entry {
            term: 1,
            index: 1,
            payload: Payload::Membership(Box::new(m)),
        }]),
        Record::Truncate { from: 1 },
    ];
    let r = N::recover(cfg(2, 3).into(), records).unwrap();
    assert_eq!(r.membership().voters, set(&[1, 2, 3]));
}

// ----- flow control: caps on uncommitted bytes, pending proposals and reads, message size -----

/// The bytes [`KvStore`] counts for `put(v)`: key, value and 8 bytes of overhead.
fn put_bytes(v: &str) -> usize {
    <KvStore as crate::StateMachine>::command_bytes(&put(v))
}

#[test]
fn proposals_past_the_uncommitted_bytes_cap_are_refused_and_nothing_is_appended() {
    let mut c = cfg(1, 3);
    assert_eq!(put_bytes("ab"), 11);
    c.uncommitted_bytes_max = 31;
    let mut l = leader(c, 3);
    // 11 + 11 bytes fit under 31.
    for (id, v) in [(1, "ab"), (2, "cd")] {
        let fx = request(&mut l, id, Request::Propose(put(v)));
        assert!(fx.responses.is_empty());
        assert_eq!(records(&fx).len(), 1, "the entry is persisted");
    }
    assert_eq!(l.last_log_index(), 3);
    // A third would make 33: refused with a typed error; no record, no message, no entry.
    let fx = request(&mut l, 3, Request::Propose(put("ef")));
    assert_eq!(
        fx.responses,
        vec![(
            RequestId(3),
            Response::Failed(RaftError::Busy("too many uncommitted bytes"))
        )]
    );
    assert!(fx.records.is_empty() && fx.messages.is_empty() && fx.events.is_empty());
    assert_eq!(l.last_log_index(), 3);
    // A smaller command that still fits (22 + 9 = 31) is accepted: the cap counts bytes.
    let fx = request(&mut l, 4, Request::Propose(put("")));
    assert!(fx.responses.is_empty());
    assert_eq!((l.last_log_index(), put_bytes("")), (4, 9));
    // Committing and applying releases the bytes: the refused proposal now fits.
    let fx = recv(&mut l, 2, ack(1, 4, 1));
    assert_eq!(l.commit_index(), 4);
    assert_eq!(fx.responses.len(), 3, "proposals 1, 2 and 4 answered");
    let fx = request(&mut l, 5, Request::Propose(put("ef")));
    assert!(fx.responses.is_empty());
    assert_eq!(l.last_log_index(), 5);
}

#[test]
fn proposals_past_the_pending_cap_are_refused_and_nothing_is_appended() {
    let mut c = cfg(1, 3);
    c.proposals_pending_max = 2;
    let mut l = leader(c, 3);
    request(&mut l, 1, Request::Propose(put("a")));
    request(&mut l, 2, Request::Propose(put("b")));
    assert_eq!(l.last_log_index(), 3);
    let fx = request(&mut l, 3, Request::Propose(put("c")));
    assert_eq!(
        fx.responses,
        vec![(
            RequestId(3),
            Response::Failed(RaftError::Busy("too many pending proposals"))
        )]
    );
    assert!(fx.records.is_empty() && fx.messages.is_empty());
    assert_eq!(l.last_log_index(), 3);
    // Applying entry 2 frees one slot: exactly one more proposal fits.
    let fx = recv(&mut l, 2, ack(1, 2, 1));
    assert_eq!(fx.responses.len(), 1);
    let fx = request(&mut l, 4, Request::Propose(put("c")));
    assert!(fx.responses.is_empty());
    assert_eq!(l.last_log_index(), 4);
    let fx = request(&mut l, 5, Request::Propose(put("d")));
    assert_eq!(
        fx.responses,
        vec![(
            RequestId(5),
            Response::Failed(RaftError::Busy("too many pending proposals"))
        )]
    );
    assert_eq!(l.last_log_index(), 4);
}

#[test]
fn reads_past_the_pending_cap_are_refused() {
    let mut c = cfg(1, 3);
    c.reads_pending_max = 1;
    let mut l = leader(c, 3);
    let fx = request(&mut l, 1, Request::Read(KvQuery::Get("k".into())));
    assert!(fx.responses.is_empty(), "waits for a heartbeat round");
    let fx = request(&mut l, 2, Request::Read(KvQuery::Get("k".into())));
    assert_eq!(
        fx.responses,
        vec![(
            RequestId(2),
            Response::Failed(RaftError::Busy("too many pending reads"))
        )]
    );
    assert!(fx.records.is_empty());
}

#[test]
fn append_entries_respects_the_entries_cap() {
    let mut c = cfg(1, 3);
    c.append_entries_max = 2;
    c.inflight_max = 1;
    let mut l = leader(c, 3);
    // Entry 2 fills the single in-flight slot; entries 3..=7 wait.
    request(&mut l, 0, Request::Propose(put("x")));
    for i in 1..=5 {
        let fx = request(&mut l, i, Request::Propose(put("y")));
        assert!(fx.messages.is_empty(), "the slot is taken");
    }
    let batches = |fx: &Fx| -> Vec<Vec<u64>> {
        fx.messages
            .iter()
            .filter(|(to, _)| *to == 2)
            .map(|(_, m)| match m {
                Message::AppendEntries { entries, .. } => entries.iter().map(|e| e.index).collect(),
                _ => vec![],
            })
            .collect()
    };
    let fx = recv(&mut l, 2, ack(1, 2, 1));
    assert_eq!(
        batches(&fx),
        vec![vec![3, 4]],
        "two entries per message, no more"
    );
    let fx = recv(&mut l, 2, ack(1, 4, 1));
    assert_eq!(batches(&fx), vec![vec![5, 6]]);
    let fx = recv(&mut l, 2, ack(1, 6, 1));
    assert_eq!(batches(&fx), vec![vec![7]]);
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
        Record::Entries(entries),
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

#[test]
fn proposals_of_one_step_share_one_record() {
    let mut l = leader(cfg(1, 3), 3);
    let fx = step(&mut l, |l, o| {
        for i in 0..3 {
            l.handle_request(RequestId(i), Request::Propose(put(&i.to_string())), o);
        }
    });
    let indexes: Vec<Vec<u64>> = records(&fx)
        .iter()
        .map(|r| match r {
            Record::Entries(e) => e.iter().map(|e| e.index).collect(),
            other => panic!("unexpected record {other:?}"),
        })
        .collect();
    assert_eq!(indexes, vec![vec![2, 3, 4]]);
}

#[test]
fn entries_messages_records_and_answers_stay_small() {
    use std::mem::size_of;
    // Every entry is cloned into the log, the records and each AppendEntries: a configuration
    // inline would triple its size (see `Payload::Membership`). Messages, records and answers
    // move through the outbox at the size of their largest variant, so the rare large ones are
    // boxed (see `Message::InstallSnapshot`).
    let sizes = (
        size_of::<Entry<u64>>(),
        size_of::<Message<u64>>(),
        size_of::<Record<u64>>(),
        size_of::<Response<u64>>(),
    );
    assert!(
        sizes.0 <= 32 && sizes.1 <= 72 && sizes.2 <= 80 && sizes.3 <= 32,
        "entry, message, record, response: {sizes:?}"
    );
}

#[test]
fn proposals_of_a_lost_leadership_are_answered_and_the_next_one_reuses_their_indexes() {
    let mut l = leader(cfg(1, 3), 3);
    for i in 1..=3 {
        request(&mut l, i, Request::Propose(put(&i.to_string())));
    }
    // Node 2 leads term 2 and replaces index 2 onwards by one entry of its own: node 1 steps
    // down and cannot know the fate of its proposals.
    let fx = recv(
        &mut l,
        2,
        Message::AppendEntries {
            term: 2,
            prev_log_index: 1,
            prev_log_term: 1,
            entries: vec![Entry {
                term: 2,
                index: 2,
                payload: Payload::Noop,
            }],
            leader_commit: 1,
            read_seq: 1,
        },
    );
    assert_eq!((l.role(), l.last_log_index()), (Role::Follower, 2));
    let answered: Vec<u64> = fx
        .responses
        .iter()
        .filter(|(_, r)| matches!(r, Response::Failed(RaftError::Indeterminate { .. })))
        .map(|(id, _)| id.0)
        .collect();
    assert_eq!(answered, vec![1, 2, 3]);
    // Node 1 leads term 3: its no-op goes to index 3, a new proposal to index 4, where the
    // third proposal of term 1 sat.
    ticks(&mut l, 10);
    recv(
        &mut l,
        2,
        Message::RequestVoteResponse {
            term: 3,
            granted: true,
        },
    );
    assert_eq!(l.role(), Role::Leader);
    request(&mut l, 10, Request::Propose(put("new")));
    assert_eq!(l.last_log_index(), 4);
    let fx = recv(&mut l, 2, ack(3, 4, 0));
    assert!(
        matches!(
            &fx.responses[..],
            [(RequestId(10), Response::Applied { index: 4, .. })]
        ),
        "{:?}",
        fx.responses
    );
}

/// Thesis §10.2.1: with `parallel_append`, the leader sends AppendEntries before its own copy
/// is durable, and counts that copy towards a majority only once the driver reports it durable.
#[test]
fn a_parallel_append_goes_out_at_once_and_counts_the_leader_once_durable() {
    let mut c = cfg(1, 3);
    c.parallel_append = true;
    let mut l = leader(c, 3);
    // Everything asked for while being elected is durable.
    step(&mut l, |n, o| n.records_durable(u64::MAX, o));
    let fx = request(&mut l, 7, Request::Propose(put("a")));
    assert_eq!(records(&fx).len(), 1, "the entry's record");
    assert!(fx.messages.is_empty(), "nothing waits for the sync");
    let early: Vec<(NodeId, Vec<u64>)> = fx
        .early
        .iter()
        .map(|(to, m)| match m {
            Message::AppendEntries { entries, .. } => {
                (*to, entries.iter().map(|e| e.index).collect())
            }
            other => panic!("unexpected early message {other:?}"),
        })
        .collect();
    assert_eq!(early, vec![(2, vec![2]), (3, vec![2])]);
    // One follower holds it durably; the leader's own copy is not durable yet: one of three.
    let fx = recv(&mut l, 2, ack(1, 2, 1));
    assert_eq!(l.commit_index(), 1);
    assert!(fx.responses.is_empty() && fx.early_responses.is_empty());
    // The leader's write is synced: itself and node 2 are a majority. The answer claims only
    // what a majority holds durably, so it need not wait for the next sync either.
    let fx = step(&mut l, |n, o| n.records_durable(u64::MAX, o));
    assert_eq!(l.commit_index(), 2);
    assert!(fx.responses.is_empty());
    assert_eq!(fx.early_responses.len(), 1);
    assert_eq!(fx.early_responses[0].0, RequestId(7));
}

/// Without `parallel_append` (the default) AppendEntries wait for the step's records.
#[test]
fn by_default_append_entries_wait_for_the_sync() {
    let mut l = leader(cfg(1, 3), 3);
    let fx = request(&mut l, 7, Request::Propose(put("a")));
    assert!(fx.early.is_empty());
    assert_eq!(fx.messages.len(), 2);
}
