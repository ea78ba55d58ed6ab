//! The simulator's trace, rebuilt for the export: every message paired with its fate
//! ([`messages`]), and everything else ([`happenings`]).

use std::collections::BTreeMap;

use common::sim::{DropReason, TraceEvent, TraceKind};
use common::{NodeId, RequestId};

use super::{Fate, Happening, Message};
use crate::BenchError;

/// Every message of `trace` with its fate. Fails when the trace does not hold together (an
/// arrival without its send: a trace cut at the start, or a simulator change the export does
/// not know).
pub fn messages(trace: &[TraceEvent]) -> Result<Vec<Message>, BenchError> {
    let mut out: Vec<Message> = Vec::new();
    // Messages scheduled to arrive, by (from, to, arrival time): indexes into `out`.
    let mut pending = Pending::new();
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
            } => settle_drop(&mut out, &mut pending, e, (*from, *to), label, *reason)?,
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

/// Messages scheduled to arrive, by (from, to, arrival time): indexes into the messages.
type Pending = BTreeMap<(NodeId, NodeId, u64), Vec<usize>>;

/// The error for a trace that does not hold together at `e`.
fn broken(e: &TraceEvent, what: &str) -> BenchError {
    BenchError::Trace(format!("at time {} (step {}): {what}", e.time, e.step))
}

/// Settles the fate of a message the network dropped at `e`: at its send (recorded just
/// before), before it was ever scheduled (an unknown receiver), or at its arrival.
fn settle_drop(
    out: &mut Vec<Message>,
    pending: &mut Pending,
    e: &TraceEvent,
    (from, to): (NodeId, NodeId),
    label: &str,
    reason: DropReason,
) -> Result<(), BenchError> {
    // Dropped at once: the send was recorded just before, without an arrival.
    let at_send = out.last_mut().filter(|m| {
        m.sent == e.time
            && m.arrives.is_none()
            && m.fate == Fate::InFlight
            && (m.from, m.to) == (from, to)
            && m.label == label
    });
    if let Some(m) = at_send {
        m.fate = reason.into();
        return Ok(());
    }
    if reason == DropReason::UnknownNode {
        // Never scheduled: no send event precedes it.
        out.push(Message {
            id: out.len(),
            from,
            to,
            label: label.to_string(),
            sent: e.time,
            arrives: None,
            fate: Fate::UnknownNode,
            copy: false,
        });
        return Ok(());
    }
    let i = take_pending(out, pending, (from, to, e.time), |m| m.label == label)
        .ok_or_else(|| broken(e, &format!("drop of {label:?} without its send")))?;
    out[i].fate = reason.into();
    Ok(())
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
        pending: &mut Pending,
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
    pending: &mut Pending,
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
    trace.iter().filter_map(happening).collect()
}

/// `e` as a [`Happening`]; `None` for the records of a message.
fn happening(e: &TraceEvent) -> Option<Happening> {
    let at = |kind, node: Option<NodeId>, text: String| Happening {
        time: e.time,
        kind,
        node,
        client: None,
        request: None,
        text,
    };
    // A client operation names its client and request as well.
    let client_op = |kind, node: NodeId, client: u64, id: &RequestId, text: &str| Happening {
        client: Some(client),
        request: Some(id.0),
        ..at(kind, Some(node), text.to_string())
    };
    Some(match &e.kind {
        TraceKind::Crash {
            node,
            unsynced_lost,
            effects_lost,
            ..
        } => at(
            "crash",
            Some(*node),
            format!(
                "node {node} crashed (lost {unsynced_lost} unsynced records, \
                 {effects_lost} unsent effects)"
            ),
        ),
        TraceKind::Restart { node, records } => at(
            "restart",
            Some(*node),
            format!("node {node} restarted from {records} records"),
        ),
        TraceKind::Network { description } => at("network", None, description.clone()),
        TraceKind::Invoke {
            client,
            node,
            id,
            label,
        } => client_op("invoke", *node, *client, id, label),
        TraceKind::Complete {
            client,
            node,
            id,
            label,
        } => client_op("complete", *node, *client, id, label),
        TraceKind::ClientFailed {
            client,
            node,
            id,
            reason,
        } => client_op("client-failed", *node, *client, id, reason),
        TraceKind::Event { node, label } => at("event", Some(*node), label.clone()),
        TraceKind::InvariantFailed { name, message } => {
            at("invariant-failed", None, format!("{name}: {message}"))
        }
        TraceKind::Send { .. }
        | TraceKind::Duplicate { .. }
        | TraceKind::Deliver { .. }
        | TraceKind::Drop { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::test_trace::{at, deliver, drop, send};

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
}
