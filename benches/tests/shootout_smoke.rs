//! The shootout's logic in a tiny configuration: every registered protocol completes on every
//! transport and every column of its row is filled. No timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use benches::faults::FAULT_WINDOW;
use benches::report::json::render_json;
use benches::report::svg::render_svg;
use benches::report::table::{cells, render_faults, render_markdown, render_table, COLUMNS};
use benches::report::Charts;
use benches::{findings, FaultRow, Machine, Plan, Report, Row, TransportKind, Workload};
use indicatif::ProgressBar;

const OPS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_completes_on_every_transport_with_every_column_filled() {
    let plan = Plan {
        protocols: Vec::new(),
        transports: vec![TransportKind::Memory, TransportKind::Tcp],
        cluster_sizes: vec![3],
        concurrency: vec![4],
        workload: Workload {
            concurrency: 1,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            ops_max: Some(OPS),
        },
        durable: false,
        seed: 3,
        fault_duration: Duration::ZERO,
    };
    let progress = ProgressBar::hidden();
    let rows = plan.run(&progress).await.unwrap();
    assert_eq!(rows.len(), plan.measurements().unwrap());
    let names: Vec<&str> = plan
        .contenders()
        .unwrap()
        .iter()
        .map(|c| c.name())
        .collect();
    for wanted in ["raft", "multi-paxos", "2pc", "3pc"] {
        assert!(
            names.contains(&wanted),
            "{wanted} is not registered: {names:?}"
        );
    }
    for contender in plan.contenders().unwrap() {
        for transport in &plan.transports {
            assert!(
                rows.iter()
                    .any(|r| r.protocol == contender.name() && r.transport == *transport),
                "{} over {transport:?} missing",
                contender.name()
            );
        }
    }
    for row in &rows {
        check_row(row);
    }
    assert_eq!(progress.position(), rows.iter().map(|r| r.ops).sum::<u64>());
    check_renderings(&rows);
}

/// Every column of a steady-state row is filled and consistent.
fn check_row(row: &Row) {
    // Every attempt is answered. Over TCP a leadership change while connections come up
    // can legitimately refuse a few attempts ("not the leader"); the loop counts them as
    // errors, so allow a small share, never a majority.
    assert_eq!(row.ops + row.errors, OPS, "{row:?}");
    assert!(row.errors * 10 <= OPS, "too many errors: {row:?}");
    assert_eq!(row.nodes, 3);
    assert_eq!(row.concurrency, 4);
    assert!(row.ops_per_sec > 0.0, "{row:?}");
    assert!(row.p50_us > 0.0 && row.p50_us <= row.p99_us && row.p99_us <= row.max_us);
    assert!(
        row.p99_us <= row.p999_us && row.p999_us <= row.max_us,
        "{row:?}"
    );
    assert!(row.msgs_per_op > 0.0, "{row:?}");
    assert!(row.bytes_per_op > row.msgs_per_op, "{row:?}");
    assert!(row.records_per_op > 0.0, "{row:?}");
    assert!(row.syncs_per_op > 0.0, "{row:?}");
    assert!(row.theory.message_delays >= 2, "{row:?}");
    assert!(row.theory.messages_per_op > 0.0, "{row:?}");
    assert!(cells(row).iter().all(|c| !c.is_empty()));
}

/// Every rendering of the rows: text, Markdown, JSON, the whole report, the SVG chart, the
/// charts and the report page.
fn check_renderings(rows: &[Row]) {
    let table = render_table(rows);
    assert_eq!(table.lines().count(), rows.len() + 1);
    assert!(COLUMNS
        .iter()
        .all(|c| table.lines().next().unwrap().contains(c)));
    let markdown = render_markdown(rows);
    assert_eq!(markdown.lines().count(), rows.len() + 2);
    let json: serde_json::Value = serde_json::from_str(&render_json(rows).unwrap()).unwrap();
    let objects = json.as_array().unwrap();
    assert_eq!(objects.len(), rows.len());
    for (object, row) in objects.iter().zip(rows) {
        assert_eq!(object["protocol"], row.protocol.as_str());
        assert_eq!(object["ops"], row.ops);
        assert!(object["transport"] == "memory" || object["transport"] == "tcp");
    }
    let report = Report {
        machine: Machine::describe(),
        setup: "tiny".into(),
        findings: findings(rows),
        rows: rows.to_vec(),
        faults: Vec::new(),
        hashring: benches::hashring::rows(&[10], 1000),
    };
    let markdown = report.markdown();
    assert!(markdown.contains("| 3pc |") && markdown.contains("Consistent hashing"));
    let json: serde_json::Value = serde_json::from_str(&report.json().unwrap()).unwrap();
    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(json["rows"].as_array().unwrap().len(), rows.len());
    let svg = render_svg(rows).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("raft 3n 4c"));
    // The charts and the report page, from real rows.
    let charts = Charts::of(&report, false).unwrap();
    let names: Vec<&str> = charts.named().iter().map(|(n, _, _)| *n).collect();
    assert_eq!(names, ["throughput", "latency"], "no sweep, no crash run");
    let page = benches::report::html(&report, &charts, "shootout --quick");
    assert_eq!(page.matches("<figure").count(), 2);
    assert!(page.contains("multi-paxos") && page.contains("p99.9 µs"));
}

/// The crash scenario: the leader of Raft and Multi-Paxos, the coordinator of 2PC and 3PC,
/// crashes; the replicated logs elect a new leader and serve again; no new transaction starts
/// without the coordinator, but 3PC's participants decide the ones it left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_scenario_measures_the_outage() {
    let plan = Plan {
        protocols: vec![
            "raft".into(),
            "multi-paxos".into(),
            "2pc".into(),
            "3pc".into(),
        ],
        transports: vec![TransportKind::Memory],
        cluster_sizes: vec![3],
        concurrency: vec![4],
        workload: Workload {
            concurrency: 1,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            ops_max: Some(10),
        },
        durable: false,
        seed: 5,
        // A third in, the leader crashes; the rest leaves ample time for an election.
        fault_duration: Duration::from_secs(3),
    };
    let all = plan.run_faults(&ProgressBar::hidden()).await.unwrap();
    let (faults, slow): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|r| r.scenario == "crash");
    assert_eq!(faults.len(), 4, "{faults:?}");
    // Slow links: only the commit protocols take part. 2PC never decides both ways, however
    // slow the network (its participants wait); whether 3PC does depends on where the slowdown
    // falls in real time, so that is asserted by the seeded simulation in
    // `threepc/tests/sim_atomic.rs`, and here only measured.
    assert_eq!(
        slow.iter().map(|r| r.protocol.as_str()).collect::<Vec<_>>(),
        ["2pc", "3pc"]
    );
    for row in &slow {
        assert!(row.conflicts_at_end.is_some(), "{row:?}");
        assert_eq!(row.undecided_at_end, Some(0), "{row:?}");
        if row.protocol == "2pc" {
            assert_eq!(row.conflicts_at_end, Some(0), "{row:?}");
        }
    }
    for row in &faults {
        check_crash_row(row);
    }
    for row in &all {
        assert!(row.fault_at_ms > 0.0, "{row:?}");
        let acked: u64 = row.acks_per_window.iter().sum();
        assert!(acked >= row.ops_before + row.ops_after, "{row:?}");
        // Windows cover the whole run, even when nothing was acknowledged at its end.
        let windows = row.acks_per_window.len() as f64 * FAULT_WINDOW.as_secs_f64();
        assert!(
            windows >= 3.0 - 0.02,
            "{} windows",
            row.acks_per_window.len()
        );
    }
    let chart = benches::report::charts::crash(&all).unwrap();
    for name in ["raft", "multi-paxos", "2pc", "3pc"] {
        assert!(chart.contains(name), "{name} missing from the crash chart");
    }
    let text = render_faults(&all, false);
    assert!(text.contains("not recovered") && text.contains("multi-paxos"));
    assert!(text.contains("slow links") && text.contains("conflicts at end"));
}

/// A crash row: the replicated logs recover and serve again; the commit protocols do not, and
/// 3PC leaves nothing undecided.
fn check_crash_row(row: &FaultRow) {
    assert!(row.crashed.is_some(), "{row:?}");
    assert!(row.ops_before > 0, "{row:?}");
    match row.protocol.as_str() {
        "2pc" | "3pc" => {
            assert_eq!(row.unavailable_ms, None, "{row:?}");
            assert_eq!(row.ops_after, 0, "{row:?}");
            // How many transactions 2PC leaves blocked depends on where the crash fell;
            // 3PC's termination protocol must have decided every one of them.
            assert!(row.undecided_at_end.is_some(), "{row:?}");
            if row.protocol == "3pc" {
                assert_eq!(row.undecided_at_end, Some(0), "{row:?}");
            }
        }
        _ => {
            assert!(row.unavailable_ms.is_some(), "{row:?}");
            assert!(row.ops_after > 0, "{row:?}");
            assert_eq!(row.undecided_at_end, None, "{row:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_run_syncs_and_unknown_protocol_is_refused() {
    let plan = Plan {
        protocols: vec!["demo".into()],
        transports: vec![TransportKind::Memory],
        cluster_sizes: vec![3],
        concurrency: vec![8],
        workload: Workload {
            concurrency: 1,
            warmup: Duration::ZERO,
            duration: Duration::ZERO,
            ops_max: Some(100),
        },
        durable: true,
        seed: 3,
        fault_duration: Duration::ZERO,
    };
    let rows = plan.run(&ProgressBar::hidden()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].durable && rows[0].syncs_per_op > 0.0);

    let unknown = Plan {
        protocols: vec!["no-such-protocol".into()],
        ..plan
    };
    assert!(unknown.contenders().is_err());
}
