//! The transport conformance suite of `common::testing` (the one a user runs against their own
//! `Transport`), run against the in-memory network and TCP on 127.0.0.1, followed by tests of what only one of them has (TCP's handshake and hostile
//! clients; the memory network's faults).
//!
//! Every wait is bounded by `tokio::time::timeout` on a condition; nothing sleeps and hopes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::testing::transport::{
    self as suite, recv_bounded, send_until_received, shutdown_all, wait_until, TransportHarness,
};
use common::transport::memory::{MemoryConfig, MemoryNetwork, MemoryTransport};
use common::transport::tcp::{TcpConfig, TcpTransport};
use common::transport::tls::testing::TestCa;
use common::transport::tls::TlsConfig;
use common::transport::{Transport, TransportError};
use common::NodeId;

/// The frame limit the suite configures on every transport.
const FRAME_MAX: usize = 256 * 1024;
/// Upper bound on any single wait in this file.
const WAIT: Duration = Duration::from_secs(10);

struct Memory {
    network: Option<MemoryNetwork>,
}

impl TransportHarness for Memory {
    type T = MemoryTransport;

    fn frame_bytes_max(&self) -> usize {
        FRAME_MAX
    }

    async fn start(&mut self, n: u64) -> Vec<MemoryTransport> {
        let network = MemoryNetwork::with_config(
            42,
            MemoryConfig {
                frame_bytes_max: FRAME_MAX,
                ..MemoryConfig::default()
            },
        )
        .unwrap();
        let nodes = (1..=n).map(|id| network.join(id).unwrap()).collect();
        self.network = Some(network);
        nodes
    }

    async fn restart(&mut self, id: NodeId) -> MemoryTransport {
        self.network.as_ref().unwrap().join(id).unwrap()
    }
}

const KEY: &[u8] = b"conformance-suite-cluster-key-32b";

fn tcp_config(id: NodeId, addrs: &BTreeMap<NodeId, SocketAddr>) -> TcpConfig {
    let mut c = TcpConfig::new(id, "conformance", KEY.to_vec(), addrs[&id], addrs.clone());
    c.frame_bytes_max = FRAME_MAX;
    c.backoff_min = Duration::from_millis(5);
    c.backoff_max = Duration::from_millis(100);
    c.handshake_timeout = Duration::from_millis(500);
    c.keepalive_interval = Duration::from_millis(200);
    c.idle_timeout = Duration::from_secs(2);
    c
}

/// Binds `n` listeners on port 0, then starts a transport on each with the learned addresses.
async fn tcp_cluster(
    n: u64,
    tweak: impl Fn(&mut TcpConfig),
) -> (Vec<TcpTransport>, BTreeMap<NodeId, SocketAddr>) {
    let mut listeners = Vec::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=n {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, l.local_addr().unwrap());
        listeners.push(l);
    }
    let nodes = listeners
        .into_iter()
        .zip(1..=n)
        .map(|(l, id)| {
            let mut c = tcp_config(id, &addrs);
            tweak(&mut c);
            TcpTransport::with_listener(c, l).unwrap()
        })
        .collect();
    (nodes, addrs)
}

#[derive(Default)]
struct Tcp {
    addrs: BTreeMap<NodeId, SocketAddr>,
}

impl TransportHarness for Tcp {
    type T = TcpTransport;

    fn frame_bytes_max(&self) -> usize {
        FRAME_MAX
    }

    async fn start(&mut self, n: u64) -> Vec<TcpTransport> {
        let (nodes, addrs) = tcp_cluster(n, |_| {}).await;
        self.addrs = addrs;
        nodes
    }

    async fn restart(&mut self, id: NodeId) -> TcpTransport {
        TcpTransport::start(tcp_config(id, &self.addrs))
            .await
            .unwrap()
    }
}

/// TCP with mutual TLS on every link: the same suite must hold inside TLS.
#[derive(Default)]
struct TcpTls {
    addrs: BTreeMap<NodeId, SocketAddr>,
    tls: BTreeMap<NodeId, TlsConfig>,
}

impl TransportHarness for TcpTls {
    type T = TcpTransport;

    fn frame_bytes_max(&self) -> usize {
        FRAME_MAX
    }

    async fn start(&mut self, n: u64) -> Vec<TcpTransport> {
        let ca = TestCa::new();
        self.tls = (1..=n).map(|id| (id, ca.config(TLS_NAME))).collect();
        let tls = self.tls.clone();
        let (nodes, addrs) = tcp_cluster(n, |c| c.tls = Some(tls[&c.id].clone())).await;
        self.addrs = addrs;
        nodes
    }

    async fn restart(&mut self, id: NodeId) -> TcpTransport {
        let mut c = tcp_config(id, &self.addrs);
        c.tls = Some(self.tls[&id].clone());
        TcpTransport::start(c).await.unwrap()
    }
}

/// The name every test certificate carries.
const TLS_NAME: &str = "conformance.cluster";

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    suite::$name(Memory { network: None }).await;
                }
            )*
        }
        mod tcp {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    suite::$name(Tcp::default()).await;
                }
            )*
        }
        mod tcp_tls {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    suite::$name(TcpTls::default()).await;
                }
            )*
        }
    };
}

conformance!(
    delivers_to_the_right_node,
    fifo_per_link,
    frames_up_to_the_limit,
    unknown_peer_rejected,
    shutdown_closes,
    try_recv_never_waits,
    delivery_resumes_after_restart,
);

// ---------------------------------------------------------------------------------------------
// TCP only: authentication and hostile clients.

mod tcp_only {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A node that is not who node 1 expects, dialing node 1 at `addr1`.
    async fn intruder(
        id: NodeId,
        addr1: SocketAddr,
        tweak: impl Fn(&mut TcpConfig),
    ) -> TcpTransport {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = BTreeMap::from([(1, addr1), (id, l.local_addr().unwrap())]);
        let mut c = tcp_config(id, &addrs);
        tweak(&mut c);
        TcpTransport::with_listener(c, l).unwrap()
    }

    /// Node 1 refuses the intruder's handshakes and delivers nothing from it, while node 2 keeps
    /// exchanging with node 1.
    async fn refused_while_good_peer_works(intruder_id: NodeId, tweak: impl Fn(&mut TcpConfig)) {
        let (mut nodes, addrs) = tcp_cluster(3, |_| {}).await;
        let mut bad = intruder(intruder_id, addrs[&1], tweak).await;
        bad.send(1, Bytes::from_static(b"let me in")).unwrap();
        wait_until("node 1 rejected a handshake", || {
            nodes[0].stats().handshakes_rejected >= 1
        })
        .await;
        let (first, rest) = nodes.split_at_mut(1);
        send_until_received(&rest[0], &mut first[0]).await;
        send_until_received(&first[0], &mut rest[0]).await;
        // Frames are written only on an authenticated connection.
        assert_eq!(
            bad.stats().frames_out,
            0,
            "the intruder never got a frame through"
        );
        assert_eq!(bad.stats().handshakes_ok, 0);
        wait_until("the intruder saw its handshake fail", || {
            bad.stats().handshakes_rejected >= 1
        })
        .await;
        bad.shutdown().await;
        shutdown_all(&mut nodes).await;
    }

    #[tokio::test]
    async fn wrong_cluster_key_rejected() {
        // Node 3 is a configured peer, but this impostor does not hold the key.
        refused_while_good_peer_works(3, |c| {
            c.cluster_key = b"not the conformance cluster key!".to_vec()
        })
        .await;
    }

    #[tokio::test]
    async fn unknown_node_id_rejected() {
        refused_while_good_peer_works(9, |_| {}).await;
    }

    #[tokio::test]
    async fn wrong_cluster_name_rejected() {
        refused_while_good_peer_works(3, |c| c.cluster = "another".into()).await;
    }

    /// Reads from `stream` until the server closes it; panics if it stays open past `WAIT`.
    async fn closed_by_server(stream: &mut tokio::net::TcpStream) {
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server kept a hostile connection open");
    }

    async fn hostile_client_disconnected(payload: &[u8]) {
        hostile_client_disconnected_with(payload, |_| {}).await;
    }

    /// [`hostile_client_disconnected`] on nodes configured by `tweak`.
    async fn hostile_client_disconnected_with(payload: &[u8], tweak: impl Fn(&mut TcpConfig)) {
        let (mut nodes, addrs) = tcp_cluster(2, tweak).await;
        let mut raw = tokio::net::TcpStream::connect(addrs[&1]).await.unwrap();
        if !payload.is_empty() {
            raw.write_all(payload).await.unwrap();
        }
        closed_by_server(&mut raw).await;
        assert!(nodes[0].stats().handshakes_rejected >= 1);
        let (first, rest) = nodes.split_at_mut(1);
        send_until_received(&rest[0], &mut first[0]).await;
        send_until_received(&first[0], &mut rest[0]).await;
        shutdown_all(&mut nodes).await;
    }

    #[tokio::test]
    async fn garbage_client_disconnected_while_good_peer_exchanges() {
        // A well-framed message that is not a handshake. The handshake timeout is far beyond
        // the wait, so only the refusal of the message can close the connection in time.
        hostile_client_disconnected_with(b"\x00\x00\x00\x0bhello world", |c| {
            c.handshake_timeout = 6 * WAIT;
        })
        .await;
    }

    #[tokio::test]
    async fn oversize_length_prefix_disconnected_without_allocating() {
        // Only the handshake's frame limit can close the connection within the wait.
        hostile_client_disconnected_with(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3], |c| {
            c.handshake_timeout = 6 * WAIT;
        })
        .await;
    }

    #[tokio::test]
    async fn silent_client_disconnected_after_handshake_timeout() {
        hostile_client_disconnected(&[]).await;
    }

    #[tokio::test]
    async fn authenticated_peer_sending_oversize_frame_is_disconnected() {
        // Node 2 allows itself larger frames than node 1 accepts: node 1 drops the connection
        // at the length prefix, node 2 reconnects, and ordinary frames flow again.
        let (mut nodes, _) = tcp_cluster(2, |c| {
            if c.id == 2 {
                c.frame_bytes_max = 2 * FRAME_MAX;
            }
        })
        .await;
        nodes[1].send(1, vec![1u8; FRAME_MAX + 1].into()).unwrap();
        wait_until("node 1 dropped the connection", || {
            nodes[0].stats().disconnects >= 1
        })
        .await;
        let (first, rest) = nodes.split_at_mut(1);
        send_until_received(&rest[0], &mut first[0]).await;
        assert!(
            first[0].stats().bytes_in < FRAME_MAX as u64,
            "the oversize frame was not delivered"
        );
        shutdown_all(&mut nodes).await;
    }

    #[tokio::test]
    async fn a_newer_connection_from_a_peer_supersedes_the_older() {
        // Two processes claiming id 2 (as after a restart whose old connection lingers): node 1
        // keeps one inbound connection per peer and closes the older one.
        let (mut nodes, addrs) = tcp_cluster(2, |_| {}).await;
        let (first, rest) = nodes.split_at_mut(1);
        send_until_received(&rest[0], &mut first[0]).await;
        let mut twin = intruder(2, addrs[&1], |_| {}).await;
        send_until_received(&twin, &mut first[0]).await;
        wait_until("node 1 closed the older connection", || {
            first[0].stats().connections_superseded >= 1
        })
        .await;
        twin.shutdown().await;
        shutdown_all(&mut nodes).await;
    }

    #[tokio::test]
    async fn peers_are_added_and_removed_at_run_time() {
        // Nodes 1 and 2 know each other; node 3 starts knowing both, but they do not know it.
        let (mut nodes, mut addrs) = tcp_cluster(2, |_| {}).await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(3, l.local_addr().unwrap());
        let mut third = TcpTransport::with_listener(tcp_config(3, &addrs), l).unwrap();
        assert!(matches!(
            nodes[0].send(3, Bytes::from_static(b"x")),
            Err(TransportError::UnknownPeer(3))
        ));
        // Node 1 refuses node 3's handshakes until it is added.
        third.send(1, Bytes::from_static(b"early")).unwrap();
        wait_until("node 1 refused the unknown node 3", || {
            nodes[0].stats().handshakes_rejected >= 1
        })
        .await;

        let peers = nodes[0].peers();
        assert!(peers.add(3, addrs[&3]).unwrap());
        assert!(!peers.add(3, addrs[&3]).unwrap(), "adding twice is a no-op");
        assert!(
            !peers.add(1, addrs[&1]).unwrap(),
            "a node is not its own peer"
        );
        assert_eq!(peers.list().keys().copied().collect::<Vec<_>>(), [2, 3]);
        send_until_received(&nodes[0], &mut third).await;
        send_until_received(&third, &mut nodes[0]).await;

        // Removed: sends fail at once, and node 3's connection and handshakes are refused.
        assert!(peers.remove(3));
        assert!(!peers.remove(3));
        assert!(matches!(
            nodes[0].send(3, Bytes::from_static(b"x")),
            Err(TransportError::UnknownPeer(3))
        ));
        let rejected = nodes[0].stats().handshakes_rejected;
        // Drain what node 3 delivered before its removal, then check nothing more arrives from it
        // while node 2 still gets through.
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(50), nodes[0].recv()).await
        {}
        for i in 0u64..20 {
            let _ = third.send(1, Bytes::from(i.to_le_bytes().to_vec()));
        }
        wait_until("node 1 refused node 3 again", || {
            nodes[0].stats().handshakes_rejected > rejected
        })
        .await;
        let (first, rest) = nodes.split_at_mut(1);
        send_until_received(&rest[0], &mut first[0]).await;
        while let Ok(Some(got)) =
            tokio::time::timeout(Duration::from_millis(50), first[0].recv()).await
        {
            assert_ne!(got.from, 3, "a removed peer delivered a frame");
        }

        // Shut down, the control refuses new peers.
        third.shutdown().await;
        shutdown_all(&mut nodes).await;
        assert!(matches!(
            peers.add(4, addrs[&2]),
            Err(TransportError::Closed)
        ));
    }

    /// A TLS cluster refuses a peer that speaks plain TCP and one whose certificate another
    /// authority signed, even though both hold the cluster key, while its members exchange.
    #[tokio::test]
    async fn tls_refuses_plain_peers_and_foreign_certificates() {
        let ca = TestCa::new();
        let (mut nodes, addrs) = tcp_cluster(3, |c| {
            if c.id != 3 {
                c.tls = Some(ca.config(TLS_NAME));
            }
        })
        .await;
        // Node 3 stays plain: nodes 1 and 2 refuse it.
        nodes[2].send(1, Bytes::from_static(b"plain")).unwrap();
        wait_until("node 1 refused the plain peer", || {
            nodes[0].stats().handshakes_rejected >= 1
        })
        .await;
        // An impostor with the right key and id but a certificate from another authority.
        let other = TestCa::new();
        let mut impostor = intruder(3, addrs[&1], |c| c.tls = Some(other.config(TLS_NAME))).await;
        impostor.send(1, Bytes::from_static(b"forged")).unwrap();
        wait_until("node 1 refused the foreign certificate", || {
            nodes[0].stats().handshakes_rejected >= 2
        })
        .await;
        // One that trusts the cluster's authority, so it accepts node 1's certificate, but
        // presents a certificate from another: only node 1's check of its certificate stops it.
        let (cert, key) = other.issue(TLS_NAME);
        let trusting = TlsConfig::from_pem(
            ca.ca_pem.as_bytes(),
            cert.as_bytes(),
            key.as_bytes(),
            TLS_NAME,
        )
        .unwrap();
        let mut presenter = intruder(3, addrs[&1], |c| c.tls = Some(trusting.clone())).await;
        presenter.send(1, Bytes::from_static(b"forged")).unwrap();
        wait_until("node 1 refused the certificate it did not issue", || {
            presenter.stats().handshakes_rejected >= 1
        })
        .await;
        let (first, rest) = nodes.split_at_mut(1);
        send_until_received(&rest[0], &mut first[0]).await;
        send_until_received(&first[0], &mut rest[0]).await;
        assert_eq!(
            rest[1].stats().frames_out,
            0,
            "the plain peer got nothing through"
        );
        assert_eq!(
            impostor.stats().frames_out,
            0,
            "the impostor got nothing through"
        );
        assert_eq!(
            presenter.stats().frames_out,
            0,
            "the holder of a foreign certificate got nothing through"
        );
        assert_eq!(presenter.stats().handshakes_ok, 0);
        impostor.shutdown().await;
        presenter.shutdown().await;
        shutdown_all(&mut nodes).await;
    }

    #[tokio::test]
    async fn disconnect_reasons_are_logged() {
        // Tests run on a current-thread runtime, so the transport's tasks log on this thread,
        // where the subscriber is the default.
        let captured = common::testing::LogCapture::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        refused_while_good_peer_works(3, |c| {
            c.cluster_key = b"not the conformance cluster key!".to_vec()
        })
        .await;
        hostile_client_disconnected(b"\x00\x00\x00\x03abc").await;
        hostile_client_disconnected(&[0xff, 0xff, 0xff, 0xff]).await;
        let log = captured.text();
        for reason in [
            "the peer does not hold the cluster key",
            "malformed handshake message",
            "frame size too big",
        ] {
            assert!(log.contains(reason), "no {reason:?} in the log:\n{log}");
        }
        assert!(
            log.contains("inbound handshake rejected; disconnecting"),
            "{log}"
        );
    }

    #[tokio::test]
    async fn full_send_queue_drops_the_new_frame() {
        // A peer that is never reachable: frames queue up to the bound, then are refused.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let addrs = BTreeMap::from([(1, l.local_addr().unwrap()), (2, dead)]);
        let mut c = tcp_config(1, &addrs);
        c.send_queue_max = 4;
        let mut t = TcpTransport::with_listener(c, l).unwrap();
        let mut refused = 0;
        for i in 0..10u8 {
            match t.send(2, Bytes::from(vec![i])) {
                Ok(()) => {}
                Err(TransportError::QueueFull {
                    peer: 2,
                    capacity: 4,
                }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        // The dialer takes frames from the queue only once connected.
        assert_eq!(refused, 6);
        assert_eq!(t.stats().dropped_queue_full, refused);
        t.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Memory only: faults.

mod memory_faults {
    use super::*;
    use common::transport::memory::LinkFaults;

    async fn two() -> (MemoryNetwork, MemoryTransport, MemoryTransport) {
        let network = MemoryNetwork::new(5);
        let a = network.join(1).unwrap();
        let b = network.join(2).unwrap();
        (network, a, b)
    }

    /// Whether `t` has nothing to receive (the memory network delivers synchronously when there
    /// is no delay, so this is exact).
    fn nothing_queued(t: &MemoryTransport) -> bool {
        t.queued() == 0
    }

    #[tokio::test(start_paused = true)]
    async fn drop_everything() {
        let (network, a, b) = two().await;
        network.faults().set_default(LinkFaults {
            drop_probability: 1.0,
            ..LinkFaults::NONE
        });
        for _ in 0..100 {
            a.send(2, Bytes::from_static(b"x")).unwrap();
        }
        assert!(nothing_queued(&b));
        assert_eq!(network.stats().dropped_fault, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn partial_drop_is_seeded() {
        async fn lost(seed: u64) -> u64 {
            let network = MemoryNetwork::new(seed);
            let a = network.join(1).unwrap();
            let _b = network.join(2).unwrap();
            network.faults().set_link(
                1,
                2,
                LinkFaults {
                    drop_probability: 0.5,
                    ..LinkFaults::NONE
                },
            );
            for _ in 0..1000 {
                a.send(2, Bytes::from_static(b"x")).unwrap();
            }
            network.stats().dropped_fault
        }
        let first = lost(11).await;
        assert_eq!(first, lost(11).await, "same seed, same losses");
        assert!((350..650).contains(&first), "about half lost: {first}");
    }

    #[tokio::test(start_paused = true)]
    async fn partition_and_heal() {
        let (network, mut a, mut b) = two().await;
        let faults = network.faults();
        faults.partition(&[1], &[2]);
        a.send(2, Bytes::from_static(b"lost")).unwrap();
        b.send(1, Bytes::from_static(b"lost")).unwrap();
        assert!(nothing_queued(&a) && nothing_queued(&b));
        assert_eq!(network.stats().dropped_partition, 2);
        faults.heal();
        a.send(2, Bytes::from_static(b"healed")).unwrap();
        b.send(1, Bytes::from_static(b"healed")).unwrap();
        assert_eq!(
            recv_bounded(&mut b).await.frame,
            Bytes::from_static(b"healed")
        );
        assert_eq!(
            recv_bounded(&mut a).await.frame,
            Bytes::from_static(b"healed")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_way_partition() {
        let (network, mut a, b) = two().await;
        network.faults().partition_one_way(&[2], &[1]);
        assert!(network.faults().is_cut(2, 1) && !network.faults().is_cut(1, 2));
        b.send(1, Bytes::from_static(b"lost")).unwrap();
        assert!(nothing_queued(&a));
        a.send(2, Bytes::from_static(b"arrives")).unwrap();
        assert_eq!(b.queued(), 1);
        drop(b);
        assert_eq!(
            a.send(2, Bytes::from_static(b"?")),
            Ok(()),
            "a node that is down is not unknown"
        );
        network.faults().isolate(1);
        let b = network.join(2).unwrap();
        b.send(1, Bytes::from_static(b"lost")).unwrap();
        a.send(2, Bytes::from_static(b"lost")).unwrap();
        assert!(nothing_queued(&a) && nothing_queued(&b));
        network.faults().clear();
        b.send(1, Bytes::from_static(b"back")).unwrap();
        assert_eq!(
            recv_bounded(&mut a).await.frame,
            Bytes::from_static(b"back")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn duplication() {
        let (network, a, mut b) = two().await;
        network.faults().set_default(LinkFaults {
            duplicate_probability: 1.0,
            ..LinkFaults::NONE
        });
        for i in 0..10u8 {
            a.send(2, Bytes::from(vec![i])).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..20 {
            got.push(recv_bounded(&mut b).await.frame[0]);
        }
        let expected: Vec<u8> = (0..10).flat_map(|i| [i, i]).collect();
        assert_eq!(got, expected, "each frame twice, in order (no delay)");
        assert_eq!(network.stats().duplicated, 10);
        assert!(nothing_queued(&b));
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_frames_until_due() {
        let (network, a, mut b) = two().await;
        network.faults().set_link(
            1,
            2,
            LinkFaults {
                delay_min: Duration::from_secs(5),
                delay_max: Duration::from_secs(5),
                ..LinkFaults::NONE
            },
        );
        let start = tokio::time::Instant::now();
        a.send(2, Bytes::from_static(b"late")).unwrap();
        assert_eq!(
            recv_bounded(&mut b).await.frame,
            Bytes::from_static(b"late")
        );
        assert!(tokio::time::Instant::now() - start >= Duration::from_secs(5));
    }
}
