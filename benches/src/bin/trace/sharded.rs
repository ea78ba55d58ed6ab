//! The sharded store's scenario: two-phase commit over Raft groups surviving its coordinator's
//! crash.

use super::consensus::raft_state;
use super::*;

/// The sharded store's process, as the trace draws it.
type Shard = kv::shard::ShardHost;

/// A process of the sharded store, seen through its replica of the coordinator group (g1).
fn shard_state(h: &Shard) -> NodeState {
    match h.group(1) {
        Some(n) => raft_state(n),
        None => NodeState::role("none"),
    }
}

/// A short name for a transaction step or command in a sharded store's log.
fn shard_command_label(c: &kv::shard::ShardCommand) -> String {
    use kv::shard::{ShardCommand, TxCommand};
    let tx = |t: &common::txn::TxId| format!("tx{}.{}", t.coordinator, t.seq);
    match c {
        ShardCommand::Tx(TxCommand::Prepare { tx: t, .. }) => format!("Prepare {}", tx(t)),
        ShardCommand::Tx(TxCommand::Decide { tx: t, outcome, .. }) => {
            format!("Decide {outcome} {}", tx(t))
        }
        ShardCommand::Tx(TxCommand::Finish { tx: t, outcome, .. }) => {
            format!("Finish {outcome} {}", tx(t))
        }
        ShardCommand::Tx(TxCommand::Forget { tx: t }) => format!("Forget {}", tx(t)),
        ShardCommand::Tx(TxCommand::EndReadOnly { tx: t }) => format!("EndReadOnly {}", tx(t)),
        ShardCommand::Tx(TxCommand::OnePhase { tx: t, .. }) => format!("OnePhase {}", tx(t)),
        ShardCommand::Kv(_) => "Kv".into(),
        ShardCommand::Map(_) => "Map".into(),
    }
}

/// A frame between two processes: each group's Raft message in a few words.
fn shard_label(
    m: &common::groups::GroupsMessage<raft::Message<kv::shard::ShardCommand>>,
) -> String {
    use raft::{Message, Payload};
    let parts: Vec<String> = m
        .parts
        .iter()
        .map(|(g, msg)| {
            let what = match msg {
                Message::AppendEntries { entries, .. } if entries.is_empty() => "heartbeat".into(),
                Message::AppendEntries { entries, .. } => entries
                    .iter()
                    .map(|e| match &e.payload {
                        Payload::Noop => "noop".to_string(),
                        Payload::Command(c) => shard_command_label(c),
                        _ => "config".to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                Message::AppendEntriesResponse {
                    success: true,
                    index,
                    ..
                } => format!("ok {index}"),
                Message::AppendEntriesResponse { .. } => "refused".into(),
                Message::PreVote { term, .. } => format!("PreVote t{term}"),
                Message::RequestVote { term, .. } => format!("RequestVote t{term}"),
                Message::PreVoteResponse { granted, .. }
                | Message::RequestVoteResponse { granted, .. } => {
                    if *granted {
                        "vote yes".into()
                    } else {
                        "vote no".into()
                    }
                }
                Message::InstallSnapshot { .. } => "InstallSnapshot".into(),
                Message::InstallSnapshotResponse { .. } => "snapshot ok".into(),
                Message::TimeoutNow { .. } => "TimeoutNow".into(),
            };
            format!("g{g} {what}")
        })
        .collect();
    // Not ";": Mermaid ends a statement there.
    cut_label(parts.join(" / "))
}

/// A client request to a process of the sharded store, in a few words.
fn shard_request_label(r: &kv::shard::ShardRequest) -> String {
    use common::groups::GroupsRequest;
    use raft::Request;
    match r {
        GroupsRequest::Group(g, Request::Propose(c)) => format!("g{g} {}", shard_command_label(c)),
        GroupsRequest::Group(g, Request::Read(q)) => format!("g{g} read {q:?}"),
        other => label(other),
    }
}

pub(super) fn twopc_raft_coordinator_crash(seed: u64) -> Result<Run, SimError> {
    use common::txn::TxId;
    use kv::shard::{
        Layout, Resolver, ShardConfig, ShardOutput, ShardRequest, TxDriver, TxOutput, TxWrite,
    };
    use raft::Response;

    let layout = Layout::new(2, 3).expect("a valid layout");
    let mut raft = raft::Config::new(1, vec![1]);
    raft.seed = seed;
    raft.election_timeout_ticks_min = 10;
    raft.election_timeout_ticks_max = 20;
    // Sparse heartbeats keep the diagram short; aligned, so every group's share one frame.
    raft.heartbeat_interval_ticks = 5;
    raft.heartbeat_aligned = true;
    let config = move |id: NodeId| ShardConfig {
        id,
        layout,
        map_group: vec![1, 2, 3],
        initial_processes: (1..=3).collect(),
        raft: raft.clone(),
    };
    let mut sim: Sim<Shard> = Sim::new(traced(seed, vec![1, 2, 3], 3), move |id| {
        config(id).groups_config().expect("a valid configuration")
    })?;
    sim.set_message_label(shard_label);
    sim.set_request_label(shard_request_label);
    let mut run = Observed::new(sim, shard_state);
    let leader = |v: &common::sim::SimView<'_, Shard>, g: u64| {
        v.nodes().find_map(|(id, h)| {
            let n = h?.group(g)?;
            (n.role() == raft::Role::Leader && n.entry_term(n.commit_index()) == Some(n.term()))
                .then_some(id)
        })
    };
    if !run.run_until_cond(2_000, |v| (0..=2).all(|g| leader(v, g).is_some()))? {
        return Err(run.sim.fail_now("the groups elected no leaders".into()));
    }
    let start = run.sim.now();
    let key_in = |p: u32| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| layout.partition_of(k) == p)
            .unwrap_or_default()
    };
    let writes = vec![
        TxWrite {
            key: key_in(0),
            value: "1".into(),
        },
        TxWrite {
            key: key_in(1),
            value: "1".into(),
        },
    ];
    // One request at a time until the request answered is the commit decision.
    let mut driver = TxDriver::new(vec![1, 2, 3]);
    driver.begin(TxId::new(9, 1), Vec::new(), writes);
    let mut decided = false;
    for _ in 0..50 {
        let Some((node, request)) = driver.next_request() else {
            break;
        };
        let answer = call(&mut run, 1, node, request.clone(), 100)?;
        decided = matches!(
            answer,
            Some(common::groups::GroupResponse::Group(
                1,
                Response::Applied {
                    output: ShardOutput::Tx(TxOutput::Decided { .. }),
                    ..
                }
            ))
        );
        driver.observe(node, &request, answer.as_ref());
        if decided {
            break;
        }
    }
    if !decided {
        return Err(run.sim.fail_now("the transaction was not decided".into()));
    }
    // The decision is in g1's log. Its leader's process crashes; the driver is gone.
    let Some(crashed) = leader(&run.sim.view(), 1) else {
        return Err(run.sim.fail_now("g1 has no leader".into()));
    };
    run.crash(crashed)?;
    let quiet = |v: &common::sim::SimView<'_, Shard>| {
        (1..=2).all(|g| {
            leader(v, g).is_some_and(|l| {
                v.node(l)
                    .and_then(|h| h.group(g))
                    .and_then(|n| n.state_machine().txns())
                    .is_some_and(|t| t.is_quiet())
            })
        })
    };
    // A resolver, one request at a time, until neither group holds anything of it.
    let mut resolver = Resolver::new(vec![1, 2, 3], 20);
    let resolve_until = run.sim.now() + 1_500;
    while !quiet(&run.sim.view()) && run.sim.now() < resolve_until {
        let (node, request): (NodeId, ShardRequest) = resolver.next_request();
        let answer = call(&mut run, 2, node, request.clone(), 60)?;
        resolver.observe(run.sim.now(), node, &request, answer.as_ref());
        let pause = run.sim.now() + 5;
        run.run_until(pause)?;
    }
    if !quiet(&run.sim.view()) || resolver.stats().finished == 0 {
        return Err(run
            .sim
            .fail_now("the resolver did not finish the commit".into()));
    }
    let end = run.sim.now() + 10;
    run.run_until(end)?;
    Ok(Run::of(run, options(start, end, None)))
}

/// Submits `request` as `client`'s to process `node` now, runs until it is answered or `within`
/// ticks pass, and returns the answer (`None`: none came).
fn call(
    run: &mut Observed<Shard>,
    client: u64,
    node: NodeId,
    request: kv::shard::ShardRequest,
    within: u64,
) -> Result<Option<<Shard as common::Node>::Response>, SimError> {
    let id = run.sim.submit_as(run.sim.now(), client, node, request);
    let deadline = run.sim.now() + within;
    run.run_until_cond(deadline, |v| {
        v.op(id).is_some_and(|op| op.completed_at.is_some())
    })?;
    Ok(run.sim.op(id).and_then(|op| op.outcome.response().cloned()))
}
