//! [`Router`]: how a client of a sharded store finds the group, and the process, to send a
//! key's request to, and how it follows redirects when the map changes. Sans-IO: the caller
//! sends what [`Router::next`] names and reports the answer to [`Router::observe`].

use std::collections::BTreeMap;

use common::groups::{GroupId, GroupResponse, GroupsRequest};
use common::NodeId;
use raft::{RaftError, Request, Response};

use super::layout::{Layout, MAP_GROUP};
use super::machine::{Refusal, ShardCommand, ShardOutput, ShardQuery};
use super::map::ShardMap;

/// A request to a process of a sharded store.
pub type ShardRequest = GroupsRequest<Request<ShardCommand, ShardQuery>>;
/// Its answer.
pub type ShardResponse = GroupResponse<Response<ShardOutput>>;

/// Where a client's next request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The client has no map, or a stale one: read the map ([`Router::map_request`]) from this
    /// process first.
    ReadMap(NodeId),
    /// Send the key's request to group `group` on process `node`.
    Send {
        /// The key's partition's group.
        group: GroupId,
        /// The process to try.
        node: NodeId,
    },
}

/// A client's view of a sharded store: the newest shard map it has seen and, per group, the
/// process it last found leading.
///
/// Redirects, all handled by [`Router::observe`]:
/// - Raft's "not the leader, try N" moves the group's hint to N;
/// - a process that does not host the group (it moved away: `UnknownGroup`), a group removed
///   while it held the request (`Abandoned`), or a group that says the key is not its own
///   ([`Refusal::WrongPartition`]) mark the map stale: the next request reads the map again;
/// - no answer, or any other failure, tries the next process the map names for the group.
///
/// A process that did not answer is *suspect* for the next [`SUSPECT_FOR`] answers the router
/// hears: hints naming it are not followed (followers of a crashed leader keep naming it until
/// they elect another) and other processes are tried first. It stops being suspect as soon as
/// it answers, or when the count runs out (a restarted process is tried again).
#[derive(Clone, Debug)]
pub struct Router {
    seeds: Vec<NodeId>,
    map: Option<ShardMap>,
    stale: bool,
    hints: BTreeMap<GroupId, NodeId>,
    turn: usize,
    suspects: BTreeMap<NodeId, u32>,
}

/// How many answers a process that did not answer stays suspect for (see [`Router`]).
pub const SUSPECT_FOR: u32 = 8;

impl Router {
    /// A router that first asks one of `seeds` (the map group's members) for the map.
    pub fn new(seeds: Vec<NodeId>) -> Self {
        Self {
            seeds,
            map: None,
            stale: true,
            hints: BTreeMap::new(),
            turn: 0,
            suspects: BTreeMap::new(),
        }
    }

    /// The newest map seen.
    pub fn map(&self) -> Option<&ShardMap> {
        self.map.as_ref()
    }

    /// The processes it asks for the map before it has one.
    pub fn seeds(&self) -> &[NodeId] {
        &self.seeds
    }

    /// Whether the next request must read the map (none yet, or a redirect made it stale).
    pub fn needs_map(&self) -> bool {
        self.map.is_none() || self.stale
    }

    /// The process to read the map from.
    pub(crate) fn map_node(&self) -> NodeId {
        self.pick(MAP_GROUP)
    }

    /// The request that reads the shard map.
    pub fn map_request() -> ShardRequest {
        GroupsRequest::Group(MAP_GROUP, Request::Read(ShardQuery::Map))
    }

    /// Where the request for `key` goes next.
    pub fn next(&mut self, key: &str) -> Next {
        let Some(map) = self.map.as_ref().filter(|_| !self.stale) else {
            return Next::ReadMap(self.pick(MAP_GROUP));
        };
        let group = Layout::group_of(map.layout.partition_of(key));
        Next::Send {
            group,
            node: self.pick(group),
        }
    }

    /// The process to try for `group`: its hint, else the next of the processes the map names
    /// for it (the map group's members, or the seeds before any map).
    pub(crate) fn pick(&self, group: GroupId) -> NodeId {
        if let Some(&node) = self.hints.get(&group) {
            return node;
        }
        let candidates = match (&self.map, group) {
            (Some(map), MAP_GROUP) => map.map_group.clone(),
            (None, _) => self.seeds.clone(),
            (Some(map), g) => map
                .layout
                .partition_of_group(g)
                .map(|p| map.route(p))
                .unwrap_or_default(),
        };
        let candidates = if candidates.is_empty() {
            self.seeds.clone()
        } else {
            candidates
        };
        let trusted: Vec<NodeId> = candidates
            .iter()
            .copied()
            .filter(|n| !self.suspects.contains_key(n))
            .collect();
        let candidates = if trusted.is_empty() {
            candidates
        } else {
            trusted
        };
        candidates
            .get(self.turn % candidates.len().max(1))
            .copied()
            .unwrap_or(0)
    }

    /// Learns from the answer (`None`: none came) to a request sent to `group` on `node`.
    pub fn observe(&mut self, group: GroupId, node: NodeId, answer: Option<&ShardResponse>) {
        self.suspects.retain(|_, left| {
            *left -= 1;
            *left > 0
        });
        if answer.is_some() {
            self.suspects.remove(&node);
        } else {
            self.suspects.insert(node, SUSPECT_FOR);
        }
        match answer {
            Some(GroupResponse::Group(
                _,
                Response::Read(ShardOutput::Map(map))
                | Response::Applied {
                    output: ShardOutput::Map(map),
                    ..
                },
            )) => {
                self.learn(map);
                self.hints.insert(group, node);
            }
            Some(GroupResponse::Group(
                _,
                Response::Read(ShardOutput::Refused(Refusal::WrongPartition { .. }))
                | Response::Applied {
                    output: ShardOutput::Refused(Refusal::WrongPartition { .. }),
                    ..
                },
            )) => self.stale = true,
            Some(GroupResponse::Group(_, Response::Read(_) | Response::Applied { .. })) => {
                self.hints.insert(group, node);
            }
            Some(GroupResponse::Group(
                _,
                Response::Failed(
                    RaftError::NotLeader { leader: Some(l) }
                    | RaftError::LeadershipLost { leader: Some(l) },
                ),
            )) if *l != node && !self.suspects.contains_key(l) => {
                self.hints.insert(group, *l);
            }
            Some(GroupResponse::UnknownGroup(_) | GroupResponse::Abandoned(_)) => {
                self.hints.remove(&group);
                self.turn += 1;
                if group != MAP_GROUP {
                    self.stale = true;
                }
            }
            _ => {
                self.hints.remove(&group);
                self.turn += 1;
            }
        }
    }

    /// Keeps `map` if it is at least as new as the one held (a map read again after a
    /// redirect clears the stale mark even when nothing changed).
    pub fn learn(&mut self, map: &ShardMap) {
        if self.map.as_ref().is_none_or(|m| map.epoch >= m.epoch) {
            self.map = Some(map.clone());
            self.stale = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        ShardMap::genesis(Layout::new(8, 3).unwrap(), vec![1, 2, 3], (1..=3).collect()).unwrap()
    }

    fn applied(output: ShardOutput) -> ShardResponse {
        GroupResponse::Group(0, Response::Applied { index: 1, output })
    }

    #[test]
    fn reads_the_map_first_then_routes_by_key_and_follows_hints() {
        let mut r = Router::new(vec![1, 2, 3]);
        let Next::ReadMap(first) = r.next("x") else {
            panic!("routed without a map")
        };
        // No answer: try the next seed.
        r.observe(MAP_GROUP, first, None);
        assert_ne!(r.next("x"), Next::ReadMap(first));
        let m = map();
        r.observe(
            MAP_GROUP,
            2,
            Some(&applied(ShardOutput::Map(Box::new(m.clone())))),
        );
        let group = Layout::group_of(m.layout.partition_of("x"));
        let Next::Send { group: g, node } = r.next("x") else {
            panic!("no route with a map")
        };
        assert_eq!(g, group);
        assert!((1..=3).contains(&node));
        let hinted = if node == 3 { 2 } else { 3 };
        let not_leader = GroupResponse::Group(
            group,
            Response::Failed(RaftError::NotLeader {
                leader: Some(hinted),
            }),
        );
        r.observe(group, node, Some(&not_leader));
        assert_eq!(
            r.next("x"),
            Next::Send {
                group,
                node: hinted
            }
        );
        // The hinted node does not answer: it is suspect, so a hint naming it is not
        // followed, and the others are tried first, until it answers again.
        r.observe(group, hinted, None);
        let Next::Send { node: other, .. } = r.next("x") else {
            panic!()
        };
        assert_ne!(other, hinted);
        r.observe(group, other, Some(&not_leader));
        assert_ne!(
            r.next("x"),
            Next::Send {
                group,
                node: hinted
            }
        );
        let ok = GroupResponse::Group(
            group,
            Response::Read(ShardOutput::Kv(common::kv_store::KvOutput::Value(None))),
        );
        r.observe(group, hinted, Some(&ok));
        assert_eq!(
            r.next("x"),
            Next::Send {
                group,
                node: hinted
            }
        );
    }

    #[test]
    fn a_moved_group_or_a_wrong_partition_makes_it_read_the_map_again() {
        let mut r = Router::new(vec![1]);
        let m = map();
        r.learn(&m);
        let Next::Send { group, node } = r.next("x") else {
            panic!()
        };
        r.observe(group, node, Some(&GroupResponse::UnknownGroup(group)));
        assert!(matches!(r.next("x"), Next::ReadMap(_)));
        // An older map does not replace a newer one; the same epoch clears the stale mark.
        let mut newer = m.clone();
        newer.epoch = 5;
        r.learn(&newer);
        r.learn(&m);
        assert_eq!(r.map().map(|m| m.epoch), Some(5));
        assert!(matches!(r.next("x"), Next::Send { .. }));
        let wrong = GroupResponse::Group(
            group,
            Response::Applied {
                index: 3,
                output: ShardOutput::Refused(Refusal::WrongPartition {
                    key_partition: 1,
                    partition: 2,
                }),
            },
        );
        r.observe(group, node, Some(&wrong));
        assert!(matches!(r.next("x"), Next::ReadMap(_)));
    }
}
