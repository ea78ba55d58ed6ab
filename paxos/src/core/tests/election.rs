//! What the election reports when it cannot reach a quorum.

use super::*;

#[test]
fn quorum_not_reached_reads_as_a_sentence() {
    let event = Event::QuorumNotReached {
        rounds: 8,
        rtt_ticks_max: Some(37),
        round_ticks: 16,
    };
    assert_eq!(
        event.to_string(),
        "quorum not reached in 8 rounds; longest round trip seen 37 ticks (rounds of 16 ticks)"
    );
    let event = Event::QuorumNotReached {
        rounds: 1,
        rtt_ticks_max: None,
        round_ticks: 2,
    };
    assert_eq!(
        event.to_string(),
        "quorum not reached in 1 round; no heartbeat reply seen (rounds of 2 ticks)"
    );
}

#[test]
fn an_isolated_member_reports_it_then_doubles_the_interval() {
    // Replica 1 of three hears nobody for 40 rounds (round 0 sends no heartbeat and does not
    // count): an event after rounds 1, 2, 4, 8, 16 and 32, and the metrics say so.
    let mut replica: PaxosNode<KvStore> =
        PaxosNode::recover(Config::new(1, vec![1, 2, 3]).into(), vec![]).unwrap();
    let mut out = Outbox::new();
    let mut reported = Vec::new();
    for _ in 0..41 * crate::config::HEARTBEAT_TICKS_DEFAULT {
        replica.tick(&mut out);
        for event in out.take().events {
            if let Event::QuorumNotReached { rounds, .. } = event {
                reported.push(rounds);
            }
        }
    }
    assert_eq!(reported, vec![1, 2, 4, 8, 16, 32]);
    let m = replica.metrics();
    assert_eq!(m.rounds_without_quorum, 40);
    assert_eq!(m.round_ticks, crate::config::HEARTBEAT_TICKS_DEFAULT);
}
