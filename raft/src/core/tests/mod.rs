//! Unit tests of the core: each asserts the exact effects (records, messages, responses) of a
//! step. This file holds the helpers every theme shares and the configuration's own test; the
//! tests proper are split by sub-protocol, like the core:
//!
//! - `election`: pre-vote, votes, check-quorum and leadership transfer;
//! - `replication`: AppendEntries, flow control and its caps, bad input, the parallel append;
//! - `read`: ReadIndex and lease reads;
//! - `snapshot`: compaction, snapshot files and InstallSnapshot;
//! - `recovery`: rebuilding a node from its records;
//! - `membership`: learners, single-server changes and joint consensus.

mod election;
mod membership;
mod read;
mod recovery;
mod replication;
mod snapshot;

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
        entries: vec![].into(),
        leader_commit: 0,
        read_seq,
    }
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
