//! Unit tests of the adapter over a scripted core whose every effect the test chooses.

use super::*;
use crate::{Effects, Node, NodeId, Outbox, Persist, RequestId};

/// A core that does what its requests say, and remembers its state as the records it holds.
struct Script {
    id: NodeId,
    peers: Vec<NodeId>,
    /// Its records, as recovery rebuilt them plus what it appended since (a checkpoint
    /// replaces everything before it).
    log: Vec<u64>,
    /// Every `records_durable` and `checkpoints_durable` call, in order.
    durable: Vec<(u64, u64)>,
    checkpoints: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Cmd {
    /// Persist the value, send it to every peer after the sync, answer it.
    Write(u64),
    /// Persist the value as a checkpoint.
    Checkpoint(u64),
    /// Send the value early to every peer.
    Early(u64),
    /// Keep the request unanswered.
    Hold,
}

#[derive(Debug, thiserror::Error)]
#[error("script")]
struct ScriptError;

impl Node for Script {
    type Config = (NodeId, Vec<NodeId>);
    type Message = u64;
    type Request = Cmd;
    type Response = u64;
    type Event = u64;
    type Record = u64;
    type Metrics = Vec<u64>;
    type Error = ScriptError;
    const PROTOCOL: u16 = 77;
    const WIRE_VERSION: u16 = 3;

    fn recover((id, peers): Self::Config, records: Vec<u64>) -> Result<Self, ScriptError> {
        Ok(Self {
            id,
            peers,
            log: records,
            durable: Vec::new(),
            checkpoints: 0,
        })
    }

    fn checkpoints_durable(&mut self, count: u64) {
        self.checkpoints = count;
    }

    fn records_durable(&mut self, count: u64, _out: &mut Outbox<Self>) {
        self.durable.push((count, self.checkpoints));
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn handle_message(&mut self, _from: NodeId, msg: u64, out: &mut Outbox<Self>) {
        out.emit(msg);
    }

    fn handle_request(&mut self, id: RequestId, req: Cmd, out: &mut Outbox<Self>) {
        match req {
            Cmd::Write(v) => {
                self.log.push(v);
                out.persist(v);
                out.broadcast(self.peers.clone(), &v);
                out.respond(id, v);
            }
            Cmd::Checkpoint(v) => {
                self.log = vec![v];
                out.checkpoint(v);
            }
            Cmd::Early(v) => {
                for &p in &self.peers {
                    out.send_early(p, v);
                }
                out.respond_early(id, v);
            }
            Cmd::Hold => {}
        }
    }

    fn tick(&mut self, out: &mut Outbox<Self>) {
        out.broadcast(self.peers.clone(), &0);
    }

    fn metrics(&self) -> Vec<u64> {
        self.log.clone()
    }
}

type G = Groups<Script>;

fn config(groups: &[GroupId]) -> GroupsConfig<(NodeId, Vec<NodeId>)> {
    GroupsConfig::new(1, groups.iter().map(|&g| (g, (1, vec![2, 3]))).collect())
}

fn host(groups: &[GroupId]) -> G {
    G::recover(config(groups), Vec::new()).unwrap()
}

fn step(out: &mut Outbox<G>) -> Effects<G> {
    out.take()
}

#[test]
fn effects_are_tagged_with_their_group() {
    let mut h = host(&[1, 2]);
    let mut out = Outbox::new();
    h.handle_request(RequestId(9), (2, Cmd::Write(5)).into(), &mut out);
    let fx = step(&mut out);
    assert_eq!(
        fx.records,
        vec![Persist::Append(GroupsRecord::Append {
            group: 2,
            record: 5
        })]
    );
    assert_eq!(
        fx.responses,
        vec![(RequestId(9), GroupResponse::Group(2, 5))]
    );
    let to: Vec<NodeId> = fx.messages.iter().map(|(to, _)| *to).collect();
    assert_eq!(to, vec![2, 3]);
    for (_, m) in &fx.messages {
        assert_eq!(m.parts, vec![(2, 5)]);
    }
    assert!(fx.early.is_empty());

    // A message's parts reach their groups; their events come out tagged.
    h.handle_message(
        2,
        GroupsMessage {
            parts: vec![(1, 7), (2, 8)],
        },
        &mut out,
    );
    assert_eq!(step(&mut out).events, vec![(1, 7), (2, 8)]);
}

#[test]
fn one_tick_of_many_groups_sends_one_message_per_peer() {
    let groups: Vec<GroupId> = (1..=64).collect();
    let mut h = host(&groups);
    let mut out = Outbox::new();
    h.tick(&mut out);
    let fx = step(&mut out);
    assert_eq!(fx.messages.len(), 2, "one message per peer");
    for (_, m) in &fx.messages {
        let parts: Vec<GroupId> = m.parts.iter().map(|(g, _)| *g).collect();
        assert_eq!(parts, groups);
    }
    assert_eq!(h.counters().messages_sent, 2);
    assert_eq!(h.counters().parts_sent, 128);
}

#[test]
fn parts_over_the_limit_split_into_several_messages() {
    let mut c = config(&[1, 2, 3, 4, 5]);
    c.parts_per_message_max = 2;
    let mut h = G::recover(c, Vec::new()).unwrap();
    let mut out = Outbox::new();
    h.tick(&mut out);
    let fx = step(&mut out);
    let to_2: Vec<usize> = fx
        .messages
        .iter()
        .filter(|(to, _)| *to == 2)
        .map(|(_, m)| m.parts.len())
        .collect();
    assert_eq!(to_2, vec![2, 2, 1]);
}

#[test]
fn early_messages_stay_early_and_apart_from_the_rest() {
    let mut h = host(&[1, 2]);
    let mut out = Outbox::new();
    h.handle_requests(
        [
            (RequestId(1), (1, Cmd::Early(4)).into()),
            (RequestId(2), (2, Cmd::Write(6)).into()),
            (RequestId(3), (2, Cmd::Early(5)).into()),
        ],
        &mut out,
    );
    let fx = step(&mut out);
    assert_eq!(fx.early.len(), 2);
    for (_, m) in &fx.early {
        assert_eq!(m.parts, vec![(1, 4), (2, 5)]);
    }
    assert_eq!(fx.messages.len(), 2);
    for (_, m) in &fx.messages {
        assert_eq!(m.parts, vec![(2, 6)]);
    }
    assert_eq!(
        fx.early_responses,
        vec![
            (RequestId(1), GroupResponse::Group(1, 4)),
            (RequestId(3), GroupResponse::Group(2, 5))
        ]
    );
    assert_eq!(
        fx.responses,
        vec![(RequestId(2), GroupResponse::Group(2, 6))]
    );
}

#[test]
fn durability_of_the_shared_log_maps_back_to_each_group_in_order() {
    let mut h = host(&[1, 2]);
    let mut out = Outbox::new();
    for (g, cmd) in [
        (1, Cmd::Write(10)),
        (2, Cmd::Write(20)),
        (1, Cmd::Checkpoint(11)),
        (1, Cmd::Write(12)),
    ] {
        h.handle_request(RequestId(0), (g, cmd).into(), &mut out);
    }
    assert_eq!(step(&mut out).records.len(), 4);
    h.records_durable(2, &mut out);
    assert_eq!(h.group(1).unwrap().durable, vec![(1, 0)]);
    assert_eq!(h.group(2).unwrap().durable, vec![(1, 0)]);
    // Nothing new for a group: it is not told again.
    h.records_durable(2, &mut out);
    h.records_durable(3, &mut out);
    assert_eq!(h.group(1).unwrap().durable, vec![(1, 0), (2, 1)]);
    assert_eq!(h.group(2).unwrap().durable, vec![(1, 0)]);
    h.records_durable(4, &mut out);
    assert_eq!(h.group(1).unwrap().durable, vec![(1, 0), (2, 1), (3, 1)]);
    assert!(step(&mut out).is_empty());
}

/// Appends persisted records to a log the way storage does (a checkpoint drops what came
/// before it).
fn store(log: &mut Vec<GroupsRecord<u64>>, fx: Effects<G>) {
    for p in fx.records {
        match p {
            Persist::Append(r) => log.push(r),
            Persist::Checkpoint(r) => {
                log.clear();
                log.push(r);
            }
        }
    }
}

#[test]
fn compaction_keeps_every_groups_live_records_across_recovery() {
    let mut c = config(&[1, 2, 3]);
    c.compact_records_min = 8;
    c.compact_live_multiple = 2;
    let mut h = G::recover(c.clone(), Vec::new()).unwrap();
    let mut log = Vec::new();
    let mut out = Outbox::new();
    for i in 0..400u64 {
        let g = if i % 10 == 9 { 3 } else { 1 + i % 2 };
        // Groups 1 and 2 checkpoint now and then; group 3 never does.
        let cmd = if g != 3 && i % 7 == 0 {
            Cmd::Checkpoint(i)
        } else {
            Cmd::Write(i)
        };
        h.handle_request(RequestId(i), (g, cmd).into(), &mut out);
        store(&mut log, step(&mut out));
    }
    assert!(h.counters().compactions >= 2, "{:?}", h.counters());
    assert!(matches!(log.first(), Some(GroupsRecord::Compacted { .. })));
    assert!(log.len() < 400, "the log was compacted: {}", log.len());
    let before: Vec<Vec<u64>> = [1, 2, 3].map(|g| h.group(g).unwrap().log.clone()).into();
    let again = G::recover(c, log).unwrap();
    let after: Vec<Vec<u64>> = [1, 2, 3]
        .map(|g| again.group(g).unwrap().log.clone())
        .into();
    assert_eq!(before, after);
    assert_eq!(after[2].len(), 40, "group 3 keeps every record");
    assert_eq!(
        again.metrics().live_records,
        after.iter().map(|l| l.len() as u64).sum::<u64>()
    );
}

#[test]
fn a_compaction_too_large_is_skipped_and_counted() {
    let mut c = config(&[1]);
    c.compact_records_min = 4;
    c.compacted_bytes_max = 1;
    let mut h = G::recover(c, Vec::new()).unwrap();
    let mut out = Outbox::new();
    for i in 0..10 {
        // Checkpoints keep the live records few, so a compaction is due.
        h.handle_request(RequestId(i), (1, Cmd::Checkpoint(i)).into(), &mut out);
    }
    assert!(step(&mut out).records.iter().all(|p| !p.is_checkpoint()));
    assert_eq!(h.counters().compactions, 0);
    assert!(h.counters().compactions_skipped >= 1);
}

#[test]
fn unknown_groups_and_oversized_messages_are_dropped_and_counted() {
    let mut c = config(&[1]);
    c.parts_per_message_max = 2;
    let mut h = G::recover(c, Vec::new()).unwrap();
    let mut out = Outbox::new();
    h.handle_message(
        2,
        GroupsMessage {
            parts: vec![(99, 1), (1, 2)],
        },
        &mut out,
    );
    h.handle_message(
        2,
        GroupsMessage {
            parts: vec![(1, 3), (1, 4), (1, 5)],
        },
        &mut out,
    );
    h.handle_request(RequestId(4), (42, Cmd::Write(1)).into(), &mut out);
    let fx = step(&mut out);
    assert_eq!(fx.events, vec![(1, 2)]);
    assert_eq!(
        fx.responses,
        vec![(RequestId(4), GroupResponse::UnknownGroup(42))]
    );
    assert!(fx.records.is_empty());
    let c = h.counters();
    assert_eq!(
        (
            c.unknown_group_parts,
            c.oversized_messages,
            c.unknown_group_requests
        ),
        (1, 1, 1)
    );
}

#[test]
fn recovery_refuses_bad_configurations_and_foreign_records() {
    let log = vec![GroupsRecord::Append {
        group: 5,
        record: 1,
    }];
    assert!(matches!(
        G::recover(config(&[1]), log),
        Err(GroupsError::UnknownGroupInLog(5))
    ));
    assert!(matches!(
        G::recover(config(&[1, 1]), Vec::new()),
        Err(GroupsError::Config(_))
    ));
    assert!(matches!(
        G::recover(config(&[]), Vec::new()),
        Err(GroupsError::Config(_))
    ));
    let mut c = config(&[1]);
    c.groups[0].1 .0 = 7;
    assert!(matches!(
        G::recover(c, Vec::new()),
        Err(GroupsError::Config(_))
    ));
    let mut c = config(&[1, 2, 3]);
    c.groups_max = 2;
    assert!(c.validate().is_err());
}

#[test]
fn the_frame_tags_name_the_grouped_protocol() {
    assert_eq!(G::PROTOCOL, 77 | GROUPED_PROTOCOL_BIT);
    assert_eq!(G::WIRE_VERSION, (GROUPS_WIRE_VERSION << 12) | 3);
}

#[test]
fn durability_past_what_was_asked_is_ignored_without_a_panic() {
    let mut h = host(&[1]);
    let mut out = Outbox::new();
    h.handle_request(RequestId(1), (1, Cmd::Write(1)).into(), &mut out);
    out.take();
    // A driver reporting more than was persisted: logged, never counted past what was asked.
    h.records_durable(5, &mut out);
    assert_eq!(h.group(1).unwrap().durable, vec![(1, 0)]);
    h.handle_request(RequestId(2), (1, Cmd::Write(2)).into(), &mut out);
    out.take();
    h.records_durable(6, &mut out);
    assert_eq!(h.group(1).unwrap().durable, vec![(1, 0), (2, 0)]);
}

// ---- Groups added and removed at run time ----

/// A host of `groups` that configures a group added at run time from a one-byte spec naming
/// the node id it runs as.
fn dynamic(groups: &[GroupId]) -> GroupsConfig<(NodeId, Vec<NodeId>)> {
    config(groups).with_configure(|_, spec| match spec {
        [id] => Ok((NodeId::from(*id), vec![2, 3])),
        _ => Err("a spec is one byte".into()),
    })
}

fn add(group: GroupId) -> GroupsRequest<Cmd> {
    GroupsRequest::AddGroup {
        group,
        spec: vec![1],
    }
}

fn remove(group: GroupId) -> GroupsRequest<Cmd> {
    GroupsRequest::RemoveGroup { group }
}

fn hosted(h: &G) -> Vec<GroupId> {
    h.groups().map(|(g, _)| g).collect()
}

#[test]
fn an_added_group_is_answered_with_its_record_and_recovered_from_it() {
    let c = dynamic(&[1]);
    let mut h = G::recover(c.clone(), Vec::new()).unwrap();
    let mut out = Outbox::new();
    h.handle_requests(
        [
            (RequestId(1), add(5)),
            (RequestId(2), (5, Cmd::Write(50)).into()),
        ],
        &mut out,
    );
    let fx = step(&mut out);
    // The answer is an ordinary one: released only once the batch's records, the group's
    // `Added` among them, are durable (the Outbox rule); the group's records follow it.
    assert!(fx.early_responses.is_empty());
    assert_eq!(
        fx.responses,
        vec![
            (RequestId(1), GroupResponse::Added(5)),
            (RequestId(2), GroupResponse::Group(5, 50)),
        ]
    );
    assert_eq!(
        fx.records,
        vec![
            Persist::Append(GroupsRecord::Added {
                group: 5,
                spec: vec![1]
            }),
            Persist::Append(GroupsRecord::Append {
                group: 5,
                record: 50
            }),
        ]
    );
    assert_eq!(hosted(&h), vec![1, 5]);
    let mut log = Vec::new();
    store(&mut log, fx);
    // Recovered from the whole log: the group is back with its records.
    let again = G::recover(c.clone(), log.clone()).unwrap();
    assert_eq!(hosted(&again), vec![1, 5]);
    assert_eq!(again.group(5).unwrap().log, vec![50]);
    // A crash before the `Added` record was durable (the tail torn before it): the group does
    // not exist, and neither does anything of it, nor was its answer released.
    let again = G::recover(c.clone(), Vec::new()).unwrap();
    assert_eq!(hosted(&again), vec![1]);
    // Without a way to configure added groups, the log cannot be recovered.
    assert!(matches!(
        G::recover(config(&[1]), log),
        Err(GroupsError::Config(_))
    ));
}

#[test]
fn a_removed_group_is_gone_after_compaction_and_recovery_and_so_are_its_snapshots() {
    use crate::snapshot::{MemSnapshotStore, SnapshotStore, SnapshotWriter};
    use std::sync::Arc;
    let shared = Arc::new(MemSnapshotStore::new());
    let store_of = |g| GroupSnapshots::new(shared.clone(), g);
    let write = |g: GroupId| {
        let mut w = SnapshotWriter::create(&store_of(g), u64::MAX).unwrap();
        w.append(b"state").unwrap();
        w.finish().unwrap().id
    };
    let (kept, gone) = (write(1), write(2));
    let orphan = write(7); // of a group no log hosts: a removal whose clean-up was cut short
    let mut c = dynamic(&[1, 2]);
    c.compact_records_min = 4;
    c.compact_live_multiple = 1;
    let mut h = G::recover_with_snapshots(c.clone(), Vec::new(), shared.clone()).unwrap();
    assert!(shared.open(orphan).is_err(), "recovery removes orphans");
    let mut out = Outbox::new();
    let mut log = Vec::new();
    h.handle_requests(
        [
            (RequestId(1), (2, Cmd::Write(20)).into()),
            (RequestId(2), (2, Cmd::Hold).into()),
            (RequestId(3), remove(2)),
            (RequestId(4), (2, Cmd::Write(21)).into()),
        ],
        &mut out,
    );
    let fx = step(&mut out);
    assert_eq!(
        fx.responses,
        vec![
            (RequestId(1), GroupResponse::Group(2, 20)),
            (RequestId(2), GroupResponse::Abandoned(2)),
            (RequestId(3), GroupResponse::Removed(2)),
            (RequestId(4), GroupResponse::UnknownGroup(2)),
        ]
    );
    assert_eq!(
        fx.records.last(),
        Some(&Persist::Append(GroupsRecord::Removed { group: 2 }))
    );
    store(&mut log, fx);
    // Until the removal is durable, a crash may bring the group back: its files stay, and it
    // cannot be added again.
    assert_eq!(store_of(2).list().unwrap(), vec![gone]);
    assert!(h.removal_pending(2));
    h.handle_request(RequestId(5), add(2), &mut out);
    assert_eq!(
        step(&mut out).responses,
        vec![(RequestId(5), GroupResponse::RemovalPending(2))]
    );
    h.records_durable(2, &mut out);
    assert!(step(&mut out).is_empty());
    assert!(!h.removal_pending(2));
    assert!(store_of(2).list().unwrap().is_empty());
    assert_eq!(store_of(1).list().unwrap(), vec![kept]);
    // Messages for it are dropped and counted.
    h.handle_message(
        2,
        GroupsMessage {
            parts: vec![(2, 9)],
        },
        &mut out,
    );
    assert!(step(&mut out).events.is_empty());
    assert_eq!(h.counters().unknown_group_parts, 1);
    // Enough writes of group 1 to compact: the compaction forgets group 2.
    for i in 0..8 {
        h.handle_request(RequestId(10 + i), (1, Cmd::Checkpoint(i)).into(), &mut out);
        store(&mut log, step(&mut out));
    }
    assert!(h.counters().compactions >= 1);
    let Some(GroupsRecord::Compacted { groups }) = log.first() else {
        panic!("not compacted: {log:?}");
    };
    let listed: Vec<GroupId> = groups.iter().map(|c| c.group).collect();
    assert_eq!(listed, vec![1]);
    let again = G::recover_with_snapshots(c, log, shared.clone()).unwrap();
    assert_eq!(
        hosted(&again),
        vec![1],
        "the configured group 2 stays removed"
    );
    assert_eq!(shared.list().unwrap(), vec![kept]);
}

#[test]
fn adding_beyond_groups_max_is_refused() {
    let mut c = dynamic(&[1, 2]);
    c.groups_max = 2;
    let mut h = G::recover(c, Vec::new()).unwrap();
    let mut out = Outbox::new();
    h.handle_request(RequestId(1), add(3), &mut out);
    let fx = step(&mut out);
    assert_eq!(
        fx.responses,
        vec![(
            RequestId(1),
            GroupResponse::TooManyGroups { group: 3, max: 2 }
        )]
    );
    assert!(fx.records.is_empty());
    assert_eq!(hosted(&h), vec![1, 2]);
    // Room again once one is removed.
    h.handle_requests(
        [(RequestId(2), remove(1)), (RequestId(3), add(3))],
        &mut out,
    );
    assert_eq!(
        step(&mut out).responses,
        vec![
            (RequestId(2), GroupResponse::Removed(1)),
            (RequestId(3), GroupResponse::Added(3)),
        ]
    );
    assert_eq!(h.counters().membership_refused, 1);
}

#[test]
fn duplicate_adds_unknown_removes_and_bad_specs_are_answered_and_change_nothing() {
    let mut h = G::recover(dynamic(&[1]), Vec::new()).unwrap();
    let mut out = Outbox::new();
    let bad_spec = GroupsRequest::AddGroup {
        group: 4,
        spec: vec![],
    };
    let wrong_id = GroupsRequest::AddGroup {
        group: 4,
        spec: vec![9],
    };
    h.handle_requests(
        [
            (RequestId(1), add(1)),
            (RequestId(2), remove(9)),
            (RequestId(3), bad_spec),
            (RequestId(4), wrong_id),
        ],
        &mut out,
    );
    let fx = step(&mut out);
    assert!(fx.records.is_empty());
    assert!(matches!(
        &fx.responses[..],
        [
            (RequestId(1), GroupResponse::AlreadyHosted(1)),
            (RequestId(2), GroupResponse::UnknownGroup(9)),
            (RequestId(3), GroupResponse::BadSpec { group: 4, .. }),
            (RequestId(4), GroupResponse::BadSpec { group: 4, .. }),
        ]
    ));
    assert_eq!(hosted(&h), vec![1]);
    assert_eq!(h.counters().membership_refused, 4);
    // A host without `configure` adds nothing.
    let mut h = host(&[1]);
    h.handle_request(RequestId(5), add(2), &mut out);
    assert!(matches!(
        &step(&mut out).responses[..],
        [(RequestId(5), GroupResponse::BadSpec { group: 2, .. })]
    ));
}

#[test]
fn durability_maps_to_each_group_across_interleaved_adds_and_removes() {
    let mut h = G::recover(dynamic(&[1, 2]), Vec::new()).unwrap();
    let mut out = Outbox::new();
    // Log (a batch runs each group's share between two host requests in one call, by group):
    // 1:w, +3, 2:w, 2:cp, 3:w, -2, +4 (reusing group 2's slot), 1:w, 4:w, 4:cp
    h.handle_requests(
        [
            (RequestId(1), (1, Cmd::Write(10)).into()),
            (RequestId(2), add(3)),
            (RequestId(3), (2, Cmd::Write(20)).into()),
            (RequestId(4), (2, Cmd::Checkpoint(21)).into()),
            (RequestId(5), (3, Cmd::Write(30)).into()),
            (RequestId(6), remove(2)),
            (RequestId(7), add(4)),
            (RequestId(8), (4, Cmd::Write(40)).into()),
            (RequestId(9), (1, Cmd::Write(11)).into()),
            (RequestId(10), (4, Cmd::Checkpoint(41)).into()),
        ],
        &mut out,
    );
    assert_eq!(step(&mut out).records.len(), 10);
    let durable = |h: &G, g| h.group(g).unwrap().durable.clone();
    h.records_durable(5, &mut out); // 1:w, +3, 2:w, 2:cp, 3:w
    assert_eq!(durable(&h, 1), vec![(1, 0)]);
    assert_eq!(durable(&h, 3), vec![(1, 0)]);
    // Group 2's records and its removal: nobody hears of them; group 4, in its old slot,
    // does not count them.
    h.records_durable(7, &mut out);
    assert!(durable(&h, 4).is_empty());
    h.records_durable(8, &mut out); // 1:w
    assert_eq!(durable(&h, 1), vec![(1, 0), (2, 0)]);
    assert!(durable(&h, 4).is_empty());
    h.records_durable(9, &mut out); // 4:w
    assert_eq!(durable(&h, 4), vec![(1, 0)]);
    h.records_durable(10, &mut out); // 4:cp
    assert_eq!(durable(&h, 3), vec![(1, 0)]);
    assert_eq!(durable(&h, 4), vec![(1, 0), (2, 1)]);
    assert!(step(&mut out).is_empty());
}

#[test]
fn the_log_decides_the_hosted_set_over_the_configuration() {
    let rec = |group, spec: Option<u8>, records: Vec<u64>| CompactedGroup {
        group,
        spec: spec.map(|b| vec![b]),
        records,
    };
    // Uncompacted: the configured groups, then the log's additions and removals.
    let log = vec![
        GroupsRecord::Removed { group: 2 },
        GroupsRecord::Added {
            group: 5,
            spec: vec![1],
        },
        GroupsRecord::Append {
            group: 5,
            record: 7,
        },
    ];
    let h = G::recover(dynamic(&[1, 2]), log).unwrap();
    assert_eq!(hosted(&h), vec![1, 5]);
    assert_eq!(h.group(5).unwrap().log, vec![7]);
    // Compacted: exactly the set it lists; a configured group it does not list stays out.
    let log = vec![GroupsRecord::Compacted {
        groups: vec![rec(1, None, vec![3]), rec(5, Some(1), vec![])],
    }];
    let h = G::recover(dynamic(&[1, 2]), log).unwrap();
    assert_eq!(hosted(&h), vec![1, 5]);
    assert_eq!(h.group(1).unwrap().log, vec![3]);
    // An initial group the configuration lost, or a record of a group not hosted then.
    let log = vec![GroupsRecord::Compacted {
        groups: vec![rec(9, None, vec![])],
    }];
    assert!(matches!(
        G::recover(dynamic(&[1]), log),
        Err(GroupsError::UnknownGroupInLog(9))
    ));
    let log = vec![
        GroupsRecord::Removed { group: 1 },
        GroupsRecord::Append {
            group: 1,
            record: 1,
        },
    ];
    assert!(matches!(
        G::recover(dynamic(&[1]), log),
        Err(GroupsError::UnknownGroupInLog(1))
    ));
    // A host may start with no group when it can add them.
    assert!(G::recover(dynamic(&[]), Vec::new()).is_ok());
}
