//! Helpers for driving single cores by hand in the paper tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use common::{Effects, Node as _, NodeId, Outbox, RequestId};
use raft::kv::{KvCommand, KvStore};
use raft::{Config, Entry, Message, Payload, RaftNode, Record, Request, Role, Term};

/// The node type under test.
pub type Node = RaftNode<KvStore>;
/// Its effects.
pub type Fx = Effects<Node>;

/// A plain configuration for node `id` of voters `1..=n`: no pre-vote, no check-quorum (the
/// paper's basic algorithm), timeouts 10..=20, heartbeat every 2 ticks.
pub fn config(id: NodeId, n: u64) -> Config {
    let mut c = Config::new(id, (1..=n).collect());
    c.pre_vote = false;
    c.check_quorum = false;
    c.election_timeout_ticks_min = 10;
    c.election_timeout_ticks_max = 20;
    c.heartbeat_interval_ticks = 2;
    c
}

/// A node recovered from `records`.
pub fn node_with(config: Config, records: Vec<Record<KvCommand>>) -> Node {
    Node::recover(config.into(), records).unwrap()
}

/// A fresh node.
pub fn node(id: NodeId, n: u64) -> Node {
    node_with(config(id, n), vec![])
}

/// A command that names its position, so entries are easy to tell apart.
pub fn cmd(i: u64) -> KvCommand {
    KvCommand::Put {
        key: "k".into(),
        value: i.to_string(),
    }
}

/// Entries `1..` with the given terms.
pub fn entries(terms: &[Term]) -> Vec<Entry<KvCommand>> {
    terms
        .iter()
        .enumerate()
        .map(|(i, &term)| Entry {
            term,
            index: i as u64 + 1,
            payload: Payload::Command(cmd(i as u64 + 1)),
        })
        .collect()
}

/// Records of a node in `term` holding a log with the given terms.
pub fn log_records(term: Term, terms: &[Term]) -> Vec<Record<KvCommand>> {
    vec![
        Record::HardState {
            term,
            voted_for: None,
        },
        Record::Entries(entries(terms).into()),
    ]
}

/// Runs one step and returns its effects.
pub fn step(n: &mut Node, f: impl FnOnce(&mut Node, &mut Outbox<Node>)) -> Fx {
    let mut out = Outbox::new();
    f(n, &mut out);
    out.take()
}

/// Delivers `msg` from `from`.
pub fn recv(n: &mut Node, from: NodeId, msg: Message<KvCommand>) -> Fx {
    step(n, |n, out| n.handle_message(from, msg, out))
}

/// One tick.
pub fn tick(n: &mut Node) -> Fx {
    step(n, |n, out| n.tick(out))
}

/// Ticks until the node sends something or changes role (at most `max` ticks); returns the
/// effects of that tick and the number of ticks.
pub fn tick_until_active(n: &mut Node, max: u64) -> (Fx, u64) {
    for i in 1..=max {
        let fx = tick(n);
        if !fx.messages.is_empty() {
            return (fx, i);
        }
    }
    panic!("node did nothing in {max} ticks");
}

/// Makes a follower campaign and win with the votes of `voters` (the other voters it needs).
pub fn elect(n: &mut Node, voters: &[NodeId]) -> Fx {
    let (_, _) = tick_until_active(n, 100);
    assert_eq!(n.role(), Role::Candidate);
    let term = n.term();
    let mut all = Fx::default();
    for &v in voters {
        let fx = recv(
            n,
            v,
            Message::RequestVoteResponse {
                term,
                granted: true,
            },
        );
        all.records.extend(fx.records);
        all.messages.extend(fx.messages);
        all.responses.extend(fx.responses);
        all.events.extend(fx.events);
    }
    assert_eq!(n.role(), Role::Leader);
    all
}

/// Proposes `command` through node `n`.
pub fn propose(n: &mut Node, id: u64, command: KvCommand) -> Fx {
    step(n, |n, out| {
        n.handle_request(RequestId(id), Request::Propose(command), out)
    })
}

/// A successful AppendEntries answer.
pub fn ack(term: Term, index: u64) -> Message<KvCommand> {
    Message::AppendEntriesResponse {
        term,
        success: true,
        index,
        conflict: None,
        last_log_index: index,
        read_seq: 0,
    }
}

/// The terms of a node's log, from index 1.
pub fn log_terms(n: &Node) -> Vec<Term> {
    (n.first_log_index()..=n.last_log_index())
        .map(|i| n.entry_term(i).unwrap())
        .collect()
}
