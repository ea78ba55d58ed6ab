//! Aligned heartbeats (`Config::heartbeat_aligned`): leaders ticked together send their
//! heartbeats on the same ticks whenever they were elected, so a process hosting many groups
//! sends each peer one message per heartbeat round. Without it, each leader's heartbeats
//! follow its own election.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod harness;

use std::collections::BTreeSet;

use harness::*;
use raft::{Message, Role};

/// Two leaders of different groups on one host, both ticked on every tick of the host from
/// the start; their election timeouts are drawn from seeds 1 and `seed`. Returns, per leader,
/// the host tick it was elected on and the host ticks (after both lead) on which it sent
/// heartbeats.
fn heartbeat_ticks(aligned: bool, seed: u64) -> [(u64, BTreeSet<u64>); 2] {
    let mut nodes = [1u64, seed].map(|seed| {
        let mut c = config(1, 3);
        c.seed = seed;
        c.heartbeat_aligned = aligned;
        node_with(c, vec![])
    });
    let mut elected = [None, None];
    let mut sent = [BTreeSet::new(), BTreeSet::new()];
    for host_tick in 1..=200u64 {
        for (i, n) in nodes.iter_mut().enumerate() {
            let fx = tick(n);
            if n.role() == Role::Candidate {
                let term = n.term();
                for v in [2, 3] {
                    let granted = Message::RequestVoteResponse {
                        term,
                        granted: true,
                    };
                    recv(n, v, granted);
                }
                assert_eq!(n.role(), Role::Leader);
                elected[i] = Some(host_tick);
                // The followers take the leader's no-op, so what follows is heartbeats only.
                recv(n, 2, ack(term, 1));
                recv(n, 3, ack(term, 1));
                continue;
            }
            let heartbeat = fx.messages.iter().any(
                |(_, m)| matches!(m, Message::AppendEntries { entries, .. } if entries.is_empty()),
            );
            if heartbeat && elected.iter().all(Option::is_some) {
                sent[i].insert(host_tick);
            }
        }
    }
    let [a, b] = sent;
    [(elected[0].unwrap(), a), (elected[1].unwrap(), b)]
}

/// A seed whose election falls an odd number of ticks after seed 1's (the default interval is
/// two ticks), so that unaligned leaders fall in different phases.
fn seed_for_different_phases() -> u64 {
    let interval = config(1, 3).heartbeat_interval_ticks;
    (2..100)
        .find(|&seed| {
            let [(ea, _), (eb, _)] = heartbeat_ticks(false, seed);
            ea % interval != eb % interval
        })
        .expect("some seed separates the phases")
}

#[test]
fn aligned_leaders_heartbeat_on_the_same_ticks() {
    let interval = config(1, 3).heartbeat_interval_ticks;
    let seed = seed_for_different_phases();
    let [(ea, a), (eb, b)] = heartbeat_ticks(true, seed);
    assert_ne!(ea % interval, eb % interval);
    assert!(a.len() > 10, "{a:?}");
    assert_eq!(a, b);
    assert!(a.iter().all(|t| t % interval == 0), "{a:?}");
}

#[test]
fn without_alignment_each_leader_keeps_its_own_phase() {
    let interval = config(1, 3).heartbeat_interval_ticks;
    let seed = seed_for_different_phases();
    let [(ea, a), (eb, b)] = heartbeat_ticks(false, seed);
    assert!(a.len() > 10 && b.len() > 10, "{a:?} {b:?}");
    assert!(
        a.iter().all(|t| t % interval == ea % interval),
        "{ea}: {a:?}"
    );
    assert!(
        b.iter().all(|t| t % interval == eb % interval),
        "{eb}: {b:?}"
    );
    assert!(a.is_disjoint(&b));
}
