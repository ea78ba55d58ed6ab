//! [`SnapshotRetention`]: which snapshot files a core still needs, and which it may delete.

use super::{SnapshotId, SnapshotStore};

/// Which snapshot files a core still needs, and which it may delete.
///
/// A core registers each checkpoint it asks for ([`SnapshotRetention::checkpointed`], with the
/// snapshot the checkpoint names, if any) and hears from its driver how many of its checkpoints
/// are durable ([`SnapshotRetention::durable`]). A snapshot is deleted once a durable checkpoint
/// names a newer one: until then, a crash would recover from a checkpoint that names it.
#[derive(Debug, Default)]
pub struct SnapshotRetention {
    /// Checkpoints asked for and not yet known durable: `(sequence number, snapshot named)`.
    pending: std::collections::VecDeque<(u64, Option<SnapshotId>)>,
    /// Checkpoints asked for since recovery.
    asked: u64,
    /// The snapshot named by the latest durable checkpoint.
    durable: Option<SnapshotId>,
}

impl SnapshotRetention {
    /// Retention after recovery from a checkpoint naming `recovered` (if any). Deletes every other
    /// finished snapshot in `store`: each is either older than the checkpoint's or an orphan of a
    /// crash before its checkpoint was synced.
    pub fn recovered(store: &dyn SnapshotStore, recovered: Option<SnapshotId>) -> Self {
        match store.list() {
            Ok(ids) => {
                for id in ids.into_iter().filter(|&id| Some(id) != recovered) {
                    if let Err(e) = store.remove(id) {
                        tracing::warn!(%id, error = %e, "could not delete an unneeded snapshot");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list snapshots"),
        }
        Self {
            durable: recovered,
            ..Self::default()
        }
    }

    /// The core asked for a checkpoint naming `snapshot` (or none).
    pub fn checkpointed(&mut self, snapshot: Option<SnapshotId>) {
        self.asked += 1;
        self.pending.push_back((self.asked, snapshot));
    }

    /// The first `count` checkpoints asked for since recovery are durable: delete the snapshots
    /// that only older checkpoints named. (A snapshot still being sent to a follower is read
    /// through a file opened before, which deletion does not disturb.)
    pub fn durable(&mut self, store: &dyn SnapshotStore, count: u64) {
        let mut named = Vec::new();
        let mut newest = None;
        while let Some(&(seq, snapshot)) = self.pending.front() {
            if seq > count {
                break;
            }
            self.pending.pop_front();
            if let Some(Some(previous)) = newest.replace(snapshot) {
                named.push(previous);
            }
        }
        let Some(snapshot) = newest else {
            return;
        };
        named.extend(std::mem::replace(&mut self.durable, snapshot));
        for old in named {
            let still_named =
                self.durable == Some(old) || self.pending.iter().any(|&(_, s)| s == Some(old));
            if !still_named {
                if let Err(e) = store.remove(old) {
                    tracing::warn!(id = %old, error = %e, "could not delete an old snapshot");
                }
            }
        }
    }

    /// Forgets a snapshot that never got a checkpoint (a failed install): delete it.
    pub fn discard(&mut self, store: &dyn SnapshotStore, id: SnapshotId) {
        if self.durable != Some(id) && !self.pending.iter().any(|&(_, s)| s == Some(id)) {
            let _ = store.remove(id);
        }
    }
}
