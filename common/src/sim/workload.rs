//! Clients: requests submitted by hand, open- and closed-loop generators, and the history of
//! every operation with its outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;

use super::engine::{node_span, Ev};
use super::trace::TraceKind;
use super::{Sim, SimErrorKind};
use crate::{DetRng, Node, NodeId, RequestId};

/// How a client request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<R> {
    /// No answer yet.
    Pending,
    /// The node answered.
    Response(R),
    /// The node crashed before answering: the request may or may not take effect.
    Crashed,
    /// The client stopped waiting: the request may or may not take effect.
    TimedOut,
    /// The node was down when the request was sent: the request certainly had no effect.
    NodeDown,
}

impl<R> Outcome<R> {
    /// Whether the request may have taken effect without the client knowing (pending, crashed,
    /// timed out). A linearizability checker treats such operations as open-ended.
    pub fn is_unknown(&self) -> bool {
        matches!(
            self,
            Outcome::Pending | Outcome::Crashed | Outcome::TimedOut
        )
    }

    /// The response, if the node answered.
    pub fn response(&self) -> Option<&R> {
        match self {
            Outcome::Response(r) => Some(r),
            _ => None,
        }
    }
}

/// One client operation of the history: invocation, completion and outcome.
pub struct ClientOp<N: Node> {
    /// The request's id (unique within the run).
    pub id: RequestId,
    /// The client that issued it (each client has at most one request in flight when it comes
    /// from a closed-loop generator; requests from [`Sim::submit`] and open-loop generators each
    /// get a client of their own).
    pub client: u64,
    /// The node it was sent to.
    pub node: NodeId,
    /// The request.
    pub request: N::Request,
    /// Virtual time of the invocation.
    pub invoked_at: u64,
    /// Virtual time at which it ended (`None` while pending).
    pub completed_at: Option<u64>,
    /// How it ended.
    pub outcome: Outcome<N::Response>,
}

impl<N: Node> std::fmt::Debug for ClientOp<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOp")
            .field("id", &self.id)
            .field("client", &self.client)
            .field("node", &self.node)
            .field("request", &self.request)
            .field("invoked_at", &self.invoked_at)
            .field("completed_at", &self.completed_at)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// A boxed request generator.
type Generator<N> =
    Box<dyn FnMut(&mut DetRng, &ClientCtx<'_, N>) -> Option<(NodeId, <N as Node>::Request)>>;

/// What a request generator knows when it is asked for the next request.
pub struct ClientCtx<'a, N: Node> {
    /// The client asking.
    pub client: u64,
    /// Virtual time.
    pub now: u64,
    /// Requests this generator issued so far.
    pub issued: u64,
    /// The client's previous operation (closed loop only), e.g. to follow a leader hint.
    pub last: Option<&'a ClientOp<N>>,
    /// The cluster's node ids.
    pub nodes: &'a [NodeId],
}

/// A closed-loop workload: `clients` clients, each sending one request, waiting for its end,
/// thinking, and sending the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedLoop {
    /// How many clients.
    pub clients: u64,
    /// When the first requests go out (each client starts within `think_max` after it).
    pub start: u64,
    /// Pause between the end of one request and the next: `think_min..=think_max`.
    pub think_min: u64,
    /// See [`ClosedLoop::think_min`].
    pub think_max: u64,
    /// Requests at most, all clients together.
    pub requests_max: u64,
    /// No request is sent after this time.
    pub until: u64,
    /// A client stops waiting after this long ([`Outcome::TimedOut`]); `None`: never.
    pub timeout: Option<u64>,
}

/// An open-loop workload: requests go out at seeded intervals whether or not earlier ones ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenLoop {
    /// First request.
    pub start: u64,
    /// No request after this time.
    pub until: u64,
    /// Gap between two requests: `interval_min..=interval_max`.
    pub interval_min: u64,
    /// See [`OpenLoop::interval_min`].
    pub interval_max: u64,
    /// Requests at most.
    pub requests_max: u64,
    /// A request is abandoned after this long ([`Outcome::TimedOut`]); `None`: never.
    pub timeout: Option<u64>,
}

struct GenState<N: Node> {
    generate: Generator<N>,
    issued: u64,
    requests_max: u64,
    until: u64,
    timeout: Option<u64>,
    kind: GenKind,
}

enum GenKind {
    Closed {
        think_min: u64,
        think_max: u64,
    },
    Open {
        interval_min: u64,
        interval_max: u64,
    },
}

/// The client side of a simulation: the generators, the history and the requests in flight.
pub(super) struct Clients<N: Node> {
    /// The stream every workload choice (think times, gaps, generated requests) draws from.
    pub(super) rng: DetRng,
    generators: Vec<Option<GenState<N>>>,
    pub(super) history: Vec<ClientOp<N>>,
    /// In-flight requests: id -> index into `history`.
    pub(super) inflight: BTreeMap<RequestId, usize>,
    /// Requests whose client gave up: a late answer is legal and ignored.
    pub(super) abandoned: BTreeSet<RequestId>,
    /// The generator each history entry came from.
    pub(super) op_generator: Vec<Option<usize>>,
    /// Every invoked request: id -> index into `history`.
    pub(super) op_index: BTreeMap<RequestId, usize>,
    /// Each client's latest request: client -> index into `history`.
    pub(super) last_op: BTreeMap<u64, usize>,
    pub(super) next_request: u64,
    pub(super) next_client: u64,
}

impl<N: Node> Clients<N> {
    /// No clients yet; ids of requests and clients start at 1.
    pub(super) fn new(rng: DetRng) -> Self {
        Self {
            rng,
            generators: Vec::new(),
            history: Vec::new(),
            inflight: BTreeMap::new(),
            abandoned: BTreeSet::new(),
            op_generator: Vec::new(),
            op_index: BTreeMap::new(),
            last_op: BTreeMap::new(),
            next_request: 1,
            next_client: 1,
        }
    }
}

impl<N: Node> Sim<N>
where
    N::Request: Clone,
{
    // ----- clients -----

    /// Sends `request` to `node` at virtual time `at` (as a client of its own) and returns the
    /// request's id. The outcome appears in [`Sim::history`].
    pub fn submit(&mut self, at: u64, node: NodeId, request: N::Request) -> RequestId {
        let client = self.new_client();
        self.submit_as(at, client, node, request)
    }

    /// Like [`Sim::submit`], on behalf of client `client` (the caller keeps each client
    /// sequential if it wants a well-formed history).
    pub fn submit_as(
        &mut self,
        at: u64,
        client: u64,
        node: NodeId,
        request: N::Request,
    ) -> RequestId {
        let id = RequestId(self.clients.next_request);
        self.clients.next_request += 1;
        let timeout = self.config.request_timeout;
        self.push(
            at.max(self.sched.now),
            Ev::Request {
                id,
                client,
                node,
                request,
                timeout,
                generator: None,
            },
        );
        id
    }

    /// Adds a closed-loop workload; `generate` returns the next request of a client and the
    /// node to send it to, or `None` when that client is done.
    pub fn closed_loop<F>(&mut self, spec: ClosedLoop, generate: F)
    where
        F: FnMut(&mut DetRng, &ClientCtx<'_, N>) -> Option<(NodeId, N::Request)> + 'static,
    {
        let generator = self.clients.generators.len();
        self.clients.generators.push(Some(GenState {
            generate: Box::new(generate),
            issued: 0,
            requests_max: spec.requests_max,
            until: spec.until,
            timeout: spec.timeout,
            kind: GenKind::Closed {
                think_min: spec.think_min,
                think_max: spec.think_max,
            },
        }));
        for _ in 0..spec.clients {
            let client = self.new_client();
            let start = spec.start.max(self.sched.now)
                + self
                    .clients
                    .rng
                    .range_inclusive(0, spec.think_max.max(spec.think_min));
            self.push(start, Ev::ClientNext { generator, client });
        }
    }

    /// Adds an open-loop workload; `generate` returns the next request and its node, or `None`
    /// to stop.
    pub fn open_loop<F>(&mut self, spec: OpenLoop, generate: F)
    where
        F: FnMut(&mut DetRng, &ClientCtx<'_, N>) -> Option<(NodeId, N::Request)> + 'static,
    {
        let generator = self.clients.generators.len();
        self.clients.generators.push(Some(GenState {
            generate: Box::new(generate),
            issued: 0,
            requests_max: spec.requests_max,
            until: spec.until,
            timeout: spec.timeout,
            kind: GenKind::Open {
                interval_min: spec.interval_min,
                interval_max: spec.interval_max,
            },
        }));
        self.push(
            spec.start.max(self.sched.now),
            Ev::ClientNext {
                generator,
                client: 0,
            },
        );
    }

    pub(super) fn new_client(&mut self) -> u64 {
        let c = self.clients.next_client;
        self.clients.next_client += 1;
        c
    }

    /// The client of history entry `op` stops waiting, if the request is still pending.
    pub(super) fn client_timeout(&mut self, op: usize) {
        if matches!(self.clients.history[op].outcome, Outcome::Pending) {
            let id = self.clients.history[op].id;
            self.clients.inflight.remove(&id);
            self.clients.abandoned.insert(id);
            self.end_op(op, Outcome::TimedOut, "timed out");
        }
    }

    /// A client request reaches its node (or finds it down).
    pub(super) fn invoke(
        &mut self,
        id: RequestId,
        client: u64,
        node: NodeId,
        request: N::Request,
        timeout: Option<u64>,
        generator: Option<usize>,
    ) -> Result<(), SimErrorKind> {
        let op = self.clients.history.len();
        if self.config.record_trace {
            let label = (self.rec.request_label)(&request);
            self.record(TraceKind::Invoke {
                client,
                node,
                id,
                label,
            });
        }
        self.clients.history.push(ClientOp {
            id,
            client,
            node,
            request: request.clone(),
            invoked_at: self.sched.now,
            completed_at: None,
            outcome: Outcome::Pending,
        });
        self.clients.op_generator.push(generator);
        self.clients.op_index.insert(id, op);
        self.clients.last_op.insert(client, op);
        let Some(&i) = self.cluster.index.get(&node) else {
            self.end_op(op, Outcome::NodeDown, "unknown node");
            return Ok(());
        };
        if self.cluster.slots[i].node.is_none() {
            self.end_op(op, Outcome::NodeDown, "node down");
            return Ok(());
        }
        self.clients.inflight.insert(id, op);
        if self.config.request_batch_window > 0 {
            self.wait_for_batch(i, id, request);
            if let Some(t) = timeout {
                self.push(self.sched.now + t, Ev::ClientTimeout { op });
            }
            return Ok(());
        }
        let slot = &mut self.cluster.slots[i];
        if let Some(n) = slot.node.as_mut() {
            let _span = node_span(node, self.sched.now, self.sched.steps);
            // Through the batch entry point (a batch of one), so that the seeded runs check
            // the path the driver takes.
            n.handle_requests(std::iter::once((id, request)), &mut slot.outbox);
        }
        if let Some(t) = timeout {
            self.push(self.sched.now + t, Ev::ClientTimeout { op });
        }
        self.after_step(i)
    }

    /// Puts a request that reached node `i` in the list handed over when its batch window ends
    /// (see [`SimConfig::request_batch_window`](super::SimConfig::request_batch_window)).
    fn wait_for_batch(&mut self, i: usize, id: RequestId, request: N::Request) {
        let slot = &mut self.cluster.slots[i];
        slot.requests.push((id, request));
        if slot.hand_over_scheduled {
            return;
        }
        slot.hand_over_scheduled = true;
        let incarnation = slot.incarnation;
        let delay = self
            .cluster
            .rng
            .range_inclusive(1, self.config.request_batch_window);
        self.push(
            self.sched.now + delay,
            Ev::HandOver {
                node: i,
                incarnation,
            },
        );
    }

    /// Ends history entry `op` without a response (or records the completion time for one).
    pub(super) fn end_op(&mut self, op: usize, outcome: Outcome<N::Response>, reason: &str) {
        let now = self.sched.now;
        let entry = &mut self.clients.history[op];
        entry.completed_at = Some(now);
        entry.outcome = outcome;
        let (client, node, id) = (entry.client, entry.node, entry.id);
        self.rec.hasher.write_u64(id.0);
        self.record(TraceKind::ClientFailed {
            client,
            node,
            id,
            reason: reason.to_string(),
        });
        self.op_ended(op);
    }

    /// A closed-loop client whose request ended thinks, then sends the next one.
    pub(super) fn op_ended(&mut self, op: usize) {
        let Some(generator) = self.clients.op_generator[op] else {
            return;
        };
        let Some(Some(g)) = self.clients.generators.get(generator) else {
            return;
        };
        if let GenKind::Closed {
            think_min,
            think_max,
        } = g.kind
        {
            let think = self.clients.rng.range_inclusive(think_min, think_max);
            let client = self.clients.history[op].client;
            self.push(self.sched.now + think, Ev::ClientNext { generator, client });
        }
    }

    pub(super) fn next_request_of(&mut self, generator: usize, client: u64) {
        let Some(mut g) = self
            .clients
            .generators
            .get_mut(generator)
            .and_then(Option::take)
        else {
            return;
        };
        let open = matches!(g.kind, GenKind::Open { .. });
        if g.issued < g.requests_max && self.sched.now <= g.until {
            let client = if open { self.new_client() } else { client };
            let last = if open {
                None
            } else {
                self.clients
                    .last_op
                    .get(&client)
                    .and_then(|&i| self.clients.history.get(i))
            };
            let ctx = ClientCtx {
                client,
                now: self.sched.now,
                issued: g.issued,
                last,
                nodes: &self.config.nodes,
            };
            let next = (g.generate)(&mut self.clients.rng, &ctx);
            if let Some((node, request)) = next {
                g.issued += 1;
                let id = RequestId(self.clients.next_request);
                self.clients.next_request += 1;
                self.push(
                    self.sched.now,
                    Ev::Request {
                        id,
                        client,
                        node,
                        request,
                        timeout: g.timeout,
                        generator: Some(generator),
                    },
                );
                if let GenKind::Open {
                    interval_min,
                    interval_max,
                } = g.kind
                {
                    let gap = self.clients.rng.range_inclusive(interval_min, interval_max);
                    self.push(
                        self.sched.now + gap.max(1),
                        Ev::ClientNext {
                            generator,
                            client: 0,
                        },
                    );
                }
            }
        }
        self.clients.generators[generator] = Some(g);
    }

    /// A node answers request `id`: the history entry completes.
    pub(super) fn respond(
        &mut self,
        from: NodeId,
        id: RequestId,
        response: N::Response,
    ) -> Result<(), SimErrorKind> {
        self.rec.hasher.write_u8(0x52);
        self.rec.hasher.write_u64(id.0);
        let Some(op) = self.clients.inflight.remove(&id) else {
            if self.clients.abandoned.remove(&id) {
                return Ok(()); // the client gave up; a late answer is legal
            }
            return Err(SimErrorKind::Contract {
                message: format!(
                    "node {from} answered {id}, which is not in flight (answered twice, or never asked)"
                ),
            });
        };
        if self.clients.history[op].node != from {
            return Err(SimErrorKind::Contract {
                message: format!(
                    "node {from} answered {id}, which was sent to node {}",
                    self.clients.history[op].node
                ),
            });
        }
        if self.config.record_trace {
            let label = (self.rec.response_label)(&response);
            let client = self.clients.history[op].client;
            self.record(TraceKind::Complete {
                client,
                node: from,
                id,
                label,
            });
        }
        let entry = &mut self.clients.history[op];
        entry.completed_at = Some(self.sched.now);
        entry.outcome = Outcome::Response(response);
        self.op_ended(op);
        Ok(())
    }
}
