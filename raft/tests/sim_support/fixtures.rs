//! What the test files build on besides runs: the client history and its linearizability check,
//! and hand-built nodes (a configuration, a log, an election) for the invariants' own tests.

use super::*;

/// The client history in `common::check`'s terms. Puts and gets only (the scenario proposes no
/// appends); a proposal whose fate the node could not tell is open-ended, a refused one failed.
pub fn history(sim: &Sim<N>) -> History<KvInput, CheckOutput> {
    History::from_sim(
        sim.history(),
        |req: &Req| match req {
            Request::Propose(KvCommand::Put { key, value }) => Some(KvInput::Put {
                key: key.clone(),
                value: value.clone(),
            }),
            Request::Read(KvQuery::Get(key)) => Some(KvInput::Get { key: key.clone() }),
            _ => None,
        },
        |_req, resp: &Resp| match resp {
            Response::Applied { .. } => Completion::Ok(CheckOutput::Done),
            Response::Read(KvOutput::Value(value)) => Completion::Ok(CheckOutput::Value {
                value: value.clone(),
            }),
            Response::Failed(RaftError::Indeterminate { .. }) => Completion::Unknown,
            _ => Completion::Fail,
        },
    )
}

pub fn linearizable(sim: &mut Sim<N>) -> Result<(), SimError> {
    match check_kv(&history(sim)) {
        Ok(Verdict::Linearizable) => Ok(()),
        Ok(v) => Err(sim.fail_now(format!("not linearizable: {v:?}"))),
        Err(e) => Err(sim.fail_now(format!("bad history: {e}"))),
    }
}

// ----- planting violations -----

/// A configuration for a hand-built node of voters `1..=n` (no pre-vote, so a few ticks make
/// it a candidate).
pub fn plain_config(id: NodeId, n: u64) -> Config {
    let mut c = Config::new(id, (1..=n).collect());
    c.pre_vote = false;
    c.check_quorum = false;
    c
}

/// A command naming `value`.
pub fn put(value: &str) -> KvCommand {
    KvCommand::Put {
        key: "k".into(),
        value: value.into(),
    }
}

/// A node of voters `1..=n` recovered in `term` with a log of `(term, value)` entries.
pub fn node_with_log(id: NodeId, n: u64, term: Term, log: &[(Term, &str)]) -> N {
    let entries = log
        .iter()
        .enumerate()
        .map(|(i, &(t, v))| Entry {
            term: t,
            index: i as u64 + 1,
            payload: Payload::Command(put(v)),
        })
        .collect();
    let records = vec![
        Record::HardState {
            term,
            voted_for: None,
        },
        Record::Entries(entries),
    ];
    N::recover(plain_config(id, n).into(), records).unwrap_or_else(|e| panic!("recover: {e}"))
}

/// Makes `node` campaign and win with the votes of every other voter of `1..=n`.
pub fn elect(node: &mut N, n: u64) {
    let mut out = Outbox::new();
    for _ in 0..100 {
        if node.role() == Role::Candidate {
            break;
        }
        node.tick(&mut out);
    }
    assert_eq!(node.role(), Role::Candidate, "the node campaigns");
    let term = node.term();
    let me = Node::id(&*node);
    for v in (1..=n).filter(|&v| v != me) {
        node.handle_message(
            v,
            Message::RequestVoteResponse {
                term,
                granted: true,
            },
            &mut out,
        );
    }
    assert_eq!(node.role(), Role::Leader, "the node wins");
}

/// The live-node view of hand-built nodes, all synced.
pub fn synced<'a>(nodes: &[&'a N]) -> Vec<Live<'a>> {
    nodes
        .iter()
        .map(|n| Live {
            id: Node::id(*n),
            node: n,
            synced: true,
        })
        .collect()
}
