//! [`ShardMap`]: which processes hold which partition, replicated as the state of the map
//! group ([`MAP_GROUP`](super::MAP_GROUP)), and the [`MapCommand`]s that change it.

use std::collections::BTreeSet;

use common::NodeId;
use serde::{Deserialize, Serialize};

use super::layout::{Layout, PartitionId};

/// Most processes a shard map may name.
pub const PROCESSES_MAX: usize = 256;

/// One partition's place: the processes whose replicas of it vote, and, while it moves, the
/// processes it is moving to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The members of the partition's group when it is not moving (sorted).
    pub replicas: Vec<NodeId>,
    /// While a move is under way, the members it ends with (sorted). Clients try both sets.
    pub moving_to: Option<Vec<NodeId>>,
}

/// The replicated shard map: the layout, the processes on the ring, and where every partition
/// is. `epoch` grows by one with every change, so a client keeps the newest map it saw.
///
/// The map is the truth about placement, and the record of moves in progress: a move begins
/// with [`MapCommand::BeginMove`] and ends with [`MapCommand::EndMove`], and whoever carries
/// moves out ([`Mover`](super::Mover)) reads the map to know what is left to do, so it can
/// stop at any point and resume from the map alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Changes so far.
    pub epoch: u64,
    /// The layout (fixed for the store's life).
    pub layout: Layout,
    /// The members of the map group (fixed).
    pub map_group: Vec<NodeId>,
    /// The processes on the ring.
    pub processes: BTreeSet<NodeId>,
    /// Every partition's place, indexed by [`PartitionId`].
    pub partitions: Vec<PartitionState>,
}

/// A change of the shard map, proposed to the map group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapCommand {
    /// Put a process on the ring. Its partitions move to it afterwards, one by one.
    AddProcess(NodeId),
    /// Take a process off the ring. Its partitions move away afterwards.
    RemoveProcess(NodeId),
    /// Start moving `partition` to `to`, which must be its place on the current ring.
    BeginMove {
        /// The partition.
        partition: PartitionId,
        /// Its replicas once moved.
        to: Vec<NodeId>,
    },
    /// The move of `partition` is complete: its group's members are the ones it moved to.
    EndMove {
        /// The partition.
        partition: PartitionId,
    },
}

/// Why the map refused a [`MapCommand`]. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MapError {
    /// The process is on the ring already.
    #[error("process {0} is on the ring already")]
    AlreadyOnRing(NodeId),
    /// The process is not on the ring.
    #[error("process {0} is not on the ring")]
    NotOnRing(NodeId),
    /// The ring would hold more than [`PROCESSES_MAX`] processes.
    #[error("the ring holds {PROCESSES_MAX} processes already")]
    TooManyProcesses,
    /// Removing the process would leave fewer processes than replicas per partition.
    #[error("removing process {0} would leave fewer processes than replicas")]
    TooFewProcesses(NodeId),
    /// No such partition.
    #[error("no partition {0}")]
    NoSuchPartition(PartitionId),
    /// The move's target is not the partition's place on the current ring.
    #[error("partition {partition} belongs on {target:?}, not {to:?}")]
    NotTheTarget {
        /// The partition.
        partition: PartitionId,
        /// What was asked.
        to: Vec<NodeId>,
        /// Its place on the ring.
        target: Vec<NodeId>,
    },
    /// The partition is already where the move would take it.
    #[error("partition {0} is in place")]
    InPlace(PartitionId),
    /// Another move of the partition is under way.
    #[error("partition {0} is moving elsewhere")]
    MovingElsewhere(PartitionId),
    /// No move of the partition is under way.
    #[error("partition {0} is not moving")]
    NotMoving(PartitionId),
}

/// A partition whose replicas differ from its place on the ring: what
/// [`ShardMap::pending`] lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMove {
    /// The partition.
    pub partition: PartitionId,
    /// Its replicas now.
    pub from: Vec<NodeId>,
    /// Its place on the ring.
    pub to: Vec<NodeId>,
    /// Whether the move has begun ([`PartitionState::moving_to`] is set).
    pub begun: bool,
}

impl ShardMap {
    /// The map of a new store: every partition placed by the ring of `processes`, epoch 0.
    pub fn genesis(
        layout: Layout,
        map_group: Vec<NodeId>,
        processes: BTreeSet<NodeId>,
    ) -> Result<Self, String> {
        layout.validate()?;
        if map_group.is_empty() {
            return Err("the map group needs at least one member".into());
        }
        if processes.len() < layout.replication as usize {
            return Err(format!(
                "{} processes cannot hold {} replicas of each partition",
                processes.len(),
                layout.replication
            ));
        }
        if processes.len() > PROCESSES_MAX {
            return Err(format!("more than {PROCESSES_MAX} processes"));
        }
        let partitions = layout
            .placement(&processes)
            .into_iter()
            .map(|replicas| PartitionState {
                replicas,
                moving_to: None,
            })
            .collect();
        let mut map_group = map_group;
        map_group.sort_unstable();
        map_group.dedup();
        Ok(Self {
            epoch: 0,
            layout,
            map_group,
            processes,
            partitions,
        })
    }

    /// Every partition's place on the current ring.
    pub fn target(&self) -> Vec<Vec<NodeId>> {
        self.layout.placement(&self.processes)
    }

    /// The partitions not where the ring places them, moves under way first.
    pub fn pending(&self) -> Vec<PendingMove> {
        let target = self.target();
        let mut pending: Vec<PendingMove> = self
            .partitions
            .iter()
            .zip(target)
            .enumerate()
            .filter(|(_, (state, to))| state.moving_to.is_some() || &state.replicas != to)
            .map(|(p, (state, to))| PendingMove {
                partition: p as PartitionId,
                from: state.replicas.clone(),
                to: state.moving_to.clone().unwrap_or(to),
                begun: state.moving_to.is_some(),
            })
            .collect();
        pending.sort_by_key(|m| !m.begun);
        pending
    }

    /// The processes a client may find partition `p`'s group on: its replicas, and while it
    /// moves, those it moves to.
    pub fn route(&self, p: PartitionId) -> Vec<NodeId> {
        let Some(state) = self.partitions.get(p as usize) else {
            return Vec::new();
        };
        let mut nodes = state.replicas.clone();
        for n in state.moving_to.iter().flatten() {
            if !nodes.contains(n) {
                nodes.push(*n);
            }
        }
        nodes
    }

    /// Applies `cmd`: a change bumps the epoch; a refusal changes nothing.
    pub fn apply(&mut self, cmd: &MapCommand) -> Result<(), MapError> {
        match cmd {
            MapCommand::AddProcess(id) => {
                if self.processes.contains(id) {
                    return Err(MapError::AlreadyOnRing(*id));
                }
                if self.processes.len() >= PROCESSES_MAX {
                    return Err(MapError::TooManyProcesses);
                }
                self.processes.insert(*id);
            }
            MapCommand::RemoveProcess(id) => {
                if !self.processes.contains(id) {
                    return Err(MapError::NotOnRing(*id));
                }
                if self.processes.len() <= self.layout.replication as usize {
                    return Err(MapError::TooFewProcesses(*id));
                }
                self.processes.remove(id);
            }
            MapCommand::BeginMove { partition, to } => {
                let target = self.target();
                let p = *partition;
                let Some(state) = self.partitions.get_mut(p as usize) else {
                    return Err(MapError::NoSuchPartition(p));
                };
                let target = &target[p as usize];
                if to != target {
                    return Err(MapError::NotTheTarget {
                        partition: p,
                        to: to.clone(),
                        target: target.clone(),
                    });
                }
                match &state.moving_to {
                    Some(m) if m == to => return Ok(()),
                    Some(_) => return Err(MapError::MovingElsewhere(p)),
                    None if &state.replicas == to => return Err(MapError::InPlace(p)),
                    None => state.moving_to = Some(to.clone()),
                }
            }
            MapCommand::EndMove { partition } => {
                let p = *partition;
                let Some(state) = self.partitions.get_mut(p as usize) else {
                    return Err(MapError::NoSuchPartition(p));
                };
                let Some(to) = state.moving_to.take() else {
                    return Err(MapError::NotMoving(p));
                };
                state.replicas = to;
            }
        }
        self.epoch += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        let layout = Layout::new(32, 3).unwrap();
        ShardMap::genesis(layout, vec![1, 2, 3], (1..=3).collect()).unwrap()
    }

    #[test]
    fn genesis_places_every_partition_and_has_nothing_pending() {
        let m = map();
        assert_eq!(m.partitions.len(), 32);
        assert!(m.partitions.iter().all(|p| p.replicas == vec![1, 2, 3]));
        assert!(m.pending().is_empty());
        let layout = Layout::new(4, 3).unwrap();
        assert!(ShardMap::genesis(layout, vec![1], (1..=2).collect()).is_err());
        assert!(ShardMap::genesis(layout, vec![], (1..=3).collect()).is_err());
    }

    #[test]
    fn a_move_begins_at_the_rings_target_and_ends_there() {
        let mut m = map();
        m.apply(&MapCommand::AddProcess(4)).unwrap();
        assert_eq!(m.epoch, 1);
        let pending = m.pending();
        assert!(!pending.is_empty() && pending.len() < 32, "{pending:?}");
        let mv = &pending[0];
        assert!(mv.to.contains(&4) && !mv.begun);

        let mut wrong = mv.from.clone();
        wrong.reverse();
        let before = m.clone();
        assert!(matches!(
            m.apply(&MapCommand::BeginMove {
                partition: mv.partition,
                to: wrong
            }),
            Err(MapError::NotTheTarget { .. })
        ));
        assert_eq!(m, before);

        let begin = MapCommand::BeginMove {
            partition: mv.partition,
            to: mv.to.clone(),
        };
        m.apply(&begin).unwrap();
        let epoch = m.epoch;
        // Beginning the same move again is a no-op, so a mover that lost the answer may ask
        // again.
        m.apply(&begin).unwrap();
        assert_eq!(m.epoch, epoch);
        let route = m.route(mv.partition);
        assert_eq!(route.len(), 4);
        assert_eq!(m.pending()[0].partition, mv.partition);
        assert!(m.pending()[0].begun);

        let end = MapCommand::EndMove {
            partition: mv.partition,
        };
        m.apply(&end).unwrap();
        assert_eq!(m.partitions[mv.partition as usize].replicas, mv.to);
        assert_eq!(m.apply(&end), Err(MapError::NotMoving(mv.partition)));
        assert_eq!(m.pending().len(), pending.len() - 1);
    }

    #[test]
    fn bad_changes_are_refused_and_change_nothing() {
        let mut m = map();
        let before = m.clone();
        assert_eq!(
            m.apply(&MapCommand::AddProcess(1)),
            Err(MapError::AlreadyOnRing(1))
        );
        assert_eq!(
            m.apply(&MapCommand::RemoveProcess(9)),
            Err(MapError::NotOnRing(9))
        );
        assert_eq!(
            m.apply(&MapCommand::RemoveProcess(1)),
            Err(MapError::TooFewProcesses(1))
        );
        assert_eq!(
            m.apply(&MapCommand::EndMove { partition: 99 }),
            Err(MapError::NoSuchPartition(99))
        );
        assert_eq!(
            m.apply(&MapCommand::BeginMove {
                partition: 0,
                to: vec![1, 2, 3]
            }),
            Err(MapError::InPlace(0))
        );
        assert_eq!(m, before);
    }
}
