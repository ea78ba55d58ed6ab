//! [`GroupsConfig`]: the groups one process starts with, how it builds the configuration of a
//! group added at run time, and the adapter's limits.

use std::fmt;
use std::sync::Arc;

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

/// Builds the core configuration of a group added at run time from the group's *spec*: the
/// bytes its [`GroupsRequest::AddGroup`](super::GroupsRequest::AddGroup) carried, which the
/// host also writes to its log ([`GroupsRecord::Added`](super::GroupsRecord::Added)) and hands
/// to this function again at every recovery. An error refuses the group (at the request:
/// [`GroupResponse::BadSpec`](super::GroupResponse::BadSpec); at recovery:
/// [`GroupsError::Config`](super::GroupsError::Config)).
///
/// Why bytes and a function, not the core's configuration itself: a core's configuration need
/// not be serializable (the consensus cores' holds the factory of their state machine, a
/// closure that may open a database), and what a group needs from the process (its state
/// machine's factory, its directory) is the process's business, not the log's. The spec holds
/// what the group's creator decides (its members, its timeouts); the process adds the rest.
pub type Configure<C> = Arc<dyn Fn(GroupId, &[u8]) -> Result<C, String> + Send + Sync>;

/// The configuration of a [`Groups`](super::Groups) host: the groups this process starts
/// with, each with its own core configuration, how to configure a group added at run time,
/// and the adapter's limits.
///
/// Each group's configuration names the group's own members, so a group may live on any
/// subset of the processes; every group's configuration must name this process's
/// [`GroupsConfig::id`] as its node id (checked at recovery and when a group is added).
///
/// [`GroupsConfig::groups`] is the *initial* set: the groups of a process whose log is empty.
/// Once the log holds anything, the log decides which groups the process hosts (see the module
/// documentation, "Groups added and removed at run time").
#[derive(Clone)]
pub struct GroupsConfig<C> {
    /// This process's node id: the id every hosted group's core runs under, and the id the
    /// transport knows this process by.
    pub id: NodeId,
    /// The initial groups and their cores' configurations, each group id once.
    pub groups: Vec<(GroupId, C)>,
    /// Builds the configuration of a group added at run time from its spec; `None` refuses
    /// every [`GroupsRequest::AddGroup`](super::GroupsRequest::AddGroup)
    /// ([`GroupResponse::BadSpec`](super::GroupResponse::BadSpec)).
    pub configure: Option<Configure<C>>,
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
            configure: None,
            groups_max: GROUPS_MAX_DEFAULT,
            parts_per_message_max: PARTS_PER_MESSAGE_MAX_DEFAULT,
            compact_records_min: COMPACT_RECORDS_MIN_DEFAULT,
            compact_live_multiple: COMPACT_LIVE_MULTIPLE_DEFAULT,
            compacted_bytes_max: COMPACTED_BYTES_MAX_DEFAULT,
        }
    }

    /// `self` with groups added at run time configured by `configure`.
    pub fn with_configure(
        mut self,
        configure: impl Fn(GroupId, &[u8]) -> Result<C, String> + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.groups.is_empty() && self.configure.is_none() {
            return Err("a groups host needs at least one group, or a way to add them".into());
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

impl<C: fmt::Debug> fmt::Debug for GroupsConfig<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupsConfig")
            .field("id", &self.id)
            .field("groups", &self.groups)
            .field("configure", &self.configure.as_ref().map(|_| "Fn"))
            .field("groups_max", &self.groups_max)
            .field("parts_per_message_max", &self.parts_per_message_max)
            .field("compact_records_min", &self.compact_records_min)
            .field("compact_live_multiple", &self.compact_live_multiple)
            .field("compacted_bytes_max", &self.compacted_bytes_max)
            .finish()
    }
}
