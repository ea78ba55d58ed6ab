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
