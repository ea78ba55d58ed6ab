//! The diagrams committed under `docs/diagrams/`, and the viewer's traces under
//! `docs/viewer/traces/` and `docs/viewer/traces.js`, are exactly what the `trace` binary prints.
//!
//! The test calls the binary's own functions (its source is included as a module), so a change
//! in a protocol's messages, timing, the renderer or the JSON export shows up here as a stale
//! file. Regenerate them with `UPDATE_DIAGRAMS=1 cargo test -p benches --test trace_diagrams`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "../src/bin/trace/main.rs"]
mod trace;

use std::path::PathBuf;

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// Compares each `(path, content)` with the file on disk, or rewrites the files when
/// `UPDATE_DIAGRAMS=1`; fails naming every stale file.
fn check_committed(files: Vec<(PathBuf, String)>) {
    let update = std::env::var("UPDATE_DIAGRAMS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (path, content) in files {
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == content => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "stale files (regenerate with UPDATE_DIAGRAMS=1): {stale:?}"
    );
}

#[test]
fn committed_diagrams_match_the_trace_binary() {
    let dir = docs_dir().join("diagrams");
    let mut pages = vec![(dir.join("README.md"), trace::index())];
    for scenario in trace::SCENARIOS {
        let page = trace::markdown(scenario, trace::DEFAULT_SEED)
            .unwrap_or_else(|e| panic!("scenario {} failed: {e}", scenario.name));
        pages.push((dir.join(format!("{}.md", scenario.name)), page));
    }
    check_committed(pages);
}

#[test]
fn committed_viewer_traces_match_the_trace_binary() {
    let dir = docs_dir().join("viewer");
    let mut files = Vec::new();
    for scenario in trace::SCENARIOS {
        let json = trace::json(scenario, trace::DEFAULT_SEED)
            .unwrap_or_else(|e| panic!("scenario {} failed: {e}", scenario.name));
        files.push((dir.join(format!("traces/{}.json", scenario.name)), json));
    }
    files.push((
        dir.join("traces.js"),
        trace::traces_js(trace::DEFAULT_SEED).unwrap(),
    ));
    check_committed(files);
}

/// The exports say what the runs did: every message has a fate, the roles come from the cores,
/// and the faults of each scenario are in its file.
#[test]
fn exports_hold_the_runs() {
    use benches::viewer::Fate;
    let get =
        |name: &str| trace::export(trace::scenario(name).unwrap(), trace::DEFAULT_SEED).unwrap();
    for scenario in trace::SCENARIOS {
        let file = get(scenario.name);
        assert!(!file.messages.is_empty(), "{}", scenario.name);
        for m in &file.messages {
            assert!(m.sent <= file.end && m.arrives.is_none_or(|a| a >= m.sent));
            assert!(file.nodes.contains(&m.from), "{}: {m:?}", scenario.name);
        }
        // Every node has a state at time 0, and states come in time order.
        for n in &file.nodes {
            assert!(file.states.iter().any(|s| s.time == 0 && s.node == *n));
        }
        assert!(file.states.windows(2).all(|w| w[0].time <= w[1].time));
        assert_eq!(file.cuts.first().map(|c| c.time), Some(0));
    }
    let raft = get("raft-election");
    let last_role = |file: &benches::viewer::TraceFile, node| {
        file.states
            .iter()
            .rev()
            .find(|s| s.node == node)
            .map(|s| s.state.role.clone())
            .unwrap()
    };
    assert!(raft.happenings.iter().any(|h| h.kind == "crash"));
    let down: Vec<_> = raft
        .nodes
        .iter()
        .filter(|&&n| last_role(&raft, n) == "down")
        .collect();
    let leaders: Vec<_> = raft
        .nodes
        .iter()
        .filter(|&&n| last_role(&raft, n) == "leader")
        .collect();
    assert_eq!(
        (down.len(), leaders.len()),
        (1, 1),
        "one crashed, one new leader"
    );
    assert!(raft.messages.iter().any(|m| m.fate == Fate::NodeDown));
    let terms = raft.states.iter().filter_map(|s| s.state.term).max();
    assert_eq!(terms, Some(2), "the second leader won term 2");
    let split = get("3pc-partition");
    assert!(split.cuts.iter().any(|c| c.cut.contains(&[1, 3])));
    assert!(split.messages.iter().any(|m| m.fate == Fate::Partitioned));
    assert_eq!(last_role(&split, 2), "committed");
    assert_eq!(last_role(&split, 3), "aborted");
    let twopc = get("2pc-coordinator-crash");
    assert!(twopc.states.iter().any(|s| s.state.role == "blocked"));
    assert!(twopc.happenings.iter().any(|h| h.kind == "restart"));
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
