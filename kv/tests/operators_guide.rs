//! The operator's guide (`kv/README.md`) is a script: its shell blocks, from "Start a three-node
//! cluster" to the `guide:end` marker, run here verbatim and in order in one `bash` (with
//! `/tmp/kv` replaced by a temporary directory and the built binaries first on the `PATH`). They
//! start three replicas from configuration files, write and read, add a fourth replica with
//! `--join`, promote it, hand it the leadership, remove a replica, read the metrics and stop
//! everything with SIGTERM. The guide uses fixed loopback ports (7001–7004, 8001–8004,
//! 9001–9003); the test moves each group of them to free ports.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole guide must run within this.
const GUIDE_MAX: Duration = Duration::from_secs(120);

/// The guide's ports are `PREFIX` followed by the replica's id (1 to 4), built in the shell as
/// `localhost:700$i`: replicas on 700x, clients on 800x, metrics on 900x.
const GUIDE_PREFIXES: [&str; 3] = [":700", ":800", ":900"];

/// Four-digit prefixes the test may use instead: ports 20001 to 32764, below Linux's ephemeral
/// range (32768 on), where outgoing connections take their ports.
const PREFIXES: std::ops::Range<u16> = 2000..3276;

/// A prefix of [`PREFIXES`], not in `taken`, whose ports 1 to 4 are free now. Where the search
/// starts depends on the process id, so that two runs at once rarely try the same ports.
fn free_prefix(taken: &[u16]) -> u16 {
    let span = PREFIXES.end - PREFIXES.start;
    let start = (std::process::id() % u32::from(span)) as u16;
    (0..span)
        .map(|k| PREFIXES.start + (start + k) % span)
        .filter(|p| !taken.contains(p))
        .find(|p| (1..=4).all(|i| std::net::TcpListener::bind(("127.0.0.1", p * 10 + i)).is_ok()))
        .expect("four free loopback ports in a row")
}

/// `script` with the guide's port prefixes replaced by prefixes of free ports, so that a
/// cluster started by hand from the guide on this machine (or anything else on those ports)
/// does not make the test fail.
fn on_free_ports(script: &str) -> String {
    let mut taken = Vec::new();
    let mut out = script.to_string();
    for prefix in GUIDE_PREFIXES {
        let free = free_prefix(&taken);
        taken.push(free);
        out = out.replace(prefix, &format!(":{free}"));
    }
    out
}

/// The guide's shell blocks, in order.
fn guide_script() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("kv/README.md");
    let start = readme
        .find("## Start a three-node cluster")
        .expect("the guide's first section");
    let end = readme
        .find("<!-- guide:end -->")
        .expect("the guide's end marker");
    let mut blocks = Vec::new();
    let mut rest = &readme[start..end];
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("\n```").expect("a closed shell block");
        blocks.push(&body[..close]);
        rest = &body[close + 4..];
    }
    assert!(blocks.len() >= 4, "the guide has its shell blocks");
    blocks.join("\n")
}

#[test]
// Long on purpose: it runs the guide's blocks in the guide's order, and the order is the test.
fn the_operators_guide_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let script = on_free_ports(&guide_script().replace("/tmp/kv", dir.path().to_str().unwrap()));
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_kv-node"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        // Every command must succeed; at the end, wait for the stopped replicas to exit.
        .arg(format!("set -euo pipefail\n{script}\nwait\n"))
        .env("PATH", path)
        .env_remove("KV_NODES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id();
    let deadline = Instant::now() + GUIDE_MAX;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever happened, nothing the guide started outlives the test.
    // Signalled directly, not through a `kill` binary: some parse `-KILL -PGID` as a kill of
    // every process the user may signal (`kill(-1)`).
    if let Some(group) = i32::try_from(group)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = child.wait();
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let logs: String = (1..=4)
        .map(|i| {
            let log = std::fs::read_to_string(dir.path().join(format!("node-{i}.log")))
                .unwrap_or_default();
            format!("--- node {i} ---\n{log}")
        })
        .collect();
    let context = format!("stdout:\n{out}\nstderr:\n{err}\n{logs}");
    let status = status.unwrap_or_else(|| panic!("the guide ran past {GUIDE_MAX:?}\n{context}"));
    assert!(status.success(), "the guide failed: {status}\n{context}");

    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"hello"), "{context}");
    assert!(lines.contains(&"swapped; now bye"), "{context}");
    assert!(lines.contains(&r#"{"value":"bye"}"#), "{context}");
    assert!(out.contains("linearizable: true"), "{context}");
    // The member lists: after the promotion node 4 votes; after the transfer it leads; after
    // the removal node 3 is gone.
    let lists: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("node  role      peer"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(lists.len(), 6, "{context}");
    let table = |at: usize| -> Vec<&str> {
        lines[at + 1..]
            .iter()
            .take_while(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .copied()
            .collect()
    };
    let row = |rows: &[&str], id: &str| -> Option<String> {
        rows.iter()
            .find(|r| r.split_whitespace().next() == Some(id))
            .map(|r| r.split_whitespace().nth(1).unwrap_or("").to_string())
    };
    let promoted = table(lists[1]);
    assert!(
        matches!(row(&promoted, "4").as_deref(), Some("voter" | "leader")),
        "{context}"
    );
    let transferred = table(lists[3]);
    assert_eq!(
        row(&transferred, "4").as_deref(),
        Some("leader"),
        "{context}"
    );
    let shrunk = table(lists[5]);
    assert_eq!(row(&shrunk, "3"), None, "{context}");
    assert_eq!(shrunk.len(), 3, "{context}");
    assert!(out.contains("kv_is_leader "), "{context}");
    assert!(out.contains("ok: leader 4"), "{context}");
}
