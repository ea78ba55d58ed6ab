//! Criterion suite of the Multi-Paxos core, pumped in one thread: no driver, no codec, no
//! storage (records are dropped once a step returns, as an in-memory store that never syncs
//! would). Clients keep a fixed number of commands in flight at the leader; the measured
//! quantity is commands decided and applied per second.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::{Node, NodeId, Outbox, RequestId};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paxos::{Config, Counter, Message, PaxosNode, Request, Response};

type R = PaxosNode<Counter>;

/// Commands decided per timed chunk; a fresh cluster is built (untimed) for each chunk so the
/// uncompacted log stays small.
const CHUNK_COMMANDS: u64 = 50_000;

fn in_flight_slots_max() -> u64 {
    std::env::var("PAXOS_BENCH_SLOTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

struct Cluster {
    nodes: Vec<R>,
    leader: usize,
    queue: VecDeque<(NodeId, NodeId, Message<u64>)>,
    out: Outbox<R>,
    next_request: u64,
    decided: u64,
}

impl Cluster {
    fn new(n: u64) -> Self {
        let ids: Vec<NodeId> = (1..=n).collect();
        let mut nodes: Vec<R> = ids
            .iter()
            .map(|&id| {
                let mut c = Config::new(id, ids.clone());
                // A short pipeline makes a backlog, and a backlog is batched into slots.
                c.in_flight_slots_max = in_flight_slots_max();
                R::recover(c.into(), vec![]).unwrap()
            })
            .collect();
        let mut queue = VecDeque::new();
        let mut out = Outbox::new();
        // Elect a leader (untimed).
        for _ in 0..50 {
            for (i, node) in nodes.iter_mut().enumerate() {
                node.tick(&mut out);
                for (to, m) in out.take().messages {
                    queue.push_back((i as u64 + 1, to, m));
                }
            }
            while let Some((from, to, m)) = queue.pop_front() {
                nodes[(to - 1) as usize].handle_message(from, m, &mut out);
                for (t, m2) in out.take().messages {
                    queue.push_back((to, t, m2));
                }
            }
            if nodes.iter().any(|n| n.is_leader()) {
                break;
            }
        }
        let leader = nodes.iter().position(|n| n.is_leader()).unwrap();
        Cluster {
            nodes,
            leader,
            queue,
            out,
            next_request: 0,
            decided: 0,
        }
    }

    fn propose(&mut self) {
        self.next_request += 1;
        let leader = &mut self.nodes[self.leader];
        leader.handle_request(
            RequestId(self.next_request),
            Request::Propose {
                command: 1,
                session: None,
            },
            &mut self.out,
        );
        self.drain(self.leader);
    }

    /// Moves one step's effects: messages to the queue, answers counted (and replaced by a new
    /// command, keeping the in-flight count constant).
    fn drain(&mut self, from: usize) {
        let e = self.out.take();
        let from_id = from as u64 + 1;
        for (to, m) in e.messages {
            self.queue.push_back((from_id, to, m));
        }
        let mut answered = 0;
        for (_, r) in e.responses {
            if matches!(r, Response::Applied { .. }) {
                answered += 1;
            }
        }
        self.decided += answered;
        for _ in 0..answered {
            self.propose();
        }
    }

    /// Runs until `target` more commands are decided, keeping `in_flight` outstanding.
    fn run(&mut self, in_flight: u64, target: u64) {
        let goal = self.decided + target;
        for _ in 0..in_flight {
            self.propose();
        }
        while self.decided < goal {
            let Some((from, to, m)) = self.queue.pop_front() else {
                // Idle: let the leader send its commit (followers learn on ticks).
                let i = self.leader;
                self.nodes[i].tick(&mut self.out);
                self.drain(i);
                continue;
            };
            let i = (to - 1) as usize;
            self.nodes[i].handle_message(from, m, &mut self.out);
            self.drain(i);
        }
    }
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("paxos_core");
    group.throughput(Throughput::Elements(CHUNK_COMMANDS));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    support::fast_mode(&mut group);
    for (replicas, in_flight) in [(3u64, 1u64), (3, 100), (5, 100)] {
        group.bench_with_input(
            BenchmarkId::new(format!("in_flight_{in_flight}"), replicas),
            &(replicas, in_flight),
            |b, &(replicas, in_flight)| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut cluster = Cluster::new(replicas);
                        let start = Instant::now();
                        cluster.run(in_flight, CHUNK_COMMANDS);
                        total += start.elapsed();
                    }
                    total
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
