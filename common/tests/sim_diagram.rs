//! Sequence diagrams of a small fixed scenario of the demo protocol, checked against a committed
//! expected diagram. Set `UPDATE_EXPECT=1` to rewrite the expected file after an intended change.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;

use common::demo::{DemoConfig, DemoNode, DemoRequest};
use common::sim::diagram::{escape, render, DiagramOptions};
use common::sim::{Fault, FaultPlan, LinkConfig, Sim, SimConfig, TraceKind};

const MEMBERS: [u64; 3] = [1, 2, 3];

/// Node 1 adds 5 while node 3 is down (its copy is lost, then retransmitted after it restarts),
/// node 2 reads, and a one-way cut drops node 2's acknowledgements for a while.
fn scenario() -> Sim<DemoNode> {
    let mut config = SimConfig::new(42, MEMBERS.to_vec());
    config.link = LinkConfig::fixed(2);
    config.tick_skew = 0;
    config.record_trace = true;
    let mut sim: Sim<DemoNode> =
        Sim::new(config, |id| DemoConfig::new(id, MEMBERS.to_vec())).unwrap();
    sim.schedule(
        FaultPlan::new()
            .at(5, Fault::Crash(3))
            .at(
                9,
                Fault::OneWay {
                    from: vec![2],
                    to: vec![1],
                },
            )
            .at(45, Fault::Heal)
            .at(60, Fault::Restart(3)),
    );
    sim.submit(10, 1, DemoRequest::Add(5));
    sim.submit(20, 2, DemoRequest::Get);
    sim.run_until(120).unwrap();
    sim
}

fn expected_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Compares `actual` with the committed file, or rewrites it under `UPDATE_EXPECT=1`.
fn expect_file(name: &str, actual: &str) {
    let path = expected_path(name);
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_EXPECT=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "diagram differs from {} (UPDATE_EXPECT=1 rewrites it)",
        path.display()
    );
}

#[test]
fn demo_scenario_matches_the_committed_diagram() {
    let sim = scenario();
    let text = render(
        sim.trace(),
        &DiagramOptions {
            to: 80,
            ..DiagramOptions::default()
        },
    );
    expect_file("demo_scenario.mmd", &text);
    // Whatever the file says, the diagram shows the scenario's landmarks.
    assert!(text.starts_with("sequenceDiagram\n"));
    assert!(text.contains("CRASH"));
    assert!(text.contains("restart from 0 records"));
    assert!(text.contains("cut {2} -#gt; {1}"));
    assert!(text.contains("(node down)"));
    assert!(text.contains("(partitioned)"));
    assert!(text.contains("-->>c1:"), "the client's answer is drawn");
}

#[test]
fn window_and_node_filter_restrict_the_diagram() {
    let sim = scenario();
    let all = render(sim.trace(), &DiagramOptions::default());
    let only_12 = render(
        sim.trace(),
        &DiagramOptions {
            nodes: Some(vec![1, 2]),
            clients: false,
            ..DiagramOptions::default()
        },
    );
    assert!(!only_12.contains("n3"), "{only_12}");
    assert!(!only_12.contains("participant c"));
    assert!(only_12.lines().count() < all.lines().count());

    let late = render(
        sim.trace(),
        &DiagramOptions {
            from: 60,
            to: 70,
            ..DiagramOptions::default()
        },
    );
    let mut shown = 0;
    for line in late.lines().filter(|l| l.contains(": [")) {
        // "[t]" or "[sent..t]": the event's own time is the last number in the brackets.
        let inside = line.split(": [").nth(1).unwrap().split(']').next().unwrap();
        let t: u64 = inside.rsplit("..").next().unwrap().parse().unwrap();
        assert!((60..=70).contains(&t), "{line}");
        shown += 1;
    }
    assert!(shown >= 3, "{late}");
    let short = render(
        sim.trace(),
        &DiagramOptions {
            lines_max: 3,
            ..DiagramOptions::default()
        },
    );
    assert!(short.contains("more events left out"));
    assert_eq!(
        short
            .lines()
            .filter(|l| l.contains("->>") || l.contains("Note"))
            .count(),
        4
    );
}

#[test]
fn labels_are_escaped_and_user_labels_apply() {
    assert_eq!(escape("a;b#c<d>\ne"), "a#59;b#35;c#lt;d#gt; e");
    let mut config = SimConfig::new(1, MEMBERS.to_vec());
    config.record_trace = true;
    let mut sim: Sim<DemoNode> =
        Sim::new(config, |id| DemoConfig::new(id, MEMBERS.to_vec())).unwrap();
    sim.set_message_label(|m| match m {
        common::demo::DemoMessage::Update { seq, .. } => format!("U{seq}"),
        common::demo::DemoMessage::Ack { seq, .. } => format!("A{seq}"),
    });
    sim.submit(1, 1, DemoRequest::Add(1));
    sim.run_until(50).unwrap();
    assert!(sim
        .trace()
        .iter()
        .any(|e| matches!(&e.kind, TraceKind::Deliver { label, .. } if label == "U0")));
    let text = render(sim.trace(), &DiagramOptions::default());
    assert!(text.contains("] U0") && text.contains("] A0"));
}

#[test]
fn a_failing_invariant_ends_the_diagram() {
    let mut config = SimConfig::new(3, MEMBERS.to_vec());
    config.record_trace = true;
    let mut sim: Sim<DemoNode> =
        Sim::new(config, |id| DemoConfig::new(id, MEMBERS.to_vec())).unwrap();
    sim.add_invariant("total stays below 3", |view| {
        for (id, node) in view.nodes() {
            if node.is_some_and(|n| common::Node::metrics(n).total >= 3) {
                return Err(format!("node {id} reached 3"));
            }
        }
        Ok(())
    });
    sim.submit(10, 2, DemoRequest::Add(3));
    let err = sim.run_until(100).unwrap_err();
    let text = sim.diagram(&DiagramOptions {
        from: err.time.saturating_sub(20),
        ..DiagramOptions::default()
    });
    let last = text.lines().last().unwrap();
    assert!(
        last.contains("INVARIANT total stays below 3 FAILED: node 2 reached 3"),
        "{text}"
    );
}
