//! A small demo protocol that exercises the machinery end to end: a replicated counter
//! (feature `demo`).
//!
//! It is not one of the workspace's protocols; it exists so the driver, transports, durable log
//! and simulator can be tested and benchmarked without any real protocol, and as the smallest
//! complete example of a [`Node`] implementation.
//!
//! # The protocol
//!
//! Every node keeps a counter. A client sends `Add(n)` to any node, the *origin*:
//!
//! 1. the origin gives the update a sequence number, persists it ([`DemoRecord::Applied`]),
//!    applies it and sends [`DemoMessage::Update`] to every peer;
//! 2. a peer that has not seen `(origin, seq)` persists and applies it; duplicates are ignored;
//!    either way it answers [`DemoMessage::Ack`] (after the record is durable, by the Outbox rule);
//! 3. once a majority of the cluster (the origin included) holds the update, the origin answers
//!    the client with its current total;
//! 4. every [`DemoConfig::retransmit_ticks`] ticks the origin re-sends unacknowledged updates, and
//!    gives up with [`DemoError::Timeout`] after [`DemoConfig::retries_max`] tries.
//!
//! Guarantee: an acknowledged `Add` is durable on a majority of nodes, and every node applies each
//! update at most once. (Totals on different nodes may differ while updates are in flight; there is
//! no ordering between updates, which addition does not need.)
//!
//! ```
//! use common::demo::{DemoConfig, DemoNode, DemoRequest, DemoResponse};
//! use common::{Node, Outbox, RequestId};
//!
//! let mut a = DemoNode::recover(DemoConfig::new(1, vec![1, 2, 3]), vec![]).unwrap();
//! let mut b = DemoNode::recover(DemoConfig::new(2, vec![1, 2, 3]), vec![]).unwrap();
//! let mut out = Outbox::new();
//! a.handle_request(RequestId(7), DemoRequest::Add(5), &mut out);
//! let sent = out.take();
//! assert_eq!(sent.messages.len(), 2); // the update goes to nodes 2 and 3
//!
//! // Deliver the update to node 2, and its ack back to node 1.
//! let (to, update) = sent.messages[0].clone();
//! assert_eq!(to, 2);
//! b.handle_message(1, update, &mut out);
//! let (_, ack) = out.take().messages.remove(0);
//! a.handle_message(2, ack, &mut out);
//! let done = out.take();
//! assert_eq!(done.responses, vec![(RequestId(7), DemoResponse::Total(5))]);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{protocol, Node, NodeId, Outbox, RequestId};

/// Default for [`DemoConfig::retransmit_ticks`].
pub const RETRANSMIT_TICKS_DEFAULT: u64 = 3;
/// Default for [`DemoConfig::retries_max`].
pub const RETRIES_MAX_DEFAULT: u32 = 20;
/// Default for [`DemoConfig::pending_max`].
pub const PENDING_MAX_DEFAULT: usize = 4096;

/// Configuration of a [`DemoNode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoConfig {
    /// This node.
    pub id: NodeId,
    /// Every member of the cluster, this node included.
    pub members: Vec<NodeId>,
    /// Ticks between retransmissions of an unacknowledged update.
    pub retransmit_ticks: u64,
    /// Retransmissions before a client request fails with [`DemoError::Timeout`].
    pub retries_max: u32,
    /// Most client updates waiting for acknowledgement; more are refused with [`DemoError::Busy`].
    pub pending_max: usize,
}

impl DemoConfig {
    /// A configuration with default timeouts and limits.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Self {
        Self {
            id,
            members,
            retransmit_ticks: RETRANSMIT_TICKS_DEFAULT,
            retries_max: RETRIES_MAX_DEFAULT,
            pending_max: PENDING_MAX_DEFAULT,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), DemoError> {
        if !self.members.contains(&self.id) {
            return Err(DemoError::Config(format!(
                "members {:?} do not include this node {}",
                self.members, self.id
            )));
        }
        let distinct: BTreeSet<_> = self.members.iter().collect();
        if distinct.len() != self.members.len() {
            return Err(DemoError::Config("members contain duplicates".into()));
        }
        if self.retransmit_ticks == 0 {
            return Err(DemoError::Config(
                "retransmit_ticks must be at least 1".into(),
            ));
        }
        if self.pending_max == 0 {
            return Err(DemoError::Config("pending_max must be at least 1".into()));
        }
        Ok(())
    }
}

/// Messages between demo nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DemoMessage {
    /// Apply `amount`, identified by `(origin, seq)`.
    Update {
        /// The node the client talked to.
        origin: NodeId,
        /// The origin's sequence number for this update.
        seq: u64,
        /// How much to add.
        amount: u64,
    },
    /// The sender holds update `(origin, seq)` durably.
    Ack {
        /// The update's origin.
        origin: NodeId,
        /// The update's sequence number.
        seq: u64,
    },
}

/// Client requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DemoRequest {
    /// Add to the counter; answered once a majority holds the update.
    Add(u64),
    /// Read this node's total.
    Get,
}

/// Answers to client requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DemoResponse {
    /// The node's total after the request.
    Total(u64),
    /// The request failed.
    Failed(DemoError),
}

/// What a demo node persists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DemoRecord {
    /// Update `(origin, seq)` of `amount` was applied.
    Applied {
        /// The update's origin.
        origin: NodeId,
        /// The update's sequence number.
        seq: u64,
        /// The amount added.
        amount: u64,
    },
}

/// Events of the demo protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DemoEvent {
    /// An update was applied here for the first time.
    Applied {
        /// The update's origin.
        origin: NodeId,
        /// The update's sequence number.
        seq: u64,
    },
}

/// Errors of the demo protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DemoError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Too many updates are waiting for acknowledgement.
    #[error("too many pending updates")]
    Busy,
    /// The update was not acknowledged by a majority in time (it may still be applied later).
    #[error("update not acknowledged by a majority in time")]
    Timeout,
}

/// Metrics of a demo node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemoMetrics {
    /// The counter's value here.
    pub total: u64,
    /// Distinct updates applied here.
    pub applied: u64,
    /// Client updates waiting for a majority.
    pub pending: usize,
    /// Messages rejected (from non-members).
    pub rejected: u64,
}

struct Pending {
    request: RequestId,
    amount: u64,
    acks: BTreeSet<NodeId>,
    ticks_since_send: u64,
    retries: u32,
}

/// A node of the demo replicated counter. See the module documentation.
pub struct DemoNode {
    config: DemoConfig,
    /// Sum of every applied update.
    total: u64,
    /// Every update applied here, to ignore duplicates. (Grows without bound: acceptable for a
    /// demo; a real protocol would keep a per-origin watermark and compact.)
    seen: BTreeSet<(NodeId, u64)>,
    /// The next sequence number for updates originating here.
    next_seq: u64,
    /// Updates originating here that wait for a majority, by sequence number.
    pending: BTreeMap<u64, Pending>,
    rejected: u64,
}

impl DemoNode {
    fn majority(&self) -> usize {
        self.config.members.len() / 2 + 1
    }

    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let me = self.config.id;
        self.config
            .members
            .iter()
            .copied()
            .filter(move |&m| m != me)
    }

    fn apply(&mut self, origin: NodeId, seq: u64, amount: u64, out: &mut Outbox<Self>) -> bool {
        if !self.seen.insert((origin, seq)) {
            return false;
        }
        self.total = self.total.wrapping_add(amount);
        out.persist(DemoRecord::Applied {
            origin,
            seq,
            amount,
        });
        out.emit(DemoEvent::Applied { origin, seq });
        true
    }

    fn maybe_complete(&mut self, seq: u64, out: &mut Outbox<Self>) {
        let majority = self.majority();
        if let Some(p) = self.pending.get(&seq) {
            if p.acks.len() >= majority {
                let request = p.request;
                self.pending.remove(&seq);
                out.respond(request, DemoResponse::Total(self.total));
            }
        }
    }
}

impl Node for DemoNode {
    type Config = DemoConfig;
    type Message = DemoMessage;
    type Request = DemoRequest;
    type Response = DemoResponse;
    type Event = DemoEvent;
    type Record = DemoRecord;
    type Metrics = DemoMetrics;
    type Error = DemoError;

    const PROTOCOL: u16 = protocol::DEMO;
    const WIRE_VERSION: u16 = 1;

    fn recover(config: DemoConfig, records: Vec<DemoRecord>) -> Result<Self, DemoError> {
        config.validate()?;
        let mut node = DemoNode {
            config,
            total: 0,
            seen: BTreeSet::new(),
            next_seq: 0,
            pending: BTreeMap::new(),
            rejected: 0,
        };
        for DemoRecord::Applied {
            origin,
            seq,
            amount,
        } in records
        {
            if node.seen.insert((origin, seq)) {
                node.total = node.total.wrapping_add(amount);
            }
            if origin == node.config.id {
                node.next_seq = node.next_seq.max(seq + 1);
            }
        }
        Ok(node)
    }

    fn id(&self) -> NodeId {
        self.config.id
    }

    fn handle_message(&mut self, from: NodeId, msg: DemoMessage, out: &mut Outbox<Self>) {
        if !self.config.members.contains(&from) || from == self.config.id {
            self.rejected += 1;
            tracing::debug!(from, "demo: message from a non-member rejected");
            return;
        }
        match msg {
            DemoMessage::Update {
                origin,
                seq,
                amount,
            } => {
                self.apply(origin, seq, amount, out);
                out.send(from, DemoMessage::Ack { origin, seq });
            }
            DemoMessage::Ack { origin, seq } => {
                if origin != self.config.id {
                    self.rejected += 1;
                    return;
                }
                if let Some(p) = self.pending.get_mut(&seq) {
                    p.acks.insert(from);
                    self.maybe_complete(seq, out);
                }
            }
        }
    }

    fn handle_request(&mut self, id: RequestId, req: DemoRequest, out: &mut Outbox<Self>) {
        match req {
            DemoRequest::Get => out.respond(id, DemoResponse::Total(self.total)),
            DemoRequest::Add(amount) => {
                if self.pending.len() >= self.config.pending_max {
                    out.respond(id, DemoResponse::Failed(DemoError::Busy));
                    return;
                }
                let origin = self.config.id;
                let seq = self.next_seq;
                self.next_seq += 1;
                self.apply(origin, seq, amount, out);
                self.pending.insert(
                    seq,
                    Pending {
                        request: id,
                        amount,
                        acks: BTreeSet::from([origin]),
                        ticks_since_send: 0,
                        retries: 0,
                    },
                );
                let update = DemoMessage::Update {
                    origin,
                    seq,
                    amount,
                };
                let peers: Vec<NodeId> = self.peers().collect();
                out.broadcast(peers, &update);
                self.maybe_complete(seq, out);
            }
        }
    }

    fn tick(&mut self, out: &mut Outbox<Self>) {
        let origin = self.config.id;
        let members = self.config.members.clone();
        let mut failed = Vec::new();
        for (&seq, p) in self.pending.iter_mut() {
            p.ticks_since_send += 1;
            if p.ticks_since_send < self.config.retransmit_ticks {
                continue;
            }
            p.ticks_since_send = 0;
            if p.retries >= self.config.retries_max {
                failed.push(seq);
                continue;
            }
            p.retries += 1;
            let update = DemoMessage::Update {
                origin,
                seq,
                amount: p.amount,
            };
            for &m in &members {
                if !p.acks.contains(&m) {
                    out.send(m, update.clone());
                }
            }
        }
        for seq in failed {
            if let Some(p) = self.pending.remove(&seq) {
                out.respond(p.request, DemoResponse::Failed(DemoError::Timeout));
            }
        }
    }

    fn metrics(&self) -> DemoMetrics {
        DemoMetrics {
            total: self.total,
            applied: self.seen.len() as u64,
            pending: self.pending.len(),
            rejected: self.rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Effects, Persist};

    fn node(id: NodeId) -> DemoNode {
        DemoNode::recover(DemoConfig::new(id, vec![1, 2, 3]), vec![]).unwrap()
    }

    #[test]
    fn take_into_trades_buffers_with_the_outbox() {
        let mut a = node(1);
        let mut out = Outbox::new();
        let mut effects = Effects::default();
        a.handle_request(RequestId(1), DemoRequest::Add(4), &mut out);
        out.take_into(&mut effects);
        assert!(out.is_empty());
        assert_eq!(effects.records.len(), 1);
        assert_eq!(effects.messages.len(), 2);
        let buffers = (effects.records.as_ptr(), effects.messages.as_ptr());
        effects.clear();
        // The next step writes into the outbox's own buffers; taking them hands the first
        // step's buffers back to the outbox, so two steps later they are in use again.
        a.handle_request(RequestId(2), DemoRequest::Add(5), &mut out);
        let mut second = Effects::default();
        out.take_into(&mut second);
        out.take_into(&mut effects);
        a.handle_request(RequestId(3), DemoRequest::Add(6), &mut out);
        let mut third = Effects::default();
        out.take_into(&mut third);
        assert_eq!((third.records.as_ptr(), third.messages.as_ptr()), buffers);
        assert_eq!(third.records.len(), 1);
    }

    #[test]
    #[should_panic(expected = "needs empty effects")]
    fn take_into_refuses_to_lose_effects() {
        let mut a = node(1);
        let mut out = Outbox::new();
        let mut effects = Effects::default();
        a.handle_request(RequestId(1), DemoRequest::Add(4), &mut out);
        out.take_into(&mut effects);
        out.take_into(&mut effects);
    }

    #[test]
    fn add_persists_applies_and_broadcasts() {
        let mut a = node(1);
        let mut out = Outbox::new();
        a.handle_request(RequestId(1), DemoRequest::Add(4), &mut out);
        let e = out.take();
        assert_eq!(
            e.records,
            vec![Persist::Append(DemoRecord::Applied {
                origin: 1,
                seq: 0,
                amount: 4
            })]
        );
        let update = DemoMessage::Update {
            origin: 1,
            seq: 0,
            amount: 4,
        };
        assert_eq!(e.messages, vec![(2, update.clone()), (3, update)]);
        assert!(
            e.responses.is_empty(),
            "no answer before a majority holds it"
        );
        assert_eq!(a.metrics().pending, 1);
    }

    #[test]
    fn duplicate_update_is_acked_but_applied_once() {
        let mut b = node(2);
        let mut out = Outbox::new();
        let update = DemoMessage::Update {
            origin: 1,
            seq: 0,
            amount: 4,
        };
        b.handle_message(1, update.clone(), &mut out);
        b.handle_message(1, update, &mut out);
        let e = out.take();
        assert_eq!(e.records.len(), 1);
        assert_eq!(e.messages.len(), 2);
        assert_eq!(b.metrics().total, 4);
    }

    #[test]
    fn retransmits_then_times_out() {
        let mut cfg = DemoConfig::new(1, vec![1, 2, 3]);
        cfg.retries_max = 1;
        cfg.retransmit_ticks = 1;
        let mut a = DemoNode::recover(cfg, vec![]).unwrap();
        let mut out = Outbox::new();
        a.handle_request(RequestId(9), DemoRequest::Add(1), &mut out);
        out.take();
        a.tick(&mut out);
        assert_eq!(
            out.take().messages.len(),
            2,
            "one retransmission to each peer"
        );
        a.tick(&mut out);
        let e = out.take();
        assert_eq!(
            e.responses,
            vec![(RequestId(9), DemoResponse::Failed(DemoError::Timeout))]
        );
    }

    #[test]
    fn recover_restores_total_and_sequence() {
        let records = vec![
            DemoRecord::Applied {
                origin: 1,
                seq: 0,
                amount: 2,
            },
            DemoRecord::Applied {
                origin: 2,
                seq: 0,
                amount: 3,
            },
            DemoRecord::Applied {
                origin: 1,
                seq: 1,
                amount: 5,
            },
        ];
        let mut a = DemoNode::recover(DemoConfig::new(1, vec![1, 2, 3]), records).unwrap();
        assert_eq!(a.metrics().total, 10);
        let mut out = Outbox::new();
        a.handle_request(RequestId(1), DemoRequest::Add(1), &mut out);
        assert!(out
            .take()
            .messages
            .iter()
            .all(|(_, m)| matches!(m, DemoMessage::Update { seq: 2, .. })));
    }

    #[test]
    fn non_member_and_bad_config_rejected() {
        let mut a = node(1);
        let mut out = Outbox::new();
        a.handle_message(
            99,
            DemoMessage::Update {
                origin: 99,
                seq: 0,
                amount: 1,
            },
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(a.metrics().rejected, 1);
        assert!(DemoNode::recover(DemoConfig::new(4, vec![1, 2, 3]), vec![]).is_err());
    }
}
