//! [`Layout`]: how keys map to partitions, partitions to Raft groups, and groups to processes.

use std::collections::BTreeSet;

use common::groups::GroupId;
use common::NodeId;
use hashring::{KeyHasher, Ring};
use serde::{Deserialize, Serialize};

/// A partition of the key space, `0..Layout::partitions`.
pub type PartitionId = u32;

/// The group that holds the shard map. Partition `p` is group `p + 1`.
pub const MAP_GROUP: GroupId = 0;
/// Most partitions a layout may have (each is a Raft group on `replication` processes, and a
/// process hosts at most [`common::groups::GROUPS_MAX_DEFAULT`] groups by default).
pub const PARTITIONS_MAX: u32 = 4_096;
/// Most replicas per partition.
pub const REPLICATION_MAX: u32 = 7;

/// The fixed shape of a sharded store: how many partitions the key space is cut into, and on
/// how many processes each is replicated.
///
/// Keys go to partitions by hash (`XXH3(key) mod partitions`), and partitions to processes by
/// the consistent-hash ring ([`hashring::Ring`]): partition `p` lives on the first
/// `replication` distinct processes clockwise from the hash of `p` (its preference list). The
/// number of partitions never changes, so a key never changes partition; what changes when
/// processes come and go is only which processes hold a partition, and the ring moves only
/// the partitions whose preference list names a process that came or went (Dynamo's "fixed
/// partitions, placed by the ring", its strategy 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Partitions of the key space.
    pub partitions: u32,
    /// Replicas of each partition (members of its Raft group).
    pub replication: u32,
}

impl Layout {
    /// A layout of `partitions` partitions with `replication` replicas each, checked.
    pub fn new(partitions: u32, replication: u32) -> Result<Self, String> {
        let layout = Self {
            partitions,
            replication,
        };
        layout.validate()?;
        Ok(layout)
    }

    /// Checks the layout, explaining what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return Err(format!(
                "partitions must be 1..={PARTITIONS_MAX}, not {}",
                self.partitions
            ));
        }
        if self.replication == 0 || self.replication > REPLICATION_MAX {
            return Err(format!(
                "replication must be 1..={REPLICATION_MAX}, not {}",
                self.replication
            ));
        }
        Ok(())
    }

    /// The partition that holds `key`.
    pub fn partition_of(&self, key: &str) -> PartitionId {
        let hash = KeyHasher::default().hash(key);
        // `partitions` is at least 1 (validated) and fits in u32, so the remainder does too.
        (hash % u64::from(self.partitions.max(1))) as PartitionId
    }

    /// The group that holds partition `p`.
    pub fn group_of(p: PartitionId) -> GroupId {
        GroupId::from(p) + 1
    }

    /// The partition group `g` holds, if it is a partition's group of this layout.
    pub fn partition_of_group(&self, g: GroupId) -> Option<PartitionId> {
        let p = g.checked_sub(1)?;
        PartitionId::try_from(p)
            .ok()
            .filter(|&p| p < self.partitions)
    }

    /// Every partition's replicas (sorted) when the ring holds `processes`: the preference list
    /// of the partition's hash. Fewer than `replication` when there are fewer processes.
    pub fn placement(&self, processes: &BTreeSet<NodeId>) -> Vec<Vec<NodeId>> {
        let mut ring: Ring<NodeId> = Ring::new();
        for &id in processes {
            // Distinct ids of a set: adding cannot fail on a duplicate; an id whose hash
            // collides with another's is left out of the ring rather than panicking.
            let _ = ring.add_node(id);
        }
        (0..self.partitions)
            .map(|p| {
                let mut replicas: Vec<NodeId> = ring
                    .preference_list(&u64::from(p), self.replication as usize)
                    .copied()
                    .collect();
                replicas.sort_unstable();
                replicas
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn layouts_out_of_range_are_refused() {
        assert!(Layout::new(0, 3).is_err());
        assert!(Layout::new(PARTITIONS_MAX + 1, 3).is_err());
        assert!(Layout::new(8, 0).is_err());
        assert!(Layout::new(8, REPLICATION_MAX + 1).is_err());
        assert!(Layout::new(8, 3).is_ok());
    }

    #[test]
    fn keys_spread_over_every_partition_and_groups_map_back() {
        let layout = Layout::new(16, 3).unwrap();
        let mut seen = BTreeSet::new();
        for i in 0..2_000 {
            let p = layout.partition_of(&format!("key{i}"));
            assert!(p < 16);
            seen.insert(p);
        }
        assert_eq!(seen.len(), 16);
        for p in 0..16 {
            assert_eq!(layout.partition_of_group(Layout::group_of(p)), Some(p));
        }
        assert_eq!(layout.partition_of_group(MAP_GROUP), None);
        assert_eq!(layout.partition_of_group(17), None);
    }

    /// Adding a process changes a partition's replicas only by handing one replica to the new
    /// process (the ring is monotone), and it moves some partitions but not all.
    #[test]
    fn adding_a_process_moves_replicas_only_to_it() {
        let layout = Layout::new(64, 3).unwrap();
        let before = layout.placement(&set(&[1, 2, 3, 4]));
        let after = layout.placement(&set(&[1, 2, 3, 4, 5]));
        let mut moved = 0;
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(old.len(), 3);
            assert_eq!(new.len(), 3);
            if old != new {
                moved += 1;
                let gained: Vec<_> = new.iter().filter(|n| !old.contains(n)).collect();
                let lost: Vec<_> = old.iter().filter(|n| !new.contains(n)).collect();
                assert_eq!(gained, vec![&5], "{old:?} -> {new:?}");
                assert_eq!(lost.len(), 1, "{old:?} -> {new:?}");
            }
        }
        assert!(moved > 0 && moved < 64, "{moved} partitions moved");
    }

    #[test]
    fn fewer_processes_than_replicas_place_on_all() {
        let layout = Layout::new(4, 3).unwrap();
        assert_eq!(layout.placement(&set(&[7, 9])), vec![vec![7, 9]; 4]);
        assert_eq!(layout.placement(&set(&[])), vec![Vec::<NodeId>::new(); 4]);
    }
}
