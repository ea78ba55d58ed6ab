//! The trace viewer (`docs/viewer/index.html`) and the shootout's report page in a real browser.
//!
//! The viewer: headless Chromium opens it from disk with each committed trace, plays the trace
//! to its end (`?autoplay=end`) and dumps the page; the test reads the summary the page writes
//! (`#summary`) and checks it against the committed JSON: how many nodes are drawn, every node's
//! final role, that every message was drawn, and that no script error happened. A screenshot of one trace is left under the
//! target directory (`target/tmp/viewer-*.png`) for a person to look at.
//!
//! The report page (`benches::report::html`, the shootout's `index.html`) is made here from
//! made-up rows (no benchmark runs in a test), written under the target directory and opened from
//! disk: it must show its four charts and tables without a script error.
//!
//! Without a `chromium` (or `chromium-browser`) on `PATH` the test says so and passes, unless
//! `REQUIRE_BROWSER=1`, as in CI, where a missing browser fails it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest one browser run may take before the test kills it and fails.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(30);
/// Virtual time the page gets to load and run its scripts, in milliseconds.
const VIRTUAL_TIME_BUDGET_MS: u32 = 5_000;

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// The browser binary, or `None` (after saying why) when the test is to be skipped.
fn browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("REQUIRE_BROWSER").as_deref() != Ok("1"),
            "REQUIRE_BROWSER=1 but neither chromium nor chromium-browser is on PATH"
        );
        eprintln!(
            "SKIPPED: no chromium or chromium-browser on PATH; the viewer was not tested in a \
             browser (install chromium, or set REQUIRE_BROWSER=1 to make this a failure)"
        );
    }
    found
}

/// Runs headless Chromium with `args` then `url`, and returns what it printed on stdout. Fails
/// the test when it runs longer than [`BROWSER_TIMEOUT`] or exits with an error.
fn run_browser(browser: &Path, args: &[String], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1300,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on their own threads, so that a full pipe never stalls the browser.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser ran longer than {BROWSER_TIMEOUT:?} on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().unwrap().unwrap();
    let err = err.join().unwrap().unwrap_or_default();
    assert!(
        status.success(),
        "the browser failed ({status}) on {url}:\n{err}"
    );
    out
}

fn viewer_url(query: &str) -> String {
    let page = docs_dir().join("viewer/index.html").canonicalize().unwrap();
    format!("file://{}?{query}", page.display())
}

/// The JSON the page wrote into `<pre id="summary">`.
fn summary(dom: &str) -> Value {
    let start = dom
        .find("<pre id=\"summary\"")
        .unwrap_or_else(|| panic!("no summary element in the page:\n{dom}"));
    let body = &dom[start..];
    let open = body.find('>').unwrap() + 1;
    let close = body.find("</pre>").unwrap();
    let text = body[open..close]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {text}"))
}

fn committed_trace(name: &str) -> Value {
    let path = docs_dir().join(format!("viewer/traces/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Each node's last role in a trace file.
fn final_roles(trace: &Value) -> serde_json::Map<String, Value> {
    let mut roles = serde_json::Map::new();
    for s in trace["states"].as_array().unwrap() {
        roles.insert(s["node"].to_string(), s["role"].clone());
    }
    roles
}

#[test]
fn viewer_plays_committed_traces_to_the_end() {
    let Some(browser) = browser() else { return };
    let mut names: Vec<String> = std::fs::read_dir(docs_dir().join("viewer/traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for wanted in [
        "raft-election",
        "paxos-duel",
        "2pc-coordinator-crash",
        "3pc-coordinator-crash",
        "3pc-partition",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} is not committed"
        );
    }
    for name in &names {
        let name = name.as_str();
        let dom = run_browser(
            &browser,
            &["--dump-dom".into()],
            &viewer_url(&format!("trace={name}&autoplay=end")),
        );
        let shown = summary(&dom);
        let trace = committed_trace(name);
        assert_eq!(
            shown["errors"],
            Value::Array(vec![]),
            "{name}: script errors"
        );
        assert_eq!(shown["trace"], name);
        assert_eq!(shown["time"], trace["end"], "{name}: played to the end");
        assert_eq!(
            shown["nodes"].as_u64(),
            trace["nodes"].as_array().map(|n| n.len() as u64),
            "{name}: nodes drawn"
        );
        assert_eq!(
            shown["roles"],
            Value::Object(final_roles(&trace)),
            "{name}: final roles"
        );
        let messages = trace["messages"].as_array().unwrap().len() as u64;
        assert!(messages > 0);
        assert_eq!(shown["messages"].as_u64(), Some(messages), "{name}");
        assert_eq!(
            shown["messages_drawn"].as_u64(),
            Some(messages),
            "{name}: every message drawn once at least"
        );
    }
}

/// The page shows the partition of `3pc-partition` as cut links, and a screenshot of it is
/// left for a person to look at.
#[test]
fn viewer_draws_partitions_and_leaves_a_screenshot() {
    let Some(browser) = browser() else { return };
    let dom = run_browser(
        &browser,
        &["--dump-dom".into()],
        &viewer_url("trace=3pc-partition&t=30"),
    );
    let shown = summary(&dom);
    assert_eq!(shown["errors"], Value::Array(vec![]));
    // {1, 2} | {3, 4, 5}: six node pairs, each cut both ways and drawn once.
    assert_eq!(shown["cut_links_shown"].as_u64(), Some(6));

    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("viewer-3pc-partition.png");
    let _ = std::fs::remove_file(&png);
    run_browser(
        &browser,
        &[format!("--screenshot={}", png.display())],
        &viewer_url("trace=3pc-partition&t=30"),
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {}",
        png.display()
    );
    eprintln!("screenshot: {}", png.display());
}

/// A trace name that is not committed is refused in words, not with a script error.
#[test]
fn viewer_names_an_unknown_trace() {
    let Some(browser) = browser() else { return };
    let dom = run_browser(
        &browser,
        &["--dump-dom".into()],
        &viewer_url("trace=no-such-trace&autoplay=end"),
    );
    assert!(dom.contains("No committed trace called"), "{dom}");
    assert_eq!(summary(&dom)["errors"], Value::Array(vec![]));
}

fn row(protocol: &str, concurrency: usize, ops_per_sec: f64) -> benches::Row {
    let c = concurrency as f64;
    benches::Row {
        protocol: protocol.into(),
        transport: benches::TransportKind::Memory,
        durable: false,
        nodes: 3,
        concurrency,
        ops: 1_000,
        errors: 0,
        elapsed_secs: 1.0,
        ops_per_sec,
        p50_us: 40.0 * c,
        p99_us: 150.0 * c,
        p999_us: 600.0 * c,
        max_us: 1_000.0 * c,
        msgs_per_op: 4.0,
        bytes_per_op: 120.0,
        records_per_op: 1.0,
        syncs_per_op: 0.0,
        theory: benches::Theory::replicated_log(3),
        finding: Some(format!("{protocol}: a <finding> & more")),
    }
}

fn crash_row(protocol: &str, acks_per_window: Vec<u64>) -> benches::FaultRow {
    benches::FaultRow {
        protocol: protocol.into(),
        transport: benches::TransportKind::Memory,
        nodes: 3,
        concurrency: 16,
        scenario: "crash".into(),
        crashed: Some(1),
        ops_before: 100,
        ops_after: 100,
        unavailable_ms: Some(40.0),
        blocked: 0,
        failed: 3,
        undecided_at_end: None,
        conflicts_at_end: None,
        note: "a new leader served again".into(),
        fault_at_ms: 50.0,
        acks_per_window,
    }
}

/// The report page opens from disk and shows its charts and tables, without a script error.
#[test]
fn report_page_shows_its_charts_offline() {
    use benches::report::{html, Charts};
    let Some(browser) = browser() else { return };
    let mut rows = Vec::new();
    for (protocol, speed) in [("raft", 20_000.0), ("multi-paxos", 15_000.0)] {
        for c in [1, 4, 16, 64] {
            rows.push(row(protocol, c, speed * (c as f64).sqrt()));
        }
    }
    let report = benches::Report {
        machine: benches::Machine::describe(),
        setup: "made-up rows".into(),
        findings: benches::findings(&rows),
        rows,
        faults: vec![
            crash_row("raft", vec![10, 11, 12, 10, 9, 0, 0, 0, 0, 8, 12, 11]),
            crash_row("multi-paxos", vec![9, 9, 10, 8, 9, 0, 0, 7, 9, 10, 9, 9]),
        ],
        hashring: Vec::new(),
    };
    let charts = Charts::of(&report, true).unwrap();
    let page = html(&report, &charts, "shootout --sweep 1,4,16,64");
    for outside in ["src=", "href=", "url(", "@import", "http://", "https://"] {
        let allowed = "http://www.w3.org/"; // SVG's namespace, a name and no request
        assert!(
            !page.replace(allowed, "").contains(outside),
            "the page refers to something outside it: {outside}"
        );
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("index.html");
    std::fs::write(&path, &page).unwrap();
    let url = format!("file://{}", path.canonicalize().unwrap().display());
    let dom = run_browser(&browser, &["--dump-dom".into()], &url);
    let shown = summary(&dom);
    assert_eq!(shown["errors"], Value::Array(vec![]), "script errors");
    assert_eq!(shown["charts"].as_u64(), Some(4));
    assert_eq!(
        shown["chart_names"],
        serde_json::json!([
            "chart-throughput",
            "chart-latency",
            "chart-sweep",
            "chart-crash"
        ])
    );
    assert_eq!(shown["tables"].as_u64(), Some(2), "steady state and faults");
    assert!(dom.contains("a &lt;finding&gt; &amp; more"), "escaped text");
}
