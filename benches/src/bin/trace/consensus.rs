//! The consensus scenarios: the demo counter, a Raft election and a leader crash, duelling
//! Multi-Paxos proposers.

use super::*;

fn demo_state(n: &DemoNode) -> NodeState {
    let m = n.metrics();
    NodeState {
        log: Some(m.applied),
        detail: format!("total {}, {} waiting", m.total, m.pending),
        ..NodeState::role("replica")
    }
}

pub(super) fn demo(seed: u64) -> Result<Run, SimError> {
    let members = vec![1, 2, 3];
    let cluster = members.clone();
    let mut sim: Sim<DemoNode> = Sim::new(traced(seed, members, 5), move |id| {
        DemoConfig::new(id, cluster.clone())
    })?;
    sim.set_message_label(label);
    sim.submit(10, 1, DemoRequest::Add(5));
    sim.submit(40, 3, DemoRequest::Add(2));
    let mut run = Observed::new(sim, demo_state);
    run.run_until(100)?;
    Ok(Run::of(run, options(0, 100, None)))
}

type RaftKv = raft::RaftNode<raft::kv::KvStore>;

/// A Raft node's role, term and log, whatever its state machine.
pub(super) fn raft_state<S: common::StateMachine>(n: &raft::RaftNode<S>) -> NodeState {
    use raft::Role;
    let role = match n.role() {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
        Role::Learner => "learner",
    };
    NodeState {
        term: Some(n.term()),
        log: Some(n.last_log_index()),
        commit: Some(n.commit_index()),
        leader: n.leader(),
        ..NodeState::role(role)
    }
}

pub(super) fn raft_election(seed: u64) -> Result<Run, SimError> {
    use raft::kv::KvCommand;
    use raft::{Config, Request};
    type Node = RaftKv;

    let members: Vec<NodeId> = vec![1, 2, 3];
    let voters = members.clone();
    let sim: Sim<Node> = Sim::new(traced(seed, members.clone(), 3), move |id| {
        let mut c = Config::new(id, voters.clone());
        c.seed = seed;
        c.election_timeout_ticks_min = 10;
        c.election_timeout_ticks_max = 20;
        // Sparse heartbeats keep the diagram short; the timeout is still twice their interval.
        c.heartbeat_interval_ticks = 5;
        c.into()
    })?;
    let mut run = Observed::new(sim, raft_state);
    run.sim.set_message_label(label);
    let leader_of = |sim: &Sim<Node>| members.iter().copied().find(|&id| is_raft_leader(sim, id));
    let found = run.run_until_cond(2_000, |v| {
        v.nodes()
            .any(|(_, n)| n.is_some_and(|n| n.metrics().leader == Some(n.id())))
    })?;
    let Some(first) = leader_of(&run.sim).filter(|_| found) else {
        return Err(run.sim.fail_now("no leader elected".into()));
    };
    let put = |v: &str| {
        Request::Propose(KvCommand::Put {
            key: "x".into(),
            value: v.into(),
        })
    };
    let now = run.sim.now();
    run.sim.submit(now + 5, first, put("1"));
    run.run_for(40)?;
    let crash_at = run.sim.now();
    run.crash(first)?;
    let found = run.run_until_cond(crash_at + 2_000, move |v| {
        v.nodes()
            .any(|(id, n)| id != first && n.is_some_and(|n| n.metrics().leader == Some(id)))
    })?;
    let Some(second) = leader_of(&run.sim).filter(|_| found) else {
        return Err(run.sim.fail_now("no leader after the crash".into()));
    };
    let now = run.sim.now();
    run.sim.submit(now + 5, second, put("2"));
    run.run_for(30)?;
    let end = run.sim.now();
    Ok(Run::of(run, options(0, end, None)))
}

fn is_raft_leader(sim: &Sim<RaftKv>, id: NodeId) -> bool {
    sim.node(id).is_some_and(|n| n.metrics().leader == Some(id))
}

type PaxosKv = paxos::PaxosNode<paxos::KvStore>;

fn paxos_state(r: &PaxosKv) -> NodeState {
    let m = r.metrics();
    // `leader` is who the ballot leader election picked; a replica it picked that has not yet
    // finished phase 1 is still preparing.
    let role = if m.is_leader {
        "leader"
    } else if m.leader == Some(m.id) {
        "preparing"
    } else if m.leader.is_some() {
        "follower"
    } else {
        "no leader"
    };
    NodeState {
        term: Some(m.promised.round),
        log: Some(m.decided),
        commit: Some(m.applied),
        leader: m.leader,
        detail: format!("promised b{}.{}", m.promised.round, m.promised.leader),
        ..NodeState::role(role)
    }
}

pub(super) fn paxos_duel(seed: u64) -> Result<Run, SimError> {
    use paxos::{Config, KvCommand, Request, Session};
    type Node = PaxosKv;

    let members: Vec<NodeId> = vec![1, 2, 3];
    let cluster = members.clone();
    let mut sim: Sim<Node> = Sim::new(traced(seed, members.clone(), 3), move |id| {
        let mut c = Config::new(id, cluster.clone());
        c.seed = seed;
        // Everyone raises its ballot in the same round: a duel from the first tick.
        c.election_jitter_rounds_max = 0;
        c.into()
    })?;
    sim.set_message_label(label);
    let mut run = Observed::new(sim, paxos_state);
    let found = run.run_until_cond(2_000, |v| {
        v.nodes()
            .filter(|(_, n)| n.is_some_and(|r| r.is_leader()))
            .count()
            == 1
    })?;
    if !found {
        return Err(run.sim.fail_now("no leader".into()));
    }
    // Candidates that raised in the same round pre-empt each other for a few rounds; once one
    // leads alone for a while, the duel is over.
    run.run_for(60)?;
    let leader = members
        .iter()
        .copied()
        .find(|&id| run.sim.node(id).is_some_and(|r| r.is_leader()));
    let Some(leader) = leader else {
        return Err(run
            .sim
            .fail_now("the duel did not end with one leader".into()));
    };
    let now = run.sim.now();
    run.sim.submit(
        now + 5,
        leader,
        Request::Propose {
            command: KvCommand::Put {
                key: "x".into(),
                value: "1".into(),
            },
            session: Some(Session { client: 7, seq: 1 }),
        },
    );
    run.run_for(30)?;
    let end = run.sim.now();
    Ok(Run::of(run, options(0, end, None)))
}
