//! [`ShardMachine`]: the state machine of every group of a sharded store. The map group's
//! holds the [`ShardMap`]; a partition's group holds that partition's keys.

use std::io::{Read, Write};

use common::kv_store::{KvCommand, KvOutput, KvQuery, KvStore};
use common::state_machine::{read_frame, write_frame, StateMachine, StateMachineError};
use serde::{Deserialize, Serialize};

use super::layout::{Layout, PartitionId};
use super::map::{MapCommand, MapError, ShardMap};
use super::txn::{TxCommand, TxInDoubt, TxOutput, TxTable};

/// Largest shard map a snapshot may hold, in bytes.
pub const MAP_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest transaction table a partition's snapshot may hold, in bytes.
pub const TX_TABLE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A command of a sharded store's group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardCommand {
    /// A key-value command, for the group of the key's partition.
    Kv(KvCommand),
    /// A change of the shard map, for the map group.
    Map(MapCommand),
    /// A step of a transaction across partitions, for a participant's group.
    Tx(TxCommand),
}

/// A query of a sharded store's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardQuery {
    /// A key-value query, for the group of the key's partition.
    Kv(KvQuery),
    /// The shard map, from the map group.
    Map,
    /// The transactions a partition's group holds prepared or unfinished.
    InDoubt,
}

/// What a command or query of a sharded store's group answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardOutput {
    /// A key-value answer.
    Kv(KvOutput),
    /// The shard map (after the change, for a [`ShardCommand::Map`]).
    Map(Box<ShardMap>),
    /// What a transaction step answers.
    Tx(TxOutput),
    /// The transactions a group holds prepared or unfinished.
    InDoubt(Vec<TxInDoubt>),
    /// Refused; nothing changed.
    Refused(Refusal),
}

/// Why a group refused a command or query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The key belongs to another partition: the client's map is stale or wrong.
    #[error("key of partition {key_partition} sent to partition {partition}")]
    WrongPartition {
        /// The key's partition.
        key_partition: PartitionId,
        /// This group's partition.
        partition: PartitionId,
    },
    /// The key is locked by a prepared transaction: retry once it is decided.
    #[error("key {key:?} is locked by {holder}")]
    Locked {
        /// The key.
        key: String,
        /// The transaction holding it.
        holder: common::txn::TxId,
    },
    /// A map command or query sent to a partition's group, or a key-value one to the map
    /// group.
    #[error("wrong kind of group")]
    WrongGroup,
    /// The map refused the change.
    #[error("{0}")]
    Map(MapError),
}

/// The state machine of one group of a sharded store.
#[derive(Debug)]
pub enum ShardMachine {
    /// The map group's: the shard map.
    Map(Box<ShardMap>),
    /// A partition's group: the partition's keys.
    Partition {
        /// The layout, to check that keys belong here.
        layout: Layout,
        /// Which partition.
        partition: PartitionId,
        /// Its keys.
        store: KvStore,
        /// Its transactions.
        txns: TxTable,
    },
}

impl ShardMachine {
    /// The map group's machine, starting from `genesis` (every replica builds the same).
    pub fn map(genesis: ShardMap) -> Self {
        ShardMachine::Map(Box::new(genesis))
    }

    /// The machine of partition `partition`'s group.
    pub fn partition(layout: Layout, partition: PartitionId) -> Self {
        ShardMachine::Partition {
            layout,
            partition,
            store: KvStore::default(),
            txns: TxTable::default(),
        }
    }

    /// The key-value store of a partition's group (`None` for the map group).
    pub fn store(&self) -> Option<&KvStore> {
        match self {
            ShardMachine::Partition { store, .. } => Some(store),
            ShardMachine::Map(_) => None,
        }
    }

    /// The transaction table of a partition's group (`None` for the map group).
    pub fn txns(&self) -> Option<&TxTable> {
        match self {
            ShardMachine::Partition { txns, .. } => Some(txns),
            ShardMachine::Map(_) => None,
        }
    }

    /// The shard map of the map group (`None` for a partition's group).
    pub fn shard_map(&self) -> Option<&ShardMap> {
        match self {
            ShardMachine::Map(m) => Some(m),
            ShardMachine::Partition { .. } => None,
        }
    }

    /// The refusal of `key` if a prepared transaction holds its lock.
    fn locked(txns: &TxTable, key: Option<&str>) -> Option<Refusal> {
        let key = key?;
        txns.lock_holder(key).map(|holder| Refusal::Locked {
            key: key.to_string(),
            holder,
        })
    }

    /// The refusal of `key` if it does not belong to this partition.
    fn misplaced(layout: &Layout, partition: PartitionId, key: Option<&str>) -> Option<Refusal> {
        let key_partition = layout.partition_of(key?);
        (key_partition != partition).then_some(Refusal::WrongPartition {
            key_partition,
            partition,
        })
    }
}

fn command_key(c: &KvCommand) -> Option<&str> {
    match c {
        KvCommand::Put { key, .. } | KvCommand::Append { key, .. } | KvCommand::Get { key } => {
            Some(key)
        }
        KvCommand::Nop => None,
    }
}

impl StateMachine for ShardMachine {
    type Command = ShardCommand;
    type Query = ShardQuery;
    type Output = ShardOutput;

    fn apply(&mut self, index: u64, command: &ShardCommand) -> ShardOutput {
        match (self, command) {
            (ShardMachine::Map(map), ShardCommand::Map(c)) => match map.apply(c) {
                Ok(()) => ShardOutput::Map(map.clone()),
                Err(e) => ShardOutput::Refused(Refusal::Map(e)),
            },
            (
                ShardMachine::Partition {
                    layout,
                    partition,
                    store,
                    txns,
                },
                ShardCommand::Kv(c),
            ) => {
                let key = command_key(c);
                if let Some(refusal) = Self::misplaced(layout, *partition, key) {
                    return ShardOutput::Refused(refusal);
                }
                if let Some(refusal) = Self::locked(txns, key) {
                    return ShardOutput::Refused(refusal);
                }
                ShardOutput::Kv(store.apply(index, c))
            }
            (
                ShardMachine::Partition {
                    layout,
                    partition,
                    store,
                    txns,
                },
                ShardCommand::Tx(c),
            ) => {
                let part = match c {
                    TxCommand::Prepare { part, .. } | TxCommand::OnePhase { part, .. } => {
                        Some(part)
                    }
                    _ => None,
                };
                let misplaced = part
                    .into_iter()
                    .flat_map(|p| p.keys())
                    .find_map(|k| Self::misplaced(layout, *partition, Some(k)));
                if let Some(refusal) = misplaced {
                    return ShardOutput::Refused(refusal);
                }
                let group = Layout::group_of(*partition);
                ShardOutput::Tx(txns.apply(group, index, c, store))
            }
            _ => ShardOutput::Refused(Refusal::WrongGroup),
        }
    }

    fn query(&self, query: &ShardQuery) -> ShardOutput {
        match (self, query) {
            (ShardMachine::Map(map), ShardQuery::Map) => ShardOutput::Map(map.clone()),
            (
                ShardMachine::Partition {
                    layout,
                    partition,
                    store,
                    txns,
                },
                ShardQuery::Kv(q),
            ) => {
                let KvQuery::Get(key) = q;
                let refusal = Self::misplaced(layout, *partition, Some(key))
                    .or_else(|| Self::locked(txns, Some(key)));
                match refusal {
                    Some(refusal) => ShardOutput::Refused(refusal),
                    None => ShardOutput::Kv(store.query(q)),
                }
            }
            (ShardMachine::Partition { txns, .. }, ShardQuery::InDoubt) => {
                ShardOutput::InDoubt(txns.in_doubt())
            }
            _ => ShardOutput::Refused(Refusal::WrongGroup),
        }
    }

    fn snapshot(&self, out: &mut dyn Write) -> Result<(), StateMachineError> {
        match self {
            ShardMachine::Map(map) => write_frame(out, map.as_ref()),
            ShardMachine::Partition { store, txns, .. } => {
                write_frame(out, txns)?;
                store.snapshot(out)
            }
        }
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), StateMachineError> {
        match self {
            ShardMachine::Map(map) => {
                let restored: ShardMap = read_frame(input, MAP_BYTES_MAX)?.ok_or_else(|| {
                    StateMachineError::Malformed("a map snapshot without its map".into())
                })?;
                if restored.layout != map.layout {
                    return Err(StateMachineError::Malformed(format!(
                        "a map snapshot of layout {:?}, not {:?}",
                        restored.layout, map.layout
                    )));
                }
                **map = restored;
                Ok(())
            }
            ShardMachine::Partition { store, txns, .. } => {
                *txns = read_frame(input, TX_TABLE_BYTES_MAX)?.ok_or_else(|| {
                    StateMachineError::Malformed(
                        "a partition snapshot without its transactions".into(),
                    )
                })?;
                store.restore(input)
            }
        }
    }

    fn command_bytes(command: &ShardCommand) -> usize {
        match command {
            ShardCommand::Kv(c) => KvStore::command_bytes(c),
            ShardCommand::Map(_) => std::mem::size_of::<ShardCommand>(),
            ShardCommand::Tx(c) => {
                let part_bytes = |p: &super::txn::TxPart| {
                    p.compares
                        .iter()
                        .map(|c| c.key.len() + c.value.as_ref().map_or(0, String::len))
                        .chain(p.writes.iter().map(|w| w.key.len() + w.value.len()))
                        .sum::<usize>()
                };
                std::mem::size_of::<ShardCommand>()
                    + match c {
                        TxCommand::Prepare { part, .. } | TxCommand::OnePhase { part, .. } => {
                            part_bytes(part)
                        }
                        _ => 0,
                    }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(8, 3).unwrap()
    }

    fn key_of(layout: &Layout, p: PartitionId) -> String {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| layout.partition_of(k) == p)
            .unwrap()
    }

    #[test]
    fn a_partition_serves_its_keys_and_refuses_others() {
        let l = layout();
        let mut m = ShardMachine::partition(l, 2);
        let mine = key_of(&l, 2);
        let other = key_of(&l, 5);
        let put = |key: &str| {
            ShardCommand::Kv(KvCommand::Put {
                key: key.into(),
                value: "v".into(),
            })
        };
        assert_eq!(
            m.apply(1, &put(&mine)),
            ShardOutput::Kv(KvOutput::Value(None))
        );
        assert_eq!(
            m.apply(2, &put(&other)),
            ShardOutput::Refused(Refusal::WrongPartition {
                key_partition: 5,
                partition: 2
            })
        );
        assert_eq!(
            m.query(&ShardQuery::Kv(KvQuery::Get(mine))),
            ShardOutput::Kv(KvOutput::Value(Some("v".into())))
        );
        assert_eq!(
            m.query(&ShardQuery::Map),
            ShardOutput::Refused(Refusal::WrongGroup)
        );
        assert_eq!(
            m.apply(3, &ShardCommand::Map(MapCommand::AddProcess(4))),
            ShardOutput::Refused(Refusal::WrongGroup)
        );
    }

    #[test]
    fn the_map_group_changes_its_map_and_snapshots_round_trip() {
        let genesis = ShardMap::genesis(layout(), vec![1, 2, 3], (1..=3).collect()).unwrap();
        let mut m = ShardMachine::map(genesis.clone());
        let out = m.apply(1, &ShardCommand::Map(MapCommand::AddProcess(4)));
        let ShardOutput::Map(after) = out else {
            panic!("{out:?}")
        };
        assert_eq!(after.epoch, 1);
        assert_eq!(
            m.apply(2, &ShardCommand::Map(MapCommand::AddProcess(4))),
            ShardOutput::Refused(Refusal::Map(MapError::AlreadyOnRing(4)))
        );
        let mut bytes = Vec::new();
        m.snapshot(&mut bytes).unwrap();
        let mut restored = ShardMachine::map(genesis.clone());
        restored.restore(&mut &bytes[..]).unwrap();
        assert_eq!(restored.shard_map(), Some(after.as_ref()));
        // A truncated or foreign snapshot is an error, not a panic.
        let mut fresh = ShardMachine::map(genesis);
        assert!(fresh.restore(&mut &bytes[..bytes.len() / 2]).is_err());
        assert!(fresh.restore(&mut &b""[..]).is_err());
    }
}
