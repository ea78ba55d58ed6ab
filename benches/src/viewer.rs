//! What the trace viewer (`docs/viewer/index.html`) reads: a seeded run of the simulator
//! exported as JSON.
//!
//! A [`TraceFile`] holds, for one run of the real protocol cores in [`common::sim`]:
//!
//! - the nodes, and how each node's role, term, log and commit index changed over time
//!   ([`StateChange`], read from the cores after every step by a [`Recorder`]; a core that has no
//!   such notion leaves the field out rather than inventing one);
//! - every message with its send time, its arrival time and its fate ([`Message`], [`Fate`]),
//!   rebuilt from the simulator's trace by [`messages`];
//! - which directed links were cut, and when ([`CutChange`]);
//! - crashes, restarts, network changes, client operations and the events the cores published
//!   ([`Happening`]).
//!
//! ```
//! use benches::viewer::{messages, Fate};
//! use common::sim::{TraceEvent, TraceKind};
//! let at = |time, kind| TraceEvent { time, step: time, kind };
//! let trace = vec![
//!     at(1, TraceKind::Send { from: 1, to: 2, label: "Ping".into(), arrives: Some(4) }),
//!     at(4, TraceKind::Deliver { from: 1, to: 2, label: "Ping".into(), sent: 1 }),
//! ];
//! let m = messages(&trace).unwrap();
//! assert_eq!((m[0].sent, m[0].arrives, m[0].fate), (1, Some(4), Fate::Delivered));
//! ```
//!
//! The simulator records a message twice, at its send and at its arrival; the two are paired on
//! (sender, receiver, label, send time, arrival time). Two messages equal in all five are
//! indistinguishable in the export, so pairing them either way gives the same file.

use std::collections::BTreeMap;

use common::sim::{DropReason, Fault, Sim, SimError, SimView, TraceEvent, TraceKind};
use common::{Node, NodeId};
use serde::Serialize;

use crate::BenchError;

/// The value of [`TraceFile::format`]; a reader refuses any other.
pub const FORMAT: &str = "protocol-trace/1";

/// What one node looked like at some time, as its core reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeState {
    /// Whether the node runs (false between a crash and its restart).
    pub up: bool,
    /// Its role in the protocol's own words (`leader`, `candidate`, `prepared`...), or `down`.
    pub role: String,
    /// Its term (Raft) or the round of its promised ballot (Multi-Paxos); none for protocols
    /// without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// How long its log is (Raft: last index; Multi-Paxos: first undecided slot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<u64>,
    /// How far it knows the log committed (Raft: commit index; Multi-Paxos: first unapplied slot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<u64>,
    /// The leader it follows, if the protocol has one and the node knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<NodeId>,
    /// Anything else worth a line under the node (transactions in doubt, counter value...).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl NodeState {
    /// A node that runs, in `role`, with nothing else known.
    pub fn role(role: &str) -> Self {
        Self {
            up: true,
            role: role.to_string(),
            term: None,
            log: None,
            commit: None,
            leader: None,
            detail: String::new(),
        }
    }

    /// A crashed node.
    pub fn down() -> Self {
        Self {
            up: false,
            ..Self::role("down")
        }
    }
}

/// A node's state from `time` on (until its next change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateChange {
    /// Virtual time of the change.
    pub time: u64,
    /// The node.
    pub node: NodeId,
    /// Its state from then on.
    #[serde(flatten)]
    pub state: NodeState,
}

/// The set of cut directed links from `time` on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CutChange {
    /// Virtual time of the change.
    pub time: u64,
    /// Every cut directed link, `[from, to]`, sorted; empty when the network is whole.
    pub cut: Vec<[NodeId; 2]>,
}

/// What became of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Handed to its receiver.
    Delivered,
    /// Lost at random by the network.
    Lost,
    /// Dropped because its link was cut, when it was sent or when it arrived.
    Partitioned,
    /// Arrived at a node that was down.
    NodeDown,
    /// Addressed to a node outside the cluster.
    UnknownNode,
    /// Still on its way when the run ended.
    InFlight,
}

impl From<DropReason> for Fate {
    fn from(reason: DropReason) -> Self {
        match reason {
            DropReason::Partitioned => Fate::Partitioned,
            DropReason::Lost => Fate::Lost,
            DropReason::NodeDown => Fate::NodeDown,
            DropReason::UnknownNode => Fate::UnknownNode,
        }
    }
}

/// One message (or one copy of a duplicated message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Its index in [`TraceFile::messages`] (send order).
    pub id: usize,
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The message's short label (its `Debug` form, abbreviated).
    pub label: String,
    /// When it was sent.
    pub sent: u64,
    /// When it arrives (or would have); `None` when the network dropped it at once.
    pub arrives: Option<u64>,
    /// What became of it.
    pub fate: Fate,
    /// True for the extra copy of a duplicated message.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub copy: bool,
}

/// Something other than a message: a crash, a restart, a network change, a client operation or
/// an event a core published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Happening {
    /// Virtual time.
    pub time: u64,
    /// `crash`, `restart`, `network`, `invoke`, `complete`, `client-failed`, `event` or
    /// `invariant-failed`.
    pub kind: &'static str,
    /// The node concerned, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// The client, for client operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<u64>,
    /// The request's id, for client operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    /// What happened, in words.
    pub text: String,
}

/// One exported run: everything the viewer draws.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceFile {
    /// Always [`FORMAT`].
    pub format: &'static str,
    /// The scenario's name (the `trace` binary's argument).
    pub scenario: String,
    /// The protocol, as a short name (`raft`, `paxos`, `2pc`, `3pc`, `demo`).
    pub protocol: String,
    /// What the run shows, one paragraph.
    pub about: String,
    /// The simulation's seed.
    pub seed: u64,
    /// The virtual time the run ended.
    pub end: u64,
    /// The nodes, in order.
    pub nodes: Vec<NodeId>,
    /// What [`NodeState::term`] means for this protocol (`term`, `ballot round`), if anything.
    pub term_name: Option<String>,
    /// Node states: each node's first state at time 0, then every change.
    pub states: Vec<StateChange>,
    /// The cut links: the first entry at time 0, then every change.
    pub cuts: Vec<CutChange>,
    /// Every message, in send order.
    pub messages: Vec<Message>,
    /// Everything else, in time order.
    pub happenings: Vec<Happening>,
}

impl TraceFile {
    /// The file as JSON: one line per field, and one line per element of the long arrays, so
    /// that a change in a run shows as a readable diff.
    pub fn to_json(&self) -> Result<String, BenchError> {
        fn one<T: Serialize + ?Sized>(value: &T) -> Result<String, BenchError> {
            serde_json::to_string(value).map_err(|e| BenchError::Trace(format!("json: {e}")))
        }
        fn many<T: Serialize>(items: &[T]) -> Result<String, BenchError> {
            if items.is_empty() {
                return Ok("[]".into());
            }
            let lines: Result<Vec<String>, BenchError> = items
                .iter()
                .map(|i| Ok(format!("    {}", one(i)?)))
                .collect();
            Ok(format!("[\n{}\n  ]", lines?.join(",\n")))
        }
        let fields = [
            ("format", one(self.format)?),
            ("scenario", one(&self.scenario)?),
            ("protocol", one(&self.protocol)?),
            ("about", one(&self.about)?),
            ("seed", one(&self.seed)?),
            ("end", one(&self.end)?),
            ("nodes", one(&self.nodes)?),
            ("term_name", one(&self.term_name)?),
            ("states", many(&self.states)?),
            ("cuts", many(&self.cuts)?),
            ("messages", many(&self.messages)?),
            ("happenings", many(&self.happenings)?),
        ];
        let body: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("  \"{name}\": {value}"))
            .collect();
        Ok(format!("{{\n{}\n}}\n", body.join(",\n")))
    }
}

/// Reads a node's [`NodeState`] from its core.
pub type Probe<N> = fn(&N) -> NodeState;

/// Watches a simulation's nodes and network step by step and keeps their changes.
pub struct Recorder<N: Node> {
    probe: Probe<N>,
    last: BTreeMap<NodeId, NodeState>,
    cut: Option<Vec<[NodeId; 2]>>,
    states: Vec<StateChange>,
    cuts: Vec<CutChange>,
}

impl<N: Node> Recorder<N> {
    /// A recorder that reads each running node with `probe`.
    pub fn new(probe: Probe<N>) -> Self {
        Self {
            probe,
            last: BTreeMap::new(),
            cut: None,
            states: Vec::new(),
            cuts: Vec::new(),
        }
    }

    /// Reads every node and the network now, keeping what changed since the last call.
    pub fn observe(&mut self, view: &SimView<'_, N>) {
        let time = view.now();
        for (node, core) in view.nodes() {
            let state = core.map_or_else(NodeState::down, self.probe);
            if self.last.get(&node) != Some(&state) {
                self.states.push(StateChange {
                    time,
                    node,
                    state: state.clone(),
                });
                self.last.insert(node, state);
            }
        }
        let cut: Vec<[NodeId; 2]> = view.network().cut_links().map(|(a, b)| [a, b]).collect();
        if self.cut.as_ref() != Some(&cut) {
            self.cuts.push(CutChange {
                time,
                cut: cut.clone(),
            });
            self.cut = Some(cut);
        }
    }
}

/// A simulation and its [`Recorder`], run together: the recorder observes after every step,
/// fault, crash and restart. Running through this wrapper changes nothing in the run itself.
pub struct Observed<N: Node> {
    /// The simulation.
    pub sim: Sim<N>,
    recorder: Recorder<N>,
}

impl<N: Node> Observed<N>
where
    N::Request: Clone,
{
    /// Wraps `sim` (not yet run) and observes its first state.
    pub fn new(sim: Sim<N>, probe: Probe<N>) -> Self {
        let mut recorder = Recorder::new(probe);
        recorder.observe(&sim.view());
        Self { sim, recorder }
    }

    /// [`Sim::run_until_cond`], observing after every step.
    pub fn run_until_cond<F>(&mut self, deadline: u64, mut done: F) -> Result<bool, SimError>
    where
        F: FnMut(&SimView<'_, N>) -> bool,
    {
        let recorder = &mut self.recorder;
        self.sim.run_until_cond(deadline, |view| {
            recorder.observe(view);
            done(view)
        })
    }

    /// [`Sim::run_until`], observing after every step.
    pub fn run_until(&mut self, time: u64) -> Result<(), SimError> {
        self.run_until_cond(time, |_| false).map(|_| ())
    }

    /// [`Sim::run_for`], observing after every step.
    pub fn run_for(&mut self, duration: u64) -> Result<(), SimError> {
        self.run_until(self.sim.now().saturating_add(duration))
    }

    /// [`Sim::apply`], then observes.
    pub fn apply(&mut self, fault: Fault) -> Result<(), SimError> {
        let result = self.sim.apply(fault);
        self.recorder.observe(&self.sim.view());
        result
    }

    /// [`Sim::crash`], then observes.
    pub fn crash(&mut self, node: NodeId) -> Result<(), SimError> {
        self.apply(Fault::Crash(node))
    }

    /// [`Sim::restart`], then observes.
    pub fn restart(&mut self, node: NodeId) -> Result<(), SimError> {
        self.apply(Fault::Restart(node))
    }

    /// The node states and cut links recorded so far.
    pub fn recorded(&self) -> (&[StateChange], &[CutChange]) {
        (&self.recorder.states, &self.recorder.cuts)
    }
}

/// Every message of `trace` with its fate. Fails when the trace does not hold together (an
/// arrival without its send: a trace cut at the start, or a simulator change the export does
/// not know).
pub fn messages(trace: &[TraceEvent]) -> Result<Vec<Message>, BenchError> {
    let mut out: Vec<Message> = Vec::new();
    // Messages scheduled to arrive, by (from, to, arrival time): indexes into `out`.
    let mut pending: BTreeMap<(NodeId, NodeId, u64), Vec<usize>> = BTreeMap::new();
    let broken = |e: &TraceEvent, what: &str| {
        BenchError::Trace(format!("at time {} (step {}): {what}", e.time, e.step))
    };
    for e in trace {
        match &e.kind {
            TraceKind::Send {
                from,
                to,
                label,
                arrives,
            } => {
                let sent = Sent {
                    from: *from,
                    to: *to,
                    label,
                    time: e.time,
                };
                sent.record(&mut out, &mut pending, *arrives, false);
            }
            TraceKind::Duplicate {
                from,
                to,
                label,
                arrives,
            } => {
                let sent = Sent {
                    from: *from,
                    to: *to,
                    label,
                    time: e.time,
                };
                sent.record(&mut out, &mut pending, Some(*arrives), true);
            }
            TraceKind::Deliver {
                from,
                to,
                label,
                sent,
            } => {
                let i = take_pending(&out, &mut pending, (*from, *to, e.time), |m| {
                    m.sent == *sent && &m.label == label
                })
                .ok_or_else(|| broken(e, &format!("delivery of {label:?} without its send")))?;
                out[i].fate = Fate::Delivered;
            }
            TraceKind::Drop {
                from,
                to,
                label,
                reason,
            } => {
                // Dropped at once: the send was recorded just before, without an arrival.
                let at_send = out.last_mut().filter(|m| {
                    m.sent == e.time
                        && m.arrives.is_none()
                        && m.fate == Fate::InFlight
                        && (m.from, m.to) == (*from, *to)
                        && &m.label == label
                });
                if let Some(m) = at_send {
                    m.fate = (*reason).into();
                    continue;
                }
                if *reason == DropReason::UnknownNode {
                    // Never scheduled: no send event precedes it.
                    out.push(Message {
                        id: out.len(),
                        from: *from,
                        to: *to,
                        label: label.clone(),
                        sent: e.time,
                        arrives: None,
                        fate: Fate::UnknownNode,
                        copy: false,
                    });
                    continue;
                }
                let i = take_pending(&out, &mut pending, (*from, *to, e.time), |m| {
                    &m.label == label
                })
                .ok_or_else(|| broken(e, &format!("drop of {label:?} without its send")))?;
                out[i].fate = (*reason).into();
            }
            _ => {}
        }
    }
    if let Some(m) = out
        .iter()
        .find(|m| m.arrives.is_none() && m.fate == Fate::InFlight)
    {
        return Err(BenchError::Trace(format!(
            "message {} ({:?}) was dropped at its send without a reason",
            m.id, m.label
        )));
    }
    Ok(out)
}

/// A message as its send records it.
struct Sent<'a> {
    from: NodeId,
    to: NodeId,
    label: &'a str,
    time: u64,
}

impl Sent<'_> {
    /// Adds the message (or its copy) to `out` and, when it will arrive, to `pending`.
    fn record(
        self,
        out: &mut Vec<Message>,
        pending: &mut BTreeMap<(NodeId, NodeId, u64), Vec<usize>>,
        arrives: Option<u64>,
        copy: bool,
    ) {
        let id = out.len();
        out.push(Message {
            id,
            from: self.from,
            to: self.to,
            label: self.label.to_string(),
            sent: self.time,
            arrives,
            fate: Fate::InFlight,
            copy,
        });
        if let Some(at) = arrives {
            pending
                .entry((self.from, self.to, at))
                .or_default()
                .push(id);
        }
    }
}

/// Removes and returns the first message pending on `key` that `fits`.
fn take_pending(
    out: &[Message],
    pending: &mut BTreeMap<(NodeId, NodeId, u64), Vec<usize>>,
    key: (NodeId, NodeId, u64),
    fits: impl Fn(&Message) -> bool,
) -> Option<usize> {
    let list = pending.get_mut(&key)?;
    let at = list.iter().position(|&i| fits(&out[i]))?;
    let i = list.remove(at);
    if list.is_empty() {
        pending.remove(&key);
    }
    Some(i)
}

/// Everything in `trace` that is not a message, in time order.
pub fn happenings(trace: &[TraceEvent]) -> Vec<Happening> {
    let mut out = Vec::new();
    for e in trace {
        let (kind, node, client, request, text) = match &e.kind {
            TraceKind::Crash {
                node,
                unsynced_lost,
                effects_lost,
                ..
            } => (
                "crash",
                Some(*node),
                None,
                None,
                format!(
                    "node {node} crashed (lost {unsynced_lost} unsynced records, \
                     {effects_lost} unsent effects)"
                ),
            ),
            TraceKind::Restart { node, records } => (
                "restart",
                Some(*node),
                None,
                None,
                format!("node {node} restarted from {records} records"),
            ),
            TraceKind::Network { description } => {
                ("network", None, None, None, description.clone())
            }
            TraceKind::Invoke {
                client,
                node,
                id,
                label,
            } => (
                "invoke",
                Some(*node),
                Some(*client),
                Some(id.0),
                label.clone(),
            ),
            TraceKind::Complete {
                client,
                node,
                id,
                label,
            } => (
                "complete",
                Some(*node),
                Some(*client),
                Some(id.0),
                label.clone(),
            ),
            TraceKind::ClientFailed {
                client,
                node,
                id,
                reason,
            } => (
                "client-failed",
                Some(*node),
                Some(*client),
                Some(id.0),
                reason.clone(),
            ),
            TraceKind::Event { node, label } => ("event", Some(*node), None, None, label.clone()),
            TraceKind::InvariantFailed { name, message } => (
                "invariant-failed",
                None,
                None,
                None,
                format!("{name}: {message}"),
            ),
            TraceKind::Send { .. }
            | TraceKind::Duplicate { .. }
            | TraceKind::Deliver { .. }
            | TraceKind::Drop { .. } => continue,
        };
        out.push(Happening {
            time: e.time,
            kind,
            node,
            client,
            request,
            text,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: u64, kind: TraceKind) -> TraceEvent {
        TraceEvent {
            time,
            step: time,
            kind,
        }
    }

    fn send(time: u64, from: NodeId, to: NodeId, label: &str, arrives: Option<u64>) -> TraceEvent {
        at(
            time,
            TraceKind::Send {
                from,
                to,
                label: label.into(),
                arrives,
            },
        )
    }

    fn drop(time: u64, from: NodeId, to: NodeId, label: &str, reason: DropReason) -> TraceEvent {
        at(
            time,
            TraceKind::Drop {
                from,
                to,
                label: label.into(),
                reason,
            },
        )
    }

    fn deliver(time: u64, from: NodeId, to: NodeId, label: &str, sent: u64) -> TraceEvent {
        at(
            time,
            TraceKind::Deliver {
                from,
                to,
                label: label.into(),
                sent,
            },
        )
    }

    #[test]
    fn every_fate_is_told_apart() {
        let trace = vec![
            // Lost at its send.
            send(1, 1, 2, "A", None),
            drop(1, 1, 2, "A", DropReason::Lost),
            // Duplicated: the copy is recorded first, then the original.
            at(
                2,
                TraceKind::Duplicate {
                    from: 1,
                    to: 3,
                    label: "B".into(),
                    arrives: 9,
                },
            ),
            send(2, 1, 3, "B", Some(5)),
            // Two equal labels on one link, different send times, arriving out of order.
            send(3, 2, 1, "C", Some(8)),
            send(4, 2, 1, "C", Some(6)),
            // Arrives at a crashed node.
            send(4, 3, 2, "D", Some(7)),
            // Never arrives before the end.
            send(4, 3, 1, "E", Some(50)),
            deliver(5, 1, 3, "B", 2),
            deliver(6, 2, 1, "C", 4),
            drop(7, 3, 2, "D", DropReason::NodeDown),
            deliver(8, 2, 1, "C", 3),
            drop(9, 1, 3, "B", DropReason::Partitioned),
            drop(10, 1, 9, "F", DropReason::UnknownNode),
        ];
        let m = messages(&trace).unwrap();
        let fates: Vec<(&str, u64, Option<u64>, Fate, bool)> = m
            .iter()
            .map(|m| (m.label.as_str(), m.sent, m.arrives, m.fate, m.copy))
            .collect();
        assert_eq!(
            fates,
            vec![
                ("A", 1, None, Fate::Lost, false),
                ("B", 2, Some(9), Fate::Partitioned, true),
                ("B", 2, Some(5), Fate::Delivered, false),
                ("C", 3, Some(8), Fate::Delivered, false),
                ("C", 4, Some(6), Fate::Delivered, false),
                ("D", 4, Some(7), Fate::NodeDown, false),
                ("E", 4, Some(50), Fate::InFlight, false),
                ("F", 10, None, Fate::UnknownNode, false),
            ]
        );
        assert!(m.iter().enumerate().all(|(i, m)| m.id == i));
    }

    #[test]
    fn an_arrival_without_its_send_is_an_error() {
        let err = messages(&[deliver(5, 1, 2, "A", 1)]).unwrap_err();
        assert!(err.to_string().contains("without its send"), "{err}");
        let err = messages(&[drop(5, 1, 2, "A", DropReason::NodeDown)]).unwrap_err();
        assert!(err.to_string().contains("without its send"), "{err}");
        // A send dropped at once must say why.
        let err = messages(&[send(1, 1, 2, "A", None)]).unwrap_err();
        assert!(err.to_string().contains("without a reason"), "{err}");
    }

    #[test]
    fn happenings_keep_everything_but_messages() {
        let trace = vec![
            send(1, 1, 2, "A", Some(2)),
            at(
                3,
                TraceKind::Crash {
                    node: 2,
                    unsynced_kept: 0,
                    unsynced_lost: 1,
                    effects_lost: 2,
                },
            ),
            at(
                4,
                TraceKind::Network {
                    description: "heal".into(),
                },
            ),
        ];
        let h = happenings(&trace);
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].kind, h[0].node, h[0].time), ("crash", Some(2), 3));
        assert_eq!((h[1].kind, h[1].text.as_str()), ("network", "heal"));
    }

    /// The recorder keeps each node's first state, every change (a crash shows as `down`, a
    /// restart as up again) and every change of the cut links, and nothing else.
    #[test]
    fn observed_runs_record_states_and_cuts() {
        use common::demo::{DemoConfig, DemoNode, DemoRequest};
        use common::sim::SimConfig;
        let mut config = SimConfig::new(1, vec![1, 2, 3]);
        config.record_trace = true;
        let sim: Sim<DemoNode> = Sim::new(config, |id| DemoConfig::new(id, vec![1, 2, 3])).unwrap();
        let probe: Probe<DemoNode> = |n| NodeState {
            log: Some(n.metrics().applied),
            ..NodeState::role("replica")
        };
        let mut run = Observed::new(sim, probe);
        run.sim.submit(5, 1, DemoRequest::Add(1));
        run.run_until(50).unwrap();
        run.apply(Fault::Partition {
            a: vec![1],
            b: vec![2, 3],
        })
        .unwrap();
        run.crash(3).unwrap();
        run.run_for(10).unwrap();
        run.restart(3).unwrap();
        run.apply(Fault::Heal).unwrap();
        let (states, cuts) = run.recorded();
        let of = |node| -> Vec<(bool, Option<u64>)> {
            states
                .iter()
                .filter(|s| s.node == node)
                .map(|s| (s.state.up, s.state.log))
                .collect()
        };
        assert_eq!(of(1), vec![(true, Some(0)), (true, Some(1))]);
        assert_eq!(
            of(3),
            vec![
                (true, Some(0)),
                (true, Some(1)),
                (false, None),
                (true, Some(1))
            ],
            "applied, crashed, recovered its update"
        );
        assert!(states.iter().filter(|s| s.time == 0).count() == 3);
        let cut_sets: Vec<usize> = cuts.iter().map(|c| c.cut.len()).collect();
        assert_eq!(
            cut_sets,
            vec![0, 4, 0],
            "whole, {{1}} cut both ways from {{2, 3}}, healed"
        );
        let trace = run.sim.trace().to_vec();
        assert!(messages(&trace)
            .unwrap()
            .iter()
            .all(|m| m.fate == Fate::Delivered));
        let kinds: Vec<&str> = happenings(&trace).iter().map(|h| h.kind).collect();
        assert!(
            kinds.contains(&"crash") && kinds.contains(&"restart") && kinds.contains(&"network")
        );
    }

    #[test]
    fn json_has_one_line_per_message_and_parses() {
        let file = TraceFile {
            format: FORMAT,
            scenario: "s".into(),
            protocol: "p".into(),
            about: "a \"quoted\" line".into(),
            seed: 1,
            end: 10,
            nodes: vec![1, 2],
            term_name: None,
            states: vec![StateChange {
                time: 0,
                node: 1,
                state: NodeState::role("leader"),
            }],
            cuts: vec![CutChange {
                time: 0,
                cut: vec![[1, 2]],
            }],
            messages: messages(&[
                send(1, 1, 2, "A", Some(3)),
                deliver(3, 1, 2, "A", 1),
                send(4, 2, 1, "B", Some(6)),
            ])
            .unwrap(),
            happenings: Vec::new(),
        };
        let text = file.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["format"], FORMAT);
        assert_eq!(value["messages"].as_array().map(Vec::len), Some(2));
        assert_eq!(value["messages"][1]["fate"], "in-flight");
        assert_eq!(value["states"][0]["role"], "leader");
        assert!(value["states"][0].get("term").is_none(), "no invented term");
        assert_eq!(value["happenings"], serde_json::json!([]));
        assert_eq!(text.lines().filter(|l| l.contains("\"label\"")).count(), 2);
    }
}
