//! Three-phase commit (Skeen, 1981) with its termination protocol — and its limits, shown.
//!
//! # Guarantees, and the assumption they rest on
//!
//! 3PC is correct only on a **synchronous network**: every message between live nodes that the
//! protocol waits for arrives, retransmissions included, before the timeout that waits for it.
//! Then a timeout fires only when its peer has crashed — the perfect failure detector of Skeen's
//! model (Skeen, "Nonblocking commit protocols", 1981; Bernstein, Hadzilacos & Goodman,
//! *Concurrency Control and Recovery in Database Systems*, 1987, §7.5, which states 3PC for
//! "no communication failures" and a timeout that reliably means a site failure). The timeouts
//! are:
//!
//! - [`TxnConfig::vote_timeout_ticks`]: the coordinator waits this long for every vote, then
//!   aborts;
//! - [`Config::ack_timeout_ticks`]: the coordinator waits this long for the PreCommit acks, then
//!   takes the silent participants as crashed and **commits** (and tells the client);
//! - [`Config::termination_timeout_ticks`]: a participant that hears nothing from its coordinator
//!   (or from its backup) this long takes it as crashed and runs the termination protocol;
//! - [`Config::state_timeout_ticks`]: a backup coordinator waits this long for state replies and
//!   PreCommit acks, then takes the silent participants as crashed and decides without them.
//!
//! Under that assumption, with nodes crashing and restarting from their logs:
//!
//! - **Atomicity.** No transaction commits at one participant and aborts at another.
//! - **Durability.** A commit reported to the client is applied at every participant, including
//!   ones that crash and recover (they learn the outcome from the others).
//! - **No blocking.** If the coordinator crashes, the operational participants finish every
//!   transaction without it: they elect a backup coordinator (the lowest live id), which decides
//!   by the termination rules; if the backup crashes, the next lowest takes over.
//!
//! **A delay beyond a timeout breaks all of this** — no loss, crash or partition needed, and
//! message loss is only a longer delay (harmless while a retransmission still arrives in time):
//!
//! - PreCommits slower than the termination timeout: the participants take the coordinator as
//!   crashed, elect a backup, find everyone Uncertain and **abort**, while the coordinator, its
//!   ack timeout expired, has **committed and told the client Committed**. Seeded as
//!   `scenario::slow_network` (feature `sim`) and asserted by the
//!   `the_known_flaw_a_slow_network_is_taken_for_a_crash` simulation.
//! - A state reply slower than the state timeout: the backup decides without a PreCommitted or
//!   Committed participant and aborts what others commit — a **split** decision.
//! - A partition is the extreme case: one side commits and the other aborts (the
//!   `the_known_flaw_a_partition_splits_the_decision` simulation asserts exactly that).
//!
//! After a split, a participant that aborted answers the coordinator's DoCommit with its abort
//! ([`Message::Decision`]) instead of ignoring it, and the coordinator stops waiting for it: the
//! commit is forgotten once every participant has either acknowledged it or said it aborted.
//! The participant counts the conflict in [`Metrics::decision_conflicts`], the coordinator in
//! [`Metrics::commits_refused`]. (Before, the coordinator resent
//! DoCommit to that participant for as long as it ran; `sim_storm` found it at seed 11416 of
//! 20,000 and runs that seed on every test run.)
//!
//! A timeout cannot tell a crashed node from a slow or unreachable one. 2PC blocks instead of
//! splitting; consensus-based commit (Paxos Commit, or the decision replicated by Raft) neither
//! blocks with a majority up nor splits. So set the timeouts long against the worst delay the
//! network can show, retransmissions included, or do not use 3PC where that worst delay is not
//! known.
//!
//! **Checked exhaustively.** `tests/model_check.rs` explores, with the `stateright` model
//! checker, every interleaving of deliveries, ticks, crashes and restarts of the real cores (three
//! nodes, one transaction, small bounds stated there): atomicity holds when time advances only
//! with no message in flight to a live node, and without that assumption the checker finds a
//! counterexample, whose shortest form is replayed on the cores as a regression test.
//!
//! # Retransmission: backoff and a send bound
//!
//! Every unanswered message is resent — CanCommit, PreCommit and DoCommit by the coordinator,
//! DecisionRequest by a recovered coordinator and by recovered participants, TerminationStart to
//! the elected backup, and the backup's StateRequest and PreCommit. The first resend comes
//! [`TxnConfig::resend_ticks`] after the send, and each further one waits twice as long, up to
//! [`TxnConfig::resend_ticks_max`] ([`common::txn::Backoff`]); a follower's wait before re-electing
//! a silent backup doubles likewise, up to [`REELECTION_WAIT_FACTOR_MAX`] termination timeouts. At
//! fixed-rate resends a slow network fills with copies, answers come later still, more exchanges
//! stay unanswered and the network stays saturated (a retransmission storm); with backoff each
//! exchange keeps a small constant number of copies in flight. Besides, one node resends at most
//! [`TxnConfig::sends_per_tick_max`] messages per tick, whatever the number of open transactions; a
//! resend that does not fit waits for a later tick. First transmissions and answers are not
//! resends: they happen once per transaction and phase, or once per message received. The
//! `sim_storm` simulation (slow, lossy network with crashes, then a fast one) asserts that the
//! messages in flight stay bounded and that everything is decided once the network is fast again.
//!
//! # The protocol
//!
//! 1. The coordinator sends [`Message::CanCommit`] with each participant's writes. A participant
//!    that can lock them (no-wait) forces [`Record::Voted`] and votes Yes (Initial → Uncertain);
//!    otherwise it votes No and aborts alone.
//! 2. All Yes: the coordinator forces [`Record::PreCommitDecision`] and sends
//!    [`Message::PreCommit`]; each participant forces [`Record::PreCommitted`]
//!    (Uncertain → PreCommitted) and acks. Any No or the vote timeout: Abort.
//! 3. All acks, or the ack timeout (the silent are taken as crashed): the coordinator forces
//!    [`Record::CommitDecision`], answers the client and sends [`Message::DoCommit`]; each
//!    participant forces [`Record::Committed`], applies and answers
//!    [`Message::HaveCommitted`] (6 messages per participant in all).
//!
//! **Termination.** A participant in Uncertain or PreCommitted that hears nothing from its
//! coordinator for [`Config::termination_timeout_ticks`] takes it as crashed, elects as backup the
//! lowest participant id it does not suspect, and tells it ([`Message::TerminationStart`]). The
//! backup collects states ([`Message::StateRequest`]) and decides:
//!
//! | collected states                 | decision                                          |
//! |----------------------------------|---------------------------------------------------|
//! | any Aborted                      | abort                                             |
//! | any Committed                    | commit                                            |
//! | any PreCommitted                 | PreCommit the Uncertain ones, wait for acks, commit |
//! | all Uncertain                    | abort                                             |
//!
//! Participants that do not answer within [`Config::state_timeout_ticks`] are taken as crashed.
//! Followers that hear nothing from the backup for `termination_timeout_ticks` (doubling after
//! each re-election) suspect it and re-elect. A participant that never voted and is asked logs an abort before answering, so it
//! can never vote Yes later.
//!
//! **Recovery.** A participant restarted with an undecided transaction does not trust its
//! possibly stale state to the others: it asks everyone ([`Message::DecisionRequest`]) and adopts
//! any decision. Its state is used only with a complete view: all participants recovered and
//! undecided, and the coordinator answering that it never decided commit
//! ([`Message::NoDecision`]); then every state that exists is known and the rules apply. A
//! recovered coordinator resends a logged commit, and otherwise learns the outcome.
//!
//! # State diagrams
//!
//! ```text
//!  Coordinator (per transaction)
//!
//!   request ─► VOTING ──any No / vote timeout──► send Abort, answer Aborted
//!                │ all Yes: force PreCommitDecision, send PreCommit
//!                ▼
//!           PRECOMMITTING ──all acks / ack timeout──► force CommitDecision, answer Committed,
//!                                                     send DoCommit
//!                                                          ▼
//!                                    COMMITTING ──all HaveCommitted──► lazy End
//!   recovery: CommitDecision ⇒ COMMITTING; PreCommitDecision only ⇒ LEARNING (ask, adopt)
//!
//!  Participant (per transaction)
//!
//!   INITIAL ──CanCommit, locks ok: force Voted, vote Yes──► UNCERTAIN
//!      │ conflict: vote No                                   │ PreCommit: force, ack
//!      ▼                                                     ▼
//!   ABORTED ◄──Abort / termination: all Uncertain─── UNCERTAIN / PRECOMMITTED
//!                                                          │ DoCommit / termination: commit
//!                                                          ▼
//!                                                      COMMITTED
//!   UNCERTAIN, PRECOMMITTED: coordinator silent ⇒ termination protocol (backup = lowest live id)
//! ```
//!
//! # Tutorial: three participants, pumped by hand
//!
//! ```
//! use std::collections::{BTreeMap, VecDeque};
//! use common::txn::{Outcome, Write};
//! use common::{Node, Outbox, RequestId};
//! use threepc::{Config, Message, Request, Response, ThreePcNode};
//!
//! let members = vec![1, 2, 3, 4];
//! let mut nodes: BTreeMap<u64, ThreePcNode> = members
//!     .iter()
//!     .map(|&id| (id, ThreePcNode::recover(Config::new(id, members.clone()), vec![]).unwrap()))
//!     .collect();
//! let writes = BTreeMap::from([
//!     (2, vec![Write::put("alice", "90")]),
//!     (3, vec![Write::put("bob", "110")]),
//!     (4, vec![Write::put("audit", "alice->bob:10")]),
//! ]);
//! let mut out = Outbox::new();
//! nodes.get_mut(&1).unwrap().handle_request(RequestId(1), Request::Commit { writes }, &mut out);
//!
//! let mut answers = Vec::new();
//! let mut queue: VecDeque<(u64, u64, Message)> = VecDeque::new();
//! let (mut from, mut sent) = (1, 0);
//! loop {
//!     let effects = out.take(); // a driver would make effects.records durable first
//!     answers.extend(effects.responses);
//!     sent += effects.messages.len();
//!     queue.extend(effects.messages.into_iter().map(|(to, m)| (from, to, m)));
//!     let Some((src, to, msg)) = queue.pop_front() else { break };
//!     from = to;
//!     nodes.get_mut(&to).unwrap().handle_message(src, msg, &mut out);
//! }
//! assert!(matches!(answers[0].1, Response::Outcome { outcome: Outcome::Committed, .. }));
//! assert_eq!(nodes[&3].resource().get("bob"), Some(&b"110"[..]));
//! // CanCommit, Vote, PreCommit, PreCommitAck, DoCommit, HaveCommitted per participant.
//! assert_eq!(sent, 6 * 3);
//! assert!(nodes.values().all(|n| n.metrics().in_doubt.is_empty()));
//! ```
//!
//! # Bad input
//!
//! Messages from non-members or from nodes outside a transaction, votes and acks out of place,
//! duplicates and unknown transactions are rejected and counted in [`Metrics::rejected`]; none
//! changes a durable state or panics a node. Undecodable bytes never reach the core.
//!
//! # Simplifications
//!
//! A participant learns of a transaction from its CanCommit (the writes travel with it) and
//! votes in the same step, so the textbook's "participant waiting for CanCommit" timeout has no
//! state to apply to: a participant that cannot take part votes No at once (Initial → Aborted).
//! The log is never compacted; decided transactions are remembered up to
//! [`TxnConfig::decided_remembered_max`]. There is no read-only optimisation: every participant
//! takes part in all three phases (a participant with no writes votes Yes and holds no locks).
//!
//! # Layout
//!
//! This crate holds only what is three-phase commit's own; the atomic-commit skeleton it shares
//! with `twopc` is in [`common::txn`]: transaction ids and their durable reservation, admitting
//! a client's transaction, the participant's ledger (the resource, the decided-outcome cache,
//! finishing a transaction, replay and lock recovery), the shared settings
//! ([`TxnConfig`](common::txn::TxnConfig)), the client's [`Request`], [`Response`] and
//! [`ThreePcError`], rejection of bad messages, the async client ([`ThreePcClient`]) and the test
//! suite both protocols run.
//!
//! - [`config`]: [`Config`], the shared settings plus 3PC's timeouts (acks, termination, state
//!   replies);
//! - [`message`]: Skeen's participant [`State`]s, the wire [`Message`]s and the log
//!   [`Record`]s;
//! - [`core`]: [`ThreePcNode`] and its routing, [`Event`] and [`Metrics`]; `core/coordinator.rs`
//!   the three phases and the coordinator's recovery; `core/participant.rs` votes, pre-commit,
//!   decisions and the answers to backups and recovering peers; `core/termination.rs` the
//!   termination protocol (Skeen's rules, cited there), re-election and the recovery of a
//!   participant that crashed;
//! - [`client`]: the async handle, [`ThreePcClient`] for this protocol with its
//!   [`ParticipantStatus`];
//! - `scenario` (feature `sim`): named seeded simulations.
//!
//! # Runnable examples
//!
//! - `cargo run -p threepc --example bank_transfer_3pc`: the bank of the `twopc` example on three-phase
//!   commit.
//! - `cargo run -p benches --bin trace -- 3pc-coordinator-crash` (the termination protocol at work)
//!   and `-- 3pc-partition` (the atomicity violation) as sequence diagrams;
//!   `docs/viewer/index.html?trace=3pc-partition` (or `3pc-coordinator-crash`) in the repository
//!   plays the same runs in a browser, opened from disk (the trace viewer).
//! - `scenario` (feature `sim`): the slow-network anomaly as a seeded simulation, for tests and
//!   diagrams.
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
#[cfg(feature = "sim")]
pub mod scenario;

pub use crate::client::ParticipantStatus;
#[cfg(feature = "runtime")]
pub use crate::client::{ThreePcClient, ThreePcHandle, Transaction};
pub use crate::config::{Config, REELECTION_WAIT_FACTOR_MAX};
pub use crate::core::{Event, InDoubt, Metrics, ThreePcNode};
pub use crate::message::{Message, Record, State};
#[cfg(feature = "runtime")]
pub use common::txn::ClientError;
/// Errors of the `threepc` crate: the shared [`common::txn::TxError`].
pub use common::txn::TxError as ThreePcError;
pub use common::txn::{Request, Response};
