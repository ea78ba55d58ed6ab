//! Linearizability checking of key-value histories: known good and bad histories, unknown
//! outcomes, JSON lines, and histories recorded from simulated clusters.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use common::check::{
    check_kv, check_kv_with, CheckOptions, Completion, History, HistoryError, HistoryEvent,
    KvInput, KvOutput, Recorder, Verdict, HISTORY_LINE_BYTES_MAX,
};
use common::sim::{ClosedLoop, Sim, SimConfig};
use common::{Node, NodeId, Outbox, RequestId};

type H = History<KvInput, KvOutput>;

/// A tiny history builder: `op(client, call, ret, input, output)`; `ret = None` leaves the
/// operation without completion, `output = None` with `ret = Some` records `info`.
/// `(client, call, ret, input, output, failed)`.
type Spec = (u64, u64, Option<u64>, KvInput, Option<KvOutput>, bool);

#[derive(Default)]
struct B {
    ops: Vec<Spec>,
}

impl B {
    fn op(
        mut self,
        client: u64,
        call: u64,
        ret: Option<u64>,
        input: KvInput,
        output: Option<KvOutput>,
    ) -> Self {
        self.ops.push((client, call, ret, input, output, false));
        self
    }
    fn failed(mut self, client: u64, call: u64, ret: u64, input: KvInput) -> Self {
        self.ops.push((client, call, Some(ret), input, None, true));
        self
    }
    fn build(self) -> H {
        let mut timed = Vec::new();
        for (i, (client, call, ret, input, output, failed)) in self.ops.into_iter().enumerate() {
            let id = i as u64 + 1;
            timed.push((
                call,
                0,
                HistoryEvent::Invoke {
                    id,
                    client,
                    time: call,
                    wall_ns: None,
                    input,
                },
            ));
            if let Some(t) = ret {
                let e = match (output, failed) {
                    (_, true) => HistoryEvent::Fail {
                        id,
                        time: t,
                        wall_ns: None,
                    },
                    (Some(output), _) => HistoryEvent::Ok {
                        id,
                        time: t,
                        wall_ns: None,
                        output,
                    },
                    (None, _) => HistoryEvent::Info {
                        id,
                        time: t,
                        wall_ns: None,
                    },
                };
                timed.push((t, 1, e));
            }
        }
        timed.sort_by_key(|(t, k, _)| (*t, *k));
        History {
            events: timed.into_iter().map(|(_, _, e)| e).collect(),
        }
    }
}

fn put(k: &str, v: &str) -> KvInput {
    KvInput::Put {
        key: k.into(),
        value: v.into(),
    }
}
fn get(k: &str) -> KvInput {
    KvInput::Get { key: k.into() }
}
fn del(k: &str) -> KvInput {
    KvInput::Delete { key: k.into() }
}
fn cas(k: &str, expected: Option<&str>, new: &str) -> KvInput {
    KvInput::Cas {
        key: k.into(),
        expected: expected.map(Into::into),
        new: new.into(),
    }
}
fn val(v: Option<&str>) -> Option<KvOutput> {
    Some(KvOutput::Value {
        value: v.map(Into::into),
    })
}
fn done() -> Option<KvOutput> {
    Some(KvOutput::Done)
}
fn swapped(s: bool) -> Option<KvOutput> {
    Some(KvOutput::Cas { swapped: s })
}

fn violation(h: &H) -> common::check::KvViolation {
    match check_kv(h).unwrap() {
        Verdict::NotLinearizable(v) => v,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn sequential_and_concurrent_histories_are_linearizable() {
    let h = B::default()
        .op(1, 0, Some(2), put("x", "1"), done())
        .op(1, 3, Some(4), get("x"), val(Some("1")))
        .op(2, 5, Some(6), cas("x", Some("1"), "2"), swapped(true))
        .op(2, 7, Some(8), cas("x", Some("1"), "3"), swapped(false))
        .op(1, 9, Some(10), del("x"), done())
        .op(1, 11, Some(12), get("x"), val(None))
        .build();
    assert_eq!(check_kv(&h).unwrap(), Verdict::Linearizable);

    // A read concurrent with a write may see either value, and two concurrent reads may
    // disagree as long as an order exists.
    let h = B::default()
        .op(1, 0, Some(10), put("x", "1"), done())
        .op(2, 1, Some(3), get("x"), val(Some("1")))
        .op(3, 4, Some(6), get("x"), val(Some("1")))
        .op(4, 0, Some(2), get("x"), val(None))
        .build();
    assert!(check_kv(&h).unwrap().is_linearizable());
    assert!(check_kv(&H::new()).unwrap().is_linearizable());
}

#[test]
fn stale_read_is_caught() {
    let h = B::default()
        .op(1, 0, Some(2), put("x", "1"), done())
        .op(1, 3, Some(4), put("x", "2"), done())
        .op(2, 5, Some(6), get("x"), val(Some("1")))
        .build();
    let v = violation(&h);
    assert_eq!(v.key, "x");
    assert_eq!(v.operations.len(), 3);
    assert!(v.to_string().contains("not linearizable"));
    let verdict = check_kv(&h).unwrap();
    assert!(
        verdict
            .to_string()
            .contains("key \"x\" is not linearizable"),
        "{verdict}"
    );
    assert_eq!(Verdict::Linearizable.to_string(), "linearizable");
}

#[test]
fn lost_write_is_caught() {
    // Both writes were acknowledged, yet later reads see the first one.
    let h = B::default()
        .op(1, 0, Some(5), put("x", "a"), done())
        .op(2, 6, Some(9), put("x", "b"), done())
        .op(3, 10, Some(11), get("x"), val(Some("b")))
        .op(3, 12, Some(13), get("x"), val(Some("a")))
        .build();
    violation(&h);
    // An acknowledged write that no read ever sees.
    let h = B::default()
        .op(1, 0, Some(5), put("y", "a"), done())
        .op(2, 6, Some(9), get("y"), val(None))
        .build();
    violation(&h);
}

#[test]
fn read_of_a_never_written_value_is_caught() {
    let h = B::default()
        .op(1, 0, Some(5), put("x", "1"), done())
        .op(2, 1, Some(6), get("x"), val(Some("42")))
        .build();
    violation(&h);
}

#[test]
fn cas_anomalies_are_caught() {
    // Two compare-and-sets from the same expected value both succeed.
    let h = B::default()
        .op(1, 0, Some(2), put("c", "0"), done())
        .op(1, 3, Some(8), cas("c", Some("0"), "1"), swapped(true))
        .op(2, 4, Some(9), cas("c", Some("0"), "2"), swapped(true))
        .build();
    violation(&h);
    // A compare-and-set that failed although the value matched and nobody else wrote.
    let h = B::default()
        .op(1, 0, Some(2), put("c", "0"), done())
        .op(1, 3, Some(4), cas("c", Some("0"), "1"), swapped(false))
        .build();
    violation(&h);
    // A successful compare-and-set on an absent key is fine, and a concurrent one must fail.
    let h = B::default()
        .op(1, 0, Some(5), cas("c", None, "1"), swapped(true))
        .op(2, 1, Some(6), cas("c", None, "2"), swapped(false))
        .op(3, 7, Some(8), get("c"), val(Some("1")))
        .build();
    assert!(check_kv(&h).unwrap().is_linearizable());
}

#[test]
fn unknown_outcomes_may_apply_late_or_never_but_failures_never() {
    // A write with an unknown outcome (info) may take effect later...
    let h = B::default()
        .op(1, 0, Some(2), put("x", "0"), done())
        .op(1, 3, Some(4), put("x", "1"), None)
        .op(2, 5, Some(6), get("x"), val(Some("0")))
        .op(2, 100, Some(101), get("x"), val(Some("1")))
        .build();
    assert!(check_kv(&h).unwrap().is_linearizable());
    // ... or never (no completion at all counts the same).
    let h = B::default()
        .op(1, 0, Some(2), put("x", "0"), done())
        .op(1, 3, None, put("x", "1"), None)
        .op(2, 100, Some(101), get("x"), val(Some("0")))
        .build();
    assert!(check_kv(&h).unwrap().is_linearizable());
    // But once seen, it cannot be unseen.
    let h = B::default()
        .op(1, 0, Some(2), put("x", "0"), done())
        .op(1, 3, None, put("x", "1"), None)
        .op(2, 5, Some(6), get("x"), val(Some("1")))
        .op(2, 7, Some(8), get("x"), val(Some("0")))
        .build();
    violation(&h);
    // A pending CAS is applied only where its condition holds.
    let h = B::default()
        .op(1, 0, Some(1), put("x", "0"), done())
        .op(1, 2, None, cas("x", Some("9"), "1"), None)
        .op(2, 5, Some(6), get("x"), val(Some("1")))
        .build();
    violation(&h);
    // A failed write never took effect: reading its value is a violation.
    let h = B::default()
        .failed(1, 0, 2, put("x", "9"))
        .op(2, 5, Some(6), get("x"), val(Some("9")))
        .build();
    violation(&h);
}

#[test]
fn violation_reports_only_the_failing_keys_sub_history() {
    let mut b = B::default();
    for i in 0..20u64 {
        let k = format!("k{i}");
        b = b.op(i, i * 10, Some(i * 10 + 5), put(&k, "v"), done()).op(
            i,
            i * 10 + 6,
            Some(i * 10 + 8),
            get(&k),
            val(Some("v")),
        );
    }
    b = b.op(99, 1000, Some(1001), put("k7", "w"), done()).op(
        98,
        1002,
        Some(1003),
        get("k7"),
        val(Some("v")),
    );
    let v = violation(&b.build());
    assert_eq!(v.key, "k7");
    assert_eq!(v.operations.len(), 4);
    assert!(v.operations.iter().all(|op| op.input.key() == "k7"));
    assert!(v.operations.windows(2).all(|w| w[0].call <= w[1].call));
    // The search linearized the first three operations, not the stale read.
    assert_eq!(v.longest_prefix.len(), 3);
}

#[test]
fn a_time_limit_still_gives_verdicts_on_small_histories() {
    let h = B::default()
        .op(1, 0, Some(2), put("x", "1"), done())
        .op(2, 3, Some(4), get("x"), val(None))
        .build();
    let options = CheckOptions {
        timeout_per_key: Some(std::time::Duration::from_secs(10)),
    };
    assert!(matches!(
        check_kv_with(&h, &options).unwrap(),
        Verdict::NotLinearizable(_)
    ));
}

#[test]
fn json_lines_round_trip_and_documented_format() {
    let h = B::default()
        .op(1, 0, Some(2), put("x", "1"), done())
        .op(2, 1, Some(3), get("x"), val(None))
        .op(3, 4, Some(9), cas("x", Some("1"), "2"), None)
        .op(4, 5, None, del("x"), None)
        .failed(5, 6, 7, put("x", "z"))
        .build();
    let text = h.to_json_lines();
    assert_eq!(text.lines().count(), h.events.len());
    let back: H = History::from_json_lines(&text).unwrap();
    assert_eq!(back, h);
    assert!(text.starts_with(
        r#"{"type":"invoke","id":1,"client":1,"time":0,"input":{"f":"put","key":"x","value":"1"}}"#
    ));
    // Wall-clock timestamps survive too.
    let rec: Recorder<KvInput, KvOutput> = Recorder::new();
    let id = rec.invoke(1, get("x"));
    rec.ok(id, KvOutput::Value { value: None });
    let h = rec.history();
    assert!(matches!(
        h.events[0],
        HistoryEvent::Invoke {
            wall_ns: Some(_),
            ..
        }
    ));
    assert_eq!(History::from_json_lines(&h.to_json_lines()).unwrap(), h);
}

#[test]
fn malformed_histories_are_typed_errors() {
    let bad = "{\"type\":\"invoke\",\"id\":1,\"client\":1,\"time\":0,\"input\":{\"f\":\"get\",\"key\":\"x\"}}\n\nnot json\n";
    match H::from_json_lines(bad) {
        Err(HistoryError::Parse { line, .. }) => assert_eq!(line, 3),
        other => panic!("{other:?}"),
    }
    let long = "x".repeat(HISTORY_LINE_BYTES_MAX + 10);
    assert!(matches!(
        H::from_json_lines(&long),
        Err(HistoryError::LineTooLong { line: 1, .. })
    ));
    let orphan = r#"{"type":"ok","id":4,"time":1,"output":{"f":"done"}}"#;
    let h = H::from_json_lines(orphan).unwrap();
    assert!(matches!(
        check_kv(&h),
        Err(HistoryError::CompletionWithoutInvoke(4))
    ));
    let twice = B::default().op(1, 0, Some(1), get("x"), val(None)).build();
    let mut events = twice.events.clone();
    events.push(events[1].clone());
    assert!(matches!(
        History { events }.operations(),
        Err(HistoryError::DuplicateCompletion(1))
    ));
    let backwards = r#"{"type":"invoke","id":1,"client":1,"time":9,"input":{"f":"get","key":"x"}}
{"type":"ok","id":1,"time":3,"output":{"f":"value","value":null}}"#;
    assert!(matches!(
        H::from_json_lines(backwards).unwrap().operations(),
        Err(HistoryError::CompletionBeforeInvoke { id: 1, .. })
    ));
}

// ----- histories recorded from a simulated cluster -----

/// A deliberately weak replicated key-value store: every node applies writes locally, answers
/// at once and forwards them to its peers; reads are served from local state. A single node is
/// linearizable; reading from several is not (stale reads while writes travel).
struct LocalKv {
    id: NodeId,
    peers: Vec<NodeId>,
    data: BTreeMap<String, String>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Replicate {
    key: String,
    value: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl LocalKv {
    fn set(&mut self, key: &str, value: Option<String>, out: &mut Outbox<Self>) {
        match &value {
            Some(v) => self.data.insert(key.to_string(), v.clone()),
            None => self.data.remove(key),
        };
        let m = Replicate {
            key: key.to_string(),
            value,
        };
        out.broadcast(self.peers.clone(), &m);
    }
}

impl Node for LocalKv {
    type Config = (NodeId, Vec<NodeId>);
    type Message = Replicate;
    type Request = KvInput;
    type Response = KvOutput;
    type Event = ();
    type Record = ();
    type Metrics = usize;
    type Error = Never;
    const PROTOCOL: u16 = 999;
    const WIRE_VERSION: u16 = 1;

    fn recover((id, members): Self::Config, _: Vec<()>) -> Result<Self, Never> {
        let peers = members.into_iter().filter(|&m| m != id).collect();
        Ok(Self {
            id,
            peers,
            data: BTreeMap::new(),
        })
    }
    fn id(&self) -> NodeId {
        self.id
    }
    fn handle_message(&mut self, _: NodeId, msg: Replicate, _: &mut Outbox<Self>) {
        match msg.value {
            Some(v) => self.data.insert(msg.key, v),
            None => self.data.remove(&msg.key),
        };
    }
    fn handle_request(&mut self, id: RequestId, req: KvInput, out: &mut Outbox<Self>) {
        let answer = match &req {
            KvInput::Get { key } => KvOutput::Value {
                value: self.data.get(key).cloned(),
            },
            KvInput::Put { key, value } => {
                self.set(key, Some(value.clone()), out);
                KvOutput::Done
            }
            KvInput::Delete { key } => {
                self.set(key, None, out);
                KvOutput::Done
            }
            KvInput::Cas { key, expected, new } => {
                let swapped = self.data.get(key) == expected.as_ref();
                if swapped {
                    self.set(key, Some(new.clone()), out);
                }
                KvOutput::Cas { swapped }
            }
        };
        out.respond(id, answer);
    }
    fn tick(&mut self, _: &mut Outbox<Self>) {}
    fn metrics(&self) -> usize {
        self.data.len()
    }
}

fn kv_sim(seed: u64, spread_over_nodes: bool) -> H {
    let members = vec![1, 2, 3];
    let mut config = SimConfig::new(seed, members.clone());
    config.link.latency_min = 5;
    config.link.latency_max = 40;
    let m = members.clone();
    let mut sim: Sim<LocalKv> = Sim::new(config, move |id| (id, m.clone())).unwrap();
    let mut n = 0u64;
    sim.closed_loop(
        ClosedLoop {
            clients: 4,
            start: 0,
            think_min: 0,
            think_max: 10,
            requests_max: 200,
            until: 10_000,
            timeout: None,
        },
        move |rng, ctx| {
            n += 1;
            let node = if spread_over_nodes {
                ctx.nodes[rng.index(3)?]
            } else {
                1
            };
            let key = format!("k{}", rng.index(3)?);
            let input = match rng.index(4)? {
                0 | 1 => get(&key),
                2 => put(&key, &n.to_string()),
                _ => cas(&key, Some(&(n - 1).to_string()), &n.to_string()),
            };
            Some((node, input))
        },
    );
    sim.run_until(20_000).unwrap();
    assert_eq!(sim.history().len(), 200);
    History::from_sim(
        sim.history(),
        |req: &KvInput| Some(req.clone()),
        |_, resp| Completion::Ok(resp.clone()),
    )
}

#[test]
fn simulated_single_copy_is_linearizable_and_local_reads_are_not() {
    for seed in 0..5 {
        let h = kv_sim(seed, false);
        assert_eq!(check_kv(&h).unwrap(), Verdict::Linearizable, "seed {seed}");
    }
    let caught = (0..5).filter(|&seed| !check_kv(&kv_sim(seed, true)).unwrap().is_linearizable());
    assert!(
        caught.count() >= 3,
        "local reads from three replicas must show stale reads"
    );
}

#[test]
fn from_sim_maps_crashes_to_info_and_down_nodes_to_fail() {
    let members = vec![1, 2, 3];
    let mut config = SimConfig::new(5, members.clone());
    config.sync_latency_min = 5; // answers wait for the sync: a crash can catch them
    config.sync_latency_max = 5;
    let m = members.clone();
    let mut sim: Sim<LocalKv> = Sim::new(config, move |id| (id, m.clone())).unwrap();
    sim.schedule(
        common::sim::FaultPlan::new()
            .at(102, common::sim::Fault::Crash(2))
            .at(300, common::sim::Fault::Restart(2)),
    );
    let crashed = sim.submit(100, 2, put("x", "1"));
    let down = sim.submit(200, 2, get("x"));
    let fine = sim.submit(400, 1, put("x", "2"));
    sim.run_until(1_000).unwrap();
    let h: H = History::from_sim(
        sim.history(),
        |req: &KvInput| Some(req.clone()),
        |_, resp| Completion::Ok(resp.clone()),
    );
    let kind = |id: RequestId| {
        h.events
            .iter()
            .filter(|e| e.id() == id.0)
            .map(|e| match e {
                HistoryEvent::Invoke { .. } => "invoke",
                HistoryEvent::Ok { .. } => "ok",
                HistoryEvent::Fail { .. } => "fail",
                HistoryEvent::Info { .. } => "info",
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(kind(crashed), ["invoke", "info"]);
    assert_eq!(kind(down), ["invoke", "fail"]);
    assert_eq!(kind(fine), ["invoke", "ok"]);
    // The failed read is left out; the crashed write stays open-ended.
    let ops = h.operations().unwrap();
    assert_eq!(ops.len(), 2);
    assert!(ops
        .iter()
        .any(|op| op.id == crashed.0 && op.ret.is_none() && op.output.is_none()));
    assert!(check_kv(&h).unwrap().is_linearizable());
}

/// The committed sample files, read the way a history saved by a real cluster's recorder is.
#[test]
fn sample_history_files_check_as_expected() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let read = |name: &str| -> H {
        let file = std::fs::File::open(dir.join(name)).unwrap();
        History::read_json_lines(std::io::BufReader::new(file)).unwrap()
    };
    // The CAS with an unknown outcome took effect (a later read saw "2"); the failed put on y
    // did not; the delete never returned.
    let ok = read("kv_linearizable.jsonl");
    assert_eq!(ok.events.len(), 13);
    assert_eq!(check_kv(&ok).unwrap(), Verdict::Linearizable);
    let stale = read("kv_stale_read.jsonl");
    let v = violation(&stale);
    assert_eq!(v.key, "x");
    assert_eq!(
        v.operations.iter().map(|op| op.id).collect::<Vec<_>>(),
        [1, 2, 4]
    );
    // Writing a history back gives the same lines.
    let text = std::fs::read_to_string(dir.join("kv_stale_read.jsonl")).unwrap();
    assert_eq!(stale.to_json_lines(), text);
}
