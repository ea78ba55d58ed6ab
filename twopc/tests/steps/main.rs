//! The exact effects of every step of both roles, including every timeout transition: the
//! coordinator's (`coordinator.rs`) and the participant's (`participant.rs`), over the helpers
//! here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use common::txn::suite::{
    deliver as msg, first_answer, one_write as w, resend_schedule, step, tick,
};
use common::txn::{Outcome, TxId, Vote, Write, SEQ_BLOCK};
use common::{Effects, Node, NodeId, Persist, RequestId};
use twopc::{Config, Event, Message, PeerStatus, Record, Request, Response, TwoPcError, TwoPcNode};

const C: NodeId = 1;
const MEMBERS: [NodeId; 5] = [1, 2, 3, 4, 5];

fn config(id: NodeId) -> Config {
    Config::new(id, MEMBERS.to_vec())
}

fn node(id: NodeId) -> TwoPcNode {
    TwoPcNode::recover(config(id), vec![]).unwrap()
}

fn node_with(id: NodeId, records: Vec<Record>) -> TwoPcNode {
    TwoPcNode::recover(config(id), records).unwrap()
}

fn tx0() -> TxId {
    TxId::new(C, 0)
}

fn appended(e: &Effects<TwoPcNode>) -> Vec<Record> {
    e.records
        .iter()
        .map(|p| match p {
            Persist::Append(r) => r.clone(),
            Persist::Checkpoint(_) => panic!("no checkpoints expected"),
        })
        .collect()
}

fn prepare(tx: TxId, writes: Vec<Write>, peers: &[NodeId]) -> Message {
    Message::Prepare {
        tx,
        writes,
        peers: peers.to_vec(),
    }
}

fn vote(tx: TxId, vote: Vote) -> Message {
    Message::Vote { tx, vote }
}

/// A coordinator that sent Prepare for tx0 to 2, 3 and 4 (4 read-only when `ro`).
fn coordinator_voting(ro: bool) -> TwoPcNode {
    let mut c = node(C);
    let mut writes = BTreeMap::from([(2, w("a")), (3, w("b")), (4, w("c"))]);
    if ro {
        writes.insert(4, vec![]);
    }
    let e = step(&mut c, |n, o| {
        n.handle_request(RequestId(1), Request::Commit { writes }, o)
    });
    assert!(!e.messages.is_empty());
    c
}

mod coordinator;
mod participant;
