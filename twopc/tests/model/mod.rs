//! A `stateright` model of an atomic-commit core driven through `common::Node`, shared by the
//! model checks of `twopc` and `threepc` (`threepc/tests/model_check.rs` includes this file).
//!
//! The model's state holds the real cores (`Clone`), what each node persisted, the messages in
//! flight, and what participants and clients were told. Every action calls the real core:
//!
//! - `Submit(k)`: the client sends the `k`-th request to its coordinator (in order);
//! - `Deliver`: one message in flight reaches its destination (`handle_message`), in any order;
//!   a message to a node that is down is discarded;
//! - `Lose`: one message in flight is lost (at most `losses_max` in a run);
//! - `Tick`: one tick of time for every live node, in id order (`tick`); at most `ticks_max`;
//! - `Crash(n)`: node `n` stops, keeping only its persisted records (at most `crashes_max`);
//! - `Restart(n)`: node `n` is rebuilt from its records (`recover`).
//!
//! After a step the node's effects are released at once, records first (the Outbox rule; a
//! crash never falls between a step and its sync here: the simulator covers torn tails).
//!
//! The network is a set: a message sent again while an identical copy is still in flight adds
//! nothing (the same as losing the copy, which the model allows anyway), so retransmissions do
//! not make the state space grow without changing what can happen.
//!
//! With `synchronous`, time advances (`Tick`) only when no message is in flight to a live node:
//! every message between live nodes arrives before any timer moves, so a timeout fires only when
//! what it waits for was lost or its sender crashed. That is 3PC's synchronous assumption.
//!
//! States are told apart by their `Debug` rendering (the cores' `BTreeMap`s print in a fixed
//! order), so equal states are explored once.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

use common::txn::{AtomicCommit, Outcome, Request, Response, TxId, TxnConfig, Write};
use common::{Node, NodeId, Outbox, Persist, RequestId};
use stateright::{Model, Property};

/// The shared skeleton's timers scaled down to fire within the model's tick bound: resend after
/// 1 tick (backing off to 2), vote timeout 2 ticks.
pub fn scale_down_txn_timers(txn: &mut TxnConfig) {
    txn.resend_ticks = 1;
    txn.resend_ticks_max = 2;
    txn.vote_timeout_ticks = 2;
}

/// What the model needs to know about one protocol.
pub trait Protocol: Send + Sync + 'static {
    /// The core.
    type N: AtomicCommit + Clone + Debug + Sync;
    /// The configuration of node `id`.
    fn config(&self, id: NodeId) -> <Self::N as Node>::Config;
    /// The `k`-th client request: node 1 coordinates a write at 2 and 3 (the same keys for
    /// every request, so a second transaction may conflict with the first).
    fn request(&self, k: usize) -> (NodeId, Request) {
        let writes = BTreeMap::from([
            (2, vec![Write::put("a", vec![k as u8])]),
            (3, vec![Write::put("b", vec![k as u8])]),
        ]);
        (1, Request::Commit { writes })
    }
}

/// A client answer naming an outcome.
fn answered(r: &Response) -> Option<(TxId, Outcome)> {
    match r {
        Response::Outcome { tx, outcome } => Some((*tx, *outcome)),
        Response::Failed(_) => None,
    }
}

/// The bounds of one model (what keeps the state space finite).
#[derive(Clone, Debug)]
pub struct Bounds {
    /// The nodes, ids `1..=nodes`.
    pub nodes: u64,
    /// Client requests.
    pub requests: usize,
    /// Ticks of time in a run.
    pub ticks_max: u32,
    /// Crashes in a run.
    pub crashes_max: u32,
    /// Messages lost in a run.
    pub losses_max: u32,
    /// Time advances only when no message is in flight to a live node.
    pub synchronous: bool,
}

/// One step of the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Action<M> {
    /// The client sends request `k`.
    Submit(usize),
    /// `msg` from `from` reaches `to`.
    Deliver { from: NodeId, to: NodeId, msg: M },
    /// `msg` from `from` to `to` is lost.
    Lose { from: NodeId, to: NodeId, msg: M },
    /// Every live node ticks once.
    Tick,
    /// The node crashes.
    Crash(NodeId),
    /// The node restarts from its records.
    Restart(NodeId),
}

/// A state of the model.
pub struct State<N: Node> {
    /// Live nodes (`None`: down), index `id - 1`.
    pub nodes: Vec<Option<N>>,
    /// What each node persisted.
    pub records: Vec<Vec<N::Record>>,
    /// Messages in flight, without duplicates, in a canonical order.
    pub net: Vec<(NodeId, NodeId, N::Message)>,
    /// Requests submitted so far.
    pub submitted: usize,
    /// Each submitted request's id and coordinator.
    pub requests: Vec<(RequestId, NodeId)>,
    /// How each transaction ended at each participant.
    pub outcomes: BTreeMap<TxId, BTreeMap<NodeId, Outcome>>,
    /// A participant that announced both outcomes for one transaction.
    pub changed_mind: bool,
    /// What clients were told.
    pub answers: BTreeMap<TxId, Outcome>,
    pub ticks: u32,
    pub crashes: u32,
    pub losses: u32,
}

impl<N: Node + Clone> Clone for State<N> {
    fn clone(&self) -> Self {
        Self {
            nodes: self.nodes.clone(),
            records: self.records.clone(),
            net: self.net.clone(),
            submitted: self.submitted,
            requests: self.requests.clone(),
            outcomes: self.outcomes.clone(),
            changed_mind: self.changed_mind,
            answers: self.answers.clone(),
            ticks: self.ticks,
            crashes: self.crashes,
            losses: self.losses,
        }
    }
}

impl<N: Node + Debug> Debug for State<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("nodes", &self.nodes)
            .field("records", &self.records)
            .field("net", &self.net)
            .field("submitted", &self.submitted)
            .field("outcomes", &self.outcomes)
            .field("changed_mind", &self.changed_mind)
            .field("answers", &self.answers)
            .field("ticks", &self.ticks)
            .field("crashes", &self.crashes)
            .field("losses", &self.losses)
            .finish()
    }
}

impl<N: Node + Debug> PartialEq for State<N> {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

impl<N: Node + Debug> Eq for State<N> {}

impl<N: Node + Debug> Hash for State<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        format!("{self:?}").hash(state);
    }
}

impl<N: Node> State<N> {
    /// Atomicity: no transaction commits at one participant and aborts at another, no
    /// participant changes its mind, and a client told an outcome is contradicted by no
    /// participant.
    pub fn atomic(&self) -> bool {
        if self.changed_mind {
            return false;
        }
        self.outcomes.iter().all(|(tx, at)| {
            let mut seen = at.values();
            let first = seen.next();
            let agree = first.is_none_or(|o| at.values().all(|x| x == o));
            let report = self
                .answers
                .get(tx)
                .is_none_or(|told| at.values().all(|x| x == told));
            agree && report
        })
    }

    /// Whether a client was told Committed.
    pub fn reported_commit(&self) -> bool {
        self.answers.values().any(|o| *o == Outcome::Committed)
    }
}

/// The model of protocol `P` within `bounds`.
pub struct CommitModel<P: Protocol> {
    pub protocol: P,
    pub bounds: Bounds,
}

type Msg<P> = <<P as Protocol>::N as Node>::Message;

impl<P: Protocol> CommitModel<P> {
    fn index(id: NodeId) -> usize {
        (id - 1) as usize
    }

    fn ids(&self) -> impl Iterator<Item = NodeId> {
        1..=self.bounds.nodes
    }

    /// Releases a node's effects into the state: records, then messages, answers and events.
    fn release(&self, s: &mut State<P::N>, id: NodeId, out: &mut Outbox<P::N>) {
        let effects = out.take();
        let records = &mut s.records[Self::index(id)];
        for r in effects.records {
            match r {
                Persist::Append(r) => records.push(r),
                Persist::Checkpoint(r) => {
                    records.clear();
                    records.push(r);
                }
            }
        }
        for (to, msg) in effects.messages {
            let key = format!("{msg:?}");
            let pos = s.net.binary_search_by(|(f, t, m)| {
                (*f, *t, format!("{m:?}")).cmp(&(id, to, key.clone()))
            });
            if let Err(pos) = pos {
                s.net.insert(pos, (id, to, msg));
            }
        }
        for (_, response) in effects.responses {
            if let Some((tx, outcome)) = answered(&response) {
                s.answers.insert(tx, outcome);
            }
        }
        for ev in effects.events {
            if let Some((tx, outcome)) = P::N::finished(&ev) {
                let at = s.outcomes.entry(tx).or_default();
                match at.get(&id) {
                    Some(o) if *o != outcome => s.changed_mind = true,
                    _ => {
                        at.insert(id, outcome);
                    }
                }
            }
        }
    }

    fn take_message(s: &mut State<P::N>, from: NodeId, to: NodeId, msg: &Msg<P>) -> bool {
        let key = format!("{msg:?}");
        match s
            .net
            .iter()
            .position(|(f, t, m)| *f == from && *t == to && format!("{m:?}") == key)
        {
            Some(i) => {
                s.net.remove(i);
                true
            }
            None => false,
        }
    }

    /// Whether a message is in flight to a live node.
    fn in_flight_to_live(&self, s: &State<P::N>) -> bool {
        s.net
            .iter()
            .any(|(_, to, _)| s.nodes[Self::index(*to)].is_some())
    }
}

impl<P: Protocol> Model for CommitModel<P>
where
    Msg<P>: PartialEq,
{
    type State = State<P::N>;
    type Action = Action<Msg<P>>;

    fn init_states(&self) -> Vec<Self::State> {
        let nodes = self
            .ids()
            .map(|id| P::N::recover(self.protocol.config(id), Vec::new()).ok())
            .collect();
        vec![State {
            nodes,
            records: self.ids().map(|_| Vec::new()).collect(),
            net: Vec::new(),
            submitted: 0,
            requests: Vec::new(),
            outcomes: BTreeMap::new(),
            changed_mind: false,
            answers: BTreeMap::new(),
            ticks: 0,
            crashes: 0,
            losses: 0,
        }]
    }

    fn actions(&self, s: &Self::State, actions: &mut Vec<Self::Action>) {
        if s.submitted < self.bounds.requests {
            let (c, _) = self.protocol.request(s.submitted);
            if s.nodes[Self::index(c)].is_some() {
                actions.push(Action::Submit(s.submitted));
            }
        }
        for (from, to, msg) in &s.net {
            actions.push(Action::Deliver {
                from: *from,
                to: *to,
                msg: msg.clone(),
            });
            if s.losses < self.bounds.losses_max {
                actions.push(Action::Lose {
                    from: *from,
                    to: *to,
                    msg: msg.clone(),
                });
            }
        }
        if s.ticks < self.bounds.ticks_max
            && !(self.bounds.synchronous && self.in_flight_to_live(s))
        {
            actions.push(Action::Tick);
        }
        for id in self.ids() {
            match &s.nodes[Self::index(id)] {
                Some(_) if s.crashes < self.bounds.crashes_max => actions.push(Action::Crash(id)),
                Some(_) => {}
                None => actions.push(Action::Restart(id)),
            }
        }
    }

    fn next_state(&self, last: &Self::State, action: Self::Action) -> Option<Self::State> {
        let mut s = last.clone();
        let mut out = Outbox::new();
        match action {
            Action::Submit(k) => {
                let (c, request) = self.protocol.request(k);
                let id = RequestId(k as u64 + 1);
                s.nodes[Self::index(c)]
                    .as_mut()?
                    .handle_request(id, request, &mut out);
                s.submitted += 1;
                s.requests.push((id, c));
                self.release(&mut s, c, &mut out);
            }
            Action::Deliver { from, to, msg } => {
                if !Self::take_message(&mut s, from, to, &msg) {
                    return None;
                }
                if let Some(n) = s.nodes[Self::index(to)].as_mut() {
                    n.handle_message(from, msg, &mut out);
                    self.release(&mut s, to, &mut out);
                }
            }
            Action::Lose { from, to, msg } => {
                if !Self::take_message(&mut s, from, to, &msg) {
                    return None;
                }
                s.losses += 1;
            }
            Action::Tick => {
                s.ticks += 1;
                for id in self.ids() {
                    if let Some(n) = s.nodes[Self::index(id)].as_mut() {
                        n.tick(&mut out);
                        self.release(&mut s, id, &mut out);
                    }
                }
            }
            Action::Crash(id) => {
                s.nodes[Self::index(id)].take()?;
                s.crashes += 1;
            }
            Action::Restart(id) => {
                if s.nodes[Self::index(id)].is_some() {
                    return None;
                }
                let records = s.records[Self::index(id)].clone();
                s.nodes[Self::index(id)] =
                    Some(P::N::recover(self.protocol.config(id), records).ok()?);
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("atomicity", |_, s: &Self::State| s.atomic()),
            Property::sometimes("a commit is reported", |_, s: &Self::State| {
                s.reported_commit()
            }),
        ]
    }
}

/// Replays `actions` from the initial state on the real cores; `None` if one is not enabled.
pub fn replay<P: Protocol>(
    model: &CommitModel<P>,
    actions: &[Action<Msg<P>>],
) -> Option<State<P::N>>
where
    Msg<P>: PartialEq,
{
    let mut s = model.init_states().pop()?;
    for a in actions {
        let mut enabled = Vec::new();
        model.actions(&s, &mut enabled);
        if !enabled.contains(a) {
            return None;
        }
        s = model.next_state(&s, a.clone())?;
    }
    Some(s)
}
