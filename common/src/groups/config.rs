//! [`GroupsConfig`]: the groups one process hosts, and the adapter's limits.

use super::GroupId;
use crate::storage::RECORD_BYTES_MAX;
use crate::NodeId;

/// Default of [`GroupsConfig::groups_max`].
pub const GROUPS_MAX_DEFAULT: usize = 1_024;
/// Default of [`GroupsConfig::parts_per_message_max`]: every group's share of one step to one
/// peer fits in one message at the default [`GroupsConfig::groups_max`] with a few messages
/// per group.
pub const PARTS_PER_MESSAGE_MAX_DEFAULT: usize = 4_096;
/// Default of [`GroupsConfig::compact_records_min`].
pub const COMPACT_RECORDS_MIN_DEFAULT: u64 = 4_096;
/// Default of [`GroupsConfig::compact_live_multiple`].
pub const COMPACT_LIVE_MULTIPLE_DEFAULT: u64 = 4;
/// Default of [`GroupsConfig::compacted_bytes_max`]: half the workspace's record limit
/// ([`RECORD_BYTES_MAX`]), so an encoded compaction record always fits with room to spare.
pub const COMPACTED_BYTES_MAX_DEFAULT: usize = RECORD_BYTES_MAX / 2;

/// The configuration of a [`Groups`](super::Groups) host: which groups this process runs,
/// each with its own core configuration, and the adapter's limits.
///
/// Each group's configuration names the group's own members, so a group may live on any
/// subset of the processes; every group's configuration must name this process's
/// [`GroupsConfig::id`] as its node id (checked at recovery).
#[derive(Clone, Debug)]
pub struct GroupsConfig<C> {
    /// This process's node id: the id every hosted group's core runs under, and the id the
    /// transport knows this process by.
    pub id: NodeId,
    /// The hosted groups and their cores' configurations, each group id once.
    pub groups: Vec<(GroupId, C)>,
    /// At most this many groups per process.
    pub groups_max: usize,
    /// At most this many `(group, message)` parts in one message; a step that has more for one
    /// peer sends several messages, and a received message with more is dropped whole.
    pub parts_per_message_max: usize,
    /// Compact the shared log only once at least this many records were appended since the
    /// last compaction.
    pub compact_records_min: u64,
    /// ... and only once those appended records exceed this multiple of the live records (what
    /// a compaction rewrites), so compaction's write amplification stays at most
    /// `1 / compact_live_multiple` of what the groups write.
    pub compact_live_multiple: u64,
    /// A compaction record larger than this (encoded) is not written: the log keeps growing
    /// until the groups checkpoint and their live records shrink
    /// ([`GroupsCounters::compactions_skipped`](super::GroupsCounters::compactions_skipped)).
    pub compacted_bytes_max: usize,
}

impl<C> GroupsConfig<C> {
    /// Process `id` hosting `groups`, with the default limits.
    pub fn new(id: NodeId, groups: Vec<(GroupId, C)>) -> Self {
        Self {
            id,
            groups,
            groups_max: GROUPS_MAX_DEFAULT,
            parts_per_message_max: PARTS_PER_MESSAGE_MAX_DEFAULT,
            compact_records_min: COMPACT_RECORDS_MIN_DEFAULT,
            compact_live_multiple: COMPACT_LIVE_MULTIPLE_DEFAULT,
            compacted_bytes_max: COMPACTED_BYTES_MAX_DEFAULT,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.groups.is_empty() {
            return Err("a groups host needs at least one group".into());
        }
        if self.groups.len() > self.groups_max {
            return Err(format!(
                "{} groups exceed groups_max {}",
                self.groups.len(),
                self.groups_max
            ));
        }
        let mut ids: Vec<GroupId> = self.groups.iter().map(|(g, _)| *g).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("group {} is listed twice", w[0]));
        }
        if self.parts_per_message_max == 0 {
            return Err("parts_per_message_max must be at least 1".into());
        }
        if self.compact_records_min == 0 || self.compact_live_multiple == 0 {
            return Err("compact_records_min and compact_live_multiple must be at least 1".into());
        }
        if self.compacted_bytes_max == 0 {
            return Err("compacted_bytes_max must be at least 1".into());
        }
        Ok(())
    }
}
