//! Unit tests of linearizable reads: ReadIndex rounds, lease reads and the cap on pending reads.

use super::*;

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
