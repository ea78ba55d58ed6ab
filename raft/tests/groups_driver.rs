//! Many Raft groups per process under the real driver, end to end: three hosts of several
//! groups each, every host on its own write-ahead log and snapshot directory, take puts in every
//! group while the groups snapshot and the hosts compact their shared logs; then the whole
//! cluster shuts down, reopens from those directories, and every group still holds every
//! acknowledged put; and groups added and removed at run time stay added and removed across
//! such a restart, with a removed group's snapshot files gone.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::codec::Bincode;
use common::driver::{self, DriverConfig, NodeHandle};
use common::groups::{snapshot_group, GroupId, GroupResponse, Groups, GroupsConfig, GroupsRequest};
use common::transport::memory::MemoryNetwork;
use common::wal::{Wal, WalConfig};
use common::NodeId;
use common::Storage;
use raft::kv::{KvCommand, KvOutput, KvQuery, KvStore};
use raft::{Config, RaftNode, Request, Response, Role};

type Host = Groups<RaftNode<KvStore>>;

const MEMBERS: [NodeId; 3] = [1, 2, 3];
const GROUPS: u64 = 6;
/// Puts per group.
const PUTS: u64 = 12;
/// Bound on every wait, in polls of 10 ms on the real clock (about a minute).
const POLLS_MAX: u64 = 6_000;

fn host_config(id: NodeId) -> GroupsConfig<raft::Setup<Config, KvStore>> {
    let groups = (1..=GROUPS)
        .map(|g| {
            let mut c = Config::new(id, MEMBERS.to_vec());
            c.seed = g;
            // Snapshot often, so groups checkpoint and snapshot files are shared.
            c.snapshot_log_entries_max = 4;
            (g, c.into())
        })
        .collect();
    let mut config = GroupsConfig::new(id, groups).with_configure(move |g, spec| {
        // A group added at run time: its members, one byte each.
        let members: Vec<NodeId> = spec.iter().map(|&b| NodeId::from(b)).collect();
        let mut c = Config::new(id, members);
        c.seed = g;
        c.snapshot_log_entries_max = 4;
        Ok(c.into())
    });
    config.compact_records_min = 16;
    config.compact_live_multiple = 2;
    config
}

async fn start(net: &MemoryNetwork, dirs: &[PathBuf]) -> Vec<NodeHandle<Host>> {
    let mut hosts = Vec::new();
    for (&id, dir) in MEMBERS.iter().zip(dirs) {
        let wal = Wal::open(WalConfig::new(dir)).unwrap();
        let host = driver::spawn_recovered::<Host, _, _, _>(
            host_config(id),
            net.join(id).unwrap(),
            wal,
            Bincode,
            DriverConfig::default(),
        )
        .await
        .unwrap();
        hosts.push(host);
    }
    hosts
}

/// The host leading group `g`, waiting for one (bounded).
async fn leader(hosts: &[NodeHandle<Host>], g: GroupId) -> &NodeHandle<Host> {
    for _ in 0..POLLS_MAX {
        for h in hosts {
            let m = h.metrics().await.unwrap();
            if m.groups.get(&g).is_some_and(|r| r.role == Role::Leader) {
                return h;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("group {g} elected no leader");
}

/// Sends `req` to group `g`'s leader until it is answered other than "not the leader".
async fn ask(
    hosts: &[NodeHandle<Host>],
    g: GroupId,
    req: Request<KvCommand, KvQuery>,
) -> Response<KvOutput> {
    for _ in 0..POLLS_MAX {
        let h = leader(hosts, g).await;
        match h.request((g, req.clone()).into()).await.unwrap() {
            GroupResponse::Group(_, Response::Failed(_)) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            GroupResponse::Group(_, r) => return r,
            other => panic!("group {g}: {other:?}"),
        }
    }
    panic!("group {g} answered nothing but failures");
}

fn dirs(root: &Path) -> Vec<PathBuf> {
    MEMBERS
        .iter()
        .map(|id| root.join(format!("node-{id}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_survive_a_full_restart_from_their_shared_logs() {
    let root = tempfile::tempdir().unwrap();
    let dirs = dirs(root.path());

    let net = MemoryNetwork::new(1);
    let hosts = start(&net, &dirs).await;
    for i in 0..PUTS {
        for g in 1..=GROUPS {
            let put = Request::Propose(KvCommand::Put {
                key: format!("k{}", i % 3),
                value: format!("{g}.{i}"),
            });
            let r = ask(&hosts, g, put).await;
            assert!(matches!(r, Response::Applied { .. }), "{r:?}");
        }
    }
    let mut compactions = 0;
    for h in &hosts {
        compactions += h.metrics().await.unwrap().counters.compactions;
    }
    assert!(compactions > 0, "no host compacted its log");
    for h in &hosts {
        // Taking the log back waits for the persistence thread to let it go.
        let wal: Wal = h.shutdown_and_take_storage().await.unwrap();
        drop(wal);
    }
    // Every group keeps its latest snapshot file in its host's one snapshot directory.
    for dir in &dirs {
        let files = std::fs::read_dir(dir.join("snapshots")).unwrap().count() as u64;
        assert!(files >= GROUPS, "{files} snapshot files in {dir:?}");
    }

    let net = MemoryNetwork::new(2);
    let hosts = start(&net, &dirs).await;
    for g in 1..=GROUPS {
        for k in 0..3 {
            let last = (0..PUTS).rev().find(|i| i % 3 == k).unwrap();
            let read = Request::Read(KvQuery::Get(format!("k{k}")));
            let r = ask(&hosts, g, read).await;
            assert_eq!(
                r,
                Response::Read(KvOutput::Value(Some(format!("{g}.{last}")))),
                "group {g} key k{k}"
            );
        }
    }
    for h in &hosts {
        h.shutdown().await.unwrap();
    }
}

/// Sends a request for the host itself to every host, expecting `want` from each.
async fn ask_hosts(
    hosts: &[NodeHandle<Host>],
    req: GroupsRequest<Request<KvCommand, KvQuery>>,
    want: GroupResponse<Response<KvOutput>>,
) {
    for h in hosts {
        assert_eq!(h.request(req.clone()).await.unwrap(), want);
    }
}

/// Snapshot files of group `g` in each host's store.
fn snapshot_files_of(wal: &Wal, g: GroupId) -> usize {
    let store = wal.snapshots();
    let files = store.list().unwrap();
    files
        .into_iter()
        .filter(|&f| matches!(snapshot_group(store.as_ref(), f), Ok(Some(owner)) if owner == g))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_added_and_removed_at_run_time_survive_a_full_restart() {
    const ADDED: GroupId = 100;
    let root = tempfile::tempdir().unwrap();
    let dirs = dirs(root.path());
    let net = MemoryNetwork::new(1);
    let hosts = start(&net, &dirs).await;
    let spec: Vec<u8> = MEMBERS.iter().map(|&m| m as u8).collect();
    let add = GroupsRequest::AddGroup {
        group: ADDED,
        spec: spec.clone(),
    };
    ask_hosts(&hosts, add.clone(), GroupResponse::Added(ADDED)).await;
    ask_hosts(&hosts, add.clone(), GroupResponse::AlreadyHosted(ADDED)).await;
    // Both the added group and group 1 snapshot, so both have files.
    for g in [1, ADDED] {
        for i in 0..PUTS {
            let put = Request::Propose(KvCommand::Put {
                key: "k".into(),
                value: format!("{g}.{i}"),
            });
            let r = ask(&hosts, g, put).await;
            assert!(matches!(r, Response::Applied { .. }), "{r:?}");
        }
    }
    let remove = GroupsRequest::RemoveGroup { group: 1 };
    ask_hosts(&hosts, remove.clone(), GroupResponse::Removed(1)).await;
    ask_hosts(&hosts, remove, GroupResponse::UnknownGroup(1)).await;
    for h in &hosts {
        let wal: Wal = h.shutdown_and_take_storage().await.unwrap();
        assert_eq!(
            snapshot_files_of(&wal, 1),
            0,
            "the removed group's files are gone"
        );
        assert!(
            snapshot_files_of(&wal, ADDED) >= 1,
            "the added group snapshotted"
        );
        drop(wal);
    }

    let net = MemoryNetwork::new(2);
    let hosts = start(&net, &dirs).await;
    for h in &hosts {
        let groups = h.metrics().await.unwrap().groups;
        assert!(groups.contains_key(&ADDED), "the added group is back");
        assert!(!groups.contains_key(&1), "the removed group stays removed");
    }
    let read = Request::Read(KvQuery::Get("k".into()));
    let r = ask(&hosts, ADDED, read).await;
    let last = format!("{ADDED}.{}", PUTS - 1);
    assert_eq!(r, Response::Read(KvOutput::Value(Some(last))));
    let put = Request::Propose(KvCommand::Put {
        key: "k".into(),
        value: "x".into(),
    });
    assert_eq!(
        hosts[0].request((1, put).into()).await.unwrap(),
        GroupResponse::UnknownGroup(1)
    );
    for h in &hosts {
        h.shutdown().await.unwrap();
    }
}
