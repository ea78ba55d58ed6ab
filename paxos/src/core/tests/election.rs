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
    assert!(!m.quorum_connected);
    assert_eq!(m.round_ticks, crate::config::HEARTBEAT_TICKS_DEFAULT);
}

#[test]
fn rounds_without_a_quorum_are_a_warning_only_past_the_grace() {
    // The same isolated replica as above: every report is logged, at debug level while a leader
    // would still ride it out, as a warning after that.
    let captured = common::testing::LogCapture::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut replica: PaxosNode<KvStore> =
            PaxosNode::recover(Config::new(1, vec![1, 2, 3]).into(), vec![]).unwrap();
        let mut out = Outbox::new();
        for _ in 0..9 * crate::config::HEARTBEAT_TICKS_DEFAULT {
            replica.tick(&mut out);
            out.take();
        }
    });
    let text = captured.text();
    let level_of = |rounds: &str| {
        text.lines()
            .find(|l| l.contains(&format!("quorum not reached in {rounds};")))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
    };
    assert_eq!(
        crate::LEADER_QUORUM_GRACE_ROUNDS,
        2,
        "the cases below assume it"
    );
    assert_eq!(level_of("1 round").as_deref(), Some("DEBUG"), "{text}");
    assert_eq!(level_of("2 rounds").as_deref(), Some("DEBUG"), "{text}");
    assert_eq!(level_of("4 rounds").as_deref(), Some("WARN"), "{text}");
    assert_eq!(level_of("8 rounds").as_deref(), Some("WARN"), "{text}");
}

#[test]
fn a_leader_outlives_a_few_rounds_without_a_quorum_then_steps_down() {
    // Replica 1 leads {1, 2, 3}, then hears no heartbeat reply at all. Round 0 sent no
    // heartbeats and does not count; it keeps leading through LEADER_QUORUM_GRACE_ROUNDS
    // rounds without a majority (late replies on a busy machine), and steps down at the next.
    let (mut a, _) = leader();
    assert!(a.metrics().quorum_connected);
    let mut out = Outbox::new();
    let round_ticks = crate::config::HEARTBEAT_TICKS_DEFAULT;
    for round in 0..=crate::LEADER_QUORUM_GRACE_ROUNDS {
        for _ in 0..round_ticks {
            a.tick(&mut out);
        }
        assert!(a.is_leader(), "still leading after round {round}");
    }
    for _ in 0..round_ticks {
        a.tick(&mut out);
    }
    assert_eq!(
        a.metrics().rounds_without_quorum,
        crate::LEADER_QUORUM_GRACE_ROUNDS + 1
    );
    assert!(!a.metrics().quorum_connected);
    assert!(!a.is_leader(), "a leader that hears no majority steps down");
}
