//! Unit tests of [`KvMachine`]: exactly-once sessions, CAS, size limits, scans, snapshots and
//! the address book; the map against a plain ordered map over random commands; and the same
//! machine replicated in process by both protocols.

use super::*;
use crate::{ADDRESS_BYTES_MAX, ITEM_BYTES_MAX};

fn cmd(client: u64, seq: u64, op: KvOp) -> KvCommand {
    KvCommand { client, seq, op }
}

fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put {
        key: key.into(),
        value: value.into(),
    }
}

#[test]
fn a_retried_command_is_applied_once_and_answered_the_same() {
    let mut kv = KvMachine::default();
    let cas = cmd(
        1,
        1,
        KvOp::Cas {
            key: "k".into(),
            expected: None,
            new: Some("a".into()),
        },
    );
    let first = kv.apply_command(&cas);
    assert_eq!(
        first,
        KvOutput::Cas {
            swapped: true,
            current: Some("a".into())
        }
    );
    // Applied again, a CAS expecting "absent" would now fail; the retry gets the first answer.
    assert_eq!(kv.apply_command(&cas), first);
    assert_eq!(kv.applied(), 1);
    // An older request is refused, a newer one applies.
    kv.apply_command(&cmd(1, 2, put("k", "b")));
    assert_eq!(kv.apply_command(&cmd(1, 1, put("k", "z"))), KvOutput::Stale);
    assert_eq!(kv.get("k"), Some("b"));
    // Other clients have their own numbering.
    assert_eq!(
        kv.apply_command(&cmd(2, 1, KvOp::Delete { key: "k".into() })),
        KvOutput::Value(Some("b".into()))
    );
    assert_eq!(kv.get("k"), None);
}

#[test]
fn cas_compares_and_deletes() {
    let mut kv = KvMachine::default();
    kv.apply_command(&cmd(1, 1, put("k", "a")));
    let miss = kv.apply_command(&cmd(
        1,
        2,
        KvOp::Cas {
            key: "k".into(),
            expected: Some("x".into()),
            new: Some("y".into()),
        },
    ));
    assert_eq!(
        miss,
        KvOutput::Cas {
            swapped: false,
            current: Some("a".into())
        }
    );
    let delete = kv.apply_command(&cmd(
        1,
        3,
        KvOp::Cas {
            key: "k".into(),
            expected: Some("a".into()),
            new: None,
        },
    ));
    assert_eq!(
        delete,
        KvOutput::Cas {
            swapped: true,
            current: None
        }
    );
    assert!(kv.is_empty());
}

#[test]
fn oversized_writes_are_refused_and_sessions_are_bounded() {
    let mut kv = KvMachine::default();
    let big = "x".repeat(ITEM_BYTES_MAX + 1);
    assert_eq!(
        kv.apply_command(&cmd(1, 1, put("k", &big))),
        KvOutput::TooLarge
    );
    assert!(kv.is_empty());
    kv.apply_command(&cmd(1, 2, put("k", "v")));
    for client in 0..(SESSIONS_MAX as u64 + 5) {
        kv.apply_command(&cmd(client + 10, 1, put("k", "v")));
    }
    assert_eq!(kv.sessions.len(), SESSIONS_MAX);
    // The least recently used session went first: client 1's retry is refused, not
    // applied a second time.
    assert!(!kv.sessions.contains_key(&1));
    assert_eq!(kv.apply_command(&cmd(1, 2, put("k", "w"))), KvOutput::Stale);
    assert_eq!(kv.get("k"), Some("v"));
}

#[test]
fn scans_return_the_prefix_range_in_order_within_their_limits() {
    let mut kv = KvMachine::default();
    for (i, key) in ["b/2", "a", "b/1", "b/3", "c", "b"].iter().enumerate() {
        kv.apply_command(&cmd(1, i as u64 + 1, put(key, key)));
    }
    let scan = |prefix: &str, limit| {
        kv.answer(&KvQuery::Scan {
            prefix: prefix.into(),
            limit,
        })
    };
    let entries = |keys: &[&str]| {
        keys.iter()
            .map(|k| (k.to_string(), k.to_string()))
            .collect()
    };
    assert_eq!(
        scan("b/", 10),
        KvOutput::Entries {
            entries: entries(&["b/1", "b/2", "b/3"]),
            more: false
        }
    );
    assert_eq!(
        scan("b/", 2),
        KvOutput::Entries {
            entries: entries(&["b/1", "b/2"]),
            more: true
        }
    );
    assert_eq!(
        scan("", 100),
        KvOutput::Entries {
            entries: entries(&["a", "b", "b/1", "b/2", "b/3", "c"]),
            more: false
        }
    );
    assert_eq!(
        scan("z", 5),
        KvOutput::Entries {
            entries: vec![],
            more: false
        }
    );
    assert_eq!(
        scan("b", 0),
        KvOutput::Entries {
            entries: vec![],
            more: true
        }
    );
    // A huge limit is capped; large values stop a scan at the byte bound, one entry at least.
    let mut big = KvMachine::default();
    let value = "v".repeat(ITEM_BYTES_MAX - 8);
    for i in 0..5u64 {
        big.apply_command(&cmd(2, i + 1, put(&format!("k{i}"), &value)));
    }
    match big.answer(&KvQuery::Scan {
        prefix: "k".into(),
        limit: usize::MAX,
    }) {
        KvOutput::Entries { entries, more } => {
            assert_eq!(entries.len(), 2, "two entries fit in SCAN_BYTES_MAX");
            assert!(more);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn snapshots_round_trip_and_bad_bytes_are_errors() {
    use raft::StateMachine as _;
    let mut kv = KvMachine::default();
    kv.apply_command(&cmd(1, 1, put("a", "1")));
    kv.apply_command(&cmd(2, 1, put("b", "2")));
    let mut snap = Vec::new();
    kv.snapshot(&mut snap).unwrap();
    let mut copy = KvMachine::default();
    copy.restore(&mut &snap[..]).unwrap();
    assert_eq!(copy, kv);
    // The session table travels with the snapshot: the retry is still caught.
    assert_eq!(
        copy.apply_command(&cmd(1, 1, put("a", "2"))),
        KvOutput::Value(None)
    );
    assert_eq!(copy.get("a"), Some("1"));
    assert!(copy.restore(&mut &b"\xff not a snapshot"[..]).is_err());
    assert_eq!(copy.get("a"), Some("1"), "a failed restore changes nothing");
    // Cut anywhere: an error, never a silent partial state.
    for cut in 0..snap.len() {
        assert!(copy.restore(&mut &snap[..cut]).is_err(), "cut at {cut}");
        assert_eq!(copy.get("b"), Some("2"));
    }
}

/// The map and the session table are hash tables, the map's keys kept in order beside it:
/// the order holds through puts, deletes and CAS, and replicas applying the same commands
/// write the same snapshot bytes (each table hashes with a seed of its own, so an order taken
/// from a table would differ).
#[test]
fn keys_stay_in_order_and_replicas_snapshot_the_same_bytes() {
    use raft::StateMachine as _;
    let mut commands = Vec::new();
    for (client, k) in (1..).zip(["m", "b", "z", "a", "q", "c", "y", "d", "x", "e"]) {
        commands.push(cmd(client, 1, put(k, k)));
    }
    commands.push(cmd(20, 1, KvOp::Delete { key: "q".into() }));
    let cas = KvOp::Cas {
        key: "z".into(),
        expected: Some("z".into()),
        new: None,
    };
    commands.push(cmd(21, 1, cas));
    let (mut one, mut two) = (KvMachine::default(), KvMachine::default());
    for c in &commands {
        one.apply_command(c);
        two.apply_command(c);
    }
    let keys: Vec<&str> = one.entries().map(|(k, _)| k).collect();
    assert_eq!(keys, ["a", "b", "c", "d", "e", "m", "x", "y"]);
    assert_eq!(one.len(), 8);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    one.snapshot(&mut a).unwrap();
    two.snapshot(&mut b).unwrap();
    assert_eq!(a, b);
    let mut copy = KvMachine::default();
    copy.restore(&mut &a[..]).unwrap();
    assert_eq!(copy, one);
}

#[test]
fn the_address_book_is_replicated_state_and_removed_ids_stay_removed() {
    use raft::StateMachine as _;
    let (tx, mut rx) = tokio::sync::watch::channel(AddressBook::default());
    let mut kv = KvMachine::with_book_watch(tx);
    let register = |seq, id| {
        cmd(
            9,
            seq,
            KvOp::Register {
                id,
                peer: format!("node-{id}:7000"),
                client: format!("node-{id}:8000"),
            },
        )
    };
    assert_eq!(kv.apply_command(&register(1, 4)), KvOutput::Value(None));
    assert!(rx.has_changed().unwrap(), "a registration is published");
    assert_eq!(rx.borrow_and_update().nodes[&4].client, "node-4:8000");
    assert_eq!(kv.apply_command(&register(2, 5)), KvOutput::Value(None));
    assert_eq!(
        kv.apply_command(&cmd(9, 3, KvOp::Deregister { id: 4 })),
        KvOutput::Value(Some("node-4:7000".into()))
    );
    assert!(rx.borrow_and_update().removed.contains(&4));
    // A removed id is never registered again.
    assert!(matches!(
        kv.apply_command(&register(4, 4)),
        KvOutput::Refused(_)
    ));
    let too_long = cmd(
        9,
        5,
        KvOp::Register {
            id: 6,
            peer: "p".repeat(ADDRESS_BYTES_MAX + 1),
            client: "c:1".into(),
        },
    );
    assert_eq!(kv.apply_command(&too_long), KvOutput::TooLarge);
    // The book travels with snapshots, and a restored machine publishes it.
    let mut snap = Vec::new();
    kv.snapshot(&mut snap).unwrap();
    let (tx2, mut rx2) = tokio::sync::watch::channel(AddressBook::default());
    let mut copy = KvMachine::with_book_watch(tx2);
    copy.restore(&mut &snap[..]).unwrap();
    assert_eq!(copy, kv);
    assert!(rx2.has_changed().unwrap());
    let book = rx2.borrow_and_update().clone();
    assert_eq!(book.nodes.keys().copied().collect::<Vec<_>>(), [5]);
    assert_eq!(book.removed.iter().copied().collect::<Vec<_>>(), [4]);
}

/// The same machine replicated by both protocols, in process (tokio driver, in-memory
/// network): a leader is stopped with a request in flight, the client retries with the same
/// sequence number elsewhere, and every write counts once.
mod replicated {
    use std::time::Duration;

    use common::codec::Bincode;
    use common::driver::{self, DriverConfig, NodeHandle, Persistence};
    use common::transport::memory::MemoryNetwork;
    use common::{MemStorage, Node as _, NodeId};

    use super::super::*;

    const WRITES: u64 = 20;
    const STOP_AT: u64 = 8;
    const ATTEMPTS_MAX: usize = 400;

    /// A chain of compare-and-sets on one key: write `seq` expects `seq - 1`. Applied twice,
    /// a write would be refused (the value moved on); applied once, every one swaps.
    fn write(seq: u64) -> KvCommand {
        KvCommand {
            client: 1,
            seq,
            op: KvOp::Cas {
                key: "chain".into(),
                expected: (seq > 1).then(|| (seq - 1).to_string()),
                new: Some(seq.to_string()),
            },
        }
    }

    fn swapped(seq: u64) -> KvOutput {
        KvOutput::Cas {
            swapped: true,
            current: Some(seq.to_string()),
        }
    }

    #[tokio::test]
    async fn on_raft() {
        use raft::{spawn_memory_cluster, Config, RaftClient};
        let configs: Vec<Config> = (1..=3).map(|id| Config::new(id, vec![1, 2, 3])).collect();
        let network = MemoryNetwork::new(3);
        let client: RaftClient<KvMachine> =
            spawn_memory_cluster(configs, &network, DriverConfig::default()).unwrap();
        let propose = |seq: u64| {
            let client = &client;
            async move {
                for _ in 0..ATTEMPTS_MAX {
                    match client.propose(write(seq)).await {
                        Ok((_, out)) => return out,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                panic!("write {seq} never answered");
            }
        };
        let mut stopped = None;
        for seq in 1..=WRITES {
            let out = if seq == STOP_AT {
                let mut leader = None;
                for node in client.nodes() {
                    let m = node.metrics().await.unwrap();
                    if m.leader == Some(m.id) {
                        leader = Some(node.clone());
                    }
                }
                let leader = leader.expect("a leader answered the first writes");
                stopped = Some(leader.id());
                let (out, stop) = tokio::join!(propose(seq), leader.shutdown());
                stop.unwrap();
                out
            } else {
                propose(seq).await
            };
            assert_eq!(out, swapped(seq), "write {seq}");
        }
        // An explicit retry of the last write: the remembered answer, not a second apply.
        assert_eq!(propose(WRITES).await, swapped(WRITES));
        assert_eq!(client.propose(write(3)).await.unwrap().1, KvOutput::Stale);
        let read = client.read(KvQuery::Get("chain".into())).await.unwrap();
        assert_eq!(read, KvOutput::Value(Some(WRITES.to_string())));
        for node in client.nodes().filter(|n| Some(n.id()) != stopped) {
            node.shutdown().await.unwrap();
        }
    }

    type Replica = paxos::PaxosNode<KvMachine>;

    /// Sends `request` to the replicas in turn, following leader hints, until one answers
    /// with something other than "not the leader" or a stopped node.
    async fn paxos_request(
        nodes: &[NodeHandle<Replica>],
        request: paxos::Request<KvCommand, KvQuery>,
    ) -> KvOutput {
        let mut target = 0;
        for _ in 0..ATTEMPTS_MAX {
            let node = &nodes[target % nodes.len()];
            match node.request(request.clone()).await {
                Ok(paxos::Response::Applied { output, .. }) | Ok(paxos::Response::Read(output)) => {
                    return output
                }
                Ok(paxos::Response::Failed(paxos::PaxosError::NotLeader { leader: Some(l) }))
                    if l != node.id() =>
                {
                    target = nodes.iter().position(|n| n.id() == l).unwrap_or(target + 1);
                    continue;
                }
                _ => {
                    target += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        panic!("{request:?} never answered");
    }

    #[tokio::test]
    async fn on_multi_paxos() {
        let members: Vec<NodeId> = vec![1, 2, 3];
        let network = MemoryNetwork::new(5);
        let mut nodes = Vec::new();
        for &id in &members {
            let core =
                Replica::recover(paxos::Config::new(id, members.clone()).into(), vec![]).unwrap();
            let config = DriverConfig {
                persistence: Persistence::Inline,
                ..DriverConfig::default()
            };
            let transport = network.join(id).unwrap();
            nodes.push(driver::spawn(core, transport, MemStorage::new(), Bincode, config).unwrap());
        }
        // No session at the Paxos layer: deduplication here is the state machine's own.
        let propose = |seq: u64| paxos::Request::Propose {
            command: write(seq),
            session: None,
        };
        let mut stopped = None;
        for seq in 1..=WRITES {
            let out = if seq == STOP_AT {
                let mut leader = None;
                for node in &nodes {
                    if node.metrics().await.unwrap().leader == Some(node.id()) {
                        leader = Some(node.clone());
                    }
                }
                let leader = leader.expect("a leader answered the first writes");
                stopped = Some(leader.id());
                let (out, stop) =
                    tokio::join!(paxos_request(&nodes, propose(seq)), leader.shutdown());
                stop.unwrap();
                out
            } else {
                paxos_request(&nodes, propose(seq)).await
            };
            assert_eq!(out, swapped(seq), "write {seq}");
        }
        assert_eq!(
            paxos_request(&nodes, propose(WRITES)).await,
            swapped(WRITES)
        );
        let read = paxos_request(&nodes, paxos::Request::Read(KvQuery::Get("chain".into()))).await;
        assert_eq!(read, KvOutput::Value(Some(WRITES.to_string())));
        for node in nodes.iter().filter(|n| Some(n.id()) != stopped) {
            node.shutdown().await.unwrap();
        }
    }
}

/// The map (a hash table with its keys kept in order beside it) against a plain `BTreeMap`
/// over random puts, deletes, compare-and-sets and retries from a few clients on a few keys:
/// every output, every scan, the contents in order, and a snapshot's round trip agree.
mod against_a_model {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const KEYS: [&str; 6] = ["a", "ab", "abc", "b", "ba", "c"];

    #[derive(Clone, Debug)]
    enum Step {
        Put(usize, u8),
        Delete(usize),
        Cas(usize, Option<u8>, Option<u8>),
        /// The client's last command sent again.
        Retry,
    }

    fn step() -> impl Strategy<Value = (u64, Step)> {
        let key = 0..KEYS.len();
        let value = prop::option::of(0..3u8);
        let step = prop_oneof![
            (key.clone(), 0..3u8).prop_map(|(k, v)| Step::Put(k, v)),
            key.clone().prop_map(Step::Delete),
            (key, value.clone(), value).prop_map(|(k, e, n)| Step::Cas(k, e, n)),
            Just(Step::Retry),
        ];
        (1..4u64, step)
    }

    fn value(v: u8) -> String {
        format!("v{v}")
    }

    /// What the model answers to `op` (never a retry: the test answers those itself).
    fn model_apply(model: &mut BTreeMap<String, String>, op: &KvOp) -> KvOutput {
        match op {
            KvOp::Put { key, value } => KvOutput::Value(model.insert(key.clone(), value.clone())),
            KvOp::Delete { key } => KvOutput::Value(model.remove(key)),
            KvOp::Cas { key, expected, new } => {
                if model.get(key) != expected.as_ref() {
                    return KvOutput::Cas {
                        swapped: false,
                        current: model.get(key).cloned(),
                    };
                }
                match new {
                    Some(v) => model.insert(key.clone(), v.clone()),
                    None => model.remove(key),
                };
                KvOutput::Cas {
                    swapped: true,
                    current: new.clone(),
                }
            }
            _ => unreachable!("the steps make no membership commands"),
        }
    }

    proptest! {
        #[test]
        fn the_map_agrees_with_an_ordered_map(steps in prop::collection::vec(step(), 1..120)) {
            use raft::StateMachine as _;
            let mut kv = KvMachine::default();
            let mut model = BTreeMap::new();
            // Per client: its last command and the answer it got.
            let mut last: BTreeMap<u64, (KvCommand, KvOutput)> = BTreeMap::new();
            for (client, step) in steps {
                let seq = last.get(&client).map_or(0, |(c, _)| c.seq);
                let op = match step {
                    Step::Put(k, v) => put(KEYS[k], &value(v)),
                    Step::Delete(k) => KvOp::Delete { key: KEYS[k].into() },
                    Step::Cas(k, e, n) => KvOp::Cas {
                        key: KEYS[k].into(),
                        expected: e.map(value),
                        new: n.map(value),
                    },
                    Step::Retry => {
                        if let Some((command, answer)) = last.get(&client) {
                            prop_assert_eq!(&kv.apply_command(command), answer);
                        }
                        continue;
                    }
                };
                let command = cmd(client, seq + 1, op);
                let answer = kv.apply_command(&command);
                prop_assert_eq!(&answer, &model_apply(&mut model, &command.op));
                last.insert(client, (command, answer));
            }
            let contents: Vec<(String, String)> =
                kv.entries().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            let expected: Vec<(String, String)> = model.clone().into_iter().collect();
            prop_assert_eq!(&contents, &expected);
            prop_assert_eq!(kv.len(), model.len());
            prop_assert_eq!(kv.map.keys.len(), kv.map.values.len(), "the order holds every key once");
            for prefix in ["", "a", "ab", "b", "z"] {
                let entries: Vec<(String, String)> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let scan = kv.answer(&KvQuery::Scan { prefix: prefix.into(), limit: 100 });
                prop_assert_eq!(scan, KvOutput::Entries { entries, more: false });
            }
            let mut snap = Vec::new();
            kv.snapshot(&mut snap).unwrap();
            let mut copy = KvMachine::default();
            copy.restore(&mut &snap[..]).unwrap();
            prop_assert_eq!(&copy, &kv);
        }
    }
}
