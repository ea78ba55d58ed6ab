//! The shootout's logic in a tiny configuration: every registered protocol completes on every
//! transport and every column of its row is filled. No timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use benches::{
    cells, render_json, render_markdown, render_table, Plan, TransportKind, Workload, COLUMNS,
};
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
    };
    let progress = ProgressBar::hidden();
    let rows = plan.run(&progress).await.unwrap();
    assert_eq!(rows.len(), plan.measurements().unwrap());
    assert!(!rows.is_empty());
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
        assert_eq!(row.ops, OPS, "{row:?}");
        assert_eq!(row.nodes, 3);
        assert_eq!(row.concurrency, 4);
        assert!(row.ops_per_sec > 0.0, "{row:?}");
        assert!(row.p50_us > 0.0 && row.p50_us <= row.p99_us && row.p99_us <= row.max_us);
        assert!(row.msgs_per_op > 0.0, "{row:?}");
        assert!(row.bytes_per_op > row.msgs_per_op, "{row:?}");
        assert!(cells(row).iter().all(|c| !c.is_empty()));
    }
    assert_eq!(progress.position(), OPS * rows.len() as u64);
    let table = render_table(&rows);
    assert_eq!(table.lines().count(), rows.len() + 1);
    assert!(COLUMNS
        .iter()
        .all(|c| table.lines().next().unwrap().contains(c)));
    let markdown = render_markdown(&rows);
    assert_eq!(markdown.lines().count(), rows.len() + 2);
    let json: serde_json::Value = serde_json::from_str(&render_json(&rows).unwrap()).unwrap();
    let objects = json.as_array().unwrap();
    assert_eq!(objects.len(), rows.len());
    for (object, row) in objects.iter().zip(&rows) {
        assert_eq!(object["protocol"], row.protocol.as_str());
        assert_eq!(object["ops"], row.ops);
        assert!(object["transport"] == "memory" || object["transport"] == "tcp");
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
