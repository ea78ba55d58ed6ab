//! The atomic-commit scenarios: 2PC blocking on its coordinator's crash, 3PC terminating
//! without it, and 3PC deciding both ways under a partition and on a slow network.

use super::*;

fn three_writes() -> BTreeMap<NodeId, Vec<Write>> {
    BTreeMap::from([
        (2, vec![Write::put("a", "1")]),
        (3, vec![Write::put("b", "1")]),
        (4, vec![Write::put("c", "1")]),
    ])
}

/// A commit-protocol node's role from its counters: what it is doing now, else how its
/// transactions ended.
fn commit_role(
    coordinating: usize,
    in_doubt: Option<&'static str>,
    ended: [u64; 4],
) -> &'static str {
    let [decided_committed, decided_aborted, applied, aborted] = ended;
    if coordinating > 0 {
        "coordinating"
    } else if let Some(role) = in_doubt {
        role
    } else if decided_committed > 0 {
        "decided commit"
    } else if decided_aborted > 0 {
        "decided abort"
    } else if applied > 0 {
        "committed"
    } else if aborted > 0 {
        "aborted"
    } else {
        "idle"
    }
}

fn twopc_state(n: &twopc::TwoPcNode) -> NodeState {
    let m = n.metrics();
    let in_doubt = match (m.blocked, m.in_doubt.len()) {
        (0, 0) => None,
        (0, _) => Some("prepared"),
        _ => Some("blocked"),
    };
    let ended = [m.decided_committed, m.decided_aborted, m.applied, m.aborted];
    NodeState {
        detail: format!(
            "{} in doubt, {} committed, {} aborted",
            m.in_doubt.len(),
            m.applied,
            m.aborted
        ),
        ..NodeState::role(commit_role(m.coordinating, in_doubt, ended))
    }
}

fn threepc_state(n: &threepc::ThreePcNode) -> NodeState {
    use threepc::State;
    let m = n.metrics();
    let in_doubt = m.in_doubt.first().map(|d| match (d.state, d.terminating) {
        (State::PreCommitted, true) => "precommitted, terminating",
        (State::PreCommitted, false) => "precommitted",
        (_, true) => "uncertain, terminating",
        (_, false) => "uncertain",
    });
    let ended = [m.decided_committed, m.decided_aborted, m.applied, m.aborted];
    NodeState {
        detail: format!(
            "{} in doubt, {} committed, {} aborted",
            m.in_doubt.len(),
            m.applied,
            m.aborted
        ),
        ..NodeState::role(commit_role(m.coordinating, in_doubt, ended))
    }
}

pub(super) fn twopc_coordinator_crash(seed: u64) -> Result<Run, SimError> {
    use twopc::{Config, Request, TwoPcNode};
    let members: Vec<NodeId> = vec![1, 2, 3, 4];
    let cluster = members.clone();
    let mut sim: Sim<TwoPcNode> = Sim::new(traced(seed, members, 5), move |id| {
        Config::new(id, cluster.clone())
    })?;
    sim.set_message_label(label);
    sim.submit(
        10,
        1,
        Request::Commit {
            writes: three_writes(),
        },
    );
    let mut run = Observed::new(sim, twopc_state);
    // Prepare arrives at 15, the votes at 20. Cut the coordinator's outgoing links before the
    // votes arrive: it decides Commit, but the decision never leaves.
    run.run_until(17)?;
    run.apply(Fault::OneWay {
        from: vec![1],
        to: vec![2, 3, 4],
    })?;
    run.run_until(25)?;
    run.crash(1)?;
    run.apply(Fault::Heal)?;
    // The participants ask and ask; nobody can tell them.
    run.run_until(400)?;
    run.restart(1)?;
    run.run_until(500)?;
    Ok(Run::of(run, options(0, 500, None)))
}

pub(super) fn threepc_coordinator_crash(seed: u64) -> Result<Run, SimError> {
    use threepc::{Config, Request, ThreePcNode};
    let members: Vec<NodeId> = vec![1, 2, 3, 4];
    let cluster = members.clone();
    let mut sim: Sim<ThreePcNode> = Sim::new(traced(seed, members, 5), move |id| {
        Config::new(id, cluster.clone())
    })?;
    sim.set_message_label(label);
    sim.submit(
        10,
        1,
        Request::Commit {
            writes: three_writes(),
        },
    );
    let mut run = Observed::new(sim, threepc_state);
    // CanCommit arrives at 15, the votes at 20: the coordinator logs PreCommit and would send it.
    // Cut it off just before, then crash it: no PreCommit arrives anywhere.
    run.run_until(19)?;
    run.apply(Fault::OneWay {
        from: vec![1],
        to: vec![2, 3, 4],
    })?;
    run.run_until(21)?;
    run.crash(1)?;
    run.apply(Fault::Heal)?;
    let decided = run.run_until_cond(2_000, |v| {
        [2, 3, 4]
            .iter()
            .all(|&p| v.node(p).is_some_and(|n| n.metrics().in_doubt.is_empty()))
    })?;
    if !decided {
        return Err(run.sim.fail_now("the survivors did not decide".into()));
    }
    let end = run.sim.now() + 20;
    run.run_until(end)?;
    Ok(Run::of(run, options(0, end, None)))
}

pub(super) fn threepc_partition(seed: u64) -> Result<Run, SimError> {
    use threepc::{Config, Request, ThreePcNode};
    let members: Vec<NodeId> = vec![1, 2, 3, 4, 5];
    let cluster = members.clone();
    let mut sim: Sim<ThreePcNode> = Sim::new(traced(seed, members, 5), move |id| {
        Config::new(id, cluster.clone())
    })?;
    sim.set_message_label(label);
    sim.submit(
        10,
        1,
        Request::Commit {
            writes: three_writes(),
        },
    );
    let mut run = Observed::new(sim, threepc_state);
    // The votes arrive at 20 and PreCommit leaves at 20, arriving at 25. Split at 22: the
    // PreCommit to 2 is delivered (same side), those to 3 and 4 are dropped.
    run.run_until(22)?;
    run.apply(Fault::Partition {
        a: vec![1, 2],
        b: vec![3, 4, 5],
    })?;
    let decided = run.run_until_cond(3_000, |v| {
        [2, 3, 4]
            .iter()
            .all(|&p| v.node(p).is_some_and(|n| n.metrics().in_doubt.is_empty()))
    })?;
    if !decided {
        return Err(run.sim.fail_now("the two sides did not decide".into()));
    }
    let end = run.sim.now() + 20;
    run.run_until(end)?;
    Ok(Run::of(run, options(0, end, Some(vec![1, 2, 3, 4]))))
}

pub(super) fn threepc_slow_network(seed: u64) -> Result<Run, SimError> {
    use threepc::scenario::slow_network;
    let mut config = slow_network::sim_config(seed);
    config.record_trace = true;
    config.label_chars_max = LABEL_CHARS_MAX;
    let mut sim = Sim::new(config, slow_network::node_config)?;
    sim.set_message_label(label);
    slow_network::schedule(&mut sim);
    let mut run = Observed::new(sim, threepc_state);
    // Until the slow DoCommits have arrived and been refused, and a little after.
    let end = 1_350;
    run.run_until(end)?;
    if slow_network::client_outcome(&run.sim) != Some(common::txn::Outcome::Committed) {
        return Err(run.sim.fail_now("the client was not told Committed".into()));
    }
    Ok(Run::of(run, options(0, end, None)))
}
