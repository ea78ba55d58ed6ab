//! Conformance suites as public API (feature `testing`): the checks the workspace's own
//! storage, snapshot stores and state machines pass, for a user who plugs in their own (a
//! RocksDB-backed `Storage`, an object-store `SnapshotStore`, a state machine over an embedded
//! database) to run against theirs.
//!
//! - **Storage**: implement [`StorageSubject`] (open the storage, simulate a crash of it) and call
//!   [`storage_suite`], or its checks one by one to get a test each.
//! - **Snapshot stores**: [`snapshot_store_suite`] with a function that opens the store (again
//!   after a "restart", for a durable one).
//! - **Transports**: implement [`transport::TransportHarness`] and run the checks of
//!   [`transport`], one test each.
//! - **State machines**: [`state_machine_suite`] with the state machine's factory and a sequence
//!   of commands: determinism, snapshot round trips, damaged snapshots refused without a panic,
//!   and a reported applied index that survives reopening.
//!
//! - **Ports for process tests**: [`free_loopback_addrs`] hands out loopback addresses a test
//!   can give the processes it starts.
//! - **Logs**: [`LogCapture`], a writer to hand a `tracing` subscriber, so a test can check what
//!   was logged and at which level.
//!
//! Each check panics with a message naming what failed, the way a test assertion does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

use crate::snapshot::{SnapshotId, SnapshotReader, SnapshotStore, SnapshotWriter};
use crate::state_machine::{StateMachine, StateMachineError};
use crate::storage::{Storage, StorageError};

/// A log sink for tests: give clones of it to a `tracing` subscriber as its writer (say,
/// `tracing_subscriber::fmt().with_ansi(false).with_writer(move || sink.clone())`), then read
/// what was written with [`LogCapture::text`].
#[derive(Clone, Debug, Default)]
pub struct LogCapture(std::sync::Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The ports [`free_loopback_addrs`] hands out: below Linux's default range of automatic
/// ports (32768–60999), so that no connection's automatically chosen source port, and no other
/// test's bind of port 0, can take one between the hand-out and the bind of the process it
/// was handed to.
pub const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// `n` loopback addresses, each free when handed out, never handed out twice by one process.
///
/// Binding port 0, noting the port and releasing it, the usual way, races: the kernel gives the
/// released port to the next automatic bind or outgoing connection, which under a test's load
/// can come before the process that was handed the port binds it ("address in use"). These
/// come from [`TEST_PORTS`] instead, which the kernel never hands out by itself, starting at an
/// offset drawn from the process id (so that test binaries run one after another do not reuse
/// the previous one's ports while its processes wind down), and each is checked free by a bind.
pub fn free_loopback_addrs(n: usize) -> Vec<SocketAddr> {
    static NEXT: Mutex<Option<u32>> = Mutex::new(None);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
    let cursor = next.get_or_insert_with(|| std::process::id().wrapping_mul(2_654_435_761) % span);
    let mut addrs = Vec::with_capacity(n);
    let mut tried = 0;
    while addrs.len() < n {
        assert!(tried < span, "no free port left in {TEST_PORTS:?}");
        tried += 1;
        let port = TEST_PORTS.start + u16::try_from(*cursor % span).unwrap_or(0);
        *cursor = cursor.wrapping_add(1);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if TcpListener::bind(addr).is_ok() {
            addrs.push(addr);
        }
    }
    addrs
}

/// A storage implementation under test: opens it, and simulates a crash of it.
pub trait StorageSubject {
    /// The storage type.
    type S: Storage;
    /// Opens the storage: empty the first time, recovered from what survived afterwards.
    fn open(&mut self) -> Self::S;
    /// Crashes `s`: whatever is not synced may be lost (a prefix of it may survive).
    fn crash(&mut self, s: Self::S);
    /// The record size limit the subject configures (the suite appends one record over it).
    fn record_bytes_max(&self) -> usize;
}

/// Runs every storage check against `T`.
pub fn storage_suite<T: StorageSubject + Default>() {
    empty_storage_loads_nothing::<T>();
    append_sync_load_in_order::<T>();
    reopen_keeps_synced_records::<T>();
    crash_loses_at_most_the_unsynced_suffix::<T>();
    checkpoint_supersedes_earlier_records::<T>();
    latest_checkpoint_wins::<T>();
    unsynced_checkpoint_does_not_lose_its_predecessors::<T>();
    oversize_record_is_refused::<T>();
    finished_snapshots_survive_a_crash::<T>();
}

/// A snapshot finished in the storage's snapshot store survives a crash, like a synced record.
pub fn finished_snapshots_survive_a_crash<T: StorageSubject + Default>() {
    let mut t = T::default();
    let s = t.open();
    let store = s.snapshots();
    let file = write_snapshot(&*store, b"state");
    drop(store);
    t.crash(s);
    let s = t.open();
    assert_eq!(read_snapshot(&*s.snapshots(), file), b"state");
}

fn write_snapshot(store: &dyn SnapshotStore, data: &[u8]) -> crate::snapshot::SnapshotFile {
    let mut w = SnapshotWriter::create(store, u64::MAX).expect("snapshot created");
    for chunk in data.chunks(3) {
        w.append(chunk).expect("snapshot written");
    }
    w.finish().expect("snapshot finished")
}

fn read_snapshot(store: &dyn SnapshotStore, file: crate::snapshot::SnapshotFile) -> Vec<u8> {
    let mut out = Vec::new();
    SnapshotReader::open(store, file)
        .expect("snapshot opens")
        .read_to_end(&mut out)
        .expect("snapshot reads back intact");
    out
}

/// The [`SnapshotStore`] contract. `open` opens the store; called again, it must open the same
/// store as after a restart (for an in-memory store, a clone sharing the same snapshots).
pub fn snapshot_store_suite<S: SnapshotStore>(mut open: impl FnMut() -> S) {
    let store = open();
    assert!(store.list().unwrap().is_empty(), "a new store is empty");
    // Written in pieces, read back whole and at offsets.
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let a = write_snapshot(&store, &data);
    assert_eq!(read_snapshot(&store, a), data);
    let source = store.open(a.id).unwrap();
    assert_eq!(source.len(), data.len() as u64);
    let mut buf = [0u8; 10];
    let n = source.read_at(4995, &mut buf).unwrap();
    assert_eq!(&buf[..n], &data[4995..]);
    assert_eq!(
        source.read_at(5000, &mut buf).unwrap(),
        0,
        "read past the end"
    );
    // An unfinished snapshot is invisible, and ids only grow.
    let mut unfinished = SnapshotWriter::create(&store, u64::MAX).unwrap();
    unfinished.append(b"half").unwrap();
    drop(unfinished);
    let b = write_snapshot(&store, b"second");
    assert!(b.id > a.id, "ids grow: {} then {}", a.id, b.id);
    assert_eq!(store.list().unwrap(), vec![a.id, b.id]);
    // After a restart: the finished snapshots, nothing else; new ids still grow.
    drop(store);
    let store = open();
    assert_eq!(store.list().unwrap(), vec![a.id, b.id]);
    assert_eq!(read_snapshot(&store, b), b"second");
    let c = write_snapshot(&store, b"third");
    assert!(c.id > b.id);
    // Removal: readers opened before keep reading; a missing id is `NotFound`.
    let held = store.open(a.id).unwrap();
    store.remove(a.id).unwrap();
    store.remove(a.id).unwrap();
    assert_eq!(
        held.read_at(0, &mut buf).unwrap(),
        10,
        "an open reader survives removal"
    );
    assert!(matches!(
        store.open(a.id),
        Err(crate::SnapshotError::NotFound(SnapshotId(_)))
    ));
    assert_eq!(store.list().unwrap(), vec![b.id, c.id]);
}

/// The [`StateMachine`] contract, exercised with `commands` (give a few dozen that change the
/// state). `open` builds the state machine as the node's factory would; for a durable state
/// machine it reopens the same state, so the suite keeps one instance open at a time.
///
/// Checks: one output per command; a snapshot restores into an instance that then snapshots to
/// the same bytes and answers `query` the same; truncations of a snapshot are refused with an
/// error (or restore a different, smaller state), never a panic, and a good snapshot restores
/// afterwards; a state machine that reports an applied index reports the last `applied` one
/// after reopening, with the same state.
pub fn state_machine_suite<S: StateMachine>(
    mut open: impl FnMut() -> Result<S, StateMachineError>,
    commands: &[S::Command],
    query: &S::Query,
) {
    let snapshot_of = |s: &S| {
        let mut bytes = Vec::new();
        s.snapshot(&mut bytes).expect("snapshot written");
        bytes
    };
    let mut a = open().expect("state machine opens");
    let start = a.applied_index();
    let mut outputs = Vec::new();
    a.apply_batch(
        commands
            .iter()
            .enumerate()
            .map(|(i, c)| (start + 1 + i as u64, c)),
        &mut outputs,
    );
    let last = start + commands.len() as u64;
    a.applied(last);
    assert_eq!(outputs.len(), commands.len(), "one output per command");
    let snap = snapshot_of(&a);
    let answer = a.query(query);
    let durable = a.applied_index() != 0;
    if durable {
        assert_eq!(
            a.applied_index(),
            last,
            "applied_index is the last applied()"
        );
    }
    drop(a);

    if durable {
        let reopened = open().expect("state machine reopens");
        assert_eq!(
            reopened.applied_index(),
            last,
            "the applied index survives reopening"
        );
        assert_eq!(snapshot_of(&reopened), snap, "the state survives reopening");
    }

    // Restored (into a fresh or reopened instance): the same state.
    let mut b = open().expect("state machine opens");
    b.restore(&mut &snap[..])
        .expect("its own snapshot restores");
    assert_eq!(
        snapshot_of(&b),
        snap,
        "restore then snapshot gives the same bytes"
    );
    assert_eq!(
        b.query(query),
        answer,
        "the restored state answers the same"
    );

    // Damaged: an error or a different state, never a panic; a good snapshot restores after.
    let step = (snap.len() / 100).max(1);
    for cut in (0..snap.len()).step_by(step) {
        if b.restore(&mut &snap[..cut]).is_ok() {
            assert_ne!(
                snapshot_of(&b),
                snap,
                "a truncated snapshot restored as the whole"
            );
        }
        b.restore(&mut &snap[..])
            .expect("a good snapshot restores after a bad one");
        assert_eq!(b.query(query), answer);
    }
}

fn v(items: &[&[u8]]) -> Vec<Vec<u8>> {
    items.iter().map(|r| r.to_vec()).collect()
}

/// `loaded` must be `synced` followed by a prefix of `unsynced`.
fn assert_synced_plus_prefix(loaded: &[Vec<u8>], synced: &[&[u8]], unsynced: &[&[u8]]) {
    assert!(
        loaded.len() >= synced.len() && loaded.len() <= synced.len() + unsynced.len(),
        "loaded {} records, synced {}, unsynced {}",
        loaded.len(),
        synced.len(),
        unsynced.len()
    );
    let expected: Vec<&[u8]> = synced.iter().chain(unsynced).copied().collect();
    for (i, r) in loaded.iter().enumerate() {
        assert_eq!(r.as_slice(), expected[i], "record {i}");
    }
}

/// A new storage loads nothing, before and after a sync and a crash.
pub fn empty_storage_loads_nothing<T: StorageSubject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    assert!(s.load().unwrap().is_empty());
    s.sync().unwrap();
    assert!(s.load().unwrap().is_empty());
    t.crash(s);
    assert!(t.open().load().unwrap().is_empty());
}

/// Records load in the order appended, synced or not.
pub fn append_sync_load_in_order<T: StorageSubject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append(b"a").unwrap();
    s.append(b"bb").unwrap();
    s.append(b"").unwrap();
    // Unsynced records are part of what this instance loads.
    assert_eq!(s.load().unwrap(), v(&[b"a", b"bb", b""]));
    s.sync().unwrap();
    s.append(b"ccc").unwrap();
    assert_eq!(s.load().unwrap(), v(&[b"a", b"bb", b"", b"ccc"]));
    s.sync().unwrap();
    // A sync with nothing new is harmless.
    s.sync().unwrap();
    assert_eq!(s.load().unwrap(), v(&[b"a", b"bb", b"", b"ccc"]));
}

/// Synced records survive a crash and reopening; appending continues after them.
pub fn reopen_keeps_synced_records<T: StorageSubject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    let records: Vec<Vec<u8>> = (0..100u32)
        .map(|i| i.to_le_bytes().repeat(i as usize % 40))
        .collect();
    for r in &records {
        s.append(r).unwrap();
    }
    s.sync().unwrap();
    t.crash(s);
    let mut s = t.open();
    assert_eq!(s.load().unwrap(), records);
    // Appending continues after the recovered records.
    s.append(b"more").unwrap();
    s.sync().unwrap();
    t.crash(s);
    let loaded = t.open().load().unwrap();
    assert_eq!(loaded.len(), 101);
    assert_eq!(loaded[100], b"more");
}

/// A crash loses at most a suffix of the unsynced records, never one in the middle.
pub fn crash_loses_at_most_the_unsynced_suffix<T: StorageSubject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append(b"a").unwrap();
    s.append(b"b").unwrap();
    s.sync().unwrap();
    s.append(b"c").unwrap();
    s.append(b"d").unwrap();
    t.crash(s);
    let mut s = t.open();
    let loaded = s.load().unwrap();
    assert_synced_plus_prefix(&loaded, &[b"a", b"b"], &[b"c", b"d"]);
    // Whatever survived recovery is the new base.
    s.append(b"e").unwrap();
    s.sync().unwrap();
    t.crash(s);
    let mut expected = loaded;
    expected.push(b"e".to_vec());
    assert_eq!(t.open().load().unwrap(), expected);
}

/// A checkpoint supersedes the records before it.
pub fn checkpoint_supersedes_earlier_records<T: StorageSubject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append(b"a").unwrap();
    s.append(b"b").unwrap();
    s.sync().unwrap();
    s.append_checkpoint(b"ck").unwrap();
    s.append(b"c").unwrap();
    // Even unsynced, the latest checkpoint is where loading starts for this instance.
    assert_eq!(s.load().unwrap(), v(&[b"ck", b"c"]));
    s.sync().unwrap();
    assert_eq!(s.load().unwrap(), v(&[b"ck", b"c"]));
    t.crash(s);
    let mut s = t.open();
    assert_eq!(s.load().unwrap(), v(&[b"ck", b"c"]));
    s.append(b"d").unwrap();
    s.sync().unwrap();
    assert_eq!(s.load().unwrap(), v(&[b"ck", b"c", b"d"]));
}

/// Loading starts at the latest checkpoint.
pub fn latest_checkpoint_wins<T: StorageSubject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append_checkpoint(b"ck1").unwrap();
    s.append(b"x").unwrap();
    s.append_checkpoint(b"ck2").unwrap();
    s.append_checkpoint(b"ck3").unwrap();
    s.append(b"y").unwrap();
    s.sync().unwrap();
    assert_eq!(s.load().unwrap(), v(&[b"ck3", b"y"]));
    t.crash(s);
    assert_eq!(t.open().load().unwrap(), v(&[b"ck3", b"y"]));
}

/// A checkpoint lost in a crash leaves the records it was to replace.
pub fn unsynced_checkpoint_does_not_lose_its_predecessors<T: StorageSubject + Default>() {
    let mut t = T::default();
    let mut s = t.open();
    s.append(b"a").unwrap();
    s.sync().unwrap();
    s.append_checkpoint(b"ck").unwrap();
    t.crash(s);
    let loaded = t.open().load().unwrap();
    // Either the checkpoint survived (and supersedes "a"), or "a" is still there.
    assert!(
        loaded == v(&[b"a"]) || loaded == v(&[b"ck"]),
        "loaded {loaded:?}"
    );
}

/// A record over the maximum is refused with `RecordTooLarge`, and nothing is appended.
pub fn oversize_record_is_refused<T: StorageSubject + Default>() {
    let mut t = T::default();
    let max = t.record_bytes_max();
    let mut s = t.open();
    s.append(b"keep").unwrap();
    let big = vec![7u8; max + 1];
    match s.append(&big) {
        Err(StorageError::RecordTooLarge { len, max: got_max }) => {
            assert_eq!((len, got_max), (max + 1, max));
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(matches!(
        s.append_checkpoint(&big),
        Err(StorageError::RecordTooLarge { .. })
    ));
    // Nothing was appended, and the storage still works; exactly the maximum is fine.
    let exact = vec![9u8; max];
    s.append(&exact).unwrap();
    s.sync().unwrap();
    t.crash(s);
    assert_eq!(t.open().load().unwrap(), vec![b"keep".to_vec(), exact]);
}

/// The [`Transport`](crate::transport::Transport) contract: implement
/// [`TransportHarness`](transport::TransportHarness) for your transport and call each check (one
/// test each, under a tokio runtime). Every wait is bounded by [`WAIT`](transport::WAIT).
pub mod transport {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bytes::Bytes;

    use crate::transport::{Inbound, Transport, TransportError, TryRecvError};
    use crate::NodeId;

    /// Upper bound on any single wait of the suite.
    pub const WAIT: Duration = Duration::from_secs(10);

    /// Builds the transports under test: `n` connected ones with ids `1..=n`, and one again after
    /// it was shut down.
    #[allow(async_fn_in_trait)]
    pub trait TransportHarness {
        /// The transport type.
        type T: Transport;
        /// The frame limit the harness configures (the suite sends a frame of exactly this size).
        fn frame_bytes_max(&self) -> usize;
        /// Starts `n` transports with ids `1..=n`, able to reach each other.
        async fn start(&mut self, n: u64) -> Vec<Self::T>;
        /// Starts node `id` again (its previous transport was shut down) on the same id/address.
        async fn restart(&mut self, id: NodeId) -> Self::T;
    }

    /// The next frame `t` receives, waiting at most [`WAIT`].
    pub async fn recv_bounded<T: Transport>(t: &mut T) -> Inbound {
        tokio::time::timeout(WAIT, t.recv())
            .await
            .expect("a frame within the bound")
            .expect("transport open")
    }

    /// Polls `cond` until it holds, at most [`WAIT`].
    pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let waited = tokio::time::timeout(WAIT, async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "timed out waiting until {what}");
    }

    /// Sends numbered frames from `a` to `b` until `b` receives one from `a`: delivery is best
    /// effort across a restart, so the first frames may be lost on a connection that died.
    pub async fn send_until_received<A: Transport, B: Transport>(a: &A, b: &mut B) {
        let (from, to) = (a.local_id(), b.local_id());
        let done = tokio::time::timeout(WAIT, async {
            for attempt in 0u64.. {
                let _ = a.send(to, Bytes::from(attempt.to_le_bytes().to_vec()));
                if let Ok(Some(got)) =
                    tokio::time::timeout(Duration::from_millis(25), b.recv()).await
                {
                    assert_eq!(got.from, from);
                    return;
                }
            }
        })
        .await;
        assert!(done.is_ok(), "no delivery {from} → {to} within {WAIT:?}");
    }

    /// Shuts every transport down.
    pub async fn shutdown_all<T: Transport>(nodes: &mut [T]) {
        for n in nodes {
            n.shutdown().await;
        }
    }

    /// Every frame reaches its destination, attributed to its sender.
    pub async fn delivers_to_the_right_node<H: TransportHarness>(mut h: H) {
        let mut nodes = h.start(3).await;
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    let to = nodes[j].local_id();
                    let frame = format!("{}->{}", nodes[i].local_id(), to);
                    nodes[i].send(to, Bytes::from(frame)).unwrap();
                }
            }
        }
        for node in nodes.iter_mut() {
            let me = node.local_id();
            let mut got = Vec::new();
            for _ in 0..2 {
                let inbound = recv_bounded(node).await;
                assert_eq!(
                    inbound.frame,
                    Bytes::from(format!("{}->{}", inbound.from, me)),
                    "frame attributed to its sender and delivered to its destination"
                );
                got.push(inbound.from);
            }
            got.sort();
            let expected: Vec<NodeId> = (1..=3).filter(|&p| p != me).collect();
            assert_eq!(got, expected);
        }
        shutdown_all(&mut nodes).await;
    }

    /// Frames on one link arrive in the order sent.
    pub async fn fifo_per_link<H: TransportHarness>(mut h: H) {
        const FRAMES: u32 = 1000;
        let mut nodes = h.start(3).await;
        for seq in 0..FRAMES {
            for sender in &nodes[..2] {
                // Retry on a full queue: FIFO is about what is delivered, not about refusals.
                loop {
                    match sender.send(3, Bytes::copy_from_slice(&seq.to_le_bytes())) {
                        Ok(()) => break,
                        Err(TransportError::QueueFull { .. }) => tokio::task::yield_now().await,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }
        let mut next = BTreeMap::from([(1, 0u32), (2, 0u32)]);
        for _ in 0..2 * FRAMES {
            let inbound = recv_bounded(&mut nodes[2]).await;
            let seq = u32::from_le_bytes(inbound.frame[..].try_into().unwrap());
            let expected = next.get_mut(&inbound.from).unwrap();
            assert_eq!(seq, *expected, "in order on link {} → 3", inbound.from);
            *expected += 1;
        }
        shutdown_all(&mut nodes).await;
    }

    /// A frame of exactly the limit travels; one byte more is `FrameTooLarge`.
    pub async fn frames_up_to_the_limit<H: TransportHarness>(mut h: H) {
        let max = h.frame_bytes_max();
        let mut nodes = h.start(2).await;
        let big: Bytes = (0..max)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        nodes[0].send(2, Bytes::from_static(b"x")).unwrap();
        nodes[0].send(2, big.clone()).unwrap();
        assert_eq!(
            nodes[0].send(2, vec![0u8; max + 1].into()),
            Err(TransportError::FrameTooLarge { len: max + 1, max })
        );
        assert_eq!(
            recv_bounded(&mut nodes[1]).await.frame,
            Bytes::from_static(b"x")
        );
        assert_eq!(recv_bounded(&mut nodes[1]).await.frame, big);
        shutdown_all(&mut nodes).await;
    }

    /// Unknown peers, the node itself and empty frames are refused with typed errors.
    pub async fn unknown_peer_rejected<H: TransportHarness>(mut h: H) {
        let mut nodes = h.start(2).await;
        assert_eq!(
            nodes[0].send(99, Bytes::from_static(b"?")),
            Err(TransportError::UnknownPeer(99))
        );
        assert_eq!(
            nodes[0].send(1, Bytes::from_static(b"self")),
            Err(TransportError::UnknownPeer(1)),
            "a node is not its own peer"
        );
        assert_eq!(
            nodes[0].send(2, Bytes::new()),
            Err(TransportError::EmptyFrame),
            "empty frames are refused alike"
        );
        shutdown_all(&mut nodes).await;
    }

    /// After `shutdown`, `recv` ends and `send` is `Closed`; shutting down twice is harmless.
    pub async fn shutdown_closes<H: TransportHarness>(mut h: H) {
        let mut nodes = h.start(2).await;
        nodes[1].shutdown().await;
        assert_eq!(nodes[1].recv().await, None);
        assert_eq!(
            nodes[1].send(1, Bytes::from_static(b"late")),
            Err(TransportError::Closed)
        );
        nodes[1].shutdown().await; // idempotent
        shutdown_all(&mut nodes).await;
    }

    /// [`Transport::try_recv`] never waits: `Empty` with nothing due, the frames in the order
    /// `recv` would give them once they arrive, `Closed` after shutdown.
    pub async fn try_recv_never_waits<H: TransportHarness>(mut h: H) {
        let mut nodes = h.start(2).await;
        let mut b = nodes.pop().unwrap();
        let a = nodes.pop().unwrap();
        // Connected; the frame that proved it was the last one sent, so nothing is in flight.
        send_until_received(&a, &mut b).await;
        assert_eq!(b.try_recv(), Err(TryRecvError::Empty));
        let sent: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 8])).collect();
        for frame in &sent {
            a.send(b.local_id(), frame.clone()).unwrap();
        }
        let mut got = Vec::new();
        wait_until("the frames can be taken without waiting", || {
            while let Ok(inbound) = b.try_recv() {
                assert_eq!(inbound.from, a.local_id());
                got.push(inbound.frame);
            }
            got.len() >= sent.len()
        })
        .await;
        assert_eq!(got, sent, "all of them, in order");
        assert_eq!(b.try_recv(), Err(TryRecvError::Empty));
        b.shutdown().await;
        assert_eq!(b.try_recv(), Err(TryRecvError::Closed));
        let mut a = a;
        a.shutdown().await;
    }

    /// Delivery resumes both ways after a peer restarts on the same id.
    pub async fn delivery_resumes_after_restart<H: TransportHarness>(mut h: H) {
        let mut nodes = h.start(2).await;
        let mut b = nodes.pop().unwrap();
        let mut a = nodes.pop().unwrap();
        send_until_received(&a, &mut b).await;
        send_until_received(&b, &mut a).await;
        b.shutdown().await;
        let mut b = h.restart(2).await;
        send_until_received(&a, &mut b).await;
        send_until_received(&b, &mut a).await;
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_free_distinct_and_never_handed_out_twice() {
        let first = free_loopback_addrs(20);
        let second = free_loopback_addrs(20);
        let all: std::collections::BTreeSet<SocketAddr> =
            first.iter().chain(&second).copied().collect();
        assert_eq!(all.len(), 40, "a port was handed out twice");
        for addr in &all {
            assert!(
                TEST_PORTS.contains(&addr.port()),
                "{addr} is outside {TEST_PORTS:?}"
            );
            assert!(addr.ip().is_loopback());
        }
        // Free when handed out: the caller can bind it.
        assert!(TcpListener::bind(second[0]).is_ok());
    }
}
