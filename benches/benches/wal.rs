//! Criterion suite: throughput of the durable log's append + sync, and group commit under load.
//!
//! - `wal_append_sync/{size}B/{batch}`: append `batch` records of `size` bytes, then one `sync`
//!   (one `fdatasync`). Throughput is in records; after each benchmark a line reports records/s,
//!   MB/s and records per fsync measured over all its timed iterations.
//! - `wal_group_commit/{size}B/{writers}`: `writers` threads each submit one record at a time and
//!   wait until it is durable; one committer thread appends whatever is queued and syncs once for
//!   all of it, as the driver does. Nobody chooses a batch size: the batch is whatever arrived
//!   during the previous fsync, so records per fsync grows with the load. The line printed after
//!   it shows the factor (the target is at least 100 records per fsync).
//! - `wal_preallocate/{on,off}/{batch}`: `wal_append_sync` of 64-byte records with the segment
//!   zero-filled ahead (`WalConfig::preallocate_bytes`, the default) and without (the file grows
//!   with every sync, which then also commits the new length through the file system's journal).
//!
//! One fsync costs a few milliseconds on the reference machine, so batch 1 is bounded by a few
//! hundred records per second: group commit is what makes the log fast.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::cell::RefCell;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::wal::{Wal, WalConfig, WalStats};
use common::Storage;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

const RECORD_SIZES: [usize; 2] = [64, 4096];
const BATCHES: [u64; 3] = [1, 16, 256];
const WRITERS: [usize; 2] = [16, 256];
/// Most records the committer takes per sync (a limit, like the driver's batch limit).
const COMMIT_BATCH_MAX: usize = 4096;

fn open(dir: &std::path::Path) -> Wal {
    Wal::open(WalConfig::new(dir)).unwrap()
}

/// Batches of the preallocation comparison: one record per sync, and a small group.
const PREALLOCATE_BATCHES: [u64; 2] = [1, 16];

/// Ten samples of about two seconds each, one iteration count per sample (every iteration
/// syncs, so their time is not a line to fit).
fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sampling_mode(SamplingMode::Flat);
    support::fast_mode(group);
}

/// Compacts the log between measurements so the benchmark's disk use stays bounded.
fn compact(wal: &mut Wal) {
    wal.append_checkpoint(b"bench checkpoint").unwrap();
    wal.sync().unwrap();
}

/// What the timed regions of one benchmark did (warm-up included, compaction excluded).
#[derive(Default)]
struct Tally {
    time: Duration,
    records: u64,
    syncs: u64,
    bytes: u64,
}

impl Tally {
    /// Adds the work between two snapshots of the log's counters, taking `time`.
    fn add(&mut self, before: WalStats, after: WalStats, time: Duration) {
        self.time += time;
        self.records += after.records_synced - before.records_synced;
        self.syncs += after.syncs - before.syncs;
        self.bytes += after.bytes_appended - before.bytes_appended;
    }

    fn report(&self, name: &str) {
        let secs = self.time.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "{name}: {:.0} records/s, {:.2} MB/s, {:.1} records per fsync",
            self.records as f64 / secs,
            self.bytes as f64 / secs / 1e6,
            self.records as f64 / self.syncs.max(1) as f64,
        );
    }
}

fn append_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append_sync");
    configure(&mut group);
    for size in RECORD_SIZES {
        let record = vec![0xA5u8; size];
        for batch in BATCHES {
            let dir = tempfile::tempdir().unwrap();
            let mut wal = open(dir.path());
            let tally = RefCell::new(Tally::default());
            group.throughput(Throughput::Elements(batch));
            group.bench_with_input(
                BenchmarkId::new(format!("{size}B"), batch),
                &batch,
                |b, &batch| {
                    b.iter_custom(|iters| {
                        let before = wal.stats();
                        let elapsed = append_sync_run(&mut wal, &record, batch, iters);
                        tally.borrow_mut().add(before, wal.stats(), elapsed);
                        compact(&mut wal);
                        elapsed
                    })
                },
            );
            tally
                .borrow()
                .report(&format!("wal_append_sync/{size}B/{batch}"));
        }
    }
    group.finish();
}

/// Records waiting for the committer, each with the channel that acknowledges it.
type Queue = Mutex<Vec<mpsc::Sender<()>>>;

/// `writers` threads submit `per_writer` records each, one at a time, waiting for each to be
/// durable; one committer appends and syncs whatever is queued. Returns the elapsed time.
fn group_commit_run(wal: &mut Wal, record: &[u8], writers: usize, per_writer: u64) -> Duration {
    let shared = Arc::new((Queue::default(), Condvar::new()));
    let start = Instant::now();
    let total = writers as u64 * per_writer;
    thread::scope(|s| {
        for _ in 0..writers {
            let shared = Arc::clone(&shared);
            s.spawn(move || {
                for _ in 0..per_writer {
                    let (ack, acked) = mpsc::channel();
                    shared.0.lock().unwrap().push(ack);
                    shared.1.notify_one();
                    acked.recv().unwrap();
                }
            });
        }
        let mut committed = 0u64;
        while committed < total {
            let batch: Vec<mpsc::Sender<()>> = {
                let mut queue = shared.0.lock().unwrap();
                while queue.is_empty() {
                    queue = shared.1.wait(queue).unwrap();
                }
                let take = queue.len().min(COMMIT_BATCH_MAX);
                queue.drain(..take).collect()
            };
            for _ in &batch {
                wal.append(record).unwrap();
            }
            wal.sync().unwrap();
            committed += batch.len() as u64;
            for ack in batch {
                ack.send(()).unwrap();
            }
        }
    });
    start.elapsed()
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_group_commit");
    configure(&mut group);
    let size = RECORD_SIZES[0];
    let record = vec![0x5Au8; size];
    for writers in WRITERS {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open(dir.path());
        let tally = RefCell::new(Tally::default());
        // One criterion iteration = every writer gets one record acknowledged.
        group.throughput(Throughput::Elements(writers as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("{size}B"), writers),
            &writers,
            |b, &writers| {
                b.iter_custom(|iters| {
                    let before = wal.stats();
                    let elapsed = group_commit_run(&mut wal, &record, writers, iters);
                    tally.borrow_mut().add(before, wal.stats(), elapsed);
                    compact(&mut wal);
                    elapsed
                })
            },
        );
        tally
            .borrow()
            .report(&format!("wal_group_commit/{size}B/{writers}"));
    }
    group.finish();
}

/// `batch` records of `record` appended, then one sync, `iters` times.
fn append_sync_run(wal: &mut Wal, record: &[u8], batch: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        for _ in 0..batch {
            wal.append(record).unwrap();
        }
        wal.sync().unwrap();
    }
    start.elapsed()
}

fn preallocate(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_preallocate");
    configure(&mut group);
    let record = vec![0x3Cu8; RECORD_SIZES[0]];
    for batch in PREALLOCATE_BATCHES {
        for on in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut config = WalConfig::new(dir.path());
            if !on {
                config.preallocate_bytes = 0;
            }
            let mut wal = Wal::open(config).unwrap();
            let name = if on { "on" } else { "off" };
            group.throughput(Throughput::Elements(batch));
            group.bench_with_input(BenchmarkId::new(name, batch), &batch, |b, &batch| {
                b.iter_custom(|iters| {
                    let elapsed = append_sync_run(&mut wal, &record, batch, iters);
                    compact(&mut wal);
                    elapsed
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, append_sync, group_commit, preallocate);
criterion_main!(benches);
