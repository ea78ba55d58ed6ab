//! Many groups of one protocol in one process: [`Groups`], a sans-IO adapter that hosts many
//! cores (a few hundred Raft groups, say) and is itself a [`Node`](crate::Node), so the
//! driver, the transports, the write-ahead log and the simulator run it unchanged.
//!
//! # What it gives
//!
//! - **One connection per peer process.** The host is one node to the transport: all its
//!   groups' traffic to another process shares that process's connection.
//! - **Coalesced messages.** Everything one step of the host sends to one peer leaves as *one*
//!   [`GroupsMessage`] whose parts are `(group, message)`. A tick runs every group's tick in one
//!   step, so the heartbeats of all the groups led here travel to each peer in one frame, and a
//!   frame from a peer is answered by one frame per peer whatever the number of groups in it.
//!   A driver batch of several steps merges them further ([`Node::coalesce`](crate::Node::coalesce)):
//!   each peer gets one message per batch, up to [`GroupsConfig::parts_per_message_max`]
//!   parts. Raft groups whose leaders should heartbeat on the same ticks set
//!   `heartbeat_aligned` in their configuration.
//! - **One log, one fsync per batch.** Every group's records go, tagged with the group, into
//!   the host's one record stream, so the driver's group commit makes a batch of steps durable
//!   with one sync across all groups.
//! - **Untrusted input stays harmless.** A part naming a group this process does not host is
//!   dropped and counted ([`GroupsCounters::unknown_group_parts`]); a message with more parts
//!   than [`GroupsConfig::parts_per_message_max`] is dropped whole
//!   ([`GroupsCounters::oversized_messages`]); a request for an unknown group is answered
//!   [`GroupResponse::UnknownGroup`]. Nothing of it panics.
//!
//! Requests are [`GroupsRequest`]s (a group's request, or adding and removing a group; see
//! below), answers [`GroupResponse`], events `(group, event)`;
//! [`GroupsMetrics`] holds every group's metrics. A batch of requests
//! ([`Node::handle_requests`](crate::Node::handle_requests)) is split by group, in order, and
//! each group gets its share in one call, so a batching core still replicates it in one round.
//!
//! Two groups of the demo counter on process 1 of three: one step with a request for each
//! sends each peer one message carrying both groups' updates, and persists two tagged records.
//!
//! ```
//! use common::demo::{DemoConfig, DemoNode, DemoRequest};
//! use common::groups::{Groups, GroupsConfig, GroupsRecord};
//! use common::{Node, Outbox, Persist, RequestId};
//!
//! let members = vec![1, 2, 3];
//! let config = GroupsConfig::new(
//!     1,
//!     vec![
//!         (10, DemoConfig::new(1, members.clone())),
//!         (20, DemoConfig::new(1, members.clone())),
//!     ],
//! );
//! let mut host = Groups::<DemoNode>::recover(config, Vec::new()).unwrap();
//! let mut out = Outbox::new();
//! host.handle_requests(
//!     [
//!         (RequestId(1), (10, DemoRequest::Add(5)).into()),
//!         (RequestId(2), (20, DemoRequest::Add(7)).into()),
//!     ],
//!     &mut out,
//! );
//! let effects = out.take();
//! assert_eq!(effects.messages.len(), 2); // one message per peer, not one per group and peer
//! for (_, message) in &effects.messages {
//!     let groups: Vec<u64> = message.parts.iter().map(|(group, _)| *group).collect();
//!     assert_eq!(groups, vec![10, 20]);
//! }
//! assert!(matches!(
//!     &effects.records[..],
//!     [
//!         Persist::Append(GroupsRecord::Append { group: 10, .. }),
//!         Persist::Append(GroupsRecord::Append { group: 20, .. }),
//!     ]
//! ));
//! ```
//!
//! # The Outbox rule, preserved
//!
//! Each group's step runs into an outbox of its own; the host moves its effects into the
//! host's outbox at once: records first, tagged and in order, then messages. A group's
//! ordinary messages ([`Outbox::send`](crate::Outbox::send)) become parts of the host's
//! ordinary messages, which the driver releases only once the batch's records (the group's
//! among them) are durable; a group's early messages
//! ([`Outbox::send_early`](crate::Outbox::send_early)) become parts of a separate early
//! message, which claims nothing either. Answers and early answers keep their kind likewise.
//!
//! A group learns what of its own records is durable exactly as alone: the host keeps, in log
//! order, which group each of its records belongs to (a FIFO of the records not yet durable),
//! and when the driver reports `records_durable(count)` for the host, the host pops that many,
//! counts them per group, and calls each group's
//! [`records_durable`](crate::Node::records_durable) with the group's own count (and
//! [`checkpoints_durable`](crate::Node::checkpoints_durable) when a checkpoint of the group
//! became durable) as a step whose effects are released like any other.
//!
//! # Records and compaction
//!
//! A group's [`Persist::Checkpoint`](crate::Persist::Checkpoint) cannot become a checkpoint of
//! the shared log: storage would then drop the other groups' records before it. So a group's
//! checkpoint is written as an ordinary append ([`GroupsRecord::Checkpoint`]), and the host
//! keeps, per group, its *live records*: its last checkpoint and everything it appended since
//! (what the group's recovery needs). When at least
//! [`GroupsConfig::compact_records_min`] records were appended since the last compaction and
//! they outnumber [`GroupsConfig::compact_live_multiple`] times the live records, the host
//! writes one [`GroupsRecord::Compacted`] holding every group's live records as the log's
//! checkpoint: once durable, storage drops everything before it. It is the last record of the
//! step that wrote it, so it summarizes exactly the records before it, and a torn tail either
//! keeps it whole or keeps what it summarized. Recovery replays per group from it.
//!
//! The costs, stated plainly:
//!
//! - **Memory:** the host holds a copy of every group's live records. A group that never
//!   checkpoints (a Raft group without snapshots) keeps its whole log in memory twice.
//! - **Write amplification:** each compaction rewrites every live record; with
//!   `compact_live_multiple = k` it writes at most `1/k` of what the groups wrote since the
//!   previous one.
//! - **Record size:** a compaction is one record (a multi-record compaction could be torn
//!   half-way after storage dropped what it summarizes). One larger than
//!   [`GroupsConfig::compacted_bytes_max`] is not written
//!   ([`GroupsCounters::compactions_skipped`]): the log then grows until groups checkpoint.
//!
//! The better design, left for later, is what multi-column-family write-ahead logs do (RocksDB,
//! TiKV's raft-engine): each group reports a low-water mark (the position of its last durable
//! checkpoint) and storage deletes a segment once every group's mark is past it. No record is
//! rewritten and nothing is held in memory; it needs a segment-aware storage interface, which
//! the `Storage` trait does not have yet.
//!
//! # Snapshots
//!
//! Cores that keep snapshot files ([`Node::recover_with_snapshots`](crate::Node::recover_with_snapshots))
//! share the process's snapshot store through [`GroupSnapshots`]: each file starts with a
//! header naming its group, and each group lists, opens and deletes only its own, so one
//! group's clean-up at recovery never deletes another's snapshot.
//!
//! # Limits
//!
//! [`GroupsConfig::groups_max`] groups per process, [`GroupsConfig::parts_per_message_max`]
//! parts per message (a step with more for one peer sends several messages), and the
//! compaction thresholds above. Each part is bounded by its core's own limits; a message of
//! many large parts can still exceed the transport's frame limit, in which case the transport
//! refuses it and the groups' own retransmission takes over (a limit in bytes per message is
//! future work). [`GroupsConfig::groups_max`] is enforced when a group is added
//! ([`GroupResponse::TooManyGroups`]).
//!
//! # Groups added and removed at run time
//!
//! A process starts and stops hosting groups with the host's own requests,
//! [`GroupsRequest::AddGroup`] and [`GroupsRequest::RemoveGroup`] (a group's request is
//! [`GroupsRequest::Group`]; `(group, request).into()` makes one).
//!
//! - **Configuration.** An added group's core configuration is built by
//!   [`GroupsConfig::configure`] from the request's *spec*, opaque bytes the host writes to its
//!   log and hands to `configure` again at every recovery. The log does not hold the core's
//!   configuration itself: a consensus core's configuration carries its state machine's
//!   factory (a closure), Raft's `Config` is not serializable, and what a group needs from the
//!   process (the factory, a directory) is the process's business. The spec holds what the
//!   group's creator decides (its members, say); `configure` adds the rest.
//! - **Adding** recovers the group's core with no records (recovery has no effects), then asks
//!   for a [`GroupsRecord::Added`] before the core can run a step, so every record of the group
//!   follows it in the log. Its answer, [`GroupResponse::Added`], is an ordinary answer: the
//!   driver releases it only once the `Added` record is durable. The core's ordinary messages
//!   wait likewise (they follow the record); its early messages claim nothing by the Outbox
//!   rule. A crash before the record is durable may tear it away: the group is then not hosted
//!   after the restart, and neither is anything of it (its records followed), and nothing it
//!   claimed left the process; the request was never answered, and asking again adds it afresh.
//! - **Removing** drops the core, asks for a [`GroupsRecord::Removed`], and drops the group's
//!   live records (the next compaction forgets it). Requests its core held unanswered are
//!   answered [`GroupResponse::Abandoned`] (their effect is unknown); later requests get
//!   [`GroupResponse::UnknownGroup`], and message parts for it are dropped and counted. Its
//!   answer, [`GroupResponse::Removed`], waits for the record like any other. Its snapshot files
//!   are deleted (through [`GroupSnapshots`]) only once the `Removed` record is durable: before,
//!   a crash could bring the group back, and it needs its files. Files left by a crash between
//!   the two belong to no hosted group, and the next recovery deletes them. Until the removal is
//!   durable, adding the same group again is refused ([`GroupResponse::RemovalPending`]): the
//!   new core's recovery would delete the old one's files, which a crash could still need.
//! - **Refusals** change nothing and are answered (after the step's sync, like every answer):
//!   a group already hosted ([`GroupResponse::AlreadyHosted`]), a removal of a group not hosted
//!   ([`GroupResponse::UnknownGroup`]), over the limit ([`GroupResponse::TooManyGroups`]), a
//!   spec `configure` or the core refuses, or no `configure` at all ([`GroupResponse::BadSpec`]).
//! - **Durability mapping.** `Added`, `Removed` and compaction records belong to no group: the
//!   FIFO of record owners holds them as the host's. When a group is removed, its records still
//!   waiting for durability become the host's too, so a group added later in the same slot is
//!   never credited with them. A new group's durable counts start at zero, as after recovery.
//! - **Compaction** lists every hosted group, those without live records too, with its spec
//!   (none for a group of the initial set), so recovery after a compaction knows the set.
//! - **Recovery: the log decides.** [`GroupsConfig::groups`] is the initial set: it is what a
//!   process with an empty log hosts, and it is where replay starts when the log holds no
//!   compaction; the log's `Added` and `Removed` records apply on top. From a compaction on,
//!   the set is exactly what the compaction lists, so a configured group removed at run time
//!   stays removed, and a group added to the configuration after the log was compacted is not
//!   started (logged): add it at run time instead. A group of the initial set listed by the log
//!   but missing from the configuration is refused ([`GroupsError::UnknownGroupInLog`]), as is
//!   any record of a group the log does not host at that point.
//!
//! What this does not do: it makes no group-level decision. Moving a replica (adding it as a
//! learner, catching it up by snapshot, promoting it, removing the old one) is the sharding
//! layer's, which sends these requests and the cores' own membership changes.
//!
//! # Layout
//!
//! `config.rs` holds [`GroupsConfig`] and its limits; `node.rs` [`Groups`] and its wire types;
//! `membership.rs` adding and removing groups at run time; `journal.rs` the shared log's
//! records, compaction, the replay of the hosted set and the durability mapping;
//! `snapshots.rs` [`GroupSnapshots`]; `tests.rs` the adapter's unit tests.

mod coalesce;
mod config;
mod journal;
mod membership;
mod node;
mod snapshots;
#[cfg(test)]
mod tests;

pub use config::{
    Configure, GroupsConfig, COMPACTED_BYTES_MAX_DEFAULT, COMPACT_LIVE_MULTIPLE_DEFAULT,
    COMPACT_RECORDS_MIN_DEFAULT, GROUPS_MAX_DEFAULT, PARTS_PER_MESSAGE_MAX_DEFAULT,
};
pub use journal::{group_records, CompactedGroup, GroupsRecord};
pub use node::{
    GroupResponse, Groups, GroupsCounters, GroupsError, GroupsMessage, GroupsMetrics,
    GroupsRequest, GROUPED_PROTOCOL_BIT, GROUPS_WIRE_VERSION,
};
pub use snapshots::{snapshot_group, GroupSnapshots};

/// Identifies one group (one replicated log) among those a process hosts.
pub type GroupId = u64;
