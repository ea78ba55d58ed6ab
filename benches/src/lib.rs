//! Shared code of the benchmarks and the `shootout` binary.
//!
//! The shootout measures every protocol through **the same plumbing**: the tokio driver
//! ([`common::driver`]), the same transport (in-memory network or TCP loopback), the same codec
//! ([`Bincode`](common::codec::Bincode)) and the same storage
//! ([`MemStorage`](common::MemStorage), or the write-ahead log with fsync when durable). What
//! differs is only the protocol core, so the differences in the table are the protocols' own.
//!
//! # How a run works
//!
//! For each protocol ([`Contender`]), transport and concurrency level, [`measure()`] starts a
//! cluster ([`Contender::start`]), runs a *closed loop*: `concurrency` clients each issue one
//! operation ([`Cluster::run_op`]), wait for its acknowledgement, and issue the next, first for a
//! warm-up period (discarded), then for the measured period. Latencies go into an HDR histogram;
//! the driver counters of every node ([`DriverStats`](common::driver::DriverStats)) are read
//! before and after the measured period to give messages, bytes and syncs per operation. The
//! result is a [`Row`]; [`render_table`](report::table::render_table) prints the rows. Beside
//! each row stands the paper's cost of one operation ([`Contender::theory`], [`Theory`]); a
//! measured message count more than [`THEORY_TOLERANCE`](measure::THEORY_TOLERANCE) away from it
//! becomes a [`finding`](measure::finding).
//!
//! The crash scenario ([`measure_crash`], [`Plan::run_faults`]) runs a closed loop, crashes the
//! leader or coordinator a third of the way in ([`Cluster::crash_leader`]: its driver stops and
//! it stays down) and reports the window of unavailability (from the crash to the first
//! acknowledgement of an operation issued after it) and the operations blocked or failed in it.
//! A request in flight at the crashed node fails at once (its driver answers that it stopped),
//! so such requests count as failed, not blocked; every client retries after 1 ms, so `failed`
//! counts attempts.
//!
//! # Where things are
//!
//! - [`contender`]: the traits a protocol implements to enter the shootout ([`Contender`],
//!   [`Cluster`]), the paper's cost of an operation ([`Theory`]) and the shared workload
//!   ([`command`]);
//! - [`cluster`]: starting a cluster's nodes through the driver over the chosen transport and
//!   storage ([`ClusterSpec`], [`Nodes`]);
//! - [`measure`](mod@measure): the closed loop, its [`Workload`], the measured [`Row`] and the [`Plan`] of a
//!   whole run;
//! - [`faults`]: the crash and slow-link scenarios ([`measure_fault`], [`FaultRow`]);
//! - [`report`]: the [`Report`] of a run and its renderings: text and Markdown tables, JSON, the
//!   SVG charts and the HTML page;
//! - [`wan`]: the wide-area scenario; [`viewer`]: the trace viewer's JSON export;
//!   [`hashring`]: the placement algorithms side by side; one module per adapter
//!   ([`demo`], [`raft`](mod@raft), [`paxos`](mod@paxos), [`twopc`], [`threepc`], and
//!   [`sharded`]: 2PC over Raft groups).
//!
//! The criterion suites (`benches/benches/`) share their quick-pass setting through
//! `benches/benches/support/mod.rs`, so criterion stays a development dependency.
//!
//! # Adding a protocol
//!
//! Each protocol is one adapter module, `benches/src/<protocol>.rs`, of about a hundred lines:
//!
//! 1. Write the cluster type. Most adapters hold a [`Nodes<N>`] (which starts the nodes over the
//!    requested transport and storage, through the driver) and implement [`Cluster::run_op`] by
//!    sending one request, for instance to the current leader, retrying on "not the leader":
//!
//!    ```text
//!    struct RaftCluster { nodes: Nodes<RaftNode>, leader: AtomicUsize }
//!
//!    #[async_trait]
//!    impl Cluster for RaftCluster {
//!        async fn run_op(&self, client: usize, seq: u64) -> Result<(), BenchError> {
//!            let command = benches::command(client, seq); // the shared 16-byte workload
//!            // ... send to the leader, follow redirects, map a failure to BenchError::Op
//!        }
//!        fn stats(&self) -> DriverStats { self.nodes.stats() }
//!        async fn shutdown(&self) -> Result<(), BenchError> { self.nodes.shutdown().await }
//!    }
//!    ```
//!
//! 2. Write the contender: a unit struct whose [`Contender::start`] calls [`Nodes::start`] with a
//!    function building each node's configuration, then waits until the cluster is ready (a
//!    leader is elected) so that the measurement starts in the steady state.
//! 3. Register it in [`contenders`].
//!
//! [`demo`] is the smallest complete adapter; copy it.
//!
//! # The core shootout (the `peers` feature)
//!
//! The shootout above runs whole nodes; the core shootout compares the consensus cores alone
//! with the libraries people compare them with. With the `peers` feature (off by default, so
//! plain builds and tests never compile omnipaxos and raft-rs), `benches::peers` pumps
//! omnipaxos, raft-rs, our Multi-Paxos and our Raft the same way in one thread: one FIFO queue,
//! no codec, records in memory, rounds of W commands at the leader after an unmeasured election.
//!
//! ```text
//! cargo run --release -p benches --features peers --bin core-shootout            # ~15 s
//! cargo run --release -p benches --features peers --bin core-shootout -- --quick # one pass
//! cargo run --release -p benches --features peers --bin core-shootout -- --write-docs
//! cargo bench -p benches --features peers --bench peers                          # criterion
//! # one row, e.g. under a profiler:
//! cargo run --release -p benches --features peers --bin core-shootout -- \
//!     --only our-raft --replicas 3 --in-flight 100
//! ```
//!
//! The binary prints, per setup (3 replicas with W = 1 and 100, 5 replicas with W = 100),
//! commands applied at the leader per second (median and range over `--reps`), the ratio to the
//! best peer, and allocations and messages per command; it writes
//! `target/core-shootout/core-shootout.{md,json}`, and with `--write-docs` refreshes the
//! committed `docs/core-shootout.{md,json}`.
//!
//! # Many groups per process (the `groups` binary)
//!
//! `cargo run --release -p benches --bin groups` starts three copies of itself as processes,
//! each hosting 1, 16 or 256 Raft groups behind one [`common::groups::Groups`] host (one TCP
//! transport, one write-ahead log with fsync), and prints throughput, latency, frames,
//! records and fsyncs per operation; `docs/groups.md` has a recorded run and how to read it.

pub mod commit;
pub mod demo;
mod error;
pub mod hashring;
pub mod paxos;
#[cfg(feature = "peers")]
pub mod peers;
pub mod raft;
pub mod redb_kv;
pub mod sharded;
pub mod threepc;
pub mod twopc;

pub mod cluster;
pub mod contender;
pub mod faults;
pub mod measure;
pub mod report;
pub mod viewer;
pub mod wan;

// The vocabulary of an adapter (`src/<protocol>.rs`), at the root where every adapter reaches it.
pub use cluster::{ClusterSpec, Nodes, TransportKind};
pub use contender::{command, contenders, Cluster, Contender, Theory, COMMAND_BYTES};
pub use error::BenchError;
// Running a shootout and keeping its figures.
pub use faults::{measure_crash, measure_fault, Fault, FaultRow};
pub use measure::{findings, measure, Plan, Row, Workload};
pub use report::{Machine, Report};
