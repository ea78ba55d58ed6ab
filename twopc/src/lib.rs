//! Two-phase commit as transaction systems run it: presumed abort, read-only and one-phase
//! optimisations, forced log records, timeouts, recovery and cooperative termination.
//!
//! # Guarantees
//!
//! - **Atomicity.** No transaction commits at one participant and aborts at another, whatever
//!   messages are lost, duplicated or reordered and whichever nodes crash and restart.
//! - **Durability.** A commit reported to the client is durable at the coordinator, and is applied
//!   at every participant that writes once it is reachable (recovered participants ask for it).
//! - **No deadlocks.** Participants lock with no-wait ([`common::txn::MemKv`]): a conflicting
//!   prepare votes No instead of waiting.
//! - **Blocking, said out loud.** A participant that voted Yes may not decide alone. If the
//!   coordinator is down and no reachable peer knows the outcome, the transaction stays prepared
//!   (its locks held) until someone who knows comes back: it is reported as
//!   [`Event::Blocked`] and in [`Metrics::in_doubt`]. This is the price of 2PC; `threepc` and
//!   consensus-based commit exist to lower it.
//!
//! # The protocol (Bernstein, Hadzilacos & Goodman, ch. 7; X/Open XA)
//!
//! 1. A client asks a node, the **coordinator**, to commit a transaction: the writes of each
//!    participant ([`Request::Commit`]). The coordinator names it with a globally unique
//!    [`TxId`](common::txn::TxId) and sends each participant [`Message::Prepare`] with its writes.
//! 2. Each participant stages and locks the writes in its [`Resource`](common::txn::Resource).
//!    On success it forces a [`Record::Prepared`] (with the writes) and votes Yes; on a conflict it
//!    votes No and forgets; with nothing to write it votes ReadOnly and leaves.
//! 3. All Yes (or ReadOnly): the coordinator forces [`Record::CommitDecision`], answers the client
//!    and sends Commit to the Yes voters. Any No, or the vote timeout: it sends Abort and forgets,
//!    with no record (**presumed abort**: a coordinator with no record of a transaction answers
//!    Abort to anyone who asks).
//! 4. A participant told Commit forces [`Record::Committed`], applies, and acks. Told Abort, it
//!    drops the writes and neither forces a record nor acks (a lazy [`Record::Aborted`] only
//!    spares a restarted participant the question). When every Yes voter has acked, the coordinator
//!    writes a lazy [`Record::End`] and forgets the transaction.
//!
//! With a single participant the coordinator sends [`Message::OnePhaseCommit`] and the
//! participant decides alone (2 messages instead of 4).
//!
//! Timeouts are counted in ticks: Prepare and Commit are resent [`TxnConfig::resend_ticks`] after
//! they were sent; votes missing after [`TxnConfig::vote_timeout_ticks`] abort the
//! transaction; a prepared participant asks after [`Config::in_doubt_query_ticks`] — the
//! coordinator ([`Message::DecisionRequest`]) and, with cooperative termination, the other
//! participants ([`Message::StatusQuery`]). A peer that committed or aborted tells; a peer that has
//! not voted logs that it never will vote Yes and says Aborted; a peer that is prepared too cannot
//! help.
//!
//! # Retransmission: backoff and a send bound
//!
//! Each further resend of the same message (Prepare, one-phase commit, Commit) and each further
//! query round of an in-doubt participant waits twice as long as the previous one, up to
//! [`TxnConfig::resend_ticks_max`] ([`common::txn::Backoff`], shared with `threepc`). At a fixed
//! rate, a slow network would fill with copies, answers would come later still and more
//! exchanges would stay unanswered (a retransmission storm); with backoff each exchange keeps a
//! small constant number of copies in flight, and the cap bounds how long a message lost in a
//! slow spell waits once the network is fast again. One node also resends at most
//! [`TxnConfig::sends_per_tick_max`] messages per tick, whatever the number of open transactions; a
//! resend that does not fit waits for a later tick. First transmissions and answers are not
//! resends: they happen once per transaction, or once per message received. Backoff changes only
//! when a message is resent, never a decision, so atomicity needs no timing assumption.
//!
//! The `sim_storm` simulation (a slow, lossy network with crashes and restarts, then a fast one)
//! asserts atomicity after every step, that the messages in flight stay under a bound, and that
//! everything is decided once the network is fast again. `tests/model_check.rs` checks atomicity
//! exhaustively with the `stateright` model checker over every interleaving of deliveries,
//! losses, ticks, crashes and restarts of the real cores (three nodes, one and two transactions,
//! bounds stated there).
//!
//! # State diagrams
//!
//! ```text
//!  Coordinator (per transaction)
//!
//!   request ──► VOTING ──any No / vote timeout──► (send Abort, answer Aborted, forget)
//!                 │  resend Prepare to the silent (backing off)
//!                 │ all Yes/ReadOnly
//!                 ▼
//!      force CommitDecision, answer Committed, send Commit
//!                 ▼
//!              COMMITTING ──all acks──► (lazy End, forget)
//!                 │ resend Commit to the unacked (backing off, never giving up),
//!                 │ answer DecisionRequests
//!                 ▲
//!   recovery: CommitDecision without End ───┘      no record at all ──► presumed Abort
//!
//!  Participant (per transaction)
//!
//!   Prepare ──conflict / full──► vote No (forget)      nothing to write ──► vote ReadOnly
//!      │ staged and locked
//!      ▼ force Prepared, vote Yes
//!   PREPARED (in doubt) ──Commit──► force Committed, apply, Ack ──► COMMITTED
//!      │    │           ──Abort───► drop writes (lazy record, no ack) ──► ABORTED
//!      │    └─ query rounds (backing off): DecisionRequest + StatusQuery to peers;
//!      │       a peer Committed/Aborted decides it; a silent round ⇒ BLOCKED (still PREPARED)
//!      └─ recovery: Prepared without outcome ⇒ re-take locks, ask at the first tick
//! ```
//!
//! # Tutorial: three participants, pumped by hand
//!
//! Every node is a [`TwoPcNode`] (a coordinator for its own clients and a participant in others'
//! transactions). Here node 1 coordinates and nodes 2, 3 and 4 hold data. A real deployment runs
//! the cores under `common`'s driver; this example moves the messages itself, respecting the
//! Outbox rule trivially (nothing is lost between steps).
//!
//! ```
//! use std::collections::{BTreeMap, VecDeque};
//! use common::txn::{Outcome, Write};
//! use common::{Node, Outbox, RequestId};
//! use twopc::{Config, Request, Response, TwoPcNode};
//!
//! let members = vec![1, 2, 3, 4];
//! let mut nodes: BTreeMap<u64, TwoPcNode> = members
//!     .iter()
//!     .map(|&id| (id, TwoPcNode::recover(Config::new(id, members.clone()), vec![]).unwrap()))
//!     .collect();
//!
//! // One transaction writing at three participants.
//! let writes = BTreeMap::from([
//!     (2, vec![Write::put("alice", "90")]),
//!     (3, vec![Write::put("bob", "110")]),
//!     (4, vec![Write::put("audit", "alice->bob:10")]),
//! ]);
//! let mut out = Outbox::new();
//! nodes.get_mut(&1).unwrap().handle_request(RequestId(1), Request::Commit { writes }, &mut out);
//!
//! // Deliver messages until the network is quiet, counting them.
//! let mut answers = Vec::new();
//! let mut queue: VecDeque<(u64, u64, twopc::Message)> = VecDeque::new();
//! let mut from = 1;
//! let mut sent = 0;
//! loop {
//!     let effects = out.take();
//!     // (A driver would make effects.records durable here, before sending.)
//!     answers.extend(effects.responses);
//!     sent += effects.messages.len();
//!     queue.extend(effects.messages.into_iter().map(|(to, m)| (from, to, m)));
//!     let Some((src, to, msg)) = queue.pop_front() else { break };
//!     from = to;
//!     nodes.get_mut(&to).unwrap().handle_message(src, msg, &mut out);
//! }
//!
//! assert!(matches!(answers[0].1, Response::Outcome { outcome: Outcome::Committed, .. }));
//! assert_eq!(nodes[&2].resource().get("alice"), Some(&b"90"[..]));
//! assert_eq!(nodes[&4].resource().get("audit"), Some(&b"alice->bob:10"[..]));
//! // Prepare, Vote, Commit and Ack for each of the three participants.
//! assert_eq!(sent, 4 * 3);
//! // Everyone is done: nothing in doubt, nothing left at the coordinator.
//! assert!(nodes.values().all(|n| n.metrics().in_doubt.is_empty()));
//! assert_eq!(nodes[&1].metrics().coordinating, 0);
//! ```
//!
//! # Bad input
//!
//! Messages from non-members, votes from non-participants, decisions from a node that is not the
//! transaction's coordinator, duplicates and messages for unknown transactions are rejected and
//! counted in [`Metrics::rejected`]; none changes a durable decision or panics the node. Bytes
//! that do not decode never reach the core (the driver's codec rejects them).
//!
//! # Simplifications
//!
//! The writes travel with the Prepare, so a participant learns of a transaction when it is asked
//! to vote and answers in the same step: its right to abort before voting is exercised by voting
//! No (a lock conflict, a full prepared table, invalid writes), and a participant that has not
//! voted and is asked by a peer gives that right up durably (it logs an abort). There is no
//! separate work phase whose idle timeout could abort it.
//!
//! The log is never compacted (a production participant would checkpoint its data and the set of
//! decided transactions). Decided transactions are remembered in memory up to
//! [`TxnConfig::decided_remembered_max`]; a duplicate Prepare delayed past that many later
//! transactions would be voted on again (and resolved by asking, like any prepared transaction).
//!
//! # Layout
//!
//! This crate holds only what is two-phase commit's own; the atomic-commit skeleton it shares
//! with `threepc` is in [`common::txn`]: transaction ids and their durable reservation, admitting
//! a client's transaction, the participant's ledger (the resource, the decided-outcome cache,
//! finishing a transaction, replay and lock recovery), the shared settings
//! ([`TxnConfig`](common::txn::TxnConfig)), the client's [`Request`], [`Response`] and
//! [`TwoPcError`], rejection of bad messages, the async client ([`TwoPcClient`]) and the test suite
//! both protocols run.
//!
//! - [`config`]: [`Config`], the shared settings plus 2PC's own (in-doubt queries, cooperative
//!   termination, retry bounds);
//! - [`message`]: the wire [`Message`]s and the log [`Record`]s;
//! - [`core`]: [`TwoPcNode`] and its routing, [`Event`] and [`Metrics`]; `core/coordinator.rs`
//!   the voting phase, the decision, presumed abort and one-phase commit; `core/participant.rs`
//!   votes, the read-only optimisation and the in-doubt queries of cooperative termination;
//! - [`client`]: the async handle, [`TwoPcClient`] for this protocol with its
//!   [`ParticipantStatus`].
//!
//! # Runnable examples
//!
//! - `cargo run -p twopc --example bank_transfer_2pc`: transfers across three shards with a participant
//!   and the coordinator restarted mid-run; the total balance never changes.
//! - `cargo run -p benches --bin trace -- 2pc-coordinator-crash`: the blocking case as a sequence
//!   diagram; `docs/viewer/index.html?trace=2pc-coordinator-crash` in the repository plays the
//!   same run in a browser, opened from disk (the trace viewer).
//!
//! [`TxnConfig::decided_remembered_max`]: common::txn::TxnConfig::decided_remembered_max
//! [`TxnConfig::resend_ticks`]: common::txn::TxnConfig::resend_ticks
//! [`TxnConfig::resend_ticks_max`]: common::txn::TxnConfig::resend_ticks_max
//! [`TxnConfig::sends_per_tick_max`]: common::txn::TxnConfig::sends_per_tick_max
//! [`TxnConfig::vote_timeout_ticks`]: common::txn::TxnConfig::vote_timeout_ticks

pub mod client;
pub mod config;
pub mod core;
pub mod message;

pub use crate::client::ParticipantStatus;
#[cfg(feature = "runtime")]
pub use crate::client::{Transaction, TwoPcClient, TwoPcHandle};
pub use crate::config::Config;
pub use crate::core::{Event, InDoubt, Metrics, TwoPcNode};
pub use crate::message::{Message, PeerStatus, Record};
#[cfg(feature = "runtime")]
pub use common::txn::ClientError;
/// Errors of the `twopc` crate: the shared [`common::txn::TxError`].
pub use common::txn::TxError as TwoPcError;
pub use common::txn::{Request, Response};
