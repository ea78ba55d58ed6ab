//! Recovery: rebuilding a replica from the records it persisted.
//!
//! Two stages. [`replay`] folds the records into the durable state they describe — the
//! acceptor's promise, the slot log (accepted entries and the chosen prefix) and the snapshot
//! the latest checkpoint names — checking that they are consistent. [`PaxosNode::recover_from`]
//! then builds the replica from that state: it opens the state machine, loads the snapshot
//! (see `snapshot.rs`), and re-applies the chosen prefix, which also brings the replica to its
//! latest configuration (stop-signs in the prefix).

use std::sync::Arc;

use common::snapshot::{SnapshotFile, SnapshotRetention, SnapshotStore};
use common::{Outbox, Setup};

use crate::config::Config;
use crate::error::PaxosError;
use crate::message::{Ballot, Membership, PromisedEntry, Record, Slot, Value};
use crate::state_machine::StateMachine;

use super::acceptor::Acceptor;
use super::election::Election;
use super::learner::Learner;
use super::log::{Entry, SlotLog};
use super::proposer::Proposer;
use super::snapshot::Snapshots;
use super::{PaxosNode, Shared};

/// The durable state the records describe.
pub(crate) struct Replayed<C> {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// Accepted entries and the chosen prefix.
    pub log: SlotLog<C>,
    /// The snapshot the latest checkpoint names: its slot and file.
    pub snapshot: Option<(Slot, SnapshotFile)>,
}

/// Folds `records`, oldest first, into the state they describe. Records that contradict each
/// other (a chosen prefix with a hole in it) are [`PaxosError::Corrupt`].
pub(crate) fn replay<C: Clone>(records: Vec<Record<C>>) -> Result<Replayed<C>, PaxosError> {
    let mut state = Replayed {
        promised: Ballot::ZERO,
        log: SlotLog::new(),
        snapshot: None,
    };
    for record in records {
        match record {
            Record::Snapshot {
                slot,
                file,
                promised,
                decided,
                accepted,
            } => {
                state.promised = state.promised.max(promised);
                state.log = restart_log(slot, decided, accepted)?;
                state.snapshot = Some((slot, file));
            }
            Record::Promise(b) => state.promised = state.promised.max(b),
            Record::Accept {
                ballot,
                slot,
                values,
            } => {
                state.promised = state.promised.max(ballot);
                replay_accept(&mut state.log, ballot, slot, &values);
            }
            Record::Commit { decided } => replay_commit(&mut state.log, decided)?,
            Record::Learn { from_slot, values } => replay_learn(&mut state.log, from_slot, values)?,
        }
    }
    Ok(state)
}

/// A checkpoint restates everything: the log starts over from it.
fn restart_log<C>(
    slot: Slot,
    decided: Slot,
    accepted: Vec<PromisedEntry<C>>,
) -> Result<SlotLog<C>, PaxosError> {
    let mut log = SlotLog::new();
    log.install(slot);
    for e in accepted {
        log.set(
            e.slot,
            Entry {
                ballot: e.ballot,
                value: e.value,
            },
        );
    }
    if decided > slot {
        if (slot..decided).any(|s| log.get(s).is_none()) {
            return Err(PaxosError::Corrupt(format!(
                "snapshot decided up to {decided} without the entries"
            )));
        }
        log.decided = decided;
    }
    Ok(log)
}

/// Accepted values, except in slots already chosen (they keep their chosen value).
fn replay_accept<C: Clone>(log: &mut SlotLog<C>, ballot: Ballot, slot: Slot, values: &[Value<C>]) {
    for (i, value) in values.iter().cloned().enumerate() {
        let s = slot + i as u64;
        if s >= log.decided {
            log.set(s, Entry { ballot, value });
        }
    }
}

/// A decision: every slot below `decided` is chosen, and each must hold its value.
fn replay_commit<C>(log: &mut SlotLog<C>, decided: Slot) -> Result<(), PaxosError> {
    if decided > log.decided {
        if (log.decided..decided).any(|s| log.get(s).is_none()) {
            return Err(PaxosError::Corrupt(format!(
                "commit up to slot {decided} but a slot below it has no entry"
            )));
        }
        log.decided = decided;
    }
    Ok(())
}

/// Chosen values learned from a peer, which extend the chosen prefix without a gap.
fn replay_learn<C>(
    log: &mut SlotLog<C>,
    from_slot: Slot,
    values: Vec<Value<C>>,
) -> Result<(), PaxosError> {
    if from_slot > log.decided {
        return Err(PaxosError::Corrupt(format!(
            "learned slots from {from_slot} beyond the decided prefix {}",
            log.decided
        )));
    }
    for (i, value) in values.into_iter().enumerate() {
        let s = from_slot + i as u64;
        if s >= log.decided {
            log.set(
                s,
                Entry {
                    ballot: Ballot::ZERO,
                    value,
                },
            );
            log.decided = s + 1;
        }
    }
    Ok(())
}

impl<S: StateMachine> PaxosNode<S> {
    /// Builds a replica from its persisted `records` and its snapshot store (what
    /// [`common::Node::recover_with_snapshots`] does).
    pub(crate) fn recover_from(
        setup: Setup<Config, S>,
        records: Vec<Record<S::Command>>,
        store: Arc<dyn SnapshotStore>,
    ) -> Result<Self, PaxosError> {
        let Setup {
            config,
            state_machine: factory,
        } = setup;
        config.validate()?;
        let Replayed {
            promised,
            log,
            snapshot,
        } = replay(records)?;
        let membership = Membership {
            epoch: 0,
            start: 0,
            members: config.members.clone(),
        };
        let election = Election::new(
            config.id,
            membership.majority(),
            config.heartbeat_ticks,
            config.heartbeat_ticks_max,
            config.election_jitter_rounds_max,
            promised,
            config.seed,
        );
        let state = factory().map_err(|e| PaxosError::StateMachine(e.to_string()))?;
        let sm_position = state.applied_index();
        let learner = Learner::new(state, config.sessions_max, log.decided);
        let mut replica = PaxosNode {
            shared: Shared::new(config, membership, log),
            acceptor: Acceptor { promised },
            proposer: Proposer::default(),
            learner,
            election,
            snapshots: Snapshots::new(store),
            announced: std::collections::BTreeSet::new(),
        };
        let mut scratch = Outbox::new();
        if let Some((slot, file)) = snapshot {
            replica.recover_snapshot(slot, file, &mut scratch)?;
        }
        // Every other snapshot file is older than the checkpoint's, or an orphan of a crash
        // before its checkpoint was durable.
        replica.snapshots.retention =
            SnapshotRetention::recovered(&*replica.snapshots.store, snapshot.map(|(_, f)| f.id));
        replica.learner.sm_applied = sm_position.max(replica.learner.applied);
        // Re-apply the chosen prefix (stop-signs in it bring the replica to its latest
        // configuration); slots a durable state machine applied before only go through the
        // session table.
        replica.apply_decided(&mut scratch);
        replica.learner.recovering = false;
        Ok(replica)
    }
}
