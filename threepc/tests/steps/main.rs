//! The exact effects of every step of both roles: each phase, every timeout transition and each
//! rule of the termination protocol; the coordinator's (`coordinator.rs`), the participant's
//! (`participant.rs`) and the termination protocol's (`termination.rs`), over the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use common::txn::suite::{
    deliver as msg, first_answer, one_write as w, resend_schedule, step, tick,
};
use common::txn::{Outcome, TxId, Vote, SEQ_BLOCK};
use common::{Effects, Node, NodeId, Persist, RequestId};
use threepc::{
    Config, Event, Message, Record, Request, Response, State, ThreePcError, ThreePcNode,
};

const C: NodeId = 1;
const MEMBERS: [NodeId; 5] = [1, 2, 3, 4, 5];
const PS: [NodeId; 3] = [2, 3, 4];

type N = ThreePcNode;

fn config(id: NodeId) -> Config {
    Config::new(id, MEMBERS.to_vec())
}

fn node(id: NodeId) -> N {
    N::recover(config(id), vec![]).unwrap()
}

fn node_with(id: NodeId, records: Vec<Record>) -> N {
    N::recover(config(id), records).unwrap()
}

fn tx0() -> TxId {
    TxId::new(C, 0)
}

fn ticks(n: &mut N, count: u64) -> Effects<N> {
    let mut all = Effects::default();
    for _ in 0..count {
        let e = tick(n);
        all.records.extend(e.records);
        all.messages.extend(e.messages);
        all.responses.extend(e.responses);
        all.events.extend(e.events);
    }
    all
}

fn appended(e: &Effects<N>) -> Vec<Record> {
    e.records
        .iter()
        .map(|p| Persist::record(p).clone())
        .collect()
}

fn to_all(ps: &[NodeId], m: Message) -> Vec<(NodeId, Message)> {
    ps.iter().map(|&p| (p, m.clone())).collect()
}

fn can_commit(tx: TxId, k: &str) -> Message {
    Message::CanCommit {
        tx,
        writes: w(k),
        participants: PS.to_vec(),
    }
}

fn request(c: &mut N) -> Effects<N> {
    let writes = BTreeMap::from([(2, w("a")), (3, w("b")), (4, w("c"))]);
    step(c, |n, o| {
        n.handle_request(RequestId(1), Request::Commit { writes }, o)
    })
}

fn yes(tx: TxId) -> Message {
    Message::Vote {
        tx,
        vote: Vote::Yes,
    }
}

fn committed(tx: TxId) -> Response {
    Response::Outcome {
        tx,
        outcome: Outcome::Committed,
    }
}

fn uncertain(id: NodeId) -> N {
    let mut p = node(id);
    let e = msg(&mut p, C, can_commit(tx0(), &format!("k{id}")));
    assert_eq!(e.messages, vec![(C, yes(tx0()))]);
    p
}

fn reply(state: State, recovering: bool) -> Message {
    Message::StateReply {
        tx: tx0(),
        state,
        recovering,
    }
}

mod coordinator;
mod participant;
mod termination;
