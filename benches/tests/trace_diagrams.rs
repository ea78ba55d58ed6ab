//! The diagrams committed under `docs/diagrams/` are exactly what the `trace` binary prints.
//!
//! The test calls the binary's own functions (its source is included as a module), so a change
//! in a protocol's messages, timing or the renderer shows up here as a stale diagram.
//! Regenerate them with `UPDATE_DIAGRAMS=1 cargo test -p benches --test trace_diagrams`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "../src/bin/trace.rs"]
mod trace;

use std::path::PathBuf;

fn diagrams_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/diagrams")
}

#[test]
fn committed_diagrams_match_the_trace_binary() {
    let update = std::env::var("UPDATE_DIAGRAMS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    let mut pages = vec![("README".to_string(), trace::index())];
    for scenario in trace::SCENARIOS {
        let page = trace::markdown(scenario, trace::DEFAULT_SEED)
            .unwrap_or_else(|e| panic!("scenario {} failed: {e}", scenario.name));
        pages.push((scenario.name.to_string(), page));
    }
    for (name, page) in pages {
        let path = diagrams_dir().join(format!("{name}.md"));
        if update {
            std::fs::create_dir_all(diagrams_dir()).unwrap();
            std::fs::write(&path, &page).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == page => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "stale diagrams (regenerate with UPDATE_DIAGRAMS=1): {stale:?}"
    );
}

#[test]
fn every_scenario_is_deterministic_and_readable() {
    for scenario in trace::SCENARIOS {
        let a = trace::diagram(scenario, 7).unwrap();
        let b = trace::diagram(scenario, 7).unwrap();
        assert_eq!(a, b, "{}: the same seed gave two diagrams", scenario.name);
        assert!(a.starts_with("sequenceDiagram\n"), "{}", scenario.name);
        let lines = a.lines().count();
        assert!(
            (10..=trace::DIAGRAM_LINES_MAX).contains(&lines),
            "{}: {lines} lines",
            scenario.name
        );
    }
}

/// The scenarios show what their pages claim: spot checks on the committed seed.
#[test]
fn scenarios_show_their_point() {
    let get =
        |name: &str| trace::diagram(trace::scenario(name).unwrap(), trace::DEFAULT_SEED).unwrap();
    let raft = get("raft-election");
    assert!(raft.contains("CRASH") && raft.matches("RequestVote {").count() >= 2);
    assert!(
        get("paxos-duel").matches("Prepare {").count() >= 4,
        "two proposers prepare"
    );
    let twopc = get("2pc-coordinator-crash");
    assert!(twopc.contains("StatusQuery") && twopc.contains("restart from"));
    let threepc = get("3pc-coordinator-crash");
    assert!(threepc.contains("TerminationStart") && threepc.contains("Abort {"));
    let split = get("3pc-partition");
    assert!(split.contains("partition") && split.contains("Commit {") && split.contains("Abort {"));
}
