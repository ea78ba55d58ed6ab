//! [`ShardConfig`]: what one process of a sharded store needs to host its groups, and
//! [`GroupSpec`]: what a group added at run time is built from.

use std::collections::BTreeSet;

use common::codec::{Bincode, Codec};
use common::groups::{GroupId, Groups, GroupsConfig};
use common::state_machine::Setup;
use common::NodeId;
use raft::{Config, RaftNode};
use serde::{Deserialize, Serialize};

use super::layout::{Layout, MAP_GROUP};
use super::machine::ShardMachine;
use super::map::ShardMap;

/// The core of one group of a sharded store.
pub type ShardNode = RaftNode<ShardMachine>;
/// One process of a sharded store: every group it hosts, as one node.
pub type ShardHost = Groups<ShardNode>;
/// The configuration of one group's core.
pub type ShardSetup = Setup<Config, ShardMachine>;

/// Most members in a [`GroupSpec`].
pub const SPEC_MEMBERS_MAX: usize = 64;

/// What a partition's group added to a process at run time is built from: the members it
/// starts with. Kept in the process's log by the groups host
/// ([`common::groups::GroupsRequest::AddGroup`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    /// The group's voters when the replica is added.
    pub voters: Vec<NodeId>,
    /// Its learners (the new replica among them).
    pub learners: Vec<NodeId>,
}

impl GroupSpec {
    /// The spec's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of two short vectors of integers always encodes.
        Bincode.encode(self).unwrap_or_default()
    }

    /// A spec from its bytes (the log's, so checked anyway).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let spec: Self = Bincode
            .decode(bytes)
            .map_err(|e| format!("bad group spec: {e}"))?;
        if spec.voters.len() + spec.learners.len() > SPEC_MEMBERS_MAX {
            return Err(format!(
                "a group spec of more than {SPEC_MEMBERS_MAX} members"
            ));
        }
        Ok(spec)
    }
}

/// One process of a sharded store: its id, the store's fixed shape, the processes it started
/// with, and the Raft settings its groups share.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// This process.
    pub id: NodeId,
    /// The store's layout.
    pub layout: Layout,
    /// The members of the map group.
    pub map_group: Vec<NodeId>,
    /// The processes on the ring when the store was created (the genesis map's).
    pub initial_processes: BTreeSet<NodeId>,
    /// The Raft settings of every group: its `id`, `voters`, `learners`, `known_nodes` and
    /// `seed` are set per group (the seed mixed with the group id, so groups' election timeouts
    /// differ).
    pub raft: Config,
}

impl ShardConfig {
    /// The map every process starts the map group from.
    pub fn genesis(&self) -> Result<ShardMap, String> {
        ShardMap::genesis(
            self.layout,
            self.map_group.clone(),
            self.initial_processes.clone(),
        )
    }

    /// The core configuration of group `group` on this process, with `voters` and `learners`.
    pub fn group_setup(
        &self,
        group: GroupId,
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    ) -> Result<ShardSetup, String> {
        let mut c = self.raft.clone();
        c.id = self.id;
        c.known_nodes = voters.iter().chain(&learners).copied().collect();
        c.voters = voters;
        c.learners = learners;
        c.seed = self.raft.seed ^ group.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        c.validate().map_err(|e| e.to_string())?;
        if group == MAP_GROUP {
            let genesis = self.genesis()?;
            Ok(Setup::new(c, move || {
                Ok(ShardMachine::map(genesis.clone()))
            }))
        } else {
            let layout = self.layout;
            let partition = layout
                .partition_of_group(group)
                .ok_or_else(|| format!("group {group} is no partition of {layout:?}"))?;
            Ok(Setup::new(c, move || {
                Ok(ShardMachine::partition(layout, partition))
            }))
        }
    }

    /// The groups host's configuration: the map group if this process is one of its members,
    /// every partition the genesis map places here, and partitions added at run time built
    /// from their [`GroupSpec`].
    pub fn groups_config(&self) -> Result<GroupsConfig<ShardSetup>, String> {
        let genesis = self.genesis()?;
        let mut groups = Vec::new();
        if genesis.map_group.contains(&self.id) {
            groups.push((
                MAP_GROUP,
                self.group_setup(MAP_GROUP, genesis.map_group.clone(), Vec::new())?,
            ));
        }
        for (p, state) in genesis.partitions.iter().enumerate() {
            if state.replicas.contains(&self.id) {
                let g = Layout::group_of(p as u32);
                groups.push((g, self.group_setup(g, state.replicas.clone(), Vec::new())?));
            }
        }
        let me = self.clone();
        let config = GroupsConfig::new(self.id, groups).with_configure(move |g, spec| {
            if g == MAP_GROUP {
                return Err("the map group is not added at run time".into());
            }
            let spec = GroupSpec::decode(spec)?;
            if !spec.voters.contains(&me.id) && !spec.learners.contains(&me.id) {
                return Err(format!("process {} is no member of {spec:?}", me.id));
            }
            me.group_setup(g, spec.voters, spec.learners)
        });
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: NodeId) -> ShardConfig {
        ShardConfig {
            id,
            layout: Layout::new(8, 3).unwrap(),
            map_group: vec![1, 2, 3],
            initial_processes: (1..=3).collect(),
            raft: Config::new(id, vec![id]),
        }
    }

    #[test]
    fn a_founding_process_hosts_the_map_and_its_partitions_a_new_one_nothing() {
        let gc = config(2).groups_config().unwrap();
        let ids: Vec<GroupId> = gc.groups.iter().map(|(g, _)| *g).collect();
        assert_eq!(ids, (0..=8).collect::<Vec<_>>());
        let gc = config(4).groups_config().unwrap();
        assert!(gc.groups.is_empty());
        let configure = gc.configure.as_ref().unwrap();
        let spec = GroupSpec {
            voters: vec![1, 2, 3],
            learners: vec![4],
        };
        let setup = configure(3, &spec.encode()).unwrap();
        assert_eq!(setup.config.learners, vec![4]);
        assert_eq!(setup.config.known_nodes, vec![1, 2, 3, 4]);
        let other = GroupSpec {
            voters: vec![1, 2, 3],
            learners: vec![5],
        };
        assert!(configure(3, &other.encode()).is_err());
        assert!(configure(MAP_GROUP, &spec.encode()).is_err());
        assert!(configure(99, &spec.encode()).is_err());
        assert!(configure(3, b"\xff\xff\xff").is_err());
    }
}
