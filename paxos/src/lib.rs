//! Multi-Paxos with a stable leader, as a sans-IO core ([`PaxosNode`]) plus an async API on the
//! workspace's tokio driver ([`PaxosHandle`], [`PaxosClient`]).
//!
//! # Guarantees
//!
//! - **Agreement**: no two replicas ever decide different values for a slot, whatever the
//!   network does (loss, duplication, reordering, partitions) and however replicas crash and
//!   restart, as long as every record a replica asked to persist is durable before its messages
//!   leave (the driver contract of [`common::node`]).
//! - **Validity**: a slot decides only a proposed batch of commands or a no-op.
//! - **Integrity**: a command proposed with a [`Session`] is applied at most once, however often
//!   the client retries it; a retry is answered with the first application's output. It is
//!   also *decided* at most once per leadership: a leader attaches a retry to the copy it already
//!   holds (queued, in flight, or found in phase 1) and checks its session table, which covers
//!   every slot chosen before its phase 1, before proposing. Across leader changes a command can
//!   still be decided twice, and no Multi-Paxos leader can prevent it: a copy accepted by a
//!   minority is invisible to the next leader's quorum, which takes the retry into a new slot,
//!   and a later leader whose quorum does see the first copy must re-propose it (it might have
//!   been chosen). The session table then skips the second copy when it is applied.
//! - **Linearizability**: proposals and [`Request::Read`]s are linearizable (reads confirm the
//!   leader's ballot with a quorum round and wait until every earlier slot is applied).
//! - **Progress** when a majority is up and connected to one replica that is itself connected to
//!   a majority, including the partial-connectivity cases where classic Multi-Paxos and Raft
//!   stall (see [Leader election](#leader-election)).
//! - **Reconfiguration** keeps all of the above while the set of acceptors changes (see
//!   [Reconfiguration](#reconfiguration)): each slot is decided by the majorities of exactly one
//!   configuration.
//!
//! Each of these is checked after every step of thousands of seeded simulations with every fault
//! of `common::sim` (the crate's `tests/` folder: one file per invariant, plus named scenarios).
//!
//! # Limitations
//!
//! - At most 64 acceptors per configuration ([`config::MEMBERS_MAX`]); one reconfiguration at a
//!   time. A change takes effect when its stop-sign is chosen, not when the new members have
//!   caught up: until a majority of the new configuration has learned the log, it cannot decide
//!   (add members one at a time, or start them early, to keep a majority ready).
//! - A removed replica is not told to stop: it becomes a passive learner (it serves catch-up and
//!   refuses requests with "not the leader").
//! - A snapshot is taken inside the step that reaches
//!   [`Config::snapshot_interval_slots`]: the state machine streams its whole state into the
//!   snapshot store (the file store syncs it) before the step returns, so the replica handles
//!   nothing else meanwhile. A snapshot transfer that stops (either side gives up, or the
//!   receiver restarts) starts again from offset 0.
//! - Reads are served by the leader only, after one quorum round per batch of reads (no
//!   leases: a lease would trade that round for a bound on clock drift).
//! - **Slow links cost fail-over time.** A heartbeat reply counts only within the round that
//!   asked for it, so each replica lengthens its rounds to twice the longest round trip it
//!   measures, from [`Config::heartbeat_ticks`] (2 ticks by default) up to
//!   [`Config::heartbeat_ticks_max`] (128 ticks by default), and shortens them again after
//!   four rounds in a row that heard a quorum with every reply back within a quarter of the
//!   round. With the defaults the election therefore makes progress whatever the message
//!   delays, as long as heartbeat round trips stay below 128 ticks: `tests/slow_network.rs`
//!   elects a leader and decides every command in every seed with delays drawn up to ten
//!   heartbeat periods or fixed in that range, ticks drifting by 20 %, 3 and 5 replicas, and
//!   with a fixed round trip of 120 ticks. The price: a failed leader is declared dead after a
//!   few rounds *of the current length*, so on links with round trips of `r` ticks fail-over
//!   takes a few times `2r` ticks instead of a few times `heartbeat_ticks` (a crashed leader is
//!   still replaced there); and after a slow period the rounds stay long for at least four
//!   rounds before they shrink back, after which fail-over is as quick as before (same file).
//!   Round trips at or beyond the cap connect nobody: each replica then reports
//!   [`Event::QuorumNotReached`] after the first round without a quorum and each time the count
//!   doubles, with the longest round trip it saw (logged as a warning once the count is past
//!   [`LEADER_QUORUM_GRACE_ROUNDS`], at debug level before: a round or two without one happens
//!   under load and changes nothing), and shows [`Metrics::round_ticks`],
//!   [`Metrics::rounds_without_quorum`] and [`Metrics::rtt_ticks_max`]. Knobs: raise
//!   `heartbeat_ticks_max` for slower links; raise `heartbeat_ticks` to send fewer heartbeats,
//!   at the price of slower fail-over on every link.
//!
//! # Paxos in five steps, and where they live
//!
//! "Paxos Made Simple" describes single-decree Paxos in five steps. Multi-Paxos runs one
//! instance per *slot* of a log, and a stable leader shares step 1 among all slots:
//!
//! 1. **Prepare** (the `Proposer`, `core/proposer.rs`): a new leader picks a ballot `b` higher than any
//!    it saw ([`Ballot`] = (round, node id)) and sends [`Message::Prepare`] for *every* slot from
//!    its first undecided one on: once per leadership, not once per command.
//! 2. **Promise** (the `Acceptor`, `core/acceptor.rs`): an acceptor whose promise is below `b` promises
//!    `b` — durably ([`Record::Promise`]) before replying — and reports each value it accepted,
//!    with its ballot ([`Message::Promise`]). Lower ballots are refused with [`Message::Nack`].
//! 3. **Propose** (the `Proposer`): with promises from a majority, the leader re-proposes, in each
//!    slot, the value accepted under the highest ballot, fills holes with [`Value::Noop`], and
//!    from then on puts client commands into fresh slots ([`Message::Accept`]): each command
//!    costs only phase 2. A command goes out at once while fewer than
//!    [`Config::eager_slots_max`] slots are in flight; under load the commands that arrive
//!    meanwhile share the next slot, and at most [`Config::in_flight_slots_max`] slots are in
//!    flight.
//! 4. **Accept** (the `Acceptor`): an acceptor accepts unless it promised a higher ballot, durably
//!    ([`Record::Accept`]) before answering [`Message::Accepted`].
//! 5. **Learn** (the `Learner`, `core/learner.rs` and `core/apply.rs`): a value accepted by a majority is chosen. The
//!    leader's commit index rides on later accepts (or on [`Message::Commit`] when idle); a
//!    replica that missed values fetches them ([`Message::CatchUpRequest`]), or the peer's
//!    snapshot, in chunks, when the peer compacted them away ([`Message::SnapshotChunk`], see
//!    [Catch-up by snapshot](#catch-up-by-snapshot-in-chunks)); slots are applied in order to
//!    the [`StateMachine`].
//!
//! # How the core is built
//!
//! [`PaxosNode`] composes one struct per role, each owning its own state: the `Acceptor` (the
//! durable promise), the `Proposer` (the leader's volatile state while leading), the `Learner`
//! (the state machine, the session table, how far it applied, who waits for which slot) and
//! the `Election`. What several roles read — the configuration, the slot log, counters — is
//! a small shared context handed to the roles explicitly. `PaxosNode`'s own methods route each
//! input to the role it concerns and carry a step's consequences from one role to another (a
//! chosen slot is applied; an applied stop-sign ends the leadership). Beside the roles:
//!
//! - `core/apply.rs`: the learner's apply pipeline (deduplicate with the session table, apply
//!   as one batch, respond);
//! - `core/recovery.rs`: replaying persisted records into the durable state, then rebuilding
//!   the replica from it;
//! - `core/reconfig.rs`, `core/snapshot.rs`, `core/transfer.rs`: stop-signs, snapshots and
//!   compaction, catch-up by snapshot in chunks;
//! - `core/heartbeat.rs` and `core/node.rs`: the election's messages, and the driver's entry
//!   points ([`common::Node`]);
//! - `core/api.rs`: [`Request`], [`Response`], [`Event`] and [`Metrics`].
//!
//! # Reconfiguration
//!
//! Changing the set of acceptors is one more chosen value, a **stop-sign**
//! ([`Value::StopSign`], `core/reconfig.rs`), after Vertical Paxos and Omni-Paxos:
//!
//! - [`Request::Reconfigure`] (or [`PaxosHandle::reconfigure`], [`PaxosClient::reconfigure`]) asks the
//!   leader of configuration `e` to put a stop-sign naming the new members in its next free
//!   slot `s` (step 3); it proposes nothing after it. Steps 4 and 5 choose it like any value.
//! - Every replica that applies the stop-sign moves to configuration `e + 1`, which decides the
//!   slots from `s + 1` on with its own majorities. Ballots carry their configuration
//!   ([`Ballot::epoch`], compared first), acceptors take part only in ballots of their own
//!   configuration, and the leader, if it stays a member, runs step 1 again with a ballot of the
//!   new epoch; if it was removed, the new members elect one among themselves.
//! - A new acceptor starts with the same [`Config::members`] as everyone (it is not in them):
//!   it learns the log, stop-sign included, by catch-up or snapshot before it promises or
//!   accepts anything.
//! - Safety: a leader that finds a stop-sign in phase 1 re-proposes it and drops later slots,
//!   unless a later slot was accepted under a higher ballot, which proves the stop-sign was never
//!   chosen (then it becomes a no-op). So once a stop-sign is chosen, the old configuration
//!   chooses nothing after it; the full argument is in `core/reconfig.rs`.
//!
//! # Leader election
//!
//! Failure detection and the choice of leader are a sub-protocol of their own
//! (`core/election.rs`), after Omni-Paxos's ballot leader election: heartbeat rounds tell each
//! replica which peers are *quorum-connected*; the leader is the highest ballot among
//! quorum-connected replicas; a replica raises its ballot only when it is quorum-connected and
//! hears the leader neither directly nor through a quorum-connected peer. Ties are broken by
//! node id, so simultaneous candidates converge at the next round; a seeded random delay makes
//! them rarer.
//!
//! Rounds are not of fixed length: each replica measures the round trip of every heartbeat
//! reply, late ones included, and sizes its rounds so that replies come back within half a
//! round (see [Limitations](#limitations) for the bounds and the price). With rounds of a fixed
//! length, a cluster whose round trips reach that length would never count anyone as
//! quorum-connected and would never elect a leader.
//!
//! A leader that stops hearing a majority steps down, so clients go to a replica that can
//! commit, but only after [`LEADER_QUORUM_GRACE_ROUNDS`] more rounds without one, not at the
//! first. Under `kv-node`'s load bench (256 clients on two cores, rounds of 20 ms) one
//! round's heartbeat replies sometimes came back late while the Accepteds kept flowing; a
//! leader that stepped down at once led again 60 to 80 ms later with a higher ballot, and every
//! client waited in between: 1 to 3 times in each of three 8-second runs, none with the grace
//! in the three runs taken in turns with them (`LOAD_BENCH_DEBUG=1 RUST_LOG=paxos=debug`
//! shows the phase 1 and step-down lines). A unit test holds the count of rounds.
//!
//! # The state machine, snapshots and catch-up
//!
//! ## The seam
//!
//! A replica drives a [`StateMachine`] (the workspace's [`common::StateMachine`], re-exported;
//! details in [`state_machine`]):
//!
//! - **Built by a factory.** [`PaxosNode`]'s [`common::Node::Config`] is a
//!   [`Setup<Config, S>`](Setup): the protocol's [`Config`] and a factory that opens the state
//!   machine at start and after every restart; a snapshot received from a peer restores into
//!   it in place. `Config::new(..).into()` uses `S::default()`; [`PaxosHandle::spawn`] takes a
//!   [`Config`] for `S: Default`, [`PaxosHandle::spawn_with`] a [`Setup`].
//! - **Positions.** The command of slot `s` is applied at log position `s + 1`;
//!   [`StateMachine::applied`]`(n)` and [`StateMachine::applied_index`]` = n` mean that every slot
//!   below `n` is applied ([`Metrics::applied`]).
//! - **Batches.** The chosen slots one step applies go to [`StateMachine::apply_batch`] together
//!   (a stop-sign ends a batch), without the retries the session table recognises; then
//!   [`StateMachine::applied`] once.
//! - **Durable state machines.** One that reports [`StateMachine::applied_index`]` = n` when
//!   opened is not restored from a snapshot of a slot at or below `n`, nor given the slots below
//!   `n` again. The session table still replays those slots; a retry of a command so skipped is
//!   refused with [`PaxosError::SessionStale`] (its output was not kept).
//!
//! ## Snapshots are files
//!
//! Every [`Config::snapshot_interval_slots`] applied slots, a replica streams a snapshot into a
//! new file of its snapshot store ([`common::Storage::snapshots`]: a directory beside the
//! write-ahead log, or memory): a header frame with the configuration in force, the
//! at-most-once session table (one frame per client), then the state machine's own stream. The
//! checkpoint ([`Record::Snapshot`]) names the file, with its length and CRC32C, so it stays small
//! however large the state; the log before it is dropped. An older file is deleted once the
//! driver reports a checkpoint naming a newer one durable ([`common::Node::checkpoints_durable`]);
//! recovery deletes every file but the one its checkpoint names.
//!
//! Recovery ([`common::Node::recover_with_snapshots`], which the driver and the simulator call)
//! opens that file, restores from it, and reads it to the end so its length and CRC32C are
//! checked. A missing file is [`PaxosError::SnapshotMissing`], one that does not match or does not
//! decode [`PaxosError::SnapshotCorrupt`], one that cannot be read [`PaxosError::SnapshotIo`]: the replica
//! does not start, and neither panics nor starts from a wrong state.
//! [`PaxosNode::recover`](common::Node::recover) uses a new, empty in-memory store, for records that
//! name no snapshot file.
//!
//! ## Catch-up by snapshot, in chunks
//!
//! A replica asking for slots below a peer's compacted log gets the peer's latest snapshot file
//! as [`Message::SnapshotChunk`]s, answered with [`Message::SnapshotAck`]s:
//!
//! - The sender reads the file at offsets, at most [`Config::snapshot_chunk_bytes_max`] bytes per
//!   chunk, with at most [`Config::snapshot_chunks_in_flight_max`] chunks unacknowledged. Each
//!   ack names the offset the receiver needs next; the sender goes back to it when it is
//!   repeated while later chunks are out, and after [`Config::retransmit_ticks`] without
//!   progress; it gives up after [`config::SNAPSHOT_SEND_TIMEOUTS_MAX`] such intervals. A
//!   transfer finishes with the file it started with, even if the sender takes a newer snapshot
//!   meanwhile.
//! - The receiver writes the chunks in order into a new file of its own store (refusing a
//!   snapshot announced larger than [`Config::snapshot_bytes_max`]); a chunk it already has or
//!   one past the offset it needs only makes it answer with that offset. So loss, duplication
//!   and reordering cost resends, nothing else. It receives one transfer at a time and asks
//!   nobody for catch-up meanwhile.
//! - Only a file whose length and CRC32C match what the sender announced is installed. A
//!   mismatch (a chunk corrupted on the way, say) is counted in [`Metrics::snapshots_rejected`],
//!   the file is discarded, and the receiver's catch-up timer asks again, which starts a new
//!   transfer.
//!
//! So a snapshot never travels as one message. The unit tests send a 17 MiB state, larger than a
//! log record or a transport frame (16 MiB), in 256 KiB chunks, and a snapshot of dozens of
//! chunks through loss, duplication and reordering; the simulations send the snapshots of a
//! quarter of their seeds in 64-byte chunks under every fault of the simulator.
//!
//! ## Knobs
//!
//! | [`Config`] field | Default | What it bounds |
//! |---|---|---|
//! | [`snapshot_interval_slots`](Config::snapshot_interval_slots) | 4 096 | applied slots kept in the log before a snapshot (0: never) |
//! | [`snapshot_log_bytes_max`](Config::snapshot_log_bytes_max) | 64 MiB | bytes of commands applied since the last snapshot before the next one (a slot holds a whole batch, so slots alone do not bound the log's memory; 0: no trigger by size) |
//! | [`snapshot_bytes_max`](Config::snapshot_bytes_max) | 64 GiB | a snapshot written or accepted |
//! | [`snapshot_chunk_bytes_max`](Config::snapshot_chunk_bytes_max) | 256 KiB | bytes per chunk (at most 8 MiB) |
//! | [`snapshot_chunks_in_flight_max`](Config::snapshot_chunks_in_flight_max) | 4 | chunks unacknowledged per transfer |
//! | [`retransmit_ticks`](Config::retransmit_ticks) | 4 | ticks without progress before a transfer resends |
//!
//! **The leader's parallel accept** ([`Config::parallel_accept`], off by default, on in
//! `kv-node`): the leader sends its Accepts while its own acceptor writes the same values
//! ([`common::Outbox::send_early`]), counts its own acceptance only once its driver reported it
//! durable ([`common::Node::records_durable`]), and answers an applied command without waiting
//! for the next sync: Raft's §10.2.1 rule, applied to phase 2. The simulations run half their
//! seeds this way; the agreement sweep also checks after every step that a slot a replica
//! learned as chosen is held durably by a majority.
//!
//! # Using the core directly
//!
//! A [`PaxosNode`] is a [`common::Node`]: feed it messages, requests and ticks, and release the
//! [`common::Effects`] it produces (records first). Here the leader's side of one command:
//!
//! ```
//! use common::{Node, NodeId, Outbox, RequestId};
//! use paxos::{Config, KvCommand, KvOutput, KvStore, Message, PaxosNode, Request, Response};
//!
//! type Queue = Vec<(NodeId, NodeId, Message<KvCommand>)>;
//!
//! /// Runs one step's effects: records would be persisted here (first!); messages are queued.
//! fn release(from: NodeId, out: &mut Outbox<PaxosNode<KvStore>>, queue: &mut Queue)
//!     -> Vec<(RequestId, Response<KvOutput>)> {
//!     let effects = out.take();
//!     queue.extend(effects.messages.into_iter().map(|(to, m)| (from, to, m)));
//!     effects.responses
//! }
//!
//! let members = vec![1, 2, 3];
//! let mut nodes: Vec<PaxosNode<KvStore>> = members
//!     .iter()
//!     .map(|&id| PaxosNode::recover(Config::new(id, members.clone()).into(), vec![]).unwrap())
//!     .collect();
//! let (mut out, mut queue, mut answers) = (Outbox::new(), Queue::new(), Vec::new());
//! // Ticks drive the election: a few heartbeat rounds elect a leader, which runs phase 1.
//! while !nodes.iter().any(|n| n.is_leader()) {
//!     for node in nodes.iter_mut() {
//!         node.tick(&mut out);
//!         release(node.id(), &mut out, &mut queue);
//!     }
//!     while let Some((from, to, msg)) = queue.pop() {
//!         nodes[(to - 1) as usize].handle_message(from, msg, &mut out);
//!         release(to, &mut out, &mut queue);
//!     }
//! }
//! // Phase 2 only: the leader proposes the command in the next slot.
//! let leader = nodes.iter().position(|n| n.is_leader()).unwrap();
//! let put = KvCommand::Put { key: "x".into(), value: "1".into() };
//! nodes[leader].handle_request(RequestId(1), Request::Propose { command: put, session: None }, &mut out);
//! release(leader as NodeId + 1, &mut out, &mut queue);
//! assert!(matches!(queue[0].2, Message::Accept { .. }));
//! while let Some((from, to, msg)) = queue.pop() {
//!     nodes[(to - 1) as usize].handle_message(from, msg, &mut out);
//!     answers.extend(release(to, &mut out, &mut queue));
//! }
//! assert_eq!(
//!     answers,
//!     vec![(RequestId(1), Response::Applied { slot: 0, output: KvOutput::Value(None) })]
//! );
//! assert_eq!(nodes[leader].state().get("x"), Some("1"));
//! ```
//!
//! # A three-replica cluster with the async API
//!
//! ```
//! use common::driver::{DriverConfig, Persistence};
//! use common::transport::memory::MemoryNetwork;
//! use common::MemStorage;
//! use paxos::{PaxosClient, Config, PaxosHandle, KvCommand, KvOutput, KvQuery, KvStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let members = vec![1, 2, 3];
//! let network = MemoryNetwork::new(7);
//! let driver = DriverConfig { persistence: Persistence::Inline, ..DriverConfig::default() };
//! let mut replicas = Vec::new();
//! for &id in &members {
//!     let transport = network.join(id).unwrap();
//!     let config = Config::new(id, members.clone());
//!     replicas.push(
//!         PaxosHandle::<KvStore>::spawn(config, transport, MemStorage::new(), driver).await.unwrap(),
//!     );
//! }
//! // The client finds the leader (following "not the leader" hints) and retries safely.
//! let client = PaxosClient::new(42, replicas.clone());
//! let put = KvCommand::Put { key: "x".into(), value: "1".into() };
//! assert_eq!(client.propose(put).await.unwrap(), KvOutput::Value(None)); // the previous value
//! let read = client.read(KvQuery::Get("x".into())).await.unwrap();
//! assert_eq!(read, KvOutput::Value(Some("1".to_string())));
//!
//! // Metrics: exactly one replica leads, and it applied the put.
//! let mut leaders = 0;
//! for r in &replicas {
//!     let m = r.metrics().await.unwrap();
//!     if m.is_leader {
//!         leaders += 1;
//!         assert!(m.applied >= 1);
//!     }
//! }
//! assert_eq!(leaders, 1);
//!
//! // Reconfiguration: replica 4 starts outside the first configuration, then joins it; it
//! // catches up before it votes. The epoch names the new configuration.
//! let config = Config::new(4, members.clone());
//! let transport = network.join(4).unwrap();
//! replicas.push(PaxosHandle::<KvStore>::spawn(config, transport, MemStorage::new(), driver).await.unwrap());
//! let client = PaxosClient::new(43, replicas.clone());
//! assert_eq!(client.reconfigure(vec![1, 2, 3, 4]).await.unwrap(), 1);
//! // Then replica 1 leaves (were it the leader, the others would elect a new one).
//! assert_eq!(client.reconfigure(vec![2, 3, 4]).await.unwrap(), 2);
//! let append = KvCommand::Append { key: "x".into(), value: "2".into() };
//! assert_eq!(client.propose(append).await.unwrap(), KvOutput::Value(Some("1".to_string())));
//! for r in &replicas {
//!     let m = r.metrics().await.unwrap();
//!     if m.is_leader {
//!         assert_eq!((m.epoch, m.members), (2, vec![2, 3, 4]));
//!     }
//! }
//! for r in &replicas {
//!     r.shutdown().await.unwrap();
//! }
//! # });
//! ```
//!
//! # Performance
//!
//! `cargo run --release -p benches --features peers --bin core-shootout` pumps this core, the
//! workspace's Raft core, omnipaxos and raft-rs the same way: one thread, FIFO delivery,
//! records kept in memory, nothing encoded (the method and the latest full run are in
//! `docs/core-shootout.md`). Binaries before (`11a5ddf`) and after the changes below, run
//! alternately three times each in one session on the idle two-core machine (load average 0.7
//! to 1.5), medians of the runs' medians in millions of commands applied per second, with the
//! ratio to omnipaxos in the same run and heap allocations per command:
//!
//! | setup | before | after | omnipaxos (after's runs) | ratio, before → after | allocations, before → after |
//! | --- | ---: | ---: | ---: | ---: | ---: |
//! | 3 replicas, 1 in flight | 1.45 | 1.71 | 2.17 | 0.66 → 0.79 | 11.01 → 5.01 |
//! | 3 replicas, 100 in flight | 12.23 | 21.36 | 15.23 | 0.82 → 1.40 | 0.33 → 0.14 |
//! | 5 replicas, 100 in flight | 6.81 | 14.28 | 12.37 | 0.55 → 1.13 | 0.51 → 0.14 |
//!
//! What was removed, and why (from `perf record -e cpu-clock` profiles):
//!
//! - **A slot's commands copied per holder.** Freeing and allocating them was over a quarter of
//!   the time with five replicas: a batch was deep-copied into the leader's log, its in-flight
//!   list, its record and every follower's Accept, and each follower copied it again into its
//!   log and record. [`Value::Batch`] now holds `Arc<[Command]>`, and [`Message::Accept`] and
//!   [`Record::Accept`] held `Arc<[Value]>` (now [`Values`], see below), so one allocation
//!   serves them all in a process (a follower across the network decodes its own and shares it
//!   between log and record). The encoding is unchanged: serde writes a shared list as a plain
//!   sequence.
//! - **Per-step lists.** The leader gathers a run of new slots and a batch's commands in lists
//!   it keeps between steps, then moves each into its shared allocation.
//! - **A tree map of owed requests.** The requests answered when a slot this replica proposed
//!   is applied were a `BTreeMap` filled at the back and emptied at the front; they are a queue.
//!
//! - **A batch in two rounds.** The first command of a batch took the eager slot at once and
//!   the rest waited for it to be chosen. [`common::Node::handle_requests`] hands a core the
//!   requests that arrived together (the driver hands over those it found waiting, the core
//!   shootout's W commands likewise); this core queues them all, then applies the eager rule
//!   once, so a batch goes out in one Accept round. Binaries before (`9da8a5c`) and after,
//!   alternated three times each in one session (load average about 3.1, another engineer's
//!   tests alongside, so only the ratios compare), medians: 3 replicas with 100 in flight
//!   19.55 → 25.88 (ratio to omnipaxos 1.39 → 1.85), 5 replicas 13.05 → 17.73 (1.12 → 1.75);
//!   messages per command 0.12 → 0.04 and 0.24 → 0.08. Nothing changes with one in flight.
//!
//! **One command in flight.** The first profile of this setup showed no protocol work on top,
//! only bookkeeping around it; three changes took it from about 0.8 of omnipaxos to about 1.0
//! (binaries `c45ceb4` and after, alternated three times each in one session with another
//! build running at low priority, so only the ratios compare; millions of commands per second,
//! ratio to omnipaxos in the same run):
//!
//! - **An empty run was still built.** After every commit the leader looks for queued
//!   commands; with none, it still collected an empty `Arc<[Value]>`, and an empty shared
//!   list allocates its counts. The requests a slot owes answers to were a `Vec` per batch;
//!   one or two now stay inline (`smallvec`). Allocations per command with one in flight:
//!   5.01 → 2.01 (with 100 in flight 0.07 → 0.05).
//! - **Lists moved through the stack.** The apply pipeline's lists and the proposer's run lists
//!   were moved out of the node and back on every step; perf put a third of `apply_decided` and
//!   of `flush_queue` on the load right after each move (a 16-byte load of a value just written
//!   as two 8-byte halves waits for the stores). The apply lists are boxed (taking them out
//!   moves a pointer) and the run lists are borrowed in place.
//! - Together: 1.74–1.83 → 2.08–2.15 M/s, ratio 0.80–0.86 → 0.96–1.04.
//!
//! The core shootout's pump for these cores moved every message through the stack the same
//! way; it now queues each step's list of messages whole, as the omnipaxos pump does (2.01–2.04
//! → 2.19–2.22 M/s here, the Raft core likewise).
//!
//! **A list of one value.** With one command in flight every run of new slots is a single
//! slot, yet its value still moved into an `Arc<[Value]>` of its own: the second of the two
//! allocations per command, after the batch's list of commands. [`Message::Accept`] and
//! [`Record::Accept`] now carry [`Values`], which holds a lone value inline (cloning it clones
//! the value: for a batch, one reference count) and shares an `Arc<[Value]>` only for longer
//! runs; the bytes on the wire and on disk are the same plain sequence. Allocations per applied
//! command in the core shootout (`--only our-paxos`, binaries `c042d7a` and after):
//!
//! | setup | allocations, before → after |
//! | --- | ---: |
//! | 3 replicas, 1 in flight | 2.01 → 1.01 |
//! | 3 replicas, 100 in flight | 0.050 → 0.050 |
//! | 5 replicas, 100 in flight | 0.050 → 0.050 |
//!
//! Throughput, binaries alternated three times each on a shared machine, so only indicative:
//! with one in flight 1.37–1.41 → 1.42–1.44 M/s; with 100 in flight no change beyond the noise
//! (3 replicas 15.11–15.78 before and 15.04–15.53 after, 5 replicas 10.46–10.65 and
//! 10.25–10.44; a second alternation of each, four times seven repetitions, put the medians
//! within 1.5 % of each other, either way). A first alternation, with other work running
//! (load average 1.3), had 3 replicas with 100 in flight about 8 % slower after; the two on
//! the idle machine did not repeat it. A [`Message`] grows from 72 to 88 bytes, as an Accept
//! holds a value inline, but only a few messages move per command once commands are batched.
//!
//! **A sync per decision.** Through the driver with the write-ahead log, a replica logged a
//! [`Record::Commit`] the moment it learned a longer chosen prefix. When nothing else was in
//! that step, as on a leader with one command in flight once the command is chosen, the record
//! was a batch of its own: one more `fdatasync` per command, which the next command's Accept
//! then queued behind. Nothing a replica sends claims its Commit records (a decision is a fact
//! about a majority's durable acceptances, and a restarted replica relearns a prefix it did not
//! log), so the record now waits for the replica's next record or its next tick. The durable
//! shootout (`shootout --protocols multi-paxos --transport tcp --durable --no-hashring --quick`,
//! the binaries before and after run in turns twice) went from 4.03 to 3.11 syncs per command
//! on three replicas with one client (6.06–6.24 to 5.29 on five), from 1,646–1,771 to
//! 2,145–2,166 commands per second and from a p50 of 549–560 µs to 424–440 µs. `kv-node` (its
//! leader accepts in parallel with its Accepts, [`Config::parallel_accept`]) showed no
//! difference beyond the noise at one client in its load bench (p50 0.44–0.48 ms before,
//! 0.43–0.56 ms after, three runs of each in turns).
//!
//! **A Commit beside every Accept.** Waiting for the next record still wrote a `Commit` with
//! each command's Accept under steady load: on every replica, two records per command where
//! one carries the data (six per command on three replicas against Raft's three). The decided
//! prefix is now logged once a tick: with the replica's next record if one comes, at the tick
//! otherwise (and always before a [`Record::Learn`], which recovery requires to extend a
//! logged prefix without a gap). A crash loses at most the decisions of two ticks, which a
//! follower decides again from the leader's next commit index, its accepted entries being in
//! its log already. In the core shootout, binaries before (`55759de`) and after
//! alternated three times on an idle AMD EPYC (five repetitions each, medians, with
//! omnipaxos in the same run): one command in flight 1.41, 1.43, 1.54 → 1.72, 1.54,
//! 1.73 M/s (omnipaxos 1.36–1.55 in all six); with 100 in flight no change beyond the noise
//! (a Commit there covers a slot of 100 commands). A first version logged the prefix only at
//! the tick, alone, a sync of its own each tick: in the durable TCP shootout (3 replicas, one
//! client) 3.16 records and 3.15 syncs per command; riding once a tick, 3.13 and 3.01 (6.02
//! and 3.10 before either).
//!
//! What is left is spread over the per-command path: one shared allocation (the batch's
//! commands), an atomic reference count taken for each holder of a value, the session check,
//! and the records a checkpoint frees every 4,096 slots (the peers never free theirs). The
//! latest full run (`docs/core-shootout.md`, after the Commit change above, an idle AMD EPYC,
//! five repetitions, load average 1.03): 1.11× omnipaxos with one command in flight (1.20–1.38
//! M/s against 1.05–1.42), 1.92× with 100 on three replicas and 1.51× on five; the run right
//! after it gave 1.09× (1.55–1.64 against 1.33–1.48), 1.64× and 1.45×. Before that change, on
//! an Intel Xeon: 1.09× (1.39–1.43 M/s against 1.28–1.32), 1.67× and 1.48×; on the AMD EPYC:
//! 1.07× (1.44–1.61 against 1.35–1.53), 1.56× and 1.35×.
//!
//! # Runnable examples
//!
//! `kv-node --protocol paxos` and `kv-client` in the `kv` crate run a replicated key-value
//! store on Multi-Paxos as separate processes over TCP (see the workspace README);
//! `cargo run -p benches --bin trace -- paxos-duel` prints duelling proposers as a sequence diagram;
//! `docs/viewer/index.html?trace=paxos-duel` in the repository plays the same run in a browser,
//! opened from disk (the trace viewer: messages in flight, roles and logs over time).
#![forbid(unsafe_code)]

pub mod config;
mod core;
pub mod error;
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub mod handle;
pub mod message;
pub mod state_machine;

pub use config::Config;
pub use core::{Event, Metrics, PaxosNode, Request, Response, LEADER_QUORUM_GRACE_ROUNDS};
pub use error::PaxosError;
#[cfg(feature = "runtime")]
pub use handle::{ClientError, PaxosClient, PaxosHandle, Proposal, ReadAnswer};
pub use message::{
    Ballot, Command, Membership, Message, PromisedEntry, Record, Session, Slot, Value, Values,
};
pub use state_machine::{
    Counter, KvCommand, KvOutput, KvQuery, KvStore, Setup, StateMachine, StateMachineError,
};
