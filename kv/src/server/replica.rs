//! The replica as the client port and the metrics see it ([`Replica`]): the consensus node while
//! its storage works, an [`Outage`] while it does not. And the task behind it: [`Starter`]
//! starts the node (write-ahead log, transport, driver), and [`supervise`] watches it, takes it
//! out of service when it stops (its storage failed), probes the data directory while the
//! failure is a full disk, and starts the node again from the directory, on the same ports, once
//! there is room: the same recovery as a restart of the process, without the restart.

use tokio_util::sync::CancellationToken;

use super::storage::{
    classify_wal, probe, reopen_may_succeed_later, FaultSlot, GuardedStorage, ResumePolicy,
};
use super::*;

/// Why the node serves nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Outage {
    /// What stopped the node.
    pub(super) reason: String,
    /// Whether its storage failed (`kv_storage_failed`).
    pub(super) storage: bool,
    /// Whether it resumes by itself once its data directory has room.
    pub(super) resuming: bool,
}

impl Outage {
    /// What clients and `/health` are told.
    pub(super) fn describe(&self) -> String {
        let what = if self.storage {
            "storage unavailable"
        } else {
            "node stopped"
        };
        let next = if self.resuming {
            "resumes by itself once the data directory has room"
        } else {
            "restart the node"
        };
        format!("{what}: {}; {next}", self.reason)
    }
}

#[derive(Clone)]
enum Health {
    /// Shared: every request takes the backend, and cloning the node's handle itself touches
    /// half a dozen reference counts that every request would then contend on.
    Serving(Arc<Backend>),
    Down(Outage),
}

#[derive(Clone)]
struct State {
    health: Health,
    /// The driver counters of the nodes run before the current one, so that the metrics'
    /// counters keep growing across an in-process restart.
    stats_before: DriverStats,
}

/// The replica as the client port and the metrics see it. Cheap to clone.
#[derive(Clone)]
pub(super) struct Replica {
    state: watch::Receiver<State>,
}

impl Replica {
    /// The running node, or why there is none.
    pub(super) fn backend(&self) -> Result<Arc<Backend>, Outage> {
        match &self.state.borrow().health {
            Health::Serving(backend) => Ok(backend.clone()),
            Health::Down(outage) => Err(outage.clone()),
        }
    }

    /// The node's state for the metrics, or `None` if it does not answer.
    pub(super) async fn view(&self) -> Option<(NodeView, DriverStats)> {
        let state = self.state.borrow().clone();
        match state.health {
            Health::Serving(backend) => {
                let (view, stats) = backend.view().await?;
                Some((view, [state.stats_before, stats].into_iter().sum()))
            }
            Health::Down(outage) => Some((
                NodeView {
                    down: Some(outage.describe()),
                    ..NodeView::default()
                },
                state.stats_before,
            )),
        }
    }
}

/// Everything needed to start the node, and to start it again from its data directory.
pub(super) struct Starter {
    pub(super) options: NodeOptions,
    /// The transport's configuration; after the first start, its address is the one bound.
    pub(super) tcp: TcpConfig,
    pub(super) configs: (raft::Config, paxos::Config),
    pub(super) driver_config: DriverConfig,
    /// Every state machine the node builds publishes its address book here.
    pub(super) book: watch::Sender<AddressBook>,
    pub(super) metrics: Metrics,
    /// Where the log's guard leaves its first failure.
    pub(super) fault: FaultSlot,
    pub(super) resume: ResumePolicy,
    /// The write-ahead log's configuration (the `[wal]` table).
    pub(super) wal_config: WalConfig,
    /// The task keeping the running transport's peers in step with the address book; a
    /// restart in the same process replaces it (and its transport).
    pub(super) book_follower: Option<tokio::task::JoinHandle<()>>,
}

impl Starter {
    /// Where replicas reach this one (the address the transport bound).
    pub(super) fn listen_addr(&self) -> SocketAddr {
        self.tcp.listen_addr
    }

    /// Opens the write-ahead log (recovery truncates a torn tail), starts the transport on the
    /// replica address, keeps its peers in step with the address book, and starts the
    /// consensus node recovered from the log.
    pub(super) async fn start(&mut self) -> Result<Backend, ServeError> {
        let wal = Wal::open(self.wal_config.clone())?;
        let transport = TcpTransport::start(self.tcp.clone()).await?;
        self.tcp.listen_addr = transport.local_addr();
        if let Some(previous) = self.book_follower.take() {
            previous.abort();
        }
        self.book_follower = Some(tokio::spawn(follow_address_book(
            self.book.subscribe(),
            transport.peers(),
            self.options.id,
        )));
        let storage = TimedStorage::new(
            GuardedStorage::new(wal, self.fault.clone(), classify_wal),
            self.metrics.clone(),
        );
        let book = self.book.clone();
        let machine = move || Ok(KvMachine::with_book_watch(book.clone()));
        let (raft_config, paxos_config) = self.configs.clone();
        Ok(match self.options.protocol {
            Protocol::Raft => {
                let h = driver::spawn_recovered::<raft::RaftNode<KvMachine>, _, _, _>(
                    common::Setup::new(raft_config, machine),
                    transport,
                    storage,
                    common::codec::Bincode,
                    self.driver_config,
                )
                .await
                .map_err(|e| ServeError::Node(e.to_string()))?;
                Backend::Raft(raft::RaftHandle::new(h))
            }
            Protocol::Paxos => {
                let h = paxos::PaxosHandle::spawn_with(
                    common::Setup::new(paxos_config, machine),
                    transport,
                    storage,
                    self.driver_config,
                )
                .await
                .map_err(|e| ServeError::Node(e.to_string()))?;
                Backend::Paxos(h)
            }
        })
    }

    /// Why the node stopped with `cause`, from what the log's guard noted.
    fn outage(&self, cause: Result<(), common::driver::DriverError>) -> Outage {
        let fault = self.fault.lock().unwrap_or_else(|p| p.into_inner()).take();
        match fault {
            Some(fault) => Outage {
                reason: fault.reason,
                storage: true,
                resuming: fault.resumable,
            },
            None => Outage {
                reason: match cause {
                    Ok(()) => "the node stopped".into(),
                    Err(e) => e.to_string(),
                },
                storage: false,
                resuming: false,
            },
        }
    }

    /// Whether a start that failed with `error` may succeed after another probe: the log still
    /// short of space (or not yet released), the replica port not yet free.
    fn may_succeed_later(&self, error: &ServeError) -> bool {
        match error {
            ServeError::Storage(e) => reopen_may_succeed_later(e),
            ServeError::Transport(_) => true,
            ServeError::Node(_) => self
                .fault
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .is_some_and(|f| f.resumable),
            _ => false,
        }
    }

    /// Probes the data directory, pausing [`ResumePolicy::probe_interval`] and doubling the
    /// pause up to [`ResumePolicy::probe_interval_max`], until it has room; then starts the
    /// node again from it. `Ok(None)` if `stop` came first; an outage that needs an operator
    /// if starting failed for another reason than space.
    async fn resume(&mut self, stop: &CancellationToken) -> Result<Option<Backend>, Outage> {
        let policy = self.resume;
        let dir = self.options.data_dir.clone();
        let mut pause = policy.probe_interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return Ok(None),
            }
            pause = policy.next_pause(pause);
            let probed = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || probe(&dir, policy.free_bytes_min))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            };
            if let Err(why) = probed {
                tracing::info!("storage probe: {why}; next in {pause:?}");
                continue;
            }
            match self.start().await {
                Ok(backend) => return Ok(Some(backend)),
                Err(e) if self.may_succeed_later(&e) => {
                    tracing::warn!("resuming failed, probing again in {pause:?}: {e}");
                }
                Err(e) => {
                    return Err(Outage {
                        reason: format!("resuming failed: {e}"),
                        storage: true,
                        resuming: false,
                    })
                }
            }
        }
    }
}

/// Serves `backend` through the returned [`Replica`], and runs the task that watches it: when
/// the node stops, the replica answers with the [`Outage`]; a full disk is probed until it has
/// room, and the node started again ([`Starter::resume`]). Once `stop` is cancelled the task
/// hands leadership over and shuts the node down, and its result is that of the shutdown (the
/// outage's reason if the node was down).
pub(super) fn supervise(
    starter: Starter,
    backend: Backend,
    stop: CancellationToken,
) -> (Replica, tokio::task::JoinHandle<Result<(), ServeError>>) {
    let (state, state_rx) = watch::channel(State {
        health: Health::Serving(Arc::new(backend.clone())),
        stats_before: DriverStats::default(),
    });
    let task = tokio::spawn(watch_node(starter, backend, state, stop));
    (Replica { state: state_rx }, task)
}

async fn watch_node(
    mut starter: Starter,
    mut backend: Backend,
    state: watch::Sender<State>,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let id = starter.options.id;
    let dir = starter.options.data_dir.display().to_string();
    loop {
        let cause = tokio::select! {
            cause = backend.stopped() => cause,
            () = stop.cancelled() => {
                backend.hand_over().await;
                return backend.shutdown().await.map_err(ServeError::Node);
            }
        };
        let outage = starter.outage(cause);
        let stats_before = [state.borrow().stats_before, backend.stats()]
            .into_iter()
            .sum();
        // The stopped node's handle: whatever it still holds goes with it.
        drop(backend);
        if outage.storage {
            starter.metrics.storage_failed.set(1);
            starter.metrics.storage_failures.inc();
        }
        if outage.resuming {
            let policy = starter.resume;
            tracing::error!(
                node = id,
                reason = %outage.reason,
                "storage failed (disk full): the node stopped and refuses clients; it probes {dir} \
                 every {:?} (at most {:?}) and resumes once {} bytes are free",
                policy.probe_interval,
                policy.probe_interval_max,
                policy.free_bytes_min,
            );
        } else {
            tracing::error!(
                node = id,
                reason = %outage.reason,
                "the node stopped and refuses clients until it is restarted"
            );
        }
        state.send_replace(State {
            health: Health::Down(outage.clone()),
            stats_before,
        });
        let resumed = if outage.resuming {
            starter.resume(&stop).await
        } else {
            Ok(None)
        };
        backend = match resumed {
            Ok(Some(backend)) => backend,
            Ok(None) => {
                stop.cancelled().await;
                return Err(ServeError::Node(outage.describe()));
            }
            Err(failed) => {
                tracing::error!(node = id, reason = %failed.reason, "the node stays stopped");
                state.send_modify(|s| s.health = Health::Down(failed.clone()));
                stop.cancelled().await;
                return Err(ServeError::Node(failed.describe()));
            }
        };
        tracing::warn!(
            node = id,
            "storage has room again: the node resumed from {dir} and catches up"
        );
        starter.metrics.storage_failed.set(0);
        starter.metrics.storage_resumes.inc();
        state.send_modify(|s| s.health = Health::Serving(Arc::new(backend.clone())));
    }
}

#[cfg(test)]
mod tests {
    //! The supervisor on a one-replica Raft cluster in this process: a real log in a temporary
    //! directory and a real transport on loopback. The storage failure is injected at the
    //! guard's slot (what [`GuardedStorage`] records when the log fails; its own tests show
    //! that), the node stopped, and its storage closed, as a failure of the log leaves them.

    use super::*;

    const KEY: &[u8] = b"a test cluster key of enough bytes";
    const WAIT: Duration = Duration::from_secs(10);

    fn starter(dir: &std::path::Path) -> (Starter, NodeOptions) {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let options = NodeOptions {
            protocol: Protocol::Raft,
            id: 1,
            listen: loopback,
            client_listen: loopback,
            peers: BTreeMap::new(),
            join: Vec::new(),
            data_dir: dir.join("data"),
            cluster_key: KEY.to_vec(),
            tuning: FileConfig::default(),
            metrics_listen: None,
            tls: None,
        };
        let topology = Topology {
            peers: BTreeMap::new(),
            voters: vec![1],
            learners: Vec::new(),
            known: Vec::new(),
            initial: vec![1],
        };
        let starter = Starter {
            tcp: TcpConfig::new(1, CLUSTER_NAME, KEY.to_vec(), loopback, BTreeMap::new()),
            configs: consensus_configs(&options, &topology).unwrap(),
            options: options.clone(),
            driver_config: DriverConfig::default(),
            book: watch::channel(AddressBook::default()).0,
            metrics: Metrics::new(),
            fault: FaultSlot::default(),
            resume: ResumePolicy {
                probe_interval: Duration::from_millis(300),
                probe_interval_max: Duration::from_millis(300),
                free_bytes_min: 0,
            },
            wal_config: WalConfig::new(&options.data_dir),
            book_follower: None,
        };
        (starter, options)
    }

    fn raft(replica: &Replica) -> Option<raft::RaftHandle<KvMachine>> {
        match replica.backend().as_deref() {
            Ok(Backend::Raft(h)) => Some(h.clone()),
            _ => None,
        }
    }

    /// Waits (bounded) until `replica` is down, and says why.
    async fn wait_down(replica: &Replica) -> Outage {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Err(outage) = replica.backend() {
                return outage;
            }
            assert!(Instant::now() < deadline, "the replica never went down");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops the node as a failure of its log does: `fault` noted, the storage closed.
    async fn fail_storage(replica: &Replica, fault: &FaultSlot, resumable: bool) {
        *fault.lock().unwrap() = Some(StorageFault {
            reason: "injected: No space left on device".into(),
            resumable,
        });
        let h = raft(replica).unwrap();
        let storage = h
            .driver()
            .shutdown_and_take_storage::<TimedStorage<GuardedStorage<Wal>>>()
            .await
            .unwrap();
        drop(storage);
    }

    /// Proposes or reads until the one replica leads (bounded).
    async fn until_leader<T, F, Fut>(replica: &Replica, call: F) -> T
    where
        F: Fn(raft::RaftHandle<KvMachine>) -> Fut,
        Fut: std::future::Future<Output = Result<T, raft::ClientError>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(h) = raft(replica) {
                if let Ok(out) = call(h).await {
                    return out;
                }
            }
            assert!(Instant::now() < deadline, "no answer from the replica");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_stopped_by_a_full_disk_starts_again_from_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (mut starter, _) = starter(dir.path());
        let backend = starter.start().await.unwrap();
        let port = starter.listen_addr();
        let (fault, metrics) = (starter.fault.clone(), starter.metrics.clone());
        let stop = CancellationToken::new();
        let (replica, task) = supervise(starter, backend, stop.clone());
        let put = KvCommand {
            client: 1,
            seq: 1,
            op: KvOp::Put {
                key: "k".into(),
                value: "v".into(),
            },
        };
        until_leader(&replica, |h| {
            let put = put.clone();
            async move { h.propose(put).await }
        })
        .await;

        fail_storage(&replica, &fault, true).await;
        let outage = wait_down(&replica).await;
        assert!(outage.storage && outage.resuming, "{outage:?}");
        assert!(
            outage.describe().contains("resumes by itself"),
            "{outage:?}"
        );
        let (view, _) = replica.view().await.unwrap();
        assert!(view.down.is_some_and(|d| d.contains("storage unavailable")));
        let text = metrics.encode();
        assert!(text.contains("kv_storage_failed 1"), "{text}");

        // The probe finds room: the node starts again, on the same port, from its log.
        let value = until_leader(&replica, |h| async move {
            h.read(KvQuery::Get("k".into())).await
        })
        .await;
        assert_eq!(value, KvOutput::Value(Some("v".into())));
        assert!(
            std::net::TcpListener::bind(port).is_err(),
            "the transport is back on {port}"
        );
        let text = metrics.encode();
        assert!(
            text.contains("kv_storage_failed 0") && text.contains("kv_storage_resumes_total 1"),
            "{text}"
        );

        // A failure that is not a full disk stays: the node waits for an operator.
        fail_storage(&replica, &fault, false).await;
        let outage = wait_down(&replica).await;
        assert!(!outage.resuming, "{outage:?}");
        // An absence is checked over time: more than two probe intervals (300 ms here) pass,
        // and the node must still be down (nothing to wait on: the point is that nothing
        // happens).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let outage = replica.backend().err().unwrap();
        assert!(outage.describe().contains("restart the node"), "{outage:?}");
        stop.cancel();
        let result = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        assert!(
            matches!(&result, Err(ServeError::Node(why)) if why.contains("restart the node")),
            "{result:?}"
        );
    }
}
