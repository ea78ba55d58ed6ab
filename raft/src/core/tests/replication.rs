//! Unit tests of replication: pipelining and probing, the caps on entries, bytes and pending
//! proposals, bad input, one record per step, the size of the wire types, and the parallel
//! append.

use super::*;

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
        }]
        .into(),
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
        }]
        .into(),
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
            }]
            .into(),
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

/// The entries of an AppendEntries, by recipient.
fn appends(fx: &Fx) -> Vec<(NodeId, std::sync::Arc<[Entry<KvCommand>]>)> {
    fx.messages
        .iter()
        .filter_map(|(to, m)| match m {
            Message::AppendEntries { entries, .. } if !entries.is_empty() => {
                Some((*to, std::sync::Arc::clone(entries)))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn followers_at_the_same_point_share_one_list_of_entries() {
    let mut l = leader(cfg(1, 3), 3);
    let fx = request(&mut l, 1, Request::Propose(put("a")));
    let sent = appends(&fx);
    assert_eq!(sent.len(), 2, "one AppendEntries per follower");
    assert!(
        std::sync::Arc::ptr_eq(&sent[0].1, &sent[1].1),
        "both followers get the same list, not two copies"
    );
    // Follower 2 catches up first; more entries arrive before follower 3 does: follower 3 is
    // not handed the shorter list built for follower 2.
    let index = sent[0].1[0].index;
    let fx = request(&mut l, 2, Request::Propose(put("b")));
    assert!(appends(&fx).is_empty(), "the pipeline waits for acks");
    let to_2 = appends(&recv(&mut l, 2, ack(1, index, 1)));
    request(&mut l, 3, Request::Propose(put("c")));
    let to_3 = appends(&recv(&mut l, 3, ack(1, index, 1)));
    let indexes = |s: &[(NodeId, std::sync::Arc<[Entry<KvCommand>]>)]| -> Vec<u64> {
        s.iter()
            .flat_map(|(_, e)| e.iter().map(|e| e.index))
            .collect()
    };
    assert_eq!(indexes(&to_2), vec![index + 1]);
    assert_eq!(indexes(&to_3), vec![index + 1, index + 2]);
}

#[test]
fn a_batch_of_proposals_goes_to_each_follower_in_one_append_entries() {
    // One by one: the first proposal goes out at once, the others wait for its ack.
    let mut l = leader(cfg(1, 3), 3);
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.extend(appends(&request(&mut l, i, Request::Propose(put("a")))));
    }
    assert_eq!(sent.len(), 2, "only the first proposal was sent");
    assert!(sent.iter().all(|(_, e)| e.len() == 1));
    // Together: every follower gets all three in one message, the same list for both.
    let mut l = leader(cfg(1, 3), 3);
    let fx = step(&mut l, |n, o| {
        n.handle_requests(
            (0..3).map(|i| (RequestId(i), Request::Propose(put(&i.to_string())))),
            o,
        )
    });
    let sent = appends(&fx);
    assert_eq!(sent.len(), 2, "one AppendEntries per follower");
    assert!(sent.iter().all(|(_, e)| e.len() == 3));
    assert!(std::sync::Arc::ptr_eq(&sent[0].1, &sent[1].1));
    assert_eq!(fx.records.len(), 1, "one record for the batch");
}

/// The entries of each `Record::Entries` of `fx`, in order.
fn entry_records(fx: &Fx) -> Vec<&[Entry<KvCommand>]> {
    fx.records
        .iter()
        .filter_map(|p| match p.record() {
            Record::Entries(e) => Some(&e[..]),
            _ => None,
        })
        .collect()
}

#[test]
fn the_leader_records_a_batch_in_the_list_its_followers_are_sent() {
    for (batch, parallel) in [(1, false), (3, false), (1, true)] {
        let mut c = cfg(1, 3);
        c.parallel_append = parallel;
        let mut l = leader(c, 3);
        step(&mut l, |n, o| n.records_durable(u64::MAX, o));
        let fx = step(&mut l, |n, o| {
            n.handle_requests(
                (0..batch).map(|i| (RequestId(i), Request::Propose(put(&i.to_string())))),
                o,
            )
        });
        let sent: Vec<_> = fx
            .messages
            .iter()
            .chain(&fx.early)
            .filter_map(|(_, m)| match m {
                Message::AppendEntries { entries, .. } => Some(std::sync::Arc::clone(entries)),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 2, "one AppendEntries per follower");
        let records = entry_records(&fx);
        assert_eq!(fx.records.len(), 1, "one record for the batch");
        assert_eq!(records[0], &sent[0][..]);
        assert!(
            std::ptr::eq(records[0].as_ptr(), sent[0].as_ptr()),
            "the record is the followers' list, not a copy"
        );
        // The record still counts as the leader's own write of the batch (with the parallel
        // append, once durable): with one follower's ack, a majority holds the batch.
        let last = l.last_log_index();
        let acked = recv(&mut l, 2, ack(1, last, 1));
        assert_eq!(
            l.commit_index() == last,
            !parallel,
            "counted before its write is durable"
        );
        let synced = step(&mut l, |n, o| n.records_durable(u64::MAX, o));
        assert_eq!(l.commit_index(), last);
        let answered = [acked, synced]
            .iter()
            .map(|fx| fx.responses.len() + fx.early_responses.len())
            .sum::<usize>();
        assert_eq!(answered, batch as usize);
    }
}

#[test]
fn a_batch_whose_followers_wait_records_its_own_list() {
    let mut l = leader(cfg(1, 3), 3);
    // An AppendEntries in flight to each follower: the next batch waits for their answers.
    request(&mut l, 0, Request::Propose(put("a")));
    let fx = step(&mut l, |n, o| {
        n.handle_requests(
            (1..4).map(|i| (RequestId(i), Request::Propose(put(&i.to_string())))),
            o,
        )
    });
    assert!(appends(&fx).is_empty(), "the pipeline waits for acks");
    let indexes: Vec<Vec<u64>> = entry_records(&fx)
        .iter()
        .map(|r| r.iter().map(|e| e.index).collect())
        .collect();
    assert_eq!(indexes, vec![vec![3, 4, 5]]);
}

#[test]
fn a_batch_with_other_requests_records_its_entries_in_log_order() {
    let mut l = leader(cfg(1, 3), 3);
    let fx = step(&mut l, |n, o| {
        n.handle_requests(
            [
                (RequestId(1), Request::Propose(put("a"))),
                (RequestId(2), Request::AddLearner(4)),
                (RequestId(3), Request::Propose(put("b"))),
                (RequestId(4), Request::Read(KvQuery::Get("k".into()))),
                (RequestId(5), Request::Propose(put("c"))),
            ],
            o,
        )
    });
    assert_eq!(l.last_log_index(), 5);
    let indexes: Vec<u64> = entry_records(&fx)
        .iter()
        .flat_map(|r| r.iter().map(|e| e.index))
        .collect();
    assert_eq!(
        indexes,
        vec![2, 3, 4, 5],
        "every entry recorded once, in order"
    );
}
