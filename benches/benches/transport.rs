//! Criterion suite: the in-memory network against TCP on loopback.
//!
//! - `transport/round_trip/{memory,tcp}/SIZE`: one frame of SIZE bytes to a peer that echoes it
//!   back, waiting for the echo (latency of one exchange);
//! - `transport/throughput/{memory,tcp}/SIZE`: a burst of frames of SIZE bytes to a peer,
//!   waiting until it received them all (bytes per second).
//!
//! Both run on a two-worker tokio runtime with the default configurations (TCP with its
//! handshake done before measuring).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::transport::memory::{MemoryNetwork, MemoryTransport};
use common::transport::tcp::{TcpConfig, TcpTransport};
use common::transport::{Transport, TransportError};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use tokio::runtime::Runtime;

const SIZES: [usize; 3] = [64, 4 * 1024, 64 * 1024];
/// Bytes sent per throughput iteration (so large frames do not make an iteration huge).
const BURST_BYTES: usize = 4 * 1024 * 1024;
/// Most frames per throughput iteration.
const BURST_FRAMES_MAX: usize = 1000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Node 1 and node 2 on the in-memory network.
fn memory_pair() -> (MemoryTransport, MemoryTransport) {
    let network = MemoryNetwork::new(1);
    (network.join(1).unwrap(), network.join(2).unwrap())
}

/// Node 1 and node 2 over TCP on 127.0.0.1, connected both ways before returning.
async fn tcp_pair() -> (TcpTransport, TcpTransport) {
    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = BTreeMap::from([(1, l1.local_addr().unwrap()), (2, l2.local_addr().unwrap())]);
    let config = |id| {
        TcpConfig::new(
            id,
            "bench",
            b"transport-bench-cluster-key-32by".to_vec(),
            addrs[&id],
            addrs.clone(),
        )
    };
    let mut a = TcpTransport::with_listener(config(1), l1).unwrap();
    let mut b = TcpTransport::with_listener(config(2), l2).unwrap();
    // Warm both directions: the first frames wait for the dial and handshake.
    a.send(2, Bytes::from_static(b"warm")).unwrap();
    b.send(1, Bytes::from_static(b"warm")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), b.recv())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), a.recv())
        .await
        .unwrap()
        .unwrap();
    (a, b)
}

/// Sends, yielding while the queue is full (the benchmark measures delivery, not refusals).
async fn send_all<T: Transport>(t: &T, to: u64, frame: &Bytes) {
    loop {
        match t.send(to, frame.clone()) {
            Ok(()) => return,
            Err(TransportError::QueueFull { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
}

fn round_trip_of<T: Transport + Sync>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    kind: &str,
    (mut a, mut b): (T, T),
) {
    // Node 2 echoes every frame back.
    let echo = rt.spawn(async move {
        while let Some(inbound) = b.recv().await {
            send_all(&b, inbound.from, &inbound.frame).await;
        }
    });
    for size in SIZES {
        let frame = Bytes::from(vec![7u8; size]);
        group.throughput(Throughput::Bytes(2 * size as u64));
        group.bench_with_input(BenchmarkId::new(kind, size), &frame, |bench, frame| {
            bench.iter(|| {
                rt.block_on(async {
                    send_all(&a, 2, frame).await;
                    a.recv().await.unwrap();
                })
            });
        });
    }
    rt.block_on(a.shutdown());
    echo.abort();
}

fn round_trip(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("transport/round_trip");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(3));
    support::fast_mode(&mut group);
    round_trip_of(&mut group, &rt, "memory", memory_pair());
    let pair = rt.block_on(tcp_pair());
    round_trip_of(&mut group, &rt, "tcp", pair);
    group.finish();
}

fn throughput_of<T: Transport + Sync>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    kind: &str,
    size: usize,
    (mut a, mut b): (T, T),
) {
    let frames = (BURST_BYTES / size).min(BURST_FRAMES_MAX);
    let frame = Bytes::from(vec![7u8; size]);
    group.throughput(Throughput::Bytes((frames * size) as u64));
    group.bench_function(BenchmarkId::new(kind, size), |bench| {
        bench.iter(|| {
            rt.block_on(async {
                let send = async {
                    for _ in 0..frames {
                        send_all(&a, 2, &frame).await;
                    }
                };
                let receive = async {
                    for _ in 0..frames {
                        b.recv().await.unwrap();
                    }
                };
                tokio::join!(send, receive);
            })
        });
    });
    rt.block_on(async {
        a.shutdown().await;
        b.shutdown().await;
    });
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("transport/throughput");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    support::fast_mode(&mut group);
    for size in SIZES {
        throughput_of(&mut group, &rt, "memory", size, memory_pair());
        let pair = rt.block_on(tcp_pair());
        throughput_of(&mut group, &rt, "tcp", size, pair);
    }
    group.finish();
}

criterion_group!(benches, round_trip, throughput);
criterion_main!(benches);
