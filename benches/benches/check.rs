//! Criterion suite of the history checkers and the simulator: linearizability of a
//! 10,000-operation key-value history from 10 concurrent clients over 10 and 100 keys (with and
//! without operations of unknown outcome); a single-key history of 1,000 operations, the hard
//! case (one search over everything: the search grows faster than linearly with the length of
//! a key's sub-history, about 0.4 s for 1,000 operations and 14 s for 10,000 on one key on the
//! development machine); and the simulator's speed on the demo protocol under faults.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use common::check::{check_kv, History, HistoryEvent, KvInput, KvOutput};
use common::demo::{DemoConfig, DemoNode, DemoRequest};
use common::sim::{ClosedLoop, FaultPlan, RandomFaults, Sim, SimConfig};
use common::DetRng;

const OPS: usize = 10_000;
const CLIENTS: u64 = 10;

/// A linearizable history with real concurrency: each client runs operations back to back with
/// random durations; every operation takes effect at a random instant inside its interval, and
/// its output is computed by applying the operations in that order. A fraction `unknown` of the
/// writes end without an answer (`info`), as after a timeout.
fn history(seed: u64, ops: usize, keys: usize, unknown: f64) -> History<KvInput, KvOutput> {
    let mut rng = DetRng::new(seed);
    // (effect instant, client, call, ret, input)
    let mut planned = Vec::with_capacity(ops);
    let per_client = ops / CLIENTS as usize;
    for client in 0..CLIENTS {
        let mut t = rng.range_inclusive(0, 10);
        for i in 0..per_client {
            let call = t;
            let ret = call + rng.range_inclusive(2, 40);
            // Distinct effect instants: scale by 16 and add the client.
            let point = rng.range_inclusive(call * 16 + 1, ret * 16 - 1) * 16 + client;
            let key = format!("k{}", rng.index(keys).unwrap());
            let value = format!("{client}-{i}");
            let input = match rng.index(10).unwrap() {
                0..=4 => KvInput::Get { key },
                5..=7 => KvInput::Put { key, value },
                8 => KvInput::Delete { key },
                _ => KvInput::Cas {
                    key,
                    expected: Some(format!(
                        "{}-{}",
                        rng.index(CLIENTS as usize).unwrap(),
                        i.saturating_sub(1)
                    )),
                    new: value,
                },
            };
            planned.push((point, client, call * 16 * 16, ret * 16 * 16, input));
            t = ret + rng.range_inclusive(0, 5);
        }
    }
    planned.sort_by_key(|p| p.0);
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let mut events = Vec::with_capacity(ops * 2);
    for (id, (_, client, call, ret, input)) in planned.into_iter().enumerate() {
        let id = id as u64;
        let output = apply(&mut state, &input);
        let is_write = !matches!(input, KvInput::Get { .. });
        events.push((
            call,
            0,
            HistoryEvent::Invoke {
                id,
                client,
                time: call,
                wall_ns: None,
                input,
            },
        ));
        let end = if is_write && rng.chance(unknown) {
            HistoryEvent::Info {
                id,
                time: ret,
                wall_ns: None,
            }
        } else {
            HistoryEvent::Ok {
                id,
                time: ret,
                wall_ns: None,
                output,
            }
        };
        events.push((ret, 1, end));
    }
    events.sort_by_key(|(t, kind, _)| (*t, *kind));
    History {
        events: events.into_iter().map(|(_, _, e)| e).collect(),
    }
}

/// Applies `input` to the key-value `state` and returns what it answers.
fn apply(state: &mut BTreeMap<String, String>, input: &KvInput) -> KvOutput {
    match input {
        KvInput::Get { key } => KvOutput::Value {
            value: state.get(key).cloned(),
        },
        KvInput::Put { key, value } => {
            state.insert(key.clone(), value.clone());
            KvOutput::Done
        }
        KvInput::Delete { key } => {
            state.remove(key);
            KvOutput::Done
        }
        KvInput::Cas { key, expected, new } => {
            let swapped = state.get(key) == expected.as_ref();
            if swapped {
                state.insert(key.clone(), new.clone());
            }
            KvOutput::Cas { swapped }
        }
    }
}

fn linearizability(c: &mut Criterion) {
    let mut group = c.benchmark_group("check_kv_10_clients");
    group.sample_size(10);
    support::fast_mode(&mut group);
    for (ops, keys, unknown) in [
        (OPS, 10usize, 0.0),
        (OPS, 100, 0.0),
        (OPS, 10, 0.01),
        (1_000, 1, 0.0),
    ] {
        let h = history(7, ops, keys, unknown);
        assert!(
            check_kv(&h).unwrap().is_linearizable(),
            "generated history must be linearizable"
        );
        group.throughput(Throughput::Elements(ops as u64));
        let name = format!("ops={ops},keys={keys},unknown={unknown}");
        group.bench_with_input(BenchmarkId::from_parameter(name), &h, |b, h| {
            b.iter(|| check_kv(h).unwrap())
        });
    }
    group.finish();
}

fn simulator(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim_demo_seed");
    group.sample_size(20);
    support::fast_mode(&mut group);
    group.bench_function("3_nodes_faults_60_requests", |b| {
        let mut seed = 0u64;
        b.iter(|| {
            seed += 1;
            let members = vec![1, 2, 3];
            let mut config = SimConfig::new(seed, members.clone());
            config.link.drop = 0.05;
            let m = members.clone();
            let mut sim: Sim<DemoNode> =
                Sim::new(config, move |id| DemoConfig::new(id, m.clone())).unwrap();
            sim.schedule(FaultPlan::random(
                seed,
                &members,
                &RandomFaults::new(50, 2_000, 1.0),
            ));
            sim.closed_loop(
                ClosedLoop {
                    clients: 3,
                    start: 0,
                    think_min: 1,
                    think_max: 20,
                    requests_max: 60,
                    until: 2_000,
                    timeout: Some(300),
                },
                |rng, ctx| Some((ctx.nodes[rng.index(3)?], DemoRequest::Add(1))),
            );
            sim.run_until(3_000).unwrap();
            sim.steps()
        })
    });
    group.finish();
}

criterion_group!(benches, linearizability, simulator);
criterion_main!(benches);
