//! [`Mover`]: carries out the moves the ring asks for, one partition at a time, each replica
//! added as a learner, caught up (by snapshot when the log was compacted), promoted, and the
//! replica it replaces removed. Sans-IO: the caller sends what [`Mover::next_request`] names and
//! reports the answer to [`Mover::observe`]; it holds no state the shard map does not also
//! hold, so a mover that stops anywhere and starts again from nothing finishes the job.

use std::collections::{BTreeSet, VecDeque};

use common::groups::{GroupId, GroupResponse, GroupsRequest};
use common::NodeId;
use raft::{RaftError, Request, Response};

use super::layout::{Layout, PartitionId, MAP_GROUP};
use super::machine::{Refusal, ShardCommand, ShardOutput, ShardQuery};
use super::map::{MapCommand, MapError, PendingMove, ShardMap};
use super::router::{Router, ShardRequest, ShardResponse};
use super::setup::GroupSpec;

/// One step of a move, for partition `partition`'s group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveStep {
    /// Process `node` starts hosting the group, as a learner of its current voters.
    Host(NodeId),
    /// The group's leader adds `node` as a learner; the leader then sends it the log, or a
    /// snapshot if the log was compacted past what it holds.
    AddLearner(NodeId),
    /// The leader promotes `node` to voter; it refuses while `node` has not caught up, and
    /// the mover asks again.
    Promote(NodeId),
    /// The leader removes `node` from the group (the leader itself included: it hands over by
    /// stepping down once the change commits).
    Remove(NodeId),
    /// Process `node` stops hosting the group.
    Unhost(NodeId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Propose a change of the ring (the front of `ring_changes`).
    Ring,
    /// Read the map to find the next move.
    ReadMap,
    /// Record in the map that the move begins.
    Begin(PendingMove),
    /// Carry out the front of `steps` for this partition.
    Step(PartitionId),
    /// Record in the map that the move of this partition is complete.
    End(PartitionId),
    /// Every partition is in place.
    Done,
}

/// What a [`Mover`] did, for tests and operators.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoverStats {
    /// Requests sent.
    pub requests: u64,
    /// Requests that did not advance the move (no answer, not the leader, busy, ...).
    pub retries: u64,
    /// Promotions refused because the learner had not caught up yet.
    pub catch_up_waits: u64,
}

/// Moves partitions to where the ring places them: see the module documentation.
///
/// A move of partition `p` from replicas `F` to `T` (its place on the current ring) is:
/// 1. `BeginMove` in the map (clients now try `F ∪ T`);
/// 2. for each process `a` in `T \ F`: `a` hosts the group as a learner
///    ([`GroupsRequest::AddGroup`] with a [`GroupSpec`]); the leader adds it as a learner
///    (Raft `AddLearner`) and catches it up; then promotes it (`AddVoter`), which the leader
///    refuses until the learner has caught up;
/// 3. for each process `r` in `F \ T`: the leader removes it (`RemoveNode`), then `r` stops
///    hosting the group ([`GroupsRequest::RemoveGroup`]);
/// 4. `EndMove` in the map (clients now try `T`).
///
/// Every step is idempotent (an answer saying it is done already counts as done), and the map
/// records which move is under way, so a mover started afresh reads the map and carries on.
#[derive(Clone, Debug)]
pub struct Mover {
    router: Router,
    ring_changes: VecDeque<MapCommand>,
    phase: Phase,
    steps: VecDeque<MoveStep>,
    spec: GroupSpec,
    moved: BTreeSet<PartitionId>,
    refused: Vec<(MapCommand, MapError)>,
    stats: MoverStats,
}

impl Mover {
    /// A mover that reads the map from one of `seeds` (the map group's members).
    pub fn new(seeds: Vec<NodeId>) -> Self {
        Self {
            router: Router::new(seeds),
            ring_changes: VecDeque::new(),
            phase: Phase::ReadMap,
            steps: VecDeque::new(),
            spec: GroupSpec {
                voters: Vec::new(),
                learners: Vec::new(),
            },
            moved: BTreeSet::new(),
            refused: Vec::new(),
            stats: MoverStats::default(),
        }
    }

    /// Asks for a change of the ring (`AddProcess` or `RemoveProcess`) before the moves it
    /// implies. A change the map already holds counts as done.
    pub fn change_ring(&mut self, change: MapCommand) {
        self.ring_changes.push_back(change);
        if matches!(self.phase, Phase::Done | Phase::ReadMap) {
            self.phase = Phase::Ring;
        }
    }

    /// Forgets everything but the ring changes not yet made, as a mover process that crashed
    /// and started again would: it reads the map and resumes the move under way.
    pub fn restart(&mut self) {
        let mut fresh = Mover::new(self.router_seeds());
        fresh.ring_changes = std::mem::take(&mut self.ring_changes);
        if !fresh.ring_changes.is_empty() {
            fresh.phase = Phase::Ring;
        }
        fresh.moved = std::mem::take(&mut self.moved);
        fresh.refused = std::mem::take(&mut self.refused);
        fresh.stats = self.stats.clone();
        *self = fresh;
    }

    fn router_seeds(&self) -> Vec<NodeId> {
        self.router
            .map()
            .map(|m| m.map_group.clone())
            .unwrap_or_else(|| self.router.seeds().to_vec())
    }

    /// Whether every partition is in place and no ring change waits.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The partitions this mover worked on (it began their moves, or resumed them): only
    /// partitions whose place on the ring changed, since the map lets a move begin only
    /// towards that place.
    pub fn moved(&self) -> &BTreeSet<PartitionId> {
        &self.moved
    }

    /// Ring changes the map refused (fewer processes than replicas, ...), with why.
    pub fn refused(&self) -> &[(MapCommand, MapError)] {
        &self.refused
    }

    /// The newest map seen.
    pub fn map(&self) -> Option<&ShardMap> {
        self.router.map()
    }

    /// Counts of what it did.
    pub fn stats(&self) -> &MoverStats {
        &self.stats
    }

    /// The group and process the current request goes to, and the request; `None` when done.
    pub fn next_request(&mut self) -> Option<(NodeId, ShardRequest)> {
        let propose =
            |c: MapCommand| GroupsRequest::Group(MAP_GROUP, Request::Propose(ShardCommand::Map(c)));
        let (node, request) = match &self.phase {
            Phase::Done => return None,
            Phase::Ring => {
                let change = self.ring_changes.front()?.clone();
                (self.router.pick(MAP_GROUP), propose(change))
            }
            Phase::ReadMap => (self.router.pick(MAP_GROUP), Router::map_request()),
            Phase::Begin(mv) => (
                self.router.pick(MAP_GROUP),
                propose(MapCommand::BeginMove {
                    partition: mv.partition,
                    to: mv.to.clone(),
                }),
            ),
            Phase::End(p) => (
                self.router.pick(MAP_GROUP),
                propose(MapCommand::EndMove { partition: *p }),
            ),
            Phase::Step(p) => {
                let group = Layout::group_of(*p);
                let step = self.steps.front()?.clone();
                let to_leader = |r: Request<ShardCommand, ShardQuery>, router: &Router| {
                    (router.pick(group), GroupsRequest::Group(group, r))
                };
                match step {
                    MoveStep::Host(node) => (
                        node,
                        GroupsRequest::AddGroup {
                            group,
                            spec: self.spec.encode(),
                        },
                    ),
                    MoveStep::AddLearner(node) => {
                        to_leader(Request::AddLearner(node), &self.router)
                    }
                    MoveStep::Promote(node) => to_leader(Request::AddVoter(node), &self.router),
                    MoveStep::Remove(node) => to_leader(Request::RemoveNode(node), &self.router),
                    MoveStep::Unhost(node) => (node, GroupsRequest::RemoveGroup { group }),
                }
            }
        };
        self.stats.requests += 1;
        Some((node, request))
    }

    /// Learns from the answer (`None`: none came) to the request [`Mover::next_request`] named, sent
    /// to `node`.
    pub fn observe(&mut self, node: NodeId, answer: Option<&ShardResponse>) {
        let advanced = match self.phase.clone() {
            Phase::Done => true,
            Phase::Ring => self.on_ring(node, answer),
            Phase::ReadMap => self.on_read_map(node, answer),
            Phase::Begin(mv) => self.on_begin(node, mv, answer),
            Phase::End(_) => self.on_end(node, answer),
            Phase::Step(p) => self.on_step(node, p, answer),
        };
        if !advanced {
            self.stats.retries += 1;
        }
    }

    /// The map-group output of an answer, after letting the router learn from it.
    fn map_output<'a>(
        &mut self,
        node: NodeId,
        answer: Option<&'a ShardResponse>,
    ) -> Option<&'a ShardOutput> {
        self.router.observe(MAP_GROUP, node, answer);
        match answer? {
            GroupResponse::Group(_, Response::Applied { output, .. } | Response::Read(output)) => {
                Some(output)
            }
            _ => None,
        }
    }

    fn on_ring(&mut self, node: NodeId, answer: Option<&ShardResponse>) -> bool {
        let done = match self.map_output(node, answer) {
            Some(ShardOutput::Map(_)) => true,
            Some(ShardOutput::Refused(Refusal::Map(
                MapError::AlreadyOnRing(_) | MapError::NotOnRing(_),
            ))) => true,
            Some(ShardOutput::Refused(Refusal::Map(e))) => {
                if let Some(change) = self.ring_changes.front() {
                    self.refused.push((change.clone(), e.clone()));
                }
                true
            }
            _ => false,
        };
        if done {
            self.ring_changes.pop_front();
            self.phase = if self.ring_changes.is_empty() {
                Phase::ReadMap
            } else {
                Phase::Ring
            };
        }
        done
    }

    fn on_read_map(&mut self, node: NodeId, answer: Option<&ShardResponse>) -> bool {
        if !matches!(self.map_output(node, answer), Some(ShardOutput::Map(_))) {
            return false;
        }
        let Some(map) = self.router.map() else {
            return false;
        };
        self.phase = match map.pending().into_iter().next() {
            None => Phase::Done,
            Some(mv) if mv.begun => self.plan(mv),
            Some(mv) => Phase::Begin(mv),
        };
        true
    }

    fn on_begin(&mut self, node: NodeId, mv: PendingMove, answer: Option<&ShardResponse>) -> bool {
        match self.map_output(node, answer) {
            Some(ShardOutput::Map(_)) => {
                self.phase = self.plan(mv);
                true
            }
            // The ring changed since the map was read, or the move began already: look again.
            Some(ShardOutput::Refused(_)) => {
                self.phase = Phase::ReadMap;
                true
            }
            _ => false,
        }
    }

    fn on_end(&mut self, node: NodeId, answer: Option<&ShardResponse>) -> bool {
        match self.map_output(node, answer) {
            Some(ShardOutput::Map(_))
            | Some(ShardOutput::Refused(Refusal::Map(MapError::NotMoving(_)))) => {
                self.phase = Phase::ReadMap;
                true
            }
            Some(ShardOutput::Refused(_)) => {
                self.phase = Phase::ReadMap;
                true
            }
            _ => false,
        }
    }

    /// The steps of `mv`, and the phase that carries them out.
    fn plan(&mut self, mv: PendingMove) -> Phase {
        self.moved.insert(mv.partition);
        self.steps.clear();
        for &a in mv.to.iter().filter(|a| !mv.from.contains(a)) {
            self.steps.extend([
                MoveStep::Host(a),
                MoveStep::AddLearner(a),
                MoveStep::Promote(a),
            ]);
        }
        for &r in mv.from.iter().filter(|r| !mv.to.contains(r)) {
            self.steps
                .extend([MoveStep::Remove(r), MoveStep::Unhost(r)]);
        }
        let learners: Vec<NodeId> = mv
            .to
            .iter()
            .filter(|a| !mv.from.contains(a))
            .copied()
            .collect();
        self.spec = GroupSpec {
            voters: mv.from.clone(),
            learners,
        };
        if self.steps.is_empty() {
            Phase::End(mv.partition)
        } else {
            Phase::Step(mv.partition)
        }
    }

    fn on_step(&mut self, node: NodeId, p: PartitionId, answer: Option<&ShardResponse>) -> bool {
        let group: GroupId = Layout::group_of(p);
        let Some(step) = self.steps.front().cloned() else {
            self.phase = Phase::End(p);
            return true;
        };
        let done = match step {
            MoveStep::Host(_) => matches!(
                answer,
                Some(GroupResponse::Added(_) | GroupResponse::AlreadyHosted(_))
            ),
            MoveStep::Unhost(_) => matches!(
                answer,
                Some(GroupResponse::Removed(_) | GroupResponse::UnknownGroup(_))
            ),
            MoveStep::AddLearner(_) | MoveStep::Promote(_) | MoveStep::Remove(_) => {
                self.router.observe(group, node, answer);
                match answer {
                    Some(GroupResponse::Group(_, Response::MembershipChanged { .. })) => true,
                    // Already a member, already a voter, no longer a member: done before
                    // (an answer lost, or a mover that started again).
                    Some(GroupResponse::Group(_, Response::Failed(RaftError::Invalid(_)))) => true,
                    Some(GroupResponse::Group(_, Response::Failed(RaftError::Busy(_))))
                        if matches!(step, MoveStep::Promote(_)) =>
                    {
                        self.stats.catch_up_waits += 1;
                        false
                    }
                    _ => false,
                }
            }
        };
        if done {
            self.steps.pop_front();
            if self.steps.is_empty() {
                self.phase = Phase::End(p);
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesis() -> ShardMap {
        ShardMap::genesis(
            Layout::new(16, 3).unwrap(),
            vec![1, 2, 3],
            (1..=3).collect(),
        )
        .unwrap()
    }

    /// Answers the mover's requests from an in-memory map and in-memory group memberships,
    /// as a cluster that never fails would, refusing each promotion once first.
    struct Fake {
        map: ShardMap,
        members: Vec<BTreeSet<NodeId>>,
        hosted: BTreeSet<(NodeId, GroupId)>,
        refused_promotions: BTreeSet<(GroupId, NodeId)>,
    }

    impl Fake {
        fn new() -> Self {
            let map = genesis();
            let members = map
                .partitions
                .iter()
                .map(|s| s.replicas.iter().copied().collect())
                .collect();
            let mut hosted = BTreeSet::new();
            for (p, s) in map.partitions.iter().enumerate() {
                for &n in &s.replicas {
                    hosted.insert((n, Layout::group_of(p as u32)));
                }
            }
            Self {
                map,
                members,
                hosted,
                refused_promotions: BTreeSet::new(),
            }
        }

        fn answer(&mut self, node: NodeId, req: &ShardRequest) -> ShardResponse {
            let ok = |g, output| GroupResponse::Group(g, Response::Applied { index: 1, output });
            let changed = |g| {
                GroupResponse::Group(
                    g,
                    Response::MembershipChanged {
                        index: 1,
                        membership: Box::default(),
                    },
                )
            };
            let invalid =
                |g| GroupResponse::Group(g, Response::Failed(RaftError::Invalid("no".into())));
            match req {
                GroupsRequest::Group(0, Request::Read(ShardQuery::Map)) => GroupResponse::Group(
                    0,
                    Response::Read(ShardOutput::Map(Box::new(self.map.clone()))),
                ),
                GroupsRequest::Group(0, Request::Propose(ShardCommand::Map(c))) => {
                    match self.map.apply(c) {
                        Ok(()) => ok(0, ShardOutput::Map(Box::new(self.map.clone()))),
                        Err(e) => ok(0, ShardOutput::Refused(Refusal::Map(e))),
                    }
                }
                GroupsRequest::AddGroup { group, .. } => {
                    if self.hosted.insert((node, *group)) {
                        GroupResponse::Added(*group)
                    } else {
                        GroupResponse::AlreadyHosted(*group)
                    }
                }
                GroupsRequest::RemoveGroup { group } => {
                    if self.hosted.remove(&(node, *group)) {
                        GroupResponse::Removed(*group)
                    } else {
                        GroupResponse::UnknownGroup(*group)
                    }
                }
                GroupsRequest::Group(g, r) => {
                    let m = &mut self.members[(*g - 1) as usize];
                    match r {
                        Request::AddLearner(n) if m.contains(n) => invalid(*g),
                        Request::AddLearner(_) => changed(*g),
                        Request::AddVoter(n) if m.contains(n) => invalid(*g),
                        Request::AddVoter(n) => {
                            if self.refused_promotions.insert((*g, *n)) {
                                return GroupResponse::Group(
                                    *g,
                                    Response::Failed(RaftError::Busy("catching up")),
                                );
                            }
                            m.insert(*n);
                            changed(*g)
                        }
                        Request::RemoveNode(n) if !m.contains(n) => invalid(*g),
                        Request::RemoveNode(n) => {
                            m.remove(n);
                            changed(*g)
                        }
                        _ => invalid(*g),
                    }
                }
            }
        }

        fn check_in_place(&self) {
            let target = self.map.target();
            for (p, s) in self.map.partitions.iter().enumerate() {
                assert_eq!(s.moving_to, None);
                assert_eq!(s.replicas, target[p]);
                let members: Vec<NodeId> = self.members[p].iter().copied().collect();
                assert_eq!(members, target[p], "partition {p}");
                for n in 1..=4 {
                    let g = Layout::group_of(p as u32);
                    assert_eq!(self.hosted.contains(&(n, g)), target[p].contains(&n));
                }
            }
        }
    }

    fn run(mover: &mut Mover, fake: &mut Fake, mut restart_every: Option<u64>) {
        for i in 0..10_000u64 {
            let Some((node, req)) = mover.next_request() else {
                return;
            };
            let answer = fake.answer(node, &req);
            // Every seventh answer is lost: the mover must ask again.
            let lost = i % 7 == 3;
            mover.observe(node, (!lost).then_some(&answer));
            if let Some(every) = restart_every.as_mut() {
                if i % *every == *every - 1 {
                    mover.restart();
                }
            }
        }
        panic!("the mover did not finish");
    }

    #[test]
    fn adding_a_process_moves_exactly_the_partitions_the_ring_names() {
        let mut fake = Fake::new();
        let before = fake.map.target();
        let mut mover = Mover::new(vec![1, 2, 3]);
        mover.change_ring(MapCommand::AddProcess(4));
        run(&mut mover, &mut fake, None);
        fake.check_in_place();
        let after = fake.map.target();
        let diff: BTreeSet<PartitionId> = (0..16)
            .filter(|&p| before[p as usize] != after[p as usize])
            .collect();
        assert!(!diff.is_empty());
        assert_eq!(mover.moved(), &diff);
        assert!(mover.stats().catch_up_waits >= diff.len() as u64);
    }

    #[test]
    fn a_mover_restarted_at_any_step_finishes_the_job() {
        for every in [11, 13, 17, 29] {
            let mut fake = Fake::new();
            let mut mover = Mover::new(vec![1, 2, 3]);
            mover.change_ring(MapCommand::AddProcess(4));
            run(&mut mover, &mut fake, Some(every));
            fake.check_in_place();
            // ... and taking the process off the ring moves everything back.
            mover.change_ring(MapCommand::RemoveProcess(4));
            run(&mut mover, &mut fake, Some(every));
            fake.check_in_place();
            assert!(fake.hosted.iter().all(|(n, _)| *n != 4));
        }
    }

    #[test]
    fn a_ring_change_the_map_refuses_is_reported() {
        let mut fake = Fake::new();
        let mut mover = Mover::new(vec![1, 2, 3]);
        mover.change_ring(MapCommand::RemoveProcess(1));
        run(&mut mover, &mut fake, None);
        assert_eq!(
            mover.refused(),
            &[(MapCommand::RemoveProcess(1), MapError::TooFewProcesses(1))]
        );
        fake.check_in_place();
    }
}
