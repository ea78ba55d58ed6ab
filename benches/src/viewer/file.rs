//! The export's format: a [`TraceFile`] and its parts, and its JSON text.

use common::sim::DropReason;
use common::NodeId;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::messages;
    use crate::viewer::test_trace::{deliver, send};

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
