//! Two-phase commit over Raft groups ("2pc-raft") as a shootout contender: the sharded store of
//! [`kv::shard`], whose cross-partition transactions run two-phase commit through the groups'
//! logs. Beside plain [`twopc`](crate::twopc) and [`threepc`](crate::threepc) it shows what
//! replicating every step of 2PC buys (no coordinator crash blocks anything, and no network
//! fault splits a decision) and what it costs (messages, records and latency).
//!
//! # The cluster
//!
//! `nodes` processes, each one [`ShardHost`] (many Raft groups behind one driver, one
//! connection per peer, one log) started by [`Nodes`] over the spec's transport and storage,
//! like every other contender. The store's layout: [`PARTITIONS_PER_NODE`] partitions per
//! process, each a Raft group on [`REPLICAS`] processes placed by the ring (all of them on a
//! smaller cluster); the map group on the first [`MAP_REPLICAS`] processes. The contender
//! serves once every group has a leader.
//!
//! # One operation
//!
//! Client `c` owns two keys in two different partitions ([`client_keys`]); its operation is
//! one transaction that blindly writes the shared 16-byte command ([`crate::command`], in hex)
//! to both, run by a [`TxDriver`] over the processes' handles: prepare the coordinator group's
//! part (which creates the transaction's record), prepare the other part, decide in the
//! coordinator group's log, finish the other part, forget the record. Every step is a Raft
//! round in one group. The driver follows "not the leader" hints and tries another process
//! when one does not answer (a crashed process's handle fails at once); the operation is
//! acknowledged when the driver reports the transaction committed.
//!
//! A driver is in-process here, so to model a coordinator *process* crashing, a transaction
//! belongs to the process whose coordinator group prepared its record (the leader of that
//! group when it started): when that process crashes, its transactions vanish with it, as a
//! plain 2PC coordinator's do, and whatever they left prepared is the resolver's.
//!
//! # The resolver
//!
//! A [`Resolver`] runs in a background task for the cluster's whole life: it scans the
//! partitions' groups for prepared parts (one group every [`RESOLVER_SCAN_PAUSE`]) and
//! resolves any still there after [`RESOLVE_AFTER`] by deciding abort in the coordinator
//! group's log (which answers the real outcome if the transaction was decided) and finishing
//! the part with it. So after the crash of the process that coordinated many transactions,
//! the other processes elect new leaders for its groups within an election timeout, and the
//! resolver finishes its transactions: [`Cluster::undecided`] falls to 0, where plain 2PC's
//! participants wait for the coordinator forever. Its scans are reads through Raft, so they
//! add a few messages per second to the counts (a small share of `msgs/op` under load).
//!
//! # The fault scenarios
//!
//! - **Crash** ([`Cluster::crash_leader`]): the process that leads the most groups crashes
//!   and stays down. The shared "unavailable ms" column ends at the first acknowledgement of
//!   any operation issued after the crash, and transactions whose groups the crashed process
//!   did not lead never stop, so it stays near zero; the wait of the others (about an election
//!   timeout) and the transactions the crash cut off are in [`CrashReport`], logged at `info`
//!   when the cluster shuts down (`RUST_LOG=warn,benches::sharded=info`).
//! - **Slow links** ([`Cluster::slow_leader_links`]): the same process's outgoing frames take
//!   1 s for half a second; its groups elect other leaders meanwhile.
//! - After both, [`Cluster::undecided`] counts the prepared parts still in the groups, and
//!   [`Cluster::decision_conflicts`] the clients whose two keys disagree (a transaction applied
//!   in one partition and not in the other): a decision is one entry in one log, so there is
//!   no way to take it both ways.
//!
//! # Theory
//!
//! A transaction of `k` parts takes `2k + 1` Raft rounds, one per step: `k` prepares, one
//! decision, `k - 1` finishes, one forget (a committed transaction's record is dropped once
//! every part finished). A Raft round in a group of `r` replicas is 2 message delays and
//! `2(r - 1)` messages, and appends one record at each of the `r` replicas. So a transaction
//! costs `(2k + 1) · 2(r - 1)` messages, `(2k + 1) · r` records and, with the steps in
//! sequence, `2(2k + 1)` message delays until the driver reports it committed ([`theory`]).
//! For `k = 2` and `r = 3`: 20 messages, 15 records, 10 delays, against plain 2PC's 8
//! messages, 6 records and 4 delays with two participants. The driver's calls to the leaders
//! go through in-process handles and are not messages here; a driver in another process would
//! add two delays per step.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use common::driver::DriverStats;
use common::groups::{GroupId, GroupResponse, GroupsConfig};
use common::kv_store::{KvOutput, KvQuery};
use common::txn::TxId;
use common::NodeId;
use kv::shard::{
    Layout, Resolver, ResolverStats, ShardConfig, ShardHost, ShardOutput, ShardQuery, ShardRequest,
    ShardResponse, TxDriver, TxInDoubt, TxOutput, TxResult, TxWrite,
};
use raft::{Config, RaftError, Request, Response, Role};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::raft::LEADER_WAIT;
use crate::{command, BenchError, Cluster, ClusterSpec, Contender, Nodes, Theory};

/// Partitions of the store per process.
pub const PARTITIONS_PER_NODE: u32 = 2;
/// Replicas of every partition's group (every process, on a smaller cluster).
pub const REPLICAS: usize = 3;
/// Members of the map group: the first processes.
pub const MAP_REPLICAS: usize = 3;
/// Partitions one shootout transaction touches.
pub const PARTS_PER_TX: usize = 2;
/// How long a prepared part stays before the resolver finishes it. Well above a
/// transaction's usual duration (a driver that is merely slow has its transaction aborted),
/// well below a fault scenario's length.
pub const RESOLVE_AFTER: Duration = Duration::from_secs(1);
/// The resolver's pause after each scan of a group (and after a request that got no answer).
pub const RESOLVER_SCAN_PAUSE: Duration = Duration::from_millis(10);
/// A driver's pause before it tries again after a request that got no answer.
pub const RETRY_PAUSE: Duration = Duration::from_millis(1);
/// Longest wait for one request's answer before the driver tries elsewhere (a process whose
/// links are slow may hold a request long after another process took over its groups).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest one operation may take before it is given up (its transaction is then the
/// resolver's).
pub const OP_DEADLINE: Duration = Duration::from_secs(10);
/// Keys tried, at most, to find a client's second key in another partition than its first.
pub const KEY_PROBES_MAX: u32 = 1024;
/// Added to a client's index to make the `coordinator` field of its transactions' ids, so
/// they are not mistaken for process ids.
pub const TX_CLIENT_BASE: u64 = 1_000;

/// Two-phase commit over Raft groups as a shootout contender.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardedTwoPc;

/// Replicas of each partition on a cluster of `nodes` processes.
pub fn replicas(nodes: usize) -> usize {
    nodes.clamp(1, REPLICAS)
}

/// The store's layout on a cluster of `nodes` processes.
pub fn layout(nodes: usize) -> Result<Layout, BenchError> {
    let partitions = u32::try_from(nodes)
        .ok()
        .and_then(|n| n.checked_mul(PARTITIONS_PER_NODE))
        .ok_or_else(|| BenchError::Invalid(format!("{nodes} processes")))?
        .max(PARTS_PER_TX as u32);
    let replication = u32::try_from(replicas(nodes)).unwrap_or(1);
    Layout::new(partitions, replication).map_err(BenchError::Invalid)
}

/// What the theory says a transaction of [`PARTS_PER_TX`] parts costs on `nodes` processes
/// (see the module documentation): `2k + 1` Raft rounds of `2(r - 1)` messages and 2 delays.
pub fn theory(nodes: usize) -> Theory {
    let rounds = raft_rounds(PARTS_PER_TX);
    let r = replicas(nodes) as f64;
    Theory {
        message_delays: 2 * rounds,
        messages_per_op: f64::from(rounds) * 2.0 * (r - 1.0),
    }
}

/// Raft rounds of a committing transaction of `parts` parts: `parts` prepares, one decision,
/// `parts - 1` finishes and one forget (one round for a transaction of one part).
pub fn raft_rounds(parts: usize) -> u32 {
    let parts = u32::try_from(parts).unwrap_or(u32::MAX);
    if parts <= 1 {
        1
    } else {
        parts.saturating_mul(2).saturating_add(1)
    }
}

/// Records a committing transaction appends, all replicas together: one per replica and round.
pub fn theory_records(nodes: usize) -> u64 {
    u64::from(raft_rounds(PARTS_PER_TX)) * replicas(nodes) as u64
}

/// Client `client`'s two keys, in two different partitions of `layout`.
pub fn client_keys(layout: &Layout, client: usize) -> Result<(String, String), BenchError> {
    let first = format!("c{client}");
    let home = layout.partition_of(&first);
    (0..KEY_PROBES_MAX)
        .map(|j| format!("c{client}/{j}"))
        .find(|k| layout.partition_of(k) != home)
        .map(|second| (first, second))
        .ok_or_else(|| {
            BenchError::Invalid(format!(
                "no key of client {client} outside partition {home} in {KEY_PROBES_MAX} tries"
            ))
        })
}

/// Process `id`'s share of the store on `spec`'s cluster.
fn shard_config(spec: &ClusterSpec, layout: Layout, id: NodeId) -> ShardConfig {
    let members = spec.members();
    let mut raft = Config::new(id, vec![id]);
    raft.seed = spec.seed;
    // Many groups per process: heartbeats on shared ticks go to a peer in one message.
    raft.heartbeat_aligned = true;
    ShardConfig {
        id,
        layout,
        map_group: members.iter().copied().take(MAP_REPLICAS).collect(),
        initial_processes: members.into_iter().collect(),
        raft,
    }
}

#[async_trait]
impl Contender for ShardedTwoPc {
    fn name(&self) -> &'static str {
        "2pc-raft"
    }

    fn theory(&self, nodes: usize) -> Theory {
        theory(nodes)
    }

    async fn start(&self, spec: &ClusterSpec) -> Result<Arc<dyn Cluster>, BenchError> {
        Ok(ShardedCluster::start(spec).await?)
    }
}

/// One client's driver (kept between its operations, so its leader hints stay warm) and keys.
struct ClientState {
    driver: TxDriver,
    keys: (String, String),
}

/// A running 2PC-over-Raft cluster: the processes, the drivers of the clients, and the
/// resolver's task.
pub struct ShardedCluster {
    nodes: Arc<Nodes<ShardHost>>,
    layout: Layout,
    /// A driver that knows the map (the genesis map, which never changes here), cloned for
    /// every new client.
    template: TxDriver,
    /// Each client's driver and keys, taken out while its operation runs.
    clients: Mutex<BTreeMap<usize, ClientState>>,
    /// Every client's keys, for the split check ([`Cluster::decision_conflicts`]).
    keys: Mutex<BTreeMap<usize, (String, String)>>,
    /// The next transaction's sequence number (unique over the cluster's life: a warm-up and
    /// a measured loop both count their operations from 0).
    next_tx: AtomicU64,
    resolver: Mutex<Option<JoinHandle<()>>>,
    resolver_stats: Arc<Mutex<ResolverStats>>,
    /// What the crash did, for the log line at shutdown ([`CrashReport`]).
    crash: Mutex<CrashReport>,
}

/// What the fault scenario's crash did to this cluster, beyond the shared [`FaultRow`]
/// columns: logged at `info` when the cluster shuts down, and returned by
/// [`ShardedCluster::crash_report`].
///
/// The shared "unavailable ms" column ends at the first acknowledgement of an operation issued
/// after the crash; here, transactions whose groups the crashed process did not lead go on at
/// once, so that column stays near zero. These figures show the wait of the others.
///
/// [`FaultRow`]: crate::FaultRow
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// When the crash happened.
    pub at: Option<Instant>,
    /// Transactions dropped because the process that coordinated them crashed (left to the
    /// resolver).
    pub abandoned: u64,
    /// Transactions in flight at the crash that committed afterwards.
    pub carried_over: u64,
    /// The longest of their waits, from the crash to their commit, in microseconds: about an
    /// election timeout when a group they touched was led by the crashed process.
    pub longest_wait_us: u64,
}

impl ShardedCluster {
    /// Starts the processes, waits until every group has a leader, and starts the resolver.
    pub async fn start(spec: &ClusterSpec) -> Result<Arc<ShardedCluster>, BenchError> {
        spec.validate()?;
        let layout = layout(spec.nodes)?;
        let mut configs = BTreeMap::new();
        for id in spec.members() {
            let config = shard_config(spec, layout, id).groups_config();
            configs.insert(id, config.map_err(BenchError::Invalid)?);
        }
        let genesis = shard_config(spec, layout, 1)
            .genesis()
            .map_err(BenchError::Invalid)?;
        let nodes = Nodes::start(spec, |id, _| {
            configs
                .get(&id)
                .cloned()
                // Never taken: there is a configuration for every member. An empty one fails
                // the host's validation, so the start would report it.
                .unwrap_or_else(|| GroupsConfig::new(id, Vec::new()))
        })
        .await?;
        let nodes = Arc::new(nodes);
        let mut template = TxDriver::new(genesis.map_group.clone());
        template.router_mut().learn(&genesis);
        let cluster = ShardedCluster {
            nodes: nodes.clone(),
            layout,
            template,
            clients: Mutex::new(BTreeMap::new()),
            keys: Mutex::new(BTreeMap::new()),
            next_tx: AtomicU64::new(0),
            resolver: Mutex::new(None),
            resolver_stats: Arc::default(),
            crash: Mutex::new(CrashReport::default()),
        };
        if let Err(e) = cluster.wait_for_leaders(LEADER_WAIT).await {
            let _ = nodes.shutdown().await;
            return Err(e);
        }
        // The resolver reads the map itself, from the map group.
        let resolver = Resolver::new(
            genesis.map_group.clone(),
            u64::try_from(RESOLVE_AFTER.as_millis()).unwrap_or(u64::MAX),
        );
        let task = tokio::spawn(resolve(nodes, resolver, cluster.resolver_stats.clone()));
        *lock(&cluster.resolver) = Some(task);
        Ok(Arc::new(cluster))
    }

    /// What the resolver has done so far.
    pub fn resolver_stats(&self) -> ResolverStats {
        lock(&self.resolver_stats).clone()
    }

    /// What the crash did so far (nothing before [`Cluster::crash_leader`]).
    pub fn crash_report(&self) -> CrashReport {
        *lock(&self.crash)
    }

    /// The store's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Runs client `client`'s next transaction until both its parts are prepared, then drops
    /// its driver without deciding: a coordinator that vanished between the votes and the
    /// decision, which only the resolver can finish. For tests of the resolver.
    pub async fn prepare_and_abandon(&self, client: usize) -> Result<TxId, BenchError> {
        let mut state = self.take_client(client)?;
        let tx = self.begin(&mut state, client, 0);
        let deadline = Instant::now() + OP_DEADLINE;
        let mut prepared = 0;
        while prepared < PARTS_PER_TX {
            if Instant::now() >= deadline {
                return Err(BenchError::Op(format!("{tx} not prepared in time")));
            }
            let Some((node, request)) = state.driver.next_request() else {
                return Err(BenchError::Op(format!("{tx} ended before it was prepared")));
            };
            let answer = ask(&self.nodes, node, request.clone()).await;
            if matches!(&answer, Some(a) if is_prepared(a)) {
                prepared += 1;
            }
            let pause = needs_pause(answer.as_ref());
            state.driver.observe(node, &request, answer.as_ref());
            if state.driver.result().is_some() {
                return Err(BenchError::Op(format!("{tx} ended before it was prepared")));
            }
            if pause {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        // A fresh driver next time: this one is forgotten with its transaction.
        Ok(tx)
    }

    /// Takes client `client`'s state out (a fresh one for a new client, or one whose last
    /// operation was dropped half-way).
    fn take_client(&self, client: usize) -> Result<ClientState, BenchError> {
        if let Some(state) = lock(&self.clients).remove(&client) {
            return Ok(state);
        }
        let keys = client_keys(&self.layout, client)?;
        lock(&self.keys).insert(client, keys.clone());
        Ok(ClientState {
            driver: self.template.clone(),
            keys,
        })
    }

    /// Begins client `client`'s transaction for its operation `seq`: the command, in hex, to
    /// both its keys.
    fn begin(&self, state: &mut ClientState, client: usize, seq: u64) -> TxId {
        let mut value = String::with_capacity(2 * crate::COMMAND_BYTES);
        for b in command(client, seq) {
            let _ = write!(value, "{b:02x}");
        }
        let tx = TxId::new(
            TX_CLIENT_BASE + client as u64,
            self.next_tx.fetch_add(1, Ordering::Relaxed),
        );
        let writes = vec![
            TxWrite {
                key: state.keys.0.clone(),
                value: value.clone(),
            },
            TxWrite {
                key: state.keys.1.clone(),
                value,
            },
        ];
        state.driver.begin(tx, Vec::new(), writes);
        tx
    }

    /// Runs the driver's transaction to its end. A transaction belongs to the process whose
    /// coordinator group prepared its record: if that process crashes, the transaction is
    /// dropped where it stands (see the module documentation).
    async fn drive(&self, driver: &mut TxDriver, tx: TxId) -> Result<(), BenchError> {
        let deadline = Instant::now() + OP_DEADLINE;
        let mut owner: Option<usize> = None;
        loop {
            match driver.result() {
                Some(TxResult::Committed) => return Ok(()),
                Some(TxResult::Aborted(why)) => {
                    return Err(BenchError::Op(match why {
                        Some(refusal) => format!("{tx} aborted: {refusal}"),
                        None => format!("{tx} aborted"),
                    }))
                }
                None => {}
            }
            if let Some(i) = owner.filter(|&i| self.nodes.is_crashed(i)) {
                lock(&self.crash).abandoned += 1;
                return Err(BenchError::Op(format!(
                    "{tx}: its coordinator process {} crashed; the resolver finishes it",
                    self.nodes.handles[i].id()
                )));
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Op(format!(
                    "{tx} not decided in {OP_DEADLINE:?}"
                )));
            }
            let Some((node, request)) = driver.next_request() else {
                return Err(BenchError::Op(format!("{tx}: the driver stopped")));
            };
            let answer = ask(&self.nodes, node, request.clone()).await;
            if owner.is_none() && matches!(&answer, Some(a) if is_prepared(a)) {
                // The first part prepared is the coordinator group's (parts prepare in order).
                owner = index_of(&self.nodes, node);
            }
            let pause = needs_pause(answer.as_ref());
            driver.observe(node, &request, answer.as_ref());
            if pause {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// Waits until every group has a leader on a live process.
    async fn wait_for_leaders(&self, wait: Duration) -> Result<(), BenchError> {
        let groups = u64::from(self.layout.partitions) + 1;
        let deadline = Instant::now() + wait;
        loop {
            let led = self.leaders().await;
            let count = led.values().map(Vec::len).sum::<usize>();
            if count as u64 >= groups {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BenchError::NotReady(format!(
                    "{count} of {groups} groups have a leader after {wait:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The groups each live process leads, by index into the handles.
    async fn leaders(&self) -> BTreeMap<usize, Vec<GroupId>> {
        let mut led = BTreeMap::new();
        for (i, handle) in self.nodes.handles.iter().enumerate() {
            if self.nodes.is_crashed(i) {
                continue;
            }
            if let Ok(m) = handle.metrics().await {
                let groups: Vec<GroupId> = m
                    .groups
                    .iter()
                    .filter(|(_, g)| g.role == Role::Leader)
                    .map(|(&id, _)| id)
                    .collect();
                led.insert(i, groups);
            }
        }
        led
    }

    /// The live process leading the most groups (the lowest id on a tie), once every group
    /// has a leader: the coordinator of most transactions, as it leads most coordinator groups.
    async fn busiest_leader(&self) -> Result<usize, BenchError> {
        self.wait_for_leaders(LEADER_WAIT).await?;
        let led = self.leaders().await;
        led.iter()
            .max_by_key(|(&i, groups)| (groups.len(), std::cmp::Reverse(i)))
            .map(|(&i, _)| i)
            .ok_or_else(|| BenchError::NotReady("no live process".into()))
    }

    /// Asks `query` of group `group`'s leader, trying every live process until one answers
    /// (bounded by [`LEADER_WAIT`]).
    async fn read(&self, group: GroupId, query: ShardQuery) -> Result<ShardOutput, BenchError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            for (i, handle) in self.nodes.handles.iter().enumerate() {
                if self.nodes.is_crashed(i) {
                    continue;
                }
                let request = ShardRequest::Group(group, Request::Read(query.clone()));
                if let Some(GroupResponse::Group(_, Response::Read(output))) =
                    ask(&self.nodes, handle.id(), request).await
                {
                    return Ok(output);
                }
            }
            if Instant::now() >= deadline {
                return Err(BenchError::NotReady(format!(
                    "group {group} answered no read in {LEADER_WAIT:?}"
                )));
            }
            tokio::time::sleep(RESOLVER_SCAN_PAUSE).await;
        }
    }
}

#[async_trait]
impl Cluster for ShardedCluster {
    async fn run_op(&self, client: usize, seq: u64) -> Result<(), BenchError> {
        let mut state = self.take_client(client)?;
        let tx = self.begin(&mut state, client, seq);
        let started = Instant::now();
        let result = self.drive(&mut state.driver, tx).await;
        // The driver forgets its transaction at the next `begin`; its router stays useful.
        lock(&self.clients).insert(client, state);
        if result.is_ok() {
            let mut crash = lock(&self.crash);
            if let Some(at) = crash.at.filter(|&at| started <= at) {
                let waited = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                crash.carried_over += 1;
                crash.longest_wait_us = crash.longest_wait_us.max(waited);
            }
        }
        result
    }

    fn stats(&self) -> DriverStats {
        self.nodes.stats()
    }

    /// Crashes the process that leads the most groups, for good: the coordinator of the
    /// transactions whose coordinator group it leads. Its groups elect new leaders on the
    /// others; the resolver finishes the transactions it left.
    async fn crash_leader(&self) -> Result<Option<NodeId>, BenchError> {
        let i = self.busiest_leader().await?;
        let id = self.nodes.crash(i).await;
        lock(&self.crash).at = Some(Instant::now());
        Ok(Some(id))
    }

    /// Prepared parts in every partition's group, asked of its leader
    /// ([`ShardQuery::InDoubt`]): each a participant that voted and does not know the outcome.
    async fn undecided(&self) -> Result<Option<u64>, BenchError> {
        let mut total = 0u64;
        for p in 0..self.layout.partitions {
            let group = Layout::group_of(p);
            match self.read(group, ShardQuery::InDoubt).await? {
                ShardOutput::InDoubt(list) => {
                    total += list
                        .iter()
                        .filter(|e| matches!(e, TxInDoubt::Prepared { .. }))
                        .count() as u64;
                }
                other => {
                    return Err(BenchError::Op(format!(
                        "group {group} answered {other:?} to InDoubt"
                    )))
                }
            }
        }
        Ok(Some(total))
    }

    /// Slows every link from the process leading the most groups.
    async fn slow_leader_links(
        &self,
        delay: Duration,
        window: Duration,
    ) -> Result<Option<NodeId>, BenchError> {
        let i = self.busiest_leader().await?;
        let id = self.nodes.handles[i].id();
        if !self.nodes.slow_links_from(id, delay) {
            return Ok(None);
        }
        tokio::time::sleep(window).await;
        self.nodes.heal_links();
        Ok(Some(id))
    }

    /// Split outcomes visible in the data: clients whose two keys hold different values. Every
    /// transaction of a client writes the same value to both keys, and a client runs one
    /// transaction at a time on keys no other client writes, so the keys differ only if a
    /// transaction was applied in one partition and not the other. Keys still locked by an
    /// undecided transaction are left out.
    async fn decision_conflicts(&self) -> Result<Option<u64>, BenchError> {
        let keys: Vec<(String, String)> = lock(&self.keys).values().cloned().collect();
        let mut split = 0u64;
        for (a, b) in keys {
            let (va, vb) = (self.value(&a).await?, self.value(&b).await?);
            if let (Some(va), Some(vb)) = (va, vb) {
                if va != vb {
                    split += 1;
                }
            }
        }
        Ok(Some(split))
    }

    async fn shutdown(&self) -> Result<(), BenchError> {
        let task = lock(&self.resolver).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let crash = self.crash_report();
        if crash.at.is_some() {
            let resolver = self.resolver_stats();
            tracing::info!(
                abandoned = crash.abandoned,
                carried_over = crash.carried_over,
                longest_wait_ms = crash.longest_wait_us / 1_000,
                resolver_decisions = resolver.decisions,
                resolver_found_committed = resolver.found_committed,
                resolver_finished_parts = resolver.finished,
                "2pc-raft after the crash"
            );
        }
        self.nodes.shutdown().await
    }
}

impl ShardedCluster {
    /// `key`'s value (`Some(None)`: absent), or `None` while a transaction holds it.
    async fn value(&self, key: &str) -> Result<Option<Option<String>>, BenchError> {
        let group = Layout::group_of(self.layout.partition_of(key));
        match self
            .read(group, ShardQuery::Kv(KvQuery::Get(key.to_string())))
            .await?
        {
            ShardOutput::Kv(KvOutput::Value(v)) => Ok(Some(v)),
            ShardOutput::Refused(kv::shard::Refusal::Locked { .. }) => Ok(None),
            other => Err(BenchError::Op(format!("reading {key:?}: {other:?}"))),
        }
    }
}

impl Drop for ShardedCluster {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.resolver).take() {
            task.abort();
        }
    }
}

/// The resolver's loop: scan, resolve, pause after each scan; until the task is aborted.
async fn resolve(
    nodes: Arc<Nodes<ShardHost>>,
    mut resolver: Resolver,
    stats: Arc<Mutex<ResolverStats>>,
) {
    let started = Instant::now();
    loop {
        let scanning = resolver.is_idle();
        let (node, request) = resolver.next_request();
        let answer = ask(&nodes, node, request.clone()).await;
        let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let pause = scanning || needs_pause(answer.as_ref());
        resolver.observe(now_ms, node, &request, answer.as_ref());
        *lock(&stats) = resolver.stats().clone();
        if pause {
            tokio::time::sleep(RESOLVER_SCAN_PAUSE).await;
        }
    }
}

/// Sends `request` to process `node`; `None` when it does not answer within
/// [`REQUEST_TIMEOUT`] (crashed, stopped, unknown, or slow).
async fn ask(
    nodes: &Nodes<ShardHost>,
    node: NodeId,
    request: ShardRequest,
) -> Option<ShardResponse> {
    let i = index_of(nodes, node)?;
    tokio::time::timeout(REQUEST_TIMEOUT, nodes.handles[i].request(request))
        .await
        .ok()?
        .ok()
}

/// The index in `nodes.handles` of process `node`.
fn index_of(nodes: &Nodes<ShardHost>, node: NodeId) -> Option<usize> {
    nodes.handles.iter().position(|h| h.id() == node)
}

/// Whether `answer` says a part was prepared.
fn is_prepared(answer: &ShardResponse) -> bool {
    matches!(
        answer,
        GroupResponse::Group(
            _,
            Response::Applied {
                output: ShardOutput::Tx(TxOutput::Prepared { .. }),
                ..
            }
        )
    )
}

/// Whether to pause before the next request: nothing was learned (no answer, or a failure
/// without a leader to try instead, as while a group elects).
fn needs_pause(answer: Option<&ShardResponse>) -> bool {
    !matches!(
        answer,
        Some(GroupResponse::Group(
            _,
            Response::Applied { .. }
                | Response::Read(_)
                | Response::Failed(RaftError::NotLeader { leader: Some(_) })
        ))
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data under these locks stays consistent at every point a holder could panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_theory_counts_one_raft_round_per_step() {
        assert_eq!(raft_rounds(1), 1);
        assert_eq!(raft_rounds(2), 5);
        assert_eq!(raft_rounds(3), 7);
        let t = theory(3);
        assert_eq!(t.message_delays, 10);
        assert_eq!(t.messages_per_op, 20.0);
        assert_eq!(theory_records(3), 15);
        // Replication stays at 3 on larger clusters; a single process sends nothing.
        assert_eq!(theory(5).messages_per_op, 20.0);
        assert_eq!(theory(1).messages_per_op, 0.0);
    }

    #[test]
    fn every_client_gets_two_keys_in_two_partitions() {
        for nodes in [1, 3, 5] {
            let layout = layout(nodes).unwrap();
            assert!(layout.partitions >= 2);
            for client in 0..64 {
                let (a, b) = client_keys(&layout, client).unwrap();
                assert_ne!(layout.partition_of(&a), layout.partition_of(&b));
            }
        }
        assert_ne!(
            client_keys(&layout(3).unwrap(), 1).unwrap(),
            client_keys(&layout(3).unwrap(), 2).unwrap()
        );
    }
}
