//! Named scenarios: duelling proposers converge; the three partial-connectivity scenarios of
//! the Omni-Paxos paper (Ng et al., EuroSys 2023, section 2: quorum-loss, constrained election,
//! chained) keep making progress; a crashed leader is replaced and, restarted, catches up; a
//! replica cut off for a long time catches up; a replica whose snapshot file was corrupted on
//! disk refuses to restart, with a typed error.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use common::sim::{Fault, Outcome, Sim, SimError};
use common::{Node, NodeId};
use paxos::{Ballot, KvCommand, Request, Response, Session};
use support::*;

/// The replicas that lead (phase 2 running).
fn leaders(sim: &Sim<Kv>, n: u64) -> Vec<NodeId> {
    (1..=n)
        .filter(|&id| sim.node(id).is_some_and(|r| r.is_leader()))
        .collect()
}

/// Runs until exactly one replica leads, up to `deadline`; returns it.
fn await_leader(sim: &mut Sim<Kv>, n: u64, deadline: u64) -> Result<NodeId, SimError> {
    let found = sim.run_until_cond(deadline, move |view| {
        (1..=n)
            .filter(|&id| view.node(id).is_some_and(|r| r.is_leader()))
            .count()
            == 1
    })?;
    if !found {
        return Err(sim.fail_now(format!("no single leader by {deadline}")));
    }
    Ok(leaders(sim, n)[0])
}

/// Commits one append (client 7, sequence `seq`) by trying replicas in turn (a leader first),
/// retrying with the same session; returns once a replica answered `Applied`, failing the run
/// after `deadline`.
fn commit(sim: &mut Sim<Kv>, n: u64, seq: u64, deadline: u64) -> Result<NodeId, SimError> {
    let request = Request::Propose {
        command: KvCommand::Append {
            key: "k".into(),
            value: format!("t{seq};"),
        },
        session: Some(Session { client: 7, seq }),
    };
    let mut attempt = 0usize;
    while sim.now() < deadline {
        // Leaders first (a stale one may still claim leadership), then everyone in turn.
        let mut order = leaders(sim, n);
        order.extend(1..=n);
        let target = order[attempt % order.len()];
        attempt += 1;
        let id = sim.submit_as(sim.now(), 7, target, request.clone());
        let until = sim.now() + 100;
        sim.run_until_cond(until, move |view| {
            view.history()
                .iter()
                .rev()
                .find(|op| op.id == id)
                .is_some_and(|op| !matches!(op.outcome, Outcome::Pending))
        })?;
        let op = sim.history().iter().rev().find(|op| op.id == id).unwrap();
        if matches!(op.outcome, Outcome::Response(Response::Applied { .. })) {
            return Ok(target);
        }
    }
    let state: Vec<_> = (1..=n)
        .map(|id| sim.node(id).map(|r| r.metrics()))
        .collect();
    Err(sim.fail_now(format!(
        "append {seq} not committed by {deadline}; replicas: {state:?}"
    )))
}

fn commit_within(sim: &mut Sim<Kv>, n: u64, seq: u64, within: u64) -> Result<NodeId, SimError> {
    let deadline = sim.now() + within;
    commit(sim, n, seq, deadline)
}

fn new_sim(seed: u64, n: u64, jitter: u64) -> Result<Sim<Kv>, SimError> {
    let mut sim = sim(seed, n, move |c| c.election_jitter_rounds_max = jitter)?;
    add_agreement(&mut sim);
    add_integrity(&mut sim);
    Ok(sim)
}

#[test]
fn duelling_proposers_converge() {
    // No election jitter: when the leader dies, every survivor raises its ballot in the same
    // round. Ballots tie on the round and the node id decides, so they converge on one leader
    // at once instead of pre-empting each other.
    for seed in 0..50 {
        let n = 5;
        let mut sim = new_sim(seed, n, 0).unwrap();
        let first = await_leader(&mut sim, n, 500).unwrap();
        sim.apply(Fault::Crash(first)).unwrap();
        let t = sim.now();
        await_leader(&mut sim, n, t + 300).unwrap();
        // Candidates that raised in the same round settle within a few rounds...
        sim.run_for(150).unwrap();
        let second = {
            let t = sim.now();
            await_leader(&mut sim, n, t + 100)
        }
        .unwrap();
        assert_ne!(first, second);
        // ...and once converged, leadership is stable: the ballot never changes again.
        let ballot = sim.node(second).unwrap().metrics().ballot;
        for seq in 1..=10 {
            commit_within(&mut sim, n, seq, 200).unwrap();
        }
        sim.run_for(1_000).unwrap();
        for id in (1..=n).filter(|&id| id != first) {
            let m = sim.node(id).unwrap().metrics();
            assert_eq!(
                m.ballot, ballot,
                "seed {seed}: node {id} moved on from {ballot}"
            );
        }
        assert_eq!(leaders(&sim, n), vec![second], "seed {seed}");
    }
}

#[test]
fn simultaneous_candidates_pick_one_leader() {
    // Everyone starts at the same time with the same round: a duel from the first tick.
    for seed in 0..50 {
        let n = 5;
        let mut sim = new_sim(seed, n, 0).unwrap();
        await_leader(&mut sim, n, 300).unwrap();
        sim.run_for(150).unwrap();
        let leader = {
            let t = sim.now();
            await_leader(&mut sim, n, t + 100)
        }
        .unwrap();
        let ballot = sim.node(leader).unwrap().metrics().ballot;
        sim.run_for(2_000).unwrap();
        assert_eq!(leaders(&sim, n), vec![leader], "seed {seed}");
        assert_eq!(sim.node(leader).unwrap().metrics().ballot, ballot);
    }
}

#[test]
fn quorum_loss_scenario_makes_progress() {
    // The leader keeps a link to one replica only (C); every other replica is connected to C
    // only. C is the single quorum-connected replica: it must take over, and does.
    for seed in 0..30 {
        let n = 5;
        let mut sim = new_sim(seed, n, 2).unwrap();
        let a = await_leader(&mut sim, n, 500).unwrap();
        commit_within(&mut sim, n, 1, 300).unwrap();
        let c = 1 + a % n;
        for id in (1..=n).filter(|&id| id != c) {
            sim.apply(Fault::ConnectOnly {
                node: id,
                reach: vec![c],
            })
            .unwrap();
        }
        let t = sim.now();
        for seq in 2..=6 {
            let by = commit(&mut sim, n, seq, t + 1_500).unwrap();
            assert_eq!(by, c, "seed {seed}: only C can lead a quorum");
        }
    }
}

#[test]
fn constrained_election_scenario_makes_progress() {
    // C falls behind (cut off while others commit). Then the leader is isolated and the others
    // are connected only to C: the only quorum-connected replica is the one with the outdated
    // log. Raft could not elect it; Paxos can (phase 1 brings it the accepted values).
    for seed in 0..30 {
        let n = 5;
        let mut sim = new_sim(seed, n, 2).unwrap();
        let a = await_leader(&mut sim, n, 500).unwrap();
        let c = 1 + a % n;
        sim.apply(Fault::Isolate(c)).unwrap();
        for seq in 1..=5 {
            commit_within(&mut sim, n, seq, 500).unwrap();
        }
        let behind = sim.node(c).unwrap().decided();
        let ahead = sim.node(a).unwrap().decided();
        assert!(behind < ahead, "seed {seed}: C must be behind");
        sim.apply(Fault::Heal).unwrap();
        sim.apply(Fault::Isolate(a)).unwrap();
        for id in (1..=n).filter(|&id| id != c && id != a) {
            sim.apply(Fault::ConnectOnly {
                node: id,
                reach: vec![c],
            })
            .unwrap();
        }
        let t = sim.now();
        for seq in 6..=10 {
            let by = commit(&mut sim, n, seq, t + 1_500).unwrap();
            assert_eq!(by, c);
        }
        // Nothing chosen before was lost: every earlier append is in C's state.
        let value = sim
            .node(c)
            .unwrap()
            .state()
            .get("k")
            .map(str::to_owned)
            .unwrap();
        for seq in 1..=10 {
            assert!(value.contains(&format!("t{seq};")), "seed {seed}: {value}");
        }
    }
}

#[test]
fn chained_scenario_makes_progress_without_churn() {
    // Three replicas in a chain A - B - C (A and C cannot talk). C hears the leader A only
    // through B; it must not keep deposing A (Raft livelocks here), and commits go on.
    for seed in 0..30 {
        let n = 3;
        let mut sim = new_sim(seed, n, 2).unwrap();
        let a = await_leader(&mut sim, n, 500).unwrap();
        let b = 1 + a % n;
        let c = 1 + b % n;
        sim.apply(Fault::Partition {
            a: vec![a],
            b: vec![c],
        })
        .unwrap();
        let t = sim.now();
        for seq in 1..=10 {
            commit(&mut sim, n, seq, t + 2_000).unwrap();
        }
        // Leadership settled: over a long quiet period the ballot B follows does not change.
        sim.run_for(200).unwrap();
        let settled: Ballot = sim.node(b).unwrap().metrics().ballot;
        sim.run_for(2_000).unwrap();
        assert_eq!(
            sim.node(b).unwrap().metrics().ballot,
            settled,
            "seed {seed}"
        );
        commit_within(&mut sim, n, 11, 500).unwrap();
    }
}

#[test]
fn leader_crash_and_recovery() {
    for seed in 0..30 {
        let n = 3;
        let mut sim = new_sim(seed, n, 2).unwrap();
        let a = await_leader(&mut sim, n, 500).unwrap();
        for seq in 1..=5 {
            commit_within(&mut sim, n, seq, 300).unwrap();
        }
        sim.apply(Fault::Crash(a)).unwrap();
        let t = sim.now();
        let b = await_leader(&mut sim, n, t + 400).unwrap();
        assert_ne!(a, b);
        for seq in 6..=10 {
            commit_within(&mut sim, n, seq, 500).unwrap();
        }
        // The old leader restarts from its records and catches up on what it missed.
        sim.apply(Fault::Restart(a)).unwrap();
        let target = sim.node(b).unwrap().decided();
        let t = sim.now();
        let caught_up = sim
            .run_until_cond(t + 500, move |v| {
                v.node(a).is_some_and(|r| r.decided() >= target)
            })
            .unwrap();
        assert!(caught_up, "seed {seed}: restarted leader did not catch up");
        let value = sim
            .node(a)
            .unwrap()
            .state()
            .get("k")
            .map(str::to_owned)
            .unwrap();
        assert_eq!(value.matches(';').count(), 10, "seed {seed}: {value}");
    }
}

#[test]
fn lagging_replica_catches_up() {
    let n = 3;
    let mut sim = new_sim(1, n, 2).unwrap();
    let a = await_leader(&mut sim, n, 500).unwrap();
    let lagging = 1 + a % n;
    sim.apply(Fault::Isolate(lagging)).unwrap();
    for seq in 1..=40 {
        commit_within(&mut sim, n, seq, 300).unwrap();
    }
    assert!(sim.node(lagging).unwrap().decided() < sim.node(a).unwrap().decided());
    sim.apply(Fault::Heal).unwrap();
    let target = sim.node(a).unwrap().decided();
    let t = sim.now();
    assert!(sim
        .run_until_cond(t + 500, move |v| v
            .node(lagging)
            .is_some_and(|r| r.decided() >= target && r.metrics().applied >= target))
        .unwrap());
    assert_eq!(
        sim.node(lagging).unwrap().state(),
        sim.node(a).unwrap().state()
    );
    // Seed 1 compacts every 4 slots: the leader no longer had the early slots, so the lagging
    // replica was brought up to date by a snapshot.
    assert!(sim.node(lagging).unwrap().metrics().snapshots_installed >= 1);
    assert!(sim.node(a).unwrap().metrics().log_start > 0);
}

#[test]
fn restart_from_a_checkpoint_keeps_the_state() {
    let n = 3;
    let mut sim = new_sim(3, n, 2).unwrap();
    await_leader(&mut sim, n, 500).unwrap();
    for seq in 1..=20 {
        commit_within(&mut sim, n, seq, 300).unwrap();
    }
    for id in 1..=n {
        sim.apply(Fault::Crash(id)).unwrap();
    }
    for id in 1..=n {
        sim.apply(Fault::Restart(id)).unwrap();
        let r = sim.node(id).unwrap();
        // The records start with a checkpoint (storage dropped what it covers)...
        assert!(matches!(
            sim.records(id).first(),
            Some(paxos::Record::Snapshot { .. })
        ));
        assert!(r.metrics().log_start > 0);
    }
    // ...and the cluster goes on with every earlier append in place.
    commit_within(&mut sim, n, 21, 1_000).unwrap();
    let leader = leaders(&sim, n)[0];
    let value = sim
        .node(leader)
        .unwrap()
        .state()
        .get("k")
        .map(str::to_owned)
        .unwrap();
    assert_eq!(value.matches(';').count(), 21, "{value}");
}

#[test]
fn restart_over_a_corrupted_snapshot_file_fails_with_a_typed_error() {
    let n = 3;
    let mut sim = new_sim(3, n, 2).unwrap();
    await_leader(&mut sim, n, 500).unwrap();
    for seq in 1..=12 {
        commit_within(&mut sim, n, seq, 300).unwrap();
    }
    let id = 1;
    sim.apply(Fault::Crash(id)).unwrap();
    // The snapshot file the node's checkpoint names, in the store that outlived the crash.
    let Some(paxos::Record::Snapshot { slot, file, .. }) = sim.records(id).first().cloned() else {
        panic!("no checkpoint: {:?}", sim.records(id).first());
    };
    let store = sim.snapshot_store(id).unwrap().clone();
    assert!(common::SnapshotStore::list(&store)
        .unwrap()
        .contains(&file.id));
    // A disk fault flips one byte in the middle of it: the node refuses to restart from it.
    assert!(store.corrupt(file.id, file.bytes / 2, 0x08));
    let e = sim.apply(Fault::Restart(id)).unwrap_err();
    let expected = paxos::PaxosError::SnapshotCorrupt {
        slot,
        reason: String::new(),
    };
    match e.kind {
        common::sim::SimErrorKind::Recover { node, message } => {
            assert_eq!(node, id);
            let what = expected.to_string();
            assert!(message.starts_with(&what), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
