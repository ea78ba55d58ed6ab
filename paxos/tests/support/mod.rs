//! Shared pieces of the simulation tests: a cluster of [`PaxosNode<KvStore>`] under
//! `common::sim`, the safety invariants (each test file checks one of them across thousands of
//! seeds), a retrying KV client workload and the linearizability check of its history.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use common::sim::{
    ClientOp, ClosedLoop, FaultPlan, Outcome, RandomFaults, Sim, SimConfig, SimError, SimView,
};
use common::{Node, NodeId};
use paxos::{
    Config, KvCommand, KvQuery, KvStore, PaxosError, PaxosNode, Request, Response, Session, Slot,
    Value,
};

pub type Kv = PaxosNode<KvStore>;
pub type KvRequest = Request<KvCommand, KvQuery>;

/// A simulation of `n` replicas (ids `1..=n`) with replica configs from `tweak`.
pub fn sim(seed: u64, n: u64, tweak: impl Fn(&mut Config) + 'static) -> Result<Sim<Kv>, SimError> {
    sim_with_spares(seed, n, n, tweak)
}

/// A simulation of replicas `1..=total` of which `1..=initial` form the first configuration;
/// the others start outside it (passive learners until a reconfiguration adds them).
pub fn sim_with_spares(
    seed: u64,
    initial: u64,
    total: u64,
    tweak: impl Fn(&mut Config) + 'static,
) -> Result<Sim<Kv>, SimError> {
    let first: Vec<NodeId> = (1..=initial).collect();
    let all: Vec<NodeId> = (1..=total).collect();
    let mut config = SimConfig::new(seed, all);
    // Group commit: several steps share one sync, and a crash before it tears the tail.
    config.sync_latency_min = 0;
    config.sync_latency_max = 3;
    config.torn_tail = true;
    config.record_events = false;
    config.hash_contents = false;
    // Half the seeds gather the requests that reach a replica close together and hand them
    // over at once, as the driver does; drawn from a stream of its own, so every other draw of
    // a seed stays the same.
    config.request_batch_window = [0, 0, 3, 8][common::DetRng::new(seed ^ 0x4241_5443_4845_5321)
        .index(4)
        .unwrap_or(0)];
    Sim::new(config, move |id| {
        let mut c = Config::new(id, first.clone());
        c.seed = seed;
        // Half the seeds compact their logs every few slots, so catch-up by snapshot and
        // recovery from checkpoints run under the same faults. Half of those send snapshots in
        // chunks of 64 bytes, eight in flight, so their transfers take many chunks through the
        // same faults (the others send each snapshot in one chunk, as the defaults do).
        if seed % 2 == 1 {
            c.snapshot_interval_slots = 4;
        }
        if seed % 4 == 1 {
            c.snapshot_chunk_bytes_max = 64;
            c.snapshot_chunks_in_flight_max = 8;
        }
        // Half the seeds (across both of the above) let the leader send its Accepts before its
        // own acceptance is durable.
        c.parallel_accept = (seed >> 3) % 2 == 1;
        tweak(&mut c);
        c.into()
    })
}

/// Integrity as the leader guarantees it ("decided at most once" within a leadership): no
/// ballot ever puts one client command (session) into two decided slots. Across leaderships a
/// retried command can be decided twice (a copy accepted by a minority that the next leader's
/// quorum did not see, which a later leader re-proposes); the session table then applies it
/// once ([`add_integrity`] checks that).
pub fn add_decided_once(sim: &mut Sim<Kv>) {
    let mut slots_of: BTreeMap<Session, Vec<(Slot, paxos::Ballot)>> = BTreeMap::new();
    let mut recorded: BTreeSet<Slot> = BTreeSet::new();
    let mut checked: BTreeMap<NodeId, Slot> = BTreeMap::new();
    sim.add_invariant("decided at most once", move |view: &SimView<'_, Kv>| {
        for (id, node) in view.nodes() {
            let Some(node) = node else {
                checked.remove(&id);
                continue;
            };
            let from = checked.get(&id).copied().unwrap_or(0);
            let from = if from > node.decided() { 0 } else { from }.max(node.log_start());
            for slot in from..node.decided() {
                if !recorded.insert(slot) {
                    continue;
                }
                let Some(Value::Batch { origin, commands }) = node.decided_value(slot) else {
                    continue;
                };
                for c in commands.iter() {
                    let Some(session) = c.session else { continue };
                    let copies = slots_of.entry(session).or_default();
                    if let Some((other, _)) = copies.iter().find(|(_, o)| o == origin) {
                        return Err(format!(
                            "{session:?} decided in slots {other} and {slot}, both proposed under {origin}"
                        ));
                    }
                    copies.push((slot, *origin));
                }
            }
            checked.insert(id, node.decided());
        }
        Ok(())
    });
}

/// Whether a replica's durable records (as recovery would read them) hold slot `slot`:
/// accepted, learned, or compacted into a snapshot.
fn durable_holds(records: &[paxos::Record<KvCommand>], slot: Slot) -> bool {
    records.iter().any(|r| match r {
        paxos::Record::Accept {
            slot: first,
            values,
            ..
        } => (*first..*first + values.len() as u64).contains(&slot),
        paxos::Record::Learn {
            from_slot: first,
            values,
        } => (*first..*first + values.len() as u64).contains(&slot),
        paxos::Record::Snapshot {
            slot: compacted,
            accepted,
            ..
        } => slot < *compacted || accepted.iter().any(|e| e.slot == slot),
        _ => false,
    })
}

/// The durable-decision property behind the Outbox rule and the leader's parallel accept: a
/// slot a replica learned as chosen (from a leader's commit index) is held durably by a
/// majority of `members`. A leader that counted its own acceptance before it was durable, and
/// sent the commit index early, would break it as soon as a follower learns the slot while
/// only one acceptor's write has reached the disk. Checked when a non-leader's decided prefix
/// grows, for a fixed configuration.
pub fn add_durable_decision(sim: &mut Sim<Kv>, members: u64) {
    let majority = members / 2 + 1;
    let mut checked: BTreeMap<NodeId, Slot> = BTreeMap::new();
    sim.add_invariant("durable decision", move |view: &SimView<'_, Kv>| {
        for (id, node) in view.nodes() {
            let Some(node) = node else { continue };
            let decided = node.decided();
            if node.is_leader() || decided <= checked.get(&id).copied().unwrap_or(0) {
                continue;
            }
            checked.insert(id, decided);
            let slot = decided - 1;
            let holders: Vec<NodeId> = (1..=members)
                .filter(|&r| durable_holds(view.records(r), slot))
                .collect();
            if (holders.len() as u64) < majority {
                return Err(format!(
                    "replica {id} learned slot {slot} chosen, durable only on {holders:?}"
                ));
            }
        }
        Ok(())
    });
}

/// Every fault type of the simulator, drawn from the seed between `start` and `until`.
pub fn random_faults(seed: u64, n: u64, start: u64, until: u64) -> FaultPlan {
    let members: Vec<NodeId> = (1..=n).collect();
    FaultPlan::random(seed, &members, &RandomFaults::new(start, until, 1.0))
}

/// The token a KV append carries (every appended value is `token;`).
pub fn token(c: &KvCommand) -> Option<&str> {
    match c {
        KvCommand::Append { value, .. } => Some(value.trim_end_matches(';')),
        KvCommand::Put { value, .. } => Some(value),
        _ => None,
    }
}

/// Agreement (Paxos Made Simple, section 2.1: "only a single value is chosen"): no two
/// replicas ever decide different values for a slot, including across crashes and restarts.
pub fn add_agreement(sim: &mut Sim<Kv>) {
    let mut chosen: BTreeMap<Slot, Value<KvCommand>> = BTreeMap::new();
    let mut checked: BTreeMap<NodeId, Slot> = BTreeMap::new();
    sim.add_invariant("agreement", move |view: &SimView<'_, Kv>| {
        for (id, node) in view.nodes() {
            let Some(node) = node else {
                checked.remove(&id);
                continue;
            };
            let from = checked.get(&id).copied().unwrap_or(0);
            let from = if from > node.decided() { 0 } else { from }.max(node.log_start());
            for slot in from..node.decided() {
                let Some(v) = node.decided_value(slot) else {
                    continue;
                };
                match chosen.get(&slot) {
                    Some(first) if first != v => {
                        return Err(format!(
                            "slot {slot}: node {id} decided {v:?}, another replica {first:?}"
                        ))
                    }
                    Some(_) => {}
                    None => {
                        chosen.insert(slot, v.clone());
                    }
                }
            }
            checked.insert(id, node.decided());
        }
        Ok(())
    });
}

/// Validity (Paxos Made Simple, section 2.1: "only a value that has been proposed may be
/// chosen"): every decided command was submitted by a client; everything else is a no-op.
pub fn add_validity(sim: &mut Sim<Kv>) {
    let mut proposed: BTreeSet<String> = BTreeSet::new();
    let mut history_seen = 0;
    let mut checked: BTreeMap<NodeId, Slot> = BTreeMap::new();
    sim.add_invariant("validity", move |view: &SimView<'_, Kv>| {
        for op in &view.history()[history_seen..] {
            if let Request::Propose { command, .. } = &op.request {
                if let Some(t) = token(command) {
                    proposed.insert(t.to_string());
                }
            }
        }
        history_seen = view.history().len();
        for (id, node) in view.nodes() {
            let Some(node) = node else {
                checked.remove(&id);
                continue;
            };
            let from = checked.get(&id).copied().unwrap_or(0);
            let from = if from > node.decided() { 0 } else { from }.max(node.log_start());
            for slot in from..node.decided() {
                if let Some(Value::Batch { commands, .. }) = node.decided_value(slot) {
                    for c in commands.iter() {
                        let t = token(&c.payload).unwrap_or("");
                        if !proposed.contains(t) {
                            return Err(format!(
                                "slot {slot} on node {id}: {t:?} was never proposed"
                            ));
                        }
                    }
                }
            }
            checked.insert(id, node.decided());
        }
        Ok(())
    });
}

/// Integrity (at most once, Paxos Made Moderately Complex's "a command is executed at most
/// once" under client retries): in every replica's state, each appended token appears at most
/// once, although clients retry commands whose outcome they did not learn.
pub fn add_integrity(sim: &mut Sim<Kv>) {
    let mut checked: BTreeMap<NodeId, Slot> = BTreeMap::new();
    sim.add_invariant("integrity", move |view: &SimView<'_, Kv>| {
        for (id, node) in view.nodes() {
            let Some(node) = node else {
                checked.remove(&id);
                continue;
            };
            let applied = node.metrics().applied;
            let from = checked.get(&id).copied().unwrap_or(0);
            let from = if from > applied { 0 } else { from };
            let mut keys = BTreeSet::new();
            for slot in from.max(node.log_start())..applied {
                if let Some(Value::Batch { commands, .. }) = node.decided_value(slot) {
                    for c in commands.iter() {
                        if let KvCommand::Append { key, .. } = &c.payload {
                            keys.insert(key.clone());
                        }
                    }
                }
            }
            if from == 0 {
                keys.extend(node.state().data().keys().cloned());
            }
            for key in keys {
                if let Some(value) = node.state().get(&key) {
                    let mut seen = BTreeSet::new();
                    for t in value.split(';').filter(|t| !t.is_empty()) {
                        if !seen.insert(t) {
                            return Err(format!("node {id}: {t} applied twice: {key}={value}"));
                        }
                    }
                }
            }
            checked.insert(id, applied);
        }
        Ok(())
    });
}

/// What a workload client is doing.
#[derive(Clone, Debug, Default)]
struct ClientState {
    seq: u64,
    /// The operation being attempted (retried until it gets an answer).
    current: Option<KvRequest>,
    target: NodeId,
    done: u64,
}

/// Problems the workload saw that must fail the test.
#[derive(Clone, Debug, Default)]
pub struct WorkloadLog {
    pub errors: Vec<String>,
}

/// A closed-loop KV workload: `clients` clients, each doing `ops` operations (appends of unique
/// tokens and linearizable reads on three keys), following leader hints and retrying an
/// operation (with its session) until it is answered.
pub fn kv_workload(
    sim: &mut Sim<Kv>,
    n: u64,
    clients: u64,
    ops: u64,
    start: u64,
    until: u64,
    reads: bool,
) -> Rc<RefCell<WorkloadLog>> {
    kv_workload_with(
        sim,
        n,
        clients,
        ops,
        start,
        until,
        reads,
        Write::Append,
        120,
    )
}

/// What the workload's writes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// `Append` of a unique token `c<client>s<seq>;` (applied-twice shows in the state).
    Append,
    /// `Put` of a unique value `c<client>s<seq>` (its output, the previous value, is checked
    /// for linearizability).
    Put,
}

/// [`kv_workload`] with a choice of writes, over nodes `1..=n`; a client gives up waiting
/// after `timeout` and retries (with the same session) at the next node.
// Long: one closure drives every client (a state machine per client: retry, redirect,
// next request); its cases share the client's state.
#[allow(clippy::too_many_arguments)]
pub fn kv_workload_with(
    sim: &mut Sim<Kv>,
    n: u64,
    clients: u64,
    ops: u64,
    start: u64,
    until: u64,
    reads: bool,
    write: Write,
    timeout: u64,
) -> Rc<RefCell<WorkloadLog>> {
    let log = Rc::new(RefCell::new(WorkloadLog::default()));
    let log2 = log.clone();
    let mut states: BTreeMap<u64, ClientState> = BTreeMap::new();
    sim.closed_loop(
        ClosedLoop {
            clients,
            start,
            think_min: 1,
            think_max: 15,
            requests_max: u64::MAX,
            until,
            timeout: Some(timeout),
        },
        move |rng, ctx| {
            let st = states.entry(ctx.client).or_insert_with(|| ClientState {
                target: 1 + ctx.client % n,
                ..Default::default()
            });
            let next_node = |t: NodeId| 1 + t % n;
            if let Some(last) = ctx.last {
                match &last.outcome {
                    Outcome::Response(Response::Applied { .. } | Response::Read(_)) => {
                        st.current = None;
                        st.done += 1;
                    }
                    Outcome::Response(Response::Failed(PaxosError::NotLeader {
                        leader: Some(l),
                    })) => st.target = *l,
                    Outcome::Response(Response::Failed(e @ PaxosError::SessionStale { .. })) => {
                        log2.borrow_mut()
                            .errors
                            .push(format!("client {}: {e}", ctx.client));
                        st.current = None;
                    }
                    _ => st.target = next_node(st.target),
                }
            }
            if st.current.is_none() {
                if st.done >= ops {
                    return None;
                }
                let key = format!("k{}", rng.index(3).unwrap_or(0));
                st.current = Some(if reads && rng.chance(0.3) {
                    Request::Read(KvQuery::Get(key))
                } else {
                    st.seq += 1;
                    let command = match write {
                        Write::Append => KvCommand::Append {
                            key,
                            value: format!("c{}s{};", ctx.client, st.seq),
                        },
                        Write::Put => KvCommand::Put {
                            key,
                            value: format!("c{}s{}", ctx.client, st.seq),
                        },
                    };
                    Request::Propose {
                        command,
                        session: Some(Session {
                            client: ctx.client,
                            seq: st.seq,
                        }),
                    }
                });
            }
            st.current.clone().map(|r| (st.target, r))
        },
    );
    log
}

/// Whether every client finished all its operations.
pub fn all_answered(history: &[ClientOp<Kv>], clients: u64, ops: u64) -> bool {
    let mut done: BTreeMap<u64, u64> = BTreeMap::new();
    for op in history {
        if matches!(
            op.outcome,
            Outcome::Response(Response::Applied { .. } | Response::Read(_))
        ) {
            *done.entry(op.client).or_default() += 1;
        }
    }
    done.len() as u64 == clients && done.values().all(|&d| d >= ops)
}

// ---------------------------------------------------------------------------------------
// Linearizability through `common::check` (porcupine, per key).
// ---------------------------------------------------------------------------------------

/// Checks the client history of a [`Write::Put`] workload with `common::check::kv::check_kv`.
///
/// Every attempt of one session is one logical operation, from its first invocation to its
/// first `Applied` answer (the session table makes the retries one command); one never
/// answered is open-ended. A put with a known answer is checked as a compare-and-set from its
/// output (the previous value) to its value, so the check covers what every write saw too.
/// Reads are checked when answered; a read refused or lost had no effect and is left out.
pub fn check_kv_linearizable(sim: &Sim<Kv>) -> Result<(), String> {
    use common::check::kv::check_kv;
    match check_kv(&kv_history(sim)?) {
        Ok(verdict) if verdict.is_linearizable() => Ok(()),
        Ok(verdict) => Err(format!("not linearizable: {verdict}")),
        Err(e) => Err(format!("malformed history: {e}")),
    }
}

/// The checker's history of a [`Write::Put`] workload (see [`check_kv_linearizable`]).
// Long: one pass over the simulation's trace, with the local types it needs defined inside.
pub fn kv_history(
    sim: &Sim<Kv>,
) -> Result<common::check::History<common::check::kv::KvInput, common::check::kv::KvOutput>, String>
{
    use common::check::kv::{KvInput, KvOutput};
    use common::check::{History, HistoryEvent};

    struct Logical {
        client: u64,
        call: u64,
        key: String,
        value: String,
        answer: Option<(u64, Option<String>)>,
    }
    let mut writes: BTreeMap<(u64, u64), Logical> = BTreeMap::new();
    let mut events: Vec<HistoryEvent<KvInput, KvOutput>> = Vec::new();
    let mut next_id = 0u64;
    for op in sim.history() {
        match &op.request {
            Request::Propose {
                command: KvCommand::Put { key, value },
                session: Some(s),
            } => {
                let w = writes.entry((s.client, s.seq)).or_insert_with(|| Logical {
                    client: op.client,
                    call: op.invoked_at,
                    key: key.clone(),
                    value: value.clone(),
                    answer: None,
                });
                if let (Outcome::Response(Response::Applied { output, .. }), Some(t)) =
                    (&op.outcome, op.completed_at)
                {
                    if w.answer.is_none() {
                        w.answer = Some((t, output.clone().into_value()));
                    }
                }
            }
            Request::Propose { command, .. } => {
                return Err(format!("workload command {command:?} is not a checked put"))
            }
            Request::Read(KvQuery::Get(key)) => {
                if let (Outcome::Response(Response::Read(v)), Some(t)) =
                    (&op.outcome, op.completed_at)
                {
                    next_id += 1;
                    events.push(HistoryEvent::Invoke {
                        id: next_id,
                        client: op.client,
                        time: op.invoked_at,
                        wall_ns: None,
                        input: KvInput::Get { key: key.clone() },
                    });
                    events.push(HistoryEvent::Ok {
                        id: next_id,
                        time: t,
                        wall_ns: None,
                        output: KvOutput::Value {
                            value: v.clone().into_value(),
                        },
                    });
                }
            }
            Request::Reconfigure { .. } => {}
        }
    }
    for w in writes.into_values() {
        next_id += 1;
        let (input, answer) = match w.answer {
            Some((t, previous)) => (
                KvInput::Cas {
                    key: w.key,
                    expected: previous,
                    new: w.value,
                },
                Some((t, KvOutput::Cas { swapped: true })),
            ),
            None => (
                KvInput::Put {
                    key: w.key,
                    value: w.value,
                },
                None,
            ),
        };
        events.push(HistoryEvent::Invoke {
            id: next_id,
            client: w.client,
            time: w.call,
            wall_ns: None,
            input,
        });
        match answer {
            Some((time, output)) => events.push(HistoryEvent::Ok {
                id: next_id,
                time,
                wall_ns: None,
                output,
            }),
            None => events.push(HistoryEvent::Info {
                id: next_id,
                time: w.call,
                wall_ns: None,
            }),
        }
    }
    Ok(History { events })
}
